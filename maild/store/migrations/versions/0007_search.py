"""search: the full-text index (console search, past fixes), suggestions

Tables ``search_doc`` (one row per indexed text of a ticket), ``similar_doc``
(one row per resolved or closed ticket) and ``suggestion`` (past fixes
suggested for a ticket, and whether an agent found them helpful). The
database indexes the analysed terms (maild.store.search):

- SQLite: FTS5 tables ``search_fts`` and ``similar_fts`` over them
  (external content, kept in step by triggers, so a rolled-back insert
  leaves nothing in the index), and ``similar_vocab`` for term counts.
- PostgreSQL: a generated ``tsvector`` column ``tsv`` on each (the head
  weighted A, the text D) with a GIN index.

Then every ticket already stored is indexed (`maild.store.search.rebuild`).
That function works on the schema as this revision leaves it; a later
migration that changes these tables must carry its own copy.

Revision ID: 0007_search
Revises: 0006_inbound_raw
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

from maild.store.models import UTCDateTime
from maild.store.search import rebuild

revision: str = "0007_search"
down_revision: str | None = "0006_inbound_raw"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TSV = ("setweight(to_tsvector('simple'::regconfig, head), 'A') || "
        "setweight(to_tsvector('simple'::regconfig, terms), 'D')")  # fmt: skip


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _fts5(table: str, fts: str) -> None:
    op.execute(f"CREATE VIRTUAL TABLE {fts} USING fts5(head, terms, content='{table}', "
               "content_rowid='id', tokenize='unicode61 remove_diacritics 0')")  # fmt: skip
    op.execute(f"CREATE TRIGGER {table}_ai AFTER INSERT ON {table} BEGIN "
               f"INSERT INTO {fts}(rowid, head, terms) VALUES (new.id, new.head, new.terms); END")  # fmt: skip
    op.execute(f"CREATE TRIGGER {table}_ad AFTER DELETE ON {table} BEGIN "
               f"INSERT INTO {fts}({fts}, rowid, head, terms) "
               "VALUES ('delete', old.id, old.head, old.terms); END")  # fmt: skip
    op.execute(f"CREATE TRIGGER {table}_au AFTER UPDATE OF head, terms ON {table} BEGIN "
               f"INSERT INTO {fts}({fts}, rowid, head, terms) "
               "VALUES ('delete', old.id, old.head, old.terms); "
               f"INSERT INTO {fts}(rowid, head, terms) VALUES (new.id, new.head, new.terms); END")  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "search_doc",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("ticket_id", BIG_ID, nullable=False),
        sa.Column("article_id", BIG_ID, nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("head", sa.Text(), nullable=False),
        sa.Column("terms", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["article.id"], ondelete="CASCADE",
                                name=op.f("fk_search_doc_article_id_article")),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"], ondelete="CASCADE",
                                name=op.f("fk_search_doc_ticket_id_ticket")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_doc")),
    )  # fmt: skip
    op.create_index(op.f("ix_search_doc_ticket_id"), "search_doc", ["ticket_id"])
    op.create_table(
        "similar_doc",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("ticket_id", BIG_ID, nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("head", sa.Text(), nullable=False),
        sa.Column("terms", sa.Text(), nullable=False),
        sa.Column("resolution", sa.Text(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"], ondelete="CASCADE",
                                name=op.f("fk_similar_doc_ticket_id_ticket")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_similar_doc")),
        sa.UniqueConstraint("ticket_id", name=op.f("uq_similar_doc_ticket_id")),
    )  # fmt: skip
    op.create_table(
        "suggestion",
        sa.Column("ticket_id", BIG_ID, nullable=False),
        sa.Column("suggested_id", BIG_ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("helpful_at", UTCDateTime(), nullable=True),
        sa.Column("helpful_by", sa.String(length=320), nullable=True),
        sa.ForeignKeyConstraint(["suggested_id"], ["ticket.id"], ondelete="CASCADE",
                                name=op.f("fk_suggestion_suggested_id_ticket")),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"], ondelete="CASCADE",
                                name=op.f("fk_suggestion_ticket_id_ticket")),
        sa.PrimaryKeyConstraint("ticket_id", "suggested_id", name=op.f("pk_suggestion")),
    )  # fmt: skip
    op.create_index(op.f("ix_suggestion_suggested_id"), "suggestion", ["suggested_id"])
    if _sqlite():
        _fts5("search_doc", "search_fts")
        _fts5("similar_doc", "similar_fts")
        op.execute("CREATE VIRTUAL TABLE similar_vocab USING fts5vocab(similar_fts, 'row')")
    else:
        for table in ("search_doc", "similar_doc"):
            op.execute(f"ALTER TABLE {table} ADD COLUMN tsv tsvector "
                       f"GENERATED ALWAYS AS ({_TSV}) STORED")  # fmt: skip
            op.execute(f"CREATE INDEX ix_{table}_tsv ON {table} USING gin (tsv)")
    rebuild(Session(bind=op.get_bind()))


def downgrade() -> None:
    if _sqlite():
        for name in ("search_doc_ai", "search_doc_ad", "search_doc_au", "similar_doc_ai",
                     "similar_doc_ad", "similar_doc_au"):  # fmt: skip
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        for name in ("similar_vocab", "similar_fts", "search_fts"):
            op.execute(f"DROP TABLE IF EXISTS {name}")
    op.drop_index(op.f("ix_suggestion_suggested_id"), table_name="suggestion")
    op.drop_table("suggestion")
    op.drop_table("similar_doc")
    op.drop_index(op.f("ix_search_doc_ticket_id"), table_name="search_doc")
    op.drop_table("search_doc")

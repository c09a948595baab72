"""trust (issue 14): how an article's sender was verified, the source that
triggered each automatic mail, notices held back for a digest, and which
recipients of an outgoing mail already have it

- ``article.verified_by``: "reply-address", "references",
  "authentication-results", or "none" (maild.pipeline.verify); NULL for mail
  that is not a person's (ours, an agent's, a bounce) and for older rows.
- ``autoreply_log.source``: the client network (IPv4 address, IPv6 /64) of the
  mail that triggered an automatic mail, counted by the per-source limit.
- ``held_notice``: automatic mail a rate limit held back, sent later as one
  digest per address (maild.desk.autoreply).
- ``outbox.rcpt_sent``: recipients already delivered to; each recipient gets
  a transaction and a VERP address of their own (maild.mail.verp).

Revision ID: 0009_trust
Revises: 0007_issue15
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_trust"
down_revision: str | None = "0007_issue15"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("article", sa.Column("verified_by", sa.String(32), nullable=True))
    op.add_column("autoreply_log", sa.Column("source", sa.String(64), nullable=True))
    op.create_index("ix_autoreply_log_source_at", "autoreply_log", ["source", "at"])
    op.add_column("outbox", sa.Column("rcpt_sent", sa.JSON(), nullable=True))
    op.create_table(
        "held_notice",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("ticket_id", BIG_ID, nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=False), nullable=True),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["ticket.id"], name=op.f("fk_held_notice_ticket_id_ticket")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_held_notice")),
    )
    op.create_index("ix_held_notice_pending", "held_notice", ["sent_at", "address"])


def _drop_column(table: str, column: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Batch mode would copy the table and drop the original, which foreign
        # keys refuse; SQLite 3.35+ drops a column itself (see 0006).
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    else:
        op.drop_column(table, column)


def downgrade() -> None:
    op.drop_index("ix_held_notice_pending", table_name="held_notice")
    op.drop_table("held_notice")
    _drop_column("outbox", "rcpt_sent")
    op.drop_index("ix_autoreply_log_source_at", table_name="autoreply_log")
    _drop_column("autoreply_log", "source")
    _drop_column("article", "verified_by")

"""The proactive desk: alert incidents, major incidents, the requester's rating

- ``alert``: one row per monitoring incident (source, host, service), at most
  one open per key (a partial unique index: two instances folding the same
  storm cannot open two incidents);
- ``ticket.origin`` (mail / alert / major: only mail tickets have a person
  to write to), ``major``, ``major_key``, ``major_id`` (a child's parent);
  an index on (category, created_at) finds a burst of new incidents;
- ``ticket.satisfaction_*``: the requester's 1-5 rating and comment;
- ``major_notice``: which requester heard what about a major incident, once.

Revision ID: 0010_proactive
Revises: 0009_trust
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_proactive"
down_revision: str | None = "0009_trust"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    # Plain ADD COLUMN (a batch copy of the ticket table would have to drop the
    # original, which the foreign keys of every other table refuse on SQLite).
    op.add_column("ticket", sa.Column("origin", sa.String(16), server_default="mail",
                                      nullable=False))  # fmt: skip
    op.add_column("ticket", sa.Column("major", sa.Boolean(), server_default=sa.false(),
                                      nullable=False))  # fmt: skip
    op.add_column("ticket", sa.Column("major_key", sa.String(300), nullable=True))
    fk = "fk_ticket_major_id_ticket"
    if _sqlite():  # SQLite adds a foreign key only with its column
        op.execute(f"ALTER TABLE ticket ADD COLUMN major_id INTEGER CONSTRAINT {fk} "
                   "REFERENCES ticket (id)")  # fmt: skip
    else:
        op.add_column("ticket", sa.Column("major_id", BIG_ID, nullable=True))
        op.create_foreign_key(fk, "ticket", "ticket", ["major_id"], ["id"])
    op.add_column("ticket", sa.Column("satisfaction_score", sa.Integer(), nullable=True))
    op.add_column("ticket", sa.Column("satisfaction_comment", sa.Text(), nullable=True))
    op.add_column("ticket", sa.Column("satisfaction_at", sa.DateTime(), nullable=True))
    op.create_index("ix_ticket_major_id", "ticket", ["major_id"], unique=False)
    op.create_index("ix_ticket_major_key", "ticket", ["major_key"], unique=False)
    op.create_index("ix_ticket_category_created", "ticket", ["category", "created_at"],
                    unique=False)  # fmt: skip
    op.create_table(
        "alert",
        sa.Column("ticket_id", BIG_ID, autoincrement=False, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("service", sa.String(length=255), nullable=False),
        sa.Column("fold_key", sa.String(length=64), nullable=False),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=255), nullable=False),
        sa.Column("severity", sa.String(length=255), nullable=False),
        sa.Column("problem_id", sa.String(length=255), nullable=True),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("flaps", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(), nullable=False),
        sa.Column("last_at", sa.DateTime(), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.Column("recovered_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["ticket.id"], name=op.f("fk_alert_ticket_id_ticket")
        ),
        sa.PrimaryKeyConstraint("ticket_id", name=op.f("pk_alert")),
    )
    op.create_index("ix_alert_fold_key", "alert", ["fold_key"], unique=False)
    op.create_index("ix_alert_problem_id", "alert", ["problem_id"], unique=False)
    op.create_index("ix_alert_host_first", "alert", ["host", "first_at"], unique=False)
    op.create_index(
        "uq_alert_open_fold_key",
        "alert",
        ["fold_key"],
        unique=True,
        sqlite_where=sa.text("is_open"),
        postgresql_where=sa.text("is_open"),
    )
    op.create_table(
        "major_notice",
        sa.Column("major_id", BIG_ID, nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ticket_id", BIG_ID, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contact.id"], name=op.f("fk_major_notice_contact_id_contact")
        ),
        sa.ForeignKeyConstraint(
            ["major_id"], ["ticket.id"], name=op.f("fk_major_notice_major_id_ticket")
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["ticket.id"], name=op.f("fk_major_notice_ticket_id_ticket")
        ),
        sa.PrimaryKeyConstraint("major_id", "contact_id", "kind", name=op.f("pk_major_notice")),
    )


def downgrade() -> None:
    op.drop_table("major_notice")
    op.drop_index("uq_alert_open_fold_key", table_name="alert")
    op.drop_index("ix_alert_host_first", table_name="alert")
    op.drop_index("ix_alert_problem_id", table_name="alert")
    op.drop_index("ix_alert_fold_key", table_name="alert")
    op.drop_table("alert")
    op.drop_index("ix_ticket_category_created", table_name="ticket")
    op.drop_index("ix_ticket_major_key", table_name="ticket")
    op.drop_index("ix_ticket_major_id", table_name="ticket")
    if not _sqlite():
        op.drop_constraint("fk_ticket_major_id_ticket", "ticket", type_="foreignkey")
    for column in ("satisfaction_at", "satisfaction_comment", "satisfaction_score",
                   "major_id", "major_key", "major", "origin"):  # fmt: skip
        op.drop_column("ticket", column)  # SQLite 3.35+ drops a column itself

"""inbound_raw: the raw bytes of an inbound message in a table of their own

SQLite writes a whole record again, overflow pages included, on every UPDATE
of any column. An inbound row is updated when it is claimed and when it is
processed, so with the raw bytes inside it every message went into the WAL
five times (insert, and two updates that each free and rewrite the pages),
and each checkpoint copied them again: 80 MB/s of writes in bench/run.py.
Apart, the bytes are written once. (PostgreSQL's TOAST already kept an
unchanged large value out of an update; the table is the same there.)

Revision ID: 0006_inbound_raw
Revises: 0005_outbox
Create Date: 2026-11-29
"""

import sqlite3
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_inbound_raw"
down_revision: str | None = "0005_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    op.create_table(
        "inbound_raw",
        sa.Column("inbound_id", BIG_ID, autoincrement=False, nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbound_id"], ["inbound.id"], name=op.f("fk_inbound_raw_inbound_id_inbound")
        ),
        sa.PrimaryKeyConstraint("inbound_id", name=op.f("pk_inbound_raw")),
    )
    op.execute("INSERT INTO inbound_raw (inbound_id, raw) SELECT id, raw FROM inbound")
    if _sqlite():
        # Alembic's batch mode would copy the table and drop the original,
        # which the articles' foreign keys refuse; SQLite drops a column itself.
        if sqlite3.sqlite_version_info < (3, 35, 0):
            raise RuntimeError(f"SQLite 3.35 or later is needed, not {sqlite3.sqlite_version}")
        op.execute("ALTER TABLE inbound DROP COLUMN raw")
    else:
        op.drop_column("inbound", "raw")


def downgrade() -> None:
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.add_column(sa.Column("raw", sa.LargeBinary(), nullable=True))
    op.execute(
        "UPDATE inbound SET raw = "
        "(SELECT raw FROM inbound_raw WHERE inbound_raw.inbound_id = inbound.id)"
    )
    op.drop_table("inbound_raw")

"""inbound: every message's visible fate; outbox: dead mail noticed

inbound.rule and inbound.reason say which rule set a message aside and why
(`maild inbound list`); message_id_clash flags a reused Message-ID with other
content (stored, not dropped); replayed_by/replayed_at record that a person
chose to run an ignored or spam message through again. outbox.dead_noticed_at
marks a dead mail whose ticket got its event and whose assignee was told.
Status "spam" is a new value of inbound.status (a plain string column).

Revision ID: 0007_issue15
Revises: 0007_search
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_issue15"
down_revision: str | None = "0007_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbound") as batch_op:
        batch_op.add_column(sa.Column("rule", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("message_id_clash", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("replayed_by", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("replayed_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.add_column(sa.Column("dead_noticed_at", sa.DateTime(), nullable=True))
    # Rows set aside before this revision kept their reason in `error`.
    op.execute("UPDATE inbound SET reason = error, error = NULL WHERE status = 'ignored'")


def downgrade() -> None:
    op.execute("UPDATE inbound SET error = reason WHERE status = 'ignored'")
    op.execute("UPDATE inbound SET status = 'ignored', error = reason WHERE status = 'spam'")
    for table, columns in (("outbox", ["dead_noticed_at"]),
                           ("inbound", ["replayed_at", "replayed_by", "message_id_clash",
                                        "reason", "rule"])):  # fmt: skip
        if op.get_bind().dialect.name == "sqlite":
            # Batch mode would copy the table and drop the original, which the
            # foreign keys pointing at it refuse; SQLite 3.35+ drops a column itself.
            for column in columns:
                op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        else:
            for column in columns:
                op.drop_column(table, column)

"""privacy: when a ticket's personal data was removed, when a contact was erased

`ticket.anonymized_at` marks a ticket whose texts, attachments and raw mail
were removed (by the retention sweep for tickets closed long ago, or by
``maild contact erase`` for the requester's tickets); `contact.erased_at` marks
a contact whose name and address were removed. Reports still count both.

Revision ID: 0011_privacy
Revises: 0010_proactive
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_privacy"
down_revision: str | None = "0010_proactive"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("ticket", sa.Column("anonymized_at", sa.DateTime(), nullable=True))
    op.add_column("contact", sa.Column("erased_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    for table, column in (("contact", "erased_at"), ("ticket", "anonymized_at")):
        if op.get_bind().dialect.name == "sqlite":
            # Batch mode would copy and drop the table, which foreign keys refuse.
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        else:
            op.drop_column(table, column)

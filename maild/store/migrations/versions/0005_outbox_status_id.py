"""outbox (status, id) index: the sender's claim stays cheap beside a large archive

The claim reads pending rows in id order. With only (status, next_attempt_at),
SQLite's planner walked the whole table in id order: 69 ms per claim with
500,000 sent rows (bench/archive_cost.py), against 0.03 ms with this index.

Revision ID: 0005_outbox
Revises: 0004_issue7
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005_outbox"
down_revision: str | None = "0004_issue7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_outbox_status_id", "outbox", ["status", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_status_id", table_name="outbox")

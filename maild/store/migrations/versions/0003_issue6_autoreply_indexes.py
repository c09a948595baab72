"""autoreply_log indexes for the per-ticket limit and the global breaker

Revision ID: 0003_issue6
Revises: 0002_issue4
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_issue6"
down_revision: str | None = "0002_issue4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_autoreply_log_ticket_at", "autoreply_log", ["ticket_id", "at"])
    op.create_index("ix_autoreply_log_at", "autoreply_log", ["at"])


def downgrade() -> None:
    op.drop_index("ix_autoreply_log_at", table_name="autoreply_log")
    op.drop_index("ix_autoreply_log_ticket_at", table_name="autoreply_log")

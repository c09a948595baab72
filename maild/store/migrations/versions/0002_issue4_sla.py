"""issue 4: SLA clocks, reminders and the regulator deadline on tickets

Revision ID: 0002_issue4
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_issue4"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMES = (
    "first_response_warn_at",
    "first_response_warned_at",
    "first_response_breached_at",
    "resolution_warn_at",
    "resolution_warned_at",
    "resolution_breached_at",
    "sla_paused_at",
    "last_reminder_at",
    "regulator_due",
    "regulator_next_reminder_at",
    "regulator_notified_at",
)
COUNTS = ("sla_paused_seconds", "reminders_sent", "regulator_reminders_sent")
INDEXED = ("first_response_warn_at", "resolution_warn_at", "regulator_next_reminder_at")


def upgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        for name in TIMES:
            batch_op.add_column(sa.Column(name, sa.DateTime(), nullable=True))
        for name in COUNTS:
            batch_op.add_column(sa.Column(name, sa.Integer(), server_default="0", nullable=False))
        for name in INDEXED:
            batch_op.create_index(batch_op.f(f"ix_ticket_{name}"), [name], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        for name in INDEXED:
            batch_op.drop_index(batch_op.f(f"ix_ticket_{name}"))
        for name in (*COUNTS, *TIMES):
            batch_op.drop_column(name)

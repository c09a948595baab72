"""web: sign-in requests, console sessions, API tokens, requester-link revocations

The workspace (issue 13). Tokens are stored as SHA-256 hashes only.

Revision ID: 0012_web
Revises: 0011_privacy
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_web"
down_revision: str | None = "0011_privacy"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "web_login",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column(
            "agent_id",
            BIG_ID,
            sa.ForeignKey("agent.id", name="fk_web_login_agent_id_agent"),
            nullable=True,
        ),
        sa.Column("token_hash", sa.String(64), nullable=True),
        sa.Column("browser_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_web_login"),
        sa.UniqueConstraint("token_hash", name="uq_web_login_token_hash"),
    )
    op.create_index("ix_web_login_email_created", "web_login", ["email", "created_at"])
    op.create_index("ix_web_login_client_created", "web_login", ["client", "created_at"])
    op.create_table(
        "web_session",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column(
            "agent_id",
            BIG_ID,
            sa.ForeignKey("agent.id", name="fk_web_session_agent_id_agent"),
            nullable=False,
        ),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("user_agent", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_web_session"),
        sa.UniqueConstraint("token_hash", name="uq_web_session_token_hash"),
    )
    op.create_index("ix_web_session_agent_id", "web_session", ["agent_id"])
    op.create_table(
        "api_token",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column(
            "agent_id",
            BIG_ID,
            sa.ForeignKey("agent.id", name="fk_api_token_agent_id_agent"),
            nullable=False,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_token"),
        sa.UniqueConstraint("token_hash", name="uq_api_token_token_hash"),
    )
    op.create_index("ix_api_token_agent_id", "api_token", ["agent_id"])
    op.create_table(
        "requester_link_revocation",
        sa.Column(
            "ticket_id",
            BIG_ID,
            sa.ForeignKey("ticket.id", name="fk_requester_link_revocation_ticket_id_ticket"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_requester_link_revocation"),
    )
    # The console's queue views: open tickets by assignee or by tier, without a scan
    # of the closed ones (SQLite's planner otherwise takes the assignee index alone).
    op.create_index("ix_ticket_assignee_status", "ticket", ["assignee_id", "status"])
    op.create_index("ix_ticket_tier_status", "ticket", ["tier", "status"])


def downgrade() -> None:
    op.drop_index("ix_ticket_tier_status", "ticket")
    op.drop_index("ix_ticket_assignee_status", "ticket")
    op.drop_table("requester_link_revocation")
    op.drop_index("ix_api_token_agent_id", "api_token")
    op.drop_table("api_token")
    op.drop_index("ix_web_session_agent_id", "web_session")
    op.drop_table("web_session")
    op.drop_index("ix_web_login_client_created", "web_login")
    op.drop_index("ix_web_login_email_created", "web_login")
    op.drop_table("web_login")

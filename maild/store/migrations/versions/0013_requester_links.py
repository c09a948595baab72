"""requester links: no longer kept in the ticket's copy of a mail

A requester's personal link acts as the requester (their page's replies and
buttons). Until this version the ticket's copy of each acknowledgement and
status mail (an outgoing ``notification`` article) carried it, where every
agent and API token could read it; now it is in the requester's mail only
(`maild.mail.make.LINK_NOT_STORED`). This replaces the links already stored.
The mail itself (outbox, sent) is not touched. Downgrading keeps the text as it is.

Revision ID: 0013_requester_links
Revises: 0012_web
Create Date: 2026-12-04
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_requester_links"
down_revision: str | None = "0012_web"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As maild.mail.make.LINK_NOT_STORED (a migration does not import the code it outlives).
LINK_NOT_STORED = "[the requester's personal link: in their mail only]"
# `maild.mail.weblink.requester_link`: BASE/r/TICKET/TOKEN.
LINK = re.compile(r"https?://[^\s<>\"']+/r/\d+/[0-9a-z]{1,10}\.[a-z2-7]{26}")
BATCH = 500


def upgrade() -> None:
    conn = op.get_bind()
    article = sa.table("article", sa.column("id", sa.Integer), sa.column("kind", sa.String),
                       sa.column("direction", sa.String), sa.column("text", sa.Text))  # fmt: skip
    after = 0
    while True:
        rows = conn.execute(
            sa.select(article.c.id, article.c.text)
            .where(article.c.kind == "notification", article.c.direction == "out",
                   article.c.text.contains("/r/"), article.c.id > after)
            .order_by(article.c.id).limit(BATCH)
        ).all()  # fmt: skip
        if not rows:
            return
        for row_id, value in rows:
            cleaned = LINK.sub(LINK_NOT_STORED, value)
            if cleaned != value:
                conn.execute(article.update().where(article.c.id == row_id)
                             .values(text=cleaned))  # fmt: skip
        after = rows[-1][0]


def downgrade() -> None:
    pass  # the links are gone from the copies; the mail that carried them is unchanged

"""Attachments stored on tickets, for people: find one and get it out.

``maild ticket attachment N NAME`` uses these; the console will too. A name
is the file name as ``maild ticket show`` lists it, or its attachment id
(``12`` or ``#12``). DB only; the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.store.models import Article, Attachment, Blob


@dataclass(frozen=True)
class Stored:
    id: int
    article_id: int
    filename: str
    content_type: str
    size: int
    sha256: str


def find(session: Session, ticket: int, name: str) -> list[Stored]:
    """The attachments of `ticket` called `name` (or with that id), oldest first."""
    stmt = (
        select(Attachment.id, Attachment.article_id, Attachment.filename,
               Attachment.content_type, Attachment.size, Attachment.sha256)
        .join(Article, Attachment.article_id == Article.id)
        .where(Article.ticket_id == ticket)
        .order_by(Attachment.id)
    )  # fmt: skip
    wanted = name.strip()
    as_id = wanted.removeprefix("#")
    rows = session.execute(stmt).all()
    if as_id.isdigit():
        by_id = [Stored(*r) for r in rows if r.id == int(as_id)]
        if by_id:
            return by_id
    return [Stored(*r) for r in rows if r.filename == wanted]


def content(session: Session, sha256: str) -> bytes:
    data = session.scalar(select(Blob.data).where(Blob.sha256 == sha256))
    if data is None:  # pragma: no cover - a foreign key keeps the blob
        raise LookupError(f"no stored content {sha256}")
    return bytes(data)

"""Finding tickets by words for the search page and ``GET /api/v1/tickets?q=``.

A ticket number (``123`` or ``#123``) finds that ticket; other words are
looked up in the database's full-text index (`maild.store.search`, the same
index that finds similar past tickets) once it is there. Until then, words
match ticket subjects, article text and requesters' names and addresses
(every word must match somewhere), newest first: a scan, not an index, kept
only until the index is on main.
"""

from __future__ import annotations

import re

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from maild.store.models import Article, Contact, Ticket

_NUMBER = re.compile(r"^#?(\d{1,12})$")


def find_tickets(
    session: Session, q: str, limit: int = 50, *, include_security: bool = False
) -> list[int]:
    """Numbers of the tickets `q` finds, newest first; security incidents only with
    `include_security` (a word must not reveal what a hidden ticket says)."""
    words = q.split()[:10]
    hidden = () if include_security else (Ticket.security.is_(False),)
    numbers = [int(m.group(1)) for w in words if (m := _NUMBER.match(w))]
    rest = [w for w in words if not _NUMBER.match(w)]
    found: list[int] = []
    if numbers:
        found += list(session.scalars(select(Ticket.id).where(Ticket.id.in_(numbers))))
        # (a number names a ticket outright: its row shows only a stub if restricted)
    if rest:
        conds = []
        for w in rest:
            clean = w.replace("\\", "").replace("%", "").replace("_", "")
            like = f"%{clean}%"
            in_text = exists().where(Article.ticket_id == Ticket.id, Article.text.ilike(like))
            conds.append(or_(Ticket.subject.ilike(like), Contact.email.ilike(like),
                             Contact.name.ilike(like), in_text))  # fmt: skip
        found += [n for n in session.scalars(
            select(Ticket.id).join(Contact, Contact.id == Ticket.requester_id)
            .where(and_(*conds), *hidden).order_by(Ticket.id.desc()).limit(limit))
            if n not in found]  # fmt: skip
    return found[:limit]

"""Finding tickets by words for the search page and ``GET /api/v1/tickets?q=``.

The database's own full-text index (`maild.store.search`: SQLite FTS5,
PostgreSQL GIN; the same index that finds similar past tickets) ranks the
tickets; ``#123`` or ``123`` finds that ticket first. Security incidents are
searched only for the security group: a word must not reveal what a hidden
ticket says.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from maild.store import search


@dataclass(frozen=True)
class Found:
    numbers: list[int]  # best first
    snippets: dict[int, str]  # plain text around the matched words


def find_tickets(
    session: Session, q: str, limit: int = 50, *, include_security: bool = False
) -> Found:
    hits = search.search_tickets(session, q, limit=limit, include_security=include_security)
    return Found([h.number for h in hits], {h.number: h.snippet for h in hits})


def similar(
    session: Session, number: int, *, include_security: bool, limit: int = 3
) -> list[dict[str, object]]:
    """Resolved tickets most like ticket `number` (the ticket page's "similar past tickets")."""
    return [
        {"number": f.number, "subject": f.subject, "status": f.status, "resolution": f.short(200)}
        for f in search.similar_resolved(
            session, number, limit=limit, include_security=include_security
        )  # fmt: skip
    ]

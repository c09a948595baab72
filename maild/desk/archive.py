"""What an import does beyond intake: close the old tickets of an archive.

``maild import --close-before DATE`` closes, without a word to anyone, the
tickets the import opened whose last message is older than DATE, as of that
last message (their history and SLA columns then read as the old desk left
them). DB only; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, lazyload

from maild.desk.apply import Applier
from maild.desk.lifecycle import change_status
from maild.pipeline.decision import EventSpec
from maild.store.models import Article, Ticket
from maild.store.states import TicketStatus

ACTOR = "import"


def close_before(
    session: Session, applier: Applier, ticket_ids: Iterable[int], before: datetime
) -> list[int]:
    """Close the tickets among `ticket_ids` whose last archived message is older than
    `before` (mail maild itself sent during the import does not count); which."""
    ids = sorted(set(ticket_ids))
    if not ids:
        return []
    last = dict(
        session.execute(
            select(Article.ticket_id, func.max(Article.created_at))
            .where(Article.ticket_id.in_(ids), Article.inbound_id.is_not(None))  # the archive's
            .group_by(Article.ticket_id)
        ).all()
    )
    closed = []
    tickets = session.scalars(
        select(Ticket).options(lazyload(Ticket.requester)).where(Ticket.id.in_(ids))
        .with_for_update()
    )  # fmt: skip
    for ticket in tickets:
        when = last.get(ticket.id) or ticket.created_at
        if ticket.status == TicketStatus.CLOSED or when >= before:
            continue
        old = change_status(ticket, TicketStatus.CLOSED, when, applier.policy)
        applier.event(session, ticket.id, EventSpec(
            "status", ACTOR, old=old, new=str(TicketStatus.CLOSED),
            detail={"reason": f"imported; last message before {before.date().isoformat()} "
                              "(--close-before)"}), when)  # fmt: skip
        closed.append(ticket.id)
    return closed

"""People who write to the help desk: what maild holds about an address, and
``maild contact reset`` (DB only; the caller owns the transaction).

A contact is marked undeliverable only through a genuine bounce of our mail
(its VERP return path, `maild.pipeline.decide`); the mark lapses after
``outgoing.hard_bounce_days`` and clears when they write in. An operator who
knows better clears it at once, together with the ``loop_suspected`` flag of
their tickets (set when the rate limits held mail back).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from maild.addresses import normalize_address
from maild.config.settings import Settings
from maild.store.models import AutoreplyLog, Contact, Event, HeldNotice, Ticket, Watcher


def _tickets_of(contact_id: int) -> Any:
    watched = select(Watcher.ticket_id).where(Watcher.contact_id == contact_id)
    return or_(Ticket.requester_id == contact_id, Ticket.id.in_(watched))


def show(session: Session, settings: Settings, email: str, now: datetime) -> dict[str, Any] | None:
    email = normalize_address(email)
    contact = session.scalar(select(Contact).where(Contact.email == email))
    if contact is None:
        return None
    hard_until = None
    if contact.bounce_state == "hard" and contact.bounced_at is not None:
        hard_until = contact.bounced_at + timedelta(days=settings.outgoing.hard_bounce_days)
    tickets = session.execute(
        select(Ticket.id, Ticket.status, Ticket.loop_suspected).where(_tickets_of(contact.id))
        .order_by(Ticket.id)).all()  # fmt: skip
    hour_ago = now - timedelta(hours=1)
    return {
        "email": contact.email,
        "name": contact.name,
        "language": contact.language,
        "bounce_state": contact.bounce_state,
        "bounced_at": contact.bounced_at.isoformat() if contact.bounced_at else None,
        "undeliverable_until": hard_until.isoformat() if hard_until and hard_until > now else None,
        "tickets": [
            {"number": t.id, "status": t.status, "loop_suspected": t.loop_suspected}
            for t in tickets
        ],  # fmt: skip
        "automatic_mails_last_hour": session.scalar(
            select(func.count())
            .select_from(AutoreplyLog)
            .where(AutoreplyLog.address == email, AutoreplyLog.at > hour_ago)
        ),  # fmt: skip
        "held_notices": session.scalar(
            select(func.count())
            .select_from(HeldNotice)
            .where(HeldNotice.address == email, HeldNotice.sent_at.is_(None))
        ),  # fmt: skip
    }


def reset(session: Session, email: str, *, actor: str, now: datetime) -> dict[str, Any] | None:
    """Deliverable again, and its tickets no longer suspected of a loop; None: unknown."""
    email = normalize_address(email)
    contact = session.scalar(select(Contact).where(Contact.email == email))
    if contact is None:
        return None
    old_state = contact.bounce_state
    flagged = list(session.scalars(
        select(Ticket.id).where(_tickets_of(contact.id), Ticket.loop_suspected.is_(True))))  # fmt: skip
    contact.bounce_state = "ok"
    contact.bounced_at = None
    if flagged:
        session.execute(update(Ticket).where(Ticket.id.in_(flagged)).values(loop_suspected=False))
    requested = list(session.scalars(select(Ticket.id).where(_tickets_of(contact.id))))
    for number in requested:
        events = []
        if old_state != "ok":
            events.append(("contact_bounce", old_state, "ok"))
        if number in flagged:
            events.append(("loop_suspected", "true", "false"))
        for kind, old, new in events:
            session.add(Event(ticket_id=number, at=now, actor=actor, kind=kind, old=old, new=new,
                              detail={"contact": email, "reason": "maild contact reset"}))  # fmt: skip
    return {"email": email, "bounce_state": {"was": old_state, "now": "ok"},
            "loop_suspected_cleared": flagged}  # fmt: skip

"""Read-only views for the CLI: plain dicts, the JSON shapes documented in README."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from maild.store.models import (
    Agent,
    Alert,
    Article,
    Attachment,
    Contact,
    Event,
    Inbound,
    Outbox,
    Suggestion,
    Ticket,
    TicketLink,
    Watcher,
)
from maild.store.states import InboundStatus


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def ticket_summary(ticket: Ticket, requester: Contact) -> dict[str, Any]:
    return {
        "number": ticket.id,
        "subject": ticket.subject,
        "status": ticket.status,
        "type": ticket.type,
        "category": ticket.category,
        "priority": f"P{ticket.priority}",
        "impact": ticket.impact,
        "urgency": ticket.urgency,
        "tier": ticket.tier,
        "security": ticket.security,
        "requester": {
            "email": requester.email,
            "name": requester.name,
            "bounce_state": requester.bounce_state,
        },
        "loop_suspected": ticket.loop_suspected,
        "address": ticket.address,
        "language": ticket.language,
        "parent": ticket.parent_id,
        "origin": ticket.origin,
        "major": ticket.major,
        "major_incident": ticket.major_id,
        "satisfaction": None
        if ticket.satisfaction_score is None
        else {
            "score": ticket.satisfaction_score,
            "comment": ticket.satisfaction_comment,
            "at": _iso(ticket.satisfaction_at),
        },  # fmt: skip
        "created_at": _iso(ticket.created_at),
        "updated_at": _iso(ticket.updated_at),
        "first_response_due": _iso(ticket.first_response_due),
        "first_response_at": _iso(ticket.first_response_at),
        "resolution_due": _iso(ticket.resolution_due),
        "resolved_at": _iso(ticket.resolved_at),
        "closed_at": _iso(ticket.closed_at),
        "sla": {
            "paused_since": _iso(ticket.sla_paused_at),
            "paused_seconds": ticket.sla_paused_seconds or 0,
            "first_response_breached_at": _iso(ticket.first_response_breached_at),
            "resolution_breached_at": _iso(ticket.resolution_breached_at),
        },
        "anonymized_at": _iso(ticket.anonymized_at),
        "regulator": None
        if ticket.regulator_due is None
        else {
            "due": _iso(ticket.regulator_due),
            "notified_at": _iso(ticket.regulator_notified_at),
            "reminders_sent": ticket.regulator_reminders_sent,
        },  # fmt: skip
    }


def list_tickets(
    session: Session,
    status: str | Sequence[str] | None = None,
    limit: int = 100,
    *,
    priorities: Sequence[int] = (),
    tiers: Sequence[int] = (),
    assignee_id: int | None = None,
    unassigned: bool = False,
    breached: bool = False,
    after: int | None = None,
) -> list[dict[str, Any]]:
    """Tickets newest first; filters combine, values of one filter are alternatives.

    `after`: only tickets older than that number (keyset paging: ask for
    ``limit + 1`` to learn whether there are more).
    """
    stmt = select(Ticket, Contact).join(Contact, Ticket.requester_id == Contact.id)
    statuses = [status] if isinstance(status, str) else list(status or ())
    if statuses:
        stmt = stmt.where(Ticket.status.in_(statuses))
    if priorities:
        stmt = stmt.where(Ticket.priority.in_(list(priorities)))
    if tiers:
        stmt = stmt.where(Ticket.tier.in_(list(tiers)))
    if unassigned:
        stmt = stmt.where(Ticket.assignee_id.is_(None))
    elif assignee_id is not None:
        stmt = stmt.where(Ticket.assignee_id == assignee_id)
    if breached:
        stmt = stmt.where(
            Ticket.first_response_breached_at.is_not(None)
            | Ticket.resolution_breached_at.is_not(None)
        )
    if after is not None:
        stmt = stmt.where(Ticket.id < after)
    stmt = stmt.order_by(Ticket.id.desc()).limit(limit)
    return [ticket_summary(t, c) for t, c in session.execute(stmt).all()]


def agent_id(session: Session, who: str) -> int | None:
    """The id of the agent with this address, or the one agent with this name."""
    found = session.scalar(select(Agent.id).where(Agent.email == who.strip().lower()))
    if found is not None:
        return int(found)
    ids = list(session.scalars(select(Agent.id).where(func.lower(Agent.name) == who.lower())))
    return int(ids[0]) if len(ids) == 1 else None


def show_ticket(session: Session, number: int) -> dict[str, Any] | None:
    row = session.execute(
        select(Ticket, Contact)
        .join(Contact, Ticket.requester_id == Contact.id)
        .where(Ticket.id == number)
    ).first()
    if row is None:
        return None
    ticket, requester = row
    out = ticket_summary(ticket, requester)
    out["assignee"] = (
        session.scalar(select(Agent.email).where(Agent.id == ticket.assignee_id))
        if ticket.assignee_id else None
    )  # fmt: skip
    out["watchers"] = list(session.scalars(
        select(Contact.email).join(Watcher, Watcher.contact_id == Contact.id)
        .where(Watcher.ticket_id == number).order_by(Contact.email)))  # fmt: skip
    out["links"] = sorted(
        {other for t, other in session.execute(
            select(TicketLink.ticket_id, TicketLink.other_id).where(
                (TicketLink.ticket_id == number) | (TicketLink.other_id == number)))
         for other in (t, other) if other != number})  # fmt: skip
    out["children"] = list(session.scalars(
        select(Ticket.id).where(Ticket.major_id == number).order_by(Ticket.id)))  # fmt: skip
    alert = session.get(Alert, number)
    out["alert"] = None if alert is None else {
        "source": alert.source, "host": alert.host, "service": alert.service,
        "state": alert.state, "severity": alert.severity, "open": alert.is_open,
        "occurrences": alert.occurrences, "flaps": alert.flaps, "problem_id": alert.problem_id,
        "first_at": _iso(alert.first_at), "last_at": _iso(alert.last_at),
        "changed_at": _iso(alert.changed_at), "recovered_at": _iso(alert.recovered_at),
    }  # fmt: skip
    attachments: dict[int, list[dict[str, Any]]] = {}
    for att in session.scalars(
        select(Attachment)
        .join(Article, Attachment.article_id == Article.id)
        .where(Article.ticket_id == number)
    ):
        attachments.setdefault(att.article_id, []).append(
            {
                "id": att.id,
                "filename": att.filename,
                "content_type": att.content_type,
                "size": att.size,
                "sha256": att.sha256,
                "inline": att.inline,
            }  # fmt: skip
        )
    out["articles"] = [
        {
            "id": a.id,
            "direction": a.direction,
            "visibility": a.visibility,
            "kind": a.kind,
            "from": {"email": a.author_email, "name": a.author_name},
            "subject": a.subject,
            "message_id": a.message_id,
            "in_reply_to": a.in_reply_to,
            "date": _iso(a.sent_at),
            "created_at": _iso(a.created_at),
            "verified_by": a.verified_by,
            "text": a.text,
            "attachments": attachments.get(a.id, []),
        }
        for a in session.scalars(
            select(Article).where(Article.ticket_id == number).order_by(Article.id)
        )
    ]
    out["suggestions"] = [
        {
            "number": s.suggested_id,
            "subject": subject,
            "position": s.position or None,  # None: marked helpful, not suggested
            "helpful": s.helpful_at is not None,
            "helpful_by": s.helpful_by,
        }
        for s, subject in session.execute(
            select(Suggestion, Ticket.subject)
            .join(Ticket, Ticket.id == Suggestion.suggested_id)
            .where(Suggestion.ticket_id == number)
            .order_by(Suggestion.position == 0, Suggestion.position, Suggestion.suggested_id)
        )
    ]
    # How often this ticket's fix helped with others (#helpful).
    out["helpful_count"] = int(session.scalar(
        select(func.count()).select_from(Suggestion)
        .where(Suggestion.suggested_id == number, Suggestion.helpful_at.is_not(None))) or 0)  # fmt: skip
    out["events"] = [
        {
            "at": _iso(e.at),
            "actor": e.actor,
            "kind": e.kind,
            "old": e.old,
            "new": e.new,
            "detail": e.detail,
        }  # fmt: skip
        for e in session.scalars(select(Event).where(Event.ticket_id == number).order_by(Event.id))
    ]
    return out


def list_outbox(
    session: Session, status: str | None = None, limit: int = 100, *, after: int | None = None
) -> list[dict[str, Any]]:
    stmt = select(Outbox).order_by(Outbox.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(Outbox.status == status)
    if after is not None:
        stmt = stmt.where(Outbox.id < after)
    return [
        {
            "id": o.id,
            "ticket": o.ticket_id,
            "kind": o.kind,
            "status": o.status,
            "message_id": o.message_id,
            "to": list(o.rcpt_to),
            "attempts": o.attempts,
            "next_attempt_at": _iso(o.next_attempt_at),
            "last_error": o.last_error,
            "created_at": _iso(o.created_at),
            "sent_at": _iso(o.sent_at),
        }
        for o in session.scalars(stmt)
    ]


def list_quarantine(
    session: Session, limit: int = 100, *, after: int | None = None
) -> list[dict[str, Any]]:
    stmt = (
        select(
            Inbound.id,
            Inbound.source,
            Inbound.envelope_from,
            Inbound.recipient,
            Inbound.message_id,
            Inbound.size,
            Inbound.received_at,
            Inbound.attempts,
            Inbound.error,
        )  # fmt: skip
        .where(Inbound.status == InboundStatus.QUARANTINED)
        .where(Inbound.id < after if after is not None else true())
        .order_by(Inbound.id.desc())
        .limit(limit)
    )
    return [
        {
            "id": r.id,
            "source": r.source,
            "envelope_from": r.envelope_from,
            "recipient": r.recipient,
            "message_id": r.message_id,
            "size": r.size,
            "received_at": _iso(r.received_at),
            "attempts": r.attempts,
            "reason": r.error,
        }
        for r in session.execute(stmt)
    ]


def inbound_counts(session: Session) -> dict[str, int]:
    return dict(
        session.execute(select(Inbound.status, func.count()).group_by(Inbound.status)).all()
    )

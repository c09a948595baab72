"""Major incidents opened by maild over a burst of reports (DB only).

When ``major.threshold`` new incidents of one category (tickets from people;
never ``triage.default_category`` or ``major.ignore_categories``), or alert
incidents of one host, arrive within ``major.window_minutes``, maild opens a
major incident (P1, tier 3, origin ``major``), attaches every one of them as
a child, and tells tier 3 and the duty manager at once; the requesters of the
children hear once that the problem is known. Later reports of the same
category (or host) attach to the open major incident as they arrive.

`after_new_ticket` runs in the transaction that created the ticket (the
worker's, or any other door's). On PostgreSQL a transaction-scoped advisory
lock per key serialises the check, so two instances folding one burst open
one major incident. Declaring, attaching, detaching and the resolution
cascade are `TicketOps` operations (``#major``, ``maild ticket major``).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.orm import Session

from maild.config.settings import Settings
from maild.desk.actions import SYSTEM, Done, TicketOps
from maild.mail.parse import Address
from maild.pipeline.decision import ArticleSpec, EventSpec, TicketSpec
from maild.store.db import Direct, is_sqlite
from maild.store.models import Alert, Ticket
from maild.store.states import (
    FINISHED_STATUSES,
    ArticleKind,
    Direction,
    Origin,
    TicketStatus,
    TicketType,
    Visibility,
)

log = logging.getLogger(__name__)

MAX_CHILDREN_LISTED = 50


def may_group(spec: TicketSpec, settings: Settings) -> bool:
    """Could this new ticket count towards a burst? (No database: the hot path asks.)"""
    if not settings.major.enabled or spec.type != TicketType.INCIDENT:
        return False
    if spec.status == TicketStatus.NEW:  # recorded without notification (import --no-notify)
        return False
    if spec.origin == Origin.ALERT:
        return True
    ignored = {settings.triage.default_category, *settings.major.ignore_categories}
    return spec.origin == Origin.MAIL and spec.category not in ignored


class _Reported(NamedTuple):
    """What the burst check needs of a new ticket (one row, not the whole ticket)."""

    id: int
    major: bool
    major_id: int | None
    type: str
    origin: str
    category: str
    created_at: datetime


# Asked of every new incident (the hot path): built once, run directly.
_REPORTED = Direct(
    select(Ticket.id, Ticket.major, Ticket.major_id, Ticket.type, Ticket.origin,
           Ticket.category, Ticket.created_at).where(Ticket.id == bindparam("id"))
)  # fmt: skip


def key_of(ops: TicketOps, ticket: Ticket | _Reported) -> str | None:
    """The burst a new ticket counts towards: ``category:NAME`` or ``host:NAME``."""
    settings = ops.settings
    if ticket.major or ticket.major_id is not None or ticket.type != TicketType.INCIDENT:
        return None
    if ticket.origin == Origin.ALERT:
        host = ops.session.scalar(select(Alert.host).where(Alert.ticket_id == ticket.id))
        return f"host:{host}" if host else None
    if ticket.origin != Origin.MAIL:
        return None
    ignored = {settings.triage.default_category, *settings.major.ignore_categories}
    return None if ticket.category in ignored else f"category:{ticket.category}"


def after_new_ticket(ops: TicketOps, number: int) -> Done | None:
    """Attach a new incident to the open major incident of its burst, or open one."""
    if not ops.settings.major.enabled:
        return None
    row = _REPORTED.first(ops.session, {"id": number})
    if row is None:
        return None
    ticket = _Reported(*row)
    since = ops.now - timedelta(minutes=ops.settings.major.window_minutes)
    if ticket.created_at < since:
        # An archive's old report (maild import) is no part of today's burst,
        # nor of today's major incident.
        return None
    key = key_of(ops, ticket)
    if key is None:
        return None
    _lock(ops.session, key)
    major = ops.session.scalar(
        select(Ticket.id).where(Ticket.major_key == key, Ticket.major.is_(True),
                                Ticket.status.not_in(FINISHED_STATUSES))
        .order_by(Ticket.id.desc()).limit(1)
    )  # fmt: skip
    if major is not None:
        return ops.attach(major, number, actor=SYSTEM)
    burst = _burst(ops.session, key, since)
    if len(burst) < ops.settings.major.threshold:
        return None
    return open_major(ops, key, burst)


def _lock(session: Session, key: str) -> None:
    """Serialise the burst check per key across instances (PostgreSQL; SQLite has one writer)."""
    if is_sqlite(session):
        return
    number = int.from_bytes(hashlib.sha256(f"major:{key}".encode()).digest()[:8], "big",
                            signed=True)  # fmt: skip
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": number})


def _burst(session: Session, key: str, since: datetime) -> list[int]:
    """The unattached, unfinished incidents of `key` created since `since`, oldest first."""
    kind, _sep, name = key.partition(":")
    loose = (Ticket.major.is_(False), Ticket.major_id.is_(None),
             Ticket.status.not_in(FINISHED_STATUSES), Ticket.type == TicketType.INCIDENT)  # fmt: skip
    if kind == "category":
        stmt = select(Ticket.id).where(Ticket.category == name, Ticket.created_at >= since,
                                       Ticket.origin == Origin.MAIL, *loose)  # fmt: skip
    else:
        stmt = (select(Ticket.id).join(Alert, Alert.ticket_id == Ticket.id)
                .where(Alert.host == name, Alert.first_at >= since, *loose))  # fmt: skip
    return list(session.scalars(stmt.order_by(Ticket.id)))


def open_major(ops: TicketOps, key: str, children: list[int]) -> Done:
    """A new major incident over `children` (maild's own: origin ``major``)."""
    session, settings, now = ops.session, ops.settings, ops.now
    first = ops.get(children[0])
    kind, _sep, name = key.partition(":")
    window = settings.major.window_minutes
    why = (f"{len(children)} new incidents of category {name} within {window:g} minutes"
           if kind == "category" else
           f"{len(children)} alert incidents on host {name} within {window:g} minutes")  # fmt: skip
    clock = ops.policy.start(1, now)
    hd = settings.helpdesk
    desk = Address(name=hd.name, email=hd.primary_address)
    subject = (f"Major incident: {first.subject}" if kind == "category"
               else f"Major incident: host {name}")  # fmt: skip
    spec = TicketSpec(
        type=TicketType.INCIDENT, category=first.category, impact=1, urgency=1, priority=1,
        tier=3, security=first.security, subject=subject[:998], requester=desk,
        language=hd.default_language, address=first.address or hd.primary_address,
        first_response_due=clock.first_response_due, resolution_due=clock.resolution_due,
        status=TicketStatus.OPEN, sla=clock, origin=Origin.MAJOR,
    )  # fmt: skip
    applier = ops.applier
    view = applier.create_ticket(session, spec, now)
    session.execute(update(Ticket).where(Ticket.id == view.id).values(major=True, major_key=key))
    lines = [f"maild opened this major incident: {why}."] + [
        f"  #{t.id} {t.subject}" for t in session.scalars(
            select(Ticket).where(Ticket.id.in_(children)).order_by(Ticket.id))
    ][:MAX_CHILDREN_LISTED]  # fmt: skip
    note = ArticleSpec(kind=ArticleKind.NOTE, visibility=Visibility.INTERNAL, author=desk,
                       subject=subject, text="\n".join(lines), html=None, message_id=None,
                       in_reply_to=None, sent_at=None, direction=Direction.IN)  # fmt: skip
    applier.add_article(session, view.id, note, None, now)
    major = ops.get(view.id)
    done = Done(major.id)
    ops.event(major, done, EventSpec("created", SYSTEM, new=TicketStatus.OPEN,
                                     detail={"major": key, "why": why}))  # fmt: skip
    ops.event(major, done, EventSpec("major", SYSTEM, new="declared", detail={"key": key,
                                     "children": children, "why": why}))  # fmt: skip
    ops.tell_major_audience(major, done, event="opened", why=why, actor=SYSTEM,
                            children=children)  # fmt: skip
    for child in children:
        attached = ops.attach(major.id, child, actor=SYSTEM)
        done.outbox_ids += attached.outbox_ids
    log.warning("major incident #%d opened: %s", major.id, why)
    return done

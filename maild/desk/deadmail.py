"""Mail that could not be sent is never silent: its ticket records it, the agents
working the ticket hear of it, and a person can send it again.

The sender marks an outbox row ``dead`` (a 5xx, or ``outgoing.max_attempts``
failures); `sweep_dead_mail`, one of the periodic sweeps, then adds a
``mail_dead`` event to its ticket and, when the mail was for the requester or
the watchers, tells the assignee (or the tier working the ticket) what failed
and how to send it again: ``maild outbox retry ID`` (`retry`). Mail to agents
that dies is recorded and logged, not announced by more mail to agents.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, lazyload, sessionmaker

from maild.clock import Clock
from maild.desk.actions import SYSTEM, Done, TicketOps
from maild.desk.apply import Applier
from maild.pipeline.decision import EventSpec
from maild.store.models import Article, Outbox, Ticket
from maild.store.states import OutboxStatus, Visibility

log = logging.getLogger(__name__)

BATCH = 100
ERROR_CHARS = 300


def sweep_dead_mail(sessions: sessionmaker[Session], applier: Applier, clock: Clock) -> int:
    """Record and announce every dead outbox row not noticed yet; how many."""
    total = 0
    while True:
        now = clock.now()
        with sessions.begin() as session:
            # The outbox rows alone are locked (PostgreSQL locks no outer-joined row).
            rows = session.execute(
                select(Outbox.id, Outbox.ticket_id, Outbox.kind, Outbox.rcpt_to,
                       Outbox.last_error, Outbox.attempts, Article.visibility)
                .outerjoin(Article, Article.id == Outbox.article_id)
                .where(Outbox.status == OutboxStatus.DEAD, Outbox.dead_noticed_at.is_(None))
                .order_by(Outbox.id)
                .limit(BATCH)
                .with_for_update(skip_locked=True, of=Outbox)
            ).all()  # fmt: skip
            ops = TicketOps(session, applier, now)
            for row in rows:
                _notice(session, ops, row)
            if rows:
                session.execute(
                    update(Outbox)
                    .where(Outbox.id.in_([r.id for r in rows]))
                    .values(dead_noticed_at=now)
                )
        total += len(rows)
        if len(rows) < BATCH:
            return total


def _notice(session: Session, ops: TicketOps, row: Any) -> None:
    outbox_id, ticket_id, kind = row.id, row.ticket_id, row.kind
    to = ", ".join(row.rcpt_to)
    error = (row.last_error or "no reason given")[:ERROR_CHARS]
    public = row.visibility == Visibility.PUBLIC
    log.error("outbox %d (%s to %s, ticket #%s) is dead: %s", outbox_id, kind, to,
              ticket_id or "-", error)  # fmt: skip
    if ticket_id is None:
        return
    ticket = session.scalars(
        select(Ticket).options(lazyload(Ticket.requester)).where(Ticket.id == ticket_id)
    ).one()
    done = Done(ticket.id)
    ops.event(ticket, done, EventSpec("mail_dead", SYSTEM, new=str(outbox_id), detail={
        "outbox": outbox_id, "kind": kind, "to": list(row.rcpt_to), "error": error,
        "attempts": row.attempts}))  # fmt: skip
    if public:  # the requester (or a watcher) did not get it: the agents must know
        ops.tell_groups(ticket, "agent_update", ops.working_audience(ticket), done,
                        event="mail_dead", to=to, kind=kind, error=error, outbox=outbox_id)  # fmt: skip


@dataclass(frozen=True)
class Retry:
    outbox_id: int
    queued: bool
    why: str = ""


def retry(session: Session, applier: Applier, ids: list[int], actor: str,
          now: datetime) -> list[Retry]:  # fmt: skip
    """Send dead mail again (the same bytes, the same Message-ID); say why not for others."""
    wanted = list(dict.fromkeys(ids))
    rows = {r.id: r for r in session.execute(
        select(Outbox.id, Outbox.status, Outbox.ticket_id, Outbox.kind, Outbox.rcpt_to)
        .where(Outbox.id.in_(wanted)))}  # fmt: skip
    out: list[Retry] = []
    for outbox_id in wanted:
        r = rows.get(outbox_id)
        if r is None:
            out.append(Retry(outbox_id, False, "no such outgoing mail"))
            continue
        if r.status != OutboxStatus.DEAD:
            out.append(Retry(outbox_id, False, f"it is {r.status}, not dead"))
            continue
        session.execute(
            update(Outbox)
            .where(Outbox.id == outbox_id, Outbox.status == OutboxStatus.DEAD)
            .values(
                status=OutboxStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                claimed_at=None,
                claimed_by=None,
                dead_noticed_at=None,
            )  # fmt: skip
        )
        if r.ticket_id is not None:
            applier.event(session, r.ticket_id, EventSpec("mail_retried", actor,
                          new=str(outbox_id), detail={"kind": r.kind, "to": list(r.rcpt_to)}),
                          now)  # fmt: skip
        log.info("outbox %d (%s to %s) queued again by %s", outbox_id, r.kind,
                 ", ".join(r.rcpt_to), actor)  # fmt: skip
        out.append(Retry(outbox_id, True))
    return out

"""Periodic sweeps (DESIGN §1, §6): one idempotent scan per concern.

No job per ticket: every sweep selects the tickets whose time has come from
indexed columns, acts through `TicketOps`, and records what it did in the
same transaction (``*_warned_at``, ``*_breached_at``, ``reminders_sent``,
``regulator_next_reminder_at``, the status). Running a sweep twice sends
nothing twice; a daemon that was down catches up with one mail per ticket,
not one per missed step. Rows are claimed with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so several instances never act on the same ticket at once.

- `sweep_sla`: warning at ``sla.warn_fraction`` of a target (to the assignee
  or the tier group); breach: alert, then escalation to the next tier (at
  tier 3: to the duty manager), the requester told what happens next.
- `sweep_waiting`: tickets waiting for the requester get reminders, and are
  resolved after ``lifecycle.auto_resolve_days`` of silence.
- `sweep_closing`: resolved tickets close after ``lifecycle.close_after_days``.
- `sweep_regulator`: security incidents remind the security contacts and the
  duty manager of the regulator deadline (24, 48, 66 h; and at 72 h).
- `sweep_digests`: automatic mail a rate limit held back (`maild.desk.autoreply`)
  goes out as one digest per address, once that address has room again.
- `sweep_dead_mail` (`maild.desk.deadmail`): mail that could not be sent is
  recorded on its ticket, and the agents working it are told.
- `sweep_weekly_report` (`maild.desk.weekly`): the weekly report to the duty
  managers, once a week (returns mails queued, not tickets).

Tickets recorded without notification (status ``new``: ``maild import
--no-notify`` of another help desk's archive) are left alone by the SLA and
regulator sweeps.

Each takes ``(sessions, applier, clock)`` (the applier carries the settings
and the templates) and returns how many tickets it acted on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, lazyload, sessionmaker

from maild.clock import Clock
from maild.desk.actions import SYSTEM, ActionRefused, Done, TicketOps
from maild.desk.apply import Applier
from maild.desk.autoreply import DIGEST_KIND
from maild.desk.deadmail import sweep_dead_mail
from maild.desk.weekly import sweep_weekly_report
from maild.mail.parse import Address
from maild.pipeline import notices
from maild.pipeline.decision import EventSpec, Notice
from maild.store.db import claim_order
from maild.store.models import AutoreplyLog, HeldNotice, Ticket
from maild.store.states import FINISHED_STATUSES, TicketStatus

log = logging.getLogger(__name__)

BATCH = 200
Sweep = Callable[[sessionmaker[Session], Applier, Clock], int]


def _run(
    sessions: sessionmaker[Session],
    applier: Applier,
    clock: Clock,
    where: Any,
    act: Callable[[TicketOps, Ticket], bool],
    name: str,
) -> int:
    """Claim due tickets in batches and `act` on each; stop when none is due."""
    total = 0
    seen: set[int] = set()
    while True:
        now = clock.now()
        with sessions.begin() as session:
            # The requester's joined eager load would put FOR UPDATE on an outer join,
            # which PostgreSQL refuses: lock the ticket row alone.
            stmt = select(Ticket).options(lazyload(Ticket.requester)).where(where(now))
            if seen:
                stmt = stmt.where(Ticket.id.not_in(seen))
            # No ORDER BY: with it SQLite scans the table by rowid instead of using the
            # deadline indexes. The batch is sorted here instead.
            tickets = sorted(session.scalars(claim_order(stmt.limit(BATCH))), key=lambda t: t.id)
            ops = TicketOps(session, applier, now)
            for ticket in tickets:
                seen.add(ticket.id)
                savepoint = session.begin_nested()
                try:
                    acted = act(ops, ticket)
                    savepoint.commit()
                except ActionRefused as exc:  # the ticket changed under us: nothing to do
                    savepoint.rollback()
                    log.info("%s: ticket #%d skipped: %s", name, ticket.id, exc)
                    continue
                except Exception:
                    savepoint.rollback()
                    log.exception("%s: ticket #%d failed; will try again next sweep", name,
                                  ticket.id)  # fmt: skip
                    continue
                total += int(acted)
        if len(tickets) < BATCH:
            return total


# --- SLA warnings and breaches ---------------------------------------------------------

_ACTIVE = and_(
    Ticket.status.not_in([TicketStatus.NEW, *FINISHED_STATUSES]),
    Ticket.sla_paused_at.is_(None),
)


def _sla_due(now: datetime) -> Any:
    """Tickets with a warning or breach to look at.

    A warning time never lies after its deadline, so the indexed ``*_warn_at``
    columns find both; the idle sweep costs the same whatever the archive size.
    Tickets between warning and deadline are looked at again each sweep and
    left alone until the deadline.
    """
    return and_(
        _ACTIVE,
        or_(
            and_(Ticket.first_response_warn_at <= now, Ticket.first_response_at.is_(None),
                 Ticket.first_response_breached_at.is_(None)),
            and_(Ticket.resolution_warn_at <= now, Ticket.resolution_breached_at.is_(None)),
        ),
    )  # fmt: skip


def _sla_act(ops: TicketOps, ticket: Ticket) -> bool:
    now = ops.now
    breaches: list[str] = []
    warnings: list[str] = []
    for target in ("first_response", "resolution"):
        if target == "first_response" and ticket.first_response_at is not None:
            continue
        due: datetime | None = getattr(ticket, f"{target}_due")
        warn_at: datetime | None = getattr(ticket, f"{target}_warn_at")
        if due is not None and due <= now and getattr(ticket, f"{target}_breached_at") is None:
            breaches.append(target)
            setattr(ticket, f"{target}_breached_at", now)
            if getattr(ticket, f"{target}_warned_at") is None:
                setattr(ticket, f"{target}_warned_at", now)  # too late to warn
        elif (warn_at is not None and warn_at <= now
              and getattr(ticket, f"{target}_warned_at") is None):  # fmt: skip
            warnings.append(target)
            setattr(ticket, f"{target}_warned_at", now)
    if not breaches and not warnings:
        return False
    audience = ops.working_audience(ticket)
    done = Done(ticket.id)
    for target in warnings:
        due = getattr(ticket, f"{target}_due")
        ops.event(ticket, done, EventSpec("sla_warning", SYSTEM, new=target,
                                          detail={"due": due.isoformat()}))  # fmt: skip
        ops.tell_groups(ticket, "sla_warning", audience, done, target=target, due=due)
    if breaches:
        for target in breaches:
            due = getattr(ticket, f"{target}_due")
            ops.event(ticket, done, EventSpec("sla_breach", SYSTEM, new=target,
                                              detail={"due": due.isoformat(),
                                                      "tier": ticket.tier}))  # fmt: skip
        ops.tell_groups(ticket, "sla_breach", audience, done, targets=breaches)
        ops.escalate(ticket.id, actor=SYSTEM, reason="SLA breach", breach=breaches[0])
    log.info("sla: ticket #%d P%d now tier %d: %s", ticket.id, ticket.priority, ticket.tier,
             " ".join(done.events))  # fmt: skip
    return True


def sweep_sla(sessions: sessionmaker[Session], applier: Applier, clock: Clock) -> int:
    return _run(sessions, applier, clock, _sla_due, _sla_act, "sla")


# --- waiting for the requester ---------------------------------------------------------


def sweep_waiting(sessions: sessionmaker[Session], applier: Applier, clock: Clock) -> int:
    lc = applier.settings.lifecycle
    remind_after = timedelta(days=lc.remind_after_days)
    resolve_after = timedelta(days=lc.auto_resolve_days)

    def due(now: datetime) -> Any:
        waiting = and_(
            Ticket.status == TicketStatus.PENDING_USER, Ticket.sla_paused_at.is_not(None)
        )
        remind = and_(
            Ticket.reminders_sent < lc.max_reminders,
            or_(
                and_(Ticket.last_reminder_at.is_(None), Ticket.sla_paused_at <= now - remind_after),
                Ticket.last_reminder_at <= now - remind_after,
            ),
        )
        return and_(waiting, or_(remind, Ticket.sla_paused_at <= now - resolve_after))

    def act(ops: TicketOps, ticket: Ticket) -> bool:
        now = ops.now
        assert ticket.sla_paused_at is not None
        if ticket.sla_paused_at <= now - resolve_after:
            ops.resolve(ticket.id, actor=SYSTEM, auto=True,
                        note="no reply from the requester")  # fmt: skip
            return True
        since = ticket.last_reminder_at or ticket.sla_paused_at
        if ticket.reminders_sent >= lc.max_reminders or since > now - remind_after:
            return False
        ticket.reminders_sent += 1
        ticket.last_reminder_at = now
        done = Done(ticket.id)
        ops.event(ticket, done, EventSpec("reminder", SYSTEM, new=str(ticket.reminders_sent)))
        ops.tell_requester(ticket, "waiting_reminder", "reminder", done,
                           waiting_since=ticket.sla_paused_at,
                           resolves_at=ticket.sla_paused_at + resolve_after,
                           reminder=ticket.reminders_sent)  # fmt: skip
        return True

    return _run(sessions, applier, clock, due, act, "waiting")


# --- resolved -> closed -------------------------------------------------------------------


def sweep_closing(sessions: sessionmaker[Session], applier: Applier, clock: Clock) -> int:
    after = timedelta(days=applier.settings.lifecycle.close_after_days)

    def due(now: datetime) -> Any:
        return and_(Ticket.status == TicketStatus.RESOLVED, Ticket.resolved_at <= now - after)

    def act(ops: TicketOps, ticket: Ticket) -> bool:
        ops.close(ticket.id, actor=SYSTEM, auto=True)
        return True

    return _run(sessions, applier, clock, due, act, "closing")


# --- the regulator deadline of security incidents ------------------------------------------


def sweep_regulator(sessions: sessionmaker[Session], applier: Applier, clock: Clock) -> int:
    def due(now: datetime) -> Any:
        return and_(Ticket.status != TicketStatus.NEW,  # recorded silently (import --no-notify)
                    Ticket.regulator_notified_at.is_(None),
                    Ticket.regulator_next_reminder_at <= now)  # fmt: skip

    def act(ops: TicketOps, ticket: Ticket) -> bool:
        now = ops.now
        assert ticket.regulator_due is not None
        start = ticket.regulator_due - ops.policy.regulator_deadline
        passed, following = ops.policy.next_regulator_reminder(start, now)
        ticket.regulator_next_reminder_at = following
        if passed <= ticket.regulator_reminders_sent:
            return False
        ticket.regulator_reminders_sent = passed
        overdue = now >= ticket.regulator_due
        elapsed_hours = int((now - start).total_seconds() // 3600)
        done = Done(ticket.id)
        ops.event(ticket, done, EventSpec("regulator_reminder", SYSTEM, new=str(passed),
                                          detail={"overdue": overdue}))  # fmt: skip
        left = max(0, int((ticket.regulator_due - now).total_seconds() // 3600))
        ops.tell_groups(
            ticket,
            "regulator_reminder",
            notices.regulator_audience(applier.settings, applier.directory),
            done,
            elapsed_hours=elapsed_hours,
            overdue=overdue,
            left_hours=left,
        )
        return True

    return _run(sessions, applier, clock, due, act, "regulator")


def sweep_digests(sessions: sessionmaker[Session], applier: Applier, clock: Clock) -> int:
    """One digest per address of the notices held back for it, when it has room.

    Room: fewer than ``limits.autoreply_per_address_per_hour`` automatic mails
    to it in the last hour *from any source* (so a flood that goes on holds
    the digest too: one per quiet hour, not one per sweep), and the digest
    passes the limits like any automatic mail; meanwhile the rows stay held.
    Each address in a transaction of its own; its held rows are locked (SKIP
    LOCKED on PostgreSQL), so two instances never send one digest twice. For
    an address that hard-bounced meanwhile, the held rows are dropped.
    """
    now = clock.now()
    limit = applier.settings.limits.autoreply_per_address_per_hour
    with sessions.begin() as session:
        addresses = list(session.scalars(
            select(HeldNotice.address).where(HeldNotice.sent_at.is_(None))
            .group_by(HeldNotice.address).order_by(func.min(HeldNotice.id)).limit(BATCH)))  # fmt: skip
    sent = 0
    for address in addresses:
        with sessions.begin() as session:
            rows = list(session.scalars(claim_order(
                select(HeldNotice).where(HeldNotice.address == address,
                                         HeldNotice.sent_at.is_(None))
                .order_by(HeldNotice.id).limit(100))))  # fmt: skip
            if not rows:
                continue
            recent = session.scalar(select(func.count()).select_from(AutoreplyLog).where(
                AutoreplyLog.address == address, AutoreplyLog.at > now - timedelta(hours=1)))  # fmt: skip
            if (recent or 0) >= limit:
                continue  # not yet: the address had its fill this hour
            ticket = session.get(Ticket, rows[-1].ticket_id) if rows[-1].ticket_id else None
            if ticket is None:
                continue
            items = [{"number": r.ticket_id, "subject": r.subject, "kind": r.kind} for r in rows]
            notice = Notice(template="digest", to=(Address("", address),), kind=DIGEST_KIND,
                            auto_submitted="auto-generated", language=rows[-1].language,
                            context={"items": items, "held_since": rows[0].held_at})  # fmt: skip
            _screened, refusal = applier.guard.screen(session, ticket.id, notice, now)
            if refusal is not None and refusal.hold:
                continue  # no room yet: the rows stay held
            for row in rows:
                row.sent_at = now
            if refusal is not None:  # undeliverable now: nothing to send them
                log.warning("held notices to %s dropped: %s", address, refusal.reason)
                continue
            applier.queue_notice(session, ticket, notice, now)
            for number in sorted({r.ticket_id for r in rows if r.ticket_id}):
                applier.event(session, number, EventSpec("digest_queued", SYSTEM, detail={
                    "to": address, "held": [r.kind for r in rows if r.ticket_id == number]}),
                    now)  # fmt: skip
            sent += 1
    return sent


SWEEPS: tuple[tuple[str, Sweep], ...] = (
    ("sla", sweep_sla),
    ("waiting", sweep_waiting),
    ("closing", sweep_closing),
    ("regulator", sweep_regulator),
    ("digests", sweep_digests),
    ("dead_mail", sweep_dead_mail),
    ("weekly_report", sweep_weekly_report),
)


def run_all(sessions: sessionmaker[Session], applier: Applier, clock: Clock) -> dict[str, int]:
    """Every sweep once, in order (the CLI's ``maild sweep`` and the tests)."""
    return {name: sweep(sessions, applier, clock) for name, sweep in SWEEPS}

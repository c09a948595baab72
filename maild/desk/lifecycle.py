"""Status transitions of a ticket row and the SLA bookkeeping they carry.

The one place that moves ``ticket.status`` (DESIGN §3): `apply` (a reply
reopens or un-pauses a ticket), `actions` (agents and admins) and `sweeps`
(reminders, auto-resolve, auto-close) all call `change_status`, which keeps
the SLA columns right through the pure transitions of `maild.pipeline.sla`:

- entering ``pending_user`` pauses the clocks and starts the reminder count;
- leaving it resumes them, the deadlines moved by the time spent waiting;
- ``resolved`` stops the resolution clock; ``closed`` also sets ``closed_at``;
- leaving ``resolved``/``closed`` (a reopen) gives a fresh resolution target.
"""

from __future__ import annotations

from datetime import datetime

from maild.pipeline.sla import FIELDS, SlaClock, SlaPolicy
from maild.store.models import Ticket
from maild.store.states import FINISHED_STATUSES, TicketStatus

_COLUMN = {"paused_at": "sla_paused_at", "paused_seconds": "sla_paused_seconds"}


def clock_of(ticket: Ticket) -> SlaClock:
    values = {f: getattr(ticket, _COLUMN.get(f, f)) for f in FIELDS}
    values["paused_seconds"] = values["paused_seconds"] or 0
    return SlaClock(priority=ticket.priority,
                    resolved=ticket.status in FINISHED_STATUSES, **values)  # fmt: skip


def sla_columns(clock: SlaClock) -> dict[str, object]:
    """The ticket columns of `clock`, for an INSERT."""
    return {_COLUMN.get(f, f): getattr(clock, f) for f in FIELDS}


def store(ticket: Ticket, clock: SlaClock) -> None:
    for f in FIELDS:
        setattr(ticket, _COLUMN.get(f, f), getattr(clock, f))
    ticket.priority = clock.priority


def change_status(ticket: Ticket, new: str, now: datetime, policy: SlaPolicy) -> str:
    """Move `ticket` to `new` with its SLA bookkeeping; return the old status."""
    old = ticket.status
    if new == old:
        return old
    clock = clock_of(ticket)
    if old == TicketStatus.PENDING_USER:
        clock = policy.resume(clock, now)
    if old in FINISHED_STATUSES and new not in FINISHED_STATUSES:
        clock = policy.restart_resolution(clock, now)
        ticket.resolved_at = None
        ticket.closed_at = None
    if new == TicketStatus.PENDING_USER:
        clock = policy.pause(clock, now)
        ticket.reminders_sent = 0
        ticket.last_reminder_at = None
    if new == TicketStatus.RESOLVED:
        ticket.resolved_at = now
        ticket.closed_at = None
    if new == TicketStatus.CLOSED:
        ticket.resolved_at = ticket.resolved_at or now
        ticket.closed_at = now
    store(ticket, clock)
    ticket.status = new
    ticket.updated_at = now
    return old


def set_priority(ticket: Ticket, priority: int, now: datetime, policy: SlaPolicy) -> int:
    """New priority; the deadlines move by the difference of the targets."""
    old = ticket.priority
    if priority != old:
        store(ticket, policy.retarget(clock_of(ticket), priority, now))
        ticket.updated_at = now
    return old


def start_regulator_clock(ticket: Ticket, now: datetime, policy: SlaPolicy) -> None:
    """A ticket that becomes a security incident: the 72-hour clock starts now."""
    if ticket.regulator_due is None:
        ticket.regulator_due, ticket.regulator_next_reminder_at = policy.regulator_clock(now)
        ticket.regulator_reminders_sent = 0

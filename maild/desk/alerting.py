"""Write a monitor's mail (DB only): the steps `maild.alertmail` decided, one per alert.

Runs in the worker's transaction, like `Applier.apply` does for a person's
mail. New incidents are written as `Applier` writes any new ticket (ticket,
article, events, the agents' mail); everything that changes an existing
incident goes through `TicketOps` (priority, resolve, reopen), so the SLA
bookkeeping and the audit trail are the ones every other door leaves. The
``alert`` row of each incident keeps the count of occurrences, the last state
and when it was seen. The monitor is never written to: tickets of origin
``alert`` have no requester to tell (`TicketOps.tell_requester`).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from maild.desk import majors
from maild.desk.actions import Done, TicketOps
from maild.desk.apply import Applied, Applier
from maild.pipeline.alertmail import alert_context, alert_detail
from maild.pipeline.decision import AlertStep, Decision, EventSpec
from maild.store.models import Alert
from maild.store.states import FINISHED_STATUSES, Outcome

log = logging.getLogger(__name__)


def apply(
    applier: Applier,
    session: Session,
    inbound_id: int,
    decision: Decision,
    now: datetime,
    *,
    claimed_at: datetime | None = None,
) -> Applied:
    """Write every step of `decision` (a monitor's mail); the caller commits."""
    ops = TicketOps(session, applier, now)
    touched: list[int] = []
    queued: list[int] = []
    for step in decision.alerts:
        if step.action == "ignore":
            continue
        done = (
            _open(ops, inbound_id, step)
            if step.action == "open"
            else _update(ops, inbound_id, step)
        )
        touched.append(done.ticket)
        queued.extend(done.outbox_ids)
        log.info("ticket #%d: alert %s %s/%s %s: %s", done.ticket, step.event.source,
                 step.event.host, step.event.service, step.event.state, step.reason)  # fmt: skip
    first = touched[0] if touched else None
    applier.finish_inbound(session, inbound_id, decision, now, first, claimed_at)
    outcome = decision.outcome if first is not None else Outcome.IGNORED
    return Applied(outcome, first, tuple(queued))


def _open(ops: TicketOps, inbound_id: int, step: AlertStep) -> Done:
    applier, session, now = ops.applier, ops.session, ops.now
    assert step.new_ticket is not None and step.article is not None
    if step.retire is not None:  # the key's old incident, resolved long ago, stops folding
        session.execute(update(Alert).where(Alert.ticket_id == step.retire)
                        .values(is_open=False))  # fmt: skip
    view = applier.create_ticket(session, step.new_ticket, now)
    applier.add_article(session, view.id, step.article, inbound_id, now)
    applier.events(session, view.id, step.events, now)
    event = step.event
    session.execute(
        insert(Alert).values(
            ticket_id=view.id, source=event.source, host=event.host, service=event.service,
            fold_key=event.fold_key, is_open=True, state=event.state, severity=event.severity,
            problem_id=event.problem_id or None, occurrences=1, flaps=0, first_at=now,
            last_at=now, changed_at=now, recovered_at=None,
        )
    )  # fmt: skip
    done = Done(view.id, events=[e.kind for e in step.events])
    for notice in step.notices:
        outbox_id = applier.queue_notice(session, view, notice, now)
        if outbox_id is not None:
            done.outbox_ids.append(outbox_id)
    if majors.may_group(step.new_ticket, applier.settings):  # a burst on one host
        grouped = majors.after_new_ticket(ops, view.id)
        if grouped is not None:
            done.outbox_ids += grouped.outbox_ids
    return done


def _update(ops: TicketOps, inbound_id: int, step: AlertStep) -> Done:
    """A repeat, recovery, flapping or note on an existing incident."""
    applier, session, now = ops.applier, ops.session, ops.now
    assert step.ticket_id is not None
    ticket = ops.get(step.ticket_id)
    event = step.event
    actor = step.article.author.email if step.article else event.source
    done = Done(ticket.id)
    alert = session.get(Alert, ticket.id, with_for_update=True)
    assert alert is not None
    old_state = alert.state
    if step.article is not None:
        applier.add_article(session, ticket.id, step.article, inbound_id, now)
    alert.last_at = now
    alert.severity = event.severity
    if event.state != old_state:
        alert.state = event.state
        alert.changed_at = now
    if step.action in ("repeat", "reopen"):
        alert.occurrences += 1
    if event.state != old_state or step.action != "repeat":
        ops.event(ticket, done, EventSpec(f"alert_{step.action}", actor, old=old_state,
                                          new=event.state, detail=alert_detail(event)))  # fmt: skip
    context = {"alert": alert_context(event), "occurrences": alert.occurrences,
               "recovery": ops.settings.alerts.recovery}  # fmt: skip

    if step.action == "repeat" and step.raise_to is not None:
        changed = ops.set_priority(ticket.id, step.raise_to, actor=actor)
        done.events += changed.events
        done.outbox_ids += changed.outbox_ids
        ops.tell_groups(ticket, "agent_alert", ops.working_audience(ticket), done,
                        event="worse", **context)  # fmt: skip
    elif step.action == "recover":
        alert.is_open = False
        alert.recovered_at = now
        if step.resolve:
            note = f"Recovered: {event.label} is {event.state}" + (
                f" ({event.summary})" if event.summary else "")  # fmt: skip
            resolved = ops.resolve(ticket.id, actor=actor, note=note, auto=True)
            done.events += resolved.events
            done.outbox_ids += resolved.outbox_ids
        elif ticket.status not in FINISHED_STATUSES:
            ops.tell_groups(ticket, "agent_alert", ops.working_audience(ticket), done,
                            event="recovered", **context)  # fmt: skip
    elif step.action == "reopen":
        alert.is_open = True
        alert.recovered_at = None
        alert.flaps += 1
        context["flaps"] = alert.flaps
        if ticket.status in FINISHED_STATUSES:
            reopened = ops.reopen(ticket.id, actor=actor, quiet=True, note="flapping: the alert "
                                  "came back soon after its recovery")  # fmt: skip
            done.events += reopened.events
            done.outbox_ids += reopened.outbox_ids
        elif alert.flaps == 1:
            ops.tell_groups(ticket, "agent_alert", ops.working_audience(ticket), done,
                            event="flapping", **context)  # fmt: skip
    ticket.updated_at = now
    return done

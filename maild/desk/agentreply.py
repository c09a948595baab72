"""Run an authenticated agent's reply (`maild.pipeline.agentmail`): its commands and its
public text, through `TicketOps`, inside the transaction that stores the
article. All or nothing: the reply runs under a savepoint; a refused step
rolls the whole reply back (the article stays, as an internal note) and the
agent hears what was refused and which commands exist. A reply that ran
gets the agent a short confirmation of what changed.

Order: the commands as written, except that the public text goes out after
them and before a ``#resolve``/``#close``; a ``#resolve`` or ``#close``
without a note of its own carries the text (one mail to the requester, and
the first response is recorded); a ``#status`` of open, in_progress or
pending_user rides on the reply; a ``#reopen`` without a note of its own
reopens quietly when there is text, which then goes out as the one mail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from maild.desk import alerting, majors
from maild.desk.actions import ActionRefused, Done, TicketOps
from maild.desk.apply import Applied, Applier, flush_events
from maild.mail.parse import ParsedAttachment
from maild.mail.phrases import Phrase
from maild.pipeline.agentmail import feedback_notice, refused_notice
from maild.pipeline.commands import Command
from maild.pipeline.decision import AgentReply, ClosureReply, Decision, EventSpec
from maild.pipeline.triage import Rulebook
from maild.store.models import Agent, Ticket

log = logging.getLogger(__name__)

_FOLDED_STATUSES = ("open", "in_progress", "pending_user")
_WATCHED = ("status", "priority", "tier", "category", "type", "assignee", "first_response_at")


def apply_decision(
    applier: Applier,
    session: Session,
    inbound_id: int,
    decision: Decision,
    now: datetime,
    *,
    claimed_at: datetime | None = None,
    rules: Rulebook | None = None,
) -> Applied:
    """`Applier.apply`, then the agent's reply if the decision carries one
    (a monitor's mail goes to `maild.alerting`)."""
    if decision.alerts:
        return alerting.apply(applier, session, inbound_id, decision, now, claimed_at=claimed_at)
    applied = applier.apply(session, inbound_id, decision, now, claimed_at=claimed_at)
    spec = decision.new_ticket
    if (
        spec is not None
        and applied.ticket_id is not None
        and majors.may_group(spec, applier.settings)
    ):
        grouped = majors.after_new_ticket(
            TicketOps(session, applier, now, rules), applied.ticket_id
        )
        if grouped is not None:
            applied = Applied(applied.outcome, applied.ticket_id,
                              (*applied.outbox_ids, *grouped.outbox_ids))  # fmt: skip
    if decision.closure is not None and applied.ticket_id is not None:
        applied = _closure(applier, session, applied, decision.closure, now, rules)
    if decision.agent_reply is None or applied.ticket_id is None:
        return applied
    in_reply_to = decision.article.message_id if decision.article else None
    queued = run(session, applier, applied.ticket_id, decision.agent_reply, now, rules=rules,
                 in_reply_to=in_reply_to)  # fmt: skip
    return Applied(applied.outcome, applied.ticket_id, (*applied.outbox_ids, *queued))


def _closure(
    applier: Applier, session: Session, applied: Applied, reply: ClosureReply, now: datetime,
    rules: Rulebook | None,
) -> Applied:  # fmt: skip
    """A requester's rating or thank-you, through the same door as the web's buttons."""
    assert applied.ticket_id is not None
    ops = TicketOps(session, applier, now, rules)
    try:
        done = ops.requester_closure(applied.ticket_id, reply)
    except ActionRefused as exc:  # the ticket changed meanwhile: the reply stays recorded
        log.info("ticket #%d: %s of %s not recorded: %s", applied.ticket_id, reply.kind,
                 reply.actor, exc)  # fmt: skip
        return applied
    return Applied(applied.outcome, applied.ticket_id, (*applied.outbox_ids, *done.outbox_ids))


@dataclass(frozen=True)
class Step:
    label: str  # the command line as written, or "reply"
    run: Callable[[TicketOps], Done]


def plan(number: int, reply: AgentReply) -> list[Step]:
    """The steps of a reply, in the order described above."""
    actor = reply.agent.email
    text = reply.text
    finishing = [c for c in reply.commands if c.name in ("resolve", "close")
                 or (c.name == "status" and c.value in ("resolved", "closed"))]  # fmt: skip
    folded = None
    if text:
        statuses = [c for c in reply.commands
                    if c.name == "status" and c.value in _FOLDED_STATUSES]  # fmt: skip
        folded = statuses[-1] if statuses else None
    carrier = None
    if text and finishing and folded is None:
        first = finishing[0]
        if first.name == "status" or not first.value:  # no note of its own
            carrier = first
    steps = [Step(c.line, _quiet_reopen(number, actor) if text and c.name == "reopen"
                  and not c.value else _operation(number, c, reply))
             for c in reply.commands if c not in finishing and c is not folded]  # fmt: skip
    files = reply.attachments
    if text and carrier is None:
        status = folded.value if folded is not None else None
        steps.append(Step("reply", lambda ops: ops.reply(number, agent=reply.agent, text=text,
                                                         status=status, attachments=files)))  # fmt: skip
    for c in finishing:
        if c is carrier:
            steps.append(Step(c.line, _carried(number, c, text, actor, files)))
        else:
            steps.append(Step(c.line, _operation(number, c, reply)))
    return steps


def _finishing_name(c: Command) -> str:
    return str(c.value) if c.name == "status" else ("resolved" if c.name == "resolve" else "closed")


def _carried(
    number: int, c: Command, text: str, actor: str, files: tuple[ParsedAttachment, ...] = ()
) -> Callable[[TicketOps], Done]:
    """#resolve / #close whose note is the reply's text (and files): one mail, and a
    first response."""

    def run(ops: TicketOps) -> Done:
        first = ops.record_first_response(number, actor=actor)
        if _finishing_name(c) == "resolved":
            done = ops.resolve(number, actor=actor, note=text, attachments=files)
        else:
            done = ops.close(number, actor=actor, note=text, attachments=files)
        done.events[:0] = first.events
        return done

    return run


def _quiet_reopen(number: int, actor: str) -> Callable[[TicketOps], Done]:
    """#reopen in a reply with text: the reply that follows is the requester's one mail."""
    return lambda ops: ops.reopen(number, actor=actor, quiet=True)


def _operation(number: int, c: Command, reply: AgentReply) -> Callable[[TicketOps], Done]:
    actor = reply.agent.email
    v: Any = c.value
    operations: dict[str, Callable[[TicketOps], Done]] = {
        "status": lambda ops: ops.set_status(number, v, actor=actor),
        "priority": lambda ops: ops.set_priority(number, v, actor=actor),
        "assign": lambda ops: ops.assign(number, v, actor=actor),
        "take": lambda ops: ops.assign(number, actor, actor=actor),
        "escalate": lambda ops: ops.escalate(number, actor=actor, tier=v, reason="by mail"),
        "category": lambda ops: ops.set_category(number, v, actor=actor),
        "type": lambda ops: ops.set_type(number, v, actor=actor),
        "resolve": lambda ops: ops.resolve(number, actor=actor, note=v or ""),
        "close": lambda ops: ops.close(number, actor=actor, note=v or ""),
        "reopen": lambda ops: ops.reopen(number, actor=actor, note=v or ""),
        "note": lambda ops: Done(number),
        "link": lambda ops: ops.link(number, v, actor=actor),
        "helpful": lambda ops: ops.helpful(number, v, actor=actor),
        "major": lambda ops: (
            ops.declare_major(number, actor=actor)
            if v is None
            else ops.attach(v, number, actor=actor)
        ),  # fmt: skip
        "attach": lambda ops: ops.attach(number, v, actor=actor),
        "detach": lambda ops: ops.detach(number, v, actor=actor),
        "meeting": lambda ops: ops.meeting(
            number, agent=reply.agent, start=v.start, end=v.end, link=v.link
        ),  # fmt: skip
    }
    return operations[c.name]


def _snapshot(ops: TicketOps, number: int) -> dict[str, Any]:
    """What the confirmation compares; read from the session (the operations hold the lock)."""
    ticket = ops.session.get(Ticket, number)
    assert ticket is not None
    assignee = ops.session.get(Agent, ticket.assignee_id) if ticket.assignee_id else None
    return {
        "status": ticket.status,
        "priority": f"P{ticket.priority}",
        "tier": ticket.tier,
        "category": ticket.category,
        "type": ticket.type,
        "assignee": assignee.email if assignee else None,
        "first_response_at": ticket.first_response_at,
    }


def run(
    session: Session,
    applier: Applier,
    number: int,
    reply: AgentReply,
    now: datetime,
    *,
    rules: Rulebook | None = None,
    in_reply_to: str | None = None,
) -> list[int]:
    """Run `reply` on ticket `number`; return the outbox rows it queued."""
    ops = TicketOps(session, applier, now, rules)
    agent = applier.directory.by_id(reply.agent_id)
    flush_events(session)  # the savepoint's rollback must not take earlier events along
    savepoint = session.begin_nested()
    done_steps: list[dict[str, Any]] = []
    queued: list[int] = []
    label = ""
    try:
        for step in plan(number, reply):
            label = step.label
            before = _snapshot(ops, number)
            done = step.run(ops)
            after = _snapshot(ops, number)
            queued.extend(done.outbox_ids)
            changes = [(k, before[k], after[k]) for k in _WATCHED if before[k] != after[k]]
            done_steps.append({"label": label, "changes": changes, "mails": len(done.outbox_ids)})
        savepoint.commit()
    except ActionRefused as exc:
        savepoint.rollback()
        log.info("ticket #%d: reply of %s refused at %r: %s", number, reply.agent.email, label,
                 exc)  # fmt: skip
        ticket = ops.get(number)
        refused = Done(number)
        ops.event(ticket, refused, EventSpec("commands_refused", reply.agent.email,
                                              detail={"step": label, "error": str(exc)}))  # fmt: skip
        if agent is not None:
            what = Phrase("commands.your_reply") if label == "reply" else label
            why = Phrase("commands.step", step=what, reason=exc.args[0] if exc.args else str(exc))
            ops.queue(ticket, refused_notice(agent, ticket.security, [why], in_reply_to),
                      refused)  # fmt: skip
        return refused.outbox_ids
    log.info("ticket #%d: reply of %s applied: %s", number, reply.agent.email,
             ", ".join(s["label"] for s in done_steps))  # fmt: skip
    if (reply.commands or reply.quote_kept) and agent is not None:
        ticket = session.get(Ticket, number)
        assert ticket is not None
        confirmed = Done(number)
        replied = bool(reply.text)  # it went out, as a reply or as the note of #resolve
        ops.queue(ticket, feedback_notice("agent_confirm", agent, ticket.security, in_reply_to,
                                          {"steps": done_steps, "replied": replied,
                                           "quote_kept": reply.quote_kept}),
                  confirmed)  # fmt: skip
        queued.extend(confirmed.outbox_ids)
    return queued

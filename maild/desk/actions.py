"""Ticket operations: what an agent, an admin or a sweep does to a ticket.

Each operation changes the ticket, records events and queues the templated
mails (requester and agent groups) through the `Applier`, all inside the
caller's transaction (DESIGN: transactions open in one place per flow):

    with sessions.begin() as session:
        ops = TicketOps(session, applier, clock.now())
        ops.resolve(42, actor="anna@example.com", note="Replaced the toner.")

The CLI (``maild ticket resolve 42``), the sweeps and agents' mail commands
(``#resolve``, ``#escalate``, ``#priority`` ... in `maild.desk.agentreply`) all map
onto these methods. Agents are told through the directory (`maild.pipeline.directory`,
held by the applier): each agent at their own address with a personal reply
address, and the group addresses of ``[tiers]``; public updates to the
requester go to the ticket's watchers too (Cc).
A refused operation raises `ActionRefused` with a sentence for the person
who asked, and changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, lazyload

from maild.desk.apply import Applier
from maild.desk.lifecycle import change_status, set_priority, start_regulator_clock
from maild.errors import MaildError
from maild.mail.invite import invitation
from maild.mail.parse import Address, ParsedAttachment
from maild.mail.phrases import Phrase
from maild.pipeline import notices
from maild.pipeline.decide import is_own_address as is_help_desk_address
from maild.pipeline.decision import ArticleSpec, ClosureReply, EventSpec, Notice
from maild.pipeline.tiers import MAX_TIER, agent_recipient
from maild.pipeline.triage import Rulebook
from maild.store.db import insert_ignore
from maild.store.models import (
    Agent,
    Article,
    Contact,
    Event,
    MajorNotice,
    Suggestion,
    Ticket,
    TicketLink,
    Watcher,
)
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

SYSTEM = "maild"  # the actor of automatic changes


class ActionRefused(MaildError):
    """The operation does not apply to this ticket; nothing was changed."""


class TicketNotFound(ActionRefused):
    """There is no ticket with that number."""


def no_requester(ticket: Ticket) -> str:
    """Why a reply to the requester of `ticket` cannot be sent."""
    if ticket.origin == Origin.ALERT:
        return Phrase("actions.no_requester_alert", number=ticket.id)
    return Phrase("actions.no_requester_major", number=ticket.id)


class StaleChange(ActionRefused):
    """The ticket changed since the form was shown; `changes` says how (nothing was done)."""

    def __init__(self, message: str, changes: list[str]) -> None:
        super().__init__(message)
        self.changes = changes


@dataclass
class Done:
    """What an operation did: the events it recorded and the mails it queued."""

    ticket: int
    events: list[str] = field(default_factory=list)
    outbox_ids: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.events)


# Requester mails that the watchers get a copy of (Cc).
PUBLIC_UPDATES = frozenset({"status", "resolved", "closed", "escalated", "reply", "major_known"})

# Statuses an operator may set directly with `set_status`.
SETTABLE = (
    TicketStatus.OPEN,
    TicketStatus.IN_PROGRESS,
    TicketStatus.ESCALATED,
    TicketStatus.PENDING_USER,
    TicketStatus.RESOLVED,
    TicketStatus.CLOSED,
)


class TicketOps:
    """Operations on tickets inside one open transaction at time `now`."""

    def __init__(
        self, session: Session, applier: Applier, now: datetime, rules: Rulebook | None = None
    ) -> None:
        self.session = session
        self.applier = applier
        self.settings = applier.settings
        self.policy = applier.policy
        self.now = now
        self.rules = rules or Rulebook.from_settings(applier.settings)
        self.directory = applier.directory

    # --- looking up -------------------------------------------------------------

    def get(self, number: int) -> Ticket:
        ticket = self.session.scalars(
            select(Ticket)
            .options(lazyload(Ticket.requester))  # FOR UPDATE may not touch the outer join
            .where(Ticket.id == number)
            .with_for_update()
        ).one_or_none()
        if ticket is None:
            raise TicketNotFound(f"there is no ticket #{number}")
        return ticket

    def expect(self, number: int, seen: datetime | None) -> Ticket:
        """The ticket, locked, if it has not changed since `seen` (its ``updated_at``
        when a form showed it); else `StaleChange` naming what others changed since.

        Two agents acting at once: the row lock orders them, the second is
        refused with the first one's changes, and nothing of theirs is done.
        """
        ticket = self.get(number)
        if seen is None or ticket.updated_at <= seen:
            return ticket
        rows = self.session.execute(
            select(Event.actor, Event.kind, Event.old, Event.new)
            .where(Event.ticket_id == number, Event.at > seen, ~Event.kind.like("%_queued"))
            .order_by(Event.id)
        ).all()
        changes = [
            f"{actor}: {kind}" + (f" {old or '-'} -> {new}" if new is not None else "")
            for actor, kind, old, new in rows
        ] or ["the ticket was updated"]
        raise StaleChange(f"ticket #{number} changed since you opened it: "
                          + "; ".join(changes), changes)  # fmt: skip

    # --- status -----------------------------------------------------------------

    def set_status(self, number: int, status: str, *, actor: str, note: str = "") -> Done:
        """Any settable status; resolved/closed/open-from-finished go to their own operation."""
        if status not in SETTABLE:
            allowed = ", ".join(SETTABLE)
            raise ActionRefused(Phrase("actions.unknown_status", status=status, choices=allowed))
        ticket = self.get(number)
        if status == TicketStatus.RESOLVED:
            return self.resolve(number, actor=actor, note=note)
        if status == TicketStatus.CLOSED:
            return self.close(number, actor=actor, note=note)
        if ticket.status in FINISHED_STATUSES:
            return self.reopen(number, actor=actor, note=note)
        if status == TicketStatus.ESCALATED:
            return self.escalate(number, actor=actor, reason=note)
        done = Done(ticket.id)
        if ticket.status == status:
            return done
        self._status(ticket, status, actor, done, reason=note)
        self.tell_requester(ticket, "status", "status", done, event=str(status), note=note)
        return done

    def resolve(
        self, number: int, *, actor: str, note: str = "", auto: bool = False,
        attachments: tuple[ParsedAttachment, ...] = (),
    ) -> Done:  # fmt: skip
        """Resolved, with a note (and files) to the requester and "reply to reopen"."""
        self._check_files(attachments)
        ticket = self.get(number)
        if ticket.status in FINISHED_STATUSES:
            raise ActionRefused(Phrase("actions.already", number=number, status=ticket.status))
        done = Done(ticket.id)
        self._status(ticket, TicketStatus.RESOLVED, actor, done, reason=note or None,
                     auto=auto)  # fmt: skip
        closes_at = self.now + timedelta(days=self.settings.lifecycle.close_after_days)
        self.tell_requester(ticket, "resolved", "resolved", done, note=note, auto=auto,
                           closes_at=closes_at, attachments=attachments)  # fmt: skip
        if ticket.major:
            self._resolve_children(ticket, actor, note, done)
        return done

    def close(
        self, number: int, *, actor: str, note: str = "", auto: bool = False,
        attachments: tuple[ParsedAttachment, ...] = (),
    ) -> Done:  # fmt: skip
        self._check_files(attachments)
        ticket = self.get(number)
        if ticket.status == TicketStatus.CLOSED:
            raise ActionRefused(Phrase("actions.already", number=number, status=ticket.status))
        done = Done(ticket.id)
        self._status(ticket, TicketStatus.CLOSED, actor, done, reason=note or None, auto=auto)
        self.tell_requester(ticket, "closed", "closed", done, note=note, auto=auto,
                            attachments=attachments)  # fmt: skip
        if ticket.major:
            self._resolve_children(ticket, actor, note, done)
        return done

    def reopen(self, number: int, *, actor: str, note: str = "", quiet: bool = False) -> Done:
        """Open again; `quiet` when the agent's own reply tells the requester (one mail)."""
        ticket = self.get(number)
        if ticket.status not in FINISHED_STATUSES:
            raise ActionRefused(Phrase("actions.not_finished", number=number, status=ticket.status))
        done = Done(ticket.id)
        self._status(ticket, TicketStatus.OPEN, actor, done, reason=note or "reopened")
        if not quiet:
            self.tell_requester(ticket, "status", "status", done, event="reopened", note=note)
        self.tell_groups(ticket, "agent_update", self.working_audience(ticket), done,
                         event="reopened", note=note, actor=actor)  # fmt: skip
        return done

    # --- escalation ---------------------------------------------------------------

    def escalate(
        self,
        number: int,
        *,
        actor: str,
        tier: int | None = None,
        reason: str = "",
        breach: str | None = None,
    ) -> Done:
        """Functional escalation to `tier` (default: the next one).

        At the top tier there is nowhere to go: an agent's request is refused,
        an SLA breach (`breach` = "first_response" | "resolution") escalates
        hierarchically to the duty manager instead.
        """
        ticket = self.get(number)
        if ticket.status in FINISHED_STATUSES:
            raise ActionRefused(Phrase("actions.finished", number=number, status=ticket.status))
        target = tier if tier is not None else ticket.tier + 1
        done = Done(ticket.id)
        if target > MAX_TIER and breach is not None:
            return self._escalate_to_duty_manager(ticket, actor, reason, breach, done)
        if target not in range(1, MAX_TIER + 1):
            raise ActionRefused(
                Phrase("actions.tier_range", number=number, tier=ticket.tier, top=MAX_TIER)
            )
        if target <= ticket.tier:
            raise ActionRefused(Phrase("actions.same_tier", number=number, tier=ticket.tier))
        old = ticket.tier
        ticket.tier = target
        ticket.updated_at = self.now
        self.event(ticket, done, EventSpec("escalated", actor, old=str(old), new=str(target),
                                            detail={"kind": "functional", "reason": reason,
                                                    "breach": breach}))  # fmt: skip
        if ticket.status not in (TicketStatus.PENDING_USER, TicketStatus.ESCALATED):
            self._status(ticket, TicketStatus.ESCALATED, actor, done, reason="escalated")
        audience = notices.tier_audience(self.settings, target, security=ticket.security,
                                         directory=self.directory)  # fmt: skip
        self.tell_groups(ticket, "agent_escalated", audience, done, from_tier=old,
                        reason=reason, breach=breach, actor=actor)  # fmt: skip
        self.tell_requester(ticket, "escalated", "escalated", done, from_tier=old, breach=breach)
        return done

    def _escalate_to_duty_manager(
        self, ticket: Ticket, actor: str, reason: str, breach: str, done: Done
    ) -> Done:
        self.event(ticket, done, EventSpec("escalated", actor, old=str(ticket.tier),
                                            new="duty_manager",
                                            detail={"kind": "hierarchical", "reason": reason,
                                                    "breach": breach}))  # fmt: skip
        audience = notices.duty_manager_audience(self.settings, security=ticket.security,
                                                 directory=self.directory)  # fmt: skip
        self.tell_groups(ticket, "agent_escalated", audience, done, from_tier=ticket.tier,
                        reason=reason, breach=breach, actor=actor)  # fmt: skip
        return done

    # --- classification -------------------------------------------------------------

    def set_priority(self, number: int, priority: int, *, actor: str) -> Done:
        """New priority: deadlines follow; raising to P1 tells tier 3 and the duty manager."""
        if priority not in (1, 2, 3, 4):
            raise ActionRefused(Phrase("actions.priority", value=repr(priority)))
        ticket = self.get(number)
        done = Done(ticket.id)
        old = set_priority(ticket, priority, self.now, self.policy)
        if old == priority:
            return done
        self.event(ticket, done, EventSpec("priority", actor, old=f"P{old}", new=f"P{priority}"))
        if priority == 1 and ticket.status not in FINISHED_STATUSES:
            audience = notices.audience(
                (
                    notices.recipients_for_tier(self.settings, MAX_TIER, self.directory),
                    notices.ROLE_HIERARCHICAL,
                ),
                (notices.duty_manager(self.settings, self.directory), notices.ROLE_HIERARCHICAL),
            )
            self.event(ticket, done, EventSpec("escalated", actor, detail={
                "kind": "hierarchical", "reason": "P1",
                "notified": [r.address.email for r, _ in audience]}))  # fmt: skip
            self.tell_groups(ticket, "agent_update", audience, done, event="priority",
                            old=f"P{old}", actor=actor)  # fmt: skip
        return done

    def set_type(self, number: int, ticket_type: str, *, actor: str) -> Done:
        if ticket_type not in tuple(TicketType):
            raise ActionRefused(Phrase("actions.type", value=repr(ticket_type)))
        ticket = self.get(number)
        done = Done(ticket.id)
        if ticket.type != ticket_type:
            self.event(ticket, done, EventSpec("type", actor, old=ticket.type, new=ticket_type))
            ticket.type = ticket_type
            ticket.updated_at = self.now
        return done

    def set_category(self, number: int, category: str, *, actor: str) -> Done:
        """New category; moving into a security category makes it a security incident."""
        names = self.rules.category_names
        if category not in names:
            raise ActionRefused(
                Phrase("actions.category", category=category, choices=", ".join(names))
            )
        ticket = self.get(number)
        done = Done(ticket.id)
        if ticket.category == category:
            return done
        self.event(ticket, done, EventSpec("category", actor, old=ticket.category, new=category))
        ticket.category = category
        ticket.updated_at = self.now
        security = self.rules.is_security(category)
        if security != ticket.security:
            ticket.security = security
            self.event(ticket, done, EventSpec("security", actor, old=str(not security).lower(),
                                                new=str(security).lower()))  # fmt: skip
            if security:
                start_regulator_clock(ticket, self.now, self.policy)
                self.tell_groups(ticket, "agent_update",
                                 notices.regulator_audience(self.settings, self.directory),
                                 done, event="security", actor=actor)  # fmt: skip
        return done

    # --- replies ------------------------------------------------------------------

    def record_first_response(self, number: int, *, actor: str) -> Done:
        """The first public reply by an agent: stops the first-response clock."""
        ticket = self.get(number)
        done = Done(ticket.id)
        self._first_response(ticket, actor, done)
        return done

    def _first_response(self, ticket: Ticket, actor: str, done: Done) -> None:
        if ticket.first_response_at is not None:
            return
        ticket.first_response_at = self.now
        ticket.updated_at = self.now
        met = ticket.first_response_due is None or self.now <= ticket.first_response_due
        self.event(ticket, done, EventSpec("first_response", actor,
                                            detail={"within_target": met}))  # fmt: skip

    def reply(
        self,
        number: int,
        *,
        agent: Address,
        text: str,
        status: str | None = None,
        attachments: tuple[ParsedAttachment, ...] = (),
    ) -> Done:
        """A public reply from an agent to the requester (first response if it is one).

        `status` optionally moves the ticket on, e.g. ``pending_user`` when
        the reply asks the requester something; `attachments` go along and are
        stored on the reply (within ``attachments.reply_max_bytes``).
        """
        if not text.strip():
            raise ActionRefused(Phrase("actions.empty_reply"))
        self._check_files(attachments)
        if status is not None and status not in SETTABLE:
            raise ActionRefused(
                Phrase("actions.unknown_status", status=status, choices=", ".join(SETTABLE))
            )
        ticket = self.get(number)
        if ticket.status in FINISHED_STATUSES:
            raise ActionRefused(Phrase("actions.finished", number=number, status=ticket.status))
        if ticket.origin != Origin.MAIL:
            raise ActionRefused(no_requester(ticket))
        done = Done(ticket.id)
        self._first_response(ticket, agent.email, done)
        # The requester sees the agent's name, never the agent's address.
        self.tell_requester(ticket, "reply", "reply", done, text=text.strip(),
                           agent={"name": agent.name}, auto_submitted="no",
                           attachments=attachments)  # fmt: skip
        if done.outbox_ids:  # sent: searchable, and the resolution if none is written
            self.applier.index_reply(self.session, ticket, text.strip(), self.now)
        if status is not None and status != ticket.status:
            self._status(ticket, status, agent.email, done, reason="agent reply")
        elif ticket.status in (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.ESCALATED):
            self._status(ticket, TicketStatus.IN_PROGRESS, agent.email, done, reason="agent reply")
        return done

    # --- past fixes ------------------------------------------------------------------

    def helpful(self, number: int, suggested: int, *, actor: str) -> Done:
        """An agent found resolved ticket `suggested` helpful for ticket `number`
        (``#helpful N``): counted once per pair, shown by ``ticket show``."""
        if suggested == number:
            raise ActionRefused(Phrase("actions.helps_itself", number=number))
        ticket = self.get(number)
        other = self.session.get(Ticket, suggested)
        if other is None:
            raise ActionRefused(Phrase("actions.no_such_ticket", number=suggested))
        done = Done(ticket.id)
        row = self.session.get(Suggestion, (number, suggested))
        if row is None:
            if other.status not in FINISHED_STATUSES:
                raise ActionRefused(Phrase("actions.not_a_fix", number=suggested))
            row = Suggestion(ticket_id=number, suggested_id=suggested, position=0, score=0.0,
                             created_at=self.now)  # fmt: skip
            self.session.add(row)
        if row.helpful_at is not None:
            return done
        row.helpful_at = self.now
        row.helpful_by = actor
        self.session.flush()
        self.event(ticket, done, EventSpec("helpful", actor, new=str(suggested),
                                            detail={"suggested": row.position > 0}))  # fmt: skip
        return done

    # --- assignment, links, meetings ------------------------------------------------

    def assign(self, number: int, agent_email: str, *, actor: str) -> Done:
        """Assign the ticket to an agent of the directory, who is told (unless it is
        the actor); notifications about the ticket then go to the assignee."""
        entry = self.directory.by_email(agent_email.lower())
        if entry is None:
            raise ActionRefused(Phrase("actions.not_agent", email=agent_email))
        ticket = self.get(number)
        if ticket.status in FINISHED_STATUSES:
            raise ActionRefused(Phrase("actions.finished", number=number, status=ticket.status))
        done = Done(ticket.id)
        if ticket.assignee_id == entry.id:
            return done
        old = self.session.get(Agent, ticket.assignee_id) if ticket.assignee_id else None
        ticket.assignee_id = entry.id
        ticket.updated_at = self.now
        self.event(ticket, done, EventSpec("assigned", actor, old=old.email if old else None,
                                            new=entry.email))  # fmt: skip
        if entry.email != actor:
            audience = notices.audience(((agent_recipient(self.settings, entry),),
                                         notices.ROLE_ASSIGNEE))  # fmt: skip
            self.tell_groups(ticket, "agent_update", audience, done, event="assigned",
                             actor=actor)  # fmt: skip
        return done

    def link(self, number: int, other: int, *, actor: str) -> Done:
        """Relate two tickets (both record it; no mail)."""
        if number == other:
            raise ActionRefused(Phrase("actions.self_link"))
        ticket = self.get(number)
        if self.session.get(Ticket, other) is None:
            raise ActionRefused(Phrase("actions.no_ticket", number=other))
        done = Done(ticket.id)
        exists = self.session.scalar(select(TicketLink.ticket_id).where(or_(
            (TicketLink.ticket_id == number) & (TicketLink.other_id == other),
            (TicketLink.ticket_id == other) & (TicketLink.other_id == number))))  # fmt: skip
        if exists is not None:
            return done
        self.session.add(TicketLink(ticket_id=number, other_id=other, kind="related",
                                    created_at=self.now))  # fmt: skip
        self.session.flush()
        self.event(ticket, done, EventSpec("related", actor, new=str(other)))
        self.applier.event(self.session, other, EventSpec("related", actor, new=str(number)),
                           self.now)  # fmt: skip
        return done

    def meeting(
        self, number: int, *, agent: Address, start: datetime, end: datetime, link: str = ""
    ) -> Done:
        """Invite the requester to a call (iCalendar REQUEST from the help desk)."""
        ticket = self.get(number)
        if ticket.status in FINISHED_STATUSES:
            raise ActionRefused(Phrase("actions.finished", number=number, status=ticket.status))
        if ticket.origin != Origin.MAIL:
            raise ActionRefused(no_requester(ticket))
        if self.undeliverable(ticket.requester):
            raise ActionRefused(Phrase("actions.bounces", number=number))
        done = Done(ticket.id)
        hd = self.settings.helpdesk
        requester = Address(name=ticket.requester.name, email=ticket.requester.email)
        desk = Address(name=hd.name_in(ticket.language), email=ticket.address or hd.primary_address)
        calendar = invitation(ticket_id=ticket.id, subject=ticket.subject, desk=desk,
                              requester=requester, start=start, end=end, link=link,
                              now=self.now, domain=hd.domain, agent_name=agent.name)  # fmt: skip
        notice = notices.to_requester("meeting", "meeting", requester, thread=self.thread(ticket),
                                      context={"start": start, "end": end, "link": link,
                                               "agent": {"name": agent.name}},
                                      auto_submitted="no")  # fmt: skip
        self._queue(ticket, replace(notice, calendar=calendar), done)
        self.event(ticket, done, EventSpec("meeting", agent.email, new=start.isoformat(),
                                            detail={"end": end.isoformat(), "link": link}))  # fmt: skip
        return done

    # --- closure with the requester (maild.closure reads their reply) -----------------

    def confirm_solved(self, number: int, *, actor: str, comment: str = "",
                       close: bool = True) -> Done:  # fmt: skip
        """The requester confirms the fix: recorded, a resolved ticket closes at once, and
        the agents working it are told in one mail."""
        ticket = self._finished_for_requester(number, "confirmed")
        done = Done(ticket.id)
        self.event(ticket, done, EventSpec("confirmed", actor,
                                           detail={"comment": comment} if comment else None))  # fmt: skip
        closed = close and ticket.status == TicketStatus.RESOLVED
        if closed:
            self._status(ticket, TicketStatus.CLOSED, actor, done,
                         reason="the requester confirmed the fix")  # fmt: skip
        self.tell_groups(ticket, "agent_update", self.working_audience(ticket), done,
                         event="confirmed", note=comment, closed=closed, actor=actor)  # fmt: skip
        return done

    def rate(self, number: int, score: int, *, actor: str, comment: str = "", close: bool = True,
             tell: bool = True, check_status: bool = True) -> Done:  # fmt: skip
        """The requester rates the help 1..5 (with a comment): stored on the ticket; a
        resolved ticket closes at once. `check_status=False`: the rating came with a
        reply that reopened the ticket (which told the agents itself: `tell=False`)."""
        if score not in (1, 2, 3, 4, 5):
            raise ActionRefused(Phrase("actions.rating", value=repr(score)))
        ticket = self._finished_for_requester(number, "rated", check_status=check_status)
        done = Done(ticket.id)
        old = ticket.satisfaction_score
        ticket.satisfaction_score = score
        ticket.satisfaction_comment = comment.strip()[:2000] or None
        ticket.satisfaction_at = self.now
        ticket.updated_at = self.now
        self.event(ticket, done, EventSpec("rated", actor, old=None if old is None else str(old),
                                           new=str(score),
                                           detail={"comment": comment} if comment else None))  # fmt: skip
        closed = close and ticket.status == TicketStatus.RESOLVED
        if closed:
            self._status(ticket, TicketStatus.CLOSED, actor, done,
                         reason="the requester rated the help")  # fmt: skip
        if tell:
            self.tell_groups(ticket, "agent_update", self.working_audience(ticket), done,
                             event="rated", score=score, note=comment, closed=closed,
                             actor=actor)  # fmt: skip
        return done

    def not_solved(self, number: int, *, actor: str, text: str = "") -> Done:
        """The requester says the problem is still there: the ticket reopens (the
        requester and the agents working it are told)."""
        self._finished_for_requester(number, "reopened")
        return self.reopen(number, actor=actor, note=text)

    def requester_closure(self, number: int, reply: ClosureReply) -> Done:
        """A rating or thank-you read from the requester's mail (`maild.closure`)."""
        if reply.kind == "rating" and reply.score is not None:
            return self.rate(number, reply.score, actor=reply.actor, comment=reply.comment,
                             close=reply.close, tell=reply.tell, check_status=reply.tell)  # fmt: skip
        return self.confirm_solved(number, actor=reply.actor, comment=reply.comment,
                                   close=reply.close)  # fmt: skip

    def _finished_for_requester(self, number: int, what: str, *,
                                check_status: bool = True) -> Ticket:  # fmt: skip
        ticket = self.get(number)
        if ticket.origin != Origin.MAIL:
            raise ActionRefused(no_requester(ticket))
        if check_status and ticket.status not in FINISHED_STATUSES:
            raise ActionRefused(Phrase("actions.not_resolved_yet", number=number,
                                       status=ticket.status))  # fmt: skip
        return ticket

    # --- major incidents (maild.majors opens them over a burst) --------------------------

    def declare_major(self, number: int, *, actor: str, note: str = "") -> Done:
        """Make ticket `number` a major incident: tier 3 and the duty manager are told at once."""
        ticket = self.get(number)
        if ticket.major:
            raise ActionRefused(Phrase("actions.already_major", number=number))
        if ticket.major_id is not None:
            raise ActionRefused(Phrase("actions.part_of_major", number=number,
                                       major=ticket.major_id))  # fmt: skip
        if ticket.status in FINISHED_STATUSES:
            raise ActionRefused(Phrase("actions.finished", number=number, status=ticket.status))
        done = Done(ticket.id)
        ticket.major = True
        ticket.updated_at = self.now
        self.event(ticket, done, EventSpec("major", actor, new="declared",
                                            detail={"note": note} if note else None))  # fmt: skip
        self.tell_major_audience(ticket, done, event="declared", actor=actor, note=note,
                                 children=[])  # fmt: skip
        return done

    def attach(self, major_number: int, child_number: int, *, actor: str) -> Done:
        """Link report `child_number` to major incident `major_number`; its requester
        hears once that the problem is known."""
        if major_number == child_number:
            raise ActionRefused(Phrase("actions.part_of_itself"))
        major = self.get(major_number)
        if not major.major:
            raise ActionRefused(Phrase("actions.not_major", number=major_number))
        if major.status in FINISHED_STATUSES:
            raise ActionRefused(
                Phrase("actions.finished", number=major_number, status=major.status)
            )
        child = self.get(child_number)
        done = Done(major.id)
        if child.major_id == major.id:
            return done
        if child.major:
            raise ActionRefused(Phrase("actions.is_major", number=child_number))
        if child.major_id is not None:
            raise ActionRefused(Phrase("actions.part_of_major", number=child_number,
                                       major=child.major_id))  # fmt: skip
        if child.status in FINISHED_STATUSES:
            raise ActionRefused(
                Phrase("actions.child_finished", number=child_number, status=child.status)
            )
        child.major_id = major.id
        child.updated_at = self.now
        self.event(child, done, EventSpec("major_attached", actor, new=str(major.id)))
        self.event(major, done, EventSpec("child_attached", actor, new=str(child.id)))
        if child.origin == Origin.MAIL and self._first_notice(major, child, "known"):
            self.tell_requester(child, "major_known", "major_known", done, major=major.id)
        return done

    def detach(self, major_number: int, child_number: int, *, actor: str) -> Done:
        major = self.get(major_number)
        child = self.get(child_number)
        if child.major_id != major.id:
            raise ActionRefused(Phrase("actions.not_part_of", number=child_number,
                                       major=major_number))  # fmt: skip
        done = Done(major.id)
        child.major_id = None
        child.updated_at = self.now
        self.event(child, done, EventSpec("major_detached", actor, old=str(major.id)))
        self.event(major, done, EventSpec("child_detached", actor, old=str(child.id)))
        return done

    def children(self, major: Ticket, *, unfinished: bool = False) -> list[Ticket]:
        stmt = (select(Ticket).options(lazyload(Ticket.requester))
                .where(Ticket.major_id == major.id).order_by(Ticket.id).with_for_update())  # fmt: skip
        if unfinished:
            stmt = stmt.where(Ticket.status.not_in(FINISHED_STATUSES))
        return list(self.session.scalars(stmt))

    def _resolve_children(self, major: Ticket, actor: str, note: str, done: Done) -> None:
        """Every open report of the major incident is resolved with it; each requester is
        told once (on their first report), in their ticket's language."""
        children = self.children(major, unfinished=True)
        if not children:
            return
        closes_at = self.now + timedelta(days=self.settings.lifecycle.close_after_days)
        reason = f"major incident #{major.id} resolved"
        for child in children:
            self._status(child, TicketStatus.RESOLVED, actor, done, reason=reason)
        for child in children:
            if child.origin == Origin.MAIL and self._first_notice(major, child, "resolved"):
                self.tell_requester(child, "resolved", "resolved", done, note=note,
                                    closes_at=closes_at, major=major.id)  # fmt: skip
        self.event(major, done, EventSpec("children_resolved", actor,
                                          detail={"children": [c.id for c in children]}))  # fmt: skip

    def _first_notice(self, major: Ticket, child: Ticket, kind: str) -> bool:
        """Record that the requester of `child` is told `kind` about `major`; False when
        they already were (by another report, or as the major incident's own requester)."""
        if major.origin == Origin.MAIL and major.requester_id == child.requester_id:
            return False
        row = {"major_id": major.id, "contact_id": child.requester_id, "kind": kind,
               "ticket_id": child.id, "at": self.now}  # fmt: skip
        return bool(insert_ignore(self.session, MajorNotice, [row], MajorNotice.kind))

    def tell_major_audience(self, ticket: Ticket, done: Done, **context: Any) -> None:
        """Tier 3 and the duty manager, at once (and the security contacts on a security ticket)."""
        children = context.pop("children", None)
        if children is None:
            children = [c.id for c in self.children(ticket)]
        rows = self.session.execute(select(Ticket.id, Ticket.subject)
                                    .where(Ticket.id.in_(children)).order_by(Ticket.id)).all()  # fmt: skip
        listed = [{"number": n, "subject": subject} for n, subject in rows]
        groups = [(notices.recipients_for_tier(self.settings, MAX_TIER, self.directory),
                   notices.ROLE_HIERARCHICAL),
                  (notices.duty_manager(self.settings, self.directory), notices.ROLE_HIERARCHICAL)]  # fmt: skip
        if ticket.security:
            groups.append((notices.security_contacts(self.settings, self.directory),
                           notices.ROLE_SECURITY))  # fmt: skip
        self.tell_groups(ticket, "agent_major", notices.audience(*groups), done,
                         children=listed, **context)  # fmt: skip

    def unassign(self, number: int, *, actor: str) -> Done:
        """Nobody's: the ticket goes back to its tier's queue (the agent who had it is told)."""
        ticket = self.get(number)
        done = Done(ticket.id)
        if ticket.assignee_id is None:
            return done
        old = self.directory.by_id(ticket.assignee_id)
        old_row = self.session.get(Agent, ticket.assignee_id)
        ticket.assignee_id = None
        ticket.updated_at = self.now
        self.event(ticket, done, EventSpec("assigned", actor,
                                            old=old_row.email if old_row else None, new=None))  # fmt: skip
        if old is not None and old.email != actor:
            audience = notices.audience(((agent_recipient(self.settings, old),),
                                         notices.ROLE_ASSIGNEE))  # fmt: skip
            self.tell_groups(ticket, "agent_update", audience, done, event="unassigned",
                             actor=actor)  # fmt: skip
        return done

    def note(
        self, number: int, *, agent: Address, text: str,
        attachments: tuple[ParsedAttachment, ...] = (),
    ) -> Done:  # fmt: skip
        """An internal note: on the ticket for agents, never mailed to the requester."""
        if not text.strip() and not attachments:
            raise ActionRefused(Phrase("actions.note_empty"))
        ticket = self.get(number)
        done = Done(ticket.id)
        spec = ArticleSpec(
            kind=ArticleKind.NOTE, visibility=Visibility.INTERNAL, author=agent,
            subject=ticket.subject, text=text.strip(), html=None, message_id=None,
            in_reply_to=None, sent_at=self.now, attachments=attachments)  # fmt: skip
        article_id = self.applier.add_article(self.session, ticket.id, spec, None, self.now)
        self.applier.index_article(self.session, ticket, article_id, spec, self.now)
        ticket.updated_at = self.now
        self.event(ticket, done, EventSpec("note", agent.email))
        return done

    def add_watcher(self, number: int, who: Address, *, actor: str) -> Done:
        """Copy `who` on the ticket's public updates (a requester's colleague, a manager)."""
        if is_help_desk_address(who.email, self.settings):
            raise ActionRefused(Phrase("actions.desk_address", email=who.email))
        ticket = self.get(number)
        done = Done(ticket.id)
        if who.email == ticket.requester.email:
            raise ActionRefused(Phrase("actions.is_requester", email=who.email, number=number))
        if who.email in {a.email for a in self.watchers_all(ticket)}:
            return done
        self.applier.change_watchers(self.session, ticket.id, (who,), (), actor, self.now)
        ticket.updated_at = self.now
        done.events.append("watcher_added")
        return done

    def remove_watcher(self, number: int, email: str, *, actor: str) -> Done:
        ticket = self.get(number)
        done = Done(ticket.id)
        email = email.strip().lower()
        if email not in {a.email for a in self.watchers_all(ticket)}:
            raise ActionRefused(Phrase("actions.not_watching", email=email, number=number))
        self.applier.change_watchers(self.session, ticket.id, (), (email,), actor, self.now)
        self.event(ticket, done, EventSpec("watcher_removed", actor, old=email))
        ticket.updated_at = self.now
        return done

    def watchers_all(self, ticket: Ticket) -> tuple[Address, ...]:
        rows = self.session.execute(
            select(Contact.name, Contact.email)
            .join(Watcher, Watcher.contact_id == Contact.id)
            .where(Watcher.ticket_id == ticket.id)
        ).all()
        return tuple(Address(name=name or "", email=email) for name, email in rows)

    def merge(self, number: int, into: int, *, actor: str) -> Done:
        """Merge a duplicate into `into`: both record it, the duplicate's requester and
        watchers watch `into`, and the duplicate is closed with a note saying where the
        work goes on. Its history stays where it is, linked."""
        if number == into:
            raise ActionRefused(Phrase("actions.merge_itself"))
        ticket = self.get(number)
        target = self.session.get(Ticket, into)
        if target is None:
            raise ActionRefused(Phrase("actions.merge_no_target", number=into))
        if target.security != ticket.security:
            raise ActionRefused(Phrase("actions.merge_security"))
        for major in (ticket, target):  # its reports point at it: attach, never merge
            if major.major:
                raise ActionRefused(Phrase("actions.merge_major", number=major.id))
        if ticket.status == TicketStatus.CLOSED:
            raise ActionRefused(Phrase("actions.already", number=number, status=ticket.status))
        done = Done(ticket.id)
        self.session.add(TicketLink(ticket_id=number, other_id=into, kind="merged",
                                    created_at=self.now))  # fmt: skip
        self.session.flush()
        self.event(ticket, done, EventSpec("merged", actor, new=str(into)))
        self.applier.event(self.session, into, EventSpec("merged_from", actor, new=str(number)),
                           self.now)  # fmt: skip
        target_requester = self.session.get(Contact, target.requester_id)
        # A monitor's alert has no person behind it to keep informed.
        requester = ((Address(name=ticket.requester.name, email=ticket.requester.email),)
                     if ticket.origin == Origin.MAIL else ())  # fmt: skip
        moved = [*requester, *self.watchers_all(ticket)]
        keep = {a.email for a in self.watchers_all(target)}
        keep.add(target_requester.email if target_requester else "")
        add = tuple(a for a in moved if a.email not in keep)
        if add:
            self.applier.change_watchers(self.session, into, add, (), actor, self.now)
        self._status(ticket, TicketStatus.CLOSED, actor, done, reason=f"merged into #{into}")
        self.tell_requester(ticket, "closed", "closed", done, merged_into=into,
                            note=f"This request continues in ticket #{into}.")  # fmt: skip
        return done

    # --- security -------------------------------------------------------------------

    def regulator_notified(self, number: int, *, actor: str, note: str = "") -> Done:
        """The regulator has been notified (or it was decided not to): reminders stop."""
        ticket = self.get(number)
        if ticket.regulator_due is None:
            raise ActionRefused(Phrase("actions.no_regulator", number=number))
        if ticket.regulator_notified_at is not None:
            raise ActionRefused(Phrase("actions.regulator_closed", number=number))
        done = Done(ticket.id)
        ticket.regulator_notified_at = self.now
        ticket.regulator_next_reminder_at = None
        ticket.updated_at = self.now
        within = self.now <= ticket.regulator_due
        self.event(ticket, done, EventSpec("regulator_notified", actor, detail={
            "note": note, "within_deadline": within}))  # fmt: skip
        self.tell_groups(ticket, "agent_update",
                         notices.regulator_audience(self.settings, self.directory), done,
                         event="regulator_notified", note=note, actor=actor)  # fmt: skip
        return done

    # --- pieces -----------------------------------------------------------------------

    def event(self, ticket: Ticket, done: Done, spec: EventSpec) -> None:
        self.applier.event(self.session, ticket.id, spec, self.now)
        done.events.append(spec.kind)

    def _status(
        self, ticket: Ticket, status: str, actor: str, done: Done, *, reason: str | None = None,
        auto: bool = False,
    ) -> None:  # fmt: skip
        old = change_status(ticket, status, self.now, self.policy)
        if old == status:
            return
        self.applier.status_changed(self.session, ticket, old, status, self.now,
                                    note=reason if status in FINISHED_STATUSES else None)  # fmt: skip
        detail: dict[str, Any] = {}
        if reason:
            detail["reason"] = reason
        if auto:
            detail["auto"] = True
        self.event(ticket, done, EventSpec("status", actor, old=old, new=str(status),
                                            detail=detail or None))  # fmt: skip
        log.info("ticket #%d: %s -> %s by %s", ticket.id, old, status, actor)

    def thread(self, ticket: Ticket) -> notices.Thread:
        """Thread requester mail onto the requester's first message."""
        first = self.session.scalar(
            select(Article.message_id)
            .where(Article.ticket_id == ticket.id, Article.direction == Direction.IN,
                   Article.kind == ArticleKind.MESSAGE, Article.message_id.is_not(None))
            .order_by(Article.id)
            .limit(1)
        )  # fmt: skip
        return notices.Thread(first, (first,) if first else ())

    def queue(self, ticket: Ticket, notice: Notice, done: Done) -> None:
        """Queue one ready-made notice about `ticket`."""
        self._queue(ticket, notice, done)

    def _queue(self, ticket: Ticket, notice: Notice, done: Done) -> None:
        outbox_id = self.applier.queue_notice(self.session, ticket, notice, self.now)
        if outbox_id is not None:  # None: withheld by the rate limits (maild.autoreply)
            done.outbox_ids.append(outbox_id)

    def _check_files(self, attachments: tuple[ParsedAttachment, ...]) -> None:
        """Refuse a reply whose files are over ``attachments.reply_max_bytes`` in all."""
        limit = self.settings.attachments.reply_max_bytes
        total = sum(a.size for a in attachments)
        if attachments and total > limit:
            names = ", ".join(a.filename for a in attachments)
            raise ActionRefused(Phrase("actions.files_too_large", names=names, size=total,
                                       limit=limit))  # fmt: skip

    def tell_requester(
        self, ticket: Ticket, template: str, kind: str, done: Done, *,
        auto_submitted: str = "auto-generated", attachments: tuple[ParsedAttachment, ...] = (),
        **context: Any,
    ) -> None:  # fmt: skip
        """Queue `template` to the requester (not to an address that hard-bounces,
        and never to a monitor or for a major incident maild opened: `Origin`)."""
        if ticket.origin != Origin.MAIL:
            log.info("ticket #%d: no %s: a ticket of origin %s has no requester to tell",
                     ticket.id, kind, ticket.origin)  # fmt: skip
            return
        requester = Address(name=ticket.requester.name, email=ticket.requester.email)
        if self.undeliverable(ticket.requester):
            log.warning("ticket #%d: not sending %s to %s (hard bounces)", ticket.id, kind,
                        requester.email)  # fmt: skip
            self.event(ticket, done, EventSpec(f"{kind}_suppressed", SYSTEM, detail={
                "to": [requester.email], "reason": "undeliverable: hard-bounced"}))  # fmt: skip
            return
        cc = self.watchers(ticket) if kind in PUBLIC_UPDATES else ()
        if attachments:  # named in the mail too
            context = {**context, "attachments": [a.filename for a in attachments]}
        notice = notices.to_requester(template, kind, requester, thread=self.thread(ticket),
                                      context=context, auto_submitted=auto_submitted,
                                      cc=cc, attachments=attachments)  # fmt: skip
        self._queue(ticket, notice, done)

    def _hard_since(self) -> datetime:
        return self.now - timedelta(days=self.settings.outgoing.hard_bounce_days)

    def undeliverable(self, contact: Contact) -> bool:
        """Hard-bounced within ``outgoing.hard_bounce_days`` (a mark that lapses)."""
        return (contact.bounce_state == "hard" and contact.bounced_at is not None
                and contact.bounced_at > self._hard_since())  # fmt: skip

    def watchers(self, ticket: Ticket) -> tuple[Address, ...]:
        """The ticket's watchers whose mail does not bounce."""
        rows = self.session.execute(
            select(Contact.name, Contact.email)
            .join(Watcher, Watcher.contact_id == Contact.id)
            .where(Watcher.ticket_id == ticket.id,
                   or_(Contact.bounce_state != "hard", Contact.bounced_at <= self._hard_since()))
            .order_by(Watcher.added_at, Contact.id)
        ).all()  # fmt: skip
        return tuple(Address(name=name or "", email=email) for name, email in rows)

    def tell_groups(
        self, ticket: Ticket, template: str, audience: notices.Audience, done: Done,
        **context: Any,
    ) -> None:  # fmt: skip
        """Queue `template` to each agent address (content restricted on security tickets)."""
        for notice in notices.to_groups(template, template, audience, security=ticket.security,
                                        context=context):  # fmt: skip
            self._queue(ticket, notice, done)

    def working_audience(self, ticket: Ticket) -> notices.Audience:
        """The assignee if there is one, else the tier group working the ticket."""
        return notices.working_audience(self.settings, self.directory, tier=ticket.tier,
                                        assignee_id=ticket.assignee_id,
                                        security=ticket.security)  # fmt: skip

"""apply: write one `Decision` (DB only; the caller owns the transaction).

Ticket rows, the article and its attachments, events, and the rendered
outgoing mail as `outbox` rows whose Message-IDs are fixed here, before
anything is sent. Each outgoing mail is also an article on its ticket, so a
reply to it threads by ``In-Reply-To`` like any other.

Inserts go through SQLAlchemy Core on the session's connection: this is the
hot path of every message, and the ORM unit of work costs more here than the
rest of the pipeline. Existing tickets are loaded as ORM objects (few, and
callers such as the sweeps change them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from maild.config.settings import Settings
from maild.desk.autoreply import DIGEST_KIND, AutoreplyGuard, Refusal, alert_notice
from maild.desk.lifecycle import change_status, sla_columns
from maild.errors import TransientError
from maild.mail.compose import Outgoing, OutgoingAttachment, compose, new_message_id
from maild.mail.language import detect
from maild.mail.make import MadeMail, MailJob, MailMaker, make_mail
from maild.mail.parse import Address
from maild.mail.phrases import Phrase
from maild.mail.quotes import strip_reply
from maild.mail.render import Renderer
from maild.mail.replyaddr import expiry, reply_address, requester_address
from maild.mail.tokens import Signer, load_or_create_secret
from maild.mail.weblink import requester_link
from maild.pipeline.decide import is_own_address
from maild.pipeline.decision import ArticleSpec, BounceSpec, Decision, EventSpec, Notice, TicketSpec
from maild.pipeline.directory import EMPTY, Directory
from maild.pipeline.sla import SlaPolicy
from maild.pipeline.tiers import security_contacts
from maild.store import search
from maild.store.db import Direct, insert_ignore, upsert_contact
from maild.store.models import (
    Article,
    Attachment,
    Blob,
    Contact,
    Event,
    HeldNotice,
    Inbound,
    Outbox,
    Suggestion,
    Ticket,
    Watcher,
)
from maild.store.states import (
    FINISHED_STATUSES,
    ArticleKind,
    Direction,
    InboundStatus,
    OutboxStatus,
    Outcome,
    Visibility,
)

log = logging.getLogger(__name__)

RESTRICTED_SUBJECT = "security incident (details restricted)"

# Statements of the per-message hot path, built once: constructing a statement
# costs SQLAlchemy more than SQLite spends running it.
_INSERT_TICKET = Direct(insert(Ticket).returning(Ticket.id))
_INSERT_ARTICLE = Direct(insert(Article).returning(Article.id))
_INSERT_OUTBOX = Direct(insert(Outbox).returning(Outbox.id))
_INSERT_EVENT = insert(Event)
# Events are written, never read, while messages are applied: the worker
# collects a transaction's events and inserts them in one statement before
# it commits (one round trip instead of one per event on PostgreSQL).
_EVENT_BUFFER = "maild.event_buffer"
# Automatic mail made elsewhere (Applier.make_elsewhere, `maild import`): the
# article and outbox rows are written at once with empty text and bytes, and
# filled in, in the same transaction, before it commits (flush_events).
_MAIL_BUFFER = "maild.mail_buffer"
_FILL_ARTICLE = (
    update(Article)
    .where(Article.id == bindparam("article"))
    .values(subject=bindparam("made_subject"), text=bindparam("made_text"))
)
_FILL_OUTBOX = update(Outbox).where(Outbox.id == bindparam("outbox")).values(raw=bindparam("made"))
# How long a transaction waits for the mail made elsewhere before it makes the
# rest itself.
MAKE_ELSEWHERE_TIMEOUT = 30.0
_UNMADE = MadeMail(subject="", text="", raw=b"")
_INSERT_ATTACHMENT = insert(Attachment)
_INSERT_SUGGESTION = Direct(insert(Suggestion))
_CONTACT = Direct(
    select(Contact.id, Contact.name, Contact.language, Contact.bounce_state).where(
        Contact.email == bindparam("email")
    )
)
_TICKET_VIEW = (
    select(
        Ticket.id,
        Ticket.subject,
        Ticket.priority,
        Ticket.type,
        Ticket.category,
        Ticket.status,
        Ticket.tier,
        Ticket.language,
        Ticket.address,
        Contact.email.label("requester_email"),
        Contact.name.label("requester_name"),
        Ticket.impact,
        Ticket.urgency,
        Ticket.security,
        Ticket.created_at,
        Ticket.first_response_due,
        Ticket.first_response_at,
        Ticket.resolution_due,
        Ticket.resolved_at,
        Ticket.regulator_due,
    )
    .join(Contact, Ticket.requester_id == Contact.id)
    .where(Ticket.id == bindparam("b_id"))
)
_VIEW = Direct(_TICKET_VIEW)
_VIEW_KEYS = [column.key for column in _TICKET_VIEW.selected_columns]
_CLEAR_BOUNCE = Direct(
    update(Contact)
    .where(Contact.email == bindparam("b_email"), Contact.bounce_state != "ok")
    .values(bounce_state="ok", bounced_at=None)
)
_TOUCH_TICKET = Direct(
    update(Ticket).where(Ticket.id == bindparam("b_id")).values(updated_at=bindparam("b_now"))
)
_FINISH = {
    claimed: Direct(
        update(Inbound)
        .where(
            Inbound.id == bindparam("b_id"),
            *(
                (
                    Inbound.status == InboundStatus.PROCESSING,
                    Inbound.claimed_at == bindparam("b_claim"),
                )
                if claimed
                else ()
            ),
        )
        .values(
            status=bindparam("b_status"),
            outcome=bindparam("b_outcome"),
            error=bindparam("b_error"),
            processed_at=bindparam("b_now"),
            ticket_id=bindparam("b_ticket"),
            rule=bindparam("b_rule"),
            reason=bindparam("b_reason"),
        )
    )
    for claimed in (False, True)
}


# Outcomes that open or touch no ticket of their own, and the inbound status they leave.
_SET_ASIDE = {
    Outcome.IGNORED: InboundStatus.IGNORED,
    Outcome.SPAM: InboundStatus.SPAM,
    Outcome.QUARANTINED: InboundStatus.QUARANTINED,
}


def _no_alarms_for_the_past(values: dict[str, Any], now: datetime) -> None:
    """An imported ticket's deadlines come from the archive's dates; those already
    past at the import raise no warning, breach or reminder now (the sweeps look at
    the ``*_warn_at`` and reminder columns only)."""
    for target in ("first_response", "resolution"):
        due, warn = values.get(f"{target}_due"), values.get(f"{target}_warn_at")
        if due is not None and due <= now:
            values[f"{target}_warn_at"] = None
        elif warn is not None and warn <= now:
            values[f"{target}_warned_at"] = now  # too late to warn; a breach still counts
    due = values.get("regulator_due")
    if due is not None and due <= now:
        values["regulator_next_reminder_at"] = None


@dataclass(frozen=True)
class Applied:
    outcome: Outcome
    ticket_id: int | None
    outbox_ids: tuple[int, ...] = ()


class LostClaim(TransientError):
    """The inbound row was taken over by another worker; roll back."""


@dataclass(frozen=True)
class TicketView:
    """What a notice needs to know of its ticket."""

    id: int
    subject: str
    priority: int
    type: str
    category: str
    status: str
    tier: int
    language: str
    address: str
    requester_email: str
    requester_name: str
    # what the mails about SLAs and escalation show
    impact: int = 3
    urgency: int = 2
    security: bool = False
    created_at: datetime | None = None
    first_response_due: datetime | None = None
    first_response_at: datetime | None = None
    resolution_due: datetime | None = None
    resolved_at: datetime | None = None
    regulator_due: datetime | None = None

    @classmethod
    def of(cls, ticket: Ticket) -> TicketView:
        return cls(
            id=ticket.id,
            subject=ticket.subject,
            priority=ticket.priority,
            type=ticket.type,
            category=ticket.category,
            status=ticket.status,
            tier=ticket.tier,
            language=ticket.language,
            address=ticket.address,
            requester_email=ticket.requester.email,
            requester_name=ticket.requester.name,
            impact=ticket.impact,
            urgency=ticket.urgency,
            security=ticket.security,
            created_at=ticket.created_at,
            first_response_due=ticket.first_response_due,
            first_response_at=ticket.first_response_at,
            resolution_due=ticket.resolution_due,
            resolved_at=ticket.resolved_at,
            regulator_due=ticket.regulator_due,
        )


def insert_outbox(session: Session, values: dict[str, Any]) -> int:
    """Insert one outbox row (`Outbox` columns); returns its id."""
    return int(_INSERT_OUTBOX.scalar_one(session, values))


def buffer_events(session: Session) -> None:
    """Collect this transaction's events until `flush_events` (the worker's
    batches), and let its automatic mail be made elsewhere meanwhile
    (`Applier.make_elsewhere`)."""
    session.info[_EVENT_BUFFER] = []
    session.info[_MAIL_BUFFER] = []


def flush_events(session: Session) -> None:
    """Fill in the mail made elsewhere and insert the collected events; call
    before a savepoint and before commit."""
    _fill_mail(session)
    rows = session.info.get(_EVENT_BUFFER)
    if rows:
        session.connection().execute(_INSERT_EVENT, rows)
        rows.clear()


@dataclass(frozen=True)
class _Making:
    """A mail being made elsewhere, and the rows that wait for it."""

    future: Future[MadeMail]
    job: MailJob
    maker: MailMaker
    renderer: Renderer  # to make it here, should elsewhere fail
    article_id: int
    outbox_id: int


def _fill_mail(session: Session) -> None:
    """Write the mail made elsewhere into its article and outbox rows.

    One that did not come back (its process died, its job could not be sent
    there, it took too long) is made here instead: a template error then
    raises here, as it would have without the other process.
    """
    making: list[_Making] | None = session.info.get(_MAIL_BUFFER)
    if not making:
        return
    for maker in {id(m.maker): m.maker for m in making}.values():
        maker.finish()
    articles, outboxes = [], []
    deadline = time.monotonic() + MAKE_ELSEWHERE_TIMEOUT  # for all of them together
    for m in making:
        try:
            made = m.future.result(timeout=max(0.0, deadline - time.monotonic()))
        except Exception as exc:
            log.warning("ticket mail %s: made here instead (elsewhere: %s: %s)",
                        m.job.mail.message_id, type(exc).__name__, exc)  # fmt: skip
            made = make_mail(m.renderer, m.job)
        articles.append({"article": m.article_id, "made_subject": made.subject,
                         "made_text": made.text})  # fmt: skip
        outboxes.append({"outbox": m.outbox_id, "made": made.raw})
    making.clear()
    conn = session.connection()
    conn.execute(_FILL_ARTICLE, articles)
    conn.execute(_FILL_OUTBOX, outboxes)


class Applier:
    """Writes Decisions; holds the renderer and settings it needs."""

    def __init__(self, settings: Settings, renderer: Renderer) -> None:
        self.settings = settings
        self.renderer = renderer
        self.policy = SlaPolicy.from_settings(settings)
        self.guard = AutoreplyGuard(settings)
        self._signer: Signer | None = None
        self._new_requester_marked = False  # set by _contact
        # The agent directory (maild.agents.install sets it at start and on SIGHUP).
        self.directory: Directory = EMPTY
        # Where automatic mail may be made while this process goes on (`maild
        # import`: maild.service.renderpool), within the worker's transactions;
        # None: here, when it is queued.
        self.make_elsewhere: MailMaker | None = None

    @property
    def signer(self) -> Signer:
        """Signs our VERP and reply addresses; the secret is read once."""
        if self._signer is None:
            self._signer = Signer(load_or_create_secret(self.settings.helpdesk.secret_file))
        return self._signer

    def apply(
        self,
        session: Session,
        inbound_id: int,
        decision: Decision,
        now: datetime,
        *,
        claimed_at: datetime | None = None,
    ) -> Applied:
        """Write `decision` for inbound row `inbound_id` (the caller commits).

        With `claimed_at`, the row must still be in hand under that claim;
        otherwise `LostClaim` is raised and the caller rolls back (another
        worker took the row over after our lease ran out).
        """
        if decision.outcome in _SET_ASIDE:
            # No ticket of its own; a spam reply leaves its trace on its ticket.
            if decision.ticket_id is not None and decision.events:
                self._events(session, decision.ticket_id, decision.events, now)
            self._finish_inbound(session, inbound_id, _SET_ASIDE[decision.outcome], decision, now,
                                 decision.ticket_id, claimed_at)  # fmt: skip
            return Applied(decision.outcome, decision.ticket_id)

        # An imported archive's message happened at its own date: the ticket,
        # article and events carry it; the inbound row and mail sent, now.
        when = decision.occurred_at or now
        view: TicketView
        if decision.new_ticket is not None:
            view = self._create_ticket(session, decision.new_ticket, when, now)
        else:
            assert decision.ticket_id is not None
            view = self._existing_ticket(session, decision.ticket_id, decision.status, when)
        if decision.article is not None:
            article_id = self._add_article(session, view.id, decision.article, inbound_id, when)
            # A new ticket's language was just chosen from this very text.
            known = view.language if decision.new_ticket is not None else None
            self.index_article(session, view, article_id, decision.article, when, language=known)
            # A person who writes in is not undeliverable (known from the lookups
            # already made: a reply's participants, a new ticket's contact row).
            if decision.deliverable_again or (
                    decision.new_ticket is not None and self._new_requester_marked):  # fmt: skip
                self._clear_bounce(session, view.id, decision.article.author.email, now)
        watchers = decision.new_ticket.watchers if decision.new_ticket else decision.watchers_add
        if watchers or decision.watchers_remove:
            actor = decision.article.author.email if decision.article else "maild"
            self._watchers(session, view.id, watchers, decision.watchers_remove, actor, when)
        self._events(session, view.id, decision.events, when)
        if decision.first_response:
            self._record_first_response(session, view.id, decision, when)
        notices = decision.notices
        if decision.new_ticket is not None:
            notices = self._with_past_fixes(session, view, decision, notices, now)
        queued = [self.queue_notice(session, view, notice, now, source=decision.source)
                  for notice in notices]  # fmt: skip
        if decision.bounce is not None:
            self._record_bounce(session, view, decision.bounce, now)
        outbox_ids = tuple(i for i in queued if i is not None)
        self._finish_inbound(
            session, inbound_id, InboundStatus.DONE, decision, now, view.id, claimed_at
        )
        return Applied(decision.outcome, view.id, outbox_ids)

    # --- pieces (also used by maild.alerting, which writes one mail's several incidents) ---

    def create_ticket(self, session: Session, spec: TicketSpec, now: datetime) -> TicketView:
        return self._create_ticket(session, spec, now)

    def add_article(
        self, session: Session, ticket_id: int, spec: ArticleSpec, inbound_id: int | None,
        now: datetime,
    ) -> int:  # fmt: skip
        return self._add_article(session, ticket_id, spec, inbound_id, now)

    def events(
        self, session: Session, ticket_id: int, specs: Sequence[EventSpec], now: datetime
    ) -> None:
        self._events(session, ticket_id, specs, now)

    def finish_inbound(
        self, session: Session, inbound_id: int, decision: Decision, now: datetime,
        ticket_id: int | None, claimed_at: datetime | None,
    ) -> None:  # fmt: skip
        """Record the inbound row's fate: done (on `ticket_id`), or ignored."""
        status = InboundStatus.DONE if ticket_id is not None else InboundStatus.IGNORED
        self._finish_inbound(session, inbound_id, status, decision, now, ticket_id, claimed_at)

    def _existing_ticket(
        self, session: Session, ticket_id: int, status: str | None, now: datetime
    ) -> TicketView:
        """The ticket a message goes to, touched; its status changed if asked.

        Most replies change nothing but ``updated_at``: two Core statements.
        A status change goes through the ORM object and `change_status`, which
        keeps the SLA bookkeeping.
        """
        row = _VIEW.first(session, {"b_id": ticket_id})
        if row is None:  # pragma: no cover - the worker looked it up in this txn
            raise LookupError(f"ticket #{ticket_id} vanished")
        view = dict(zip(_VIEW_KEYS, row, strict=True))
        if status is not None and status != view["status"]:
            ticket = session.get(Ticket, ticket_id)
            assert ticket is not None
            old = change_status(ticket, status, now, self.policy)
            ticket.updated_at = now
            self.status_changed(session, ticket, old, status, now)
            return TicketView.of(ticket)
        _TOUCH_TICKET.execute(session, {"b_id": ticket_id, "b_now": now}).close()
        return TicketView(**view)

    @staticmethod
    def _finish_inbound(
        session: Session,
        inbound_id: int,
        status: InboundStatus,
        decision: Decision,
        now: datetime,
        ticket_id: int | None,
        claimed_at: datetime | None,
    ) -> None:
        failed = status == InboundStatus.QUARANTINED
        params = {
            "b_id": inbound_id,
            "b_status": str(status),
            "b_outcome": str(decision.outcome),
            "b_error": decision.reason if failed else None,
            "b_now": now,
            "b_ticket": ticket_id,
            "b_claim": claimed_at,
            "b_rule": decision.rule or None,
            "b_reason": decision.reason[:4000] or None,
        }
        rowcount = _FINISH[claimed_at is not None].rowcount(session, params)
        if claimed_at is not None and rowcount != 1:
            raise LostClaim(f"inbound {inbound_id} is no longer in our hands")

    def _contact(
        self, session: Session, who: Address, language: str | None, now: datetime
    ) -> tuple[int, str]:
        """The contact's (id, name), created if new; a name is filled in once known.

        Whether it is marked undeliverable is left in `_new_requester_marked`.
        """
        conn = session.connection()
        row: Any = _CONTACT.first(session, {"email": who.email})
        if row is None:
            new = {
                "email": who.email,
                "name": who.name,
                "language": language,
                "bounce_state": "ok",
                "created_at": now,
            }
            # One statement whether or not another transaction created it meanwhile.
            row = conn.execute(upsert_contact(session), new).one()
        contact_id, name, known_language, bounce_state = row
        self._new_requester_marked = bounce_state != "ok"
        if (who.name and not name) or (language and not known_language):
            conn.execute(
                update(Contact)
                .where(Contact.id == contact_id)
                .values(name=name or who.name, language=known_language or language)
            )
            name = name or who.name
        return contact_id, name

    def _record_first_response(
        self, session: Session, ticket_id: int, decision: Decision, when: datetime
    ) -> None:
        """The old desk answered in the archive: its first answer is the first response."""
        ticket = session.get(Ticket, ticket_id)
        if ticket is None or ticket.first_response_at is not None:
            return
        ticket.first_response_at = when
        met = ticket.first_response_due is None or when <= ticket.first_response_due
        actor = decision.article.author.email if decision.article else "maild"
        self._event(session, ticket_id, EventSpec("first_response", actor,
                    detail={"within_target": met, "imported": True}), when)  # fmt: skip

    def _create_ticket(
        self, session: Session, spec: TicketSpec, now: datetime, real_now: datetime | None = None
    ) -> TicketView:
        """A ticket created at `now` (an archive's date when importing: `real_now` is the
        time of the import, and deadlines already past then raise no alarm)."""
        requester_id, requester_name = self._contact(
            session, spec.requester, spec.contact_language, now
        )
        values = {
            "type": str(spec.type),
            "category": spec.category,
            "impact": spec.impact,
            "urgency": spec.urgency,
            "priority": spec.priority,
            "tier": spec.tier,
            "status": str(spec.status),
            "requester_id": requester_id,
            "subject": spec.subject,
            "security": spec.security,
            "language": spec.language,
            "address": spec.address,
            "parent_id": spec.parent_id,
            "loop_suspected": False,
            "created_at": now,
            "updated_at": now,
            "first_response_due": spec.first_response_due,
            "resolution_due": spec.resolution_due,
            "regulator_due": spec.regulator_due,
            "regulator_next_reminder_at": spec.regulator_next_reminder_at,
            "origin": spec.origin,
        }
        if spec.sla is not None:
            values.update(sla_columns(spec.sla))
        if real_now is not None and now < real_now:
            _no_alarms_for_the_past(values, real_now)
        ticket_id = _INSERT_TICKET.scalar_one(session, values)
        return TicketView(
            id=ticket_id,
            subject=spec.subject,
            priority=spec.priority,
            type=str(spec.type),
            category=spec.category,
            status=str(spec.status),
            tier=spec.tier,
            language=spec.language,
            address=spec.address,
            requester_email=spec.requester.email,
            requester_name=requester_name,
            impact=spec.impact,
            urgency=spec.urgency,
            security=spec.security,
            created_at=now,
            first_response_due=spec.first_response_due,
            resolution_due=spec.resolution_due,
            regulator_due=spec.regulator_due,
        )

    def _add_article(
        self,
        session: Session,
        ticket_id: int,
        spec: ArticleSpec,
        inbound_id: int | None,
        now: datetime,
    ) -> int:
        conn = session.connection()
        values = {
            "ticket_id": ticket_id,
            "direction": str(spec.direction),
            "visibility": str(spec.visibility),
            "kind": str(spec.kind),
            "author_email": spec.author.email,
            "author_name": spec.author.name,
            "message_id": spec.message_id,
            "in_reply_to": spec.in_reply_to,
            "subject": spec.subject,
            "text": spec.text,
            "html": spec.html,
            "sent_at": spec.sent_at,
            "created_at": now,
            "inbound_id": inbound_id,
            "verified_by": spec.verified_by,
        }
        article_id: int = _INSERT_ARTICLE.scalar_one(session, values)
        if spec.attachments:
            blobs: dict[str, dict[str, Any]] = {}
            for att in spec.attachments:
                blobs.setdefault(
                    att.sha256, {"sha256": att.sha256, "size": att.size, "data": att.data}
                )
            insert_ignore(session, Blob, list(blobs.values()))
            rows = [
                {
                    "article_id": article_id,
                    "filename": att.filename,
                    "content_type": att.content_type[:255],
                    "size": att.size,
                    "sha256": att.sha256,
                    "content_id": att.content_id,
                    "inline": att.inline,
                }
                for att in spec.attachments
            ]
            conn.execute(_INSERT_ATTACHMENT, rows)
        return article_id

    # --- the search index and past fixes (maild.store.search) ---------------

    def index_article(
        self,
        session: Session,
        ticket: Ticket | TicketView,
        article_id: int | None,
        spec: ArticleSpec,
        now: datetime,
        *,
        language: str | None = None,
    ) -> None:
        """Index a person's message or note (not mail maild made, auto-replies,
        bounces) in this transaction; a reply without the mail it quotes.
        `language`: the text's, if known (else detected, else the ticket's)."""
        if spec.direction != Direction.IN or spec.kind not in (ArticleKind.MESSAGE,
                                                                ArticleKind.NOTE):  # fmt: skip
            return
        text = spec.text
        if spec.in_reply_to:
            text = spec.reply_text if spec.reply_text is not None else strip_reply(spec.text)
        kind = "note" if spec.kind == ArticleKind.NOTE else "message"
        self._index(session, ticket, kind, spec.visibility, text, now, article_id=article_id,
                    language=language)  # fmt: skip

    def index_reply(
        self, session: Session, ticket: Ticket | TicketView, text: str, now: datetime
    ) -> None:
        """Index an agent's public reply as they wrote it (the mail around it is not)."""
        self._index(session, ticket, "reply", Visibility.PUBLIC, text, now, body=text)

    def _index(
        self, session: Session, ticket: Ticket | TicketView, kind: str, visibility: str,
        text: str, now: datetime, *, article_id: int | None = None, body: str | None = None,
        language: str | None = None,
    ) -> None:  # fmt: skip
        view = ticket if isinstance(ticket, TicketView) else TicketView.of(ticket)
        head = search.head_text(view.id, view.subject, view.requester_name, view.requester_email)
        search.index_document(session, ticket_id=view.id, kind=kind, visibility=visibility,
                              language=language or detect(text) or view.language, head=head,
                              text=text,
                              now=now, article_id=article_id, body=body)  # fmt: skip

    def status_changed(
        self, session: Session, ticket: Ticket, old: str, new: str, now: datetime, *,
        note: str | None = None,
    ) -> None:  # fmt: skip
        """Keep the past fixes in step: a ticket resolved or closed becomes one
        (its resolution: `note`, else the last public reply of an agent), a
        ticket reopened is none any more."""
        finished = new in FINISHED_STATUSES
        if finished and note:
            self._index(session, ticket, "resolution", Visibility.PUBLIC, note, now, body=note)
        if finished and (old not in FINISHED_STATUSES or not search.has_resolution(session,
                                                                                  ticket.id)):  # fmt: skip
            texts = [strip_reply(t) if i else t
                     for i, t in enumerate(search.requester_texts(session, ticket.id))]  # fmt: skip
            problem = "\n".join(texts)[:8000]
            search.index_resolution(
                session, ticket_id=ticket.id, subject=ticket.subject, problem=problem,
                language=detect(f"{ticket.subject}\n{problem}") or ticket.language,
                resolution=note or search.last_reply(session, ticket.id), resolved_at=now,
            )  # fmt: skip
        elif not finished and old in FINISHED_STATUSES:
            search.forget_resolution(session, ticket.id)

    def _with_past_fixes(
        self, session: Session, view: TicketView, decision: Decision,
        notices: tuple[Notice, ...], now: datetime,
    ) -> tuple[Notice, ...]:  # fmt: skip
        """The agents' new-ticket mails with the most similar resolved tickets.

        Not to an agent who may not see the ticket's content (a security
        incident outside the security group); security incidents are only
        suggested on a security incident (whose mail goes to the security group).
        """
        wanted = self.settings.search.suggestions
        targets = [i for i, n in enumerate(notices)
                   if n.template == "agent_new" and not n.context.get("restricted")]  # fmt: skip
        if wanted <= 0 or not targets:
            return notices
        text = decision.article.text if decision.article is not None else ""
        fixes = search.similar_resolved(
            session,
            text,
            subject=view.subject,
            limit=wanted,
            include_security=view.security,
            language=detect(f"{view.subject}\n{text}"),
        )
        if not fixes:
            return notices
        for position, fix in enumerate(fixes, 1):
            _INSERT_SUGGESTION.execute(session, {
                "ticket_id": view.id, "suggested_id": fix.number, "position": position,
                "score": fix.rank, "created_at": now}).close()  # fmt: skip
        shown = [SimpleNamespace(number=f.number, subject=f.subject, resolution=f.short(),
                                 helpful=f.helpful) for f in fixes]  # fmt: skip
        out = list(notices)
        for i in targets:
            out[i] = replace(out[i], context={**out[i].context, "suggestions": shown})
        return tuple(out)

    def change_watchers(
        self, session: Session, ticket_id: int, add: tuple[Address, ...], remove: tuple[str, ...],
        actor: str, now: datetime,
    ) -> None:  # fmt: skip
        self._watchers(session, ticket_id, add, remove, actor, now)

    def _watchers(
        self, session: Session, ticket_id: int, add: tuple[Address, ...], remove: tuple[str, ...],
        actor: str, now: datetime,
    ) -> None:  # fmt: skip
        """Add and remove watchers of a ticket (each change an event)."""
        conn = session.connection()
        for who in add:
            contact_id, _name = self._contact(session, who, None, now)
            insert_ignore(session, Watcher, [{"ticket_id": ticket_id, "contact_id": contact_id,
                                              "added_at": now}])  # fmt: skip
            self._event(session, ticket_id, EventSpec("watcher_added", actor, new=who.email), now)
        for email in remove:
            ids = select(Contact.id).where(Contact.email == email).scalar_subquery()
            conn.execute(delete(Watcher).where(Watcher.ticket_id == ticket_id,
                                               Watcher.contact_id == ids))  # fmt: skip
            self._event(session, ticket_id, EventSpec("watcher_removed", actor, old=email), now)

    def event(self, session: Session, ticket_id: int, spec: EventSpec, now: datetime) -> None:
        """Record one audit event on a ticket."""
        self._event(session, ticket_id, spec, now)

    def _event(self, session: Session, ticket_id: int, spec: EventSpec, now: datetime) -> None:
        self._events(session, ticket_id, (spec,), now)

    @staticmethod
    def _events(
        session: Session, ticket_id: int, specs: Sequence[EventSpec], now: datetime
    ) -> None:
        if not specs:
            return
        rows = [
            {
                "ticket_id": ticket_id,
                "at": now,
                "actor": spec.actor,
                "kind": spec.kind,
                "old": None if spec.old is None else str(spec.old),
                "new": None if spec.new is None else str(spec.new),
                "detail": dict(spec.detail) if spec.detail else None,
            }
            for spec in specs
        ]
        buffer = session.info.get(_EVENT_BUFFER)
        if buffer is not None and not session.in_nested_transaction():
            buffer.extend(rows)
        else:  # no buffer, or inside a savepoint, whose rollback must take them along
            session.connection().execute(_INSERT_EVENT, rows)

    def _record_bounce(
        self, session: Session, ticket: TicketView, bounce: BounceSpec, now: datetime
    ) -> None:
        """Mark the failed recipients: hard = undeliverable, soft = recorded."""
        if bounce.kind not in ("hard", "soft") or not bounce.addresses:
            return
        rows = session.execute(
            select(Contact.id, Contact.email, Contact.bounce_state).where(
                Contact.email.in_(bounce.addresses)
            )
        ).all()
        for contact_id, email, state in rows:
            if state == "hard" or state == bounce.kind:
                continue
            session.execute(update(Contact).where(Contact.id == contact_id)
                            .values(bounce_state=bounce.kind, bounced_at=now))  # fmt: skip
            self._event(session, ticket.id, EventSpec(
                "contact_bounce", "maild", old=state, new=bounce.kind,
                detail={"contact": email, "status": bounce.status,
                        "diagnostic": bounce.diagnostic, "outbox": bounce.outbox_id}), now)  # fmt: skip
            log.warning("ticket #%d: %s bounced (%s, status %s)", ticket.id, email, bounce.kind,
                        bounce.status)  # fmt: skip
            if bounce.kind != "hard":
                continue
            alert = alert_notice(
                self.settings,
                Phrase("alert.undeliverable", email=email),
                [
                    Phrase("alert.status", status=bounce.status or Phrase("alert.unknown")),
                    Phrase(
                        "alert.diagnostic",
                        diagnostic=bounce.diagnostic or Phrase("alert.none_given"),
                    ),
                ],  # fmt: skip
                Phrase("alert.undeliverable_advice"),
            )
            if alert is not None:
                self.queue_notice(session, ticket, alert, now)

    def _restricted(self, ticket: TicketView, notice: Notice) -> bool:
        """Whether a mail about `ticket` must not name its subject, text or requester:
        an internal mail about a security incident to anyone but the security contacts."""
        if not ticket.security or notice.visibility != Visibility.INTERNAL:
            return False
        said = notice.context.get("restricted")
        if said is not None:
            return bool(said)
        allowed = {r.address.email for r in security_contacts(self.settings, self.directory)}
        return any(a.email not in allowed for a in notice.to)

    def _clear_bounce(self, session: Session, ticket_id: int, email: str, now: datetime) -> None:
        """A contact who writes in again is deliverable again (one indexed UPDATE)."""
        if _CLEAR_BOUNCE.rowcount(session, {"b_email": email}):
            self._event(session, ticket_id, EventSpec("contact_bounce", "maild", new="ok",
                        detail={"contact": email, "reason": "they wrote in"}), now)  # fmt: skip
            log.info("ticket #%d: %s wrote in: no longer marked undeliverable", ticket_id, email)

    def _suppressed(
        self, session: Session, ticket: TicketView, notice: Notice, refusal: Refusal, now: datetime
    ) -> None:
        to = [a.email for a in notice.to]
        held = refusal.hold and notice.kind != DIGEST_KIND
        self._event(session, ticket.id, EventSpec(f"{notice.kind}_{'held' if held else 'suppressed'}",
                    "maild", detail={"to": to, "reason": refusal.reason}), now)  # fmt: skip
        log.warning("ticket #%d: %s to %s %s: %s", ticket.id, notice.kind, ", ".join(to),
                    "held for a digest" if held else "not sent", refusal.reason)  # fmt: skip
        if held:  # sent later, one digest per address (maild.desk.autoreply.send_digests)
            rows = [{"address": email, "ticket_id": ticket.id, "kind": notice.kind[:32],
                     "subject": ticket.subject, "language": notice.language or ticket.language,
                     "reason": refusal.reason[:300], "held_at": now, "sent_at": None}
                    for email in dict.fromkeys([*to, *(a.email for a in notice.cc)])]  # fmt: skip
            session.connection().execute(insert(HeldNotice), rows)
        if refusal.alert_key is not None and not refusal.loop:  # a source over its limit
            if self.guard.should_alert(session, ticket.id, refusal, now, True):
                alert = alert_notice(
                    self.settings,
                    f"automatic mail stopped for mail from {refusal.alert_key}",
                    [refusal.reason, f"Dropped: {notice.kind} to {', '.join(to)}"],
                    "One source sent more mail than the help desk answers in an hour: "
                    "likely a flood of forged senders. Its tickets are open; nobody was "
                    "answered. Mail from other sources is answered as usual.",
                )
                if alert is not None:
                    self.queue_notice(session, ticket, alert, now)
            return
        if not refusal.loop:
            return
        was_flagged = bool(
            session.scalar(select(Ticket.loop_suspected).where(Ticket.id == ticket.id))
        )
        if not was_flagged:
            session.execute(
                update(Ticket).where(Ticket.id == ticket.id).values(loop_suspected=True)
            )
            self._event(session, ticket.id, EventSpec("loop_suspected", "maild", old="false",
                        new="true", detail={"reason": refusal.reason}), now)  # fmt: skip
        if self.guard.should_alert(session, ticket.id, refusal, now, was_flagged):
            alert = alert_notice(
                self.settings,
                Phrase("alert.loop"),
                [refusal.reason, Phrase("alert.withheld", kind=notice.kind, to=", ".join(to))],
                Phrase("alert.loop_advice"),
            )
            if alert is not None:
                self.queue_notice(session, ticket, alert, now)

    def _requester_link(self, ticket: TicketView, notice: Notice, now: datetime) -> str | None:
        """The requester's personal page of the ticket, on mail to the requester alone.

        The page acts as the requester without their From (a reply there is verified
        as theirs, a rating closes the ticket): a mail copied to watchers would hand
        it to them, so such a mail has no link (the requester has it from the others).
        """
        if not self.settings.web.enabled or notice.visibility != Visibility.PUBLIC:
            return None
        if not notice.to or notice.to[0].email != ticket.requester_email or notice.cc:
            return None
        return requester_link(self.signer, self.settings.web.url, ticket.id,
                              ticket.requester_email, now)  # fmt: skip

    def queue_mail(
        self, session: Session, template: str, to: Address, language: str,
        context: dict[str, Any], now: datetime, *, kind: str,
    ) -> int:  # fmt: skip
        """A mail about no ticket (a console sign-in link): rendered, in the outbox."""
        hd = self.settings.helpdesk
        desk = Address(name=hd.name, email=hd.primary_address)
        rendered = self.renderer.render(template, language, {
            "helpdesk": SimpleNamespace(name=hd.name, address=desk.email), **context})  # fmt: skip
        message_id = new_message_id(hd.domain)
        raw = compose(Outgoing(sender=desk, to=(to,), subject=rendered.subject,
                               text=rendered.text, html=rendered.html, message_id=message_id,
                               date=now, auto_submitted="auto-generated", loop_domain=hd.domain,
                               language=language))  # fmt: skip
        outbox_id: int = _INSERT_OUTBOX.scalar_one(session, {
            "ticket_id": None, "article_id": None, "kind": kind, "message_id": message_id,
            "mail_from": desk.email, "rcpt_to": [to.email], "raw": raw,
            "status": str(OutboxStatus.PENDING), "attempts": 0, "next_attempt_at": now,
            "created_at": now})  # fmt: skip
        log.info("%s queued to %s as %s", kind, to.email, message_id)
        return outbox_id

    def queue_notice(
        self, session: Session, ticket: Ticket | TicketView, notice: Notice, now: datetime,
        *, source: str | None = None,
    ) -> int | None:  # fmt: skip
        """Render `notice`, store it as an outgoing article and an outbox row.

        The one place automatic mail is queued: returns None when the rate
        limits or a hard bounce withhold it (`maild.desk.autoreply`).
        `source`: the client network of the mail that triggered it.
        """
        if isinstance(ticket, Ticket):
            ticket = TicketView.of(ticket)
        notice, refusal = self.guard.screen(session, ticket.id, notice, now, source)
        if refusal is not None:
            self._suppressed(session, ticket, notice, refusal, now)
            return None
        hd = self.settings.helpdesk
        language = notice.language or ticket.language
        desk = Address(name=hd.name_in(language), email=ticket.address or hd.primary_address)
        restricted = self._restricted(ticket, notice)
        # Namespaces, not dicts: Jinja tries an attribute before an item, and a
        # failed attribute lookup on a dict costs a third of the rendering.
        context = {
            "helpdesk": SimpleNamespace(name=desk.name, address=desk.email),
            "ticket": SimpleNamespace(
                number=ticket.id,
                subject=ticket.subject,
                priority=ticket.priority,
                type=ticket.type,
                category=ticket.category,
                status=ticket.status,
                tier=ticket.tier,
                impact=ticket.impact,
                urgency=ticket.urgency,
                security=ticket.security,
                created_at=ticket.created_at,
                first_response_due=ticket.first_response_due,
                first_response_at=ticket.first_response_at,
                resolution_due=ticket.resolution_due,
                resolved_at=ticket.resolved_at,
                regulator_due=ticket.regulator_due,
            ),
            "requester": SimpleNamespace(name=ticket.requester_name, email=ticket.requester_email),
            "reopen_days": hd.reopen_days,
            "personal": notice.agent_id is not None,  # has a personal reply address
            "requester_link": self._requester_link(ticket, notice, now),
            **notice.context,
        }
        if notice.visibility == Visibility.INTERNAL:
            context["restricted"] = restricted
        if restricted:
            # A security incident's subject and requester reach only the security
            # contacts: whatever the template, others see neither.
            context["ticket"] = SimpleNamespace(**{**vars(context["ticket"]),
                                                   "subject": RESTRICTED_SUBJECT})  # fmt: skip
            context["requester"] = SimpleNamespace(name="", email="")
        message_id = new_message_id(hd.domain)
        reply_to = notice.reply_to or desk
        if notice.agent_id is not None:  # the agent's personal reply address for this ticket
            address = reply_address(
                self.signer,
                desk.email,
                ticket.id,
                notice.agent_id,
                expiry(now, self.settings.agent_mail.reply_token_days),
            )
            reply_to = Address(name=f"{desk.name} [#{ticket.id}]", email=address)
        elif notice.reply_to is None and notice.visibility == Visibility.PUBLIC and notice.to:
            # The requester's (or watcher's) own reply address: a reply to it is
            # theirs without DNS or a mail server's word (maild.pipeline.verify).
            address = requester_address(self.signer, desk.email, ticket.id, notice.to[0].email,
                                        expiry(now, hd.reply_address_days))  # fmt: skip
            reply_to = Address(name=desk.name, email=address)
        # Never mail ourselves (a served address, a plus-variant, our own domain).
        cc = tuple(a for a in notice.cc if not is_own_address(a.email, self.settings))
        mail = Outgoing(
            sender=desk,
            to=notice.to,
            subject="",
            text="",
            html=None,
            message_id=message_id,
            date=now,
            auto_submitted=notice.auto_submitted,
            loop_domain=hd.domain,
            reply_to=reply_to,
            in_reply_to=notice.in_reply_to,
            references=notice.references,
            language=language,
            cc=cc,
            calendar=notice.calendar,
            attachments=tuple(
                OutgoingAttachment(a.filename, a.content_type, a.data) for a in notice.attachments
            ),
        )
        # The requester's link acts as the requester (their page's replies and
        # buttons): it is in their mail only, never in the ticket's copy that
        # agents, the API and watchers' pages read.
        job = MailJob(notice.template, language, context, mail, context.get("requester_link"))
        making: list[_Making] | None = session.info.get(_MAIL_BUFFER)
        # (not within a savepoint: its rollback would leave nothing to fill in)
        maker = None if making is None or session.in_nested_transaction() else self.make_elsewhere
        future = maker.submit(job) if maker is not None else None
        # Made elsewhere: filled in before the transaction commits (flush_events).
        made = _UNMADE if future is not None else make_mail(self.renderer, job)
        article = ArticleSpec(
            kind=ArticleKind.NOTIFICATION,
            visibility=notice.visibility,
            author=desk,
            subject=made.subject,
            text=made.text,
            html=None,
            message_id=message_id,
            in_reply_to=notice.in_reply_to,
            sent_at=None,
            direction=Direction.OUT,
            # What the requester was sent is on the ticket; an agent's copy of the
            # requester's own files is not stored twice.
            attachments=notice.attachments if notice.visibility == Visibility.PUBLIC else (),
        )
        article_id = self._add_article(session, ticket.id, article, None, now)
        recipients = list(dict.fromkeys(a.email for a in (*notice.to, *cc)))
        values = {
            "ticket_id": ticket.id,
            "article_id": article_id,
            "kind": notice.kind,
            "message_id": message_id,
            "mail_from": desk.email,
            "rcpt_to": recipients,
            "raw": made.raw,
            "status": str(OutboxStatus.PENDING),
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        outbox_id: int = _INSERT_OUTBOX.scalar_one(session, values)
        if future is not None:
            assert making is not None
            assert making is not None and maker is not None
            making.append(_Making(future, job, maker, self.renderer, article_id, outbox_id))
        if notice.visibility != Visibility.INTERNAL and notice.auto_submitted != "no":
            # (mail to agents, and a person's reply, are not automatic mail)
            self.guard.record(session, ticket.id, notice.to, notice.kind, now, source)
            # (watchers in Cc count per address, not per ticket)
            self.guard.record(session, None, cc, notice.kind, now, source)
        detail = {"to": recipients, "outbox": outbox_id}
        queued = EventSpec(f"{notice.kind}_queued", "maild", new=message_id, detail=detail)
        self._event(session, ticket.id, queued, now)
        log.info(
            "ticket #%d: %s queued to %s as %s",
            ticket.id,
            notice.kind,
            ", ".join(recipients),
            message_id,
        )
        return outbox_id

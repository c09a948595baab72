"""apply: write one `Decision` (DB only; the caller owns the transaction).

Ticket rows, the article and its attachments, events, and the rendered
outgoing mail as `outbox` rows whose Message-IDs are fixed here, before
anything is sent. Each outgoing mail is also an article on its ticket, so a
reply to it threads by ``In-Reply-To`` like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.compose import Outgoing, compose, new_message_id
from maild.config import Settings
from maild.db import insert_ignore
from maild.decide import ArticleSpec, Decision, EventSpec, Notice, TicketSpec
from maild.models import Article, Attachment, Blob, Contact, Event, Inbound, Outbox, Ticket
from maild.parse import Address
from maild.render import Renderer
from maild.states import (
    ArticleKind,
    Direction,
    InboundStatus,
    OutboxStatus,
    Outcome,
    Visibility,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    outcome: Outcome
    ticket_id: int | None
    outbox_ids: tuple[int, ...] = ()


class Applier:
    """Writes Decisions; holds the renderer and settings it needs."""

    def __init__(self, settings: Settings, renderer: Renderer) -> None:
        self.settings = settings
        self.renderer = renderer

    def apply(
        self, session: Session, inbound: Inbound, decision: Decision, now: datetime
    ) -> Applied:
        inbound.processed_at = now
        inbound.outcome = str(decision.outcome)
        if decision.outcome in (Outcome.IGNORED, Outcome.QUARANTINED):
            inbound.status = (
                InboundStatus.IGNORED
                if decision.outcome == Outcome.IGNORED
                else InboundStatus.QUARANTINED
            )
            inbound.error = decision.reason
            return Applied(decision.outcome, None)

        if decision.new_ticket is not None:
            ticket = self._create_ticket(session, decision.new_ticket, now)
        else:
            assert decision.ticket_id is not None
            ticket = session.get(Ticket, decision.ticket_id)
            if ticket is None:  # pragma: no cover - the worker looked it up in this txn
                raise LookupError(f"ticket #{decision.ticket_id} vanished")
        if decision.article is not None:
            self._add_article(session, ticket, decision.article, inbound, now)
        if decision.status is not None and decision.status != ticket.status:
            ticket.status = decision.status
            if decision.status not in ("resolved", "closed"):
                ticket.resolved_at = None
                ticket.closed_at = None
        ticket.updated_at = now
        for spec in decision.events:
            self._event(session, ticket.id, spec, now)
        outbox_ids = tuple(
            self.queue_notice(session, ticket, notice, now) for notice in decision.notices
        )
        inbound.status = InboundStatus.DONE
        inbound.ticket_id = ticket.id
        inbound.error = None
        return Applied(decision.outcome, ticket.id, outbox_ids)

    # --- pieces --------------------------------------------------------------

    def _contact(
        self, session: Session, who: Address, language: str | None, now: datetime
    ) -> Contact:
        insert_ignore(
            session,
            Contact,
            [{"email": who.email, "name": who.name, "language": language,
              "bounce_state": "ok", "created_at": now}],
        )  # fmt: skip
        contact = session.scalars(select(Contact).where(Contact.email == who.email)).one()
        if who.name and not contact.name:
            contact.name = who.name
        return contact

    def _create_ticket(self, session: Session, spec: TicketSpec, now: datetime) -> Ticket:
        requester = self._contact(session, spec.requester, spec.language, now)
        ticket = Ticket(
            type=spec.type,
            category=spec.category,
            impact=spec.impact,
            urgency=spec.urgency,
            priority=spec.priority,
            tier=spec.tier,
            status=spec.status,
            requester_id=requester.id,
            subject=spec.subject,
            security=spec.security,
            language=spec.language,
            address=spec.address,
            parent_id=spec.parent_id,
            loop_suspected=False,
            created_at=now,
            updated_at=now,
            first_response_due=spec.first_response_due,
            resolution_due=spec.resolution_due,
        )
        ticket.requester = requester
        session.add(ticket)
        session.flush()
        return ticket

    def _add_article(
        self, session: Session, ticket: Ticket, spec: ArticleSpec, inbound: Inbound | None,
        now: datetime,
    ) -> Article:  # fmt: skip
        article = Article(
            ticket_id=ticket.id,
            direction=spec.direction,
            visibility=spec.visibility,
            kind=spec.kind,
            author_email=spec.author.email,
            author_name=spec.author.name,
            message_id=spec.message_id,
            in_reply_to=spec.in_reply_to,
            subject=spec.subject,
            text=spec.text,
            html=spec.html,
            sent_at=spec.sent_at,
            created_at=now,
            inbound_id=inbound.id if inbound is not None else None,
        )
        session.add(article)
        if spec.attachments:
            session.flush()
            blobs: dict[str, dict[str, Any]] = {}
            for att in spec.attachments:
                blobs.setdefault(
                    att.sha256, {"sha256": att.sha256, "size": att.size, "data": att.data}
                )
            insert_ignore(session, Blob, list(blobs.values()))
            session.add_all(
                Attachment(
                    article_id=article.id,
                    filename=att.filename,
                    content_type=att.content_type[:255],
                    size=att.size,
                    sha256=att.sha256,
                    content_id=att.content_id,
                    inline=att.inline,
                )
                for att in spec.attachments
            )
        return article

    def _event(self, session: Session, ticket_id: int, spec: EventSpec, now: datetime) -> None:
        session.add(
            Event(
                ticket_id=ticket_id,
                at=now,
                actor=spec.actor,
                kind=spec.kind,
                old=None if spec.old is None else str(spec.old),
                new=None if spec.new is None else str(spec.new),
                detail=dict(spec.detail) if spec.detail else None,
            )
        )

    def queue_notice(self, session: Session, ticket: Ticket, notice: Notice, now: datetime) -> int:
        """Render `notice`, store it as an outgoing article and an outbox row."""
        hd = self.settings.helpdesk
        desk = Address(name=hd.name, email=ticket.address or hd.primary_address)
        requester = ticket.requester
        context = {
            "helpdesk": {"name": hd.name, "address": desk.email},
            "ticket": {
                "number": ticket.id,
                "subject": ticket.subject,
                "priority": ticket.priority,
                "type": ticket.type,
                "category": ticket.category,
                "status": ticket.status,
                "tier": ticket.tier,
            },
            "requester": {"name": requester.name, "email": requester.email},
            **notice.context,
        }
        language = notice.language or ticket.language
        rendered = self.renderer.render(notice.template, language, context)
        message_id = new_message_id(hd.domain)
        raw = compose(
            Outgoing(
                sender=desk,
                to=notice.to,
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                message_id=message_id,
                date=now,
                auto_submitted=notice.auto_submitted,
                loop_domain=hd.domain,
                reply_to=notice.reply_to or desk,
                in_reply_to=notice.in_reply_to,
                references=notice.references,
                language=language,
            )
        )
        article = self._add_article(
            session,
            ticket,
            ArticleSpec(
                kind=ArticleKind.NOTIFICATION,
                visibility=Visibility.PUBLIC,
                author=desk,
                subject=rendered.subject,
                text=rendered.text,
                html=None,
                message_id=message_id,
                in_reply_to=notice.in_reply_to,
                sent_at=None,
                direction=Direction.OUT,
            ),
            None,
            now,
        )
        session.flush()
        outbox = Outbox(
            ticket_id=ticket.id,
            article_id=article.id,
            kind=notice.kind,
            message_id=message_id,
            mail_from=desk.email,
            rcpt_to=[a.email for a in notice.to],
            raw=raw,
            status=OutboxStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        session.add(outbox)
        session.flush()
        self._event(
            session,
            ticket.id,
            EventSpec(f"{notice.kind}_queued", "maild", new=message_id,
                      detail={"to": [a.email for a in notice.to], "outbox": outbox.id}),
            now,
        )  # fmt: skip
        log.info("ticket #%d: %s queued to %s as %s", ticket.id, notice.kind,
                 ", ".join(a.email for a in notice.to), message_id)  # fmt: skip
        return outbox.id

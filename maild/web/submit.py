"""Mail written on the web: new tickets (API, a caller at the desk) and requesters' replies.

"Handled exactly as if mailed": the web writes an ordinary RFC 5322
message, stores it in ``inbound`` like every intake path (committed before
the answer) and the daemon's worker runs it through the same pipeline, so
screening, triage, the acknowledgement, SLA clocks and every rule apply
unchanged. `wait` then looks for the outcome for a few seconds, so a caller
usually gets the ticket number at once.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from maild.addresses import normalize_address
from maild.clock import Clock
from maild.config.settings import Settings
from maild.intake.commit import Delivery, Stored, store_one
from maild.mail.parse import ParsedAttachment
from maild.store.models import Contact, Inbound, Outbox, Ticket
from maild.store.states import InboundStatus, Source

WEB = Source.WEB  # inbound.source of mail written on the web
API = Source.API
# Message-IDs of mail written on the web: not of our own (helpdesk.domain), whose mail
# coming back is dropped as a loop.
ID_DOMAIN = "web.maild.invalid"


def message(
    *, sender: str, name: str, to: str, subject: str, text: str, now: datetime,
    attachments: tuple[ParsedAttachment, ...] = (), in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
) -> bytes:  # fmt: skip
    msg = EmailMessage(policy=SMTP)
    msg["From"] = formataddr((name, sender)) if name else sender
    msg["To"] = to
    msg["Subject"] = " ".join(subject.split())
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@{ID_DOMAIN}>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    msg.set_content(text if text.endswith("\n") else text + "\n")
    for att in attachments:
        maintype, _sep, subtype = att.content_type.partition("/")
        msg.add_attachment(att.data, maintype=maintype or "application",
                           subtype=subtype or "octet-stream", filename=att.filename)  # fmt: skip
    return msg.as_bytes()


def new_ticket(
    sessions: sessionmaker[Session], settings: Settings, clock: Clock, *, sender: str,
    name: str, subject: str, text: str, source: Source,
    attachments: tuple[ParsedAttachment, ...] = (), notify: bool = True,
) -> Stored:  # fmt: skip
    """Store a new request from `sender` as if they had mailed the help desk."""
    to = normalize_address(settings.helpdesk.primary_address)
    raw = message(sender=sender, name=name, to=to, subject=subject, text=text,
                  now=clock.now(), attachments=attachments)  # fmt: skip
    delivery = Delivery(raw=raw, source=source, recipient=to, envelope_from=sender,
                        envelope_to=(to,), notify=notify)  # fmt: skip
    return store_one(sessions, delivery, clock)


def requester_reply(
    sessions: sessionmaker[Session], settings: Settings, clock: Clock, ticket: Ticket,
    text: str, attachments: tuple[ParsedAttachment, ...] = (),
) -> Stored:  # fmt: skip
    """The requester's reply from their page: threaded on the last mail we sent them
    (a References to our own Message-ID, which is how a requester is verified)."""
    with sessions() as session:
        requester = session.get(Contact, ticket.requester_id)
        assert requester is not None
        sent = session.scalars(
            select(Outbox.message_id).where(Outbox.ticket_id == ticket.id,
                                             Outbox.kind != "agent_feedback")
            .order_by(Outbox.id.desc()).limit(20)
        ).all()  # fmt: skip
        to = ticket.address or settings.helpdesk.primary_address
        name = requester.name
        email = requester.email
    raw = message(sender=email, name=name, to=to, subject=f"Re: [#{ticket.id}] {ticket.subject}",
                  text=text, now=clock.now(), attachments=attachments,
                  in_reply_to=sent[0] if sent else None,
                  references=tuple(reversed(sent)))  # fmt: skip
    delivery = Delivery(raw=raw, source=WEB, recipient=normalize_address(to),
                        envelope_from=email, envelope_to=(normalize_address(to),))  # fmt: skip
    return store_one(sessions, delivery, clock)


def wait(sessions: sessionmaker[Session], inbound_id: int, seconds: float) -> Inbound | None:
    """The inbound row once the worker is done with it, or None after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        with sessions() as session:
            row = session.get(Inbound, inbound_id)
            if row is not None and row.status not in (InboundStatus.PENDING,
                                                      InboundStatus.PROCESSING):  # fmt: skip
                session.expunge(row)
                return row
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)

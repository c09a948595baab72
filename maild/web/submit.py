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
from maild.mail.replyaddr import expiry, requester_address
from maild.mail.tokens import Signer
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
    sessions: sessionmaker[Session], settings: Settings, clock: Clock, signer: Signer,
    ticket: Ticket, text: str, attachments: tuple[ParsedAttachment, ...] = (),
) -> Stored:  # fmt: skip
    """The requester's reply from their page, verified as theirs the way mail is
    (`maild.pipeline.verify`): delivered to their own reply address on the ticket
    (the signed page link proved who they are, as holding that address does) and
    threaded by References on the last mails we sent them."""
    now = clock.now()
    with sessions() as session:
        requester = session.get(Contact, ticket.requester_id)
        assert requester is not None
        name = requester.name
        email = requester.email
        sent = [
            message_id
            for message_id, rcpt_to in session.execute(
                select(Outbox.message_id, Outbox.rcpt_to)
                .where(Outbox.ticket_id == ticket.id)
                .order_by(Outbox.id.desc())
                .limit(100)
            )  # fmt: skip
            if email in (rcpt_to or ())
        ][:20]
    desk = normalize_address(ticket.address or settings.helpdesk.primary_address)
    to = requester_address(signer, desk, ticket.id, email,
                           expiry(now, settings.helpdesk.reply_address_days))  # fmt: skip
    raw = message(sender=email, name=name, to=to, subject=f"Re: [#{ticket.id}] {ticket.subject}",
                  text=text, now=now, attachments=attachments,
                  in_reply_to=sent[0] if sent else None,
                  references=tuple(reversed(sent)))  # fmt: skip
    delivery = Delivery(raw=raw, source=WEB, recipient=desk, envelope_from=email,
                        envelope_to=(to,))  # fmt: skip
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

"""SMTP and LMTP intake (aiosmtpd).

``250`` only after the commit that holds the message; ``451 4.3.0`` when
storing fails (never a 5xx, never exception text); ``550 5.1.1`` for an
address we don't serve; ``552 5.3.4`` over the size limit. LMTP answers once
per accepted recipient, as RFC 2033 requires.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from maild.addresses import ServedAddresses, normalize_address
from maild.config import Settings
from maild.intake import Delivery, GroupCommitter
from maild.states import Source

log = logging.getLogger(__name__)

TEMPFAIL = "451 4.3.0 Temporary local problem storing the message, please try again later"
TOO_BIG = "552 5.3.4 Message size exceeds the fixed maximum message size"
MAX_RECIPIENTS = 100


class IntakeHandler:
    """The aiosmtpd handler: accepts served recipients, commits, then answers."""

    def __init__(
        self, settings: Settings, committer: GroupCommitter, *, lmtp: bool = False
    ) -> None:
        self.served = ServedAddresses.of(settings.helpdesk.addresses)
        self.committer = committer
        self.lmtp = lmtp
        self.accepting = True

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.accepting:
            return "421 4.3.2 Service shutting down, try again later"
        if not self.served.serves(address):
            return f"550 5.1.1 <{address}>: no such help-desk address here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        assert isinstance(raw, bytes)
        bases = [b for b in (self.served.base_of(r) for r in envelope.rcpt_tos) if b]
        delivery = Delivery(
            raw=raw,
            source=Source.LMTP if self.lmtp else Source.SMTP,
            recipient=bases[0] if bases else None,
            envelope_from=envelope.mail_from or "",
            envelope_to=tuple(normalize_address(r) for r in envelope.rcpt_tos),
        )
        try:
            stored = await asyncio.wrap_future(self.committer.submit(delivery))
        except Exception as exc:
            log.error("SMTP from %s: not stored (%s): answering 451", envelope.mail_from, exc)
            return self._per_rcpt(envelope, TEMPFAIL)
        note = "duplicate of" if stored.duplicate else "stored as"
        return self._per_rcpt(envelope, f"250 2.0.0 OK: {note} inbound {stored.inbound_id}")

    def _per_rcpt(self, envelope: Envelope, status: str) -> str:
        if self.lmtp:
            return "\r\n".join(status for _ in envelope.rcpt_tos)
        return status

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %s: %s", type(error).__name__, error)
        return "451 4.3.0 Temporary local problem, please try again later"


def _rewrite(status: str) -> str:
    """aiosmtpd's own size answers lack an enhanced status code."""
    if status.startswith("552 Error: Too much mail data") or status.startswith(
        "552 Error: message size exceeds"
    ):
        return TOO_BIG
    return status


class MaildSMTP(SMTP):
    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _rewrite(status)
        await super().push(status)


class MaildLMTP(LMTP):
    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _rewrite(status)
        await super().push(status)


async def start_server(
    settings: Settings, handler: IntakeHandler, *, host: str | None = None, port: int | None = None
) -> asyncio.Server:
    """Listen on ``smtp.listen`` (or host/port given); returns the server."""
    cls = MaildLMTP if settings.smtp.lmtp else MaildSMTP
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        return cls(
            handler,
            data_size_limit=settings.limits.max_message_bytes,
            enable_SMTPUTF8=True,
            hostname=settings.smtp.hostname,
            ident="maild",
            timeout=settings.smtp.timeout_seconds,
            loop=loop,
        )

    server = await loop.create_server(
        factory,
        host=host if host is not None else settings.smtp.host,
        port=port if port is not None else settings.smtp.port,
        reuse_address=True,
    )
    return server

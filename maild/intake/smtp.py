"""SMTP and LMTP intake (aiosmtpd).

``250`` only after the commit that holds the message; ``451 4.3.0`` when
storing fails (never a 5xx, never exception text); ``550 5.1.1`` for an
address we don't serve; ``552 5.3.4`` over the size limit. LMTP answers once
per accepted recipient, as RFC 2033 requires.

Hardening: at most ``smtp.max_connections_per_ip`` connections per client
address (one more gets ``421 4.7.0``); a client idle for
``smtp.timeout_seconds`` gets ``421 4.4.2`` and is dropped; at most
``smtp.max_recipients`` recipients (``452 4.5.3``); only ``CRLF.CRLF`` ends
DATA (a bare-LF ``\n.\n`` is message content, so SMTP smuggling cannot slip a
second message past us); optional STARTTLS and AUTH (`maild.intake.smtpauth`).
Disk full gives ``452 4.3.1``.

Draining (SIGTERM): `IntakeHandler.drain()` answers ``421 4.3.2`` to every
new connection and to the next command of every session, and closes idle
sessions at once; a message already in DATA is still committed and gets its
``250``. `IntakeHandler.in_data` says how many are left.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import ssl
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from maild.addresses import ServedAddresses, normalize_address
from maild.config.settings import Settings
from maild.errors import ConfigError
from maild.intake.commit import Delivery, GroupCommitter, StorageFull
from maild.intake.smtpauth import PasswordFile
from maild.mail.parse import peek_message_id
from maild.store.states import Source

log = logging.getLogger(__name__)

TEMPFAIL = "451 4.3.0 Temporary local problem storing the message, please try again later"
TOO_BIG = "552 5.3.4 Message size exceeds the fixed maximum message size"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address, try again later"
IDLE_TIMEOUT = "421 4.4.2 Idle too long, closing connection"
STORAGE_FULL = "452 4.3.1 Insufficient system storage, please try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"


class IntakeHandler:
    """The aiosmtpd handler: accepts served recipients, commits, then answers."""

    def __init__(
        self, settings: Settings, committer: GroupCommitter, *, lmtp: bool = False
    ) -> None:
        self.served = ServedAddresses.of(settings.helpdesk.addresses)
        self.committer = committer
        self.lmtp = lmtp
        self.accepting = True
        self.max_recipients = settings.smtp.max_recipients
        self.max_per_ip = settings.smtp.max_connections_per_ip
        self.connections: Counter[str] = Counter()  # open connections per client IP
        self.open_sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self.in_data = 0
        # Called with (source, result, seconds from end of DATA to the reply).
        self.on_result: Callable[[str, str, float], None] | None = None

    def drain(self) -> None:
        """Stop accepting: 421 to new connections and commands; close idle sessions."""
        self.accepting = False
        for proto in list(self.open_sessions):
            if not getattr(proto, "in_data", False):
                proto.shut()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.accepting:
            return SHUTTING_DOWN
        if not self.served.serves(address):
            return f"550 5.1.1 <{address}>: no such help-desk address here"
        if len(envelope.rcpt_tos) >= self.max_recipients:
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
        started = time.monotonic()
        try:
            stored = await asyncio.wrap_future(self.committer.submit(delivery))
        except StorageFull as exc:
            log.error("SMTP from %s %s: not stored (%s): answering 452", envelope.mail_from,
                      peek_message_id(raw) or "(no Message-ID)", exc)  # fmt: skip
            self._observe(delivery, "storage_full", started)
            return self._per_rcpt(envelope, STORAGE_FULL)
        except Exception as exc:
            log.error("SMTP from %s %s: not stored (%s): answering 451", envelope.mail_from,
                      peek_message_id(raw) or "(no Message-ID)", exc)  # fmt: skip
            self._observe(delivery, "tempfail", started)
            return self._per_rcpt(envelope, TEMPFAIL)
        note = "duplicate of" if stored.duplicate else "stored as"
        self._observe(delivery, "duplicate" if stored.duplicate else "stored", started)
        return self._per_rcpt(envelope, f"250 2.0.0 OK: {note} inbound {stored.inbound_id}")

    def _observe(self, delivery: Delivery, result: str, started: float) -> None:
        if self.on_result is not None:
            self.on_result(str(delivery.source), result, time.monotonic() - started)

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


class _Hardened:
    """Per-IP connection cap and a 421 on idle timeout, for SMTP and LMTP alike."""

    event_handler: IntakeHandler
    session: Session | None
    transport: Any
    _peer_ip: str | None = None

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _rewrite(status)
        await super().push(status)  # type: ignore[misc]

    async def _handle_client(self) -> None:
        handler = self.event_handler
        peer = self.session.peer if self.session is not None else None
        if not (isinstance(peer, tuple) and peer):  # a UNIX socket: a local MTA, no cap
            await super()._handle_client()  # type: ignore[misc]
            return
        ip = str(peer[0])
        if handler.connections[ip] >= handler.max_per_ip:
            log.warning("SMTP: refusing %s: %d connections already open", ip,
                        handler.connections[ip])  # fmt: skip
            await self.push(TOO_MANY_CONNECTIONS)
            if self.transport is not None:
                self.transport.close()
            return
        handler.connections[ip] += 1
        self._peer_ip = ip
        try:
            await super()._handle_client()  # type: ignore[misc]
        finally:
            handler.connections[ip] -= 1
            if handler.connections[ip] <= 0:
                del handler.connections[ip]

    def _timeout_cb(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(IDLE_TIMEOUT.encode("ascii") + b"\r\n")
        super()._timeout_cb()  # type: ignore[misc]


class _Draining:
    """Answers 421 while the handler drains; counts messages in DATA."""

    event_handler: IntakeHandler
    transport: Any
    _smtp_methods: dict[str, Callable[[str], Awaitable[None]]]

    def _gate(self) -> None:
        self.in_data = False
        self._refused = False
        self._smtp_methods = {
            name: self._gated(name, method) for name, method in self._smtp_methods.items()
        }

    def _gated(
        self, name: str, method: Callable[[str], Awaitable[None]]
    ) -> Callable[[str], Awaitable[None]]:
        async def run(arg: str) -> None:
            handler = self.event_handler
            if not handler.accepting and name != "QUIT":
                self.shut()
                return
            if name != "DATA":
                await method(arg)
                return
            self.in_data = True
            handler.in_data += 1
            try:
                await method(arg)
            finally:
                self.in_data = False
                handler.in_data -= 1

        return run

    def shut(self) -> None:
        """Say 421 and hang up (RFC 5321 4.2.4: the server is going down)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(SHUTTING_DOWN.encode() + b"\r\n")
            self.transport.close()


class MaildSMTP(_Draining, _Hardened, SMTP):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._gate()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.event_handler.accepting:
            self._refused = True
            transport.write(SHUTTING_DOWN.encode() + b"\r\n")  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)
        self.event_handler.open_sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        if not self._refused:
            super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        return super().eof_received()


class MaildLMTP(MaildSMTP, LMTP):
    pass


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.smtp.tls_cert_file is None or settings.smtp.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.smtp.tls_cert_file, settings.smtp.tls_key_file)
    return context


def certificate_fingerprint(settings: Settings) -> str | None:
    """SHA-256 of the first certificate in ``smtp.tls_cert_file`` (for the log)."""
    if settings.smtp.tls_cert_file is None:
        return None
    pem = settings.smtp.tls_cert_file.read_text(encoding="ascii", errors="replace")
    try:
        der = ssl.PEM_cert_to_DER_cert(pem[: pem.index("-----END CERTIFICATE-----") + 25])
    except ValueError:
        return None
    return hashlib.sha256(der).hexdigest()


class Listener:
    """What each new session is made with: TLS context and AUTH users included.

    `update` swaps them (SIGHUP: a renewed certificate, a changed users file);
    sessions already open keep what they started with.
    """

    def __init__(self, settings: Settings, handler: IntakeHandler) -> None:
        self.handler = handler
        self.settings = settings
        self.context, self.users = self.prepare(settings)
        self.fingerprint = certificate_fingerprint(settings)  # of the certificate in use

    @staticmethod
    def prepare(settings: Settings) -> tuple[ssl.SSLContext | None, PasswordFile | None]:
        """Load the certificate, key and users file; raise if any is unusable."""
        try:
            context = tls_context(settings)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("smtp.tls_key_file", f"cannot load the certificate "
                              f"{settings.smtp.tls_cert_file} with its key: {exc}") from None  # fmt: skip
        users = (
            PasswordFile.load(settings.smtp.auth_users_file)
            if settings.smtp.auth_users_file is not None
            else None
        )
        return context, users

    def update(
        self, settings: Settings, context: ssl.SSLContext | None, users: PasswordFile | None
    ) -> None:
        self.settings, self.context, self.users = settings, context, users
        self.fingerprint = certificate_fingerprint(settings)

    def session(self) -> SMTP:
        settings, users = self.settings, self.users
        cls = MaildLMTP if settings.smtp.lmtp else MaildSMTP
        return cls(
            self.handler,
            data_size_limit=settings.limits.max_message_bytes,
            enable_SMTPUTF8=True,
            hostname=settings.smtp.hostname,
            ident="maild",
            timeout=settings.smtp.timeout_seconds,
            tls_context=self.context,
            require_starttls=settings.smtp.require_starttls,
            authenticator=users.authenticator if users is not None else None,
            auth_required=settings.smtp.auth_required,
            auth_require_tls=True,
            loop=asyncio.get_running_loop(),
        )


async def start_server(
    settings: Settings,
    handler: IntakeHandler,
    *,
    host: str | None = None,
    port: int | None = None,
    sock: socket.socket | None = None,
    listener: Listener | None = None,
) -> asyncio.Server:
    """Listen on ``smtp.listen`` (or host/port, or an inherited socket); returns the server.

    ``smtp.listen = "unix:/run/maild/lmtp.sock"`` listens on a UNIX socket
    (mode 0666: any local user may connect, as to a loopback port).
    """
    loop = asyncio.get_running_loop()
    listener = listener or Listener(settings, handler)
    factory = listener.session
    if sock is not None:
        return await loop.create_server(factory, sock=sock, backlog=1024)
    path = settings.smtp.unix_path if host is None and port is None else None
    if path is not None:
        if path.is_socket():
            path.unlink()  # left by a run that was killed
        server = await loop.create_unix_server(factory, path=str(path), backlog=1024)
        path.chmod(0o666)
        return server
    server = await loop.create_server(
        factory,
        host=host if host is not None else settings.smtp.host,
        port=port if port is not None else settings.smtp.port,
        reuse_address=True,
        backlog=1024,
    )
    return server

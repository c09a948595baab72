"""SMTP and LMTP intake (aiosmtpd).

``250`` only after the commit that holds the message; ``451 4.3.0`` when
storing fails (never a 5xx, never exception text); ``550 5.1.1`` for an
address we don't serve; ``552 5.3.4`` over the size limit. LMTP answers once
per accepted recipient, as RFC 2033 requires.

Hardening: at most ``smtp.max_connections`` connections in all and
``smtp.max_connections_per_ip`` per client source (an IPv4 address, an IPv6
/64: `maild.addresses.network_key`); one more gets ``421 4.7.0``. A client
idle for ``smtp.timeout_seconds`` gets ``421 4.4.2`` and is dropped; at most
``smtp.max_recipients`` recipients (``452 4.5.3``); each command at most
``smtp.command_call_limit`` times per connection (the message commands
``smtp.max_messages_per_connection`` times), then ``421 4.7.0``. DATA is
read in chunks (`maild.intake.smtpdata`): only ``CRLF.CRLF`` ends it (a
bare-LF ``\n.\n`` is message content, so SMTP smuggling cannot slip a second
message past us), a line of 1,000 characters or more gets ``500 5.5.2`` after the
whole message, and the idle timeout counts from the last bytes received, so
a slow link is not cut off mid-message; optional STARTTLS and AUTH
(`maild.intake.smtpauth`): the password hash runs in a thread pool, never on the
event loop; a session gets three tries; a source past ``smtp.auth_max_failures``
failures is refused AUTH (``454 4.7.0``) until they age out. Disk full gives
``452 4.3.1``.

Draining (SIGTERM): `IntakeHandler.drain()` answers ``421 4.3.2`` to every
new connection and to the next command of every session, and closes idle
sessions at once; a message already in DATA is still committed and gets its
``250``. `IntakeHandler.in_data` says how many are left.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import logging
import socket
import ssl
import time
import weakref
from base64 import b64decode
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from maild.addresses import ServedAddresses, network_key, normalize_address
from maild.clock import Clock, SystemClock
from maild.config.settings import Settings
from maild.errors import ConfigError
from maild.intake.commit import Delivery, GroupCommitter, StorageFull, traced
from maild.intake.smtpauth import FailureLimiter, PasswordFile
from maild.intake.smtpdata import DataScanner, DataState
from maild.mail.parse import peek_message_id
from maild.store.states import Source

log = logging.getLogger(__name__)

TEMPFAIL = "451 4.3.0 Temporary local problem storing the message, please try again later"
TOO_BIG = "552 5.3.4 Message size exceeds the fixed maximum message size"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address, try again later"
SERVER_BUSY = "421 4.7.0 Too many connections, try again later"
AUTH_BLOCKED = "454 4.7.0 Too many failed logins from your address, try again later"
AUTH_GIVE_UP = "421 4.7.0 Too many failed logins, closing connection"
AUTH_TRIES_PER_SESSION = 3
# Password hashes running at once: PBKDF2 releases the interpreter lock, so
# two keep the event loop answering while a burst of AUTH waits its turn.
AUTH_THREADS = 2
IDLE_TIMEOUT = "421 4.4.2 Idle too long, closing connection"
STORAGE_FULL = "452 4.3.1 Insufficient system storage, please try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
LINE_TOO_LONG = "500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)"
# Read DATA in whatever the reader holds, all of it: bytes past the end of
# the message are given back, and must come before what arrives later.
READ_ALL = 1 << 62


class IntakeHandler:
    """The aiosmtpd handler: accepts served recipients, commits, then answers."""

    def __init__(
        self, settings: Settings, committer: GroupCommitter, *, lmtp: bool = False,
        clock: Clock | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.clock = clock or SystemClock()
        self.served = ServedAddresses.of(settings.helpdesk.addresses)
        self.committer = committer
        self.lmtp = lmtp
        self.accepting = True
        self.max_recipients = settings.smtp.max_recipients
        self.max_per_ip = settings.smtp.max_connections_per_ip
        self.max_connections = settings.smtp.max_connections
        self.connections: Counter[str] = Counter()  # open connections per source (network_key)
        self.open_connections = 0
        self.auth_failures = FailureLimiter(
            settings.smtp.auth_max_failures,
            settings.smtp.auth_failure_window_seconds,
            settings.smtp.auth_failure_delay_seconds,
        )
        self.auth_pool = ThreadPoolExecutor(AUTH_THREADS, thread_name_prefix="smtp-auth")
        self.open_sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self.in_data = 0
        # A copy of `in_data` another process reads (the worker's, which gives
        # way to intake): anything with a `value`.
        self.shared_in_data: Any = None
        # Called with (source, result, seconds from end of DATA to the reply).
        self.on_result: Callable[[str, str, float], None] | None = None

    def count_in_data(self, step: int) -> None:
        self.in_data += step
        if self.shared_in_data is not None:
            self.shared_in_data.value = self.in_data

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
        peer = session.peer if isinstance(session.peer, tuple) and session.peer else ("",)
        protocol = "LMTP" if self.lmtp else ("ESMTPS" if session.ssl is not None else "ESMTP") + (
            "A" if session.authenticated else "")  # fmt: skip
        raw, trace = traced(raw, self.settings, self.clock.now(), protocol=protocol,
                            helo=session.host_name or "", ip=str(peer[0]))  # fmt: skip
        delivery = Delivery(
            raw=raw,
            source=Source.LMTP if self.lmtp else Source.SMTP,
            recipient=bases[0] if bases else None,
            envelope_from=envelope.mail_from or "",
            envelope_to=tuple(normalize_address(r) for r in envelope.rcpt_tos),
            trace=trace,
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
    """aiosmtpd's own size answer (to ``MAIL FROM ... SIZE=``) lacks an enhanced
    status code; DATA over the limit is answered by `_ChunkedData`."""
    if status.startswith("552 Error: message size exceeds"):
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
        key = network_key(ip)
        refusal = None
        if handler.open_connections >= handler.max_connections:
            log.warning("SMTP: refusing %s: %d connections open in all (smtp.max_connections)",
                        ip, handler.open_connections)  # fmt: skip
            refusal = SERVER_BUSY
        elif handler.connections[key] >= handler.max_per_ip:
            log.warning("SMTP: refusing %s: %d connections already open from %s", ip,
                        handler.connections[key], key)  # fmt: skip
            refusal = TOO_MANY_CONNECTIONS
        if refusal is not None:
            await self.push(refusal)
            if self.transport is not None:
                self.transport.close()
            return
        handler.connections[key] += 1
        handler.open_connections += 1
        self._peer_ip = ip
        self._peer_key = key
        try:
            await super()._handle_client()  # type: ignore[misc]
        finally:
            handler.open_connections -= 1
            handler.connections[key] -= 1
            if handler.connections[key] <= 0:
                del handler.connections[key]

    def _timeout_cb(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(IDLE_TIMEOUT.encode("ascii") + b"\r\n")
        super()._timeout_cb()  # type: ignore[misc]


class _Auth:
    """AUTH PLAIN and LOGIN with the hash off the event loop and failures limited."""

    event_handler: IntakeHandler
    transport: Any
    _peer_key: str = "?"
    _auth_failures_here = 0
    if TYPE_CHECKING:  # provided by aiosmtpd's SMTP

        async def push(self, status: Any) -> None: ...

        async def challenge_auth(self, challenge: str | bytes) -> Any: ...

        def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult: ...

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False)
        else:
            try:
                blob = b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._verify("PLAIN", LoginPassword(parts[1], parts[2]))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth("Username:")
            if login is MISSING:
                return AuthResult(success=False)
        else:
            try:
                login = b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth("Password:")
        if password is MISSING:
            return AuthResult(success=False)
        return await self._verify("LOGIN", LoginPassword(login, password))

    async def _verify(self, mechanism: str, data: LoginPassword) -> AuthResult:
        handler = self.event_handler
        key = self._peer_key
        if handler.auth_failures.blocked(key):
            log.warning("SMTP AUTH from %s refused: too many failed logins", key)
            await self.push(AUTH_BLOCKED)
            return AuthResult(success=False, handled=True)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(handler.auth_pool, self._authenticate, mechanism, data)
        if result.success:
            return result
        self._auth_failures_here += 1
        delay = handler.auth_failures.failed(key)
        log.warning("SMTP AUTH failed from %s (%d in this session)", key,
                    self._auth_failures_here)  # fmt: skip
        await asyncio.sleep(delay)  # each failure from this source answered later
        if self._auth_failures_here >= AUTH_TRIES_PER_SESSION:
            await self.push(AUTH_GIVE_UP)
            if self.transport is not None:
                self.transport.close()
            return AuthResult(success=False, handled=True)
        return result


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
            handler.count_in_data(+1)
            try:
                await method(arg)
            finally:
                self.in_data = False
                handler.count_in_data(-1)

        return run

    def shut(self) -> None:
        """Say 421 and hang up (RFC 5321 4.2.4: the server is going down)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(SHUTTING_DOWN.encode() + b"\r\n")
            self.transport.close()


class _ChunkedData:
    """DATA read in chunks as they arrive (`maild.intake.smtpdata`), not line by line.

    Answers as aiosmtpd does (``503``/``501`` before ``354``; ``552`` over the
    size limit and ``500`` for a line of 1,000 characters or more, both after the
    whole message is read), and hands the handler the same envelope. The idle
    timeout counts from the last bytes received, so a large message on a slow
    link is not cut off while it is still arriving.
    """

    envelope: Envelope | None
    data_size_limit: int
    line_length_limit: int
    _reader: asyncio.StreamReader
    _writer: asyncio.StreamWriter
    if TYPE_CHECKING:  # provided by aiosmtpd's SMTP

        async def push(self, status: Any) -> None: ...

        async def check_helo_needed(self, helo: str = "HELO") -> bool: ...

        async def check_auth_needed(self, caller_method: str) -> bool: ...

        async def _call_handler_hook(self, command: str, *args: Any) -> Any: ...

        def _set_post_data_state(self) -> None: ...

        def _reset_timeout(self, duration: float | None = None) -> None: ...

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        scanner = DataScanner(self.data_size_limit, self.line_length_limit)
        reader = self._reader
        try:
            while True:
                # Everything the reader holds: what is left over goes back whole.
                chunk = await reader.read(READ_ALL)
                if not chunk:  # the client closed the connection inside DATA
                    return
                self._reset_timeout()
                rest = scanner.feed(chunk)
                if rest is not None:
                    break
        except asyncio.CancelledError:
            log.info("SMTP: connection lost during DATA")
            self._writer.close()
            raise
        if rest and not reader.at_eof():
            reader.feed_data(rest)  # pipelined commands, read next as commands
        if scanner.state is not DataState.NOMINAL:
            await self.push(TOO_BIG if scanner.state is DataState.TOO_MUCH else LINE_TOO_LONG)
            self._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = scanner.content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


class MaildSMTP(_Draining, _ChunkedData, _Auth, _Hardened, SMTP):
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

    @property
    def call_limit(self) -> dict[str, int]:
        """aiosmtpd's per-session command limits (a client that loops on a command is cut)."""
        smtp = self.settings.smtp
        messages = smtp.max_messages_per_connection
        return {"*": smtp.command_call_limit, "MAIL": messages, "DATA": messages,
                "RSET": messages, "RCPT": messages * smtp.max_recipients, "QUIT": 1}  # fmt: skip

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
            command_call_limit=self.call_limit,
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

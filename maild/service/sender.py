"""The sender: deliver due outbox rows, retry with backoff, never twice on purpose.

A batch is claimed by pushing its rows' ``next_attempt_at`` one lease ahead
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL), then sent outside any
transaction, then the outcomes are written in one transaction. A crash after
sending and before that write sends the same bytes with the same Message-ID
again after the lease: a duplicate a mail client folds into one.

Transports: `MaildirTransport` (default; a deterministic file name per outbox
row, so a resend replaces the file instead of adding one) and `SmtpTransport`
(a relay, STARTTLS and AUTH optional; 4xx and connection errors retry, 5xx is
dead).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import smtplib
import ssl
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from maild.clock import Clock
from maild.config.settings import Settings
from maild.errors import PermanentError, TransientError
from maild.mail.tokens import Signer, load_or_create_secret
from maild.mail.verp import verp_address
from maild.store.db import claim_order
from maild.store.models import Article, Outbox
from maild.store.states import OutboxStatus

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(hours=6)


def _sent_before(conn: Any, outbox_id: int) -> list[str]:
    value = conn.execute(select(Outbox.rcpt_sent).where(Outbox.id == outbox_id)).scalar()
    return list(value or ())


@dataclass(frozen=True)
class OutgoingItem:
    id: int
    message_id: str
    mail_from: str  # the first recipient's VERP return path
    rcpt_to: tuple[str, ...]  # the recipients still to deliver to
    raw: bytes
    attempts: int
    # Each recipient's own VERP return path, in the order of rcpt_to: a bounce
    # then speaks for that recipient alone (maild.mail.verp).
    rcpt_from: tuple[str, ...] = ()

    def envelopes(self) -> list[tuple[str, str]]:
        """(return path, recipient) pairs, one transaction each."""
        senders = self.rcpt_from or (self.mail_from,) * len(self.rcpt_to)
        return list(zip(senders, self.rcpt_to, strict=True))


class PartialDelivery(TransientError):
    """Some recipients have the mail; the others are retried."""

    def __init__(self, message: str, delivered: list[str]) -> None:
        super().__init__(message)
        self.delivered = delivered


class Transport(Protocol):
    def send(self, item: OutgoingItem) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _load_syncfs() -> Any:
    """libc's syncfs(2) (Linux), or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS = _load_syncfs()
SYNCFS_FROM = 8  # files in a batch from which one syncfs beats a fsync per file


class MaildirTransport:
    """Deliver into a local Maildir (``new/``), durably.

    Each mail is written into ``tmp/``; `flush` makes the batch durable (a
    fsync per file, or one syncfs(2) of the filesystem for a batch of
    `SYNCFS_FROM` or more: a journal commit per batch instead of per mail,
    the import of an archive writes thousands), then renames the files into
    ``new/`` and fsyncs the folder. So a file in ``new/`` is always complete
    (the Maildir rule); a crash before the flush leaves the rows pending and
    the resend writes the same file again (same name, same bytes).

    Its folders are created 0700 and each mail 0600: a notification to an
    agent carries the agent's personal reply address.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        for folder in (path, path / "tmp", path / "new", path / "cur"):
            if not folder.is_dir():
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._written: list[str] = []

    @staticmethod
    def file_name(item: OutgoingItem) -> str:
        digest = hashlib.sha256(item.message_id.encode()).hexdigest()[:16]
        return f"{item.id:010d}.{digest}.maild"

    def send(self, item: OutgoingItem) -> None:
        name = self.file_name(item)
        try:
            fd = os.open(self.path / "tmp" / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(item.raw)
        except OSError as exc:
            raise TransientError(f"maildir {self.path}: {exc.strerror or exc}") from None
        self._written.append(name)

    def flush(self) -> None:
        names, self._written = self._written, []
        if not names:
            return
        try:
            self._sync(names)
            for name in names:
                os.replace(self.path / "tmp" / name, self.path / "new" / name)
            fd = os.open(self.path / "new", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise TransientError(f"maildir {self.path}: {exc.strerror or exc}") from None

    def _sync(self, names: list[str]) -> None:
        if _SYNCFS is not None and len(names) >= SYNCFS_FROM:
            fd = os.open(self.path / "tmp", os.O_RDONLY)
            try:
                if _SYNCFS(fd) == 0:
                    return
            finally:
                os.close(fd)
        for name in names:
            fd = os.open(self.path / "tmp" / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def close(self) -> None:
        self.flush()


class SmtpTransport:
    """Relay through an SMTP server; one connection reused for a batch."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        starttls: bool = False,
        username: str = "",
        password: str = "",
        timeout: float = 30.0,
        local_hostname: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.starttls, self.username, self.password = starttls, username, password
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.tls_context = tls_context
        self._conn: smtplib.SMTP | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpTransport:
        o = settings.outgoing
        password = ""
        if o.smtp_password_file is not None:
            password = o.smtp_password_file.read_text().strip()
        return cls(
            o.smtp_host,
            o.smtp_port,
            starttls=o.smtp_starttls,
            username=o.smtp_username,
            password=password,
            timeout=o.smtp_timeout_seconds,
            local_hostname=settings.helpdesk.domain,
        )

    def _connect(self) -> smtplib.SMTP:
        if self._conn is not None:
            return self._conn
        conn = smtplib.SMTP(
            self.host, self.port, timeout=self.timeout, local_hostname=self.local_hostname
        )
        try:
            conn.ehlo()
            if self.starttls:
                conn.starttls(context=self.tls_context or ssl.create_default_context())
                conn.ehlo()
            if self.username:
                conn.login(self.username, self.password)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def send(self, item: OutgoingItem) -> None:
        """One transaction per recipient, each with its own VERP return path."""
        delivered: list[str] = []
        refused: dict[str, tuple[int, bytes]] = {}
        for verp, rcpt in item.envelopes():
            try:
                self._send_one(verp, rcpt, item.raw)
                delivered.append(rcpt)
            except _Refused as exc:
                refused[rcpt] = (exc.code, exc.text)
            except (TransientError, PermanentError) as exc:
                if not delivered:
                    raise
                raise PartialDelivery(f"{exc} (after {len(delivered)} recipient(s))",
                                      delivered) from None  # fmt: skip
        if not refused:
            return
        detail = "; ".join(f"{r}: {c} {m!r}" for r, (c, m) in refused.items())
        if any(c < 500 for c, _m in refused.values()):
            if delivered:
                raise PartialDelivery(f"recipients refused: {detail}", delivered)
            raise TransientError(f"recipients refused: {detail}")
        if not delivered:
            raise PermanentError(f"all recipients refused: {detail}")
        log.warning("outbox %d: some recipients refused: %s", item.id, detail)

    def _send_one(self, mail_from: str, rcpt: str, raw: bytes) -> None:
        try:
            conn = self._connect()
            conn.sendmail(mail_from, [rcpt], raw)
        except smtplib.SMTPRecipientsRefused as exc:
            # The connection stays usable: smtplib sent RSET after the refusal.
            code, text = next(iter(exc.recipients.values()))
            raise _Refused(code, text) from None
        except smtplib.SMTPAuthenticationError as exc:
            self._drop()
            raise TransientError(f"relay refused our login: {exc.smtp_code}") from None
        except smtplib.SMTPResponseException as exc:
            self._drop()
            text = f"{exc.smtp_code} {exc.smtp_error!r}"
            if 500 <= exc.smtp_code < 600:
                raise PermanentError(f"relay answered {text}") from None
            raise TransientError(f"relay answered {text}") from None
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise TransientError(
                f"relay {self.host}:{self.port}: {type(exc).__name__}: {exc}"
            ) from None

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                self._conn = None


class _Refused(Exception):
    """The relay refused one recipient (SMTP code and text)."""

    def __init__(self, code: int, text: bytes) -> None:
        super().__init__(code)
        self.code = code
        self.text = text


def transport_from_settings(settings: Settings) -> Transport:
    if settings.outgoing.transport == "smtp":
        return SmtpTransport.from_settings(settings)
    return MaildirTransport(settings.outgoing.maildir)


@dataclass
class SendStats:
    sent: int = 0
    retried: int = 0
    dead: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.retried + self.dead


class Sender:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        clock: Clock,
        transport: Transport,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.clock = clock
        self.transport = transport
        self.batch_size = settings.outgoing.batch_size  # rows sent per claim and commit
        self._signer: Signer | None = None
        self.instance_id: int | None = None  # set by the daemon (maild.cluster)

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            self._signer = Signer(load_or_create_secret(self.settings.helpdesk.secret_file))
        return self._signer

    def recover(self) -> int:
        """Single instance at start: rows claimed by a dead run are due now."""
        now = self.clock.now()
        with self.sessions.begin() as session:
            count = session.execute(
                update(Outbox)
                .where(Outbox.status == OutboxStatus.PENDING, Outbox.claimed_at.is_not(None))
                .values(claimed_at=None, next_attempt_at=now)
            ).rowcount
        if count:
            log.warning("outbox: %d message(s) claimed by a previous run are due again", count)
        return count

    def backoff(self, attempts: int) -> timedelta:
        base = self.settings.outgoing.retry_base_seconds
        return min(timedelta(seconds=base * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)

    def _claim(self) -> list[OutgoingItem]:
        now = self.clock.now()
        lease = timedelta(seconds=self.settings.worker.lease_seconds)
        with self.sessions.begin() as session:
            conn = session.connection()
            rows = conn.execute(
                claim_order(
                    select(
                        Outbox.id,
                        Outbox.message_id,
                        Outbox.mail_from,
                        Outbox.rcpt_to,
                        Outbox.raw,
                        Outbox.attempts,
                        Outbox.rcpt_sent,
                    )
                    .where(Outbox.status == OutboxStatus.PENDING, Outbox.next_attempt_at <= now)
                    .order_by(Outbox.id)
                    .limit(self.batch_size)
                )
            ).all()
            if rows:
                conn.execute(
                    update(Outbox)
                    .where(Outbox.id.in_([r.id for r in rows]))
                    .values(
                        claimed_at=now, claimed_by=self.instance_id, next_attempt_at=now + lease
                    )  # fmt: skip
                )
            # VERP: the envelope sender names this very outbox row and recipient,
            # so its bounce maps back to them (`maild.mail.verp`); `Outbox.mail_from`
            # is the help-desk address it goes out from. Recipients that already
            # have it (an earlier attempt that failed half-way) are not sent again.
            return [self._item(r) for r in rows]

    def _item(self, r: Any) -> OutgoingItem:
        done = set(r.rcpt_sent or ())
        todo = [(i, rcpt) for i, rcpt in enumerate(r.rcpt_to) if rcpt not in done]
        verps = tuple(verp_address(self.signer, r.mail_from, r.id, i) for i, _rcpt in todo)
        return OutgoingItem(r.id, r.message_id, verps[0] if verps else r.mail_from,
                            tuple(rcpt for _i, rcpt in todo), r.raw, r.attempts,
                            rcpt_from=verps)  # fmt: skip

    def run_batch(self) -> SendStats:
        items = self._claim()
        stats = SendStats()
        if not items:
            return stats
        outcomes: list[tuple[OutgoingItem, Exception | None]] = []
        try:
            for item in items:
                try:
                    self.transport.send(item)
                    outcomes.append((item, None))
                except (TransientError, PermanentError) as exc:
                    outcomes.append((item, exc))
            try:
                self.transport.flush()
            except TransientError as exc:  # nothing of this batch is delivered for sure
                outcomes = [(item, error or exc) for item, error in outcomes]
        finally:
            self._record(outcomes, stats)
        return stats

    def _record(
        self, outcomes: list[tuple[OutgoingItem, Exception | None]], stats: SendStats
    ) -> None:
        now = self.clock.now()
        max_attempts = self.settings.outgoing.max_attempts
        sent = [item for item, error in outcomes if error is None]
        with self.sessions.begin() as session:
            conn = session.connection()
            if sent:
                ids = [item.id for item in sent]
                conn.execute(
                    update(Outbox)
                    .where(Outbox.id.in_(ids))
                    .values(
                        status=OutboxStatus.SENT,
                        sent_at=now,
                        claimed_at=None,
                        claimed_by=None,
                        last_error=None,
                    )  # fmt: skip
                )
                conn.execute(
                    update(Article)
                    .where(Article.id.in_(select(Outbox.article_id).where(Outbox.id.in_(ids))))
                    .values(sent_at=now)
                )
                stats.sent += len(sent)
                for item in sent:
                    log.info("outbox %d %s sent to %s", item.id, item.message_id,
                             ", ".join(item.rcpt_to))  # fmt: skip
            for item, error in outcomes:
                if error is None:
                    continue
                attempts = item.attempts + 1
                values: dict[str, object] = {
                    "attempts": attempts,
                    "last_error": str(error)[:2000],
                    "claimed_at": None,
                    "claimed_by": None,
                }
                if isinstance(error, PartialDelivery):
                    done = [r for r in item.rcpt_to if r in set(error.delivered)]
                    values["rcpt_sent"] = sorted({*_sent_before(conn, item.id), *done})
                if isinstance(error, PermanentError) or attempts >= max_attempts:
                    values["status"] = OutboxStatus.DEAD
                    stats.dead += 1
                    log.error("outbox %d %s dead after %d attempt(s): %s", item.id,
                              item.message_id, attempts, error)  # fmt: skip
                else:
                    values["next_attempt_at"] = now + self.backoff(attempts)
                    stats.retried += 1
                    log.warning("outbox %d %s: %s; retry at %s", item.id, item.message_id, error,
                                values["next_attempt_at"])  # fmt: skip
                # Another instance may have finished it (we were thought dead): leave it.
                conn.execute(
                    update(Outbox)
                    .where(Outbox.id == item.id, Outbox.status == OutboxStatus.PENDING)
                    .values(**values)
                )

    def drain(self) -> SendStats:
        """Send everything due now (burst mode, for the CLI and tests)."""
        total = SendStats()
        while True:
            stats = self.run_batch()
            if stats.total == 0:
                return total
            total.sent += stats.sent
            total.retried += stats.retried
            total.dead += stats.dead

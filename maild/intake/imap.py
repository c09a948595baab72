"""IMAP intake: read help-desk mailboxes, losing and duplicating nothing.

One thread per ``[[imap.mailboxes]]`` entry (imapclient is synchronous, and a
connection belongs to one thread). Each pass over the folder:

1. ``SELECT`` the folder; compare its UIDVALIDITY with the mailbox's
   checkpoint (``imap_checkpoint``). A changed UIDVALIDITY resets the
   checkpoint to UID 0: everything in the folder is read again and intake's
   dedupe (Message-ID per address, else sha256) stores only what is new.
2. List the UIDs above the checkpoint and fetch them with ``BODY.PEEK[]`` in
   batches of ``imap.batch_size`` messages and at most ``imap.batch_bytes``.
3. Commit each batch's raw messages *together with* the new checkpoint, in
   one transaction. The checkpoint only ever passes UIDs actually stored: a
   UID the server answered without ``BODY[]`` holds it back (the messages
   after it that were stored are moved on; that one is logged and fetched
   again on the next pass, and after `MAX_FETCH_ATTEMPTS` stored as a
   quarantined header with the reason, so the checkpoint can move on).
4. Only then ``MOVE`` them to ``processed_folder`` (``COPY`` + ``\\Deleted`` +
   ``UID EXPUNGE`` where MOVE is missing) or flag them (``after = "flag"``).

A crash after 3 and before 4 leaves messages at or below the checkpoint in
the folder; the next session fetches them again and stores them through the
same dedupe (so it checks the database: what is stored is found stored, what
is not is stored now) before it moves or flags any. A crash before 3 leaves
nothing committed: they are fetched again.

Between passes the thread waits in IDLE where the server offers it (re-issued
every ``imap.idle_seconds``, under the 29-minute limit, and looking again
after ``imap.poll_seconds`` at the latest: servers miss announcing a message
now and then) or sleeps ``imap.poll_seconds``. Any failure (network, server restart, refused login,
database) closes the connection and reconnects after an exponential backoff
with jitter; it is logged once per attempt, naming the mailbox. The thread
never dies of it, and the other mailboxes go on.

imapclient enters at one seam: the poller takes a client factory with the
signature of `imapclient.IMAPClient` (its own testable pattern).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import shlex
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from sqlalchemy import Engine, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from maild.addresses import normalize_address
from maild.clock import Clock
from maild.config.settings import ImapMailboxSettings, Settings
from maild.errors import MaildError
from maild.intake.commit import Delivery, Stored, store, traced
from maild.mail.parse import (
    header_block,
    looks_like_message,
    peek_header,
    peek_message_id,
    peek_return_path,
)  # fmt: skip
from maild.store.db import insert_ignore
from maild.store.models import ImapCheckpoint
from maild.store.states import InboundStatus, Source

log = logging.getLogger(__name__)

PROCESSED_KEYWORD = "$MaildProcessed"
# Passes a UID may come back without its body before it is stored as a
# quarantined header (with the reason) so the checkpoint can pass it.
MAX_FETCH_ATTEMPTS = 5
SEEN = b"\\Seen"
DELETED = b"\\Deleted"
IDLE_SLICE_SECONDS = 0.5  # how often an idling thread looks at its stop flag

ClientFactory = Callable[..., IMAPClient]
# Called at named steps of a batch ("after_fetch", "after_commit", "after_copy",
# "after_move"): the seam the crash tests use to kill the process there.
StepHook = Callable[[str], None]


class LoginFailed(MaildError):
    """The server refused our credentials, or we could not obtain them."""


class ConnectionLost(MaildError):
    """The server ended the session (BYE) or the connection closed."""


def backoff_delay(failures: int, low: float, high: float, rand: random.Random) -> float:
    """Seconds to wait after `failures` consecutive failures (1, 2, ...).

    Doubles from `low` up to `high`, with "equal jitter": a random point in the
    upper half of the step, so many mailboxes failing together spread out.
    """
    step = min(high, low * 2 ** max(0, failures - 1))
    return step * (0.5 + rand.random() / 2)


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a mailbox name."""
    digest = hashlib.sha256(f"maild-imap:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# --- credentials and connecting --------------------------------------------


@dataclass(frozen=True)
class Credentials:
    mechanism: str  # "password" or "xoauth2"
    secret: str


def credentials(mailbox: ImapMailboxSettings, timeout: float = 60.0) -> Credentials:
    """Read the password file or run the token command (fresh on every login)."""
    if mailbox.password_file is not None:
        try:
            secret = mailbox.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise LoginFailed(f"cannot read password_file {mailbox.password_file}: "
                              f"{exc.strerror}") from None  # fmt: skip
        return Credentials("password", secret)
    argv = shlex.split(mailbox.oauth2_token_command)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LoginFailed(f"oauth2_token_command failed: {exc}") from None
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or [""])[0][:200]
        raise LoginFailed(f"oauth2_token_command exited with status {proc.returncode}: {first}")
    token = proc.stdout.strip()
    if not token or any(c.isspace() for c in token):
        raise LoginFailed("oauth2_token_command printed no single-line access token")
    return Credentials("xoauth2", token)


def ssl_context(mailbox: ImapMailboxSettings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(mailbox.ca_file) if mailbox.ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def connect(
    mailbox: ImapMailboxSettings, timeout: float, factory: ClientFactory = IMAPClient
) -> IMAPClient:
    """An authenticated client: TCP (or implicit TLS), STARTTLS, login."""
    implicit = mailbox.tls == "implicit"
    client = factory(
        mailbox.host,
        port=mailbox.effective_port,
        ssl=implicit,
        ssl_context=ssl_context(mailbox) if implicit else None,
        timeout=timeout,
    )
    try:
        if mailbox.tls == "starttls":
            client.starttls(ssl_context(mailbox))
        creds = credentials(mailbox)
        try:
            if creds.mechanism == "xoauth2":
                client.oauth2_login(mailbox.username, creds.secret)
            else:
                client.login(mailbox.username, creds.secret)
        except LoginError as exc:
            raise LoginFailed(_text(exc)) from None
    except BaseException:
        _close(client)
        raise
    return client


def _close(client: IMAPClient | None) -> None:
    if client is None:
        return
    try:
        client.logout()
    except Exception:
        with contextlib.suppress(Exception):
            client.shutdown()


def _text(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    if msg.startswith("b'") or msg.startswith('b"'):
        msg = msg[2:-1]
    return msg[:300]


# --- checkpoints ------------------------------------------------------------


def load_checkpoint(session: Session, mailbox: str, folder: str) -> tuple[int, int] | None:
    row = session.execute(
        select(ImapCheckpoint.uidvalidity, ImapCheckpoint.last_uid).where(
            ImapCheckpoint.mailbox == mailbox, ImapCheckpoint.folder == folder
        )
    ).first()
    return (int(row[0]), int(row[1])) if row else None


def save_checkpoint(
    session: Session, mailbox: str, folder: str, uidvalidity: int, last_uid: int, now: datetime
) -> None:
    values = {"uidvalidity": uidvalidity, "last_uid": last_uid, "updated_at": now}
    insert_ignore(session, ImapCheckpoint, [{"mailbox": mailbox, "folder": folder, **values}])
    session.execute(
        update(ImapCheckpoint)
        .where(ImapCheckpoint.mailbox == mailbox, ImapCheckpoint.folder == folder)
        .values(**values)
    )


# --- one mailbox ----------------------------------------------------------------


@dataclass
class PollerStats:
    stored: int = 0
    duplicates: int = 0
    disposed: int = 0
    skipped: int = 0  # UIDs the server answered without their body (each time)
    batches: int = 0
    connects: int = 0
    failures: int = 0  # consecutive; 0 once a pass succeeds
    last_error: str = ""
    uidvalidity_changes: int = 0


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@dataclass
class MailboxPoller:
    """Keeps one mailbox in sync: a thread (`start`/`stop`) or burst mode (`drain`)."""

    mailbox: ImapMailboxSettings
    settings: Settings
    sessions: sessionmaker[Session]
    clock: Clock
    client_factory: ClientFactory = IMAPClient
    on_commit: Callable[[], None] | None = None
    hook: StepHook | None = None
    # Called with the mailbox name after every complete sync (the daemon's
    # maild_imap_last_successful_poll_timestamp_seconds).
    on_polled: Callable[[str], None] | None = None
    rand: random.Random = field(default_factory=random.Random)
    stats: PollerStats = field(default_factory=PollerStats)

    def __post_init__(self) -> None:
        m = self.mailbox
        self.name = m.name
        self.imap = self.settings.imap
        self.recipient = normalize_address(m.address or self.settings.helpdesk.primary_address)
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.idling = threading.Event()  # in IDLE: the server announces what arrives now
        self._thread: threading.Thread | None = None
        self._lock_conn: Any = None
        self._recovered = False
        self._keywords = True
        self._seen: tuple[int, int | None] | None = None  # (UIDVALIDITY, UIDNEXT) last looked at
        # UIDs the server answered without their body: UID -> passes so far.
        self._skipped: dict[int, int] = {}
        self._recovering = False  # disposing of messages stored before an interruption

    # --- thread ------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"imap-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        """The thread body: connect, sync, wait for mail, and on any failure back off."""
        where = f"{self.mailbox.host}:{self.mailbox.effective_port}"
        while not self.stopping.is_set():
            client: IMAPClient | None = None
            try:
                if not self._hold_lock():
                    self.stopping.wait(self.imap.poll_seconds)
                    continue
                client = connect(self.mailbox, self.imap.timeout_seconds, self.client_factory)
                self.stats.connects += 1
                self.connected.set()
                log.info("imap %s: logged in to %s as %s", self.name, where, self.mailbox.username)
                self._serve(client)
            except LoginFailed as exc:
                self._failed(f"login to {where} as {self.mailbox.username} failed: {exc}",
                             level=logging.ERROR)  # fmt: skip
            except (OSError, IMAPClientAbortError, ConnectionLost) as exc:
                self._failed(f"connection to {where} failed: {type(exc).__name__}: {_text(exc)}")
            except IMAPClientError as exc:  # a NO or BAD: a missing folder, no permission...
                self._failed(f"{where} refused a command: {_text(exc)}")
            except SQLAlchemyError as exc:
                self._failed(f"database unavailable ({type(exc).__name__}); nothing was moved")
                self._release_lock()
            except Exception as exc:  # a bug must not end the thread: log it, back off
                log.exception("imap %s: unexpected error", self.name)
                self._failed(f"unexpected {type(exc).__name__}: {_text(exc)}", logged=True)
            finally:
                self.connected.clear()
                _close(client)
        self._release_lock()

    def _failed(self, message: str, *, logged: bool = False, level: int = 0) -> None:
        """Log one line (a first failure after a good session is only a warning:
        servers end sessions, OAuth2 ones when the token expires), then back off."""
        self.stats.failures += 1
        self.stats.last_error = message
        if self.stopping.is_set():
            return
        delay = backoff_delay(self.stats.failures, self.imap.reconnect_min_seconds,
                              self.imap.reconnect_max_seconds, self.rand)  # fmt: skip
        if not logged:
            level = level or (logging.WARNING if self.stats.failures == 1 else logging.ERROR)
            log.log(level, "imap %s: %s; retrying in %.1fs (attempt %d)", self.name, message,
                    delay, self.stats.failures)  # fmt: skip
        self.stopping.wait(delay)

    def _hold_lock(self) -> bool:
        """With PostgreSQL, one instance per mailbox: hold an advisory lock."""
        if self._lock_conn is not None:
            return True
        engine: Engine = self.sessions.kw["bind"]
        if engine.dialect.name != "postgresql":
            return True
        conn = engine.connect()
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(self.name)})
            if got.scalar():
                conn.commit()
                self._lock_conn = conn
                return True
        except Exception:
            conn.close()
            raise
        conn.close()
        log.info("imap %s: another maild instance reads this mailbox; waiting", self.name)
        return False

    def _release_lock(self) -> None:
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                self._lock_conn.close()  # the session ends: PostgreSQL drops the lock
            self._lock_conn = None

    def _serve(self, client: IMAPClient) -> None:
        idle = client.has_capability("IDLE")
        self._recovered = False
        self._seen = None
        while not self.stopping.is_set():
            self.sync(client)
            self.stats.failures = 0
            if self.stopping.is_set():
                return
            if idle:
                self._idle(client)
            elif self.stopping.wait(self.imap.poll_seconds):
                return

    def _idle(self, client: IMAPClient) -> None:
        """Wait in IDLE until the folder changes, the renewal time, or stop.

        Never longer than ``imap.poll_seconds`` either: a server can miss
        announcing a message. Dovecot does, for one delivered by another
        session in the instant between our last look and the start of IDLE
        (it watches the folder from IDLE on); without this bound that message
        would wait for the next renewal, up to 25 minutes.
        """
        client.idle()
        self.idling.set()
        try:
            self._wait_in_idle(client, min(self.imap.idle_seconds, self.imap.poll_seconds))
        finally:
            self.idling.clear()
        client.idle_done()

    def _wait_in_idle(self, client: IMAPClient, wait: float) -> None:
        deadline = time.monotonic() + wait
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            wait = min(IDLE_SLICE_SECONDS, left)
            started = time.monotonic()
            responses = client.idle_check(timeout=wait)
            if any(r[:1] == (b"BYE",) for r in responses):
                raise ConnectionLost(f"server ended the session: {responses!r}"[:300])
            if any(r[:1] != (b"OK",) for r in responses):
                return  # EXISTS, EXPUNGE, FETCH...: look at the folder again
            if not responses and time.monotonic() - started < wait / 2:
                return  # readable with nothing to read: closed; idle_done will tell

    # --- burst mode (CLI, tests, benchmarks) -------------------------------

    def drain(self) -> PollerStats:
        """Connect, import everything now in the folder, log out."""
        client = connect(self.mailbox, self.imap.timeout_seconds, self.client_factory)
        try:
            self._recovered = False
            self._seen = None
            self.sync(client)
        finally:
            _close(client)
        return self.stats

    # --- one pass over the folder ------------------------------------------

    def sync(self, client: IMAPClient) -> int:
        """Import every message above the checkpoint; returns how many were new.

        Ends with a fresh ``SELECT`` whose UIDNEXT is unchanged since the last
        look: a message that arrived meanwhile was announced in the answer to
        some earlier command, where IDLE would never report it again.
        """
        m = self.mailbox
        if m.after == "move" and not self._recovered:
            self._ensure_folder(client, m.processed_folder)
        fresh = 0
        retry = bool(self._skipped)  # once per pass, even with nothing new
        while not self.stopping.is_set():
            info = client.select_folder(m.folder)
            uidvalidity = int(info[b"UIDVALIDITY"])
            uidnext = int(info[b"UIDNEXT"]) if b"UIDNEXT" in info else None
            seen = (uidvalidity, uidnext)
            if uidnext is not None and seen == self._seen and not retry:
                break  # nothing new since the last look
            retry = False
            self._keywords = b"\\*" in info.get(b"PERMANENTFLAGS", (b"\\*",))
            last_uid = self._checkpoint(uidvalidity)
            if not self._recovered:
                self._recovered = self._finish_interrupted(client, uidvalidity, last_uid)
            found, stored = self._import_new(client, uidvalidity, last_uid)
            fresh += stored
            if self.stopping.is_set():
                break
            self._seen = seen
            if uidnext is None and not found:
                break  # a server without UIDNEXT: stop once a search finds nothing
        if self.on_polled is not None and not self.stopping.is_set():
            self.on_polled(self.name)
        return fresh

    def _ensure_folder(self, client: IMAPClient, folder: str) -> None:
        if client.folder_exists(folder):
            return
        try:
            client.create_folder(folder)
            log.info("imap %s: created folder %s", self.name, folder)
        except IMAPClientError:
            if not client.folder_exists(folder):
                raise

    def _import_new(self, client: IMAPClient, uidvalidity: int, last_uid: int) -> tuple[int, int]:
        """(found, newly stored) for the messages above `last_uid`, batch by batch.

        The checkpoint advances over the UIDs stored, and stops before the first
        one the server did not give us (held there for the batches after it).
        """
        criteria: list[Any] = ["UID", f"{last_uid + 1}:*"]
        if self.mailbox.after == "flag" and self._keywords:
            criteria += ["UNKEYWORD", PROCESSED_KEYWORD]
        uids = sorted(u for u in client.search(criteria) if u > last_uid)
        stored = 0
        checkpoint: int | None = last_uid  # None: held before a UID not stored
        for window in _chunks(uids, self.imap.batch_size):
            sizes = self._sizes(client, window)
            for batch in self._by_bytes(window, sizes):
                fresh, checkpoint = self._import(client, uidvalidity, batch, sizes, checkpoint)
                stored += fresh
                if self.stopping.is_set():
                    return len(uids), stored
        return len(uids), stored

    @staticmethod
    def _sizes(client: IMAPClient, uids: list[int]) -> dict[int, int]:
        return {
            uid: int(data[b"RFC822.SIZE"])
            for uid, data in client.fetch(uids, ["RFC822.SIZE"]).items()
            if b"RFC822.SIZE" in data
        }

    def _checkpoint(self, uidvalidity: int) -> int:
        m = self.mailbox
        with self.sessions.begin() as session:
            saved = load_checkpoint(session, self.name, m.folder)
            if saved is not None and saved[0] == uidvalidity:
                return saved[1]
            if saved is not None:
                self.stats.uidvalidity_changes += 1
                log.warning("imap %s: UIDVALIDITY of %s changed from %d to %d (folder recreated "
                            "or restored): reading it again; only messages not stored yet are "
                            "imported", self.name, m.folder, saved[0], uidvalidity)  # fmt: skip
            save_checkpoint(session, self.name, m.folder, uidvalidity, 0, self.clock.now())
        return 0

    def _by_bytes(self, window: list[int], sizes: dict[int, int]) -> Iterator[list[int]]:
        """Split a window of UIDs so a batch holds at most imap.batch_bytes."""
        batch: list[int] = []
        total = 0
        limit = self.settings.limits.max_message_bytes
        for uid in window:
            size = min(sizes.get(uid, 0), limit)  # oversize: only the header is fetched
            if batch and total + size > self.imap.batch_bytes:
                yield batch
                batch, total = [], 0
            batch.append(uid)
            total += size
        if batch:
            yield batch

    def _import(
        self,
        client: IMAPClient,
        uidvalidity: int,
        batch: list[int],
        sizes: dict[int, int],
        checkpoint: int | None,
    ) -> tuple[int, int | None]:
        """Fetch, store and dispose of `batch`; (newly stored, checkpoint after it).

        `checkpoint` is where the mailbox's checkpoint stands (None: held back by
        an earlier UID not stored, and left where it is); with it the new one is
        saved in the same transaction as the messages: the last UID of the
        unbroken run of stored UIDs. Only stored UIDs are moved or flagged.
        """
        limit = self.settings.limits.max_message_bytes
        # A UID whose size the server did not say is fetched whole and measured.
        small = [u for u in batch if sizes.get(u, 0) <= limit]
        big = [u for u in batch if sizes.get(u, 0) > limit]
        raws: dict[int, bytes] = {}
        if small:
            for uid, data in client.fetch(small, ["BODY.PEEK[]"]).items():
                if uid in small and b"BODY[]" in data:
                    raws[uid] = bytes(data[b"BODY[]"])
        heads: dict[int, bytes] = {}
        if big:
            for uid, data in client.fetch(big, ["BODY.PEEK[HEADER]"]).items():
                if uid in big and b"BODY[HEADER]" in data:
                    heads[uid] = bytes(data[b"BODY[HEADER]"])
        self._step("after_fetch")
        for uid, raw in list(raws.items()):  # bigger than its size said, or no size given
            if len(raw) > limit:
                heads[uid] = header_block(raw)
                sizes[uid] = len(raw)
                del raws[uid]
        missing = [u for u in batch if u not in raws and u not in heads]
        given_up = self._missing(client, missing)
        uids = sorted([*raws, *heads, *given_up])
        deliveries = []
        for u in uids:
            if u in raws:
                deliveries.append(self._delivery(raws[u]))
            elif u in heads:
                deliveries.append(self._oversize(heads[u], sizes[u]))
            else:
                deliveries.append(given_up[u])
        held = set(missing) - set(given_up)
        new_checkpoint = checkpoint
        if checkpoint is not None:
            for uid in batch:
                if uid in held:
                    new_checkpoint = None
                    break
                checkpoint = uid
        with self.sessions.begin() as session:
            results = store(session, deliveries, self.clock.now())
            if checkpoint is not None:
                save_checkpoint(session, self.name, self.mailbox.folder, uidvalidity, checkpoint,
                                self.clock.now())  # fmt: skip
        self._step("after_commit")
        self.stats.batches += 1
        fresh = self._report(uids, deliveries, results)
        for uid in uids:
            self._skipped.pop(uid, None)
        if fresh and self.on_commit is not None:
            self.on_commit()
        if uids:
            self._dispose(client, uids, recovering=self._recovering)
        self._step("after_move")
        return fresh, (checkpoint if new_checkpoint is not None else None)

    def _missing(self, client: IMAPClient, missing: list[int]) -> dict[int, Delivery]:
        """Log the UIDs the server gave no body for; those that failed
        `MAX_FETCH_ATTEMPTS` times become quarantined headers (the returned deliveries)."""
        given_up: dict[int, Delivery] = {}
        if not missing:
            return given_up
        self.stats.skipped += len(missing)
        for uid in missing:
            self._skipped[uid] = self._skipped.get(uid, 0) + 1
        last = [u for u in missing if self._skipped[u] >= MAX_FETCH_ATTEMPTS]
        retry = [u for u in missing if u not in last]
        if retry:
            log.warning("imap %s: the server sent no body for UID(s) %s of %s; left in the "
                        "folder, fetched again on the next pass (the checkpoint stays before "
                        "them)", self.name, ", ".join(map(str, retry)), self.mailbox.folder)  # fmt: skip
        if not last:
            return given_up
        heads = {uid: bytes(data.get(b"BODY[HEADER]", b""))
                 for uid, data in client.fetch(last, ["BODY.PEEK[HEADER]"]).items()}  # fmt: skip
        m = self.mailbox
        where = m.processed_folder if m.after == "move" else m.folder
        for uid in last:
            head = heads.get(uid) or (f"X-Maild-Imap: {self.name} {m.folder} UID {uid}\r\n"
                                      "\r\n").encode()  # fmt: skip
            reason = (f"the IMAP server sent no body for UID {uid} of {m.folder} in "
                      f"{MAX_FETCH_ATTEMPTS} passes: only its header is stored; the message "
                      f"stays in IMAP folder {where!r} of mailbox {self.name}")  # fmt: skip
            log.error("imap %s: %s", self.name, reason)
            given_up[uid] = Delivery(
                raw=head,
                source=Source.IMAP,
                recipient=self.recipient,
                envelope_from=peek_return_path(head),
                envelope_to=(self.recipient,),
                mailbox=self.name,
                status=InboundStatus.QUARANTINED,
                error=reason,
            )
        return given_up

    def _delivery(self, raw: bytes) -> Delivery:
        ok = looks_like_message(raw)
        trace = b""
        delivered: tuple[str, ...] = ()
        if ok:
            # The envelope recipient, as the one header field the admin says the
            # delivering server writes on top (a personal reply or bounce address
            # counts only from there: any other copy of it is the sender's word).
            header = self.mailbox.delivery_header
            found = peek_header(raw, header) if header else None
            if found and "@" in found:
                delivered = (normalize_address(found),)
            raw, trace = traced(raw, self.settings, self.clock.now(), protocol="IMAP",
                                note=f"mailbox {self.name}")  # fmt: skip
        return Delivery(
            raw=raw,
            source=Source.IMAP,
            recipient=self.recipient,
            envelope_from=peek_return_path(raw) if ok else None,
            envelope_to=(self.recipient, *delivered),
            mailbox=self.name,
            status=InboundStatus.PENDING if ok else InboundStatus.QUARANTINED,
            error=None if ok else "not an email message: no header fields found",
            trace=trace,
        )

    def _oversize(self, header: bytes, size: int) -> Delivery:
        m = self.mailbox
        where = m.processed_folder if m.after == "move" else m.folder
        return Delivery(
            raw=header,
            source=Source.IMAP,
            recipient=self.recipient,
            envelope_from=peek_return_path(header),
            envelope_to=(self.recipient,),
            mailbox=self.name,
            status=InboundStatus.QUARANTINED,
            error=(f"message of {size} bytes exceeds limits.max_message_bytes "
                   f"({self.settings.limits.max_message_bytes}): only its header is stored; "
                   f"the whole message stays in IMAP folder {where!r} of mailbox {self.name}"),
        )  # fmt: skip

    def _report(self, uids: list[int], deliveries: list[Delivery], results: list[Stored]) -> int:
        fresh = sum(1 for r in results if not r.duplicate)
        self.stats.stored += fresh
        self.stats.duplicates += len(results) - fresh
        for uid, d, r in zip(uids, deliveries, results, strict=True):
            log.debug("imap %s: UID %d %s %s inbound %d", self.name, uid,
                      peek_message_id(d.raw) or "(no Message-ID)",
                      "already stored as" if r.duplicate else "stored as", r.inbound_id)  # fmt: skip
        if uids:
            log.info("imap %s: stored %d new message(s) of %d (UIDs %d-%d)", self.name, fresh,
                     len(uids), uids[0], uids[-1])  # fmt: skip
        return fresh

    def _step(self, name: str) -> None:
        if self.hook is not None and not self._recovering:  # the steps of new batches
            self.hook(name)

    # --- after the commit: move or flag ------------------------------------

    def _dispose(self, client: IMAPClient, uids: list[int], *, recovering: bool = False) -> None:
        m = self.mailbox
        if m.after == "flag":
            flags = [SEEN, PROCESSED_KEYWORD.encode()] if self._keywords else [SEEN]
            client.add_flags(uids, flags, silent=True)
        elif client.has_capability("MOVE"):
            client.move(uids, m.processed_folder)
        else:
            to_copy = self._not_copied_yet(client, uids) if recovering else uids
            if to_copy:
                client.copy(to_copy, m.processed_folder)
                self._step("after_copy")
            client.add_flags(uids, [DELETED], silent=True)
            if client.has_capability("UIDPLUS"):
                client.uid_expunge(uids)
            else:  # expunges every \Deleted message of the folder: the best IMAP4rev1 offers
                client.expunge()
        self.stats.disposed += len(uids)

    def _finish_interrupted(self, client: IMAPClient, uidvalidity: int, last_uid: int) -> bool:
        """Store, then move (or flag), messages at or below the checkpoint still in the folder.

        They were committed before an interruption, or so the checkpoint says:
        each is fetched again and stored through the dedupe, so what the
        database holds is found there and what it does not is stored now,
        before anything is moved or flagged. True when none is left behind (a
        UID the server gives no body for is left, and tried again next pass).
        """
        if last_uid <= 0:
            return True
        criteria: list[Any] = ["UID", f"1:{last_uid}"]
        if self.mailbox.after == "flag":
            criteria += ["UNKEYWORD", PROCESSED_KEYWORD] if self._keywords else ["UNSEEN"]
        left = sorted(u for u in client.search(criteria) if u <= last_uid)
        if not left:
            return True
        action = "flagging" if self.mailbox.after == "flag" else "moving"
        log.warning("imap %s: %d message(s) at or below the checkpoint are still in %s (UIDs "
                    "%d-%d): storing any not stored yet, then %s them", self.name, len(left),
                    self.mailbox.folder, left[0], left[-1], action)  # fmt: skip
        self._recovering = True
        try:
            for window in _chunks(left, self.imap.batch_size):
                sizes = self._sizes(client, window)
                for batch in self._by_bytes(window, sizes):
                    self._import(client, uidvalidity, batch, sizes, None)
        finally:
            self._recovering = False
        return not any(u <= last_uid for u in self._skipped)

    def _not_copied_yet(self, client: IMAPClient, uids: list[int]) -> list[int]:
        """Without MOVE, a crash between COPY and EXPUNGE leaves a copy in the
        processed folder already: find those by Message-ID so none is copied twice."""
        m = self.mailbox
        field_name = b"BODY[HEADER.FIELDS (MESSAGE-ID)]"
        heads = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        ids = {u: peek_message_id(bytes(d.get(field_name, b""))) for u, d in heads.items()}
        client.select_folder(m.processed_folder, readonly=True)
        try:
            present = {
                u for u, mid in ids.items() if mid and client.search(["HEADER", "Message-ID", mid])
            }
        finally:
            client.select_folder(m.folder)
        return [u for u in uids if u not in present]


# --- all mailboxes ---------------------------------------------------------------


class ImapIntake:
    """One `MailboxPoller` thread per configured mailbox."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        clock: Clock,
        *,
        on_commit: Callable[[], None] | None = None,
        client_factory: ClientFactory = IMAPClient,
    ) -> None:
        self.pollers = [
            MailboxPoller(
                m, settings, sessions, clock, client_factory=client_factory, on_commit=on_commit
            )  # fmt: skip
            for m in settings.imap.mailboxes
        ]

    def start(self) -> None:
        for poller in self.pollers:
            poller.start()

    def stop(self, timeout: float = 20.0) -> None:
        """Finish the batch in hand (commit, then move), log out, end the threads."""
        for poller in self.pollers:
            poller.stop()
        deadline = time.monotonic() + timeout
        for poller in self.pollers:
            poller.join(max(0.0, deadline - time.monotonic()))


# --- `maild mailbox check` ------------------------------------------------------------


@dataclass(frozen=True)
class FolderReport:
    name: str
    exists: bool
    messages: int = 0
    unseen: int = 0
    uidvalidity: int = 0
    uidnext: int = 0


@dataclass(frozen=True)
class MailboxReport:
    """What an admin needs while setting a mailbox up."""

    name: str
    where: str
    connected: bool = False
    logged_in: bool = False
    error: str = ""
    capabilities: tuple[str, ...] = ()
    folders: tuple[FolderReport, ...] = ()

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities


def check_mailbox(
    mailbox: ImapMailboxSettings, timeout: float, factory: ClientFactory = IMAPClient
) -> MailboxReport:
    """Connect, log in, list capabilities and the folders maild uses; change nothing."""
    security = {"implicit": "implicit TLS", "starttls": "STARTTLS", "none": "no TLS"}
    where = f"{mailbox.host}:{mailbox.effective_port} ({security[mailbox.tls]})"
    report = MailboxReport(mailbox.name, where)
    try:
        client = connect(mailbox, timeout, factory)
    except LoginFailed as exc:
        return replace(report, connected=True, error=f"login as {mailbox.username} failed: {exc}")
    except (OSError, IMAPClientError) as exc:
        return replace(report, error=f"cannot connect: {type(exc).__name__}: {_text(exc)}")
    try:
        caps = tuple(sorted(c.decode("ascii", "replace").upper() for c in client.capabilities()))
        names = [mailbox.folder]
        if mailbox.after == "move":
            names.append(mailbox.processed_folder)
        folders = []
        for name in names:
            if not client.folder_exists(name):
                folders.append(FolderReport(name, exists=False))
                continue
            st = client.folder_status(name, ["MESSAGES", "UNSEEN", "UIDVALIDITY", "UIDNEXT"])
            folders.append(FolderReport(name, True, int(st[b"MESSAGES"]), int(st[b"UNSEEN"]),
                                        int(st[b"UIDVALIDITY"]), int(st[b"UIDNEXT"])))  # fmt: skip
        return replace(report, connected=True, logged_in=True, capabilities=caps,
                       folders=tuple(folders))  # fmt: skip
    except (OSError, IMAPClientError) as exc:
        return replace(report, connected=True, logged_in=True,
                       error=f"{type(exc).__name__}: {_text(exc)}")  # fmt: skip
    finally:
        _close(client)

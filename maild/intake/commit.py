"""Intake: commit the raw bytes before anyone is told "accepted".

Every intake path (SMTP/LMTP, IMAP, ``maild ingest``, ``maild import``) hands a
`Delivery` to `store()`, inside a transaction the caller opens. Dedupe happens
here, by content, not by Message-ID alone: the same Message-ID for the same
help-desk address *and* the same content `fingerprint` (From, Subject, Date
and the body; a redelivery through another relay, or by IMAP and SMTP both,
keeps them) is stored once. A Message-ID seen before on other content
(scanners, printers and scripts reuse fixed ones) is a new message: stored,
and flagged with the earlier row (``message_id_clash``). Without a
Message-ID, the same fingerprint with a Date, else the same bytes.

`GroupCommitter` is the one writer behind the SMTP listener: it drains a queue
of deliveries and commits them together, so each session's 250 waits for the
commit that holds its message (durability per message, fsync cost per batch).
"""

from __future__ import annotations

import concurrent.futures
import errno
import hashlib
import logging
import queue
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from maild.clock import Clock
from maild.config.settings import Settings
from maild.errors import TransientError
from maild.mail.parse import looks_like_message, peek_message_id
from maild.mail.trace import received_line, untrusted_results
from maild.store.db import insert_ignore
from maild.store.models import Inbound, InboundRaw
from maild.store.states import InboundStatus, Source

log = logging.getLogger(__name__)


class StorageFull(TransientError):
    """The disk (or file size limit, or quota) is full: SMTP ``452 4.3.1``."""


_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
# SQLite reports a write past RLIMIT_FSIZE as an I/O error on write.
_FULL_SQLITE = {"SQLITE_FULL", "SQLITE_IOERR_WRITE"}


def is_storage_full(exc: BaseException) -> bool:
    """Does this error (or one it wraps) mean "no room to write"?"""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, StorageFull):
            return True
        if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
            return True
        if getattr(err, "sqlite_errorname", None) in _FULL_SQLITE:
            return True
        if getattr(err, "sqlstate", None) == "53100":  # PostgreSQL disk_full
            return True
        todo.extend([getattr(err, "orig", None), err.__cause__, err.__context__])
    return False


@dataclass(frozen=True)
class Delivery:
    """One message as it arrived, with its envelope."""

    raw: bytes
    source: Source
    recipient: str | None  # the served address it came for (plus tag stripped)
    envelope_from: str | None = None
    envelope_to: tuple[str, ...] = ()
    mailbox: str | None = None
    notify: bool = True
    status: InboundStatus = InboundStatus.PENDING
    error: str | None = None
    trace: bytes = b""  # our Received line, stored on top of `raw` (`traced`)


def traced(
    raw: bytes, settings: Settings, now: datetime, *, protocol: str,
    helo: str | None = None, ip: str | None = None, note: str = "",
) -> tuple[bytes, bytes]:  # fmt: skip
    """(`raw` with foreign Authentication-Results renamed, maild's Received line).

    Every live intake path (SMTP, LMTP, IMAP, ``maild ingest``) stamps what it
    accepts (`maild.mail.trace`): our line marks where the client's header
    fields begin, so none of them can pass for our border server's verdict.
    Bytes that are no message at all stay as they came (and are quarantined
    as such): a header line of ours must not make them look like one.
    """
    if not looks_like_message(raw):
        return raw, b""
    am = settings.agent_mail
    trace = received_line(by=settings.smtp.hostname, protocol=protocol, now=now, helo=helo,
                          ip=ip, note=note)  # fmt: skip
    return untrusted_results(raw, am.trusted_authserv_ids, am.trusted_hops), trace


@dataclass(frozen=True)
class Stored:
    inbound_id: int
    duplicate: bool


_FIELD = re.compile(rb"^(from|subject|date)[ \t]*:(.*(?:\r?\n[ \t].*)*)",
                    re.IGNORECASE | re.MULTILINE)  # fmt: skip
_SPACE = re.compile(rb"\s+")


def _body_start(raw: bytes) -> int:
    crlf = raw.find(b"\r\n\r\n")
    lf = raw.find(b"\n\n", 0, crlf if crlf != -1 else len(raw))
    if lf != -1:
        return lf + 2
    return crlf + 4 if crlf != -1 else len(raw)


def _canonical(raw: bytes, start: int) -> bytes | memoryview:
    """The body from `start` with CRLF line endings and no trailing white space.

    Mail through SMTP or IMAP already has CRLF: counting costs less than a copy.
    """
    if raw.count(b"\n", start) != raw.count(b"\r\n", start):
        return raw[start:].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").rstrip()
    end = len(raw)
    while end > start and raw[end - 1] in b" \t\r\n":
        end -= 1
    return memoryview(raw)[start:end]


def fingerprint(raw: bytes) -> tuple[str, bool]:
    """(content fingerprint, whether it has a Date) of a message.

    From, Subject and Date as written (white space and folding aside) and the
    body (line endings and trailing white space aside). The trace fields
    another relay or an IMAP server adds (Received, Return-Path, Delivered-To)
    do not count; other content under the same Message-ID does.
    """
    cut = _body_start(raw)
    found: dict[bytes, bytes] = {}
    for match in _FIELD.finditer(raw[: min(cut, 256 * 1024)]):
        found.setdefault(match.group(1).lower(), _SPACE.sub(b" ", match.group(2)).strip())
    digest = hashlib.sha256()
    for name in (b"from", b"subject", b"date"):
        digest.update(name + b"\0" + found.get(name, b"") + b"\0")
    digest.update(_canonical(raw, cut))
    return digest.hexdigest(), b"date" in found


def dedupe_key(recipient: str | None, message_id: str | None, sha256: str,
               content: str | None = None) -> str:  # fmt: skip
    """What makes two deliveries one message (see the module doc); `content` is
    the `fingerprint` (None: by Message-ID alone, or by the bytes)."""
    if message_id:
        basis = f"mid\n{recipient or ''}\n{message_id}"
        if content:
            basis += f"\n{content}"
    elif content:
        basis = f"fp\n{recipient or ''}\n{content}"
    else:
        basis = f"sha\n{sha256}"
    return hashlib.sha256(basis.encode("utf-8", "surrogateescape")).hexdigest()


def inbound_row(delivery: Delivery, now: datetime) -> dict[str, Any]:
    # Dedupe by the client's bytes: our trace line differs on every retry.
    sha = hashlib.sha256(delivery.raw).hexdigest()
    message_id = peek_message_id(delivery.raw)
    raw = delivery.trace + delivery.raw if delivery.trace else delivery.raw
    content, dated = fingerprint(delivery.raw)
    return {
        "source": str(delivery.source),
        "mailbox": delivery.mailbox,
        "envelope_from": delivery.envelope_from,
        "envelope_to": list(delivery.envelope_to),
        "recipient": delivery.recipient,
        "raw": raw,
        "size": len(raw),
        "sha256": sha,
        "message_id": message_id,
        "dedupe_key": dedupe_key(
            delivery.recipient, message_id, sha, content if (message_id or dated) else None
        ),  # fmt: skip
        "received_at": now,
        "status": str(delivery.status),
        "attempts": 0,
        "notify": delivery.notify,
        "error": delivery.error,
        "message_id_clash": None,
        "processed_at": now if delivery.status != InboundStatus.PENDING else None,
    }


def store(session: Session, deliveries: Sequence[Delivery], now: datetime) -> list[Stored]:
    """Insert the deliveries not stored yet; say for each which row holds it."""
    rows = [inbound_row(d, now) for d in deliveries]
    keys = {r["dedupe_key"] for r in rows}
    ids = {r["message_id"] for r in rows if r["message_id"]}
    # One look-up for both: the same message (its key), and earlier messages
    # with the same Message-ID (a reused one, if the content differs).
    where = Inbound.dedupe_key.in_(keys)
    if ids:
        where = or_(where, Inbound.message_id.in_(ids))
    existing: dict[str, int] = {}
    first_with_id: dict[tuple[str | None, str], int] = {}
    for key, row_id, message_id, recipient in session.execute(
        select(Inbound.dedupe_key, Inbound.id, Inbound.message_id, Inbound.recipient)
        .where(where)
        .order_by(Inbound.id)
    ):
        if key in keys:
            existing[key] = row_id
        if message_id:
            first_with_id.setdefault((recipient, message_id), row_id)
    fresh: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["dedupe_key"] not in existing:
            fresh.setdefault(row["dedupe_key"], row)
    for row in fresh.values():
        if row["message_id"]:
            clash = first_with_id.get((row["recipient"], row["message_id"]))
            row["message_id_clash"] = clash
            if clash is not None:
                log.warning("intake: Message-ID %s for %s was seen on inbound %d with other "
                            "content: stored as a new message", row["message_id"],
                            row["recipient"], clash)  # fmt: skip
    raws = {key: row.pop("raw") for key, row in fresh.items()}
    inserted: dict[str, int] = dict(
        insert_ignore(session, Inbound, list(fresh.values()), Inbound.dedupe_key, Inbound.id)
    )
    if inserted:
        session.connection().execute(
            insert(InboundRaw),
            [{"inbound_id": i, "raw": raws[key]} for key, i in inserted.items()],
        )
        _flag_clashes_within(session, fresh, inserted)
    missing = set(fresh) - set(inserted)
    if missing:  # another instance stored them between our select and insert
        existing.update(
            session.execute(
                select(Inbound.dedupe_key, Inbound.id).where(Inbound.dedupe_key.in_(missing))
            ).all()
        )
    out: list[Stored] = []
    claimed: set[str] = set()
    for row in rows:
        key = row["dedupe_key"]
        if key in inserted and key not in claimed:
            claimed.add(key)
            out.append(Stored(inserted[key], duplicate=False))
        else:
            out.append(Stored(existing.get(key) or inserted[key], duplicate=True))
    return out


def _flag_clashes_within(
    session: Session, fresh: dict[str, dict[str, Any]], inserted: dict[str, int]
) -> None:
    """Two messages of one batch with the same Message-ID and other content: the later one."""
    first: dict[tuple[str | None, str], int] = {}
    for key, row in fresh.items():
        if not row["message_id"] or row.get("message_id_clash") or key not in inserted:
            continue
        seen = first.setdefault((row["recipient"], row["message_id"]), inserted[key])
        if seen != inserted[key]:
            session.execute(update(Inbound).where(Inbound.id == inserted[key])
                            .values(message_id_clash=seen))  # fmt: skip


def store_one(sessions: sessionmaker[Session], delivery: Delivery, clock: Clock) -> Stored:
    """Commit one delivery in its own transaction (ingest, import)."""
    with sessions.begin() as session:
        return store(session, [delivery], clock.now())[0]


_STOP = object()


class GroupCommitter:
    """A single writer thread that commits queued deliveries in batches."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        *,
        max_batch: int = 256,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="intake-writer", daemon=True)
        self.batches = 0
        self.messages = 0

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def queued(self) -> int:
        """Deliveries waiting for the writer (approximate)."""
        return self._queue.qsize()

    def submit(self, delivery: Delivery) -> concurrent.futures.Future[Stored]:
        future: concurrent.futures.Future[Stored] = concurrent.futures.Future()
        if not self._thread.is_alive():
            future.set_exception(TransientError("intake writer is not running"))
            return future
        self._queue.put((delivery, future))
        return future

    def stop(self, timeout: float = 10.0) -> None:
        """Commit everything queued so far, then end the writer thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Delivery, concurrent.futures.Future[Stored]]]) -> None:
        try:
            with self._sessions.begin() as session:
                results = store(session, [d for d, _ in batch], self._clock.now())
        except Exception as exc:
            if len(batch) > 1:  # one bad delivery must not fail the others
                for one in batch:
                    self._commit([one])
                return
            full = is_storage_full(exc)
            log.error("intake: could not store message %s: %s%s",
                      peek_message_id(batch[0][0].raw) or "(no Message-ID)", exc,
                      " (storage full)" if full else "")  # fmt: skip
            error = StorageFull if full else TransientError
            batch[0][1].set_exception(error(f"storage failed: {type(exc).__name__}"))
            return
        self.batches += 1
        self.messages += len(batch)
        for (_delivery, future), stored in zip(batch, results, strict=True):
            future.set_result(stored)
        if self._on_commit is not None:
            self._on_commit()

"""Intake: commit the raw bytes before anyone is told "accepted".

Every intake path (SMTP/LMTP, IMAP, ``maild ingest``, ``maild import``) hands a
`Delivery` to `store()`, inside a transaction the caller opens. Dedupe happens
here: the same Message-ID for the same help-desk address, or the same sha256
of the raw bytes when there is no Message-ID, is stored once.

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
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
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


def dedupe_key(recipient: str | None, message_id: str | None, sha256: str) -> str:
    basis = f"mid\n{recipient or ''}\n{message_id}" if message_id else f"sha\n{sha256}"
    return hashlib.sha256(basis.encode("utf-8", "surrogateescape")).hexdigest()


def inbound_row(delivery: Delivery, now: datetime) -> dict[str, Any]:
    # Dedupe by the client's bytes: our trace line differs on every retry.
    sha = hashlib.sha256(delivery.raw).hexdigest()
    message_id = peek_message_id(delivery.raw)
    raw = delivery.trace + delivery.raw if delivery.trace else delivery.raw
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
        "dedupe_key": dedupe_key(delivery.recipient, message_id, sha),
        "received_at": now,
        "status": str(delivery.status),
        "attempts": 0,
        "notify": delivery.notify,
        "error": delivery.error,
        "processed_at": now if delivery.status != InboundStatus.PENDING else None,
    }


def store(session: Session, deliveries: Sequence[Delivery], now: datetime) -> list[Stored]:
    """Insert the deliveries not stored yet; say for each which row holds it."""
    rows = [inbound_row(d, now) for d in deliveries]
    keys = {r["dedupe_key"] for r in rows}
    existing: dict[str, int] = dict(
        session.execute(
            select(Inbound.dedupe_key, Inbound.id).where(Inbound.dedupe_key.in_(keys))
        ).all()
    )
    fresh: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["dedupe_key"] not in existing:
            fresh.setdefault(row["dedupe_key"], row)
    raws = {key: row.pop("raw") for key, row in fresh.items()}
    inserted: dict[str, int] = dict(
        insert_ignore(session, Inbound, list(fresh.values()), Inbound.dedupe_key, Inbound.id)
    )
    if inserted:
        session.connection().execute(
            insert(InboundRaw),
            [{"inbound_id": i, "raw": raws[key]} for key, i in inserted.items()],
        )
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

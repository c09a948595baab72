"""The worker: claim pending inbound rows, run the pipeline, apply, record.

A batch is claimed in arrival order (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL), parsed outside any transaction, then decided and applied in one
transaction with a savepoint per message, so a reply later in the batch sees
the ticket an earlier message opened. A message that raises is rolled back to
its savepoint and retried later; after ``worker.max_attempts`` it is
quarantined with the error. A row left in ``processing`` by a crash returns
to ``pending`` (at start on SQLite; on PostgreSQL when its instance is found
dead, see `maild.service.cluster`, or after the lease). Nothing is ever deleted by
processing.

Several instances (PostgreSQL): a worker applies only rows still claimed by
its instance (re-checked ``FOR UPDATE`` in the applying transaction), and a
reply waits while an earlier message it refers to is still pending or being
processed elsewhere, so a reply and its original handled at the same moment
by two instances cannot open two tickets. Under an SMTP burst the worker
gives way to intake between transactions (`Worker.intake_busy`).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from maild.addresses import normalize_address
from maild.clock import Clock
from maild.config.settings import Settings
from maild.desk.agentreply import apply_decision
from maild.desk.apply import Applier, buffer_events, flush_events
from maild.errors import PermanentError
from maild.mail.parse import ParsedMessage
from maild.mail.replyaddr import ReplyToken, RequesterToken, find_reply_token, find_requester_token
from maild.mail.verp import Verp, first_verp, is_verp_address
from maild.pipeline import alerts
from maild.pipeline.correlate import AlertFacts, BouncedOutbox, Facts, TicketFacts, lookup_keys
from maild.pipeline.decide import decide
from maild.pipeline.decision import Decision, InboundMeta
from maild.pipeline.directory import EMPTY, Directory
from maild.pipeline.screen import recognisers
from maild.pipeline.triage import Rulebook, reload_rules
from maild.service.parsepool import ParsePool
from maild.service.parsepool import Result as ParseResult
from maild.store.db import Direct, claim_order, is_sqlite
from maild.store.models import Agent, Alert, Article, Contact, Inbound, Outbox, Ticket, Watcher
from maild.store.states import Direction, InboundStatus, Outcome, Source

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 64 * 1024 * 1024
# Messages applied per transaction: about 2 ms of work each, so a transaction
# holds SQLite's write lock for about 60 ms; every commit is an fsync, and with
# 16 the commits cost a sixth of the throughput (bench/run.py).
TXN_MESSAGES = 32
# SMTP clients wait for intake; nobody waits on a processing backlog of
# seconds: under an intake burst the worker pauses up to this long between
# transactions, and applies BUSY_TXN_MESSAGES per transaction (bench/run.py,
# worker process: SMTP p99 34 ms with 2, 39-45 ms with 4, same end to end).
YIELD_SECONDS = 0.02
# A transaction sized while intake was idle ends early, after this many, when
# intake becomes busy meanwhile: with 20 sessions there are moments when none
# is in DATA (just after a commit released their 250s), and a transaction of
# TXN_MESSAGES begun then held the lock 140-180 ms while every session's
# commit waited (bench/run.py: p99 150-200 ms in rounds with one, 80 without).
BUSY_TXN_MESSAGES = 2
# The first transaction of a batch is small: the worker starts on its first
# parsed messages while the parse processes go on with the rest. Without the
# look-ahead (PostgreSQL, or the first batch of a burst), waiting for 32
# parses at the start of every batch cost a fifth of the throughput.
FIRST_TXN_MESSAGES = 4
# A transaction takes each message's parse as it comes to it, not all of them
# before it starts: pulling a whole chunk's parses first made `maild import`
# wait 2.7 s of 17 s for the parse processes, idle half the time meanwhile.
# Inside a transaction (which holds SQLite's write lock) it waits at most this
# long for a parse; a slower one ends the transaction, and is waited for
# outside the next.
IN_TXN_PARSE_WAIT = 0.005
# Raw bytes read ahead for the look-ahead parses (beside the batch in hand,
# which MAX_BATCH_BYTES bounds): a typical batch is 2 MB.
AHEAD_BYTES = 16 * 1024 * 1024


class _Parse:
    """One row's parse as the worker waits for it: a ParsedMessage, or the
    Decision that sets the row aside (an unparseable or a too-often-failed one)."""

    __slots__ = ("future", "decision")

    def __init__(self, future: Future[ParseResult] | None, decision: Decision | None = None):
        self.future, self.decision = future, decision

    def wait(self, timeout: float | None) -> bool:
        """Whether the result is ready (waiting up to `timeout` seconds for it);
        a parse that failed is ready too: `result` raises its error."""
        if self.future is None or self.future.done():
            return True
        return bool(futures_wait((self.future,), timeout).done)

    def result(self) -> ParsedMessage | Decision:
        if self.decision is not None:
            return self.decision
        assert self.future is not None
        result = self.future.result()
        if isinstance(result, PermanentError):
            return Decision(Outcome.QUARANTINED, str(result))
        return result


@dataclass(frozen=True)
class Processed:
    inbound_id: int
    outcome: Outcome | None  # None: failed, will be retried
    ticket_id: int | None
    reason: str = ""
    queued: bool = False  # outgoing mail was queued
    source: str = ""
    received_at: datetime | None = None
    rule: str = ""  # the rule that set it aside, or marked it (imported_desk_reply)


class Deferred(Exception):
    """An earlier message of the same thread is not processed yet: try later."""


class Worker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        clock: Clock,
        applier: Applier,
        *,
        on_outbox: threading.Event | None = None,
        parser: ParsePool | None = None,
        rules: Rulebook | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.clock = clock
        self.applier = applier
        self.on_outbox = on_outbox
        self.parser = parser or ParsePool(0)
        # Look-ahead (single instance, parse processes): the next batch's
        # parses are queued behind this batch's, so the parse processes never
        # wait for the worker to claim (maild serve, bench/run.py: the worker
        # waited a fifth of its time for the first parses of each batch).
        # Only parses run ahead; claiming, and so crash accounting, does not.
        self._ahead: dict[int, Future[ParseResult]] = {}
        self._ahead_rows: list[Any] = []
        self.rules = rules or Rulebook.from_settings(settings)  # compiled once
        recognisers(settings.languages.directory)  # the language data, or a ConfigError at start
        alerts.compile_rules(settings.alerts)  # a bad [[alerts.rules]] pattern stops maild here
        self.parser.set_rules(self.rules)  # classified beside the parse
        self.instance_id: int | None = None  # set by the daemon (maild.cluster)
        # Rows claimed per batch, and applied per transaction. `maild import`,
        # which nobody waits on message by message, takes more of each: every
        # commit is an fsync.
        self.batch_size = settings.worker.batch_size
        self.txn_messages = TXN_MESSAGES
        # Intake first: while this says intake is busy, the worker waits (the
        # daemon sets it).
        self.intake_busy: Callable[[], bool] | None = None

    def _chunk_size(self) -> int:
        """Smaller transactions while intake is busy: its commits wait less."""
        return BUSY_TXN_MESSAGES if self._intake_waiting() else self.txn_messages

    def _intake_waiting(self) -> bool:
        busy = self.intake_busy
        return busy is not None and busy()

    def _give_way(self) -> None:
        deadline = time.monotonic() + YIELD_SECONDS
        while self._intake_waiting() and time.monotonic() < deadline:
            time.sleep(0.001)

    def reload_rules(self) -> None:
        """Compile the triage rules again (SIGHUP); keeps the old ones on error."""
        self.rules = reload_rules(self.settings)
        self.parser.set_rules(self.rules)

    # --- claiming --------------------------------------------------------------

    def recover(self, *, all_rows: bool = False) -> int:
        """Return rows stuck in ``processing`` to ``pending``.

        `all_rows` at start of a single-instance (SQLite) daemon; otherwise
        only rows whose lease ran out. A message that was in hand *alone*
        when its worker died is charged an attempt: three such deaths and it
        is quarantined. Messages that were in hand together are not charged
        (the culprit is unknown) but marked, so that each is retried alone.
        """
        now = self.clock.now()
        query = select(Inbound.id, Inbound.claimed_at).where(
            Inbound.status == InboundStatus.PROCESSING
        )
        if not all_rows:
            cutoff = now - timedelta(seconds=self.settings.worker.lease_seconds)
            query = query.where(or_(Inbound.claimed_at.is_(None), Inbound.claimed_at < cutoff))
        with self.sessions.begin() as session:
            stuck = session.execute(query).all()
            claims = Counter(claimed_at for _id, claimed_at in stuck)
            alone = [row_id for row_id, claimed_at in stuck if claims[claimed_at] == 1]
            together = [row_id for row_id, claimed_at in stuck if claims[claimed_at] > 1]
            if alone:
                session.execute(
                    update(Inbound)
                    .where(Inbound.id.in_(alone))
                    .values(
                        status=InboundStatus.PENDING,
                        attempts=Inbound.attempts + 1,
                        error="the worker stopped while handling it",
                    )  # fmt: skip
                )
            if together:
                session.execute(
                    update(Inbound)
                    .where(Inbound.id.in_(together))
                    .values(
                        status=InboundStatus.PENDING,
                        error="in hand when the worker stopped; retried on its own",
                    )  # fmt: skip
                )
        if stuck:
            log.warning("returned %d inbound message(s) stuck in processing to pending", len(stuck))
        return len(stuck)

    def _claim(self, limit: int) -> list[Inbound]:
        """Claim the next pending messages in arrival order.

        A message that failed before, or was in hand when a worker died, is
        claimed alone: if it brings the worker down again, it alone is
        charged for it.
        """
        now = self.clock.now()
        pending = select(Inbound.id, Inbound.size, Inbound.attempts, Inbound.error).where(
            Inbound.status == InboundStatus.PENDING
        )
        with self.sessions.begin() as session:
            candidates = session.execute(
                claim_order(pending.order_by(Inbound.id).limit(limit))
            ).all()
            ids: list[int] = []
            total = 0
            for row_id, size, attempts, error in candidates:
                alone = attempts > 0 or error is not None
                if ids and (alone or total + size > MAX_BATCH_BYTES):
                    break
                ids.append(row_id)
                total += size
                if alone:
                    break
            if not ids:
                return []
            session.execute(
                update(Inbound)
                .where(Inbound.id.in_(ids))
                .values(
                    status=InboundStatus.PROCESSING, claimed_at=now, claimed_by=self.instance_id
                )
            )
            rows = list(
                session.scalars(select(Inbound).where(Inbound.id.in_(ids)).order_by(Inbound.id))
            )
            if self.parser.size > 0 and is_sqlite(session):
                self._ahead_rows = self._peek(session, ids[-1], limit)
            session.expunge_all()
            return rows

    @staticmethod
    def _peek(session: Session, after: int, limit: int) -> list[Any]:
        """The pending rows a next claim will take (first attempts only), not claimed."""
        rows = []
        total = 0
        for row in session.execute(_AHEAD, {"after": after, "limit": limit}):
            total += row.size
            if total > AHEAD_BYTES:
                break
            rows.append(row)
        return rows

    # --- processing ------------------------------------------------------------

    def run_batch(self, limit: int | None = None) -> list[Processed]:
        rows = self._claim(limit or self.batch_size)
        if not rows:
            return []
        items = self._parsed(rows)
        ahead, self._ahead_rows = self._ahead_rows, []
        for row in ahead:  # queued behind this batch's parses
            if row.id not in self._ahead:
                self._ahead[row.id] = self.parser.submit(row.raw, _bounce_hint(row), row.recipient)
        failures: list[tuple[int, int, str]] = []
        results: list[Processed] = []
        # Apply in transactions of bounded duration: SQLite has one writer, and
        # the intake's commits (each SMTP 250 waits for one) must not queue
        # behind a long batch. Later messages are still being parsed in the
        # parse processes while earlier ones are applied.
        deferred: list[int] = []
        size = min(FIRST_TXN_MESSAGES, self._chunk_size())
        pending: list[tuple[Inbound, _Parse]] = []  # taken from `items`, not applied
        while True:
            pending += itertools.islice(items, max(0, size - len(pending)))
            chunk, pending = pending[:size], pending[size:]
            if not chunk:
                break
            size = self._chunk_size()
            if results:
                self._give_way()
            try:
                done, rest = self._process(chunk, deferred)
                results.extend(done)
                pending[:0] = rest
            except Exception:
                log.warning("a batch of %d failed; processing its messages one by one", len(chunk))
                for row, item in chunk:
                    try:
                        results.extend(self._process([(row, item)], deferred)[0])
                    except Exception as exc:
                        detail = "".join(traceback.format_exception_only(exc)).strip()
                        log.exception("inbound %d (%s): processing failed", row.id, row.message_id)
                        failures.append((row.id, row.attempts, detail))
                        results.append(Processed(row.id, None, None, detail, source=row.source))
        if failures:
            self._record_failures(failures)
        if deferred:
            self._release(deferred)
        if self.on_outbox is not None and any(p.queued for p in results):
            self.on_outbox.set()
        return results

    def _process(
        self, items: list[tuple[Inbound, _Parse]], deferred: list[int]
    ) -> tuple[list[Processed], list[tuple[Inbound, _Parse]]]:
        """Decide and apply `items` in one transaction (all or nothing); the
        results, and the items left for the next transaction (from the first
        whose parse is not ready within IN_TXN_PARSE_WAIT, or, once
        BUSY_TXN_MESSAGES are done, from where intake became busy).

        Rows no longer claimed by this instance are skipped; a reply whose
        original is not processed yet is deferred (it is decided before
        anything is written for it, so the transaction goes on).
        """
        results: list[Processed] = []
        logs: list[tuple[Inbound, Decision, int | None]] = []
        rest: list[tuple[Inbound, _Parse]] = []
        items[0][1].wait(None)  # the first before the transaction, however long
        with self.sessions.begin() as session:
            buffer_events(session)
            mine = self._still_mine(session, [row.id for row, _item in items])
            for index, (row, parse) in enumerate(items):
                if index >= BUSY_TXN_MESSAGES and self._intake_waiting():
                    rest = items[index:]  # intake needs the write lock: commit now
                    break
                if not parse.wait(IN_TXN_PARSE_WAIT):
                    rest = items[index:]
                    break
                item = parse.result()
                if row.id not in mine:
                    log.warning("inbound %d (%s): released to another instance meanwhile; "
                                "skipped", row.id, row.message_id)  # fmt: skip
                    continue
                try:
                    decision = (
                        item if isinstance(item, Decision) else self._decide(session, row, item)
                    )
                except Deferred as exc:
                    log.info("inbound %d (%s): waits for inbound %s of the same thread",
                             row.id, row.message_id, exc)  # fmt: skip
                    deferred.append(row.id)
                    results.append(Processed(row.id, None, None, "deferred", source=row.source))
                    continue
                applied = apply_decision(self.applier, session, row.id, decision, self.clock.now(),
                                         claimed_at=row.claimed_at, rules=self.rules)  # fmt: skip
                results.append(
                    Processed(
                        row.id,
                        applied.outcome,
                        applied.ticket_id,
                        decision.reason,
                        queued=bool(applied.outbox_ids),
                        source=row.source,
                        received_at=row.received_at,
                        rule=decision.rule,
                    )  # fmt: skip
                )
                logs.append((row, decision, applied.ticket_id))
            flush_events(session)
        for row, decision, ticket_id in logs:  # only what was committed
            self._log(row, decision, ticket_id)
        return results, rest

    def finish_interrupted(self, budget: float = 10.0) -> int:
        """Before accepting mail: process what a crash interrupted (each alone).

        A message that was in hand when the previous run died is retried
        before new mail competes for the worker, so one that was merely
        unlucky is done, and only one that kills the daemon again and again
        is charged its attempts (and quarantined).
        """
        interrupted = select(Inbound.id).where(
            Inbound.status == InboundStatus.PENDING,
            or_(Inbound.attempts > 0, Inbound.error.is_not(None)),
        )
        deadline = time.monotonic() + budget
        done = 0
        while time.monotonic() < deadline:
            with self.sessions() as session:
                if session.scalar(interrupted.limit(1)) is None:
                    break
            batch = self.run_batch()
            if not batch:
                break
            done += len(batch)
        if done:
            log.info("processed %d message(s) interrupted by the previous run", done)
        return done

    def drain(self) -> list[Processed]:
        """Process until nothing is pending (burst mode, for the CLI and tests).

        A message that fails is retried at once, up to ``worker.max_attempts``,
        then quarantined; so this always ends.
        """
        out: list[Processed] = []
        while batch := self.run_batch():
            out.extend(batch)
        return out

    def _parsed(self, rows: list[Inbound]) -> Iterator[tuple[Inbound, _Parse]]:
        """Each row with its parse (or the Decision to set it aside), in order.

        The parses are queued at once (or were, by the look-ahead); each
        result is waited for when its message is applied.
        """
        limit = self.settings.worker.max_attempts
        futures: dict[int, Future[ParseResult]] = {}
        for row in rows:
            if row.attempts < limit:
                future = self._ahead.pop(row.id, None)
                if future is None:
                    future = self.parser.submit(row.raw, _bounce_hint(row), row.recipient)
                futures[row.id] = future
        # Parses of later rows stay for the next claims (a retry claimed alone
        # comes in between); those of earlier rows another process took are dropped.
        last = rows[-1].id
        self._ahead = {i: f for i, f in self._ahead.items() if i > last}
        return self._in_order(rows, futures)

    def _in_order(
        self, rows: list[Inbound], futures: dict[int, Future[ParseResult]]
    ) -> Iterator[tuple[Inbound, _Parse]]:
        limit = self.settings.worker.max_attempts
        for row in rows:
            if row.attempts >= limit:
                reason = row.error or "the worker stopped while handling it"
                failed = f"processing failed {row.attempts} times; last: {reason}"
                yield row, _Parse(None, Decision(Outcome.QUARANTINED, failed))
            else:
                yield row, _Parse(futures[row.id])

    def _still_mine(self, session: Session, ids: list[int]) -> set[int]:
        """The claimed rows no one released meanwhile, locked until commit."""
        return set(
            session.connection().scalars(
                select(Inbound.id)
                .where(
                    Inbound.id.in_(ids),
                    Inbound.status == InboundStatus.PROCESSING,
                    Inbound.claimed_by == self.instance_id,
                )
                .with_for_update()
            )
        )

    def _wait_for_earlier(self, session: Session, row: Inbound, msg: ParsedMessage) -> None:
        """Raise `Deferred` while an earlier message this one refers to is unprocessed.

        Several instances only (one worker processes in arrival order). Checked
        before the facts are read: once the earlier row reads as done, its
        ticket and article are committed too.
        """
        if is_sqlite(session):
            return
        refs = list(msg.thread_ids())
        if not refs:
            return
        earlier = session.connection().scalar(
            select(Inbound.id)
            .where(
                Inbound.message_id.in_(refs),
                Inbound.id < row.id,
                Inbound.status.in_([InboundStatus.PENDING, InboundStatus.PROCESSING]),
            )
            .limit(1)
        )
        if earlier is not None:
            raise Deferred(earlier)

    def _release(self, ids: list[int]) -> None:
        """Deferred rows go back to pending; the wait is not a failed attempt."""
        with self.sessions.begin() as session:
            session.execute(
                update(Inbound)
                .where(Inbound.id.in_(ids), Inbound.claimed_by == self.instance_id)
                .values(status=InboundStatus.PENDING, claimed_by=None)
            )

    def _decide(self, session: Session, row: Inbound, msg: ParsedMessage) -> Decision:
        self._wait_for_earlier(session, row, msg)
        recipients = _recipients(row, msg)
        signer = self.applier.signer
        token = find_reply_token(signer, recipients)  # an agent's personal reply address
        sender = msg.sender.email if msg.sender else ""
        requester = find_requester_token(signer, recipients, sender) if sender else None
        facts = lookup_facts(session, msg, token=token, requester_token=requester,
                             directory=self.applier.directory)  # fmt: skip
        verp = first_verp(self.applier.signer, recipients)
        if verp is not None:
            facts = _with_bounced_outbox(session, facts, verp)
        if alerts.is_alert_sender(msg, self.settings):
            facts = with_alert_facts(session, facts, msg, self.settings)
        meta = InboundMeta(
            id=row.id,
            recipient=row.recipient,
            envelope_from=row.envelope_from,
            notify=row.notify,
            received_at=row.received_at,
            mailbox=row.mailbox,
            envelope_to=tuple(row.envelope_to or ()),
            source=row.source,
            wanted_by=row.replayed_by,
            was=f"{row.outcome} ({row.rule})" if row.replayed_by and row.rule else row.outcome,
        )
        now = self.clock.now()
        when = archive_time(row.source, msg.date, now)
        decision = decide(msg, meta, facts, self.settings, when, self.rules)
        return decision if when == now else replace(decision, occurred_at=when)

    def _record_failures(self, failures: list[tuple[int, int, str]]) -> None:
        now = self.clock.now()
        with self.sessions.begin() as session:
            for row_id, attempts, detail in failures:
                final = attempts + 1 >= self.settings.worker.max_attempts
                session.execute(
                    update(Inbound)
                    .where(Inbound.id == row_id)
                    .values(
                        attempts=attempts + 1,
                        status=InboundStatus.QUARANTINED if final else InboundStatus.PENDING,
                        error=detail[:4000],
                        outcome=str(Outcome.QUARANTINED) if final else None,
                        processed_at=now if final else None,
                    )
                )
                if final:
                    log.error(
                        "inbound %d quarantined after %d attempts: %s", row_id, attempts + 1, detail
                    )

    def _log(self, row: Inbound, decision: Decision, ticket_id: int | None) -> None:
        ticket = f"#{ticket_id}" if ticket_id else "-"
        level = logging.WARNING if decision.outcome == Outcome.QUARANTINED else logging.INFO
        log.log(level, "inbound %d %s ticket %s: %s (%s)", row.id, row.message_id or "(no Message-ID)",
                ticket, decision.outcome, decision.reason)  # fmt: skip


# --- the facts the pure pipeline needs -----------------------------------------


# An imported message dated before this is taken to have a wrong Date (a
# clock at 1970, a broken client) and is processed at the time of the import.
EARLIEST_ARCHIVE_DATE = datetime(1990, 1, 1, tzinfo=UTC)


def archive_time(source: str, date: datetime | None, now: datetime) -> datetime:
    """When a message happened, for the ticket: an imported archive's own Date
    (within reason), so tickets, articles, events and SLA deadlines carry the
    archive's dates; for everything else, now."""
    if source != Source.IMPORT or date is None or not EARLIEST_ARCHIVE_DATE <= date <= now:
        return now
    return date


def _bounce_hint(row: Inbound) -> bool:
    """The envelope says delivery report: null sender, or one of our VERP addresses."""
    if row.envelope_from is not None and row.envelope_from.strip("<> ") == "":
        return True
    if any(is_verp_address(a) for a in row.envelope_to or ()):
        return True
    return b"+bounces." in row.raw[:65536]  # a VERP address in Delivered-To / To


def _recipients(row: Inbound, msg: ParsedMessage) -> list[str]:
    """Where the message was delivered: its envelope recipients only.

    A signed reply or bounce address counts only as the address the mail was
    delivered to (SMTP/LMTP ``RCPT TO``, ``maild ingest --to``, an IMAP
    mailbox's ``delivery_header``): in To, Cc or a Delivered-To the sender
    wrote, it is only the sender's word, and anyone who once saw it could
    reuse it.
    """
    return list(row.envelope_to or ())


def _with_bounced_outbox(session: Session, facts: Facts, verp: Verp) -> Facts:
    row = session.execute(
        select(Outbox.id, Outbox.ticket_id, Outbox.rcpt_to).where(Outbox.id == verp.outbox_id)
    ).first()
    if row is None:
        return facts
    recipients = tuple(normalize_address(r) for r in row.rcpt_to)
    # The recipient this return path was made for; the older, per-mail form
    # speaks for a mail of one recipient only.
    if verp.recipient is None:
        recipient = recipients[0] if len(recipients) == 1 else None
    else:
        recipient = recipients[verp.recipient] if verp.recipient < len(recipients) else None
    bounced = BouncedOutbox(row.id, row.ticket_id, recipients, recipient)
    tickets = dict(facts.tickets)
    if row.ticket_id is not None and row.ticket_id not in tickets:
        tickets.update(ticket_facts(session, [row.ticket_id]))
    return replace(facts, bounced_outbox=bounced, tickets=tickets)


# Built once (constructing statements costs more than SQLite spends on them).
# Each known Message-ID with its ticket, direction, author and date (an
# archive's duplicate is the same message only if both match), and for our own
# mail who we sent it to (a reply that refers to it is from one of them, or
# not: maild.pipeline.verify).
_KNOWN_COLUMNS = select(
    Article.message_id, Article.ticket_id, Article.direction, Article.author_email,
    Article.sent_at, Outbox.rcpt_to,
).outerjoin(Outbox, Outbox.message_id == Article.message_id)  # fmt: skip
_KNOWN_IDS = _KNOWN_COLUMNS.where(Article.message_id.in_(bindparam("ids", expanding=True)))
_ID_KEYS = [f"m{i}" for i in range(16)]


@functools.cache
def _known_ids(n: int) -> Direct:
    """The lookup for `n` Message-IDs, one statement per count, run directly."""
    keys = [bindparam(k) for k in _ID_KEYS[:n]]
    return Direct(_KNOWN_COLUMNS.where(Article.message_id.in_(keys)))


_AHEAD = (
    select(
        Inbound.id,
        Inbound.raw,
        Inbound.size,
        Inbound.envelope_from,
        Inbound.envelope_to,
        Inbound.recipient,
    )
    .where(
        Inbound.status == InboundStatus.PENDING,
        Inbound.id > bindparam("after"),
        Inbound.attempts == 0,
        Inbound.error.is_(None),
    )
    .order_by(Inbound.id)
    .limit(bindparam("limit"))
)
_LANGUAGE = Direct(select(Contact.language).where(Contact.email == bindparam("email")))
_TICKET_COLUMNS = select(
    Ticket.id,
    Ticket.status,
    Ticket.subject,
    Ticket.language,
    Ticket.resolved_at,
    Ticket.closed_at,
    Ticket.priority,
    Ticket.tier,
    Ticket.security,
    Ticket.assignee_id,
    Contact.email,
    Contact.bounce_state,
).join(Contact, Ticket.requester_id == Contact.id)
_TICKETS = _TICKET_COLUMNS.where(Ticket.id.in_(bindparam("ids", expanding=True)))
_TICKET_ONE = Direct(_TICKET_COLUMNS.where(Ticket.id == bindparam("id")))
_WATCHER_COLUMNS = select(Watcher.ticket_id, Contact.email, Contact.bounce_state).join(
    Contact, Watcher.contact_id == Contact.id
)
_WATCHERS = _WATCHER_COLUMNS.where(Watcher.ticket_id.in_(bindparam("ids", expanding=True)))
_WATCHERS_ONE = Direct(_WATCHER_COLUMNS.where(Watcher.ticket_id == bindparam("id")))
_ASSIGNEES = select(Agent.id, Agent.email).where(Agent.id.in_(bindparam("ids", expanding=True)))


def lookup_facts(
    session: Session,
    msg: ParsedMessage,
    *,
    token: ReplyToken | None = None,
    requester_token: RequesterToken | None = None,
    directory: Directory = EMPTY,
) -> Facts:
    """One indexed query for every Message-ID the message names (and its own).

    Every mail maild sends is also an article, so the article table alone
    knows every Message-ID we stored or sent. A valid personal reply address
    (`token`) names its ticket directly.
    """
    keys = lookup_keys(msg)
    wanted_ids = list(keys.message_ids)
    if keys.own_message_id:
        wanted_ids.append(keys.own_message_id)
    known: dict[str, int] = {}
    sent_to: dict[str, frozenset[str]] = {}
    already = own_on = None
    if wanted_ids:
        rows: Iterable[Any]
        if len(wanted_ids) <= len(_ID_KEYS):  # the usual case: run directly
            params = dict(zip(_ID_KEYS, wanted_ids, strict=False))
            rows = _known_ids(len(wanted_ids)).all(session, params)
        else:
            rows = session.connection().execute(_KNOWN_IDS, {"ids": wanted_ids})
        for mid, tid, direction, author, sent_at, rcpt_to in rows:
            if mid == keys.own_message_id:
                own_on = own_on or tid
                if direction == Direction.IN and _same(msg, author, sent_at):
                    already = tid
            if mid in keys.message_ids:
                known.setdefault(mid, tid)
                if rcpt_to:
                    sent_to[mid] = frozenset(normalize_address(r) for r in _json_list(rcpt_to))
    wanted = set(known.values())
    if keys.subject_ticket is not None:
        wanted.add(keys.subject_ticket)
    token_ticket = token.ticket if token is not None and token.valid else None
    if token_ticket is None and requester_token is not None and requester_token.valid:
        token_ticket = requester_token.ticket
    if token_ticket is not None:
        wanted.add(token_ticket)
    language = None  # the contact's language matters to a new ticket's acknowledgement
    if msg.sender is not None and not wanted:
        row = _LANGUAGE.first(session, {"email": msg.sender.email})
        language = row[0] if row else None
    tickets = ticket_facts(session, wanted)
    if token_ticket not in tickets:  # a signed address of a ticket that is gone
        token_ticket = None
    return Facts(known_ids=known, tickets=tickets, already_stored_on=already, own_message_on=own_on,
                 sender_language=language, token_ticket=token_ticket, reply_token=token,
                 directory=directory, requester_token=requester_token,
                 sent_to=sent_to)  # fmt: skip


def _json_list(value: Any) -> list[str]:
    """A JSON column read directly: a list already, or its text on some drivers."""
    if isinstance(value, str):
        return list(json.loads(value))
    return list(value)


def _same(msg: ParsedMessage, author: str, sent_at: datetime | None) -> bool:
    """The article holds this very message: its Message-ID (the caller checked), its
    sender and its Date. A copy through a list (a subject tag, a footer) is the same
    message; a reused Message-ID on a message of another date is not."""
    same_sender = msg.sender is None or msg.sender.email == author
    return same_sender and sent_at == msg.date


def ticket_facts(session: Session, ids: Iterable[int]) -> dict[int, TicketFacts]:
    ids = list(ids)
    if not ids:
        return {}
    conn = session.connection()
    rows: Sequence[Any]
    pairs: Iterable[Any]
    if len(ids) == 1:  # a reply: its one ticket, run directly
        rows = _TICKET_ONE.all(session, {"id": ids[0]})
        pairs = _WATCHERS_ONE.all(session, {"id": ids[0]})
    else:
        rows = conn.execute(_TICKETS, {"ids": ids}).all()
        pairs = conn.execute(_WATCHERS, {"ids": ids})
    watchers: dict[int, set[str]] = {}
    marked: dict[int, set[str]] = {}  # participants whose mail bounced (maild.desk.apply)
    for tid, email, bounce_state in pairs:
        watchers.setdefault(tid, set()).add(email)
        if bounce_state != "ok":
            marked.setdefault(tid, set()).add(email)
    assignee_ids = {row[-3] for row in rows if row[-3] is not None}
    assignees: dict[int, str] = dict(
        conn.execute(_ASSIGNEES, {"ids": list(assignee_ids)}).all() if assignee_ids else []
    )
    out = {}
    for (
        tid,
        status,
        subject,
        language,
        resolved_at,
        closed_at,
        priority,
        tier,
        security,
        assignee_id,
        email,
        bounce_state,
    ) in rows:
        requester = normalize_address(email)
        if bounce_state != "ok":
            marked.setdefault(tid, set()).add(requester)
        ticket_watchers = frozenset(watchers.get(tid, set()))
        assignee = assignees.get(assignee_id) if assignee_id else None
        out[tid] = TicketFacts(
            id=tid,
            status=status,
            requester=requester,
            subject=subject,
            language=language,
            participants=frozenset(
                {requester, *ticket_watchers, *([assignee] if assignee else [])}
            ),
            resolved_at=resolved_at,
            closed_at=closed_at,
            priority=priority,
            tier=tier,
            security=security,
            assignee=assignee_id,
            watchers=ticket_watchers,
            bounced=frozenset(marked.get(tid, ())),
        )
    return out


_ALERT_COLUMNS = select(
    Alert.ticket_id,
    Alert.fold_key,
    Alert.is_open,
    Alert.state,
    Alert.occurrences,
    Alert.flaps,
    Alert.last_at,
    Alert.recovered_at,
    Alert.problem_id,
    Ticket.status,
    Ticket.priority,
    Ticket.resolved_at,
    Ticket.closed_at,
).join(Ticket, Alert.ticket_id == Ticket.id)


def with_alert_facts(
    session: Session, facts: Facts, msg: ParsedMessage, settings: Settings
) -> Facts:
    """The incidents a monitor's alerts may fold into: the latest per key (and per problem id)."""
    events = alerts.read(msg, settings)
    keys = list({e.fold_key for e in events})
    problem_ids = list({e.problem_id for e in events if e.problem_id})
    where = Alert.fold_key.in_(keys)
    if problem_ids:
        where = or_(where, Alert.problem_id.in_(problem_ids))
    by_key: dict[str, AlertFacts] = {}
    by_problem: dict[str, AlertFacts] = {}
    rows = session.connection().execute(
        _ALERT_COLUMNS.where(where).order_by(Alert.ticket_id.desc())
    )
    for row in rows:
        found = AlertFacts(
            ticket_id=row.ticket_id,
            fold_key=row.fold_key,
            is_open=row.is_open,
            state=row.state,
            status=row.status,
            priority=row.priority,
            occurrences=row.occurrences,
            flaps=row.flaps,
            last_at=row.last_at,
            recovered_at=row.recovered_at,
            finished_at=row.resolved_at or row.closed_at,
            problem_id=row.problem_id,
        )
        by_key.setdefault(row.fold_key, found)  # the newest incident of the key
        if row.problem_id:
            by_problem.setdefault(row.problem_id, found)
    return replace(facts, alerts=by_key, alert_problems=by_problem)


def single_instance(sessions: sessionmaker[Session]) -> bool:
    with sessions() as session:
        return is_sqlite(session)

"""The worker: claim pending inbound rows, run the pipeline, apply, record.

A batch is claimed in arrival order (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL), parsed outside any transaction, then decided and applied in one
transaction with a savepoint per message, so a reply later in the batch sees
the ticket an earlier message opened. A message that raises is rolled back to
its savepoint and retried later; after ``worker.max_attempts`` it is
quarantined with the error. A row left in ``processing`` by a crash returns
to ``pending`` (at start on SQLite, after the lease on PostgreSQL). Nothing is
ever deleted by processing.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from maild.addresses import normalize_address
from maild.apply import Applier
from maild.clock import Clock
from maild.config import Settings
from maild.correlate import Facts, TicketFacts, lookup_keys
from maild.db import claim_order, is_sqlite
from maild.decide import Decision, InboundMeta, decide
from maild.errors import PermanentError
from maild.models import Article, Contact, Inbound, Outbox, Ticket, Watcher
from maild.parse import ParsedMessage, parse
from maild.states import Direction, InboundStatus, Outcome

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Processed:
    inbound_id: int
    outcome: Outcome | None  # None: failed, will be retried
    ticket_id: int | None
    reason: str = ""


class Worker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        clock: Clock,
        applier: Applier,
        *,
        on_outbox: threading.Event | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.clock = clock
        self.applier = applier
        self.on_outbox = on_outbox

    # --- claiming --------------------------------------------------------------

    def recover(self, *, all_rows: bool = False) -> int:
        """Return rows stuck in ``processing`` to ``pending``.

        `all_rows` at start of a single-instance (SQLite) daemon; otherwise
        only rows whose lease ran out.
        """
        now = self.clock.now()
        stmt = update(Inbound).where(Inbound.status == InboundStatus.PROCESSING)
        if not all_rows:
            cutoff = now - timedelta(seconds=self.settings.worker.lease_seconds)
            stmt = stmt.where(or_(Inbound.claimed_at.is_(None), Inbound.claimed_at < cutoff))
        with self.sessions.begin() as session:
            count = session.execute(stmt.values(status=InboundStatus.PENDING)).rowcount
        if count:
            log.warning("returned %d inbound message(s) stuck in processing to pending", count)
        return count

    def _claim(self, limit: int) -> list[Inbound]:
        now = self.clock.now()
        with self.sessions.begin() as session:
            candidates = session.execute(
                claim_order(
                    select(Inbound.id, Inbound.size)
                    .where(Inbound.status == InboundStatus.PENDING)
                    .order_by(Inbound.id)
                    .limit(limit)
                )
            ).all()
            ids: list[int] = []
            total = 0
            for row_id, size in candidates:
                if ids and total + size > MAX_BATCH_BYTES:
                    break
                ids.append(row_id)
                total += size
            if not ids:
                return []
            session.execute(
                update(Inbound)
                .where(Inbound.id.in_(ids))
                .values(
                    status=InboundStatus.PROCESSING,
                    claimed_at=now,
                    attempts=Inbound.attempts + 1,
                )
            )
            rows = list(
                session.scalars(select(Inbound).where(Inbound.id.in_(ids)).order_by(Inbound.id))
            )
            session.expunge_all()
            return rows

    # --- processing ------------------------------------------------------------

    def run_batch(self, limit: int | None = None) -> list[Processed]:
        rows = self._claim(limit or self.settings.worker.batch_size)
        if not rows:
            return []
        parsed: list[ParsedMessage | Decision] = [self._parse(row) for row in rows]
        results: list[Processed] = []
        failures: list[tuple[int, int, str]] = []
        queued = False
        with self.sessions.begin() as session:
            for row, item in zip(rows, parsed, strict=True):
                inbound = session.merge(row, load=False)
                savepoint = session.begin_nested()
                try:
                    decision = (
                        item if isinstance(item, Decision) else self._decide(session, row, item)
                    )
                    applied = self.applier.apply(session, inbound, decision, self.clock.now())
                    savepoint.commit()
                except Exception as exc:
                    savepoint.rollback()
                    detail = "".join(traceback.format_exception_only(exc)).strip()
                    log.exception("inbound %d (%s): processing failed", row.id, row.message_id)
                    failures.append((row.id, row.attempts, detail))
                    results.append(Processed(row.id, None, None, detail))
                    continue
                queued = queued or bool(applied.outbox_ids)
                results.append(
                    Processed(row.id, applied.outcome, applied.ticket_id, decision.reason)
                )
                self._log(row, decision, applied.ticket_id)
        if failures:
            self._record_failures(failures)
        if queued and self.on_outbox is not None:
            self.on_outbox.set()
        return results

    def drain(self) -> list[Processed]:
        """Process until nothing is pending (burst mode, for the CLI and tests).

        A message that fails is retried at once, up to ``worker.max_attempts``,
        then quarantined; so this always ends.
        """
        out: list[Processed] = []
        while batch := self.run_batch():
            out.extend(batch)
        return out

    def _parse(self, row: Inbound) -> ParsedMessage | Decision:
        if row.attempts > self.settings.worker.max_attempts:
            return Decision(
                Outcome.QUARANTINED,
                f"processing did not finish after {row.attempts - 1} attempts "
                "(the worker crashed or was killed while handling it)",
            )
        try:
            return parse(row.raw)
        except PermanentError as exc:
            return Decision(Outcome.QUARANTINED, str(exc))
        except Exception as exc:  # the parser's own bug: retrying will not help
            log.exception("inbound %d: parser failed", row.id)
            return Decision(Outcome.QUARANTINED, f"parser failed: {type(exc).__name__}: {exc}")

    def _decide(self, session: Session, row: Inbound, msg: ParsedMessage) -> Decision:
        facts = lookup_facts(session, msg)
        meta = InboundMeta(
            id=row.id,
            recipient=row.recipient,
            envelope_from=row.envelope_from,
            notify=row.notify,
            received_at=row.received_at,
        )
        return decide(msg, meta, facts, self.settings, self.clock.now())

    def _record_failures(self, failures: list[tuple[int, int, str]]) -> None:
        now = self.clock.now()
        with self.sessions.begin() as session:
            for row_id, attempts, detail in failures:
                final = attempts >= self.settings.worker.max_attempts
                session.execute(
                    update(Inbound)
                    .where(Inbound.id == row_id)
                    .values(
                        status=InboundStatus.QUARANTINED if final else InboundStatus.PENDING,
                        error=detail[:4000],
                        outcome=str(Outcome.QUARANTINED) if final else None,
                        processed_at=now if final else None,
                    )
                )
                if final:
                    log.error(
                        "inbound %d quarantined after %d attempts: %s", row_id, attempts, detail
                    )

    def _log(self, row: Inbound, decision: Decision, ticket_id: int | None) -> None:
        ticket = f"#{ticket_id}" if ticket_id else "-"
        level = logging.WARNING if decision.outcome == Outcome.QUARANTINED else logging.INFO
        log.log(level, "inbound %d %s ticket %s: %s (%s)", row.id, row.message_id or "(no Message-ID)",
                ticket, decision.outcome, decision.reason)  # fmt: skip


# --- the facts the pure pipeline needs -----------------------------------------


def lookup_facts(session: Session, msg: ParsedMessage) -> Facts:
    keys = lookup_keys(msg)
    known: dict[str, int] = {}
    if keys.message_ids:
        ids = list(keys.message_ids)
        known.update(
            session.execute(
                select(Article.message_id, Article.ticket_id).where(Article.message_id.in_(ids))
            ).all()
        )
        missing = [i for i in ids if i not in known]
        if missing:
            known.update(
                (mid, tid)
                for mid, tid in session.execute(
                    select(Outbox.message_id, Outbox.ticket_id).where(
                        Outbox.message_id.in_(missing)
                    )
                )
                if tid is not None
            )
    already = None
    if keys.own_message_id:
        already = session.scalar(
            select(Article.ticket_id)
            .where(Article.message_id == keys.own_message_id, Article.direction == Direction.IN)
            .limit(1)
        )
    wanted = set(known.values())
    if keys.subject_ticket is not None:
        wanted.add(keys.subject_ticket)
    return Facts(known_ids=known, tickets=ticket_facts(session, wanted), already_stored_on=already)


def ticket_facts(session: Session, ids: Iterable[int]) -> dict[int, TicketFacts]:
    ids = list(ids)
    if not ids:
        return {}
    rows = session.execute(
        select(Ticket, Contact.email)
        .join(Contact, Ticket.requester_id == Contact.id)
        .where(Ticket.id.in_(ids))
    ).all()
    watchers: dict[int, set[str]] = {}
    for tid, email in session.execute(
        select(Watcher.ticket_id, Contact.email)
        .join(Contact, Watcher.contact_id == Contact.id)
        .where(Watcher.ticket_id.in_(ids))
    ):
        watchers.setdefault(tid, set()).add(email)
    out = {}
    for ticket, requester in rows:
        out[ticket.id] = TicketFacts(
            id=ticket.id,
            status=ticket.status,
            requester=normalize_address(requester),
            subject=ticket.subject,
            language=ticket.language,
            participants=frozenset({requester, *watchers.get(ticket.id, set())}),
            resolved_at=ticket.resolved_at,
            closed_at=ticket.closed_at,
        )
    return out


def single_instance(sessions: sessionmaker[Session]) -> bool:
    with sessions() as session:
        return is_sqlite(session)

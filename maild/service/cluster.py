"""Several instances on one database: who is alive, and who runs each singleton job.

Every ``maild serve`` registers an `Instance` row under a random id and
stamps the inbound and outbox rows it claims with that id (``claimed_by``).

On PostgreSQL an instance is alive while it holds a session-level advisory
lock on its own id, on a dedicated connection that it uses for nothing but
its heartbeat. The server drops the lock the moment the process dies (the
socket closes), when the connection has been idle past
``cluster.dead_after_seconds`` (``idle_session_timeout``: a hung process stops
pinging), or when TCP keepalives find the peer gone (a machine that vanished).
Every instance runs `Membership.reap()` every ``cluster.heartbeat_seconds``:
an instance whose lock it can take is dead; its claimed rows go back to the
queue and its row is deleted. So rows claimed by a dead instance return within
``heartbeat_seconds + dead_after_seconds`` at worst, within one heartbeat after a
crash. A worker re-checks that it still owns a row (``FOR UPDATE``) in the
transaction that applies it, so an instance wrongly declared dead cannot apply
a message a second time.

On SQLite there is one instance: the rows of any earlier run are released at
start, and every singleton lock is granted.

Singleton jobs (each sweep, each IMAP mailbox):

- `singleton_lock(session, name)`: for work done inside one transaction;
  held until it commits (``pg_try_advisory_xact_lock``).
- `hold_singleton(engine, name)`: for longer work (an IMAP IDLE loop, a sweep
  with several transactions); held on a dedicated connection until the block
  ends or the process dies.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from maild.clock import Clock
from maild.store.db import is_sqlite
from maild.store.models import Inbound, Instance, Outbox
from maild.store.states import InboundStatus, OutboxStatus

log = logging.getLogger(__name__)

# Namespaces keep instance locks and job locks apart from any other user of
# advisory locks on the same database.
_INSTANCE_NS = "maild-instance:"
_JOB_NS = "maild-job:"


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` from a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _is_pg(bind: Engine | Connection | Session) -> bool:
    if isinstance(bind, Session):
        return not is_sqlite(bind)
    dialect = bind.dialect if isinstance(bind, Engine) else bind.engine.dialect
    return dialect.name == "postgresql"


def singleton_lock(session: Session, name: str) -> bool:
    """Try to take the job lock `name` until the session's transaction ends.

    True when this instance may run the job now (always on SQLite).
    """
    if not _is_pg(session):
        return True
    key = lock_key(_JOB_NS + name)
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}))


def _lock_engine(engine: Engine) -> Engine:
    """An unpooled engine for connections that hold session-level locks."""
    return create_engine(engine.url, poolclass=NullPool)


def _tune_lock_connection(conn: Connection, idle_timeout: float | None) -> None:
    # A peer that vanished without closing its socket is noticed in ~20 s.
    conn.exec_driver_sql("SET tcp_keepalives_idle = 5")
    conn.exec_driver_sql("SET tcp_keepalives_interval = 5")
    conn.exec_driver_sql("SET tcp_keepalives_count = 3")
    if idle_timeout is not None:
        try:
            ms = max(int(idle_timeout * 1000), 1000)
            conn.exec_driver_sql(f"SET idle_session_timeout = {ms}")
        except Exception as exc:  # PostgreSQL < 14: only death and keepalives count
            log.warning("idle_session_timeout not supported (%s); a hung instance is "
                        "only noticed when its connection drops", type(exc).__name__)  # fmt: skip


@dataclass
class Singleton:
    """A job lock held on its own connection (see `hold_singleton`)."""

    name: str
    conn: Connection | None

    def still_held(self) -> bool:
        """Ping the lock's connection; False when it (and so the lock) is gone."""
        if self.conn is None:
            return True
        try:
            self.conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False


@contextmanager
def hold_singleton(
    engine: Engine, name: str, *, idle_timeout: float | None = None
) -> Iterator[Singleton | None]:
    """Hold the job lock `name` for the block, or yield None if another has it.

    The lock lives on a dedicated connection and is released when the block
    ends, or by the server when this process dies. With `idle_timeout` the
    server also drops it when the holder stops calling `Singleton.still_held()`
    for that long (a hung holder). SQLite: always granted.
    """
    if not _is_pg(engine):
        yield Singleton(name, None)
        return
    lock_engine = _lock_engine(engine)
    conn = lock_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    key = lock_key(_JOB_NS + name)
    try:
        _tune_lock_connection(conn, idle_timeout)
        got = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}))
        if not got:
            yield None
            return
        try:
            yield Singleton(name, conn)
        finally:
            with suppress(Exception):  # if the connection is gone, so is the lock
                conn.scalar(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        try:
            conn.close()
        finally:
            lock_engine.dispose()


def run_singleton(engine: Engine, name: str, job: Callable[[], Any]) -> bool:
    """Run `job` if no other instance is running the job `name`; True if it ran."""
    with hold_singleton(engine, name) as held:
        if held is None:
            log.debug("job %s: another instance holds it", name)
            return False
        job()
        return True


class Membership:
    """This instance's registration, heartbeat and the reaping of dead peers."""

    def __init__(
        self,
        engine: Engine,
        sessions: sessionmaker[Session],
        clock: Clock,
        *,
        dead_after: float = 20.0,
        on_new_id: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.sessions = sessions
        self.clock = clock
        self.dead_after = dead_after
        self.on_new_id = on_new_id
        self.pg = _is_pg(engine)
        self.id: int | None = None
        self._lock_engine: Engine | None = None
        self._conn: Connection | None = None
        self._mutex = threading.Lock()
        self.reaped = 0  # instances found dead by this one

    # --- own registration --------------------------------------------------

    def register(self) -> int:
        with self._mutex:
            return self._register()

    def _register(self) -> int:
        self._drop_connection()
        new_id = secrets.randbits(62) + 1
        now = self.clock.now()
        if self.pg:
            # Take the liveness lock before the row is visible: a peer that
            # sees the row always finds the lock held while we live.
            self._lock_engine = self._lock_engine or _lock_engine(self.engine)
            conn = self._lock_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                _tune_lock_connection(conn, self.dead_after)
                conn.execute(
                    text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(f"{_INSTANCE_NS}{new_id}")}
                )
                conn.execute(
                    Instance.__table__.insert().values(
                        id=new_id,
                        hostname=socket.gethostname()[:255],
                        pid=os.getpid(),
                        started_at=now,
                        heartbeat_at=now,
                    )  # fmt: skip
                )
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        else:
            with self.sessions.begin() as session:
                session.execute(delete(Instance))  # one instance on SQLite: earlier runs are gone
                session.add(Instance(id=new_id, hostname=socket.gethostname()[:255],
                                     pid=os.getpid(), started_at=now, heartbeat_at=now))  # fmt: skip
        old, self.id = self.id, new_id
        log.info("instance %d registered%s", new_id, f" (was {old})" if old else "")
        if self.on_new_id is not None:
            self.on_new_id(new_id)
        return new_id

    def heartbeat(self) -> bool:
        """Prove we are alive; re-register if we were declared dead. True if ok."""
        with self._mutex:
            if self.id is None:
                self._register()
                return True
            now = self.clock.now()
            stmt = update(Instance).where(Instance.id == self.id).values(heartbeat_at=now)
            try:
                if self.pg:
                    assert self._conn is not None
                    count = self._conn.execute(stmt).rowcount
                else:
                    with self.sessions.begin() as session:
                        count = session.execute(stmt).rowcount
            except Exception as exc:
                log.warning("instance %d: heartbeat failed (%s: %s); registering again",
                            self.id, type(exc).__name__, exc)  # fmt: skip
                count = 0
            if count == 1:
                return True
            log.warning("instance %d was declared dead by a peer; registering again", self.id)
            try:
                self._register()
            except Exception as exc:
                log.error("cannot register with the database: %s: %s", type(exc).__name__, exc)
            return False

    def leave(self) -> None:
        """Clean exit: hand back what we claimed and unregister."""
        with self._mutex:
            if self.id is None:
                return
            try:
                with self.sessions.begin() as session:
                    release_claims(session, [self.id], self.clock)
                    session.execute(delete(Instance).where(Instance.id == self.id))
            except Exception as exc:
                log.warning("instance %d: could not unregister cleanly (%s); peers will "
                            "release its rows", self.id, type(exc).__name__)  # fmt: skip
            self._drop_connection()
            if self._lock_engine is not None:
                self._lock_engine.dispose()
                self._lock_engine = None
            self.id = None

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
            self._conn = None

    # --- peers ---------------------------------------------------------------

    def reap(self) -> list[int]:
        """Find dead instances, return their claimed rows to the queues."""
        if not self.pg:
            return []
        dead: list[int] = []
        with self.sessions.begin() as session:
            # Never wait long on a row a live worker has locked: next round.
            session.execute(text("SET LOCAL lock_timeout = '2s'"))
            others = session.scalars(select(Instance.id).where(Instance.id != self.id)).all()
            for other in others:
                free = session.scalar(
                    text("SELECT pg_try_advisory_xact_lock(:k)"),
                    {"k": lock_key(f"{_INSTANCE_NS}{other}")},
                )
                if free:
                    dead.append(other)
            if dead:
                inbound, outbox = release_claims(session, dead, self.clock)
                session.execute(delete(Instance).where(Instance.id.in_(dead)))
                log.warning("instance(s) %s gone: %d inbound and %d outgoing message(s) "
                            "returned to the queue", ", ".join(map(str, dead)), inbound,
                            outbox)  # fmt: skip
            # Rows stamped with an id no instance holds any more (its holder was
            # declared dead and registered again under a new id): theirs is gone.
            orphans = release_orphans(session, self.clock)
            if any(orphans):
                log.warning("%d inbound and %d outgoing message(s) claimed under a retired "
                            "instance id returned to the queue", *orphans)  # fmt: skip
        self.reaped += len(dead)
        return dead

    def alive(self) -> int:
        """How many instances are registered (alive or not yet reaped)."""
        with self.sessions() as session:
            return len(session.scalars(select(Instance.id)).all())


def release_orphans(session: Session, clock: Clock) -> tuple[int, int]:
    """Return rows claimed under an instance id that is no longer registered."""
    known = select(Instance.id)
    inbound = session.execute(
        update(Inbound)
        .where(
            Inbound.status == InboundStatus.PROCESSING,
            Inbound.claimed_by.is_not(None),
            Inbound.claimed_by.not_in(known),
        )
        .values(status=InboundStatus.PENDING, claimed_by=None)
    ).rowcount
    outbox = session.execute(
        update(Outbox)
        .where(
            Outbox.status == OutboxStatus.PENDING,
            Outbox.claimed_by.is_not(None),
            Outbox.claimed_by.not_in(known),
        )
        .values(claimed_by=None, claimed_at=None, next_attempt_at=clock.now())
    ).rowcount
    return inbound, outbox


def release_claims(session: Session, instance_ids: list[int], clock: Clock) -> tuple[int, int]:
    """Return rows claimed by these (dead) instances: inbound to pending, outbox due now.

    As `Worker.recover`: a message a dead instance had in hand alone is
    charged an attempt (three such deaths and it is quarantined); messages in
    hand together are marked to be retried each on its own.
    """
    stuck = session.execute(
        select(Inbound.id, Inbound.claimed_at).where(
            Inbound.status == InboundStatus.PROCESSING, Inbound.claimed_by.in_(instance_ids)
        )
    ).all()
    claims = Counter(claimed_at for _id, claimed_at in stuck)
    alone = [row_id for row_id, claimed_at in stuck if claims[claimed_at] == 1]
    together = [row_id for row_id, claimed_at in stuck if claims[claimed_at] > 1]
    if alone:
        session.execute(
            update(Inbound)
            .where(Inbound.id.in_(alone), Inbound.status == InboundStatus.PROCESSING)
            .values(
                status=InboundStatus.PENDING,
                claimed_by=None,
                attempts=Inbound.attempts + 1,
                error="the instance handling it stopped",
            )  # fmt: skip
        )
    if together:
        session.execute(
            update(Inbound)
            .where(Inbound.id.in_(together), Inbound.status == InboundStatus.PROCESSING)
            .values(
                status=InboundStatus.PENDING,
                claimed_by=None,
                error="in hand when its instance stopped; retried on its own",
            )  # fmt: skip
        )
    outbox = session.execute(
        update(Outbox)
        .where(Outbox.status == OutboxStatus.PENDING, Outbox.claimed_by.in_(instance_ids))
        .values(claimed_by=None, claimed_at=None, next_attempt_at=clock.now())
    ).rowcount
    return len(stuck), outbox

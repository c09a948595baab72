"""Engines, sessions, migrations, and the only backend-specific SQL in maild.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` and
foreign keys on; every transaction starts with ``BEGIN IMMEDIATE`` so a writer
never fails half-way on a lock upgrade. Within one process the threads take
turns for that write lock in arrival order (`FairLock`): SQLite's own busy
handler polls with sleeps of up to 100 ms, which under steady intake starved
the worker for seconds. Across processes the daemon's engine looks for the
lock every 0.5 ms (`make_engine(prompt=True)`), so intake's commits follow the
worker and sender processes' transactions at once. PostgreSQL gets the same models and
migrations; row claims use ``FOR UPDATE SKIP LOCKED`` there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, case, create_engine, event, func, inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from maild.errors import ConfigError
from maild.store.models import Base, Contact, UTCDateTime

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(
    url: str, *, pool_size: int = 5, read_only: bool = False, prompt: bool = False
) -> Engine:
    """An engine for `url`; creates a SQLite file 0600 (its directory 0700) if missing.

    `read_only` (SQLite): transactions begin deferred and cannot write
    (``query_only``), so a reader never queues for the write lock behind
    intake and the worker; WAL gives it a consistent snapshot meanwhile.
    `prompt` (SQLite): a transaction takes the write lock as soon as another
    process lets it go (`_begin_promptly`): the daemon's, whose intake commits
    SMTP sessions wait for.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _create_private(Path(parsed.database))
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
        if read_only:
            _configure_sqlite_reader(engine)
        else:
            _configure_sqlite(engine, prompt=prompt)
        return engine
    # A database that does not answer is an error after 10 s, not a hang.
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=10,
                         connect_args={"connect_timeout": 10})  # fmt: skip


def _create_private(path: Path) -> None:
    """Create the database file (and its directory) for its owner alone.

    SQLite gives its -wal and -shm files the mode of the database file, so
    they are private too. An existing file is left as the admin made it.
    """
    if path.exists():
        return
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # another process created it meanwhile
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class FairLock:
    """A lock handed to its waiters first come, first served (any thread may release)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locked = False
        self._waiters: deque[threading.Event] = deque()

    def acquire(self, timeout: float) -> bool:
        with self._mutex:
            if not self._locked:
                self._locked = True
                return True
            turn = threading.Event()
            self._waiters.append(turn)
        if turn.wait(timeout):
            return True
        with self._mutex:
            if turn.is_set():  # handed over just as we gave up
                return True
            self._waiters.remove(turn)
            return False

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().set()  # stays locked: ownership passes on
            else:
                self._locked = False


_LOCK_TIMEOUT = 60.0  # as busy_timeout


_POLL_FIRST, _POLL_LATER, _POLL_SWITCH = 0.0005, 0.005, 0.05  # seconds


def _begin_promptly(dbapi_conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, looking for the write lock every 0.5 ms (5 ms after
    the first 50 ms) while another process holds it, up to the busy timeout.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ms and more
    between looks: an intake commit that found the worker process's
    transaction running slept well past its end (bench/run.py: SMTP p99 of
    62-103 ms with the worker in its own process). Only the begin polls; the
    transaction's statements keep the busy timeout.
    """
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        started = time.monotonic()
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                waited = time.monotonic() - started
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # and BUSY_RECOVERY
                if not busy or waited > _LOCK_TIMEOUT:
                    raise
                time.sleep(_POLL_FIRST if waited < _POLL_SWITCH else _POLL_LATER)
    finally:
        dbapi_conn.execute("PRAGMA busy_timeout=60000")


def _configure_sqlite(engine: Engine, *, prompt: bool = False) -> None:
    write_lock = FairLock()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        # Freed space is overwritten with zeros, so a deleted or updated text
        # leaves no copy in the file (maild contact erase, retention).
        cur.execute("PRAGMA secure_delete=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if not write_lock.acquire(_LOCK_TIMEOUT):
            raise sqlite3.OperationalError("database is locked (waited for another thread)")
        conn.info["maild_write_lock"] = True
        try:
            if prompt:
                _begin_promptly(conn.connection.dbapi_connection)
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(conn.info)
            raise

    def _release(info: dict[str, Any]) -> None:
        if info.pop("maild_write_lock", False):
            write_lock.release()

    @event.listens_for(engine, "commit")
    def _on_commit(conn: Any) -> None:
        _release(conn.info)

    @event.listens_for(engine, "rollback")
    def _on_rollback(conn: Any) -> None:
        _release(conn.info)

    @event.listens_for(engine.pool, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        _release(record.info)


CHECKPOINT_SECONDS = 0.5
# Past this many WAL pages (64 MiB at 4 KiB) a commit checkpoints after all:
# the backstop for a checkpointer that cannot keep up or is gone.
CHECKPOINT_BACKSTOP_PAGES = 16384


def checkpoint_late(engine: Engine) -> None:
    """`engine`'s commits leave the WAL to a `Checkpointer` (up to the backstop)."""

    @event.listens_for(engine, "connect")
    def _writers_checkpoint_late(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_BACKSTOP_PAGES}")

    engine.dispose()  # connections made before this listener get it too


class Checkpointer:
    """Copies SQLite's WAL into the database from a thread of its own.

    By default the commit that takes the WAL past 1,000 pages copies it back
    before it returns; under ``maild serve`` that is an intake commit about
    once a second, and every SMTP session waiting for a ``250`` in that commit
    waits for the copy and its fsyncs as well (bench/run.py: p99 up to 194 ms;
    with this thread 68-72 ms). Here a ``PASSIVE`` checkpoint runs every
    `CHECKPOINT_SECONDS` beside the writers, and their own automatic
    checkpoint is moved out to `CHECKPOINT_BACKSTOP_PAGES`; `stop` copies
    what the last interval left. A failing checkpoint is logged and tried
    again: nothing depends on it but the WAL's size, and the backstop bounds
    that. ``maild import`` runs one too: its commits then leave the copy (a
    third of the database's writes, and their fsyncs) to this thread, which
    runs on the other core while the import goes on.
    """

    def __init__(self, engine: Engine, interval: float = CHECKPOINT_SECONDS) -> None:
        self.path = engine.url.database or ""
        self.interval = interval
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

        checkpoint_late(engine)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        failing = False
        last = False
        while not last:
            last = self._stop.wait(self.interval)  # stopping: one more, for the last interval
            try:
                if conn is None:
                    conn = sqlite3.connect(self.path, timeout=1.0, isolation_level=None,
                                           check_same_thread=False)  # fmt: skip
                    conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.runs += 1
                if failing:
                    log.info("WAL checkpoints work again")
                    failing = False
            except sqlite3.Error as exc:
                if not failing:
                    log.warning(
                        "WAL checkpoint failed (%s); trying again; commits checkpoint "
                        "themselves past %d pages",
                        exc,
                        CHECKPOINT_BACKSTOP_PAGES,
                    )
                    failing = True
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
                    conn = None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


def purge_deleted(engine: Engine, tables: Sequence[str] = ()) -> bool:
    """After personal data was removed, leave no copy of it behind.

    SQLite (``secure_delete`` zeroes freed space as it goes): copy the WAL into
    the database and truncate it, retrying while readers hold old pages; True
    when the WAL is empty. PostgreSQL: VACUUM the tables, so dead rows are
    removed (their space is reused, not zeroed, until then).
    """
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        try:
            for _ in range(120):
                busy, _frames, _copied = raw.driver_connection.execute(  # type: ignore[union-attr]
                    "PRAGMA wal_checkpoint(TRUNCATE)"
                ).fetchone()
                if not busy:
                    return True
                time.sleep(0.25)
            return False
        finally:
            raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in tables:
            conn.exec_driver_sql(f'VACUUM "{table}"')
    return True


def _configure_sqlite_reader(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA query_only=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


def is_sqlite(engine_or_session: Engine | Session) -> bool:
    bind = (
        engine_or_session.get_bind()
        if isinstance(engine_or_session, Session)
        else engine_or_session
    )
    return bind.dialect.name == "sqlite"


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=True)


def insert_ignore(
    session: Session, model: type[Base], rows: Sequence[dict[str, Any]], *returning: Any
) -> list[Any]:
    """INSERT rows, skipping those that hit a unique constraint.

    Returns the `returning` columns of the rows actually inserted, as rows.
    """
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(model).on_conflict_do_nothing()
    conn = session.connection()
    if returning:
        return list(conn.execute(stmt.returning(*returning), list(rows)).all())
    conn.execute(stmt, list(rows))
    return []


class Direct:
    """A hot-path statement, compiled by SQLAlchemy once, run on the DBAPI cursor.

    Per execution, SQLAlchemy spends about 40 µs on a wide INSERT (parameter
    processing, execution context, result object) against about 12 µs that
    sqlite3 spends on the whole statement. For the handful of statements run
    for every message, this compiles the Core statement once per dialect and
    set of keys (the same SQL SQLAlchemy would send), converts the values with
    each column type's own bind processor, fills Python-side column defaults,
    executes on the session's DBAPI connection inside its transaction, and
    converts result values with each selected column type's result processor.
    A DBAPI error comes out wrapped as `Connection.execute` wraps it.
    No expanding (``IN``) parameters: build one statement per count instead.
    """

    def __init__(self, stmt: Any) -> None:
        self.stmt = stmt
        self._plans: dict[tuple[str, frozenset[str]], _Plan] = {}

    def _plan(self, dialect: Any, keys: frozenset[str]) -> _Plan:
        plan = self._plans.get((dialect.name, keys))
        if plan is None:
            plan = _Plan(self.stmt, dialect, keys)
            self._plans[(dialect.name, keys)] = plan
        return plan

    def _run(self, session: Session, params: Mapping[str, Any]) -> tuple[Any, _Plan]:
        conn = session.connection()
        dialect = conn.dialect
        plan = self._plan(dialect, frozenset(params))
        args = plan.args(params)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(plan.sql, args)
        except dialect.loaded_dbapi.Error as exc:
            gone = dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
            cursor.close()
            if gone:
                conn.invalidate(exc)
            raise DBAPIError.instance(plan.sql, args, exc, dialect.loaded_dbapi.Error,
                                      connection_invalidated=gone, dialect=dialect) from exc  # fmt: skip
        return cursor, plan

    def execute(self, session: Session, params: Mapping[str, Any]) -> Any:
        """Run with `params`; returns the (open) DBAPI cursor, rows unconverted."""
        return self._run(session, params)[0]

    def scalar_one(self, session: Session, params: Mapping[str, Any]) -> Any:
        """The first value of the one row (``RETURNING id``)."""
        return self.one(session, params)[0]

    def one(self, session: Session, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The one row."""
        row = self.first(session, params)
        if row is None:
            raise LookupError("the statement returned no row")
        return row

    def first(self, session: Session, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row, or None."""
        cursor, plan = self._run(session, params)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else plan.convert(row)

    def all(self, session: Session, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row."""
        cursor, plan = self._run(session, params)
        try:
            return [plan.convert(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def rowcount(self, session: Session, params: Mapping[str, Any]) -> int:
        cursor = self.execute(session, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()


class _LastValue:
    """A bind processor that remembers its last conversion.

    A message's ``now`` goes into a dozen date-time columns across its
    statements; converting date-times was a tenth of the worker's own time
    (bench/run.py), mostly that same value again. Date-times are immutable,
    and the remembered input is kept alive, so the identity test cannot be
    fooled by a reused address. The pair is replaced whole: thread-safe.
    """

    __slots__ = ("_convert", "_last")

    def __init__(self, convert: Any) -> None:
        self._convert = convert
        self._last: tuple[Any, Any] = (_NOTHING, None)

    def __call__(self, value: Any) -> Any:
        last = self._last
        if value is last[0]:
            return last[1]
        out = self._convert(value)
        self._last = (value, out)
        return out


_NOTHING = object()


class _Plan:
    def __init__(self, stmt: Any, dialect: Any, keys: frozenset[str]) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=sorted(keys))
        self.sql: str = compiled.string
        names = compiled.positiontup if compiled.positional else list(compiled.binds)
        if getattr(compiled, "escaped_bind_names", None):
            raise ValueError(f"bind names need escaping: {compiled.escaped_bind_names}")
        self.positional: bool = compiled.positional
        self.names: list[str] = list(names or ())
        self.processors: list[Any] = []
        for name in self.names:
            bind = compiled.binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None and isinstance(bind.type, UTCDateTime):
                processor = _LastValue(processor)
            self.processors.append(processor)
        # Python-side column defaults SQLAlchemy would compute at execution.
        self.defaults: dict[str, Any] = {}
        for column in (*compiled.insert_prefetch, *compiled.update_prefetch):
            default = column.default if column in compiled.insert_prefetch else column.onupdate
            if default is None or not (default.is_scalar or default.is_callable):
                raise ValueError(f"{column.key}: unsupported default")
            self.defaults[column.key] = default
        # Literals in the statement (``status == 'processing'``) carry their value.
        self.literals: dict[str, Any] = {
            name: compiled.binds[name].effective_value
            for name in self.names
            if name not in self.defaults and not compiled.binds[name].required
        }
        self.todo = list(zip(self.names, self.processors, strict=True))
        # A SELECT's values as SQLAlchemy would hand them out (SQLite returns
        # date-times as text, for one). RETURNING is used for integer ids only.
        self.results: list[Any] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in getattr(stmt, "selected_columns", ())
        ]
        self.identity = not any(self.results)

    def convert(self, row: Sequence[Any]) -> tuple[Any, ...]:
        if self.identity:
            return tuple(row)
        return tuple(
            value if proc is None else proc(value)
            for value, proc in zip(row, self.results, strict=False)
        )

    def args(self, params: Mapping[str, Any]) -> Any:
        values = []
        for name, processor in self.todo:
            if name in params:
                value = params[name]
            elif name in self.literals:
                value = self.literals[name]
            else:
                default = self.defaults[name]
                value = default.arg if default.is_scalar else default.arg(None)
            values.append(processor(value) if processor is not None else value)
        if self.positional:
            return tuple(values)
        return dict(zip(self.names, values, strict=True))


_UPSERT_CONTACT: dict[str, Any] = {}


def upsert_contact(session: Session) -> Any:
    """INSERT a contact or keep the existing one; RETURNING (id, name, language, bounce_state).

    An existing contact keeps its name and language, but gets the given ones
    where it had none.
    """
    dialect = session.get_bind().dialect.name
    stmt = _UPSERT_CONTACT.get(dialect)
    if stmt is None:
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        base = insert(Contact)
        stmt = base.on_conflict_do_update(
            index_elements=[Contact.email],
            set_={
                "name": case((Contact.name == "", base.excluded.name), else_=Contact.name),
                "language": func.coalesce(Contact.language, base.excluded.language),
            },
        ).returning(Contact.id, Contact.name, Contact.language, Contact.bounce_state)
        _UPSERT_CONTACT[dialect] = stmt
    return stmt


def claim_order(stmt: Any) -> Any:
    """Add row locking that skips rows another instance already holds.

    Rendered as ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises
    writers with ``BEGIN IMMEDIATE`` and ignores it.
    """
    return stmt.with_for_update(skip_locked=True)


# --- migrations ------------------------------------------------------------
# Alembic is imported inside these functions: it costs ~0.1 s of start-up, and
# only `db upgrade` and `serve` (its schema check) need it.


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


_REVISION_RE = re.compile(r'^(down_revision|revision)\b[^=]*=\s*"([^"]*)"', re.MULTILINE)


def head_of_files(folder: Path = MIGRATIONS / "versions") -> str | None:
    """The head revision, read from the migration files without importing Alembic.

    (Alembic's script loader costs a CLI command a noticeable part of its
    start; a test checks that both agree.)
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in folder.glob("*.py"):
        for kind, value in _REVISION_RE.findall(path.read_text(encoding="utf-8")):
            (revisions if kind == "revision" else parents).add(value)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def stored_revision(engine: Engine) -> str | None:
    """The revision recorded in the database (None: no alembic_version table)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


def is_empty(engine: Engine) -> bool:
    names = set(inspect(engine).get_table_names())
    return not (names - {"alembic_version"})


def ensure_schema(engine: Engine) -> None:
    """Upgrade an empty database; refuse one that is behind (say what to run)."""
    if is_empty(engine):
        log.info("empty database: creating the schema")
        upgrade(engine)
        return
    current, head = current_revision(engine), head_revision(engine)
    if current != head:
        raise ConfigError(
            "database.url",
            f"database schema is at revision {current}, this maild needs {head}: "
            "run 'maild db upgrade'",
        )

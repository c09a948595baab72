"""Shared fixtures: databases (SQLite and a real PostgreSQL), settings, a
`Desk` harness that runs worker and sender in burst mode, and a daemon
running its real SMTP listener on an ephemeral loopback port.

Services that are missing (PostgreSQL, Dovecot, ...) skip their tests
locally; with ``MAILD_TEST_REQUIRE_SERVICES=1`` (set by ``.ci/run``) they
fail instead. Either way the run ends with one loud line saying how many
tests did not run and for want of what, and when ``CI`` is set a run with
such skips exits non-zero: a green run always means the whole suite ran.

Hypothesis runs derandomized (the same examples every run, no example
database) in CI and under ``MAILD_TEST_REQUIRE_SERVICES``, so a red run can
be repeated and a green one means the same thing twice; locally it explores
(``HYPOTHESIS_PROFILE=ci`` to get CI's examples).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from maild.store.db import make_engine, upgrade
from tests.support.desk import Desk, make_settings

REQUIRE_SERVICES = os.environ.get("MAILD_TEST_REQUIRE_SERVICES") == "1"
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
SKIP_PREFIX = "service not available: "
_missing: Counter[str] = Counter()  # service -> tests skipped for want of it

hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("dev", print_blob=True)
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if IN_CI or REQUIRE_SERVICES else "dev")
)
# Major incidents off for every maild a test starts from a configuration file
# (the environment overrides the file): tests about other things send bursts of
# similar reports. tests/integration/test_majors.py turns them on (see also
# tests.support.desk.make_settings).
os.environ.setdefault("MAILD_MAJOR__ENABLED", "false")
PG_ADMIN_URL = os.environ.get(
    "MAILD_TEST_PG_URL", "postgresql+psycopg://maild:maild@127.0.0.1:5432/postgres"
)


def service_missing(what: str) -> None:
    """Skip locally; fail in CI, where every service must be there."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {what}", pytrace=False)
    pytest.skip(f"{SKIP_PREFIX}{what}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        if reason.startswith(SKIP_PREFIX):
            _missing[reason.removeprefix(SKIP_PREFIX).split(": ")[0][:80]] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _missing and IN_CI and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not _missing:
        return
    total = sum(_missing.values())
    what = ", ".join(f"{name} ({n})" for name, n in _missing.most_common())
    terminalreporter.write_sep("!", f"{total} tests SKIPPED: services missing", red=True, bold=True)
    terminalreporter.write_line(f"not run for want of: {what}", red=True, bold=True)
    terminalreporter.write_line(
        "`bash .ci/run` installs and starts them (or see tests/conftest.py for MAILD_TEST_*)"
        + ("; CI is set: this run FAILS" if IN_CI else ""),
        red=True,
        bold=True,
    )


class _Postgres:
    """Creates a migrated template database once, then one copy per test."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.template: str | None = None
        self._admin: Any = None

    def _connect(self) -> Any:
        if self._admin is None and self.error is None:
            try:
                engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
                with engine.connect() as conn:
                    conn.execute(text("select 1"))
                self._admin = engine
            except Exception as exc:  # pragma: no cover - depends on the machine
                self.error = f"PostgreSQL at {PG_ADMIN_URL}: {type(exc).__name__}: {exc}"[:300]
        return self._admin

    def url_for(self, name: str) -> str:
        return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def create(self) -> str:
        admin = self._connect()
        if admin is None:
            service_missing(self.error or "PostgreSQL")
        if self.template is None:
            name = f"maild_tmpl_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            engine = make_engine(self.url_for(name))
            upgrade(engine)
            engine.dispose()
            self.template = name
        name = f"maild_test_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        return name

    def drop(self, name: str) -> None:
        admin = self._connect()
        # FORCE may not end an autovacuum worker (a superuser's backend) that
        # happens to be in the database: it then refuses; the worker is gone
        # a moment later.
        for attempt in range(20):
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                return
            except ProgrammingError:
                if attempt == 19:
                    raise
                time.sleep(0.5)

    def close(self) -> None:
        if self._admin is not None:
            if self.template:
                self.drop(self.template)
            self._admin.dispose()


@pytest.fixture(scope="session")
def _postgres() -> Iterator[_Postgres]:
    pg = _Postgres()
    yield pg
    pg.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, _postgres: _Postgres) -> Iterator[str]:
    """A fresh, empty-of-data, migrated database on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'maild.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    name = _postgres.create()
    yield _postgres.url_for(name)
    _postgres.drop(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'maild.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def desk(db_url: str, tmp_path: Path) -> Iterator[Desk]:
    """Intake, worker and sender on a real database, outgoing mail to a Maildir."""
    d = Desk(make_settings(tmp_path, db_url))
    yield d
    d.close()


@pytest.fixture
def sqlite_desk(sqlite_url: str, tmp_path: Path) -> Iterator[Desk]:
    d = Desk(make_settings(tmp_path, sqlite_url))
    yield d
    d.close()


class RunningDaemon:
    def __init__(self, daemon: Any, thread: threading.Thread) -> None:
        self.daemon = daemon
        self.thread = thread

    @property
    def port(self) -> int:
        return int(self.daemon.port)


def start_daemon(settings: Any, *, supervise_web: bool = True) -> RunningDaemon:
    import asyncio

    from maild.service.daemon import Daemon

    daemon = Daemon(settings)
    if not supervise_web:  # the test runs the web app in-process itself
        daemon.web = None
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(daemon.run(install_signals=False))
        except BaseException as exc:  # surfaced by the fixture
            errors.append(exc)
            daemon.ready.set()

    thread = threading.Thread(target=run, name="daemon", daemon=True)
    thread.start()
    if not daemon.ready.wait(20) or errors:
        raise RuntimeError(f"daemon did not start: {errors}")
    return RunningDaemon(daemon, thread)


def stop_daemon(running: RunningDaemon) -> None:
    running.daemon.request_stop()
    running.thread.join(20)
    assert not running.thread.is_alive(), "daemon did not stop within 20 s"


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[RunningDaemon] = []

    def factory(db_url: str, **overrides: Any) -> RunningDaemon:
        overrides.setdefault("smtp", {}).setdefault("listen", "127.0.0.1:0")
        running = start_daemon(make_settings(tmp_path, db_url, **overrides))
        started.append(running)
        return running

    yield factory
    for running in started:
        if running.thread.is_alive():
            stop_daemon(running)


@pytest.fixture(autouse=True)
def _process_state_restored() -> Iterator[None]:
    """A test that calls `maild.cli.main.main()` in this process gets what the
    command does to its process: umask 027, escaping stdout/stderr wrappers,
    log handlers. Put them back, so later tests (files made for other users,
    pytest's own capture) see the process as it was."""
    umask = os.umask(0o022)
    os.umask(umask)
    streams = (sys.stdout, sys.stderr)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    os.umask(umask)
    sys.stdout, sys.stderr = streams
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)

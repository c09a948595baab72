"""``maild serve``'s worker in a process of its own (`maild.service.workerproc`),
as an admin meets it: it processes the mail, a systemd stop (SIGTERM to every
process of the service) cuts nothing short, and a dead worker is seen by
``/healthz``.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from sqlalchemy import text

from maild.store.db import make_engine
from tests.integration.test_smtp_intake import counts, send
from tests.support.desk import make_message
from tests.support.serveproc import ServeProcess, base_sections, healthz
from tests.support.waiting import wait_until


def _worker_pid(log_path: Path) -> int:
    def found() -> int | None:
        m = re.search(r"worker process started \(pid (\d+)\)", log_path.read_text())
        return int(m.group(1)) if m else None

    return wait_until(found, timeout=30)


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _statuses(db_url: str) -> list[tuple[str, int]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("select status, attempts from inbound order by id"))
            return [(r[0], r[1]) for r in rows]
    finally:
        engine.dispose()


def test_a_systemd_stop_signals_every_process_and_cuts_nothing_short(sqlite_url, tmp_path):
    """systemd's stop sends SIGTERM to every process of the service at once
    (KillMode=control-group): the worker and parse processes too. They leave
    the stop to the daemon, so mail answered 250 a moment before is processed
    before it exits, and nothing is charged a failed attempt."""
    serve = ServeProcess(base_sections(tmp_path, sqlite_url), log_path=tmp_path / "serve.log",
                         preexec=os.setsid)  # fmt: skip
    try:
        serve.start()
        assert _running(_worker_pid(serve.log_path))
        for n in range(5):
            assert send(serve.port, make_message(message_id=f"<stop{n}@example.org>")) == {}
        assert serve.proc is not None
        os.killpg(serve.proc.pid, signal.SIGTERM)  # as systemd does
        assert serve.proc.wait(30) == 0
        assert _statuses(sqlite_url) == [("done", 0)] * 5
        assert counts(sqlite_url)["ticket"] == 5
        log = serve.log_path.read_text()
        assert "died" not in log and "Traceback" not in log
    finally:
        serve.close()


def test_healthz_sees_a_dead_worker_process(sqlite_url, tmp_path):
    sections = base_sections(tmp_path, sqlite_url, http={"enabled": True,
                                                         "listen": "127.0.0.1:0"})  # fmt: skip
    serve = ServeProcess(sections, log_path=tmp_path / "serve.log")
    try:
        serve.start()
        port = serve.metrics_port()
        assert healthz(port)[0] == 200
        os.kill(_worker_pid(serve.log_path), signal.SIGKILL)
        status, body = wait_until(lambda: (r := healthz(port))[0] == 503 and r, timeout=30)
        assert body["checks"]["worker"] is False
    finally:
        serve.close()

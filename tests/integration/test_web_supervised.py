"""`maild serve` keeps `maild web` running beside it: a killed console comes back,
and intake never stops meanwhile."""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import time
import urllib.request
from pathlib import Path

from tests.support.serveproc import ServeProcess, base_sections, free_port


def _web_child(serve_pid: int) -> int | None:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if ppid == serve_pid and b"web" in argv:
            return int(stat.parent.name)
    return None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def _until(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _serve_with_console(tmp_path: Path, sqlite_url: str) -> tuple[ServeProcess, int]:
    """`maild serve` started with its console on a port of its own: (daemon, web port)."""
    web_port = free_port()
    sections = base_sections(tmp_path, sqlite_url, free_port(),
                             web={"enabled": True, "listen": f"127.0.0.1:{web_port}"})  # fmt: skip
    serve = ServeProcess(sections, log_path=tmp_path / "serve.log")
    serve.start()
    return serve, web_port


def test_a_killed_console_is_started_again_and_intake_goes_on(tmp_path, sqlite_url):
    serve, web_port = _serve_with_console(tmp_path, sqlite_url)
    try:
        assert serve.proc is not None
        login = f"http://127.0.0.1:{web_port}/login"
        _until(lambda: _answers(login), "the console did not start")
        first = _until(lambda: _web_child(serve.proc.pid), "no web child")
        os.kill(first, signal.SIGKILL)
        with smtplib.SMTP("127.0.0.1", serve.port, timeout=10) as client:  # intake is unaffected
            client.sendmail("bob@example.org", ["help@example.com"],
                            b"From: bob@example.org\r\nTo: help@example.com\r\n"
                            b"Subject: still here\r\nMessage-ID: <k1@x>\r\n\r\nhello\r\n")  # fmt: skip
        second = _until(lambda: (c := _web_child(serve.proc.pid)) != first and c,
                        "the console was not started again")  # fmt: skip
        assert second != first
        _until(lambda: _answers(login), "the restarted console does not answer")
        assert serve.stop() == 0
        assert _web_child(serve.proc.pid) is None
    finally:
        serve.close()
    assert "web console exited" in (tmp_path / "serve.log").read_text()


def _nice(pid: int) -> int:
    return int((Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())[16])


def test_the_console_yields_the_cpu_to_intake(tmp_path, sqlite_url):
    """The console runs below the daemon's CPU priority, started and restarted
    alike: on busy cores an SMTP client's 250 comes before an agent's page."""
    serve, _web_port = _serve_with_console(tmp_path, sqlite_url)
    try:
        assert serve.proc is not None
        pid = serve.proc.pid
        first = _until(lambda: _web_child(pid), "no web child")
        assert _until(lambda: _nice(first) >= _nice(pid) + 5, "the console runs at the "
                      f"daemon's priority (nice {_nice(first)} vs {_nice(pid)})", timeout=10)  # fmt: skip
        os.kill(first, signal.SIGKILL)
        second = _until(lambda: (c := _web_child(pid)) != first and c, "no new console")
        assert _until(lambda: _nice(second) >= _nice(pid) + 5, "the restarted console runs "
                      "at the daemon's priority", timeout=10)  # fmt: skip
        assert serve.stop() == 0
    finally:
        child = _web_child(serve.proc.pid) if serve.proc is not None else None
        serve.close()
        if child is not None:  # a failed check: no console outlives its daemon
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)

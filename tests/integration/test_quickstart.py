"""The README's quick start, as a new user runs it: the example config, a
fresh working directory, one message over SMTP, an acknowledgement on disk,
and the web console answering beside it."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _ready_port(
    proc: subprocess.Popen[bytes], timeout: float = 60.0
) -> tuple[int, list[str], list[int]]:
    """The SMTP port from maild's ready line (its log, on stderr here); the list
    the console's port is put in once its child logs where it listens."""
    lines: list[str] = []
    found: list[int] = []
    web: list[int] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            match = re.search(r"maild ready: SMTP on \('127\.0\.0\.1', (\d+)\)", line)
            if match:
                found.append(int(match.group(1)))
            match = re.search(r"web console on http://127\.0\.0\.1:(\d+)", line)
            if match:
                web.append(int(match.group(1)))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found:
        assert proc.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "maild did not start:\n" + "".join(lines)
        time.sleep(0.05)
    return found[0], lines, web


def test_example_config_serves_a_first_message(tmp_path):
    # The example's fixed ports (SMTP 2525, metrics 9325, console 8025) may be
    # taken by a developer's `make run` or another test run: all on ports the OS
    # gives, SMTP's and the console's read back from their log lines as an admin would.
    env = {**os.environ, "MAILD_SMTP__LISTEN": "127.0.0.1:0", "MAILD_HTTP__LISTEN": "127.0.0.1:0",
           "MAILD_WEB__LISTEN": "127.0.0.1:0"}  # fmt: skip
    config = ROOT / "config" / "maild.example.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "maild", "--config", str(config), "serve"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        port, log, web_ports = _ready_port(proc)
        raw = (
            b"From: Bob <bob@example.org>\r\nTo: help@example.com\r\n"
            b"Subject: Printer on 3rd floor not working\r\nMessage-ID: <first@example.org>\r\n"
            b"\r\nIt shows error E42.\r\n"
        )
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("bob@example.org", ["help@example.com"], raw)
        # README: "within a second"; bench/run.py measures how fast. Here: that it comes.
        outgoing = tmp_path / "var" / "outgoing" / "new"
        deadline = time.monotonic() + 30
        while not (outgoing.is_dir() and any(outgoing.iterdir())):
            assert time.monotonic() < deadline, "no acknowledgement:\n" + "".join(log)
            time.sleep(0.02)
        (ack,) = list(outgoing.iterdir())
        assert b"Subject: [#1] Printer on 3rd floor not working" in ack.read_bytes()
        assert (tmp_path / "var" / "maild.db").exists()
        listed = subprocess.run(
            [sys.executable, "-m", "maild", "--config", str(config), "tickets", "list"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "#1" in listed.stdout and "bob@example.org" in listed.stdout
        # `maild serve` started the console as its child: the sign-in page answers.
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the web console did not start:\n" + "".join(log)
            if not web_ports:
                time.sleep(0.1)
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_ports[-1]}/login",
                                            timeout=5) as r:  # fmt: skip
                    page = r.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "the web console did not start"
                time.sleep(0.1)
        assert 'name="email"' in page
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0

"""The README's quick start, as a new user runs it: the example config, a
fresh working directory, one message over SMTP, an acknowledgement on disk,
and the web console answering beside it."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_serves_a_first_message(tmp_path):
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    port, web_port = ports
    # The example's fixed ports (SMTP 2525, metrics 9325) may be taken by a
    # developer's `make run` or another test run: SMTP on a free port, metrics
    # on any port the OS gives.
    env = {
        **os.environ,
        "MAILD_SMTP__LISTEN": f"127.0.0.1:{port}",
        "MAILD_HTTP__LISTEN": "127.0.0.1:0",
        "MAILD_WEB__LISTEN": f"127.0.0.1:{web_port}",  # the console (8025 in the example)
    }
    config = ROOT / "config" / "maild.example.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "maild", "--config", str(config), "serve"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "maild did not start"
                time.sleep(0.05)
        raw = (
            b"From: Bob <bob@example.org>\r\nTo: help@example.com\r\n"
            b"Subject: Printer on 3rd floor not working\r\nMessage-ID: <first@example.org>\r\n"
            b"\r\nIt shows error E42.\r\n"
        )
        sent_at = time.monotonic()
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("bob@example.org", ["help@example.com"], raw)
        outgoing = tmp_path / "var" / "outgoing" / "new"
        while not (outgoing.is_dir() and any(outgoing.iterdir())):
            assert time.monotonic() - sent_at < 2.0, "no acknowledgement within 2 s"
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
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/login", timeout=5) as r:
                    page = r.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "the web console did not start"
                time.sleep(0.1)
        assert 'name="email"' in page
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0

"""maild under systemd: the unit files, sd_notify, SIGHUP reload and SIGTERM drain.

The daemon runs as a real child process (``python -m maild serve``); systemd's
notify socket is a real unix datagram socket owned by the test.
"""

from __future__ import annotations

import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import service_missing
from tests.integration.test_smtp_intake import counts, wait_until
from tests.support.desk import make_message, read_maildir
from tests.support.ports import reserved_port
from tests.support.serveproc import ServeProcess, base_sections

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"


def _analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        service_missing("systemd-analyze (package systemd)")
    return str(exe)


def _installed_units(tmp_path: Path) -> Path:
    """The units as README installs them, with ExecStart pointing at this maild."""
    maild = Path(shutil.which("maild") or Path(sys.executable).with_name("maild"))
    assert maild.exists(), "maild entry point not installed"
    out = tmp_path / "units"
    out.mkdir()
    for unit in ("maild.service", "maild.socket", "maild-web.service"):
        text = (UNITS / unit).read_text().replace("/opt/maild/bin/maild", str(maild))
        (out / unit).write_text(text)
    return out


def test_unit_files_pass_systemd_analyze_verify(tmp_path):
    exe = _analyze()
    units = _installed_units(tmp_path)
    proc = subprocess.run(
        [exe, "verify", "--man=no", str(units / "maild.service"), str(units / "maild.socket"),
         str(units / "maild-web.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "maild" not in proc.stderr, proc.stderr  # no warning about our units
    service = (UNITS / "maild.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "ExecReload=",
                 "User=maild", "ProtectSystem=strict", "StateDirectory=maild",
                 "LimitNOFILE="):  # fmt: skip
        assert line in service
    # The hardening is real: systemd's own audit rates the unit "OK" or better.
    audit = subprocess.run(
        [exe, "security", "--offline=yes", str(units / "maild.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for maild.service: ([\d.]+)", audit.stdout)
    assert match, audit.stdout[-2000:] + audit.stderr
    assert float(match.group(1)) <= 2.0, audit.stdout[-3000:]


def test_broken_unit_is_caught_by_verify(tmp_path):
    """The check above can fail: a typo in the unit is reported."""
    exe = _analyze()
    units = _installed_units(tmp_path)
    bad = units / "maild.service"
    bad.write_text(bad.read_text().replace("Type=notify", "Type=notifyy"))
    proc = subprocess.run([exe, "verify", "--man=no", str(bad)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert "Failed to parse service type" in proc.stderr


class NotifySocket:
    """What systemd listens on: collects every datagram the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def count(self, key: str, value: str = "1") -> int:
        return sum(1 for m in list(self.messages) if m.get(key) == value)

    def index(self, key: str, value: str = "1", after: int = 0) -> int:
        for i, m in enumerate(list(self.messages)):
            if i >= after and m.get(key) == value:
                return i
        return -1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _templates(tmp_path: Path, marker: str) -> Path:
    tdir = tmp_path / "templates"
    (tdir / "en").mkdir(parents=True, exist_ok=True)
    original = (ROOT / "templates" / "en" / "ack.txt.j2").read_text()
    (tdir / "en" / "ack.txt.j2").write_text(f"{marker}\n{original}")
    return tdir


def _ack_bodies(outgoing: Path) -> list[str]:
    return [m.get_body(preferencelist=("plain",)).get_content() for m in read_maildir(outgoing)]


def test_notify_ready_watchdog_reload_and_stopping(sqlite_url, tmp_path):
    notify = NotifySocket(tmp_path / "notify.sock")
    sections = base_sections(tmp_path, sqlite_url,
                             templates={"directory": str(_templates(tmp_path, "MARKER-ONE"))})  # fmt: skip
    serve = ServeProcess(sections, log_path=tmp_path / "serve.log",
                         extra_env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"})  # fmt: skip
    port = serve.port
    try:
        serve.start()
        wait_until(lambda: notify.count("READY"), timeout=10)
        ready = notify.messages[notify.index("READY")]
        assert ready["MAINPID"] == str(serve.proc.pid)
        assert "accepting mail" in ready["STATUS"]
        wait_until(lambda: notify.count("WATCHDOG") >= 3, timeout=5)  # every 0.2 s

        # A session opened before the reload stays usable across it.
        client = smtplib.SMTP("127.0.0.1", port, timeout=10)
        client.ehlo("client.example.org")
        client.sendmail("bob@example.org", ["help@example.com"],
                        make_message(message_id="<before@example.org>"))  # fmt: skip
        wait_until(lambda: any("MARKER-ONE" in b for b in _ack_bodies(tmp_path / "outgoing")))

        _templates(tmp_path, "MARKER-TWO")
        before = len(notify.messages)
        serve.signal(signal.SIGHUP)
        wait_until(lambda: notify.index("RELOADING", after=before) >= 0, timeout=5)
        wait_until(lambda: notify.index("READY", after=notify.index("RELOADING")) >= 0, timeout=5)
        client.sendmail("carol@example.org", ["help@example.com"],
                        make_message(sender="carol@example.org", subject="Second",
                                     message_id="<after@example.org>"))  # fmt: skip
        client.quit()
        bodies = wait_until(lambda: [b for b in _ack_bodies(tmp_path / "outgoing")
                                     if "MARKER-TWO" in b])  # fmt: skip
        assert len(bodies) == 1

        assert serve.stop(timeout=30) == 0  # not killed: it stopped by itself
        assert notify.count("STOPPING") == 1
    finally:
        serve.close()
        notify.close()


def _open_session(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert s.recv(512).startswith(b"220")
    s.sendall(b"EHLO client.example.org\r\n")
    _read_reply(s)
    return s


def _read_reply(s: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) >= 2 and lines[-2][3:4] == b" ":
            return data


def test_sigterm_finishes_message_in_data_refuses_the_rest_and_exits_0(sqlite_url, tmp_path):
    serve = ServeProcess(base_sections(tmp_path, sqlite_url), log_path=tmp_path / "serve.log")
    port = serve.port
    try:
        serve.start()
        idle = _open_session(port)  # between commands when SIGTERM comes
        busy = _open_session(port)  # in the middle of DATA when SIGTERM comes
        for cmd in (b"MAIL FROM:<bob@example.org>", b"RCPT TO:<help@example.com>", b"DATA"):
            busy.sendall(cmd + b"\r\n")
            assert _read_reply(busy)[:1] in (b"2", b"3")
        raw = make_message(message_id="<in-flight@example.org>")  # CRLF already
        half = len(raw) // 2
        busy.sendall(raw[:half])

        serve.signal(signal.SIGTERM)
        # The idle session is told at once, and hung up on.
        assert _read_reply(idle).startswith(b"421 4.3.2")
        # A new connection is refused with 421 too.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as late:
            assert late.recv(512).startswith(b"421")
        # The message in DATA is finished, committed and acknowledged.
        busy.sendall(raw[half:] + b"\r\n.\r\n")
        assert _read_reply(busy).startswith(b"250 2.0.0")
        busy.sendall(b"MAIL FROM:<bob@example.org>\r\n")
        assert _read_reply(busy).startswith(b"421")
        assert serve.proc.wait(30) == 0
        idle.close()
        busy.close()
        assert counts(sqlite_url)["inbound"] == 1
        assert (
            "inbound 1 <in-flight@example.org> ticket #1: new_ticket"
            in (tmp_path / "serve.log").read_text()
        )
        log = (tmp_path / "serve.log").read_text()
        assert "stopped in" in log and "Traceback" not in log
    finally:
        serve.close()


def test_sigterm_waits_for_a_stalled_message_at_most_drain_seconds(sqlite_url, tmp_path):
    """A client that stalls in the middle of DATA cannot hold the daemon up:
    after smtp.drain_seconds it stops anyway (that message gets no 250, so its
    sender retries), well inside systemd's stop timeout."""
    serve = ServeProcess(base_sections(tmp_path, sqlite_url, smtp={"drain_seconds": 1}),
                         log_path=tmp_path / "serve.log")  # fmt: skip
    port = serve.port
    try:
        serve.start()
        stalled = _open_session(port)
        for cmd in (b"MAIL FROM:<bob@example.org>", b"RCPT TO:<help@example.com>", b"DATA"):
            stalled.sendall(cmd + b"\r\n")
            assert _read_reply(stalled)[:1] in (b"2", b"3")
        stalled.sendall(make_message(message_id="<stalled@example.org>")[:100])
        serve.signal(signal.SIGTERM)
        # The client sends nothing more; maild stops on its own all the same.
        assert serve.proc.wait(30) == 0
        assert not _read_reply(stalled).startswith(b"250")
        stalled.close()
        log = (tmp_path / "serve.log").read_text()
        assert "1 message(s) still in DATA after 1.0s" in log and "Traceback" not in log
        assert counts(sqlite_url)["inbound"] == 0
    finally:
        serve.close()


def test_bad_http_listen_is_a_config_error(tmp_path):
    from maild.cli.main import EX_CONFIG, main

    cfg = tmp_path / "m.toml"
    cfg.write_text('[http]\nlisten = "localhost"\n')
    assert main(["--config", str(cfg), "check-config"]) == EX_CONFIG


def test_socket_activation_uses_the_inherited_socket(sqlite_url, tmp_path):
    """As maild.socket does: systemd binds, maild serves on fd 3 and ignores
    smtp.listen. (Every `ServeProcess` runs this way: the test owns the port.)"""
    with reserved_port() as unused:
        serve = ServeProcess(base_sections(tmp_path, sqlite_url), log_path=tmp_path / "serve.log")
        # Were maild to bind smtp.listen itself it could not: the port is held.
        serve.sections["smtp"]["listen"] = f"127.0.0.1:{unused}"
        try:
            serve.start()
            with smtplib.SMTP("127.0.0.1", serve.port, timeout=10) as client:
                assert client.sendmail("bob@example.org", ["help@example.com"],
                                       make_message()) == {}  # fmt: skip
            with pytest.raises(OSError), socket.create_connection(("127.0.0.1", unused), timeout=2):
                pass
            assert "socket from systemd" in (tmp_path / "serve.log").read_text()
            assert serve.stop() == 0
        finally:
            serve.close()

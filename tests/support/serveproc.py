"""``maild serve`` as a child process, for the crash suite and the benchmarks.

`ServeProcess` starts the real command line (maild's ``main(["serve"])``)
with its settings in ``MAILD_<SECTION>__<KEY>`` environment variables, waits
until its SMTP listener greets, and can stop it (SIGTERM) or kill it
(SIGKILL). The listening socket is the test's: bound to a port the OS gives
(or the one ``smtp.listen`` names), handed to maild as systemd's socket
activation does (fd 3, ``LISTEN_FDS``), and kept across kills and restarts,
so the port never changes hands and clients queue while maild is down.
`send_until_accepted` is a small SMTP client that keeps retrying one message
until it gets a 250, the way an MTA does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

# The child: the listening socket moves to fd 3, as systemd passes it; then
# maild's own entry point, in this same process (so its pid is MAINPID).
_ACTIVATE = (
    "import os, sys; fd = int(sys.argv[1]); fd == 3 or os.dup2(fd, 3); "
    "fd == 3 or os.close(fd); "
    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
    "from maild.cli.main import main; sys.argv = ['maild', *sys.argv[2:]]; "
    "raise SystemExit(main(sys.argv[1:]))"
)


def activated(listener: socket.socket, *maild_args: str) -> tuple[list[str], tuple[int, ...]]:
    """(argv, pass_fds) that run ``maild *maild_args`` serving on `listener`."""
    fd = listener.fileno()
    return [sys.executable, "-c", _ACTIVATE, str(fd), *maild_args], (fd,)


def wait_greeting(port: int, proc: subprocess.Popen[Any], timeout: float = 30.0,
                  where: str = "") -> None:  # fmt: skip
    """Until maild greets (220) on `port`; an error as soon as `proc` exits.

    The test holds the listening socket, so a connection is queued at once
    and greeted when maild accepts it: wait for the greeting itself.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"maild serve exited with {proc.returncode}; {where}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(0.5)
                greeting = b""
                while time.monotonic() < deadline and proc.poll() is None:
                    try:
                        greeting = s.recv(512)
                        break
                    except TimeoutError:
                        continue
                if greeting.startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"maild serve did not greet within {timeout}s; {where}")


def free_port() -> int:
    """A port free at this instant: racy (another program may take it before
    you bind it). Prefer `tests.support.ports`; kept for the benchmarks."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(sections: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """``{"smtp": {"listen": ...}}`` as ``MAILD_SMTP__LISTEN=...`` variables."""
    env: dict[str, str] = {}
    for section, values in sections.items():
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, list | tuple):
                text = ",".join(str(v) for v in value)
            else:
                text = str(value)
            env[f"MAILD_{section.upper()}__{key.upper()}"] = text
    return env


def base_sections(
    workdir: Path, db_url: str, port: int = 0, **extra: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Settings for `ServeProcess`; SMTP on `port`, by default one the OS gives."""
    sections: dict[str, dict[str, Any]] = {
        "database": {"url": db_url},
        "smtp": {"listen": f"127.0.0.1:{port}"},
        "helpdesk": {
            "addresses": ["help@example.com"],
            "domain": "helpdesk.example.com",
            "secret_file": str(workdir / "secret.key"),
        },
        "outgoing": {"maildir": str(workdir / "outgoing")},
        "worker": {"poll_seconds": 0.2},
        "http": {"enabled": False},
        # Bursts of look-alike reports would open major incidents (maild.majors).
        "major": {"enabled": False},
        "web": {"enabled": False},
    }
    for name, values in extra.items():
        sections.setdefault(name, {}).update(values)
    return sections


class ServeProcess:
    """One ``maild serve`` child; `start()` may be called again after a kill."""

    def __init__(
        self,
        sections: Mapping[str, Mapping[str, Any]],
        *,
        log_path: Path,
        extra_env: Mapping[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.sections = sections
        listen = str(sections["smtp"]["listen"])
        # A UNIX socket (LMTP behind a local MTA): maild makes it; no port to hold.
        self.listener: socket.socket | None = None
        self.port = 0
        if not listen.startswith("unix:"):
            host, _, port = listen.rpartition(":")
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # A port a previous ServeProcess of the same test served (its connections
            # in TIME_WAIT) can be bound again, as maild itself binds it.
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host or "127.0.0.1", int(port)))
            self.listener.listen(1024)
            self.port = int(self.listener.getsockname()[1])
        self.log_path = log_path
        self.extra_env = dict(extra_env or {})
        self.preexec = preexec
        self.pass_fds = tuple(pass_fds)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: TextIO | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILD_")}
        # maild needs a configuration file (else /etc/maild/maild.toml); the
        # settings themselves come from the environment.
        config = self.log_path.parent / "serve-empty.toml"
        if not config.exists():
            config.write_text("# settings in MAILD_<SECTION>__<KEY> variables\n")
        env["MAILD_CONFIG"] = str(config)
        env.update(settings_env(self.sections))
        env.update(self.extra_env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        if self._log is None:
            self._log = open(self.log_path, "a")  # noqa: SIM115 (closed in close())
        if self.listener is not None:
            argv, fds = activated(self.listener, "serve")
        else:
            argv, fds = [sys.executable, "-m", "maild", "serve"], ()
        self.proc = subprocess.Popen(
            argv,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=self.preexec,
            pass_fds=(*fds, *self.pass_fds),
        )
        self.starts += 1
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        wait_greeting(self.port, self.proc, timeout, f"see {self.log_path}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit status (kills after `timeout`)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def metrics_port(self, timeout: float = 30.0) -> int:
        """The port of ``/metrics`` and ``/healthz`` (``http.listen`` may say port 0),
        as the daemon's ready line reports it."""
        deadline = time.monotonic() + timeout
        pattern = re.compile(r"metrics on http://[^\s/]+:(\d+)/metrics")
        while True:
            found = pattern.findall(self.log_path.read_text(errors="replace"))
            if found:
                return int(found[-1])
            if time.monotonic() > deadline:
                raise RuntimeError(f"no metrics address in {self.log_path}")
            time.sleep(0.05)

    def close(self) -> None:
        self.kill()
        if self.listener is not None:
            self.listener.close()
        if self._log is not None:
            self._log.close()
            self._log = None


def send_until_accepted(
    port: int | Callable[[], int],
    raw: bytes,
    *,
    deadline: float,
    rcpt: str = "help@example.com",
    sender: str = "bob@example.org",
    retry_pause: float = 0.05,
) -> tuple[bool, int]:
    """Send `raw` until a 250 (True) or the monotonic `deadline` (False).

    Returns (accepted, attempts). Like an MTA: a refused connection, a drop,
    a 4xx, all mean "try again".
    """
    attempts = 0
    while time.monotonic() < deadline:
        attempts += 1
        target = port() if callable(port) else port
        try:
            with smtplib.SMTP("127.0.0.1", target, timeout=10) as client:
                refused = client.sendmail(sender, [rcpt], raw)
            if not refused:
                return True, attempts
        except smtplib.SMTPResponseException as exc:
            if 500 <= exc.smtp_code < 600:
                raise
        except (smtplib.SMTPException, OSError):
            pass
        time.sleep(retry_pause)
    return False, attempts


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    """``/healthz`` on `port`: the status and the body it answered."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())

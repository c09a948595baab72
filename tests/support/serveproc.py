"""``maild serve`` as a child process, for the crash suite and the benchmarks.

`ServeProcess` starts the real command line (``python -m maild serve``) with
its settings in ``MAILD_<SECTION>__<KEY>`` environment variables, waits until
its SMTP listener greets, and can stop it (SIGTERM) or kill it (SIGKILL).
`SmtpSender` is a small SMTP client that keeps retrying one message until it
gets a 250, the way an MTA does, and records what it was told.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO


def free_port() -> int:
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
    workdir: Path, db_url: str, port: int, **extra: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
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
        self.port = int(str(sections["smtp"]["listen"]).rpartition(":")[2])
        self.log_path = log_path
        self.extra_env = dict(extra_env or {})
        self.preexec = preexec
        self.pass_fds = tuple(pass_fds)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: TextIO | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILD_")}
        env.update(settings_env(self.sections))
        env.update(self.extra_env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        if self._log is None:
            self._log = open(self.log_path, "a")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "maild", "serve"],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=self.preexec,
            pass_fds=self.pass_fds,
        )
        self.starts += 1
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"maild serve exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"maild serve not ready within {timeout}s; see {self.log_path}")

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

    def close(self) -> None:
        self.kill()
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

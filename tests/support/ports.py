"""Ports from the OS, never guessed: no check-then-bind races between the many
test runs (and developers' daemons) sharing a machine.

- `listening_socket()`: bound to port 0 and listening; hand it to the server
  (``maild serve`` takes it as systemd does, see `ServeProcess`), keep it
  across restarts: the port stays ours for the whole test.
- `reserved_port()`: bound to port 0, *not* listening, held for the duration:
  "nothing listens here" stays true (connections are refused) because no
  other program can take the port meanwhile.
- `OsPortController`: aiosmtpd's ``Controller`` on a port the OS picks.
- `start_on_free_port()`: for servers we cannot hand a socket to (Dovecot, a
  private PostgreSQL): pick a free port, start, and try another port if the
  start fails because someone took it in between. The server must prove it
  is *ours* (a token in its greeting, its own pid file), not merely that
  something answers on the port.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aiosmtpd.controller import Controller

T = TypeVar("T")


def listening_socket(host: str = "127.0.0.1", backlog: int = 1024) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(backlog)
    return sock


@contextmanager
def reserved_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port nobody listens on (connections are refused) while the block runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield int(sock.getsockname()[1])


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_on_free_port(start: Callable[[int], T], attempts: int = 5) -> T:
    """Call ``start(port)`` with a free port; on failure try again with another.

    Only for servers that bind the port themselves; `start` must raise if the
    server did not come up as ours on that port.
    """
    error: Exception | None = None
    for _ in range(attempts):
        try:
            return start(_free_port())
        except Exception as exc:  # the port was taken between the look and the bind
            error = exc
    raise RuntimeError(f"could not start on a free port in {attempts} attempts") from error


class OsPortController(Controller):
    """aiosmtpd's thread-run SMTP server on a port the OS picks (``.port`` once started)."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        kwargs.setdefault("hostname", "127.0.0.1")
        super().__init__(handler, port=0, **kwargs)

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = int(self.server.sockets[0].getsockname()[1])
        super()._trigger_server()

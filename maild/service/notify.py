"""systemd integration without libsystemd: sd_notify(3) and socket activation.

`Notifier` sends ``READY=1``, ``STATUS=...``, ``RELOADING=1``, ``STOPPING=1``
and ``WATCHDOG=1`` datagrams to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the
abstract namespace); without that variable every call does nothing, so the
daemon runs the same in a terminal. `watchdog_interval()` reads
``$WATCHDOG_USEC`` (set by systemd from ``WatchdogSec=``) and says how often to
ping: half the timeout, as sd_watchdog_enabled(3) advises.

`inherited_sockets()` returns the listening sockets systemd passed in
(``$LISTEN_FDS`` from fd 3, for this very process per ``$LISTEN_PID``), so
``maild.socket`` can bind port 25 while the service runs unprivileged.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if path.startswith("@"):
            self._address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self._address = path
        self._sock: socket.socket | None = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        self._watchdog_usec = _positive_int(env.get("WATCHDOG_USEC"))
        watchdog_pid = _positive_int(env.get("WATCHDOG_PID"))
        if watchdog_pid is not None and watchdog_pid != os.getpid():
            self._watchdog_usec = None  # meant for another process

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings, or None when no watchdog is set."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2_000_000

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False if it could not go."""
        if self._sock is None or self._address is None:
            return False
        payload = "\n".join(f.replace("\n", " ") for f in fields).encode()
        try:
            self._sock.sendto(payload, self._address)
            return True
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", fields[0].split("=", 1)[0], exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def reloading(self) -> bool:
        return self.send("RELOADING=1", "STATUS=reloading")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def watchdog_trigger(self) -> bool:
        """Tell systemd we are unhealthy: it treats this as a watchdog timeout."""
        return self.send("WATCHDOG=trigger")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _positive_int(value: str | None) -> int | None:
    if not value or not value.isdigit():
        return None
    number = int(value)
    return number if number > 0 else None


def inherited_sockets(environ: Mapping[str, str] | None = None) -> list[socket.socket]:
    """The listening sockets passed by systemd socket activation (may be empty)."""
    env = os.environ if environ is None else environ
    pid = _positive_int(env.get("LISTEN_PID"))
    count = _positive_int(env.get("LISTEN_FDS"))
    if pid != os.getpid() or count is None:
        return []
    out = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        out.append(socket.socket(fileno=fd))
    if environ is None:  # as sd_listen_fds(1): children must not take them too
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    return out

"""``maild web``: the workspace on uvicorn, in the foreground.

`serve` binds ``web.listen`` (or a socket handed in, as tests do), logs the
address it serves, and stops cleanly on SIGTERM/SIGINT. `maild serve`
starts this as a supervised child process when ``web.enabled``; a crash of
the web process never touches intake.
"""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from maild.clock import Clock
from maild.config.settings import Settings
from maild.errors import ConfigError
from maild.web.app import create_app

log = logging.getLogger(__name__)


def bind(settings: Settings) -> socket.socket:
    host, port = settings.web.host_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError("web.listen", f"cannot listen on {settings.web.listen}: "
                          f"{exc.strerror}") from None  # fmt: skip
    sock.listen(128)
    return sock


def server(settings: Settings, clock: Clock | None = None) -> uvicorn.Server:
    app = create_app(settings, clock)
    config = uvicorn.Config(app, log_level="warning", access_log=False, proxy_headers=False,
                            server_header=False, timeout_graceful_shutdown=5,
                            limit_concurrency=200, timeout_keep_alive=30)  # fmt: skip
    return uvicorn.Server(config)


def serve(settings: Settings) -> int:
    sock = bind(settings)
    host, port = sock.getsockname()[:2]
    where = f"{host}:{port}"
    srv = server(settings)
    log.info("web console on http://%s (links say %s)", where, settings.web.url)
    srv.run(sockets=[sock])
    return 0


class Background:
    """The app on a socket of its own in a thread (tests and benchmarks)."""

    def __init__(self, settings: Settings, sock: socket.socket, clock: Clock | None = None
                 ) -> None:  # fmt: skip
        self.sock = sock
        self.server = server(settings, clock)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       name="web", daemon=True)  # fmt: skip

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> Background:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the web server did not start")
            self.thread.join(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        app_state = getattr(self.server.config.app, "state", None)
        web = getattr(app_state, "web", None) if app_state is not None else None
        if web is not None:
            web.close()

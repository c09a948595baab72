"""A running help desk with its workspace, for the web tests.

`WebDesk` starts the real daemon (SMTP on a loopback port, worker, sender
into a Maildir) and the web app on a socket of its own, both on one SQLite
database; `login_link` finds the sign-in link in the mail that was sent.
"""

from __future__ import annotations

import re
import smtplib
import socket
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from maild.store.db import make_engine, session_factory
from maild.store.models import Ticket
from maild.web.server import Background
from tests.conftest import start_daemon, stop_daemon
from tests.support.desk import make_settings, read_maildir

AGENTS = [
    {"email": "anna@example.com", "name": "Anna Agent", "tier": 1},
    {"email": "sam@example.com", "name": "Sam Security", "tier": 3, "groups": ["security"]},
    {"email": "fred@example.com", "name": "Fred Finn", "tier": 1, "language": "fi"},
]


class WebDesk:
    def __init__(self, tmp_path: Path, db_url: str, **sections: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        # enabled: links to the requester's page go into the mail; the test runs the
        # web app itself, so the daemon is told not to start a `maild web` child.
        web = {"base_url": self.url, "enabled": True, **sections.pop("web", {})}
        self.settings = make_settings(tmp_path, db_url, agents=AGENTS, web=web,
                                      smtp={"listen": "127.0.0.1:0"}, **sections)  # fmt: skip
        self.maildir = tmp_path / "outgoing"
        self.daemon = start_daemon(self.settings, supervise_web=False)
        self.web = Background(self.settings, self.sock).start()

    def close(self) -> None:
        self.web.stop()
        stop_daemon(self.daemon)

    def send(self, raw: bytes, sender: str = "bob@example.org") -> None:
        with smtplib.SMTP("127.0.0.1", self.daemon.port, timeout=10) as client:
            client.sendmail(sender, ["help@example.com"], raw)

    def mails(self) -> list[EmailMessage]:
        return read_maildir(self.maildir)

    def wait_mail(self, predicate: Any, timeout: float = 20.0) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.mails():
                if predicate(m):
                    return m
            assert time.monotonic() < deadline, "the expected mail did not arrive"
            time.sleep(0.05)

    def login_link(self, email: str, after: int = 0) -> str:
        """The newest sign-in link mailed to `email` (waits for it)."""

        def is_login(m: EmailMessage) -> bool:  # in any language: the mail with the link
            if email not in str(m["To"]):
                return False
            body = m.get_body(("plain",))
            return body is not None and f"{self.url}/login/" in body.get_content()

        deadline = time.monotonic() + 20
        while True:
            found = [m for m in self.mails() if is_login(m)]
            if len(found) > after:
                body = found[-1].get_body(("plain",)).get_content()
                return re.search(r"(http://\S+/login/\S+)", body).group(1)
            assert time.monotonic() < deadline, "no sign-in link was mailed"
            time.sleep(0.05)

    def wait_ticket(self, number: int, timeout: float = 20.0) -> None:
        engine = make_engine(self.settings.database.url)
        try:
            deadline = time.monotonic() + timeout
            while True:
                with session_factory(engine)() as session:
                    if session.get(Ticket, number) is not None:
                        return
                assert time.monotonic() < deadline, f"ticket #{number} did not appear"
                time.sleep(0.05)
        finally:
            engine.dispose()


def message(subject: str, body: str, *, sender: str = "Bob Customer <bob@example.org>",
            msgid: str = "<b1@example.org>", attachment: tuple[str, bytes] | None = None
            ) -> bytes:  # fmt: skip
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "help@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = msgid
    msg.set_content(body)
    if attachment:
        msg.add_attachment(attachment[1], maintype="application", subtype="pdf",
                           filename=attachment[0])  # fmt: skip
    return msg.as_bytes()


def signed_in(wd: WebDesk, email: str, after: int = 0) -> httpx.Client:
    """An HTTP client signed in as `email` the way a browser is (mailed link, confirm)."""
    client = httpx.Client(base_url=wd.url, timeout=30, headers={"origin": wd.url})
    csrf = csrf_of(client.get("/login").text)
    client.post("/login", data={"email": email, "csrf": csrf, "next": "/"})
    path = urlsplit(wd.login_link(email, after)).path
    client.post(path, data={"csrf": csrf_of(client.get(path).text), "next": "/"})
    assert "maild_session" in client.cookies
    return client


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)

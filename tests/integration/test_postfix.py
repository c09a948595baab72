"""maild behind a real Postfix, set up as docs/admin.md says (issue 17).

Postfix (a private instance started by the test) receives the mail on SMTP
and hands the help-desk domain to ``maild serve`` over LMTP, by TCP or by a
UNIX socket; ``recipient_delimiter = +`` keeps the plus-addresses intact, so
an agent's reply address and maild's VERP bounce address reach maild; when
maild is down Postfix queues the mail and delivers it once maild is back.
maild's own mail leaves through the same Postfix: the agents' copies to an
SMTP sink, the requester's acknowledgement into Postfix's error transport,
whose bounce comes back to maild as a real DSN.
"""

from __future__ import annotations

import email
import json
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import service_missing
from tests.support.desk import make_message
from tests.support.postfix import Postfix
from tests.support.serveproc import ServeProcess, base_sections, free_port


class Sink:
    """The world outside: takes mail for example.net, refuses bob@example.org."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:  # fmt: skip
        if address == "bob@example.org":
            return "550 5.1.1 <bob@example.org>: no such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))  # fmt: skip
        return "250 2.0.0 queued"


def wait_for(what: Callable[[], Any], timeout: float, explain: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s\n{explain()[-4000:]}")
        time.sleep(0.1)


@pytest.fixture
def base() -> Iterator[Path]:
    if os.geteuid() != 0:
        service_missing("root (to start a private Postfix)")
    if shutil.which("postfix") is None:
        service_missing("postfix (apt-get install postfix; .ci/run does)")
    top = Path(tempfile.mkdtemp(prefix="maild-postfix-"))
    top.chmod(0o755)  # Postfix's lmtp client (user postfix) reaches the socket here
    yield top
    shutil.rmtree(top, ignore_errors=True)


def tickets(db: str, tmp: Path) -> list[dict[str, Any]]:
    cfg = tmp / "cli.toml"
    cfg.write_text(f'[database]\nurl = "{db}"\n')
    proc = subprocess.run([sys.executable, "-m", "maild", "--config", str(cfg), "tickets", "list",
                           "--json"], capture_output=True, text=True, timeout=60)  # fmt: skip
    return json.loads(proc.stdout) if proc.returncode == 0 else []


def test_lmtp_over_tcp_routes_plus_addresses_and_survives_an_outage(base):
    sink = Sink()
    relay = Controller(sink, hostname="127.0.0.1", port=free_port())
    relay.start()
    lmtp_port, smtp_port = free_port(), free_port()
    postfix = Postfix(base / "postfix", smtp_port, {
        "example.com": f"lmtp:inet:127.0.0.1:{lmtp_port}",
        "example.net": f"smtp:[127.0.0.1]:{relay.port}",
        "example.org": f"smtp:[127.0.0.1]:{relay.port}",
    })  # fmt: skip
    db = f"sqlite:///{base / 'maild.db'}"
    sections = base_sections(
        base, db, lmtp_port,
        smtp={"lmtp": True},
        outgoing={"transport": "smtp", "smtp_host": "127.0.0.1", "smtp_port": smtp_port},
        tiers={"tier1": ["tier1@example.net"]},
    )  # fmt: skip
    config = base / "maild.toml"
    config.write_text('[[agents]]\nemail = "anna@example.net"\nname = "Anna Agent"\n')
    serve = ServeProcess(sections, log_path=base / "serve.log",
                         extra_env={"MAILD_CONFIG": str(config)})  # fmt: skip

    def explain() -> str:
        log = (base / "serve.log").read_text() if (base / "serve.log").exists() else ""
        return f"{postfix.maillog()}\n--- maild ---\n{log}\n--- queue ---\n{postfix.queue()}"

    try:
        postfix.start()
        serve.start()
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.sendmail("bob@example.org", ["help@example.com"],
                            make_message(message_id="<first@example.org>"))  # fmt: skip
        # The agent's copy reaches the sink through Postfix, with a reply address.
        notice = wait_for(lambda: [m for m in sink.received if "anna@example.net" in m[1]],
                          60, explain)[0]  # fmt: skip
        reply_to = parseaddr(email.message_from_bytes(notice[2])["Reply-To"])[1]
        assert reply_to.startswith("help+1.") and reply_to.endswith("@example.com"), reply_to
        # The acknowledgement to bob bounced at the far end; Postfix's DSN went to
        # the VERP address help+bounces.N.TOKEN@example.com and came back to maild.
        bounced = wait_for(lambda: [t for t in tickets(db, base)
                                    if t["requester"]["bounce_state"] == "hard"], 60, explain)  # fmt: skip
        assert bounced[0]["number"] == 1
        assert "help+bounces." in postfix.maillog()

        # The agent replies from their own mail client to the reply address.
        reply = make_message(sender="Anna Agent <anna@example.net>", to=reply_to,
                             subject="Re: [#1] Printer on 3rd floor not working",
                             body="#status pending_user\n\nPlease restart it and tell me.\n",
                             message_id="<anna-1@example.net>",
                             in_reply_to=email.message_from_bytes(notice[2])["Message-ID"])  # fmt: skip
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.sendmail("anna@example.net", [reply_to], reply)
        wait_for(lambda: [t for t in tickets(db, base) if t["status"] == "pending_user"],
                 60, explain)  # fmt: skip

        # maild is down: Postfix keeps the message (a temporary failure) ...
        assert serve.stop() == 0
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.sendmail("carol@example.org", ["help@example.com"],
                            make_message(sender="carol@example.org", subject="VPN down",
                                         message_id="<carol@example.org>"))  # fmt: skip
        wait_for(lambda: "carol@example.org" in postfix.queue(), 60, explain)
        assert len(tickets(db, base)) == 1
        # ... and delivers it once maild is back.
        serve.start()
        postfix.flush()
        got = wait_for(lambda: [t for t in tickets(db, base) if t["subject"] == "VPN down"],
                       60, explain)  # fmt: skip
        assert got[0]["requester"]["email"] == "carol@example.org"
        wait_for(lambda: "carol@example.org" not in postfix.queue(), 60, explain)
    finally:
        serve.close()
        postfix.stop()
        relay.stop()


def test_lmtp_over_a_unix_socket(base):
    smtp_port = free_port()
    socket_path = base / "run" / "lmtp.sock"
    socket_path.parent.mkdir()
    socket_path.parent.chmod(0o755)
    postfix = Postfix(base / "postfix", smtp_port, {"example.com": f"lmtp:unix:{socket_path}"})
    db = f"sqlite:///{base / 'maild.db'}"
    sections = base_sections(base, db, 0, smtp={"lmtp": True, "listen": f"unix:{socket_path}"})
    serve = ServeProcess(sections, log_path=base / "serve.log")

    def explain() -> str:
        return postfix.maillog() + "\n--- maild ---\n" + (base / "serve.log").read_text()

    try:
        postfix.start()
        serve.start(wait=False)
        wait_for(socket_path.is_socket, 60, explain)
        assert socket_path.stat().st_mode & 0o777 == 0o666
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.sendmail("bob@example.org", ["help+tag@example.com"], make_message())
        got = wait_for(lambda: tickets(db, base), 60, explain)
        assert got[0]["requester"]["email"] == "bob@example.org"
        assert "relay=" in postfix.maillog() and "status=sent" in postfix.maillog()
        assert serve.stop() == 0
        assert not socket_path.exists() or socket_path.is_socket()
    finally:
        serve.close()
        postfix.stop()

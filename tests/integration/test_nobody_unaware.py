"""Nobody left unaware, through the daemon's real SMTP listener and a real SMTP
relay for outgoing mail: a reply from someone outside the ticket becomes an
internal note and the agents working it are told; mail that cannot be sent is
recorded on its ticket, the agents are told, and `maild outbox retry` sends it
again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from email import message_from_bytes
from email.policy import default

from tests.integration.test_fates import cli_config, outgoing, query, settled
from tests.integration.test_smtp_intake import send, wait_until
from tests.support.desk import make_message, reply_to
from tests.support.ports import OsPortController


def test_a_stranger_on_the_thread_is_an_internal_note_and_the_agents_are_told(
    db_url, daemon_factory, tmp_path
):
    running = daemon_factory(db_url, tiers={"tier1": ["tier1@example.com"]})
    send(running.port, make_message(message_id="<req-s@example.org>"))
    wait_until(lambda: len(outgoing(tmp_path)) == 2, timeout=15)
    ack = next(m for m in outgoing(tmp_path) if "bob@example.org" in str(m["To"]))
    # Bob forwarded the acknowledgement to a colleague, who answers the thread.
    eve = reply_to(ack, sender="Eve Elsewhere <eve@partner.example>", to="help@example.com",
                   body="I am Bob's colleague: please also reset my password.",
                   message_id="<eve-1@partner.example>")  # fmt: skip
    send(running.port, eve, sender="eve@partner.example")
    wait_until(lambda: settled(db_url, 2), timeout=15)
    assert query(db_url, "select ticket_id, kind, visibility from article where message_id = "
                         "'<eve-1@partner.example>'") == [(1, "note", "internal")]  # fmt: skip
    assert query(db_url, "select status from ticket") == [("open",)]
    assert [r[0] for r in query(db_url, "select actor from event where kind = "
                                        "'non_participant_reply'")] == ["eve@partner.example"]  # fmt: skip
    wait_until(lambda: len(outgoing(tmp_path)) == 3, timeout=15)
    told = outgoing(tmp_path)[-1]
    assert told["To"].addresses[0].addr_spec == "tier1@example.com"
    text = told.get_body(("plain",)).get_content()
    assert "eve@partner.example" in text and "does not take part" in text
    assert "reset my password" in text
    assert not [m for m in outgoing(tmp_path)[2:] if "eve@" in str(m["To"])]


class Relay:
    """A real SMTP relay (aiosmtpd) that refuses one recipient until told otherwise."""

    def __init__(self, refuse: str) -> None:
        self.refuse: str | None = refuse
        self.received: list[tuple[list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address == self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 queued"


def test_dead_mail_is_recorded_told_and_can_be_sent_again(sqlite_url, daemon_factory, tmp_path):
    relay = Relay(refuse="bob@example.org")
    controller = OsPortController(relay)
    controller.start()
    try:
        running = daemon_factory(
            sqlite_url, tiers={"tier1": ["tier1@example.com"]}, sla={"sweep_seconds": 0.3},
            outgoing={"transport": "smtp", "smtp_host": "127.0.0.1", "smtp_port": controller.port},
        )  # fmt: skip
        send(running.port, make_message(message_id="<req-d@example.org>"))
        # The acknowledgement dies at the relay (550); the ticket records it and tier 1 hears.
        wait_until(lambda: query(sqlite_url, "select count(*) from event where kind = "
                                             "'mail_dead'")[0][0] == 1, timeout=30)  # fmt: skip
        (detail,) = query(sqlite_url, "select detail from event where kind = 'mail_dead'")
        dead = json.loads(detail[0])
        assert dead["kind"] == "ack" and dead["to"] == ["bob@example.org"]
        assert "550" in dead["error"] and "User unknown" in dead["error"]
        wait_until(lambda: any(b"could not be delivered" in raw.replace(b"=\r\n", b"")
                               for _to, raw in relay.received), timeout=30)  # fmt: skip
        told = next(message_from_bytes(raw, policy=default) for to, raw in relay.received
                    if b"could not be delivered" in raw.replace(b"=\r\n", b""))  # fmt: skip
        assert told["To"].addresses[0].addr_spec == "tier1@example.com"
        text = told.get_body(("plain",)).get_content()
        assert "bob@example.org" in text and f"maild outbox retry {dead['outbox']}" in text
        # Sweeps again: told once only.
        before = len(relay.received)
        wait_until(lambda: query(sqlite_url, "select count(*) from outbox where "
                                             "dead_noticed_at is not null")[0][0] == 1)  # fmt: skip

        relay.refuse = None  # the address is fixed at the other end
        cfg = cli_config(tmp_path, sqlite_url)
        cfg.write_text(cfg.read_text().replace("[outgoing]\n", "[outgoing]\ntransport = "
                       f'"smtp"\nsmtp_host = "127.0.0.1"\nsmtp_port = {controller.port}\n'))  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "maild", "--config", str(cfg), "outbox",
                               "retry", str(dead["outbox"]), "7777", "--as", "olga@cli"],
                              capture_output=True, text=True, timeout=120,
                              env=os.environ.copy())  # fmt: skip
        assert f"outbox {dead['outbox']}: queued again; now sent" in done.stdout, done.stderr
        assert "outbox 7777: not retried: no such outgoing mail" in done.stdout
        assert done.returncode == 66
        acks = [raw for to, raw in relay.received if to == ["bob@example.org"]]
        assert len(acks) == 1 and b"Subject: [#1]" in acks[0]
        assert query(sqlite_url, "select actor from event where kind = 'mail_retried'") == [
            ("olga@cli",)
        ]
        assert len([r for r in relay.received[before:] if r[0] == ["tier1@example.com"]]) == 0
    finally:
        controller.stop()

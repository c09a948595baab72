"""SMTP intake against the daemon's real listener, with smtplib as the client."""

from __future__ import annotations

import smtplib
import socket
from typing import Any

import pytest
from sqlalchemy import text

from maild.store.db import make_engine
from tests.support.desk import make_message, read_maildir, reply_to
from tests.support.waiting import wait_settled, wait_until

__all__ = ["counts", "send", "wait_until"]  # used by other test modules


def send(
    port: int, raw: bytes, *, rcpt: str = "help@example.com", sender: str = "bob@example.org"
) -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        return client.sendmail(sender, [rcpt], raw)


def counts(db_url: str) -> dict[str, int]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return {
                t: conn.execute(text(f"select count(*) from {t}")).scalar_one()
                for t in ("inbound", "ticket", "article", "outbox")
            }
    finally:
        engine.dispose()


def test_message_becomes_ticket_and_ack(db_url, daemon_factory, tmp_path):
    """How fast: bench/run.py. Here: that it happens, and what the requester gets."""
    running = daemon_factory(db_url)
    refused = send(running.port, make_message())
    assert refused == {}
    outgoing = tmp_path / "outgoing"
    (ack,) = wait_until(lambda: read_maildir(outgoing))
    # (no display name: nothing verifies the sender, issue 14)
    assert ack["To"] == "bob@example.org"
    assert ack["Subject"].startswith("[#1] Printer on 3rd floor")
    assert ack["In-Reply-To"] == "<orig-1@example.org>"
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Auto-Response-Suppress"] == "All"
    assert ack["Message-ID"].endswith("@helpdesk.example.com>")
    body = ack.get_body(preferencelist=("plain",)).get_content()
    assert "ticket #1" in body
    assert "get back to you by" in body

    # The requester answers the acknowledgement from a mail client: same
    # ticket, no second acknowledgement.
    send(running.port, reply_to(ack, sender="Bob Customer <bob@example.org>",
                                body="It also jams on page 2."))  # fmt: skip
    wait_until(lambda: counts(db_url)["article"] == 3)  # request, ack, reply
    wait_settled(db_url)  # nothing more will come of it
    assert counts(db_url)["ticket"] == 1
    assert len(read_maildir(outgoing)) == 1


def test_unknown_recipient_is_refused_with_550(db_url, daemon_factory):
    running = daemon_factory(db_url)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        send(running.port, make_message(), rcpt="nobody@example.com")
    code, message = info.value.recipients["nobody@example.com"]
    assert code == 550 and message.startswith(b"5.1.1")
    assert counts(db_url)["inbound"] == 0


def test_plus_addressed_recipient_is_served(db_url, daemon_factory):
    running = daemon_factory(db_url)
    assert send(running.port, make_message(), rcpt="help+123.abc@example.com") == {}
    wait_until(lambda: counts(db_url)["ticket"] == 1)


def test_oversize_message_is_refused_with_552_and_not_stored(db_url, daemon_factory):
    running = daemon_factory(db_url, limits={"max_message_bytes": 10_000})
    big = make_message(body="x" * 70 + "\n" * 1 + ("y" * 70 + "\n") * 300)
    # HELO, not EHLO: no SIZE announced, so the limit is enforced on the data.
    with (
        pytest.raises(smtplib.SMTPDataError) as info,
        smtplib.SMTP("127.0.0.1", running.port, timeout=10) as client,
    ):
        client.helo("client.example.org")
        client.sendmail("bob@example.org", ["help@example.com"], big)
    assert info.value.smtp_code == 552
    assert info.value.smtp_error.startswith(b"5.3.4")
    # With ESMTP SIZE the client is told before it sends the data.
    with pytest.raises(smtplib.SMTPSenderRefused) as info2:
        send(running.port, big)
    assert info2.value.smtp_code == 552
    assert counts(db_url)["inbound"] == 0


def test_same_message_id_twice_is_stored_once(db_url, daemon_factory):
    running = daemon_factory(db_url)
    raw = make_message(message_id="<twice@example.org>")
    send(running.port, raw)
    send(running.port, raw)  # a client retrying after a lost 250
    wait_until(lambda: counts(db_url)["ticket"] == 1)
    wait_settled(db_url)
    c = counts(db_url)
    assert c["inbound"] == 1 and c["ticket"] == 1 and c["outbox"] == 1


def test_message_without_message_id_is_deduplicated_by_content(db_url, daemon_factory):
    running = daemon_factory(db_url)
    raw = make_message(message_id=None, subject="No id here")
    send(running.port, raw)
    send(running.port, raw)
    wait_until(lambda: counts(db_url)["ticket"] == 1)
    wait_settled(db_url)
    assert counts(db_url)["inbound"] == 1 and counts(db_url)["ticket"] == 1


def test_storage_failure_answers_451_without_exception_text(db_url, daemon_factory):
    running = daemon_factory(db_url)
    engine = make_engine(db_url)
    with engine.begin() as conn:  # the store breaks under the running daemon
        conn.execute(text("ALTER TABLE inbound RENAME TO inbound_gone"))
    engine.dispose()
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(running.port, make_message())
    assert info.value.smtp_code == 451
    assert info.value.smtp_error.startswith(b"4.3.0")
    assert b"inbound" not in info.value.smtp_error.lower()
    assert b"error" not in info.value.smtp_error.lower()


def test_garbage_is_stored_then_quarantined_and_daemon_goes_on(db_url, daemon_factory):
    running = daemon_factory(db_url)
    noise = bytes(range(256)).replace(b"\r", b"").replace(b"\n", b"").replace(b".", b"")
    garbage = b"".join(noise[i : i + 60] + b"\r\n" for i in range(0, len(noise), 60)) * 4
    assert send(running.port, garbage) == {}
    engine = make_engine(db_url)
    try:

        def quarantined() -> Any:
            with engine.connect() as conn:
                return conn.execute(
                    text(
                        "select error, raw from inbound join inbound_raw on inbound_id = id "
                        "where status = 'quarantined'"
                    )
                ).first()

        row = wait_until(quarantined)
        assert "not an email message" in row[0]
        assert bytes(row[1]).startswith(garbage[:50])
    finally:
        engine.dispose()
    # The next normal message is processed as usual.
    send(running.port, make_message(message_id="<after-garbage@example.org>"))
    wait_until(lambda: counts(db_url)["ticket"] == 1)


def test_lmtp_answers_once_per_recipient(sqlite_url, daemon_factory):
    running = daemon_factory(sqlite_url, smtp={"lmtp": True},
                             helpdesk={"addresses": ["help@example.com", "it@example.com"]})  # fmt: skip
    with smtplib.LMTP("127.0.0.1", running.port, timeout=10) as client:
        refused = client.sendmail(
            "bob@example.org", ["help@example.com", "it@example.com"], make_message()
        )
        # smtplib reads only the first reply after DATA; RFC 2033 sends one
        # per accepted recipient, so the second one is still waiting.
        code, reply = client.getreply()
    assert refused == {}
    assert code == 250 and reply.startswith(b"2.0.0")
    wait_until(lambda: counts(sqlite_url)["ticket"] == 1)
    assert counts(sqlite_url)["inbound"] == 1


def test_shutdown_refuses_new_connections_and_keeps_what_was_accepted(sqlite_url, daemon_factory):
    from tests.conftest import stop_daemon

    running = daemon_factory(sqlite_url)
    send(running.port, make_message())
    port = running.port
    stop_daemon(running)
    assert counts(sqlite_url)["inbound"] == 1
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass

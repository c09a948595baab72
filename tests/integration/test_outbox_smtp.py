"""The SMTP relay transport against a real SMTP listener (aiosmtpd) on loopback."""

from __future__ import annotations

import email
import email.policy
import ssl
import subprocess
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select

from maild.mail.parse import Address
from maild.service.sender import Sender, SmtpTransport
from maild.store.models import Outbox
from tests.support.desk import Desk, make_message, make_settings, reply_to
from tests.support.ports import OsPortController, reserved_port


class Sink:
    """Records what it receives; answers DATA with the codes it is given."""

    def __init__(self, answers: list[str] | None = None) -> None:
        self.answers = list(answers or [])
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        if self.answers:
            answer = self.answers.pop(0)
            if not answer.startswith("250"):
                return answer
        self.received.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 2.0.0 queued"


@pytest.fixture
def relay():
    started = []

    def start(sink: Sink, **kw) -> Controller:
        controller = OsPortController(sink, **kw)
        controller.start()
        started.append(controller)
        return controller

    yield start
    for c in started:
        c.stop()


def smtp_desk(db_url, tmp_path, port, **transport_kw) -> Desk:
    settings = make_settings(tmp_path, db_url, outgoing={"transport": "smtp", "smtp_host": "127.0.0.1",
                                                         "smtp_port": port, "retry_base_seconds": 60})  # fmt: skip
    return Desk(settings, transport=SmtpTransport("127.0.0.1", port, timeout=5, **transport_kw))


def outbox_rows(desk):
    with desk.sessions() as s:
        return list(s.scalars(select(Outbox).order_by(Outbox.id)))


def test_ack_is_relayed_byte_for_byte(db_url, tmp_path, relay):
    sink = Sink()
    c = relay(sink)
    desk = smtp_desk(db_url, tmp_path, c.port)
    try:
        desk.process(make_message())
        (row,) = outbox_rows(desk)
        assert row.status == "sent" and row.attempts == 0
        ((mail_from, rcpts, data),) = sink.received
        # The envelope sender is the mail's VERP return path (issue 6).
        assert mail_from.startswith("help+bounces.") and mail_from.endswith("@example.com")
        assert rcpts == ["bob@example.org"]
        assert data == row.raw
    finally:
        desk.close()


def test_4xx_retries_with_backoff_and_resends_identical_bytes(db_url, tmp_path, relay):
    sink = Sink(["451 4.3.0 try later"])
    c = relay(sink)
    desk = smtp_desk(db_url, tmp_path, c.port)
    try:
        desk.process(make_message())
        (row,) = outbox_rows(desk)
        assert row.status == "pending" and row.attempts == 1 and "451" in row.last_error
        assert sink.received == []
        assert desk.sender.drain().total == 0  # not due yet
        desk.clock.advance(seconds=61)
        assert desk.sender.drain().sent == 1
        (row,) = outbox_rows(desk)
        assert row.status == "sent" and sink.received[0][2] == row.raw
    finally:
        desk.close()


def test_each_recipient_gets_a_transaction_and_a_retry_skips_who_has_it(db_url, tmp_path, relay):
    """Issue 14: one return path per recipient (a bounce speaks for one person);
    after a failure half-way only the others are sent again."""
    from maild.mail.verp import parse_verp

    sink = Sink()
    c = relay(sink)
    desk = smtp_desk(db_url, tmp_path, c.port)
    try:
        desk.process(make_message())
        ack = email.message_from_bytes(sink.received[0][2], policy=email.policy.default)
        # Bob answers his acknowledgement copying Carol: she watches the ticket.
        desk.process(reply_to(ack, sender="Bob <bob@example.org>", body="Carol too.",
                              headers={"Cc": "Carol <carol@example.org>"}))  # fmt: skip
        sink.received.clear()
        sink.answers = ["250", "451 4.3.0 try later"]  # Bob's copy goes, Carol's waits
        with desk.ops() as ops:  # an agent's public reply: to Bob, Carol in Cc
            ops.reply(1, agent=Address("Anna", "anna@example.com"), text="On it.")
        row_id = outbox_rows(desk)[-1].id
        ((first_from, first_to, _data),) = sink.received
        assert first_to == ["bob@example.org"]
        assert parse_verp(desk.applier.signer, first_from).recipient == 0
        with desk.sessions() as s:
            again = s.get(Outbox, row_id)
            assert again.status == "pending" and again.rcpt_sent == ["bob@example.org"]
        desk.clock.advance(seconds=61)
        desk.sender.drain()
        assert [r[1] for r in sink.received] == [["bob@example.org"], ["carol@example.org"]]
        assert parse_verp(desk.applier.signer, sink.received[1][0]).recipient == 1
        assert outbox_rows(desk)[-1].status == "sent"
    finally:
        desk.close()


def test_5xx_is_dead_and_visible(db_url, tmp_path, relay):
    c = relay(Sink(["554 5.7.1 rejected"]))
    desk = smtp_desk(db_url, tmp_path, c.port)
    try:
        desk.process(make_message())
        (row,) = outbox_rows(desk)
        assert row.status == "dead" and "554" in row.last_error
        assert desk.outbox()[0]["status"] == "dead"
    finally:
        desk.close()


def test_relay_down_retries_then_gives_up(db_url, tmp_path):
    with reserved_port() as port:  # nothing listens here, nor can while the test runs
        _relay_down(db_url, tmp_path, port)


def _relay_down(db_url, tmp_path, port: int) -> None:
    desk = smtp_desk(db_url, tmp_path, port)
    try:
        desk.process(make_message())
        for _ in range(desk.settings.outgoing.max_attempts - 1):
            (row,) = outbox_rows(desk)
            assert row.status == "pending"
            desk.clock.advance(hours=7)
            desk.sender.drain()
        (row,) = outbox_rows(desk)
        assert row.status == "dead" and row.attempts == desk.settings.outgoing.max_attempts
        assert "ConnectionRefused" in row.last_error
    finally:
        desk.close()


def test_backoff_doubles_and_is_capped(sqlite_url, tmp_path):
    desk = Desk(make_settings(tmp_path, sqlite_url, outgoing={"retry_base_seconds": 60}))
    try:
        s: Sender = desk.sender
        assert [s.backoff(n) for n in (1, 2, 3)] == [timedelta(seconds=60), timedelta(seconds=120),
                                                      timedelta(seconds=240)]  # fmt: skip
        assert s.backoff(30) == timedelta(hours=6)
    finally:
        desk.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return d / "cert.pem", d / "key.pem"


def test_starttls_and_auth(db_url, tmp_path, relay, certificate):
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret")

    sink = Sink()
    c = relay(sink, tls_context=server_ctx, require_starttls=True, authenticator=authenticator,
              auth_required=True)  # fmt: skip
    client_ctx = ssl.create_default_context(cafile=str(cert))
    desk = smtp_desk(db_url, tmp_path, c.port, starttls=True, username="maild", password="s3cret",
                     tls_context=client_ctx)  # fmt: skip
    try:
        desk.process(make_message())
        assert outbox_rows(desk)[0].status == "sent"
        assert logins == [(b"maild", b"s3cret")] and len(sink.received) == 1
    finally:
        desk.close()

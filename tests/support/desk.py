"""Helpers for tests and benchmarks: a help desk you can drive by hand.

`Desk` wires intake, worker and sender on a real database exactly as the
daemon does, without threads: ``deliver()`` commits a message like any intake
path, ``drain()`` runs worker and sender until both queues are empty.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from maild.clock import Clock, FrozenClock
from maild.config.settings import Settings, settings_from_mapping
from maild.desk import agents
from maild.desk.apply import Applier
from maild.intake.commit import Delivery, Stored, store_one, traced
from maild.mail.render import Renderer
from maild.service.parsepool import ParsePool
from maild.service.sender import (
    MaildirTransport,
    Sender,
    SendStats,
    Transport,
    transport_from_settings,
)
from maild.service.worker import Processed, Worker
from maild.store.db import make_engine, session_factory
from maild.store.models import Inbound
from maild.store.states import Source


def make_settings(tmp_path: Path, db_url: str, **sections: Any) -> Settings:
    """Settings for a test: our usual help desk, outgoing mail under `tmp_path`."""
    raw: dict[str, dict[str, Any]] = {
        "database": {"url": db_url},
        "helpdesk": {
            "addresses": ["help@example.com"],
            "domain": "helpdesk.example.com",
            "secret_file": str(tmp_path / "secret.key"),
            "timezone": "UTC",  # not the machine's: mail reads the same everywhere
        },
        "outgoing": {"maildir": str(tmp_path / "outgoing")},
        # Parse in the calling thread: a process pool per test costs more than
        # it shows; the pool has tests of its own, and the daemon tests use it.
        "worker": {"poll_seconds": 0.2, "parse_processes": 0},
        "http": {"listen": "127.0.0.1:0"},
        # Tests (and benchmarks) about other things send bursts of similar reports
        # within seconds, which would open major incidents (maild.majors) and
        # change what they count; tests/integration/test_majors.py turns them on.
        "major": {"enabled": False},
        # The frozen clock starts on a Monday morning: the weekly report would
        # be due in every test with duty managers (tests/integration/test_weekly_report.py).
        "report": {"weekly_day": ""},
        # A daemon under test starts no console child; web tests run it themselves.
        "web": {"enabled": False},
    }
    for name, values in sections.items():
        if isinstance(values, list):  # an array of tables: [[agents]]
            raw[name] = values
        else:
            raw.setdefault(name, {}).update(values)
    return settings_from_mapping(raw, source="<test>")


class Desk:
    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        transport: Transport | None = None,
        parser: ParsePool | None = None,
        *,
        client: str | None = None,
    ) -> None:
        """`client`: the address every delivery comes from, as SMTP intake records it
        (`deliver`); None: no Received line of maild's (most tests need none)."""
        self.settings = settings
        self.client = client
        self.clock = clock or FrozenClock()
        self.engine = make_engine(settings.database.url)
        self.sessions = session_factory(self.engine)
        self.renderer = Renderer.from_settings(settings)
        self.applier = Applier(settings, self.renderer)
        agents.install(self.sessions, self.applier)
        self._own_parser = parser is None  # a pool handed in is its owner's to close
        self.parser = parser or ParsePool.from_settings(settings)
        self.worker = Worker(self.sessions, settings, self.clock, self.applier, parser=self.parser)
        self.transport = transport or transport_from_settings(settings)
        self.sender = Sender(self.sessions, settings, self.clock, self.transport)

    def deliver(
        self,
        raw: bytes,
        *,
        recipient: str | None = "help@example.com",
        source: Source = Source.SMTP,
        envelope_from: str | None = None,
        notify: bool = True,
        envelope_to: tuple[str, ...] | None = None,
        client: str | None = None,
    ) -> Stored:
        """Store `raw` as an intake path would; `envelope_to` as given on RCPT TO
        (default: `recipient`), e.g. a personal reply address. With a `client`
        (default: the desk's), maild's Received line names it, as SMTP intake's does."""
        if envelope_to is None:
            envelope_to = (recipient,) if recipient else ()
        client = client or self.client
        trace = b""
        if client is not None:
            raw, trace = traced(raw, self.settings, self.clock.now(), protocol="ESMTP",
                                helo="client.example", ip=client)  # fmt: skip
        return store_one(
            self.sessions,
            Delivery(
                raw=raw,
                source=source,
                recipient=recipient,
                envelope_from=envelope_from,
                envelope_to=envelope_to,
                notify=notify,
                trace=trace,
            ),  # fmt: skip
            self.clock,
        )

    def drain(self) -> tuple[list[Processed], SendStats]:
        processed = self.worker.drain()
        return processed, self.sender.drain()

    def sweep(self) -> dict[str, int]:
        """Run every periodic sweep once at the clock's time, then send what they queued."""
        from maild.desk.sweeps import run_all

        acted = run_all(self.sessions, self.applier, self.clock)
        self.sender.drain()
        return acted

    def ops(self) -> Any:
        """A transaction with `TicketOps` at the clock's time (commits on leaving)::

        with desk.ops() as ops:
            ops.resolve(1, actor="anna@example.com", note="done")
        """
        from contextlib import contextmanager

        from maild.desk.actions import TicketOps

        @contextmanager
        def run() -> Any:
            with self.sessions.begin() as session:
                yield TicketOps(session, self.applier, self.clock.now())
            self.sender.drain()

        return run()

    def process(self, raw: bytes, **kw: Any) -> Processed:
        """Deliver one message and run it through; return its outcome."""
        stored = self.deliver(raw, **kw)
        processed, _sent = self.drain()
        for p in processed:
            if p.inbound_id == stored.inbound_id:
                return p
        raise AssertionError(f"inbound {stored.inbound_id} was not processed")

    def inbound(self, inbound_id: int) -> Inbound:
        with self.sessions() as session:
            row = session.scalars(select(Inbound).where(Inbound.id == inbound_id)).one()
            session.expunge(row)
            return row

    def tickets(self, status: str | None = None) -> list[dict[str, Any]]:
        from maild.store import views

        with self.sessions() as session:
            return list(reversed(views.list_tickets(session, status, limit=1_000_000)))

    def ticket(self, number: int) -> dict[str, Any]:
        from maild.store import views

        with self.sessions() as session:
            data = views.show_ticket(session, number)
        assert data is not None, f"no ticket #{number}"
        return data

    def outbox(self) -> list[dict[str, Any]]:
        from maild.store import views

        with self.sessions() as session:
            return list(reversed(views.list_outbox(session, limit=1_000_000)))

    def outgoing(self) -> list[EmailMessage]:
        """Mail the Maildir transport delivered, oldest first."""
        assert isinstance(self.transport, MaildirTransport)
        return read_maildir(self.transport.path)

    def close(self) -> None:
        if self._own_parser:
            self.parser.close()
        self.engine.dispose()


def read_maildir(path: Path) -> list[EmailMessage]:
    files = sorted((path / "new").glob("*")) if (path / "new").is_dir() else []
    out = []
    for f in files:
        msg = email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        out.append(msg)
    return out


def make_message(
    *,
    sender: str = "Bob Customer <bob@example.org>",
    to: str = "help@example.com",
    subject: str = "Printer on 3rd floor not working",
    body: str = "Hello,\n\nthe printer on the 3rd floor shows error E42.\n\nBob\n",
    message_id: str | None = "<orig-1@example.org>",
    in_reply_to: str | None = None,
    references: str | None = None,
    headers: Mapping[str, str] | None = None,
    date: Any = None,
) -> bytes:
    """A small, well-formed message as a mail client would send it."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    if date is not None:
        msg["Date"] = format_datetime(date)
    if message_id:
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes(policy=email.policy.SMTP)


def reply_to(original: EmailMessage, *, sender: str, body: str, subject: str | None = None,
             message_id: str = "<reply-1@example.org>", to: str | None = None,
             headers: Mapping[str, str] | None = None) -> bytes:  # fmt: skip
    """A reply to `original` as a mail client builds it (In-Reply-To + References),
    to its Reply-To (else its From) unless `to` is given."""
    refs = str(original.get("References", "")).split()
    mid = str(original["Message-ID"])
    return make_message(
        sender=sender,
        to=to or str(original["Reply-To"] or original["From"]),
        subject=subject if subject is not None else f"Re: {original['Subject']}",
        body=body,
        message_id=message_id,
        in_reply_to=mid,
        references=" ".join([*refs, mid]),
        headers=headers,
    )

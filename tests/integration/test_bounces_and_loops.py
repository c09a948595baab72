"""Bounces (VERP, hard/soft), rate limits, loop alerts, and the loop test:
on a real database (SQLite and PostgreSQL) with a frozen clock."""

from __future__ import annotations

import tomllib
from pathlib import Path

from sqlalchemy import select

from maild.mail.tokens import Signer
from maild.mail.verp import outbox_id_of, verp_address
from maild.service.sender import OutgoingItem
from maild.store.models import Contact, Outbox
from maild.store.states import Outcome
from tests.support.desk import Desk, make_message, make_settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BOUNCES = FIXTURES / "bounces"
EXPECTED = tomllib.loads((BOUNCES / "EXPECTED.toml").read_text())
AUTOREPLIES = sorted((FIXTURES / "autoreplies").glob("*.eml"))


class Network:
    """Collects what a desk sends, envelope included (the test's mail relay).

    `sent` holds mail to requesters and maild's alerts; the tier-1 group's
    routine notifications of new tickets (issue 4) go to `agent_mail`.
    """

    def __init__(self) -> None:
        self.sent: list[OutgoingItem] = []
        self.agent_mail: list[OutgoingItem] = []

    def send(self, item: OutgoingItem) -> None:
        if item.rcpt_to == ("tier1@example.com",) and b"] maild: " not in item.raw:
            self.agent_mail.append(item)
        else:
            self.sent.append(item)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_desk(tmp_path: Path, db_url: str, name: str = "a", **sections) -> tuple[Desk, Network]:
    net = Network()
    sections.setdefault("tiers", {})
    sections["tiers"].setdefault("tier1", ["tier1@example.com"])
    desk = Desk(make_settings(tmp_path / name, db_url, **sections), transport=net)
    return desk, net


def dsn(to_verp: str, failed: str, original_id: str, *, status: str = "5.1.1") -> bytes:
    action = "failed" if status.startswith("5") else "delayed"
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        f"To: {to_verp}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <dsn-{status}-{failed}@mx.example.org>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        f"--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
        f"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n"
        f"\r\nFinal-Recipient: rfc822; {failed}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <{failed}>: Recipient address rejected\r\n"
        f"\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Help Desk <help@example.com>\r\n"
        f"To: {failed}\r\nMessage-ID: {original_id}\r\nSubject: [#1] x\r\n\r\n--B--\r\n"
    ).encode()


def contact_state(desk: Desk, email: str) -> str:
    with desk.sessions() as s:
        return s.scalar(select(Contact.bounce_state).where(Contact.email == email))


def test_every_outgoing_mail_has_a_verp_return_path(db_url, tmp_path):
    desk, net = make_desk(tmp_path, db_url)
    desk.process(make_message())
    (ack,) = net.sent
    assert ack.mail_from.startswith("help+bounces.") and ack.mail_from.endswith("@example.com")
    with desk.sessions() as s:
        row = s.execute(select(Outbox.id, Outbox.mail_from).where(Outbox.kind == "ack")).one()
    # The row keeps the help-desk address; the envelope sender is made when sending,
    # one per recipient (issue 14: a bounce speaks for that recipient alone).
    assert row.mail_from == "help@example.com"
    assert ack.mail_from == verp_address(desk.applier.signer, "help@example.com", row.id, 0)
    # Signed: it names this outbox row under our secret, and under no other.
    assert outbox_id_of(desk.applier.signer, ack.mail_from) == row.id
    assert outbox_id_of(Signer(b"another secret of 32 characters!"), ack.mail_from) is None
    desk.close()


def test_hard_bounce_marks_the_contact_stops_mail_and_tells_an_agent(db_url, tmp_path):
    desk, net = make_desk(tmp_path, db_url)
    first = desk.process(make_message(sender="Ann <ann@example.net>"))
    (ack,) = net.sent
    bounce = desk.process(dsn(ack.mail_from, "ann@example.net", ack.message_id),
                          envelope_from="", recipient="help@example.com",
                          envelope_to=(ack.mail_from,))  # fmt: skip
    # The bounce came back to the VERP return path of Ann's copy (RCPT TO).
    assert bounce.outcome == Outcome.APPENDED and bounce.ticket_id == first.ticket_id
    assert contact_state(desk, "ann@example.net") == "hard"
    t = desk.ticket(first.ticket_id)
    assert t["requester"]["bounce_state"] == "hard"
    assert [a["kind"] for a in t["articles"]][-2:] == ["bounce", "notification"]
    assert t["status"] == "open"  # never reopened, never acknowledged
    alert = net.sent[-1]
    assert (
        alert.rcpt_to == ("tier1@example.com",) and b"ann@example.net is undeliverable" in alert.raw
    )
    assert [a["visibility"] for a in t["articles"]][-1] == "internal"
    # No more automatic mail to ann: resolving her ticket tells her nothing.
    with desk.ops() as ops:
        ops.resolve(first.ticket_id, actor="anna@cli", note="Fixed.")
    assert len(net.sent) == 2  # ack + alert, nothing new
    kinds = [e["kind"] for e in desk.ticket(first.ticket_id)["events"]]
    assert "resolved_suppressed" in kinds
    # Until she writes in again (issue 14): then she is deliverable, and answered.
    again = desk.process(make_message(sender="ann@example.net", message_id="<ann2@example.net>"))
    assert again.outcome == Outcome.NEW_TICKET
    assert contact_state(desk, "ann@example.net") == "ok"
    assert net.sent[-1].rcpt_to == ("ann@example.net",) and len(net.sent) == 3
    desk.close()


def test_soft_bounce_is_recorded_and_mail_goes_on(db_url, tmp_path):
    desk, net = make_desk(tmp_path, db_url)
    desk.process(make_message(sender="ann@example.net"))
    (ack,) = net.sent
    p = desk.process(
        dsn(ack.mail_from, "ann@example.net", ack.message_id, status="4.2.2"),
        envelope_to=(ack.mail_from,),
    )
    assert p.outcome == Outcome.APPENDED
    assert contact_state(desk, "ann@example.net") == "soft"
    events = desk.ticket(p.ticket_id)["events"]
    assert any(e["kind"] == "bounce_received" and e["detail"]["kind"] == "soft" for e in events)
    desk.process(make_message(sender="ann@example.net", message_id="<ann2@example.net>"))
    assert len(net.sent) == 2  # the second acknowledgement went out; no alert
    desk.close()


def test_forged_bounce_without_our_token_marks_nobody(db_url, tmp_path):
    desk, net = make_desk(tmp_path, db_url)
    desk.process(make_message(sender="ann@example.net"))
    forged = dsn("help+bounces.1.aaaaaaaaaaaaaaaaaaaaaaaaaa@example.com", "ann@example.net",
                 "<not-ours@example.org>")  # fmt: skip
    p = desk.process(forged)
    assert p.outcome == Outcome.IGNORED
    assert contact_state(desk, "ann@example.net") == "ok"
    assert len(desk.tickets()) == 1
    desk.close()


def test_rate_limits_suppress_flag_and_alert_once(sqlite_url, tmp_path):
    desk, net = make_desk(tmp_path, sqlite_url,
                          limits={"autoreply_per_address_per_hour": 3})  # fmt: skip
    outcomes = []
    for i in range(6):  # six separate requests within the hour: four would be one too many
        outcomes.append(desk.process(make_message(message_id=f"<r{i}@example.org>",
                                                  subject=f"Request {i}")))  # fmt: skip
        desk.clock.advance(minutes=5)
    acks = [m for m in net.sent if m.rcpt_to == ("bob@example.org",)]
    alerts = [m for m in net.sent if m.rcpt_to == ("tier1@example.com",)]
    assert len(acks) == 3 and len(alerts) == 1
    assert all(p.outcome == Outcome.NEW_TICKET for p in outcomes)  # tickets still open
    flagged = [t for t in desk.tickets() if t["loop_suspected"]]
    assert [t["number"] for t in flagged] == [4, 5, 6]
    desk.clock.advance(hours=1)
    desk.process(make_message(message_id="<later@example.org>", subject="Later"))
    assert len([m for m in net.sent if m.rcpt_to == ("bob@example.org",)]) == 4
    desk.close()


def test_per_ticket_limit_holds_back_the_fourth_mail_in_ten_minutes(db_url, tmp_path):
    """limits.autoreply_per_ticket_per_10_minutes (3): a ticket whose status flaps
    (an agent's script, a loop through the agent side) mails its requester at
    most three times in any ten minutes; the ticket is flagged, tier 1 told once."""
    desk, net = make_desk(tmp_path, db_url)
    first = desk.process(make_message())  # t = 0: the acknowledgement (1)

    def to_bob() -> list[OutgoingItem]:
        return [m for m in net.sent if m.rcpt_to == ("bob@example.org",)]

    for status in ("in_progress", "pending_user", "in_progress"):  # t = 3, 6, 9 minutes
        desk.clock.advance(minutes=3)
        with desk.ops() as ops:
            ops.set_status(first.ticket_id, status, actor="anna@example.com")
    assert len(to_bob()) == 3  # the third status change, at t = 9, was held back
    alerts = [m for m in net.sent if m.rcpt_to == ("tier1@example.com",)]
    assert len(alerts) == 1 and b"#1" in alerts[0].raw
    (ticket,) = desk.tickets()
    assert ticket["loop_suspected"]
    kinds = [e["kind"] for e in desk.ticket(first.ticket_id)["events"]]
    assert kinds.count("status_held") == 1 and "loop_suspected" in kinds, (
        kinds
    )  # held for a digest (issue 14)

    # Ten minutes after the last mail that went out (t = 6) the ticket may mail again.
    desk.clock.advance(minutes=7)  # t = 16: the window (6, 16] is empty
    with desk.ops() as ops:
        ops.set_status(first.ticket_id, "pending_user", actor="anna@example.com")
    assert len(to_bob()) == 4
    desk.close()


def test_global_breaker(sqlite_url, tmp_path):
    desk, net = make_desk(tmp_path, sqlite_url, limits={"autoreply_global_per_hour": 2,
                                                        "autoreply_per_source_per_hour": 1})  # fmt: skip
    for i in range(4):
        desk.process(make_message(sender=f"u{i}@example.org", message_id=f"<g{i}@x>"))
    assert len([m for m in net.sent if m.rcpt_to != ("tier1@example.com",)]) == 2
    assert len([m for m in net.sent if m.rcpt_to == ("tier1@example.com",)]) == 1
    desk.close()


def route(item: OutgoingItem, desks: dict[str, Desk], responder) -> str:
    """Deliver one outgoing mail the way the internet would; say which loop it is in."""
    rcpt = item.rcpt_to[0]
    if rcpt in desks:
        desks[rcpt].deliver(item.raw, envelope_from=item.mail_from, recipient=rcpt)
        return "b"
    home = desks[next(a for a in desks if item.mail_from.endswith("@" + a.split("@")[1]))]
    if rcpt.startswith("nobody@"):  # MAILER-DAEMON: that address does not exist
        home.deliver(dsn(item.mail_from, rcpt, item.message_id), envelope_from="",
                     recipient=home.settings.helpdesk.primary_address,
                     envelope_to=(item.mail_from,))  # fmt: skip
        return "bounce"
    responder(item, home)
    return "vacation"


def test_loop_two_desks_a_vacation_responder_and_a_mailer_daemon(tmp_path, sqlite_url):
    """A seeds every loop at once; in a simulated hour at most 3 mails per loop."""
    a, net_a = make_desk(tmp_path, sqlite_url, "a", helpdesk={"addresses": ["help@a.example"],
                         "domain": "hd.a.example"}, tiers={"tier1": []})  # fmt: skip
    b_url = sqlite_url.replace("maild.db", "b.db")
    from maild.store.db import make_engine, upgrade

    engine = make_engine(b_url)
    upgrade(engine)
    engine.dispose()
    b, net_b = make_desk(tmp_path, b_url, "b", helpdesk={"addresses": ["help@b.example"],
                         "domain": "hd.b.example"}, tiers={"tier1": []})  # fmt: skip
    b.clock = a.clock
    desks = {"help@a.example": a, "help@b.example": b}
    vacation_replies: list[bytes] = []

    def responder(item: OutgoingItem, home: Desk) -> None:
        # A naive vacation responder: answers everything (even mail marked
        # Auto-Submitted), sets no Auto-Submitted itself, and writes to the
        # return path as RFC 3834 asks.
        import email

        orig = email.message_from_bytes(item.raw)
        reply = make_message(sender=item.rcpt_to[0], to=item.mail_from,
                             subject=f"Out of office: {orig['Subject']}",
                             message_id=f"<vac{len(vacation_replies)}@vacation.example>",
                             in_reply_to=orig["Message-ID"], body="I am away.")  # fmt: skip
        vacation_replies.append(reply)
        home.deliver(reply, envelope_from="carol@vacation.example",
                     recipient=home.settings.helpdesk.primary_address,
                     envelope_to=(item.mail_from,))  # fmt: skip

    # Seeds: mail from B's address (a forwarding rule), from a person on
    # vacation, and from an address that bounces.
    a.deliver(make_message(sender="help@b.example", to="help@a.example",
                           message_id="<s1@b.example>", subject="Seed 1"), recipient="help@a.example")  # fmt: skip
    a.deliver(make_message(sender="carol@vacation.example", to="help@a.example",
                           message_id="<s2@vacation.example>", subject="Seed 2"), recipient="help@a.example")  # fmt: skip
    a.deliver(make_message(sender="nobody@gone.example", to="help@a.example",
                           message_id="<s3@gone.example>", subject="Seed 3"), recipient="help@a.example")  # fmt: skip
    traffic: dict[str, int] = {"b": 0, "vacation": 0, "bounce": 0}
    for _minute in range(60):
        for desk, net in ((a, net_a), (b, net_b)):
            desk.drain()
            while net.sent:
                traffic[route(net.sent.pop(0), desks, responder)] += 1
        a.clock.advance(minutes=1)
    traffic["vacation"] += len(vacation_replies)  # what the responder sent back
    traffic["bounce"] += 1  # the DSN the MAILER-DAEMON sent back
    assert traffic == {"b": 1, "vacation": 2, "bounce": 2}, traffic
    assert all(v <= 3 for v in traffic.values())
    assert len(a.tickets()) == 3 and b.tickets() == []
    a.close()
    b.close()


def test_bounce_corpus(sqlite_url, tmp_path):
    """Each real-world bounce, returned to the VERP address of the mail it is about:
    0 acknowledgements, 0 tickets, hard/soft as flufl.bounce's maintainers expect."""
    from sqlalchemy import update

    desk, net = make_desk(tmp_path, sqlite_url)
    wrong = []
    for number, (name, spec) in enumerate(sorted(EXPECTED.items()), 1):
        raw = (BOUNCES / f"{name}.txt").read_bytes()
        addresses = spec["addresses"] or ["someone@example.net"]
        with desk.sessions.begin() as s:  # each bounce on its own: the address is fine again
            s.execute(update(Contact).values(bounce_state="ok"))
        desk.clock.advance(hours=1)  # and the rate limits start afresh
        sent_before = len(net.sent)
        first = desk.process(make_message(sender=addresses[0], message_id=f"<o{number}@x.net>"))
        ack = net.sent[-1]
        assert len(net.sent) == sent_before + 1 and ack.rcpt_to == (addresses[0],)
        p = desk.process(raw, envelope_to=(ack.mail_from,))
        alerts = 1 if spec["kind"] == "hard" else 0
        state = contact_state(desk, addresses[0])
        if len(net.sent) != sent_before + 1 + alerts or len(desk.tickets()) != number:
            wrong.append((name, "sent mail or opened a ticket", p.reason))
        elif spec["kind"] == "person":  # nobody writes to a VERP address: kept, not acted on
            if state != "ok":
                wrong.append((name, state, p.reason))
        elif p.outcome != Outcome.APPENDED or p.ticket_id != first.ticket_id:
            wrong.append((name, p.outcome, p.reason))
        elif state != {"hard": "hard", "soft": "soft"}.get(spec["kind"], "ok"):
            wrong.append((name, state, p.reason))
    desk.close()
    assert wrong == []


def test_bounces_on_their_own_create_no_ticket_and_no_mail(sqlite_url, tmp_path):
    """No envelope at all (as `maild ingest` or IMAP give them): headers only."""
    desk, net = make_desk(tmp_path, sqlite_url)
    people = []
    for name in sorted(EXPECTED):
        p = desk.process((BOUNCES / f"{name}.txt").read_bytes())
        if p.outcome == Outcome.NEW_TICKET:
            people.append(name)
    # groupwise_03 is a person's mail; simple_20 is a moderator notice a list
    # sent back with only "non remis" at the end of a Re: subject to say so.
    assert people == ["groupwise_03", "simple_20"]
    assert len(net.sent) == 2
    desk.close()


def test_auto_reply_corpus(db_url, tmp_path):
    """Out-of-office replies from several systems: on their ticket, no ack, no reopen."""
    desk, net = make_desk(tmp_path, db_url)
    first = desk.process(make_message(sender="Bob Customer <bob@example.org>"))
    (ack,) = net.sent
    for path in AUTOREPLIES:
        raw = path.read_bytes().replace(b"<ACK_MESSAGE_ID>", ack.message_id.encode())
        p = desk.process(raw)
        assert p.outcome in (Outcome.APPENDED, Outcome.IGNORED), (path.name, p.reason)
        if p.outcome == Outcome.APPENDED:
            article = desk.ticket(first.ticket_id)["articles"][-1]
            assert (article["kind"], article["visibility"]) == ("automated", "internal")
    assert len(net.sent) == 1 and len(desk.tickets()) == 1
    assert desk.ticket(first.ticket_id)["status"] == "open"
    # The threaded ones land on the ticket; the rest are ignored with a reason.
    kinds = [a["kind"] for a in desk.ticket(first.ticket_id)["articles"]]
    assert kinds.count("automated") >= 6
    desk.close()

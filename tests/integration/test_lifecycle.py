"""A ticket's whole life on a frozen clock, on SQLite and PostgreSQL.

Real intake, worker, sweeps and sender; every mail lands in the outgoing
Maildir and the tests read what each party received.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from maild.mail.parse import Address
from maild.mail.render import format_when
from tests.support.desk import Desk, make_message, make_settings, reply_to

TIERS = {
    "tier1": ["tier1@example.com"],
    "tier2": ["tier2@example.com"],
    "tier3": ["tier3@example.com"],
    "duty_manager": ["duty@example.com"],
    "security": ["security@example.com"],
}
REQUESTER = "Bob Customer <bob@example.org>"
AGENT = Address("Tina Tier-Two", "tina@example.com")
H = timedelta(hours=1)


@pytest.fixture
def desk(db_url: str, tmp_path: Path) -> Iterator[Desk]:
    d = Desk(make_settings(tmp_path, db_url, tiers=TIERS))
    yield d
    d.close()


class Mailboxes:
    """What each address received so far, read from the outgoing Maildir."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.seen = 0

    def new(self) -> dict[str, list[EmailMessage]]:
        mails = self.desk.outgoing()
        fresh, self.seen = mails[self.seen :], len(mails)
        out: dict[str, list[EmailMessage]] = defaultdict(list)
        for m in fresh:
            for addr in m["To"].addresses:
                out[addr.addr_spec].append(m)
        return dict(out)


def kinds(desk: Desk) -> dict[str, list[str]]:
    """Outbox kinds per recipient, in order (the whole life)."""
    out: dict[str, list[str]] = defaultdict(list)
    for row in desk.outbox():
        for to in row["to"]:
            out[to].append(row["kind"])
    return dict(out)


def text(mail: EmailMessage) -> str:
    """The text part as a person reads it: wrapped lines joined (runs of spaces as one)."""
    return " ".join(mail.get_body(("plain",)).get_content().split())


# Subject and body that triage gives each priority (see tests/fixtures/triage).
CASES = {
    1: ("URGENT: production database down",
        "The production ERP database is down and nobody in the company can enter orders."),
    2: ("Wi-Fi not working on 2nd floor",
        "The wifi on the whole 2nd floor is not working, none of us can connect."),
    3: ("Printer jam on 3rd floor", "The printer on the 3rd floor shows the paper jam error E42."),
    4: ("Second monitor", "Could I get a second monitor for my desk? Not urgent."),
}  # fmt: skip
TARGETS = {1: (1, 4), 2: (1, 8), 3: (2, 24), 4: (3, 72)}  # hours: first response, resolution


@pytest.mark.parametrize("priority", [1, 2, 3, 4])
def test_whole_life_of_a_ticket(desk, priority):
    fr, res = (t * H for t in TARGETS[priority])
    box = Mailboxes(desk)
    t0 = desk.clock.now()
    subject, body = CASES[priority]

    # 1. Acknowledgement with the due time; tier 1 is told (a P1 also tier 3 and the duty manager).
    p = desk.process(make_message(sender=REQUESTER, subject=subject, body=body))
    ticket = desk.ticket(p.ticket_id)
    assert ticket["priority"] == f"P{priority}" and ticket["tier"] == 1
    mail = box.new()
    (ack,) = mail.pop("bob@example.org")
    assert f"get back to you by {format_when(t0 + fr)}" in text(ack)
    assert f"aim to solve it by {format_when(t0 + res)}" in text(ack)
    assert ack["In-Reply-To"] == "<orig-1@example.org>"
    assert ("highest priority (P1)" in text(ack)) == (priority == 1)
    (new,) = mail.pop("tier1@example.com")
    assert f"[#{p.ticket_id}] P{priority} new ticket: {subject}" == new["Subject"]
    assert body[:40] in text(new)
    if priority == 1:  # hierarchical escalation at once
        assert "at once" in text(mail.pop("tier3@example.com")[0])
        assert "at once" in text(mail.pop("duty@example.com")[0])
    assert mail == {}

    # 2. At 75 % of the first-response target tier 1 is warned; a second sweep sends nothing.
    desk.clock.set(t0 + fr * 0.75 + timedelta(minutes=1))
    desk.sweep()
    desk.sweep()
    mail = box.new()
    (warning,) = mail.pop("tier1@example.com")
    assert "first response target" in text(warning) and "SLA warning" in warning["Subject"]
    assert mail == {}

    # 3. Breach: alert to tier 1, escalation to tier 2, the requester told what happens next.
    desk.clock.set(t0 + fr + timedelta(minutes=1))
    assert desk.sweep()["sla"] == 1
    assert desk.sweep()["sla"] == 0
    mail = box.new()
    assert "SLA BREACH" in mail.pop("tier1@example.com")[0]["Subject"]
    assert "escalated from tier 1 to tier 2" in text(mail.pop("tier2@example.com")[0])
    (escalated,) = mail.pop("bob@example.org")
    assert "tier 2 specialists" in text(escalated) and "taking longer than we promised" in text(
        escalated
    )
    assert mail == {}
    assert (desk.ticket(p.ticket_id)["tier"], desk.ticket(p.ticket_id)["status"]) == (
        2,
        "escalated",
    )

    # 4. Tier 2 answers with a question: the first response; the clock waits for Bob.
    with desk.ops() as ops:
        ops.reply(p.ticket_id, agent=AGENT, text="Which room are you in?", status="pending_user")
    (question,) = box.new().pop("bob@example.org")
    assert "Which room are you in?" in text(question)
    due_before = desk.ticket(p.ticket_id)["resolution_due"]
    desk.clock.advance(hours=2)
    desk.process(
        reply_to(question, sender=REQUESTER, body="Room 301.", message_id="<r1@example.org>")
    )
    t = desk.ticket(p.ticket_id)
    assert t["status"] == "open" and t["first_response_at"] is not None
    assert t["sla"]["paused_seconds"] == 2 * 3600
    resolution_due = datetime.fromisoformat(t["resolution_due"])
    assert resolution_due - datetime.fromisoformat(due_before) == 2 * H
    # A reply from the requester sends them nothing; the tier working the ticket hears of it.
    mail = box.new()
    (told,) = mail.pop("tier2@example.com")
    assert "Room 301." in text(told) and "replied" in text(told)
    assert mail == {}

    # 5. Resolution warning to tier 2, then the agent resolves: "reply to reopen".
    desk.clock.set(resolution_due - res * 0.25 + timedelta(minutes=1))
    desk.sweep()
    (warning,) = box.new().pop("tier2@example.com")
    assert "resolution target" in text(warning)
    with desk.ops() as ops:
        ops.resolve(p.ticket_id, actor=AGENT.email, note="Replaced the access point.")
    (resolved,) = box.new().pop("bob@example.org")
    assert "Replaced the access point." in text(resolved)
    assert "reply to this message and we will reopen the ticket" in text(resolved)
    assert "a reply within 14 days reopens it" in text(resolved)

    # 6. Bob replies a day later: reopened, Bob and tier 2 are told; fresh resolution target.
    desk.clock.advance(days=1)
    reopened_at = desk.clock.now()
    desk.process(
        reply_to(resolved, sender=REQUESTER, body="Still broken.", message_id="<r2@example.org>")
    )
    mail = box.new()
    told = text(mail.pop("bob@example.org")[0])
    assert "reopened" in told and "because of your reply" in told
    assert "reopened this ticket" in text(mail.pop("tier2@example.com")[0])
    assert mail == {}
    assert desk.ticket(p.ticket_id)["status"] == "open"

    # 7. The new resolution target is missed: escalation to tier 3.
    desk.clock.set(reopened_at + res + timedelta(minutes=1))
    desk.sweep()
    mail = box.new()
    assert "SLA BREACH" in mail.pop("tier2@example.com")[0]["Subject"]
    assert "from tier 2 to tier 3" in text(mail.pop("tier3@example.com")[0])
    assert "tier 3 specialists" in text(mail.pop("bob@example.org")[0])
    assert mail == {}

    # 8. Resolved again, closed automatically three days later with a closing notice.
    with desk.ops() as ops:
        ops.resolve(p.ticket_id, actor="tom@example.com", note="Rebuilt the controller.")
    desk.clock.advance(days=3, minutes=1)
    desk.sweep()
    desk.sweep()
    mail = box.new()
    assert [m["Subject"].split(":")[0] for m in mail.pop("bob@example.org")] == [
        f"[#{p.ticket_id}] Resolved", f"[#{p.ticket_id}] Closed"]  # fmt: skip
    assert mail == {}
    assert desk.ticket(p.ticket_id)["status"] == "closed"

    # The whole life, per party:
    expected = {
        "bob@example.org": ["ack", "escalated", "reply", "resolved", "status", "escalated",
                            "resolved", "closed"],
        "tier1@example.com": ["agent_new", "sla_warning", "sla_breach"],
        "tier2@example.com": ["agent_escalated", "agent_update", "sla_warning", "agent_update",
                              "sla_breach"],  # the first update: Bob's reply
        "tier3@example.com": ["agent_escalated"],
    }  # fmt: skip
    if priority == 1:
        expected["tier3@example.com"].insert(0, "agent_new")
        expected["duty@example.com"] = ["agent_new"]
    assert kinds(desk) == expected
    events = [e["kind"] for e in desk.ticket(p.ticket_id)["events"]]
    assert events.count("escalated") == 2 + (priority == 1)
    assert events.count("sla_breach") == 2 and events.count("first_response") == 1


def test_security_incident_restricts_content_and_runs_the_regulator_clock(desk):
    box = Mailboxes(desk)
    t0 = desk.clock.now()
    p = desk.process(make_message(
        sender="Maija Meikäläinen <maija@example.org>",
        subject="Klikkasin linkkiä ja annoin salasanani",
        body="Klikkasin sähköpostin linkkiä ja syötin salasanani. Epäilen, että tunnukseni on "
             "kaapattu. Asiakasrekisterin tiedot ovat koneellani.",
    ))  # fmt: skip
    t = desk.ticket(p.ticket_id)
    assert (t["category"], t["priority"], t["tier"], t["security"]) == ("security", "P1", 3, True)
    assert t["regulator"]["due"] == (t0 + 72 * H).isoformat()
    mail = box.new()
    ack = mail.pop("maija@example.org")[0]
    assert ack["Content-Language"] == "fi" and "tietoturvapoikkeamana" in text(ack)
    secret_words = ("salasan", "Klikkasin", "Asiakasrekisterin", "Maija")
    full = mail.pop("security@example.com")[0]
    assert all(w in text(full) + full["Subject"] for w in ("Klikkasin", "Maija"))
    for who in ("tier3@example.com", "duty@example.com"):
        (m,) = mail.pop(who)
        whole = m["Subject"] + text(m) + m.get_body(("html",)).get_content()
        assert not any(w in whole for w in secret_words), who
        assert "details restricted" in m["Subject"]
    assert mail == {}  # tier 1 is not told of a security incident routed to tier 3

    # Reminders at 24, 48 and 66 hours to the security contacts and the duty manager.
    seen = []
    for hours in (23, 24.1, 30, 48.1, 66.1):
        desk.clock.set(t0 + hours * H)
        desk.sweep()
        desk.sweep()
        for who, mails in box.new().items():
            for m in mails:
                if who == "duty@example.com":  # outside the security group
                    assert not any(w in m["Subject"] + text(m) for w in secret_words)
        rows = [r for r in desk.outbox() if r["kind"] == "regulator_reminder"]
        seen.append((hours, sorted(to for r in rows for to in r["to"])))
    assert seen[0] == (23, [])
    for (hours, who), count in zip(seen[1:], (1, 1, 2, 3), strict=True):
        assert who == sorted(["duty@example.com", "security@example.com"] * count), hours
    events = [e for e in desk.ticket(p.ticket_id)["events"] if e["kind"] == "regulator_reminder"]
    assert [e["new"] for e in events] == ["1", "2", "3"]

    # The explicit action closes the deadline: no reminder at 72 hours.
    with desk.ops() as ops:
        ops.regulator_notified(p.ticket_id, actor="security@example.com",
                               note="Reported to the data protection ombudsman, ref 2026-77.")  # fmt: skip
    box.new()
    desk.clock.set(t0 + 80 * H)
    desk.sweep()
    assert not any(e["kind"] == "regulator_reminder" and e["new"] == "4"
                   for e in desk.ticket(p.ticket_id)["events"])  # fmt: skip
    assert desk.ticket(p.ticket_id)["regulator"]["notified_at"] == (t0 + 66.1 * H).isoformat()


def test_regulator_catch_up_after_downtime_sends_one_overdue_alert(desk):
    box = Mailboxes(desk)
    t0 = desk.clock.now()
    p = desk.process(
        make_message(subject="Ransomware", body="Files renamed to .locked, ransom note.")
    )
    box.new()
    desk.clock.set(t0 + 73 * H)  # the daemon was down all along
    desk.sweep()
    desk.sweep()
    mail = box.new()
    (alert,) = mail["security@example.com"][-1:]
    assert "PASSED" in text(alert)
    regulator = [m for m in mail["security@example.com"] if "regulator deadline" in m["Subject"]]
    assert len(regulator) == 1
    assert desk.ticket(p.ticket_id)["regulator"]["reminders_sent"] == 4


def test_waiting_for_the_requester_reminds_then_resolves_then_closes(desk):
    box = Mailboxes(desk)
    p = desk.process(make_message(subject="Tulostin ei toimi", body="Hei, tulostin ei toimi.",
                                  sender="Matti <matti@example.org>"))  # fmt: skip
    with desk.ops() as ops:
        ops.reply(p.ticket_id, agent=AGENT, text="Mikä tulostin?", status="pending_user")
    box.new()
    due = desk.ticket(p.ticket_id)["resolution_due"]
    got: list[tuple[int, list[str]]] = []
    for day in range(1, 12):
        desk.clock.advance(days=1)
        desk.sweep()
        desk.sweep()  # idempotent: a second sweep sends nothing
        mail = box.new()
        got.append((day, [m["Subject"].split(":")[0] for m in mail.get("matti@example.org", [])]))
    n = p.ticket_id
    assert [g for g in got if g[1]] == [
        (2, [f"[#{n}] Odotamme vastaustasi"]),
        (4, [f"[#{n}] Odotamme vastaustasi"]),
        (7, [f"[#{n}] Ratkaistu"]),
        (10, [f"[#{n}] Suljettu"]),
    ]
    t = desk.ticket(n)
    assert t["status"] == "closed"
    # The clock stood still while Matti was silent: the deadline moved by the 7 days waited,
    # and no SLA warning or breach was raised.
    moved = datetime.fromisoformat(t["resolution_due"]) - datetime.fromisoformat(due)
    assert moved == timedelta(days=7) and t["sla"]["paused_seconds"] == 7 * 86400
    assert not any(e["kind"].startswith("sla_") for e in t["events"])


def test_reply_to_a_closed_ticket_after_the_window_opens_a_linked_ticket(desk):
    box = Mailboxes(desk)
    p = desk.process(make_message(sender=REQUESTER))
    with desk.ops() as ops:
        ops.resolve(p.ticket_id, actor=AGENT.email, note="Fixed.")
    (resolved,) = [m for m in box.new()["bob@example.org"] if "Resolved" in m["Subject"]]
    for _ in range(20):  # closed after 3 days; the window runs 14 days from the closing
        desk.clock.advance(days=1)
        desk.sweep()
    assert desk.ticket(p.ticket_id)["status"] == "closed"
    late = desk.process(reply_to(resolved, sender=REQUESTER, body="Broken again.",
                                 message_id="<late@example.org>"))  # fmt: skip
    assert late.ticket_id != p.ticket_id
    assert desk.ticket(late.ticket_id)["parent"] == p.ticket_id
    mail = box.new()
    assert f"earlier ticket #{p.ticket_id} was already closed" in text(mail["bob@example.org"][-1])
    assert "tier1@example.com" in mail  # a new ticket for tier 1


def test_operations_refuse_clearly_and_change_nothing(desk):
    from maild.desk.actions import ActionRefused

    p = desk.process(make_message())
    before = desk.ticket(p.ticket_id)
    for call, needle in [
        (lambda ops: ops.escalate(p.ticket_id, actor="a@x.org", tier=1), "already at tier 1"),
        (lambda ops: ops.escalate(p.ticket_id, actor="a@x.org", tier=4), "tiers are 1 to 3"),
        (lambda ops: ops.set_priority(p.ticket_id, 7, actor="a@x.org"), "priority must be"),
        (lambda ops: ops.set_category(p.ticket_id, "plumbing", actor="a@x.org"), "unknown category"),
        (lambda ops: ops.reopen(p.ticket_id, actor="a@x.org"), "is not resolved"),
        (lambda ops: ops.regulator_notified(p.ticket_id, actor="a@x.org"), "no regulator deadline"),
        (lambda ops: ops.set_status(p.ticket_id, "new", actor="a@x.org"), "unknown status"),
        (lambda ops: ops.resolve(999, actor="a@x.org"), "no ticket #999"),
    ]:  # fmt: skip
        with pytest.raises(ActionRefused, match=needle), desk.ops() as ops:
            call(ops)
    assert desk.ticket(p.ticket_id)["events"] == before["events"]


def test_priority_raised_to_p1_moves_deadlines_and_tells_tier_3(desk):
    box = Mailboxes(desk)
    t0 = desk.clock.now()
    p = desk.process(make_message())  # a P3 printer problem
    box.new()
    with desk.ops() as ops:
        ops.set_priority(p.ticket_id, 1, actor="tina@example.com")
    t = desk.ticket(p.ticket_id)
    assert (t["first_response_due"], t["resolution_due"]) == ((t0 + H).isoformat(),
                                                              (t0 + 4 * H).isoformat())  # fmt: skip
    mail = box.new()
    assert sorted(mail) == ["duty@example.com", "tier3@example.com"]
    assert "raised the priority from P3 to P1" in text(mail["tier3@example.com"][0])
    with desk.ops() as ops:
        ops.set_category(p.ticket_id, "security", actor="tina@example.com")
    t = desk.ticket(p.ticket_id)
    assert t["security"] and t["regulator"]["due"] == (t0 + 72 * H).isoformat()


def test_business_hours_calendar_in_the_acknowledgement(db_url, tmp_path):
    from datetime import UTC

    from maild.clock import FrozenClock

    settings = make_settings(
        tmp_path, db_url,
        helpdesk={"timezone": "Europe/Helsinki"},
        sla={"business_hours": "08:00-16:00", "holidays": ["2026-12-07"]},
    )  # fmt: skip
    friday_3pm = datetime(2026, 12, 4, 13, 0, tzinfo=UTC)  # 15:00 in Helsinki
    desk = Desk(settings, FrozenClock(friday_3pm))
    try:
        desk.process(make_message())  # P3: 2 h of service time to a first response
        (ack,) = desk.outgoing()
        # One hour on Friday; Monday the 7th is a holiday; the second hour is Tuesday 08-09.
        assert "by Tue 8 Dec 2026, 09:00 EET" in text(ack)
    finally:
        desk.close()


def test_imported_history_raises_no_alarms(desk):
    """Mail recorded with --no-notify (a migration) gets deadlines but no sweep mail."""
    desk.process(make_message(subject="Ransomware", body="Files renamed to .locked."), notify=False)
    desk.process(make_message(message_id="<p@example.org>"), notify=False)
    assert [t["status"] for t in desk.tickets()] == ["new", "new"]
    desk.clock.advance(days=10)
    assert desk.sweep() == {"sla": 0, "waiting": 0, "closing": 0, "regulator": 0, "digests": 0,
                            "dead_mail": 0, "weekly_report": 0}  # fmt: skip
    assert desk.outgoing() == []

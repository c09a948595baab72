"""Symptoms become a major incident: a burst makes exactly one, and its resolution
reaches each requester exactly once, in their language.

Real SQLite and PostgreSQL (`db_url`) through the `Desk` harness; the CLI as
a subprocess; outgoing mail read back from the Maildir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.support import monitors as m
from tests.support.desk import Desk, make_message, make_settings, reply_to

TIERS = {
    "tier1": ["tier1@example.com"],
    "tier2": ["tier2@example.com"],
    "tier3": ["tier3@example.com"],
    "duty_manager": ["duty@example.com"],
}
AGENTS = [{"email": "anna@example.com", "name": "Anna Agent", "tier": 1}]
# One outage, reported by six people (Carl twice; Matti in Finnish), a few minutes apart.
REPORTS = [
    ("Alice <alice@example.org>", "Email not working", "I cannot send any email since 9:00."),
    ("Bob <bob@example.org>", "Outlook cannot connect", "Outlook says it cannot connect to the "
                                                       "Exchange server."),
    ("Carl <carl@example.org>", "e-mail down?", "My e-mail is not working, error 0x800CCC0E."),
    ("Matti <matti@example.fi>", "Sähköposti ei toimi", "Sähköposti ei toimi, Outlook ei "
                                                       "yhdistä palvelimeen. Kiitos, Matti"),
    ("Dana <dana@example.org>", "Cannot receive email", "No new email in my inbox all morning."),
    ("Carl <carl@example.org>", "Still no e-mail", "The e-mail is still down, also on my phone."),
    ("Eve <eve@example.org>", "Outlook error", "Outlook keeps asking for my password and "
                                              "shows an error."),
]  # fmt: skip
REQUESTERS = {"alice@example.org", "bob@example.org", "carl@example.org", "matti@example.fi",
              "dana@example.org", "eve@example.org"}  # fmt: skip


@pytest.fixture
def desk(db_url: str, tmp_path: Path) -> Iterator[Desk]:
    d = Desk(make_settings(tmp_path, db_url, tiers=TIERS, agents=AGENTS, major={"enabled": True},
                           alerts=m.ALERTS))  # fmt: skip
    yield d
    d.close()


def kinds_to(desk: Desk) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for row in desk.outbox():
        for to in row["to"]:
            out.setdefault(to, Counter())[row["kind"]] += 1
    return out


def mails_to(desk: Desk, address: str) -> list[EmailMessage]:
    return [x for x in desk.outgoing() if address in str(x["To"])]


def report_burst(desk: Desk) -> list[int]:
    numbers = []
    for i, (sender, subject, body) in enumerate(REPORTS):
        desk.clock.advance(minutes=3)
        p = desk.process(make_message(sender=sender, subject=subject, body=body,
                                      message_id=f"<report-{i}@example.org>"))  # fmt: skip
        numbers.append(p.ticket_id)
    return numbers


def test_a_burst_makes_exactly_one_major_incident_and_its_resolution_reaches_everyone_once(desk):
    # Unrelated mail in the same half hour groups with nothing.
    printer = desk.process(make_message(sender="Zoe <zoe@example.org>", subject="Printer jam",
                                        body="The printer on floor 3 shows error E42.",
                                        message_id="<zoe@example.org>")).ticket_id  # fmt: skip
    mailbox = desk.process(make_message(sender="Zoe <zoe@example.org>",
                                        subject="Please create a shared mailbox",
                                        body="Could you please create a mailbox for sales?",
                                        message_id="<zoe2@example.org>")).ticket_id  # fmt: skip
    reports = report_burst(desk)
    assert len(set(reports)) == 7

    majors = [t for t in desk.tickets() if t["major"]]
    assert len(majors) == 1
    (major,) = majors
    shown = desk.ticket(major["number"])
    assert shown["children"] == reports
    assert shown["priority"] == "P1" and shown["tier"] == 3 and shown["origin"] == "major"
    for n in reports:
        assert desk.ticket(n)["major_incident"] == major["number"]
    for n in (printer, mailbox):
        assert desk.ticket(n)["major_incident"] is None

    sent = kinds_to(desk)
    # Tier 3 and the duty manager were told at once, once.
    assert sent["tier3@example.com"]["agent_major"] == 1
    assert sent["duty@example.com"]["agent_major"] == 1
    # Each requester heard once that the problem is known, Carl too (two reports).
    for who in REQUESTERS:
        assert sent[who]["major_known"] == 1, who
    assert "major_known" not in sent["zoe@example.org"]
    (known,) = [x for x in mails_to(desk, "matti@example.fi") if "Tunnettu" in str(x["Subject"])]
    assert f"suurhäiriönä (#{major['number']})" in known.get_body(("plain",)).get_content()

    # Resolving the major incident resolves every report; each requester hears once.
    before = {who: sent[who]["resolved"] for who in REQUESTERS}
    with desk.ops() as ops:
        ops.resolve(major["number"], actor="anna@example.com", note="The mail server is back.")
    for n in reports:
        assert desk.ticket(n)["status"] == "resolved"
    assert desk.ticket(printer)["status"] == "open"
    after = kinds_to(desk)
    for who in REQUESTERS:
        assert after[who]["resolved"] - before[who] == 1, who
    (fixed,) = [x for x in mails_to(desk, "matti@example.fi") if "Ratkaistu" in str(x["Subject"])]
    text = fixed.get_body(("plain",)).get_content()
    assert "suurhäiriönä" in text and "The mail server is back." in text
    (english,) = [x for x in mails_to(desk, "alice@example.org") if "Resolved" in str(x["Subject"])]
    assert f"major incident #{major['number']}" in english.get_body(("plain",)).get_content()
    assert not ({"help@example.com"} & set(after))  # the desk never mails itself


def test_later_reports_attach_and_a_quiet_day_groups_nothing(desk):
    for i in range(4):  # four in the window: below the threshold of five
        desk.clock.advance(minutes=9)
        desk.process(make_message(sender=f"u{i} <u{i}@example.org>", subject="Email not working",
                                  body="No email today.", message_id=f"<q{i}@example.org>"))  # fmt: skip
    assert not [t for t in desk.tickets() if t["major"]]
    # Twenty "other" incidents in a minute have nothing in common.
    for i in range(20):
        desk.process(make_message(sender=f"o{i} <o{i}@example.org>", subject="Help",
                                  body="It is broken.", message_id=f"<o{i}@example.org>"))  # fmt: skip
    assert not [t for t in desk.tickets() if t["major"]]


def test_an_alert_storm_on_one_host_is_a_major_incident(desk):
    services = ["HTTP", "HTTPS", "SSH", "Disk /", "Load", "NTP"]
    for service in services:
        desk.clock.advance(minutes=1)
        desk.process(m.nagios_service("db01", service, "CRITICAL"), client=m.MONITOR_IP)
    (major,) = [t for t in desk.tickets() if t["major"]]
    assert major["subject"] == "Major incident: host db01"
    assert len(desk.ticket(major["number"])["children"]) == 6
    sent = kinds_to(desk)
    assert "nagios@mon.example.com" not in sent
    # The host comes back: each incident recovers; resolving the major resolves the rest.
    desk.process(m.nagios_service("db01", "HTTP", "OK", kind="RECOVERY"), client=m.MONITOR_IP)
    with desk.ops() as ops:
        ops.resolve(major["number"], actor="anna@example.com", note="Replaced the NIC.")
    assert {desk.ticket(n)["status"] for n in desk.ticket(major["number"])["children"]} == {
        "resolved"}  # fmt: skip
    assert "nagios@mon.example.com" not in kinds_to(desk)


def test_forged_alerts_on_one_host_make_no_major_incident(desk):
    # The monitor's From line, written by someone outside alerts.source_networks.
    for service in ["HTTP", "HTTPS", "SSH", "Disk /", "Load", "NTP"]:
        desk.clock.advance(minutes=1)
        p = desk.process(m.nagios_service("db01", service, "CRITICAL"), client=m.OUTSIDER_IP)
        assert p.outcome == "new_ticket"
    assert not [t for t in desk.tickets() if t["major"] or t["origin"] == "alert"]
    sent = kinds_to(desk)
    assert "tier3@example.com" not in sent and "duty@example.com" not in sent


def test_agents_declare_attach_and_detach_by_mail(desk):
    def report(i: int) -> tuple[int, EmailMessage]:
        p = desk.process(make_message(sender=f"User {i} <u{i}@example.org>",
                                      subject=f"VPN problem {i}", body="The VPN drops.",
                                      message_id=f"<v{i}@example.org>"))  # fmt: skip
        (note,) = [x for x in mails_to(desk, "anna@example.com")
                   if f"[#{p.ticket_id}]" in str(x["Subject"])]  # fmt: skip
        return p.ticket_id, note

    first, note1 = report(1)
    second, note2 = report(2)
    third, _note3 = report(3)

    def answer(note: EmailMessage, text: str, mid: str) -> None:
        raw = reply_to(note, sender="Anna Agent <anna@example.com>", body=text, message_id=mid)
        desk.process(raw, envelope_to=(note["Reply-To"].addresses[0].addr_spec,))

    answer(note1, f"#major\n#attach {third}\n#note many VPN reports", "<a1@example.com>")
    answer(note2, f"#major {first}\n#note same outage", "<a2@example.com>")
    shown = desk.ticket(first)
    assert shown["major"] is True and shown["children"] == [second, third]
    sent = kinds_to(desk)
    assert sent["tier3@example.com"]["agent_major"] == 1
    assert sent["u2@example.org"]["major_known"] == 1 and sent["u3@example.org"]["major_known"] == 1
    assert "major_known" not in sent["u1@example.org"]  # the major incident's own requester
    answer(note1, f"#detach {third}", "<a3@example.com>")
    assert desk.ticket(first)["children"] == [second]
    assert desk.ticket(third)["major_incident"] is None
    # Refusals change nothing: a child cannot be declared major, nor attached twice.
    answer(note2, "#major", "<a4@example.com>")
    assert desk.ticket(second)["major"] is False
    refusal = desk.outgoing()[-1].get_body(("plain",)).get_content()
    assert f"part of major incident #{first}" in refusal


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILD_MAJOR__ENABLED"}  # the default
    return subprocess.run([sys.executable, "-m", "maild", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip


def test_the_cli_declares_attaches_and_shows_majors_in_json(db_url, tmp_path):
    config = tmp_path / "maild.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n[helpdesk]\nsecret_file = '
                      f'"{tmp_path / "secret.key"}"\n[outgoing]\nmaildir = '
                      f'"{tmp_path / "out"}"\n[worker]\nparse_processes = 0\n'
                      '[tiers]\ntier3 = ["tier3@example.com"]\n')  # fmt: skip
    desk = Desk(make_settings(tmp_path, db_url))
    try:
        for i in range(1, 4):
            desk.process(make_message(sender=f"u{i}@example.org", subject=f"Wifi {i}",
                                      message_id=f"<w{i}@example.org>"))  # fmt: skip
    finally:
        desk.close()
    made = _cli(config, "ticket", "major", "1", "2", "3", "--note", "Access point down")
    assert made.returncode == 0, made.stderr
    listed = json.loads(_cli(config, "tickets", "list", "--json").stdout)
    assert {t["number"]: (t["major"], t["major_incident"]) for t in listed} == {
        1: (True, None), 2: (False, 1), 3: (False, 1)}  # fmt: skip
    shown = json.loads(_cli(config, "ticket", "show", "1", "--json").stdout)
    assert shown["children"] == [2, 3]
    assert _cli(config, "ticket", "detach", "1", "3").returncode == 0
    assert json.loads(_cli(config, "ticket", "show", "1", "--json").stdout)["children"] == [2]
    refused = _cli(config, "ticket", "attach", "2", "3")
    assert refused.returncode == 65 and "not a major incident" in refused.stderr
    assert _cli(config, "ticket", "attach", "1", "99").returncode == 66

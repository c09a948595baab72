"""Monitoring mail becomes incidents: stock formats fold, recover, flap, and are never answered.

Real SQLite and PostgreSQL (`db_url`) through the `Desk` harness; each
monitor's mail rendered from its tool's documented default template
(`tests.support.monitors`); what went out read back from the Maildir.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from maild.store import views
from tests.support import monitors as m
from tests.support.desk import Desk, make_message, make_settings, read_maildir, reply_to

TIERS = {
    "tier1": ["tier1@example.com"],
    "tier2": ["tier2@example.com"],
    "tier3": ["tier3@example.com"],
    "duty_manager": ["duty@example.com"],
}
AGENTS = [{"email": "bert@example.com", "name": "Bert Second", "tier": 2}]
MONITORS = {"nagios@mon.example.com", "icinga@mon.example.com", "zabbix@mon.example.com",
            "alertmanager@mon.example.com", "grafana@mon.example.com",
            "uptime-kuma@mon.example.com", "alerts@healthchecks.io"}  # fmt: skip


def _desk(db_url: str, tmp_path: Path, **alerts: object) -> Desk:
    """Mail comes from a monitor's address (in ``alerts.source_networks``) unless
    `desk.process(raw, client=...)` says otherwise."""
    settings = make_settings(tmp_path, db_url, tiers=TIERS, agents=AGENTS,
                             alerts={**m.ALERTS, **alerts})  # fmt: skip
    return Desk(settings, client=m.MONITOR_IP)


@pytest.fixture
def desk(db_url: str, tmp_path: Path) -> Iterator[Desk]:
    d = _desk(db_url, tmp_path)
    yield d
    d.close()


def recipients(desk: Desk) -> list[str]:
    """Every address maild queued mail to, in order."""
    return [to for row in desk.outbox() for to in row["to"]]


def incidents(desk: Desk) -> list[dict]:
    return [t for t in desk.tickets() if t["type"] == "incident"]


def alert_of(desk: Desk, number: int) -> dict:
    alert = desk.ticket(number)["alert"]
    assert alert is not None
    return alert


# Each stock format: (a problem for host/service, its repeat, its recovery).
Maker = Callable[[str, str, bool], bytes]
FORMATS: dict[str, Maker] = {
    "nagios": lambda h, s, ok: m.nagios_service(h, s, "OK" if ok else "CRITICAL",
                                                kind="RECOVERY" if ok else "PROBLEM"),
    "icinga2": lambda h, s, ok: m.icinga2_service(h, s, "OK" if ok else "CRITICAL",
                                                  kind="RECOVERY" if ok else "PROBLEM"),
    "zabbix": lambda h, s, ok: (m.zabbix_resolved if ok else m.zabbix_problem)(
        h, s, "High", event_id=abs(hash((h, s))) % 100000),
    "alertmanager": lambda h, s, ok: m.alertmanager(
        **{"resolved" if ok else "firing": [({"alertname": s, "instance": f"{h}:9100",
                                             "severity": "critical"}, {"summary": f"{s} on {h}"})]}),
    "grafana": lambda h, s, ok: m.grafana(
        **{"resolved" if ok else "firing": [({"alertname": s, "instance": h,
                                             "severity": "critical"}, {})]}),
    "uptime-kuma": lambda h, s, ok: m.uptime_kuma(f"{h} {s}", up=ok),
    "healthchecks": lambda h, s, ok: m.healthchecks(s, up=ok, project=h),
}  # fmt: skip


@pytest.mark.parametrize("tool", sorted(FORMATS))
def test_a_storm_folds_into_one_incident_per_host_and_service(desk, tool):
    make = FORMATS[tool]
    pairs = [("web01", "HTTP"), ("db01", "Replication")]
    for _ in range(6):  # a storm: every check interval, both problems again
        for host, service in pairs:
            desk.deliver(make(host, service, False))
            desk.clock.advance(minutes=5)
    desk.drain()

    found = incidents(desk)
    assert len(found) == 2, [t["subject"] for t in found]
    for t in found:
        assert t["priority"] == "P2" and t["tier"] == 2 and t["category"] == "monitoring"
        assert t["status"] == "open"
        assert alert_of(desk, t["number"])["occurrences"] == 6
    # The tier-2 group and the tier-2 agent heard of each incident once; nobody else.
    sent = recipients(desk)
    assert sorted(sent) == sorted(["tier2@example.com", "bert@example.com"] * 2)
    assert not MONITORS & set(sent)

    # A recovery resolves its own incident and no other.
    desk.process(make("web01", "HTTP", True))
    by_subject = {("web01" in t["subject"]): t for t in incidents(desk)}
    assert by_subject[True]["status"] == "resolved"
    assert by_subject[False]["status"] == "open"
    assert alert_of(desk, by_subject[True]["number"])["open"] is False
    assert alert_of(desk, by_subject[False]["number"])["open"] is True
    assert not MONITORS & set(recipients(desk))  # not even a "resolved" notice


def test_every_inbound_alert_has_a_visible_fate(desk):
    first = desk.process(m.nagios_service("web01", "HTTP", "CRITICAL"))
    repeat = desk.process(m.nagios_service("web01", "HTTP", "CRITICAL"))
    lone = desk.process(m.nagios_service("web09", "SSH", "OK", kind="RECOVERY"))
    assert first.outcome == "new_ticket" and repeat.outcome == "appended"
    assert repeat.ticket_id == first.ticket_id
    assert lone.outcome == "ignored" and "no open incident" in lone.reason
    assert desk.inbound(repeat.inbound_id).ticket_id == first.ticket_id


def test_a_worse_state_raises_the_priority_and_tells_the_agents_once(desk):
    t = desk.process(m.nagios_service("web01", "Disk", "WARNING")).ticket_id
    assert desk.ticket(t)["priority"] == "P3"
    told = len(recipients(desk))
    desk.process(m.nagios_service("web01", "Disk", "WARNING"))
    assert len(recipients(desk)) == told  # a repeat: counted, no mail
    desk.process(m.nagios_service("web01", "Disk", "CRITICAL"))
    ticket = desk.ticket(t)
    assert ticket["priority"] == "P2"
    assert alert_of(desk, t)["state"] == "CRITICAL" and alert_of(desk, t)["occurrences"] == 3
    worse = [o for o in desk.outbox()[told:] if o["kind"] == "agent_alert"]
    assert sorted(to for o in worse for to in o["to"]) == ["bert@example.com", "tier2@example.com"]
    desk.process(m.nagios_service("web01", "Disk", "WARNING"))  # better again: quiet
    assert desk.ticket(t)["priority"] == "P2"
    assert len([o for o in desk.outbox() if o["kind"] == "agent_alert"]) == 4


def test_flapping_within_the_window_is_folded(desk):
    t = desk.process(m.icinga2_service("db01", "pgsql", "CRITICAL")).ticket_id
    desk.clock.advance(minutes=3)
    desk.process(m.icinga2_service("db01", "pgsql", "OK", kind="RECOVERY"))
    assert desk.ticket(t)["status"] == "resolved"
    for _ in range(3):  # it keeps coming and going
        desk.clock.advance(minutes=4)
        assert desk.process(m.icinga2_service("db01", "pgsql", "CRITICAL")).ticket_id == t
        desk.clock.advance(minutes=4)
        desk.process(m.icinga2_service("db01", "pgsql", "OK", kind="RECOVERY"))
    assert len(incidents(desk)) == 1
    assert alert_of(desk, t)["flaps"] == 3
    # Long after the last recovery the same problem is a new incident.
    desk.clock.advance(hours=2)
    again = desk.process(m.icinga2_service("db01", "pgsql", "CRITICAL")).ticket_id
    assert again != t and len(incidents(desk)) == 2
    assert not MONITORS & set(recipients(desk))


def test_recovery_only_annotates_when_configured(db_url, tmp_path):
    desk = _desk(db_url, tmp_path, recovery="annotate")
    try:
        t = desk.process(m.zabbix_problem("app01", "Zabbix agent is not available",
                                          "Average", event_id=7)).ticket_id  # fmt: skip
        desk.process(m.zabbix_resolved("app01", "Zabbix agent is not available", "Average",
                                       event_id=7))  # fmt: skip
        ticket = desk.ticket(t)
        assert ticket["status"] == "open" and ticket["priority"] == "P3"
        assert alert_of(desk, t)["open"] is False
        recovered = [o for o in desk.outbox() if o["kind"] == "agent_alert"][-2:]
        assert {to for o in recovered for to in o["to"]} == {"bert@example.com",
                                                             "tier2@example.com"}  # fmt: skip
        # what the agents were told when it opened says so (not "a recovery resolves it")
        texts = [" ".join(x.get_body(("plain",)).get_content().split()) for x in desk.outgoing()]
        opened = [text for text in texts if "a new incident needs handling" in text]
        assert opened and all("a recovery is noted here for you to resolve it" in text
                              and "a recovery resolves it" not in text for text in opened)  # fmt: skip
    finally:
        desk.close()


def test_a_critical_host_is_p1_and_tells_tier_3_and_the_duty_manager(db_url, tmp_path):
    desk = _desk(db_url, tmp_path, critical_hosts=["db*"])
    try:
        t = desk.process(m.nagios_host("db-main", "DOWN")).ticket_id
        assert desk.ticket(t)["priority"] == "P1"
        assert {"tier3@example.com", "duty@example.com", "tier2@example.com"} <= set(
            recipients(desk)
        )
        other = desk.process(m.nagios_host("web05", "DOWN")).ticket_id
        assert desk.ticket(other)["priority"] == "P2"
    finally:
        desk.close()


def test_alert_mail_is_never_screened_out_as_automated(desk):
    raw = m.nagios_service("web01", "HTTP", "CRITICAL")
    head, sep, rest = raw.partition(b"\r\n\r\n")
    raw = head + b"\r\nAuto-Submitted: auto-generated\r\nPrecedence: bulk" + sep + rest
    assert desk.process(raw).outcome == "new_ticket"
    # Healthchecks.io carries List-Unsubscribe, which is list mail to anyone else.
    assert desk.process(m.healthchecks("nightly", up=False)).outcome == "new_ticket"


def test_an_unknown_format_folds_by_subject_and_the_admins_rule_reads_another(db_url, tmp_path):
    rule = {"name": "backup", "subject": r"^\[(?P<state>FAILED|OK)\] backup of (?P<host>\S+)",
            "body": r"job (?P<service>\S+)"}  # fmt: skip
    desk = _desk(db_url, tmp_path, rules=[rule])
    try:
        custom = "Backup Robot <robot@mon.example.com>"

        def robot(subject: str, body: str) -> bytes:  # a script's mail: a Date, no Message-ID
            return make_message(sender=custom, subject=subject, body=body, message_id=None,
                                date=desk.clock.advance(minutes=10))  # fmt: skip

        for _ in range(3):
            desk.process(robot("[FAILED] backup of files01", "job nightly-full ended with code 3"))
            desk.process(robot("Disk array degraded!", "Controller 1 reports a failed disk."))
        found = incidents(desk)
        assert len(found) == 2
        backup = next(t for t in found if "files01" in t["subject"])
        assert alert_of(desk, backup["number"])["source"] == "backup"
        assert alert_of(desk, backup["number"])["service"] == "nightly-full"
        desk.process(robot("[OK] backup of files01", "job nightly-full ended with code 0"))
        assert desk.ticket(backup["number"])["status"] == "resolved"
        assert not {"robot@mon.example.com"} & set(recipients(desk))
    finally:
        desk.close()


def test_agents_work_an_alert_incident_but_cannot_answer_the_monitor(desk):
    t = desk.process(m.uptime_kuma("Shop", up=False)).ticket_id
    (note,) = [x for x in desk.outgoing() if "bert@example.com" in str(x["To"])]
    refused = reply_to(note, sender="Bert Second <bert@example.com>",
                       body="#take\n\nLooking at it now.", message_id="<b1@example.com>")  # fmt: skip
    desk.process(refused, envelope_to=(str(note["Reply-To"].addresses[0].addr_spec),))
    assert desk.ticket(t)["assignee"] is None  # all or nothing: refused
    refusal = desk.outgoing()[-1]
    assert "no requester to answer" in refusal.get_body(("plain",)).get_content()
    ok = reply_to(note, sender="Bert Second <bert@example.com>",
                  body="#take\n#note restarted the shop container", message_id="<b2@example.com>")  # fmt: skip
    desk.process(ok, envelope_to=(str(note["Reply-To"].addresses[0].addr_spec),))
    assert desk.ticket(t)["assignee"] == "bert@example.com"
    with desk.ops() as ops:
        ops.resolve(t, actor="bert@example.com", note="restarted")
    assert desk.ticket(t)["status"] == "resolved"
    assert not MONITORS & set(recipients(desk))


def test_an_alertmanager_group_opens_one_incident_per_instance(desk):
    labels = [({"alertname": "NodeDown", "instance": f"node{i}:9100", "severity": "critical"},
               {"summary": f"node{i} unreachable"}) for i in range(1, 4)]  # fmt: skip
    p = desk.process(m.alertmanager(firing=labels))
    assert p.outcome == "new_ticket"
    assert sorted(t["subject"] for t in incidents(desk)) == [
        f"node{i}/NodeDown is FIRING (Alertmanager)" for i in range(1, 4)
    ]
    desk.process(m.alertmanager(firing=labels[1:], resolved=labels[:1]))
    status = {t["subject"].split("/")[0]: t["status"] for t in incidents(desk)}
    assert status == {"node1": "resolved", "node2": "open", "node3": "open"}


def test_an_alert_arrives_over_smtp_and_nothing_goes_back(db_url, daemon_factory):
    running = daemon_factory(db_url, alerts={"senders": m.SENDERS,
                                             "source_networks": ["127.0.0.1/32"]}, tiers=TIERS)  # fmt: skip
    later = m.WHEN + timedelta(minutes=5)
    with smtplib.SMTP("127.0.0.1", running.port) as smtp:
        for raw in (m.nagios_host("router1", "DOWN"), m.nagios_host("router1", "DOWN", when=later)):
            smtp.sendmail("nagios@mon.example.com", ["help@example.com"], raw)

    def seen_twice() -> dict | None:
        with running.daemon.sessions() as session:
            ticket = views.show_ticket(session, 1)
        return ticket if ticket and ticket["alert"]["occurrences"] == 2 else None

    ticket = wait_for(seen_twice)
    assert ticket["type"] == "incident" and ticket["priority"] == "P2" and ticket["tier"] == 2
    with running.daemon.sessions() as session:  # queued with the incident: all there is
        queued = [to for row in views.list_outbox(session) for to in row["to"]]
    assert queued == ["tier2@example.com"]
    maildir = Path(running.daemon.settings.outgoing.maildir)
    (sent,) = wait_for(lambda: read_maildir(maildir))
    assert "router1 is DOWN" in str(sent["Subject"])


def test_a_forged_alert_over_smtp_is_an_ordinary_ticket_and_pages_nobody(db_url, daemon_factory):
    # The monitor sends from 127.0.0.1; anyone else (127.0.0.2 here) can write its From line.
    running = daemon_factory(db_url, alerts={"senders": m.SENDERS, "critical_hosts": ["db*"],
                                             "source_networks": ["127.0.0.1/32"]},
                             tiers=TIERS)  # fmt: skip

    def send(source_ip: str, raw: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", running.port, timeout=10,
                          source_address=(source_ip, 0)) as smtp:  # fmt: skip
            smtp.sendmail("nagios@mon.example.com", ["help@example.com"], raw)

    def ticket(number: int) -> dict | None:
        with running.daemon.sessions() as session:
            return views.show_ticket(session, number)

    def queued() -> list[str]:
        with running.daemon.sessions() as session:
            return [to for row in views.list_outbox(session) for to in row["to"]]

    send("127.0.0.2", m.nagios_host("db01", "DOWN"))
    forged = wait_for(lambda: ticket(1))
    assert forged["alert"] is None and forged["origin"] != "alert"
    assert forged["priority"] != "P1" and forged["tier"] == 1
    (doubted,) = [e for e in forged["events"] if e["kind"] == "alert_not_verified"]
    assert doubted["detail"]["why"] == "it came from 127.0.0.2, outside alerts.source_networks"
    assert not {"tier2@example.com", "tier3@example.com", "duty@example.com"} & set(queued())
    # The same alert from the monitor's own address opens a P1 incident and pages at once.
    send("127.0.0.1", m.nagios_host("db01", "DOWN"))
    incident = wait_for(lambda: ticket(2))
    assert incident["alert"] is not None and incident["priority"] == "P1"
    assert {"tier2@example.com", "tier3@example.com", "duty@example.com"} <= set(queued())
    assert not [e for e in incident["events"] if e["kind"] == "alert_not_verified"]


def test_a_monitor_signed_for_its_domain_by_our_mx_is_an_alert(db_url, tmp_path):
    # No source_networks: the border MX (trusted_hops = 2) vouches for mon.example.com.
    settings = make_settings(tmp_path, db_url, tiers=TIERS, agents=AGENTS,
                             alerts={"senders": m.SENDERS, "critical_hosts": ["db*"]},
                             agent_mail={"trusted_authserv_ids": ["mx.example.com"],
                                         "trusted_hops": 2})  # fmt: skip
    desk = Desk(settings, client="192.0.2.25")  # the MX hands mail to maild
    mx_hop = (
        b"Received: from mon1.mon.example.com (mon1.mon.example.com [198.51.100.7])\r\n"
        b"\tby mx.example.com (Postfix) with ESMTPS; Thu, 03 Dec 2026 09:30:01 +0000\r\n"
    )
    verdict = b"Authentication-Results: mx.example.com; dkim=pass header.d=mon.example.com\r\n"
    try:
        # The sender's own verdict, below our MX's Received line: renamed at intake.
        forged = desk.process(mx_hop + verdict + m.nagios_host("db01", "DOWN"))
        assert forged.outcome == "new_ticket" and desk.ticket(forged.ticket_id)["alert"] is None
        assert not {"tier3@example.com", "duty@example.com"} & set(recipients(desk))
        signed = desk.process(verdict + mx_hop + m.nagios_host("db01", "DOWN"))
        incident = desk.ticket(signed.ticket_id)
        assert incident["alert"] is not None and incident["priority"] == "P1"
        assert {"tier3@example.com", "duty@example.com"} <= set(recipients(desk))
    finally:
        desk.close()


def wait_for(find: Callable[[], Any], seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := find():
            return found
        time.sleep(0.05)
    raise AssertionError("not seen in time")

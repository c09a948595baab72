"""Reading monitoring mail: each tool's stock notification, the admin's rules, the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from maild.config.settings import settings_from_mapping
from maild.errors import ConfigError
from maild.mail.parse import parse
from maild.pipeline import alerts
from maild.pipeline.alerts import AlertKind
from maild.pipeline.correlate import AlertFacts, Facts
from maild.pipeline.decide import decide
from maild.pipeline.decision import AlertStep, InboundMeta
from maild.store.states import Outcome
from tests.support import monitors as m
from tests.support.desk import make_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alerts"
SETTINGS = settings_from_mapping({"alerts": m.ALERTS})
P, R, F, N = AlertKind.PROBLEM, AlertKind.RECOVERY, AlertKind.FLAPPING, AlertKind.INFO
NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)

# file -> [(source, host, service, state, kind, priority)] as read
EXPECTED = {
    "nagios_service_problem": [("nagios", "web01", "HTTP", "CRITICAL", P, 2)],
    "nagios_service_recovery": [("nagios", "web01", "HTTP", "OK", R, 3)],
    "nagios_host_down": [("nagios", "db01", "", "DOWN", P, 2)],
    "nagios_flapping": [("nagios", "web01", "HTTP", "CRITICAL", F, 2)],
    "nagios_acknowledgement": [("nagios", "web01", "HTTP", "CRITICAL", N, 2)],
    "icinga2_service_problem": [("icinga2", "db01.example.com", "disk-var", "WARNING", P, 3)],
    "icinga2_service_recovery": [("icinga2", "db01.example.com", "disk-var", "OK", R, 3)],
    "icinga2_host_down": [("icinga2", "router1", "", "DOWN", P, 2)],
    "zabbix_problem": [("zabbix", "app01", "High CPU utilization (over 90% for 5m)", "PROBLEM",
                        P, 2)],
    "zabbix_resolved": [("zabbix", "app01", "High CPU utilization (over 90% for 5m)", "RESOLVED",
                         R, 2)],
    "alertmanager_firing": [
        ("alertmanager", "api1.example.com", "HighRequestLatency", "FIRING", P, 2),
        ("alertmanager", "api2.example.com", "HighRequestLatency", "FIRING", P, 3)],
    "alertmanager_resolved": [
        ("alertmanager", "api1.example.com", "HighRequestLatency", "RESOLVED", R, 3)],
    "grafana_firing_and_resolved": [("grafana", "nas1", "DiskAlmostFull", "FIRING", P, 3),
                                    ("grafana", "nas2", "DiskAlmostFull", "RESOLVED", R, 3)],
    "uptime_kuma_down": [("uptime-kuma", "Web shop", "", "DOWN", P, 2)],
    "uptime_kuma_up": [("uptime-kuma", "Web shop", "", "UP", R, 3)],
    "healthchecks_down": [("healthchecks", "Backups", "nightly-db-backup", "DOWN", P, 2)],
    "healthchecks_up": [("healthchecks", "Backups", "nightly-db-backup", "UP", R, 3)],
}  # fmt: skip


def test_every_fixture_has_an_expectation():
    assert {p.stem for p in FIXTURES.glob("*.eml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_stock_formats_are_read(name):
    msg = parse(m.via((FIXTURES / f"{name}.eml").read_bytes()))
    assert alerts.is_alert_sender(msg, SETTINGS)
    got = [(e.source, e.host, e.service, e.state, e.kind, alerts.priority_of(e, SETTINGS.alerts))
           for e in alerts.read(msg, SETTINGS)]  # fmt: skip
    assert got == EXPECTED[name]


def test_summaries_and_problem_ids_are_kept():
    read = {n: alerts.read(parse((FIXTURES / f"{n}.eml").read_bytes()), SETTINGS)
            for n in ("nagios_service_problem", "zabbix_problem", "alertmanager_firing")}  # fmt: skip
    assert "Connection refused" in read["nagios_service_problem"][0].summary
    assert read["zabbix_problem"][0].problem_id == "48213"
    assert read["zabbix_problem"][0].summary == "Current utilization: 97.2 %"
    assert read["alertmanager_firing"][0].summary == "High request latency on api1"


def test_one_incident_per_source_host_and_service():
    a = alerts.fold_key("nagios", "web01", "HTTP")
    assert a == alerts.fold_key("Nagios", " WEB01 ", "http")
    assert len({a, alerts.fold_key("icinga2", "web01", "HTTP"),
                alerts.fold_key("nagios", "web02", "HTTP"),
                alerts.fold_key("nagios", "web01", "HTTPS")}) == 4  # fmt: skip


def test_the_severity_table_and_critical_hosts():
    s = settings_from_mapping({"alerts": {"p1": ["disaster", "critical"], "p2": ["down"],
                                          "critical_hosts": ["db*"]}}).alerts  # fmt: skip
    event = alerts.AlertEvent("nagios", "web01", "HTTP", "CRITICAL", P, severity="critical")
    assert alerts.priority_of(event, s) == 1
    down = alerts.AlertEvent("nagios", "web01", "", "DOWN", P, severity="down")
    assert alerts.priority_of(down, s) == 2
    assert alerts.priority_of(alerts.AlertEvent("nagios", "db7", "", "DOWN", P), s) == 1
    odd = alerts.AlertEvent("x", "h", "s", "STRANGE", P, severity="strange")
    assert alerts.priority_of(odd, s) == s.default_priority


def test_only_listed_senders_are_monitors():
    person = parse(make_message(sender="Bob <bob@example.org>", subject="DOWN | backup"))
    assert not alerts.is_alert_sender(person, SETTINGS)
    assert not alerts.is_alert_sender(parse(m.nagios_host("db01", "DOWN")),
                                      settings_from_mapping({}))  # fmt: skip


def test_unknown_mail_from_a_monitor_folds_by_subject():
    msg = parse(make_message(sender="cron@mon.example.com", subject="CRITICAL: RAID degraded",
                             body="md0: 1 of 2 disks failed"))  # fmt: skip
    (event,) = alerts.read(msg, SETTINGS)
    assert (event.source, event.service, event.state, event.kind) == (
        "mail",
        "RAID degraded",
        "CRITICAL",
        P,
    )
    ok = parse(make_message(sender="cron@mon.example.com", subject="OK: RAID degraded"))
    (back,) = alerts.read(ok, SETTINGS)
    assert back.fold_key == event.fold_key and back.kind == R


def test_admin_rules_come_first_and_risky_patterns_are_refused():
    rules = [{"name": "ups", "subject": r"UPS (?P<host>\w+) on (?P<state>battery|mains)",
              "recovered": ["mains"]}]  # fmt: skip
    s = settings_from_mapping({"alerts": {**m.ALERTS, "rules": rules}})
    msg = parse(make_message(sender="ups@mon.example.com", subject="UPS rack3 on battery"))
    (event,) = alerts.read(msg, s)
    assert (event.source, event.host, event.state, event.kind) == ("ups", "rack3", "BATTERY", P)
    back = parse(make_message(sender="ups@mon.example.com", subject="UPS rack3 on mains"))
    assert alerts.read(back, s)[0].kind == R
    bad = settings_from_mapping({"alerts": {"rules": [
        {"name": "x", "subject": r"(?P<state>(a+)+)"}]}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"alerts\.rules\[0\]\.subject"):
        alerts.compile_rules(bad.alerts)


@pytest.mark.parametrize(
    "table, key",
    [({"rules": [{"name": "x", "subject": "(?P<host>x)"}]}, "alerts.rules[0].subject"),
     ({"rules": [{"subject": "(?P<state>x)"}]}, "alerts.rules[0].name"),
     ({"senders": ["not an address"]}, "alerts.senders"),
     ({"senders": ["help@example.com"]}, "alerts.senders"),
     ({"p4": ["Critical"]}, "alerts.p4"),
     ({"tier": 4}, "alerts.tier"),
     ({"recovery": "ignore"}, "alerts.recovery")],
)  # fmt: skip
def test_bad_alert_settings_name_the_key(table, key):
    with pytest.raises(ConfigError) as err:
        settings_from_mapping({"alerts": table})
    assert str(err.value).startswith(key)


# --- what each alert does (pure) ----------------------------------------------------------------

INBOUND = InboundMeta(id=1, recipient="help@example.com", envelope_from="nagios@mon.example.com",
                      notify=True, received_at=NOW)  # fmt: skip


def _facts(*, state: str = "CRITICAL", status: str = "open", priority: int = 2,
           is_open: bool = True, recovered: datetime | None = None,
           finished: datetime | None = None) -> Facts:  # fmt: skip
    key = alerts.fold_key("nagios", "web01", "HTTP")
    incident = AlertFacts(ticket_id=7, fold_key=key, is_open=is_open, state=state, status=status,
                          priority=priority, occurrences=3, flaps=0, last_at=NOW,
                          recovered_at=recovered, finished_at=finished)  # fmt: skip
    return Facts(alerts={key: incident})


def _decide(raw: bytes, facts: Facts) -> AlertStep:
    decision = decide(parse(m.via(raw)), INBOUND, facts, SETTINGS, NOW)
    (step,) = decision.alerts
    return step


def test_plans():
    problem = m.nagios_service("web01", "HTTP", "CRITICAL")
    recovery = m.nagios_service("web01", "HTTP", "OK", kind="RECOVERY")
    opened = _decide(problem, Facts())
    assert opened.action == "open" and opened.new_ticket.priority == 2
    assert opened.new_ticket.origin == "alert" and opened.new_ticket.tier == 2
    assert {n.to[0].email for n in opened.notices}.isdisjoint({"nagios@mon.example.com"})
    assert _decide(problem, _facts()).action == "repeat"
    assert _decide(problem, _facts()).article is None  # same state: counted only
    worse = _decide(problem, _facts(state="WARNING", priority=3))
    assert (worse.action, worse.raise_to) == ("repeat", 2) and worse.article is not None
    assert _decide(recovery, _facts()).action == "recover"
    assert _decide(recovery, _facts()).resolve
    assert _decide(recovery, _facts(is_open=False)).action == "ignore"
    flap = _facts(is_open=False, status="resolved", recovered=NOW - timedelta(minutes=10),
                  finished=NOW - timedelta(minutes=10))  # fmt: skip
    assert _decide(problem, flap).action == "reopen"
    old = _facts(is_open=False, status="closed", recovered=NOW - timedelta(hours=3),
                 finished=NOW - timedelta(hours=3))  # fmt: skip
    assert _decide(problem, old).action == "open"
    resolved_by_agent = _facts(status="resolved", finished=NOW - timedelta(hours=5))
    step = _decide(problem, resolved_by_agent)
    assert (step.action, step.retire) == ("open", 7)
    ack = _decide(m.nagios_service("web01", "HTTP", "CRITICAL", kind="ACKNOWLEDGEMENT"), _facts())
    assert ack.action == "annotate"


def test_a_monitors_duplicate_and_a_lone_recovery_are_ignored_with_a_reason():
    lone = decide(parse(m.via(m.nagios_service("web01", "HTTP", "OK", kind="RECOVERY"))), INBOUND,
                  Facts(), SETTINGS, NOW)  # fmt: skip
    assert lone.outcome == Outcome.IGNORED and "no open incident" in lone.reason
    again = decide(parse(m.via(m.nagios_host("db01", "DOWN"))), INBOUND, Facts(already_stored_on=3),
                   SETTINGS, NOW)  # fmt: skip
    assert again.outcome == Outcome.IGNORED and "#3" in again.reason


# --- who is a monitor: its From, and where its mail came from (pure) ---------------------------

TIERS = {"tier2": ["tier2@example.com"], "tier3": ["tier3@example.com"],
         "duty_manager": ["duty@example.com"]}  # fmt: skip
CRITICAL = settings_from_mapping({"alerts": {**m.ALERTS, "critical_hosts": ["db*"]},
                                  "tiers": TIERS})  # fmt: skip
# The border MX (trusted_hops = 2) writes its verdict above its own Received line.
SIGNED = settings_from_mapping({
    "alerts": {"senders": m.SENDERS, "critical_hosts": ["db*"]}, "tiers": TIERS,
    "agent_mail": {"trusted_authserv_ids": ["mx.example.com"], "trusted_hops": 2}})  # fmt: skip
MX_HOP = (b"Received: from mon1.mon.example.com (mon1.mon.example.com [198.51.100.7])\r\n"
          b"\tby mx.example.com (Postfix) with ESMTPS; Thu, 03 Dec 2026 09:30:01 +0000\r\n")  # fmt: skip


def _verdict(result: str) -> bytes:
    return f"Authentication-Results: mx.example.com; {result}\r\n".encode()


def _told(decision) -> set[str]:
    return {a.email for n in decision.notices for a in n.to}


@pytest.mark.parametrize(
    "raw, settings",
    [(m.nagios_host("db01", "DOWN"), CRITICAL),  # no hop of ours names a client
     (m.via(m.nagios_host("db01", "DOWN"), m.OUTSIDER_IP), CRITICAL),
     # A Received line the sender wrote below ours proves nothing either.
     (m.via(b"Received: from mon1 ([10.0.5.7]) by mon1; Thu, 03 Dec 2026 09:30:00 +0000\r\n"
            + m.nagios_host("db01", "DOWN"), m.OUTSIDER_IP), CRITICAL),
     (m.via(MX_HOP + m.nagios_host("db01", "DOWN")), SIGNED),  # no verdict
     (m.via(_verdict("dkim=pass header.d=evil.example; dmarc=fail")
            + MX_HOP + m.nagios_host("db01", "DOWN")), SIGNED),
     # The verdict is the sender's own, below our MX's Received line.
     (m.via(MX_HOP + _verdict("dkim=pass header.d=mon.example.com")
            + m.nagios_host("db01", "DOWN")), SIGNED)],
    ids=["no-trace", "outsider", "own-received", "no-verdict", "other-domain", "verdict-below"],
)  # fmt: skip
def test_a_forged_alert_is_ordinary_mail_from_a_stranger(raw, settings):
    msg = parse(raw)
    assert not alerts.is_alert_sender(msg, settings)
    d = decide(msg, INBOUND, Facts(), settings, NOW)
    assert d.outcome == Outcome.NEW_TICKET and d.alerts == ()
    assert d.new_ticket.origin != "alert" and d.new_ticket.priority != 1
    assert d.new_ticket.tier == 1 and d.new_ticket.category != settings.alerts.category
    assert not {"tier3@example.com", "duty@example.com"} & _told(d)  # nobody paged
    assert "not read as an alert" in d.reason
    (doubted,) = [e for e in d.events if e.kind == "alert_not_verified"]
    assert doubted.actor == "nagios@mon.example.com" and doubted.detail["why"]
    assert d.article.verified_by == "none"


def test_why_a_forged_alert_was_not_believed_names_its_source():
    d = decide(parse(m.via(m.nagios_host("db01", "DOWN"), m.OUTSIDER_IP)), INBOUND, Facts(),
               CRITICAL, NOW)  # fmt: skip
    (doubted,) = [e for e in d.events if e.kind == "alert_not_verified"]
    assert doubted.detail["why"] == "it came from 203.0.113.9, outside alerts.source_networks"


@pytest.mark.parametrize(
    "raw, settings",
    [(m.via(m.nagios_host("db01", "DOWN")), CRITICAL),
     (m.via(m.nagios_host("db01", "DOWN"), "10.0.5.200"), CRITICAL),
     (m.via(_verdict("dkim=pass header.d=mon.example.com") + MX_HOP
            + m.nagios_host("db01", "DOWN")), SIGNED),
     (m.via(_verdict("dmarc=pass header.from=mon.example.com") + MX_HOP
            + m.nagios_host("db01", "DOWN")), SIGNED)],
    ids=["network", "network-edge", "dkim", "dmarc"],
)  # fmt: skip
def test_a_verified_monitor_is_an_alert(raw, settings):
    msg = parse(raw)
    assert alerts.is_alert_sender(msg, settings)
    d = decide(msg, INBOUND, Facts(), settings, NOW)
    (step,) = d.alerts
    assert step.action == "open" and step.new_ticket.origin == "alert"
    assert step.new_ticket.priority == 1  # DOWN is P2, db* one step up
    assert {"tier3@example.com", "duty@example.com"} <= {a.email for n in step.notices
                                                         for a in n.to}  # fmt: skip
    assert not [e for e in d.events if e.kind == "alert_not_verified"]


def test_a_rule_names_senders_on_top_of_the_verified_ones():
    rules = [{"name": "ups", "subject": r"UPS (?P<host>\w+) on (?P<state>battery|mains)",
              "senders": ["ups@mon.example.com"]}]  # fmt: skip
    s = settings_from_mapping({"alerts": {**m.ALERTS, "rules": rules}})
    ups = parse(m.via(make_message(sender="ups@mon.example.com", subject="UPS rack3 on battery")))
    cron = parse(m.via(make_message(sender="cron@mon.example.com", subject="UPS rack3 on battery")))
    assert alerts.read(ups, s)[0].source == "ups"
    assert alerts.read(cron, s)[0].source == "mail"  # a monitor, but not this rule's
    forged = parse(m.via(make_message(sender="ups@mon.example.com",
                                      subject="UPS rack3 on battery"), m.OUTSIDER_IP))  # fmt: skip
    assert not alerts.is_alert_sender(forged, s)


def test_monitors_need_a_way_to_be_verified():
    with pytest.raises(ConfigError) as err:
        settings_from_mapping({"alerts": {"senders": m.SENDERS}})
    assert err.value.key == "alerts.source_networks"
    assert str(err.value) == ("alerts.source_networks: alerts.senders needs a way to verify the "
                              "monitor: set alerts.source_networks or "
                              "agent_mail.trusted_authserv_ids")  # fmt: skip
    assert settings_from_mapping({"alerts": {"senders": m.SENDERS}, "agent_mail": {
        "trusted_authserv_ids": ["mx.example.com"]}}).alerts.senders  # fmt: skip
    assert settings_from_mapping({"alerts": {"source_networks": ["10.0.5.0/24"]}})  # unused


@pytest.mark.parametrize(
    "networks",
    [["10.0.5.0/33"], ["monitoring.example.com"], ["10.0.5.0/24", ""], ["2001:db8::5/128"]],
)
def test_bad_source_networks_name_the_key(networks):
    with pytest.raises(ConfigError) as err:
        settings_from_mapping({"alerts": {"senders": m.SENDERS, "source_networks": networks}})
    assert err.value.key == "alerts.source_networks" and "\n" not in str(err.value)


def test_source_networks_from_the_environment():
    s = settings_from_mapping({"alerts": {"senders": m.SENDERS}}, {"alerts": {
        "source_networks": "10.0.5.0/24,2001:db8:5::/48, 192.0.2.7"}})  # fmt: skip
    assert s.alerts.source_networks == ("10.0.5.0/24", "2001:db8:5::/48", "192.0.2.7")
    v6 = parse(m.via(m.nagios_host("web01", "DOWN"), "2001:db8:5:1::9"))
    assert alerts.is_alert_sender(v6, s)
    assert alerts.is_alert_sender(parse(m.via(m.nagios_host("web01", "DOWN"), "192.0.2.7")), s)

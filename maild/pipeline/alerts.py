"""Alert mail: what a monitoring system's notification says (pure).

Mail from a sender listed in ``alerts.senders`` is read as alerts, never as an
auto-reply, and never answered, once maild has verified that it came from the
monitor (`maild.pipeline.verify.verify_monitor`: from one of
``alerts.source_networks``, or signed for its domain): a From line proves
nothing, and an alert may open a P1 incident and page tier 3. Unverified, it
is ordinary mail from whoever wrote it. Each stock notification mail is recognised
from its tool's documented default template:

- **Nagios** (``notify-host-by-email`` / ``notify-service-by-email`` of the
  sample ``commands.cfg``): ``***** Nagios *****``, ``Notification Type:``,
  ``Host:``, ``Service:``, ``State:``;
- **Icinga 2** (``mail-host-notification.sh`` / ``mail-service-notification.sh``):
  ``[PROBLEM] web on db1 is CRITICAL!``, ``***** Service Monitoring on ...``;
- **Zabbix** (the Email media type's default message templates):
  ``Problem: NAME`` / ``Resolved in 5m: NAME``, ``Host:``, ``Severity:``,
  ``Original problem ID:``;
- **Prometheus Alertmanager** (``email.default.subject`` / ``email.default.html``)
  and **Grafana** (``ng_alert_notification``): ``[FIRING:2] ...`` with each
  alert's ``Labels`` and ``Annotations``;
- **Uptime Kuma** (SMTP notification, no custom template):
  ``[NAME] [🔴 Down] message``;
- **Healthchecks.io**: ``DOWN | check`` / ``UP | check``;

plus the admin's ``[[alerts.rules]]`` (regular expressions naming host,
service and state), tried first, and a last resort for any other mail from a
monitor (folded by its subject). One mail may carry several alerts
(Alertmanager and Grafana group them); each is an `AlertEvent`, and each
(source, host, service) is one incident (`fold_key`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from maild.config.settings import AlertRuleSettings, AlertsSettings, Settings
from maild.errors import ConfigError
from maild.mail.parse import ParsedMessage
from maild.pipeline.triage import _unbounded_nesting
from maild.pipeline.verify import Trust, verify_monitor

SCAN_CHARS = 20_000  # of the body: a notification is short; a huge one is read in part
MAX_EVENTS = 50  # alerts read from one mail (Alertmanager groups can be large)
_FIELD_CHARS = 200  # host, service and state are cut to this


class AlertKind(StrEnum):
    PROBLEM = "problem"  # something is wrong (again)
    RECOVERY = "recovery"  # it is fine again
    FLAPPING = "flapping"  # the monitor says the state keeps changing
    INFO = "info"  # acknowledged, downtime, comment: recorded on the incident only


@dataclass(frozen=True)
class AlertEvent:
    source: str  # "nagios", "icinga2", "zabbix", "alertmanager", "grafana", ...
    host: str
    service: str
    state: str  # as the tool writes it: CRITICAL, DOWN, FIRING, RESOLVED, High ...
    kind: AlertKind
    severity: str = ""  # the word looked up in the severity table (lower case)
    summary: str = ""  # the tool's one-line output or description
    problem_id: str = ""  # the tool's own id of the problem (Zabbix)

    @property
    def fold_key(self) -> str:
        return fold_key(self.source, self.host, self.service)

    @property
    def label(self) -> str:
        """``web01/HTTP`` (or only the host, or only the service)."""
        return "/".join(p for p in (self.host, self.service) if p) or self.source


def fold_key(source: str, host: str, service: str) -> str:
    """The identity of an incident: one open incident per (source, host, service)."""
    parts = (_norm(source), _norm(host), _norm(service))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _norm(value: str) -> str:
    return " ".join(value.lower().split())


def _clean(value: str) -> str:
    return " ".join(value.split())[:_FIELD_CHARS]


# --- who sends alerts ---------------------------------------------------------------------


def _matches(address: str, globs: Iterable[str]) -> bool:
    address = address.lower()
    return any(fnmatch.fnmatchcase(address, g.lower()) for g in globs)


def from_monitor(msg: ParsedMessage, settings: Settings) -> Trust | None:
    """None when the From address is none of ``alerts.senders`` (addresses or
    globs); else whether maild verified that the mail came from that monitor."""
    senders = settings.alerts.senders
    if not (senders and msg.sender is not None and _matches(msg.sender.email, senders)):
        return None
    return verify_monitor(msg, settings)


def is_alert_sender(msg: ParsedMessage, settings: Settings) -> bool:
    """The mail is a monitor's, verified: read it as alerts."""
    trust = from_monitor(msg, settings)
    return trust is not None and trust.verified


def host_is_critical(host: str, settings: AlertsSettings) -> bool:
    return bool(host and settings.critical_hosts and _matches(host, settings.critical_hosts))


def priority_of(event: AlertEvent, settings: AlertsSettings) -> int:
    """The severity table (``alerts.p1`` .. ``p4``), one step up on a critical host."""
    word = (event.severity or event.state).lower().strip()
    priority = settings.default_priority
    for p in (1, 2, 3, 4):
        if word in getattr(settings, f"p{p}"):
            priority = p
            break
    if host_is_critical(event.host, settings):
        priority = max(1, priority - 1)
    return priority


# --- reading the mail ---------------------------------------------------------------------------

Reader = Callable[[ParsedMessage, str], tuple[AlertEvent, ...]]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text[:SCAN_CHARS].splitlines()]


def _field(lines: list[str], name: str) -> str:
    """The value of the first ``Name: value`` line."""
    prefix = name.lower() + ":"
    for line in lines:
        if line.lower().startswith(prefix):
            return line[len(prefix) :].strip()
    return ""


_NAGIOS_TYPES = {
    "problem": AlertKind.PROBLEM,
    "recovery": AlertKind.RECOVERY,
    "flappingstart": AlertKind.FLAPPING,
}
_NAGIOS_SUBJECT = re.compile(
    r"^\*\*\s*(?P<type>[A-Z]+)\s+(?:Service Alert:\s*(?P<host>[^/]+)/(?P<service>.+?)"
    r"|Host Alert:\s*(?P<hhost>.+?))\s+is\s+(?P<state>[A-Z]+)\s*\*\*$"
)


def read_nagios(msg: ParsedMessage, text: str) -> tuple[AlertEvent, ...]:
    """Nagios Core's sample notify-*-by-email commands."""
    lines = _lines(text)
    if "***** nagios" not in text[:200].lower() and not _NAGIOS_SUBJECT.match(msg.subject):
        return ()
    kind_word = _field(lines, "Notification Type")
    host = _field(lines, "Host")
    service = _field(lines, "Service")
    state = _field(lines, "State")
    m = _NAGIOS_SUBJECT.match(msg.subject.strip())
    if m is not None:
        kind_word = kind_word or m["type"]
        host = host or m["host"] or m["hhost"] or ""
        service = service or m["service"] or ""
        state = state or m["state"]
    if not host or not state:
        return ()
    state = state.split()[0]  # "DOWN for 0d 0h 5m" (some variants add the duration)
    summary = _field(lines, "Info") or _after(lines, "Additional Info:")
    return (_event("nagios", host, service, state, _NAGIOS_TYPES.get(kind_word.lower()),
                   summary),)  # fmt: skip


def _after(lines: list[str], marker: str) -> str:
    """The first non-empty line after `marker`."""
    for i, line in enumerate(lines):
        if line.lower() == marker.lower():
            return next((x for x in lines[i + 1 :] if x), "")
    return ""


def _event(source: str, host: str, service: str, state: str, kind: AlertKind | None,
           summary: str = "", severity: str = "", problem_id: str = "") -> AlertEvent:  # fmt: skip
    state = _clean(state)
    if kind is None:
        kind = AlertKind.INFO
    return AlertEvent(source=source, host=_clean(host), service=_clean(service), state=state,
                      kind=kind, severity=(severity or state).lower(), summary=_clean(summary),
                      problem_id=_clean(problem_id))  # fmt: skip


_ICINGA_SUBJECT = re.compile(
    r"^\[(?P<type>[A-Z]+)\]\s+(?:(?P<service>.+?)\s+on\s+(?P<host>.+?)|Host\s+(?P<hhost>.+?))"
    r"\s+is\s+(?P<state>[A-Z]+)!$"
)
_ICINGA_TYPES = {
    "problem": AlertKind.PROBLEM,
    "recovery": AlertKind.RECOVERY,
    "flappingstart": AlertKind.FLAPPING,
}


def read_icinga2(msg: ParsedMessage, text: str) -> tuple[AlertEvent, ...]:
    """Icinga 2's mail-host-notification.sh and mail-service-notification.sh."""
    head = text[:300].lower()
    m = _ICINGA_SUBJECT.match(msg.subject.strip())
    if m is None or ("service monitoring on" not in head and "host monitoring on" not in head):
        return ()
    lines = _lines(text)
    # The body names the objects (host.name, service.name); the subject their display names.
    host = _field(lines, "Host") or m["host"] or m["hhost"] or ""
    service = _field(lines, "Service") if m["service"] else ""
    if m["service"] and not service:
        service = m["service"]
    return (_event("icinga2", host, service, m["state"], _ICINGA_TYPES.get(m["type"].lower()),
                   _field(lines, "Info")),)  # fmt: skip


_ZABBIX_SUBJECT = re.compile(
    r"^(?:(?P<problem>Problem)|(?P<resolved>Resolved)(?: in [^:]+)?|(?P<update>Updated problem)"
    r"(?: in [^:]+)?):\s*(?P<name>.+)$"
)


def read_zabbix(msg: ParsedMessage, text: str) -> tuple[AlertEvent, ...]:
    """Zabbix's default Email message templates (problem, recovery, update)."""
    lines = _lines(text)
    name = _field(lines, "Problem name")
    problem_id = _field(lines, "Original problem ID")
    m = _ZABBIX_SUBJECT.match(msg.subject.strip())
    if not problem_id and (m is None or not name):
        return ()
    host = _field(lines, "Host")
    severity = _field(lines, "Severity")
    if not host:
        return ()
    first = next((x for x in lines if x), "").lower()
    if (m is not None and m["resolved"]) or first.startswith("problem has been resolved"):
        kind, state = AlertKind.RECOVERY, "RESOLVED"
    elif (m is not None and m["update"]) or "current problem status" in text.lower():
        kind, state = AlertKind.INFO, "UPDATED"
    else:
        kind, state = AlertKind.PROBLEM, "PROBLEM"
    name = name or (m["name"] if m is not None else "")
    return (_event("zabbix", host, name, state, kind, _field(lines, "Operational data"),
                   severity=severity or state, problem_id=problem_id),)  # fmt: skip


_GROUPED_SUBJECT = re.compile(r"^\[(?P<status>FIRING|RESOLVED)(?::\d+)?\]\s*(?P<rest>.*)$")
_SECTION = re.compile(r"^[\[(](?P<n>\d+)[\])]\s*(?P<what>Firing|Resolved)$", re.IGNORECASE)
_LABEL = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*)$")
_HOST_LABELS = ("instance", "host", "hostname", "nodename", "node", "server", "device")
_SUMMARY_ANNOTATIONS = ("summary", "description", "message")


def read_grouped(msg: ParsedMessage, text: str) -> tuple[AlertEvent, ...]:
    """Prometheus Alertmanager's and Grafana's default e-mail: alerts grouped in one mail."""
    m = _GROUPED_SUBJECT.match(msg.subject.strip())
    if m is None:
        return ()
    low = text.lower()
    source = "grafana" if "grafana" in low else "alertmanager"
    events: list[AlertEvent] = []
    section = m["status"].lower()
    labels: dict[str, str] | None = None
    annotations: dict[str, str] = {}
    target = "labels"

    def flush() -> None:
        if labels:
            events.append(_grouped_event(source, section, labels, annotations))

    for line in _lines(text):
        if (s := _SECTION.match(line)) is not None:
            flush()
            labels, annotations = None, {}
            section = "resolved" if s["what"].lower() == "resolved" else "firing"
            continue
        word = line.rstrip(":").lower()
        if word == "labels":
            flush()
            labels, annotations, target = {}, {}, "labels"
            continue
        if word == "annotations" and labels is not None:
            target = "annotations"
            continue
        if word.startswith("source") and labels is not None:
            target = "done"
            continue
        if labels is not None and target != "done" and (lm := _LABEL.match(line)) is not None:
            (labels if target == "labels" else annotations)[lm["name"]] = lm["value"].strip()
    flush()
    return tuple(events[:MAX_EVENTS])


def _grouped_event(source: str, section: str, labels: dict[str, str],
                   annotations: dict[str, str]) -> AlertEvent:  # fmt: skip
    host = next((labels[k] for k in _HOST_LABELS if labels.get(k)), "")
    if re.fullmatch(r"[^\s:]+:\d{1,5}", host):  # instance="web01:9100": the host is web01
        host = host.rsplit(":", 1)[0]
    service = labels.get("alertname", "")
    summary = next((annotations[k] for k in _SUMMARY_ANNOTATIONS if annotations.get(k)), "")
    if section == "resolved":
        return _event(source, host, service, "RESOLVED", AlertKind.RECOVERY, summary)
    return _event(source, host, service, "FIRING", AlertKind.PROBLEM, summary,
                  severity=labels.get("severity", "firing"))  # fmt: skip


_KUMA_SUBJECT = re.compile(
    r"^\[(?P<name>.+?)\]\s*\[(?:[^\]\w]*\s*)?(?P<state>Up|Down)\]\s*(?P<msg>.*)$"
)


def read_uptime_kuma(msg: ParsedMessage, text: str) -> tuple[AlertEvent, ...]:
    """Uptime Kuma's SMTP notification without a custom subject."""
    m = _KUMA_SUBJECT.match(msg.subject.strip())
    if m is None:
        return ()
    down = m["state"].lower() == "down"
    return (_event("uptime-kuma", m["name"], "", m["state"].upper(),
                   AlertKind.PROBLEM if down else AlertKind.RECOVERY, m["msg"]),)  # fmt: skip


_HC_SUBJECT = re.compile(r"^(?P<state>DOWN|UP)\s*\|\s*(?P<name>.+)$")
_HC_BODY = re.compile(r'the check "(?P<name>.+)" has gone (?P<state>down|up)', re.IGNORECASE)


def read_healthchecks(msg: ParsedMessage, text: str) -> tuple[AlertEvent, ...]:
    """Healthchecks.io's alert e-mail."""
    m = _HC_SUBJECT.match(msg.subject.strip())
    body = _HC_BODY.search(text[:2000])
    if m is None or body is None:
        return ()
    project = _field(_lines(text), "Project")
    down = m["state"] == "DOWN"
    return (_event("healthchecks", project, body["name"], m["state"],
                   AlertKind.PROBLEM if down else AlertKind.RECOVERY),)  # fmt: skip


STOCK_READERS: tuple[tuple[str, Reader], ...] = (
    ("nagios", read_nagios),
    ("icinga2", read_icinga2),
    ("zabbix", read_zabbix),
    ("grouped", read_grouped),  # alertmanager, grafana
    ("uptime-kuma", read_uptime_kuma),
    ("healthchecks", read_healthchecks),
)


# --- the admin's rules -------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledRule:
    name: str
    subject: re.Pattern[str] | None
    body: re.Pattern[str] | None
    senders: tuple[str, ...]
    recovered: frozenset[str]

    def read(self, msg: ParsedMessage, text: str) -> AlertEvent | None:
        if self.senders and not (msg.sender and _matches(msg.sender.email, self.senders)):
            return None
        groups: dict[str, str] = {}
        for pattern, where in ((self.subject, msg.subject), (self.body, text[:SCAN_CHARS])):
            if pattern is None:
                continue
            m = pattern.search(where)
            if m is None:
                return None
            groups.update({k: v for k, v in m.groupdict().items() if v})
        state = groups.get("state", "")
        if not state:
            return None
        kind = AlertKind.RECOVERY if state.lower() in self.recovered else AlertKind.PROBLEM
        return _event(self.name, groups.get("host", ""), groups.get("service", ""), state.upper(),
                      kind, severity=groups.get("severity", ""))  # fmt: skip


@lru_cache(maxsize=8)
def compile_rules(settings: AlertsSettings) -> tuple[CompiledRule, ...]:
    """The ``[[alerts.rules]]``, compiled once; a risky pattern is a `ConfigError`."""
    out = []
    for i, rule in enumerate(settings.rules):
        out.append(_compile(rule, f"alerts.rules[{i}]"))
    return tuple(out)


def _compile(rule: AlertRuleSettings, where: str) -> CompiledRule:
    compiled: dict[str, re.Pattern[str] | None] = {}
    for part in ("subject", "body"):
        pattern = getattr(rule, part)
        if not pattern:
            compiled[part] = None
            continue
        problem = _unbounded_nesting(pattern)
        if problem:
            raise ConfigError(f"{where}.{part}", f"the pattern {problem}")
        compiled[part] = re.compile(pattern, re.IGNORECASE)
    return CompiledRule(rule.name, compiled["subject"], compiled["body"], rule.senders,
                        frozenset(w.lower() for w in rule.recovered))  # fmt: skip


# --- any other mail from a monitor ----------------------------------------------------------------

_STATE_WORDS = re.compile(
    r"\b(?P<word>RECOVERY|RECOVERED|RESOLVED|OK|UP|PROBLEM|CRITICAL|WARNING|UNKNOWN|DOWN|"
    r"FAIL(?:ED|URE)?|ERROR|ALERT|FIRING)\b"
)
_RECOVERED_WORDS = frozenset({"recovery", "recovered", "resolved", "ok", "up"})
_SUBJECT_NOISE = re.compile(r"[\[\]()*:!|#-]+")


def read_fallback(msg: ParsedMessage, text: str) -> tuple[AlertEvent, ...]:
    """No known format: one incident per subject, its state from the first state word."""
    subject = msg.subject.strip() or "(no subject)"
    m = _STATE_WORDS.search(subject)
    state = m["word"] if m else "ALERT"
    kind = AlertKind.RECOVERY if state.lower() in _RECOVERED_WORDS else AlertKind.PROBLEM
    rest = _STATE_WORDS.sub(" ", subject)
    service = " ".join(_SUBJECT_NOISE.sub(" ", rest).split()) or subject
    sender = msg.sender.email if msg.sender else ""
    first = next((x for x in _lines(text) if x), "")
    severity = "problem" if state == "ALERT" else state
    return (_event("mail", sender, service, state, kind, first, severity=severity),)


def read(msg: ParsedMessage, settings: Settings) -> tuple[AlertEvent, ...]:
    """Every alert in a monitor's mail, in order (at most `MAX_EVENTS`, one per incident)."""
    text = msg.text or ""
    events: tuple[AlertEvent, ...] = ()
    for rule in compile_rules(settings.alerts):
        event = rule.read(msg, text)
        if event is not None:
            events = (event,)
            break
    if not events:
        for _name, reader in STOCK_READERS:
            events = reader(msg, text)
            if events:
                break
    if not events:
        events = read_fallback(msg, text)
    unique: dict[str, AlertEvent] = {}
    for event in events:  # one alert per incident: the last word on it counts
        unique.pop(event.fold_key, None)
        unique[event.fold_key] = event
    return tuple(unique.values())[:MAX_EVENTS]

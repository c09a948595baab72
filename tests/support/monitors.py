"""Monitoring mail as each tool sends it, rendered from its documented default template.

Each function fills in the tool's stock notification template the way the
tool does (the sources are named per function) and wraps it in the headers
its mailer writes. Used for the fixtures in ``tests/fixtures/alerts`` (see
``_make_fixtures.py`` there) and, with many hosts and states, for storms.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from maild.mail.trace import received_line

NAGIOS = "Nagios <nagios@mon.example.com>"
ICINGA = "icinga@mon.example.com"
ZABBIX = "Zabbix <zabbix@mon.example.com>"
ALERTMANAGER = "Alertmanager <alertmanager@mon.example.com>"
GRAFANA = "Grafana <grafana@mon.example.com>"
UPTIME_KUMA = "uptime-kuma@mon.example.com"
HEALTHCHECKS = "Healthchecks.io <alerts@healthchecks.io>"
SENDERS = ["*@mon.example.com", "alerts@healthchecks.io"]  # alerts.senders for the tests
SOURCE_NETWORKS = ["10.0.5.0/24"]  # alerts.source_networks: where the monitors send from
MONITOR_IP = "10.0.5.7"  # a monitor, in SOURCE_NETWORKS
OUTSIDER_IP = "203.0.113.9"  # anyone else
ALERTS = {"senders": SENDERS, "source_networks": SOURCE_NETWORKS}  # the tests' [alerts]

WHEN = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
_serial = itertools.count(1)


def via(raw: bytes, client: str = MONITOR_IP, *, when: datetime = WHEN) -> bytes:
    """`raw` as maild stores it when `client` sent it by SMTP: maild's Received line on top."""
    return received_line(by="localhost", protocol="ESMTP", now=when, helo="client.example",
                         ip=client) + raw  # fmt: skip


def _mail(sender: str, subject: str, text: str | None = None, *, html_body: str | None = None,
          headers: Mapping[str, str] | None = None, when: datetime = WHEN,
          message_id: str | None = None) -> bytes:  # fmt: skip
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "help@example.com"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    domain = sender.rpartition("@")[2].strip(">")
    msg["Message-ID"] = message_id or f"<{when:%Y%m%d%H%M%S}.{next(_serial)}@{domain}>"
    for name, value in (headers or {}).items():
        msg[name] = value
    if text is not None:
        msg.set_content(text)
        if html_body is not None:
            msg.add_alternative(html_body, subtype="html")
    else:
        assert html_body is not None
        msg.set_content(html_body, subtype="html")
    return msg.as_bytes(policy=SMTP)


# --- Nagios Core: sample-config/template-object/commands.cfg.in -------------------------------


def nagios_service(host: str, service: str, state: str, *, kind: str = "PROBLEM",
                   output: str = "", address: str = "192.0.2.10",
                   when: datetime = WHEN) -> bytes:  # fmt: skip
    """notify-service-by-email: printf "***** Nagios *****..." | mail -s "** ... **"."""
    output = output or f"{state} - {service} check result"
    text = (f"***** Nagios *****\n\nNotification Type: {kind}\n\nService: {service}\n"
            f"Host: {host}\nAddress: {address}\nState: {state}\n\n"
            f"Date/Time: {when:%a %b %d %H:%M:%S UTC %Y}\n\nAdditional Info:\n\n{output}")  # fmt: skip
    return _mail(NAGIOS, f"** {kind} Service Alert: {host}/{service} is {state} **", text,
                 when=when)  # fmt: skip


def nagios_host(host: str, state: str, *, kind: str = "PROBLEM", output: str = "",
                address: str = "192.0.2.10", when: datetime = WHEN) -> bytes:  # fmt: skip
    """notify-host-by-email."""
    output = output or ("PING CRITICAL - Packet loss = 100%" if state != "UP"
                        else "PING OK - Packet loss = 0%, RTA = 0.50 ms")  # fmt: skip
    text = (f"***** Nagios *****\n\nNotification Type: {kind}\nHost: {host}\nState: {state}\n"
            f"Address: {address}\nInfo: {output}\n\n"
            f"Date/Time: {when:%a %b %d %H:%M:%S UTC %Y}\n")  # fmt: skip
    return _mail(NAGIOS, f"** {kind} Host Alert: {host} is {state} **", text, when=when)


# --- Icinga 2: etc/icinga2/scripts/mail-{service,host}-notification.sh ----------------------------


def icinga2_service(host: str, service: str, state: str, *, kind: str = "PROBLEM",
                    output: str = "", display_host: str | None = None,
                    display_service: str | None = None, monitor: str = "icinga-master",
                    when: datetime = WHEN) -> bytes:  # fmt: skip
    display_host = display_host or host
    display_service = display_service or service
    output = output or f"{state} - {service}"
    text = (f"***** Service Monitoring on {monitor} *****\n\n"
            f"{display_service} on {display_host} is {state}!\n\n"
            f"Info:    {output}\n\nWhen:    {when:%Y-%m-%d %H:%M:%S +0000}\n"
            f"Service: {service}\nHost:    {host}\nIPv4:    192.0.2.20")  # fmt: skip
    return _mail(ICINGA, f"[{kind}] {display_service} on {display_host} is {state}!", text,
                 when=when)  # fmt: skip


def icinga2_host(host: str, state: str, *, kind: str = "PROBLEM", output: str = "",
                 monitor: str = "icinga-master", when: datetime = WHEN) -> bytes:  # fmt: skip
    output = output or f"PING {state} - Packet loss = {'100' if state != 'UP' else '0'}%"
    text = (f"***** Host Monitoring on {monitor} *****\n\n{host} is {state}!\n\n"
            f"Info:    {output}\n\nWhen:    {when:%Y-%m-%d %H:%M:%S +0000}\n"
            f"Host:    {host}\nIPv4:\t 192.0.2.20")  # fmt: skip
    return _mail(ICINGA, f"[{kind}] Host {host} is {state}!", text, when=when)


# --- Zabbix: the Email media type's default message templates -------------------------------------


def zabbix_problem(host: str, name: str, severity: str = "High", *, event_id: int = 1001,
                   opdata: str = "", when: datetime = WHEN) -> bytes:  # fmt: skip
    text = (f"Problem started at {when:%H:%M:%S} on {when:%Y.%m.%d}\nProblem name: {name}\n"
            f"Host: {host}\nSeverity: {severity}\nOperational data: {opdata}\n"
            f"Original problem ID: {event_id}\n"
            f"https://zabbix.example.com/tr_events.php?triggerid=2{event_id}&eventid={event_id}\n")  # fmt: skip
    return _mail(ZABBIX, f"Problem: {name}", text, when=when)


def zabbix_resolved(host: str, name: str, severity: str = "High", *, event_id: int = 1001,
                    duration: str = "5m 0s", when: datetime = WHEN) -> bytes:  # fmt: skip
    text = (f"Problem has been resolved at {when:%H:%M:%S} on {when:%Y.%m.%d}\n"
            f"Problem name: {name}\nProblem duration: {duration}\nHost: {host}\n"
            f"Severity: {severity}\nOriginal problem ID: {event_id}\n"
            f"https://zabbix.example.com/tr_events.php?triggerid=2{event_id}&eventid={event_id}\n")  # fmt: skip
    return _mail(ZABBIX, f"Resolved in {duration}: {name}", text, when=when)


# --- Prometheus Alertmanager: template/default.tmpl (email.default.*) -------------------------------

Alert = tuple[Mapping[str, str], Mapping[str, str]]  # (labels, annotations)
_TD = "style=\"font-family: 'Helvetica Neue', Helvetica, Arial, sans-serif; font-size: 14px;\""


def _subject(status: str, firing: int, group: Mapping[str, str],
             common: Mapping[str, str]) -> str:  # fmt: skip
    """__subject: [FIRING:n] group values (other common label values)."""
    head = f"[{status.upper()}{f':{firing}' if status == 'firing' else ''}]"
    values = " ".join(group[k] for k in sorted(group))
    rest = {k: v for k, v in common.items() if k not in group}
    extra = f" ({' '.join(rest[k] for k in sorted(rest))})" if rest else ""
    return f"{head} {values}{extra}"


def _common(alerts: Sequence[Alert]) -> dict[str, str]:
    labels = [dict(a[0]) for a in alerts]
    return {k: v for k, v in labels[0].items() if all(x.get(k) == v for x in labels)}


def _am_block(alert: Alert) -> str:
    labels, annotations = alert
    parts = [f"<tr><td {_TD}><strong>Labels</strong><br />"]
    parts += [f"{html.escape(k)} = {html.escape(v)}<br />" for k, v in sorted(labels.items())]
    if annotations:
        parts.append("<strong>Annotations</strong><br />")
        parts += [f"{html.escape(k)} = {html.escape(v)}<br />"
                  for k, v in sorted(annotations.items())]  # fmt: skip
    parts.append('<a href="http://prometheus.example.com:9090/graph?g0.expr=up">Source</a><br />'
                 "</td></tr>")  # fmt: skip
    return "".join(parts)


def alertmanager(firing: Sequence[Alert] = (), resolved: Sequence[Alert] = (), *,
                 group: Mapping[str, str] | None = None, when: datetime = WHEN) -> bytes:  # fmt: skip
    """email.default.subject and email.default.html (HTML only, as by default)."""
    alerts = [*firing, *resolved]
    group = dict(group or {"alertname": alerts[0][0]["alertname"]})
    status = "firing" if firing else "resolved"
    subject = _subject(status, len(firing), group, _common(alerts))
    rows = [f"<tr><td {_TD}>{len(alerts)} alert{'s' if len(alerts) > 1 else ''} for "
            + " ".join(f"{k}={html.escape(v)}" for k, v in sorted(group.items())) + "</td></tr>",
            f'<tr><td {_TD}><a href="http://alertmanager.example.com:9093/#/alerts">'
            "View in AlertManager</a></td></tr>"]  # fmt: skip
    if firing:
        rows.append(f"<tr><td {_TD}><strong>[{len(firing)}] Firing</strong></td></tr>")
        rows += [_am_block(a) for a in firing]
    if resolved:
        if firing:
            rows.append(f"<tr><td {_TD}><br /><hr /><br /></td></tr>")
        rows.append(f"<tr><td {_TD}><strong>[{len(resolved)}] Resolved</strong></td></tr>")
        rows += [_am_block(a) for a in resolved]
    body = ('<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
            '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
            f'<html xmlns="http://www.w3.org/1999/xhtml"><head><meta name="viewport" '
            'content="width=device-width" /><meta http-equiv="Content-Type" '
            f'content="text/html; charset=UTF-8" /><title>{html.escape(subject)}</title></head>'
            '<body itemscope="" itemtype="http://schema.org/EmailMessage"><table><tr><td>'
            f'<table width="100%" cellpadding="0" cellspacing="0">{"".join(rows)}</table>'
            '<div><table width="100%"><tr><td><a href="http://alertmanager.example.com:9093">'
            "Sent by AlertManager</a></td></tr></table></div></td></tr></table></body></html>\n")  # fmt: skip
    return _mail(ALERTMANAGER, subject, html_body=body, when=when)


# --- Grafana: public/emails/ng_alert_notification.{txt,html} ----------------------------------------


def _grafana_block(alert: Alert) -> str:
    labels, annotations = alert
    out = "Labels:\n" + "".join(f"{k} = {v}\n" for k, v in sorted(labels.items()))
    if annotations:
        out += "Annotations:\n" + "".join(f"{k} = {v}\n" for k, v in sorted(annotations.items()))
    return out


def grafana(firing: Sequence[Alert] = (), resolved: Sequence[Alert] = (), *,
            group: Mapping[str, str] | None = None, when: datetime = WHEN) -> bytes:  # fmt: skip
    """The unified alerting e-mail: a text part and an HTML part."""
    alerts = [*firing, *resolved]
    group = dict(group or {"alertname": alerts[0][0]["alertname"],
                           "grafana_folder": alerts[0][0].get("grafana_folder", "General")})  # fmt: skip
    title = _subject("firing" if firing else "resolved", len(firing), group, _common(alerts))
    text = (f"{title}\n----------------\n\n{len(alerts)} alert{'s' if len(alerts) > 1 else ''} "
            "for\n" + "".join(f"{k} = {v}\n" for k, v in sorted(group.items())) + "\n")  # fmt: skip
    if firing:
        text += f"({len(firing)}) Firing\n" + "".join(_grafana_block(a) for a in firing)
    if resolved:
        text += f"({len(resolved)}) Resolved\n" + "".join(_grafana_block(a) for a in resolved)
    text += ("View your Alert rule:\nhttps://grafana.example.com/alerting/list\n\n"
             "Go to the Alerts page:\nhttps://grafana.example.com/alerting/list\n\n"
             "Sent by Grafana v10.4.1 (c) 2024 Grafana Labs\n")  # fmt: skip
    body = ("<html><body><h1>" + html.escape(title) + "</h1><pre>" + html.escape(text)
            + "</pre></body></html>")  # fmt: skip
    return _mail(GRAFANA, title, text, html_body=body, when=when)


# --- Uptime Kuma: server/model/monitor.js + notification-providers/smtp.js --------------------------


def uptime_kuma(name: str, up: bool, message: str = "", *, when: datetime = WHEN) -> bytes:
    """msg = `[${monitor.name}] [${text}] ${bean.msg}`; body = msg + the local time."""
    text = "✅ Up" if up else "🔴 Down"
    message = message or ("200 - OK" if up else "connect ECONNREFUSED 192.0.2.30:443")
    msg = f"[{name}] [{text}] {message}"
    return _mail(UPTIME_KUMA, msg, f"{msg}\nTime (Europe/Helsinki): {when:%Y-%m-%d %H:%M:%S}",
                 when=when)  # fmt: skip


# --- Healthchecks.io: templates/emails/alert-{subject,body-text}.html ------------------------------


def healthchecks(name: str, up: bool, *, project: str = "Backups", when: datetime = WHEN) -> bytes:
    status = "up" if up else "down"
    text = (f'The check "{name}" has gone {status}.\n\nView on Healthchecks.io:\n'
            "https://healthchecks.io/cloaked/a1b2c3/\n\nDetails:\n--------\n"
            f"Project: {project}\nTags: nightly\nPeriod: 1 day\nTotal pings: 412 "
            "(since Jan 5, 2026)\nLast ping: 1 day, 2 hours ago, from 192.0.2.40\n"
            "Last ping type: Success\n\n--\nUnsubscribe: https://healthchecks.io/unsub/x/\n"
            "Regards, Healthchecks.io\n")  # fmt: skip
    headers = {"List-Unsubscribe": "<https://healthchecks.io/unsub/x/>",
               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}  # fmt: skip
    return _mail(HEALTHCHECKS, f"{status.upper()} | {name}", text, headers=headers, when=when)

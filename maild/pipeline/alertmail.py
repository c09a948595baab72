"""A monitor's mail (pure): which incident each of its alerts folds into.

One open incident per (source, host, service) (`maild.alerts.fold_key`):

- a **problem** with no incident opens one: a P1..P4 incident by the severity
  table (``alerts.p1`` .. ``p4``, one step up on ``alerts.critical_hosts``),
  at ``alerts.tier``, category ``alerts.category``; the tier is told, and on
  a P1 tier 3 and the duty manager at once. The monitor gets nothing back:
  no acknowledgement, no mail ever;
- a **repeat** counts an occurrence (the last state and time are kept); a
  change of state is recorded on the incident, and only a worse priority
  raises the incident's and tells the agents;
- a **recovery** (OK, UP, RECOVERY, resolved) resolves its own incident and
  no other (``alerts.recovery = "annotate"``: records it and tells the
  agents, who resolve);
- a problem within ``alerts.flap_minutes`` of its incident's recovery (or of
  an agent resolving it) reopens that incident: flapping is folded;
- acknowledgements, downtimes and other notes are recorded on the incident.

The database facts (`Facts.alerts`) come from the worker, looked up by the
keys of the mail's alerts.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from maild.config.settings import Settings
from maild.mail.parse import Address, ParsedMessage
from maild.pipeline import alerts, notices
from maild.pipeline.alerts import AlertEvent, AlertKind
from maild.pipeline.correlate import AlertFacts, Facts
from maild.pipeline.decision import (
    AlertStep,
    ArticleSpec,
    Decision,
    EventSpec,
    InboundMeta,
    Notice,
    TicketSpec,
)
from maild.pipeline.sla import SlaPolicy
from maild.store.states import (
    FINISHED_STATUSES,
    ArticleKind,
    Origin,
    Outcome,
    TicketStatus,
    TicketType,
    Visibility,
)

SOURCE_NAMES = {
    "nagios": "Nagios",
    "icinga2": "Icinga 2",
    "zabbix": "Zabbix",
    "alertmanager": "Alertmanager",
    "grafana": "Grafana",
    "uptime-kuma": "Uptime Kuma",
    "healthchecks": "Healthchecks.io",
    "mail": "monitoring mail",
}


def decide(
    msg: ParsedMessage, inbound: InboundMeta, facts: Facts, settings: Settings, now: datetime
) -> Decision:
    """The steps of every alert in `msg` (a mail from one of ``alerts.senders``)."""
    sender = msg.sender or Address("", inbound.envelope_from or "")
    events = alerts.read(msg, settings)
    steps = tuple(_plan(e, msg, inbound, facts, settings, now, sender) for e in events)
    acted = [s for s in steps if s.action != "ignore"]
    said = "; ".join(f"{s.event.label} {s.event.state}: {s.reason}" for s in steps)
    if not acted:
        return Decision(Outcome.IGNORED, f"alert from {sender.email}: {said}", alerts=steps,
                        rule="alert_without_incident")  # fmt: skip
    outcome = Outcome.NEW_TICKET if any(s.action == "open" for s in acted) else Outcome.APPENDED
    return Decision(outcome, f"alert from {sender.email}: {said}", alerts=steps, how="alert")


def _incident(event: AlertEvent, facts: Facts) -> AlertFacts | None:
    if event.problem_id and event.problem_id in facts.alert_problems:
        return facts.alert_problems[event.problem_id]
    return facts.alerts.get(event.fold_key)


def _plan(
    event: AlertEvent, msg: ParsedMessage, inbound: InboundMeta, facts: Facts,
    settings: Settings, now: datetime, sender: Address,
) -> AlertStep:  # fmt: skip
    priority = alerts.priority_of(event, settings.alerts)
    incident = _incident(event, facts)
    finished = incident is not None and incident.status in FINISHED_STATUSES
    live = incident is not None and incident.is_open and not finished
    step = AlertStep(action="ignore", event=event, priority=priority)
    if incident is not None:
        step = replace(step, ticket_id=incident.ticket_id)

    if event.kind in (AlertKind.PROBLEM, AlertKind.FLAPPING):
        if live:
            assert incident is not None
            return _repeat(step, incident, msg, sender, priority)
        if incident is not None and _recent(incident, settings, now):
            return replace(step, action="reopen", reason=f"flapping: #{incident.ticket_id} again",
                           article=_article(msg, sender, ArticleKind.AUTOMATED,
                                            Visibility.INTERNAL))  # fmt: skip
        retire = incident.ticket_id if incident is not None and incident.is_open else None
        return _open(event, msg, inbound, facts, settings, now, sender, priority, retire)
    if event.kind == AlertKind.RECOVERY:
        if incident is None or not incident.is_open:
            return replace(step, ticket_id=None, reason="recovery with no open incident")
        resolve = settings.alerts.recovery == "resolve" and not finished
        return replace(step, action="recover", resolve=resolve,
                       reason=f"recovers #{incident.ticket_id}",
                       article=_article(msg, sender, ArticleKind.AUTOMATED, Visibility.INTERNAL))  # fmt: skip
    if incident is None:
        return replace(step, reason=f"{event.state.lower()} notice with no incident")
    return replace(step, action="annotate", reason=f"noted on #{incident.ticket_id}",
                   article=_article(msg, sender, ArticleKind.AUTOMATED, Visibility.INTERNAL))  # fmt: skip


def _recent(incident: AlertFacts, settings: Settings, now: datetime) -> bool:
    """Recovered (or resolved by an agent) within ``alerts.flap_minutes``."""
    window = timedelta(minutes=settings.alerts.flap_minutes)
    ended = [t for t in (incident.recovered_at, incident.finished_at) if t is not None]
    return bool(window and ended and now - max(ended) <= window)


def _repeat(
    step: AlertStep, incident: AlertFacts, msg: ParsedMessage, sender: Address, priority: int
) -> AlertStep:
    changed = step.event.state != incident.state
    worse = priority < incident.priority
    article = _article(msg, sender, ArticleKind.AUTOMATED, Visibility.INTERNAL) if changed else None
    what = "worse" if worse else "state changed" if changed else "repeat"
    return replace(step, action="repeat", article=article, raise_to=priority if worse else None,
                   reason=f"{what} on #{incident.ticket_id} "
                          f"(occurrence {incident.occurrences + 1})")  # fmt: skip


def _open(
    event: AlertEvent, msg: ParsedMessage, inbound: InboundMeta, facts: Facts,
    settings: Settings, now: datetime, sender: Address, priority: int, retire: int | None,
) -> AlertStep:  # fmt: skip
    a = settings.alerts
    clock = SlaPolicy.from_settings(settings).start(priority, now)
    source = SOURCE_NAMES.get(event.source, event.source)
    spec = TicketSpec(
        type=TicketType.INCIDENT,
        category=a.category,
        impact=2,
        urgency=2,
        priority=priority,
        tier=a.tier,
        security=False,
        subject=f"{event.label} is {event.state} ({source})"[:998],
        requester=sender,
        language=settings.helpdesk.default_language,
        address=inbound.recipient or settings.helpdesk.primary_address,
        first_response_due=clock.first_response_due,
        resolution_due=clock.resolution_due,
        status=TicketStatus.OPEN if inbound.notify else TicketStatus.NEW,
        sla=clock,
        origin=Origin.ALERT,
    )
    detail: dict[str, Any] = {"alert": alert_detail(event), "priority": f"P{priority}"}
    events = [EventSpec("created", sender.email, new=TicketStatus.NEW, detail=detail)]
    told: tuple[Notice, ...] = ()
    if inbound.notify:
        events.append(EventSpec("status", "maild", old=TicketStatus.NEW, new=TicketStatus.OPEN,
                                detail={"reason": "alert"}))  # fmt: skip
        audience = notices.new_ticket_audience(settings, priority=priority, tier=a.tier,
                                               security=False, directory=facts.directory)  # fmt: skip
        told = notices.to_groups("agent_alert", "agent_alert", audience, security=False,
                                 context={"event": "new", "alert": alert_context(event),
                                          "hierarchical": priority == 1,
                                          "recovery": settings.alerts.recovery})  # fmt: skip
        if priority == 1:
            events.append(EventSpec("escalated", "maild", detail={
                "kind": "hierarchical", "reason": "P1",
                "notified": [r.address.email for r, role in audience
                             if role == notices.ROLE_HIERARCHICAL]}))  # fmt: skip
    return AlertStep(
        action="open",
        event=event,
        priority=priority,
        new_ticket=spec,
        article=_article(msg, sender, ArticleKind.MESSAGE, Visibility.PUBLIC),
        events=tuple(events),
        notices=told,
        retire=retire,
        reason=f"new P{priority} incident" + (f" (after #{retire})" if retire else ""),
    )


def alert_detail(event: AlertEvent) -> dict[str, str]:
    out = {"source": event.source, "host": event.host, "service": event.service,
           "state": event.state, "kind": str(event.kind)}  # fmt: skip
    if event.problem_id:
        out["problem_id"] = event.problem_id
    return out


def alert_context(event: AlertEvent) -> dict[str, str]:
    """What the agents' mail shows of an alert."""
    return {"source": SOURCE_NAMES.get(event.source, event.source), "host": event.host,
            "service": event.service, "state": event.state, "summary": event.summary,
            "label": event.label}  # fmt: skip


def _article(
    msg: ParsedMessage, sender: Address, kind: ArticleKind, visibility: Visibility
) -> ArticleSpec:
    return ArticleSpec.of(msg, sender, kind, visibility)

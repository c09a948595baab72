"""The weekly report by mail to the duty managers (``[report]``).

A sweep like the others (`maild.desk.sweeps`): every run it asks whether this
week's report is due (``report.weekly_day`` at ``report.weekly_time`` in
``helpdesk.timezone``) and not queued yet (an outbox row of kind
``weekly_report`` since that moment), so a restart sends nothing twice and
several instances (one holds the sweep's lock) send it once. A daemon that was
down at that moment sends it when it comes back the same day; a later start
skips that week. One mail per language of its recipients (any language with
templates): a text part and an HTML part whose charts are table bars (mail
clients show them; inline SVG they strip). The figures are `maild.desk.report`
over the tickets created in the week before, and the backlog now; every word
of the mail, the charts' titles too, is in the templates
(``templates/<code>/weekly_report.*``), which get `template_context`.
"""

from __future__ import annotations

import logging
from datetime import datetime, time, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from maild.clock import Clock
from maild.config.settings import WEEKDAYS, SlaSettings
from maild.desk import report
from maild.desk.apply import Applier, insert_outbox
from maild.mail.compose import Outgoing, compose, new_message_id
from maild.mail.parse import Address
from maild.pipeline.tiers import Recipient, duty_manager, merge
from maild.store.models import Outbox
from maild.store.states import OutboxStatus

log = logging.getLogger(__name__)

KIND = "weekly_report"
LATE = timedelta(days=1)  # after this, a missed week's report is skipped


def due_at(now: datetime, day: str, at: str, timezone: str) -> datetime:
    """The latest scheduled moment at or before `now` (aware, UTC)."""
    tz = ZoneInfo(timezone)
    local = now.astimezone(tz)
    hour, minute = (int(x) for x in at.split(":"))
    start = datetime.combine(local.date(), time(hour, minute), tz)
    start -= timedelta(days=(local.weekday() - WEEKDAYS.index(day)) % 7)
    if start > local:
        start -= timedelta(days=7)
    return start.astimezone(now.tzinfo)


def recipients(applier: Applier) -> tuple[Recipient, ...]:
    settings = applier.settings
    if settings.report.recipients:
        lang = settings.tiers.language
        return merge(tuple(Recipient(Address(name="", email=e.lower()), lang, False)
                           for e in settings.report.recipients))  # fmt: skip
    return duty_manager(settings, applier.directory)


def sweep_weekly_report(sessions: sessionmaker[Session], applier: Applier, clock: Clock) -> int:
    """Queue this week's report if it is due and not queued yet; returns mails queued."""
    settings = applier.settings
    if not settings.report.weekly_day:
        return 0
    now = clock.now()
    due = due_at(now, settings.report.weekly_day, settings.report.weekly_time,
                 settings.helpdesk.timezone)  # fmt: skip
    if now - due > LATE:
        return 0
    who = recipients(applier)
    if not who:
        return 0
    with sessions.begin() as session:
        queued = session.scalar(
            select(Outbox.id).where(Outbox.kind == KIND, Outbox.created_at >= due).limit(1)
        )
        if queued is not None:
            return 0
        return queue_report(session, applier, now, due - timedelta(days=7), due, who)


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} h"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _chart(key: str, color: str, rows: list[tuple[str, float | None, str, str]]) -> Any:
    top = max((v for _, v, _, _ in rows if v), default=0) or 1
    bars = [SimpleNamespace(label=label, text=text, target=target,
                            width=max(1, round(80 * v / top)) if v else 0)
            for label, v, text, target in rows]  # fmt: skip
    return SimpleNamespace(key=key, color=color, bars=bars)


def charts(data: dict[str, Any]) -> list[Any]:
    """The HTML part's bar charts; each template titles a chart by its `key`
    (first_response, resolution, breaches, age)."""
    prio = data["by_priority"]
    return [
        _chart("first_response", report.COLORS["median"],
               [(g["key"], g["first_response"]["median_h"], _hours(g["first_response"]["median_h"]),
                 _hours(g["first_response"]["target_h"])) for g in prio]),
        _chart("resolution", report.COLORS["p90"],
               [(g["key"], g["resolution"]["median_h"], _hours(g["resolution"]["median_h"]),
                 _hours(g["resolution"]["target_h"])) for g in prio]),
        _chart("breaches", report.COLORS["fr"],
               [(g["key"], g["breaches"]["first_response"] + g["breaches"]["resolution"],
                 str(g["breaches"]["first_response"] + g["breaches"]["resolution"]), "")
                for g in prio]),
        _chart("age", report.COLORS["count"],
               [(k, v, str(v), "") for k, v in data["backlog"]["by_age"].items()]),
    ]  # fmt: skip


def service_hours(sla: SlaSettings, timezone: str, day: datetime) -> Any:
    """When the SLA clock runs, for the templates to say in their language: None
    around the clock; else `opens` and `closes` on `day` in the desk's zone (for
    ``|when("clock")``), the ISO weekdays `days` and whether `holidays` are off."""
    if not sla.business_hours:
        return None
    tz = ZoneInfo(timezone)
    local = day.astimezone(tz).date()
    opens, closes = (
        datetime.combine(local, time(0), tz) + timedelta(hours=int(hh), minutes=int(mm))
        for hh, mm in (part.split(":") for part in sla.business_hours.split("-"))
    )
    return SimpleNamespace(opens=opens, closes=closes, days=tuple(sorted(set(sla.business_days))),
                           holidays=bool(sla.holidays))  # fmt: skip


def template_context(
    helpdesk: Any, start: datetime, end: datetime, data: dict[str, Any], service: Any
) -> dict[str, Any]:
    """What ``weekly_report.*`` gets: the desk (`name`, `address`), the `period`,
    the `service` hours (`service_hours`), the `report` (`maild.desk.report.build`),
    its `charts`, and `hours`/`pct` to write a figure ("1.5 h", "80%", "-")."""
    return {
        "helpdesk": helpdesk,
        "period": SimpleNamespace(start=start, end=end),
        "service": service,
        "calendar": data["calendar"],
        "report": data,
        "charts": charts(data),
        "hours": _hours,
        "pct": _pct,
    }


def queue_report(
    session: Session,
    applier: Applier,
    now: datetime,
    start: datetime,
    end: datetime,
    who: tuple[Recipient, ...],
) -> int:
    """Render the report for tickets created from `start` to `end`; one mail per language."""
    settings = applier.settings
    data = report.build(session, settings, now, start)
    hd = settings.helpdesk
    desk = Address(name=hd.name, email=hd.primary_address)
    languages = applier.renderer.languages
    by_language: dict[str, list[Address]] = {}
    for r in who:
        by_language.setdefault(r.language if r.language in languages else "en", []).append(
            r.address
        )
    context = template_context(SimpleNamespace(name=hd.name, address=desk.email), start, end,
                               data, service_hours(settings.sla, hd.timezone, end))  # fmt: skip
    for language, addresses in sorted(by_language.items()):
        rendered = applier.renderer.render(KIND, language, context)
        message_id = new_message_id(hd.domain)
        raw = compose(Outgoing(sender=desk, to=tuple(addresses), subject=rendered.subject,
                               text=rendered.text, html=rendered.html, message_id=message_id,
                               date=now, auto_submitted="auto-generated", loop_domain=hd.domain,
                               language=language))  # fmt: skip
        insert_outbox(session, {
            "ticket_id": None, "article_id": None, "kind": KIND, "message_id": message_id,
            "mail_from": desk.email, "rcpt_to": [a.email for a in addresses], "raw": raw,
            "status": str(OutboxStatus.PENDING), "attempts": 0, "next_attempt_at": now,
            "created_at": now,
        })  # fmt: skip
        log.info("weekly report queued to %s as %s", ", ".join(a.email for a in addresses),
                 message_id)  # fmt: skip
    return len(by_language)

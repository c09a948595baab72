"""``maild report``: how the service desk keeps its promises.

First-response and resolution times (median and 90th percentile, in hours of
service time, waiting-for-the-requester excluded) against the targets, per
priority, tier, category and type; SLA breaches; the backlog by status and
age. `build` reads the database into a plain dict (the ``--json`` shape);
`render_text` and `render_html` present it. The HTML page is self-contained:
tables plus inline SVG charts, no script, no network.
"""

from __future__ import annotations

import html
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.config.settings import Settings
from maild.mail.dates import Part, format_when
from maild.pipeline.sla import SlaPolicy
from maild.store.models import Agent, Event, Ticket
from maild.store.states import FINISHED_STATUSES, TicketStatus

AGE_BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("< 1 day", timedelta(days=1)),
    ("1-3 days", timedelta(days=3)),
    ("3-7 days", timedelta(days=7)),
    ("> 7 days", None),
)
STATUS_ORDER = [s for s in TicketStatus if s not in FINISHED_STATUSES]
PROMISE_HOURS = 24.0  # "resolved within a day": what the per-week figures are held against
SCORES = ("1", "2", "3", "4", "5")


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile by linear interpolation between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _measure(
    values: list[float], within: int, measured: int, target: float | None
) -> dict[str, Any]:
    return {
        "measured": measured,
        "median_h": _round(statistics.median(values)) if values else None,
        "p90_h": _round(percentile(values, 90)),
        "target_h": target,
        "within_target": within,
        "within_target_pct": _round(100 * within / measured) if measured else None,
    }


def build(
    session: Session, settings: Settings, now: datetime, since: datetime | None = None
) -> dict[str, Any]:
    policy = SlaPolicy.from_settings(settings)
    cal = policy.calendar
    stmt = select(Ticket)
    if since is not None:
        stmt = stmt.where(Ticket.created_at >= since)
    tickets = list(session.scalars(stmt.order_by(Ticket.id)))
    ids = [t.id for t in tickets]
    breaches: dict[int, set[str]] = defaultdict(set)
    for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
        for tid, target in session.execute(
            select(Event.ticket_id, Event.new).where(Event.kind == "sla_breach",
                                                     Event.ticket_id.in_(chunk))
        ):  # fmt: skip
            breaches[tid].add(target or "")

    agents: dict[int, str] = {i: e for i, e in session.execute(select(Agent.id, Agent.email))}
    rows = []
    for t in tickets:
        fr = res = None
        if t.first_response_at is not None:
            fr = _hours(cal.between(t.created_at, t.first_response_at))
        if t.resolved_at is not None:
            res = max(0.0, _hours(cal.between(t.created_at, t.resolved_at))
                      - (t.sla_paused_seconds or 0) / 3600)  # fmt: skip
        rows.append({
            "priority": f"P{t.priority}", "tier": f"tier {t.tier}", "category": t.category,
            "type": t.type, "fr": fr, "res": res,
            "agent": agents.get(t.assignee_id, "unassigned") if t.assignee_id else "unassigned",
            "fr_met": fr is not None and t.first_response_due is not None
                      and t.first_response_at <= t.first_response_due,
            "res_met": res is not None and t.resolution_due is not None
                       and t.resolved_at <= t.resolution_due,
            "breaches": breaches.get(t.id, set()),
        })  # fmt: skip

    def group(key: str, order: Iterable[str] | None = None) -> list[dict[str, Any]]:
        buckets: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            buckets[r[key]].append(r)
        keys = [k for k in (order or sorted(buckets)) if k in buckets]
        out = []
        for k in keys:
            rs = buckets[k]
            fr_target = res_target = None
            if key == "priority":
                p = int(k[1:])
                fr_target = _hours(policy.first_response_target(p))
                res_target = _hours(policy.resolution_target(p))
            fr_values = [r["fr"] for r in rs if r["fr"] is not None]
            res_values = [r["res"] for r in rs if r["res"] is not None]
            out.append({
                "key": k,
                "tickets": len(rs),
                "first_response": _measure(fr_values, sum(r["fr_met"] for r in rs),
                                           len(fr_values), fr_target),
                "resolution": _measure(res_values, sum(r["res_met"] for r in rs),
                                       len(res_values), res_target),
                "breaches": {
                    "first_response": sum("first_response" in r["breaches"] for r in rs),
                    "resolution": sum("resolution" in r["breaches"] for r in rs),
                },
            })  # fmt: skip
        return out

    closure = _closure(session, tickets, rows)
    backlog_rows = list(session.execute(
        select(Ticket.status, Ticket.created_at).where(Ticket.status.not_in(FINISHED_STATUSES))
    ))  # fmt: skip
    by_status = {str(s): 0 for s in STATUS_ORDER}
    by_age = {label: 0 for label, _ in AGE_BUCKETS}
    for status, created in backlog_rows:
        by_status[status] = by_status.get(status, 0) + 1
        age = now - created
        for label, limit in AGE_BUCKETS:
            if limit is None or age < limit:
                by_age[label] += 1
                break
    return {
        "generated_at": now.isoformat(),
        "since": since.isoformat() if since else None,
        "timezone": settings.helpdesk.timezone,  # the text and HTML forms show times in it
        "calendar": (
            "24/7"
            if cal.always_open
            else f"{settings.sla.business_hours} {settings.helpdesk.timezone}"
        ),  # fmt: skip
        "tickets": len(rows),
        "by_priority": group("priority", [f"P{p}" for p in range(1, 5)]),
        "by_tier": group("tier", [f"tier {n}" for n in range(1, 4)]),
        "by_category": group("category"),
        "by_type": group("type", ["incident", "request"]),
        "by_agent": group("agent"),
        "breaches": {
            "first_response": sum("first_response" in r["breaches"] for r in rows),
            "resolution": sum("resolution" in r["breaches"] for r in rows),
        },
        "backlog": {"total": len(backlog_rows), "by_status": by_status, "by_age": by_age},
        **closure,
    }


def _week(when: datetime) -> str:
    year, week, _day = when.isocalendar()
    return f"{year}-W{week:02d}"


def _satisfaction(scores: list[int]) -> dict[str, Any]:
    return {
        "count": len(scores),
        "average": _round(statistics.fmean(scores)) if scores else None,
        "distribution": {k: sum(1 for x in scores if str(x) == k) for k in SCORES},
    }


def _resolving(hours: list[float]) -> dict[str, Any]:
    within = sum(1 for h in hours if h <= PROMISE_HOURS)
    return {
        "measured": len(hours),
        "mean_h": _round(statistics.fmean(hours)) if hours else None,
        "median_h": _round(statistics.median(hours)) if hours else None,
        "target_h": PROMISE_HOURS,
        "within_target": within,
        "within_target_pct": _round(100 * within / len(hours)) if hours else None,
    }


def _closure(session: Session, tickets: list[Ticket], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Satisfaction, reopen rate and time to resolve against the promise, overall and per week.

    A ticket counts in the week it was first resolved (reopen rate) and last
    resolved (time to resolve); a rating in the week it was given.
    """
    ids = [t.id for t in tickets]
    first_resolved: dict[int, datetime] = {}
    reopened: set[int] = set()
    finished = [str(s) for s in FINISHED_STATUSES]
    for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
        for tid, at, old, new in session.execute(
            select(Event.ticket_id, Event.at, Event.old, Event.new)
            .where(Event.kind == "status", Event.ticket_id.in_(chunk))
            .order_by(Event.id)
        ):
            if new in finished and tid not in first_resolved:
                first_resolved[tid] = at
            if old in finished and new not in finished:
                reopened.add(tid)
    weeks: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"hours": [], "resolved": 0, "reopened": 0, "scores": []}
    )
    hours: list[float] = []
    for t, r in zip(tickets, rows, strict=True):
        if r["res"] is not None and t.resolved_at is not None:
            hours.append(r["res"])
            weeks[_week(t.resolved_at)]["hours"].append(r["res"])
        if t.id in first_resolved:
            week = weeks[_week(first_resolved[t.id])]
            week["resolved"] += 1
            week["reopened"] += t.id in reopened
        if t.satisfaction_score is not None and t.satisfaction_at is not None:
            weeks[_week(t.satisfaction_at)]["scores"].append(t.satisfaction_score)
    scores = [t.satisfaction_score for t in tickets if t.satisfaction_score is not None]
    resolved = len(first_resolved)
    per_week = []
    for key in sorted(weeks):
        w = weeks[key]
        per_week.append({
            "week": key,
            "resolved": w["resolved"],
            "reopened": w["reopened"],
            "reopen_rate_pct": _round(100 * w["reopened"] / w["resolved"]) if w["resolved"] else None,
            "time_to_resolve": _resolving(w["hours"]),
            "satisfaction": _satisfaction(w["scores"]),
        })  # fmt: skip
    return {
        "satisfaction": _satisfaction(scores),
        "reopen": {
            "resolved": resolved,
            "reopened": len(reopened & set(first_resolved)),
            "rate_pct": _round(100 * len(reopened & set(first_resolved)) / resolved)
            if resolved
            else None,
        },  # fmt: skip
        "time_to_resolve": _resolving(hours),
        "weeks": per_week,
    }


# --- text -------------------------------------------------------------------------------


def _h(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} h"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _when(report: dict[str, Any], key: str, part: Part = "datetime") -> str:
    """A time of the report in the desk's zone, written as mail writes it."""
    when = datetime.fromisoformat(report[key])
    return format_when(when, report.get("timezone", "UTC"), "en", part)


def render_text(report: dict[str, Any]) -> str:
    lines = [f"maild report, {_when(report, 'generated_at')}"
             + (f", tickets created since {_when(report, 'since', 'date')}" if report["since"]
                else ""),
             f"service calendar: {report['calendar']}; tickets: {report['tickets']}; "
             f"SLA breaches: {report['breaches']['first_response']} first response, "
             f"{report['breaches']['resolution']} resolution", ""]  # fmt: skip
    head = (f"{'':<12} {'tickets':>7}  {'1st resp median':>15} {'p90':>8} {'target':>8} {'met':>5}"
            f"  {'resolution med':>14} {'p90':>8} {'target':>8} {'met':>5}  {'breaches':>8}")  # fmt: skip
    for title, key in (("By priority", "by_priority"), ("By tier", "by_tier"),
                       ("By category", "by_category"), ("By type", "by_type")):  # fmt: skip
        lines += [title, head]
        for g in report[key]:
            fr, res, br = g["first_response"], g["resolution"], g["breaches"]
            lines.append(
                f"{g['key']:<12} {g['tickets']:>7}  {_h(fr['median_h']):>15} {_h(fr['p90_h']):>8} "
                f"{_h(fr['target_h']):>8} {_pct(fr['within_target_pct']):>5}  "
                f"{_h(res['median_h']):>14} {_h(res['p90_h']):>8} {_h(res['target_h']):>8} "
                f"{_pct(res['within_target_pct']):>5}  "
                f"{br['first_response'] + br['resolution']:>8}"
            )
        lines.append("")
    sat, reo, ttr = report["satisfaction"], report["reopen"], report["time_to_resolve"]
    avg = "-" if sat["average"] is None else f"{sat['average']:.1f}"
    dist = ", ".join(f"{k}: {v}" for k, v in sat["distribution"].items())
    lines.append(f"Satisfaction: {sat['count']} rating(s), average {avg} of 5 ({dist})")
    lines.append(f"Reopen rate: {reo['reopened']} of {reo['resolved']} resolved ticket(s) reopened "
                 f"({_pct(reo['rate_pct'])})")  # fmt: skip
    lines.append(f"Time to resolve: mean {_h(ttr['mean_h'])}, median {_h(ttr['median_h'])} "
                 f"against the {ttr['target_h']:g} h promise ({_pct(ttr['within_target_pct'])} "
                 "within)")  # fmt: skip
    lines.append("")
    lines.append("Per week")
    lines.append(f"{'week':<10} {'resolved':>8} {'mean':>8} {'median':>8} {'<=24 h':>7} "
                 f"{'reopened':>8} {'rating':>10}")  # fmt: skip
    for w in report["weeks"]:
        t, r = w["time_to_resolve"], w["satisfaction"]
        rating = "-" if r["average"] is None else f"{r['average']:.1f} ({r['count']})"
        lines.append(f"{w['week']:<10} {w['resolved']:>8} {_h(t['mean_h']):>8} "
                     f"{_h(t['median_h']):>8} {_pct(t['within_target_pct']):>7} "
                     f"{_pct(w['reopen_rate_pct']):>8} {rating:>10}")  # fmt: skip
    lines.append("")
    b = report["backlog"]
    lines.append(f"Backlog: {b['total']} open ticket(s)")
    lines.append("  by status: " + ", ".join(f"{k} {v}" for k, v in b["by_status"].items()))
    lines.append("  by age:    " + ", ".join(f"{k} {v}" for k, v in b["by_age"].items()))
    return "\n".join(lines) + "\n"


# --- HTML with inline SVG -------------------------------------------------------------------

COLORS = {"median": "#4e79a7", "p90": "#f28e2b", "target": "#e15759", "count": "#59a14f",
          "fr": "#e15759", "res": "#b07aa1"}  # fmt: skip


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float | None]]],  # (name, color, values)
    *,
    unit: str = "",
    targets: Sequence[float | None] | None = None,
    width: int = 640,
    height: int = 260,
) -> str:
    """A grouped bar chart as inline SVG; every bar carries its value as text."""
    left, right, top, bottom = 48, 12, 34, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, _, vs in series for v in vs if v is not None]
    values += [t for t in (targets or []) if t is not None]
    top_value = max(values, default=0) or 1.0
    scale = plot_h / (top_value * 1.1)
    group_w = plot_w / max(len(labels), 1)
    bar_w = max(4.0, (group_w * 0.8) / max(len(series), 1))
    fmt = (lambda v: f"{v:.1f}{unit}") if unit else (lambda v: f"{v:g}")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}" '
        f'class="chart" data-title="{_esc(title)}">',
        f'<text x="{left}" y="18" font-size="14" font-weight="bold">{_esc(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#333"/>',
    ]
    for i, label in enumerate(labels):
        gx = left + i * group_w + group_w * 0.1
        for j, (name, color, vs) in enumerate(series):
            v = vs[i]
            if v is None:
                continue
            h = v * scale
            x, y = gx + j * bar_w, top + plot_h - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                f'fill="{color}" data-series="{_esc(name)}" data-label="{_esc(label)}" '
                f'data-value="{v:g}"><title>{_esc(label)} {_esc(name)}: {fmt(v)}</title></rect>'
            )
            parts.append(
                f'<text x="{x + (bar_w - 2) / 2:.1f}" y="{y - 3:.1f}" font-size="10" '
                f'text-anchor="middle">{fmt(v)}</text>'
            )
        if targets and targets[i] is not None:
            ty = top + plot_h - targets[i] * scale  # type: ignore[operator]
            parts.append(
                f'<line x1="{gx - 2:.1f}" y1="{ty:.1f}" x2="{gx + group_w * 0.8 + 2:.1f}" '
                f'y2="{ty:.1f}" stroke="{COLORS["target"]}" stroke-width="2" '
                f'stroke-dasharray="5,3" data-target="{targets[i]:g}" data-label="{_esc(label)}">'
                f"<title>{_esc(label)} target: {fmt(targets[i])}</title></line>"  # type: ignore[arg-type]
            )
        parts.append(
            f'<text x="{gx + group_w * 0.4:.1f}" y="{top + plot_h + 16}" font-size="11" '
            f'text-anchor="middle">{_esc(label)}</text>'
        )
    legend_x = left
    for name, color, _ in series:
        parts.append(f'<rect x="{legend_x}" y="{height - 14}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{legend_x + 14}" y="{height - 5}" font-size="11">{_esc(name)}</text>')  # fmt: skip
        legend_x += 24 + 7 * len(name)
    if targets:
        parts.append(f'<line x1="{legend_x}" y1="{height - 9}" x2="{legend_x + 14}" y2="{height - 9}" '
                     f'stroke="{COLORS["target"]}" stroke-width="2" stroke-dasharray="5,3"/>'
                     f'<text x="{legend_x + 18}" y="{height - 5}" font-size="11">target</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _table(title: str, groups: list[dict[str, Any]], key_name: str) -> str:
    head = (f"<tr><th>{_esc(key_name)}</th><th>tickets</th><th>first response median</th><th>p90</th>"
            "<th>target</th><th>within target</th><th>resolution median</th><th>p90</th>"
            "<th>target</th><th>within target</th><th>breaches (first response)</th>"
            "<th>breaches (resolution)</th></tr>")  # fmt: skip
    rows = []
    for g in groups:
        fr, res, br = g["first_response"], g["resolution"], g["breaches"]
        cells = [g["key"], g["tickets"], _h(fr["median_h"]), _h(fr["p90_h"]), _h(fr["target_h"]),
                 _pct(fr["within_target_pct"]), _h(res["median_h"]), _h(res["p90_h"]),
                 _h(res["target_h"]), _pct(res["within_target_pct"]), br["first_response"],
                 br["resolution"]]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
    return (f'<h2>{_esc(title)}</h2><table class="figures" data-group="{_esc(key_name)}">'
            f"{head}{''.join(rows)}</table>")  # fmt: skip


def _time_charts(title: str, groups: list[dict[str, Any]], measure: str) -> str:
    labels = [g["key"] for g in groups]
    return bar_chart(
        title,
        labels,
        [("median", COLORS["median"], [g[measure]["median_h"] for g in groups]),
         ("p90", COLORS["p90"], [g[measure]["p90_h"] for g in groups])],
        unit=" h",
        targets=[g[measure]["target_h"] for g in groups],
    )  # fmt: skip


def _closure_html(report: dict[str, Any]) -> str:
    sat, reo, ttr = report["satisfaction"], report["reopen"], report["time_to_resolve"]
    avg = "-" if sat["average"] is None else f"{sat['average']:.1f}"
    head = ("<tr><th>week</th><th>resolved</th><th>mean time to resolve</th><th>median</th>"
            f"<th>within {PROMISE_HOURS:g} h</th><th>reopen rate</th><th>satisfaction</th>"
            "<th>ratings</th></tr>")  # fmt: skip
    rows = []
    for w in report["weeks"]:
        t, r = w["time_to_resolve"], w["satisfaction"]
        cells = [w["week"], w["resolved"], _h(t["mean_h"]), _h(t["median_h"]),
                 _pct(t["within_target_pct"]), _pct(w["reopen_rate_pct"]),
                 "-" if r["average"] is None else f"{r['average']:.1f}", r["count"]]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
    return (
        f'<p class="closure">Satisfaction: <strong id="satisfaction-average">{avg}</strong> of 5 '
        f'from <strong id="satisfaction-count">{sat["count"]}</strong> rating(s); reopen rate '
        f'<strong id="reopen-rate">{_pct(reo["rate_pct"])}</strong> ({reo["reopened"]} of '
        f'{reo["resolved"]}); time to resolve: mean <strong id="resolve-mean">'
        f'{_h(ttr["mean_h"])}</strong>, median <strong id="resolve-median">{_h(ttr["median_h"])}'
        f"</strong> against the {ttr['target_h']:g} h promise.</p>"
        f'<h2>Per week</h2><table class="figures" data-group="week">{head}{"".join(rows)}</table>'
    )


def render_html(report: dict[str, Any]) -> str:
    charts = [
        _time_charts("First response by priority (hours)", report["by_priority"], "first_response"),
        _time_charts("Resolution by priority (hours)", report["by_priority"], "resolution"),
        bar_chart("SLA breaches by priority", [g["key"] for g in report["by_priority"]],
                  [("first response", COLORS["fr"],
                    [g["breaches"]["first_response"] for g in report["by_priority"]]),
                   ("resolution", COLORS["res"],
                    [g["breaches"]["resolution"] for g in report["by_priority"]])]),
        _time_charts("Resolution by category (hours)", report["by_category"], "resolution"),
        bar_chart("Backlog by status", list(report["backlog"]["by_status"]),
                  [("tickets", COLORS["count"], list(report["backlog"]["by_status"].values()))]),
        bar_chart("Backlog by age", list(report["backlog"]["by_age"]),
                  [("tickets", COLORS["count"], list(report["backlog"]["by_age"].values()))]),
    ]  # fmt: skip
    weeks = report["weeks"]
    charts += [
        bar_chart("Time to resolve per week (hours)", [w["week"] for w in weeks],
                  [("mean", COLORS["median"], [w["time_to_resolve"]["mean_h"] for w in weeks]),
                   ("median", COLORS["p90"], [w["time_to_resolve"]["median_h"] for w in weeks])],
                  unit=" h", targets=[PROMISE_HOURS] * len(weeks)),
        bar_chart("Satisfaction (ratings 1-5)", list(SCORES),
                  [("ratings", COLORS["count"],
                    list(report["satisfaction"]["distribution"].values()))]),
    ]  # fmt: skip
    since = (f", tickets created since {_esc(_when(report, 'since', 'date'))}" if report["since"]
             else "")  # fmt: skip
    body = [
        f"<h1>Service desk report</h1><p>Generated {_esc(_when(report, 'generated_at'))}{since}. "
        f"Service calendar: {_esc(report['calendar'])}. Times are hours of service time, "
        "waiting for the requester excluded.</p>",
        f'<p class="summary">Tickets: <strong id="tickets">{report["tickets"]}</strong>; '
        f'SLA breaches: <strong id="breaches-first-response">'
        f"{report['breaches']['first_response']}</strong> first response, "
        f'<strong id="breaches-resolution">{report["breaches"]["resolution"]}</strong> resolution; '
        f'backlog: <strong id="backlog">{report["backlog"]["total"]}</strong> open.</p>',
        _closure_html(report),
        '<div class="charts">' + "".join(f"<figure>{c}</figure>" for c in charts) + "</div>",
        _table("By priority", report["by_priority"], "priority"),
        _table("By tier", report["by_tier"], "tier"),
        _table("By category", report["by_category"], "category"),
        _table("By type", report["by_type"], "type"),
    ]
    style = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
             "margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
             "td:first-child,th:first-child{text-align:left}figure{display:inline-block;margin:.5em}")  # fmt: skip
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>maild report</title><style>{style}</style></head><body>"
            + "".join(body) + "</body></html>\n")  # fmt: skip

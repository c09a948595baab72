"""``maild report``: the figures, as JSON and as an HTML page with inline SVG charts."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

from maild.cli import main as cli
from maild.desk import report
from maild.mail.parse import Address
from tests.support.desk import Desk, make_message, make_settings

AGENT = Address("Tina", "tina@example.com")


def _config(tmp_path: Path, db_url: str) -> Path:
    cfg = tmp_path / "maild.toml"
    cfg.write_text(
        f'[database]\nurl = "{db_url}"\n'
        f'[helpdesk]\nsecret_file = "{tmp_path / "secret.key"}"\n'
        f'[outgoing]\nmaildir = "{tmp_path / "outgoing"}"\n'
    )
    return cfg


def _history(desk: Desk) -> None:
    """Five tickets with known times (see the expected figures in the test)."""
    t0 = desk.clock.now()
    p1 = desk.process(make_message(subject="URGENT: production database down",
                                   body="Nobody in the company can enter orders.",
                                   message_id="<a@example.org>"))  # fmt: skip
    p3a = desk.process(make_message(message_id="<b@example.org>"))  # printer, P3
    p3b = desk.process(make_message(message_id="<c@example.org>", sender="carol@example.org"))
    p4 = desk.process(make_message(subject="Second monitor", message_id="<d@example.org>",
                                   body="Could I get a second monitor? Not urgent."))  # fmt: skip
    desk.process(make_message(subject="VPN ei yhdistä", body="En saa VPN-yhteyttä.",
                              message_id="<e@example.org>"))  # P3, stays open  # fmt: skip

    def at(hours: float) -> None:
        desk.clock.set(t0 + timedelta(hours=hours))
        desk.sweep()

    at(0.5)  # P1 answered in 30 min
    with desk.ops() as ops:
        ops.reply(p1.ticket_id, agent=AGENT, text="On it.")
    at(1.5)  # first P3 answered in 1.5 h
    with desk.ops() as ops:
        ops.reply(p3a.ticket_id, agent=AGENT, text="Which printer?", status="pending_user")
    at(3)  # P1 resolved after 3 h
    with desk.ops() as ops:
        ops.resolve(p1.ticket_id, actor=AGENT.email, note="Restarted.")
    at(4)  # P4 answered in 4 h: first-response breach (3 h), escalated by the sweep before
    with desk.ops() as ops:
        ops.reply(p4.ticket_id, agent=AGENT, text="Ordered.")
    at(5.5)  # the requester of the first P3 answers after 4 h of waiting (to our question:
    # a reply that refers to maild's mail to him is verified as his, issue 14)
    question = next(m for m in reversed(desk.outgoing()) if "Which printer?" in str(m))
    desk.process(make_message(message_id="<b2@example.org>", in_reply_to=question["Message-ID"],
                              references=f"<b@example.org> {question['Message-ID']}",
                              subject="Re: Printer"))  # fmt: skip
    at(6)  # second P3: first response after 6 h (breached at 2 h), resolved at 6 h
    with desk.ops() as ops:
        ops.reply(p3b.ticket_id, agent=AGENT, text="Fixed the tray.")
        ops.resolve(p3b.ticket_id, actor=AGENT.email, note="Fixed.")
    at(10)  # first P3 resolved: 10 h wall clock, 4 h of it waiting -> 6 h
    with desk.ops() as ops:
        ops.resolve(p3a.ticket_id, actor=AGENT.email, note="Replaced the toner.")
    at(30)  # the open VPN ticket breaches resolution (24 h) as well


class Page(HTMLParser):
    """Collects table rows, id'd figures and SVG bar values of the report page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.ids: dict[str, str] = {}
        self.bars: list[dict[str, str]] = []
        self.targets: list[dict[str, str]] = []
        self.charts: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._id: str | None = None
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a:
                self.external.append(a[key])
        if tag == "table":
            self._table = a.get("data-group")
            self.tables[self._table] = []
        elif tag == "tr":
            self._row = []
        elif tag == "td":
            self._cell = []
        elif tag == "svg":
            self.charts.append(a["data-title"])
        elif tag == "rect" and "data-value" in a:
            self.bars.append({"chart": self.charts[-1], **a})
        elif tag == "line" and "data-target" in a:
            self.targets.append({"chart": self.charts[-1], **a})
        if "id" in a:
            self._id = a["id"]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._id is not None:
            self.ids[self._id] = data
            self._id = None

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row and self._table:
            self.tables[self._table].append(self._row)
            self._row = None


def test_report_html_shows_the_figures(db_url, tmp_path, capsys):
    desk = Desk(make_settings(tmp_path, db_url))
    try:
        _history(desk)
        with desk.sessions() as session:  # the age of the backlog, at the desk's clock
            at_30h = report.build(session, desk.settings, desk.clock.now())
    finally:
        desk.close()
    assert at_30h["backlog"]["by_age"] == {"< 1 day": 0, "1-3 days": 2, "3-7 days": 0,
                                           "> 7 days": 0}  # fmt: skip
    assert at_30h["backlog"]["by_status"]["escalated"] == 1  # the VPN ticket, breached twice
    cfg = _config(tmp_path, db_url)

    assert cli.main(["--config", str(cfg), "report", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_p = {g["key"]: g for g in data["by_priority"]}
    assert data["tickets"] == 5
    assert by_p["P1"]["first_response"] == {"measured": 1, "median_h": 0.5, "p90_h": 0.5,
                                            "target_h": 1.0, "within_target": 1,
                                            "within_target_pct": 100.0}  # fmt: skip
    assert by_p["P3"]["first_response"]["median_h"] == 3.75  # 1.5 h and 6 h
    assert by_p["P3"]["first_response"]["p90_h"] == 5.55
    assert by_p["P3"]["resolution"]["median_h"] == 6.0  # both 6 h (one with 4 h waiting)
    assert by_p["P3"]["breaches"] == {"first_response": 2, "resolution": 1}
    assert by_p["P4"]["breaches"] == {"first_response": 1, "resolution": 0}
    assert data["breaches"] == {"first_response": 3, "resolution": 1}
    assert data["backlog"]["total"] == 2 and sum(data["backlog"]["by_age"].values()) == 2

    out = tmp_path / "report.html"
    assert cli.main(["--config", str(cfg), "report", "--html", str(out)]) == 0
    assert capsys.readouterr().out == f"report written to {out}\n"
    page = Page()
    page.feed(out.read_text())
    assert page.external == []  # self-contained: no links, no scripts, no network
    assert page.ids == {"tickets": "5", "breaches-first-response": "3",
                        "breaches-resolution": "1", "backlog": "2",
                        # closure with the requester (issue 16): no ratings yet, 3 resolved
                        "satisfaction-average": "-", "satisfaction-count": "0",
                        "reopen-rate": "0%", "resolve-mean": page.ids["resolve-mean"],
                        "resolve-median": page.ids["resolve-median"]}  # fmt: skip
    assert "week" in page.tables  # the per-week table
    rows = {r[0]: r for r in page.tables["priority"]}
    assert rows["P1"][1:6] == ["1", "0.5 h", "0.5 h", "1.0 h", "100%"]
    assert rows["P3"][1:6] == ["3", "3.8 h", "5.5 h", "2.0 h", "50%"]
    assert rows["P3"][6:12] == ["6.0 h", "6.0 h", "24.0 h", "100%", "2", "1"]
    assert {r[0] for r in page.tables["category"]} >= {"software", "hardware", "network"}
    # The charts carry the same figures.
    assert "First response by priority (hours)" in page.charts
    fr = {(b["data-label"], b["data-series"]): float(b["data-value"]) for b in page.bars
          if b["chart"] == "First response by priority (hours)"}  # fmt: skip
    assert (
        fr[("P1", "median")] == 0.5 and fr[("P3", "median")] == 3.75 and fr[("P3", "p90")] == 5.55
    )
    targets = {t["data-label"]: float(t["data-target"]) for t in page.targets
               if t["chart"] == "First response by priority (hours)"}  # fmt: skip
    assert targets == {"P1": 1.0, "P3": 2.0, "P4": 3.0}
    breaches = {(b["data-label"], b["data-series"]): float(b["data-value"]) for b in page.bars
                if b["chart"] == "SLA breaches by priority"}  # fmt: skip
    assert breaches[("P3", "first response")] == 2 and breaches[("P4", "first response")] == 1
    backlog = {b["data-label"]: float(b["data-value"]) for b in page.bars
               if b["chart"] == "Backlog by status"}  # fmt: skip
    assert sum(backlog.values()) == 2

    # --since leaves out older tickets.
    assert cli.main(["--config", str(cfg), "report", "--json", "--since", "2026-12-01"]) == 0
    assert json.loads(capsys.readouterr().out)["tickets"] == 0
    assert cli.main(["--config", str(cfg), "report"]) == 0
    assert "P3" in capsys.readouterr().out
    # Times as the mail writes them, in the desk's zone, not ISO.
    assert cli.main(["--config", str(cfg), "report", "--since", "2026-12-01"]) == 0
    first = capsys.readouterr().out.split("\n")[0]
    assert first.startswith("maild report, ") and "tickets created since 1 December 2026" in first
    assert not re.search(r"\d{4}-\d\d-\d\d", first)


def test_ticket_commands_from_the_cli(sqlite_url, tmp_path, capsys):
    desk = Desk(make_settings(tmp_path, sqlite_url))
    try:
        n = desk.process(make_message()).ticket_id
    finally:
        desk.close()
    cfg = str(_config(tmp_path, sqlite_url))
    run = lambda *args: cli.main(["--config", cfg, *args])  # noqa: E731
    assert run("ticket", "priority", str(n), "P2", "--as", "tina@example.com") == 0
    assert run("ticket", "escalate", str(n), "--reason", "needs a network specialist") == 0
    assert run("ticket", "escalate", str(n), "--tier", "2") == 65  # already there
    assert run("ticket", "reply", str(n), "Is it fixed now?", "--status", "pending_user",
               "--as", "tina@example.com") == 0  # fmt: skip
    assert run("ticket", "resolve", str(n), "--note", "Works again.") == 0
    assert run("ticket", "resolve", "999") == 66
    out = capsys.readouterr()
    assert "already at tier 2" in out.err and "no ticket #999" in out.err
    assert f"ticket #{n}: priority; 0 mail(s) queued" in out.out
    assert run("ticket", "show", str(n), "--json") == 0
    t = json.loads(capsys.readouterr().out)
    assert (t["priority"], t["tier"], t["status"]) == ("P2", 2, "resolved")
    assert t["first_response_at"] is not None
    assert [e["kind"] for e in t["events"] if e["kind"] in ("priority", "escalated", "first_response")] \
        == ["priority", "escalated", "first_response"]  # fmt: skip
    assert run("sweep") == 0
    assert "sweeps: sla" in capsys.readouterr().out

"""The weekly report by mail to the duty managers (issue 17): HTML with charts
and a text part, in each recipient's language, once a week, never twice."""

from __future__ import annotations

from datetime import UTC, datetime

from maild.desk.weekly import due_at
from tests.support.desk import Desk, make_message, make_settings

AGENTS = [{"email": "ilkka@example.com", "name": "Ilkka Esimies", "groups": ["duty_manager"],
           "language": "fi"}]  # fmt: skip


def reports(desk: Desk) -> list:
    return [
        m
        for m in desk.outgoing()
        if "weekly report" in str(m["Subject"]) or "viikkoraportti" in str(m["Subject"])
    ]


def test_the_duty_managers_get_it_once_a_week_in_their_language(tmp_path, db_url):
    # The frozen clock starts on Monday 30 November 2026, 09:00 UTC: two hours after
    # this week's report was due.
    desk = Desk(make_settings(tmp_path, db_url, agents=AGENTS, report={"weekly_day": "monday"},
                              tiers={"duty_manager": ["dm@example.com"]}))  # fmt: skip
    try:
        assert reports(desk) == []
        desk.process(make_message(subject="Printer broken", message_id="<a@x>"))
        desk.process(make_message(sender="carol@example.org", subject="Please install Zoom",
                                  message_id="<b@x>"))  # fmt: skip
        desk.sweep()
        mails = reports(desk)
        assert sorted(str(m["To"]) for m in mails) == [
            "Help Desk duty manager <dm@example.com>", "Ilkka Esimies <ilkka@example.com>"]  # fmt: skip
        en = next(m for m in mails if "dm@" in str(m["To"]))
        fi = next(m for m in mails if "ilkka@" in str(m["To"]))
        assert "weekly report" in str(en["Subject"]) and "viikkoraportti" in str(fi["Subject"])
        for m in mails:
            assert m.get_content_type() == "multipart/alternative"
            text = m.get_body(preferencelist=("plain",)).get_content()
            html = m.get_body(preferencelist=("html",)).get_content()
            assert "bgcolor=" in html and "<svg" not in html  # table bars, for mail clients
            assert "P3" in text and "P3" in html
        en_text = en.get_body(preferencelist=("plain",)).get_content()
        assert "New tickets:          2" in en_text and "Open tickets now:     2" in en_text
        fi_text = fi.get_body(preferencelist=("plain",)).get_content()
        assert "Uusia tukipyyntöjä:   2" in fi_text
        assert "Ensivastaus, mediaani" in fi.get_body(preferencelist=("html",)).get_content()
        # Never twice for the same week, whoever runs the sweeps.
        desk.sweep()
        desk.clock.advance(days=3)
        desk.sweep()
        assert len(reports(desk)) == 2
        # Next Monday at 07:00 it is due again.
        desk.clock.advance(days=3, hours=22, minutes=5)
        desk.sweep()
        assert len(reports(desk)) == 4
    finally:
        desk.close()


def test_no_day_no_report_and_a_missed_week_is_skipped(tmp_path, sqlite_url):
    off = Desk(make_settings(tmp_path / "a", sqlite_url, report={"weekly_day": ""},
                             tiers={"duty_manager": ["dm@example.com"]}))  # fmt: skip
    try:
        off.sweep()
        assert reports(off) == []
    finally:
        off.close()
    late = Desk(make_settings(tmp_path / "b", sqlite_url, report={"weekly_day": "saturday"},
                              tiers={"duty_manager": ["dm@example.com"]}))  # fmt: skip
    try:
        late.sweep()  # Saturday 07:00 was two days ago: that week is skipped
        assert reports(late) == []
    finally:
        late.close()


def test_due_at_follows_the_local_week():
    helsinki = "Europe/Helsinki"
    # Monday 05:30 UTC is 07:30 in Helsinki: this Monday's 07:00 is due.
    now = datetime(2026, 11, 30, 5, 30, tzinfo=UTC)
    assert due_at(now, "monday", "07:00", helsinki) == datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
    # 04:30 UTC is 06:30 there: still last week's.
    now = datetime(2026, 11, 30, 4, 30, tzinfo=UTC)
    assert due_at(now, "monday", "07:00", helsinki) == datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
    assert due_at(now, "friday", "16:00", "UTC") == datetime(2026, 11, 27, 16, 0, tzinfo=UTC)

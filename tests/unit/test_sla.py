"""The SLA engine: service calendars, deadlines, pauses and re-targeting (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from maild.config.settings import settings_from_mapping
from maild.pipeline.sla import Calendar, SlaPolicy

HEL = ZoneInfo("Europe/Helsinki")
H = timedelta(hours=1)


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=HEL)


def policy(**sla) -> SlaPolicy:
    settings = settings_from_mapping({"sla": sla, "helpdesk": {"timezone": "Europe/Helsinki"}})
    return SlaPolicy.from_settings(settings)


OFFICE = policy(business_hours="08:00-16:00", holidays=["2026-12-24", "2026-12-25"])


def test_default_targets_and_24_7_calendar():
    p = policy()
    start = datetime(2026, 12, 5, 23, 30, tzinfo=UTC)  # a Saturday night
    clock = p.start(1, start)
    assert clock.first_response_due == start + 1 * H
    assert clock.resolution_due == start + 4 * H
    assert [p.first_response_target(n) / H for n in (1, 2, 3, 4)] == [1, 1, 2, 3]
    assert [p.resolution_target(n) / H for n in (1, 2, 3, 4)] == [4, 8, 24, 72]
    # The warning comes when a quarter of the target is left.
    assert clock.first_response_warn_at == start + timedelta(minutes=45)
    assert clock.resolution_warn_at == start + 3 * H


def test_business_hours_skip_nights_weekends_and_holidays():
    cal = OFFICE.calendar
    friday_3pm = local(2026, 12, 4, 15, 0)
    # 2 h from Friday 15:00: one hour on Friday, one on Monday morning.
    assert cal.add(friday_3pm, 2 * H) == local(2026, 12, 7, 9, 0)
    # Wednesday 23rd 15:00 + 3 h: one hour that day; the 24th and 25th are holidays and
    # the 26th-27th a weekend, so the other two hours are Monday the 28th.
    assert cal.add(local(2026, 12, 23, 15, 0), 3 * H) == local(2026, 12, 28, 10, 0)
    # Mail at night starts the clock when the office opens.
    assert cal.add(local(2026, 12, 8, 2, 0), H) == local(2026, 12, 8, 9, 0)
    # between() counts only service time, and subtract() is its inverse.
    assert cal.between(friday_3pm, local(2026, 12, 7, 9, 0)) == 2 * H
    assert cal.subtract(local(2026, 12, 7, 9, 0), 2 * H) == friday_3pm
    assert cal.between(local(2026, 12, 7, 9, 0), friday_3pm) == -2 * H


def test_business_hours_across_daylight_saving_change():
    cal = policy(business_hours="08:00-16:00").calendar
    # Helsinki leaves summer time on Sunday 25 October 2026: Friday 15:00 EEST + 2 h
    # service time is Monday 09:00 EET, which is 3 h later in UTC than 09:00 EEST.
    due = cal.add(local(2026, 10, 23, 15, 0), 2 * H)
    assert due == local(2026, 10, 26, 9, 0)
    assert due.astimezone(UTC).hour == 7


@pytest.mark.parametrize("hours", [0.25, 1, 7.5, 8, 9, 30, 100])
def test_add_subtract_and_between_agree(hours):
    cal = OFFICE.calendar
    start = local(2026, 12, 22, 13, 17)
    due = cal.add(start, hours * H)
    assert cal.between(start, due) == hours * H
    assert cal.subtract(due, hours * H) <= start  # may land on the previous closing time
    assert cal.between(cal.subtract(due, hours * H), start) == timedelta(0)


def test_pause_moves_running_deadlines_by_the_time_waited():
    p = policy()
    t0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    clock = p.start(3, t0)
    clock = p.pause(clock, t0 + 1 * H)
    assert p.pause(clock, t0 + 2 * H).paused_at == t0 + 1 * H  # pausing twice changes nothing
    resumed = p.resume(clock, t0 + 6 * H)  # waited 5 h for the requester
    assert resumed.paused_at is None and resumed.paused_seconds == 5 * 3600
    assert resumed.first_response_due == t0 + 7 * H
    assert resumed.resolution_due == t0 + 29 * H
    assert resumed.resolution_warn_at == t0 + 29 * H - 6 * H


def test_pause_in_business_hours_counts_only_service_time():
    clock = OFFICE.start(3, local(2026, 12, 7, 8, 0))  # Monday 08:00; resolution 24 h = 3 days
    assert clock.resolution_due == local(2026, 12, 9, 16, 0)
    paused = OFFICE.pause(clock, local(2026, 12, 7, 15, 0))
    resumed = OFFICE.resume(paused, local(2026, 12, 8, 10, 0))  # waited 1 h Mon + 2 h Tue
    assert resumed.paused_seconds == 3 * 3600
    assert resumed.resolution_due == local(2026, 12, 10, 11, 0)


def test_an_answered_or_missed_deadline_does_not_move():
    p = policy()
    t0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    clock = p.start(1, t0)
    from dataclasses import replace

    answered = replace(clock, first_response_at=t0 + 0.5 * H)
    out = p.resume(p.pause(answered, t0 + 2 * H), t0 + 3 * H)
    assert out.first_response_due == clock.first_response_due  # met: stays as it was
    assert out.resolution_due == clock.resolution_due + 1 * H
    missed = p.resume(p.pause(clock, t0 + 5 * H), t0 + 6 * H)  # both already missed
    assert missed.resolution_due == clock.resolution_due


def test_retarget_moves_deadlines_by_the_difference_of_targets():
    p = policy()
    t0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    clock = p.start(3, t0)  # 2 h / 24 h
    p1 = p.retarget(clock, 1, t0 + 0.5 * H)  # 1 h / 4 h
    assert (p1.priority, p1.first_response_due, p1.resolution_due) == (1, t0 + H, t0 + 4 * H)
    back = p.retarget(p1, 3, t0 + 0.5 * H)
    assert (back.first_response_due, back.resolution_due) == (t0 + 2 * H, t0 + 24 * H)


def test_reopen_gives_a_fresh_resolution_target():
    p = policy()
    t0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    from dataclasses import replace

    clock = replace(p.start(2, t0), resolved=True, resolution_breached_at=t0 + 9 * H)
    reopened = p.restart_resolution(clock, t0 + 48 * H)
    assert reopened.resolution_due == t0 + 56 * H and reopened.resolution_breached_at is None
    assert not reopened.resolved


def test_regulator_clock_and_reminders():
    p = policy()
    t0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert p.regulator_clock(t0) == (t0 + 72 * H, t0 + 24 * H)
    assert p.next_regulator_reminder(t0, t0 + 23 * H) == (0, t0 + 24 * H)
    assert p.next_regulator_reminder(t0, t0 + 50 * H) == (2, t0 + 66 * H)
    assert p.next_regulator_reminder(t0, t0 + 72 * H) == (4, None)


def test_a_calendar_with_no_service_time_fails_loudly():
    cal = Calendar(HEL, 8 * 60, 16 * 60, frozenset({1}), frozenset())
    assert cal.add(local(2026, 12, 8, 9, 0), H) == local(2026, 12, 14, 9, 0)  # next Monday
    with pytest.raises(ValueError):
        cal.add(local(2026, 12, 8, 9, 0), 100000 * H)

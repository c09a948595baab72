"""The SLA engine (DESIGN §6): targets per priority on a service calendar.

Pure: no database, no clock. `SlaPolicy` turns ``sla.*`` settings into
deadlines; `Calendar` does the arithmetic of service time (24/7 by default,
or business hours with holidays in ``helpdesk.timezone``); `SlaClock` is the
SLA bookkeeping of one ticket and the functions below return its next state:

- `start` a new ticket's clocks;
- `pause` while the ticket waits for the requester (``pending_user``) and
  `resume` when it no longer does: every running deadline moves by the
  service time spent waiting;
- `restart_resolution` when a finished ticket is reopened;
- `retarget` when the priority changes: deadlines move by the difference of
  the targets, whatever happened before (pauses, reopens).

A warning is due when ``1 - warn_fraction`` of a target remains
(``*_warn_at``); the sweeps compare these columns with "now".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from maild.config.settings import Settings, SlaSettings

MAX_CALENDAR_DAYS = 3 * 366  # no deadline lies further than this in service time
ZERO = timedelta(0)


@dataclass(frozen=True)
class Calendar:
    """Service time: every hour (24/7), or business hours on business days."""

    tz: ZoneInfo
    opens: int | None = None  # minutes after local midnight; None: 24/7
    closes: int | None = None
    days: frozenset[int] = frozenset(range(1, 8))  # ISO weekdays
    holidays: frozenset[date] = frozenset()

    @property
    def always_open(self) -> bool:
        return self.opens is None

    def _interval(self, day: date) -> tuple[datetime, datetime] | None:
        if self.opens is None or self.closes is None:
            start = datetime.combine(day, time(0), self.tz)
            return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)
        if day.isoweekday() not in self.days or day in self.holidays:
            return None
        midnight = datetime.combine(day, time(0), self.tz)
        return (
            (midnight + timedelta(minutes=self.opens)).astimezone(UTC),
            (midnight + timedelta(minutes=self.closes)).astimezone(UTC),
        )

    def _local_day(self, when: datetime) -> date:
        return when.astimezone(self.tz).date()

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """The moment `duration` of service time after `start`."""
        if duration < ZERO:
            return self.subtract(start, -duration)
        if self.always_open:
            return start + duration
        remaining = duration
        day = self._local_day(start) - timedelta(days=1)
        for _ in range(MAX_CALENDAR_DAYS):
            interval = self._interval(day)
            day += timedelta(days=1)
            if interval is None:
                continue
            opens, closes = interval
            begin = max(start, opens)
            if begin >= closes:
                continue
            if remaining <= closes - begin:
                return begin + remaining
            remaining -= closes - begin
        raise ValueError(f"no service time within {MAX_CALENDAR_DAYS} days of {start}")

    def subtract(self, end: datetime, duration: timedelta) -> datetime:
        """The moment `duration` of service time before `end`."""
        if duration < ZERO:
            return self.add(end, -duration)
        if self.always_open:
            return end - duration
        remaining = duration
        day = self._local_day(end) + timedelta(days=1)
        for _ in range(MAX_CALENDAR_DAYS):
            interval = self._interval(day)
            day -= timedelta(days=1)
            if interval is None:
                continue
            opens, closes = interval
            finish = min(end, closes)
            if finish <= opens:
                continue
            if remaining <= finish - opens:
                return finish - remaining
            remaining -= finish - opens
        raise ValueError(f"no service time within {MAX_CALENDAR_DAYS} days before {end}")

    def between(self, start: datetime, end: datetime) -> timedelta:
        """Service time from `start` to `end` (negative when `end` is earlier)."""
        if end < start:
            return -self.between(end, start)
        if self.always_open:
            return end - start
        total = ZERO
        day = self._local_day(start) - timedelta(days=1)
        last = self._local_day(end) + timedelta(days=1)
        while day <= last:
            interval = self._interval(day)
            day += timedelta(days=1)
            if interval is None:
                continue
            begin, finish = max(start, interval[0]), min(end, interval[1])
            if finish > begin:
                total += finish - begin
        return total


@dataclass(frozen=True)
class SlaClock:
    """The SLA columns of one ticket (the ticket row mirrors these fields)."""

    priority: int
    first_response_due: datetime | None = None
    first_response_warn_at: datetime | None = None
    first_response_at: datetime | None = None
    first_response_warned_at: datetime | None = None
    first_response_breached_at: datetime | None = None
    resolution_due: datetime | None = None
    resolution_warn_at: datetime | None = None
    resolution_warned_at: datetime | None = None
    resolution_breached_at: datetime | None = None
    resolved: bool = False
    paused_at: datetime | None = None
    paused_seconds: int = 0


FIELDS = tuple(f for f in SlaClock.__dataclass_fields__ if f not in ("priority", "resolved"))


@dataclass(frozen=True)
class SlaPolicy:
    calendar: Calendar
    first_response: tuple[timedelta, ...]  # index: priority - 1
    resolution: tuple[timedelta, ...]
    warn_fraction: float
    regulator_deadline: timedelta
    regulator_reminders: tuple[timedelta, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> SlaPolicy:
        return _policy(settings.sla, settings.helpdesk.timezone)

    def first_response_target(self, priority: int) -> timedelta:
        return self.first_response[_index(priority)]

    def resolution_target(self, priority: int) -> timedelta:
        return self.resolution[_index(priority)]

    def warn_at(self, due: datetime, target: timedelta) -> datetime:
        return self.calendar.subtract(due, target * (1 - self.warn_fraction))

    def regulator_clock(self, start: datetime) -> tuple[datetime, datetime | None]:
        """(deadline, first reminder) of the regulator notification; wall-clock hours."""
        first = start + self.regulator_reminders[0] if self.regulator_reminders else None
        return start + self.regulator_deadline, first

    def next_regulator_reminder(
        self, start: datetime, now: datetime
    ) -> tuple[int, datetime | None]:
        """(reminders due by `now`, counting the deadline itself; when the next one is due)."""
        marks = [start + r for r in self.regulator_reminders] + [start + self.regulator_deadline]
        passed = sum(1 for m in marks if m <= now)
        return passed, (marks[passed] if passed < len(marks) else None)

    # --- transitions (each returns the next state) ------------------------------

    def start(self, priority: int, now: datetime) -> SlaClock:
        fr, res = self.first_response_target(priority), self.resolution_target(priority)
        fr_due, res_due = self.calendar.add(now, fr), self.calendar.add(now, res)
        return SlaClock(
            priority=priority,
            first_response_due=fr_due,
            first_response_warn_at=self.warn_at(fr_due, fr),
            resolution_due=res_due,
            resolution_warn_at=self.warn_at(res_due, res),
        )

    def pause(self, clock: SlaClock, now: datetime) -> SlaClock:
        if clock.paused_at is not None:
            return clock
        return replace(clock, paused_at=now)

    def resume(self, clock: SlaClock, now: datetime) -> SlaClock:
        """Move every running deadline by the service time spent paused."""
        if clock.paused_at is None:
            return clock
        waited = max(self.calendar.between(clock.paused_at, now), ZERO)
        out = replace(clock, paused_at=None,
                      paused_seconds=clock.paused_seconds + int(waited.total_seconds()))  # fmt: skip
        if waited == ZERO:
            return out
        if _running(clock.first_response_due, clock.first_response_at, clock.paused_at):
            assert clock.first_response_due is not None
            due = self.calendar.add(clock.first_response_due, waited)
            out = replace(out, first_response_due=due, first_response_warn_at=self.warn_at(
                due, self.first_response_target(clock.priority)))  # fmt: skip
        if not clock.resolved and _running(clock.resolution_due, None, clock.paused_at):
            assert clock.resolution_due is not None
            due = self.calendar.add(clock.resolution_due, waited)
            out = replace(out, resolution_due=due, resolution_warn_at=self.warn_at(
                due, self.resolution_target(clock.priority)))  # fmt: skip
        return out

    def restart_resolution(self, clock: SlaClock, now: datetime) -> SlaClock:
        """A reopened ticket gets a fresh resolution target from `now`."""
        target = self.resolution_target(clock.priority)
        due = self.calendar.add(now, target)
        return replace(clock, resolved=False, paused_at=None, resolution_due=due,
                       resolution_warn_at=self.warn_at(due, target),
                       resolution_warned_at=None, resolution_breached_at=None)  # fmt: skip

    def retarget(self, clock: SlaClock, priority: int, now: datetime) -> SlaClock:
        """New priority: deadlines move by the difference of the targets."""
        out = replace(clock, priority=priority)
        if clock.first_response_at is None and clock.first_response_due is not None:
            old, new = (
                self.first_response_target(clock.priority),
                self.first_response_target(priority),
            )
            due = self.calendar.add(clock.first_response_due, new - old)
            warn = self.warn_at(due, new)
            out = replace(out, first_response_due=due, first_response_warn_at=warn)
            if clock.first_response_breached_at is None and warn > now:
                out = replace(out, first_response_warned_at=None)
        if not clock.resolved and clock.resolution_due is not None:
            old, new = self.resolution_target(clock.priority), self.resolution_target(priority)
            due = self.calendar.add(clock.resolution_due, new - old)
            warn = self.warn_at(due, new)
            out = replace(out, resolution_due=due, resolution_warn_at=warn)
            if clock.resolution_breached_at is None and warn > now:
                out = replace(out, resolution_warned_at=None)
        return out

    def fraction_used(self, due: datetime, target: timedelta, now: datetime) -> float:
        """How much of `target` is used up at `now` (1.0 at the deadline)."""
        left = self.calendar.between(now, due)
        return 1.0 - left / target if target > ZERO else 1.0


def _running(due: datetime | None, met: datetime | None, paused_at: datetime) -> bool:
    """A deadline still counting (not met, not already missed when paused)."""
    return due is not None and met is None and due > paused_at


def _index(priority: int) -> int:
    if priority not in (1, 2, 3, 4):
        raise ValueError(f"priority must be 1..4, got {priority!r}")
    return priority - 1


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


@lru_cache(maxsize=8)
def _policy(sla: SlaSettings, timezone: str) -> SlaPolicy:
    tz = ZoneInfo(timezone)
    if sla.business_hours:
        opens, closes = (_minutes(x) for x in sla.business_hours.split("-"))
        calendar = Calendar(tz, opens, closes, frozenset(sla.business_days),
                            frozenset(date.fromisoformat(d) for d in sla.holidays))  # fmt: skip
    else:
        calendar = Calendar(tz)
    return SlaPolicy(
        calendar=calendar,
        first_response=tuple(timedelta(hours=h) for h in sla.first_response_hours),
        resolution=tuple(timedelta(hours=h) for h in sla.resolution_hours),
        warn_fraction=sla.warn_fraction,
        regulator_deadline=timedelta(hours=sla.regulator_deadline_hours),
        regulator_reminders=tuple(timedelta(hours=h) for h in sorted(sla.regulator_reminder_hours)),
    )

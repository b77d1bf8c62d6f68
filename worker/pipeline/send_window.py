"""Send windows: when a recipient may be sent, in its own local time (pure).

A window is [start, end) of local wall-clock time, every day; start after
end is an overnight window (22:00-06:00). A recipient's local time is that
of every time zone its number may be in (``producer.phone.time_zones``): it
is sent only while the window is open in all of them. A number of no known
zone takes the window's own ``timezone`` if it names one, else the workers'
``[settings] default_timezone``; a window with a ``timezone`` uses that zone
for everyone.

The earliest moment the window is open in every zone of a set begins either
now or at one zone's opening (an intersection of intervals starts at one of
their starts), so it is found by trying those instants in order, a week of
them at most (daylight-saving days included). Each distinct set of zones is
looked up once a pass (``WindowClock``): a chunk's numbers share few sets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from producer.job import SendWindow

HORIZON_DAYS = 8  # a window open in every zone at all is so within a week


@dataclass(frozen=True, slots=True)
class Window:
    start: int  # minutes after local midnight
    end: int
    timezone: str | None = None  # one IANA zone for every recipient

    @classmethod
    def of(cls, spec: SendWindow) -> Window:
        """A job's (or account's) ``send_window``, validated where it was
        read: "HH:MM" strings and an IANA name."""
        return _window(spec)

    def contains(self, minute: int) -> bool:
        """Is ``minute`` (after local midnight) inside the window?"""
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def describe(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


@cache
def _window(spec: SendWindow) -> Window:
    return Window(_minutes(spec.start), _minutes(spec.end), spec.timezone)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@cache
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local_minute(at: datetime, tz: ZoneInfo) -> int:
    local = at.astimezone(tz)
    return local.hour * 60 + local.minute


def _openings(window: Window, tz: ZoneInfo, now: datetime) -> Iterable[datetime]:
    """The window's opening instants in ``tz`` from the day before ``now``,
    for HORIZON_DAYS (a start that does not exist on a day when clocks go
    forward is read as zoneinfo reads it: the instant after the gap)."""
    today = now.astimezone(tz).date()
    hour, minute = divmod(window.start, 60)
    for day in range(-1, HORIZON_DAYS):
        date = today + timedelta(days=day)
        local = datetime(date.year, date.month, date.day, hour, minute, tzinfo=tz)
        yield local.astimezone(UTC)


def open_in_s(window: Window, zones: tuple[str, ...], now: datetime) -> float | None:
    """Seconds until the window is open in every zone of ``zones`` (0: it
    is now); None if it never is (zones too far apart for its width)."""
    tzs = [zone(name) for name in zones]
    if all(window.contains(_local_minute(now, tz)) for tz in tzs):
        return 0.0
    candidates = sorted(
        {at for tz in tzs for at in _openings(window, tz, now) if at > now},
    )
    for at in candidates:
        if all(window.contains(_local_minute(at, tz)) for tz in tzs):
            return (at - now).total_seconds()
    return None


def closes_in_s(window: Window, zones: tuple[str, ...], now: datetime) -> float:
    """Seconds until the window, open now in every zone, closes in one of
    them (to the next whole minute at the latest of its local clock)."""
    earliest: float | None = None
    for name in zones:
        local = now.astimezone(zone(name))
        minute = local.hour * 60 + local.minute
        left = (window.end - minute) % (24 * 60) or 24 * 60
        seconds = left * 60 - local.second - local.microsecond / 1e6
        earliest = seconds if earliest is None else min(earliest, seconds)
    return earliest or 0.0


class WindowClock:
    """A pass's view of one window at one instant: each zone set looked up once."""

    def __init__(self, window: Window, default_zone: str, now: datetime) -> None:
        self.window = window
        self.unknown_zone = window.timezone or default_zone
        self.now = now
        self._waits: dict[tuple[str, ...], float | None] = {}
        self.closes_in_s: float | None = None  # the soonest close among zone sets open now
        self.held = 0  # recipients held back, outside their window
        self.opens_in_s: float | None = None  # the soonest opening among them

    def admits(self, number_zones: tuple[str, ...]) -> bool | None:
        """Whether a number of ``number_zones`` may be sent now (True), is
        held back until its window opens (False, counted), or never may be
        (None: its zones never share the window)."""
        wait = self.wait_s(number_zones)
        if wait is None or wait == 0.0:
            return None if wait is None else True
        self.held += 1
        self.opens_in_s = wait if self.opens_in_s is None else min(self.opens_in_s, wait)
        return False

    def never_reason(self, number_zones: tuple[str, ...]) -> str:
        n = len(self.zones_for(number_zones))
        window = self.window.describe()
        return f"its number's {n} time zones are never all inside the send window {window}"

    def zones_for(self, number_zones: tuple[str, ...]) -> tuple[str, ...]:
        """The zones whose clocks count for a number of ``number_zones``
        (``()``: no known zone)."""
        if self.window.timezone:
            return (self.window.timezone,)
        return number_zones or (self.unknown_zone,)

    def wait_s(self, number_zones: tuple[str, ...]) -> float | None:
        """Seconds until a number of ``number_zones`` may be sent (0: now);
        None if the window is never open in all of them at once."""
        zones = self.zones_for(number_zones)
        if zones not in self._waits:
            wait = open_in_s(self.window, zones, self.now)
            self._waits[zones] = wait
            if wait == 0.0:
                closes = closes_in_s(self.window, zones, self.now)
                soonest = self.closes_in_s
                self.closes_in_s = closes if soonest is None else min(soonest, closes)
        return self._waits[zones]

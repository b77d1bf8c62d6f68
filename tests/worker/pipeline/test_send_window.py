"""Send windows (pure): when a recipient's local window is open in all its zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as phone_timezones

from producer.job import SendWindow
from producer.phone import parse_number, time_zones
from worker.pipeline.send_window import Window, WindowClock, closes_in_s, open_in_s

NAIROBI, NEW_YORK = "Africa/Nairobi", "America/New_York"
DAY_WINDOW = Window.of(SendWindow(start="09:00", end="20:00"))
NIGHT_WINDOW = Window.of(SendWindow(start="22:00", end="06:00"))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_window_contains_its_start_not_its_end_and_overnight_wraps() -> None:
    assert DAY_WINDOW.contains(9 * 60) and not DAY_WINDOW.contains(20 * 60)
    assert not DAY_WINDOW.contains(8 * 60 + 59) and DAY_WINDOW.contains(19 * 60 + 59)
    assert NIGHT_WINDOW.contains(23 * 60) and NIGHT_WINDOW.contains(5 * 60 + 59)
    assert not NIGHT_WINDOW.contains(6 * 60) and not NIGHT_WINDOW.contains(12 * 60)


def test_open_now_is_zero_and_a_later_opening_is_its_exact_wait() -> None:
    # 07:00 UTC is 10:00 in Nairobi (UTC+3): open.
    assert open_in_s(DAY_WINDOW, (NAIROBI,), at("2026-12-02T07:00:00")) == 0.0
    # 05:00 UTC is 08:00 there: it opens at 06:00 UTC.
    assert open_in_s(DAY_WINDOW, (NAIROBI,), at("2026-12-02T05:00:00")) == 3600.0
    # 17:30 UTC is 20:30: closed until 09:00 tomorrow, 12.5 hours on.
    assert open_in_s(DAY_WINDOW, (NAIROBI,), at("2026-12-02T17:30:00")) == 12.5 * 3600


def test_a_number_in_several_zones_waits_until_the_window_is_open_in_all() -> None:
    # 09:00-20:00 is 06:00-17:00 UTC in Nairobi and 14:00-01:00 UTC in New
    # York (UTC-5 in December): open in both from 14:00 UTC.
    now = at("2026-12-02T10:00:00")
    assert open_in_s(DAY_WINDOW, (NAIROBI,), now) == 0.0
    assert open_in_s(DAY_WINDOW, (NAIROBI, NEW_YORK), now) == 4 * 3600
    assert closes_in_s(DAY_WINDOW, (NAIROBI, NEW_YORK), at("2026-12-02T15:00:00")) == 7200


def test_zones_too_far_apart_for_the_window_never_share_it() -> None:
    # Kiritimati is UTC+14, Pago Pago UTC-11: an hour's window never overlaps.
    hour = Window.of(SendWindow(start="09:00", end="10:00"))
    assert open_in_s(hour, ("Pacific/Kiritimati", "Pacific/Pago_Pago"), at("2026-12-02")) is None


def test_the_window_follows_daylight_saving_time() -> None:
    # New York moves to UTC-4 on 2026-03-08: 09:00 local is 13:00 UTC after it.
    before = at("2026-03-07T12:00:00")  # 07:00 EST
    assert open_in_s(DAY_WINDOW, (NEW_YORK,), before) == 2 * 3600
    after = at("2026-03-09T12:00:00")  # 08:00 EDT
    assert open_in_s(DAY_WINDOW, (NEW_YORK,), after) == 3600


def test_a_window_zone_counts_for_everyone_and_the_default_for_unknown_numbers() -> None:
    now = at("2026-12-02T05:00:00")  # 08:00 in Nairobi, 05:00 in UTC, 00:00 in New York
    clock = WindowClock(DAY_WINDOW, "Africa/Nairobi", now)
    assert clock.wait_s(()) == 3600  # no known zone: the default's
    assert clock.wait_s((NEW_YORK,)) == 9 * 3600
    zoned = Window.of(SendWindow(start="09:00", end="20:00", timezone="UTC"))
    clock = WindowClock(zoned, "Africa/Nairobi", now)
    assert clock.wait_s((NEW_YORK,)) == 4 * 3600 == clock.wait_s(())


def test_a_clock_holds_back_closed_zones_and_admits_open_ones() -> None:
    now = at("2026-12-02T07:00:00")  # 10:00 Nairobi, 09:00 Bucharest, 02:00 New York
    clock = WindowClock(DAY_WINDOW, "UTC", now)
    assert clock.admits((NAIROBI,)) is True
    assert clock.admits(("Europe/Bucharest",)) is True
    assert clock.admits((NEW_YORK,)) is False
    assert clock.admits((NEW_YORK,)) is False
    hour = Window.of(SendWindow(start="09:00", end="10:00"))
    never = WindowClock(hour, "UTC", now)
    assert never.admits(("Pacific/Kiritimati", "Pacific/Pago_Pago")) is None
    assert clock.held == 2 and clock.opens_in_s == 7 * 3600
    # The soonest close of the zones it admitted: Bucharest's 20:00, 11 h on.
    assert clock.closes_in_s == 10 * 3600


ZONES = ["Africa/Nairobi", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(0, 24 * 60 - 1),
    width=st.integers(1, 24 * 60 - 1),
    zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=3, unique=True),
    minutes=st.integers(0, 366 * 24 * 60),
)
def test_the_wait_found_is_the_first_minute_open_in_every_zone(
    start: int, width: int, zones: list[str], minutes: int
) -> None:
    window = Window(start, (start + width) % (24 * 60))
    now = at("2026-01-01") + timedelta(minutes=minutes, seconds=17)
    wait = open_in_s(window, tuple(zones), now)

    def open_at(moment: datetime) -> bool:
        locals_ = [moment.astimezone(ZoneInfo(z)) for z in zones]
        return all(window.contains(t.hour * 60 + t.minute) for t in locals_)

    horizon = 3 * 24 * 60
    if wait is None:
        assert not any(open_at(now + timedelta(minutes=m)) for m in range(horizon))
        return
    assert open_at(now + timedelta(seconds=wait))
    # No whole minute before it was open in all of them.
    step = 0
    while step * 60 < wait:
        assert not open_at(now + timedelta(minutes=step)), step
        step += 1


def test_time_zones_agree_with_phonenumbers_for_every_example_number() -> None:
    """``time_zones`` looks a one-zone country's zone up once: it must give
    what phonenumbers gives for every number (examples of every region)."""
    compared = 0
    kinds = (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.TOLL_FREE)
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in kinds:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            number = parse_number(phonenumbers.format_number(example, 0), region)
            expected = phone_timezones.time_zones_for_number(example)
            assert time_zones(number) == tuple(z for z in expected if z != "Etc/Unknown")
            compared += 1
    assert compared > 500


@pytest.mark.parametrize(
    ("raw", "zones"),
    [
        ("+254712345678", ("Africa/Nairobi",)),
        ("+12125551234", ("America/New_York",)),
        ("+40722123456", ("Europe/Bucharest",)),
    ],
)
def test_a_numbers_zones(raw: str, zones: tuple[str, ...]) -> None:
    assert time_zones(parse_number(raw, "RO")) == zones


def test_a_toll_free_number_may_be_in_many_zones() -> None:
    assert len(time_zones(parse_number("+18005551234", "US"))) > 20

"""Phone numbers: the forms people type, and the forms each provider expects."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from producer.phone import (
    NUMBER_FORMATS,
    InvalidNumber,
    PhoneNumber,
    format_number,
    parse_number,
)

RO_MOBILE = PhoneNumber(e164="+40722123456", region="RO", country_code=40, national="722123456")


@pytest.mark.parametrize(
    "raw",
    [
        "0722123456",
        "0722 123 456",
        "0722-123-456",
        "(0722) 123.456",
        "0040722123456",
        "00 40 722 123 456",
        "40722123456",
        "722123456",
        "+40722123456",
        "+40 722 123 456",
        " +40722123456 ",
        "0722\u00a0123\u00a0456",
    ],
)
def test_romanian_forms_all_give_the_same_number(raw: str) -> None:
    assert parse_number(raw, "RO") == RO_MOBILE


@pytest.mark.parametrize(
    ("raw", "region", "e164", "number_region"),
    [
        ("+49 1512 3456789", "RO", "+4915123456789", "DE"),
        ("0049 1512 3456789", "RO", "+4915123456789", "DE"),
        ("4915123456789", "RO", "+4915123456789", "DE"),  # bare country code
        ("011 49 1512 3456789", "US", "+4915123456789", "DE"),  # US international prefix
        ("011 40 722 123 456", "US", "+40722123456", "RO"),
        ("(650) 253-0000", "US", "+16502530000", "US"),
        ("+1 650 253 0000", "RO", "+16502530000", "US"),
        ("+44 7400 123456", "RO", "+447400123456", "GB"),
        ("+39 06 1234 5678", "RO", "+390612345678", "IT"),  # Italian leading zero kept
    ],
)
def test_international_forms(raw: str, region: str, e164: str, number_region: str) -> None:
    number = parse_number(raw, region)
    assert number.e164 == e164
    assert number.region == number_region
    assert number.country_code == phonenumbers.country_code_for_region(number_region)


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("", "RO"),
        ("   ", "RO"),
        ("07", "RO"),  # too short
        ("0722 123", "RO"),
        ("0722 123 4567", "RO"),  # too long
        ("0722abc456", "RO"),  # letters: not read as a vanity number
        ("0722 123 456 ext. 12", "RO"),
        ("call me", "RO"),
        ("+", "RO"),
        ("00", "RO"),
        ("0822123456", "RO"),  # no such Romanian range
        ("+40 122 123 456", "RO"),
        ("+1 123 456 7890", "US"),  # NANP area codes never start with 1
        ("+999 123 456 789", "RO"),  # no such country code
        ("0040722123456", "US"),  # 00 is not the US international prefix
    ],
)
def test_invalid_numbers_are_refused_without_echoing_them(raw: str, region: str) -> None:
    with pytest.raises(InvalidNumber) as caught:
        parse_number(raw, region)
    message = str(caught.value)
    assert message
    digits = re.sub(r"\D", "", raw)
    assert not re.search(r"\d{4,}", message)
    assert len(digits) < 4 or digits not in message


def test_invalid_number_message_gives_the_reason() -> None:
    with pytest.raises(InvalidNumber, match="not a valid phone number for region RO"):
        parse_number("0822123456", "RO")
    assert issubclass(InvalidNumber, ValueError)


def test_unknown_default_region_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="unknown default region") as caught:
        parse_number("0722123456", "XX")
    assert not isinstance(caught.value, InvalidNumber)


@pytest.mark.parametrize(
    ("number_format", "home", "expected"),
    [
        ("e164", "RO", "+40722123456"),
        ("digits", "RO", "40722123456"),
        ("00", "RO", "0040722123456"),
        ("00", "US", "0040722123456"),
        ("national", "RO", "0722123456"),  # GoSMS at home: trunk prefix
        ("national", "DE", "0040722123456"),  # GoSMS abroad: 00 form
    ],
)
def test_formats(number_format: str, home: str, expected: str) -> None:
    assert format_number(RO_MOBILE, number_format, home) == expected  # type: ignore[arg-type]


def test_national_format_uses_the_home_trunk_prefix() -> None:
    assert format_number(parse_number("+4915123456789", "RO"), "national", "DE") == "015123456789"
    assert format_number(parse_number("+390612345678", "RO"), "national", "IT") == "0612345678"
    assert format_number(parse_number("+16502530000", "RO"), "national", "US") == "6502530000"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown number_format"):
        format_number(RO_MOBILE, "international", "RO")  # type: ignore[arg-type]


def _examples() -> list[tuple[str, phonenumbers.PhoneNumber]]:
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for number_type in (
            phonenumbers.PhoneNumberType.MOBILE,
            phonenumbers.PhoneNumberType.FIXED_LINE,
            phonenumbers.PhoneNumberType.TOLL_FREE,
            phonenumbers.PhoneNumberType.VOIP,
        ):
            number = phonenumbers.example_number_for_type(region, number_type)
            if number is not None:
                found.append((region, number))
    return found


EXAMPLES = _examples()


@st.composite
def valid_numbers(draw: st.DrawFn) -> PhoneNumber:
    """A valid number near a region's example number (its last digits changed)."""
    region, example = draw(st.sampled_from(EXAMPLES))
    nsn = phonenumbers.national_significant_number(example)
    changed = draw(st.integers(0, min(4, len(nsn) - 2)))
    tail = draw(st.text(alphabet="0123456789", min_size=changed, max_size=changed))
    candidate = f"+{example.country_code}{nsn[: len(nsn) - changed]}{tail}"
    assume(phonenumbers.is_valid_number(phonenumbers.parse(candidate)))
    return parse_number(candidate, region)


property_settings = settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)


@given(valid_numbers(), st.sampled_from(["RO", "DE", "US", "GB", "FR"]))
@property_settings
def test_formats_round_trip(number: PhoneNumber, default_region: str) -> None:
    assert parse_number(format_number(number, "e164", "RO"), default_region) == number
    assert format_number(number, "digits", "RO") == number.e164[1:]
    for home in ("RO", "DE"):  # both use 00 as their international prefix
        assert parse_number(format_number(number, "00", home), home) == number
        if number.region != home:
            assert format_number(number, "national", home) == "00" + number.e164[1:]
    if number.region is not None:
        at_home = format_number(number, "national", number.region)
        assert parse_number(at_home, number.region) == number


@given(valid_numbers())
@property_settings
def test_parsed_fields_are_consistent(number: PhoneNumber) -> None:
    assert number.e164 == f"+{number.country_code}{number.national}"
    assert set(format_number(number, "national", "ZZ")) <= set("0123456789")
    for number_format in NUMBER_FORMATS:
        assert re.fullmatch(r"\+?\d+", format_number(number, number_format, "RO"))

"""Phone number parsing and per-provider formatting (pure, no I/O): the
workers read every recipient with it, producers every number they are given
(opt-outs, a route estimate's countries), so both read a number alike.

Parsing is the largest per-recipient CPU cost (measured on one core:
~29k numbers/s for parse + validate + E.164; docs/ARCHITECTURE.md), so the hot path does one
`phonenumbers.parse` and one validity check, and builds E.164 by string
concatenation instead of calling the formatter.

Accepted forms, e.g. with default region RO: ``0722123456``, ``0722 123 456``,
``722123456``, ``+40722123456``, ``0040722123456`` (``00`` is RO's
international prefix; with US it is ``011``) and the bare country code
``40722123456``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat
from phonenumbers import timezone as phone_timezones

from producer.errors import SmsbulkError

# Keep phonenumbers' compiled metadata patterns in its own dict: without it
# every pattern match goes through re.compile's cache lookup (1.6 of 9.6 us
# a number on the benchmark's numbers).
phonenumbers.enable_pattern_cache()

NumberFormat = Literal["national", "00", "digits", "e164"]
NUMBER_FORMATS: tuple[NumberFormat, ...] = ("national", "00", "digits", "e164")

SUPPORTED_REGIONS: frozenset[str] = frozenset(phonenumbers.SUPPORTED_REGIONS)
_NON_GEO_REGION = "001"  # phonenumbers' "region" of +800, +882, ...
# Digits (any script), spaces and the usual separators; letters are refused
# rather than read as a vanity number or an extension ("ext. 12").
ALLOWED = re.compile(r"[\d\s+\-().\/]+")
_NON_DIGITS = re.compile(r"\D")
_SEPARATORS = str.maketrans("", "", " -.()/\t")
_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown or missing country code",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
    NumberParseException.TOO_SHORT_NSN: "too short to be a phone number",
    NumberParseException.TOO_LONG: "too long to be a phone number",
}


class InvalidNumber(SmsbulkError, ValueError):
    """A number that cannot be sent to; the message is the reason, never the number."""


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    e164: str  # "+40712345678"
    region: str | None  # "RO"; None for non-geographic numbers (+800 ...)
    country_code: int  # 40
    national: str  # national significant number, "712345678"


def _parse(raw: str, region: str) -> PhoneNumber | str:
    """The valid number, or the reason it is not one."""
    try:
        parsed = phonenumbers.parse(raw, region)
    except NumberParseException as exc:
        return _PARSE_REASONS.get(exc.error_type, "not a phone number")
    country_code = parsed.country_code or 0  # parse() always sets it
    # is_valid_number() is exactly these two calls; doing them here gets the
    # region without computing it twice.
    number_region = phonenumbers.region_code_for_number(parsed)
    if number_region is None or not phonenumbers.is_valid_number_for_region(parsed, number_region):
        where = phonenumbers.region_code_for_country_code(country_code)
        if where == _NON_GEO_REGION:
            return f"not a valid number for the non-geographic code +{country_code}"
        return f"not a valid phone number for region {where}"
    national = phonenumbers.national_significant_number(parsed)
    return PhoneNumber(
        e164=f"+{country_code}{national}",
        region=None if number_region == _NON_GEO_REGION else number_region,
        country_code=country_code,
        national=national,
    )


@dataclass(frozen=True, slots=True)
class _Region:
    """What the fast path needs of a region, when its rules are simple."""

    country_code: int
    national_prefix: str | None  # "0" for RO; None where there is none
    international_prefix: str | None  # "00" for RO; None if not plain digits


@functools.cache
def _simple_region(region: str) -> _Region | None:
    """The region's rules if they are simple enough for the fast path: no
    national-prefix transform, parsing strips exactly the national prefix."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.country_code is None:
        return None
    if metadata.national_prefix_transform_rule:
        return None
    prefix = metadata.national_prefix
    if (metadata.national_prefix_for_parsing or None) != (prefix or None):
        return None
    idd = metadata.international_prefix
    return _Region(metadata.country_code, prefix or None, idd if idd and idd.isdigit() else None)


def _single_region(country_code: int) -> str | None:
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ())
    return regions[0] if len(regions) == 1 and regions[0] != _NON_GEO_REGION else None


def _fast_parse(raw: str, default_region: str) -> PhoneNumber | None:
    """The common forms without phonenumbers.parse (about 3x faster).

    Written by hand because it is the largest per-recipient cost. It takes
    only plain digit strings (with ``+``, the region's international prefix
    or its national prefix) for countries with one region and simple rules,
    and returns None for anything else — the full parse then decides, so a
    number is never read differently (a property test holds both to that).
    """
    compact = raw.translate(_SEPARATORS)
    home = _simple_region(default_region)
    if home is None:
        return None
    if compact.startswith("+"):
        international = compact[1:]
    elif home.international_prefix and compact.startswith(home.international_prefix):
        international = compact[len(home.international_prefix) :]
    elif home.national_prefix and compact.startswith(home.national_prefix):
        return _valid(home.country_code, compact[len(home.national_prefix) :])
    else:
        return None
    if not international.isdigit() or not international.isascii():
        return None
    for length in (1, 2, 3):
        code = int(international[:length])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return _valid(code, international[length:])
    return None


def _valid(country_code: int, national: str) -> PhoneNumber | None:
    """A valid number, or None (then the full parse gives the reason)."""
    if not national.isdigit() or not national.isascii() or national.startswith("0"):
        return None
    region = _single_region(country_code)
    rules = _simple_region(region) if region else None
    if region is None or rules is None or not 2 <= len(national) <= 17:
        return None
    if rules.national_prefix and national.startswith(rules.national_prefix):
        return None
    valid = _validity_pattern(region, len(national))
    if valid is None or valid.fullmatch(national) is None:
        return None
    return PhoneNumber(f"+{country_code}{national}", region, country_code, national)


def _pattern_of(desc: phonenumbers.PhoneNumberDesc | None, length: int) -> str | None:
    """The number type's pattern, if its numbers may have ``length`` digits."""
    if desc is None or not desc.national_number_pattern:
        return None
    if desc.possible_length and length not in desc.possible_length:
        return None
    return desc.national_number_pattern


@functools.cache
def _validity_pattern(region: str, length: int) -> re.Pattern[str] | None:
    """One pattern that a national number of ``length`` digits matches
    whole exactly when phonenumbers.is_valid_number_for_region holds: the
    region's general pattern, and that of any one number type. Matched
    once, where phonenumbers matches up to 11 patterns one by one (13.6 µs
    against 1.3 µs for a Romanian mobile; a property test holds the two to
    the same answer). None: no number of that length is valid there."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    general = None if metadata is None else _pattern_of(metadata.general_desc, length)
    if metadata is None or general is None:
        return None
    kinds = (
        metadata.premium_rate, metadata.toll_free, metadata.shared_cost, metadata.voip,
        metadata.personal_number, metadata.pager, metadata.uan, metadata.voicemail,
        metadata.fixed_line, metadata.mobile,
    )  # fmt: skip
    types = [pattern for kind in kinds if (pattern := _pattern_of(kind, length))]
    if not types:
        return None
    return re.compile(f"(?=(?:{general})\\Z)(?:{'|'.join(f'(?:{t})' for t in types)})")


def parse_number(raw: str, default_region: str) -> PhoneNumber:
    """Parse and validate `raw`; national forms are read in `default_region`.

    Raises InvalidNumber (a reason without the number) if it is not a valid
    number, and ValueError if `default_region` is not a known region code.
    """
    if default_region not in SUPPORTED_REGIONS:
        raise ValueError(f"unknown default region {default_region!r}")
    if not ALLOWED.fullmatch(raw):
        raise InvalidNumber(
            "empty phone number"
            if not raw.strip()
            else "phone number has characters other than digits, spaces, + - . / ( )"
        )
    fast = _fast_parse(raw, default_region)
    if fast is not None:
        return fast
    result = _parse(raw, default_region)
    if isinstance(result, PhoneNumber):
        return result
    if not raw.lstrip().startswith("+"):
        # A bare country code ("4915123456789"): read the digits as international.
        retry = _parse("+" + _NON_DIGITS.sub("", raw), default_region)
        if isinstance(retry, PhoneNumber):
            return retry
    raise InvalidNumber(result)


def _as_phonenumbers(number: PhoneNumber) -> phonenumbers.PhoneNumber:
    """The number as phonenumbers holds it (leading zeros of the national
    significant number, as in Italy's, included)."""
    nsn = number.national
    zeros = len(nsn) - len(nsn.lstrip("0"))
    return phonenumbers.PhoneNumber(
        country_code=number.country_code,
        national_number=int(nsn),
        italian_leading_zero=True if zeros else None,
        number_of_leading_zeros=zeros if zeros > 1 else None,
    )


def _national_with_trunk_prefix(number: PhoneNumber) -> str:
    """How the number is dialled at home, as digits: ``0712345678`` for RO."""
    formatted = phonenumbers.format_number(_as_phonenumbers(number), PhoneNumberFormat.NATIONAL)
    return _NON_DIGITS.sub("", formatted)


_UNKNOWN_ZONE = "Etc/Unknown"


@functools.cache
def _country_zone(country_code: int) -> str | None:
    """The one time zone of every number of ``country_code``, if it has
    one (Kenya's, Romania's; not the US's or Russia's)."""
    probe = phonenumbers.PhoneNumber(country_code=country_code, national_number=0)
    zones = phone_timezones._country_level_time_zones_for_number(probe)
    return zones[0] if len(zones) == 1 and zones[0] != _UNKNOWN_ZONE else None


def time_zones(number: PhoneNumber) -> tuple[str, ...]:
    """The IANA time zones ``number`` may be in (phonenumbers' prefix data:
    a mobile number of a country with several zones may be in any of them);
    ``()`` when none is known. About 10 us a number, except in a country of
    one zone (its zone, looked up once: the tests hold both to the same)."""
    one = _country_zone(number.country_code)
    if one is not None:
        return (one,)
    zones = phone_timezones.time_zones_for_number(_as_phonenumbers(number))
    return tuple(z for z in zones if z != _UNKNOWN_ZONE)


def format_number(number: PhoneNumber, number_format: NumberFormat, home_region: str) -> str:
    """`number` written as an account's `number_format` expects.

    ``national`` is GoSMS's rule: the national form with its trunk prefix
    (``0712345678``) when the number is from `home_region`, else the ``00``
    form (``0049...``). ``00`` is always literally ``00`` + country code +
    number, whatever the home region's own international prefix.
    """
    if number_format == "e164":
        return number.e164
    if number_format == "digits":
        return number.e164[1:]
    if number_format == "00":
        return "00" + number.e164[1:]
    if number_format == "national":
        if number.region is not None and number.region == home_region:
            return _national_with_trunk_prefix(number)
        return "00" + number.e164[1:]
    raise ValueError(f"unknown number_format {number_format!r}; use one of {NUMBER_FORMATS}")

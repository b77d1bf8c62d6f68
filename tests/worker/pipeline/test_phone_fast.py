"""The fast path of phone parsing never reads a number differently from
the full phonenumbers parse: it either agrees or steps aside."""

from __future__ import annotations

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat

from producer.phone import PhoneNumber, _fast_parse, _parse, _validity_pattern

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
HOME_REGIONS = ["RO", "DE", "GB", "FR", "IT", "US", "NL", "BG", "HU", "AR", "MX", "BR", "IN"]
TYPES = [
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.TOLL_FREE,
]


def examples() -> list[phonenumbers.PhoneNumber]:
    found = []
    for region in REGIONS:
        for kind in TYPES:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                found.append(number)
    return found


EXAMPLES = examples()


def written_forms(number: phonenumbers.PhoneNumber) -> list[str]:
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return [
        e164,
        phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL),
        phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL),
        "00" + e164[1:],
        e164[1:],
        "0" + e164[1:],
    ]


def agrees(raw: str, region: str) -> None:
    fast = _fast_parse(raw, region)
    if fast is None:
        return
    slow = _parse(raw, region)
    assert isinstance(slow, PhoneNumber), (raw, region, fast, slow)
    assert fast == slow, (raw, region)


@settings(max_examples=400, deadline=None)
@given(
    number=st.sampled_from(EXAMPLES),
    last_digits=st.integers(0, 999),
    home=st.sampled_from(HOME_REGIONS),
    form=st.integers(0, 5),
)
def test_fast_path_agrees_with_the_full_parse(
    number: phonenumbers.PhoneNumber, last_digits: int, home: str, form: int
) -> None:
    national = str(number.national_number)
    varied = national[:-3] + f"{last_digits:03d}" if len(national) > 3 else national
    candidate = phonenumbers.PhoneNumber(
        country_code=number.country_code,
        national_number=int(varied),
        italian_leading_zero=number.italian_leading_zero,
        number_of_leading_zeros=number.number_of_leading_zeros,
    )
    agrees(written_forms(candidate)[form], home)


def test_every_example_number_in_every_form_agrees() -> None:
    for number in EXAMPLES:
        for raw in written_forms(number):
            for home in ("RO", "DE", "US"):
                agrees(raw, home)


def test_the_fast_path_takes_the_common_romanian_forms() -> None:
    for raw in ("0722123456", "0722 123 456", "+40722123456", "0040722123456"):
        assert _fast_parse(raw, "RO") == _parse("0722123456", "RO")


def valid_by_pattern(number: phonenumbers.PhoneNumber, region: str) -> bool:
    national = phonenumbers.national_significant_number(number)
    pattern = _validity_pattern(region, len(national))
    return pattern is not None and pattern.fullmatch(national) is not None


@settings(max_examples=2000, deadline=None)
@given(number=st.sampled_from(EXAMPLES), digits=st.integers(0, 10**6 - 1), cut=st.integers(-2, 2))
def test_the_validity_pattern_says_what_phonenumbers_says(
    number: phonenumbers.PhoneNumber, digits: int, cut: int
) -> None:
    # The example's national number with its last digits varied, and one or
    # two digits longer or shorter: valid and invalid numbers of every region.
    national = str(number.national_number)
    varied = national[:-6] + f"{digits:06d}" if len(national) > 6 else national
    varied = varied[: len(varied) + cut] if cut < 0 else varied + f"{digits:06d}"[:cut]
    candidate = phonenumbers.PhoneNumber(
        country_code=number.country_code, national_number=int(varied or "0")
    )
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[number.country_code]:
        expected = phonenumbers.is_valid_number_for_region(candidate, region)
        assert valid_by_pattern(candidate, region) == expected, (region, varied)


def test_the_validity_pattern_agrees_on_every_example_number() -> None:
    for number in EXAMPLES:
        for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[number.country_code]:
            expected = phonenumbers.is_valid_number_for_region(number, region)
            assert valid_by_pattern(number, region) == expected, (region, number)

"""Part counting as the network bills it: GSM-7 160/153 septets, UCS-2 70/67 units."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from producer.parts import GSM_CHARS, Parts, count_parts, split_parts

# Reference GSM 03.38 tables, written out independently of the module:
# the basic table by code point (0x1B is the escape) and the extension table.
ESC = "\x1b"
BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENSION_TABLE = {
    "\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F,
    "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65,
}  # fmt: skip
BASIC = [c for c in BASIC_TABLE if c != ESC]
EXTENSION = list(EXTENSION_TABLE)
ROMANIAN = list("ăâîșțĂÂÎȘȚç")
EMOJI = ["😀", "👍", "🚀", "𝄞"]


def septets(text: str) -> list[int]:
    """GSM-7 septet codes of `text` (test-side reference encoder)."""
    out: list[int] = []
    for char in text:
        if char in EXTENSION_TABLE:
            out += [0x1B, EXTENSION_TABLE[char]]
        else:
            out.append(BASIC_TABLE.index(char))
    return out


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def is_gsm(text: str) -> bool:
    return all(c in EXTENSION_TABLE or (c in BASIC_TABLE and c != ESC) for c in text)


gsm_char = st.one_of(st.sampled_from(BASIC), st.sampled_from(EXTENSION))
gsm_text = st.text(alphabet=gsm_char, max_size=800)
any_char = st.one_of(
    gsm_char,
    st.sampled_from(ROMANIAN),
    st.sampled_from(EMOJI),
    st.characters(min_codepoint=0x10000),  # astral: surrogate pairs in UTF-16
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),  # lone surrogates
    st.characters(),
)
any_text = st.text(alphabet=any_char, max_size=800)


@st.composite
def near_boundary(draw: st.DrawFn) -> str:
    """Filler up to a part boundary, a 2-unit character, more filler."""
    ucs2 = draw(st.booleans())
    filler = st.sampled_from(ROMANIAN + BASIC) if ucs2 else st.sampled_from(BASIC)
    wide = st.sampled_from(EMOJI) if ucs2 else st.sampled_from(EXTENSION)
    pieces: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        per_part = 67 if ucs2 else 153
        count = draw(st.integers(per_part - 3, per_part + 1))
        pieces.append(draw(st.text(alphabet=filler, min_size=count, max_size=count)))
        pieces.append(draw(wide))
    if ucs2:
        pieces.append("ă")
    return "".join(pieces)


all_texts = st.one_of(any_text, gsm_text, near_boundary())


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("a" * 152 + "€" + "a" * 152, 3),  # the € cannot straddle parts 1 and 2
        ("a" * 151 + "€" + "a" * 153, 2),
        ("€" * 80, 1),
        ("€" * 81, 2),
        ("ă" * 70, 1),
        ("ă" * 71, 2),
        ("ă" * 66 + "😀" + "ă" * 66, 3),  # the emoji cannot straddle parts 1 and 2
        ("ă" * 65 + "😀" + "ă" * 67, 2),
        ("😀" * 35, 1),
        ("😀" * 36, 2),
    ],
)
def test_known_edge_cases(text: str, parts: int) -> None:
    assert count_parts(text).parts == parts
    assert len(split_parts(text)) == parts


def test_empty_text_is_one_gsm_part() -> None:
    assert count_parts("") == Parts("GSM-7", 1, 0, ())
    assert split_parts("") == [""]


def test_charset_matches_gsm_0338() -> None:
    assert set(BASIC + EXTENSION) == GSM_CHARS
    assert count_parts("".join(BASIC)) == Parts("GSM-7", 1, 127, ())


@pytest.mark.parametrize("char", EXTENSION)
def test_extension_characters_cost_two_septets(char: str) -> None:
    assert count_parts("a" + char) == Parts("GSM-7", 1, 3, ())


def test_only_capital_c_cedilla_is_gsm() -> None:
    assert count_parts("Ç").encoding == "GSM-7"
    assert count_parts("ç").encoding == "UCS-2"


def test_characters_forcing_ucs2_are_reported_once_in_order() -> None:
    result = count_parts("Bună ziua, îți mulțumim! ă ț 😀")
    assert result.encoding == "UCS-2"
    assert result.ucs2_chars == ("ă", "î", "ț", "😀")
    assert result.units == 31  # 30 code points, the emoji is 2 UTF-16 units


@pytest.mark.parametrize("char", ["`", "\t", "\x1b", "\x00", "ç", "Ă", "’", "…", "😀"])
def test_non_gsm_characters_force_ucs2(char: str) -> None:
    result = count_parts("Hello " + char)
    assert result.encoding == "UCS-2"
    assert result.ucs2_chars == (char,)


@given(all_texts)
@example("a" * 152 + "€" + "a" * 152)
@example("ă" * 66 + "😀" + "ă" * 66)
@example("ă" * 66 + "\ud83d\ude00" + "ă" * 66)  # a pair given as two code points
@settings(max_examples=400)
def test_split_agrees_with_count_and_respects_limits(text: str) -> None:
    result = count_parts(text)
    parts = split_parts(text)
    assert "".join(parts) == text
    assert len(parts) == result.parts
    gsm = is_gsm(text)
    assert result.encoding == ("GSM-7" if gsm else "UCS-2")
    if gsm:
        assert result.units == len(septets(text))
        assert result.ucs2_chars == ()
    else:
        assert result.units == utf16_units(text)
        forcing = [c for c in text if not (c in EXTENSION_TABLE or (c in BASIC and c != ESC))]
        assert list(result.ucs2_chars) == list(dict.fromkeys(forcing))
    single, per_part = (160, 153) if gsm else (70, 67)
    assert (result.parts == 1) == (result.units <= single)
    if result.parts > 1:
        for part in parts:
            assert 0 < (len(septets(part)) if gsm else utf16_units(part)) <= per_part
        # Greedy packing loses at most one unit per part.
        assert -(-result.units // per_part) <= result.parts <= -(-result.units // (per_part - 1))
    offset = 0
    for part in parts[:-1]:
        offset += len(part)
        if gsm:
            assert septets(part)[-1] != 0x1B  # never ends inside an escape
        else:  # never starts with the low half of a pair
            assert not (
                "\ud800" <= text[offset - 1] <= "\udbff" and "\udc00" <= text[offset] <= "\udfff"
            )


@given(gsm_text, gsm_char)
def test_parts_are_monotonic_in_length_for_gsm_text(text: str, extra: str) -> None:
    assert count_parts(text).parts <= count_parts(text + extra).parts
    assert count_parts(text).parts <= count_parts(extra + text).parts


@given(any_text)
def test_cached_and_fresh_results_agree(text: str) -> None:
    assert count_parts(text) == count_parts.__wrapped__(text)

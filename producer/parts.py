"""Exact SMS part counting and splitting (GSM 03.38 / UCS-2). Pure, no I/O.

Hand-written on purpose: no maintained library counts parts correctly
(`sms-counter` counts an emoji as one unit, `smsutil` is unmaintained since
2020; see docs/ARCHITECTURE.md, "Measured facts").

- GSM-7 if every character is in the GSM 03.38 basic or extension table; an
  extension character (``^ { } \\ [ ] ~ | €`` and form feed) costs 2 septets
  (escape + char). Only capital ``Ç`` is GSM; ``ç`` and ``ă â î ș ț`` are not.
- Otherwise UCS-2, counted in UTF-16 code units (an emoji outside the BMP is a
  surrogate pair: 2 units).
- One part holds 160 septets / 70 units; in a multipart message each part holds
  153 / 67, and a 2-septet escape or a surrogate pair is never split across
  parts, so a part may end one unit short. An empty text is still one SMS.

`count_parts` runs once per recipient, so it avoids per-character Python loops
and caches by text (most jobs share one text). `split_parts` is a plain
character walk; the tests check that the two always agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import filterfalse
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38 basic table, minus 0x1B (the escape itself is not a character).
_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXTENSION = "\f^{}\\[~]|€"
GSM_CHARS: frozenset[str] = frozenset(_BASIC + _EXTENSION)
EXTENSION_CHARS: frozenset[str] = frozenset(_EXTENSION)
# ASCII characters outside GSM: controls other than LF/CR/FF, backtick, DEL.
_ASCII_NON_GSM = frozenset(chr(i) for i in range(128)) - GSM_CHARS
_EXT_RE = re.compile("[" + re.escape(_EXTENSION) + "]")
# A UTF-16 pair: an astral char, or (from lone-surrogate input) a high + low code point.
_PAIR_RE = re.compile("[\U00010000-\U0010ffff]|[\ud800-\udbff][\udc00-\udfff]")

GSM_SINGLE_SEPTETS = 160
GSM_PART_SEPTETS = 153
UCS2_SINGLE_UNITS = 70
UCS2_PART_UNITS = 67


@dataclass(frozen=True, slots=True)
class Parts:
    encoding: Encoding
    parts: int  # at least 1: an empty text is still one SMS
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    ucs2_chars: tuple[str, ...]  # distinct chars that forced UCS-2, first appearance first


def _multipart(units: int, pair_starts: list[int], per_part: int) -> int:
    """Parts needed when a 2-unit item starting at one of `pair_starts` cannot straddle."""
    if not pair_starts:
        return -(-units // per_part)
    straddling = set(pair_starts)
    start, parts = 0, 1
    while units - start > per_part:
        # A pair at the part's last slot moves whole to the next part.
        start += per_part - 1 if start + per_part - 1 in straddling else per_part
        parts += 1
    return parts


def _is_gsm(text: str) -> bool:
    if text.isascii():
        return _ASCII_NON_GSM.isdisjoint(text)
    return GSM_CHARS.issuperset(text)


@lru_cache(maxsize=4096)
def count_parts(text: str) -> Parts:
    """Encoding, parts and units of `text`, as the network will bill it."""
    if _is_gsm(text):
        escapes = [m.start() + k for k, m in enumerate(_EXT_RE.finditer(text))]
        units = len(text) + len(escapes)
        if units <= GSM_SINGLE_SEPTETS:
            return Parts("GSM-7", 1, units, ())
        return Parts("GSM-7", _multipart(units, escapes, GSM_PART_SEPTETS), units, ())
    forcing = tuple(dict.fromkeys(filterfalse(GSM_CHARS.__contains__, text)))
    units = len(text.encode("utf-16-le", "surrogatepass")) // 2
    if units <= UCS2_SINGLE_UNITS:
        return Parts("UCS-2", 1, units, forcing)
    pair_starts: list[int] = []
    astral_before = 0  # each astral char adds one unit beyond its one code point
    for match in _PAIR_RE.finditer(text):
        pair_starts.append(match.start() + astral_before)
        astral_before += len(match.group()) == 1
    return Parts("UCS-2", _multipart(units, pair_starts, UCS2_PART_UNITS), units, forcing)


def _tokens(text: str, gsm: bool) -> list[tuple[str, int]]:
    """`text` as unsplittable pieces with their cost in septets or UTF-16 units."""
    if gsm:
        return [(c, 2 if c in EXTENSION_CHARS else 1) for c in text]
    tokens: list[tuple[str, int]] = []
    i = 0
    while i < len(text):
        char = text[i]
        if (
            "\ud800" <= char <= "\udbff"
            and i + 1 < len(text)
            and "\udc00" <= text[i + 1] <= "\udfff"
        ):
            tokens.append((text[i : i + 2], 2))
            i += 2
            continue
        tokens.append((char, 2 if char > "\uffff" else 1))
        i += 1
    return tokens


def split_parts(text: str) -> list[str]:
    """The parts `text` is sent as; joined they give `text` back."""
    gsm = _is_gsm(text)
    single, per_part = (
        (GSM_SINGLE_SEPTETS, GSM_PART_SEPTETS) if gsm else (UCS2_SINGLE_UNITS, UCS2_PART_UNITS)
    )
    tokens = _tokens(text, gsm)
    if sum(cost for _, cost in tokens) <= single:
        return [text]
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for piece, cost in tokens:
        if used + cost > per_part:
            parts.append("".join(current))
            current, used = [], 0
        current.append(piece)
        used += cost
    parts.append("".join(current))
    return parts

"""GSM-7 transliteration (a job's ``transliterate: true``). Pure, no I/O.

One typographic apostrophe makes a 150-character text UCS-2: 3 parts instead
of 1. ``transliterate`` replaces every character outside GSM 03.38 that has a
GSM-7 form, keeping as much of the text as GSM-7 can carry:

- a character GSM-7 has is never replaced (``ä é ñ ø Å ß Ç ΔΩ`` stay);
- letters with a diacritic GSM-7 lacks lose it (``ă â î ș ț ş ğ ı ł ź ě ů
  ê ô ã õ Ì À`` → ``a a i s t s g i l z e u e o a o I A``), but a letter whose
  diacritic GSM-7 has keeps it (``ǻ`` → ``å``); Hungarian ``ő ű`` (long ö, ü)
  become ``ö ü``; ``ç`` becomes ``Ç``: GSM 03.38 has one c-cedilla, drawn as a
  capital but meant for French and Portuguese ç (Unicode's GSM0338 table
  says so, and many handsets draw it small), which keeps the cedilla;
- typographic quotes, dashes, ellipsis, primes → ``' " - ...``; guillemets
  ``« »`` → ``"``, ``‹ ›`` → ``'``; every Unicode space (no-break, thin,
  ideographic, ...) → a space, tab → a space, line and paragraph separators
  → a newline; invisible format characters (zero-width spaces and joiners,
  soft hyphen, byte order mark, direction marks) are dropped; ligatures
  ``ﬁ œ`` are spelled out; Greek capitals drawn as Latin ones (``Α Β Ε``...)
  become those Latin letters;
- a text is read in NFC first, so a letter written with a combining accent
  (``a`` + U+0308) counts as the one letter (``ä``); a combining mark left
  over is dropped.

All or nothing: a text that still has a character with no GSM-7 form (an
emoji, Cyrillic, ``°`` or ``©``) is returned as written. It goes UCS-2
either way, and replacing the others would only lose their accents. So is a
text that would need more parts in GSM-7 (``…`` is one UCS-2 unit but three
septets: seventy of them are one part as written, two replaced).

Library: ``anyascii`` (ISC licence, released 2025, one table for all of
Unicode, no dependencies) gives the ASCII form of the Latin letters and
punctuation no rule above covers (``ł`` → ``l``, ``đ`` → ``d``, ``œ`` →
``oe``). ``unidecode`` is GPL, which a library other applications install
cannot carry; ``text-unidecode`` is unmaintained since 2019; no GSM-specific
package transliterates (``gsm0338`` is only a codec). Neither alone knows
GSM-7, so the rules above pick what it has, and only Latin letters,
punctuation and spaces are looked up: ``anyascii`` would spell Chinese as
pinyin, which is no replacement.

``transliterate`` is cached by text like ``count_parts`` (most jobs share one
text); the table is built once, on first use.
"""

from __future__ import annotations

import unicodedata
from functools import cache, lru_cache

from anyascii import anyascii

from producer.parts import GSM_CHARS, count_parts

# Fixed replacements, before any rule.
_FIXED: dict[str, str] = {
    "ç": "Ç",
    "ő": "ö",
    "Ő": "Ö",
    "ű": "ü",
    "Ű": "Ü",
    "«": '"',
    "»": '"',
    "‹": "'",
    "›": "'",
    "`": "'",
    "´": "'",
    "\t": " ",
    "\u2028": "\n",
    "\u2029": "\n",
    "ª": "a",
    "º": "o",
    "−": "-",  # minus sign
    # Greek capitals drawn as Latin ones (GSM-7 has the other Greek capitals).
    "Α": "A",
    "Β": "B",
    "Ε": "E",
    "Ζ": "Z",
    "Η": "H",
    "Ι": "I",
    "Κ": "K",
    "Μ": "M",
    "Ν": "N",
    "Ο": "O",
    "Ρ": "P",
    "Τ": "T",
    "Υ": "Y",
    "Χ": "X",
    "Ά": "A",
    "Έ": "E",
    "Ή": "H",
    "Ί": "I",
    "Ό": "O",
    "Ύ": "Y",
    "Ώ": "Ω",
    "Ϊ": "I",
    "Ϋ": "Y",
}
# Invisible format characters: dropped.
_DROPPED = (
    "\u00ad\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)
# Where the rules look: Latin-1 Supplement to Latin Extended-B, combining
# marks, Latin Extended Additional, General Punctuation, alphabetic ligatures.
_RANGES = ((0x00A0, 0x024F), (0x0300, 0x036F), (0x1E00, 0x1EFF), (0x2000, 0x205F))
_EXTRA = "\u3000\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06"
# General Punctuation whose ASCII form misleads (per mille as "%0", reversed primes).
_SKIPPED = frozenset("‰‱‵‶‷")


def _gsm(text: str) -> bool:
    return bool(text) and GSM_CHARS.issuperset(text)


def _letter(char: str) -> str | None:
    """The GSM-7 form of a Latin letter GSM-7 lacks, or None."""
    decomposed = unicodedata.normalize("NFD", char)
    base, marks = decomposed[0], decomposed[1:]
    for mark in marks:  # a diacritic GSM-7 has on this letter (ǻ → å)
        kept = unicodedata.normalize("NFC", base + mark)
        if len(kept) == 1 and kept in GSM_CHARS:
            return kept
    if marks and base in GSM_CHARS:
        return base
    ascii_form = anyascii(char)
    return ascii_form if _gsm(ascii_form) and ascii_form.isalpha() else None


def _replacement(char: str) -> str | None:
    """What ``char`` (outside GSM-7) becomes; None: it has no GSM-7 form."""
    if char in _FIXED:
        return _FIXED[char]
    if char in _DROPPED or "\u0300" <= char <= "\u036f":  # leftover combining marks too
        return ""
    category = unicodedata.category(char)
    if category == "Zs":
        return " "
    if category.startswith("L") and unicodedata.name(char, "").startswith("LATIN "):
        return _letter(char)
    if category.startswith("P") and "\u2000" <= char <= "\u206f" and char not in _SKIPPED:
        ascii_form = anyascii(char)
        return ascii_form if _gsm(ascii_form) else None
    return None


@cache
def table() -> dict[int, str]:
    """Every replacement, as a ``str.translate`` table (code point → text)."""
    chars = [chr(cp) for low, high in _RANGES for cp in range(low, high + 1)]
    chars += [*_FIXED, *_DROPPED, *_EXTRA]
    replacements: dict[int, str] = {}
    for char in chars:
        if char in GSM_CHARS:
            continue
        replacement = _replacement(char)
        if replacement is not None:
            replacements[ord(char)] = replacement
    return replacements


def gsm_form(text: str) -> str | None:
    """``text`` with every replacement made; None if a character has no GSM-7 form."""
    if GSM_CHARS.issuperset(text):
        return text
    replacements = table()
    replaced = unicodedata.normalize("NFC", text).translate(replacements)
    if GSM_CHARS.issuperset(replaced):
        return replaced
    # A composition may have no GSM-7 form ("=" + U+0338 is "≠"): its parts.
    parts = {
        ord(char): unicodedata.normalize("NFD", char).translate(replacements)
        for char in set(replaced) - GSM_CHARS
    }
    if all(GSM_CHARS.issuperset(part) for part in parts.values()):
        return replaced.translate(parts)
    return None


@lru_cache(maxsize=4096)
def transliterate(text: str) -> str:
    """``text`` in GSM-7 where every character has a GSM-7 form and that
    costs no more parts; else as written."""
    gsm = gsm_form(text)
    if gsm is None or gsm == text or count_parts(gsm).parts > count_parts(text).parts:
        return text
    return gsm


def replaced_chars(text: str) -> tuple[str, ...]:
    """The distinct characters ``transliterate`` replaces in ``text``, first
    appearance first; none when it leaves the text as written."""
    if transliterate(text) == text:
        return ()
    return tuple(dict.fromkeys(c for c in text if c not in GSM_CHARS))

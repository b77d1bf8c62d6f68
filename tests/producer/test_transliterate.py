"""GSM-7 transliteration (`transliterate: true`): what it replaces, what it
never touches, and that the parts it leads to are the sender's count."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from producer.parts import GSM_CHARS, count_parts
from producer.transliterate import gsm_form, replaced_chars, table, transliterate

MAPPED = sorted(chr(code) for code in table())
GSM = sorted(GSM_CHARS)
gsm_text = st.text(alphabet=st.sampled_from(GSM), max_size=400)
mapped_text = st.text(alphabet=st.sampled_from(GSM + MAPPED), max_size=400)
any_text = st.text(max_size=300)


@pytest.mark.parametrize(
    ("written", "sent"),
    [
        (
            "Programarea dvs. este mâine, ședință în țară",
            "Programarea dvs. este maine, sedinta in tara",
        ),
        ("Şedinţă (cedilla forms)", "Sedinta (cedilla forms)"),
        ("It’s “fine” — really…", 'It\'s "fine" - really...'),
        ("„Gänsefüßchen“ und ‚halbe‘", "\"Gänsefüßchen\" und 'halbe'"),
        ("«Bonjour» ‹oui›", "\"Bonjour\" 'oui'"),
        ("Zażółć gęślą jaźń", "Zazolc gesla jazn"),
        ("Příliš žluťoučký kůň", "Prilis zlutoucky kun"),
        ("İstanbul’da şoför ağır ığdır", "Istanbul'da soför agir igdir"),
        ("garçon Ça Noël être", "garÇon Ça Noel etre"),
        ("não coração 1º ação", "nao coraÇao 1o aÇao"),
        ("Árvíztűrő tükörfúrógép", "Arviztürö tükörfurogép"),
        ("a\u00a0b\u2009c\u202fd\u3000e\u200bf\u00adg\ufeffh", "a b c d efgh"),
        ("tab\there", "tab here"),
        ("a\u0308 e\u0301 s\u0326", "ä é s"),  # combining marks: composed first
        ("ΑΘΗΝΑ", "AΘHNA"),  # Greek capitals drawn as Latin ones
        ("ǻ ǿ", "å ø"),  # a diacritic GSM-7 has on that letter is kept
    ],
)
def test_known_texts(written: str, sent: str) -> None:
    assert transliterate(written) == sent
    assert count_parts(sent).encoding == "GSM-7"


@pytest.mark.parametrize(
    "text",
    [
        "Größe Äpfel über",
        "señor año ¿qué?",
        "Ça où è ì ò ù é É ø Ø å Å æ Æ ß ΔΦΓΛΩΠΨΣΘΞ",
        "{[~]}€^|\\",
    ],
)
def test_characters_gsm_7_has_are_never_replaced(text: str) -> None:
    assert transliterate(text) == text
    assert replaced_chars(text) == ()


@pytest.mark.parametrize("text", ["mâine 😀", "Привет, țară", "25 °C – ș", "© ș", "中文 ă"])
def test_a_character_without_a_gsm_7_form_keeps_the_text_as_written(text: str) -> None:
    assert transliterate(text) == text
    assert count_parts(text).encoding == "UCS-2"
    assert replaced_chars(text) == ()


def test_the_replaced_characters_are_distinct_in_order() -> None:
    assert replaced_chars("ț’ă ț’") == ("ț", "’", "ă")


def test_one_apostrophe_halves_the_parts() -> None:
    text = "Your appointment is tomorrow at 10:00. We’re looking forward to it! " * 2
    assert count_parts(text).parts == 3
    assert count_parts(transliterate(text)).parts == 1


def test_the_table_never_maps_a_gsm_character_and_maps_only_to_gsm() -> None:
    for code, replacement in table().items():
        assert chr(code) not in GSM_CHARS
        assert GSM_CHARS.issuperset(replacement), (chr(code), replacement)


@given(gsm_text)
def test_a_gsm_7_text_is_never_changed(text: str) -> None:
    assert transliterate(text) == text


@given(mapped_text)
@example("=\u0338 a\u0308")  # composes to "≠", which has no GSM-7 form of its own
@example("Ώ\u0301Α\u0301")
def test_a_text_of_gsm_or_mapped_characters_becomes_gsm_7(text: str) -> None:
    gsm = gsm_form(text)
    assert gsm is not None and GSM_CHARS.issuperset(gsm)
    sent = transliterate(text)
    if count_parts(gsm).parts <= count_parts(text).parts:
        assert sent == gsm
        assert count_parts(sent).encoding == "GSM-7"
    else:  # never more parts than as written
        assert sent == text


def test_a_text_that_would_need_more_parts_is_sent_as_written() -> None:
    text = "…" * 70  # one UCS-2 part; 210 septets would be two
    assert gsm_form(text) == "..." * 70
    assert transliterate(text) == text
    assert transliterate("…" * 40) == "..." * 40  # one part either way


@given(any_text)
@example("mâine 😀")
@example("x\u0301\ud83d")
def test_idempotent_and_counted_as_the_sender_counts(text: str) -> None:
    sent = transliterate(text)
    assert transliterate(sent) == sent
    assert sent == text or GSM_CHARS.issuperset(sent)
    assert count_parts(sent).parts <= count_parts(text).parts
    assert count_parts(sent) == count_parts.__wrapped__(sent)

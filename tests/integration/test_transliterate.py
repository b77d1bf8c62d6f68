"""``transliterate: true`` against a real worker and the sandbox: the
provider gets the GSM-7 text, and segments follow it; without the flag the
same text goes UCS-2, in more parts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from producer.parts import GSM_CHARS, count_parts
from tests.integration.stack import Stack, make_stack, ro_numbers

pytestmark = pytest.mark.integration

# 86 characters: UCS-2 (2 parts) as written for its apostrophe and diacritics.
TEXT = "Bună ziua! Programarea dvs. e mâine la ora 10:00, în ședința de la țară – we’re ready."
SENT = "Buna ziua! Programarea dvs. e maine la ora 10:00, in sedinta de la tara - we're ready."


@pytest.fixture(scope="module")
def stack(valkey: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = valkey.connection_url  # type: ignore[attr-defined]
    redis.Redis.from_url(url).flushall()
    built = make_stack(url, tmp_path_factory.mktemp("transliterate"), workers=1)
    try:
        yield built
    finally:
        built.stop()


def sent_texts(stack: Stack, numbers: list[str]) -> dict[str, str]:
    rows = stack.sandbox_get("/_sandbox/sent?kind=sendbulk")
    return {row["number"]: row["text"] for row in rows if row["number"][1:] in numbers}


@pytest.mark.parametrize(("transliterate", "text", "segments"), [(True, SENT, 1), (False, TEXT, 2)])
def test_the_sandbox_gets_the_text_as_sent_and_segments_follow_it(
    stack: Stack, transliterate: bool, text: str, segments: int
) -> None:
    assert count_parts(TEXT).parts == 2 and count_parts(SENT).encoding == "GSM-7"
    numbers = ro_numbers(20, start=1000 if transliterate else 2000)
    producer = stack.producer()
    job_id = producer.submit(
        {
            "provider": "bulk",
            "text": TEXT,
            "transliterate": transliterate,
            "messages": [{"to": n} for n in numbers],
        }
    )
    status = stack.wait_for(job_id, 60)
    assert status.counts["accepted"] == 20
    got = sent_texts(stack, numbers)
    assert len(got) == 20 and set(got.values()) == {text}
    assert GSM_CHARS.issuperset(text) is transliterate
    results = list(producer.results(job_id))
    assert [r.segments for r in results] == [segments] * 20
    producer.close()

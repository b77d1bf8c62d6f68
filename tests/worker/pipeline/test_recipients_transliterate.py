"""A job's ``transliterate``: the text sent and its segments are the
transliterated text's, one-account and route alike; without it, as written."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from producer.core.settings import settings_of
from producer.core.store import StoredMessage
from producer.parts import count_parts
from producer.routes import Route
from producer.transliterate import transliterate
from tests.worker.providers.helpers import account
from worker.pipeline.recipients import prepare, route
from worker.providers.gosms import GosmsAdapter

TEXT = "Vă așteptăm mâine la ora 10:00 – it’s on us. " * 2  # 92 chars: 2 UCS-2 parts


def adapter() -> GosmsAdapter:
    return GosmsAdapter(account("gosms", base_url="https://api.gosms.ro", api_key="k"))


def test_transliterated_text_and_segments_are_sent() -> None:
    messages = [(0, StoredMessage("0712345678")), (1, StoredMessage("0712345679", "Bună ziua"))]
    sent, _ = prepare(adapter(), messages, TEXT, None, transliterate=True)
    assert [(r.text, r.segments) for r in sent] == [(transliterate(TEXT), 1), ("Buna ziua", 1)]
    assert "ă" not in (sent[0].text or "") and "’" not in (sent[0].text or "")
    written, _ = prepare(adapter(), messages, TEXT, None)
    assert [(r.text, r.segments) for r in written] == [(TEXT, 2), ("Bună ziua", 1)]


def test_a_route_job_sends_the_transliterated_text() -> None:
    gosms = adapter()
    on = Route("r", accounts=(gosms.account.name,), default_region="RO")
    routed = route(
        on,
        {gosms.account.name: gosms},
        [(0, StoredMessage("0712345678"))],
        {},
        TEXT,
        None,
        {},
        transliterate=True,
    )
    [sent] = routed.groups[gosms.account.name]
    assert (sent.text, sent.segments) == (transliterate(TEXT), 1)


@given(st.text(max_size=200))
def test_segments_are_the_count_of_the_text_sent(text: str) -> None:
    sent, rejected = prepare(
        adapter(), [(0, StoredMessage("0712345678", text))], None, None, transliterate=True
    )
    for r in sent:
        assert r.text == transliterate(text)
        assert r.segments == count_parts(r.text).parts


def test_the_setting_is_read_from_the_stored_spec_and_off_by_default() -> None:
    assert settings_of('{"provider": "ro"}').transliterate is False
    assert settings_of('{"provider": "ro", "transliterate": true}').transliterate is True

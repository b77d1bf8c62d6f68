from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from producer.core.store import (
    STATUS_CODES,
    StoredMessage,
    StoredOutcome,
    decode_block,
    decode_outcome,
    encode_block,
    encode_outcome,
)
from producer.job import Message

texts = st.none() | st.text(max_size=40)


@given(
    st.lists(
        st.builds(
            Message,
            to=st.text(min_size=1, max_size=20),
            text=texts,
            params=st.none() | st.lists(st.text(max_size=5), max_size=3),
            ref=texts,
        ),
        min_size=1,
        max_size=30,
    )
)
def test_message_blocks_round_trip(messages: list[Message]) -> None:
    raw = encode_block(messages)
    assert decode_block(raw) == [StoredMessage(m.to, m.text, m.params, m.ref) for m in messages]
    assert raw == _json_dumps(json.loads(raw))  # orjson writes what json wrote before it


@given(
    st.builds(
        StoredOutcome,
        status=st.sampled_from(list(STATUS_CODES)),
        e164=st.none() | st.just("+40712345678"),
        provider_message_id=st.none() | st.text(max_size=36),
        segments=st.none() | st.integers(1, 255),
        cost=st.none() | st.just("0.03"),
        currency=st.none() | st.just("EUR"),
        error_code=st.none() | st.just("1006"),
        error=texts,
        attempts=st.integers(0, 10),
        # Epochs. (Below 1e-4 orjson writes 0.00006103515625 where json
        # wrote 6.103515625e-05: the same number, other bytes.)
        updated_at=st.none() | st.floats(1e9, 4e9),
        account=st.none() | st.text(max_size=12),
        since=st.none() | st.integers(0, 100),
    )
)
def test_outcomes_round_trip_and_start_with_their_status_code(outcome: StoredOutcome) -> None:
    raw = encode_outcome(outcome)
    # The commit script reads the old status from the third byte: ["a", ...
    assert raw[2] == STATUS_CODES[outcome.status]
    assert decode_outcome(raw) == outcome
    assert raw == _json_dumps(json.loads(raw))


def _json_dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_pending_block_is_compact() -> None:
    block = encode_block([Message(to="0712345678")] * 1000)
    assert len(block) / 1000 <= 16

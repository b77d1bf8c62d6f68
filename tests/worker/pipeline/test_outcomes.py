"""The failure semantics table (worker/pipeline/outcomes.py) and retry backoff (worker/pipeline/retry.py)."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.core.store import StoredOutcome
from producer.job import FINAL_STATUSES
from worker.ops.config import parse_account
from worker.pipeline.outcomes import from_result, is_final, simple
from worker.pipeline.retry import backoff_s, retry_delay_s
from worker.providers.account import Account
from worker.providers.base import Recipient, RecipientResult, Verdict

MAX_ATTEMPTS = 3


def make_account(**table: Any) -> Account:
    raw: dict[str, Any] = {
        "kind": "sendbulk",
        "base_url": "https://provider.example",
        "default_region": "RO",
        "partner_id": "p",
        "api_key": "k",
        "shortcode": "S",
        "max_attempts": MAX_ATTEMPTS,
    }
    raw.update(table)
    return parse_account("acct", raw)


def make_recipient(segments: int | None = 1) -> Recipient:
    return Recipient(
        index=7,
        e164="+40712345678",
        address="40712345678",
        text="hi",
        params=None,
        sender=None,
        segments=segments,
    )


AT_MOST_ONCE, AT_LEAST_ONCE = True, False
BELOW_MAX, AT_MAX = MAX_ATTEMPTS - 1, MAX_ATTEMPTS

# docs/INTERFACE.md, "Failure semantics": (verdict, at_most_once, attempt) -> status.
# RETRY: could not connect, HTTP 429 or 5xx. UNCERTAIN: read timeout, connection
# lost after sending, a 200 that omits the recipient or cannot be read.
TABLE = [
    (Verdict.ACCEPTED, AT_MOST_ONCE, BELOW_MAX, "accepted"),
    (Verdict.ACCEPTED, AT_MOST_ONCE, AT_MAX, "accepted"),
    (Verdict.ACCEPTED, AT_LEAST_ONCE, BELOW_MAX, "accepted"),
    (Verdict.ACCEPTED, AT_LEAST_ONCE, AT_MAX, "accepted"),
    (Verdict.FAILED, AT_MOST_ONCE, 1, "failed"),
    (Verdict.FAILED, AT_LEAST_ONCE, 1, "failed"),
    (Verdict.FAILED, AT_MOST_ONCE, AT_MAX, "failed"),
    (Verdict.FAILED, AT_LEAST_ONCE, AT_MAX, "failed"),
    (Verdict.RETRY, AT_MOST_ONCE, 1, "pending"),
    (Verdict.RETRY, AT_MOST_ONCE, BELOW_MAX, "pending"),
    (Verdict.RETRY, AT_MOST_ONCE, AT_MAX, "failed"),
    (Verdict.RETRY, AT_LEAST_ONCE, BELOW_MAX, "pending"),
    (Verdict.RETRY, AT_LEAST_ONCE, AT_MAX, "failed"),
    (Verdict.UNCERTAIN, AT_MOST_ONCE, 1, "unknown"),
    (Verdict.UNCERTAIN, AT_MOST_ONCE, AT_MAX, "unknown"),
    (Verdict.UNCERTAIN, AT_LEAST_ONCE, 1, "pending"),
    (Verdict.UNCERTAIN, AT_LEAST_ONCE, BELOW_MAX, "pending"),
    (Verdict.UNCERTAIN, AT_LEAST_ONCE, AT_MAX, "failed"),
]


@pytest.mark.parametrize(("verdict", "at_most_once", "attempt", "status"), TABLE)
def test_the_failure_semantics_table(
    verdict: Verdict, at_most_once: bool, attempt: int, status: str
) -> None:
    result = RecipientResult(verdict, error_code="500", error="provider answered HTTP 500")
    outcome = from_result(make_account(), at_most_once, make_recipient(), result, attempt)
    assert outcome.status == status
    assert outcome.attempts == attempt
    assert outcome.e164 == "+40712345678" and outcome.segments == 1
    assert is_final(outcome) == (status != "pending")


@pytest.mark.parametrize("verdict", [Verdict.RETRY, Verdict.UNCERTAIN])
def test_giving_up_says_after_how_many_attempts_and_keeps_the_last_error(verdict: Verdict) -> None:
    result = RecipientResult(verdict, error_code="429", error="provider answered HTTP 429")
    outcome = from_result(make_account(), AT_LEAST_ONCE, make_recipient(), result, AT_MAX)
    assert outcome.status == "failed" and outcome.error_code == "429"
    assert outcome.error == f"gave up after {AT_MAX} attempts: provider answered HTTP 429"


def test_a_permanent_error_keeps_the_providers_own_words() -> None:
    result = RecipientResult(Verdict.FAILED, error_code="1009", error="Invalid mobile")
    outcome = from_result(make_account(), AT_MOST_ONCE, make_recipient(), result, 1)
    assert (outcome.status, outcome.error_code, outcome.error) == (
        "failed",
        "1009",
        "Invalid mobile",
    )


@given(
    verdict=st.sampled_from(list(Verdict)),
    at_most_once=st.booleans(),
    attempt=st.integers(1, 20),
    max_attempts=st.integers(1, 20),
)
def test_never_pending_at_or_past_max_attempts(
    verdict: Verdict, at_most_once: bool, attempt: int, max_attempts: int
) -> None:
    account = make_account(max_attempts=max_attempts)
    outcome = from_result(
        account, at_most_once, make_recipient(), RecipientResult(verdict), attempt
    )
    if attempt >= max_attempts:
        assert outcome.status in FINAL_STATUSES
    if outcome.status == "unknown":
        assert at_most_once and verdict is Verdict.UNCERTAIN
    if verdict is Verdict.RETRY:  # never sent: safe to send again whatever the policy
        assert outcome.status == ("pending" if attempt < max_attempts else "failed")


# --- cost ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "segments", "cost"),
    [("0.035", 3, "0.105"), ("0.03", 1, "0.03"), ("0.1", None, "0.1"), ("0", 2, "0")],
)
def test_cost_is_price_per_part_times_parts_exactly(
    price: str, segments: int | None, cost: str
) -> None:
    account = make_account(price_per_part=Decimal(price), currency="EUR")
    outcome = from_result(
        account, AT_MOST_ONCE, make_recipient(segments), RecipientResult(Verdict.ACCEPTED), 1
    )
    assert (outcome.cost, outcome.currency) == (cost, "EUR")
    assert Decimal(outcome.cost) == Decimal(price) * (segments or 1)


def test_the_providers_own_cost_wins_over_the_price() -> None:
    account = make_account(price_per_part=Decimal("0.05"), currency="EUR")
    given_cost = RecipientResult(Verdict.ACCEPTED, cost="0.0412", currency="USD")
    outcome = from_result(account, AT_MOST_ONCE, make_recipient(2), given_cost, 1)
    assert (outcome.cost, outcome.currency) == ("0.0412", "USD")
    without_currency = RecipientResult(Verdict.ACCEPTED, cost="0.0412")
    outcome = from_result(account, AT_MOST_ONCE, make_recipient(2), without_currency, 1)
    assert (outcome.cost, outcome.currency) == ("0.0412", "EUR")


@pytest.mark.parametrize("verdict", [Verdict.FAILED, Verdict.RETRY, Verdict.UNCERTAIN])
def test_nothing_costs_what_was_not_accepted(verdict: Verdict) -> None:
    account = make_account(price_per_part=Decimal("0.05"), currency="EUR")
    outcome = from_result(account, AT_LEAST_ONCE, make_recipient(), RecipientResult(verdict), 1)
    assert outcome.cost is None


def test_no_price_no_cost() -> None:
    outcome = from_result(
        make_account(), AT_MOST_ONCE, make_recipient(), RecipientResult(Verdict.ACCEPTED), 1
    )
    assert (outcome.cost, outcome.currency) == (None, None)


def test_simple_outcomes_keep_the_number_and_attempts_they_had() -> None:
    previous = StoredOutcome("pending", e164="+40712345678", attempts=2)
    expired = simple("expired", previous, error="validity passed")
    assert (expired.status, expired.e164, expired.attempts) == ("expired", "+40712345678", 2)
    assert simple("rejected", None, error="invalid").attempts == 0
    assert not is_final(None) and not is_final(previous) and is_final(expired)


# --- retry backoff ---------------------------------------------------------------------

attempts = st.integers(1, 40)
seconds = st.floats(0.01, 3600, allow_nan=False, allow_infinity=False)


@given(attempt=attempts, base_s=seconds, max_s=seconds, seed=st.integers(0, 2**32))
def test_backoff_is_full_jitter_under_the_exponential_ceiling(
    attempt: int, base_s: float, max_s: float, seed: int
) -> None:
    delay = backoff_s(attempt, base_s, max_s, random.Random(seed))
    assert 0 <= delay <= min(max_s, base_s * 2 ** (attempt - 1))


@given(
    attempt=attempts,
    base_s=seconds,
    max_s=seconds,
    retry_after_s=st.none() | st.floats(0, 7200, allow_nan=False),
    cap_s=st.floats(1, 600, allow_nan=False),
    seed=st.integers(0, 2**32),
)
def test_retry_delay_never_below_retry_after_never_above_the_cap(
    attempt: int,
    base_s: float,
    max_s: float,
    retry_after_s: float | None,
    cap_s: float,
    seed: int,
) -> None:
    delay = retry_delay_s(attempt, base_s, max_s, retry_after_s, cap_s, random.Random(seed))
    assert 0 <= delay <= cap_s
    assert delay <= max_s  # a provider's Retry-After is honoured up to retry_max_s
    honoured_s = None if retry_after_s is None else min(retry_after_s, max_s)
    assert delay <= max(min(max_s, base_s * 2 ** (attempt - 1)), honoured_s or 0)
    if honoured_s is not None:
        # Past the cap the countdown stops at the cap (under the visibility
        # timeout); the account's limiter blocks sending until Retry-After.
        assert delay >= min(honoured_s, cap_s)
    # The same draw without Retry-After: the provider's figure only ever lengthens it.
    plain = retry_delay_s(attempt, base_s, max_s, None, cap_s, random.Random(seed))
    assert delay == min(max(plain, honoured_s or 0), cap_s) or plain == cap_s


@pytest.mark.parametrize("retry_after_s", [1e12, float("inf"), 1e308])
def test_a_retry_after_of_any_size_is_honoured_up_to_retry_max_s(retry_after_s: float) -> None:
    delay = retry_delay_s(1, base_s=1, max_s=2, retry_after_s=retry_after_s, cap_s=100)
    assert delay == 2


def test_a_retry_after_that_is_not_a_number_is_ignored() -> None:
    delay = retry_delay_s(1, 1, 2, float("nan"), 100, _Top())
    assert delay == 1  # the backoff's own ceiling, as without Retry-After


def test_jitter_spreads_over_the_whole_range() -> None:
    rng = random.Random(4)
    draws = [backoff_s(4, 1.0, 60.0, rng) for _ in range(2000)]
    assert max(draws) <= 8.0
    assert min(draws) < 0.2 and max(draws) > 7.8  # full jitter: from 0 to the ceiling
    assert 3.5 < sum(draws) / len(draws) < 4.5


def test_backoff_grows_until_retry_max_s() -> None:
    ceilings = [backoff_s(n, 1.0, 60.0, _Top()) for n in range(1, 10)]
    assert ceilings == [1, 2, 4, 8, 16, 32, 60, 60, 60]


class _Top(random.Random):
    """Always draws the top of the range: shows the ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b

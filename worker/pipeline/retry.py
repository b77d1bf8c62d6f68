"""Backoff for retryable failures: exponential with full jitter. Pure."""

from __future__ import annotations

import math
import random


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Delay before attempt ``attempt + 1``: uniform in [0, min(max, base * 2^(attempt-1))]."""
    ceiling = min(max_s, base_s * 2 ** max(attempt - 1, 0))
    return (rng or random).uniform(0, ceiling)


def retry_delay_s(
    attempt: int,
    base_s: float,
    max_s: float,
    retry_after_s: float | None,
    cap_s: float,
    rng: random.Random | None = None,
) -> float:
    """The backoff, never shorter than the provider's Retry-After honoured up
    to ``max_s`` (the account's retry_max_s: a provider cannot park a job with
    ``Retry-After: 1e12``), never longer than ``cap_s`` (kept under the
    broker's visibility timeout). A Retry-After that is not a number is none."""
    delay = backoff_s(attempt, base_s, max_s, rng)
    if retry_after_s is not None and not math.isnan(retry_after_s):
        delay = max(delay, min(retry_after_s, max_s))
    return min(delay, cap_s)

"""Backoff for retryable failures: exponential with full jitter. Pure."""

from __future__ import annotations

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
    """The backoff, never shorter than the provider's Retry-After, never
    longer than ``cap_s`` (kept under the broker's visibility timeout)."""
    delay = backoff_s(attempt, base_s, max_s, rng)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, cap_s)

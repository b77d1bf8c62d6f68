"""Money in Redis: whole millionths of the account's currency, never floats.

A job's ``max_cost`` and what its requests reserved (``spent``) are kept in
the job hash as integers of millionths (``cost_cap``, ``cost_spent``;
worker/pipeline/spend_cap.py), so that the scripts compare and add them
exactly; they are shown as decimal strings. A cost is rounded up to the
next millionth (a reservation is never less than the price says), a
give-back down.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

MICROS = 1_000_000  # units per one of the currency


def micros(amount: Decimal, round_up: bool = True) -> int:
    """``amount`` in whole millionths, rounded up (a cost) or down (a give-back)."""
    scaled = amount * MICROS
    return int(scaled.to_integral_value(ROUND_CEILING if round_up else ROUND_FLOOR))


def decimal_string(units: int) -> str:
    """Millionths as a plain decimal string without trailing zeros: 1500000 -> "1.5"."""
    return format((Decimal(units) / MICROS).normalize(), "f")

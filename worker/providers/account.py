"""One configured provider account: what an adapter is built from.

Read from the providers file by worker/ops/config.py; the adapters, the
pipeline and the runtime use it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from producer.job import SendWindow

NumberFormat = Literal["national", "00", "digits", "e164"]


@dataclass(frozen=True)
class Account:
    name: str
    kind: str
    base_url: str
    default_region: str
    sender: str | None
    messages_per_second: float
    requests_per_second: float
    burst_s: float
    batch_size: int
    max_parts: int
    max_attempts: int
    retry_base_s: float
    retry_max_s: float
    number_format: NumberFormat | None
    price_per_part: Decimal | None
    currency: str | None
    # Kept out of repr so that an account never prints its secrets.
    credentials: dict[str, str] = field(repr=False, default_factory=dict)
    # Guards and failover (worker/pipeline/daily_cap.py, circuit.py).
    daily_max_parts: int | None = None  # SMS parts a UTC day, every job and worker together
    failover_after_failures: int = 3  # consecutive failed requests that open the circuit
    failover_cooldown_s: float = 30.0  # how long it stays open before one probe
    send_window: SendWindow | None = None  # for the jobs that set none (pipeline/send_window.py)

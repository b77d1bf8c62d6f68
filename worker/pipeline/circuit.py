"""A circuit breaker per provider account, shared by every worker process on
every host through Redis (scripts circuit_gate.lua and circuit_record.lua,
one hash per account: ``producer.core.keys.circuit``).

``failover_after_failures`` consecutive requests that failed as "not sent"
(could not connect, HTTP 429, HTTP 5xx) open the account's circuit for
``failover_cooldown_s``, by the server's clock. Meanwhile `Circuits.gate`
says no, with the wait. Once the cool-down is over, exactly one caller of
all workers gets the probe (an atomic claim, which lapses after
`probe_claim_s` so that a probe whose worker died does not hold it); its
success closes the circuit, its failure re-opens it for another cool-down.

The healthy path costs one round trip per request: `gate` reads the hash
(one EVALSHA) and remembers the failure count it saw, and
``record(failed=False)`` calls Redis only when that count was above zero or
the request was the probe. So a success resets the count that this process
saw; failures that other workers record while the request is in flight are
reset by the next success whose gate saw them.

Each transition is logged (``circuit_opened``, ``circuit_closed``) by the
process that caused it, and ``smsbulk_account_circuit_open`` is set by any
process whose view of the account changes (worker/ops/metrics.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from producer.core import keys
from producer.core.scripts import async_script
from worker.ops import metrics
from worker.ops.logs import get_logger
from worker.providers.account import Account

log = get_logger()

PROBE_CLAIM_MIN_S = 60.0
# A circuit hash nobody has written for this long is forgotten (closed).
STATE_TTL_S = 86400


def probe_claim_s(account: Account) -> float:
    """How long one probe holds its claim: a cool-down, at least a minute."""
    return max(account.failover_cooldown_s, PROBE_CLAIM_MIN_S)


@dataclass(frozen=True, slots=True)
class Gate:
    send: bool  # the request may go now
    probe: bool  # it is the one probe of an open circuit whose cool-down has passed
    wait_s: float  # when not send: seconds until the cool-down ends (then a probe may go)
    failures: int = 0  # the consecutive failures the gate saw


class Circuits:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._gate = async_script("circuit_gate")
        self._record = async_script("circuit_record")
        self._failures: dict[str, int] = {}  # account -> the count its last gate saw
        self._open: dict[str, bool] = {}  # account -> this process's view, for the gauge

    async def gate(self, account: Account) -> Gate:
        """May a request go through ``account`` now? One Redis round trip."""
        send, probe, failures, wait_us = await self._gate(
            keys=[keys.circuit(account.name)],
            args=[account.failover_cooldown_s, probe_claim_s(account)],
            client=self.redis,
        )
        gate = Gate(bool(int(send)), bool(int(probe)), int(wait_us) / 1e6, int(failures))
        self._failures[account.name] = gate.failures
        self._seen(account, open_=not gate.send or gate.probe)
        return gate

    async def record(self, account: Account, *, failed: bool, probe: bool) -> bool:
        """After a request: failed = it failed as 'not sent' (could not connect, HTTP 429, 5xx).
        Returns True if this call opened (or re-opened) the circuit."""
        if not failed and not probe and not self._failures.get(account.name):
            return False  # healthy and closed as last seen: nothing to reset
        change, failures = await self._record(
            keys=[keys.circuit(account.name)],
            args=[
                int(failed),
                int(probe),
                account.failover_after_failures,
                account.failover_cooldown_s,
                STATE_TTL_S,
            ],
            client=self.redis,
        )
        change, failures = int(change), int(failures)
        self._failures[account.name] = failures
        if change > 0:
            log.warning(
                "circuit_opened",
                account=account.name,
                failures=failures,
                cooldown_s=account.failover_cooldown_s,
                probe=probe,
            )
            self._seen(account, open_=True, changed=True)
        elif change < 0:
            log.info(
                "circuit_closed",
                account=account.name,
                failures=failures,
                cooldown_s=account.failover_cooldown_s,
            )
            self._seen(account, open_=False, changed=True)
        return change > 0

    async def cooling_s(self, account: Account) -> float | None:
        """None if the account's circuit is closed; else how long until a
        probe may go (0: now). Claims nothing: a pass routes by it."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.circuit(account.name), "open_until", "probe_until")
        pipe.time()
        (open_until, probe_until), (seconds, micros) = await pipe.execute()
        if open_until is None:
            return None
        now = seconds + micros / 1e6
        return float(max(float(open_until) - now, float(probe_until or 0) - now, 0.0))

    async def is_open(self, account: Account) -> bool:
        """Whether the account's circuit is open (for status and metrics): no probe is claimed."""
        open_until = await self.redis.hget(keys.circuit(account.name), "open_until")
        return open_until is not None

    def _seen(self, account: Account, *, open_: bool, changed: bool = False) -> None:
        if changed or self._open.get(account.name) != open_:
            self._open[account.name] = open_
            metrics.set_circuit_open(account, open_)

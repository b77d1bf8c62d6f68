"""The per-account circuit breaker against a real Valkey server.

Each `Circuits` has its own connection, as a worker process would. Time is
the server's, so cool-downs are short (0.2 s) and waited for for real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from producer.core import keys
from worker.ops import metrics
from worker.pipeline import circuit
from worker.pipeline.circuit import Circuits, Gate
from worker.providers.account import Account

COOLDOWN_S = 0.2
ACCOUNT = Account(
    name="bulk",
    kind="sendbulk",
    base_url="http://127.0.0.1:9",
    default_region="RO",
    sender=None,
    messages_per_second=50,
    requests_per_second=5,
    burst_s=1,
    batch_size=100,
    max_parts=10,
    max_attempts=3,
    retry_base_s=1,
    retry_max_s=60,
    number_format=None,
    price_per_part=None,
    currency=None,
    failover_after_failures=3,
    failover_cooldown_s=COOLDOWN_S,
)
SLACK_S = 0.1

Scenario = Callable[[list[Circuits], aioredis.Redis], Awaitable[None]]


def run(redis_url: str, scenario: Scenario, clients: int = 1) -> None:
    async def main() -> None:
        connections = [aioredis.Redis.from_url(redis_url) for _ in range(clients)]
        try:
            await scenario([Circuits(c) for c in connections], connections[0])
        finally:
            for connection in connections:
                await connection.aclose()

    asyncio.run(main())


async def fail(c: Circuits, n: int, account: Account = ACCOUNT) -> list[bool]:
    opened = []
    for _ in range(n):
        assert (await c.gate(account)).send
        opened.append(await c.record(account, failed=True, probe=False))
    return opened


def gauge(account: Account = ACCOUNT) -> float | None:
    return metrics.local_registry().get_sample_value(
        "smsbulk_account_circuit_open", {"account": account.name, "kind": account.kind}
    )


def test_a_new_account_is_closed_and_healthy_requests_do_not_call_redis_again(
    redis_url: str,
) -> None:
    async def scenario(cs: list[Circuits], client: aioredis.Redis) -> None:
        (c,) = cs
        assert await c.gate(ACCOUNT) == Gate(send=True, probe=False, wait_s=0.0, failures=0)
        before = (await client.info("stats"))["total_commands_processed"]
        assert await c.record(ACCOUNT, failed=False, probe=False) is False
        after = (await client.info("stats"))["total_commands_processed"]
        assert after - before == 1  # the INFO itself
        assert not await c.is_open(ACCOUNT)
        assert await client.exists(keys.circuit(ACCOUNT.name)) == 0

    run(redis_url, scenario)


def test_n_consecutive_failures_open_the_circuit_not_n_minus_1(redis_url: str) -> None:
    async def scenario(cs: list[Circuits], client: aioredis.Redis) -> None:
        (c,) = cs
        assert await fail(c, 2) == [False, False]
        assert not await c.is_open(ACCOUNT)
        assert (await c.gate(ACCOUNT)).send
        assert await c.record(ACCOUNT, failed=True, probe=False) is True
        assert await c.is_open(ACCOUNT)
        gate = await c.gate(ACCOUNT)
        assert not gate.send and not gate.probe
        assert COOLDOWN_S - SLACK_S < gate.wait_s <= COOLDOWN_S

    run(redis_url, scenario)


def test_a_success_between_failures_resets_the_count(redis_url: str) -> None:
    async def scenario(cs: list[Circuits], client: aioredis.Redis) -> None:
        (c,) = cs
        await fail(c, 2)
        assert (await c.gate(ACCOUNT)).failures == 2
        assert await c.record(ACCOUNT, failed=False, probe=False) is False
        assert await fail(c, 2) == [False, False]
        assert not await c.is_open(ACCOUNT)
        assert await fail(c, 1) == [True]

    run(redis_url, scenario)


def test_failures_from_several_workers_add_up(redis_url: str) -> None:
    async def scenario(cs: list[Circuits], client: aioredis.Redis) -> None:
        opened = [(await fail(c, 1))[0] for c in cs]
        assert opened == [False, False, True]
        assert all([not (await c.gate(ACCOUNT)).send for c in cs])

    run(redis_url, scenario, clients=3)


def test_while_open_nobody_sends_and_the_wait_counts_down(redis_url: str) -> None:
    async def scenario(cs: list[Circuits], client: aioredis.Redis) -> None:
        await fail(cs[0], 3)
        first = await cs[1].gate(ACCOUNT)
        await asyncio.sleep(0.1)
        second = await cs[1].gate(ACCOUNT)
        assert not first.send and not second.send
        assert 0 < second.wait_s <= first.wait_s - 0.09
        # A request that was in flight when it opened, failing, changes nothing.
        assert await cs[0].record(ACCOUNT, failed=True, probe=False) is False
        assert (await cs[1].gate(ACCOUNT)).wait_s <= second.wait_s

    run(redis_url, scenario, clients=2)


def test_after_the_cool_down_exactly_one_of_many_concurrent_gates_probes(redis_url: str) -> None:
    async def scenario(cs: list[Circuits], client: aioredis.Redis) -> None:
        await fail(cs[0], 3)
        await asyncio.sleep(COOLDOWN_S + 0.02)
        gates = await asyncio.gather(*(cs[i % len(cs)].gate(ACCOUNT) for i in range(50)))
        probes = [g for g in gates if g.send]
        assert len(probes) == 1 and probes[0].probe
        others = [g for g in gates if not g.send]
        assert len(others) == 49 and not any(g.probe for g in others)
        assert all(0 < g.wait_s <= COOLDOWN_S for g in others)

    run(redis_url, scenario, clients=5)


def test_the_probes_success_closes_the_circuit(redis_url: str) -> None:
    async def scenario(cs: list[Circuits], client: aioredis.Redis) -> None:
        await fail(cs[0], 3)
        await asyncio.sleep(COOLDOWN_S + 0.02)
        probe = await cs[1].gate(ACCOUNT)
        assert probe.send and probe.probe
        assert await cs[1].record(ACCOUNT, failed=False, probe=True) is False
        assert not await cs[0].is_open(ACCOUNT)
        for c in cs:
            assert await c.gate(ACCOUNT) == Gate(True, False, 0.0, 0)
        # The count starts again: two failures do not open it.
        assert await fail(cs[0], 2) == [False, False]

    run(redis_url, scenario, clients=2)


def test_the_probes_failure_reopens_for_another_cool_down(redis_url: str) -> None:
    async def scenario(cs: list[Circuits], client: aioredis.Redis) -> None:
        (c,) = cs
        await fail(c, 3)
        await asyncio.sleep(COOLDOWN_S + 0.02)
        assert (await c.gate(ACCOUNT)).probe
        assert await c.record(ACCOUNT, failed=True, probe=True) is True
        gate = await c.gate(ACCOUNT)
        assert not gate.send and COOLDOWN_S - SLACK_S < gate.wait_s <= COOLDOWN_S
        await asyncio.sleep(COOLDOWN_S + 0.02)
        assert (await c.gate(ACCOUNT)).probe  # the next cool-down has its probe

    run(redis_url, scenario)


def test_a_lost_probes_claim_expires(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(circuit, "PROBE_CLAIM_MIN_S", 0.3)

    async def scenario(cs: list[Circuits], client: aioredis.Redis) -> None:
        await fail(cs[0], 3)
        await asyncio.sleep(COOLDOWN_S + 0.02)
        assert (await cs[0].gate(ACCOUNT)).probe  # its worker dies: never recorded
        held = await cs[1].gate(ACCOUNT)
        assert not held.send and 0 < held.wait_s <= COOLDOWN_S
        await asyncio.sleep(0.3 + 0.02)
        again = await cs[1].gate(ACCOUNT)
        assert again.send and again.probe

    run(redis_url, scenario, clients=2)


def test_the_claim_lasts_a_cool_down_and_at_least_a_minute() -> None:
    assert circuit.probe_claim_s(ACCOUNT) == 60
    assert circuit.probe_claim_s(dataclasses.replace(ACCOUNT, failover_cooldown_s=300)) == 300


def test_the_gauge_and_the_logs_follow_the_state(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    account = dataclasses.replace(ACCOUNT, name="gauged")

    async def scenario(cs: list[Circuits], client: aioredis.Redis) -> None:
        (c,) = cs
        await c.gate(account)
        assert gauge(account) == 0
        await fail(c, 3, account)
        assert gauge(account) == 1
        await asyncio.sleep(COOLDOWN_S + 0.02)
        assert (await c.gate(account)).probe
        assert gauge(account) == 1  # open until the probe says otherwise
        await c.record(account, failed=False, probe=True)
        assert gauge(account) == 0
        # Another worker opens it: this one's gate sees it.
        other = Circuits(client)
        await fail(other, 3, account)
        metrics.set_circuit_open(account, False)  # as if only this process had written
        await c.gate(account)
        assert gauge(account) == 1

    run(redis_url, scenario)
    err = capsys.readouterr()
    text = err.out + err.err
    assert "circuit_opened" in text and "circuit_closed" in text


def test_the_cost_per_call(redis_url: str) -> None:
    """Not a gate: prints the µs per healthy gate() and record() (pytest -s)."""

    async def scenario(cs: list[Circuits], client: aioredis.Redis) -> None:
        (c,) = cs
        n = 2000
        await c.gate(ACCOUNT)
        start = time.perf_counter()
        for _ in range(n):
            await c.gate(ACCOUNT)
        gate_us = (time.perf_counter() - start) / n * 1e6
        start = time.perf_counter()
        for _ in range(n):
            await c.record(ACCOUNT, failed=False, probe=False)
        record_us = (time.perf_counter() - start) / n * 1e6
        print(f"gate {gate_us:.1f} µs, healthy record {record_us:.2f} µs")
        assert record_us < gate_us

    run(redis_url, scenario)

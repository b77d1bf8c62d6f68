"""A route's account whose circuit's cool-down is over gets its probe
(INTERFACE.md, "Circuit": meanwhile its recipients move on; after the
cool-down one request probes the account), rather than being passed over
for as long as the circuit's hash lives."""

from __future__ import annotations

from producer import Producer
from producer.core import keys
from producer.core.store import iter_outcomes
from tests.worker.pipeline.test_routing import (
    BACKUP,
    KE,
    RO,
    RO_NUMBERS,
    accepting,
    guarded_passes,
    route_job,
)
from tests.worker.pipeline.test_sending import FakeAdapter, on_valkey


def test_an_open_circuit_past_its_cooldown_is_probed_and_closed_by_its_success(
    producer: Producer, redis_url: str
) -> None:
    job_id = route_job(producer, RO_NUMBERS)
    seconds, _ = producer.redis.time()
    # ro's circuit opened by 3 failures, its cool-down over a second ago, no probe out.
    producer.redis.hset(keys.circuit("ro"), mapping={"failures": 3, "open_until": seconds - 1})
    adapters: dict[str, FakeAdapter] = {a.name: accepting(a) for a in (RO, KE, BACKUP)}
    on_valkey(redis_url, lambda client: guarded_passes(client, adapters, job_id))
    assert sorted(adapters["ro"].posts) == list(range(len(RO_NUMBERS)))  # the probe
    assert adapters["backup"].posts == []
    assert not producer.redis.exists(keys.circuit("ro"))  # its success closed the circuit
    records = list(iter_outcomes(producer.redis, job_id))
    assert all(r.status == "accepted" and r.provider == "ro" for r in records)

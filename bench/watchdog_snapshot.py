"""The watchdog's snapshot of the queues and ``unacked`` with a long backlog:
its time, its pages and Valkey's CPU, against a fresh Valkey, no workers.

    python -m bench.watchdog_snapshot [--messages N] [--jobs J] [--old]

Fills ``smsbulk.normal`` with N real send_chunk messages (a Celery message
published once, copied with J jobs' ids and chunk numbers) and ``unacked``
with a few hundred, then times ``worker.background.watchdog.snapshot`` for a few jobs
(the jobs looked at pass their ids to the script), for more jobs than
``SNAPSHOT_FILTER_MAX`` (every reference comes back) and, with ``--old``,
the single script it replaced (every message body in one reply, each
parsed by the watchdog).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import redis

from producer.client import broker_app
from producer.core import keys
from worker.background import watchdog
from worker.dev.launcher import start_valkey

UNACKED = 500
FILL_BATCH = 10_000

# The script before this measurement: every queued and unacknowledged body.
OLD_SNAPSHOT = Path(__file__).with_name("old_watchdog_snapshot.lua")


def job_id(n: int) -> str:
    return f"{n:032x}"


def fill(client: redis.Redis, url: str, messages: int, jobs: int) -> None:
    app = broker_app(url)
    template_job, template_chunk = job_id(0), 999_999
    app.send_task(
        keys.SEND_CHUNK,
        args=[template_job, template_chunk],
        queue=keys.NORMAL_QUEUE,
        argsrepr=f"job_id={template_job}, chunk={template_chunk}",
    )
    app.close()
    template = cast(bytes, client.rpop(keys.NORMAL_QUEUE)).decode()
    assert f"job_id={template_job}, chunk={template_chunk}" in template
    per_job = max(messages // jobs, 1)

    def message(i: int) -> str:
        # The argsrepr (twice: headers and properties) names the job and chunk.
        return template.replace(
            f"job_id={template_job}, chunk={template_chunk}",
            f"job_id={job_id(i // per_job)}, chunk={i % per_job}",
        )

    pipe = client.pipeline(transaction=False)
    for start in range(0, messages, FILL_BATCH):
        pipe.lpush(
            keys.NORMAL_QUEUE, *map(message, range(start, min(start + FILL_BATCH, messages)))
        )
        pipe.execute()
    for i in range(UNACKED):  # as kombu keeps them: [message, exchange, routing key]
        unacked = json.dumps([json.loads(message(i)), "", keys.NORMAL_QUEUE])
        pipe.hset(watchdog.KOMBU_UNACKED, f"tag-{i}", unacked)
    pipe.execute()


def valkey_cpu_s(client: redis.Redis) -> float:
    cpu = cast(dict[str, float], client.info("cpu"))
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def measure(client: redis.Redis, what: str, run: Callable[[], Any]) -> None:
    calls: list[float] = []
    original = client.evalsha  # every script call (redis-py's Script objects)

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            calls.append(time.perf_counter() - started)

    client.evalsha = timed  # type: ignore[method-assign]
    cpu_before = valkey_cpu_s(client)
    started = time.perf_counter()
    try:
        result = run()
    finally:
        client.evalsha = original  # type: ignore[method-assign]
    wall_s = time.perf_counter() - started
    cpu_s = valkey_cpu_s(client) - cpu_before
    print(
        f"{what}: {wall_s:.2f} s, Valkey CPU {cpu_s:.2f} s, {len(calls)} script calls, "
        f"longest {max(calls) * 1000:.1f} ms, "
        f"median {sorted(calls)[len(calls) // 2] * 1000:.1f} ms; {result}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument(
        "--old", action="store_true", help="also time the single script it replaced"
    )
    args = parser.parse_args(argv)
    server = start_valkey()
    try:
        # The old script holds Valkey for as long as it runs: wait for it.
        client = redis.Redis.from_url(server.connection_url, socket_timeout=600)
        started = time.perf_counter()
        fill(client, server.connection_url, args.messages, args.jobs)
        memory = client.info("memory")["used_memory_human"]
        print(
            f"{args.messages:,} send_chunk messages of {args.jobs:,} jobs queued and {UNACKED} "
            f"unacknowledged in {time.perf_counter() - started:.1f} s; Valkey uses {memory}; "
            f"pages of {watchdog.SNAPSHOT_PAGE} messages; load average "
            + ", ".join(f"{load:.1f}" for load in os.getloadavg())
        )

        def references(found: watchdog.Snapshot) -> str:
            chunks = sum(len(c) for c in found.chunks.values())
            return f"{chunks:,} chunk references of {len(found.chunks):,} jobs"

        few = [job_id(n) for n in range(5)]
        many = [job_id(n) for n in range(watchdog.SNAPSHOT_FILTER_MAX + 1)]
        measure(client, "5 jobs looked at", lambda: references(watchdog.snapshot(client, few)))
        measure(
            client,
            f"{len(many)} jobs looked at",
            lambda: references(watchdog.snapshot(client, many)),
        )
        if args.old:
            lists = [*watchdog.queue_lists(), watchdog.KOMBU_UNACKED]
            old_snapshot = client.register_script(OLD_SNAPSHOT.read_text(encoding="utf-8"))

            def old() -> str:
                raws = cast(list[bytes], old_snapshot(keys=lists))
                started = time.perf_counter()
                parsed = sum(watchdog.parse_task(raw) is not None for raw in raws)
                return (
                    f"{len(raws):,} bodies, {sum(map(len, raws)) / 1e6:,.0f} MB, "
                    f"{parsed:,} parsed by the watchdog in {time.perf_counter() - started:.1f} s"
                )

            measure(client, "the old single script", old)
        client.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()

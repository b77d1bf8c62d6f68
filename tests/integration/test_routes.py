"""Routes and failover (issue 12), against a real Valkey, the sandbox and
real worker processes.

1. A route by country: each number goes to its country's account, once, in
   that account's number format; the status counts per account.
2. Failover on a provider that answers 503 to everything: all recipients
   accepted once through the second account, the first's circuit opened
   after `failover_after_failures` failures and probed once per cool-down.
3. Failover on connection refused and on bad credentials.

One stack for the module, on a Valkey server of its own; every account a
test relies on is its own, so no test's circuit or block reaches another.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from producer.job import JobStatus, Outcome
from tests.integration.stack import Stack, elapsed, own_server_stack, ro_numbers
from worker.dev.sandbox import app as sandbox

pytestmark = pytest.mark.integration

FAST = {"messages_per_second": 100000, "requests_per_second": 1000}
RETRY = {"retry_base_s": 0.05, "retry_max_s": 0.2}
FAILOVER_AFTER = 3
COOLDOWN_S = 2.0
WORKERS = 2
CONCURRENCY = 2  # Stack.add_worker's default: pool children per worker

# Test 2: the down account's batch is the chunk, so a pass sends at most one
# request on it; jobs arrive through about four cool-downs, so probes show.
DOWN_JOBS = 9
DOWN_JOB_SIZE = 200
DOWN_JOB_EVERY_S = 1.0
DOWN_BATCH = 100


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def account(name: str, kind: str, base_url: str, **settings: object) -> str:
    """An account of ``kind`` with its sandbox module's credentials."""
    module = sandbox.SANDBOXES[kind]
    values = {
        "kind": kind,
        "base_url": base_url,
        "default_region": "RO",
        **module.CREDENTIALS,
        **module.ACCOUNT_SETTINGS,
        **settings,
    }
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
    return f"\n[providers.{name}]\n{lines}"


def routes_toml(base_url: str) -> str:
    refused_url = f"http://127.0.0.1:{closed_port()}"
    cooldown = {"failover_after_failures": FAILOVER_AFTER, "failover_cooldown_s": COOLDOWN_S}
    return (
        account("ro", "gosms", base_url, **FAST)
        + account("ke", "sendbulk", base_url, **FAST)
        + account("us", "voipcomm", base_url, **FAST)
        + account("down", "sendbulk", base_url, batch_size=DOWN_BATCH, **FAST, **RETRY, **cooldown)
        + account(
            "standby",
            "gosms",
            base_url,
            batch_size=DOWN_BATCH,
            **FAST,
            **RETRY,
        )
        + account("closed", "sendbulk", refused_url, **FAST, **RETRY, **cooldown)
        + '\n[routes.world]\ndefault_region = "RO"\naccounts = ["bulk"]\n'
        + '[routes.world.countries]\nRO = ["ro"]\nKE = ["ke"]\nUS = ["us"]\n'
        + '\n[routes.outage]\ndefault_region = "RO"\naccounts = ["down", "standby"]\n'
        + '\n[routes.refused]\ndefault_region = "RO"\naccounts = ["closed", "bulk"]\n'
        + '\n[routes.badkey]\ndefault_region = "RO"\naccounts = ["bad", "bulk"]\n'
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("routes")
    with own_server_stack(log_dir, workers=0) as built:
        # make_stack wrote `bulk` and `bad`; the routes' accounts go after them.
        with built.config.open("a") as config:
            config.write(routes_toml(built.sandbox_url))
        for _ in range(WORKERS):
            built.add_worker(CONCURRENCY)
        yield built


@pytest.fixture(autouse=True)
def clean_sandbox(stack: Stack) -> Iterator[None]:
    stack.sandbox_post("/_sandbox/reset")
    yield
    stack.sandbox_post("/_sandbox/settings", {"fail_status": {}})


def job(route: str, numbers: list[str]) -> dict[str, Any]:
    return {
        "provider": route,
        "text": "Your code is 1234",
        "delivery_policy": "at_most_once",
        "messages": [{"to": n} for n in numbers],
    }


def run(
    stack: Stack, route: str, numbers: list[str], timeout_s: float = 60
) -> tuple[JobStatus, dict[int, Outcome], float]:
    producer = stack.producer()
    try:
        started = time.monotonic()
        job_id = producer.submit(job(route, numbers))
        status = stack.wait_for(job_id, timeout_s)
        took_s = elapsed(started)
        outcomes = {o.index: o for o in producer.results(job_id)}
        return status, outcomes, took_s
    finally:
        producer.close()


def sent(stack: Stack, kind: str) -> list[dict[str, Any]]:
    return stack.sandbox_get(f"/_sandbox/sent?kind={kind}")  # type: ignore[no-any-return]


def requests_of(stack: Stack, kind: str) -> int:
    """Every request the sandbox got on `kind`'s endpoints, faulted ones included."""
    rate = stack.sandbox_get(f"/_sandbox/rate?kind={kind}")
    return sum(rate["requests_per_second"].values())


def log_events(stack: Stack, event: str) -> list[dict[str, Any]]:
    found = []
    for line in stack.worker_logs().splitlines():
        if f'"{event}"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            found.append(record)
    return sorted(found, key=lambda record: str(record.get("timestamp")))  # workers interleaved


def per_account(status: JobStatus) -> dict[str, dict[str, int]]:
    """The status's `accounts`, without its zero counts."""
    return {
        name: {code: n for code, n in counts.items() if n}
        for name, counts in status.accounts.items()
    }


def assert_each_once(rows: list[dict[str, Any]], expected: set[str], kind: str) -> None:
    counts = Counter(row["number"] for row in rows)
    twice = {n: c for n, c in counts.items() if c > 1}
    assert not twice, f"{kind}: sent more than once: {list(twice.items())[:5]}"
    assert set(counts) == expected, (
        f"{kind}: missing {sorted(expected - set(counts))[:5]}, "
        f"unexpected {sorted(set(counts) - expected)[:5]}"
    )


# --- 1. A route by country ------------------------------------------------------------

PER_COUNTRY = 750  # x 4 countries = 3,000 recipients


def world_numbers() -> tuple[list[str], dict[int, tuple[str, str, str]]]:
    """3,000 numbers, the four countries interleaved and written in several
    forms; per index: (account, kind, the number as that kind's format writes it)."""
    numbers: list[str] = []
    expected: dict[int, tuple[str, str, str]] = {}
    ro = ro_numbers(PER_COUNTRY)
    for i in range(PER_COUNTRY):
        ke, us, de = f"{10000000 + i}", f"{2000000 + i}", f"{20000000 + i}"
        cases = [
            # gosms: national for Romanian numbers ("07PPXXXXXX")
            (ro[i], ("ro", "gosms", ro[i])),
            # sendbulk: digits (country code and number, no prefix)
            (f"+254 7{ke}", ("ke", "sendbulk", f"2547{ke}")),
            # voipcomm: digits
            (f"+1 (212) {us[:3]}-{us[3:]}", ("us", "voipcomm", f"1212{us}")),
            # the route's default: the sendbulk account `bulk`, digits
            (f"0049151{de}", ("bulk", "sendbulk", f"49151{de}")),
        ]
        for number, fate in cases[i % 4 :] + cases[: i % 4]:
            expected[len(numbers)] = fate
            numbers.append(number)
    return numbers, expected


def test_a_route_sends_each_number_once_to_its_countrys_account_in_its_format(
    stack: Stack,
) -> None:
    numbers, expected = world_numbers()
    status, outcomes, took_s = run(stack, "world", numbers)
    rows = {kind: sent(stack, kind) for kind in ("gosms", "sendbulk", "voipcomm", "uspeedo")}
    stats = stack.sandbox_get("/_sandbox/stats")
    print(
        f"\n3,000 recipients over 4 accounts: {took_s:.1f} s; sandbox requests "
        f"{ {k: requests_of(stack, k) for k in rows} }, items {stats['by_kind']}"
    )

    assert status.state == "completed" and status.counts["accepted"] == len(numbers), status
    for kind in ("gosms", "sendbulk", "voipcomm"):
        want = {number for _, k, number in expected.values() if k == kind}
        assert_each_once(rows[kind], want, kind)
    assert rows["uspeedo"] == []
    assert stats["duplicates"] == 0 and stats["errors"] == 0, stats

    # Each sandbox row is one outcome's message, sent by the account its country picks.
    by_message_id = {row["message_id"]: row for kind_rows in rows.values() for row in kind_rows}
    assert len(by_message_id) == len(numbers)
    for index, (name, kind, number) in expected.items():
        outcome = outcomes[index]
        assert outcome.status == "accepted", outcome
        assert outcome.provider == name, outcome
        row = by_message_id[outcome.provider_message_id or ""]
        assert (row["kind"], row["number"]) == (kind, number), (outcome, row)
    assert per_account(status) == {
        name: {"accepted": PER_COUNTRY} for name in ("ro", "ke", "us", "bulk")
    }, status.accounts


# --- 2. Failover on a provider that is down -------------------------------------------


def test_a_down_provider_fails_over_once_per_recipient_with_one_probe_per_cooldown(
    stack: Stack,
) -> None:
    stack.sandbox_post("/_sandbox/settings", {"fail_status": {"sendbulk": 503}})
    # Jobs arrive through several cool-downs: each that finds the cool-down
    # over starts on the down account (its probe); the others go straight to
    # the standby while the circuit is open.
    numbers = [ro_numbers(DOWN_JOB_SIZE, start=j * DOWN_JOB_SIZE) for j in range(DOWN_JOBS)]
    producer = stack.producer()
    try:
        started = time.monotonic()
        job_ids = []
        for j, job_numbers in enumerate(numbers):
            time.sleep(max(0.0, j * DOWN_JOB_EVERY_S - elapsed(started)))  # pacing
            job_ids.append(producer.submit(job("outage", job_numbers)))
        statuses = [stack.wait_for(job_id, 60) for job_id in job_ids]
        took_s = elapsed(started)
        outcomes = [o for job_id in job_ids for o in producer.results(job_id)]
    finally:
        producer.close()
    down_requests = requests_of(stack, "sendbulk")
    standby_requests = requests_of(stack, "gosms")
    opened = [e for e in log_events(stack, "circuit_opened") if e.get("account") == "down"]
    closed = [e for e in log_events(stack, "circuit_closed") if e.get("account") == "down"]
    probes = [e for e in opened if e.get("probe")]
    children = WORKERS * CONCURRENCY
    # Before the circuit opens: the failures that open it, plus what the
    # other pool children had in flight then (one request each: the down
    # account's batch is the chunk). After: one probe per cool-down.
    bound = FAILOVER_AFTER + (children - 1) + math.ceil(took_s / COOLDOWN_S)
    total = DOWN_JOBS * DOWN_JOB_SIZE
    print(
        f"\n{DOWN_JOBS} jobs of {DOWN_JOB_SIZE}, one every {DOWN_JOB_EVERY_S} s, sendbulk "
        f"down: {took_s:.1f} s; sendbulk requests {down_requests} (bound {FAILOVER_AFTER} + "
        f"{children - 1} in flight + ceil({took_s:.1f} / {COOLDOWN_S}) = {bound}), gosms "
        f"requests {standby_requests}; circuit_opened {len(opened)} times "
        f"({len(probes)} by a failed probe), failures {[e.get('failures') for e in opened]}"
    )

    for status in statuses:
        assert status.state == "completed", status
        assert per_account(status) == {"standby": {"accepted": DOWN_JOB_SIZE}}, status.accounts
    assert sent(stack, "sendbulk") == []  # 503s are not processed: nothing taken by both
    every = {n for job_numbers in numbers for n in job_numbers}
    assert_each_once(sent(stack, "gosms"), every, "gosms")  # national: as written
    assert stack.sandbox_get("/_sandbox/stats")["duplicates"] == 0
    assert len(outcomes) == total
    assert all(o.status == "accepted" and o.provider == "standby" for o in outcomes)

    assert opened, "no circuit_opened log line for the down account"
    first = opened[0]
    assert (first["failures"], first["probe"], first["cooldown_s"]) == (
        FAILOVER_AFTER,
        False,
        COOLDOWN_S,
    ), first
    assert not closed, closed  # every probe failed: the circuit never closed
    assert len(opened) == 1 + len(probes), opened  # opened once, then re-opened by probes
    # Probes happened (the circuit is not shut for good), one per cool-down at most.
    assert probes, "no probe after the cool-down"
    assert len(probes) <= math.ceil(took_s / COOLDOWN_S), (len(probes), took_s)
    assert FAILOVER_AFTER < down_requests <= bound, (down_requests, bound)


# --- 3. Failover on connection refused and on bad credentials ---------------------------


@pytest.mark.parametrize(
    ("route", "first"), [("refused", "closed"), ("badkey", "bad")], ids=["refused", "bad_key"]
)
def test_an_unreachable_or_refusing_account_fails_over_without_sending_twice(
    stack: Stack, route: str, first: str
) -> None:
    numbers = ro_numbers(500, start=100_000)
    status, outcomes, took_s = run(stack, route, numbers)
    rows = sent(stack, "sendbulk")
    stats = stack.sandbox_get("/_sandbox/stats")
    print(
        f"\n{route}: {len(numbers)} recipients in {took_s:.1f} s; sendbulk requests "
        f"{requests_of(stack, 'sendbulk')}, refused {stats['errors']}"
    )

    assert status.state == "completed" and status.counts["accepted"] == len(numbers), status
    # Both accounts are sendbulk on the one sandbox: every number once in all.
    assert_each_once(rows, {"4" + n for n in numbers}, "sendbulk")
    assert stats["duplicates"] == 0
    assert all(o.status == "accepted" and o.provider == "bulk" for o in outcomes.values())
    assert per_account(status) == {"bulk": {"accepted": len(numbers)}}, status.accounts
    # The first account was tried, and failed as the test means it to.
    tried = [
        e
        for e in log_events(stack, "provider_request")
        if e.get("job_id") == status.job_id and e.get("account") == first
    ]
    assert tried, f"no request on {first}"
    if first == "bad":
        assert stats["errors"] >= 1  # the sandbox did refuse the bad account's credentials
        assert any(e.get("account") == "bad" for e in log_events(stack, "account_blocked"))
    else:
        assert stats["errors"] == 0
        assert all(e["http_status"] is None for e in tried), tried  # never connected

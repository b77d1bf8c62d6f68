"""``make bench``: run the scenarios, print the figures, write docs/BENCHMARKS.md.

    python -m bench.run               # the full set; writes docs/BENCHMARKS.md
    python -m bench.run --quick       # 20,000 recipients, about a minute
    python -m bench.run --list        # scenario names, for --only

Every scenario runs in a fresh Python process (so that the producer's
memory figures are its own, not what an earlier scenario left in the
allocator) with a fresh Valkey, sandbox and workers. Whatever happens
(Ctrl-C and SIGTERM included) every process started is stopped and the work
directory removed (``--keep-logs`` keeps it).
"""

from __future__ import annotations

import argparse
import fnmatch
import multiprocessing
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from bench import naive, report, scenarios
from bench.machine import Machine
from bench.measure import Result, Target, measure
from bench.otp import OtpTarget
from bench.profile import Profiler, ProfilerMissing, require_py_spy
from bench.scenarios import Scenario
from bench.stack import REPO, Stack
from bench.targets import SmsbulkTarget

# The naive peer's Celery prefork processes per worker (each a task at a time).
NAIVE_CONCURRENCY = 2

DOCS = REPO / "docs" / "BENCHMARKS.md"


def say(line: str) -> None:
    print(line, flush=True)


def _numbers(text: str, kind: type[int] | type[float]) -> tuple[Any, ...]:
    return tuple(kind(part.replace("_", "")) for part in text.split(",") if part)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 recipients")
    parser.add_argument("--list", action="store_true", help="print the scenario names and exit")
    parser.add_argument(
        "--only", action="append", default=[], metavar="GLOB", help="run matching scenarios"
    )
    parser.add_argument("--sizes", default="100000,1000000", help="sendbulk/gosms recipients")
    parser.add_argument("--latencies-ms", default="0,100", help="sandbox latencies")
    parser.add_argument("--limit-parts-per-s", type=float, default=scenarios.LIMIT_PARTS_PER_S)
    parser.add_argument("--naive-recipients", type=int, default=scenarios.NAIVE_RECIPIENTS)
    parser.add_argument("--voipcomm-recipients", type=int, default=scenarios.VOIPCOMM_RECIPIENTS)
    parser.add_argument("--limited-recipients", type=int, default=scenarios.LIMITED_RECIPIENTS)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="each worker's --concurrency (default: smsbulk worker's own)",
    )
    parser.add_argument("--workers", type=int, default=1, help="`smsbulk worker` commands")
    parser.add_argument(
        "--pool",
        default=None,
        help="the workers' Celery pool (prefork, threads; default: smsbulk worker's own)",
    )
    parser.add_argument("--no-aof", action="store_true", help="Valkey without appendonly")
    parser.add_argument("--docs", type=Path, help=f"write the report here (default {DOCS})")
    parser.add_argument("--no-docs", action="store_true", help="write no report")
    parser.add_argument(
        "--profile", action="store_true", help="sample the workers with py-spy (smsbulk scenarios)"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def pick(args: argparse.Namespace) -> tuple[list[Scenario], bool]:
    """The scenarios to run, and whether they are the full default set."""
    if args.quick:
        chosen = scenarios.quick_set()
    else:
        chosen = scenarios.full_set(
            sizes=_numbers(args.sizes, int),
            latencies_ms=_numbers(args.latencies_ms, float),
            limit_parts_per_s=args.limit_parts_per_s,
            naive_recipients=args.naive_recipients,
            voipcomm_recipients=args.voipcomm_recipients,
            limited_recipients=args.limited_recipients,
        )
    if args.only:
        chosen = [s for s in chosen if any(fnmatch.fnmatch(s.name, g) for g in args.only)]
    default = not args.quick and not args.only and chosen == scenarios.full_set()
    return chosen, default


def run_one(
    scenario: Scenario, work: Path, args: argparse.Namespace, info: dict[str, str]
) -> Result:
    stack = Stack(work, aof=not args.no_aof)
    targets: list[SmsbulkTarget | naive.NaiveTarget] = []

    def make_target() -> Target:
        target: SmsbulkTarget | naive.NaiveTarget
        if scenario.kind == "naive":
            target = naive.NaiveTarget(stack, scenario)
        elif scenario.kind == "otp":
            target = OtpTarget(stack, scenario)
        else:
            target = SmsbulkTarget(stack, scenario)
        targets.append(target)
        return target

    say(f"[{scenario.name}] starting: {scenario.recipients:,} recipients, {scenario.what}")
    try:
        stack.start_base(scenario.latency_ms)
        if "valkey" not in info:
            client = stack.redis()
            server = client.info("server")
            info["valkey"] = str(server.get("valkey_version") or server.get("redis_version"))
            client.close()
        if scenario.kind == "naive":
            concurrency = (args.concurrency or NAIVE_CONCURRENCY) * args.workers
            stack.add_worker(naive.start_worker(stack, concurrency))
            stack.wait_ready()
        else:
            stack.start_smsbulk_workers(
                args.workers,
                scenario.limit_parts_per_s,
                *worker_args(scenario, args),
                settings_toml=scenario.settings_toml,
            )
        sandbox_kind = {
            "naive": "gosms",
            "limited": "sendbulk",
            "route": "sendbulk",
            "otp": "sendbulk",
        }.get(scenario.kind, scenario.kind)
        profiler = Profiler(work / "profile") if args.profile and scenario.kind != "naive" else None
        result = measure(stack, scenario, make_target, say, sandbox_kind, profiler)
        for target in targets:
            if isinstance(target, OtpTarget):
                result.otp_ms = target.latencies_ms(stack.sandbox_url, sandbox_kind)
                result.problem = result.problem or target.problem
        if not result.ok:
            say(f"[{scenario.name}] PROBLEM: {result.problem}\n{stack.log_tails()}")
        return result
    except (RuntimeError, TimeoutError, OSError) as error:
        say(f"[{scenario.name}] FAILED: {error}\n{traceback.format_exc()}{stack.log_tails()}")
        return Result(scenario, problem=str(error).splitlines()[0])
    finally:
        for target in targets:
            target.close()
        stack.stop()


def _scenario_process(
    conn: Connection, scenario: Scenario, work: Path, args: argparse.Namespace
) -> None:
    """The body of a scenario's own process: run it, send back the figures."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the stack, then exit
    info: dict[str, str] = {}
    try:
        conn.send((run_one(scenario, work, args, info), info))
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()


def run_isolated(
    scenario: Scenario, work: Path, args: argparse.Namespace, info: dict[str, str]
) -> Result:
    """``run_one`` in a fresh interpreter; on Ctrl-C/SIGTERM it is told to stop
    (it stops its stack) and waited for."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_scenario_process, args=(sender, scenario, work, args), name=scenario.name
    )
    child.start()
    sender.close()
    try:
        try:
            result, child_info = receiver.recv()
        except EOFError:
            child.join()
            return Result(scenario, problem=f"its process exited ({child.exitcode})")
        info.update(child_info)
        return cast(Result, result)
    finally:
        if child.is_alive():
            child.join(10)
        if child.is_alive():
            child.terminate()  # SIGTERM: KeyboardInterrupt in the child, which stops its stack
            child.join(60)
        receiver.close()


def worker_args(scenario: Scenario, args: argparse.Namespace) -> list[str]:
    """The scenario's pool if it names one, else the run's."""
    if scenario.threads:
        return ["--pool=threads", f"--concurrency={scenario.threads}"]
    if scenario.prefork:
        return ["--pool=prefork", f"--concurrency={scenario.prefork}"]
    return run_worker_args(args)


def run_worker_args(args: argparse.Namespace) -> list[str]:
    """The run's ``--pool`` and ``--concurrency``, else none: ``smsbulk
    worker`` as a user runs it (worker/supervisor.py)."""
    chosen = [f"--pool={args.pool}"] if args.pool else []
    return chosen + ([f"--concurrency={args.concurrency}"] if args.concurrency else [])


def workers_line(args: argparse.Namespace) -> str:
    command = shlex.join(["smsbulk", "worker", *run_worker_args(args)])
    return f"{args.workers} × `{command}`"


def summary(result: Result) -> str:
    if result.total_s == 0:
        return f"[{result.scenario.name}] FAILED: {result.problem}"
    codes = f"; {report.otp_line(result.otp_ms)}" if result.otp_ms else ""
    return (
        f"[{result.scenario.name}] done: {result.total_s:.1f} s, {result.e2e_per_s:,.0f} rcpt/s "
        f"end to end ({result.send_per_s:,.0f}/s after submission, steady "
        f"{report.fmt_rate(result.steady_per_s)}/s); workers peak "
        f"{report.fmt_mb(result.worker_peak_kb)} MB; worker CPU "
        f"{result.worker_cpu_ms_per_1000:,.1f} ms per 1000; redis "
        f"{result.redis_bytes_per_recipient('after'):,.0f} B/recipient{codes}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    chosen, default_set = pick(args)
    if args.list:
        for scenario in chosen:
            print(f"{scenario.name:28} {scenario.what}")
        return 0
    if not chosen:
        print("bench: no scenario matches --only", file=sys.stderr)
        return 2
    if args.profile:
        try:
            require_py_spy()
        except ProfilerMissing as missing:
            print(f"bench: {missing}", file=sys.stderr)
            return 2
    docs = None if args.no_docs else (args.docs or (DOCS if default_set else None))
    started = datetime.now(UTC)
    root = Path(tempfile.mkdtemp(prefix="smsbulk-bench-"))
    say(
        f"bench: {len(chosen)} scenarios, {workers_line(args)} unless a scenario says; "
        f"work directory {root}"
    )
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    results: list[Result] = []
    info: dict[str, str] = {}
    interrupted = False
    try:
        for scenario in chosen:
            began = time.monotonic()
            result = run_isolated(scenario, root / scenario.name, args, info)
            results.append(result)
            say(summary(result) + f" ({time.monotonic() - began:.0f} s with start and stop)")
    except KeyboardInterrupt:
        interrupted = True
        say("bench: interrupted; the scenarios that ran:")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if args.keep_logs:
            say(f"bench: logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    machine = Machine.here(info.get("valkey", "unknown"))
    say("\n" + "\n".join(machine.lines()) + "\n\n" + report.console_report(results, machine.cores))
    if docs is not None and results and not interrupted:
        command = (
            "make bench"
            if default_set
            else "python -m bench.run " + shlex.join(sys.argv[1:] if argv is None else argv)
        )
        settings = (
            f"{workers_line(args)} unless a scenario says otherwise; Valkey "
            f"{'without the append-only file' if args.no_aof else 'with appendfsync everysec'}."
        )
        docs.write_text(report.markdown(results, machine, chosen, command, settings, started))
        say(f"bench: wrote {docs}")
    failed = [r for r in results if not r.ok]
    return 1 if failed or interrupted else 0


if __name__ == "__main__":
    sys.exit(main())

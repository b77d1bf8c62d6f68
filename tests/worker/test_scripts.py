"""The worker's Redis scripts are .lua files (producer/core/lua/), each with a
header naming every KEYS[n] and ARGV[n] it reads and its return value, and
every one compiles; no worker module holds Lua or sends a script's source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from producer.core.scripts import LUA_DIR, _read, source

ROOT = Path(__file__).resolve().parents[2]
# The scripts the worker calls (worker/store.py, pipeline/rate_limit.py,
# background/watchdog.py, background/retention.py) and the files they include.
WORKER_SCRIPTS = (
    "begin_request",
    "claim_callback",
    "claim_silent_job",
    "commit_outcomes",
    "finish_job",
    "mark_chunk_done",
    "rate_acquire",
    "rate_throttled",
    "reap_dead_workers",
    "release_lease",
    "retention_backfill",
    "retention_mark",
    "retention_remove",
    "watchdog_snapshot",
    "worker_beat",
)
INCLUDES = ("finish_if_final", "rate_factor", "server_now", "sum_final")
_USED = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
_NAMED = re.compile(r"^-- (KEYS|ARGV)\[(\d+)(\.\.(\d+|n-1|n)?)?\]:", re.MULTILINE)


def header(text: str) -> str:
    """The comment lines a file starts with."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("--") or line.startswith("--#include"):
            break
        lines.append(line)
    return "\n".join(lines)


def named(text: str, kind: str, n: int) -> bool:
    for match in _NAMED.finditer(header(text)):
        if match.group(1) != kind:
            continue
        first = int(match.group(2))
        if first == n or (match.group(3) and n >= first):
            return True
    return False


@pytest.mark.parametrize("name", WORKER_SCRIPTS + INCLUDES)
def test_each_file_starts_with_its_name_and_what_it_does(name: str) -> None:
    text = (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")
    assert text.startswith(f"-- {name}: ")


@pytest.mark.parametrize("name", WORKER_SCRIPTS)
def test_the_header_names_every_key_and_argument_read_and_the_return(name: str) -> None:
    text = (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")
    assert re.search(r"^-- Returns", header(text), re.MULTILINE), name
    body = _read(name)  # with its includes: an include's keys are the caller's
    for kind, n in {(m.group(1), int(m.group(2))) for m in _USED.finditer(body)}:
        assert named(text, kind, n), f"{name}.lua reads {kind}[{n}] without naming it"


@pytest.mark.parametrize("name", WORKER_SCRIPTS)
def test_each_script_compiles(redis_client: redis.Redis, name: str) -> None:
    sha = redis_client.script_load(source(name))
    assert redis_client.script_exists(sha) == [True]


# The modules whose scripts these are (worker/tasks.py and the releaser's move
# to .lua files on their own).
MODULES = (
    "worker/store.py",
    "worker/pipeline/rate_limit.py",
    "worker/pipeline/cancelling.py",
    "worker/background/watchdog.py",
    "worker/background/retention.py",
    "bench/watchdog_snapshot.py",
)


@pytest.mark.parametrize("module", MODULES)
def test_no_module_holds_lua_or_evals_a_source(module: str) -> None:
    text = (ROOT / module).read_text(encoding="utf-8")
    assert "redis.call(" not in text
    assert ".eval(" not in text


@pytest.mark.parametrize(
    ("written_once", "where"),
    [("done = done +", "sum_final"), ("growth ^", "rate_factor")],
)
def test_the_final_sum_and_the_factor_recovery_are_written_once(
    written_once: str, where: str
) -> None:
    holders = [
        path.stem
        for path in sorted(LUA_DIR.glob("*.lua"))
        if written_once in path.read_text(encoding="utf-8")
    ]
    assert holders == [where]

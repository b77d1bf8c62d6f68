"""The Redis scripts (producer/core/lua/) and the state table they share
(producer/core/states.py): every script is a .lua file with a header, loads
in a real server, writes only states of the table; no Lua in Python."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from redis.commands.core import Script

from producer.core import scripts, states
from producer.core.store import STATUS_CODES
from producer.job import FINAL_STATUSES
from tests.paths import ROOT

# The states the producer's and the releaser's/plan's scripts write.
WRITTEN_HERE = {"scheduled", "queued", "running", "paused", "cancelled"}

_USE = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
_INCLUDE = re.compile(r"^--#include ([a-z_]+)$", re.MULTILINE)
_LITERAL = re.compile(r"'([^']*)'|\"([^\"]*)\"")


def text(name: str) -> str:
    return (scripts.LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")


def header_and_body(source: str) -> tuple[list[str], str]:
    """The leading comment lines (up to the first code or ``--#include``), and the rest."""
    lines = source.splitlines()
    n = 0
    while n < len(lines) and lines[n].startswith("--") and not lines[n].startswith("--#"):
        n += 1
    return lines[:n], "\n".join(lines[n:])


def included() -> set[str]:
    return {match for name in scripts.names() for match in _INCLUDE.findall(text(name))}


def _call_args(source: str, start: int) -> list[str]:
    """The top-level, comma-separated arguments of the call whose '(' is at
    ``start`` (brackets and commas inside strings or tables not counted)."""
    depth, quote, args, current = 0, "", [], ""
    for char in source[start:]:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "({[":
            depth += 1
            if depth == 1:
                continue
        elif char in ")}]":
            depth -= 1
            if depth == 0:
                args.append(current.strip())
                return args
        elif char == "," and depth == 1:
            args.append(current.strip())
            current = ""
            continue
        current += char
    raise AssertionError(f"unclosed call: {source[start : start + 60]!r}")


def written_states(source: str) -> set[str]:
    """Every job state an ``HSET ..., 'state', X`` in ``source`` can write:
    X a literal, or a variable whose assignments hold only literals. A value
    the script does not spell (an ARGV, say) fails: it could be anything."""
    found: set[str] = set()
    for call in re.finditer(r"redis\.call\(\s*'HSET'", source):
        args = _call_args(source, call.start() + len("redis.call"))
        pairs = args[2:]
        for field, value in zip(pairs[::2], pairs[1::2], strict=False):
            if field != "'state'":
                continue
            if _LITERAL.fullmatch(value):
                found.add(value.strip("'\""))
                continue
            assert re.fullmatch(r"[a-z_]+", value), f"state written from {value}, not spelled"
            assigned = re.findall(rf"^\s*(?:local )?{value} = (.+)$", source, re.MULTILINE)
            literals = [a or b for line in assigned for a, b in _LITERAL.findall(line)]
            assert assigned and literals, f"state written from {value}, not spelled"
            found.update(literals)
    return found


def test_there_are_scripts() -> None:
    assert len(scripts.names()) >= 10


@pytest.mark.parametrize("name", scripts.names())
def test_every_script_has_a_header_naming_its_keys_argv_and_return(name: str) -> None:
    header, body = header_and_body(text(name))
    assert header and header[0].startswith(f"-- {name}: "), "first line: -- NAME: what it does"
    if name in included():
        return  # a function for other scripts: its header names its arguments
    assert any(line.startswith("-- Returns") for line in header), "no '-- Returns' line"
    named = {(kind, int(n)) for line in header for kind, n in _USE.findall(line)}
    for kind, n in _USE.findall(body):
        assert (kind, int(n)) in named, (
            f"{kind}[{n}] is used but has no '-- {kind}[{n}]: ...' header line"
        )


@pytest.mark.parametrize("name", scripts.names())
def test_every_state_a_script_writes_is_in_the_table(name: str) -> None:
    assert written_states(text(name)) <= set(states.JOB_STATES)


def test_the_state_parser_finds_the_writes() -> None:
    assert written_states("redis.call('HSET', KEYS[1], 'state', 'done', 'n', 1)") == {"done"}
    assert written_states("local s = x and 'a' or 'b'\nredis.call('HSET', k, 'state', s)") == {
        "a",
        "b",
    }
    assert written_states("redis.call('HSET', k, 'paused_from', state)") == set()
    assert written_states("redis.call('HSET', k, 'x', '(,{', 'state', 'a')") == {"a"}
    with pytest.raises(AssertionError):
        written_states("redis.call('HSET', KEYS[1], 'state', ARGV[2])")
    every = set().union(*(written_states(text(name)) for name in scripts.names()))
    assert every >= WRITTEN_HERE


def test_every_written_state_is_a_transition_target() -> None:
    targets = set().union(*states.TRANSITIONS.values())
    for name in scripts.names():
        assert written_states(text(name)) <= targets, name


def test_the_transitions_cover_every_state_and_lead_to_states() -> None:
    assert set(states.TRANSITIONS) == {None, *states.JOB_STATES}
    for source, targets in states.TRANSITIONS.items():
        assert targets <= set(states.JOB_STATES), source
        assert source not in targets
    reached, frontier = set(), {None}
    while frontier:
        reached |= frontier
        frontier = set().union(*(states.TRANSITIONS[s] for s in frontier)) - reached
    assert reached == {None, *states.JOB_STATES}
    for ended in states.ENDED_STATES:
        assert states.TRANSITIONS[ended] == {"queued"}  # only a retry reopens it
    named = {*states.ENDED_STATES, *states.SENDING_STATES, *states.FINISHING_STATES}
    assert named <= set(states.JOB_STATES)
    final_codes = states.FINAL_CODES
    assert final_codes == tuple(STATUS_CODES[s] for s in FINAL_STATUSES)


@pytest.mark.parametrize("name", scripts.names())
def test_every_script_loads_in_a_real_server(redis_client: redis.Redis, name: str) -> None:
    sha = redis_client.script_load(scripts.source(name))
    assert sha == scripts.script(name).sha
    assert redis_client.script_exists(sha) == [True]


def test_an_include_is_pasted_in_and_the_prelude_comes_first(
    redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "twice.lua").write_text(
        "-- twice: an include\nlocal function twice(x) return 2 * x end\n"
    )
    (tmp_path / "use_twice.lua").write_text(
        "-- use_twice: a test\n-- ARGV[1]: a number\n-- Returns it twice, and the table's sizes.\n"
        "--#include twice\n"
        "return {twice(tonumber(ARGV[1])), #FINAL_CODES, ENDED['completed'] and 1 or 0}\n"
    )
    monkeypatch.setattr(scripts, "LUA_DIR", tmp_path)
    read = scripts._read("use_twice")
    assert "local function twice" in read and "--#include" not in read
    run = Script(redis_client, (states.lua_prelude() + read).encode())
    assert run(args=[21]) == [42, len(FINAL_STATUSES), 1]


def test_no_python_module_holds_lua_or_evaluates_a_script() -> None:
    offenders = []
    for package in ("producer", "worker"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            source = path.read_text(encoding="utf-8")
            if any(s in source for s in ("redis.call(", ".eval(", "register_script(")):
                offenders.append(relative)
    assert offenders == []


@pytest.mark.parametrize(
    ("written_once", "where"),
    [("done = done +", "sum_final"), ("growth ^", "rate_factor")],
)
def test_the_final_sum_and_the_factor_recovery_are_written_once(
    written_once: str, where: str
) -> None:
    holders = [name for name in scripts.names() if written_once in text(name)]
    assert holders == [where]

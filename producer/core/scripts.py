"""Every Redis script smsbulk runs: a ``.lua`` file in producer/core/lua/,
read once, called by EVALSHA.

Each file starts with a header naming its KEYS, ARGV and return value. A line
``--#include NAME`` pastes ``NAME.lua`` there (a function two scripts share,
such as ``finish_if_final``), and every script begins with the state table's
Lua form (producer/core/states.py).

redis-py's Script objects do the calling: EVALSHA, and on NOSCRIPT (a
restarted or different server) SCRIPT LOAD and EVALSHA again; inside a
pipeline they load the script before the pipeline runs. They are made once
per script and process, with no client of their own: every call names its
client (``client=``).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from redis.commands.core import AsyncScript, Script

from producer.core.states import lua_prelude

LUA_DIR = Path(__file__).with_name("lua")
_INCLUDE = re.compile(r"^--#include ([a-z_]+)$", re.MULTILINE)


def _read(name: str) -> str:
    text = (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda match: _read(match.group(1)), text)


@cache
def source(name: str) -> bytes:
    """The script as Redis runs it: the state table, then the file."""
    return (lua_prelude() + _read(name)).encode()


@cache
def script(name: str) -> Script:
    """The script for a synchronous client: ``script(name)(keys, args, client=c)``."""
    return Script(None, source(name))  # type: ignore[arg-type]


@cache
def async_script(name: str) -> AsyncScript:
    """The script for a redis.asyncio client."""
    return AsyncScript(None, source(name))  # type: ignore[arg-type]


def names() -> list[str]:
    return sorted(path.stem for path in LUA_DIR.glob("*.lua"))

"""Account names and kinds, as producers see them.

Producers validate a job against the account it names (does it exist, is it
a template provider, does it have a default sender). They read only these
facts, never credentials: ``${VAR}`` references are left unresolved here.
The source is the TOML file of ``SMSBULK_CONFIG`` or, when a producer runs
on a host without that file, the registry workers publish in Redis.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

import redis

from producer.core import keys
from producer.errors import SmsbulkError

KINDS = ("gosms", "sendbulk", "uspeedo", "voipcomm")
# Template providers send a provider-side template with parameters, not our text.
TEMPLATE_KINDS = frozenset({"uspeedo"})
# Kinds whose API requires a sender on every request.
SENDER_REQUIRED_KINDS = frozenset({"uspeedo"})


class ConfigError(SmsbulkError):
    """The configuration is missing or malformed; the message names the key."""


@dataclass(frozen=True)
class AccountInfo:
    name: str
    kind: str
    sender: str | None = None
    # For `estimate` (read from the file only; the Redis registry has none).
    price_per_part: Decimal | None = None
    currency: str | None = None

    @property
    def is_template(self) -> bool:
        return self.kind in TEMPLATE_KINDS

    @property
    def needs_sender(self) -> bool:
        return self.kind in SENDER_REQUIRED_KINDS


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"SMSBULK_CONFIG: file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"SMSBULK_CONFIG: {path} is not valid TOML: {error}") from None


def accounts_from_config(config: dict[str, Any]) -> dict[str, AccountInfo]:
    providers = config.get("providers")
    if not isinstance(providers, dict) or not providers:
        raise ConfigError("providers: the configuration defines no [providers.NAME] account")
    accounts: dict[str, AccountInfo] = {}
    for name, table in providers.items():
        if not isinstance(table, dict):
            raise ConfigError(f"providers.{name}: must be a table")
        kind = table.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"providers.{name}.kind: must be one of {', '.join(KINDS)}")
        sender = table.get("sender")
        currency = table.get("currency")
        accounts[name] = AccountInfo(
            name,
            kind,
            sender if isinstance(sender, str) else None,
            _price(name, table.get("price_per_part")),
            currency if isinstance(currency, str) else None,
        )
    return accounts


def _price(name: str, raw: Any) -> Decimal | None:
    """A decimal from the TOML's number or string, exactly as written."""
    if raw is None:
        return None
    try:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise InvalidOperation
        price = Decimal(str(raw))
    except InvalidOperation:
        price = Decimal(-1)
    if not price.is_finite() or price < 0:
        raise ConfigError(f"providers.{name}.price_per_part: must be a number >= 0")
    return price


def load_accounts(
    client: redis.Redis | None = None, config_path: str | None = None
) -> dict[str, AccountInfo]:
    """Accounts from the config file if one is set, else from the workers' registry."""
    path = config_path or os.environ.get("SMSBULK_CONFIG")
    if path:
        return accounts_from_config(read_config_file(path))
    if client is not None:
        registered = cast(dict[bytes, bytes], client.hgetall(keys.ACCOUNTS))
        if registered:
            return {
                name.decode(): AccountInfo(name.decode(), *_split_registry(value))
                for name, value in registered.items()
            }
    raise ConfigError(
        "SMSBULK_CONFIG: not set, and no worker has registered its accounts in Redis yet"
    )


def registry_value(account: AccountInfo) -> str:
    return f"{account.kind}\t{account.sender or ''}"


def _split_registry(value: bytes) -> tuple[str, str | None]:
    kind, _, sender = value.decode().partition("\t")
    return kind, sender or None

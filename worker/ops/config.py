"""Provider accounts with their credentials, the routes over them, and the
[settings] table.

Credentials are resolved here, in the workers, and nowhere else: ``${VAR}``
is read from the environment when the worker starts. Anything missing or
malformed stops the worker at start-up with a message naming the key.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from producer.accounts import read_config_file
from producer.errors import ConfigError
from producer.job import SendWindow, TimeZone, field_path
from producer.routes import Route, parse_routes
from worker.providers.account import Account, NumberFormat
from worker.providers.registry import adapter_class

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class AccountTable(BaseModel):
    """One [providers.NAME] table, credentials aside (checked per kind)."""

    model_config = ConfigDict(extra="allow")

    kind: str
    base_url: str = Field(pattern=r"^https?://[^/]+")
    default_region: str = Field(pattern=r"^[A-Z]{2}$")
    sender: str | None = None
    messages_per_second: float = Field(default=50, gt=0)
    requests_per_second: float = Field(default=5, gt=0)
    burst_s: float = Field(default=1.0, gt=0)
    batch_size: int | None = Field(default=None, ge=1)
    max_parts: int | None = Field(default=None, ge=1)
    max_attempts: int = Field(default=5, ge=1)
    retry_base_s: float = Field(default=1, gt=0)
    retry_max_s: float = Field(default=60, gt=0)
    number_format: NumberFormat | None = None
    price_per_part: Decimal | None = Field(default=None, ge=0)
    currency: str | None = None
    daily_max_parts: int | None = Field(default=None, ge=1)
    failover_after_failures: int = Field(default=3, ge=1)
    failover_cooldown_s: float = Field(default=30, gt=0)
    send_window: SendWindow | None = None


class SettingsTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recovery_s: float = Field(default=300, ge=10)
    retention_days: float = Field(default=7, gt=0)
    api_max_body_mb: float = Field(default=64, gt=0)
    # Where job callbacks may go (producer.destinations): read by producers too.
    callback_allow_private: StrictBool = False
    callback_allow_http: StrictBool = False
    # The local time of a recipient whose number has no known time zone
    # (send windows), unless its window names a zone.
    default_timezone: TimeZone = "UTC"
    # Send a request only once its `sending` state is on a replica (WAIT) or
    # on disk (WAITAOF): a Redis failover or crash cannot make it forgotten.
    durable_sends: StrictBool = False


@dataclass(frozen=True)
class Config:
    accounts: dict[str, Account]
    settings: SettingsTable
    routes: dict[str, Route]


def _expand(value: str, where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return os.environ[name]

    return _VAR.sub(replace, value)


def parse_settings(raw: dict[str, Any]) -> SettingsTable:
    try:
        return SettingsTable.model_validate(raw.get("settings", {}))
    except ValidationError as error:
        raise _config_error("settings", error) from None


def _config_error(where: str, error: ValidationError) -> ConfigError:
    first = error.errors(include_url=False, include_input=False)[0]
    return ConfigError(f"{where}.{field_path(first['loc'])}: {first['msg']}")


def parse_account(name: str, raw: dict[str, Any]) -> Account:

    where = f"providers.{name}"
    try:
        table = AccountTable.model_validate(raw)
    except ValidationError as error:
        raise _config_error(where, error) from None
    try:
        adapter = adapter_class(table.kind)
    except KeyError as error:
        raise ConfigError(f"{where}.kind: {error.args[0]}") from None
    extra = set(table.model_extra or {})
    unknown = extra - set(adapter.credential_keys)
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key for kind {table.kind}")
    credentials = {}
    for key in adapter.credential_keys:
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}.{key}: required for kind {table.kind} (a string)")
        credentials[key] = _expand(value, f"{where}.{key}")
    batch_size = table.batch_size or adapter.default_batch_size
    if batch_size > adapter.max_batch_size:
        raise ConfigError(
            f"{where}.batch_size: {batch_size} is above the {table.kind} maximum "
            f"of {adapter.max_batch_size}"
        )
    return Account(
        name=name,
        kind=table.kind,
        base_url=table.base_url.rstrip("/"),
        default_region=table.default_region,
        sender=table.sender,
        messages_per_second=table.messages_per_second,
        requests_per_second=table.requests_per_second,
        burst_s=table.burst_s,
        batch_size=batch_size,
        max_parts=table.max_parts or adapter.default_max_parts,
        max_attempts=table.max_attempts,
        retry_base_s=table.retry_base_s,
        retry_max_s=table.retry_max_s,
        number_format=table.number_format,
        price_per_part=table.price_per_part,
        currency=table.currency,
        credentials=credentials,
        daily_max_parts=table.daily_max_parts,
        failover_after_failures=table.failover_after_failures,
        failover_cooldown_s=table.failover_cooldown_s,
        send_window=table.send_window,
    )


def load_config(path: str | None = None) -> Config:
    path = path or os.environ.get("SMSBULK_CONFIG")
    if not path:
        raise ConfigError("SMSBULK_CONFIG: set it to the path of the provider accounts TOML file")
    raw = read_config_file(path)
    providers = raw.get("providers")
    if not isinstance(providers, dict) or not providers:
        raise ConfigError("providers: the configuration defines no [providers.NAME] account")
    unknown = set(raw) - {"providers", "settings", "routes"}
    if unknown:
        raise ConfigError(
            f"{sorted(unknown)[0]}: unknown table (expected providers, routes, settings)"
        )
    accounts = {}
    for name, table in providers.items():
        if not isinstance(table, dict):
            raise ConfigError(f"providers.{name}: must be a table")
        accounts[name] = parse_account(name, table)
    return Config(
        accounts=accounts, settings=parse_settings(raw), routes=parse_routes(raw, accounts)
    )


# The limits GET /v1/accounts shows, as the workers apply them (defaults and
# the adapter's batch size filled in).
PUBLISHED_LIMITS = (
    "messages_per_second",
    "requests_per_second",
    "burst_s",
    "batch_size",
    "daily_max_parts",
    "failover_after_failures",
    "failover_cooldown_s",
)


def limits_value(account: Account) -> str:
    """What a worker publishes of an account's limits (``keys.LIMITS``): JSON."""
    return json.dumps({name: getattr(account, name) for name in PUBLISHED_LIMITS})

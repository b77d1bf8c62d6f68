"""Account names and kinds, as producers see them.

Producers validate a job against the account it names (does it exist, is it
a template provider, does it have a default sender). They read only these
facts, never credentials: ``${VAR}`` references are left unresolved here.
The source is the TOML file of ``SMSBULK_CONFIG`` or, when a producer runs
on a host without that file, the registry workers publish in Redis; the
routes over the accounts (``producer.routes``) come from the same source.

What a provider kind is (template or text, sender required or not) is never
written here: each worker publishes it with its accounts, from its adapter
class (`KindInfo`, ``smsbulk:accounts``), and a producer reading the file
takes it from there (or from the caller, as the ``smsbulk`` command does).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

import redis

from producer.core import keys
from producer.errors import ConfigError
from producer.routes import Route, parse_routes


@dataclass(frozen=True)
class KindInfo:
    """What producers need of a provider kind, published by workers from its adapter."""

    # A template provider sends a provider-side template with parameters, not our text.
    template: bool = False
    # The provider's API requires a sender on every request.
    needs_sender: bool = False

    def flags(self) -> str:
        """The registry's form: ``template,sender``, either, or empty."""
        return ",".join(
            name for name, on in (("template", self.template), ("sender", self.needs_sender)) if on
        )

    @classmethod
    def from_flags(cls, flags: str) -> KindInfo:
        names = set(flags.split(","))
        return cls(template="template" in names, needs_sender="sender" in names)


@dataclass(frozen=True)
class AccountInfo:
    name: str
    kind: str
    sender: str | None = None
    # For `estimate` and `max_cost` (the file's; workers publish them in the registry).
    price_per_part: Decimal | None = None
    currency: str | None = None
    facts: KindInfo = KindInfo()

    @property
    def is_template(self) -> bool:
        return self.facts.template

    @property
    def needs_sender(self) -> bool:
        return self.facts.needs_sender


class Accounts(dict[str, AccountInfo]):
    """The accounts by name, and the routes over them by name (``routes``):
    routes and accounts share one namespace."""

    def __init__(
        self,
        accounts: Mapping[str, AccountInfo] | None = None,
        routes: Mapping[str, Route] | None = None,
    ) -> None:
        super().__init__(accounts or {})
        self.routes: dict[str, Route] = dict(routes or {})


def routes_of(accounts: Mapping[str, AccountInfo]) -> Mapping[str, Route]:
    """The routes loaded with `accounts` (none for a plain mapping)."""
    return accounts.routes if isinstance(accounts, Accounts) else {}


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"SMSBULK_CONFIG: file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"SMSBULK_CONFIG: {path} is not valid TOML: {error}") from None


def accounts_from_config(
    config: dict[str, Any], kinds: Mapping[str, KindInfo] | None = None
) -> Accounts:
    """The file's accounts, with the facts of their kinds from `kinds`, and
    its routes (``[routes.NAME]``, checked against the accounts).

    With `kinds` empty or None (no worker has published yet and the caller
    knows none) every kind is taken as a text kind with no sender required:
    the kind itself is checked by the workers when they start.
    """
    providers = config.get("providers")
    if not isinstance(providers, dict) or not providers:
        raise ConfigError("providers: the configuration defines no [providers.NAME] account")
    accounts: dict[str, AccountInfo] = {}
    for name, table in providers.items():
        if not isinstance(table, dict):
            raise ConfigError(f"providers.{name}: must be a table")
        kind = table.get("kind")
        if not isinstance(kind, str) or not kind or (kinds and kind not in kinds):
            known = ", ".join(sorted(kinds)) if kinds else "the kinds the workers know"
            raise ConfigError(f"providers.{name}.kind: must be one of {known}")
        sender = table.get("sender")
        currency = table.get("currency")
        accounts[name] = AccountInfo(
            name,
            kind,
            sender if isinstance(sender, str) else None,
            _price(name, table.get("price_per_part")),
            currency if isinstance(currency, str) else None,
            (kinds or {}).get(kind, KindInfo()),
        )
    return Accounts(accounts, parse_routes(config, accounts))


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
    client: redis.Redis | None = None,
    config_path: str | None = None,
    kinds: Mapping[str, KindInfo] | None = None,
) -> Accounts:
    """Accounts and routes from the config file if one is set, else from the
    workers' registry.

    The facts of each kind come from `kinds` when given (a worker's own
    adapters), else from what the workers published in the registry.
    """
    path = config_path or os.environ.get("SMSBULK_CONFIG")
    registered = _registered(client) if client is not None and (kinds is None or not path) else {}
    if path:
        if kinds is None:
            kinds = {account.kind: account.facts for account in registered.values()}
        return accounts_from_config(read_config_file(path), kinds)
    if registered and client is not None:
        return Accounts(registered, _registered_routes(client, registered))
    raise ConfigError(
        "SMSBULK_CONFIG: not set, and no worker has registered its accounts in Redis yet"
    )


def registry_value(account: AccountInfo) -> str:
    """``kind<TAB>sender<TAB>flags<TAB>price_per_part<TAB>currency``: what a
    worker publishes of an account (empty where it has none)."""
    price = "" if account.price_per_part is None else str(account.price_per_part)
    return (
        f"{account.kind}\t{account.sender or ''}\t{account.facts.flags()}"
        f"\t{price}\t{account.currency or ''}"
    )


def _registered(client: redis.Redis) -> dict[str, AccountInfo]:
    registered = cast(dict[bytes, bytes], client.hgetall(keys.ACCOUNTS))
    return {
        name.decode(): _from_registry(name.decode(), value) for name, value in registered.items()
    }


def _registered_routes(
    client: redis.Redis, accounts: Mapping[str, AccountInfo]
) -> dict[str, Route]:
    """The routes workers published; a name that is an account's is the account."""
    registered = cast(dict[bytes, bytes], client.hgetall(keys.ROUTES))
    routes = (Route.from_json(name.decode(), value) for name, value in registered.items())
    return {route.name: route for route in routes if route.name not in accounts}


def _from_registry(name: str, value: bytes) -> AccountInfo:
    # A worker of an earlier release published two or three fields: no flags, no price.
    kind, sender, flags, price, currency = [*value.decode().split("\t"), "", "", "", ""][:5]
    return AccountInfo(
        name,
        kind,
        sender or None,
        Decimal(price) if price else None,
        currency or None,
        KindInfo.from_flags(flags),
    )

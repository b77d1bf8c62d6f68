"""Routes: a name a job uses in ``"provider"`` like an account, that sends
each recipient through a list of accounts chosen by the number's country,
in failover order.

```toml
[routes.world]
default_region = "RO"            # how numbers without a country code are read
accounts = ["bulk", "ro"]        # the list for any country not named below
[routes.world.countries]         # optional: lists by the number's ISO 3166 region
KE = ["ke_main", "ke_backup"]
```

Routes and accounts share one namespace. Producers (validation, estimate)
and workers (the pipeline) read the same table; workers also publish it in
Redis for producers without the file (``smsbulk:routes``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from producer.errors import ConfigError

_REGION = re.compile(r"^[A-Z]{2}$")


class RouteError(ConfigError):
    """A [routes.NAME] table is malformed; the message names the key."""


@dataclass(frozen=True)
class Route:
    name: str
    default_region: str
    accounts: tuple[str, ...]
    countries: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def accounts_for(self, region: str | None) -> tuple[str, ...]:
        """The failover list of a number of ``region`` (None: not known)."""
        if region is not None:
            found = self.countries.get(region)
            if found is not None:
                return found
        return self.accounts

    def every_account(self) -> list[str]:
        """Each account the route names, once, in first-seen order."""
        seen: dict[str, None] = dict.fromkeys(self.accounts)
        for names in self.countries.values():
            seen.update(dict.fromkeys(names))
        return list(seen)

    def to_json(self) -> str:
        return json.dumps(
            {
                "default_region": self.default_region,
                "accounts": list(self.accounts),
                "countries": {k: list(v) for k, v in self.countries.items()},
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, name: str, raw: bytes | str) -> Route:
        return parse_route(name, json.loads(raw))


def _account_list(where: str, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise RouteError(f"{where}: must be a non-empty list of account names")
    if not all(isinstance(name, str) and name for name in raw):
        raise RouteError(f"{where}: every entry must be an account name (a string)")
    if len(set(raw)) != len(raw):
        raise RouteError(f"{where}: names an account twice")
    return tuple(raw)


def parse_route(name: str, table: Any) -> Route:
    where = f"routes.{name}"
    if not isinstance(table, dict):
        raise RouteError(f"{where}: must be a table")
    unknown = set(table) - {"default_region", "accounts", "countries"}
    if unknown:
        raise RouteError(f"{where}.{sorted(unknown)[0]}: unknown key")
    region = table.get("default_region")
    if not isinstance(region, str) or not _REGION.match(region):
        raise RouteError(f"{where}.default_region: required, an ISO 3166 region such as RO")
    accounts = _account_list(f"{where}.accounts", table.get("accounts"))
    countries_raw = table.get("countries", {})
    if not isinstance(countries_raw, dict):
        raise RouteError(f"{where}.countries: must be a table of REGION = [accounts]")
    countries = {}
    for country, names in countries_raw.items():
        if not _REGION.match(country):
            raise RouteError(f"{where}.countries.{country}: not an ISO 3166 region such as KE")
        countries[country] = _account_list(f"{where}.countries.{country}", names)
    return Route(name, region, accounts, countries)


def parse_routes(raw: Mapping[str, Any], account_names: Iterable[str]) -> dict[str, Route]:
    """The file's [routes.*] tables, checked against its accounts: a route
    naming an unknown account, or a name used for both, is refused."""
    tables = raw.get("routes", {})
    if not isinstance(tables, dict):
        raise RouteError("routes: must be tables [routes.NAME]")
    names = set(account_names)
    routes = {}
    for name, table in tables.items():
        if name in names:
            raise RouteError(f"routes.{name}: the name is an account's too; give it another")
        route = parse_route(name, table)
        for account in route.every_account():
            if account not in names:
                raise RouteError(
                    f"routes.{name}: names account {account!r}, which is not defined "
                    "([providers.NAME])"
                )
        routes[name] = route
    return routes

"""What producers know of a kind comes from the workers' registry, never from
a table of kinds in producer/ (docs/ADDING-A-PROVIDER.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from producer.accounts import (
    AccountInfo,
    KindInfo,
    accounts_from_config,
    load_accounts,
    registry_value,
)
from producer.core import keys
from producer.errors import ConfigError

TEMPLATE = KindInfo(template=True, needs_sender=True)
CONFIG = """
[providers.otp]
kind = "acme"
base_url = "https://example.com"
default_region = "RO"
sender = "Shop"

[providers.bulk]
kind = "plain"
base_url = "https://example.com"
default_region = "RO"
"""


@pytest.mark.parametrize(
    "facts", [KindInfo(), TEMPLATE, KindInfo(template=True), KindInfo(needs_sender=True)]
)
def test_the_registry_carries_the_kinds_facts(
    redis_client: redis.Redis, facts: KindInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMSBULK_CONFIG", raising=False)
    account = AccountInfo("otp", "acme", "Shop", facts=facts)
    redis_client.hset(keys.ACCOUNTS, "otp", registry_value(account))
    assert load_accounts(redis_client)["otp"] == account


def test_a_registry_value_of_an_earlier_worker_has_no_flags(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMSBULK_CONFIG", raising=False)
    redis_client.hset(keys.ACCOUNTS, "old", "sendbulk\tMYBRAND")
    assert load_accounts(redis_client)["old"] == AccountInfo("old", "sendbulk", "MYBRAND")


def test_a_producer_with_the_file_takes_the_kinds_facts_from_the_registry(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(CONFIG)
    redis_client.hset(
        keys.ACCOUNTS,
        mapping={
            "elsewhere": registry_value(AccountInfo("elsewhere", "acme", facts=TEMPLATE)),
            "bulk": registry_value(AccountInfo("bulk", "plain")),
        },
    )
    accounts = load_accounts(redis_client, str(path))
    assert accounts["otp"].is_template and accounts["otp"].needs_sender
    assert accounts["otp"].sender == "Shop"
    assert not accounts["bulk"].is_template and not accounts["bulk"].needs_sender
    # Given by the caller (the smsbulk command knows its adapters), Redis is not read.
    given = load_accounts(None, str(path), {"acme": KindInfo(), "plain": TEMPLATE})
    assert given["bulk"].is_template and not given["otp"].is_template


def test_a_kind_the_workers_do_not_know_is_named() -> None:
    import tomllib

    with pytest.raises(ConfigError, match=r"providers\.bulk\.kind: must be one of acme"):
        accounts_from_config(tomllib.loads(CONFIG), {"acme": TEMPLATE})
    broken = CONFIG.replace('kind = "plain"', "kind = 3")
    with pytest.raises(ConfigError, match=r"providers\.bulk\.kind"):
        accounts_from_config(tomllib.loads(broken))

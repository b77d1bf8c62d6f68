"""Configuration errors stop the worker at start-up, naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from producer.accounts import accounts_from_config, load_accounts, read_config_file
from producer.core import keys
from producer.destinations import CallbackPolicy, load_policy
from producer.errors import ConfigError
from producer.routes import Route
from worker.ops.callbacks import policy_of
from worker.ops.config import load_config

GOOD = """
[providers.bulk]
kind = "sendbulk"
base_url = "https://bulk.example"
partner_id = "${PARTNER}"
api_key = "${KEY}"
shortcode = "SHORT"
default_region = "RO"
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "providers.toml"
    path.write_text(text)
    return load_config(str(path))


def test_credentials_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARTNER", "p-secret")
    monkeypatch.setenv("KEY", "k-secret")
    config = load(tmp_path, GOOD)
    account = config.accounts["bulk"]  # type: ignore[attr-defined]
    assert account.credentials == {
        "partner_id": "p-secret",
        "api_key": "k-secret",
        "shortcode": "SHORT",
    }
    assert (account.batch_size, account.max_parts, account.max_attempts) == (1000, 10, 5)
    assert (account.messages_per_second, account.requests_per_second, account.burst_s) == (50, 5, 1)
    assert "k-secret" not in repr(account) and "p-secret" not in repr(config)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda t: t.replace('api_key = "${KEY}"\n', ""), "providers.bulk.api_key"),
        (
            lambda t: t.replace('kind = "sendbulk"', 'kind = "carrier-pigeon"'),
            "providers.bulk.kind",
        ),
        (
            lambda t: t.replace('default_region = "RO"', 'default_region = "Romania"'),
            "providers.bulk.default_region",
        ),
        (lambda t: t + "batch_size = 5000\n", "providers.bulk.batch_size"),
        (lambda t: t + "messages_per_second = -1\n", "providers.bulk.messages_per_second"),
        (lambda t: t + "colour = 'red'\n", "providers.bulk.colour"),
        (lambda t: t + "[settings]\nrecovery_s = 'soon'\n", "settings.recovery_s"),
        (lambda t: t + "[settings]\ncallback_allow_http = 'yes'\n", "settings.callback_allow_http"),
        (
            lambda t: t + "[settings]\ncallback_allow_private = 1\n",
            "settings.callback_allow_private",
        ),
        (
            lambda t: t + "send_window = { start = '09:00', end = '9pm' }\n",
            "providers.bulk.send_window.end",
        ),
        (lambda t: t + "[settings]\ndefault_timezone = 'Mars'\n", "settings.default_timezone"),
        (lambda t: t + "[settings]\ndurable_sends = 'yes'\n", "settings.durable_sends"),
        (lambda t: t.replace("${KEY}", "${NOT_SET_ANYWHERE}"), "NOT_SET_ANYWHERE"),
        (lambda t: "[providers]\n", "providers"),
        (lambda t: t + "oops = [", "not valid TOML"),
    ],
)
def test_a_bad_setting_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: object, named: str
) -> None:
    monkeypatch.setenv("PARTNER", "p")
    monkeypatch.setenv("KEY", "k")
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load(tmp_path, change(GOOD))  # type: ignore[operator]


def test_an_accounts_send_window_and_the_default_time_zone_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARTNER", "p")
    monkeypatch.setenv("KEY", "k")
    text = GOOD + "send_window = { start = '09:00', end = '20:00' }\n"
    config = load(tmp_path, text + "[settings]\ndefault_timezone = 'Africa/Nairobi'\n")
    window = config.accounts["bulk"].send_window  # type: ignore[attr-defined]
    assert (window.start, window.end, window.timezone) == ("09:00", "20:00", None)
    assert config.settings.default_timezone == "Africa/Nairobi"  # type: ignore[attr-defined]
    assert load(tmp_path, GOOD).settings.default_timezone == "UTC"  # type: ignore[attr-defined]


def test_durable_sends_is_off_unless_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTNER", "p")
    monkeypatch.setenv("KEY", "k")
    assert load(tmp_path, GOOD).settings.durable_sends is False  # type: ignore[attr-defined]
    on = load(tmp_path, GOOD + "[settings]\ndurable_sends = true\n")
    assert on.settings.durable_sends is True  # type: ignore[attr-defined]


def test_missing_config_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMSBULK_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="SMSBULK_CONFIG"):
        load_config()


def test_producers_read_names_and_kinds_without_resolving_credentials(tmp_path: Path) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(GOOD.replace("${KEY}", "${NEVER_SET}"))
    accounts = accounts_from_config(read_config_file(path))
    assert accounts["bulk"].kind == "sendbulk"


def test_callback_settings_are_read_by_workers_and_producers_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARTNER", "p")
    monkeypatch.setenv("KEY", "k")
    path = tmp_path / "providers.toml"
    path.write_text(GOOD)
    assert load_policy(str(path)) == CallbackPolicy()  # https to public addresses only
    assert policy_of(load_config(str(path)).settings) == CallbackPolicy()
    path.write_text(
        GOOD + "[settings]\ncallback_allow_private = true\ncallback_allow_http = true\n"
    )
    assert load_policy(str(path)) == CallbackPolicy(allow_private=True, allow_http=True)
    assert policy_of(load_config(str(path)).settings) == load_policy(str(path))
    path.write_text(GOOD + "[settings]\ncallback_allow_http = 'yes'\n")
    with pytest.raises(ConfigError, match=r"settings\.callback_allow_http"):
        load_policy(str(path))
    monkeypatch.delenv("SMSBULK_CONFIG", raising=False)
    assert load_policy() == CallbackPolicy()  # no file: the strict default


ROUTE = '\n[routes.world]\ndefault_region = "RO"\naccounts = ["bulk"]\n'


def test_workers_read_the_routes_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTNER", "p")
    monkeypatch.setenv("KEY", "k")
    config = load(tmp_path, GOOD + ROUTE + '[routes.world.countries]\nKE = ["bulk"]\n')
    route = config.routes["world"]  # type: ignore[attr-defined]
    assert (route.default_region, route.accounts, route.accounts_for("KE")) == (
        "RO",
        ("bulk",),
        ("bulk",),
    )
    assert load(tmp_path, GOOD).routes == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (ROUTE.replace('["bulk"]', '["nope"]'), "routes.world: names account 'nope'"),
        (ROUTE.replace("world", "bulk"), "routes.bulk: the name is an account's"),
        (ROUTE.replace('["bulk"]', "[]"), "routes.world.accounts:"),
        (ROUTE.replace('"RO"', '"Romania"'), "routes.world.default_region:"),
        ("\n[rotues.world]\n", "rotues: unknown table (expected providers, routes, settings)"),
    ],
)
def test_a_bad_route_stops_the_worker_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str, named: str
) -> None:
    monkeypatch.setenv("PARTNER", "p")
    monkeypatch.setenv("KEY", "k")
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, GOOD + extra)
    assert str(refused.value).startswith(named)


def test_a_starting_worker_publishes_its_routes_for_producers(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.celery_app import _check_config

    path = tmp_path / "providers.toml"
    path.write_text(GOOD + ROUTE)
    for name, value in {
        "PARTNER": "p",
        "KEY": "k",
        "SMSBULK_REDIS_URL": redis_url,
        "SMSBULK_CONFIG": str(path),
        "SMSBULK_CALLBACK_SECRET": "s",
    }.items():
        monkeypatch.setenv(name, value)
    _check_config()
    assert redis_client.hgetall(keys.ROUTES) == {
        b"world": Route("world", "RO", ("bulk",)).to_json().encode()
    }
    monkeypatch.delenv("SMSBULK_CONFIG")
    published = load_accounts(redis_client)  # as a producer without the file sees them
    assert published.routes == load_config(str(path)).routes


def test_a_starting_worker_publishes_its_accounts_limits_for_the_console(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.celery_app import _check_config

    path = tmp_path / "providers.toml"
    path.write_text(GOOD + "messages_per_second = 20\ndaily_max_parts = 5000\n")
    for name, value in {
        "PARTNER": "p",
        "KEY": "k",
        "SMSBULK_REDIS_URL": redis_url,
        "SMSBULK_CONFIG": str(path),
        "SMSBULK_CALLBACK_SECRET": "s",
    }.items():
        monkeypatch.setenv(name, value)
    _check_config()
    published = json.loads(redis_client.hget(keys.LIMITS, "bulk") or b"null")
    assert published == {
        "messages_per_second": 20,
        "requests_per_second": 5,  # the default, as the worker applies it
        "burst_s": 1.0,
        "batch_size": 1000,  # sendbulk's own
        "daily_max_parts": 5000,
        "failover_after_failures": 3,
        "failover_cooldown_s": 30,
    }

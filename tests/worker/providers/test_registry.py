"""Every registered kind is complete (docs/ADDING-A-PROVIDER.md): its sandbox
module, its docs row, its example account; the demo and the benchmark
configure it; what producers learn of it is its adapter's."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import redis

from bench import stack as bench_stack
from producer.accounts import KindInfo, load_accounts
from tests.paths import ROOT
from worker.dev import demo
from worker.dev.sandbox.app import SANDBOXES
from worker.ops.config import parse_account
from worker.providers.registry import ADAPTERS, kind_infos

KINDS = sorted(ADAPTERS)


def kinds_table() -> dict[str, list[str]]:
    """docs/CONFIGURATION.md's "Provider kinds" rows: kind -> the other cells."""
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    section = text.split("## Provider kinds", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_every_kind_has_its_adapter_and_its_sandbox_module_and_no_more() -> None:
    assert sorted(SANDBOXES) == KINDS
    for kind, adapter in ADAPTERS.items():
        assert adapter.kind == kind
        assert kind == SANDBOXES[kind].KIND
        # The sandbox accepts exactly the account keys the adapter reads.
        assert tuple(SANDBOXES[kind].CREDENTIALS) == adapter.credential_keys


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_a_docs_row_equal_to_its_adapter(kind: str) -> None:
    adapter = ADAPTERS[kind]
    row = kinds_table().get(kind)
    assert row is not None, f"docs/CONFIGURATION.md: no Provider kinds row for {kind}"
    keys, sender, templates, batch, max_parts, number_format = row
    assert re.findall(r"`([^`]+)`", keys) == list(adapter.credential_keys)
    assert sender == ("required" if adapter.needs_sender else "optional")
    assert templates == ("yes" if adapter.is_template else "no")
    assert batch == f"{adapter.default_batch_size} / {adapter.max_batch_size}"
    assert max_parts == str(adapter.default_max_parts)
    assert number_format == f"`{adapter.default_number_format}`"


def test_the_docs_table_names_no_kind_that_is_not_registered() -> None:
    assert sorted(kinds_table()) == KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_an_example_account_whose_credentials_are_in_env_example(
    kind: str,
) -> None:
    example = tomllib.loads((ROOT / "config" / "providers.example.toml").read_text())
    env_example = (ROOT / ".env.example").read_text()
    tables = [t for t in example["providers"].values() if t.get("kind") == kind]
    assert tables, f"config/providers.example.toml: no account of kind {kind}"
    for table in tables:
        for key in ADAPTERS[kind].credential_keys:
            assert isinstance(table.get(key), str), f"{kind}: no {key}"
            var = re.fullmatch(r"\$\{([A-Z0-9_]+)\}", table[key])
            if var:  # a secret (a shortcode may be written as it is)
                assert re.search(rf"^{var[1]}=", env_example, re.M), f".env.example: {var[1]}"


def test_the_demo_sends_to_every_kind_on_its_sandbox_credentials(tmp_path: Path) -> None:
    assert demo.demo_kinds() == list(ADAPTERS)
    providers = {job["provider"] for job in demo.plan_jobs(100, demo.demo_kinds())}
    assert providers == {demo.account_name(kind) for kind in ADAPTERS}
    config = tmp_path / "providers.toml"
    env = demo.write_config(config, "http://127.0.0.1:9", demo.demo_kinds())
    tables = tomllib.loads(config.read_text())["providers"]
    for kind, adapter in ADAPTERS.items():
        account = parse_account(kind, _resolved(tables[demo.account_name(kind)], env))
        assert account.credentials == SANDBOXES[kind].CREDENTIALS
        assert (account.sender is not None) is adapter.needs_sender


def test_the_benchmark_has_an_account_of_every_kind(tmp_path: Path) -> None:
    assert {kind for kind, _ in bench_stack.ACCOUNTS.values()} == set(ADAPTERS)
    config = tmp_path / "providers.toml"
    env = bench_stack.write_accounts(config, "http://127.0.0.1:9", 100.0)
    for name, table in tomllib.loads(config.read_text())["providers"].items():
        account = parse_account(name, _resolved(table, env))
        assert account.credentials == SANDBOXES[account.kind].CREDENTIALS


def _resolved(table: dict[str, object], env: dict[str, str]) -> dict[str, object]:
    """The table with its ${VAR}s read from `env` (parse_account reads os.environ)."""
    return {
        key: env[value[2:-1]] if isinstance(value, str) and value.startswith("${") else value
        for key, value in table.items()
    }


def test_producers_learn_each_kind_from_its_adapter() -> None:
    assert kind_infos()["uspeedo"] == KindInfo(template=True, needs_sender=True)
    for kind, adapter in ADAPTERS.items():
        info = kind_infos()[kind]
        assert (info.template, info.needs_sender) == (adapter.is_template, adapter.needs_sender)


def test_a_starting_worker_publishes_its_kinds_for_producers(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.celery_app import _check_config

    config = tmp_path / "providers.toml"
    monkeypatch.setenv("SMSBULK_REDIS_URL", redis_url)
    monkeypatch.setenv("SMSBULK_CONFIG", str(config))
    monkeypatch.setenv("SMSBULK_CALLBACK_SECRET", "s")
    for name, value in bench_stack.write_accounts(config, "http://127.0.0.1:9", 10.0).items():
        monkeypatch.setenv(name, value)
    _check_config()
    monkeypatch.delenv("SMSBULK_CONFIG")
    published = load_accounts(redis_client)  # as a producer without the file sees them
    assert published["bench-uspeedo"].is_template and published["bench-uspeedo"].needs_sender
    assert not published["bench-gosms"].is_template
    # A producer with the file takes each kind's facts from the same registry.
    from_file = load_accounts(redis_client, str(config))
    assert {name: a.facts for name, a in from_file.items()} == {
        name: a.facts for name, a in published.items()
    }

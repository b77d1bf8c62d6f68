"""docker-compose.yml, Dockerfile, .env.example and the example config agree with the project.

No Docker engine runs here, so these check what `docker compose up` would trip over:
a command that is not ours, a secret written into the file, a Redis that may evict.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from typing import Any

import pytest
import yaml

from tests.paths import ROOT

SUBCOMMANDS = {
    "worker", "api", "sandbox", "demo", "submit", "send", "status", "jobs", "wait",
    "results", "cancel", "pause", "resume", "retry", "estimate", "optout", "schema",
}  # fmt: skip
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PARTNER|AUTH", re.I)
REFERENCE = re.compile(r"\$\{(\w+)(?:(:?[-?+])[^}]*)?\}")
CREDENTIALS = {
    "gosms": {"api_key"},
    "sendbulk": {"partner_id", "api_key"},
    "uspeedo": {"access_key_id", "access_key_secret"},
    "voipcomm": {"api_key", "api_password"},
}
EXAMPLE_VARS = {
    "GOSMS_API_KEY", "SENDBULK_PARTNER_ID", "SENDBULK_API_KEY", "USPEEDO_ACCESS_KEY_ID",
    "USPEEDO_ACCESS_KEY_SECRET", "VOIPCOMM_API_KEY", "VOIPCOMM_API_PASSWORD",
    "SMSBULK_API_TOKEN", "SMSBULK_CALLBACK_SECRET", "FLOWER_BASIC_AUTH",
}  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    assert {"redis", "worker", "flower", "api", "sandbox"} <= found.keys()
    return found


def words(command: str | list[Any]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(w) for w in command]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def project_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services.items() if "build" in svc}


def test_every_command_is_a_real_entry_point(services: dict[str, dict[str, Any]]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts: dict[str, str] = pyproject["project"]["scripts"]
    built = project_services(services)
    assert {"worker", "flower", "api", "sandbox"} <= built.keys()
    for name, svc in built.items():
        argv = words(svc["command"])
        if argv[0] == "celery":
            app = argv[argv.index("-A") + 1].split(":")[0]
            assert (ROOT / (app.replace(".", "/") + ".py")).is_file(), f"{name}: no module {app}"
        else:
            assert argv[0] in scripts, f"{name}: {argv[0]!r} is not in [project.scripts]"
            module = ROOT / scripts[argv[0]].split(":")[0].replace(".", "/")
            found = module.with_suffix(".py").is_file() or (module / "__init__.py").is_file()
            assert found, f"{name}: {scripts[argv[0]]} (the `smsbulk` command) is missing"
            assert argv[1] in SUBCOMMANDS, f"{name}: no subcommand `smsbulk {argv[1]}`"


def test_expected_commands(services: dict[str, dict[str, Any]]) -> None:
    assert words(services["worker"]["command"])[:2] == ["smsbulk", "worker"]
    assert words(services["api"]["command"])[:2] == ["smsbulk", "api"]
    assert words(services["sandbox"]["command"])[:2] == ["smsbulk", "sandbox"]
    flower = words(services["flower"]["command"])
    assert flower[:4] == ["celery", "-A", "worker.celery_app", "flower"]
    assert any(w.startswith("--basic-auth=${FLOWER_BASIC_AUTH:?") for w in flower)


def test_no_literal_secret_in_compose(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for var, value in environment(svc).items():
            if SECRET_NAME.search(var):
                assert REFERENCE.fullmatch(value), f"{name}: {var} must be a ${{...}} reference"
        for word in words(svc.get("command") or []):
            if SECRET_NAME.search(word.split("=")[0]) and "=" in word:
                assert REFERENCE.fullmatch(word.split("=", 1)[1]), f"{name}: literal {word!r}"
    text = yaml.safe_dump(services)  # the values, not the comments
    for value in env_example().values():
        assert value not in text, f"an .env.example value ({value!r}) is in docker-compose.yml"


def test_secrets_come_from_env_file(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert ".env" in words(worker["env_file"])
    env = environment(worker)
    assert env["SMSBULK_REDIS_URL"] == "redis://redis:6379/0"
    assert "SMSBULK_API_TOKEN" in environment(services["api"]) or "env_file" in services["api"]


def test_every_variable_compose_needs_is_in_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    example = env_example()
    assert example.keys() >= EXAMPLE_VARS
    for var, op in REFERENCE.findall(text):
        if op not in (":-", "-"):  # a variable without a default must be set in .env
            assert var in example, f"docker-compose.yml needs {var}; add it to .env.example"


def test_redis_persists_and_never_evicts(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    redis = services["redis"]
    argv = words(redis["command"])
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction"
    mounts = [str(v) for v in redis["volumes"]]
    named = [m.split(":")[0] for m in mounts if m.split(":")[1] == "/data"]
    assert named and named[0] in compose["volumes"], "redis /data must be a named volume"
    assert redis["healthcheck"]["test"]
    assert "ports" not in redis  # no password: reachable only inside the compose network


def test_worker_scales_and_reads_config_read_only(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        assert "container_name" not in svc, f"{name}: container_name breaks --scale"
    worker = services["worker"]
    config = environment(worker)["SMSBULK_CONFIG"]
    (mount,) = [v for v in worker["volumes"] if isinstance(v, dict) and v["source"] == "./config"]
    assert mount["read_only"] is True
    assert config.startswith(mount["target"].rstrip("/") + "/")
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_sandbox_only_under_its_profile(services: dict[str, dict[str, Any]]) -> None:
    assert services["sandbox"]["profiles"] == ["sandbox"]
    for name in ("redis", "worker", "flower", "api"):
        assert "profiles" not in services[name], f"{name} must start with a plain `up`"


def test_ports(services: dict[str, dict[str, Any]]) -> None:
    assert any(str(p).endswith("5555:5555") for p in services["flower"]["ports"])
    assert any(str(p).endswith("8080:8080") for p in services["api"]["ports"])
    assert "--port" in words(services["api"]["command"])


def test_dockerfile_builds_a_non_root_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert re.search(r"pip install '\.\[flower\]'(\s|$)", dockerfile)  # the project, with Flower
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".git" in ignored and ".venv" in ignored


def test_example_config_has_one_account_per_kind_with_env_credentials() -> None:
    config = tomllib.loads((ROOT / "config" / "providers.example.toml").read_text())
    accounts = config["providers"].values()
    assert sorted(a["kind"] for a in accounts) == sorted(CREDENTIALS)
    example = env_example()
    for account in accounts:
        assert account["base_url"] and account["default_region"]
        for key in CREDENTIALS[account["kind"]]:
            ref = REFERENCE.fullmatch(account[key])
            assert ref, f"{account['kind']}.{key} must be a ${{VAR}} reference"
            assert ref.group(1) in example, f"{ref.group(1)} is missing from .env.example"


def test_flower_gets_no_provider_credentials_only_the_broker_and_settings(
    services: dict[str, dict[str, Any]],
) -> None:
    flower = services["flower"]
    # env_file would hand it every credential of .env; its login is in its command.
    assert "env_file" not in flower
    env = environment(flower)
    assert env["SMSBULK_REDIS_URL"] == "redis://redis:6379/0"
    # SMSBULK_CONFIG only for [settings]: Celery apps on one broker must share
    # its visibility timeout (apps on one broker get the shortest); the file holds ${VAR} references only.
    assert set(env) <= {"SMSBULK_REDIS_URL", "SMSBULK_CONFIG"}, env
    assert not any(SECRET_NAME.search(var) for var in env)


def test_worker_metrics_listen_on_the_compose_network_and_are_not_published(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services["worker"]
    # The worker binds 127.0.0.1 by default; Prometheus scrapes it from the network.
    assert environment(worker)["SMSBULK_METRICS_HOST"] == "0.0.0.0"
    assert "9808" in [str(p) for p in worker["expose"]]
    assert "ports" not in worker


def test_the_example_api_token_is_one_the_api_refuses() -> None:
    from producer.api.app import check_token
    from producer.errors import ConfigError

    token = env_example()["SMSBULK_API_TOKEN"]
    with pytest.raises(ConfigError, match="SMSBULK_API_TOKEN"):
        check_token(token)

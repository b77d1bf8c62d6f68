"""Job-completion callbacks: POST the job status, signed, retried.

The body is the job status JSON; the header ``X-Smsbulk-Signature`` is
``sha256=<hex HMAC-SHA256 of the raw body>`` keyed with
``SMSBULK_CALLBACK_SECRET``, so the receiver can check that smsbulk sent it.

A job chooses the URL, so a job must not make the workers POST to Flower,
the metadata service or anything else on their network: the destination
rules are ``producer.destinations``'. The URL is checked again here, and a
host name is resolved by ``CheckedResolver``, which refuses the name if any
of its addresses is refused; aiohttp then connects only to the addresses it
returned (with the name for the Host header, SNI and the certificate), so a
second, different DNS answer (rebinding) is never used. Redirects are never
followed. Each delivery has its own session: no connection is shared.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import ssl

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from producer.destinations import CallbackPolicy, DestinationRefused
from producer.errors import SmsbulkError
from worker.ops.config import SettingsTable

SIGNATURE_HEADER = "X-Smsbulk-Signature"
SECRET_ENV = "SMSBULK_CALLBACK_SECRET"
MAX_ATTEMPTS = 5
TIMEOUT_S = 10.0


class CallbackFailed(SmsbulkError):
    pass


class CallbackRefused(CallbackFailed):
    """The destination is not allowed: never retried."""


class CheckedResolver(AbstractResolver):
    """A resolver whose every answer passes the policy, else none is used."""

    def __init__(self, policy: CallbackPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            self._policy.check_address(answer["host"])  # raises DestinationRefused
        return answers

    async def close(self) -> None:
        await self._inner.close()


def policy_of(settings: SettingsTable) -> CallbackPolicy:
    return CallbackPolicy(settings.callback_allow_private, settings.callback_allow_http)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def callback_secret() -> str | None:
    return os.environ.get(SECRET_ENV) or None


async def post_callback(
    url: str,
    body: bytes,
    secret: str,
    policy: CallbackPolicy,
    *,
    resolver: AbstractResolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """One delivery attempt; raises CallbackRefused for a destination the
    policy refuses, CallbackFailed unless the receiver says 2xx."""
    try:
        policy.check_url(url)  # a literal address never reaches the resolver
    except DestinationRefused as refused:
        raise CallbackRefused(f"destination refused: {refused}") from None
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(secret, body)}
    connector = aiohttp.TCPConnector(
        resolver=CheckedResolver(policy, resolver), ssl=ssl_context or True, force_close=True
    )
    try:
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
            ) as response,
        ):
            if not 200 <= response.status < 300:
                raise CallbackFailed(f"the receiver answered HTTP {response.status}")
    except DestinationRefused as refused:
        raise CallbackRefused(f"destination refused: {refused}") from None
    except aiohttp.ClientConnectorError as error:
        if isinstance(error.os_error, DestinationRefused):
            raise CallbackRefused(f"destination refused: {error.os_error}") from None
        raise CallbackFailed(f"could not deliver: {type(error).__name__}") from None
    except (TimeoutError, aiohttp.ClientError) as error:
        raise CallbackFailed(f"could not deliver: {type(error).__name__}") from None


def backoff_s(retries: int) -> float:
    """2, 4, 8, 16 s between the five attempts."""
    return float(2 ** (retries + 1))

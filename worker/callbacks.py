"""Job-completion callbacks: POST the job status, signed, retried.

The body is the job status JSON; the header ``X-Smsbulk-Signature`` is
``sha256=<hex HMAC-SHA256 of the raw body>`` keyed with
``SMSBULK_CALLBACK_SECRET``, so the receiver can check that smsbulk sent it.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import aiohttp

SIGNATURE_HEADER = "X-Smsbulk-Signature"
SECRET_ENV = "SMSBULK_CALLBACK_SECRET"
MAX_ATTEMPTS = 5
TIMEOUT_S = 10.0


class CallbackFailed(Exception):
    pass


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def callback_secret() -> str | None:
    return os.environ.get(SECRET_ENV) or None


async def post_callback(session: aiohttp.ClientSession, url: str, body: bytes, secret: str) -> None:
    """One delivery attempt; raises CallbackFailed unless the receiver says 2xx."""
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(secret, body)}
    try:
        async with session.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
        ) as response:
            if not 200 <= response.status < 300:
                raise CallbackFailed(f"the receiver answered HTTP {response.status}")
    except (TimeoutError, aiohttp.ClientError) as error:
        raise CallbackFailed(f"could not deliver: {type(error).__name__}") from None


def backoff_s(retries: int) -> float:
    """2, 4, 8, 16 s between the five attempts."""
    return float(2 ** (retries + 1))

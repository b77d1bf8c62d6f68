"""The Redis URL forms smsbulk accepts (``SMSBULK_REDIS_URL``), and every
client and Celery setting made from one: all of smsbulk reaches Redis
through here, so that each form works for the producer, the workers' sync
and async clients, the rate limiter, every script and the broker alike.

- ``redis://[[USER]:PASSWORD@]HOST:PORT[/DB]``: plain TCP.
- ``rediss://...?ssl_ca_certs=PATH[&ssl_cert_reqs=required]`` (and
  ``ssl_certfile``, ``ssl_keyfile`` for a client certificate): TLS, the
  options as redis-py reads them from the query. Without ``ssl_cert_reqs``
  the server's certificate is required to verify (redis-py's default);
  Celery's result backend and kombu refuse such a URL unless told, so they
  are told here (``celery_settings``).
- ``redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]``:
  ask these Sentinels for SERVICE's master, and ask again after a failover
  (redis-py's Sentinel pool drops a connection to a demoted master; the
  clients' retries then reconnect to the new one). The password is the
  master's; the Sentinels are reached without one.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelConnection
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from producer.errors import ConfigError

SENTINEL_SCHEME = "redis+sentinel"
SCHEMES = ("redis", "rediss", SENTINEL_SCHEME)
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
FIELD = "SMSBULK_REDIS_URL"
T = TypeVar("T")


@dataclass(frozen=True)
class SentinelTarget:
    """A ``redis+sentinel://`` URL taken apart."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    options: dict[str, str] = field(default_factory=dict)  # the rest of the query

    def master_kwargs(self) -> dict[str, Any]:
        given = {"db": self.db, "username": self.username, "password": self.password}
        return {k: v for k, v in given.items() if v is not None}


def parse_sentinel(url: str) -> SentinelTarget:
    """Raises ConfigError naming ``SMSBULK_REDIS_URL`` for a malformed one."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    sentinels = []
    for host_port in hosts.split(","):
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{FIELD}: a Sentinel is HOST:PORT, not {host_port!r}")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError(f"{FIELD}: a Sentinel URL ends in /SERVICE or /SERVICE/DB")
    return SentinelTarget(
        sentinels=tuple(sentinels),
        service=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        options=dict(parse_qsl(parts.query)),
    )


def scheme_of(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ConfigError(
            f"{FIELD}: {scheme or 'no'} scheme; use redis://, rediss:// or redis+sentinel://"
        )
    return scheme


def certificate_refused(error: BaseException) -> bool:
    """The TLS handshake failed on the server's certificate (redis-py keeps
    only the message of the ``ssl`` error it wraps)."""
    return "CERTIFICATE_VERIFY_FAILED" in str(error)


class _Retry(Retry):
    """Retry connection errors and timeouts, but not a certificate that
    does not verify: it will not verify on the thirtieth try either."""

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[[Exception], Any] | Callable[[Exception, int], Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        return super().call_with_retry(do, fail, _retryable(is_retryable), with_failure_count)


class _AsyncRetry(AsyncRetry):
    """``_Retry`` for redis.asyncio."""

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[[Exception], Any] | Callable[[Exception, int], Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        return await super().call_with_retry(do, fail, _retryable(is_retryable), with_failure_count)


def _retryable(also: Callable[[Exception], bool] | None) -> Callable[[Exception], bool]:
    return lambda error: not certificate_refused(error) and (also is None or also(error))


RETRIED = [RedisConnectionError, RedisTimeoutError]


def riding_out(retries: int) -> dict[str, Any]:
    """Client options that ride out a server restart or a failover: this
    many retries of a command, backing off from 50 ms to 2 s."""
    return {
        "retry": _Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        "retry_on_error": RETRIED,
    }


def riding_out_async(retries: int) -> dict[str, Any]:
    """``riding_out`` for ``async_client``."""
    return {
        "retry": _AsyncRetry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        "retry_on_error": RETRIED,
    }


class _FollowingMaster(SentinelManagedConnection):
    """redis-py's Sentinel connection asks the Sentinels for the master
    only as the pool hands it out: one whose socket broke mid-command
    reconnects, on its command's retries, to the address it had, after a
    failover the dead master's, for good. This one asks on every connect,
    and leaves retrying to the command (which asks again each time)."""

    def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self._sock and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
            retry_socket_connect = False
        super().connect_check_health(check_health, retry_socket_connect)


class _AsyncFollowingMaster(AsyncSentinelConnection):
    """``_FollowingMaster`` for redis.asyncio."""

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self._reader and self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
            retry_socket_connect = False
        await super().connect_check_health(check_health, retry_socket_connect)


def sync_client(url: str, **options: Any) -> redis.Redis:
    """A redis-py client for any of the URL forms; ``options`` go to each
    connection (timeouts, retries)."""
    if scheme_of(url) != SENTINEL_SCHEME:
        return redis.Redis.from_url(url, **options)
    target = parse_sentinel(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(options)
    )
    master = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.service, connection_class=_FollowingMaster, **target.master_kwargs(), **options
    )
    return cast(redis.Redis, master)


def async_client(url: str, **options: Any) -> aioredis.Redis:
    """``sync_client``'s asyncio twin (``redis.asyncio``)."""
    if scheme_of(url) != SENTINEL_SCHEME:
        return aioredis.Redis.from_url(url, **options)
    target = parse_sentinel(url)
    sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(options)
    )
    master = sentinel.master_for(
        target.service, connection_class=_AsyncFollowingMaster, **target.master_kwargs(), **options
    )
    return cast(aioredis.Redis, master)


def _sentinel_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    # Asking a Sentinel must not wait on a dead one for the master's timeouts.
    return {k: v for k, v in options.items() if k.startswith("socket_")} | {
        "socket_connect_timeout": 2,
        "socket_timeout": 2,
    }


def celery_settings(url: str) -> dict[str, Any]:
    """Celery's broker and result backend settings for ``url``:
    ``broker_url``, ``result_backend`` and, as the form needs them,
    ``broker_use_ssl`` / ``redis_backend_use_ssl`` (TLS) or ``master_name``
    for both transports' options (Sentinel, kombu's ``sentinel://`` URLs
    joined by ``;``). Transport options are returned under
    ``broker_transport_options`` and ``result_backend_transport_options``
    for the caller to merge into its own."""
    scheme = scheme_of(url)
    if scheme == SENTINEL_SCHEME:
        target = parse_sentinel(url)
        auth = ""
        if target.password is not None:
            auth = f"{quote(target.username or '', safe='')}:{quote(target.password, safe='')}@"
        joined = ";".join(f"sentinel://{auth}{h}:{p}/{target.db}" for h, p in target.sentinels)
        options = {"master_name": target.service}
        return {
            "broker_url": joined,
            "result_backend": joined,
            "broker_transport_options": options,
            "result_backend_transport_options": options,
        }
    if scheme == "redis":
        return {"broker_url": url, "result_backend": url}
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    tls: dict[str, Any] = {k: query.pop(k) for k in TLS_OPTIONS if k in query}
    reqs = str(tls.get("ssl_cert_reqs", "required")).lower().removeprefix("cert_")
    if reqs not in _CERT_REQS:
        raise ConfigError(f"{FIELD}: ssl_cert_reqs is required, optional or none, not {reqs!r}")
    tls["ssl_cert_reqs"] = _CERT_REQS[reqs]
    rest = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    bare = parts._replace(query=rest).geturl()
    return {
        "broker_url": bare,
        "result_backend": bare,
        "broker_use_ssl": tls,
        "redis_backend_use_ssl": tls,
    }

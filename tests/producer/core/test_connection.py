"""The Redis URL forms (producer/core/connection.py): what each becomes for
redis-py and for Celery, and the errors that name SMSBULK_REDIS_URL."""

from __future__ import annotations

import ssl

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.sentinel import SentinelConnectionPool

from producer.core.connection import (
    _retryable,
    celery_settings,
    certificate_refused,
    parse_sentinel,
    sync_client,
)
from producer.errors import ConfigError


def test_a_sentinel_url_names_its_sentinels_service_and_db() -> None:
    target = parse_sentinel("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380/main/3")
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (target.service, target.db, target.password) == ("main", 3, "s3cret")


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://10.0.0.1/main",
        "redis+sentinel://10.0.0.1:26379",
        "redis+sentinel://10.0.0.1:26379/main/x",
        "redis+sentinel://10.0.0.1:26379/a/1/2",
        "http://10.0.0.1:6379/0",
    ],
)
def test_a_malformed_url_names_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match="SMSBULK_REDIS_URL"):
        celery_settings(url)


def test_celery_gets_kombus_sentinel_urls_and_the_master_name() -> None:
    urls = celery_settings("redis+sentinel://h1:1,h2:2/main/3")
    assert urls["broker_url"] == "sentinel://h1:1/3;sentinel://h2:2/3"
    assert urls["result_backend"] == urls["broker_url"]
    assert urls["broker_transport_options"] == {"master_name": "main"}
    assert urls["result_backend_transport_options"] == {"master_name": "main"}


def test_celery_gets_tls_options_required_unless_told() -> None:
    urls = celery_settings("rediss://:pw@h:6380/1?ssl_ca_certs=%2Fca.pem")
    assert urls["broker_url"] == "rediss://:pw@h:6380/1"
    tls = {"ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert urls["broker_use_ssl"] == urls["redis_backend_use_ssl"] == tls
    told = celery_settings("rediss://h:6380/1?ssl_cert_reqs=none")
    assert told["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_NONE}
    with pytest.raises(ConfigError, match="ssl_cert_reqs"):
        celery_settings("rediss://h:6380/1?ssl_cert_reqs=sometimes")


def test_a_plain_url_is_left_alone() -> None:
    url = "redis://127.0.0.1:6379/0"
    assert celery_settings(url) == {"broker_url": url, "result_backend": url}


def test_a_sentinel_client_asks_the_sentinels_for_the_master() -> None:
    client = sync_client("redis+sentinel://127.0.0.1:1,127.0.0.1:2/main/2")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "main"
    assert pool.connection_kwargs["db"] == 2
    client.close()


def test_a_certificate_that_does_not_verify_is_not_retried() -> None:
    refused = RedisConnectionError("Error 1 connecting: [SSL: CERTIFICATE_VERIFY_FAILED] ...")
    assert certificate_refused(refused)
    assert not _retryable(None)(refused)
    assert _retryable(None)(RedisConnectionError("Connection refused"))

"""``rediss://`` (issue 16): a job submitted and sent by a real worker
through a TLS endpoint (stunnel4 in front of Valkey, a certificate made by
the test, its CA given in the URL's query), and a producer and a worker
refusing, at once and saying why, a server whose certificate does not verify."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from producer import Producer
from tests.integration.redis_servers import TlsValkey, tls_valkey
from tests.integration.stack import make_stack, ro_numbers
from worker.dev.launcher import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsValkey]:
    with tls_valkey(tmp_path_factory.mktemp("tls")) as server:
        yield server


def test_a_job_goes_through_a_tls_redis(tls: TlsValkey, tmp_path: Path) -> None:
    stack = make_stack(tls.url(), tmp_path, workers=1)
    try:
        producer = stack.producer()
        try:
            job_id = producer.submit(
                {
                    "provider": "bulk",
                    "text": "hello",
                    "messages": [{"to": n} for n in ro_numbers(30)],
                }
            )
        finally:
            producer.close()
        status = stack.wait_for(job_id, 60)
        assert status.counts["accepted"] == 30
        assert len(stack.sandbox_get("/_sandbox/sent?kind=sendbulk")) == 30
        client = stack.redis()
        assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == str(tls.ca)
        client.close()
    finally:
        stack.stop()


def test_a_producer_refuses_a_certificate_that_does_not_verify(tls: TlsValkey) -> None:
    producer = Producer(tls.url(tls.wrong_ca))
    started = time.monotonic()
    try:
        with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            producer.submit({"provider": "bulk", "text": "hi", "messages": [{"to": "0720000000"}]})
    finally:
        producer.close()
    assert time.monotonic() - started < 5, "a certificate that does not verify is not retried"


def test_a_worker_refuses_a_certificate_that_does_not_verify(
    tls: TlsValkey, tmp_path: Path
) -> None:
    stack = make_stack(tls.url(tls.wrong_ca), tmp_path, workers=1)
    try:
        worker = stack.workers[0]
        wait_until(lambda: not worker.alive(), 60, "the worker to stop")
        assert worker.popen.returncode != 0
        assert "TLS certificate does not verify" in worker.output()
    finally:
        stack.stop()

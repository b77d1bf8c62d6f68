"""The naive baseline's Celery app, written the way tutorials write it.

One task per recipient with the number and the text as arguments; the
number parsed and checked with ``phonenumbers`` (smsbulk validates every
number too: a fair comparison); one HTTP request per message to GoSMS's
single-send endpoint (``POST /v1/message/send``, ``X-Authorization``,
``{"recipient", "message"}``) with ``urllib.request``, a new connection each
time, as ``requests.post`` without a session does; one Redis ``HSET`` per
outcome. Celery's defaults otherwise (early acks, prefetch 4).

Run by the benchmark: ``celery -A bench.naive_app worker -Q bench.naive``
with ``BENCH_NAIVE_REDIS_URL``, ``BENCH_NAIVE_SANDBOX_URL`` and
``BENCH_NAIVE_API_KEY`` in the environment.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request

import phonenumbers
import redis
from celery import Celery

QUEUE = "bench.naive"
TASK = "bench.naive.send_sms"
SEND_PATH = "/v1/message/send"

REDIS_URL = os.environ.get("BENCH_NAIVE_REDIS_URL", "redis://127.0.0.1:6379/0")
SANDBOX_URL = os.environ.get("BENCH_NAIVE_SANDBOX_URL", "http://127.0.0.1:8025")
API_KEY = os.environ.get("BENCH_NAIVE_API_KEY", "")

app = Celery("naive", broker=REDIS_URL)
app.conf.task_default_queue = QUEUE
results = redis.Redis.from_url(REDIS_URL)


def _record(outcomes_key: str, index: int, outcome: dict[str, object]) -> None:
    outcome["t"] = time.time()
    results.hset(outcomes_key, str(index), json.dumps(outcome))


@app.task(name=TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def send_sms(outcomes_key: str, index: int, to: str, text: str) -> None:
    try:
        number = phonenumbers.parse(to, "RO")
    except phonenumbers.NumberParseException:
        _record(outcomes_key, index, {"status": "rejected"})
        return
    if not phonenumbers.is_valid_number(number):
        _record(outcomes_key, index, {"status": "rejected"})
        return
    # GoSMS takes 407XXXXXXXX: E.164 without the plus.
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    body = json.dumps({"recipient": e164[1:], "message": text}).encode()
    request = urllib.request.Request(
        SANDBOX_URL + SEND_PATH,
        data=body,
        headers={"Content-Type": "application/json", "X-Authorization": API_KEY},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            reply = json.loads(answer.read())
    except OSError as error:
        _record(outcomes_key, index, {"status": "failed", "error": str(error)})
        return
    _record(outcomes_key, index, {"status": "accepted", "id": reply["messageId"]})

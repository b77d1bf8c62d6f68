"""`smsbulk optout` reads numbers as the HTTP API does (producer/optouts.py)."""

from __future__ import annotations

import pytest
import redis

from producer.core import keys
from worker.cli import main


def test_optout_add_remove_list_store_e164(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--redis-url", redis_url, "optout"]
    assert main([*base, "add", "--region", "RO", "0712345678", "+40 722 123 456"]) == 0
    assert capsys.readouterr().out.split() == ["+40712345678", "+40722123456"]
    assert redis.Redis.from_url(redis_url).sismember(keys.OPTOUT, "+40712345678")
    assert main([*base, "remove", "0040712345678"]) == 0
    assert capsys.readouterr().out.split() == ["+40722123456"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["0712345678"], "--region"),
        (["--region", "XX", "0712345678"], "unknown region"),
        (["--region", "RO", "07123"], "not a valid phone number"),
    ],
)
def test_optout_refuses_bad_numbers_exit_2(
    redis_url: str, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    assert main(["--redis-url", redis_url, "optout", "add", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and says in captured.err
    assert redis.Redis.from_url(redis_url).scard(keys.OPTOUT) == 0

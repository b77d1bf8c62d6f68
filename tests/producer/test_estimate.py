"""`smsbulk estimate`: parts, encodings, the characters that forced UCS-2
and the cost, per message and in total, before anything is sent."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.accounts import AccountInfo, KindInfo, accounts_from_config
from producer.errors import ConfigError
from producer.estimate import estimate
from producer.job import Job
from producer.parts import count_parts
from worker.cli import main

PRICED = AccountInfo("ro", "gosms", price_per_part=Decimal("0.035"), currency="EUR")
UNPRICED = AccountInfo("plain", "sendbulk")
TEMPLATE = AccountInfo(
    "tpl",
    "uspeedo",
    sender="Shop",
    price_per_part=Decimal("0.01"),
    facts=KindInfo(template=True, needs_sender=True),
)

CONFIG = """
[providers.ro]
kind = "gosms"
base_url = "https://api.gosms.ro"
api_key = "${GOSMS_API_KEY}"
default_region = "RO"
price_per_part = 0.035
currency = "EUR"

[providers.plain]
kind = "sendbulk"
base_url = "https://example.com"
partner_id = "${P}"
api_key = "${K}"
shortcode = "X"
default_region = "RO"

[providers.tpl]
kind = "uspeedo"
base_url = "https://example.com"
access_key_id = "${I}"
access_key_secret = "${S}"
default_region = "RO"
sender = "Shop"
price_per_part = "0.0100"
currency = "USD"
"""


def job(*messages: dict[str, Any], **fields: Any) -> Job:
    return Job.model_validate({"provider": "ro", "messages": list(messages), **fields})


def test_each_message_has_its_parts_encoding_and_the_characters_that_forced_ucs2() -> None:
    result = estimate(
        job(
            {"to": "0712345678"},  # the job's text: GSM-7
            {"to": "0712345679", "text": "Mulțumim, ați câștigat 😀"},
            {"to": "0712345680", "text": "x" * 161},  # over one GSM-7 part
            {"to": "0712345681", "text": "a" * 152 + "€" + "a" * 152},  # € is never split
            text="Your code is 4411",
        ),
        PRICED,
    )
    shown = [(m.index, m.parts, m.encoding, m.ucs2_chars) for m in result.messages]
    assert shown == [
        (0, 1, "GSM-7", []),
        (1, 1, "UCS-2", ["ț", "â", "ș", "😀"]),
        (2, 2, "GSM-7", []),
        (3, 3, "GSM-7", []),
    ]


def test_the_total_adds_up_by_encoding_and_prices_every_part() -> None:
    long_ucs2 = "ă" * 71  # two UCS-2 parts
    result = estimate(
        job({"to": "1"}, {"to": "2", "text": long_ucs2}, {"to": "3"}, text="Hello"), PRICED
    )
    total = result.total
    assert (total.messages, total.parts) == (3, 4)
    assert {k: (v.messages, v.parts) for k, v in total.by_encoding.items()} == {
        "GSM-7": (2, 2),
        "UCS-2": (1, 2),
    }
    assert total.ucs2_chars == ["ă"]
    # Exact decimal arithmetic, as a string with the account's currency.
    assert (total.cost, total.currency) == ("0.140", "EUR")


def test_without_a_price_the_cost_is_null() -> None:
    total = estimate(job({"to": "1"}, text="Hello"), UNPRICED).total
    assert (total.cost, total.currency) == (None, None)


def test_a_template_job_has_no_parts_and_costs_one_part_per_recipient() -> None:
    template_job = Job.model_validate(
        {"provider": "tpl", "template_id": "T1", "messages": [{"to": "1"}, {"to": "2"}]}
    )
    result = estimate(template_job, TEMPLATE)
    assert result.template is True
    assert [(m.index, m.parts, m.encoding) for m in result.messages] == [
        (0, None, None),
        (1, None, None),
    ]
    assert (result.total.messages, result.total.parts, result.total.cost) == (2, None, "0.02")


@given(st.lists(st.text(max_size=400), min_size=1, max_size=8))
def test_totals_are_the_sum_of_the_messages(texts: list[str]) -> None:
    result = estimate(job(*({"to": "1", "text": t} for t in texts)), PRICED)
    assert [m.parts for m in result.messages] == [count_parts(t).parts for t in texts]
    parts = sum(count_parts(t).parts for t in texts)
    assert result.total.parts == parts
    assert sum(v.parts for v in result.total.by_encoding.values()) == parts
    assert Decimal(result.total.cost or "") == Decimal("0.035") * parts


def test_prices_are_read_from_the_file_exactly_and_checked() -> None:
    import tomllib

    accounts = accounts_from_config(tomllib.loads(CONFIG))
    assert accounts["ro"].price_per_part == Decimal("0.035")
    assert accounts["ro"].currency == "EUR"
    assert accounts["tpl"].price_per_part == Decimal("0.0100")
    assert accounts["plain"].price_per_part is None
    for bad in ("-1", '"cheap"', "true", "nan"):
        broken = CONFIG.replace("price_per_part = 0.035", f"price_per_part = {bad}")
        with pytest.raises(ConfigError, match=r"providers\.ro\.price_per_part"):
            accounts_from_config(tomllib.loads(broken))


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(CONFIG)
    monkeypatch.setenv("SMSBULK_CONFIG", str(path))
    return path


def write_job(tmp_path: Path, body: dict[str, Any]) -> str:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(body))
    return str(path)


def test_the_command_prints_json_per_message_and_in_total(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {
        "provider": "ro",
        "text": "Programarea dvs. este mâine",
        "messages": [{"to": "0712345678"}, {"to": "0712345679", "text": "OK"}],
    }
    assert main(["estimate", write_job(tmp_path, body)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["messages"] == [
        {"index": 0, "parts": 1, "encoding": "UCS-2", "ucs2_chars": ["â"]},
        {"index": 1, "parts": 1, "encoding": "GSM-7", "ucs2_chars": []},
    ]
    assert printed["total"] == {
        "messages": 2,
        "parts": 2,
        "by_encoding": {
            "UCS-2": {"messages": 1, "parts": 1},
            "GSM-7": {"messages": 1, "parts": 1},
        },
        "ucs2_chars": ["â"],
        "cost": "0.070",
        "currency": "EUR",
    }


def test_a_template_job_from_the_command(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {"provider": "tpl", "template_id": "T1", "messages": [{"to": "1", "params": ["a"]}]}
    assert main(["estimate", write_job(tmp_path, body)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["messages"] == [{"index": 0, "parts": None, "encoding": None, "ucs2_chars": []}]
    assert (printed["total"]["cost"], printed["total"]["currency"]) == ("0.0100", "USD")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "ro", "text": "hi", "messages": [{"to": ""}]}, "messages[0].to"),
        ({"provider": "nowhere", "text": "hi", "messages": [{"to": "1"}]}, "provider"),
        ({"provider": "ro", "messages": [{"to": "1"}]}, "messages[0].text"),
        ({"provider": "tpl", "messages": [{"to": "1"}]}, "template_id"),
        ({"provider": "ro", "text": "hi", "messages": [], "colour": "red"}, "colour"),
    ],
)
def test_an_invalid_job_exits_2_naming_the_field(
    config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    body: dict[str, Any],
    field: str,
) -> None:
    assert main(["estimate", write_job(tmp_path, body)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert field in captured.err


def test_transliteration_shows_both_counts_and_the_replaced_characters() -> None:
    text = "Programarea dvs. este mâine la ora 10:00. Vă așteptăm! " * 2
    body = {
        "provider": "ro",
        "text": text,
        "messages": [{"to": "0712345678"}, {"to": "1", "text": "OK"}],
    }
    written = estimate(Job.model_validate(body), PRICED)
    sent = estimate(Job.model_validate({**body, "transliterate": True}), PRICED)
    for result, enabled in ((written, False), (sent, True)):
        assert result.transliteration is not None
        assert result.transliteration.model_dump() == {
            "enabled": enabled,
            "parts_as_written": 3,
            "parts_transliterated": 2,
            "replaced_chars": ["â", "ă", "ș"],
        }
    # The totals and the cost follow the text as the job sends it.
    assert (written.total.parts, written.total.cost) == (3, "0.105")
    assert (sent.total.parts, sent.total.cost) == (2, "0.070")
    assert [m.encoding for m in sent.messages] == ["GSM-7", "GSM-7"]
    assert written.messages[0].ucs2_chars == ["â", "ă", "ș"]


def test_a_template_job_has_no_transliteration_counts() -> None:
    job = Job.model_validate(
        {"provider": "tpl", "template_id": "T", "transliterate": True, "messages": [{"to": "1"}]}
    )
    result = estimate(job, TEMPLATE)
    assert result.transliteration is not None
    assert (result.transliteration.parts_as_written, result.transliteration.enabled) == (None, True)

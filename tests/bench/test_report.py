"""The benchmark's figures for the one-time codes scenario (pure)."""

from __future__ import annotations

from bench import report, scenarios
from bench.measure import Result


def test_the_codes_line_gives_the_median_the_95th_percentile_and_the_worst() -> None:
    latencies = [float(ms) for ms in range(1, 21)]  # 20 codes: 1..20 ms
    line = report.otp_line(latencies[::-1])
    assert line == "20 codes, POST to provider: p50 10 ms, p95 19 ms, max 20 ms"


def test_the_otp_scenario_is_in_the_full_set_and_reported_against_its_target() -> None:
    otp = next(s for s in scenarios.full_set() if s.kind == "otp")
    assert otp.name == "otp-behind-campaign" and otp.account == "bench-limited"
    result = Result(otp, total_s=40.0, otp_ms=[30.0, 45.0, 60.0])
    (targets,) = report.target_lines([result])
    assert "one-time codes p95 <= 50 ms, max <= 150 ms: 3 codes" in targets
    assert "p95 60 ms, max 60 ms" in targets


def test_code_numbers_are_outside_the_campaigns() -> None:
    campaign = {scenarios.number(n) for n in range(0, 600_000, 997)}
    codes = [scenarios.otp_number(n) for n in range(scenarios.OTP_CODES)]
    assert len(set(codes)) == scenarios.OTP_CODES
    assert not {c.removeprefix("+4") for c in codes} & campaign

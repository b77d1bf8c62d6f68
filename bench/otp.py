"""The ``otp-behind-campaign`` scenario's target: a campaign through
``Producer.submit``, and meanwhile one-time codes posted to ``smsbulk api``
as one-recipient ``priority: high`` jobs on the same account.

A code's latency runs from just before its POST to the time the sandbox
received the request that carried it (the sandbox records arrival before
its answer's latency; both clocks are this machine's).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.request
import uuid

from bench.scenarios import OTP_CODES, OTP_INTERVAL_S, Scenario, otp_number
from bench.stack import Stack
from bench.targets import SmsbulkTarget
from worker.dev.launcher import start_api, wait_until

# The codes start once this share of the campaign is final: its chunks fill
# every worker and its account's rate limit binds.
START_AT_SHARE = 0.05
START_TIMEOUT_S = 120.0


class OtpTarget(SmsbulkTarget):
    """The campaign is the measured job; the codes ride beside it."""

    def __init__(self, stack: Stack, scenario: Scenario) -> None:
        super().__init__(stack, scenario)
        self.scenario = scenario
        self.token = secrets.token_urlsafe(32)
        self.api, self.port = start_api(stack.env, stack.work, self.token)
        self.posted: dict[str, float] = {}  # digits -> time.time() just before its POST
        self.problem: str | None = None
        self._thread = threading.Thread(target=self._post_codes, name="otp-codes", daemon=True)

    def submit(self) -> None:
        super().submit()
        self._thread.start()

    def _post_codes(self) -> None:
        try:
            self._await_campaign(START_AT_SHARE)
            for n in range(OTP_CODES):
                number = otp_number(n)
                self.posted[number.lstrip("+")] = time.time()
                self._post(
                    {
                        "job_id": f"otp-{uuid.uuid4().hex[:12]}",
                        "provider": self.scenario.account,
                        "priority": "high",
                        "text": f"Your code is {100_000 + n}.",
                        "messages": [{"to": number}],
                    }
                )
                time.sleep(OTP_INTERVAL_S)
        except Exception as error:  # noqa: BLE001 - reported in the scenario's result
            self.problem = f"posting the codes: {error}"

    def _await_campaign(self, share: float) -> None:
        wanted = int(self.scenario.recipients * share)
        wait_until(lambda: self.progress()[0] >= wanted, START_TIMEOUT_S, "the campaign")

    def _post(self, job: dict[str, object]) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/jobs",
            data=json.dumps(job).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            if answer.status != 202:
                raise RuntimeError(f"POST /v1/jobs answered {answer.status}")

    def latencies_ms(self, sandbox_url: str, kind: str) -> list[float]:
        """Each code's POST-to-provider time, in the order they were posted;
        a code the provider never received makes the scenario's problem."""
        self._thread.join(START_TIMEOUT_S + OTP_CODES * (OTP_INTERVAL_S + 30))
        arrived: dict[str, float] = {}
        with urllib.request.urlopen(
            f"{sandbox_url}/_sandbox/sent?kind={kind}", timeout=120
        ) as sent:
            for line in sent:
                if b"40790" not in line:  # otp_number's range: skip the campaign cheaply
                    continue
                row = json.loads(line)
                arrived.setdefault(row["number"].lstrip("+"), row["t"])
        missing = [number for number in self.posted if number not in arrived]
        if missing and self.problem is None:
            self.problem = f"{len(missing)} of {len(self.posted)} codes never reached the provider"
        return [1000 * (arrived[n] - t) for n, t in self.posted.items() if n in arrived]

    def close(self) -> None:
        super().close()
        self.api.stop()

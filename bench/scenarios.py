"""What the benchmark runs: scenarios and the jobs they submit (pure, no I/O).

Numbers are unique Romanian mobiles in the forms clients send: 80 %
``07XXXXXXXX``, 10 % ``+407XXXXXXXX``, 10 % ``07XX XXX XXX``. Texts are one
GSM-7 part, so recipients and parts are the same count. No ``ref``s: the
Redis figures are the job contract's minimum (a number and a shared text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["sendbulk", "gosms", "voipcomm", "limited", "naive", "route", "otp"]

TEXT = "Your appointment at Clinica Aurora is tomorrow at 10:00. Reply STOP to opt out."
DISTINCT_TEXTS = 1000
SIZES = (100_000, 1_000_000)
LATENCIES_MS = (0.0, 100.0)
VOIPCOMM_RECIPIENTS = 50_000
LATENCY_SCENARIOS_MS = (200.0, 500.0)  # sendbulk at a real provider's answer time
LATENCY_RECIPIENTS = 200_000
LATENCY_THREADS = 32
LATENCY_PREFORK = 4  # two processes a core, Celery's usual choice for I/O
DURABLE_LATENCY_MS = 200.0  # compared with the plain sendbulk scenario at that latency
LIMITED_RECIPIENTS = 200_000  # 10 s at the limit: a steady reading after the burst
LIMIT_PARTS_PER_S = 20_000
NAIVE_RECIPIENTS = 20_000
# otp-behind-campaign: one-time codes (one-recipient high-priority jobs over
# the HTTP API) while a campaign on the same account keeps every worker busy
# and the account's rate limit saturated.
OTP_CAMPAIGN_RECIPIENTS = 600_000
OTP_LATENCY_MS = 100.0
OTP_LIMIT_PARTS_PER_S = 15_000  # under what the workers reach at that latency
OTP_CODES = 20
OTP_INTERVAL_S = 0.5
QUICK_RECIPIENTS = 20_000
QUICK_NAIVE_RECIPIENTS = 3_000


@dataclass(frozen=True)
class Scenario:
    kind: Kind
    recipients: int
    latency_ms: float = 0.0
    limit_parts_per_s: float = LIMIT_PARTS_PER_S  # the `bench-limited` account only
    # > 0: each worker on Celery's threads pool with this many task threads
    # (one loop, many chunks in flight per process); 0: the run's prefork pool.
    threads: int = 0
    # > 0: each worker on Celery's prefork pool with this many processes.
    prefork: int = 0
    # [settings] durable_sends: each request waits for its sending state to
    # be fsynced (WAITAOF 1 0: the bench's Valkey has no replica).
    durable: bool = False

    @property
    def name(self) -> str:
        threads = f"-threads{self.threads}" if self.threads else ""
        prefork = f"-prefork{self.prefork}" if self.prefork else ""
        return self._name + threads + prefork + ("-durable" if self.durable else "")

    @property
    def settings_toml(self) -> str:
        """The workers' ``[settings]`` table for the scenario."""
        return "\n[settings]\ndurable_sends = true\n" if self.durable else ""

    @property
    def _name(self) -> str:
        size = _short(self.recipients)
        if self.kind == "voipcomm":
            return f"voipcomm-{size}-{DISTINCT_TEXTS}texts"
        if self.kind == "limited":
            return f"limited-{size}-{_short(int(self.limit_parts_per_s))}pps"
        if self.kind == "otp":
            return "otp-behind-campaign"
        return f"{self.kind}-{size}-{self.latency_ms:g}ms"

    @property
    def account(self) -> str:
        return "bench-limited" if self.kind == "otp" else f"bench-{self.kind}"

    @property
    def what(self) -> str:
        """One line for the report: what the scenario sends."""
        pool = f"; workers --pool=threads --concurrency={self.threads}" if self.threads else ""
        if self.prefork:
            pool = f"; workers --pool=prefork --concurrency={self.prefork}"
        durable = "; durable_sends = true (WAITAOF before each request)" if self.durable else ""
        return self._what + pool + durable

    @property
    def _what(self) -> str:
        if self.kind == "voipcomm":
            return f"voipcomm, {DISTINCT_TEXTS} distinct texts spread over the job"
        if self.kind == "limited":
            return f"sendbulk through an account limited to {self.limit_parts_per_s:,.0f} parts/s"
        if self.kind == "otp":
            return (
                f"{OTP_CODES} one-time codes (one-recipient priority high jobs, POST /v1/jobs, "
                f"one every {OTP_INTERVAL_S:g} s) while a sendbulk campaign of 1000 a request "
                f"saturates the same account, limited to {self.limit_parts_per_s:,.0f} parts/s"
            )
        if self.kind == "naive":
            return "naive: one Celery task, one HTTP request, one HSET per recipient (gosms single)"
        if self.kind == "gosms":
            return "gosms send-batch, batch_size 1000"
        if self.kind == "route":
            return "sendbulk over a route by country: RO 80 %, KE 10 %, DE 10 %, an account each"
        return "sendbulk, 1000 a request"


def _short(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def full_set(
    sizes: tuple[int, ...] = SIZES,
    latencies_ms: tuple[float, ...] = LATENCIES_MS,
    limit_parts_per_s: float = LIMIT_PARTS_PER_S,
    naive_recipients: int = NAIVE_RECIPIENTS,
    voipcomm_recipients: int = VOIPCOMM_RECIPIENTS,
    limited_recipients: int = LIMITED_RECIPIENTS,
) -> list[Scenario]:
    """Naive first (short; the ratio needs it), then the smsbulk scenarios,
    smallest first so that a broken set-up shows within minutes."""
    scenarios = [Scenario("naive", naive_recipients)]
    for size in sorted(sizes):
        for latency_ms in latencies_ms:
            scenarios += [
                Scenario("sendbulk", size, latency_ms),
                Scenario("gosms", size, latency_ms),
            ]
    # At a real provider's latency: the default (a threads-pool worker a core)
    # against one threads-pool process and against Celery's prefork pool.
    for latency_ms in LATENCY_SCENARIOS_MS:
        scenarios += [
            Scenario("sendbulk", LATENCY_RECIPIENTS, latency_ms),
            Scenario("sendbulk", LATENCY_RECIPIENTS, latency_ms, threads=LATENCY_THREADS),
            Scenario("sendbulk", LATENCY_RECIPIENTS, latency_ms, prefork=LATENCY_PREFORK),
        ]
    # durable_sends' cost: the same job at 200 ms with and without (same run).
    scenarios.append(Scenario("sendbulk", LATENCY_RECIPIENTS, DURABLE_LATENCY_MS, durable=True))
    # A route against the one-account path at the largest size (same run).
    scenarios.append(Scenario("route", max(sizes)))
    scenarios.append(Scenario("voipcomm", voipcomm_recipients))
    scenarios.append(Scenario("limited", limited_recipients, limit_parts_per_s=limit_parts_per_s))
    scenarios.append(otp_scenario())
    return scenarios


def otp_scenario() -> Scenario:
    return Scenario(
        "otp", OTP_CAMPAIGN_RECIPIENTS, OTP_LATENCY_MS, limit_parts_per_s=OTP_LIMIT_PARTS_PER_S
    )


def quick_set() -> list[Scenario]:
    return [
        Scenario("naive", QUICK_NAIVE_RECIPIENTS),
        Scenario("sendbulk", QUICK_RECIPIENTS),
        Scenario("gosms", QUICK_RECIPIENTS),
    ]


def number(n: int) -> str:
    """The ``n``-th recipient: unique for n < 60,000,000 (0720-0779 ranges)."""
    national = f"07{20 + n % 60}{n // 60:06d}"
    form = n % 10
    if form == 8:
        return "+4" + national
    if form == 9:
        return f"{national[:4]} {national[4:7]} {national[7:]}"
    return national


def routed_number(n: int) -> str:
    """The ``n``-th recipient of the route scenario: as ``number``, but one
    in ten a Kenyan and one in ten a German mobile (unique for n < 10**8)."""
    if n % 10 == 3:
        return f"+2547{10_000_000 + n // 10 % 10_000_000:08d}"
    if n % 10 == 7:
        return f"+49151{n // 10:08d}"
    return number(n)


def otp_number(n: int) -> str:
    """The ``n``-th one-time code's recipient: outside ``number``'s ranges."""
    return f"+40790{n:06d}"


def distinct_text(n: int) -> str:
    """The text of recipient ``n`` in the voipcomm scenario: one of
    DISTINCT_TEXTS, scattered (a multiplicative hash), so that a chunk of
    1000 holds about 730 distinct texts: close to voipcomm's worst case, about one
    request per 1.4 recipients."""
    k = (n * 2_654_435_761) % 2**32 % DISTINCT_TEXTS
    return f"Your code is {k:06d}. It expires in 10 minutes."


def build_job(scenario: Scenario, job_id: str) -> dict[str, Any]:
    """The job as an application would pass it to ``Producer.submit``."""
    messages: list[dict[str, Any]]
    if scenario.kind == "voipcomm":
        messages = [{"to": number(n), "text": distinct_text(n)} for n in range(scenario.recipients)]
        return {"job_id": job_id, "provider": scenario.account, "messages": messages}
    to = routed_number if scenario.kind == "route" else number
    messages = [{"to": to(n)} for n in range(scenario.recipients)]
    return {"job_id": job_id, "provider": scenario.account, "text": TEXT, "messages": messages}

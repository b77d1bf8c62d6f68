"""``smsbulk wait``: a progress bar on stderr until the job ends."""

from __future__ import annotations

import sys
import time

from producer import Producer
from producer.core.states import ENDED_STATES
from producer.job import JobStatus

PLAIN_LINE_EVERY_S = 5.0


def render(status: JobStatus, rate_per_s: float, width: int = 30) -> str:
    done = status.total - status.counts.get("pending", 0)
    share = done / status.total if status.total else 1.0
    filled = int(share * width)
    bar = "#" * filled + "-" * (width - filled)
    left = status.total - done
    eta = f"{left / rate_per_s:5.0f} s left" if rate_per_s > 0 and left else ""
    return (
        f"\r{status.job_id[:20]:20} [{bar}] {done}/{status.total} {share:6.1%} "
        f"{rate_per_s:8.0f}/s {eta:14} {status.state:9}"
    )


def wait_for_job(
    producer: Producer, job_id: str, timeout_s: float | None, interval_s: float = 0.5
) -> bool:
    """True once the job is completed or cancelled with nothing pending;
    False on timeout."""
    started = last_time = last_line = time.monotonic()
    last_done = None
    rate = 0.0
    tty = sys.stderr.isatty()
    while True:
        status = producer.status(job_id)
        now = time.monotonic()
        done = status.total - status.counts.get("pending", 0)
        if last_done is not None and now > last_time:
            instant = (done - last_done) / (now - last_time)
            rate = instant if rate == 0 else 0.7 * rate + 0.3 * instant
        last_done, last_time = done, now
        line = render(status, rate)
        if tty:
            sys.stderr.write(line)
        elif now - last_line >= PLAIN_LINE_EVERY_S:
            # Not a terminal (a log, CI): a plain line now and then.
            sys.stderr.write(line.lstrip("\r") + "\n")
            last_line = now
        # A cancelled job has ended once its sweep has settled every recipient.
        ended = status.state in ENDED_STATES and not status.counts.get("pending", 0)
        if ended or (timeout_s is not None and now - started > timeout_s):
            sys.stderr.write(("" if tty else line.lstrip("\r")) + "\n")
            sys.stderr.flush()
            return ended
        sys.stderr.flush()
        time.sleep(interval_s)

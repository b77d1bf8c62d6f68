"""Submission alone: the time and producer memory of one ``Producer.submit``
of the ``sendbulk-1m`` job, against a fresh Valkey, no workers.

    python -m bench.submit_only [--recipients N] [--source list|generator|json]

``--source`` is how the job is passed: a dict with a list of messages (as
``make bench`` does), a dict whose messages come from a generator (the job
then never exists in full on the application's side), or the job's JSON as
bytes (as the HTTP API passes a request body). Memory figures are this
process's RSS: the built job, and VmHWM during the call minus RSS just
before it (bench/procfs.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procfs
from bench.scenarios import Scenario, build_job, number
from bench.stack import write_accounts
from producer import Producer
from worker.dev.launcher import start_valkey

MB = 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--source", choices=("list", "generator", "json"), default="list")
    args = parser.parse_args(argv)
    scenario = Scenario("sendbulk", args.recipients)
    with tempfile.TemporaryDirectory(prefix="smsbulk-submit-") as work:
        config = Path(work) / "providers.toml"
        write_accounts(config, "http://127.0.0.1:9", 1000.0)
        server = start_valkey()
        try:
            producer = Producer(server.connection_url, config_path=str(config))
            # A small submission first: imports, connections and pydantic's
            # validators are built before the measured call, as in a
            # long-running application.
            producer.submit(build_job(Scenario("sendbulk", 10), "warm-up"))
            gc.collect()
            rss_empty_kb = procfs.own_rss_kb()
            built = build_job(scenario, "bench-submit")
            if args.source == "generator":
                built["messages"] = ({"to": number(n)} for n in range(scenario.recipients))
            job: dict[str, Any] | bytes = (
                json.dumps(built).encode() if args.source == "json" else built
            )
            del built
            gc.collect()
            rss_before_kb = procfs.own_rss_kb()
            peak_reset = procfs.reset_own_peak_rss()
            start = time.monotonic()
            producer.submit(job)
            submit_s = time.monotonic() - start
            hwm_kb = procfs.own_rss_kb("VmHWM")
            total = producer.status("bench-submit").total
            producer.close()
        finally:
            server.stop()
    added = f"{(hwm_kb - rss_before_kb) / MB:,.0f} MB" if peak_reset else "unknown"
    print(
        f"{scenario.recipients:,} recipients ({args.source}): submit {submit_s:.2f} s; "
        f"job built {(rss_before_kb - rss_empty_kb) / MB:,.0f} MB; "
        f"producer peak {hwm_kb / MB:,.0f} MB, added during submit {added}; total {total:,}"
    )


if __name__ == "__main__":
    main()

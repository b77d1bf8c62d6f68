"""smsbulk's benchmark (``make bench``, ``python -m bench.run --help``).

Everything runs on loopback in processes the benchmark starts and stops
itself; it prints figures and writes ``docs/BENCHMARKS.md``. It is not a
timed test: nothing here passes or fails on a threshold.
"""

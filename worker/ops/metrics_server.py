"""``/metrics`` of a worker: the main process adds up every pool process.

Started at ``worker_init``, in the worker's main process, before the pool
forks: it makes this worker's own directory for prometheus_client's
multiprocess files (inside ``PROMETHEUS_MULTIPROC_DIR`` if that is set, else
in the system's temporary directory), points ``PROMETHEUS_MULTIPROC_DIR`` at
it so that the children inherit it, and serves the sum of the files. A
directory per worker means two workers on one host never mix or wipe each
other's files, and each starts from zero. It is removed at shutdown.

prometheus_client is imported only here, after the variable is set (see
``worker.ops.metrics``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from producer.errors import SmsbulkError
from worker.ops.metrics import MULTIPROC_ENV, metrics_port

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry

DIR_PREFIX = "smsbulk-metrics-"
HOST_ENV = "SMSBULK_METRICS_HOST"
# Loopback unless told otherwise: the metrics name accounts and rates, and a
# worker host's other ports are nobody's business (the compose file sets
# 0.0.0.0 on its private network, where Prometheus scrapes it).
DEFAULT_HOST = "127.0.0.1"
# Live gauges (requests in flight) of a process that is gone must not count.
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]*_(\d+)\.db$")


class MetricsPortBusy(SmsbulkError):
    def __init__(self, host: str, port: int, error: OSError) -> None:
        super().__init__(
            f"cannot serve metrics on {host}:{port} ({error.strerror or error}); "
            f"give each worker on a host its own SMSBULK_METRICS_PORT (0 for none), "
            f"and {HOST_ENV} an address of this host"
        )
        self.port = port


def metrics_host(environ: Mapping[str, str] = os.environ) -> str:
    """The address to serve on: SMSBULK_METRICS_HOST, default 127.0.0.1."""
    return environ.get(HOST_ENV, "").strip() or DEFAULT_HOST


@dataclass
class MetricsServer:
    host: str
    port: int
    directory: Path
    previous_dir: str | None
    server: WSGIServer
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        _restore_dir(self.previous_dir)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_metrics_server(addr: str | None = None) -> MetricsServer | None:
    """Serve /metrics on SMSBULK_METRICS_HOST (or ``addr``) and
    SMSBULK_METRICS_PORT; None when the port is 0.

    Raises MetricsConfigError for a malformed port and MetricsPortBusy when
    the address cannot be bound (then nothing is left behind)."""
    port = metrics_port()
    host = addr or metrics_host()
    if port == 0:
        return None
    previous_dir = os.environ.get(MULTIPROC_ENV) or None
    if previous_dir:
        os.makedirs(previous_dir, exist_ok=True)
    _remove_stale_dirs(Path(previous_dir or tempfile.gettempdir()))
    directory = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=previous_dir))
    os.environ[MULTIPROC_ENV] = str(directory)
    _choose_value_class()
    try:
        from prometheus_client import start_http_server

        server, thread = start_http_server(port, addr=host, registry=_registry(directory))
    except OSError as error:  # socket.gaierror too: a host name that does not resolve
        _restore_dir(previous_dir)
        shutil.rmtree(directory, ignore_errors=True)
        raise MetricsPortBusy(host, port, error) from None
    return MetricsServer(host, port, directory, previous_dir, server, thread)


def _remove_stale_dirs(parent: Path) -> None:
    """Directories of workers that were killed before their shutdown."""
    for path in parent.glob(f"{DIR_PREFIX}*-*"):
        pid = path.name[len(DIR_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _choose_value_class() -> None:
    """prometheus_client reads PROMETHEUS_MULTIPROC_DIR once, when imported:
    if something imported it before the variable was set, choose again.
    Metric objects are built later, per process (``worker.ops.metrics``)."""
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def _restore_dir(previous_dir: str | None) -> None:
    if previous_dir is None:
        os.environ.pop(MULTIPROC_ENV, None)
    else:
        os.environ[MULTIPROC_ENV] = previous_dir
    _choose_value_class()


def reap_dead_processes(directory: Path) -> None:
    """Forget the live gauges of pool processes that died without their
    ``worker_process_shutdown`` (killed): their requests are not in flight."""
    from prometheus_client import multiprocess

    for path in directory.iterdir():
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not _alive(int(match.group(1))):
            multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                int(match.group(1)), str(directory)
            )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _registry(directory: Path) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.registry import Collector

    class ReapingCollector(Collector):
        def __init__(self) -> None:
            self.files = MultiProcessCollector(None, str(directory))  # type: ignore[no-untyped-call]

        def collect(self) -> Iterable[Metric]:
            reap_dead_processes(directory)
            return cast(Iterable[Metric], self.files.collect())  # type: ignore[no-untyped-call]

    registry = CollectorRegistry()
    registry.register(ReapingCollector())
    return registry

"""deploy/: the Grafana dashboard and the Prometheus scrape config agree with
the metrics the workers export (worker/ops/metrics.py), and compose's
optional `monitoring` profile provisions both."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.paths import ROOT
from worker.ops import metrics
from worker.ops.metrics import DEFAULT_PORT

DASHBOARD = ROOT / "deploy" / "grafana" / "smsbulk.json"
METRIC = re.compile(r"\b(smsbulk_[a-z0-9_]+)")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> set[str]:
    """Every series name a worker's /metrics can show."""
    names = set()
    for family in metrics._build().registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def queries(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ("expr", "definition") and isinstance(v, str)]
        return found + [q for v in node.values() for q in queries(v)]
    if isinstance(node, list):
        return [q for item in node for q in queries(item)]
    return []


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_every_metric_the_dashboard_queries_is_one_the_workers_export(
    dashboard: dict[str, Any],
) -> None:
    named = {name for query in queries(dashboard) for name in METRIC.findall(query)}
    assert named, "the dashboard queries no smsbulk metric"
    assert named <= exported(), sorted(named - exported())


def test_the_dashboard_shows_what_an_operator_watches(dashboard: dict[str, Any]) -> None:
    every = " ".join(queries(dashboard))
    for metric in (
        "smsbulk_recipients_total",  # throughput by status
        "smsbulk_provider_request_duration_seconds_bucket",  # latency percentiles
        "smsbulk_provider_requests_in_flight",
        "smsbulk_throttled_total",  # 429s
        "smsbulk_rate_limit_wait_seconds_bucket",
        "smsbulk_account_circuit_open",
    ):
        assert metric in every, metric
    assert "sum by (status)" in every and "histogram_quantile(0.99" in every
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["datasource"]["uid"] == "prometheus" for panel in dashboard["panels"])


def test_prometheus_scrapes_every_worker_replica_on_the_metrics_port() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["worker"] and discovery["port"] == DEFAULT_PORT


def test_compose_monitoring_profile_provisions_prometheus_and_grafana() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
    mounted = {
        (volume["source"], volume["target"])
        for name in ("prometheus", "grafana")
        for volume in services[name]["volumes"]
        if isinstance(volume, dict)
    }
    assert ("./deploy/prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml") in mounted
    assert ("./deploy/grafana/provisioning", "/etc/grafana/provisioning") in mounted
    assert ("./deploy/grafana/smsbulk.json", "/var/lib/grafana/dashboards/smsbulk.json") in mounted
    for source, _ in mounted:
        assert (ROOT / source).exists(), source
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["uid"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/smsbulk.yml").read_text()
    )["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"

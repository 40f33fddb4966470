"""DaemonMetrics served by a real MetricsServer, scraped over HTTP and parsed."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from edge_core.schema import TASK_NAMES, TASKS
from edge_daemon.metrics import DROP_REASONS, DaemonMetrics, MetricsServer, latency_buckets
from engines.base import EngineInfo


@pytest.fixture
def served():
    registry = CollectorRegistry()
    metrics = DaemonMetrics(registry)
    server = MetricsServer(registry, "127.0.0.1", 0)
    yield metrics, server
    server.close()


def scrape(server: MetricsServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{server.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_are_exported_with_units_and_labels(served):
    metrics, server = served
    metrics.detected.inc(5)
    metrics.classified.inc(3)
    metrics.dropped.labels("queue_full").inc(1)
    metrics.failed.inc(1)
    metrics.queue_depth.set(2)
    metrics.batch_size.observe(3)
    metrics.latency.labels("phy").observe(0.0015)
    metrics.max_exec_violations.labels("app").inc()
    metrics.labels.labels("phy", "802.11n").inc()
    got = scrape(server)
    assert got[("edgetc_packets_detected_total", ())] == 5
    assert got[("edgetc_packets_classified_total", ())] == 3
    assert got[("edgetc_packets_dropped_total", (("reason", "queue_full"),))] == 1
    assert got[("edgetc_packets_dropped_total", (("reason", "shutdown"),))] == 0
    assert got[("edgetc_packets_failed_total", ())] == 1
    assert got[("edgetc_queue_depth", ())] == 2
    assert got[("edgetc_batch_size_count", ())] == 1
    assert got[("edgetc_batch_size_sum", ())] == 3
    assert got[("edgetc_latency_seconds_count", (("task", "phy"),))] == 1
    # 1.5 ms is within phy's 2 ms budget: counted in the le="0.002" bucket
    assert got[("edgetc_latency_seconds_bucket", (("le", "0.002"), ("task", "phy")))] == 1
    assert got[("edgetc_latency_seconds_bucket", (("le", "0.0015"), ("task", "phy")))] == 1
    assert got[("edgetc_latency_seconds_bucket", (("le", "0.001"), ("task", "phy")))] == 0
    assert got[("edgetc_max_exec_violations_total", (("task", "app"),))] == 1
    assert got[("edgetc_labels_total", (("label", "802.11n"), ("task", "phy")))] == 1
    for task in TASK_NAMES:  # every task present from the start, at zero
        assert ("edgetc_latency_seconds_count", (("task", task),)) in got
        assert ("edgetc_max_exec_violations_total", (("task", task),)) in got
    for reason in DROP_REASONS:
        assert ("edgetc_packets_dropped_total", (("reason", reason),)) in got


def test_power_metrics_are_absent_until_enabled(served):
    metrics, server = served
    names = {name for name, _ in scrape(server)}
    assert not any(n.startswith(("edgetc_power", "edgetc_energy", "edgetc_joules")) for n in names)
    metrics.enable_power()
    metrics.enable_power()  # idempotent: no duplicate registration
    assert metrics.power_watts is not None and metrics.energy_joules is not None
    assert metrics.joules_per_sample is not None
    metrics.power_watts.set(4.5)
    metrics.energy_joules.inc(9.0)
    metrics.joules_per_sample.set(0.25)
    got = scrape(server)
    measured = (("method", "measured"),)  # enable_power's default; a CPU estimate: "estimated"
    assert got[("edgetc_power_watts", measured)] == 4.5
    assert got[("edgetc_energy_joules_total", measured)] == 9.0
    assert got[("edgetc_joules_per_sample", measured)] == 0.25


def test_engine_info_labels(served):
    metrics, server = served
    info = EngineInfo("onnxruntime", "fp32", "cpu", "model.onnx", "onnxruntime 1.32", 2, {"x": 1})
    metrics.set_engine_info(info, "/models/default")
    got = scrape(server)
    labels = {
        "backend": "onnxruntime", "precision": "fp32", "device": "cpu", "model_file": "model.onnx",
        "runtime": "onnxruntime 1.32", "threads": "2", "bundle": "/models/default",
    }  # fmt: skip
    assert got[("edgetc_engine_info", tuple(sorted(labels.items())))] == 1


def test_latency_buckets_include_every_budget():
    bounds = latency_buckets()
    assert list(bounds) == sorted(set(bounds))
    for task in TASKS:
        assert task.max_exec_s in bounds


def test_server_releases_its_port():
    registry = CollectorRegistry()
    server = MetricsServer(registry, "127.0.0.1", 0)
    port = server.port
    server.close()
    again = MetricsServer(registry, "127.0.0.1", port)
    assert again.port == port
    again.close()

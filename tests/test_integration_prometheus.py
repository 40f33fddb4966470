"""Prometheus as the real peer: `prometheus` (Debian package) runs on a loopback port with our
scrape config (deploy/prometheus/prometheus.yml, the target and intervals changed) and rules;
`edge-tc run` classifies a recording fed over ZeroMQ, then idles; a PromQL query over
Prometheus' HTTP API returns the packets-classified counter and the latency histogram with
exactly the values the daemon's own /metrics reports, and every alerting rule evaluates.
Skips when the prometheus binary is missing."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from edge_core.cli import main as edge_tc
from edge_core.iq.sigmf_io import open_recording

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not found (Debian package)"),
]
ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "prometheus"
BUNDLE = ROOT / "models" / "default"
CHUNK = 16384


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read().decode()


def daemon_samples(metrics_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from the daemon's /metrics."""
    out = {}
    for family in text_string_to_metric_families(http_get(metrics_url)):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def promql(base: str, query: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    body = json.loads(http_get(url))
    assert body["status"] == "success", body
    result: list[dict] = body["data"]["result"]
    return result


def scrape_config(tmp_path: Path, target: str) -> Path:
    """Our prometheus.yml with the daemon as target, 1 s intervals, and our rules next to it."""
    text = (DEPLOY / "prometheus.yml").read_text()
    for old, new in (
        ('targets: ["127.0.0.1:9464"]', f'targets: ["{target}"]'),
        ("  scrape_interval: 15s", "  scrape_interval: 1s"),
        ("  evaluation_interval: 15s", "  evaluation_interval: 1s"),
        ("    scrape_interval: 5s", "    scrape_interval: 1s"),
        ("    scrape_timeout: 4s", "    scrape_timeout: 1s"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "prometheus.yml").write_text(text)
    shutil.copy(DEPLOY / "edge-tc.rules.yml", tmp_path)
    return tmp_path / "prometheus.yml"


def wait_until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)


def test_prometheus_scrapes_what_the_daemon_reports(tmp_path):
    base = tmp_path / "rec"
    assert edge_tc(["synth", "stream", "--out", str(base), "--seconds", "0.3", "--seed", "7",
                    "--traffic-scale", "2", "--quiet"]) == 0  # fmt: skip
    rec = open_recording(base)
    samples = np.concatenate([rec.read(), np.zeros(65536, np.complex64)])  # (n,) complex64

    context = zmq.Context()
    feeder = context.socket(zmq.XPUB)
    feed_port = feeder.bind_to_random_port("tcp://127.0.0.1")
    config = tmp_path / "edge-tc.toml"
    config.write_text(
        f"""bundle = "{BUNDLE}"
[source]
type = "zmq"
address = "tcp://127.0.0.1:{feed_port}"
sample_rate_hz = {rec.sample_rate_hz}
[engine]
type = "onnxruntime"
threads = 1
[batcher]
queue_size = 8192
[publisher]
bind = "tcp://127.0.0.1:*"
[metrics]
addr = "127.0.0.1"
port = 0
[power]
type = "none"
"""
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge_core.cli", "run", "--config", str(config)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(daemon.stderr), daemon=True)
    reader.start()
    prom_port = free_port()
    prometheus = None
    try:
        found = wait_until(
            lambda: re.search(r"metrics on http://(127\.0\.0\.1:\d+)/metrics", "".join(lines)),
            120, "the daemon's start line",
        )  # fmt: skip
        target = found.group(1)
        metrics_url = f"http://{target}/metrics"
        prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={scrape_config(tmp_path, target)}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        prom = f"http://127.0.0.1:{prom_port}"

        # feed the recording as fast as the socket takes it, then nothing: the counters settle
        assert feeder.poll(30_000), "the daemon's zmq source did not subscribe"
        feeder.recv()
        for offset in range(0, samples.size, CHUNK):
            feeder.send(samples[offset : offset + CHUNK].tobytes())

        def settled() -> dict | None:
            first = daemon_samples(metrics_url)
            time.sleep(1.0)
            second = daemon_samples(metrics_url)
            classified = second[("edgetc_packets_classified_total", ())]
            accounted = (
                classified
                + second[("edgetc_packets_failed_total", ())]
                + sum(
                    v for (name, _), v in second.items() if name == "edgetc_packets_dropped_total"
                )
            )
            busy = accounted < second[("edgetc_packets_detected_total", ())]
            # counters only: gauges such as seconds since the last packet move on their own
            counters = [
                {k: v for k, v in s.items() if k[0].endswith("_total")} for s in (first, second)
            ]
            return None if counters[0] != counters[1] or classified == 0 or busy else second

        reported = wait_until(settled, 120, "the daemon's counters to settle")
        wait_until(lambda: http_get(f"{prom}/-/ready").strip(), 60, "prometheus ready")
        classified = reported[("edgetc_packets_classified_total", ())]
        wait_until(
            lambda: [r for r in promql(prom, 'edgetc_packets_classified_total{job="edge-tc"}')
                     if float(r["value"][1]) == classified],
            60, f"prometheus to scrape classified == {classified}",
        )  # fmt: skip

        # the counter and the whole latency histogram, as the daemon reports them
        assert promql(prom, 'up{job="edge-tc"}')[0]["value"][1] == "1"
        for task in ("phy", "app"):
            for suffix in ("_count", "_sum"):
                name = f"edgetc_latency_seconds{suffix}"
                got = promql(prom, f'{name}{{job="edge-tc", task="{task}"}}')
                assert len(got) == 1
                assert float(got[0]["value"][1]) == reported[(name, (("task", task),))]
            buckets = {
                r["metric"]["le"]: float(r["value"][1])
                for r in promql(prom, f'edgetc_latency_seconds_bucket{{task="{task}"}}')
            }
            mine = {
                dict(labels)["le"]: value
                for (name, labels), value in reported.items()
                if name == "edgetc_latency_seconds_bucket" and dict(labels)["task"] == task
            }
            # the exposition writes bounds as Python floats, Prometheus as Go floats
            assert {float(k): v for k, v in buckets.items()} == {
                float(k): v for k, v in mine.items()
            }
            assert mine["+Inf"] == classified
        p99 = promql(
            prom, 'histogram_quantile(0.99, edgetc_latency_seconds_bucket{job="edge-tc", '
            'task="phy"})',
        )  # fmt: skip
        assert 0 < float(p99[0]["value"][1]) < math.inf

        # every Grafana panel query is valid PromQL and, but for the metrics that only exist
        # with a power meter or after a loss, returns series from this daemon
        board = json.loads((ROOT / "deploy" / "grafana" / "edge-tc.json").read_text())
        may_be_empty = (
            "edgetc_power_watts", "edgetc_joules_per_sample", "edgetc_energy_joules_total",
            "edgetc_source_dropped_samples_total",
        )  # fmt: skip
        wait_until(  # rate() needs two scrapes in its window
            lambda: promql(prom, "count_over_time(edgetc_packets_classified_total[1m]) >= 3"),
            30, "three scrapes",
        )  # fmt: skip
        queried = 0
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                expr = (
                    t["expr"].replace("$job", "edge-tc").replace("$instance", ".*")
                    .replace("$__rate_interval", "1m")
                )  # fmt: skip
                result = promql(prom, expr)
                if not any(name in expr for name in may_be_empty):
                    assert result, (panel["title"], expr)
                queried += 1
        assert queried > 20

        # every alerting rule was loaded and evaluates without error
        def evaluated() -> list[dict] | None:
            body = json.loads(http_get(f"{prom}/api/v1/rules"))
            rules = [r for g in body["data"]["groups"] for r in g["rules"]]
            done = all(r["lastEvaluation"] > "2000" for r in rules)
            return rules if rules and done else None

        rules = wait_until(evaluated, 30, "rule evaluation")
        rules_file = (DEPLOY / "edge-tc.rules.yml").read_text()
        assert {r["name"] for r in rules} == set(re.findall(r"- alert: (\w+)", rules_file))
        assert {r["health"] for r in rules} == {"ok"}, [
            (r["name"], r.get("lastError")) for r in rules
        ]
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    finally:
        for process in (prometheus, daemon):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        feeder.close(linger=0)
        context.term()
    assert daemon.returncode == 0, "".join(lines)

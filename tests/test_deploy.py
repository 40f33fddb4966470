"""deploy/: the Prometheus scrape config and alerting rules pass `promtool check` and the rules'
unit tests (`promtool test rules`), and every PromQL expression in the rules and the Grafana
dashboard names only metrics the daemon really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edge_daemon.metrics import DaemonMetrics

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "edge-tc.json"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not found (Debian package prometheus)"
)

SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "info": ("_info",),
}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset"}
SCRAPE_METRICS = {"up"}
"""Series Prometheus itself makes for each target."""


def exported_metric_names() -> set[str]:
    """Every sample name the daemon's registry can expose (power metrics enabled)."""
    registry = CollectorRegistry()
    DaemonMetrics(registry).enable_power()
    names = set()
    for family in registry.collect():
        for suffix in SAMPLE_SUFFIXES[family.type]:
            names.add(family.name + suffix)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords or labels)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        followed_by = e[match.end() :].lstrip()[:1]
        if followed_by != "(" and match.group() not in PROMQL_KEYWORDS:
            names.add(match.group())
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every panel target, and the template variables' metrics."""
    board = json.loads(DASHBOARD.read_text())
    out = [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            metric = re.fullmatch(r"label_values\((\w+)\{.*\}, *\w+\)", variable["definition"])
            assert metric, variable["definition"]
            out.append((f"variable {variable['name']}", metric.group(1)))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    """(alert name, expr) of every rule, read with a YAML-free scan of the `expr:` blocks."""
    text = (PROMETHEUS / "edge-tc.rules.yml").read_text()
    out = []
    for block in re.split(r"\n\s*- alert: ", text)[1:]:
        name = block.split("\n", 1)[0].strip()
        expr = re.search(r"\n\s*expr: (\|\n(?:\s{10,}.*\n)+|.*\n)", block)
        assert expr, name
        out.append((name, expr.group(1).lstrip("|")))
    return out


def test_metric_name_scan():
    assert metric_names(
        'sum by (job, task) (rate(a_total{x="y"}[5m])) / on (job) b_count > 0.01 and up == 1'
    ) == {"a_total", "b_count", "up"}
    assert metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(c_bucket[$__rate_interval])))"
    ) == {"c_bucket"}
    assert "edgetc_latency_seconds_bucket" in exported_metric_names()
    assert "edgetc_engine_info" in exported_metric_names()


def test_dashboard_names_only_exported_metrics():
    exported = exported_metric_names()
    exprs = dashboard_exprs()
    assert len(exprs) > 20
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, (title, expr)
        assert names <= exported, (title, names - exported)
    used = set().union(*(metric_names(e) for _, e in exprs))
    # throughput, label mix, latency vs max_exec, drops, watts and joules per sample
    for needed in (
        "edgetc_packets_classified_total", "edgetc_labels_total", "edgetc_latency_seconds_bucket",
        "edgetc_max_exec_violations_total", "edgetc_packets_dropped_total", "edgetc_power_watts",
        "edgetc_joules_per_sample", "edgetc_energy_joules_total",
    ):  # fmt: skip
        assert needed in used, needed


def test_dashboard_is_a_grafana_dashboard():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "edge-tc" and board["schemaVersion"] >= 36
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    # latency panels draw max_exec (from the schema) as their threshold
    from edge_core.schema import TASKS

    budgets = {t.name: t.max_exec_s for t in TASKS}
    latency = [p for p in board["panels"] if p["title"].startswith("Latency p50 / p99")]
    assert len(latency) == 2
    for panel in latency:
        step = panel["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"]
        tasks = re.search(r'task=~"([a-z_|]+)"', panel["targets"][0]["expr"]).group(1).split("|")
        assert {budgets[t] for t in tasks} == {step}, (panel["title"], tasks, step)


def test_rules_name_only_exported_metrics():
    exported = exported_metric_names() | SCRAPE_METRICS
    rules = rule_exprs()
    assert {name for name, _ in rules} >= {
        "EdgeTcMaxExecViolations", "EdgeTcPacketsDropped", "EdgeTcNoPacketsClassified",
        "EdgeTcEngineFailures", "EdgeTcPowerMetricsMissing",
    }  # fmt: skip
    for name, expr in rules:
        names = metric_names(expr)
        assert names and names <= exported, (name, names - exported)


@needs_promtool
def test_promtool_checks_config_and_rules():
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "edge-tc.rules.yml"]):
        done = subprocess.run(
            ["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout + done.stderr


@needs_promtool
def test_alerts_fire_as_the_rule_tests_expect():
    done = subprocess.run(
        ["promtool", "test", "rules", "edge-tc.rules.test.yml"],
        cwd=PROMETHEUS, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_rejects_a_broken_rule(tmp_path):
    broken = (PROMETHEUS / "edge-tc.rules.yml").read_text().replace("[5m]", "[5 m]", 1)
    (tmp_path / "rules.yml").write_text(broken)
    done = subprocess.run(
        ["promtool", "check", "rules", "rules.yml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0

"""The live table `edge-tc run --demo` shows: rate, labels, latency vs budget and where it goes
(per stage), losses, energy."""

from __future__ import annotations

import time

import numpy as np
from rich.table import Table

from edge_core.schema import TASKS
from edge_daemon.pipeline import Daemon
from edge_daemon.stages import breakdown_text

TOP_LABELS = 3


class DemoTable:
    """Renders the daemon's state; `render()` is called by rich's Live every refresh."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._last = (time.monotonic(), 0)
        self._rate = 0.0

    def label_counts(self) -> dict[str, dict[str, int]]:
        """task -> label -> packets published with that label."""
        out: dict[str, dict[str, int]] = {t.name: {} for t in TASKS}
        for family in self.daemon.metrics.labels.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    task, label = sample.labels["task"], sample.labels["label"]
                    out.setdefault(task, {})[label] = int(sample.value)
        return out

    def render(self) -> Table:
        d, t = self.daemon, self.daemon.totals
        now = time.monotonic()
        then, classified_then = self._last
        if now - then >= 0.5:
            self._rate = (t.classified - classified_then) / (now - then)
            self._last = (now, t.classified)
        latencies = np.array(list(d.recent_latencies), dtype=np.float64)
        p50, p99 = (
            (float(np.percentile(latencies, 50)) * 1e3, float(np.percentile(latencies, 99)) * 1e3)
            if latencies.size
            else (float("nan"), float("nan"))
        )
        table = Table(title="edge-tc live", show_header=True, header_style="bold")
        table.add_column("")
        table.add_column("value", overflow="fold")
        table.add_row("classifications/s", f"{self._rate:,.0f}")
        table.add_row(
            "packets", f"detected {t.detected:,}  classified {t.classified:,}  failed {t.failed:,}"
        )
        drops = "  ".join(f"{reason} {n:,}" for reason, n in t.dropped.items())
        table.add_row("dropped", drops)
        counts = self.label_counts()
        for task in TASKS:
            top = sorted(counts.get(task.name, {}).items(), key=lambda kv: -kv[1])[:TOP_LABELS]
            table.add_row(f"{task.name} labels", "  ".join(f"{k} {v:,}" for k, v in top) or "-")
        for task in TASKS:
            violations = d.registry.get_sample_value(
                "edgetc_max_exec_violations_total", {"task": task.name}
            )
            table.add_row(
                f"{task.name} latency",
                f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  (max_exec {task.max_exec_ms:g} ms, "
                f"over: {int(violations or 0):,})",
            )
        # where the end-to-end latency goes (edge_daemon/stages.py); the stages add up to it
        table.add_row("stages p50 (ms)", breakdown_text(d.stages, 50))
        table.add_row("stages p99 (ms)", breakdown_text(d.stages, 99))
        method = self.power_method()
        label = "joules/sample (estimated)" if method == "estimated" else "joules/sample"
        table.add_row(label, self.joules_per_sample())
        return table

    def power_method(self) -> str | None:
        """The `method` label of the power metrics, measured or estimated (None: no metrics)."""
        for family in self.daemon.metrics.registry.collect():
            if family.name == "edgetc_power_watts":
                for sample in family.samples:
                    return str(sample.labels.get("method"))
        return None

    def joules_per_sample(self) -> str:
        d, t = self.daemon, self.daemon.totals
        if d.power_status is not None:  # the first clause; the log has the whole reason
            return f"n/a: {d.power_status.split(': ')[0]}"
        if t.energy_joules is None or not t.classified:
            return "(measuring)"
        figure = f"{t.energy_joules / t.classified:.3g} J ({t.energy_joules:.1f} J in all)"
        if self.power_method() == "estimated":
            per_core = d.config.power.cpu_watts_per_core
            return f"~{figure}: an estimate, CPU time x {per_core:g} W per busy core"
        return f"{figure}, measured"


__all__ = ["DemoTable"]

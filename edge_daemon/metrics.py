"""The daemon's Prometheus metrics, registered in a `CollectorRegistry` passed in.

Names carry an `edgetc_` prefix and a base unit (`_seconds`, `_watts`, `_joules`), counters end
in `_total` (prometheus_client adds it). Each stage records its own events where they happen;
this module only declares the metrics and serves them over HTTP.

Packets: detected = classified + dropped (by reason) + failed + in flight, at every moment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import start_http_server

from edge_core.schema import TASKS, Task
from edge_core.typed_config import TypedConfig
from engines.base import EngineInfo

DROP_REASONS: tuple[str, ...] = ("queue_full", "shutdown")
"""Why a detected packet was dropped before the engine: the queue was full (the drop policy
picked it), or the daemon stopped before it could be classified (drain deadline)."""

BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_LATENCY_BASE_S: tuple[float, ...] = (
    0.00025, 0.0005, 0.001, 0.0015, 0.0025, 0.004, 0.005, 0.006, 0.0085,
    0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


def latency_buckets(tasks: Iterable[Task] = TASKS) -> tuple[float, ...]:
    """Histogram bounds around the tasks' `max_exec`: each budget is itself a bound, so
    'within max_exec' is a bucket count, with finer bounds below and coarser ones above."""
    return tuple(sorted(set(_LATENCY_BASE_S) | {t.max_exec_s for t in tasks}))


class DaemonMetrics:
    """Every metric the daemon exports, in one registry. Power metrics exist only after
    `enable_power()` (no meter: absent, not zero)."""

    def __init__(self, registry: CollectorRegistry, tasks: Sequence[Task] = TASKS) -> None:
        self.registry = registry
        r = registry
        self.detected = Counter(
            "edgetc_packets_detected", "Packets cut from the IQ stream by the detector", registry=r
        )
        self.classified = Counter(
            "edgetc_packets_classified", "Packets classified and published", registry=r
        )
        self.dropped = Counter(
            "edgetc_packets_dropped", "Detected packets dropped before the engine", ["reason"],
            registry=r,
        )  # fmt: skip
        self.failed = Counter(
            "edgetc_packets_failed", "Packets of batches the engine failed on", registry=r
        )
        self.latency = Histogram(
            "edgetc_latency_seconds",
            "From the arrival of a packet's last sample to the publication of its labels",
            ["task"],
            buckets=latency_buckets(tasks),
            registry=r,
        )
        self.max_exec_violations = Counter(
            "edgetc_max_exec_violations", "Packets published later than the task's max_exec",
            ["task"], registry=r,
        )  # fmt: skip
        self.labels = Counter(
            "edgetc_labels", "Published labels per task and class", ["task", "label"], registry=r
        )
        self.batch_size = Histogram(
            "edgetc_batch_size", "Packets per engine call", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "edgetc_queue_depth", "Packets waiting for the batcher", registry=r
        )
        self.engine_info = Info("edgetc_engine", "The engine that runs the model", registry=r)
        self.engine_failures = Counter(
            "edgetc_engine_failures", "Engine calls that raised (each fails one batch)", registry=r
        )
        self.engine_reloads = Counter(
            "edgetc_engine_reloads", "Engine reloads after consecutive failures", registry=r
        )
        self.source_overflows = Counter(
            "edgetc_source_overflows", "Times the hardware or transport lost samples", registry=r
        )
        self.source_dropped_samples = Counter(
            "edgetc_source_dropped_samples", "Samples the source threw away", ["reason"],
            registry=r,
        )  # fmt: skip
        self.source_reconnects = Counter(
            "edgetc_source_reconnects", "Times the source was closed and re-opened", registry=r
        )
        self.messages_published = Counter(
            "edgetc_messages_published", "ZeroMQ messages handed to the PUB socket (one per packet "
            "and topic; a subscriber at its high-water mark loses them unseen)", registry=r,
        )  # fmt: skip
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        for task in tasks:
            self.latency.labels(task.name)
            self.max_exec_violations.labels(task.name)
        self.power_watts: Gauge | None = None
        self.energy_joules: Counter | None = None
        self.joules_per_sample: Gauge | None = None

    def enable_power(self) -> None:
        """Create the power metrics (only when a power meter is readable)."""
        if self.power_watts is not None:
            return
        r = self.registry
        self.power_watts = Gauge("edgetc_power_watts", "Power drawn, last reading", registry=r)
        self.energy_joules = Counter(
            "edgetc_energy_joules", "Energy drawn since the daemon started", registry=r
        )
        self.joules_per_sample = Gauge(
            "edgetc_joules_per_sample", "Energy per classified packet since the daemon started",
            registry=r,
        )  # fmt: skip

    def set_engine_info(self, info: EngineInfo, bundle: str) -> None:
        """`edgetc_engine_info{backend, precision, device, model_file, runtime, threads, bundle}`:
        what runs, as labels."""
        labels = {k: str(v) for k, v in asdict(info).items() if k != "memory"}
        self.engine_info.info({**labels, "bundle": bundle})


@dataclass(frozen=True)
class MetricsConfig(TypedConfig):
    """`[metrics]`: the Prometheus HTTP endpoint (`http://addr:port/metrics`)."""

    section: ClassVar[str] = "metrics"
    enabled: bool = True
    addr: str = "127.0.0.1"
    port: int = 9464

    def problems(self) -> list[tuple[str, str]]:
        if not 0 <= self.port <= 65535:
            return [("port", f"want 0..65535 (0: any free port), got {self.port}")]
        return []


class MetricsServer:
    """prometheus_client's HTTP exposition of one registry on `addr:port` (0: any free port)."""

    def __init__(self, registry: CollectorRegistry, addr: str, port: int) -> None:
        self._server: WSGIServer
        self._server, self._thread = start_http_server(port, addr, registry)
        self.addr = addr
        self.port = int(self._server.server_port)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


__all__ = [
    "BATCH_SIZE_BUCKETS",
    "DROP_REASONS",
    "DaemonMetrics",
    "MetricsConfig",
    "MetricsServer",
    "latency_buckets",
]

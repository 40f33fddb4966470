"""The daemon's Prometheus metrics, registered in a `CollectorRegistry` passed in.

Names carry an `edgetc_` prefix and a base unit (`_seconds`, `_watts`, `_joules`), counters end
in `_total` (prometheus_client adds it). Each stage records its own events where they happen;
this module only declares the metrics and serves them over HTTP.

Packets: detected = classified + dropped (by reason) + failed + in flight, at every moment.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar
from wsgiref.simple_server import WSGIServer

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import start_http_server

from edge_core.assembler import PacketAssembler
from edge_core.schema import TASKS, Task
from edge_core.typed_config import TypedConfig
from engines.base import EngineInfo

DROP_REASONS: tuple[str, ...] = ("queue_full", "shutdown")
"""Why a detected packet was dropped before the engine: the queue was full (the drop policy
picked it), or the daemon stopped before it could be classified (drain deadline)."""

SKIP_REASONS: tuple[str, ...] = ("nonfinite", "out_of_range", "between_corrupt")
"""Why the detector skipped samples (`AssemblerStats`): NaN/Inf, a component beyond
`max_sample_magnitude`, or good samples between corrupt ones in the same chunk."""
LOST_BURST_REASONS: tuple[str, ...] = ("break", "too_short")
"""Bursts the detector did not emit: a packet in progress at a break (discontinuity, corrupt
samples, reset), or a burst shorter than `min_packet_samples` (noise, not a loss of a packet)."""

FORMAT_CHECK_S = 0.01
"""Stream time between two sample-format checks (three suspect checks in a row are reported)."""

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
        self.source_dropped_messages = Counter(
            "edgetc_source_dropped_messages", "Whole messages the source threw away "
            "(malformed: odd_bytes, bad_frames, bad_tag_header, oversized)", ["reason"],
            registry=r,
        )  # fmt: skip
        self.source_reconnects = Counter(
            "edgetc_source_reconnects", "Times the source was closed and re-opened", registry=r
        )
        self.messages_published = Counter(
            "edgetc_messages_published", "ZeroMQ messages handed to the PUB socket (one per packet "
            "and topic; a subscriber at its high-water mark loses them unseen)", registry=r,
        )  # fmt: skip
        # detector health (issue 14): what the assembler skipped and lost, and whether it sees
        self.detector_skipped_samples = Counter(
            "edgetc_detector_skipped_samples", "Samples the detector skipped as corrupt: "
            "non-finite, beyond max_sample_magnitude, or between such samples", ["reason"],
            registry=r,
        )  # fmt: skip
        self.detector_lost_bursts = Counter(
            "edgetc_detector_lost_bursts", "Bursts the detector did not emit: cut by a break "
            "(discontinuity, corrupt samples) or shorter than min_packet_samples", ["reason"],
            registry=r,
        )  # fmt: skip
        self.detector_noise_floor_dbfs = Gauge(
            "edgetc_detector_noise_floor_dbfs", "The detector's noise floor estimate, dB full "
            "scale (mean power per sample; NaN during warm-up)", registry=r,
        )  # fmt: skip
        self.detector_input_power_dbfs = Gauge(
            "edgetc_detector_input_power_dbfs", "Mean input power since the last detected "
            "packet, dB full scale", registry=r,
        )  # fmt: skip
        self.detector_seconds_since_packet = Gauge(
            "edgetc_detector_seconds_since_packet", "Wall time since the detector last cut a "
            "packet (since start if never)", registry=r,
        )  # fmt: skip
        self.detector_blind = Gauge(
            "edgetc_detector_blind", "1 while the input carries signal above the noise floor "
            "but no packet has been detected for blind_after_s of stream", registry=r,
        )  # fmt: skip
        self.source_format_suspect = Gauge(
            "edgetc_source_format_suspect", "1 once the samples' statistics say the stream is "
            "not in [source] sample_format (NaN/denormal share, a full-scale floor)", registry=r,
        )  # fmt: skip
        self.source_rate_suspect = Gauge(
            "edgetc_source_rate_suspect", "1 once the samples' statistics say the stream is "
            "not at [source] sample_rate_hz (802.11 OFDM symbols at another lag)", registry=r,
        )  # fmt: skip
        self.detector_noise_floor_dbfs.set(float("nan"))
        self.detector_input_power_dbfs.set(float("nan"))
        for reason in SKIP_REASONS:
            self.detector_skipped_samples.labels(reason)
        for reason in LOST_BURST_REASONS:
            self.detector_lost_bursts.labels(reason)
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        for task in tasks:
            self.latency.labels(task.name)
            self.max_exec_violations.labels(task.name)
        self.power_watts: Gauge | None = None
        self.energy_joules: Counter | None = None
        self.joules_per_sample: Gauge | None = None

    def enable_power(self, method: str = "measured") -> None:
        """Create the power metrics (only when a power meter is readable), labelled
        `method="measured"` (a sensor) or `"estimated"` (CPU time x watts per core); the
        attributes are the children of that label."""
        if self.power_watts is not None:
            return
        r, by = self.registry, ("method",)
        self.power_watts = Gauge(
            "edgetc_power_watts", "Power drawn, last reading", by, registry=r
        ).labels(method)
        self.energy_joules = Counter(
            "edgetc_energy_joules", "Energy drawn since the daemon started", by, registry=r
        ).labels(method)
        self.joules_per_sample = Gauge(
            "edgetc_joules_per_sample", "Energy per classified packet since the daemon started",
            by, registry=r,
        ).labels(method)  # fmt: skip

    def set_engine_info(self, info: EngineInfo, bundle: str) -> None:
        """`edgetc_engine_info{backend, precision, device, model_file, runtime, threads, bundle}`:
        what runs, as labels."""
        labels = {k: str(v) for k, v in asdict(info).items() if k != "memory"}
        self.engine_info.info({**labels, "bundle": bundle})


def dbfs(power: float | None) -> float:
    """Mean power per sample (full scale 1.0) in dB full scale; NaN if unknown or not > 0."""
    if power is None or not math.isfinite(power) or power <= 0:
        return float("nan")
    return 10.0 * math.log10(power)


class DetectorHealth:
    """The detector's health as metrics and log lines, updated by the source thread after
    each `assembler.feed` (issue 14: hostile input must never stop detection unseen).

    * what the assembler skipped (corrupt samples) and lost (bursts cut by a break), from its
      stats, with a log line when corrupt input starts and when valid input follows it again;
    * the noise floor and the input power in dBFS, wall time since the last packet;
    * blind: `blind_after_s` of stream without a packet while the input power stands above the
      noise floor + threshold (or there is no usable floor) -- signal without packets; a log
      line when it starts and when packets come again.
    """

    def __init__(
        self,
        metrics: DaemonMetrics,
        logger: logging.Logger,
        sample_rate_hz: float,
        threshold_db: float,
        blind_after_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._m = metrics
        self._log = logger
        self._rate = float(sample_rate_hz)
        self._ratio = 10 ** (threshold_db / 10)
        self._blind_after = int(blind_after_s * sample_rate_hz)
        self._clock = clock
        self._last_packet = clock()
        self._seen: dict[str, int] = {}  # stats already counted
        self._samples = 0  # since the last packet
        self._energy = 0.0  # sum of |x|^2 of the finite samples since the last packet
        self.blind = False
        self._corrupt = 0  # corrupt samples in the current episode (0: input is valid)
        self._format_every = int(FORMAT_CHECK_S * sample_rate_hz)
        self._format_next = 0  # stream sample count at the next format check
        self._format_strikes = 0
        self._stream = 0  # samples seen
        self.format_suspect: str | None = None
        metrics.detector_seconds_since_packet.set_function(lambda: clock() - self._last_packet)

    def update(self, assembler: PacketAssembler, samples: np.ndarray, packets: int) -> None:
        """After one feed() of `samples` that gave `packets` packets."""
        st = assembler.stats.as_dict()
        m = self._m
        delta = {k: v - self._seen.get(k, 0) for k, v in st.items()}
        self._seen = st
        nonfinite, out_of_range = delta["nonfinite_samples"], delta["out_of_range_samples"]
        between = delta["skipped_samples"] - nonfinite - out_of_range
        for reason, n in (("nonfinite", nonfinite), ("out_of_range", out_of_range),
                          ("between_corrupt", between)):  # fmt: skip
            if n > 0:
                m.detector_skipped_samples.labels(reason).inc(n)
        for reason, key in (("break", "dropped_on_reset"), ("too_short", "too_short")):
            if delta[key] > 0:
                m.detector_lost_bursts.labels(reason).inc(delta[key])
        skipped = delta["skipped_samples"]
        if skipped and not self._corrupt:
            self._log.warning(
                "detector: corrupt input, skipping samples (%d beyond max_sample_magnitude, %d "
                "non-finite so far); counted in edgetc_detector_skipped_samples_total",
                out_of_range, nonfinite,
            )  # fmt: skip
        if skipped:
            self._corrupt += skipped
        elif self._corrupt and samples.size:
            self._log.info(
                "detector: valid input again after %d corrupt samples skipped (%.1f ms)",
                self._corrupt, 1e3 * self._corrupt / self._rate,
            )  # fmt: skip
            self._corrupt = 0
        self._stream += samples.size
        if self._stream >= self._format_next and samples.size >= 256:
            self._format_next = self._stream + self._format_every
            self._check_format(samples[:4096])
        floor = assembler.noise_floor_power
        m.detector_noise_floor_dbfs.set(dbfs(floor))
        if packets:
            self._last_packet = self._clock()
            if self.blind:
                self._log.info(
                    "detector recovered: packets again after %.1f s of signal without any",
                    self._samples / self._rate,
                )
                self.blind = False
                m.detector_blind.set(0)
            self._samples, self._energy = 0, 0.0
            return
        if samples.size:
            x = samples[np.isfinite(samples)] if skipped else samples
            self._energy += float(np.vdot(x, x).real)
            self._samples += samples.size
        mean = self._energy / self._samples if self._samples else 0.0
        m.detector_input_power_dbfs.set(dbfs(mean))
        if self.blind or self._samples < self._blind_after:
            return
        usable = floor is not None and math.isfinite(floor) and floor > 0
        if (mean > floor * self._ratio) if usable else mean > 0:  # type: ignore[operator]
            self.blind = True
            m.detector_blind.set(1)
            self._log.warning(
                "detector blind: %.1f s of signal at %.1f dBFS (noise floor %.1f dBFS) without "
                "a packet; edgetc_detector_blind = 1",
                self._samples / self._rate, dbfs(mean), dbfs(floor),
            )  # fmt: skip

    def _check_format(self, x: np.ndarray) -> None:
        """Does this look like the configured sample format? Integers read as float32 give
        NaN/Inf, denormal or absurd magnitudes; float32 read as integers give components
        stuck near half or full scale (the float's exponent bits). Three checks in a row
        (FORMAT_CHECK_S apart) -> reported once: log line and edgetc_source_format_suspect."""
        if self.format_suspect is not None:
            return
        parts = np.abs(x.view(np.float32))  # (2n,)
        with np.errstate(invalid="ignore"):
            nonzero = parts[parts != 0]
            weird = np.count_nonzero(~((nonzero >= 1e-30) & (nonzero <= 1e12)))
        weird_share = weird / max(1, nonzero.size)
        loud_share = np.count_nonzero(parts > 0.3) / max(1, parts.size)
        why = None
        if weird_share > 0.1:
            why = (
                f"{weird_share:.0%} of the sample components are NaN/Inf, denormal or beyond "
                "1e12: integer samples read as float (is the producer sending ci16 or ci8?)"
            )
        elif loud_share > 0.7:
            why = (
                f"{loud_share:.0%} of the sample components sit above 0.3 of full scale: no "
                "receiver's noise does; float samples read as integers (is the producer "
                "sending cf32?), or a saturated input"
            )
        self._format_strikes = self._format_strikes + 1 if why else 0
        if why and self._format_strikes >= 3:
            self.format_suspect = why
            self._m.source_format_suspect.set(1)
            self._log.error(
                "source: the samples do not look like the configured [source] sample_format: "
                "%s; check sample_format (and sample_rate_hz) against the producer",
                why,
            )


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
    "DetectorHealth",
    "MetricsConfig",
    "MetricsServer",
    "latency_buckets",
]

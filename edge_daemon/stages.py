"""Per-stage latency of every packet: where its time from arrival to publication goes.

The stages, in order; they add up to the end-to-end latency (`edgetc_latency_seconds`, the
figure checked against each task's `max_exec`):

* `assemble`: its last sample's arrival (the chunk's arrival time) -> the assembler has closed
  it (`feed` returned it): reading the chunk and detecting the packet's end.
* `queue`: closed -> the worker takes it: its model input being made (source thread) and its
  wait in the batcher while the engine was busy.
* `batch`: taken -> its batch's input is stacked (batch formation).
* `inference`: the engine call of its batch.
* `publish`: inferred -> its messages handed to ZeroMQ: the wait for the publisher thread, the
  bundle's fusion stage (run there, so that it overlaps the next engine call), encoding and
  sending.

Recorded a batch at a time with NumPy (`StageRecorder.record`): a Prometheus histogram per
stage (`edgetc_stage_latency_seconds{stage}`, a custom collector, so a batch of n packets is
one `np.searchsorted` and not 5 n `observe` calls under the GIL) and a ring of recent rows
for live percentiles (the demo's table).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

STAGES = ("assemble", "queue", "batch", "inference", "publish")
STAGE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
    0.007, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
"""Seconds: fine below the 2 ms budget of the PHY and frame tasks, coarse above."""
RECENT_ROWS = 8192


class StageHistograms(Collector):
    """`edgetc_stage_latency_seconds{stage}`: one histogram per stage, observed in bulk."""

    name = "edgetc_stage_latency_seconds"

    def __init__(
        self, stages: Sequence[str] = STAGES, buckets: Sequence[float] = STAGE_BUCKETS
    ) -> None:
        self.stages = tuple(stages)
        self.bounds = np.asarray(buckets, np.float64)  # (B,)
        self._counts = np.zeros((len(self.stages), len(self.bounds) + 1), np.int64)  # (S, B+1)
        self._sums = np.zeros(len(self.stages), np.float64)  # (S,)
        self._lock = threading.Lock()

    def observe_rows(self, rows: np.ndarray) -> None:
        """Add packets' stage times, `rows` (n, stages) in seconds."""
        if not len(rows):
            return
        slots = np.searchsorted(self.bounds, rows, side="left")  # (n, S): le-bucket per value
        counts = np.stack(
            [np.bincount(slots[:, s], minlength=len(self.bounds) + 1) for s in range(rows.shape[1])]
        )  # (S, B+1)
        with self._lock:
            self._counts += counts
            self._sums += rows.sum(axis=0)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, sums = self._counts.copy(), self._sums.copy()
        family = HistogramMetricFamily(
            self.name,
            "Time of each packet in each stage of the data path (they add up to "
            "edgetc_latency_seconds): assemble, queue, batch, inference, publish",
            labels=["stage"],
        )
        bounds = [*(repr(float(b)) for b in self.bounds), "+Inf"]
        for s, stage in enumerate(self.stages):
            cumulative = np.cumsum(counts[s]).tolist()
            family.add_metric([stage], list(zip(bounds, cumulative, strict=True)), float(sums[s]))
        yield family


class StageRecorder:
    """Turns a batch's timestamps into per-packet stage times: histograms and recent rows."""

    def __init__(self, registry: CollectorRegistry | None, recent: int = RECENT_ROWS) -> None:
        self.histograms = StageHistograms()
        if registry is not None:
            registry.register(self.histograms)
        self._recent = np.zeros((recent, len(STAGES)), np.float64)  # (R, S) ring
        self._filled = 0
        self._next = 0
        self._lock = threading.Lock()

    @staticmethod
    def rows(
        arrival: np.ndarray,
        closed: np.ndarray,
        taken: float,
        stacked: float,
        inferred: float,
        published: np.ndarray,
    ) -> np.ndarray:
        """Stage times (n, stages) in seconds from per-packet arrival, closed and published
        times (n,) and the batch's taken, stacked and inferred times (one clock)."""
        n = len(arrival)
        out = np.empty((n, len(STAGES)), np.float64)  # (n, S)
        out[:, 0] = closed - arrival
        out[:, 1] = taken - closed
        out[:, 2] = stacked - taken
        out[:, 3] = inferred - stacked
        out[:, 4] = published - inferred
        return out

    def record(self, rows: np.ndarray) -> None:
        """Add a batch's stage rows (n, stages) to the histograms and the recent ring."""
        self.histograms.observe_rows(rows)
        with self._lock:
            size = len(self._recent)
            take = rows[-size:]
            end = self._next + len(take)
            first = min(end, size) - self._next
            self._recent[self._next : self._next + first] = take[:first]
            self._recent[: len(take) - first] = take[first:]
            self._next = end % size
            self._filled = min(size, self._filled + len(take))

    def recent(self) -> np.ndarray:
        """The recent rows (up to `recent`, in no particular order), (m, stages) seconds."""
        with self._lock:
            return self._recent[: self._filled].copy()

    def percentiles(self, q: float) -> dict[str, float]:
        """stage -> the q-th percentile (0..100) of its recent times, in seconds (NaN: none)."""
        rows = self.recent()
        if not len(rows):
            return dict.fromkeys(STAGES, float("nan"))
        values = np.percentile(rows, q, axis=0)  # (S,)
        return dict(zip(STAGES, values.tolist(), strict=True))


def breakdown_text(recorder: StageRecorder, q: float = 50.0) -> str:
    """'assemble 0.12  queue 0.30  ...' in ms at the q-th percentile (the live table)."""
    values = recorder.percentiles(q)
    return "  ".join(f"{stage} {1e3 * v:.2f}" for stage, v in values.items())


__all__ = ["STAGES", "STAGE_BUCKETS", "StageHistograms", "StageRecorder", "breakdown_text"]

"""Per-stage latency (edge_daemon/stages.py): bulk histograms, the ring, the daemon's breakdown."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram
from test_pipeline import run_to_the_end, value

from edge_daemon.stages import STAGE_BUCKETS, STAGES, StageRecorder, breakdown_text

pytestmark = pytest.mark.timeout(180)


def test_bulk_histograms_match_prometheus_observing_one_by_one():
    rng = np.random.default_rng(1)
    rows = rng.exponential(0.001, (500, len(STAGES)))  # (n, S) seconds
    rows[0, :] = STAGE_BUCKETS[3]  # a value on a bound goes into that bound's bucket (le)
    rows[1, :] = 5.0  # beyond every bound: +Inf only
    ours = CollectorRegistry()
    recorder = StageRecorder(ours)
    recorder.record(rows[:123])
    recorder.record(rows[123:])
    theirs = CollectorRegistry()
    reference = Histogram("edgetc_stage_latency_seconds", "x", ["stage"], buckets=STAGE_BUCKETS,
                          registry=theirs)  # fmt: skip
    for row in rows:
        for stage, v in zip(STAGES, row, strict=True):
            reference.labels(stage).observe(v)
    for stage in STAGES:
        for bound in [*STAGE_BUCKETS, float("inf")]:
            le = "+Inf" if bound == float("inf") else repr(float(bound))
            name = "edgetc_stage_latency_seconds_bucket"
            want = theirs.get_sample_value(name, {"stage": stage, "le": le})
            assert ours.get_sample_value(name, {"stage": stage, "le": le}) == want, (stage, le)
        for suffix in ("_count", "_sum"):
            name = "edgetc_stage_latency_seconds" + suffix
            got = ours.get_sample_value(name, {"stage": stage})
            assert got == pytest.approx(theirs.get_sample_value(name, {"stage": stage}))


def test_recent_ring_keeps_the_last_rows_and_gives_percentiles():
    recorder = StageRecorder(None, recent=10)
    assert np.isnan(recorder.percentiles(50)["queue"])
    for start in range(0, 25, 7):  # 0..6, 7..13, 14..20, 21..24 (wraps twice)
        stop = min(start + 7, 25)
        recorder.record(np.repeat(np.arange(start, stop, dtype=float)[:, None], len(STAGES), 1))
    kept = sorted(recorder.recent()[:, 0].tolist())
    assert kept == [float(v) for v in range(15, 25)]
    assert recorder.percentiles(50)["inference"] == pytest.approx(19.5)
    assert breakdown_text(recorder).startswith("assemble 19500.00  queue 19500.00")
    recorder.record(np.zeros((40, len(STAGES))))  # more rows than the ring: the last ones
    assert not recorder.recent().any() and len(recorder.recent()) == 10


def test_rows_split_the_end_to_end_latency_into_stages():
    arrival = np.array([1.0, 1.5])
    closed = np.array([1.25, 1.75])
    rows = StageRecorder.rows(arrival, closed, 2.0, 2.125, 3.0, np.array([4.0, 4.0]))
    assert rows.tolist() == [[0.25, 0.75, 0.125, 0.875, 1.0], [0.25, 0.25, 0.125, 0.875, 1.0]]
    assert rows.sum(axis=1).tolist() == [3.0, 2.5]  # published - arrival


def test_every_published_message_carries_its_stage_breakdown(tiny_bundle):
    daemon, got = run_to_the_end(tiny_bundle.directory)
    t = daemon.totals
    assert t.classified > 100 and len(got) == t.classified
    for m in got:
        stages = m.payload["stages_ms"]
        assert list(stages) == list(STAGES)
        assert all(v >= 0 for v in stages.values()), stages
        assert sum(stages.values()) == pytest.approx(m.payload["latency_ms"], abs=1e-3)
    for stage in STAGES:
        assert value(daemon, "edgetc_stage_latency_seconds_count", stage=stage) == t.classified
    total = sum(value(daemon, "edgetc_stage_latency_seconds_sum", stage=s) for s in STAGES)
    latency = value(daemon, "edgetc_latency_seconds_sum", task="phy")
    assert total == pytest.approx(latency, rel=1e-6)
    assert len(daemon.stages.recent()) == t.classified
    # the live table shows the same breakdown
    import io

    from rich.console import Console

    from edge_daemon.demo import DemoTable

    console = Console(file=io.StringIO(), width=200)
    console.print(DemoTable(daemon).render())
    shown = console.file.getvalue()
    p50 = daemon.stages.percentiles(50)
    line = next(ln for ln in shown.splitlines() if "stages p50 (ms)" in ln)
    assert f"inference {1e3 * p50['inference']:.2f}" in line and "publish" in line

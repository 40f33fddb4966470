"""The daemon's pipeline on the tiny bundle: real onnxruntime, real ZeroMQ, synthetic IQ.

Counts must add up in every case: detected = classified + failed + dropped (all reasons).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_core.errors import SourceError
from edge_daemon.config import DaemonConfig
from edge_daemon.pipeline import Daemon, packets_to_batch
from edge_daemon.power import PowerMeter, PowerReading
from edge_daemon.publisher import Subscriber
from edge_daemon.sources.base import Chunk, NullEvents, Source, SourceConfig
from edge_daemon.sources.synthetic import SyntheticSource, SyntheticSourceConfig
from engines.base import load

pytestmark = pytest.mark.timeout(180)


def daemon_config(bundle, **sections) -> DaemonConfig:
    table = {
        "source": {"type": "synthetic", "pace": "fast", "duration_s": 0.25, "traffic_scale": 4.0},
        "bundle": str(bundle),
        "engine": {"type": "onnxruntime", "threads": 1},
        "publisher": {"bind": "tcp://127.0.0.1:*"},
        "metrics": {"enabled": False},
        "power": {"type": "none"},
        "batcher": {"max_batch": 16, "max_queue_delay_ms": 1.0, "queue_size": 4096},
        "drain_timeout_s": 5.0,
    }
    for key, value in sections.items():
        table[key] = {**table[key], **value} if isinstance(value, dict) else value
    return DaemonConfig.from_dict(table, "")


def value(daemon: Daemon, name: str, **labels: str) -> float:
    got = daemon.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def assert_counts_add_up(daemon: Daemon) -> None:
    t = daemon.totals
    assert t.detected == t.accounted, t
    assert value(daemon, "edgetc_packets_detected_total") == t.detected
    assert value(daemon, "edgetc_packets_classified_total") == t.classified
    assert value(daemon, "edgetc_packets_failed_total") == t.failed
    for reason, n in t.dropped.items():
        assert value(daemon, "edgetc_packets_dropped_total", reason=reason) == n


def run_to_end(daemon: Daemon, timeout_s: float = 60.0) -> None:
    daemon.start()
    try:
        assert daemon.source_done.wait(timeout_s), "the source did not finish"
    finally:
        daemon.stop()


class Wrapped:
    """A real engine with a hook before each `infer` (sleep, raise)."""

    def __init__(self, engine, before) -> None:
        self.engine = engine
        self.before = before
        self.info = engine.info
        self.input_spec = engine.input_spec
        self.calls = 0

    def infer(self, x):
        self.calls += 1
        self.before(self)
        return self.engine.infer(x)

    def warmup(self, batch: int = 1) -> None:
        self.engine.warmup(batch)

    def close(self) -> None:
        self.engine.close()


def fake_packet(iq: np.ndarray, num_samples: int):
    class P:
        pass

    p = P()
    p.iq = iq.astype(np.complex64)
    p.num_samples = num_samples
    return p


def test_packets_to_batch_rows_are_i_then_q():
    iq = np.arange(3000) + 1j * -np.arange(3000)
    x = packets_to_batch([fake_packet(iq, 3000)] * 2, gain="none")
    assert x.shape == (2, 2, 3000) and x.dtype == np.float32
    assert x[1, 0, 5] == 5 and x[1, 1, 5] == -5


def test_unit_rms_gain_scales_each_packet_over_its_own_samples():
    rng = np.random.default_rng(0)
    loud = np.zeros(3000, np.complex128)
    loud[:1000] = (rng.standard_normal(1000) + 1j * rng.standard_normal(1000)) * 0.05
    quiet = np.concatenate([loud[:1000] * 0.01, np.zeros(2000)])
    x = packets_to_batch([fake_packet(loud, 1000), fake_packet(quiet, 1000)])
    power = (x[:, :, :1000] ** 2).sum(axis=1).mean(axis=1)  # (2,) mean |iq|^2 over the packet
    assert power == pytest.approx([1.0, 1.0], rel=1e-4)
    assert not x[:, :, 1000:].any()  # the zero padding stays zero
    assert np.allclose(x[0], x[1], atol=1e-5)  # only the level differed
    silent = packets_to_batch([fake_packet(np.zeros(3000), 500)])
    assert not silent.any()


class GatedSource(Source):
    """A real source that hands out nothing until `gate` is set (a subscriber is ready)."""

    def __init__(self, inner: Source) -> None:
        super().__init__(inner.config, NullEvents())
        self.inner = inner
        self.gate = threading.Event()

    @property
    def sample_rate_hz(self) -> float:
        return self.inner.sample_rate_hz

    @property
    def finished(self) -> bool:
        return self.inner.finished

    def open(self) -> None:
        self.inner.open()

    def read(self, timeout_s: float) -> Chunk | None:
        if not self.gate.wait(timeout_s):
            return None
        return self.inner.read(timeout_s)

    def close(self) -> None:
        self.inner.close()


def synthetic(config: DaemonConfig) -> SyntheticSource:
    assert config.source is not None
    return SyntheticSource(SyntheticSourceConfig.from_dict(config.source.to_dict()), NullEvents())


def run_to_the_end(bundle_dir) -> tuple[Daemon, list]:
    """Run the daemon on the whole synthetic source with a subscriber connected before the
    first packet; the stopped daemon and every message the subscriber got."""
    config = daemon_config(bundle_dir)
    source = GatedSource(synthetic(config))
    daemon = Daemon(config, source=source)
    daemon.start()
    assert daemon.publisher is not None
    with Subscriber(daemon.publisher.endpoint) as sub:
        sub.wait_connected()
        source.gate.set()
        assert daemon.source_done.wait(60)
        totals = daemon.stop()
        # as many as it classified (60 s without one: a hang guard), then any extra one
        got = sub.collect(count=totals.classified, idle_timeout_s=60)
        got += sub.collect(count=None, idle_timeout_s=0.2)
    return daemon, got


def test_every_detected_packet_is_published(tiny_bundle):
    daemon, got = run_to_the_end(tiny_bundle.directory)
    t = daemon.totals
    assert t.detected > 100 and t.failed == 0 and t.dropped == {"queue_full": 0, "shutdown": 0}
    assert_counts_add_up(daemon)
    assert [m.payload["packet_id"] for m in got] == list(range(t.detected))
    assert value(daemon, "edgetc_messages_published_total") == t.classified
    assert value(daemon, "edgetc_batch_size_sum") == t.classified
    for task in ("phy", "frame", "app_type", "app"):
        assert value(daemon, "edgetc_latency_seconds_count", task=task) == t.classified
    labels = sum(
        s.value
        for family in daemon.registry.collect()
        if family.name == "edgetc_labels"
        for s in family.samples
        if s.name == "edgetc_labels_total" and s.labels["task"] == "phy"
    )
    assert labels == t.classified
    assert len(daemon.recent_latencies) == t.classified


def test_engine_failures_are_counted_and_reload_the_engine(tiny_bundle):
    made: list[Wrapped] = []

    def fail_first_five(engine: Wrapped) -> None:
        if len(made) == 1 or engine.calls <= 2:  # the first engine always fails, reloads twice
            raise RuntimeError("simulated runtime fault")

    def factory():
        made.append(Wrapped(load(tiny_bundle.directory, {"type": "onnxruntime"}), fail_first_five))
        return made[-1]

    config = daemon_config(tiny_bundle.directory, engine_reload_after_failures=3)
    daemon = Daemon(config, engine_factory=factory)
    run_to_end(daemon)
    t = daemon.totals
    # engine 1 fails 3 batches -> reload; engine 2 fails 2 then works
    assert t.engine_failures == 5 and t.engine_reloads == 1 and len(made) == 2
    assert t.failed > 0 and t.classified > 0
    assert value(daemon, "edgetc_engine_failures_total") == 5
    assert value(daemon, "edgetc_engine_reloads_total") == 1
    assert_counts_add_up(daemon)


def test_a_slow_engine_drops_from_the_full_queue_and_never_blocks_the_source(tiny_bundle):
    def slow(engine: Wrapped) -> None:
        time.sleep(0.02)

    def factory():
        return Wrapped(load(tiny_bundle.directory, {"type": "onnxruntime"}), slow)

    config = daemon_config(
        tiny_bundle.directory, batcher={"max_batch": 1, "queue_size": 8, "drop_policy": "newest"}
    )
    daemon = Daemon(config, engine_factory=factory)
    run_to_end(daemon)
    t = daemon.totals
    # the source never waited for the engine: a put that blocked on the full queue would have
    # dropped nothing (no wall-clock bound here: a busy machine slows both threads, issue 17)
    assert t.dropped["queue_full"] > 0 and t.classified > 0
    assert_counts_add_up(daemon)
    for task in ("phy", "app"):  # 20 ms per packet: every one over the 2 ms and 7 ms budgets
        assert value(daemon, "edgetc_max_exec_violations_total", task=task) == t.classified


def test_stop_drains_within_the_deadline_and_counts_the_rest(tiny_bundle):
    def slow(engine: Wrapped) -> None:
        time.sleep(0.05)

    def factory():
        return Wrapped(load(tiny_bundle.directory, {"type": "onnxruntime"}), slow)

    config = daemon_config(
        tiny_bundle.directory, batcher={"max_batch": 1, "queue_size": 4096}, drain_timeout_s=0.3
    )
    daemon = Daemon(config, engine_factory=factory)
    run_to_end(daemon)
    t = daemon.totals
    assert t.dropped["shutdown"] > 0 and t.dropped["queue_full"] == 0
    assert_counts_add_up(daemon)
    assert value(daemon, "edgetc_queue_depth") == 0


class FlakySource(Source):
    """The synthetic source, but the device 'disappears' once mid-stream and fails its first
    re-open; sample indices jump where it comes back."""

    def __init__(self, inner: SyntheticSource) -> None:
        super().__init__(SourceConfig(type="flaky"), NullEvents())
        self.inner = inner
        self.reads = 0
        self.opens = 0
        self.offset = 0

    @property
    def sample_rate_hz(self) -> float:
        return self.inner.sample_rate_hz

    @property
    def finished(self) -> bool:
        return self.inner.finished

    def open(self) -> None:
        self.opens += 1
        if self.opens == 2:
            raise SourceError("device busy")
        if self.opens == 1:
            self.inner.open()

    def read(self, timeout_s: float) -> Chunk | None:
        self.reads += 1
        if self.reads == 40:
            self.offset = 1_000_000
            raise SourceError("device unplugged")
        chunk = self.inner.read(timeout_s)
        if chunk is None:
            return None
        return Chunk(chunk.samples, chunk.first_sample_index + self.offset, chunk.arrival_time)

    def close(self) -> None:
        pass


def test_a_source_that_disappears_and_comes_back(tiny_bundle):
    config = daemon_config(tiny_bundle.directory)
    source = FlakySource(synthetic(config))
    daemon = Daemon(config, source=source)
    run_to_end(daemon)
    assert source.opens == 3
    assert daemon.totals.source_reconnects == 1
    assert value(daemon, "edgetc_source_reconnects_total") == 1
    assert daemon.totals.classified > 0
    assert_counts_add_up(daemon)


class FakeMeter(PowerMeter):
    """5 W, with the energy counter a meter keeps (joules since it opened)."""

    name = "fake"

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.closed = False

    def read(self) -> PowerReading:
        return PowerReading(5.0, 5.0 * (time.monotonic() - self.t0))

    def close(self) -> None:
        self.closed = True


def test_power_metrics_follow_the_meter(tiny_bundle):
    config = daemon_config(tiny_bundle.directory, power={"interval_s": 0.05})
    meter = FakeMeter()
    daemon = Daemon(config, power_meter=meter)
    run_to_end(daemon)
    t = daemon.totals
    assert meter.closed and daemon.power_status is None
    assert t.energy_joules is not None and t.energy_joules > 0
    assert value(daemon, "edgetc_power_watts", method="measured") == 5.0
    assert value(daemon, "edgetc_energy_joules_total", method="measured") == pytest.approx(
        t.energy_joules
    )
    assert value(daemon, "edgetc_joules_per_sample", method="measured") == pytest.approx(
        t.energy_joules / t.classified
    )


def test_no_power_meter_no_power_metrics(tiny_bundle):
    daemon = Daemon(daemon_config(tiny_bundle.directory))  # power.type = "none"
    run_to_end(daemon)
    assert daemon.power_status
    names = {m.name for m in daemon.registry.collect()}
    assert not {"edgetc_power_watts", "edgetc_energy_joules", "edgetc_joules_per_sample"} & names


def test_a_subscriber_that_never_reads_does_not_stall_the_daemon(tiny_bundle):
    import zmq

    config = daemon_config(tiny_bundle.directory, publisher={"sndhwm": 4})
    source = GatedSource(synthetic(config))
    daemon = Daemon(config, source=source)
    daemon.start()
    context = zmq.Context()
    stalled = context.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.RCVBUF, 1024)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        assert daemon.publisher is not None
        stalled.connect(daemon.publisher.endpoint)
        with Subscriber(daemon.publisher.endpoint) as probe:
            probe.wait_connected()  # the stalled one joined first
        source.gate.set()
        assert daemon.source_done.wait(60)
    finally:
        daemon.stop()
        stalled.close(linger=0)
        context.term()
    t = daemon.totals
    assert t.detected > 100 and t.classified == t.detected
    assert_counts_add_up(daemon)


def test_a_thread_that_dies_stops_the_daemon_with_the_cause(tiny_bundle):
    def factory():
        engine = load(tiny_bundle.directory, {"type": "onnxruntime"})
        wrapped = Wrapped(engine, lambda e: None)
        wrapped.infer = lambda x: {"bogus": np.zeros((len(x), 2), np.float32)}  # a broken engine
        return wrapped

    daemon = Daemon(daemon_config(tiny_bundle.directory), engine_factory=factory)
    daemon.start()
    try:
        assert daemon.stop_event.wait(60), "the daemon did not stop"
    finally:
        daemon.stop()
    assert daemon.failure is not None and daemon.failure.startswith("publisher thread failed")
    assert "bogus" in daemon.failure


POWER_TREES = Path(__file__).resolve().parent / "data" / "power"


def test_power_from_a_fake_orin_sysfs_tree(tiny_bundle):
    """The real INA3221 hwmon meter on a tree laid out as an Orin NX's (VDD_IN 7.30368 W)."""
    power = {"type": "auto", "sysfs_root": str(POWER_TREES / "orin_nx"), "interval_s": 0.05}
    daemon = Daemon(daemon_config(tiny_bundle.directory, power=power))
    run_to_end(daemon)
    t = daemon.totals
    assert daemon.power_status is None
    assert value(daemon, "edgetc_power_watts", method="measured") == pytest.approx(7.30368)
    assert t.energy_joules is not None and t.energy_joules > 0
    assert value(daemon, "edgetc_energy_joules_total", method="measured") == pytest.approx(
        t.energy_joules
    )
    assert value(daemon, "edgetc_joules_per_sample", method="measured") == pytest.approx(
        t.energy_joules / t.classified
    )


def test_auto_power_on_an_empty_tree_says_why(tiny_bundle):
    power = {"type": "auto", "sysfs_root": str(POWER_TREES / "empty"), "fallback": "none",
             "vcgencmd": "/nonexistent/vcgencmd"}  # fmt: skip
    daemon = Daemon(daemon_config(tiny_bundle.directory, power=power))
    run_to_end(daemon)
    assert daemon.power_status is not None
    assert daemon.power_status.startswith("no power meter readable")
    names = {m.name for m in daemon.registry.collect()}
    assert "edgetc_power_watts" not in names


def test_packet_gain_follows_the_bundle_manifest(tiny_bundle, tmp_path):
    import json
    import shutil

    from edge_core.bundle import MANIFEST_NAME
    from edge_daemon.pipeline import resolve_packet_gain

    config = daemon_config(tiny_bundle.directory)
    assert config.packet_gain == "bundle"
    assert resolve_packet_gain(config) == "unit_rms"  # exported from synthetic data
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.directory, copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["input"]["normalization"]["kind"] = "none"
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert resolve_packet_gain(daemon_config(copy)) == "none"
    explicit = daemon_config(copy, packet_gain="unit_rms")
    assert resolve_packet_gain(explicit) == "unit_rms"

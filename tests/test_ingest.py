"""`ingest = "process"`: the source side in its own process (edge_daemon/ingest.py).

Each test runs the real daemon with a real child process, real ZeroMQ output and a real
Prometheus registry; the engine is a stub (uniform probabilities) because what is under test is
the path packets take, not the model.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import zmq
from conftest import UniformEngine, daemon_config_file
from prometheus_client import CollectorRegistry

from edge_daemon.config import DaemonConfig
from edge_daemon.ingest import MetricsMirror, PipeFlag, snapshot
from edge_daemon.metrics import DaemonMetrics
from edge_daemon.pipeline import Daemon

pytestmark = pytest.mark.timeout(120)


def config(ingest: str, source: dict) -> DaemonConfig:
    return DaemonConfig.from_dict(
        {
            "source": source,
            "ingest": ingest,
            "packet_gain": "unit_rms",
            "batcher": {"queue_size": 20_000},
            "publisher": {"bind": "tcp://127.0.0.1:*", "sndhwm": 100_000},
            "metrics": {"enabled": False},
            "power": {"type": "none"},
        },
        "",
    )


def wait_until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@contextmanager
def running(ingest: str, source: dict) -> Iterator[tuple[Daemon, zmq.Socket]]:
    daemon = Daemon(config(ingest, source), engine_factory=UniformEngine)
    context = zmq.Context()
    results = context.socket(zmq.SUB)
    results.setsockopt(zmq.SUBSCRIBE, b"tc.all")
    results.setsockopt(zmq.RCVHWM, 0)
    daemon.start()
    try:
        assert daemon.publisher is not None
        results.connect(daemon.publisher.endpoint)
        yield daemon, results
    finally:
        daemon.stop()
        results.close(linger=0)
        context.term()
    t = daemon.totals
    assert t.detected == t.accounted, "accounting identity at rest"


def value(daemon: Daemon, name: str, **labels: str) -> float | None:
    return daemon.registry.get_sample_value(name, labels)


FINITE = {"type": "synthetic", "pace": "fast", "duration_s": 0.3, "seed": 5, "chunk_samples": 4096}
"""0.3 s of generated channel, as fast as it comes: the same samples in every run."""


def spans(ingest: str, caplog) -> tuple[list[tuple[int, int]], Daemon]:
    """Every published packet's sample span, in order, for a finite synthetic stream; the
    results socket subscribes before the source opens (gated on the published count)."""
    with running(ingest, FINITE) as (daemon, results):
        wait_until(daemon.source_done.is_set)
        wait_until(lambda: daemon.totals.detected == daemon.totals.accounted)
        got = []
        while len(got) < daemon.totals.classified and results.poll(10_000):
            message = json.loads(results.recv_multipart()[1])
            got.append((message["sample_start"], message["sample_end"]))
    return got, daemon


def test_the_ingest_process_gives_the_same_packets_as_the_thread(caplog):
    """The same stream cut in the child and in the daemon's thread: the same packets, all
    classified, the child's metrics and log lines in the daemon's."""
    caplog.set_level(logging.INFO)
    # a slow joiner misses the first messages: start publishing only once subscribed, by
    # letting the SUB connect before the first packet (the source opens after start; the
    # generator needs a moment), and compare only what both runs published in full
    threaded, d_thread = spans("thread", caplog)
    caplog.clear()
    in_process, d_process = spans("process", caplog)
    assert d_thread.ingest_mode == "thread" and d_process.ingest_mode == "process"
    assert d_process.failure is None, d_process.failure
    t = d_process.totals
    assert t.detected > 50 and t.classified == t.detected, t
    assert t.detected == d_thread.totals.detected
    # every span the thread published, the process published too (a SUB may join late: compare
    # the common tail, which must be most of the stream)
    common = set(threaded) & set(in_process)
    assert len(common) >= 0.9 * t.detected, (len(common), t.detected)
    assert sorted(in_process) == in_process  # published in detection order
    # the child's detector metrics, mirrored into the daemon's registry
    floor = value(d_process, "edgetc_detector_noise_floor_dbfs")
    assert floor is not None and -80 < floor < 0, floor
    assert value(d_process, "edgetc_packets_detected_total") == t.detected
    # its log lines, logged again by the daemon under the child's logger names
    opened = [r for r in caplog.records if "source synthetic open at" in r.getMessage()]
    assert opened and opened[0].name == "edge_tc.source"
    assert any("end of the recording" in r.getMessage() for r in caplog.records)


def test_an_injected_source_object_stays_in_the_daemons_process():
    from edge_daemon.sources.base import NullEvents
    from edge_daemon.sources.synthetic import SyntheticSource, SyntheticSourceConfig

    source = SyntheticSource(SyntheticSourceConfig(pace="fast", duration_s=0.05), NullEvents())
    daemon = Daemon(config("process", FINITE), source=source, engine_factory=UniformEngine)
    assert daemon.ingest_mode == "thread"


REALTIME = {"type": "synthetic", "pace": "realtime", "loop_s": 0.2, "seed": 1,
            "chunk_samples": 4096}  # fmt: skip


def ingest_pid(daemon: Daemon) -> int:
    assert daemon._ingest is not None
    pid = daemon._ingest.process.pid
    assert pid is not None
    return pid


def test_a_killed_ingest_process_stops_the_daemon_with_every_packet_counted(caplog):
    with running("process", REALTIME) as (daemon, _):
        wait_until(lambda: daemon.totals.classified > 20)
        os.kill(ingest_pid(daemon), signal.SIGKILL)
        wait_until(lambda: daemon.failure is not None)
        assert "source thread failed" in daemon.failure
        assert "ingest process ended without finishing (exit code -9)" in daemon.failure
        assert daemon.stop_event.is_set()  # the daemon stops (edge-tc run exits 1)


def test_sigterm_to_the_control_group_leaves_the_child_to_the_daemon():
    """systemd's stop sends SIGTERM to every process of the unit: the child ignores it and the
    daemon's own stop ends it (the worker drains what was accepted)."""
    with running("process", REALTIME) as (daemon, _):
        wait_until(lambda: daemon.totals.classified > 20)
        pid = ingest_pid(daemon)
        os.kill(pid, signal.SIGTERM)
        before = daemon.totals.detected
        wait_until(lambda: daemon.totals.detected > before + 20)  # still reading
        assert daemon.failure is None
    assert daemon.failure is None
    assert daemon._ingest is not None and daemon._ingest.process.exitcode == 0


def test_a_malformed_recording_fails_in_the_child_and_the_daemon_names_it(tmp_path, caplog):
    meta = tmp_path / "bad.sigmf-meta"
    meta.write_text("{ not json")
    (tmp_path / "bad.sigmf-data").write_bytes(b"\x00" * 64)
    with running("process", {"type": "sigmf", "path": str(tmp_path / "bad")}) as (daemon, _):
        wait_until(lambda: daemon.failure is not None)
        assert "ingest process failed: IQFormatError" in daemon.failure
        assert "bad.sigmf-meta" in daemon.failure
    assert any(
        r.levelno == logging.ERROR and "ingest process" in r.getMessage() for r in caplog.records
    )


def test_the_mirror_adds_counter_growth_and_copies_gauges():
    child, parent = DaemonMetrics(CollectorRegistry()), DaemonMetrics(CollectorRegistry())
    mirror = MetricsMirror(parent)
    child.source_dropped_samples.labels("malformed").inc(7)
    child.detector_noise_floor_dbfs.set(-42.5)
    child.source_reconnects.inc()
    child.detected.inc(5)  # the daemon counts detected packets itself, as they arrive
    grown = mirror.apply(snapshot(child))
    assert grown == {"source_dropped_samples": 7.0, "source_reconnects": 1.0}
    child.source_dropped_samples.labels("malformed").inc(3)
    mirror.apply(snapshot(child))
    mirror.apply(snapshot(child))  # the same snapshot twice adds nothing
    r = parent.registry
    got = r.get_sample_value("edgetc_source_dropped_samples_total", {"reason": "malformed"})
    assert got == 10
    assert r.get_sample_value("edgetc_detector_noise_floor_dbfs") == -42.5
    assert r.get_sample_value("edgetc_source_reconnects_total") == 1
    assert r.get_sample_value("edgetc_packets_detected_total") == 0


def test_a_bad_ingest_value_is_a_config_problem():
    from edge_core.typed_config import ConfigProblems

    with pytest.raises(ConfigProblems) as err:
        config("fork", FINITE)
    assert any(p.startswith("ingest:") for p in err.value.problems), err.value.problems


def children_of(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    with open(path) as f:
        return [int(p) for p in f.read().split()]


def test_the_child_does_not_outlive_a_daemon_killed_with_sigkill(tmp_path, tiny_bundle):
    """`edge-tc run` killed outright (no stop, no cleanup): its ingest process sees the stop
    pipe close and exits by itself, no orphan left reading the SDR."""
    import subprocess
    import sys
    from pathlib import Path

    path = daemon_config_file(
        tmp_path, tiny_bundle.directory, 'type = "synthetic"\npace = "realtime"'
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_core.cli", "run", "--config", str(path)],
        cwd=root, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the child's own log line, relayed by the daemon
            if "source synthetic open at" in line:
                break
        else:
            raise AssertionError("the daemon ended before its source opened")
        (child,) = [pid for pid in children_of(proc.pid) if "spawn_main" in cmdline(pid)]
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30  # a hang guard, not a speed figure
        while os.path.exists(f"/proc/{child}") and _alive(child):
            assert time.monotonic() < deadline, "the ingest process outlived the daemon"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def _alive(pid: int) -> bool:
    """Not yet reaped and not a zombie (a zombie has exited; init reaps orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_headers_that_never_come_are_decoded_by_the_worker(monkeypatch, caplog):
    """The ingest process sends each packet's PHY header after the packet; if it is late the
    worker does not wait past HEADERS_WAIT_S: the fusion stage decodes (one warning)."""
    import threading

    from edge_daemon import pipeline
    from edge_daemon.pipeline import QueuedPacket

    monkeypatch.setattr(pipeline, "HEADERS_WAIT_S", 0.01)
    daemon = Daemon(config("process", FINITE), engine_factory=UniformEngine)
    x = np.zeros((2, 3000), np.float32)
    came = QueuedPacket(0, 0, 3000, 0.0, x, 0.0, np.arange(7, dtype=np.float32), threading.Event())
    assert came.headers_ready is not None
    came.headers_ready.set()
    late = QueuedPacket(1, 3000, 6000, 0.0, x, 0.0, None, threading.Event())
    daemon._awaiting_headers[1] = late
    np.testing.assert_array_equal(daemon._headers_of([came]), came.headers[None])
    with caplog.at_level(logging.WARNING):
        assert daemon._headers_of([came, late]) is None
        assert daemon._headers_of([late]) is None
    assert 1 not in daemon._awaiting_headers  # forgotten, not leaked
    late_lines = [r for r in caplog.records if "late" in r.getMessage()]
    assert len(late_lines) == 1  # logged once
    # a packet with no headers on their way (thread mode): decoded by the worker, no wait
    assert daemon._headers_of([QueuedPacket(2, 0, 1, 0.0, x)]) is None


def test_a_failing_fusion_stage_fails_its_batches_counted_and_the_daemon_goes_on(caplog):
    """The fusion stage runs in the publisher thread: an error there fails that batch (counted
    `failed`, one log line per streak), nothing else; the engine is not reloaded."""

    class Boom:
        calls = 0

        def apply(self, probs, x, lengths, headers=None):
            Boom.calls += 1
            raise ValueError("trees on fire")

    caplog.set_level(logging.INFO)
    finite = {**FINITE, "pace": "realtime", "duration_s": 0.5}
    daemon = Daemon(config("thread", finite), engine_factory=UniformEngine)
    daemon.fusion = Boom()  # type: ignore[assignment]  # before start: every batch goes through it
    daemon._load_fusion = lambda bundle: daemon.fusion  # type: ignore[method-assign]
    daemon.start()
    try:
        wait_until(daemon.source_done.is_set)
        wait_until(lambda: daemon.totals.detected == daemon.totals.accounted)
    finally:
        daemon.stop()
    t = daemon.totals
    assert t.detected > 20 and t.failed == t.detected and t.classified == 0, t
    assert Boom.calls > 0 and t.engine_reloads == 0
    lines = [r for r in caplog.records if "fusion stage failed" in r.getMessage()]
    assert len(lines) == 1 and "trees on fire" in lines[0].getMessage()
    assert value(daemon, "edgetc_packets_failed_total") == t.failed


def test_the_stop_flag_looks_at_its_pipe_at_most_every_few_ms():
    """The child's stop flag over a real pipe: a stop request (or the daemon's end closing) is
    seen at the next check, at most CHECK_EVERY_S later; in between no system call is made."""
    now = [100.0]
    for how in ("send", "close"):
        child_end, daemon_end = multiprocessing.Pipe(duplex=False)
        flag = PipeFlag(child_end, clock=lambda: now[0])
        assert not flag.is_set()  # looked: nothing yet
        if how == "send":
            daemon_end.send(None)
        else:
            daemon_end.close()
        assert not flag.is_set()  # not looked again yet
        now[0] += PipeFlag.CHECK_EVERY_S
        assert flag.is_set() and flag.is_set()
        assert flag.wait(0)
        child_end.close()

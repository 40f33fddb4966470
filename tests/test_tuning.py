"""Per-thread CPU affinity and SCHED_FIFO (edge_daemon/tuning.py), on the real kernel."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from edge_core.typed_config import ConfigProblems
from edge_daemon.config import DaemonConfig
from edge_daemon.tuning import available_cpus, check_cpus, realtime_allowed, tune_thread

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="no per-thread affinity on this OS"
)


def _in_thread(fn):
    out = {}

    def run():
        out["result"] = fn()

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    return out["result"]


def _config(bundle, source: dict, **extra) -> DaemonConfig:
    """A daemon config on `bundle` (ONNX Runtime, one thread) with no metrics server or power
    reading, publishing on a free port; `extra`: top-level keys."""
    table = {
        "source": source,
        "bundle": str(bundle.directory),
        "engine": {"type": "onnxruntime", "threads": 1},
        "publisher": {"bind": "tcp://127.0.0.1:*"},
        "metrics": {"enabled": False},
        "power": {"type": "none"},
        **extra,
    }
    return DaemonConfig.from_dict(table, "")


def test_affinity_is_set_for_the_calling_thread_only():
    cpu = min(available_cpus())
    before = os.sched_getaffinity(0)
    log = logging.getLogger("test")
    applied, inside = _in_thread(
        lambda: (tune_thread("worker", [cpu], 0, log), os.sched_getaffinity(0))
    )
    assert applied == [f"CPUs [{cpu}]"] and inside == {cpu}
    assert os.sched_getaffinity(0) == before  # this thread is untouched


def test_realtime_priority_is_applied_or_refused_with_a_warning(caplog):
    log = logging.getLogger("test.rt")

    def attempt():
        applied = tune_thread("source", [], 10, log)
        return applied, os.sched_getscheduler(0)

    with caplog.at_level(logging.WARNING, "test.rt"):
        applied, policy = _in_thread(attempt)
    if applied:
        assert applied == ["SCHED_FIFO 10"] and policy == os.SCHED_FIFO
        assert not caplog.records
    else:
        assert policy == os.SCHED_OTHER
        (record,) = caplog.records
        assert "cannot use SCHED_FIFO priority 10" in record.getMessage()
    # the publisher is on every packet's path too (fusion stage, sending): it gets it as well
    assert _in_thread(lambda: tune_thread("publisher", [], 10, log)) == applied
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    # the probe says the same as trying, and leaves the calling thread as it was
    assert realtime_allowed(10) == bool(applied)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_cpu_keys_are_checked_against_the_cpus_available():
    assert check_cpus("worker_cpus", [0, 3], available={0, 1}) == (
        "worker_cpus: CPU(s) [3] not available to this process (it may use [0, 1])"
    )
    assert check_cpus("worker_cpus", [1], available={0, 1}) is None
    table = {"source": {"type": "synthetic"}, "worker_cpus": [4096], "realtime_priority": 100}
    with pytest.raises(ConfigProblems) as err:
        DaemonConfig.from_dict(table, "")
    text = "\n".join(err.value.problems)
    assert "worker_cpus: CPU(s) [4096] not available to this process" in text
    assert "realtime_priority: want 0 (off) or 1..99, got 100" in text


@pytest.mark.parametrize("ingest", ["thread", "process"])
def test_the_daemon_pins_its_threads(tiny_bundle, ingest):
    from edge_daemon.pipeline import Daemon

    cpus = sorted(available_cpus())
    config = _config(
        tiny_bundle,
        {"type": "synthetic", "pace": "realtime", "duration_s": 2.0},
        worker_cpus=[cpus[-1]],
        source_cpus=[cpus[0]],
        ingest=ingest,
    )
    daemon = Daemon(config)
    daemon.start()
    try:
        assert daemon.source_open.wait(60)  # the source side has pinned itself by then
        assert daemon.source_done.wait(0.5) is False  # still running: threads alive
        worker, source = daemon._worker_thread, daemon._source_thread
        assert worker is not None and source is not None
        assert os.sched_getaffinity(worker.native_id) == {cpus[-1]}
        if ingest == "thread":
            assert os.sched_getaffinity(source.native_id) == {cpus[0]}
        else:  # the whole ingest process
            assert daemon._ingest is not None and daemon._ingest.process.pid is not None
            assert os.sched_getaffinity(daemon._ingest.process.pid) == {cpus[0]}
    finally:
        daemon.stop()


@pytest.mark.parametrize("ingest", ["thread", "process"])
def test_every_thread_on_the_packet_path_runs_real_time_where_allowed(tiny_bundle, ingest):
    """realtime_priority on the real daemon: worker, publisher and source threads (with the
    ingest process: its loop and the daemon's receiving thread) under SCHED_FIFO, or, where
    this user may not, all at normal priority."""
    from edge_daemon.pipeline import Daemon

    if not realtime_allowed(10):
        pytest.skip("this user may not use SCHED_FIFO (needs CAP_SYS_NICE)")
    config = _config(
        tiny_bundle,
        {"type": "synthetic", "pace": "realtime", "duration_s": 3.0},
        realtime_priority=10,
        ingest=ingest,
    )
    daemon = Daemon(config)
    daemon.start()
    try:
        assert daemon.source_open.wait(60)
        assert daemon.source_done.wait(0.5) is False  # still running: threads alive
        threads = [daemon._worker_thread, daemon._publisher_thread, daemon._source_thread]
        for t in threads:
            assert t is not None
            assert os.sched_getscheduler(t.native_id) == os.SCHED_FIFO, t.name
            assert os.sched_getparam(t.native_id).sched_priority == 10, t.name
        if ingest == "process":
            assert daemon._ingest is not None and daemon._ingest.process.pid is not None
            assert os.sched_getscheduler(daemon._ingest.process.pid) == os.SCHED_FIFO
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's thread untouched
    finally:
        daemon.stop()


def test_the_demo_asks_for_real_time_only_where_it_is_allowed():
    from edge_daemon.runcli import DEMO_REALTIME_PRIORITY, default_bundle, demo_table

    table = demo_table(default_bundle())
    if realtime_allowed():
        assert table["realtime_priority"] == DEMO_REALTIME_PRIORITY
    else:
        assert "realtime_priority" not in table  # no warning per thread for a plain user


def test_the_daemon_shortens_the_gil_switch_interval_while_it_runs(tiny_bundle):
    import sys

    from edge_daemon.pipeline import Daemon

    config = _config(
        tiny_bundle,
        {"type": "synthetic", "pace": "fast", "duration_s": 0.05},
        switch_interval_ms=0.3,
    )
    before = sys.getswitchinterval()
    assert before != pytest.approx(0.0003)
    daemon = Daemon(config)
    daemon.start()
    try:
        assert sys.getswitchinterval() == pytest.approx(0.0003)
    finally:
        daemon.stop()
    assert sys.getswitchinterval() == before


def test_the_daemon_freezes_what_it_loaded_out_of_the_collectors_sight(tiny_bundle):
    import gc

    from edge_daemon.pipeline import Daemon

    config = _config(tiny_bundle, {"type": "synthetic", "pace": "fast", "duration_s": 0.05})
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    daemon = Daemon(config)
    daemon.start()
    try:
        assert gc.get_freeze_count() > 1000  # the engine, modules, config: all frozen
    finally:
        daemon.stop()
    assert gc.get_freeze_count() == 0

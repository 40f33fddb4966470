"""Engines in their own process (`engine.isolation = "process"`, engines/isolated.py): the same
results as in-process, a worker killed by SIGSEGV mid-run or stuck past its deadline fails its
batch and is restarted while the real daemon goes on counting every packet, and the worker's
protocol module stays Python 3.6 (JetPack 4.6's interpreter)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_core.errors import ConfigError, ModelError
from edge_daemon.config import DaemonConfig
from edge_daemon.pipeline import Daemon
from engines.base import load
from engines.isolated import IsolatedEngine

pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "models" / "default"
FAKES = Path(__file__).parent / "fakes"


def wait_until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def daemon_config(engine: dict) -> DaemonConfig:
    return DaemonConfig.from_dict(
        {
            "source": {"type": "synthetic", "seed": 3, "pace": "realtime"},
            "bundle": str(BUNDLE),
            "engine": engine,
            "batcher": {"max_batch": 4},
            "publisher": {"bind": "tcp://127.0.0.1:*"},
            "metrics": {"enabled": False},
            "power": {"type": "none"},
            "engine_reload_after_failures": 1000,  # the worker's own restart, not the reload
        },
        "",
    )


def test_isolation_keys_are_validated_with_their_key_paths():
    with pytest.raises(ConfigError) as err:
        DaemonConfig.from_dict(
            {
                "source": {"type": "synthetic"},
                "engine": {"type": "onnxruntime", "isolation": "fork", "deadline_ms": 0},
            },
            "",
        )
    text = str(err.value)
    assert "engine.isolation: 'fork' is not one of ['thread', 'process']" in text
    with pytest.raises(ConfigError, match=r"engine\.deadline_ms: want 0\.\.3600000 ms, got 0"):
        DaemonConfig.from_dict(
            {"source": {"type": "synthetic"}, "engine": {"type": "onnxruntime", "deadline_ms": 0}},
            "",
        )
    with pytest.raises(ConfigError, match=r'engine\.worker_python: only with isolation = "proc'):
        DaemonConfig.from_dict(
            {
                "source": {"type": "synthetic"},
                "engine": {"type": "onnxruntime", "worker_python": "/usr/bin/python3.6"},
            },
            "",
        )
    config = DaemonConfig.from_dict(
        {"source": {"type": "synthetic"}, "engine": {"type": "tflite", "isolation": "process"}},
        "",
    )
    assert config.engine.isolation == "process"


def test_process_engine_gives_the_in_process_results_through_shared_memory():
    x = np.random.default_rng(1).standard_normal((37, 2, 3000)).astype(np.float32)
    config = {"type": "onnxruntime", "threads": 1, "max_batch": 16}
    with load(BUNDLE, config) as inline:
        want = inline.infer(x)
    with load(BUNDLE, {**config, "isolation": "process"}) as isolated:
        assert isinstance(isolated, IsolatedEngine)
        pid = isolated.worker_pid
        assert pid is not None and pid != os.getpid()
        assert isolated.input_spec.max_batch == 16
        got = isolated.infer(x)  # three chunks: 16, 16, 5
        again = isolated.infer(x[:1])
        assert "worker process" in isolated.info.device
    for task, probs in want.items():
        np.testing.assert_array_equal(got[task], probs)
        np.testing.assert_array_equal(again[task], probs[:1])
    with pytest.raises(ProcessLookupError):  # close() ended the worker
        os.kill(pid, 0)


def test_a_worker_that_cannot_load_reports_the_runtimes_error(tmp_path):
    # the same exception and message as loading in the daemon's own process
    config = {"type": "onnxruntime", "model": "missing.onnx"}
    with pytest.raises(ModelError) as inline:
        load(BUNDLE, config)
    with pytest.raises(ModelError) as isolated:
        load(BUNDLE, {**config, "isolation": "process"})
    assert str(isolated.value) == str(inline.value)
    assert "no model file 'missing.onnx'" in str(isolated.value)


def test_daemon_survives_a_sigsegv_in_the_engine_worker_and_counts_every_packet():
    daemon = Daemon(daemon_config({"type": "onnxruntime", "threads": 1, "isolation": "process"}))
    daemon.start()
    try:
        engine = daemon.engine
        assert isinstance(engine, IsolatedEngine)
        wait_until(lambda: daemon.totals.classified >= 100)
        first = engine.worker_pid
        assert first is not None
        os.kill(first, signal.SIGSEGV)  # what a segfaulting delegate does to its process
        wait_until(lambda: daemon.totals.failed >= 1)
        at_crash = daemon.totals.classified
        wait_until(lambda: daemon.totals.classified >= at_crash + 100)
        assert daemon.failure is None
        assert daemon.engine is engine and engine.restarts == 1
        assert engine.worker_pid not in (None, first)
    finally:
        totals = daemon.stop()
    assert totals.engine_failures >= 1 and totals.failed >= 1
    assert totals.detected == totals.accounted, totals
    assert daemon.registry.get_sample_value("edgetc_packets_failed_total") == totals.failed


def test_a_blocked_engine_misses_its_deadline_and_the_daemon_goes_on(caplog):
    sys.path.insert(0, str(FAKES))
    try:
        import stall_engine  # noqa: F401  (registers the "stall" backend)

        config = daemon_config(
            {"type": "stall", "isolation": "process", "deadline_ms": 300, "stall_after": 40}
        )
        daemon = Daemon(config)
        daemon.start()
        try:
            engine = daemon.engine
            assert isinstance(engine, IsolatedEngine)
            first = engine.worker_pid
            wait_until(lambda: daemon.totals.failed >= 1)
            at_failure = daemon.totals.classified
            wait_until(lambda: engine.restarts >= 1 and daemon.totals.classified > at_failure)
            assert engine.worker_pid != first
            assert daemon.failure is None
        finally:
            totals = daemon.stop()
    finally:
        sys.path.remove(str(FAKES))
        from engines.base import unregister

        unregister("stall")
    assert "missed its deadline of 300 ms" in caplog.text
    assert totals.detected == totals.accounted, totals


@pytest.mark.skipif(shutil.which("vermin") is None and not (ROOT / ".venv/bin/vermin").exists(),
                    reason="vermin not installed (the dev extra has it)")  # fmt: skip
def test_worker_protocol_module_runs_on_python_3_6():
    vermin = shutil.which("vermin") or str(ROOT / ".venv/bin/vermin")
    files = [ROOT / "engines" / "worker.py"]
    trt_runtime = ROOT / "engines" / "trt_runtime.py"
    if trt_runtime.exists():
        files.append(trt_runtime)

    def vermin_36(paths: list[Path]) -> subprocess.CompletedProcess[str]:
        # "3.6-": needs no Python newer than 3.6 (a bare "3.6" asks for exactly 3.6 as minimum)
        return subprocess.run(
            [vermin, "--target=3.6-", "--violations", "--no-tips", "--eval-annotations",
             *map(str, paths)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    result = vermin_36(files)
    assert result.returncode == 0, result.stdout + result.stderr
    # the check bites: the daemon's side (shared_memory, 3.8+; 3.10 syntax) is not 3.6
    assert vermin_36([ROOT / "engines" / "isolated.py"]).returncode != 0

"""`edge-tc run` / `check-config` from the command line: SIGTERM drain, --duration, --demo."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import daemon_config_file as config_file
from prometheus_client.parser import text_string_to_metric_families

from edge_core.cli import main
from edge_daemon import runcli

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[1]


def lines_of(stream) -> queue.Queue[str]:
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            out.put(line)
        out.put("")

    threading.Thread(target=pump, daemon=True).start()
    return out


def wait_for(lines: queue.Queue[str], pattern: str, seen: list[str], timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found
        if line == "":
            break
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


def test_sigterm_drains_and_exits_zero(tmp_path, tiny_bundle):
    source = 'type = "synthetic"\npace = "realtime"\ntraffic_scale = 2.0'
    path = config_file(tmp_path, tiny_bundle.directory, source)
    env = {**os.environ, "JOURNAL_STREAM": "8:1234", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_core.cli", "run", "--config", str(path)],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    seen: list[str] = []
    try:
        lines = lines_of(proc.stderr)
        started = wait_for(lines, r"metrics on (http://\S+/metrics)", seen)
        deadline = time.monotonic() + 30
        while scrape(started.group(1)).get("edgetc_packets_classified_total", 0) < 20:
            assert time.monotonic() < deadline, "no packets classified"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)  # a hang guard, not a speed figure (issue 17)
        wait_for(lines, r"stopped: detected", seen)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0
    text = "".join(seen)
    assert "SIGTERM: stopping" in text
    # journald: priority prefix, no timestamps, one line per event
    assert all(re.match(r"<\d>edge_tc\.", line) for line in seen if line.strip()), text
    totals = re.search(
        r"detected (\d+), classified (\d+), failed (\d+), dropped \{'queue_full': (\d+), "
        r"'shutdown': (\d+)\}", text,
    )  # fmt: skip
    assert totals is not None
    detected, *rest = map(int, totals.groups())
    assert detected == sum(rest) and detected > 0


def test_run_stops_at_the_end_of_a_recording_or_the_duration(tmp_path, tiny_bundle, capsys):
    base = tmp_path / "rec"
    assert main(["synth", "stream", "--out", str(base), "--seconds", "0.1", "--quiet"]) == 0
    source = f'type = "sigmf"\npath = "{base}.sigmf-meta"\npace = "fast"'
    path = config_file(tmp_path, tiny_bundle.directory, source)
    assert main(["run", "--config", str(path), "--set", "metrics.enabled=false"]) == 0
    source = 'type = "synthetic"\npace = "realtime"'
    path = config_file(tmp_path, tiny_bundle.directory, source)
    # an endless live source: a run that ignored --duration would never return (the module's
    # timeout fails it); no wall-clock bound a busy machine could break (issue 17)
    assert main(["run", "--config", str(path), "--duration", "1.0"]) == 0


def test_demo_prints_the_live_table(tiny_bundle, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # engine auto's timings
    args = ["run", "--demo", "--bundle", str(tiny_bundle.directory), "--duration", "2",
            "--set", "metrics.port=0", "--set", "publisher.bind=tcp://127.0.0.1:*",
            "--set", "power.type=none", "--set", "engine.bench_repeats=2"]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    out = captured.out
    for row in ("classifications/s", "phy labels", "app latency", "max_exec 7 ms", "dropped",
                "joules/sample", "n/a: power.type = 'none'", "stages p50 (ms)",
                "stages p99 (ms)"):  # fmt: skip
        assert row in out, out
    # the demo's engine is the fastest one timed here, cached for the next run
    assert "auto: fastest of" in captured.err
    assert (tmp_path / "cache" / "edge-tc" / "engine-auto.json").is_file()


def test_demo_without_the_default_bundle_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runcli, "default_bundle", lambda: tmp_path / "models" / "default")
    assert main(["run", "--demo", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert "the default bundle" in err and "is missing" in err and "--bundle DIR" in err


def test_default_bundle_is_the_repositorys_models_default():
    assert runcli.default_bundle() == ROOT / "models" / "default"


def test_bad_config_exits_2_with_every_problem(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('log_level = "loud"\n[batcher]\nmax_batch = 0\n')
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "source: missing" in err and "log_level:" in err and "batcher.max_batch:" in err
    assert main(["run", "--config", str(path), "--duration", "-1"]) == 2
    assert "--duration: want > 0" in capsys.readouterr().err


def test_duration_counts_from_the_sources_first_open():
    """Under qemu arm64 the demo spends ~23 s generating its loop before the source opens; a
    wall-clock --duration 15 stopped it with nothing detected (CI, stop 18)."""
    daemon = type("D", (), {"source_open": threading.Event()})()
    clock = runcli._Deadline(daemon, 15.0)
    assert clock.left() == float("inf")  # still generating: the clock has not started
    daemon.source_open.set()
    assert 0 < clock.left() <= 15.0
    assert runcli._Deadline(daemon, None).left() == float("inf")

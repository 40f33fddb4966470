"""GNU Radio as the real peer: a headless flowgraph (deploy/gnuradio/iq_to_edge_tc.py: file source
of a generator-made SigMF recording -> throttle at 20 MS/s -> zeromq.pub_sink) feeds `edge-tc
run` (the zmq source) in a subprocess; our subscriber collects the classifications.

They match the recording's annotations as in the edge_daemon end-to-end test: every annotated
packet is classified, dropped and counted, or missed by the detector (< 10 %), and the per-task
accuracy against the annotations is within 2 points of the same engine run offline on the
assembler's packets of the same samples. Skips when GNU Radio's Python bindings are missing.

No step waits for a guessed time. A PUB socket drops what it sends until the subscription has
reached it, so the flowgraph (`--wait`) sends NaN probe items until told to go: the daemon's
detector skips them and logs "corrupt input", which shows its subscription is in before the
recording starts, and its "valid input again after K corrupt samples skipped" says how many it
got (the offline run gets the same K first). The flowgraph ends with NaN items too: the second
"corrupt input" line shows the daemon has had every sample before them, and SIGTERM then drains
its queue; the subscriber reads until it has as many messages as the daemon classified.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import offline_labels

from edge_core.assembler import AssemblerConfig, PacketAssembler
from edge_core.cli import main as edge_tc
from edge_core.inspect import default_tolerance_samples, match_intervals
from edge_core.iq.sigmf_io import Recording, open_recording
from edge_core.schema import TASKS
from edge_daemon.publisher import Subscriber

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[1]
FLOWGRAPH = ROOT / "deploy" / "gnuradio" / "iq_to_edge_tc.py"
BUNDLE = ROOT / "models" / "default"
TAIL_S = 0.004  # zeros after the recording (80k samples) so that its last packet ends
CORRUPT = r"detector: corrupt input, skipping samples"  # the daemon got NaN probe items
SKIPPED = r"detector: valid input again after (\d+) corrupt samples skipped"
DONE = r"done (\d+) \(probe items: (\d+) before, (\d+) after the recording\)"
STOPPED = r"stopped: detected (\d+), classified (\d+), failed (\d+), dropped (\{.*\})"


def gnuradio_python() -> str | None:
    """A Python that has GNU Radio's zeromq blocks (the system's, Debian `gnuradio`)."""
    for python in ("/usr/bin/python3", shutil.which("python3")):
        if python and subprocess.run(
            [python, "-c", "from gnuradio import zeromq, blocks"], capture_output=True
        ).returncode == 0:  # fmt: skip
            return python
    return None


GR_PYTHON = gnuradio_python()
pytestmark = [
    pytestmark,
    pytest.mark.skipif(GR_PYTHON is None, reason="GNU Radio (python3 gnuradio.zeromq) not found"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LogReader:
    """Collects a subprocess's stderr lines in a thread."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout_s: float, nth: int = 1) -> re.Match[str]:
        """The `nth` line that matches `pattern`, waiting up to `timeout_s` for it."""
        deadline = time.monotonic() + timeout_s
        while True:
            matches = [m for line in list(self.lines) if (m := re.search(pattern, line))]
            if len(matches) >= nth:
                return matches[nth - 1]
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} (#{nth}) in {timeout_s} s:\n" + "\n".join(self.lines))

    def join(self) -> None:
        self._thread.join(timeout=10)


def offline(rec: Recording, samples: np.ndarray, config: AssemblerConfig):
    """The assembler's packets of the same samples, and the engine's labels for them."""
    assembler = PacketAssembler(config)
    packets = []
    for start in range(0, samples.size, 65536):
        packets += assembler.feed(samples[start : start + 65536], start)
    return packets, offline_labels(BUNDLE, packets)


def accuracy(pairs, predicted, rec: Recording) -> dict[str, float]:
    return {
        task.name: float(
            np.mean(
                [
                    predicted[d][task.name]
                    == task.index(rec.annotations[t][f"edge_tc:{task.name}"])
                    for d, t in pairs
                ]
            )
        )
        for task in TASKS
    }


def test_gnuradio_flowgraph_feeds_the_daemon(tmp_path):
    base = tmp_path / "rec"
    assert edge_tc(["synth", "stream", "--out", str(base), "--seconds", "0.4", "--seed", "5",
                    "--traffic-scale", "3", "--quiet"]) == 0  # fmt: skip
    rec = open_recording(base)
    truth = [
        (int(a["core:sample_start"]), int(a["core:sample_start"] + a["core:sample_count"]))
        for a in rec.annotations
    ]
    assert len(truth) > 200
    tail = np.zeros(round(TAIL_S * rec.sample_rate_hz), np.complex64)
    samples = np.concatenate([rec.read(), tail])  # what the flowgraph sends after its probe

    port = free_port()
    config = tmp_path / "edge-tc.toml"
    config.write_text(
        f"""bundle = "{BUNDLE}"
[source]
type = "zmq"
address = "tcp://127.0.0.1:{port}"
socket = "sub"
sample_format = "cf32_le"
sample_rate_hz = {rec.sample_rate_hz}
[engine]
type = "onnxruntime"
threads = 1
[batcher]
max_batch = 16
queue_size = 4096
[publisher]
bind = "tcp://127.0.0.1:*"
[metrics]
enabled = false
[power]
type = "none"
"""
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge_core.cli", "run", "--config", str(config)],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    flowgraph = subprocess.Popen(
        [GR_PYTHON, str(FLOWGRAPH), "--sigmf", str(base), "--tail-s", str(TAIL_S),
         "--address", f"tcp://127.0.0.1:{port}", "--wait"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path,
    )  # fmt: skip
    log = LogReader(daemon.stderr)
    try:
        endpoint = log.wait_for(r"publishing on (tcp://\S+?),", 120).group(1)
        line = flowgraph.stdout.readline()
        assert line.startswith("probing "), line + flowgraph.stderr.read()
        with Subscriber(endpoint) as sub:
            sub.wait_connected()
            # the daemon gets the probe: its subscription is in, the recording cannot be lost
            log.wait_for(CORRUPT, 120)
            flowgraph.stdin.write("go\n")
            flowgraph.stdin.flush()
            out, err = flowgraph.communicate(timeout=120)
            assert flowgraph.returncode == 0, err
            done = re.fullmatch(DONE, out.strip())
            assert done, out
            sent, end_probe = int(done.group(1)), int(done.group(3))
            assert sent == int(done.group(2)) + samples.size + end_probe
            # the daemon's detector has reached the end probe: every sample before it is in
            log.wait_for(CORRUPT, 120, nth=2)
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
            stopped = log.wait_for(STOPPED, 10)
            classified = int(stopped.group(2))
            received = sub.collect(count=classified, idle_timeout_s=60)
            extra = sub.recv(0.2)
    finally:
        for process in (flowgraph, daemon):
            if process.poll() is None:
                process.kill()
                process.wait()
        log.join()
    assert daemon.returncode == 0, "\n".join(log.lines)
    detected, failed = int(stopped.group(1)), int(stopped.group(3))
    dropped = sum(int(v) for v in re.findall(r": (\d+)", stopped.group(4)))
    # the source dropped nothing but the NaN probe items (no malformed message, no overflow)
    losses = [x for x in log.lines if "source dropped" in x or "source overflow" in x]
    assert losses and all("(nonfinite)" in x for x in losses), losses
    assert extra is None, extra.payload  # no more messages than the daemon classified

    # what the daemon got: the last `probe` NaN items, the recording, the end probe
    probe = int(log.wait_for(SKIPPED, 1).group(1))
    stream = np.concatenate(
        [np.full(probe, np.nan, np.complex64), samples, np.full(end_probe, np.nan, np.complex64)]
    )
    truth = [(start + probe, end + probe) for start, end in truth]
    assembler_config = AssemblerConfig(sample_rate_hz=rec.sample_rate_hz)
    packets, offline_labels = offline(rec, stream, assembler_config)
    tolerance = default_tolerance_samples(assembler_config)
    pre = assembler_config.pre_trigger_samples
    offline_pairs = match_intervals(
        [(p.start_sample + pre, p.end_sample) for p in packets], truth, tolerance
    )

    # counts add up; the daemon saw what the offline assembler saw
    assert detected == classified + failed + dropped
    assert detected == len(packets)
    payloads = [m.payload for m in received]
    assert len(payloads) == classified
    daemon_labels = [{t: p["labels"][t]["index"] for t in p["labels"]} for p in payloads]
    daemon_pairs = match_intervals(
        [(p["sample_start"] + pre, p["sample_end"]) for p in payloads], truth, tolerance
    )
    matched = {t for _, t in daemon_pairs}
    detected_truth = {t for _, t in offline_pairs}
    assert matched <= detected_truth
    missed = len(truth) - len(detected_truth)
    assert missed < 0.1 * len(truth)
    assert len(detected_truth - matched) <= dropped + failed

    # the labels match the annotations as well as the same engine offline does
    offline_acc = accuracy(offline_pairs, offline_labels, rec)
    daemon_acc = accuracy(daemon_pairs, daemon_labels, rec)
    print(f"probe {probe} + {end_probe} NaN items; detected {detected}, classified {classified}, "
          f"dropped {dropped}, failed {failed}; annotated {len(truth)}, missed {missed}; "
          f"accuracy daemon {daemon_acc}, offline {offline_acc}")  # fmt: skip
    for task in TASKS:
        assert abs(daemon_acc[task.name] - offline_acc[task.name]) <= 0.02, (
            daemon_acc,
            offline_acc,
        )

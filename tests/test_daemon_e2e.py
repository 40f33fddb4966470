"""End to end: a SigMF stream from `edge-tc synth stream`, fed over a real ZeroMQ socket at
real-time pace (as GNU Radio's zeromq.pub_sink with pass_tags would), comes out of the daemon as
classifications on a real SUB socket.

Checked against the same engine run offline on the assembler's packets of the same recording:
per-task accuracy within 2 points, and every annotated packet classified, dropped and counted,
or missed by the detector.

No step waits for a guessed time: the feeder (XPUB) sees the daemon's subscription before it
sends, the daemon is stopped once its source has received every message sent (stop() lets it
finish the chunk in hand and drains the queue), and the subscriber then reads until it has as
many messages as the daemon classified.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from conftest import offline_labels

from edge_core.assembler import AssemblerConfig, PacketAssembler
from edge_core.cli import main
from edge_core.inspect import default_tolerance_samples, match_intervals
from edge_core.iq.sigmf_io import Recording, open_recording
from edge_core.schema import TASKS
from edge_daemon.config import DaemonConfig
from edge_daemon.pipeline import Daemon
from edge_daemon.publisher import Subscriber

pytestmark = pytest.mark.timeout(300)

MESSAGE_SAMPLES = 16384  # one gr-zeromq work() call's worth
TAIL_SAMPLES = 65536  # quiet after the recording, so the last packet ends
TAG_HEADER = struct.Struct("=HBQQ")  # gr-zeromq pass_tags header: magic, version, offset, ntags


def stream_with_tail(rec: Recording) -> np.ndarray:
    samples = rec.read()  # (n,) complex64
    return np.concatenate([samples, np.zeros(TAIL_SAMPLES, np.complex64)])


def feed_realtime(socket: zmq.Socket, samples: np.ndarray, rate_hz: float) -> int:
    """Send `samples` as pass_tags messages, each when its last sample would have arrived;
    the number of messages."""
    t0 = time.monotonic()
    offsets = range(0, samples.size, MESSAGE_SAMPLES)
    for offset in offsets:
        chunk = samples[offset : offset + MESSAGE_SAMPLES]
        due = t0 + (offset + chunk.size) / rate_hz
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # pacing: the stream's real-time rate
        socket.send(TAG_HEADER.pack(0x5FF0, 1, offset, 0) + chunk.tobytes())
    return len(offsets)


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.01)


def truth_of(rec: Recording) -> list[tuple[int, int]]:
    return [
        (int(a["core:sample_start"]), int(a["core:sample_start"] + a["core:sample_count"]))
        for a in rec.annotations
    ]


def accuracy(pairs, predicted: list[dict[str, int]], rec: Recording) -> dict[str, float]:
    """Per task: the share of matched packets whose predicted class is the annotation's."""
    out = {}
    for task in TASKS:
        right = [
            predicted[d][task.name] == task.index(rec.annotations[t][f"edge_tc:{task.name}"])
            for d, t in pairs
        ]
        out[task.name] = float(np.mean(right))
    return out


DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "models" / "default"


@pytest.fixture(params=["tiny", "default"])
def bundle(request) -> Path:
    """The tiny test bundle, and the shipped default bundle (the real accuracy) when present."""
    if request.param == "tiny":
        return request.getfixturevalue("tiny_bundle").directory
    if not (DEFAULT_BUNDLE / "manifest.json").is_file():
        pytest.skip("models/default is not there (tools/make_default_bundle.sh makes it)")
    return DEFAULT_BUNDLE


def test_end_to_end_over_zeromq(bundle, tmp_path):
    base = tmp_path / "stream"
    args = ["synth", "stream", "--out", str(base), "--seconds", "0.4", "--seed", "5",
            "--traffic-scale", "3", "--quiet"]  # fmt: skip
    assert main(args) == 0
    rec = open_recording(base)
    samples = stream_with_tail(rec)
    truth = truth_of(rec)
    assert len(truth) > 200

    # offline: the assembler's packets of the same samples, the same engine
    assembler_config = AssemblerConfig(sample_rate_hz=rec.sample_rate_hz)
    offline = PacketAssembler(assembler_config)
    packets = []
    for start in range(0, samples.size, 65536):
        packets += offline.feed(samples[start : start + 65536], start)
    offline_pred = offline_labels(bundle, packets)  # the same engine and fusion stage
    tolerance = default_tolerance_samples(assembler_config)
    pre = assembler_config.pre_trigger_samples
    offline_pairs = match_intervals(
        [(p.start_sample + pre, p.end_sample) for p in packets], truth, tolerance
    )

    # the daemon, fed by a PUB socket (XPUB: it tells us when the daemon has subscribed)
    context = zmq.Context()
    feeder = context.socket(zmq.XPUB)
    port = feeder.bind_to_random_port("tcp://127.0.0.1")
    config = DaemonConfig.from_dict(
        {
            "source": {"type": "zmq", "address": f"tcp://127.0.0.1:{port}", "pass_tags": True},
            "bundle": str(bundle),
            "engine": {"type": "onnxruntime", "threads": 1},
            "publisher": {"bind": "tcp://127.0.0.1:*"},
            "metrics": {"enabled": False},
            "power": {"type": "none"},
            "batcher": {"max_batch": 16, "max_queue_delay_ms": 1.0, "queue_size": 4096},
        },
        "",
    )
    daemon = Daemon(config)
    daemon.start()
    try:
        assert daemon.publisher is not None
        with Subscriber(daemon.publisher.endpoint) as sub:
            sub.wait_connected()
            assert feeder.poll(10_000), "the daemon's zmq source did not subscribe"
            assert feeder.recv()[:1] == b"\x01"
            feed_realtime(feeder, samples, rec.sample_rate_hz)
            # every sample fed to the assembler, wherever it runs (the ingest process reports
            # it after sending what they made)
            wait_until(
                lambda: daemon.samples_fed >= samples.size, 120,
                f"the assembler got {samples.size} samples",
            )  # fmt: skip
            totals = daemon.stop()
            received = sub.collect(count=totals.classified, idle_timeout_s=60)
            extra = sub.recv(0.2)
    finally:
        daemon.stop()
        feeder.close(linger=0)
        context.term()

    # counts add up, and the daemon saw exactly what the offline assembler saw
    assert totals.detected == totals.accounted
    assert totals.detected == len(packets)
    payloads = [m.payload for m in received]
    assert len(payloads) == totals.classified
    assert extra is None, extra.payload  # and no more
    daemon_pred = [{t: p["labels"][t]["index"] for t in p["labels"]} for p in payloads]
    daemon_pairs = match_intervals(
        [(p["sample_start"] + pre, p["sample_end"]) for p in payloads], truth, tolerance
    )
    classified = {t for _, t in daemon_pairs}
    detected = {t for _, t in offline_pairs}
    assert classified <= detected
    missed = len(truth) - len(detected)
    dropped = len(detected - classified)
    assert len(truth) == len(classified) + dropped + missed
    assert dropped <= sum(totals.dropped.values()) + totals.failed
    assert missed < 0.1 * len(truth)

    # the same engine on the same packets: per-task accuracy within 2 points
    offline_acc = accuracy(offline_pairs, offline_pred, rec)
    daemon_acc = accuracy(daemon_pairs, daemon_pred, rec)
    print(f"annotated {len(truth)}, classified {len(classified)}, dropped {dropped}, missed "
          f"{missed}; accuracy daemon {daemon_acc}, offline {offline_acc}")  # fmt: skip
    for task in TASKS:
        assert abs(daemon_acc[task.name] - offline_acc[task.name]) <= 0.02, (
            task.name, daemon_acc, offline_acc,
        )  # fmt: skip
    # latency is measured from the arrival of each packet's last sample
    latencies = [p["latency_ms"] for p in payloads]
    assert min(latencies) >= 0

"""Fault injection against the running daemon on real ZeroMQ sockets (issue 14).

Each test feeds a real `Daemon` (ZeroMQ SUB source, assembler, batcher, publisher) through an
XPUB socket on 127.0.0.1, reads what it publishes on a SUB socket, and checks that hostile input
never stops detection unseen: detection recovers within 50 ms of valid traffic after the poison,
every loss is counted under its own reason, and the accounting identity holds at rest. The
engine is a stub that answers uniform probabilities (the model is not under test), so each test
takes a few seconds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest
import zmq
from conftest import UniformEngine

from edge_daemon.config import DaemonConfig
from edge_daemon.pipeline import Daemon
from edge_daemon.sources.base import NullEvents
from edge_daemon.sources.synthetic import SyntheticSource, SyntheticSourceConfig

pytestmark = pytest.mark.timeout(120)
RATE = 20e6
MS_50 = int(0.05 * RATE)  # 50 ms of samples


_TRAFFIC: dict[tuple[float, int], list[np.ndarray]] = {}


def traffic(seconds: float, seed: int) -> list[np.ndarray]:
    """Synthetic 802.11 channel (noise + packets), complex64 chunks, cached per test session."""
    key = (seconds, seed)
    if key not in _TRAFFIC:
        config = SyntheticSourceConfig(pace="fast", duration_s=seconds, traffic_scale=3.0,
                                       seed=seed)  # fmt: skip
        source = SyntheticSource(config, NullEvents())
        source.open()
        chunks = []
        while not source.finished:
            chunk = source.read(0.1)
            if chunk is not None:
                chunks.append(np.ascontiguousarray(chunk.samples, np.complex64))
        source.close()
        _TRAFFIC[key] = chunks
    return _TRAFFIC[key]


@dataclass
class Feed:
    """The daemon, the XPUB socket feeding it, and what it published (sample_start of each)."""

    daemon: Daemon
    feeder: zmq.Socket
    results: zmq.Socket
    sent_messages: int = 0
    sent_samples: int = 0  # the source's sample index of the next message's first sample
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def send(self, payload: bytes | list[bytes], samples: int) -> None:
        if isinstance(payload, list):
            self.feeder.send_multipart(payload)
        else:
            self.feeder.send(payload)
        self.sent_messages += 1
        self.sent_samples += samples

    def send_oversized(self, limit: int) -> None:
        """A message over max_message_bytes: libzmq (ZMQ_MAXMSGSIZE) refuses it before it is
        buffered and closes the connection; wait until the daemon has subscribed again."""
        self.feeder.send(b"\x00" * (limit + 8))
        while True:
            assert self.feeder.poll(10_000), "the daemon did not subscribe again"
            if self.feeder.recv()[:1] == b"\x01":
                break
        time.sleep(0.05)

    def send_iq(self, chunks: list[np.ndarray]) -> tuple[int, int]:
        """Send chunks; return the sample range [first, end) they occupy in the stream."""
        first = self.sent_samples
        for chunk in chunks:
            self.send(chunk.tobytes(), chunk.size)
        return first, self.sent_samples

    def settle(self, timeout_s: float = 30.0) -> None:
        """Wait until the daemon has read every message and published what it detected."""
        d = self.daemon
        if d.ingest_mode == "process":  # the child reports what its assembler was fed (every
            # test in that mode sends only messages that carry samples)
            wait_until(lambda: d.samples_fed >= self.sent_samples, timeout_s)
        else:  # handled whole: fed, emitted and counted by the detector's metrics (the source
            # reads a message, and may join the next ones into its chunk, before that)
            wait_until(lambda: (d.messages_handled or 0) >= self.sent_messages, timeout_s)
        wait_until(lambda: d.totals.detected == d.totals.accounted, timeout_s)
        # every published message, not what came within a fixed 0.3 s (a busy machine delays
        # them, issue 17); 10 s without one ends it (one the SUB missed would never come)
        published = value(d, "edgetc_messages_published_total")
        quiet_since = time.monotonic()
        while len(self.starts) < published and time.monotonic() - quiet_since < 10.0:
            if self.results.poll(50):
                message = json.loads(self.results.recv_multipart()[1])
                self.starts.append(message["sample_start"])
                self.ends.append(message["sample_end"])
                quiet_since = time.monotonic()

    def published_in(self, lo: int, hi: int) -> int:
        return sum(1 for s in self.starts if lo <= s < hi)


def value(daemon: Daemon, name: str, **labels: str) -> float:
    got = daemon.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def wait_until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@contextmanager
def running(source: dict | None = None, ingest: str = "thread", **sections) -> Iterator[Feed]:
    """The daemon on a ZeroMQ source fed by this test; `ingest`: where its source side runs
    (the tests that look inside it, at the source object or the rate check, use the thread)."""
    context = zmq.Context()
    feeder = context.socket(zmq.XPUB)
    feeder.setsockopt(zmq.SNDHWM, 0)
    port = feeder.bind_to_random_port("tcp://127.0.0.1")
    config = DaemonConfig.from_dict(
        {
            "source": {"type": "zmq", "address": f"tcp://127.0.0.1:{port}", "rcvhwm": 0,
                       **(source or {})},
            "packet_gain": "unit_rms",
            "ingest": ingest,
            "publisher": {"bind": "tcp://127.0.0.1:*", "sndhwm": 100_000},
            "metrics": {"enabled": False},
            "power": {"type": "none"},
            **sections,
        },
        "",
    )  # fmt: skip
    daemon = Daemon(config, engine_factory=UniformEngine)
    daemon.start()
    assert daemon.publisher is not None
    results = context.socket(zmq.SUB)
    results.setsockopt(zmq.SUBSCRIBE, b"tc.all")
    results.setsockopt(zmq.RCVHWM, 0)
    results.connect(daemon.publisher.endpoint)
    feed = Feed(daemon, feeder, results)
    try:
        assert feeder.poll(10_000), "the daemon did not subscribe"
        assert feeder.recv()[:1] == b"\x01"
        time.sleep(0.2)  # the results SUB socket subscribes too
        yield feed
    finally:
        feed.totals = daemon.stop()  # type: ignore[attr-defined]
        feeder.close(linger=0)
        results.close(linger=0)
        context.term()
    t = daemon.totals
    assert t.detected == t.accounted, "accounting identity at rest"


def assert_recovers(feed: Feed, clean: tuple[int, int], after: tuple[int, int]) -> None:
    """After the poison, the same traffic as `clean` is detected as well as before, from 50 ms
    on, and the first packet after the poison starts within 50 ms of valid traffic."""
    reference = feed.published_in(clean[0] + MS_50, clean[1])
    got = feed.published_in(after[0] + MS_50, after[1])
    assert reference > 20, f"too little reference traffic ({reference} packets)"
    assert got >= 0.9 * reference, f"{got} packets detected after the poison, {reference} before"
    first = min((s for s in feed.starts if s >= after[0]), default=None)
    assert first is not None and first - after[0] < MS_50, (first, after)


@pytest.mark.parametrize("ingest", ["thread", "process"])
def test_a_burst_of_random_bytes_does_not_blind_the_detector(caplog, ingest):
    caplog.set_level(logging.INFO)
    good = traffic(0.12, seed=3)
    rng = np.random.default_rng(0)
    with running(ingest=ingest) as feed:
        clean = feed.send_iq(good)
        for _ in range(64):  # 64 messages of 128 KiB of random bytes
            feed.send(rng.bytes(128 * 1024), 128 * 1024 // 8)
        poisoned = time.monotonic()
        after = feed.send_iq(good)
        feed.send_iq(good[:2])  # the lookahead's worth more, so the last packets come out
        feed.settle()
        assert_recovers(feed, clean, after)
        d = feed.daemon
        skipped = value(d, "edgetc_detector_skipped_samples_total", reason="out_of_range")
        assert skipped > 0.4 * 64 * 16384  # about half of random float32 are beyond 1e12
        assert value(d, "edgetc_detector_blind") == 0
        assert -60 < value(d, "edgetc_detector_noise_floor_dbfs") < -20
        # the last packet was cut after the poison (not a wall-clock bound, issue 17)
        since_packet = value(d, "edgetc_detector_seconds_since_packet")
        assert since_packet < time.monotonic() - poisoned
    text = caplog.text
    assert "detector: corrupt input" in text and "valid input again" in text


def test_signal_without_packets_is_reported_blind_and_recovered(caplog):
    """DetectorHealth on a real assembler whose floor is pinned 40 dB low by a stuck config
    value: loud input, no packets -> blind (gauge + log), then packets -> recovered."""
    from prometheus_client import CollectorRegistry

    from edge_core.assembler import AssemblerConfig, PacketAssembler
    from edge_daemon.metrics import DaemonMetrics, DetectorHealth

    caplog.set_level(logging.INFO)
    metrics = DaemonMetrics(CollectorRegistry())
    health = DetectorHealth(metrics, logging.getLogger("detector"), RATE, 5.0, blind_after_s=0.01)
    assembler = PacketAssembler(AssemblerConfig(noise_floor_power=1e-6))
    rng = np.random.default_rng(1)
    noise = 0.01 * (rng.standard_normal(50_000) + 1j * rng.standard_normal(50_000))
    noise = noise.astype(np.complex64)  # -37 dBFS, 23 dB above the floor: "signal"
    for i in range(6):  # a quiet channel never comes: the state machine waits, nothing is cut
        health.update(assembler, noise, len(assembler.feed(noise, i * noise.size)))
    assert metrics.detector_blind._value.get() == 1
    assert "detector blind" in caplog.text
    health.update(assembler, noise[:100], 1)  # a packet
    assert metrics.detector_blind._value.get() == 0
    assert "detector recovered" in caplog.text


@pytest.mark.parametrize("ingest", ["thread", "process"])
def test_no_published_packet_spans_nonfinite_samples(ingest):
    good = traffic(0.12, seed=3)
    with running(ingest=ingest) as feed:
        first = feed.sent_samples
        poisoned, bad_at = [], []
        for chunk in good:
            chunk = chunk.copy()
            for j in range(0, chunk.size - 1000, 4000):  # a NaN or Inf every 200 us
                chunk[j + 1000] = np.nan if (j // 4000) % 2 else np.inf
                bad_at.append(first + j + 1000)
            first += chunk.size
            poisoned.append(chunk)
        feed.send_iq(poisoned)
        feed.send_iq(good[:2])
        feed.settle()
        assert feed.starts
        d = feed.daemon
        assert value(d, "edgetc_detector_skipped_samples_total", reason="nonfinite") == len(bad_at)
        assert value(d, "edgetc_source_dropped_samples_total", reason="nonfinite") == len(bad_at)
        assert value(d, "edgetc_detector_lost_bursts_total", reason="break") > 0
        ends = feed.ends
        bad = np.array(bad_at)
        for start, end in zip(feed.starts, ends, strict=True):
            inside = bad[(bad >= start) & (bad < end)]
            assert inside.size == 0, f"packet [{start}, {end}) spans non-finite samples {inside}"


@pytest.mark.parametrize("ingest", ["thread", "process"])
@pytest.mark.parametrize("fill", ["zeros", "nan"])
def test_a_long_run_of_zeros_or_nan_does_not_poison_the_noise_floor(fill, ingest):
    good = traffic(0.12, seed=3)
    run = np.zeros(16384, np.complex64) if fill == "zeros" else np.full(16384, np.nan, np.complex64)
    with running(ingest=ingest) as feed:
        clean = feed.send_iq(good)
        for _ in range(4):
            feed.send(run.tobytes(), run.size)
        after = feed.send_iq(good)
        feed.send_iq(good[:2])
        feed.settle()
        assert_recovers(feed, clean, after)
        # not even the first 50 ms are lost: the floor did not move
        reference, got = feed.published_in(*clean), feed.published_in(*after)
        assert got >= 0.97 * reference, f"{got} packets after the {fill}, {reference} before"
        floor = value(feed.daemon, "edgetc_detector_noise_floor_dbfs")
        assert -60 < floor < -20, floor


def test_every_malformed_message_is_counted_under_its_own_reason(caplog):
    """A 5-byte message, [payload, key], [key, payload, 8 bytes], an oversized one: each is
    one dropped message under its reason (samples alone would count some as 0), logged with
    its size, and detection goes on."""
    caplog.set_level(logging.INFO)
    good = traffic(0.12, seed=3)
    payload = good[0].tobytes()
    with running({"max_message_bytes": 1 << 20}) as feed:
        clean = feed.send_iq(good)
        feed.send(b"\x01\x02\x03\x04\x05", 0)  # odd_bytes, less than one sample
        feed.send([payload, b"iq"], good[0].size)  # frames swapped: the payload is not last
        feed.send([b"iq", payload, b"\x00" * 8], good[0].size + 1)  # a third frame
        feed.send_oversized(1 << 20)
        after = feed.send_iq(good)
        feed.send_iq(good[:2])
        feed.settle()
        assert_recovers(feed, clean, after)
        d = feed.daemon
        for reason in ("odd_bytes", "bad_frames", "oversized"):
            want = 2 if reason == "bad_frames" else 1
            got = value(d, "edgetc_source_dropped_messages_total", reason=reason)
            assert got == want, (reason, got)
        assert value(d, "edgetc_source_dropped_samples_total", reason="bad_frames") == (
            2 * good[0].size + 1
        )
    assert "dropped 0 samples" not in caplog.text
    assert "dropped a 5-byte message, 0 samples' worth, (odd_bytes)" in caplog.text


def test_max_message_bytes_bounds_what_libzmq_buffers():
    """ZMQ_MAXMSGSIZE is max_message_bytes: a 64 MiB message never reaches the daemon's memory;
    the connection libzmq closes for it is re-opened, the message counted, detection goes on."""
    good = traffic(0.12, seed=3)
    with running({"max_message_bytes": 1 << 20}) as feed:
        d = feed.daemon
        clean = feed.send_iq(good)
        wait_until(lambda: d.source.messages >= feed.sent_messages)
        sock = d.source._socket  # type: ignore[attr-defined]
        assert sock.getsockopt(zmq.MAXMSGSIZE) == 1 << 20
        feed.send_oversized(64 << 20)
        after = feed.send_iq(good)
        feed.send_iq(good[:2])
        feed.settle()
        assert_recovers(feed, clean, after)
        assert value(d, "edgetc_source_dropped_messages_total", reason="oversized") == 1
        assert value(d, "edgetc_source_reconnects_total") >= 1


@pytest.mark.parametrize(("configured", "sent"), [("cf32_le", "ci16_le"), ("ci16_le", "cf32_le")])
def test_a_sample_format_mismatch_is_reported_once(caplog, configured, sent):
    from edge_core.iq import formats

    caplog.set_level(logging.INFO)
    good = traffic(0.12, seed=3)
    with running({"sample_format": configured}) as feed:
        per_sample = formats.bytes_per_sample(configured)
        for chunk in good:
            raw = formats.encode(chunk, sent)
            feed.send(raw, len(raw) // per_sample)
        feed.settle()
        assert value(feed.daemon, "edgetc_source_format_suspect") == 1
    lines = [r for r in caplog.records if "configured [source] sample_format" in r.getMessage()]
    assert len(lines) == 1, caplog.text


def test_the_right_sample_format_is_not_suspect():
    good = traffic(0.12, seed=3)
    with running() as feed:
        feed.send_iq(good)
        feed.settle()
        assert value(feed.daemon, "edgetc_source_format_suspect") == 0


def resampled(chunks: list[np.ndarray], up: int, down: int) -> list[np.ndarray]:
    """The same channel at `up/down` times the rate (scipy's polyphase resampler), in chunks."""
    from scipy.signal import resample_poly

    x = resample_poly(np.concatenate(chunks), up, down).astype(np.complex64)
    return [x[i : i + 16384] for i in range(0, x.size, 16384)]


def rate_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if "configured [source] sample_rate_hz" in r.getMessage()]  # fmt: skip


@pytest.mark.parametrize(
    ("configured", "up", "down", "estimate", "ingest"),
    [(40e6, 1, 1, "20.0", "thread"), (20e6, 1, 2, "10.0", "thread"),
     (20e6, 2, 1, "40.0", "thread"), (40e6, 1, 1, "20.0", "process")],
    ids=["20-Msps-stream-declared-40", "10-Msps-stream-declared-20", "40-Msps-stream-declared-20",
         "20-Msps-stream-declared-40-in-the-ingest-process"],
)  # fmt: skip
def test_a_sample_rate_mismatch_is_reported_once(caplog, configured, up, down, estimate, ingest):
    """802.11 OFDM symbols are 3.2 us plus a cyclic prefix: the lag at which each sampled
    packet repeats itself gives the stream's real rate."""
    caplog.set_level(logging.INFO)
    stream = resampled(traffic(0.24, seed=3), up, down)
    with running({"sample_rate_hz": configured}, ingest=ingest) as feed:
        feed.send_iq(stream)
        feed.settle()
        assert feed.daemon.totals.detected > 100
        assert value(feed.daemon, "edgetc_source_rate_suspect") == 1
    lines = rate_lines(caplog)
    assert len(lines) == 1, caplog.text
    assert f"sample_rate_hz = {configured:.0f}" in lines[0], lines
    assert f"probably about {estimate} Msps" in lines[0], lines


def test_the_right_sample_rate_is_not_suspect(caplog):
    caplog.set_level(logging.INFO)
    with running() as feed:
        feed.send_iq(traffic(0.24, seed=3))
        feed.settle()
        assert value(feed.daemon, "edgetc_source_rate_suspect") == 0
        assert feed.daemon.rate_check is not None
        assert feed.daemon.rate_check.votes >= 16  # it did look, and found 20 Msps
    assert not rate_lines(caplog), caplog.text


@pytest.mark.parametrize("configured", [20e6, 40e6])
def test_802_11b_alone_never_makes_the_rate_suspect(configured):
    """DSSS has no cyclic prefix: a stream of 802.11b PPDUs at every rate and preamble, checked
    at the right rate and at a wrong one, gives no verdict (it cannot tell, and says nothing)."""
    from prometheus_client import CollectorRegistry

    from edge_core.assembler import Packet
    from edge_core.synth.dsss import dsss_ppdu
    from edge_daemon.metrics import DaemonMetrics
    from edge_daemon.rate_check import SampleRateCheck

    metrics = DaemonMetrics(CollectorRegistry())
    check = SampleRateCheck(metrics.source_rate_suspect, logging.getLogger("t"), configured, 3000)
    rng = np.random.default_rng(2)
    start, votes = 0, 0
    kinds: list[tuple[float, Literal["long", "short"]]] = [
        (1, "long"), (2, "long"), (2, "short"), (5.5, "short"), (11, "long"), (11, "short"),
    ]  # fmt: skip
    for i in range(240):
        rate, preamble = kinds[i % len(kinds)]
        psdu = rng.integers(0, 256, int(rng.integers(100, 1500)), dtype=np.uint8)
        iq = dsss_ppdu(psdu, rate, preamble, rng)[:3000]
        iq = iq + 0.05 * (rng.standard_normal(iq.size) + 1j * rng.standard_normal(iq.size))
        padded = np.zeros(3000, np.complex64)
        padded[: iq.size] = iq
        check.check([Packet(start, start + iq.size, padded, False, 20.0, None)])
        start += iq.size + 2000
        votes = check.votes
    assert check.suspect is None and value_of(metrics.source_rate_suspect) == 0
    assert votes < 12  # a few stray lags, never a consensus (MIN_VOTES is 16)


def value_of(gauge) -> float:
    return gauge._value.get()

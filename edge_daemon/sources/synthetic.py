"""The traffic generator as a live source (config `type = "synthetic"`): the `--demo` default.

The channel is `edge_core.synth.stream.ChannelSimulator` (802.11 DCF timing, beacons, probes,
application sessions, background stations), rendered block by block as it is read; nothing is
written to disk. `traffic_scale` multiplies every traffic source's packet rate (at 1.0 the
channel carries about 250-550 packets per second, depending on the application in session),
`snr_db` is the range station SNRs are drawn from. `pace = "realtime"` hands out blocks at
20 Msps of wall time; `"fast"` as fast as they are made. `duration_s` ends the stream (unset:
forever). The same seed gives the same samples.

`loop_s > 0` generates that many seconds once, at open (cut at a quiet point after a packet's
end), and replays them in a loop with the sample index running on: the demo then measures the
daemon, not the generator, which here costs about 1-1.5 CPU-seconds per second of channel
under load and competed with the daemon for the GIL and the cores (issue 13). The loop holds
8 bytes per sample (160 MB per second of 20 Msps). The packets' truth follows every pass.

Two differences from `edge-tc synth stream`, both for speed: the background noise comes from a
pool drawn once at open (seeded, `NOISE_POOL_SAMPLES` long), each block taking a random slice
of it with a random phase, instead of drawing 40 M Gaussians per second (40 % of the time); and
packets are rendered in complex64 with a CFO phasor table per station instead of a complex128
exp per packet (a third of what was left). The packets are the recording's to float precision.
Default traffic generates about 2.7-3x faster than real time on one core (docs/sources.md).
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edge_core.errors import SourceError
from edge_core.schema import APP, SAMPLE_RATE_HZ
from edge_core.synth.generator import synthesize
from edge_core.synth.impairments import complex_noise, multipath_taps
from edge_core.synth.stream import NOISE_POWER, ChannelSimulator, StreamConfig, StreamPacket
from edge_daemon.sources.base import (
    Chunk,
    PacedChunks,
    Source,
    SourceBackend,
    SourceConfig,
    SourceEvents,
)

KEY = "synthetic"
NOISE_POOL_SAMPLES = 1 << 20  # 52 ms of 20 Msps noise, drawn once
MAX_CHUNK_SAMPLES = NOISE_POOL_SAMPLES // 4
TRUTH_KEPT = 10_000  # annotations of the latest packets, for demos and tests
MAX_LOOP_S = 10.0  # 1.6 GB of complex64
LOOP_CUT_AFTER_END = 160  # samples (8 us) after a packet's end: quiet, shorter than a SIFS


@dataclass(frozen=True)
class SyntheticSourceConfig(SourceConfig):
    """`[source]` table for the live generator.

    seed: the channel's seed. traffic_scale: multiplies every packet rate (1.0: ~250-550
    packets/s). snr_db: [low, high] range of station SNRs. apps: the applications whose
    sessions cycle. pace: "realtime" or "fast". duration_s: stop after this much signal (unset:
    never). chunk_samples: samples per block. loop_s: generate this many seconds once at open
    and replay them in a loop (0: generate as read).
    """

    type: Literal["synthetic"] = "synthetic"
    seed: int = 0
    traffic_scale: float = 1.0
    snr_db: tuple[float, ...] = StreamConfig.snr_db
    apps: tuple[str, ...] = StreamConfig.apps
    pace: Literal["realtime", "fast"] = "realtime"
    duration_s: float | None = None
    chunk_samples: int = 16384
    loop_s: float = 0.0

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not self.traffic_scale > 0:
            out.append(("traffic_scale", f"want > 0, got {self.traffic_scale}"))
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            out.append(("snr_db", f"want [low, high] with low <= high, got {list(self.snr_db)}"))
        unknown = [a for a in self.apps if a not in APP.classes or a == "none"]
        if unknown or not self.apps:
            choices = [a for a in APP.classes if a != "none"]
            out.append(("apps", f"want a non-empty list of {choices}, got {list(self.apps)}"))
        if self.duration_s is not None and not self.duration_s > 0:
            out.append(("duration_s", f"want > 0 (or leave unset: forever), got {self.duration_s}"))
        if not 1 <= self.chunk_samples <= MAX_CHUNK_SAMPLES:
            out.append(("chunk_samples", f"want 1..{MAX_CHUNK_SAMPLES}, got {self.chunk_samples}"))
        if not 0 <= self.loop_s <= MAX_LOOP_S:
            out.append(
                ("loop_s", f"want 0..{MAX_LOOP_S:g} s (0: generate as read), got {self.loop_s}")
            )
        return out

    def stream_config(self) -> StreamConfig:
        """The generator's own config for these settings."""
        low, high = self.snr_db
        return StreamConfig(
            snr_db=(float(low), float(high)),
            apps=self.apps,
            traffic_scale=float(self.traffic_scale),
        )


class LiveChannel(ChannelSimulator):
    """ChannelSimulator whose background noise is sliced from a pool (see the module doc)."""

    def __init__(self, config: StreamConfig, seed: int) -> None:
        super().__init__(config, seed)
        self._noise_pool = complex_noise(NOISE_POOL_SAMPLES, NOISE_POWER, self.rng)
        self._phasors: dict[float, np.ndarray] = {}  # CFO (Hz) -> exp(j 2 pi cfo n / fs)

    def _cfo_phasor(self, cfo_hz: float, n: int) -> np.ndarray:
        """exp(j 2 pi cfo_hz k / fs) for k < n, complex64, from a table per station CFO."""
        table = self._phasors.get(cfo_hz)
        if table is None or table.size < n:
            size = max(n, 2 * (0 if table is None else table.size), 1 << 16)
            k = np.arange(size)
            table = np.exp(2j * np.pi * cfo_hz / SAMPLE_RATE_HZ * k).astype(np.complex64)
            self._phasors[cfo_hz] = table
        return table[:n]

    def _render(self, pkt: StreamPacket) -> np.ndarray:
        """As ChannelSimulator._render (`apply_channel`'s multipath and CFO, drawn from the
        same random numbers, then the SNR gain) in complex64: the CFO rotation comes from a
        per-station table instead of a complex128 exp per packet (a third of the time)."""
        st = pkt.station
        x = synthesize(pkt.spec, self.rng, bss=self.bss_of(st))
        taps = multipath_taps(st.rms_delay_spread_ns, self.rng)
        y = np.convolve(x, taps)[: x.size] if taps.size > 1 else x.astype(np.complex64)
        if st.cfo_hz:
            phase0 = np.complex64(np.exp(1j * self.rng.uniform(0, 2 * np.pi)))
            y = y * self._cfo_phasor(st.cfo_hz, y.size) * phase0
        gain = np.float32(np.sqrt(NOISE_POWER * 10 ** (pkt.snr_db / 10)))
        return (y * gain).astype(np.complex64, copy=False)  # (n,)

    def _noise(self, n: int) -> np.ndarray:
        """`n` samples of noise: a random slice of the pool with a random phase (a copy)."""
        offset = int(self.rng.integers(0, self._noise_pool.size - n + 1))
        phase = np.complex64(np.exp(2j * np.pi * self.rng.random()))
        return self._noise_pool[offset : offset + n] * phase  # (n,) complex64


@dataclass
class GeneratedPacket:
    """A packet the generator put on the channel: where, and its labels (SigMF annotation)."""

    start: int
    count: int
    annotation: dict[str, Any] = field(repr=False)


class SyntheticSource(Source):
    """Blocks of a live simulated channel at 20 Msps."""

    config: SyntheticSourceConfig

    def __init__(self, config: SyntheticSourceConfig, events: SourceEvents) -> None:
        super().__init__(config, events)
        self._channel: Iterator[tuple[int, np.ndarray, list[StreamPacket]]] | None = None
        self._paced = PacedChunks(SAMPLE_RATE_HZ, config.pace == "realtime")
        self._total = (
            None if config.duration_s is None else round(config.duration_s * SAMPLE_RATE_HZ)
        )
        self.packets: deque[GeneratedPacket] = deque(maxlen=TRUTH_KEPT)
        """The latest packets that ended in a handed-out block (ground truth for demos)."""
        self.packets_generated = 0
        self._loop: Replay | None = None

    @property
    def sample_rate_hz(self) -> float:
        return float(SAMPLE_RATE_HZ)

    @property
    def finished(self) -> bool:
        return self._paced.finished

    def open(self) -> None:
        channel = LiveChannel(self.config.stream_config(), self.config.seed)
        self._channel = channel.chunks(self.config.chunk_samples)
        if self.config.loop_s > 0 and self._loop is None:  # made once: a re-open replays it
            self._loop = Replay.record(channel, self.config.loop_s)
        if self._loop is not None:
            self._channel = self._loop.chunks(self.config.chunk_samples)
        self._paced.reset()
        self.packets.clear()
        self.packets_generated = 0

    def _generate(self) -> tuple[int, np.ndarray] | None:
        assert self._channel is not None
        start, samples, done = next(self._channel)
        if self._total is not None:
            if start >= self._total:
                return None
            samples = samples[: self._total - start]
        done = [p for p in done if self._total is None or p.end <= self._total]
        for pkt in done:
            self.packets.append(GeneratedPacket(pkt.start, pkt.n_samples, pkt.annotation()))
        self.packets_generated += len(done)
        return start, samples

    def read(self, timeout_s: float) -> Chunk | None:
        if self._channel is None:
            raise SourceError("synthetic source: read() before open()")
        item = self._paced.next(self._generate, timeout_s)
        return None if item is None else Chunk(item[1], item[0], item[2])

    def close(self) -> None:
        self._channel = None
        self._paced.drop()


class Replay:
    """A stretch of generated channel (`samples`, the packets in it) replayed in a loop."""

    def __init__(self, samples: np.ndarray, packets: list[StreamPacket]) -> None:
        self.samples = samples  # (n,) complex64
        self.packets = sorted(packets, key=lambda p: p.end)
        self._ends = [p.end for p in self.packets]

    @classmethod
    def record(cls, channel: ChannelSimulator, seconds: float) -> Replay:
        """`seconds` of `channel`, cut `LOOP_CUT_AFTER_END` samples after the last packet that
        ended in it (so the loop's seam falls in a quiet gap)."""
        want = max(1, round(seconds * SAMPLE_RATE_HZ))
        parts, done = [], []
        for start, samples, finished in channel.chunks(min(want, 1 << 16)):
            parts.append(samples)
            done += finished
            if start + samples.size >= want:
                break
        samples = np.concatenate(parts)[:want]
        ended = [p for p in done if p.end <= want - LOOP_CUT_AFTER_END]
        if ended:
            samples = samples[: max(p.end for p in ended) + LOOP_CUT_AFTER_END]
        return cls(np.ascontiguousarray(samples, np.complex64), ended)

    def chunks(self, chunk_samples: int) -> Iterator[tuple[int, np.ndarray, list[StreamPacket]]]:
        """As `ChannelSimulator.chunks`, forever: (first index, samples, packets ending in it);
        the index runs on across passes and each pass's packets are shifted to it."""
        n = self.samples.size
        index = 0
        while True:
            lo = index % n
            take = min(chunk_samples, n - lo)  # a chunk never spans the seam
            samples = self.samples[lo : lo + take]
            offset = index - lo
            first, last = bisect_right(self._ends, lo), bisect_right(self._ends, lo + take)
            ended = [_shifted(p, offset) for p in self.packets[first:last]]
            yield index, samples, ended
            index += take


def _shifted(packet: StreamPacket, offset: int) -> StreamPacket:
    return packet if offset == 0 else dataclasses.replace(packet, start=packet.start + offset)


def _create(config: SourceConfig, events: SourceEvents) -> Source:
    assert isinstance(config, SyntheticSourceConfig)
    return SyntheticSource(config, events)


SOURCE = SourceBackend(KEY, SyntheticSourceConfig, _create, "nothing (part of edge-tc)")

"""A continuous 20 Msps channel: 802.11 exchanges separated by realistic idle gaps in noise.

The medium is simulated the way 802.11 DCF uses it, so the gaps a packet detector sees are the
real ones: SIFS (16 us) between a frame and its response (ACK, BlockAck, CTS), DIFS (34 us) plus
a random backoff of 0..15 slots of 9 us before a new exchange, and idle time between traffic
bursts. Traffic sources:

* beacons of our AP and of neighbouring APs (802.11b, 1 Mbps, every 102.4 ms);
* probe requests of the client, answered by probe responses, each ACKed;
* the client's application sessions, one application at a time, cycling in a seeded order,
  each `session_seconds` long and started with the app: the capture-session model of
  `edge_core.synth.sessions` (the app's cited fetch pattern, TCP/QUIC, the AP's queue and
  A-MPDU aggregation, Minstrel-HT-like rate control, BlockAcks/ACKs, RTS/CTS on a
  `rts_cts_share` of sessions), its data and control exchanges placed on this channel's medium;
* background data of other stations (annotated app `none`: data frames of unknown origin, which
  the labelled dataset leaves out; mostly 802.11n, some 802.11b/g), ACKed.

`ChannelSimulator` renders the stream chunk by chunk, forever; `write_stream` writes a SigMF
recording with one annotation per packet (start, count, the four labels, and what was drawn).
"""

from __future__ import annotations

import collections
import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge_core.schema import APP, SAMPLE_RATE_HZ
from edge_core.synth.generator import duration_samples, synthesize
from edge_core.synth.impairments import Draw, apply_channel, complex_noise
from edge_core.synth.mac import Bss
from edge_core.synth.sessions import AP as SESSION_AP
from edge_core.synth.sessions import PHONE as SESSION_PHONE
from edge_core.synth.sessions import SIFS_US, Frame, draw_session, simulate_session
from edge_core.synth.traffic import (
    PacketSpec,
    control_spec,
    data_spec,
    mgmt_spec,
)

US = SAMPLE_RATE_HZ // 1_000_000  # samples per microsecond
SIFS = 16 * US
DIFS = 34 * US
SLOT = 9 * US
BEACON_INTERVAL = int(102.4e-3 * SAMPLE_RATE_HZ)
NOISE_POWER = 1e-4  # -40 dBFS noise floor: strong packets stay well inside full scale


@dataclass(frozen=True)
class StreamConfig:
    """What the simulated channel carries; rates are per second of signal."""

    snr_db: tuple[float, float] = (5.0, 30.0)
    cfo_hz_max: float = 50e3
    rms_delay_spread_ns: tuple[float, float] = (0.0, 50.0)
    neighbour_aps: int = 2
    probe_rate_hz: float = 2.0
    background_rate_hz: float = 40.0
    background_phy_weights: tuple[float, float, float] = (0.15, 0.05, 0.80)  # b, g, n
    apps: tuple[str, ...] = ("spotify", "tunein", "gpodcast", "youtube", "netflix", "twitch")
    session_seconds: float = 2.0
    rts_cts_share: float = 0.1
    traffic_scale: float = 1.0  # multiplies every source's packet rate (load tests)

    def __post_init__(self) -> None:
        unknown = [a for a in self.apps if a not in APP.classes or a == "none"]
        if unknown:
            raise ValueError(f"stream apps: unknown application(s) {unknown}")
        if self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"stream snr_db: low > high in {self.snr_db}")
        if self.traffic_scale <= 0 or self.session_seconds <= 0:
            raise ValueError("stream traffic_scale and session_seconds must be > 0")


@dataclass(frozen=True)
class Station:
    name: str
    snr_db: float
    cfo_hz: float
    rms_delay_spread_ns: float


@dataclass
class StreamPacket:
    start: int  # absolute sample index of the first sample
    spec: PacketSpec
    station: Station
    snr_db: float
    n_samples: int = 0
    waveform: np.ndarray | None = field(default=None, repr=False)

    @property
    def end(self) -> int:
        return self.start + self.n_samples

    def annotation(self) -> dict[str, Any]:
        s = self.spec
        return {
            "core:label": f"{s.phy}/{s.frame}/{s.app}",
            "edge_tc:phy": s.phy,
            "edge_tc:frame": s.frame,
            "edge_tc:app_type": s.app_type,
            "edge_tc:app": s.app,
            "edge_tc:subtype": s.subtype,
            "edge_tc:length_bytes": s.length_bytes,
            "edge_tc:rate": s.rate,
            "edge_tc:snr_db": round(self.snr_db, 2),
            "edge_tc:station": self.station.name,
        }


class ChannelSimulator:
    """Renders the channel as consecutive complex64 chunks with the packets they hold."""

    def __init__(self, config: StreamConfig, seed: int) -> None:
        self.config = config
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x57AE]))
        c, r = config, self.rng

        def station(name: str) -> Station:
            return Station(
                name,
                float(r.uniform(*c.snr_db)),
                float(r.uniform(-c.cfo_hz_max, c.cfo_hz_max)),
                float(r.uniform(*c.rms_delay_spread_ns)),
            )

        self.ap = station("ap")
        self.client = station("client")
        self.neighbours = [station(f"ap{i + 1}") for i in range(c.neighbour_aps)]
        self.others = [station(f"sta{i + 1}") for i in range(4)]
        # Each AP runs its own BSS (addresses, SSID, sequence and packet numbers); the client
        # is station 0 of every one it probes. Drawn from their own seed: the traffic's random
        # numbers stay as they were.
        bss_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB55]))
        self.bss = {ap.name: Bss.random(bss_rng) for ap in [self.ap, *self.neighbours]}
        for bss in self.bss.values():
            bss.stations[0] = self.bss[self.ap.name].stations[0]
        self._medium_free = 0
        self._pending: list[StreamPacket] = []  # scheduled, not fully rendered, by start
        # (time, seq, source): sources ask for the medium at `time`.
        self._queue: list[tuple[int, int, str]] = []
        self._seq = 0
        for i in range(1 + len(self.neighbours)):
            self._push(int(r.integers(0, BEACON_INTERVAL)), f"beacon:{i}")
        self._push(self._exp(c.probe_rate_hz), "probe")
        self._push(self._exp(c.background_rate_hz), "background")
        order = list(c.apps)
        r.shuffle(order)
        self._apps = order
        # The current session's exchanges: (requested start sample, frames SIFS apart).
        self._exchanges: collections.deque[tuple[int, list[tuple[PacketSpec, Station]]]] = (
            collections.deque()
        )
        self._session_end = 0
        self._push(0, "app")
        self._cursor = 0

    # -- scheduling ---------------------------------------------------------------------------
    def _push(self, t: int, source: str) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, source))

    def _exp(self, rate_hz: float) -> int:
        rate = rate_hz * self.config.traffic_scale
        return int(self.rng.exponential(1.0 / rate) * SAMPLE_RATE_HZ) if rate > 0 else 2**62

    def current_app(self, t: int) -> str:
        session = int(t / (self.config.session_seconds * SAMPLE_RATE_HZ))
        return self._apps[session % len(self._apps)]

    def bss_of(self, st: Station) -> Bss:
        """The BSS whose frames `st` sends: its own if it is an AP, else our AP's."""
        return self.bss.get(st.name, self.bss[self.ap.name])

    def _snr(self, st: Station) -> float:
        return st.snr_db + float(self.rng.normal(0.0, 1.0))  # small per-packet fading

    def _exchange(self, t_request: int, frames: list[tuple[PacketSpec, Station]]) -> None:
        """Place frames back to back (SIFS apart) once the medium is free after DIFS + backoff."""
        backoff = int(self.rng.integers(0, 16)) * SLOT
        t = max(t_request, self._medium_free + DIFS + backoff)
        for i, (spec, st) in enumerate(frames):
            if i:
                t += SIFS
            pkt = StreamPacket(t, spec, st, self._snr(st))
            pkt.n_samples = duration_samples(spec)
            self._pending.append(pkt)
            t = pkt.end
        self._medium_free = t

    def _ack_for(self, data: PacketSpec, responder: Station, snr: float) -> PacketSpec:
        subtype = "block_ack" if data.phy == "802.11n" and data.subtype == "qos_data" else "ack"
        return control_spec(
            "802.11b" if data.phy == "802.11b" else "802.11g", subtype, snr, self.rng
        )

    def _serve(self, t: int, source: str) -> None:
        c, r = self.config, self.rng
        if source.startswith("beacon:"):
            ap = [self.ap, *self.neighbours][int(source.split(":")[1])]
            beacon = mgmt_spec("802.11b", "beacon", ap.snr_db, r, self.bss_of(ap))
            self._exchange(t, [(beacon, ap)])
            self._push(t + BEACON_INTERVAL, source)
        elif source == "probe":
            req = mgmt_spec("802.11b", "probe_req", self.client.snr_db, r, self.bss_of(self.ap))
            frames = [(req, self.client)]
            self._exchange(t, frames)
            for ap in [self.ap, *self.neighbours][: int(r.integers(1, 2 + len(self.neighbours)))]:
                resp = mgmt_spec("802.11b", "probe_resp", ap.snr_db, r, self.bss_of(ap))
                ack = control_spec("802.11b", "ack", self.client.snr_db, r)
                self._exchange(self._medium_free, [(resp, ap), (ack, self.client)])
            self._push(t + self._exp(c.probe_rate_hz), "probe")
        elif source == "background":
            st = self.others[int(r.integers(0, len(self.others)))]
            phy = ["802.11b", "802.11g", "802.11n"][int(r.choice(3, p=c.background_phy_weights))]
            data = data_spec(phy, "none", st.snr_db, r)
            self._exchange(t, [(data, st), (self._ack_for(data, self.ap, self.ap.snr_db), self.ap)])
            self._push(t + self._exp(c.background_rate_hz), "background")
        else:
            self._serve_app(t)

    def _start_session(self, t: int) -> int:
        """Simulate the app session that runs from `t` to its slot's end; returns the end."""
        c, r = self.config, self.rng
        slot = c.session_seconds * SAMPLE_RATE_HZ
        index = int(t // slot)
        end = int((index + 1) * slot)
        seconds = max(end - t, US) / SAMPLE_RATE_HZ
        params = draw_session(
            r, self._apps[index % len(self._apps)], index, snr_range_db=c.snr_db,
            cfo_hz_max=c.cfo_hz_max, rms_delay_spread_ns=c.rms_delay_spread_ns,
            duration_s=(seconds, seconds),
        )  # fmt: skip
        params = replace(
            params, start_phase=0.0, bitrate_kbps=params.bitrate_kbps * c.traffic_scale,
            path_mbps=params.path_mbps * c.traffic_scale,
            rts_protect=bool(r.random() < c.rts_cts_share),
        )  # fmt: skip
        # This channel sends its own beacons and probes: keep the session's data exchanges
        # (with their RTS/CTS, CTS-to-self and responses), in order, at their requested times.
        stations = {SESSION_AP: self.ap, SESSION_PHONE: self.client}
        prev: Frame | None = None
        keep = False
        for f in simulate_session(params, r).frames:
            gap = f.t_us - prev.t_us - prev.duration_us if prev is not None else -1.0
            prev = f
            if abs(gap - SIFS_US) >= 0.5:  # a new exchange
                keep = f.spec.frame != "mgmt" and f.tx in stations
                if keep:
                    self._exchanges.append((t + round(f.t_us * US), []))
            if keep:
                self._exchanges[-1][1].append((f.spec, stations[f.tx]))
        return end

    def _serve_app(self, t: int) -> None:
        if not self._exchanges:
            end = self._start_session(t)
            if not self._exchanges:
                self._push(end, "app")
                return
            self._session_end = end
        t_request, frames = self._exchanges.popleft()
        self._exchange(max(t, t_request), frames)
        if self._exchanges:
            self._push(max(self._exchanges[0][0], self._medium_free), "app")
        else:
            self._push(max(self._session_end, self._medium_free), "app")

    @property
    def pending(self) -> list[StreamPacket]:
        """Packets scheduled but not yet wholly rendered."""
        return list(self._pending)

    # -- rendering ----------------------------------------------------------------------------
    def _render(self, pkt: StreamPacket) -> np.ndarray:
        st = pkt.station
        d = Draw(pkt.snr_db, st.cfo_hz, st.rms_delay_spread_ns, 0, 0.0, 0.0, 0.0)
        x = apply_channel(synthesize(pkt.spec, self.rng, bss=self.bss_of(st)), d, self.rng)
        return x * np.float32(np.sqrt(NOISE_POWER * 10 ** (pkt.snr_db / 10)))

    def _noise(self, n: int) -> np.ndarray:
        """`n` samples of the channel's thermal noise, complex64 (a subclass may pool it)."""
        return complex_noise(n, NOISE_POWER, self.rng)  # (n,)

    def chunks(
        self, chunk_samples: int = 1 << 18
    ) -> Iterator[tuple[int, np.ndarray, list[StreamPacket]]]:
        """Yield (first sample index, samples, packets that end in this chunk), forever."""
        while True:
            start, stop = self._cursor, self._cursor + chunk_samples
            while self._queue and self._queue[0][0] < stop:
                t, _, source = heapq.heappop(self._queue)
                self._serve(t, source)
            buf = self._noise(chunk_samples)  # (chunk,)
            finished: list[StreamPacket] = []
            keep: list[StreamPacket] = []
            for pkt in self._pending:
                if pkt.start >= stop:
                    keep.append(pkt)
                    continue
                if pkt.waveform is None:
                    pkt.waveform = self._render(pkt)
                lo, hi = max(pkt.start, start), min(pkt.end, stop)
                buf[lo - start : hi - start] += pkt.waveform[lo - pkt.start : hi - pkt.start]
                if pkt.end <= stop:
                    pkt.waveform = None
                    finished.append(pkt)
                else:
                    keep.append(pkt)
            self._pending = keep
            self._cursor = stop
            yield start, buf, finished


def write_stream(
    out: str | Path,
    seconds: float,
    seed: int,
    config: StreamConfig | None = None,
    progress: bool = True,
) -> Path:
    """Write `seconds` of channel as a SigMF recording `out` (.sigmf-meta/.sigmf-data)."""
    from edge_core.iq.sigmf_io import SigMFWriter

    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    config = config or StreamConfig()
    base = Path(out)
    if base.suffix in (".sigmf-meta", ".sigmf-data"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    total = round(seconds * SAMPLE_RATE_HZ)
    sim = ChannelSimulator(config, seed)
    description = f"edge-tc synthetic 802.11 channel, seed {seed}, {seconds} s"
    extra = {"edge_tc:seed": seed}
    with (
        SigMFWriter(base, SAMPLE_RATE_HZ, "cf32_le", description, extra) as writer,
        tqdm(total=total, unit="S", unit_scale=True, disable=not progress, desc="stream") as bar,
    ):
        for start, samples, done in sim.chunks():
            n = min(samples.size, total - start)
            writer.write(samples[:n])
            last = start + n >= total
            # Packets cut by the end of the recording are annotated with the part it holds.
            for pkt in done + (sim.pending if last else []):
                if pkt.start < total:
                    writer.annotate(pkt.start, min(pkt.end, total) - pkt.start, pkt.annotation())
            bar.update(n)
            if last:
                break
    return base

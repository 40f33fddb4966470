"""Capture sessions: one phone, one application, one position, one rate-control history.

A session is what a monitor-mode capture of one phone using one app records: every frame on the
channel, in time order, with its transmitter. It is simulated at the MAC level (no IQ) and fast:

* the application (`traffic.APP_PROFILES`, every figure cited there) turns the player's state
  (bitrate from its ladder, buffer, segment schedule) into IP packets arriving at the AP from
  the server (TCP slow start from 10 segments, paced at the path's rate, RTT per session) and
  requests from the phone;
* the AP queues them and sends what has arrived when it wins the medium (DIFS + backoff after
  the previous exchange): an A-MPDU of up to 64 subframes, 65,535 B and 5.484 ms, so the
  aggregation depth follows the downlink rate and the queue, as on a real AP; a lone MPDU goes
  unaggregated with a normal ACK (assumption: mac80211/ath9k behaviour);
* the phone answers with transport ACKs (TCP one per two segments, QUIC per `traffic`) queued
  and sent, aggregated, when it wins the medium; every PPDU is followed SIFS later by its
  control response (BlockAck for an A-MPDU, ACK otherwise);
* rate control is per transmitter (the AP towards the phone, the phone towards the AP), a
  Minstrel-HT-like EWMA of delivery probability per rate over 100 ms intervals, picking the best
  expected throughput and sampling another rate on 10% of transmissions. Its rate set is
  mac80211 minstrel_ht's: HT MCS 0-7 (long/short GI), the legacy OFDM rates and the CCK group,
  so 802.11b/g data frames appear where the link is poor or a sample picks them, for every app
  alike;
* management and control frames (app `none`): the AP's beacons every 102.4 TU and those of
  0-3 neighbouring APs, 1 Mbps DSSS long preamble (802.11b: that is how 2.4 GHz APs with
  DSSS basic rates send them, and why Table 4's management frames are 802.11b); the phone's
  probe requests (1 Mbps DSSS, or 6 Mbps OFDM on phones that scan without CCK, drawn per phone)
  every 20-120 s (assumption), answered by DSSS probe responses that the phone ACKs at a DSSS
  rate (control responses use the eliciting frame's modulation class, 802.11-2016 10.6.6.5);
  the ADDBA request/response action frames that open the Block Ack session; responses to OFDM
  and HT frames go as non-HT OFDM at a basic rate (802.11g, as Table 4's control frames are);
  RTS/CTS before A-MPDUs on APs that protect aggregates and CTS-to-self at 11 Mbps DSSS on APs in
  ERP protection mode (802.11b stations nearby), both drawn per session.

Radio fingerprints: every transmitter (AP, neighbour APs, phone) draws its oscillator error
(ppm, the same distribution for all, within +-20 ppm: IEEE 802.11-2016 17.3.9.5 / 19.3.18.4),
TX IQ imbalance and TX power (APs 20 dBm, phones 15 dBm, +-1.5 dB: assumption from typical
datasheets) from one distribution, whatever the app. The monitor sees each transmitter at its
own mean SNR (position; its TX power shifts it) with slow fading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edge_core.synth.mac import Bss
from edge_core.synth.traffic import (
    AMPDU_MAX_BYTES,
    AMPDU_MAX_SUBFRAMES,
    APP_PROFILES,
    CONTROL_FRAME_BYTES,
    HT_MCS_RATE_MBPS,
    MAC_OVERHEAD_BYTES,
    PPDU_MAX_US,
    QUIC_ACK_IP_BYTES,
    QUIC_FULL_IP_BYTES,
    QUIC_PAYLOAD_BYTES,
    TCP_ACK_IP_BYTES,
    TCP_FULL_IP_BYTES,
    TCP_PAYLOAD_BYTES,
    PacketSpec,
    Preamble,
    ampdu_length,
    mgmt_spec,
)

MODEL_VERSION = "sessions-3"  # bump when the session model changes what it generates
CARRIER_HZ = 2.437e9  # channel 6
SIFS_US, DIFS_US, SLOT_US = 16.0, 34.0, 9.0
BEACON_INTERVAL_US = 102_400.0  # 100 TU
NOISE_FLOOR_DBM = -95.0  # monitor's noise in 20 MHz (assumption: -174 + 73 dB + 6 dB NF)
AP_QUEUE_LIMIT = 128  # packets per station queue: two full A-MPDUs (assumption; mac80211's
# fq_codel keeps a 5-20 ms standing queue, 17-67 full-size packets at 40 Mbit/s)
AP, PHONE = 0, 1  # transmitter indices; neighbour APs are 2, 3, ...

# (phy, rate or MCS, short GI, Mbit/s, SNR for 90% delivery of a 1500 B frame in AWGN). The
# SNR column is textbook receiver sensitivity shifted to SNR; the order matters more than values.
RATE_TABLE: tuple[tuple[str, float, bool, float, float], ...] = (
    ("802.11b", 1.0, False, 1.0, -2.0),
    ("802.11b", 2.0, False, 2.0, 1.0),
    ("802.11b", 5.5, False, 5.5, 5.0),
    ("802.11b", 11.0, False, 11.0, 8.0),
    *(
        ("802.11g", float(r), False, float(r), snr)
        for r, snr in (
            (6, 2.0),
            (9, 4.0),
            (12, 5.0),
            (18, 8.0),
            (24, 11.0),
            (36, 15.0),
            (48, 19.0),
            (54, 21.0),
        )
    ),
    *(
        ("802.11n", float(m), sgi, mbps * (10 / 9 if sgi else 1.0), snr + (1.0 if sgi else 0.0))
        for sgi in (False, True)
        for m, (mbps, snr) in enumerate(
            zip(
                (6.5, 13.0, 19.5, 26.0, 39.0, 52.0, 58.5, 65.0),
                (2.0, 5.0, 9.0, 11.0, 15.0, 18.0, 20.0, 25.0),
                strict=True,
            )
        )
    ),
)
_HT_NDBPS = (26, 52, 78, 104, 156, 208, 234, 260)
_LEGACY_NDBPS = {6.0: 24, 9.0: 36, 12.0: 48, 18.0: 72, 24.0: 96, 36.0: 144, 48.0: 192, 54.0: 216}
_PER_SLOPE = 1.2  # logistic delivery curve, per dB (assumption)
# A frame sent without aggregation moves less data per TXOP: the throughput estimate of
# non-HT rates is discounted (minstrel_ht does this through its average A-MPDU length).
_NON_HT_EFFICIENCY = 0.6


def airtime_us(
    phy: str, length: int, rate: float, short_gi: bool = False, short_pre: bool = False
) -> float:
    """PPDU duration from the PHY's SIG fields (802.11-2016 15.3.6, 17.4.3, 19.4.3)."""
    if phy == "802.11b":
        return (96.0 if short_pre else 192.0) + math.ceil(length * 8 / rate)
    if phy == "802.11g":
        return 20.0 + 4.0 * math.ceil((22 + 8 * length) / _LEGACY_NDBPS[rate])
    n_sym = math.ceil((22 + 8 * length) / _HT_NDBPS[int(rate)])
    return 36.0 + (3.6 if short_gi else 4.0) * n_sym


def delivery_probability(snr_db: float, rate_index: int) -> float:
    """Chance that one MPDU at rate `rate_index` gets through a link at `snr_db`."""
    center = RATE_TABLE[rate_index][4] - math.log(9.0) / _PER_SLOPE  # 90% delivered at `need`
    x = -_PER_SLOPE * (snr_db - center)
    return 0.0 if x > 700 else 1.0 / (1.0 + math.exp(x))


class MinstrelHT:
    """Per-transmitter rate control: EWMA delivery per rate, best throughput, 10% sampling."""

    def __init__(self, rng: np.random.Generator, short_gi: bool, sample_share: float = 0.1) -> None:
        self.rng = rng
        self.allowed = np.array([sgi is False or short_gi for _, _, sgi, _, _ in RATE_TABLE])
        self.mbps = np.array(
            [r[3] * (1 if r[0] == "802.11n" else _NON_HT_EFFICIENCY) for r in RATE_TABLE]
        )
        self.prob = np.where(self.allowed, 1.0, 0.0)  # optimistic start, like minstrel's
        self.attempts = np.zeros(len(RATE_TABLE))
        self.success = np.zeros(len(RATE_TABLE))
        self.next_update_us = 100_000.0
        self.sample_share = sample_share
        self.seen = np.zeros(len(RATE_TABLE), dtype=bool)
        # Rates of one PHY in the order of the SNR they need: a rate not tried yet is assumed
        # no better than a tried one that needs less SNR (minstrel_ht gets there by sampling).
        self._ladders = [
            sorted(
                (i for i, r in enumerate(RATE_TABLE) if r[0] == phy), key=lambda i: RATE_TABLE[i][4]
            )
            for phy in ("802.11b", "802.11g", "802.11n")
        ]
        self.best = self._best()

    def _best(self) -> int:
        tp = np.where(self.prob > 0.1, self.prob * self.mbps, 0.0)
        tp[~self.allowed] = -1.0
        return int(np.argmax(tp))

    def pick(self) -> int:
        if self.rng.random() < self.sample_share:
            candidates = np.flatnonzero(self.allowed)
            return int(candidates[self.rng.integers(0, candidates.size)])
        return self.best

    def report(self, t_us: float, rate_index: int, attempts: int, successes: int) -> None:
        self.attempts[rate_index] += attempts
        self.success[rate_index] += successes
        if t_us >= self.next_update_us:
            seen = self.attempts > 0
            measured = self.success[seen] / self.attempts[seen]
            # EWMA with 75% weight on the past; a rate's first measurement replaces the prior.
            first = ~self.seen[seen]
            self.prob[seen] = np.where(first, measured, 0.75 * self.prob[seen] + 0.25 * measured)
            self.seen |= seen
            for ladder in self._ladders:
                cap = 1.0
                for i in ladder:
                    self.prob[i] = min(self.prob[i], cap)
                    cap = self.prob[i] if self.seen[i] else cap
            self.attempts[:] = 0
            self.success[:] = 0
            self.best = self._best()
            self.next_update_us = t_us + 100_000.0


@dataclass(frozen=True)
class Radio:
    """A transmitter's fingerprint and where the monitor sees it."""

    cfo_hz: float  # carrier offset seen by the monitor (transmitter ppm minus monitor ppm)
    iq_amplitude_db: float
    iq_phase_deg: float
    tx_power_dbm: float
    mean_snr_db: float  # at the monitor, before slow fading
    rms_delay_spread_ns: float


@dataclass(frozen=True)
class SessionParams:
    """Everything drawn once per session."""

    session: int
    app: str
    duration_s: float
    bitrate_kbps: float
    path_mbps: float  # server -> AP throughput the transport can reach
    rtt_ms: float
    link_snr_db: float  # AP <-> phone, what rate control sees
    radios: tuple[Radio, ...]  # AP, phone, neighbour APs
    short_gi: bool
    phone_ofdm_mgmt: bool  # the phone sends management frames at 6 Mbps OFDM
    rts_protect: bool  # the AP sends RTS/CTS before A-MPDUs
    erp_protect: bool  # CTS-to-self at DSSS before OFDM/HT frames (ERP protection)
    podcast_download: bool  # Google Podcasts: whole-episode download instead of streaming
    start_phase: float  # 0..1: where the player is in its cycle at the start; 0: it starts then
    fading_db: float = 2.0  # slow-fading standard deviation (assumption: a still phone indoors)
    fading_coherence_s: float = 1.0
    snr_range_db: tuple[float, float] = (5.0, 30.0)


def _ppm(rng: np.random.Generator) -> float:
    # Crystal errors are a few ppm on most devices, within the standard's +-20 ppm (assumption:
    # N(0, 5 ppm) truncated at 20).
    return float(np.clip(rng.normal(0.0, 5.0), -20.0, 20.0))


def draw_session(
    rng: np.random.Generator,
    app: str,
    session: int,
    snr_range_db: tuple[float, float] = (5.0, 30.0),
    cfo_hz_max: float = 50e3,
    rms_delay_spread_ns: tuple[float, float] = (0.0, 50.0),
    iq_amplitude_db_max: float = 0.5,
    iq_phase_deg_max: float = 3.0,
    duration_s: tuple[float, float] = (10.0, 40.0),
) -> SessionParams:
    """Draw one session of `app`; nothing but the media profile depends on the app."""
    if app not in APP_PROFILES:
        raise ValueError(f"no session model for app {app!r}; known: {sorted(APP_PROFILES)}")
    profile = APP_PROFILES[app]
    monitor_ppm = _ppm(rng)
    lo, hi = snr_range_db

    def radio(tx_power_dbm: float) -> Radio:
        cfo = (_ppm(rng) - monitor_ppm) * 1e-6 * CARRIER_HZ
        position = float(rng.uniform(lo, hi))
        return Radio(
            cfo_hz=float(np.clip(cfo, -cfo_hz_max, cfo_hz_max)),
            iq_amplitude_db=float(rng.uniform(-1, 1) * iq_amplitude_db_max),
            iq_phase_deg=float(rng.uniform(-1, 1) * iq_phase_deg_max),
            tx_power_dbm=tx_power_dbm,
            mean_snr_db=position + (tx_power_dbm - 17.5),
            rms_delay_spread_ns=float(rng.uniform(*rms_delay_spread_ns)),
        )

    ap = radio(float(rng.normal(20.0, 1.5)))
    phone = radio(float(rng.normal(15.0, 1.5)))
    neighbours = [radio(float(rng.normal(20.0, 1.5))) for _ in range(int(rng.integers(0, 4)))]
    return SessionParams(
        session=session,
        app=app,
        duration_s=float(rng.uniform(*duration_s)),
        bitrate_kbps=float(rng.choice(profile.bitrates_kbps)),
        path_mbps=float(np.exp(rng.uniform(np.log(5.0), np.log(100.0)))),  # assumption
        rtt_ms=float(rng.uniform(10.0, 60.0)),  # assumption: CDN edge to a home
        link_snr_db=float(rng.uniform(3.0, 35.0)),  # assumption: indoor WLAN link
        radios=(ap, phone, *neighbours),
        short_gi=bool(rng.random() < 0.9),
        phone_ofdm_mgmt=bool(rng.random() < 0.3),
        rts_protect=bool(rng.random() < 0.3),
        erp_protect=bool(rng.random() < 0.1),
        podcast_download=bool(rng.random() < 0.5),
        # A quarter of captures start with the app (assumption); the rest join it playing.
        start_phase=0.0 if rng.random() < 0.25 else float(rng.random()),
        snr_range_db=snr_range_db,
    )


@dataclass
class Frame:
    """One PPDU on the air, as the monitor sees it."""

    t_us: float
    spec: PacketSpec
    tx: int  # transmitter: AP, PHONE or a neighbour AP (2, 3, ...)
    snr_db: float  # at the monitor
    duration_us: float
    n_mpdu: int = 1
    bss: int = 0  # index into Capture.bss: 0 the session's BSS, k >= 1 neighbour AP k


@dataclass
class Capture:
    """A simulated session: its parameters, its frames in time order, and the BSSs they use."""

    params: SessionParams
    frames: list[Frame]
    bss: list[Bss]  # [the session's BSS (AP + the phone as station 0), neighbour BSSs...]


@dataclass
class _Arrivals:
    """Downlink IP packets reaching the AP (time-sorted) and the phone's requests."""

    t_us: list[float] = field(default_factory=list)
    ip: list[int] = field(default_factory=list)
    push: list[bool] = field(default_factory=list)  # last packet of a response
    requests: list[tuple[float, int]] = field(default_factory=list)


class _Transport:
    """One TCP or QUIC connection's server side: slow start then the path's pace."""

    def __init__(self, p: SessionParams, rng: np.random.Generator) -> None:
        profile = APP_PROFILES[p.app]
        self.quic = profile.transport == "quic"
        self.full_ip = QUIC_FULL_IP_BYTES if self.quic else TCP_FULL_IP_BYTES
        self.payload = QUIC_PAYLOAD_BYTES if self.quic else TCP_PAYLOAD_BYTES
        self.overhead = self.full_ip - self.payload
        self.rtt_us = p.rtt_ms * 1e3
        self.rate_bps = p.path_mbps * 1e6  # the upstream bottleneck paces the server's packets
        self.cwnd = 10
        self.idle_from_us = -1e12
        self.rng = rng
        self.request_bytes = profile.request_ip_bytes

    def fetch(self, out: _Arrivals, t_us: float, size_bytes: float, request: bool = True) -> float:
        """Deliver `size_bytes` of response from a request sent at `t_us`; returns the end time."""
        if request:
            lo, hi = self.request_bytes
            out.requests.append((t_us, int(self.rng.integers(lo, hi + 1))))
        if t_us - self.idle_from_us > max(self.rtt_us, 200_000.0):
            self.cwnd = 10  # restart after idle
        n = max(1, math.ceil(size_bytes / self.payload))
        last = int(size_bytes - (n - 1) * self.payload)
        spacing = self.full_ip * 8 / self.rate_bps * 1e6  # us per packet at the path's rate
        t = t_us + (self.rtt_us if request else 0.0)
        sent = 0
        while sent < n:
            k = min(self.cwnd, n - sent)
            times = t + spacing * np.arange(k)
            out.t_us.extend(times.tolist())
            sent += k
            if self.cwnd * spacing >= self.rtt_us:  # the window fills the pipe: paced from now on
                rest = n - sent
                out.t_us.extend((times[-1] + spacing * np.arange(1, rest + 1)).tolist())
                sent = n
                k += rest
            else:
                self.cwnd *= 2
            t += self.rtt_us
        out.ip.extend([self.full_ip] * (n - 1) + [last + self.overhead])
        out.push.extend([False] * (n - 1) + [True])
        end = out.t_us[-1]
        self.idle_from_us = end
        return end


def app_arrivals(p: SessionParams, rng: np.random.Generator) -> _Arrivals:
    """The application's packets over the session: what the player fetches and when."""
    profile = APP_PROFILES[p.app]
    tr = _Transport(p, rng)
    out = _Arrivals()
    end_us = p.duration_s * 1e6
    bytes_per_s = p.bitrate_kbps * 1000 / 8
    t = 0.0
    starts = p.start_phase == 0.0  # the player starts with the capture
    if profile.delivery == "track":
        track_s = float(rng.uniform(180.0, 240.0))
        if starts:
            tr.fetch(out, 0.0, track_s * bytes_per_s)
        # The next track is fetched `buffer_seconds` before the current one ends.
        t = (1.0 - p.start_phase) * track_s - profile.buffer_seconds
        t = max(t, 0.0) * 1e6
        while t < end_us:
            next_track_s = float(rng.uniform(180.0, 240.0))
            tr.fetch(out, t, next_track_s * bytes_per_s)
            t += next_track_s * 1e6
    elif profile.delivery == "continuous":
        block = 4096.0  # the server's write size (assumption)
        interval = block / bytes_per_s * 1e6
        t = p.start_phase * interval
        if starts:
            t = tr.fetch(out, 0.0, 65_535.0)  # Icecast's burst on connect
        while t < end_us:
            tr.fetch(out, t, block, request=False)
            t += interval
    elif profile.delivery == "podcast" and p.podcast_download:
        tr.fetch(out, 0.0, bytes_per_s * 3600)  # a whole episode: the path's rate all session
    elif profile.delivery == "podcast":
        block = 65_536.0  # ExoPlayer's load allocation
        interval = block / bytes_per_s * 1e6
        t = p.start_phase * interval
        if starts:
            t = tr.fetch(out, 0.0, profile.buffer_seconds * bytes_per_s)  # fill the 50 s buffer
        while t < end_us:
            tr.fetch(out, t, block, request=False)
            t += interval
    elif profile.delivery == "live":
        seg = profile.segment_seconds
        t = p.start_phase * seg * 1e6
        while t < end_us:
            tr.fetch(out, t, float(rng.uniform(800, 2000)))  # playlist refresh
            tr.fetch(out, out.t_us[-1], seg * bytes_per_s)
            t += seg * 1e6
    else:  # buffered DASH: fill the buffer, then one segment each time one has played
        seg = profile.segment_seconds
        buffer_s = p.start_phase * profile.buffer_seconds
        while t < end_us:
            if buffer_s >= profile.buffer_seconds:
                wait = buffer_s - profile.buffer_seconds + seg
                t += wait * 1e6
                buffer_s -= wait
                continue
            done = tr.fetch(out, t, seg * bytes_per_s)
            buffer_s = max(0.0, buffer_s - (done - t) / 1e6) + seg
            t = done
    order = np.argsort(np.asarray(out.t_us), kind="stable")
    keep = [i for i in order.tolist() if out.t_us[i] < end_us]
    out.t_us = [out.t_us[i] for i in keep]
    out.ip = [out.ip[i] for i in keep]
    out.push = [out.push[i] for i in keep]
    out.requests = [r for r in out.requests if r[0] < end_us]
    return out


class _Fading:
    """Slow fading per transmitter: AR(1) in dB on a 10 ms grid."""

    def __init__(self, p: SessionParams, rng: np.random.Generator, n_tx: int) -> None:
        n = int(p.duration_s * 100) + 2
        rho = math.exp(-0.01 / p.fading_coherence_s)
        w = rng.standard_normal((n_tx + 1, n)) * p.fading_db * math.sqrt(1 - rho * rho)
        x = np.empty_like(w)
        x[:, 0] = rng.standard_normal(n_tx + 1) * p.fading_db
        for i in range(1, n):  # short loop over the grid; vectorised across transmitters
            x[:, i] = rho * x[:, i - 1] + w[:, i]
        self.x = x  # row n_tx: the AP <-> phone link

    def at(self, row: int, t_us: float) -> float:
        return float(self.x[row, min(int(t_us / 10_000.0), self.x.shape[1] - 1)])


def simulate_session(p: SessionParams, rng: np.random.Generator) -> Capture:
    """Every frame the monitor captures during session `p`, in time order."""
    sim = _Session(p, rng)
    return Capture(p, sim.run(), sim.bss)


def _drop_delivered(queue: list, ok: np.ndarray) -> list:
    """The queue without the delivered head entries (`ok` covers the head that was sent)."""
    return [q for q, got in zip(queue, ok, strict=False) if not got] + queue[ok.size :]


class _Session:
    def __init__(self, p: SessionParams, rng: np.random.Generator) -> None:
        self.p, self.rng = p, rng
        self.profile = APP_PROFILES[p.app]
        self.fading = _Fading(p, rng, len(p.radios))
        self.rc = {AP: MinstrelHT(rng, p.short_gi), PHONE: MinstrelHT(rng, p.short_gi)}
        self.frames: list[Frame] = []
        self._ctrl_specs: dict[tuple[str, str, bool, float], PacketSpec] = {}
        # The phone is station 0 of the session's BSS; neighbour APs answer its probes.
        self.bss = [Bss.random(rng) for _ in range(len(p.radios) - 1)]
        for other in self.bss[1:]:
            other.stations[0] = self.bss[0].stations[0]
        self.free_us = 0.0
        self.quic = self.profile.transport == "quic"
        self.acked_since = 0  # data packets received since the last transport ACK
        self.received = 0

    # -- helpers ------------------------------------------------------------------------------
    def snr(self, tx: int, t_us: float) -> float:
        lo, hi = self.p.snr_range_db
        return min(hi, max(lo, self.p.radios[tx].mean_snr_db + self.fading.at(tx, t_us)))

    def link_snr(self, t_us: float) -> float:
        return self.p.link_snr_db + self.fading.at(len(self.p.radios), t_us)

    def emit(self, t_us: float, spec: PacketSpec, tx: int, n_mpdu: int = 1) -> float:
        dur = airtime_us(
            spec.phy, spec.length_bytes, spec.rate, spec.short_gi, spec.preamble == "short"
        )
        bss = 0 if tx in (AP, PHONE) else tx - 1
        self.frames.append(Frame(t_us, spec, tx, self.snr(tx, t_us), dur, n_mpdu, bss))
        return t_us + dur

    def access(self, t_us: float) -> float:
        """When a transmitter that wants the medium at `t_us` gets it (DIFS + backoff)."""
        return max(t_us, self.free_us + DIFS_US + SLOT_US * float(self.rng.integers(0, 16)))

    def ctrl(
        self, subtype: str, eliciting_phy: str, uplink: bool, eliciting_rate: float
    ) -> PacketSpec:
        key = (subtype, eliciting_phy, uplink, eliciting_rate)
        spec = self._ctrl_specs.get(key)
        if spec is None:  # specs are immutable: one per kind of response and session
            spec = self._ctrl_specs[key] = self._new_ctrl(*key)
        return spec

    def _new_ctrl(
        self, subtype: str, eliciting_phy: str, uplink: bool, eliciting_rate: float
    ) -> PacketSpec:
        n = CONTROL_FRAME_BYTES[subtype]
        if eliciting_phy == "802.11b":
            rate = 2.0 if eliciting_rate >= 2.0 else 1.0
            return PacketSpec("802.11b", "ctrl", "none", subtype, n, rate, "long",
                              uplink=uplink, session=self.p.session)  # fmt: skip
        # Highest basic rate (6/12/24) not above the eliciting frame's (802.11-2016 10.6.6.5).
        mbps = eliciting_rate
        if eliciting_phy == "802.11n":
            mbps = HT_MCS_RATE_MBPS[int(eliciting_rate)]
        rate = 24.0 if mbps >= 24 else 12.0 if mbps >= 12 else 6.0
        return PacketSpec("802.11g", "ctrl", "none", subtype, n, rate,
                          uplink=uplink, session=self.p.session)  # fmt: skip

    def mgmt(self, subtype: str, tx: int, t_us: float) -> float:
        phy = "802.11g" if tx == PHONE and self.p.phone_ofdm_mgmt else "802.11b"
        spec = mgmt_spec(phy, subtype, 30.0, self.rng, self.bss[0 if tx in (AP, PHONE) else tx - 1])
        spec = PacketSpec(spec.phy, "mgmt", "none", subtype, spec.length_bytes, spec.rate,
                          spec.preamble, uplink=tx == PHONE, session=self.p.session)  # fmt: skip
        return self.emit(t_us, spec, tx)

    def mgmt_exchange(self, t_us: float, subtype: str, tx: int, acked: bool) -> None:
        t = self.access(t_us)
        end = self.mgmt(subtype, tx, t)
        if acked:
            last = self.frames[-1].spec
            responder = AP if tx == PHONE else PHONE  # the phone ACKs every AP's frames
            end = self.emit(
                end + SIFS_US, self.ctrl("ack", last.phy, responder == PHONE, last.rate), responder
            )
        self.free_us = end

    # -- data ---------------------------------------------------------------------------------
    def data_exchange(self, t_us: float, tx: int, ip_sizes: list[int]) -> np.ndarray:
        """Send the head of `ip_sizes` as one PPDU at `t_us`; which of them were delivered.

        Lost MPDUs stay at the head of the queue and go again in the next PPDU (the monitor
        sees them twice, as it sees real retransmissions)."""
        p, rng = self.p, self.rng
        uplink = tx == PHONE
        rc = self.rc[tx]
        idx = rc.pick()
        phy, rate, sgi, _, _ = RATE_TABLE[idx]
        t = t_us  # the caller has won the medium
        lengths = [ip + MAC_OVERHEAD_BYTES for ip in ip_sizes[:AMPDU_MAX_SUBFRAMES]]
        if phy == "802.11n":
            # Fill the A-MPDU in queue order up to 65,535 B and 5.484 ms (each subframe: 4 B
            # delimiter, padded to 4 B but the last).
            padded, n = 0, 0
            for length in lengths:
                size = padded + 4 + length
                if n and (size > AMPDU_MAX_BYTES or airtime_us(phy, size, rate, sgi) > PPDU_MAX_US):
                    break
                padded += (4 + length + 3) // 4 * 4
                n += 1
            lengths = lengths[:n]
        else:
            lengths = lengths[:1]  # non-HT PPDUs carry one MPDU
        aggregated = phy == "802.11n" and len(lengths) > 1
        psdu = ampdu_length(lengths) if aggregated else lengths[0]
        preamble: Preamble = "short" if phy == "802.11b" and rate >= 2.0 else "long"
        spec = PacketSpec(
            phy, "data", p.app, "qos_data", psdu, rate, preamble, sgi and phy == "802.11n",
            mpdu_lengths=tuple(lengths) if aggregated else (), uplink=uplink, station=0,
            tid=self.profile.tid, session=p.session,
        )  # fmt: skip
        responder = PHONE if tx == AP else AP
        if p.erp_protect and phy != "802.11b":
            cts = PacketSpec("802.11b", "ctrl", "none", "cts", 14, 11.0, "short", uplink=uplink,
                             session=p.session)  # fmt: skip
            t = self.emit(t, cts, tx) + SIFS_US
        elif aggregated and tx == AP and p.rts_protect:
            t = self.emit(t, self.ctrl("rts", "802.11g", uplink, 24.0), tx) + SIFS_US
            t = self.emit(t, self.ctrl("cts", "802.11g", not uplink, 24.0), responder) + SIFS_US
        end = self.emit(t, spec, tx, len(lengths))
        ok = rng.random(len(lengths)) < delivery_probability(self.link_snr(t), idx)
        delivered = int(np.count_nonzero(ok))
        rc.report(t, idx, len(lengths), delivered)
        if delivered:
            subtype = "block_ack" if aggregated else "ack"
            end = self.emit(end + SIFS_US, self.ctrl(subtype, phy, not uplink, rate), responder)
        elif aggregated:
            # No BlockAck came back: the originator asks for one with a BlockAckReq at a basic
            # rate, answered SIFS later by a BlockAck (802.11-2016 10.24.7.7).
            self.free_us = end
            t = self.access(end + SIFS_US)
            end = self.emit(t, self.ctrl("block_ack_req", "802.11g", uplink, 6.0), tx)
            end = self.emit(
                end + SIFS_US, self.ctrl("block_ack", "802.11g", not uplink, 6.0), responder
            )
        self.free_us = end
        return ok

    def transport_acks(self, n_received: int, push: bool) -> list[int]:
        """Uplink ACK packets for `n_received` new downlink data packets."""
        acks: list[int] = []
        for _ in range(n_received):
            self.received += 1
            self.acked_since += 1
            every = 2 if not self.quic or self.received <= 100 else 10
            if self.acked_since >= every:
                acks.append(self._ack_ip())
                self.acked_since = 0
        if push and self.acked_since:
            acks.append(self._ack_ip())
            self.acked_since = 0
        return acks

    def _ack_ip(self) -> int:
        if self.quic:
            return int(self.rng.integers(QUIC_ACK_IP_BYTES[0], QUIC_ACK_IP_BYTES[1] + 1))
        return TCP_ACK_IP_BYTES

    # -- the session --------------------------------------------------------------------------
    def mgmt_events(self, end_us: float) -> list[tuple[float, str, int, bool]]:
        rng = self.rng
        events: list[tuple[float, str, int, bool]] = []
        for tx in [AP, *range(2, len(self.p.radios))]:
            t = float(rng.uniform(0, BEACON_INTERVAL_US))
            events += [(t + k * BEACON_INTERVAL_US, "beacon", tx, False)
                       for k in range(int((end_us - t) // BEACON_INTERVAL_US) + 1)]  # fmt: skip
        # The Block Ack agreement opens the session (ADDBA request by the AP, response by the
        # phone, each ACKed); background scans: probe requests every 20-120 s (assumption).
        events += [(1.0, "action", AP, True), (2.0, "action", PHONE, True)]
        t = float(rng.uniform(0, 60e6))
        while t < end_us:
            events.append((t, "probe_req", PHONE, False))
            for tx in [AP, *range(2, len(self.p.radios))]:
                events.append((t + 1.0 + tx, "probe_resp", tx, True))
            t += float(rng.uniform(20e6, 120e6))
        return sorted(e for e in events if e[0] < end_us)

    def run(self) -> list[Frame]:
        p = self.p
        end_us = p.duration_s * 1e6
        arr = app_arrivals(p, self.rng)
        mgmt = self.mgmt_events(end_us)
        down_i, n_down = 0, len(arr.t_us)
        ap_queue: list[tuple[int, bool]] = []  # (ip bytes, push)
        phone_queue: list[int] = []
        phone_ready = math.inf
        req_i = 0
        mg_i = 0
        while True:
            ap_ready = 0.0 if ap_queue else (arr.t_us[down_i] if down_i < n_down else math.inf)
            req_t = arr.requests[req_i][0] if req_i < len(arr.requests) else math.inf
            up_ready = min(phone_ready if phone_queue else math.inf, req_t)
            mg_t = mgmt[mg_i][0] if mg_i < len(mgmt) else math.inf
            t_next = min(ap_ready, up_ready, mg_t)
            if t_next >= end_us or t_next == math.inf:
                break
            if ap_queue and ap_ready == 0.0:
                ap_ready = self.free_us
            if mg_t <= min(ap_ready, up_ready):
                _, subtype, tx, acked = mgmt[mg_i]
                mg_i += 1
                self.mgmt_exchange(mg_t, subtype, tx, acked)
                continue
            if up_ready <= ap_ready:
                while req_i < len(arr.requests) and arr.requests[req_i][0] <= up_ready:
                    phone_queue.append(arr.requests[req_i][1])
                    req_i += 1
                ok = self.data_exchange(self.access(up_ready), PHONE, phone_queue)
                phone_queue = _drop_delivered(phone_queue, ok)
                phone_ready = self.free_us
                continue
            t_start = self.access(ap_ready)
            # Above AP_QUEUE_LIMIT the sender waits (TCP backs off when the AP's queue, not the
            # upstream path, is the bottleneck), so a saturated link sends full aggregates.
            while (
                down_i < n_down and arr.t_us[down_i] <= t_start and len(ap_queue) < AP_QUEUE_LIMIT
            ):
                ap_queue.append((arr.ip[down_i], arr.push[down_i]))
                down_i += 1
            ok = self.data_exchange(t_start, AP, [ip for ip, _ in ap_queue[:AMPDU_MAX_SUBFRAMES]])
            delivered = int(ok.sum())
            if delivered:
                push = any(pu for (_, pu), got in zip(ap_queue, ok, strict=False) if got)
                acks = self.transport_acks(delivered, push)
                ap_queue = _drop_delivered(ap_queue, ok)
                if acks:
                    if not phone_queue:
                        phone_ready = self.free_us
                    phone_queue.extend(acks)
        return self.frames

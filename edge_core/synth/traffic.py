"""Traffic models: which 802.11 frames an access point's channel carries, and what they look like.

The bytes of each frame come from the MAC layer (`mac.py`: headers, management bodies, CCMP
header, FCS in clear; only the WPA2-encrypted bodies are random); what the models decide is
what the radio can see: PHY format, rate or MCS, preamble, MPDU length (carried in L-SIG /
HT-SIG / the PLCP header even when the packet is truncated) and aggregation.

Where the numbers come from:

* Label mix: Tables 4 and 5 of Goez et al. 2024 (`000_b643e4d5031e6ce2.txt`). Table 4 gives the
  PHY x frame-type counts of the 466,348 packets; Table 5 the application counts of the data
  frames (95,306 packets; its No-App class is management and control frames only, so data
  frames always carry an application).
* Frame lengths: IEEE 802.11-2016 clause 9. Control frames have fixed lengths (ACK/CTS 14 B,
  RTS 20 B, BlockAckReq 24 B, compressed BlockAck 32 B, all with FCS). A protected QoS data
  MPDU adds 26 B MAC header + 8 B CCMP header + 8 B MIC + 4 B FCS + 8 B LLC/SNAP = 54 B to its
  IP packet; an A-MPDU subframe adds a 4 B delimiter and pads to 4 B.
* Applications: `APP_PROFILES` (end of this module, every figure cited there: bitrate ladders,
  TCP/QUIC packet and ACK sizes, how each player fetches media) drive the capture sessions of
  `sessions.py`, which the labelled dataset and the stream are drawn from: aggregation depth,
  uplink/downlink ratio and rate/MCS come out of the session simulation (AP queue, A-MPDU
  limits, Minstrel-HT-like rate control), not from per-app constants. The models are built from
  published descriptions, not fitted to the (unreachable) real captures: treat per-application
  accuracy on synthetic data as a property of these models.
* `APP_MODELS`, `data_spec` and `sample_spec` below are the older per-packet sampler (one packet
  at a time, no session): `generator.generate_packets` still uses it for engine benchmarks and
  example plots, not for the dataset. Its rate adaptation: the highest MCS / rate whose typical
  required SNR (10% PER, 1500 B, AWGN) the link meets, with Minstrel-like probing of a
  neighbouring rate 10% of the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edge_core.schema import APP, APP_TYPE_OF_APP, FRAME, PHY
from edge_core.synth.mac import Bss, ampdu_length, mgmt_frame_length

Preamble = Literal["long", "short"]

# Table 4: rows frame (mgmt, ctrl, data), columns phy (802.11b, 802.11g, 802.11n).
TABLE4_PHY_BY_FRAME: dict[str, dict[str, int]] = {
    "mgmt": {"802.11b": 74662, "802.11g": 494, "802.11n": 0},
    "ctrl": {"802.11b": 5340, "802.11g": 245627, "802.11n": 0},
    "data": {"802.11b": 5030, "802.11g": 337, "802.11n": 134858},
}
# Table 5: the applications of the 95,306 data frames. Its No-App class (45,359) is management
# (14,805) and control (30,554) frames only: no data frame is labelled `none`.
TABLE5_APPS_OF_DATA: dict[str, int] = {
    "spotify": 13822,
    "tunein": 10229,
    "gpodcast": 15002,
    "youtube": 16671,
    "netflix": 18268,
    "twitch": 21314,
}
TABLE5_NO_APP_BY_FRAME: dict[str, int] = {"mgmt": 14805, "ctrl": 30554, "data": 0}

MAC_OVERHEAD_BYTES = 54  # QoS data header 26 + CCMP 8 + MIC 8 + FCS 4 + LLC/SNAP 8
CONTROL_FRAME_BYTES = {"ack": 14, "cts": 14, "rts": 20, "block_ack_req": 24, "block_ack": 32}

# Required SNR (dB) per 802.11n MCS 0-7 and legacy OFDM rate, for about 10% PER on 1500 B frames
# in AWGN (textbook receiver sensitivities shifted to SNR; the order matters more than the values).
HT_MCS_MIN_SNR_DB = (2.0, 5.0, 9.0, 11.0, 15.0, 18.0, 20.0, 25.0)
LEGACY_RATE_MIN_SNR_DB = {6: 2.0, 9: 4.0, 12: 5.0, 18: 8.0, 24: 11.0, 36: 15.0, 48: 19.0, 54: 21.0}
DSSS_RATE_MIN_SNR_DB = {1.0: -2.0, 2.0: 1.0, 5.5: 5.0, 11.0: 8.0}
LEGACY_BASIC_RATES = (6, 12, 24)
HT_MCS_RATE_MBPS = (6.5, 13.0, 19.5, 26.0, 39.0, 52.0, 58.5, 65.0)  # 20 MHz, 1 stream, 800 ns GI


@dataclass(frozen=True)
class AppModel:
    """Packet-size model of one application's traffic on the client's link."""

    downlink_share: float  # fraction of the app's data frames that go AP -> client
    large_ip_bytes: int  # the bulk packet size (TCP MSS segment or QUIC packet)
    large_share: float  # fraction of downlink packets that are bulk-sized
    small_ip_bytes: tuple[int, int]  # range of the remaining (partial / control) downlink packets
    uplink_ip_bytes: tuple[int, int]  # range of uplink packets (TCP ACKs, QUIC ACKs, requests)
    max_ampdu: int  # most MPDUs aggregated in one downlink A-MPDU (802.11n)
    burst_packets_mean: float  # mean downlink frames per ON burst (stream timing)
    off_seconds_mean: float  # mean idle time between bursts (stream timing)


APP_MODELS: dict[str, AppModel] = {
    "spotify": AppModel(0.62, 1500, 0.80, (300, 1400), (52, 120), 8, 120.0, 6.0),
    "tunein": AppModel(0.58, 1500, 0.35, (200, 1200), (52, 80), 2, 6.0, 0.25),
    "gpodcast": AppModel(0.66, 1500, 0.92, (600, 1400), (52, 64), 16, 400.0, 15.0),
    "youtube": AppModel(0.70, 1378, 0.85, (100, 1300), (60, 140), 32, 300.0, 4.0),
    "netflix": AppModel(0.68, 1500, 0.95, (400, 1400), (52, 64), 64, 500.0, 3.5),
    "twitch": AppModel(0.66, 1500, 0.75, (150, 1400), (52, 90), 16, 200.0, 1.7),
    # Data frames of no known application: DNS, ARP, keep-alives, other stations' traffic.
    "none": AppModel(0.50, 1500, 0.20, (60, 1400), (40, 400), 4, 3.0, 0.5),
}


@dataclass(frozen=True)
class TrafficMix:
    """Joint label distribution: P(phy, frame) and P(app | data frame); default Tables 4 and 5."""

    phy_by_frame: dict[str, dict[str, float]] = field(
        default_factory=lambda: {f: dict(r) for f, r in TABLE4_PHY_BY_FRAME.items()}
    )
    apps_of_data: dict[str, float] = field(default_factory=lambda: dict(TABLE5_APPS_OF_DATA))

    def __post_init__(self) -> None:
        if set(self.phy_by_frame) != set(FRAME.classes):
            raise ValueError(f"phy_by_frame needs the frames {list(FRAME.classes)}")
        for frame, row in self.phy_by_frame.items():
            if set(row) - set(PHY.classes):
                raise ValueError(
                    f"phy_by_frame[{frame!r}] has unknown phy {set(row) - set(PHY.classes)}"
                )
        if set(self.apps_of_data) - set(APP.classes):
            raise ValueError(
                f"apps_of_data has unknown apps {set(self.apps_of_data) - set(APP.classes)}"
            )
        weights = [w for row in self.phy_by_frame.values() for w in row.values()]
        weights += list(self.apps_of_data.values())
        if any(w < 0 for w in weights) or not sum(self.apps_of_data.values()) > 0:
            raise ValueError("mix weights must be >= 0 with a positive total")

    def joint_table(self) -> tuple[list[tuple[str, str]], np.ndarray]:
        """(phy, frame) pairs and their probabilities."""
        pairs = [(p, f) for f in FRAME.classes for p in PHY.classes]
        w = np.array([self.phy_by_frame[f].get(p, 0.0) for p, f in pairs], dtype=np.float64)
        return pairs, w / w.sum()

    def app_table(self) -> tuple[list[str], np.ndarray]:
        apps = [a for a in APP.classes if self.apps_of_data.get(a, 0.0) > 0]
        w = np.array([self.apps_of_data[a] for a in apps], dtype=np.float64)
        return apps, w / w.sum()


@dataclass(frozen=True)
class PacketSpec:
    """Everything needed to synthesise one PPDU, and its four labels."""

    phy: str
    frame: str
    app: str
    subtype: str
    length_bytes: int  # PSDU length (MPDU or A-MPDU) incl. FCS
    rate: float  # Mbps for 802.11b/g, MCS index for 802.11n
    preamble: Preamble = "long"  # 802.11b only
    short_gi: bool = False  # 802.11n only
    # What the MAC layer (edge_core/synth/mac.py) needs to build the PSDU's bytes.
    mpdu_lengths: tuple[int, ...] = ()  # A-MPDU subframes' MPDU lengths incl. FCS; () = one MPDU
    uplink: bool = False  # sent by the station (To DS) rather than by the AP (From DS)
    station: int = 0  # the non-AP station of the exchange (index into the BSS's stations)
    tid: int = 0  # QoS TID of data frames (0 best effort, 5 video, 6 voice)
    session: int = -1  # capture session the packet belongs to (-1: none)

    @property
    def app_type(self) -> str:
        return APP_TYPE_OF_APP[self.app]

    @property
    def labels(self) -> dict[str, str]:
        return {"phy": self.phy, "frame": self.frame, "app_type": self.app_type, "app": self.app}


def sample_labels(rng: np.random.Generator, mix: TrafficMix) -> tuple[str, str, str]:
    """Draw (phy, frame, app) from the mix; only data frames carry an application."""
    pairs, p = mix.joint_table()
    phy, frame = pairs[int(rng.choice(len(pairs), p=p))]
    app = "none"
    if frame == "data":
        apps, pa = mix.app_table()
        app = apps[int(rng.choice(len(apps), p=pa))]
    return phy, frame, app


def _probe(rng: np.random.Generator, options: list, chosen_index: int) -> int:
    """Minstrel-like rate probing: 10% of frames use a neighbouring rate."""
    if rng.random() < 0.1:
        chosen_index = int(np.clip(chosen_index + rng.choice((-1, 1)), 0, len(options) - 1))
    return chosen_index


def pick_ht_mcs(snr_db: float, rng: np.random.Generator) -> int:
    ok = [m for m, need in enumerate(HT_MCS_MIN_SNR_DB) if snr_db >= need]
    return _probe(rng, list(range(8)), ok[-1] if ok else 0)


def pick_legacy_rate(snr_db: float, rng: np.random.Generator) -> int:
    rates = sorted(LEGACY_RATE_MIN_SNR_DB)
    ok = [i for i, r in enumerate(rates) if snr_db >= LEGACY_RATE_MIN_SNR_DB[r]]
    return rates[_probe(rng, rates, ok[-1] if ok else 0)]


def pick_dsss_rate(snr_db: float, rng: np.random.Generator) -> float:
    rates = sorted(DSSS_RATE_MIN_SNR_DB)
    ok = [i for i, r in enumerate(rates) if snr_db >= DSSS_RATE_MIN_SNR_DB[r]]
    return rates[_probe(rng, rates, ok[-1] if ok else 0)]


def _dsss_preamble(rate: float, rng: np.random.Generator) -> Preamble:
    # Short preamble needs >= 2 Mbps; most modern 2.4 GHz stations use it when allowed.
    return "short" if rate >= 2.0 and rng.random() < 0.7 else "long"


def app_frame_length(app: str, rng: np.random.Generator, downlink: bool) -> int:
    """MPDU length (incl. FCS) of one data frame of `app`."""
    model = APP_MODELS[app]
    if not downlink:
        ip = int(rng.integers(model.uplink_ip_bytes[0], model.uplink_ip_bytes[1] + 1))
    elif rng.random() < model.large_share:
        ip = model.large_ip_bytes
    else:
        ip = int(rng.integers(model.small_ip_bytes[0], model.small_ip_bytes[1] + 1))
    return ip + MAC_OVERHEAD_BYTES


def data_spec(
    phy: str, app: str, snr_db: float, rng: np.random.Generator, downlink: bool | None = None
) -> PacketSpec:
    """A data frame of `app` on `phy`, with length, aggregation and rate from the models."""
    model = APP_MODELS[app]
    if downlink is None:
        downlink = bool(rng.random() < model.downlink_share)
    if phy == "802.11n":
        mcs = pick_ht_mcs(snr_db, rng)
        n_mpdu = 1
        if downlink and model.max_ampdu > 1:
            n_mpdu = int(rng.integers(1, model.max_ampdu + 1))
        lengths = [app_frame_length(app, rng, downlink) for _ in range(n_mpdu)]
        # An HT-mixed PPDU lasts at most ~5.48 ms (L-SIG LENGTH <= 4095 at 6 Mbps): cap the
        # aggregate at 5 ms of airtime, as an AP's aggregation limit does.
        max_bytes = int(5e-3 * HT_MCS_RATE_MBPS[mcs] * 1e6 / 8)
        while len(lengths) > 1 and ampdu_length(lengths) > max_bytes:
            lengths.pop()
        psdu = ampdu_length(lengths)  # HT data is always sent as an A-MPDU in practice
        return PacketSpec(
            phy, "data", app, "qos_data", psdu, float(mcs), short_gi=bool(rng.random() < 0.5),
            mpdu_lengths=tuple(lengths), uplink=not downlink,
        )  # fmt: skip
    length = app_frame_length(app, rng, downlink)
    if app == "none" and rng.random() < 0.3:
        length = 28  # null data frame (power-save signalling): header 24 + FCS 4
    if phy == "802.11g":
        return PacketSpec(phy, "data", app, "data", length, float(pick_legacy_rate(snr_db, rng)))
    rate = pick_dsss_rate(snr_db, rng)
    return PacketSpec(phy, "data", app, "data", length, rate, preamble=_dsss_preamble(rate, rng))


def control_spec(phy: str, subtype: str, snr_db: float, rng: np.random.Generator) -> PacketSpec:
    """A control frame; on OFDM it goes at a basic rate, on DSSS at 1 or 2 Mbps."""
    length = CONTROL_FRAME_BYTES[subtype]
    if phy == "802.11b":
        rate = 2.0 if snr_db >= DSSS_RATE_MIN_SNR_DB[2.0] and rng.random() < 0.6 else 1.0
        return PacketSpec(
            "802.11b", "ctrl", "none", subtype, length, rate, _dsss_preamble(rate, rng)
        )
    if phy == "802.11n":
        # Rare (Table 4 has none): control frames in HT PPDUs use a basic MCS (0-4).
        mcs = min(pick_ht_mcs(snr_db, rng), 4)
        return PacketSpec("802.11n", "ctrl", "none", subtype, length, float(mcs))
    # Control responses in an HT BSS are sent in non-HT format at a basic rate: this is why
    # Table 4's control frames are almost all 802.11g.
    ok = [r for r in LEGACY_BASIC_RATES if snr_db >= LEGACY_RATE_MIN_SNR_DB[r]] or [6]
    return PacketSpec("802.11g", "ctrl", "none", subtype, length, float(ok[-1]))


def mgmt_spec(
    phy: str, subtype: str, snr_db: float, rng: np.random.Generator, bss: Bss | None = None
) -> PacketSpec:
    """A management frame at a basic rate (1 Mbps DSSS or 6 Mbps OFDM, as APs send beacons).

    Its length is that of the frame `bss` sends (mac.py builds its body); without a BSS, that
    of a random one."""
    length = mgmt_frame_length(subtype, bss if bss is not None else Bss.random(rng))
    if phy == "802.11b":
        return PacketSpec("802.11b", "mgmt", "none", subtype, length, 1.0, "long")
    if phy == "802.11g":
        return PacketSpec("802.11g", "mgmt", "none", subtype, length, 6.0)
    return PacketSpec("802.11n", "mgmt", "none", subtype, length, float(pick_ht_mcs(snr_db, rng)))


def sample_spec(
    rng: np.random.Generator, mix: TrafficMix, snr_db: float, bss: Bss | None = None
) -> PacketSpec:
    """One packet for the labelled dataset: labels from the mix, the rest from the models."""
    phy, frame, app = sample_labels(rng, mix)
    if frame == "data":
        return data_spec(phy, app, snr_db, rng)
    if frame == "ctrl":
        subtype = str(
            rng.choice(
                ["ack", "block_ack", "rts", "cts", "block_ack_req"], p=[0.55, 0.2, 0.1, 0.1, 0.05]
            )
        )
        if phy == "802.11b":
            subtype = str(rng.choice(["ack", "rts", "cts"], p=[0.8, 0.1, 0.1]))
        return control_spec(phy, subtype, snr_db, rng)
    subtype = str(
        rng.choice(["beacon", "probe_req", "probe_resp", "action"], p=[0.6, 0.2, 0.15, 0.05])
    )
    return mgmt_spec(phy, subtype, snr_db, rng, bss)


# --- Application profiles for capture sessions (edge_core/synth/sessions.py) -------------------
#
# Every figure below names its source; "assumption" marks the ones we chose without a source.
#
# Transport (IP-layer sizes):
# * TCP: MSS 1460 B on a 1500 B Ethernet path; with the timestamps option (Linux and the CDNs
#   default) a full segment carries 1448 B of payload in a 1500 B IP packet, and a pure ACK is
#   20 IP + 20 TCP + 12 options = 52 B (RFC 7323). Receivers ACK every second full segment
#   (delayed ACK, RFC 1122 4.2.3.2 / RFC 5681 4.2) and at once on a pushed last segment (Linux
#   quick-ack). Initial window 10 segments (RFC 6928); after an idle period the window restarts
#   (RFC 2861, Linux tcp_slow_start_after_idle = 1).
# * QUIC (YouTube): Google QUIC caps packets at 1350 B of UDP payload (Langley et al., "The QUIC
#   Transport Protocol: Design and Internet-Scale Deployment", SIGCOMM 2017), so 1378 B IP; about
#   30 B of that is QUIC header and AEAD tag (assumption). The receiver ACKs every second
#   ack-eliciting packet (RFC 9000 13.2.2) and, after the first 100 packets of a connection, every
#   tenth (Chromium's ACK decimation, the "ack frequency" default of its QUIC stack; figure from
#   the Chromium source, not a paper). A QUIC ACK packet is 60-80 B IP (short header, ACK frame,
#   16 B tag: assumption from the header layout of RFC 9000 17.3).
#
# Media delivery:
# * Spotify: Ogg Vorbis at 96, 160 or 320 kbit/s (Spotify's published "normal/high/very high"
#   quality settings). Tracks are fetched over TCP ahead of playback and the next track is
#   prefetched about 30 s before the current one ends (Kreitz and Niemela, "Spotify - Large
#   Scale, Low Latency, P2P Music-on-Demand Streaming", IEEE P2P 2010); one track is then one
#   burst. Track length 180-240 s (assumption).
# * TuneIn: continuous Icecast/SHOUTcast radio streams, MP3/AAC at 64-320 kbit/s (the bitrates
#   TuneIn's directory lists for its stations); the server writes the stream as it arrives, in
#   blocks of about 4 kB (assumption), after a 64 kB burst on connect (Icecast's default
#   burst-size, 65,535 B, from the Icecast 2 documentation).
# * Google Podcasts: MP3 episodes at 64-128 kbit/s (assumption: common podcast encodings), fetched
#   with HTTP either as a whole-episode download at the path's rate or streamed by ExoPlayer,
#   which keeps a 50 s buffer (DefaultLoadControl min = max = 50 s in ExoPlayer 2.9+, from its
#   source) and loads in 64 kB allocations (C.DEFAULT_BUFFER_SEGMENT_SIZE).
# * YouTube: DASH over QUIC. Video itags 160/133/134/135/136/137 (144p-1080p H.264) average about
#   0.11/0.25/0.64/1.15/2.3/4.4 Mbit/s (assumption: figures from YouTube's DASH manifests), plus
#   audio itag 140 (AAC 128 kbit/s). Short ON-OFF cycles once the buffer is full (Rao et al.,
#   "Network Characteristics of Video Streaming Traffic", CoNEXT 2011); 5 s segments and a 60 s
#   readahead (assumption).
# * Netflix: DASH over TCP, the fixed ladder 235-5800 kbit/s of Netflix's encoding (Aaron et al.,
#   "Per-Title Encode Optimization", Netflix Technology Blog 2015); 4 s chunks fetched in ON-OFF
#   cycles once a buffer of about 240 s is full (Huang et al., "Confused, Timid, and Unstable:
#   Picking a Video Streaming Rate is Hard", IMC 2012).
# * Twitch: live HLS over TCP, 2 s segments and a playlist refresh per segment (Deng et al.,
#   "Behind the Game: Exploring the Twitch Streaming Platform", NetGames 2015, for HLS; 2 s is
#   Twitch's low-latency segment duration: assumption), renditions 160p-1080p60 at
#   0.23-6 Mbit/s (6 Mbit/s is Twitch's ingest cap in its broadcast guidelines).
# Everything is best-effort traffic (TID 0): none of these services marks its packets, and the
#   phone's Wi-Fi stack maps unmarked packets to AC_BE (IEEE 802.11-2016 10.2.4.2).

TransportKind = Literal["tcp", "quic"]
DeliveryKind = Literal["track", "continuous", "podcast", "buffered", "live"]

TCP_FULL_IP_BYTES = 1500
TCP_PAYLOAD_BYTES = 1448
TCP_ACK_IP_BYTES = 52
QUIC_FULL_IP_BYTES = 1378  # 1350 B UDP payload + 8 UDP + 20 IP
QUIC_PAYLOAD_BYTES = 1320  # after ~30 B of short header and AEAD tag (assumption)
QUIC_ACK_IP_BYTES = (60, 80)


@dataclass(frozen=True)
class AppProfile:
    """How one application moves media over the phone's link (sources in the comment above)."""

    transport: TransportKind
    delivery: DeliveryKind
    bitrates_kbps: tuple[float, ...]  # the ladder the player picks from (media bitrate)
    segment_seconds: float  # media per fetched segment / chunk (0: not segmented)
    buffer_seconds: float  # readahead the player keeps before it pauses fetching
    request_ip_bytes: tuple[int, int]  # the phone's HTTP request packet (assumption: TLS GET)
    tid: int = 0


APP_PROFILES: dict[str, AppProfile] = {
    "spotify": AppProfile("tcp", "track", (96.0, 160.0, 320.0), 0.0, 30.0, (400, 900)),
    "tunein": AppProfile(
        "tcp", "continuous", (64.0, 96.0, 128.0, 192.0, 256.0, 320.0), 0.0, 0.0, (300, 600)
    ),
    "gpodcast": AppProfile("tcp", "podcast", (64.0, 96.0, 128.0), 0.0, 50.0, (300, 700)),
    "youtube": AppProfile(
        "quic", "buffered", (238.0, 378.0, 768.0, 1278.0, 2428.0, 4528.0), 5.0, 60.0, (200, 600)
    ),
    "netflix": AppProfile(
        "tcp",
        "buffered",
        (235.0, 375.0, 560.0, 750.0, 1050.0, 1750.0, 2350.0, 3000.0, 4300.0, 5800.0),
        4.0,
        240.0,
        (400, 900),
    ),
    "twitch": AppProfile(
        "tcp", "live", (230.0, 630.0, 1400.0, 2500.0, 3500.0, 6000.0), 2.0, 6.0, (300, 700)
    ),
}

# IEEE 802.11-2016: HT A-MPDU limits (Block Ack window 64, maximum A-MPDU length exponent 3 =
# 65,535 B, and an HT-mixed PPDU lasts at most aPPDUMaxTime = 5.484 ms, L-SIG LENGTH <= 4095).
AMPDU_MAX_SUBFRAMES = 64
AMPDU_MAX_BYTES = 65_535
PPDU_MAX_US = 5484.0

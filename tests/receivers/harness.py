"""Decode-rate harness: draw labelled frames from the generator, impair the whole PPDU, decode it
with the independent receivers and check what a sniffer would (FCS, Frame Control vs label).

This is the only module here that touches the transmitter, and only through its public entry
points (`sample_spec`, `synthesize`, `Bss`, the impairments); the receivers never import it.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edge_core.synth.generator import synthesize
from edge_core.synth.impairments import Draw, Impairments, complex_noise, draw, impair_packet
from edge_core.synth.mac import Bss
from edge_core.synth.sessions import APP_PROFILES, draw_session, simulate_session
from edge_core.synth.traffic import PacketSpec, TrafficMix, sample_spec

from . import dsss_rx, ofdm_rx
from .mac_check import check_frames

LEAD_NOISE = 200  # samples of noise before the packet (on top of the drawn timing offset)
TAIL_NOISE = 200

RECEIVER_PHYS = {"dsss": ("802.11b",), "ofdm": ("802.11g", "802.11n")}


def mix_for(receiver: str) -> TrafficMix:
    """Equal weight on every (phy, frame) cell of the receiver's PHYs, so that rare cells of
    Table 4 (802.11g data, HT management) are exercised too; apps as in Table 5."""
    phys = RECEIVER_PHYS[receiver]
    return TrafficMix(phy_by_frame={f: {p: 1.0 for p in phys} for f in ("mgmt", "ctrl", "data")})


@dataclass(frozen=True)
class Trial:
    spec: PacketSpec
    snr_db: float
    ok: bool
    reason: str  # '' when ok

    @property
    def key(self) -> str:
        """The PHY/rate bucket decode rates are reported by."""
        s = self.spec
        if s.phy == "802.11n":
            agg = " A-MPDU" if s.mpdu_lengths else ""
            return f"802.11n MCS{int(s.rate)}{' SGI' if s.short_gi else ''}{agg}"
        if s.phy == "802.11b":
            return f"802.11b {s.rate:g} Mbps {s.preamble}"
        return f"802.11g {int(s.rate)} Mbps"


def draw_frames(
    receiver: str,
    n: int,
    rng: np.random.Generator,
    snr_db: tuple[float, float] = (20.0, 30.0),
    impairments: Impairments | None = None,
) -> Iterator[tuple[PacketSpec, float, np.ndarray]]:
    """`n` frames of one BSS for `receiver` (specs as `generate_packets` draws them), with the
    default impairments (or `impairments`) at `snr_db`: the full PPDU, LEAD_NOISE + the drawn
    timing offset of noise before it, TAIL_NOISE after it."""
    mix = mix_for(receiver)
    imp = dataclasses.replace(impairments or Impairments(), snr_db=snr_db)
    bss = Bss.random(rng)
    for _ in range(n):
        d = draw(imp, rng)
        spec = sample_spec(rng, mix, d.snr_db, bss)
        clean = synthesize(spec, rng, bss=bss)
        yield spec, d.snr_db, _impaired(clean, d, rng)


def _impaired(clean: np.ndarray, d: Draw, rng: np.random.Generator) -> np.ndarray:
    d = dataclasses.replace(d, timing_offset_samples=d.timing_offset_samples + LEAD_NOISE)
    y = impair_packet(clean, d, rng, clean.size + d.timing_offset_samples)
    tail = complex_noise(TAIL_NOISE, 10 ** (-d.snr_db / 10), rng) * np.float32(
        10 ** (d.gain_db / 20)
    )
    return np.concatenate([y, tail])


def draw_session_frames(
    receiver: str, n: int, rng: np.random.Generator, snr_db: tuple[float, float] = (20.0, 30.0)
) -> Iterator[tuple[PacketSpec, float, np.ndarray]]:
    """`n` frames from capture sessions (`edge_core.synth.sessions`, the dataset's path), at
    least `snr_db[0]` at the monitor, spread evenly over the (phy, frame, subtype, A-MPDU)
    kinds the sessions produce for `receiver`; each impaired with its transmitter's radio (CFO,
    IQ imbalance, delay spread) as `synth dataset` does, but whole."""
    phys = RECEIVER_PHYS[receiver]
    pools: dict[tuple, list] = defaultdict(list)
    imp = Impairments()
    for i, app in enumerate(APP_PROFILES):  # one short session per app
        p = draw_session(rng, app, i, snr_range_db=snr_db, duration_s=(2.0, 4.0))
        cap = simulate_session(p, rng)
        for f in cap.frames:
            s = f.spec
            if s.phy in phys and snr_db[0] <= f.snr_db <= snr_db[1]:
                pools[(s.phy, s.frame, s.subtype, bool(s.mpdu_lengths))].append((cap, f))
    kinds = sorted(pools)
    if not kinds:
        raise ValueError(f"sessions gave no {receiver} frames between {snr_db} dB")
    picks = []
    for j in range(n):
        pool = pools[kinds[j % len(kinds)]]
        picks.append(pool[int(rng.integers(len(pool)))])
    for cap, f in picks:
        radio = cap.params.radios[f.tx]
        d = Draw(
            snr_db=f.snr_db,
            cfo_hz=radio.cfo_hz,
            rms_delay_spread_ns=radio.rms_delay_spread_ns,
            timing_offset_samples=int(
                rng.integers(imp.timing_offset_samples[0], imp.timing_offset_samples[1] + 1)
            ),
            gain_db=float(rng.uniform(*imp.gain_db)),
            iq_amplitude_db=radio.iq_amplitude_db,
            iq_phase_deg=radio.iq_phase_deg,
        )
        clean = synthesize(f.spec, rng, bss=cap.bss[f.bss])
        yield f.spec, f.snr_db, _impaired(clean, d, rng)


def decode(spec: PacketSpec, y: np.ndarray) -> str:
    """'' if the frame decodes to valid FCS(s) with Frame Control matching the label."""
    try:
        if spec.phy == "802.11b":
            r = dsss_rx.receive(y)
            psdu, aggregated = r.psdu, False
        else:
            o = ofdm_rx.receive(y)
            psdu, aggregated = o.psdu, bool(o.aggregation)
    except (dsss_rx.DecodeError, ofdm_rx.DecodeError) as e:
        return f"PHY: {e}"
    if psdu is None:
        return "PHY: no PSDU"
    return check_frames(psdu, aggregated, spec.frame, spec.subtype)


def run(
    receiver: str,
    n: int,
    seed: int,
    snr_db: tuple[float, float] = (20.0, 30.0),
    source: str = "generator",
    impairments: Impairments | None = None,
) -> list[Trial]:
    """Decode `n` frames for `receiver` ("dsss" or "ofdm") drawn from `source`
    ("generator": `sample_spec` frames; "sessions": capture sessions). `impairments` replaces
    the defaults (generator source only; SNR always from `snr_db`)."""
    rng = np.random.default_rng(seed)
    trials = []
    if source == "generator":
        frames = draw_frames(receiver, n, rng, snr_db, impairments)
    elif impairments is not None:
        raise ValueError("impairments apply to the generator source only")
    else:
        frames = draw_session_frames(receiver, n, rng, snr_db)
    for spec, snr, y in frames:
        reason = decode(spec, y)
        trials.append(Trial(spec, snr, not reason, reason))
    return trials


def rates(trials: list[Trial]) -> dict[str, dict[str, float]]:
    """{bucket: {"n", "decoded", "rate"}} plus an "all" bucket."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for t in trials:
        groups[t.key].append(t.ok)
        groups["all"].append(t.ok)
    return {
        k: {"n": len(v), "decoded": int(sum(v)), "rate": sum(v) / len(v)}
        for k, v in sorted(groups.items())
    }


def summary(trials: list[Trial]) -> str:
    lines = [f"{k}: {v['decoded']}/{v['n']} = {v['rate']:.3f}" for k, v in rates(trials).items()]
    bad = [t for t in trials if not t.ok][:10]
    lines += [
        f"  failed {t.key} {t.spec.frame}/{t.spec.subtype} {t.spec.length_bytes} B "
        f"at {t.snr_db:.1f} dB: {t.reason[:160]}"
        for t in bad
    ]
    return "\n".join(lines)

"""Packets for the PHY header decoder (`edge_core.rx.headers`) as the daemon sees them, with the
header fields the transmitter put in them (tests/test_rx_headers.py, tools/header_decode_rate.py).

Each packet is a 3000-sample row like a dataset row (`edge_core.synth.dataset`): the PPDU cut
to the window after the drawn timing offset (0-32 samples of noise first), impaired (multipath,
CFO, IQ imbalance, noise, gain), zero post-padded. "generator" draws specs with `sample_spec`
for one PHY at a time; "sessions" takes the frames of capture sessions (the dataset's path),
each impaired with its transmitter's radio.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from edge_core.rx.headers import FORMAT_DSSS, FORMAT_HT, FORMAT_LEGACY, HEADER_FIELDS
from edge_core.schema import INPUT_LENGTH, PHY
from edge_core.synth.generator import synthesize
from edge_core.synth.impairments import Draw, Impairments, draw, impair_packet
from edge_core.synth.mac import Bss
from edge_core.synth.sessions import APP_PROFILES, draw_session, simulate_session
from edge_core.synth.traffic import PacketSpec, TrafficMix, sample_spec

FORMATS = ("802.11b short", "802.11b long", "802.11g", "802.11n")


def format_of(spec: PacketSpec) -> str:
    """The bucket decode rates are reported by (the DSSS preamble decides what fits the row)."""
    return f"802.11b {spec.preamble}" if spec.phy == "802.11b" else spec.phy


def expected(spec: PacketSpec) -> np.ndarray:
    """The HEADER_FIELDS row a correct decoder gives for `spec` in a 3000-sample row.

    A long DSSS preamble puts the PLCP header at 192 us, past the 150 us row: only the format
    and the preamble type are there to read."""
    nan = float("nan")
    if spec.phy == "802.11b":
        if spec.preamble == "long":
            row = (0, FORMAT_DSSS, nan, nan, nan, nan, 0)
        else:
            row = (1, FORMAT_DSSS, spec.rate, spec.length_bytes, 0, 0, 1)
    elif spec.phy == "802.11g":
        row = (1, FORMAT_LEGACY, spec.rate, spec.length_bytes, 0, 0, 0)
    else:
        aggregated = int(bool(spec.mpdu_lengths))
        row = (1, FORMAT_HT, spec.rate, spec.length_bytes, aggregated, int(spec.short_gi), 0)
    out = np.array(row, np.float32)
    assert out.size == len(HEADER_FIELDS)
    return out


def agrees(decoded: np.ndarray, specs: list[PacketSpec]) -> np.ndarray:
    """(n,) bool: every field equal to `expected` (NaN where NaN is expected)."""
    want = np.stack([expected(s) for s in specs])
    same = (decoded == want) | (np.isnan(decoded) & np.isnan(want))
    return same.all(axis=1)


def _row(clean: np.ndarray, d: Draw, rng: np.random.Generator) -> np.ndarray:
    y = impair_packet(clean, d, rng, INPUT_LENGTH)
    row = np.zeros(INPUT_LENGTH, np.complex64)
    row[: y.size] = y
    return row


def draw_packets(
    phy: str,
    n: int,
    snr_db: tuple[float, float],
    seed: int,
    impairments: Impairments | None = None,
) -> tuple[np.ndarray, list[PacketSpec]]:
    """`n` rows (n, 3000) of `phy` frames of one BSS from `sample_spec` (every frame type equally
    likely), SNR uniform in `snr_db`, the default impairments (or `impairments`) otherwise."""
    if phy not in PHY.classes:
        raise ValueError(f"phy must be one of {PHY.classes}, got {phy!r}")
    rng = np.random.default_rng(seed)
    mix = TrafficMix(phy_by_frame={f: {phy: 1.0} for f in ("mgmt", "ctrl", "data")})
    imp = dataclasses.replace(impairments or Impairments(), snr_db=snr_db)
    bss = Bss.random(rng)
    rows, specs = [], []
    for _ in range(n):
        d = draw(imp, rng)
        spec = sample_spec(rng, mix, d.snr_db, bss)
        rows.append(_row(synthesize(spec, rng, max_samples=INPUT_LENGTH, bss=bss), d, rng))
        specs.append(spec)
    return np.stack(rows), specs


def draw_session_packets(
    n: int, snr_db: tuple[float, float], seed: int
) -> tuple[np.ndarray, list[PacketSpec]]:
    """`n` rows from capture sessions (one short session per app), frames whose SNR at the
    monitor lies in `snr_db`, spread evenly over the PHY formats the sessions produce, each
    impaired with its transmitter's radio (CFO, IQ imbalance, delay spread) as the dataset."""
    rng = np.random.default_rng(seed)
    imp = Impairments()
    pools: dict[str, list] = defaultdict(list)
    for i, app in enumerate(APP_PROFILES):
        p = draw_session(rng, app, i, snr_range_db=snr_db, duration_s=(2.0, 4.0))
        cap = simulate_session(p, rng)
        for f in cap.frames:
            if snr_db[0] <= f.snr_db <= snr_db[1]:
                pools[format_of(f.spec)].append((cap, f))
    kinds = sorted(pools)
    if not kinds:
        raise ValueError(f"the sessions gave no frame between {snr_db} dB")
    lo_off, hi_off = imp.timing_offset_samples
    rows, specs = [], []
    for j in range(n):
        pool = pools[kinds[j % len(kinds)]]
        cap, f = pool[int(rng.integers(len(pool)))]
        radio = cap.params.radios[f.tx]
        d = Draw(
            snr_db=f.snr_db,
            cfo_hz=radio.cfo_hz,
            rms_delay_spread_ns=radio.rms_delay_spread_ns,
            timing_offset_samples=int(rng.integers(lo_off, hi_off + 1)),
            gain_db=float(rng.uniform(*imp.gain_db)),
            iq_amplitude_db=radio.iq_amplitude_db,
            iq_phase_deg=radio.iq_phase_deg,
        )
        clean = synthesize(f.spec, rng, max_samples=INPUT_LENGTH, bss=cap.bss[f.bss])
        rows.append(_row(clean, d, rng))
        specs.append(f.spec)
    return np.stack(rows), specs

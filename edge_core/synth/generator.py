"""From packet specs to impaired L1 packets: the labelled-packet generator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge_core.schema import INPUT_LENGTH
from edge_core.synth import dsss, ofdm
from edge_core.synth.impairments import Draw, Impairments, draw, impair_packet
from edge_core.synth.mac import Bss, build_psdu, default_bss
from edge_core.synth.traffic import PacketSpec, TrafficMix, sample_spec


def synthesize(
    spec: PacketSpec,
    rng: np.random.Generator,
    max_samples: int | None = None,
    bss: Bss | None = None,
) -> np.ndarray:
    """The clean PPDU waveform of `spec` (complex64, 20 Msps, unit power), optionally cut short.

    The PSDU is the MAC frame `spec` describes in `bss` (whose sequence and packet numbers it
    advances); without a BSS, in a random one drawn from `rng`."""
    psdu = build_psdu(spec, bss if bss is not None else default_bss(spec, rng), rng)
    if spec.phy == "802.11b":
        return dsss.dsss_ppdu(psdu, spec.rate, spec.preamble, rng, max_samples=max_samples)
    if spec.phy == "802.11g":
        x = ofdm.legacy_ppdu(psdu, int(spec.rate), rng)
    else:
        # HT-SIG Aggregation is 1 only when the PSDU is an A-MPDU (19.3.9.4.3).
        aggregated = bool(spec.mpdu_lengths)
        x = ofdm.ht_ppdu(psdu, int(spec.rate), rng, short_gi=spec.short_gi, aggregation=aggregated)
    return x if max_samples is None else x[:max_samples]


def duration_samples(spec: PacketSpec) -> int:
    """Length in samples of the PPDU `synthesize(spec)` returns, without synthesising it."""
    if spec.phy == "802.11b":
        return dsss.ppdu_duration_samples(spec.length_bytes, spec.rate, spec.preamble)
    kind: Literal["legacy", "ht"] = "legacy" if spec.phy == "802.11g" else "ht"
    return ofdm.ppdu_duration_samples(kind, spec.length_bytes, int(spec.rate), spec.short_gi)


@dataclass(frozen=True)
class LabelledPacket:
    iq: np.ndarray  # (INPUT_LENGTH,) complex64, zero post-padded
    spec: PacketSpec
    draw: Draw
    n_samples: int  # samples before the zero padding


def generate_packets(
    n: int,
    rng: np.random.Generator,
    mix: TrafficMix | None = None,
    impairments: Impairments | None = None,
    length: int = INPUT_LENGTH,
) -> Iterator[LabelledPacket]:
    """`n` labelled packets drawn from the mix, impaired, padded/truncated to `length`.

    All `n` are frames of one BSS, so sequence and packet numbers advance across them."""
    mix = mix or TrafficMix()
    impairments = impairments or Impairments()
    bss = Bss.random(rng)
    for _ in range(n):
        d = draw(impairments, rng)
        spec = sample_spec(rng, mix, d.snr_db, bss)
        clean = synthesize(spec, rng, max_samples=length, bss=bss)
        y = impair_packet(clean, d, rng, length)
        iq = np.zeros(length, dtype=np.complex64)
        iq[: y.size] = y
        yield LabelledPacket(iq, spec, d, y.size)

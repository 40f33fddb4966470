"""From packet specs to impaired L1 packets: the labelled-packet generator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge_core.schema import INPUT_LENGTH
from edge_core.synth import dsss, ofdm
from edge_core.synth.impairments import Draw, Impairments, draw, impair_packet
from edge_core.synth.traffic import PacketSpec, TrafficMix, sample_spec


def random_psdu(length: int, rng: np.random.Generator) -> np.ndarray:
    """Random bytes: encrypted payloads look like noise at the PHY."""
    return rng.integers(0, 256, size=length, dtype=np.uint8)


def synthesize(
    spec: PacketSpec, rng: np.random.Generator, max_samples: int | None = None
) -> np.ndarray:
    """The clean PPDU waveform of `spec` (complex64, 20 Msps, unit power), optionally cut short."""
    psdu = random_psdu(spec.length_bytes, rng)
    if spec.phy == "802.11b":
        return dsss.dsss_ppdu(psdu, spec.rate, spec.preamble, rng, max_samples=max_samples)
    if spec.phy == "802.11g":
        x = ofdm.legacy_ppdu(psdu, int(spec.rate), rng)
    else:
        x = ofdm.ht_ppdu(psdu, int(spec.rate), rng, short_gi=spec.short_gi)
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
    """`n` labelled packets drawn from the mix, impaired, padded/truncated to `length`."""
    mix = mix or TrafficMix()
    impairments = impairments or Impairments()
    for _ in range(n):
        d = draw(impairments, rng)
        spec = sample_spec(rng, mix, d.snr_db)
        clean = synthesize(spec, rng, max_samples=length)
        y = impair_packet(clean, d, rng, length)
        iq = np.zeros(length, dtype=np.complex64)
        iq[: y.size] = y
        yield LabelledPacket(iq, spec, d, y.size)

"""Channel and radio impairments, each configurable and each switchable off.

Applied in the order a real link applies them: multipath channel, carrier frequency offset,
receiver IQ imbalance, thermal noise at the drawn SNR, receiver gain. SNR is per packet:
signal power (unit, from the PHY) over noise power in the 20 MHz channel.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from edge_core.schema import SAMPLE_RATE_HZ


@dataclass(frozen=True)
class Impairments:
    """Ranges are drawn uniformly per packet; a zero range turns that impairment off."""

    snr_db: tuple[float, float] = (5.0, 30.0)
    cfo_hz_max: float = 50e3  # +-20 ppm per side at 2.4 GHz gives up to ~ +-100 kHz
    rms_delay_spread_ns: tuple[float, float] = (0.0, 50.0)  # indoor, TGn models B-D: 15-50 ns
    timing_offset_samples: tuple[int, int] = (0, 32)  # noise before the first packet sample
    gain_db: tuple[float, float] = (-6.0, 6.0)
    iq_amplitude_imbalance_db_max: float = 0.5
    iq_phase_imbalance_deg_max: float = 3.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                if len(value) != 2 or value[0] > value[1]:
                    raise ValueError(
                        f"impairment {f.name}: need (low, high) with low <= high, got {value}"
                    )
                if f.name != "snr_db" and f.name != "gain_db" and value[0] < 0:
                    raise ValueError(f"impairment {f.name}: must be >= 0, got {value}")
            elif value < 0:
                raise ValueError(f"impairment {f.name}: must be >= 0, got {value}")

    @classmethod
    def none(cls, snr_db: float = 100.0) -> Impairments:
        """No impairment but (negligible) noise at `snr_db`."""
        return cls((snr_db, snr_db), 0.0, (0.0, 0.0), (0, 0), (0.0, 0.0), 0.0, 0.0)


@dataclass(frozen=True)
class Draw:
    """The impairment values drawn for one packet (kept for provenance)."""

    snr_db: float
    cfo_hz: float
    rms_delay_spread_ns: float
    timing_offset_samples: int
    gain_db: float
    iq_amplitude_db: float
    iq_phase_deg: float


def draw(imp: Impairments, rng: np.random.Generator) -> Draw:
    return Draw(
        snr_db=float(rng.uniform(*imp.snr_db)),
        cfo_hz=float(rng.uniform(-imp.cfo_hz_max, imp.cfo_hz_max)),
        rms_delay_spread_ns=float(rng.uniform(*imp.rms_delay_spread_ns)),
        timing_offset_samples=int(
            rng.integers(imp.timing_offset_samples[0], imp.timing_offset_samples[1] + 1)
        ),
        gain_db=float(rng.uniform(*imp.gain_db)),
        iq_amplitude_db=float(rng.uniform(-1, 1) * imp.iq_amplitude_imbalance_db_max),
        iq_phase_deg=float(rng.uniform(-1, 1) * imp.iq_phase_imbalance_deg_max),
    )


def multipath_taps(rms_delay_spread_ns: float, rng: np.random.Generator) -> np.ndarray:
    """Rayleigh taps of an exponential power-delay profile sampled at 50 ns (1/20 MHz)."""
    if rms_delay_spread_ns <= 0:
        return np.ones(1, dtype=np.complex64)
    ts_ns = 1e9 / SAMPLE_RATE_HZ
    n_taps = max(2, int(np.ceil(5 * rms_delay_spread_ns / ts_ns)) + 1)
    power = np.exp(-np.arange(n_taps) * ts_ns / rms_delay_spread_ns)  # (n_taps,)
    power /= power.sum()
    taps = (rng.standard_normal(n_taps) + 1j * rng.standard_normal(n_taps)) * np.sqrt(power / 2)
    taps /= np.sqrt(np.sum(np.abs(taps) ** 2))  # keep the packet's SNR as drawn
    return taps.astype(np.complex64)


def apply_channel(x: np.ndarray, d: Draw, rng: np.random.Generator) -> np.ndarray:
    """Multipath, CFO and IQ imbalance on a unit-power packet (no noise, no gain)."""
    taps = multipath_taps(d.rms_delay_spread_ns, rng)
    y = np.convolve(x, taps)[: x.size] if taps.size > 1 else x.astype(np.complex64, copy=True)
    if d.cfo_hz:
        phase0 = rng.uniform(0, 2 * np.pi)
        n = np.arange(y.size)
        y = y * np.exp(1j * (2 * np.pi * d.cfo_hz / SAMPLE_RATE_HZ * n + phase0))
    if d.iq_amplitude_db or d.iq_phase_deg:
        # Receiver IQ imbalance: y = mu*x + nu*conj(x) (amplitude g, phase phi on the Q branch).
        g = 10 ** (d.iq_amplitude_db / 20)
        phi = np.deg2rad(d.iq_phase_deg)
        mu = (1 + g * np.exp(-1j * phi)) / 2
        nu = (1 - g * np.exp(1j * phi)) / 2
        y = mu * y + nu * np.conj(y)
    return y.astype(np.complex64)


def complex_noise(n: int, power: float, rng: np.random.Generator) -> np.ndarray:
    """Circular complex Gaussian noise of the given mean power, complex64."""
    scale = np.sqrt(power / 2)
    out = np.empty(n, dtype=np.complex64)
    out.real = rng.standard_normal(n, dtype=np.float32) * scale
    out.imag = rng.standard_normal(n, dtype=np.float32) * scale
    return out


def impair_packet(x: np.ndarray, d: Draw, rng: np.random.Generator, length: int) -> np.ndarray:
    """The packet as a receiver would cut it: offset noise, channel, noise; first `length` samples.

    Noise covers the packet (and the leading timing offset) only; what follows a short packet is
    left to the caller's zero padding, as in the papers' pad_sequences(padding='post').
    """
    off = d.timing_offset_samples
    sig = apply_channel(x[: max(0, length - off)], d, rng)
    n = min(length, off + sig.size)
    noise_power = 10 ** (-d.snr_db / 10)
    y = complex_noise(n, noise_power, rng)  # (n,)
    y[off:n] += sig[: n - off]
    return y * np.float32(10 ** (d.gain_db / 20))

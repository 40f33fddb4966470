"""An 802.11 OFDM receiver: non-HT (clause 17, "802.11g") and HT-mixed (clause 19, 20 MHz,
one spatial stream, MCS 0-7, BCC, long or short GI), 20 Msps complex baseband -> PSDU bytes.

Written for testing the synthetic transmitter, so it shares no code with it: every constant
below is typed from IEEE Std 802.11-2016. The chain is the textbook one: L-STF delayed
autocorrelation (packet start, coarse CFO), L-LTF cross-correlation (symbol timing) and
repetition (fine CFO), channel estimate from the two L-LTF symbols (for HT data from the
HT-LTF), pilot common-phase tracking, L-SIG (RATE, LENGTH, parity), QBPSK detection and HT-SIG
(MCS, LENGTH, aggregation, short GI, CRC-8), soft demapping, deinterleaving, depuncturing,
Viterbi, descrambling from the SERVICE field's first 7 bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .bcc import depuncture, viterbi

FS_HZ = 20e6
N_FFT = 64


class DecodeError(Exception):
    """The receiver could not decode the packet; the message says at which stage and why."""


# --- clause 17 / 19 constants ----------------------------------------------------------------

# 17.3.3, Equation (17-8): L_{-26,26}.
_LTF = [
    1, 1, -1, -1, 1, 1, -1, 1, -1, 1, 1, 1, 1, 1, 1, -1, -1, 1, 1, -1, 1, -1, 1, 1, 1, 1, 0,
    1, -1, -1, 1, 1, -1, 1, -1, 1, -1, -1, -1, -1, -1, 1, 1, -1, -1, 1, -1, 1, -1, 1, 1, 1, 1,
]  # fmt: skip
# 19.3.9.4.6, Equation (19-22): HTLTF_{-28,28} for 20 MHz.
_HT_LTF = [1, 1, *_LTF, -1, -1]

# Table 17-6: RATE bits R1..R4 -> Mbit/s; Table 17-4: (N_BPSC, coding rate).
RATE_OF_BITS: dict[tuple[int, int, int, int], int] = {
    (1, 1, 0, 1): 6,
    (1, 1, 1, 1): 9,
    (0, 1, 0, 1): 12,
    (0, 1, 1, 1): 18,
    (1, 0, 0, 1): 24,
    (1, 0, 1, 1): 36,
    (0, 0, 0, 1): 48,
    (0, 0, 1, 1): 54,
}
LEGACY_MODES: dict[int, tuple[int, str]] = {
    6: (1, "1/2"),
    9: (1, "3/4"),
    12: (2, "1/2"),
    18: (2, "3/4"),
    24: (4, "1/2"),
    36: (4, "3/4"),
    48: (6, "2/3"),
    54: (6, "3/4"),
}
# Table 19-27 (20 MHz, N_SS = 1): MCS -> (N_BPSC, coding rate).
HT_MODES: tuple[tuple[int, str], ...] = (
    (1, "1/2"),
    (2, "1/2"),
    (2, "3/4"),
    (4, "1/2"),
    (4, "3/4"),
    (6, "2/3"),
    (6, "3/4"),
    (6, "5/6"),
)
_RATE_FRACTION = {"1/2": (1, 2), "2/3": (2, 3), "3/4": (3, 4), "5/6": (5, 6)}
# 17.3.5.8: K_MOD.
_KMOD = {1: 1.0, 2: 1 / np.sqrt(2), 4: 1 / np.sqrt(10), 6: 1 / np.sqrt(42)}

_PILOT_K = np.array([-21, -7, 7, 21])
_LEGACY_PILOT_VALUES = np.array([1.0, 1.0, 1.0, -1.0])  # P_{-21,-7,7,21} (17.3.5.10)
_HT_PSI = np.array([1.0, 1.0, 1.0, -1.0])  # Psi_{1,m} for N_STS = 1 (Table 19-19)
_LEGACY_DATA_K = np.array([k for k in range(-26, 27) if k != 0 and k not in _PILOT_K])  # (48,)
_HT_DATA_K = np.array([k for k in range(-28, 29) if k != 0 and k not in _PILOT_K])  # (52,)


def _scrambler_bits(state: int, n: int) -> np.ndarray:
    """x^7 + x^4 + 1 (Figure 17-7) from `state` (x1 as bit 6 ... x7 as bit 0), n output bits."""
    out = np.empty(n, np.uint8)
    x = [(state >> (6 - i)) & 1 for i in range(7)]  # x[0] = x1 ... x[6] = x7
    for i in range(n):
        b = x[3] ^ x[6]
        out[i] = b
        x = [b, *x[:6]]
    return out


# 17.3.5.10: p_0..p_126 is the scrambler sequence from the all-ones state, 0 -> +1, 1 -> -1.
PILOT_POLARITY = 1.0 - 2.0 * _scrambler_bits(0x7F, 127)


def _grid(values: list[int], half: int) -> np.ndarray:
    """Centred subcarriers -half..half -> (64,) FFT bins."""
    g = np.zeros(N_FFT, complex)
    g[np.arange(-half, half + 1) % N_FFT] = values
    return g


_LTF_BINS = _grid(_LTF, 26)
_HT_LTF_BINS = _grid(_HT_LTF, 28)
_LTF_TIME = np.fft.ifft(_LTF_BINS)  # (64,) one long training symbol (any scale)


def interleaver_permutation(n_cbps: int, n_bpsc: int, n_col: int) -> np.ndarray:
    """j(k): the position after interleaving of coded bit k (17.3.5.7; 19.3.11.8.2: 13 columns)."""
    k = np.arange(n_cbps)
    n_row = n_cbps // n_col
    i = n_row * (k % n_col) + k // n_col
    s = max(n_bpsc // 2, 1)
    return s * (i // s) + (i + n_cbps - (n_col * i) // n_cbps) % s


def crc8_ht_sig(bits: np.ndarray) -> np.ndarray:
    """CRC of 19.3.9.4.4: G(D) = D^8 + D^2 + D + 1, register preset to ones, output inverted,
    c7 first."""
    reg = [1] * 8  # reg[0] holds the coefficient of D^0
    for b in np.asarray(bits, np.uint8).tolist():
        fb = reg[7] ^ b
        reg = [fb, reg[0] ^ fb, reg[1] ^ fb, reg[2], reg[3], reg[4], reg[5], reg[6]]
    return np.array([1 - reg[i] for i in range(7, -1, -1)], np.uint8)


# --- soft demapping ---------------------------------------------------------------------------


def _axis_llr(x: np.ndarray, n_bits: int) -> list[np.ndarray]:
    """Max-log-like linear LLRs (log P(0)/P(1), up to a common scale) of the Gray bits of one
    axis, x in units of the constellation grid (odd integers), 17.3.5.8 bit orders."""
    if n_bits == 1:
        return [-x]
    if n_bits == 2:
        return [-x, np.abs(x) - 2]
    return [-x, np.abs(x) - 4, np.abs(np.abs(x) - 4) - 2]


def soft_demap(z: np.ndarray, weight: np.ndarray, n_bpsc: int) -> np.ndarray:
    """Equalised points (n, n_sd) -> soft bits (n, n_sd * n_bpsc) in subcarrier-major order."""
    scaled = z / _KMOD[n_bpsc]
    w = weight * _KMOD[n_bpsc] ** 2
    if n_bpsc == 1:
        parts = _axis_llr(scaled.real, 1)
    else:
        half = n_bpsc // 2
        parts = _axis_llr(scaled.real, half) + _axis_llr(scaled.imag, half)
    return (np.stack(parts, axis=-1) * w[..., None]).reshape(z.shape[0], -1)


# --- result -----------------------------------------------------------------------------------


@dataclass
class OfdmResult:
    """What the receiver decoded; `psdu` is None if only the SIGNAL fields could be read."""

    format: str  # "non_ht" or "ht_mixed"
    start: int  # sample index of the L-STF start estimate
    cfo_hz: float
    l_sig_rate_mbps: int
    l_sig_length: int
    mcs: int | None = None  # HT only
    ht_length: int | None = None
    aggregation: bool | None = None
    short_gi: bool | None = None
    ht_sig_bits: np.ndarray | None = None  # the 48 decoded HT-SIG bits
    service: int | None = None
    psdu: bytes | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate_or_mcs(self) -> float:
        return float(self.mcs) if self.mcs is not None else float(self.l_sig_rate_mbps)


# --- receiver ---------------------------------------------------------------------------------


def _detect(y: np.ndarray, threshold: float = 0.6) -> tuple[int, float]:
    """L-STF: first sample where the 16-lag autocorrelation stays high; coarse CFO (rad/sample)."""
    if y.size < 400:
        raise DecodeError(f"{y.size} samples: too short for an OFDM preamble")
    lag, win = 16, 64
    prod = y[:-lag] * np.conj(y[lag:])  # (n - 16,)
    energy = np.abs(y[lag:]) ** 2
    c = np.convolve(prod, np.ones(win), "valid")  # (n - 16 - 63,)
    p = np.convolve(energy, np.ones(win), "valid")
    metric = np.abs(c) / np.maximum(p, 1e-30)
    above = metric > threshold
    # Need the plateau to last: 64 consecutive samples above the threshold.
    run = np.convolve(above.astype(np.int32), np.ones(64, np.int32), "valid")
    hits = np.flatnonzero(run == 64)
    if hits.size == 0:
        raise DecodeError("packet detection: no L-STF autocorrelation plateau found")
    start = int(hits[0])
    plateau = c[start : start + 64].sum()
    return start, -float(np.angle(plateau)) / lag


def _rotate(y: np.ndarray, w: float) -> np.ndarray:
    return y * np.exp(-1j * w * np.arange(y.size))


def _fine_timing(y: np.ndarray, start: int) -> int:
    """Start of the first L-LTF long symbol (its 64 samples), slightly early for multipath."""
    lo = start
    hi = min(y.size - 128, start + 400)
    if hi <= lo:
        raise DecodeError("L-LTF: signal ends inside the preamble")
    seg = y[lo : hi + 128]
    xc = np.abs(np.correlate(seg, _LTF_TIME, "valid"))  # (len,) |sum seg[n+i] conj(ltf[i])|
    both = xc[: hi - lo] + xc[64 : 64 + hi - lo]  # both long symbols line up
    peak = int(np.argmax(both))
    # The peak sits on the strongest path; move to the earliest path of comparable strength.
    first = peak
    for d in range(1, 9):
        if peak - d >= 0 and both[peak - d] >= 0.35 * both[peak]:
            first = peak - d
    return lo + first - 2  # 2 samples into the guard interval


# Delay taps (in samples, relative to the FFT window start) the channel estimate may hold: the
# window starts 2 samples early, and indoor channels (tens of ns rms) end well within 16 taps.
_SMOOTH_TAPS = np.arange(-4, 13)


@lru_cache(maxsize=4)
def _projection(used_bins: tuple[int, ...]) -> np.ndarray:
    k = np.array(used_bins)
    kc = np.where(k >= 32, k - 64, k)  # centred subcarrier index
    f = np.exp(-2j * np.pi * np.outer(kc, _SMOOTH_TAPS) / N_FFT)  # (n_used, n_taps)
    return f @ np.linalg.pinv(f)  # (n_used, n_used) least-squares projection


def smooth_channel(h: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Project a per-subcarrier estimate on the used bins onto a short impulse response (least
    squares over `_SMOOTH_TAPS` delays): the estimation noise drops by about used/taps."""
    k = np.flatnonzero(used)
    out = np.zeros_like(h)
    out[k] = (_projection(tuple(k.tolist())) * h[k][None, :]).sum(axis=1)  # no BLAS threads
    return out


def _fft_symbols(y: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """FFT of the 64-sample windows starting at `starts` -> (n, 64) bins."""
    if starts.size and starts[-1] + N_FFT > y.size:
        raise DecodeError(
            f"signal ends at sample {y.size}, before OFDM symbol {starts.size} (needs up to "
            f"{starts[-1] + N_FFT})"
        )
    idx = starts[:, None] + np.arange(N_FFT)[None, :]
    return np.fft.fft(y[idx], axis=1)


def _equalise(
    bins: np.ndarray, h: np.ndarray, data_k: np.ndarray, pilot_values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-symbol common phase from pilots, then zero-forcing on data subcarriers.

    bins (n, 64), h (64,), pilot_values (n, 4) -> equalised data (n, n_sd), CSI weights (n_sd,)."""
    pb = _PILOT_K % N_FFT
    ref = h[pb][None, :] * pilot_values  # (n, 4) expected pilots
    cpe = np.sum(bins[:, pb] * np.conj(ref), axis=1)  # (n,)
    rot = np.exp(-1j * np.angle(cpe))[:, None]
    db = data_k % N_FFT
    hd = h[db]  # (n_sd,)
    z = bins[:, db] * rot / hd[None, :]
    return z, np.abs(hd) ** 2


def _decode_bcc_symbols(
    z: np.ndarray, w: np.ndarray, n_bpsc: int, rate: str, n_col: int, n_bits: int
) -> np.ndarray:
    """Equalised data (n_sym, n_sd) -> the first `n_bits` decoded bits, through demap,
    deinterleave, Viterbi. The encoder is in state 0 after bit `n_bits` (the tail's end): the
    pad bits after it are scrambled, so the trellis is cut and terminated there."""
    soft = soft_demap(z, w[None, :], n_bpsc)  # (n_sym, n_cbps)
    perm = interleaver_permutation(soft.shape[1], n_bpsc, n_col)
    deint = soft[:, perm].reshape(-1)  # coded bit k was sent at position perm[k]
    mother = depuncture(deint, rate)
    if mother.size < 2 * n_bits:
        raise DecodeError(f"{mother.size // 2} coded steps, fewer than the {n_bits} bits needed")
    return viterbi(mother[: 2 * n_bits], terminated=True)


def _evm_db(z: np.ndarray, w: np.ndarray, n_bpsc: int) -> float:
    """Channel-weighted error to the nearest constellation point, dB below unit signal power."""
    k = _KMOD[n_bpsc]
    if n_bpsc == 1:
        ref = np.sign(z.real)
    else:
        m = 1 << (n_bpsc // 2)
        lim = m - 1

        def snap(v: np.ndarray) -> np.ndarray:
            return np.clip(2 * np.floor(v / 2) + 1, -lim, lim)

        ref = snap(z.real / k) * k + 1j * snap(z.imag / k) * k
    err = np.abs(z - ref) ** 2 * w[None, :]
    return float(10 * np.log10(max(err.sum() / (w.sum() * z.shape[0]), 1e-30)))


def _bits_value(bits: np.ndarray) -> int:
    return int(np.sum(bits.astype(np.int64) << np.arange(bits.size)))


def _descramble(bits: np.ndarray) -> np.ndarray:
    """Descramble a DATA field: the first 7 SERVICE bits are zeros before scrambling, so the
    received ones are the scrambler output itself, and the rest of its 127-bit period follows
    s[n] = s[n-4] ^ s[n-7] (Figure 17-7)."""
    if bits.size < 7:
        raise DecodeError("DATA field shorter than the SERVICE field")
    period = np.empty(127, np.uint8)
    period[:7] = bits[:7]
    for i in range(7, 127):
        period[i] = period[i - 4] ^ period[i - 7]
    reps = -(-bits.size // 127)
    return bits ^ np.tile(period, reps)[: bits.size]


def receive(y: np.ndarray, fs_hz: float = FS_HZ, sig_only: bool = False) -> OfdmResult:
    """Decode one OFDM PPDU from complex baseband `y` at 20 Msps (noise before it is fine).

    `sig_only`: stop after L-SIG / HT-SIG (psdu None), e.g. for a packet cut to a window."""
    if fs_hz != FS_HZ:
        raise ValueError(f"the OFDM receiver takes 20 Msps, got {fs_hz}")
    y = np.asarray(y, dtype=np.complex128)
    start, w_coarse = _detect(y)
    y1 = _rotate(y, w_coarse)
    t1 = _fine_timing(y1, start)  # first long symbol, 2 samples early
    if t1 + 128 + 80 > y1.size:
        raise DecodeError("signal ends inside the L-LTF/L-SIG")
    l1, l2 = y1[t1 : t1 + 64], y1[t1 + 64 : t1 + 128]
    w_fine = -float(np.angle(np.vdot(l2, l1))) / 64  # angle(sum l1 conj(l2)) = -64 w
    w = w_coarse + w_fine
    y2 = _rotate(y1, w_fine)
    ltf = np.fft.fft(np.stack([y2[t1 : t1 + 64], y2[t1 + 64 : t1 + 128]]), axis=1)  # (2, 64)
    used = _LTF_BINS != 0
    h_l = np.zeros(N_FFT, complex)
    h_l[used] = ltf.mean(axis=0)[used] / _LTF_BINS[used]
    h_raw = h_l.copy()
    h_l = smooth_channel(h_l, used)
    noise = np.mean(np.abs(ltf[0, used] - ltf[1, used]) ** 2) / 2
    signal = np.mean(np.abs(h_raw[used]) ** 2)
    snr_db = float(10 * np.log10(max(signal / max(noise, 1e-30), 1e-30)))

    # L-SIG: one BPSK rate-1/2 symbol, pilots polarity p_0.
    sig_start = t1 + 128 + 16
    sig = _fft_symbols(y2, np.array([sig_start]))
    z, wt = _equalise(sig, h_l, _LEGACY_DATA_K, PILOT_POLARITY[0] * _LEGACY_PILOT_VALUES[None, :])
    lsig = _decode_bcc_symbols(z, wt, 1, "1/2", 16, 24)  # (24,)
    rate_bits = tuple(int(b) for b in lsig[:4])
    if lsig[:18].sum() % 2:
        raise DecodeError(f"L-SIG parity fails (bits {lsig.tolist()})")
    if rate_bits not in RATE_OF_BITS:
        raise DecodeError(f"L-SIG RATE bits {rate_bits} are not a Table 17-6 rate")
    rate = RATE_OF_BITS[rate_bits]
    l_length = _bits_value(lsig[5:17])
    result = OfdmResult("non_ht", start, w * FS_HZ / (2 * np.pi), rate, l_length)
    result.extra["snr_db"] = snr_db

    # HT-mixed? L-SIG at 6 Mbit/s and the next symbol's data on the Q axis (QBPSK).
    is_ht = False
    if rate == 6 and sig_start + 80 + 64 <= y2.size:
        nxt = _fft_symbols(y2, np.array([sig_start + 80]))
        zq, _ = _equalise(
            nxt, h_l, _LEGACY_DATA_K, PILOT_POLARITY[1] * _LEGACY_PILOT_VALUES[None, :]
        )
        is_ht = float(np.sum(zq.imag**2)) > 2 * float(np.sum(zq.real**2))
    if not is_ht:
        if sig_only:
            return result
        if l_length == 0:
            raise DecodeError("L-SIG LENGTH is 0")
        n_bpsc, code = LEGACY_MODES[rate]
        num, den = _RATE_FRACTION[code]
        n_dbps = 48 * n_bpsc * num // den
        n_sym = -(-(16 + 8 * l_length + 6) // n_dbps)
        starts = sig_start + 80 * (1 + np.arange(n_sym))
        bins = _fft_symbols(y2, starts)
        pilots = PILOT_POLARITY[(1 + np.arange(n_sym)) % 127][:, None] * _LEGACY_PILOT_VALUES
        z, wt = _equalise(bins, h_l, _LEGACY_DATA_K, pilots)
        result.extra["evm_db"] = _evm_db(z, wt, n_bpsc)
        bits = _decode_bcc_symbols(z, wt, n_bpsc, code, 16, 16 + 8 * l_length + 6)
        return _finish(result, bits, l_length)

    # HT-SIG1, HT-SIG2: BPSK rotated by 90 degrees, pilots p_1, p_2 unrotated.
    hs = _fft_symbols(y2, sig_start + 80 * np.array([1, 2]))
    pol = PILOT_POLARITY[[1, 2]][:, None] * _LEGACY_PILOT_VALUES
    z, wt = _equalise(hs, h_l, _LEGACY_DATA_K, pol)
    ht = _decode_bcc_symbols(z * -1j, wt, 1, "1/2", 16, 48)  # (48,)
    crc_ok = bool(np.array_equal(crc8_ht_sig(ht[:34]), ht[34:42]))
    result.format = "ht_mixed"
    result.ht_sig_bits = ht
    result.mcs = _bits_value(ht[0:7])
    result.ht_length = _bits_value(ht[8:24])
    result.aggregation = bool(ht[27])
    result.short_gi = bool(ht[31])
    if not crc_ok:
        raise DecodeError(f"HT-SIG CRC-8 fails (bits {ht.tolist()})")
    if ht[7] or result.mcs > 7 or _bits_value(ht[28:30]) or ht[30]:
        raise DecodeError(
            f"HT-SIG asks for what this receiver does not do: MCS {result.mcs}, "
            f"CBW40 {ht[7]}, STBC {_bits_value(ht[28:30])}, LDPC {ht[30]}"
        )
    if sig_only:
        return result
    if result.ht_length == 0:
        raise DecodeError("HT-SIG LENGTH is 0 (NDP)")
    # HT-STF (80) then one HT-LTF (16 GI + 64): channel for the 56 tones of the HT data.
    ltf_start = sig_start + 80 * 4  # past L-SIG, HT-SIG1/2 and HT-STF, at the HT-LTF's 64
    hl = _fft_symbols(y2, np.array([ltf_start]))[0]
    used_ht = _HT_LTF_BINS != 0
    h_ht = np.zeros(N_FFT, complex)
    h_ht[used_ht] = hl[used_ht] / _HT_LTF_BINS[used_ht]
    # The L-LTF saw the same channel at another field scale (1/sqrt(52) vs 1/sqrt(56) tones):
    # fit that complex ratio and average the two estimates on the common subcarriers.
    ratio = np.vdot(h_raw[used], h_ht[used]) / np.vdot(h_raw[used], h_raw[used])
    h_ht[used] = (h_ht[used] + 2 * ratio * h_raw[used]) / 3
    h_ht = smooth_channel(h_ht, used_ht)
    n_bpsc, code = HT_MODES[result.mcs]
    num, den = _RATE_FRACTION[code]
    n_dbps = 52 * n_bpsc * num // den
    n_sym = -(-(8 * result.ht_length + 16 + 6) // n_dbps)
    gi = 8 if result.short_gi else 16
    data0 = ltf_start + 64  # first HT data symbol starts here (its GI first)
    starts = data0 + (64 + gi) * np.arange(n_sym) + gi
    bins = _fft_symbols(y2, starts)
    n = np.arange(n_sym)
    psi = _HT_PSI[(n[:, None] + np.arange(4)[None, :]) % 4]  # (n_sym, 4) 19.3.11.10
    pilots = PILOT_POLARITY[(n + 3) % 127][:, None] * psi
    z, wt = _equalise(bins, h_ht, _HT_DATA_K, pilots)
    result.extra["evm_db"] = _evm_db(z, wt, n_bpsc)
    bits = _decode_bcc_symbols(z, wt, n_bpsc, code, 13, 16 + 8 * result.ht_length + 6)
    return _finish(result, bits, result.ht_length)


def _finish(result: OfdmResult, bits: np.ndarray, length: int) -> OfdmResult:
    plain = _descramble(bits)
    result.service = _bits_value(plain[:16])
    if plain[7:16].any():
        raise DecodeError(f"SERVICE reserved bits are not zero: {plain[:16].tolist()}")
    psdu_bits = plain[16 : 16 + 8 * length]
    result.psdu = np.packbits(psdu_bits, bitorder="little").tobytes()
    return result

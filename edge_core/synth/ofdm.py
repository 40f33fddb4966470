"""IEEE 802.11 OFDM transmitters at 20 Msps: non-HT (clause 17, "802.11g") and HT-mixed
(clause 19, "802.11n": 1 spatial stream, 20 MHz, MCS 0-7, BCC).

References are to IEEE Std 802.11-2016. The PSDU bits are the caller's (random bytes stand in for
WPA2-encrypted payloads); everything around them follows the standard: SERVICE, scrambler, tail
and pad bits, BCC with puncturing, interleaver, Gray constellations, pilots with the polarity
sequence, cyclic prefixes, the preambles and the SIGNAL fields.

Conventions:
* Subcarrier k (-32..31) sits in FFT bin k mod 64; time domain is the inverse DFT (Annex I).
* Each field is scaled to unit mean power (clause 19's 1/sqrt(N_tone) field normalisation, which
  for clause 17 is the plain IFFT with its sqrt(13/6) L-STF boost), so fields keep the standard's
  relative levels; the finished packet is then rescaled to mean |x|^2 = 1 exactly.
* No time-domain windowing (17.3.2 gives its window only as an example): at 20 Msps the
  100 ns transition of that window touches only the first sample of each symbol (Annex I.1
  shows it as a half-sum), and leaving it out keeps every field an exact multiple of 80 samples.
  Spectral shaping of real radios is their filters', not modelled here.
* The 6 us signal extension of 2.4 GHz ERP-OFDM/HT is idle air, not part of the waveform.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

CodeRate = Literal["1/2", "2/3", "3/4", "5/6"]

N_FFT = 64
LEGACY_RATES_MBPS: tuple[int, ...] = (6, 9, 12, 18, 24, 36, 48, 54)
HT_MCS_MAX = 7

_SYMBOL = 80  # 4 us: 16-sample guard interval + 64
_GI_SHORT = 8  # 400 ns
_LEGACY_PREAMBLE = 400  # L-STF, L-LTF, SIGNAL: 20 us
_HT_PREAMBLE = 720  # L-STF, L-LTF, L-SIG, HT-SIG1/2, HT-STF, one HT-LTF: 36 us
_HT_MAX_TXTIME_US = 5484  # L-SIG LENGTH <= 4095 at 6 Mbps (19.3.9.3.5)

# Puncturing keep-masks over the A0 B0 A1 B1 ... stream (17.3.5.6, 19.3.11.6 for 5/6).
_PUNCTURE: dict[str, tuple[int, ...]] = {
    "1/2": (1, 1),
    "2/3": (1, 1, 1, 0),  # A0 B0 A1
    "3/4": (1, 1, 1, 0, 0, 1),  # A0 B0 A1 B2
    "5/6": (1, 1, 1, 0, 0, 1, 1, 0, 0, 1),  # A0 B0 A1 B2 A3 B4
}


@dataclass(frozen=True)
class _Mode:
    n_bpsc: int  # coded bits per subcarrier
    rate: CodeRate
    n_sd: int  # data subcarriers

    @property
    def n_cbps(self) -> int:
        return self.n_bpsc * self.n_sd

    @property
    def n_dbps(self) -> int:
        num, den = (int(v) for v in self.rate.split("/"))
        return self.n_cbps * num // den


# Table 17-4 (rate-dependent parameters) and the RATE bits R1-R4 of Table 17-6.
_LEGACY_MODES: dict[int, _Mode] = {
    6: _Mode(1, "1/2", 48),
    9: _Mode(1, "3/4", 48),
    12: _Mode(2, "1/2", 48),
    18: _Mode(2, "3/4", 48),
    24: _Mode(4, "1/2", 48),
    36: _Mode(4, "3/4", 48),
    48: _Mode(6, "2/3", 48),
    54: _Mode(6, "3/4", 48),
}
_RATE_BITS: dict[int, tuple[int, int, int, int]] = {
    6: (1, 1, 0, 1),
    9: (1, 1, 1, 1),
    12: (0, 1, 0, 1),
    18: (0, 1, 1, 1),
    24: (1, 0, 0, 1),
    36: (1, 0, 1, 1),
    48: (0, 0, 0, 1),
    54: (0, 0, 1, 1),
}
# HT MCS parameters (19.5): MCS 0-7, 1 spatial stream, 20 MHz.
_HT_MODES: tuple[_Mode, ...] = (
    _Mode(1, "1/2", 52),
    _Mode(2, "1/2", 52),
    _Mode(2, "3/4", 52),
    _Mode(4, "1/2", 52),
    _Mode(4, "3/4", 52),
    _Mode(6, "2/3", 52),
    _Mode(6, "3/4", 52),
    _Mode(6, "5/6", 52),
)

PILOT_SUBCARRIERS = np.array([-21, -7, 7, 21])
LEGACY_DATA_SUBCARRIERS = np.array(
    [k for k in range(-26, 27) if k != 0 and k not in (-21, -7, 7, 21)]
)  # (48,) in the order d_0..d_47 are mapped (17.3.5.10)
HT_DATA_SUBCARRIERS = np.array(
    [k for k in range(-28, 29) if k != 0 and k not in (-21, -7, 7, 21)]
)  # (52,) 19.3.11.10
_PILOT_BINS = PILOT_SUBCARRIERS % N_FFT
_LEGACY_DATA_BINS = LEGACY_DATA_SUBCARRIERS % N_FFT
_HT_DATA_BINS = HT_DATA_SUBCARRIERS % N_FFT
_LEGACY_PILOTS = np.array([1.0, 1.0, 1.0, -1.0])  # P_{-21,-7,7,21} (17.3.5.10)
_HT_PILOT_PSI = np.array([1.0, 1.0, 1.0, -1.0])  # Psi for N_STS = 1 (19.3.11.10)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# --- scrambler and pilot polarity ------------------------------------------------------------


def _scrambler_period() -> tuple[np.ndarray, np.ndarray]:
    """One 127-bit period of x^7 + x^4 + 1 from the all-ones state, and each state's offset."""
    # State as a 7-bit int with x1 the MSB (bit 6) and x7 the LSB, so seed 0b1011101 is the
    # Annex I.1 initial state x1..x7 = 1011101.
    seq = np.empty(127, dtype=np.uint8)
    offset = np.zeros(128, dtype=np.int64)
    state = 0x7F
    for k in range(127):  # once at import, not per packet
        offset[state] = k
        out = ((state >> 3) ^ state) & 1  # x4 xor x7 (Figure 17-7)
        seq[k] = out
        state = (out << 6) | (state >> 1)
    return seq, offset


_SCRAMBLER_SEQ, _SCRAMBLER_OFFSET = _scrambler_period()

PILOT_POLARITY: np.ndarray = _readonly(1.0 - 2.0 * _SCRAMBLER_SEQ)
"""p_0..p_126 (17.3.5.10): the all-ones scrambler sequence with 0 -> +1, 1 -> -1."""


def scrambler_sequence(seed: int, n: int) -> np.ndarray:
    """The first `n` scrambler output bits from initial state `seed` (1-127, x1 as MSB)."""
    if not 1 <= seed <= 127:
        raise ValueError(f"scrambler seed must be 1..127, got {seed}")
    idx = (_SCRAMBLER_OFFSET[seed] + np.arange(n)) % 127  # (n,)
    return _SCRAMBLER_SEQ[idx]


def scramble(bits: np.ndarray, seed: int) -> np.ndarray:
    """XOR `bits` with the 802.11 scrambler started from `seed` (scrambling = descrambling)."""
    b = np.asarray(bits, dtype=np.uint8)
    return b ^ scrambler_sequence(seed, b.size)


# --- BCC, interleaver, constellation ---------------------------------------------------------


def bcc_encode(bits: np.ndarray, rate: CodeRate = "1/2") -> np.ndarray:
    """K=7 convolutional code g0=133o, g1=171o from the zero state, punctured to `rate`."""
    if rate not in _PUNCTURE:
        raise ValueError(f"unknown code rate {rate!r}")
    b = np.asarray(bits, dtype=np.uint8)
    n = b.size
    d = np.concatenate((np.zeros(6, dtype=np.uint8), b))  # (n + 6,), d[6 + i - t] = b[i - t]
    # g0 = 1011011: delays 0, 2, 3, 5, 6; g1 = 1111001: delays 0, 1, 2, 3, 6.
    a = d[6:] ^ d[4 : 4 + n] ^ d[3 : 3 + n] ^ d[1 : 1 + n] ^ d[:n]  # (n,)
    c = d[6:] ^ d[5 : 5 + n] ^ d[4 : 4 + n] ^ d[3 : 3 + n] ^ d[:n]  # (n,)
    coded = np.stack((a, c), axis=1).reshape(-1)  # (2n,) A0 B0 A1 B1 ...
    keep = np.flatnonzero(_PUNCTURE[rate])
    period = len(_PUNCTURE[rate])
    if coded.size % period:
        raise ValueError(f"{n} bits is not a whole number of rate-{rate} puncturing periods")
    return coded.reshape(-1, period)[:, keep].reshape(-1)


@lru_cache(maxsize=32)
def _interleaver_map(n_cbps: int, n_bpsc: int, n_col: int) -> tuple[np.ndarray, np.ndarray]:
    """(j, inverse of j): coded bit k goes to position j[k] (17.3.5.7; 19.3.11.8: 13 columns)."""
    if n_cbps % n_col:
        raise ValueError(f"n_cbps {n_cbps} is not a multiple of {n_col} columns")
    k = np.arange(n_cbps)
    n_row = n_cbps // n_col
    i = n_row * (k % n_col) + k // n_col  # adjacent bits onto non-adjacent subcarriers
    s = max(n_bpsc // 2, 1)
    j = s * (i // s) + (i + n_cbps - (n_col * i) // n_cbps) % s  # alternate bit significance
    return _readonly(j), _readonly(np.argsort(j))


def interleave(bits: np.ndarray, n_cbps: int, n_bpsc: int, n_col: int = 16) -> np.ndarray:
    """Block-interleave each `n_cbps` coded bits; `n_col` is 16 for clause 17, 13 for HT 20 MHz."""
    _, inv = _interleaver_map(n_cbps, n_bpsc, n_col)
    b = np.asarray(bits).reshape(-1, n_cbps)  # (n_sym, n_cbps)
    return b[:, inv].reshape(-1)


def deinterleave(bits: np.ndarray, n_cbps: int, n_bpsc: int, n_col: int = 16) -> np.ndarray:
    """Inverse of `interleave`."""
    j, _ = _interleaver_map(n_cbps, n_bpsc, n_col)
    b = np.asarray(bits).reshape(-1, n_cbps)  # (n_sym, n_cbps)
    return b[:, j].reshape(-1)


@lru_cache(maxsize=8)
def _constellation(n_bpsc: int) -> np.ndarray:
    """Points indexed by the n_bpsc bits read b0-first as a binary number (17.3.5.8 tables)."""
    if n_bpsc == 1:
        return _readonly(np.array([-1, 1], dtype=np.complex64))
    if n_bpsc not in (2, 4, 6):
        raise ValueError(f"n_bpsc must be 1, 2, 4 or 6, got {n_bpsc}")
    half = n_bpsc // 2
    m = 1 << half
    level = np.arange(m)
    axis = np.empty(m)
    axis[level ^ (level >> 1)] = 2 * level - (m - 1)  # Gray: axis value of each bit pattern
    norm = {2: 1 / np.sqrt(2), 4: 1 / np.sqrt(10), 6: 1 / np.sqrt(42)}[n_bpsc]  # K_MOD
    idx = np.arange(1 << n_bpsc)
    points = (axis[idx >> half] + 1j * axis[idx & (m - 1)]) * norm  # I from b0.., Q from the rest
    return _readonly(points.astype(np.complex64))


def map_constellation(bits: np.ndarray, n_bpsc: int) -> np.ndarray:
    """BPSK/QPSK/16-QAM/64-QAM Gray mapping with K_MOD normalisation (unit mean energy)."""
    table = _constellation(n_bpsc)
    b = np.asarray(bits, dtype=np.uint8).reshape(-1, n_bpsc)  # (n_points, n_bpsc)
    idx = b[:, 0].astype(np.intp)  # b0 is the most significant bit of the table index
    for col in range(1, n_bpsc):
        idx = (idx << 1) | b[:, col]
    return table[idx]  # (n_points,) complex64


# --- preambles -------------------------------------------------------------------------------

# S_{-26,26} / sqrt(13/6) (17.3.3): signs of 1+j on every 4th subcarrier.
_STF_SIGNS = {
    -24: 1, -20: -1, -16: 1, -12: -1, -8: -1, -4: 1, 4: -1, 8: -1, 12: 1, 16: 1, 20: 1, 24: 1
}  # fmt: skip
# L_{-26,26} (17.3.3) as signs.
_LTF_SIGNS = "++--++-+-++++++--++-+-++++0+--++-+-+-----++--+-+-++++"


def l_stf_subcarriers() -> np.ndarray:
    """S_{-26..26} (53,): sqrt(13/6)(+-1+-j) on every 4th subcarrier (17.3.3)."""
    s = np.zeros(53, dtype=complex)
    for k, sign in _STF_SIGNS.items():
        s[k + 26] = sign * np.sqrt(13 / 6) * (1 + 1j)
    return s


def l_ltf_subcarriers() -> np.ndarray:
    """L_{-26..26} (53,) (17.3.3)."""
    return np.array([{"+": 1, "-": -1, "0": 0}[c] for c in _LTF_SIGNS], dtype=complex)


def ht_ltf_subcarriers() -> np.ndarray:
    """HTLTF_{-28..28} (57,) for 20 MHz: {1, 1, L_{-26..26}, -1, -1} (19.3.9.4.6)."""
    return np.concatenate(([1, 1], l_ltf_subcarriers(), [-1, -1])).astype(complex)


def _to_bins(values: np.ndarray) -> np.ndarray:
    """Centred subcarrier values k = -n..n onto a (64,) FFT-bin vector."""
    half = values.size // 2
    grid = np.zeros(N_FFT, dtype=complex)
    grid[np.arange(-half, half + 1) % N_FFT] = values
    return grid


def _ofdm_into(out: np.ndarray, freq: np.ndarray, gi: int, n_tones: int) -> None:
    """Write the symbols of `freq` (n_sym, 64) bins into `out` (n_sym * (gi + 64),) with GIs.

    Scaled by 64/sqrt(n_tones) so a field of n_tones unit-energy subcarriers has unit power.
    """
    sym = out.reshape(-1, gi + N_FFT)  # (n_sym, gi + 64) view
    np.multiply(np.fft.ifft(freq, axis=-1), N_FFT / np.sqrt(n_tones), out=sym[:, gi:])
    sym[:, :gi] = sym[:, N_FFT:]  # cyclic prefix: the last gi samples


def _gather_index(data_bins: np.ndarray) -> np.ndarray:
    """For each FFT bin, its column in [data..., 4 pilots, 0] (see `_symbol_grid`)."""
    n_sd = data_bins.size
    idx = np.full(N_FFT, n_sd + 4)  # unused bins read the zero column
    idx[data_bins] = np.arange(n_sd)
    idx[_PILOT_BINS] = n_sd + np.arange(4)
    return _readonly(idx)


_LEGACY_GATHER = _gather_index(_LEGACY_DATA_BINS)
_HT_GATHER = _gather_index(_HT_DATA_BINS)


def _symbol_grid(points: np.ndarray, pilots: np.ndarray, gather: np.ndarray) -> np.ndarray:
    """Data (n_sym, n_sd) and pilots (n_sym, 4) onto FFT bins (n_sym, 64), complex64."""
    n_sym, n_sd = points.shape
    src = np.empty((n_sym, n_sd + 5), dtype=np.complex64)
    src[:, :n_sd] = points
    src[:, n_sd : n_sd + 4] = pilots
    src[:, -1] = 0
    return src[:, gather]  # a gather is cheaper than scattering into a zeroed grid


def _build_preambles() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    stf = np.fft.ifft(_to_bins(l_stf_subcarriers())) * (N_FFT / np.sqrt(52))  # (64,) 16-periodic
    ltf = np.fft.ifft(_to_bins(l_ltf_subcarriers())) * (N_FFT / np.sqrt(52))  # (64,)
    l_stf = np.tile(stf, 3)[:160]  # ten 0.8 us short symbols
    l_ltf = np.concatenate((ltf[32:], ltf, ltf))  # GI2 (32) + two long symbols
    ht_ltf = np.empty(80, dtype=complex)
    _ofdm_into(ht_ltf, _to_bins(ht_ltf_subcarriers())[None, :], 16, 56)
    return _readonly(l_stf), _readonly(l_ltf), _readonly(ht_ltf)


_L_STF, _L_LTF, _HT_LTF = _build_preambles()
_LEGACY_TRAINING = _readonly(np.concatenate((_L_STF, _L_LTF)))  # (320,)
# In 20 MHz the HT-STF uses the L-STF subcarriers (19.3.9.4.5), so its 4 us are the first 80
# samples of the 16-periodic L-STF.
_HT_TRAINING = _readonly(np.concatenate((_L_STF[:80], _HT_LTF)))  # (160,)


def l_stf() -> np.ndarray:
    """The L-STF (160,) complex, unit mean power: 10 repetitions of a 16-sample short symbol."""
    return _L_STF.copy()


def l_ltf() -> np.ndarray:
    """The L-LTF (160,) complex, unit mean power: 32-sample GI2 then two 64-sample symbols."""
    return _L_LTF.copy()


def ht_stf() -> np.ndarray:
    """The HT-STF (80,) for 20 MHz, 1 stream, unit mean power."""
    return _L_STF[:80].copy()


def ht_ltf() -> np.ndarray:
    """One HT-LTF (80,) for 20 MHz, 1 stream, unit mean power."""
    return _HT_LTF.copy()


# --- SIGNAL fields ---------------------------------------------------------------------------


def _lsb_first(value: int, n: int) -> np.ndarray:
    return ((value >> np.arange(n)) & 1).astype(np.uint8)


def l_sig_bits(rate_mbps: int, length: int) -> np.ndarray:
    """The 24 SIGNAL bits (17.3.4): RATE R1-R4, reserved, LENGTH LSB first, even parity, tail."""
    if rate_mbps not in _RATE_BITS:
        raise ValueError(f"legacy rate must be one of {LEGACY_RATES_MBPS}, got {rate_mbps}")
    if not 0 <= length <= 4095:
        raise ValueError(f"L-SIG LENGTH must be 0..4095, got {length}")
    bits = np.zeros(24, dtype=np.uint8)
    bits[0:4] = _RATE_BITS[rate_mbps]
    bits[5:17] = _lsb_first(length, 12)
    bits[17] = int(bits[:17].sum()) & 1  # int(): NumPy 1.x has no uint64 & int (NumPy < 2 on a Pi)
    return bits


def crc8_ht_sig(bits: np.ndarray) -> np.ndarray:
    """HT-SIG CRC (19.3.9.4.4): x^8+x^2+x+1 from all ones, complemented, c7 first (8,)."""
    c = 0xFF
    for b in np.asarray(bits, dtype=np.uint8).tolist():  # 34 bits per packet
        feedback = ((c >> 7) ^ b) & 1
        c = ((c << 1) & 0xFF) ^ (0x07 * feedback)
    return ((~c >> np.arange(7, -1, -1)) & 1).astype(np.uint8)


def ht_sig_bits(
    mcs: int,
    length: int,
    *,
    cbw40: bool = False,
    smoothing: bool = True,
    not_sounding: bool = True,
    aggregation: bool = False,
    stbc: int = 0,
    ldpc: bool = False,
    short_gi: bool = False,
    n_ess: int = 0,
) -> np.ndarray:
    """HT-SIG1 then HT-SIG2 (48,) (19.3.9.4.3), CRC over bits 0-33, 6 tail bits."""
    if not 0 <= mcs <= 127 or not 0 <= length <= 65535 or not 0 <= stbc <= 3:
        raise ValueError(f"HT-SIG field out of range: mcs={mcs} length={length} stbc={stbc}")
    if not 0 <= n_ess <= 3:
        raise ValueError(f"n_ess must be 0..3, got {n_ess}")
    bits = np.zeros(48, dtype=np.uint8)
    bits[0:7] = _lsb_first(mcs, 7)
    bits[7] = cbw40
    bits[8:24] = _lsb_first(length, 16)
    bits[24] = smoothing
    bits[25] = not_sounding
    bits[26] = 1  # reserved, set to 1
    bits[27] = aggregation
    bits[28:30] = _lsb_first(stbc, 2)
    bits[30] = ldpc
    bits[31] = short_gi
    bits[32:34] = _lsb_first(n_ess, 2)
    bits[34:42] = crc8_ht_sig(bits[:34])
    return bits


def _sig_symbols(bits: np.ndarray, first_pilot_index: int, qbpsk: bool) -> np.ndarray:
    """BPSK rate-1/2 SIGNAL-type symbols (48 bits each) as (n_sym, 64) bins with pilots."""
    coded = interleave(bcc_encode(bits, "1/2"), 48, 1)  # (2 * bits,)
    points = map_constellation(coded, 1).reshape(-1, 48)  # (n_sym, 48)
    if qbpsk:
        points = points * 1j  # HT-SIG: data on the Q axis, pilots unrotated (19.3.9.4.3)
    polarity = PILOT_POLARITY[(first_pilot_index + np.arange(points.shape[0])) % 127]  # (n_sym,)
    return _symbol_grid(points, polarity[:, None] * _LEGACY_PILOTS, _LEGACY_GATHER)


# --- DATA field ------------------------------------------------------------------------------


def _data_points(psdu: np.ndarray, mode: _Mode, n_col: int, seed: int) -> np.ndarray:
    """SERVICE + PSDU + tail + pad, scrambled, coded, interleaved, mapped: (n_sym, n_sd)."""
    n_dbps = mode.n_dbps
    n_payload = 16 + 8 * psdu.size
    n_sym = -(-(n_payload + 6) // n_dbps)
    bits = np.zeros(n_sym * n_dbps, dtype=np.uint8)  # SERVICE is 16 zeros, pad bits are zeros
    bits[16:n_payload] = np.unpackbits(psdu, bitorder="little")  # each octet LSB first
    bits ^= scrambler_sequence(seed, bits.size)
    bits[n_payload : n_payload + 6] = 0  # tail re-zeroed so the encoder ends in state 0
    coded = interleave(bcc_encode(bits, mode.rate), mode.n_cbps, mode.n_bpsc, n_col)
    return map_constellation(coded, mode.n_bpsc).reshape(n_sym, mode.n_sd)


def _check_psdu(psdu: np.ndarray, max_len: int) -> np.ndarray:
    p = np.asarray(psdu)
    if p.dtype != np.uint8 or p.ndim != 1:
        raise ValueError(f"psdu must be a 1-D uint8 array, got {p.dtype} with shape {p.shape}")
    if not 1 <= p.size <= max_len:
        raise ValueError(f"psdu length must be 1..{max_len} bytes, got {p.size}")
    return p


def _seed(rng: np.random.Generator, scrambler_seed: int | None) -> int:
    return int(rng.integers(1, 128)) if scrambler_seed is None else scrambler_seed


def _normalise(x: np.ndarray) -> np.ndarray:
    """Scale complex64 `x` in place to mean |x|^2 = 1."""
    x *= np.float32(1 / np.sqrt(np.vdot(x, x).real / x.size))
    return x


def legacy_n_symbols(length_bytes: int, rate_mbps: int) -> int:
    """DATA OFDM symbols of a non-HT PPDU (17.3.5.4)."""
    if rate_mbps not in _LEGACY_MODES:
        raise ValueError(f"legacy rate must be one of {LEGACY_RATES_MBPS}, got {rate_mbps}")
    return -(-(16 + 8 * length_bytes + 6) // _LEGACY_MODES[rate_mbps].n_dbps)


def legacy_ppdu(
    psdu: np.ndarray,
    rate_mbps: int,
    rng: np.random.Generator,
    *,
    scrambler_seed: int | None = None,
) -> np.ndarray:
    """A non-HT OFDM PPDU (complex64, 20 Msps, unit mean power) carrying `psdu`.

    The scrambler seed is drawn from `rng` (nonzero, as a transmitter's pseudorandom choice)
    unless `scrambler_seed` is given (test vectors).
    """
    psdu = _check_psdu(psdu, 4095)
    if rate_mbps not in _LEGACY_MODES:
        raise ValueError(f"legacy rate must be one of {LEGACY_RATES_MBPS}, got {rate_mbps}")
    seed = _seed(rng, scrambler_seed)
    data = _data_points(psdu, _LEGACY_MODES[rate_mbps], 16, seed)  # (n_sym, 48)
    n_sym = data.shape[0]
    polarity = PILOT_POLARITY[(1 + np.arange(n_sym)) % 127]  # p_{n+1}: p_0 went to SIGNAL
    out = np.empty(_LEGACY_PREAMBLE + _SYMBOL * n_sym, dtype=np.complex64)
    out[:320] = _LEGACY_TRAINING
    signal = _sig_symbols(l_sig_bits(rate_mbps, psdu.size), 0, qbpsk=False)  # (1, 64)
    _ofdm_into(out[320:400], signal, 16, 52)
    grid = _symbol_grid(data, polarity[:, None] * _LEGACY_PILOTS, _LEGACY_GATHER)  # (n_sym, 64)
    _ofdm_into(out[400:], grid, 16, 52)
    return _normalise(out)


def ht_n_symbols(length_bytes: int, mcs: int) -> int:
    """HT-Data OFDM symbols, BCC, one encoder, no STBC (19.3.11)."""
    if not 0 <= mcs <= HT_MCS_MAX:
        raise ValueError(f"HT MCS must be 0..{HT_MCS_MAX}, got {mcs}")
    return -(-(8 * length_bytes + 16 + 6) // _HT_MODES[mcs].n_dbps)


def ht_txtime_us(length_bytes: int, mcs: int, short_gi: bool = False) -> int:
    """TXTIME of an HT-mixed PPDU with one HT-LTF (19.4.3), without signal extension."""
    n_sym = ht_n_symbols(length_bytes, mcs)
    # With short GI the data symbols last 3.6 us, and TXTIME rounds them up to a 4 us boundary.
    data_us = 4 * (-(-(9 * n_sym) // 10)) if short_gi else 4 * n_sym
    return _HT_PREAMBLE // 20 + data_us


def ht_l_sig_length(length_bytes: int, mcs: int, short_gi: bool = False) -> int:
    """L-SIG LENGTH of an HT-mixed PPDU so a legacy receiver defers for TXTIME (19.3.9.3.5)."""
    txtime = ht_txtime_us(length_bytes, mcs, short_gi)
    if txtime > _HT_MAX_TXTIME_US:
        raise ValueError(f"HT-mixed PPDU of {txtime} us exceeds {_HT_MAX_TXTIME_US} us")
    return -(-(txtime - 20) // 4) * 3 - 3


def ht_ppdu(
    psdu: np.ndarray,
    mcs: int,
    rng: np.random.Generator,
    short_gi: bool = False,
    *,
    aggregation: bool = True,
    scrambler_seed: int | None = None,
) -> np.ndarray:
    """An HT-mixed PPDU (complex64, 20 Msps, unit mean power): 1 stream, 20 MHz, BCC.

    `aggregation` is the HT-SIG A-MPDU bit (our HT data PSDUs are A-MPDUs); the scrambler seed is
    drawn from `rng` unless `scrambler_seed` is given.
    """
    psdu = _check_psdu(psdu, 65535)
    if not 0 <= mcs <= HT_MCS_MAX:
        raise ValueError(f"HT MCS must be 0..{HT_MCS_MAX}, got {mcs}")
    seed = _seed(rng, scrambler_seed)
    l_length = ht_l_sig_length(psdu.size, mcs, short_gi)
    ht_sig = ht_sig_bits(mcs, psdu.size, aggregation=aggregation, short_gi=short_gi)
    data = _data_points(psdu, _HT_MODES[mcs], 13, seed)  # (n_sym, 52)
    n_sym = data.shape[0]
    n = np.arange(n_sym)
    psi = _HT_PILOT_PSI[(n[:, None] + np.arange(4)) % 4]  # (n_sym, 4) pilots rotate each symbol
    pilots = PILOT_POLARITY[(n + 3) % 127][:, None] * psi  # p_{n+3}: p_0..p_2 went to the SIGs
    gi = _GI_SHORT if short_gi else 16
    out = np.empty(_HT_PREAMBLE + (N_FFT + gi) * n_sym, dtype=np.complex64)
    out[:320] = _LEGACY_TRAINING
    _ofdm_into(out[320:400], _sig_symbols(l_sig_bits(6, l_length), 0, qbpsk=False), 16, 52)
    _ofdm_into(out[400:560], _sig_symbols(ht_sig, 1, qbpsk=True), 16, 52)  # pilots p_1, p_2
    out[560:720] = _HT_TRAINING
    _ofdm_into(out[720:], _symbol_grid(data, pilots, _HT_GATHER), gi, 56)
    return _normalise(out)


def ppdu_duration_samples(
    kind: Literal["legacy", "ht"], length_bytes: int, rate_or_mcs: int, short_gi: bool = False
) -> int:
    """Exact length of the `legacy_ppdu` / `ht_ppdu` output for this PSDU, without building it."""
    if kind == "legacy":
        if not 1 <= length_bytes <= 4095:
            raise ValueError(f"psdu length must be 1..4095 bytes, got {length_bytes}")
        return _LEGACY_PREAMBLE + _SYMBOL * legacy_n_symbols(length_bytes, rate_or_mcs)
    if kind == "ht":
        ht_l_sig_length(length_bytes, rate_or_mcs, short_gi)  # the same limits as `ht_ppdu`
        per_symbol = N_FFT + (_GI_SHORT if short_gi else 16)
        return _HT_PREAMBLE + per_symbol * ht_n_symbols(length_bytes, rate_or_mcs)
    raise ValueError(f"kind must be 'legacy' or 'ht', got {kind!r}")

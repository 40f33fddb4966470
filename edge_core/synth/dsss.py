"""IEEE 802.11b (DSSS / HR-DSSS) transmitter: PSDU bytes to complex baseband at 20 Msps.

Follows IEEE 802.11-2016 clause 15 (DSSS, 1 and 2 Mbit/s) and clause 16 (HR/DSSS, 5.5 and
11 Mbit/s CCK; clauses 15 and 18 of 802.11-2007):

* PLCP preamble. Long: SYNC of 128 ones and SFD 0xF3A0. Short: SYNC of 56 zeros and SFD 0x05CF
  (the long SFD in reverse time order). Both at 1 Mbit/s DBPSK. Fields go LSB first.
* PLCP header: SIGNAL (rate in 100 kbit/s), SERVICE (b2 locked clocks, b3 modulation select
  = 0 for CCK, b7 length extension), LENGTH (PSDU airtime in microseconds) and CRC-16 over
  those 32 bits. 1 Mbit/s DBPSK after a long preamble, 2 Mbit/s DQPSK after a short one.
* One self-synchronising scrambler (x^7 + x^4 + 1) runs over preamble, header and PSDU, seeded
  1101100 (long) or 0011011 (short), leftmost bit in the first delay element Z1.
* PSDU: 1 Mbit/s DBPSK or 2 Mbit/s DQPSK spread by the 11-chip Barker code; 5.5 and 11 Mbit/s
  CCK (8 complex chips per symbol). The differential phase runs on across all fields.

Every chip is one of 1, j, -1, -j; the modulators work on phase quadrants (multiples of pi/2)
so the arithmetic is exact. The chips (11 Mchip/s) go to 20 Msps as
`scipy.signal.resample_poly(up=20, down=11)` would take them, with its default Kaiser (beta 5)
low-pass (`chips_to_20msps` does the same sums faster). That low-pass is the transmit filter:
it cuts at the chip-rate Nyquist frequency, so the spectrum is flat within +-5.5 MHz and has
none of the sinc^2 side lobes out to +-11 MHz that real, less tightly filtered radios show.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.signal import firwin

Preamble = Literal["long", "short"]

CHIP_RATE_HZ = 11_000_000
OUTPUT_RATE_HZ = 20_000_000
_UP, _DOWN = 20, 11  # OUTPUT_RATE_HZ / CHIP_RATE_HZ

DSSS_RATES_MBPS: tuple[float, ...] = (1.0, 2.0, 5.5, 11.0)
# SIGNAL field: the rate in units of 100 kbit/s.
SIGNAL: dict[float, int] = {1.0: 0x0A, 2.0: 0x14, 5.5: 0x37, 11.0: 0x6E}

BARKER = np.array([1, -1, 1, 1, -1, 1, 1, 1, -1, -1, -1], dtype=np.int8)  # (11,) first chip first
LONG_SEED: tuple[int, ...] = (1, 1, 0, 1, 1, 0, 0)  # scrambler Z1..Z7, long preamble
SHORT_SEED: tuple[int, ...] = (0, 0, 1, 1, 0, 1, 1)  # scrambler Z1..Z7, short preamble
LONG_SFD = 0xF3A0
SHORT_SFD = 0x05CF

_LONG_SYNC_BITS, _SHORT_SYNC_BITS = 128, 56
_SFD_BITS, _HEADER_BITS = 16, 48
_QUADRANT = np.array([1, 1j, -1, -1j], dtype=np.complex64)  # phase k * pi/2
# DQPSK phase change in quadrants for the dibit (d0, d1), d0 first in time, indexed 2*d0 + d1:
# 00 -> 0, 01 -> pi/2, 10 -> 3pi/2, 11 -> pi (Gray coded).
_DQPSK_STEP = np.array([0, 1, 3, 2], dtype=np.uint8)
_BARKER_Q = np.where(BARKER < 0, 2, 0).astype(np.uint8)  # (11,) chip sign as a quadrant offset
# CCK chip c_i = cover_i * exp(j * (phi1 + A[i] . (phi2, phi3, phi4))), c0 first in time; the
# cover code negates c3 and c6 (the 4th and 7th chips).
_CCK_PHASES = np.array(
    [[1, 1, 1], [0, 1, 1], [1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]],
    dtype=np.uint8,
)  # (8, 3)
_CCK_COVER_Q = np.array([0, 0, 0, 2, 0, 0, 2, 0], dtype=np.uint8)  # (8,)
_CCK_BITS = {5.5: 4, 11.0: 8}
_CHIPS_PER_PSDU_BYTE = {1.0: 88, 2.0: 44, 5.5: 16, 11.0: 8}

# The transmit filter: resample_poly's own default design for up=20, down=11, scaled so that
# uncorrelated unit chips come out at unit mean power (resample_poly multiplies the taps by `up`,
# and over the 20 output phases the mean of sum(taps^2) is then up * sum(h^2)).
_FILTER_HALF_LEN = 10 * max(_UP, _DOWN)
_h = firwin(2 * _FILTER_HALF_LEN + 1, 1.0 / max(_UP, _DOWN), window=("kaiser", 5.0))  # (401,)
TX_FILTER = _h / np.sqrt(_UP * np.sum(_h**2))  # (401,) window argument for resample_poly


def _polyphase_matrix() -> np.ndarray:
    # resample_poly computes y[m] = sum_k chip[k] * up * h[11 m - 20 k + half_len]. Output
    # 20 q + r then needs chips 11 q + j, j in [-10, 20]: one period of 20 outputs is a fixed
    # (20, 31) matrix applied to a window of 31 chips that slides by 11.
    r = np.arange(_UP)[:, None]  # (20, 1)
    j = np.arange(-_FILTER_HALF_LEN // _UP, _FILTER_HALF_LEN // _UP + _UP)[None, :]  # (1, 31)
    tap = _DOWN * r - _UP * j + _FILTER_HALF_LEN  # (20, 31)
    inside = (tap >= 0) & (tap <= 2 * _FILTER_HALF_LEN)
    w = np.where(inside, _UP * TX_FILTER[np.clip(tap, 0, 2 * _FILTER_HALF_LEN)], 0.0)  # (20, 31)
    # Act on interleaved (re, im) float32 pairs, so one real matrix product does both parts.
    return np.kron(w.T, np.eye(2)).astype(np.float32)  # (62, 40)


_POLYPHASE = _polyphase_matrix()
_WINDOW_CHIPS = _POLYPHASE.shape[0] // 2  # 31
_LEAD_CHIPS = _FILTER_HALF_LEN // _UP  # 10 chips of filter memory before chip 0
_CHUNK_PERIODS = 64  # output periods (of 20 samples) per matrix product


def chips_to_20msps(chips: np.ndarray) -> np.ndarray:
    """`resample_poly(chips, 20, 11, window=TX_FILTER)` as complex64, about 10x faster.

    Same taps and alignment as resample_poly (a test checks that). The matrix products run on
    fixed chunks of output periods so that each sample is computed by the same BLAS call
    whatever the packet length: a packet cut short gives exactly the full packet's first samples.
    """
    n_chips = chips.size
    n_out = -(-n_chips * _UP // _DOWN)  # ceil(n * up / down), as resample_poly
    n_chunks = max(1, -(-n_out // (_UP * _CHUNK_PERIODS)))
    n_periods = n_chunks * _CHUNK_PERIODS
    padded = np.zeros(_DOWN * (n_periods - 1) + _WINDOW_CHIPS, dtype=np.complex64)
    padded[_LEAD_CHIPS : _LEAD_CHIPS + n_chips] = chips
    pairs = padded.view(np.float32)  # (2 * n_padded,) re, im, re, im, ...
    windows = np.lib.stride_tricks.sliding_window_view(pairs, 2 * _WINDOW_CHIPS)[:: 2 * _DOWN]
    windows = np.ascontiguousarray(windows).reshape(n_chunks, _CHUNK_PERIODS, -1)  # (c, 64, 62)
    out = windows @ _POLYPHASE  # (n_chunks, 64, 40) float32 (re, im) pairs
    return out.reshape(-1).view(np.complex64)[:n_out]  # (n_out,)


def _check_rate(rate_mbps: float, preamble: str) -> None:
    if rate_mbps not in SIGNAL:
        raise ValueError(f"802.11b rate must be one of {DSSS_RATES_MBPS} Mbps, got {rate_mbps}")
    if preamble not in ("long", "short"):
        raise ValueError(f"802.11b preamble must be 'long' or 'short', got {preamble!r}")
    if preamble == "short" and rate_mbps == 1.0:
        raise ValueError("802.11b short preamble is only defined for 2, 5.5 and 11 Mbps, not 1")


def _lsb_first(value: int, n_bits: int) -> np.ndarray:
    return ((value >> np.arange(n_bits)) & 1).astype(np.uint8)  # (n_bits,)


def _scrambler_division(bits: np.ndarray) -> np.ndarray:
    """Output of the x^7 + x^4 + 1 feedback scrambler started from the all-zero state."""
    # s = b / P(D) with P = 1 + D^4 + D^7 over GF(2). Since P(D)^2 = P(D^2), multiplying by
    # P(D) P(D^2) ... P(D^(2^(k-1))) leaves s = that product / P(D^(2^k)), and the division is
    # the identity on the first 4 * 2^k outputs: log2(n) shifted XORs instead of an n-step loop.
    s = bits.copy()
    n = s.size
    shift = 1
    while 4 * shift < n:
        t = s.copy()
        t[4 * shift :] ^= s[: n - 4 * shift]
        if 7 * shift < n:
            t[7 * shift :] ^= s[: n - 7 * shift]
        s = t
        shift *= 2
    return s


def descramble(bits: np.ndarray, seed: tuple[int, ...] | np.ndarray = (0,) * 7) -> np.ndarray:
    """Undo `scramble`: b[n] = s[n] ^ s[n-4] ^ s[n-7], `seed` being s[-1] .. s[-7] (Z1..Z7)."""
    s = np.asarray(bits, dtype=np.uint8)
    ext = np.concatenate([np.asarray(seed, dtype=np.uint8)[::-1], s])  # (7 + n,) s[-7] first
    return ext[7:] ^ ext[3:-4] ^ ext[:-7]


def scramble(bits: np.ndarray, seed: tuple[int, ...] | np.ndarray) -> np.ndarray:
    """Self-synchronising scrambler x^7 + x^4 + 1 from delay-line state Z1..Z7 = `seed`."""
    # Seven leading bits that drive the zero-state scrambler into `seed`, then drop them.
    lead = descramble(np.asarray(seed, dtype=np.uint8)[::-1])  # (7,)
    b = np.concatenate([lead, np.asarray(bits, dtype=np.uint8)])  # (7 + n,)
    return _scrambler_division(b)[7:]


def crc16_plcp(bits: np.ndarray) -> np.ndarray:
    """PLCP header CRC-16 (CCITT x^16+x^12+x^5+1, preset ones, ones complement), first bit first."""
    reg = 0xFFFF
    for bit in np.asarray(bits, dtype=np.uint8).tolist():  # 32 bits once per packet
        feedback = ((reg >> 15) & 1) ^ bit
        reg = (reg << 1) & 0xFFFF
        if feedback:
            reg ^= 0x1021
    reg ^= 0xFFFF
    return ((reg >> np.arange(15, -1, -1)) & 1).astype(np.uint8)  # (16,) r0 (MSB) first


def plcp_length(length_bytes: int, rate_mbps: float) -> tuple[int, int]:
    """(LENGTH field in microseconds, length extension bit) for a PSDU of `length_bytes`."""
    if length_bytes < 0:
        raise ValueError(f"PSDU length must be >= 0 bytes, got {length_bytes}")
    r = SIGNAL[rate_mbps]  # rate in 100 kbit/s, so integer arithmetic stays exact
    length_us = (80 * length_bytes + r - 1) // r  # ceil(8 * bytes / rate)
    if length_us > 0xFFFF:
        raise ValueError(f"{length_bytes} bytes at {rate_mbps} Mbps overflow the LENGTH field")
    # At 11 Mbps one microsecond can hold 0 or 1 extra byte: the bit tells the receiver which,
    # set when LENGTH - 8 * bytes / 11 >= 8 / 11.
    extension = int(rate_mbps == 11.0 and 11 * length_us - 8 * length_bytes >= 8)
    return length_us, extension


def plcp_header_bits(
    rate_mbps: float, length_bytes: int, preamble: Preamble, locked_clocks: bool = True
) -> np.ndarray:
    """SIGNAL, SERVICE, LENGTH and CRC-16: 48 bits in transmission order (fields LSB first).

    `locked_clocks` (SERVICE b2) defaults to 1 because every ERP (802.11g) or later radio must
    set it, and such radios send nearly all 802.11b frames seen today.
    """
    _check_rate(rate_mbps, preamble)
    length_us, extension = plcp_length(length_bytes, rate_mbps)
    service = (int(locked_clocks) << 2) | (extension << 7)  # b3 = 0: CCK, not PBCC
    fields = np.concatenate(
        [_lsb_first(SIGNAL[rate_mbps], 8), _lsb_first(service, 8), _lsb_first(length_us, 16)]
    )  # (32,)
    return np.concatenate([fields, crc16_plcp(fields)])  # (48,)


def _quadrant(ref: complex) -> int:
    return int(np.round(np.angle(ref) / (np.pi / 2))) % 4


def _dbpsk_q(bits: np.ndarray, q0: int) -> np.ndarray:
    return ((q0 + np.cumsum(2 * bits.astype(np.int64))) % 4).astype(np.uint8)  # (n,)


def _dqpsk_q(bits: np.ndarray, q0: int) -> np.ndarray:
    dibits = bits.reshape(-1, 2)  # (n/2, 2) d0 first
    steps = _DQPSK_STEP[2 * dibits[:, 0] + dibits[:, 1]].astype(np.int64)  # (n/2,)
    return ((q0 + np.cumsum(steps)) % 4).astype(np.uint8)


def dbpsk(bits: np.ndarray, ref: complex = 1) -> np.ndarray:
    """1 Mbit/s DBPSK symbols: bit 1 turns the phase of the previous symbol (`ref`) by pi."""
    return _QUADRANT[_dbpsk_q(np.asarray(bits, dtype=np.uint8), _quadrant(ref))]


def dqpsk(bits: np.ndarray, ref: complex = 1) -> np.ndarray:
    """2 Mbit/s DQPSK symbols, one per dibit: 00 -> 0, 01 -> pi/2, 11 -> pi, 10 -> 3pi/2."""
    return _QUADRANT[_dqpsk_q(np.asarray(bits, dtype=np.uint8), _quadrant(ref))]


def _cck_q(bits: np.ndarray, rate_mbps: float, q0: int) -> np.ndarray:
    d = bits.reshape(-1, _CCK_BITS[rate_mbps]).astype(np.int64)  # (n_sym, 4 or 8) d0 first
    n_sym = d.shape[0]
    # phi1: DQPSK on (d0, d1) from the previous symbol, plus pi on every odd-numbered symbol
    # (the first PSDU symbol is number 0).
    steps = _DQPSK_STEP[2 * d[:, 0] + d[:, 1]] + 2 * (np.arange(n_sym) % 2)  # (n_sym,)
    phi1 = q0 + np.cumsum(steps)  # (n_sym,)
    if rate_mbps == 11.0:
        # phi2..phi4 from (d2,d3), (d4,d5), (d6,d7): 00 -> 0, 01 -> pi/2, 10 -> pi, 11 -> 3pi/2.
        phi234 = 2 * d[:, 2::2] + d[:, 3::2]  # (n_sym, 3)
    else:
        # 5.5 Mbit/s: phi2 = d2 * pi + pi/2, phi3 = 0, phi4 = d3 * pi.
        phi234 = np.stack([2 * d[:, 2] + 1, np.zeros(n_sym, np.int64), 2 * d[:, 3]], axis=1)
    chips = phi1[:, None] + phi234 @ _CCK_PHASES.T.astype(np.int64) + _CCK_COVER_Q  # (n_sym, 8)
    return (chips % 4).astype(np.uint8)


def cck_encode(bits: np.ndarray, rate_mbps: float, ref: complex = 1) -> np.ndarray:
    """CCK codewords (n_symbols, 8), c0 first; `ref` is the last symbol before the first one."""
    if rate_mbps not in _CCK_BITS:
        raise ValueError(f"CCK is only used at 5.5 and 11 Mbps, got {rate_mbps}")
    return _QUADRANT[_cck_q(np.asarray(bits, dtype=np.uint8), rate_mbps, _quadrant(ref))]


def _plcp_chips(preamble: Preamble) -> int:
    if preamble == "long":
        return 11 * (_LONG_SYNC_BITS + _SFD_BITS + _HEADER_BITS)  # 192 us
    return 11 * (_SHORT_SYNC_BITS + _SFD_BITS + _HEADER_BITS // 2)  # 96 us: header at 2 Mbps


def ppdu_chips(length_bytes: int, rate_mbps: float, preamble: Preamble) -> int:
    """Number of 11 Mchip/s chips in the PPDU."""
    _check_rate(rate_mbps, preamble)
    return _plcp_chips(preamble) + _CHIPS_PER_PSDU_BYTE[rate_mbps] * length_bytes


def ppdu_duration_samples(length_bytes: int, rate_mbps: float, preamble: Preamble) -> int:
    """Exact length of `dsss_ppdu(...)` at 20 Msps, without synthesising it."""
    n_chips = ppdu_chips(length_bytes, rate_mbps, preamble)
    return -(-n_chips * _UP // _DOWN)  # resample_poly returns ceil(n * up / down)


def dsss_chips(
    psdu: np.ndarray,
    rate_mbps: float,
    preamble: Preamble,
    locked_clocks: bool = True,
    max_chips: int | None = None,
) -> np.ndarray:
    """The PPDU at chip rate (11 Mchip/s): unit-magnitude complex64 chips, optionally cut short.

    The differential modulation starts from phase 0 (the symbol before the first SYNC bit is 1).
    """
    psdu = np.asarray(psdu)
    if psdu.ndim != 1 or psdu.dtype != np.uint8:
        raise ValueError(f"PSDU must be a 1-D uint8 array, got {psdu.dtype} {psdu.shape}")
    _check_rate(rate_mbps, preamble)
    is_long = preamble == "long"
    sync = (
        np.full(_LONG_SYNC_BITS, 1, np.uint8) if is_long else np.zeros(_SHORT_SYNC_BITS, np.uint8)
    )
    sfd = _lsb_first(LONG_SFD if is_long else SHORT_SFD, _SFD_BITS)
    header = plcp_header_bits(rate_mbps, psdu.size, preamble, locked_clocks)
    n_pre = sync.size + _SFD_BITS

    plcp_chips = _plcp_chips(preamble)
    n_chips = ppdu_chips(psdu.size, rate_mbps, preamble)
    if max_chips is not None and max_chips < n_chips:
        # Everything is causal, so PSDU bytes past the cut need not be modulated.
        per_byte = _CHIPS_PER_PSDU_BYTE[rate_mbps]
        psdu = psdu[: max(0, -(-(max_chips - plcp_chips) // per_byte))]
    psdu_bits = np.unpackbits(psdu, bitorder="little")  # (8 * bytes,) LSB of byte 0 first

    bits = scramble(
        np.concatenate([sync, sfd, header, psdu_bits]), LONG_SEED if is_long else SHORT_SEED
    )
    pre_q = _dbpsk_q(bits[:n_pre], 0)  # (n_pre,)
    hdr_bits = bits[n_pre : n_pre + _HEADER_BITS]
    hdr_q = _dbpsk_q(hdr_bits, int(pre_q[-1])) if is_long else _dqpsk_q(hdr_bits, int(pre_q[-1]))
    data_bits = bits[n_pre + _HEADER_BITS :]
    if rate_mbps == 1.0:
        data_q = _dbpsk_q(data_bits, int(hdr_q[-1]))
    elif rate_mbps == 2.0:
        data_q = _dqpsk_q(data_bits, int(hdr_q[-1]))
    else:
        data_q = np.empty(0, np.uint8)
    barker_q = np.concatenate([pre_q, hdr_q, data_q])  # (n_symbols,)
    chips_q = ((barker_q[:, None] + _BARKER_Q) % 4).reshape(-1)  # (11 * n_symbols,)
    if rate_mbps in _CCK_BITS:
        cck_q = _cck_q(data_bits, rate_mbps, int(hdr_q[-1]))  # (n_sym, 8)
        chips_q = np.concatenate([chips_q, cck_q.reshape(-1)])
    return _QUADRANT[chips_q[:max_chips]]  # (n_chips,) or (max_chips,)


def dsss_ppdu(
    psdu: np.ndarray,
    rate_mbps: float,
    preamble: Preamble,
    rng: np.random.Generator,
    max_samples: int | None = None,
) -> np.ndarray:
    """An 802.11b PPDU at 20 Msps, complex64, scaled to unit mean power.

    `rng` is accepted for a uniform interface with the OFDM transmitter: once the PSDU is given,
    nothing in an HR/DSSS PPDU is random (the scrambler seeds are fixed by the standard). The
    scale is the one that gives uncorrelated unit chips unit power, not a per-packet measurement,
    so that `max_samples` (stop after that many samples) returns exactly the first samples of the
    full packet. Mean power comes out between 1.00 (CCK) and 1.02: Barker-spread chips are not
    white, and slightly more of their power passes the filter.
    """
    del rng
    if max_samples is not None and max_samples < 0:
        raise ValueError(f"max_samples must be >= 0, got {max_samples}")
    max_chips = None
    if max_samples is not None:
        # Output m is sum_k chip[k] * taps[11 m - 20 k + half_len], so the last one kept,
        # m = max_samples - 1, needs chips up to (11 m + half_len) / 20 and no further.
        max_chips = (_DOWN * (max_samples - 1) + _FILTER_HALF_LEN) // _UP + 1
    chips = dsss_chips(psdu, rate_mbps, preamble, max_chips=max_chips)
    n_out = ppdu_duration_samples(psdu.size, rate_mbps, preamble)
    if max_samples is not None:
        n_out = min(n_out, max_samples)
    return chips_to_20msps(chips)[:n_out]  # (n_out,) 20 Msps

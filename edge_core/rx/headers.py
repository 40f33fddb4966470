"""PHY header decoding per packet, batched: what a receiver reads before the payload.

The CNN sees the spectrum; the PSDU length, the rate and the A-MPDU bit are coded in the PHY
header bits, and the fusion stage takes them from here. For a batch of packets as the assembler
cuts them (20 Msps, a few samples of noise first, zero post-padding), `decode_headers` returns
one row of `HEADER_FIELDS` per packet:

* OFDM (IEEE 802.11-2016 clauses 17, 19): L-STF delay-16 autocorrelation (detection, coarse
  CFO), L-LTF cross-correlation (timing, earliest path), L-LTF repetition (fine CFO), channel
  from the two L-LTF symbols smoothed to a short impulse response, pilot phase per symbol,
  L-SIG (BPSK, rate 1/2: RATE, LENGTH, even parity), QBPSK test on the two symbols after a
  6 Mbit/s L-SIG, HT-SIG1/2 (MCS, HT_LENGTH, aggregation, short GI, CRC-8). Where the hard
  decisions already form a terminated codeword (most packets above ~5 dB) the bits come from
  dividing by the generator polynomial, exactly what the Viterbi would return; the other rows
  go through one soft-decision Viterbi across the batch (L-SIG 24 steps, HT-SIG 48).
* DSSS (clauses 15, 16): Barker matched filter at the 20-sample symbol period (11 chips in 1 us),
  symbol timing by energy per phase, DBPSK decisions, self-synchronising descrambler, SYNC + SFD
  search (long: scrambled ones and 0xF3A0; short: scrambled zeros and 0x05CF), CFO from the
  known preamble modulation, then the PLCP header (1 Mbit/s DBPSK after a long preamble, 2 Mbit/s
  DQPSK after a short one) and its CRC-16.

A packet may start anywhere in the first ~250 samples of its row (tested up to 250). NumPy
only, and no BLAS product or complex exp in the hot path: on a busy CPU small BLAS calls with
their threads cost 10-100x more than the arithmetic. At small batches the cost is the number of
NumPy calls, not the arithmetic: about 0.18 ms for one packet and 0.03 ms per packet at batch 64
on a busy 2-core x86 (`tools/bench_fusion.py`). Its output is frozen bit for bit on fixed
packets (tests/data/rx_headers_reference.npz): a speed-up must not move a single decision.

Written from the standard; it shares no code with the transmitter in `edge_core.synth`, so a
test of one against the other checks both.
"""

from __future__ import annotations

import numpy as np

HEADER_FIELDS: tuple[str, ...] = (
    "hdr_ok",
    "hdr_format",
    "hdr_rate",
    "hdr_length",
    "hdr_aggregated",
    "hdr_short_gi",
    "hdr_preamble_short",
)
FORMAT_DSSS, FORMAT_LEGACY, FORMAT_HT = 0, 1, 2
SAMPLE_RATE_HZ = 20e6
_OK, _FORMAT, _RATE, _LENGTH, _AGG, _SGI, _SHORT = range(len(HEADER_FIELDS))
_NAN = float("nan")
# Rows as written before the variable fields: not decoded; non-HT OFDM; HT-mixed.
_NOT_DECODED = np.array([0, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN], np.float32)
_DECODED_LEGACY = np.array([1, FORMAT_LEGACY, _NAN, _NAN, 0, 0, 0], np.float32)
_DECODED_HT = np.array([1, FORMAT_HT, _NAN, _NAN, _NAN, _NAN, 0], np.float32)

# --- OFDM constants (clause 17.3.3, 17.3.5, 19.3.9) ---------------------------------------------

_N_FFT = 64
# L_{-26..26} (Equation 17-8).
_LTF = np.array(
    [1, 1, -1, -1, 1, 1, -1, 1, -1, 1, 1, 1, 1, 1, 1, -1, -1, 1, 1, -1, 1, -1, 1, 1, 1, 1, 0,
     1, -1, -1, 1, 1, -1, 1, -1, 1, -1, -1, -1, -1, -1, 1, 1, -1, -1, 1, -1, 1, -1, 1, 1, 1, 1],
    dtype=np.float32,
)  # fmt: skip
_K = np.arange(-26, 27)  # (53,) centred subcarriers
_USED_K = _K[_K != 0]  # (52,)
_USED_BINS = _USED_K % _N_FFT
_LTF_USED = _LTF[_K != 0]  # (52,) all +-1
_PILOT_K = np.array([-21, -7, 7, 21])
_DATA_K = np.array([k for k in _USED_K if k not in _PILOT_K])  # (48,) d_0..d_47 in order
_PILOT_COL = np.searchsorted(_USED_K, _PILOT_K)  # columns of the pilots among the 52 used
_DATA_COL = np.searchsorted(_USED_K, _DATA_K)
_PILOT_VALUES = np.array([1, 1, 1, -1], dtype=np.float32)  # P_{-21,-7,7,21}
# L-LTF long symbol in time (any scale), for the timing cross-correlation.
_LTF_GRID = np.zeros(_N_FFT, np.complex64)
_LTF_GRID[_USED_BINS] = _LTF_USED
_LTF_TIME = np.fft.ifft(_LTF_GRID).astype(np.complex64)  # (64,)

# Table 17-6: RATE bits R1..R4 (as R1 + 2 R2 + 4 R3 + 8 R4) -> Mbit/s; 0 = not a rate.
_RATE_OF_BITS = np.zeros(16, np.float32)
for _bits, _mbps in (
    ((1, 1, 0, 1), 6), ((1, 1, 1, 1), 9), ((0, 1, 0, 1), 12), ((0, 1, 1, 1), 18),
    ((1, 0, 0, 1), 24), ((1, 0, 1, 1), 36), ((0, 0, 0, 1), 48), ((0, 0, 1, 1), 54),
):  # fmt: skip
    _RATE_OF_BITS[sum(b << i for i, b in enumerate(_bits))] = _mbps


def _pilot_polarity(n: int) -> np.ndarray:
    """p_0..p_{n-1} (17.3.5.10): the x^7 + x^4 + 1 scrambler from all ones, 0 -> +1, 1 -> -1."""
    x = [1] * 7  # x1..x7
    out = np.empty(n, np.float32)
    for i in range(n):
        b = x[3] ^ x[6]
        out[i] = 1 - 2 * b
        x = [b, *x[:6]]
    return out


_POLARITY = _pilot_polarity(3)  # L-SIG p_0, HT-SIG1 p_1, HT-SIG2 p_2


def _deinterleave_index(n_cbps: int = 48, n_col: int = 16) -> np.ndarray:
    """Coded bit k was sent at position j(k) (17.3.5.7, BPSK: the first permutation only)."""
    k = np.arange(n_cbps)
    return (n_cbps // n_col) * (k % n_col) + k // n_col


_DEINTERLEAVE = _deinterleave_index()

# Channel smoothing: least-squares projection of the 52 per-subcarrier estimates onto delays
# -4..12 samples (the FFT window starts 2 samples into the guard interval; indoor channels end
# well within it): estimation noise drops by 52/17.
_SMOOTH_DELAYS = np.arange(-4, 13)
_F = np.exp(-2j * np.pi * np.outer(_USED_K, _SMOOTH_DELAYS) / _N_FFT)  # (52, 17)
_SMOOTH = (_F @ np.linalg.pinv(_F)).T.astype(np.complex64)  # (52, 52): h_row @ _SMOOTH

_STF_SEARCH = 320  # packet starts searched in samples [0, 320) of each row
_STF_WINDOW = 64
_STF_THRESHOLD = 0.5  # |delay-16 autocorrelation| / power; noise alone stays near 0.15
_LTF_THRESHOLD = 0.5  # repetition of the two L-LTF symbols, same scale
_LTF_FROM = 80  # the first long symbol is searched from STF hit + 80 ...
_LTF_SPAN = 160  # ... over 160 positions (it is at STF start + 192)
_QBPSK_RATIO = 1.0  # HT-SIG1 + 2: more energy on Q than on I (the CRC-8 then confirms)
# FFT windows from the first L-LTF symbol: LTF1, LTF2, L-SIG, HT-SIG1, HT-SIG2 (past their GIs).
_FIELD_WINDOWS = np.array([0, 64, 144, 224, 304])[:, None] + np.arange(_N_FFT)  # (5, 64)
_FIELD_SPAN = 2 * _N_FFT + 3 * 80  # samples from the first long symbol to HT-SIG2's end
_LTF_SEGMENT = _LTF_SPAN + 2 * _N_FFT + 32  # samples cross-correlated for the L-LTF timing
_LTF_REF_F = np.fft.fft(_LTF_TIME, _LTF_SEGMENT).conj()  # (320,)
_LSIG_STEPS = 24  # trellis steps of L-SIG; HT-SIG has 48
_EARLY_PATH = 8  # samples the timing may step back from the strongest path
_PILOT_SIGNS = [_PILOT_VALUES * p for p in _POLARITY]  # pilots of L-SIG, HT-SIG1, HT-SIG2
_SAMPLE_INDEX = np.arange(_FIELD_SPAN)
_SAMPLE_INDEX_F32 = _SAMPLE_INDEX.astype(np.float32)

# --- BCC (17.3.5.6): K = 7, g0 = 133o, g1 = 171o ---------------------------------------------


def _butterfly_signs() -> np.ndarray:
    """Output signs (+1 for a 0 bit) of the branch from state 2j (x = 0) into 32u + j: (2, 2, 32)
    as [output A/B, u, j].

    A state holds the last 6 inputs, the newest in bit 5 and the oldest (x) in bit 0, so the
    successors of states 2j, 2j + 1 are j and 32 + j, and the arrays stay in state order with
    32 long rows (no transposes in the loop). The branch from 2j + 1 (x = 1) has both outputs
    flipped, since both generators tap the oldest bit."""
    j = np.arange(32)[None, :]  # bit 4 of j: the input 1 step before u, ..., bit 0: 5 steps
    u = np.arange(2)[:, None]
    d = {k: (j >> (5 - k)) & 1 for k in range(1, 6)}  # delays 1..5; delay 6 is x = 0
    a = u ^ d[2] ^ d[3] ^ d[5]  # g0 = 133o: taps at delays 0, 2, 3, 5, (6)
    b = u ^ d[1] ^ d[2] ^ d[3]  # g1 = 171o: taps at delays 0, 1, 2, 3, (6)
    return np.stack([1 - 2 * a, 1 - 2 * b]).astype(np.float32)


_BF_SIGNS = _butterfly_signs()  # (2, 2, 32)
_BF_KIND = 2 * (_BF_SIGNS[0] < 0) + (_BF_SIGNS[1] < 0)  # (2, 32): which of +-A +-B
# Branch values by [u, j, x] (input u into state 32u + j from predecessor 2j + x), as indices
# into (A + B, A - B, B - A, -A - B): the branch from 2j + 1 has both outputs flipped (3 - kind).
_BF_TAKE = np.stack([_BF_KIND, 3 - _BF_KIND], axis=-1).ravel()  # (128,)
_SIGN_A = np.array([1, 1, -1, -1], np.float32)[:, None]  # a * 1 + b * -1 is exactly a - b
_SIGN_B = np.array([1, -1, 1, -1], np.float32)[:, None]
_PYTHON_TRACEBACK_ROWS = 32  # up to this many rows the traceback runs on Python ints
_START = np.full((64, 1), -1e30, np.float32)  # path metrics before the first step: state 0
_START[0] = 0

# A soft Viterbi decoder in three parts: branch metrics for all steps, a forward pass (two
# ufunc calls per step, path metrics only; the decisions come from them in one comparison
# afterwards), a traceback of the decisions (`_viterbi_words` runs the three).


def _branch_metrics(llr: np.ndarray) -> np.ndarray:
    """Mother-code values (r, T, 2) (log P(0)/P(1), any scale) -> branch metrics (T, 2, 32, 2,
    r) by [step, u, j, x, row]: input u into state 32u + j from predecessor 2j + x."""
    t_max, r = llr.shape[1], llr.shape[0]
    a, b = llr[:, :, 0].T[:, None], llr[:, :, 1].T[:, None]  # (T, 1, r)
    values = a * _SIGN_A
    values += b * _SIGN_B  # (T, 4, r): A + B, A - B, B - A, -A - B
    return values.take(_BF_TAKE, axis=1).reshape(t_max, 2, 32, 2, r)


def _forward(branch: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps over `branch` (T, 2, 32, 2, r) (overwritten) from path metrics `start` (64, r or
    1) -> (decisions (T, 64, r) bool by new state: True where the survivor came from 2j + 1,
    path metrics after the last step (64, r))."""
    t_max, r = branch.shape[0], branch.shape[-1]
    metric = np.empty((t_max + 1, 64, r), np.float32)
    metric[0] = start
    pairs = metric.reshape(t_max + 1, 1, 32, 2, r)  # by predecessor 2j + x
    into = metric.reshape(t_max + 1, 2, 32, r)[1:]  # by new state 32u + j
    steps = (pairs[:-1], branch, branch[:, :, :, 0], branch[:, :, :, 1], into)
    for m, cand, c0, c1, m_next in zip(*steps, strict=True):
        np.add(m, cand, out=cand)
        np.maximum(c0, c1, out=m_next)
    take = branch[:, :, :, 1] > branch[:, :, :, 0]  # (T, 2, 32, r)
    return take.reshape(t_max, 64, r), metric[t_max]


def _traceback(take: np.ndarray, n_steps: np.ndarray) -> np.ndarray:
    """Decisions (T, 64, r) -> (r,) uint64, bit t the input of step t on the survivor that ends
    in state 0 after n_steps[i] steps (bits from n_steps[i] - 6 on are the zero tail).

    Walking back from step t + 1 to t shifts the decision x_t in at the bottom of the state,
    and x_t is the input of step t - 6: the decoded word, shifted left by one per step with
    x_t as its new bit 0, holds the state in its low 6 bits. Steps 5..0 only bring in the
    zeros the encoder started from."""
    t_max, _, r = take.shape
    contiguous = np.ascontiguousarray(take.transpose(0, 2, 1))  # (T, r, 64)
    packed = np.packbits(contiguous, axis=2, bitorder="little").view(np.uint64)[..., 0]  # (T, r)
    if r <= _PYTHON_TRACEBACK_ROWS:
        by_row = packed.T.tolist()  # [i][t]: bit s set where state s at t + 1 came from 2j + 1
        words = []
        for d, n_i in zip(by_row, np.asarray(n_steps).tolist(), strict=True):
            word = 0
            for t in range(n_i - 1, 5, -1):
                word = (word << 1) | ((d[t] >> (word & 63)) & 1)
            words.append(word)
        return np.array(words, np.uint64)
    ended = np.arange(t_max)[:, None] >= n_steps  # (T, r): no decision, the state stays 0
    packed[ended] = 0
    lanes = np.zeros(r, np.uint64)
    six_bits, one = np.uint64(63), np.uint64(1)
    for t in range(t_max - 1, 5, -1):
        lanes = (lanes << one) | ((packed[t] >> (lanes & six_bits)) & one)
    return lanes


# Most headers arrive without a single wrong hard decision, and then no trellis is needed: the
# input is the A stream divided by g0 (a power series over GF(2), g0 having a constant term),
# and when re-encoding that input gives the B stream and the zero tail, the hard decisions are
# a terminated codeword. That codeword has the largest metric any sequence can have (every
# term agrees in sign with its soft value; any other codeword differs in >= 10 positions, each
# then counting negatively), so the soft Viterbi would return it too: the same bits, for a
# couple of small integer products instead of two NumPy calls per trellis step. Rows with a
# zero soft value or any disagreement go through the Viterbi.


def _series_matrix(coefficients: np.ndarray) -> np.ndarray:
    """(n, n) int32 with [s, s + k] = coefficients[k]: `bits @ it` multiplies a bit sequence
    by that power series (the first n terms)."""
    n = coefficients.size
    out = np.zeros((n, n), np.int32)
    for k in np.flatnonzero(coefficients):
        out += np.eye(n, k=int(k), dtype=np.int32)
    return out


def _bcc_matrices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(1 / g0, g1) as `_series_matrix`es for sequences of up to n steps."""
    g0 = np.zeros(n, np.int32)
    g0[[0, 2, 3, 5, 6]] = 1  # 133o
    g1 = np.zeros(n, np.int32)
    g1[[0, 1, 2, 3, 6]] = 1  # 171o
    inverse = np.zeros(n, np.int32)  # h = 1 / g0: h_0 = 1, h_t = sum_{k >= 1} g0_k h_{t - k}
    inverse[0] = 1
    for t in range(1, n):
        inverse[t] = sum(int(inverse[t - k]) for k in (2, 3, 5, 6) if t >= k) & 1
    return _series_matrix(inverse), _series_matrix(g1)


_BCC_MAX_STEPS = 48
_DIVIDE_G0, _TIMES_G1 = _bcc_matrices(_BCC_MAX_STEPS)


def _hard_words(llr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of mother-code values (r, T, 2), T <= 48 -> ((r,) uint64 words as `_traceback`
    gives them, (r,) bool: the hard decisions are a terminated codeword, so the word is exact)."""
    t = llr.shape[1]
    bits = (llr < 0).astype(np.int32)  # log P(0)/P(1) < 0: a 1
    u = (bits[:, :, 0] @ _DIVIDE_G0[:t, :t]) & 1  # (r, T)
    ok = (((u @ _TIMES_G1[:t, :t]) & 1) == bits[:, :, 1]).all(axis=1)
    ok &= ~u[:, t - 6 :].any(axis=1) & (llr != 0).all(axis=(1, 2))
    return _pack(u), ok


def _decode_words(llr: np.ndarray) -> np.ndarray:
    """Terminated decoding of rows of mother-code values (r, T, 2), T <= 48 steps, to (r,)
    uint64 words (bit t: the input of step t): the hard-decision shortcut where it is exact,
    the soft Viterbi for the other rows."""
    words, exact = _hard_words(llr)
    rest = np.flatnonzero(~exact)
    if rest.size:
        words[rest] = _viterbi_words(llr[rest], np.full(rest.size, llr.shape[1]))
    return words


def _viterbi_words(llr: np.ndarray, n_steps: np.ndarray) -> np.ndarray:
    """Terminated soft Viterbi over rows of mother-code values (r, T, 2) (log P(0)/P(1), any
    scale), row i ending in state 0 after n_steps[i] <= min(T, 64) steps: (r,) uint64 words,
    bit t the input of step t."""
    take, _ = _forward(_branch_metrics(llr), _START)
    return _traceback(take, n_steps)


def _viterbi(llr: np.ndarray, n_steps: np.ndarray) -> np.ndarray:
    """`_viterbi_words` as (r, T) uint8 bits."""
    words = _viterbi_words(llr, n_steps)
    shifts = np.arange(llr.shape[1], dtype=np.uint64)
    return ((words[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)


# --- CRCs as affine maps over GF(2) ------------------------------------------------------------


def _crc_bits(bits: np.ndarray, width: int, poly: int) -> np.ndarray:
    """Shift-register CRC preset to ones, ones-complemented, highest coefficient sent first."""
    top = 1 << (width - 1)
    mask = (1 << width) - 1
    reg = mask
    for b in bits.tolist():
        feedback = bool(reg & top) ^ b
        reg = (reg << 1) & mask
        if feedback:
            reg ^= poly
    reg ^= mask
    return np.array([(reg >> (width - 1 - i)) & 1 for i in range(width)], np.uint8)


def _crc_check(n_bits: int, width: int, poly: int) -> tuple[np.ndarray, np.ndarray]:
    """The CRC as parity checks on a packed word (bit i = the i-th bit sent): (masks, c) with
    popcount(word & masks[k]) odd == c[k] for every k iff the CRC is right. CRC bit k is
    an affine function of the data bits (crc(b) = A b + c mod 2); mask k takes row k of A and
    the received CRC bit k."""
    c = _crc_bits(np.zeros(n_bits, np.uint8), width, poly)
    cols = [_crc_bits(np.eye(n_bits, dtype=np.uint8)[i], width, poly) ^ c for i in range(n_bits)]
    a = np.stack(cols, axis=1)  # (width, n_bits)
    masks = [
        sum(1 << i for i in range(n_bits) if a[k, i]) | (1 << (n_bits + k)) for k in range(width)
    ]
    return np.array(masks, np.uint64), c.astype(np.uint8)


_CRC8 = _crc_check(34, 8, 0x07)  # HT-SIG (19.3.9.4.4): x^8 + x^2 + x + 1
_CRC16 = _crc_check(32, 16, 0x1021)  # PLCP header (15.3.3.7): x^16 + x^12 + x^5 + 1


def _parity(x: np.ndarray) -> np.ndarray:
    """The parity (popcount & 1) of each uint64, by folding (np.bitwise_count is NumPy >= 2;
    the Pi and the arm64 CI run NumPy 1.x)."""
    x = np.asarray(x, dtype=np.uint64)
    for shift in (32, 16, 8, 4, 2, 1):
        x = x ^ (x >> np.uint64(shift))
    return x & np.uint64(1)


def _crc_ok_words(words: np.ndarray, crc: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(r,) bool: the CRC of each packed word (r,) uint64 checks."""
    masks, c = crc
    return (_parity(words[:, None] & masks) == c).all(axis=1)


def _pack(bits: np.ndarray) -> np.ndarray:
    """(r, k <= 64) bits, the first sent first -> (r,) uint64 with bit i = bits[:, i]."""
    weights = np.uint64(1) << np.arange(bits.shape[1], dtype=np.uint64)
    return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def _crc_ok(bits: np.ndarray, crc: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(r,) bool: the CRC of each row of bits (r, k) (data, then CRC, first sent first) checks."""
    return _crc_ok_words(_pack(bits), crc)


def _field(words: np.ndarray, first: int, n_bits: int) -> np.ndarray:
    """Unsigned value of bits first..first + n_bits - 1 of packed words, sent LSB first."""
    return ((words >> np.uint64(first)) & np.uint64((1 << n_bits) - 1)).astype(np.int64)


def _value(bits: np.ndarray) -> np.ndarray:
    """Unsigned value of (r, k) bits sent LSB first."""
    return bits.astype(np.int64) @ (np.int64(1) << np.arange(bits.shape[1], dtype=np.int64))


# --- DSSS constants (clauses 15, 16) -----------------------------------------------------------

_BARKER = np.array([1, -1, 1, 1, -1, 1, 1, 1, -1, -1, -1], np.float64)
_SYMBOL = 20  # samples per 1 us Barker symbol at 20 Msps (11 chips)
_TEMPLATE_LEN = 21  # chip 0 at sample 1, chip 10 at 19.2


def _barker_template() -> np.ndarray:
    """One Barker symbol as a band-limited (chip-rate Nyquist) 20 Msps waveform, chip 0 at 1."""
    k = np.arange(_TEMPLATE_LEN)[:, None]
    t = (k - 1) * 11 / 20 - np.arange(11)[None, :]  # in chips, from each chip's centre
    w = np.sinc(t) * (np.abs(t) < 6)  # truncated sinc, +-6 chips
    s = w @ _BARKER
    return (s / np.linalg.norm(s)).astype(np.float32)


_TEMPLATE = _barker_template()


_TIMING_BLOCKS = (2, 34)  # 1 us blocks whose energy per phase sets the symbol timing


_SYNC_CHECK = 12  # SYNC bits required before an SFD
_SHORT_SFD, _LONG_SFD = 0x05CF, 0xF3A0  # sent LSB first
_SFD_WEIGHTS = np.left_shift(1, np.arange(16, dtype=np.int32))
_SYNC_RUN = 32  # descrambled SYNC bits that recognise a preamble whose SFD is past the row
_DSSS_VALID_DB = -13.0  # symbols this far below the packet's 90th-percentile energy are empty
# SIGNAL (rate in 100 kbit/s) -> Mbit/s; 15.3.3.4, 16.2.3.4.
_DSSS_RATE_OF_SIGNAL = np.zeros(256, np.float32)
_DSSS_RATE_OF_SIGNAL[[0x0A, 0x14, 0x37, 0x6E]] = (1.0, 2.0, 5.5, 11.0)
# DQPSK step in quarter turns -> dibit (d0, d1) (Table 15-5).
_DIBIT = np.array([[0, 0], [0, 1], [1, 1], [1, 0]], np.int8)

_MIN_SAMPLES = 2400  # rows are zero-padded to this (a short DSSS header ends by sample ~2000)


_MATCHED_PRODUCT_MAX = 4096  # outputs up to which all taps' products are made at once


def _matched(x: np.ndarray, n_out: int, step: int) -> np.ndarray:
    """Barker matched filter sum_k _TEMPLATE[k] x[:, p + k] at p = 0, step, ... (n_out values),
    summed in tap order. Few outputs (batches of 1-4): every tap's product in one array, summed
    over the tap axis (outermost, so in order); more: shift-adds over strided views (a gather
    and a sum over 21 taps is ~8x slower)."""
    r = x.shape[0]
    if r * n_out <= _MATCHED_PRODUCT_MAX:
        s_row, s_sample = x.strides
        taps = np.lib.stride_tricks.as_strided(
            x, (_TEMPLATE_LEN, r, n_out), (s_sample, s_row, step * s_sample), writeable=False
        )  # taps[k, i, p] = x[i, p * step + k]
        products = np.empty(taps.shape, np.complex64)  # C order: the tap axis outermost
        np.multiply(taps, _TEMPLATE[:, None, None], out=products)
        return np.add.reduce(products, axis=0)
    stop = step * (n_out - 1) + 1
    acc = x[:, 0:stop:step] * _TEMPLATE[0]
    for k in range(1, _TEMPLATE_LEN):
        acc += x[:, k : k + stop : step] * _TEMPLATE[k]
    return acc


def _first(hit: np.ndarray) -> np.ndarray:
    """Index of the first True per row of (r, k), or -1."""
    if hit.shape[1] == 0:
        return np.full(hit.shape[0], -1)
    return np.where(hit.any(axis=1), np.argmax(hit, axis=1), -1)


def _find_sync(plain: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, ...]:
    """Descrambled DSSS bits (r, m) int8 and their validity -> first symbol of 12 SYNC zeros +
    short SFD, of 12 SYNC ones + long SFD, of _SYNC_RUN zeros (short SYNC) and of _SYNC_RUN
    ones (long SYNC), each -1 if none. The SYNC runs are searched only when some row has no SFD
    (they only count there)."""
    r, m = plain.shape
    zero = np.zeros((r, 1), np.int32)
    ones = np.concatenate([zero, np.cumsum(ok & (plain == 1), axis=1, dtype=np.int32)], axis=1)
    zeros = np.concatenate([zero, np.cumsum(ok & (plain == 0), axis=1, dtype=np.int32)], axis=1)
    n = max(m - _SYNC_CHECK - 16 + 1, 0)  # window starts of SYNC + SFD
    sync1 = ones[:, _SYNC_CHECK : _SYNC_CHECK + n] - ones[:, :n] == _SYNC_CHECK
    sync0 = zeros[:, _SYNC_CHECK : _SYNC_CHECK + n] - zeros[:, :n] == _SYNC_CHECK
    lo, hi = _SYNC_CHECK, _SYNC_CHECK + 16
    valid = ones + zeros  # (r, m + 1) cumulative count of valid bits
    sfd_ok = valid[:, hi : hi + n] - valid[:, lo : lo + n] == 16
    windows = np.lib.stride_tricks.as_strided(
        plain[:, lo:], (r, n, 16), (plain.strides[0], plain.strides[1], plain.strides[1])
    )  # windows[i, p, k] = plain[i, lo + p + k]
    sfd = windows @ _SFD_WEIGHTS  # (r, n): the 16 SFD bits, LSB first, as one number
    short_at = _first(sync0 & sfd_ok & (sfd == _SHORT_SFD))
    long_at = _first(sync1 & sfd_ok & (sfd == _LONG_SFD))
    if ((short_at >= 0) | (long_at >= 0)).all():
        none = np.full(r, -1)
        return short_at, long_at, none, none
    w = _SYNC_RUN
    run = max(m - w + 1, 0)
    return (
        short_at,
        long_at,
        _first(zeros[:, w : w + run] - zeros[:, :run] == w),
        _first(ones[:, w : w + run] - ones[:, :run] == w),
    )


# --- the decoder -------------------------------------------------------------------------------


def decode_headers(iq: np.ndarray, sample_rate_hz: float = SAMPLE_RATE_HZ) -> np.ndarray:
    """Decode the PHY header of each packet in `iq` (n, L) complex, 20 Msps, any scale.

    Returns (n, len(HEADER_FIELDS)) float32. hdr_ok is 1 where the header decoded and its check
    passed (L-SIG parity, reserved bit and RATE; plus the HT-SIG CRC-8 for HT-mixed; the PLCP
    CRC-16 for DSSS), else 0. hdr_format: 0 DSSS, 1 non-HT OFDM, 2 HT-mixed. hdr_rate: Mbit/s
    (DSSS, non-HT) or the MCS (HT). hdr_length: PSDU bytes (DSSS from LENGTH us, rate and the
    length-extension bit; non-HT the L-SIG LENGTH; HT the HT-SIG HT_LENGTH). hdr_aggregated: the
    HT-SIG aggregation bit (0 for other formats), hdr_short_gi: the HT-SIG short GI bit (0 for
    other formats), hdr_preamble_short: 1 for a DSSS short preamble (0 for long and for OFDM).

    Fields not decoded are NaN: a DSSS packet whose SYNC is recognised but whose header is past
    the end of the row (a long preamble's header starts at 192 us) gets hdr_format 0 and
    hdr_preamble_short 0, the rest NaN; an HT-mixed packet whose L-SIG is good but HT-SIG CRC
    fails gets hdr_format 2 only. Rows with a non-finite sample, all zeros, noise or a
    truncated header decode to hdr_ok 0 and NaN.
    """
    if sample_rate_hz != SAMPLE_RATE_HZ:
        raise ValueError(f"decode_headers takes 20 Msps packets, got {sample_rate_hz} Hz")
    x = np.asarray(iq)
    if x.ndim != 2:
        raise ValueError(f"iq must be (n_packets, n_samples), got shape {x.shape}")
    if not (np.iscomplexobj(x) or x.shape[0] == 0):
        raise ValueError(f"iq must be complex (complex64), got dtype {x.dtype}")
    n, length = x.shape
    out = np.empty((n, len(HEADER_FIELDS)), np.float32)
    out[:] = _NOT_DECODED
    if n == 0 or length == 0:
        return out
    y = x.astype(np.complex64, copy=False)
    peak = np.abs(y).max(axis=1)  # NaN and inf propagate
    good = np.flatnonzero(np.isfinite(peak) & (peak > 0))
    if good.size == 0:
        return out
    if good.size < n:
        y, peak = y[good], peak[good]
    buf = np.empty((good.size, max(length, _MIN_SAMPLES)), np.complex64)
    buf[:, length:] = 0
    np.multiply(y, (1 / peak)[:, None].astype(np.float32), out=buf[:, :length])
    ofdm_done = _decode_ofdm(buf, out, good)
    if not ofdm_done.all():
        rest = np.flatnonzero(~ofdm_done)
        _decode_dsss(buf if rest.size == good.size else buf[rest], out, good[rest])
    return out


def _rows_at(buf: np.ndarray, rows: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """buf[rows[i], starts[i] : starts[i] + n] for each i: (len(rows), n), one gather."""
    base = rows * buf.shape[1] + starts  # (c,)
    index = _SAMPLE_INDEX[:n] if n <= _SAMPLE_INDEX.size else np.arange(n)
    return buf.reshape(-1).take(base[:, None] + index)


def _rotate(seg: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """seg (r, m) times exp(-j omega k), k = 0..m-1, omega (r,) float32 rad/sample."""
    theta = omega[:, None] * _SAMPLE_INDEX_F32[: seg.shape[1]]
    phasor = np.empty(theta.shape, np.complex64)  # cos/sin: ~30x faster than a complex exp
    np.cos(theta, out=phasor.real)
    np.negative(np.sin(theta), out=phasor.imag)
    return np.multiply(seg, phasor, out=phasor)


def _decode_ofdm(buf: np.ndarray, out: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Decode the OFDM packets among `buf` (r, L) into out[rows]; (r,) bool: L-SIG decoded."""
    r = buf.shape[0]
    decoded = np.zeros(r, bool)
    # L-STF: |sum y[t] y*[t+16]| / sum |y[t+16]|^2 over 64 samples, for each start t; running
    # sums from a leading 0.
    early_part = buf[:, : _STF_SEARCH + _STF_WINDOW]  # (r, 384)
    late_part = buf[:, 16 : _STF_SEARCH + _STF_WINDOW + 16]
    c_prod = np.empty((r, _STF_SEARCH + _STF_WINDOW + 1), np.complex64)  # (r, 385)
    c_prod[:, 0] = 0
    np.multiply(early_part, late_part.conj(), out=c_prod[:, 1:])
    np.cumsum(c_prod[:, 1:], axis=1, out=c_prod[:, 1:])
    c_pow = np.empty(c_prod.shape, np.float32)
    c_pow[:, 0] = 0
    np.square(late_part.real, out=c_pow[:, 1:])
    c_pow[:, 1:] += np.square(late_part.imag)
    np.cumsum(c_pow[:, 1:], axis=1, out=c_pow[:, 1:])
    acf = c_prod[:, _STF_WINDOW:] - c_prod[:, :-_STF_WINDOW]  # (r, 321)
    pw = c_pow[:, _STF_WINDOW:] - c_pow[:, :-_STF_WINDOW]
    metric = np.abs(acf)
    metric /= np.maximum(pw, 1e-20, out=pw)
    hit = np.argmax(metric, axis=1)  # (r,)
    cand = np.flatnonzero(metric.max(axis=1) > _STF_THRESHOLD)
    if cand.size == 0:
        return decoded
    if cand.size < r:
        hit = hit[cand]
    omega = -np.angle(acf[cand, hit]) / 16  # (c,) coarse CFO, rad/sample

    # L-LTF timing: cross-correlation with a long symbol, both symbols lined up.
    first = hit + _LTF_FROM
    lseg_f = np.fft.fft(_rotate(_rows_at(buf, cand, first, _LTF_SEGMENT), omega), axis=1)
    lseg_f *= _LTF_REF_F
    xc = np.abs(np.fft.ifft(lseg_f, axis=1))[:, : _LTF_SPAN + _N_FFT]  # valid part
    # Both symbols' peaks summed, after _EARLY_PATH columns of -inf (no path before the row).
    both = np.empty((cand.size, _EARLY_PATH + _LTF_SPAN), np.float32)
    both[:, :_EARLY_PATH] = -np.inf
    np.add(xc[:, :_LTF_SPAN], xc[:, _N_FFT : _N_FFT + _LTF_SPAN], out=both[:, _EARLY_PATH:])
    peak = np.argmax(both[:, _EARLY_PATH:], axis=1)
    # The peak sits on the strongest path: step back (up to _EARLY_PATH samples) to the
    # earliest one of comparable strength; `near` ends with the peak itself, always strong.
    near = both.reshape(-1).take(
        (np.arange(cand.size) * both.shape[1] + peak)[:, None] + _SAMPLE_INDEX[: _EARLY_PATH + 1]
    )  # (c, 9): both at peak - 8 .. peak
    strong = near >= 0.35 * near[:, _EARLY_PATH:]
    t1 = first + peak - _EARLY_PATH + np.argmax(strong, axis=1) - 2  # 2 samples into the GI

    # Fields from the first long symbol: LTF1, LTF2, L-SIG, HT-SIG1, HT-SIG2 (FFT windows).
    sym = _rotate(_rows_at(buf, cand, t1, _FIELD_SPAN), omega)  # (c, 368)
    rep = np.sum(sym[:, :64] * sym[:, 64:128].conj(), axis=1)
    ltf_power = np.abs(sym[:, :128])
    np.square(ltf_power, out=ltf_power)
    per_symbol = ltf_power.reshape(-1, 2, _N_FFT).sum(axis=2)  # (c, 2)
    energy = 0.5 * (per_symbol[:, 0] + per_symbol[:, 1])
    keep = np.abs(rep) > _LTF_THRESHOLD * np.maximum(energy, 1e-20)
    fine = -np.angle(rep) / 64  # sum l1 l2* = |l1|^2 exp(-j 64 w)
    if not keep.all():
        sym, fine, cand = sym[keep], fine[keep], cand[keep]
        if cand.size == 0:
            return decoded
    c = cand.size
    sym = _rotate(sym, fine)
    bins = np.fft.fft(sym[:, _FIELD_WINDOWS], axis=2)  # (c, 5, 64)
    used = bins[:, :, _USED_BINS]  # (c, 5, 52)
    # einsum, not @: small BLAS products with their threads are slow on a busy CPU.
    h = np.einsum("ck,kj->cj", 0.5 * (used[:, 0] + used[:, 1]) * _LTF_USED, _SMOOTH)  # (c, 52)
    # L-SIG, HT-SIG1, HT-SIG2: pilot phase, then MRC weighting.
    z = used[:, 2:] * h.conj()[:, None]  # (c, 3, 52)
    cpe = np.stack([z[:, s, _PILOT_COL] @ _PILOT_SIGNS[s] for s in range(3)], axis=1)  # (c, 3)
    soft = z[:, :, _DATA_COL] * (cpe.conj() / np.maximum(np.abs(cpe), 1e-30))[:, :, None]
    # Only a 6 Mbit/s L-SIG can announce HT; after any other rate the next symbol is data.
    ht_soft = soft[:, 1:]  # (c, 2, 48)
    q_energy = np.square(ht_soft.imag).sum(axis=2)  # (c, 2)
    i_energy = np.square(ht_soft.real).sum(axis=2)
    qbpsk = q_energy[:, 0] + q_energy[:, 1] > _QBPSK_RATIO * (i_energy[:, 0] + i_energy[:, 1])
    ht = np.flatnonzero(qbpsk)

    # BPSK bit 1 is +1 (+j for HT-SIG); Viterbi wants log P(0)/P(1). L-SIG rows first.
    coded = np.zeros((c + ht.size, 96), np.float32)
    np.negative(soft[:, 0].real[:, _DEINTERLEAVE], out=coded[:c, :48])  # coded bits in order
    np.negative(ht_soft[ht].imag[:, :, _DEINTERLEAVE].reshape(-1, 96), out=coded[c:])
    llr = coded.reshape(-1, 48, 2)
    llr /= np.maximum(np.abs(llr).mean(axis=(1, 2), keepdims=True), 1e-30)
    # L-SIG's 24 steps for every row, HT-SIG's 48 only where the L-SIG says HT.
    lsig = _decode_words(llr[:c, :_LSIG_STEPS])
    rate = _RATE_OF_BITS[_field(lsig, 0, 4)]
    parity_even = _parity(lsig & np.uint64((1 << 18) - 1)) == 0
    lsig_ok = (rate > 0) & (_field(lsig, 4, 1) == 0) & parity_even
    dst = rows[cand]
    ok = lsig_ok & ~(qbpsk & (rate == 6))
    legacy = np.empty((int(ok.sum()), len(HEADER_FIELDS)), np.float32)
    legacy[:] = _DECODED_LEGACY
    legacy[:, _RATE] = rate[ok]
    legacy[:, _LENGTH] = _field(lsig[ok], 5, 12)
    out[dst[ok]] = legacy
    is_ht = lsig_ok[ht] & (rate[ht] == 6)
    out[dst[ht[is_ht]], _FORMAT] = FORMAT_HT
    decoded[cand[ok]] = True
    decoded[cand[ht[is_ht]]] = True
    lanes = c + np.flatnonzero(is_ht)
    if lanes.size == 0:
        return decoded
    htsig = _decode_words(llr[lanes])
    ht_ok = _crc_ok_words(htsig, _CRC8)
    h_words = htsig[ht_ok]
    decoded_ht = np.empty((h_words.size, len(HEADER_FIELDS)), np.float32)
    decoded_ht[:] = _DECODED_HT
    decoded_ht[:, _RATE] = _field(h_words, 0, 7)
    decoded_ht[:, _LENGTH] = _field(h_words, 8, 16)
    decoded_ht[:, _AGG] = _field(h_words, 27, 1)
    decoded_ht[:, _SGI] = _field(h_words, 31, 1)
    out[dst[ht[is_ht][ht_ok]]] = decoded_ht
    return decoded


def _decode_dsss(buf: np.ndarray, out: np.ndarray, rows: np.ndarray) -> None:
    """Decode the DSSS packets among `buf` (r, L) into out[rows]."""
    r, length = buf.shape
    # Symbol timing: the phase with the most matched-filter energy over the SYNC field.
    b0, b1 = _TIMING_BLOCKS
    mf = _matched(buf[:, b0 * _SYMBOL : (b1 + 1) * _SYMBOL], (b1 - b0) * _SYMBOL, 1)
    per_phase = (mf.real**2 + mf.imag**2).reshape(r, b1 - b0, _SYMBOL).sum(axis=1)  # (r, 20)
    tau = np.argmax(per_phase, axis=1)  # (r,) samples from a 1 us boundary to a symbol
    m = (length - _TEMPLATE_LEN - _SYMBOL + 1) // _SYMBOL + 1  # symbols that fit at any tau
    span = _SYMBOL * (m - 1) + _TEMPLATE_LEN
    z = _matched(_rows_at(buf, np.arange(r), tau, span), m, _SYMBOL)
    energy = z.real**2 + z.imag**2  # (r, m) despread symbols
    ref = per_phase.max(axis=1)[:, None] / (b1 - b0)  # mean symbol energy in the SYNC
    valid = energy > ref * 10 ** (_DSSS_VALID_DB / 10)
    diff = z[:, 1:] * z[:, :-1].conj()  # (r, m - 1): transition into symbol k + 1
    scr = np.zeros((r, m), np.int8)
    scr[:, 1:] = diff.real < 0  # DBPSK: a 1 turns the phase by pi
    plain = scr.copy()
    plain[:, 4:] ^= scr[:, :-4]
    plain[:, 7:] ^= scr[:, :-7]
    # A descrambled bit is good where the 9 symbols it comes from (2 per transition, 8
    # transitions) are all valid: a window of 9 without an invalid symbol.
    invalid = np.zeros((r, m + 1), np.int32)
    np.cumsum(~valid, axis=1, dtype=np.int32, out=invalid[:, 1:])
    ok_plain = np.zeros((r, m), bool)
    np.equal(invalid[:, 9:], invalid[:, :-9], out=ok_plain[:, 8:])
    short_at, long_at, short_sync, long_sync = _find_sync(plain, ok_plain)
    # SFD first; else the SYNC alone (a long preamble's SFD ends at 144 us, near a row's end).
    is_short = (short_at >= 0) & ((long_at < 0) | (short_at < long_at))
    is_long = ~is_short & (long_at >= 0)
    by_sync = (short_at < 0) & (long_at < 0)
    is_short |= by_sync & (short_sync >= 0) & ((long_sync < 0) | (short_sync < long_sync))
    is_long |= by_sync & (long_sync >= 0) & ~is_short
    out[rows[is_short | is_long], _FORMAT] = FORMAT_DSSS
    out[rows[is_short], _SHORT] = 1
    out[rows[is_long], _SHORT] = 0

    sfd = np.where(is_short, short_at, long_at) + _SYNC_CHECK  # first SFD symbol
    hdr0 = sfd + 16
    n_hdr = np.where(is_short, 24, 48)
    fits = ((short_at >= 0) | (long_at >= 0)) & (hdr0 + n_hdr <= m)
    sel = np.flatnonzero(fits)
    if sel.size == 0:
        return
    header = np.zeros((sel.size, 48), np.int8)
    hdr_valid = np.zeros(sel.size, bool)
    for short in (True, False):
        part = np.flatnonzero(is_short[sel] == short)
        if part.size == 0:
            continue
        pr = sel[part]
        if not short:  # 48 DBPSK symbols, already descrambled
            i = hdr0[pr, None] + np.arange(48)
            header[part] = plain[pr[:, None], i]
            hdr_valid[part] = ok_plain[pr[:, None], i].all(axis=1)
            continue
        # CFO from the SYNC + SFD transitions, whose bits are known now: rad per symbol.
        k = np.arange(m - 1)[None, :] + 1  # transition into symbol k
        train = (k >= np.maximum(sfd[pr, None] - 40, 1)) & (k < hdr0[pr, None])
        unmod = diff[pr] * (1 - 2 * scr[pr, 1:].astype(np.float32))
        w = np.angle(np.sum(np.where(train, unmod, 0), axis=1))  # (p,)
        i = hdr0[pr, None] + np.arange(24)  # header symbols
        d = diff[pr[:, None], i - 1] * np.exp(-1j * w)[:, None]
        quarter = np.round(np.angle(d) / (np.pi / 2)).astype(np.int64) % 4  # (p, 24)
        hdr_scr = _DIBIT[quarter].reshape(-1, 48)  # d0 first
        prev = scr[pr[:, None], hdr0[pr, None] - 7 + np.arange(7)]  # SFD bits before it
        s = np.concatenate([prev, hdr_scr], axis=1)  # (p, 55)
        header[part] = (s[:, 7:] ^ s[:, 3:-4] ^ s[:, :-7])[:, :48]
        hdr_valid[part] = valid[pr[:, None], np.concatenate([i[:, :1] - 1, i], axis=1)].all(1)
    signal = _value(header[:, :8])
    service = _value(header[:, 8:16])
    length_us = _value(header[:, 16:32])
    rate = _DSSS_RATE_OF_SIGNAL[signal]
    good = hdr_valid & _crc_ok(header, _CRC16) & (rate > 0)
    ext = (service >> 7) & 1
    n_bytes = np.select(
        [rate == 1.0, rate == 2.0, rate == 5.5, rate == 11.0],
        [length_us // 8, length_us // 4, length_us * 11 // 16, length_us * 11 // 8 - ext],
        0,
    )
    dst = rows[sel[good]]
    out[dst, _OK] = 1
    out[dst, _RATE] = rate[good]
    out[dst, _LENGTH] = n_bytes[good]
    out[dst, _AGG] = 0
    out[dst, _SGI] = 0

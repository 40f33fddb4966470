"""Soft-decision Viterbi decoder for the 802.11 BCC (IEEE 802.11-2016 17.3.5.6).

K = 7, generators g0 = 133 (octal), g1 = 171 (octal), encoder starting (and, with the 6 tail
bits, ending) in the all-zero state. Punctured rates are decoded by inserting zero-confidence
values where bits were stolen (Figure 17-9; 5/6 from 19.3.11.6).

Long inputs are split into blocks decoded side by side (a numpy batch dimension): each block is
decoded inside a window that overlaps its neighbours by `OVERLAP` trellis steps, far beyond the
~5K survivor-merge depth, so the decisions equal a whole-sequence decoder's except with
negligible probability. This keeps a 40 kB A-MPDU well under a second in pure numpy.
"""

from __future__ import annotations

import numpy as np

# Keep-patterns over the mother-code stream A0 B0 A1 B1 ... (Figure 17-9 and 19.3.11.6).
PUNCTURE_PATTERNS: dict[str, tuple[int, ...]] = {
    "1/2": (1, 1),
    "2/3": (1, 1, 1, 0),
    "3/4": (1, 1, 1, 0, 0, 1),
    "5/6": (1, 1, 1, 0, 0, 1, 1, 0, 0, 1),
}

N_STATES = 64
BLOCK = 256  # trellis steps decided per block
OVERLAP = 128  # extra steps each side of a block


def _trellis() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predecessor-form trellis: for next state s', predecessors p0 (dropped bit 0), p1, and the
    +-1 signs of outputs A, B on the p0 branch (the p1 branch has both signs flipped, because
    both generators tap the oldest register bit).

    State bit k-1 holds the input bit of k steps ago (k = 1..6).
    """
    nxt = np.arange(N_STATES)
    u = nxt & 1  # the input bit that led into s'
    p0 = nxt >> 1
    p1 = p0 | 32
    reg = [(p0 >> i) & 1 for i in range(6)]  # reg[i]: input i + 1 steps before u
    # g0 = 1011011: taps at delays 0, 2, 3, 5, 6; g1 = 1111001: delays 0, 1, 2, 3, 6.
    a = u ^ reg[1] ^ reg[2] ^ reg[4] ^ reg[5]
    b = u ^ reg[0] ^ reg[1] ^ reg[2] ^ reg[5]
    return p0, p1, np.stack([1.0 - 2.0 * a, 1.0 - 2.0 * b]).astype(np.float32)  # (2, 64)


_P0, _P1, _SIGNS = _trellis()


def encode(bits: np.ndarray) -> np.ndarray:
    """Rate-1/2 encoder (A0 B0 A1 B1 ...), for tests of the decoder itself."""
    b = np.concatenate([np.zeros(6, np.uint8), np.asarray(bits, np.uint8)])
    n = b.size - 6
    cur = b[6:]

    def tap(d: int) -> np.ndarray:
        return b[6 - d : 6 - d + n]

    a = cur ^ tap(2) ^ tap(3) ^ tap(5) ^ tap(6)
    c = cur ^ tap(1) ^ tap(2) ^ tap(3) ^ tap(6)
    return np.stack([a, c], axis=1).reshape(-1)


def depuncture(soft: np.ndarray, rate: str) -> np.ndarray:
    """Punctured soft values -> mother-code stream with zeros where bits were stolen."""
    keep = np.array(PUNCTURE_PATTERNS[rate], dtype=bool)
    per = int(keep.sum())
    soft = np.asarray(soft, dtype=np.float32)
    if soft.size % per:
        raise ValueError(f"{soft.size} soft bits is not a whole number of rate-{rate} periods")
    out = np.zeros((soft.size // per, keep.size), dtype=np.float32)
    out[:, keep] = soft.reshape(-1, per)
    return out.reshape(-1)


def viterbi(llr: np.ndarray, terminated: bool = True) -> np.ndarray:
    """Decode mother-code soft values (A0 B0 A1 B1 ..., log P(0)/P(1)) to bits (uint8).

    `terminated`: the encoder ended in state 0 (tail bits), so trace back from there.
    """
    llr = np.asarray(llr, dtype=np.float32)
    if llr.ndim != 1 or llr.size % 2:
        raise ValueError(f"need an even number of soft values, got shape {llr.shape}")
    n = llr.size // 2
    if n == 0:
        return np.zeros(0, np.uint8)
    pairs = llr.reshape(n, 2)
    n_blocks = -(-n // BLOCK)
    win = BLOCK + 2 * OVERLAP if n_blocks > 1 else n
    starts = np.arange(n_blocks) * BLOCK - (OVERLAP if n_blocks > 1 else 0)  # window starts
    starts[0] = 0
    # (win, n_blocks, 2) soft values per window; zero beyond the sequence (no information).
    t = starts[None, :] + np.arange(win)[:, None]  # (win, n_blocks)
    valid = (t >= 0) & (t < n)
    x = np.where(valid[..., None], pairs[np.clip(t, 0, n - 1)], 0.0).astype(np.float32)

    metric = np.zeros((n_blocks, N_STATES), dtype=np.float32)
    metric[0, 1:] = -1e9  # the first window starts in the known zero state
    decisions = np.empty((win, n_blocks, N_STATES), dtype=bool)
    sa, sb = _SIGNS
    for k in range(win):
        bm = x[k, :, 0:1] * sa + x[k, :, 1:2] * sb  # (n_blocks, 64) half branch metric
        m0 = metric[:, _P0] + bm
        m1 = metric[:, _P1] - bm
        d = m1 > m0
        decisions[k] = d
        metric = np.where(d, m1, m0)
        if k % 32 == 31:
            metric -= metric.max(axis=1, keepdims=True)

    # Trace back each window from its end (its best state), except that a terminated
    # sequence's last window starts from state 0 at the last real step; the zero-information
    # steps after it are skipped.
    rows = np.arange(n_blocks)
    bits = np.zeros((win, n_blocks), dtype=np.uint8)
    state = np.argmax(metric, axis=1).astype(np.int64)
    last = np.full(n_blocks, win - 1)  # (n_blocks,) local step the traceback starts from
    if terminated:
        at_end = starts + win >= n
        state[at_end] = 0
        last[at_end] = n - 1 - starts[at_end]
    for k in range(win - 1, -1, -1):
        active = k <= last
        bits[k] = state & 1
        prev = (state >> 1) | (decisions[k, rows, state].astype(np.int64) << 5)
        state = np.where(active, prev, state)
    # Keep from each window the block it is responsible for.
    out = np.empty(n, dtype=np.uint8)
    for i in range(n_blocks):
        lo = i * BLOCK
        hi = min(lo + BLOCK, n)
        out[lo:hi] = bits[lo - starts[i] : hi - starts[i], i]
    return out

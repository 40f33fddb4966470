"""An 802.11b receiver (IEEE 802.11-2016 clause 15 DSSS, clause 16 HR/DSSS): 20 Msps complex
baseband -> PSDU bytes, for long and short PLCP preambles at 1, 2, 5.5 and 11 Mbit/s.

Written for testing the synthetic transmitter, so it shares no code with it: the constants are
typed from the standard. The chain: resample to 22 Msps (2 samples per 11 Mchip/s chip), Barker
matched filter and symbol timing, differential DBPSK decisions, descrambling and the SFD search,
CFO from the known-modulation preamble, a widely linear least-squares chip equaliser trained on
the re-modulated preamble and header (undoes multipath, the sampling phase and receiver IQ
imbalance), then the PLCP header (SIGNAL, SERVICE, LENGTH, CRC-16) and the PSDU: DBPSK/DQPSK
Barker symbols or CCK codewords found by correlation against all 64 (11 Mbit/s) or 4
(5.5 Mbit/s) phase patterns, differential phi1, descrambling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import resample_poly

FS_HZ = 20e6

# 15.4.4.3 (and 16.2.3): the 11-chip Barker sequence, leftmost chip first.
BARKER = np.array([1, -1, 1, 1, -1, 1, 1, 1, -1, -1, -1], dtype=float)
# 15.3.3.3 / 16.2.2.3: SFDs, sent LSB first; SYNC is 128 scrambled ones (long) or 56 scrambled
# zeros (short).
LONG_SFD = 0xF3A0
SHORT_SFD = 0x05CF
# 15.3.3.4 / 16.2.3.4: SIGNAL octet -> Mbit/s.
RATE_OF_SIGNAL = {0x0A: 1.0, 0x14: 2.0, 0x37: 5.5, 0x6E: 11.0}
# 15.4.4.6 (Table 15-5): DQPSK dibit (d0, d1) -> phase change in quarter turns.
DQPSK_STEP = {(0, 0): 0, (0, 1): 1, (1, 1): 2, (1, 0): 3}
_DIBIT_OF_STEP = {v: k for k, v in DQPSK_STEP.items()}
# 16.4.6.5 (Table 16-4): (d2, d3) -> phi2..phi4 quarter turns at 11 Mbit/s.
_CCK_QPSK = {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 3}

_TAPS_BEFORE, _TAPS_AFTER = 8, 16  # equaliser span in 22 Msps samples around a chip


class DecodeError(Exception):
    """The receiver could not decode the packet; the message says at which stage and why."""


@dataclass
class DsssResult:
    preamble: str  # "long" or "short"
    rate_mbps: float
    service: int
    length_us: int
    psdu_bytes: int
    cfo_hz: float
    psdu: bytes | None = None
    extra: dict[str, float] = field(default_factory=dict)


def _lsb_bits(value: int, n: int) -> np.ndarray:
    return ((value >> np.arange(n)) & 1).astype(np.uint8)


def _value(bits: np.ndarray) -> int:
    return int(np.sum(bits.astype(np.int64) << np.arange(bits.size)))


def descramble(s: np.ndarray) -> np.ndarray:
    """The self-synchronising descrambler of Figure 15-4 / 16-?: b[n] = s[n] ^ s[n-4] ^ s[n-7];
    the first 7 outputs are meaningless (unknown register)."""
    s = np.asarray(s, np.uint8)
    out = s.copy()
    out[4:] ^= s[:-4]
    out[7:] ^= s[:-7]
    return out


def crc16_ok(bits48: np.ndarray) -> bool:
    """15.3.3.7: CRC-16 (x^16 + x^12 + x^5 + 1, preset ones, ones complement) over SIGNAL,
    SERVICE and LENGTH, sent x^15 coefficient first."""
    reg = 0xFFFF
    for b in bits48[:32].tolist():
        fb = ((reg >> 15) & 1) ^ b
        reg = (reg << 1) & 0xFFFF
        if fb:
            reg ^= 0x1021
    reg ^= 0xFFFF
    sent = bits48[32:48]
    return all(((reg >> (15 - i)) & 1) == int(sent[i]) for i in range(16))


def _cck_patterns(rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(candidates (n, 8) chips with phi1 = 0, their data bits (n, 6 or 2) after d0 d1).

    16.4.6.4: c = {e^j(p1+p2+p3+p4), e^j(p1+p3+p4), e^j(p1+p2+p4), -e^j(p1+p4),
    e^j(p1+p2+p3), e^j(p1+p3), -e^j(p1+p2), e^j(p1)}, c0 sent first."""
    rows, bits = [], []
    if rate == 11.0:
        for d in range(64):
            b = [(d >> (5 - i)) & 1 for i in range(6)]  # d2..d7
            p2 = _CCK_QPSK[(b[0], b[1])]
            p3 = _CCK_QPSK[(b[2], b[3])]
            p4 = _CCK_QPSK[(b[4], b[5])]
            rows.append((p2, p3, p4))
            bits.append(b)
    else:
        # 16.4.6.6: 5.5 Mbit/s: phi2 = d2 * pi + pi/2, phi3 = 0, phi4 = d3 * pi.
        for d2 in (0, 1):
            for d3 in (0, 1):
                rows.append((2 * d2 + 1, 0, 2 * d3))
                bits.append([d2, d3])
    q = []
    for p2, p3, p4 in rows:
        q.append([p2 + p3 + p4, p3 + p4, p2 + p4, p4 + 2, p2 + p3, p3, p2 + 2, 0])
    chips = np.exp(0.5j * np.pi * np.array(q, float))
    return chips, np.array(bits, np.uint8)


_CCK = {r: _cck_patterns(r) for r in (5.5, 11.0)}


def _barker_symbols(x22: np.ndarray, phase: int, n_sym: int) -> np.ndarray:
    """Despread symbols m = 0..n_sym-1 whose chip i sits at sample phase + 22 m + 2 i."""
    idx = phase + 22 * np.arange(n_sym)[:, None] + 2 * np.arange(11)[None, :]
    return despread(x22[idx])


def despread(chips: np.ndarray) -> np.ndarray:
    """Barker correlation of (..., 11) chips. Products here avoid BLAS on purpose: its threads
    cost far more than these small products on a loaded machine."""
    return (chips * BARKER).sum(axis=-1)


def _diff_steps(z: np.ndarray, qpsk: bool) -> np.ndarray:
    """Quarter-turn phase steps between consecutive symbols (n - 1,)."""
    d = z[1:] * np.conj(z[:-1])
    if qpsk:
        return np.round(np.angle(d) / (np.pi / 2)).astype(np.int64) % 4
    return np.where(d.real < 0, 2, 0)


def _bits_of_steps(steps: np.ndarray, qpsk: bool) -> np.ndarray:
    if not qpsk:
        return (steps // 2).astype(np.uint8)
    return np.array([_DIBIT_OF_STEP[int(s)] for s in steps], np.uint8).reshape(-1)


def receive(y: np.ndarray, fs_hz: float = FS_HZ) -> DsssResult:
    """Decode one 802.11b PPDU from complex baseband `y` at 20 Msps."""
    if fs_hz != FS_HZ:
        raise ValueError(f"the DSSS receiver takes 20 Msps, got {fs_hz}")
    y = np.asarray(y, np.complex128)
    if y.size < 2000:
        raise DecodeError(f"{y.size} samples: too short for a PLCP preamble")
    x22 = resample_poly(y, 11, 10)  # 22 Msps, chip i of a symbol every 2 samples

    # Symbol timing: the Barker matched filter peaks every 22 samples over the preamble.
    template = np.zeros(21)
    template[::2] = BARKER
    mf = np.correlate(x22, template, "valid")  # mf[n] = sum_i x22[n + 2 i] B_i
    n_sym_all = (mf.size - 22) // 22
    if n_sym_all < 100:
        raise DecodeError("signal too short for a PLCP preamble")
    energy = np.abs(mf[: 22 * n_sym_all].reshape(n_sym_all, 22)) ** 2
    # The preamble's symbols are the strongest Barker stretch; CCK data adds a flat floor.
    phase = int(np.argmax(energy[: min(n_sym_all, 200)].sum(axis=0)))
    n_sym = (x22.size - phase - 21) // 22
    z = _barker_symbols(x22, phase, n_sym)

    # First pass: DBPSK everywhere, descramble, find SYNC + SFD.
    scr = np.concatenate([[0], _bits_of_steps(_diff_steps(z, False), False)])  # bit m: symbol m
    plain = descramble(scr)
    found = None
    for pre, sfd, sync_bit in (("long", LONG_SFD, 1), ("short", SHORT_SFD, 0)):
        pattern = np.concatenate([np.full(12, sync_bit, np.uint8), _lsb_bits(sfd, 16)])
        win = np.lib.stride_tricks.sliding_window_view(plain, pattern.size)
        hits = np.flatnonzero((win == pattern).all(axis=1))
        if hits.size and (found is None or hits[0] < found[1]):
            found = (pre, int(hits[0]) + 12)
    if found is None:
        raise DecodeError("no SYNC + SFD found in the descrambled Barker symbols")
    preamble, sfd0 = found  # symbol index of the first SFD bit
    hdr0 = sfd0 + 16
    hdr_syms = 48 if preamble == "long" else 24
    hdr_end = hdr0 + hdr_syms
    tr0 = max(1, sfd0 - (40 if preamble == "short" else 100))
    if hdr_end + 1 > n_sym:
        raise DecodeError("signal ends inside the PLCP header")

    # Re-modulate the preamble and header from the decisions: quarter-turn phase chain.
    qpsk_hdr = preamble == "short"
    steps = np.concatenate(
        [_diff_steps(z[tr0 - 1 : hdr0], False), _diff_steps(z[hdr0 - 1 : hdr_end], qpsk_hdr)]
    )  # (hdr_end - tr0,) step into each symbol tr0 .. hdr_end - 1
    q = np.cumsum(steps) % 4
    # CFO: the phase left after removing the modulation, fitted with a line (rad per symbol).
    u = z[tr0:hdr_end] * np.exp(-0.5j * np.pi * q)
    coarse = np.angle(np.sum(u[1:] * np.conj(u[:-1])))
    m = np.arange(u.size)
    resid = np.unwrap(np.angle(u * np.exp(-1j * coarse * m)))
    slope = coarse + np.polyfit(m, resid, 1)[0]
    w = slope / 22  # rad per 22 Msps sample
    x22 = x22 * np.exp(-1j * w * np.arange(x22.size))
    cfo_hz = w * 22e6 / (2 * np.pi)

    # LS chip equaliser trained on the re-modulated chips. Widely linear (a branch on the
    # conjugate too, undoing IQ imbalance) only when the training holds DQPSK symbols: on
    # DBPSK chips alone the conjugate branch is not identifiable (it may fold Q onto I).
    chip_q = (q[:, None] + np.where(BARKER < 0, 2, 0)[None, :]) % 4  # (n_train_sym, 11)
    target = np.exp(0.5j * np.pi * chip_q).reshape(-1)
    c0 = 11 * tr0
    pos = phase + 2 * (c0 + np.arange(target.size))  # sample of each training chip
    if pos[0] - _TAPS_BEFORE < 0:
        raise DecodeError("preamble starts too close to the first sample to train the equaliser")
    span = np.arange(-_TAPS_BEFORE, _TAPS_AFTER + 1)
    a = x22[pos[:, None] + span[None, :]]  # (n_train, n_taps)
    n_taps = span.size
    if qpsk_hdr:
        a = np.concatenate([a, np.conj(a)], axis=1)
    gram = np.einsum("ni,nj->ij", a.conj(), a)  # normal equations: <= 50 unknowns
    gram += 1e-6 * np.trace(gram).real / gram.shape[0] * np.eye(gram.shape[0])
    coef = np.linalg.solve(gram, np.einsum("ni,n->i", a.conj(), target))
    wl = coef[:n_taps]
    wc = coef[n_taps:] if qpsk_hdr else np.zeros(n_taps, complex)
    err = np.einsum("ni,i->n", a, coef) - target
    mse = float(np.mean(np.abs(err) ** 2))

    def chips(first_chip: int, n: int) -> np.ndarray:
        p = phase + 2 * (first_chip + np.arange(n))
        if n and p[-1] + _TAPS_AFTER >= x22.size:
            raise DecodeError(
                f"signal ends before chip {first_chip + n} (the LENGTH field asks for more)"
            )
        lo = p[0] - _TAPS_BEFORE
        seg = x22[lo : p[-1] + _TAPS_AFTER + 1]
        full = np.correlate(seg, np.conj(wl), "valid") + np.correlate(
            np.conj(seg), np.conj(wc), "valid"
        )  # full[k] = sum_t wl_t seg[k + t] + wc_t conj(seg[k + t])
        return full[::2][:n]

    # PLCP header from equalised symbols (plus the symbol before, for the differential).
    zh = despread(chips(11 * (tr0 - 1), 11 * (hdr_end - tr0 + 1)).reshape(-1, 11))
    pre_steps = _diff_steps(zh[: hdr0 - tr0 + 1], False)
    hdr_steps = _diff_steps(zh[hdr0 - tr0 : hdr_end - tr0 + 1], qpsk_hdr)
    scr_all = np.concatenate(
        [_bits_of_steps(pre_steps, False), _bits_of_steps(hdr_steps, qpsk_hdr)]
    )  # scrambled bits of symbols tr0 .. hdr_end - 1
    plain = descramble(scr_all)
    n_pre_bits = hdr0 - tr0
    header = plain[n_pre_bits : n_pre_bits + 48]
    if not crc16_ok(header):
        raise DecodeError(f"PLCP header CRC-16 fails (bits {header.tolist()})")
    signal = _value(header[0:8])
    service = _value(header[8:16])
    length_us = _value(header[16:32])
    if signal not in RATE_OF_SIGNAL:
        raise DecodeError(f"SIGNAL {signal:#04x} is not a DSSS/CCK rate")
    rate = RATE_OF_SIGNAL[signal]
    if service & 0x08:
        raise DecodeError("SERVICE modulation-select bit asks for PBCC, which this does not do")
    # 16.2.3.6: octets from LENGTH (us) and rate; at 11 Mbit/s minus the extension bit.
    n_bytes = {
        1.0: length_us // 8,
        2.0: length_us // 4,
        5.5: (length_us * 11) // 16,
        11.0: (length_us * 11) // 8 - ((service >> 7) & 1),
    }[rate]
    result = DsssResult(preamble, rate, service, length_us, n_bytes, cfo_hz)
    result.extra["eq_mse_db"] = float(10 * np.log10(max(mse, 1e-30)))
    n_bits = 8 * n_bytes
    last = zh[-1]  # the last header symbol: the differential reference for the PSDU
    tail_scr = scr_all[-7:]  # the descrambler's register going into the PSDU
    if rate in (1.0, 2.0):
        qpsk = rate == 2.0
        n_data = n_bits // (2 if qpsk else 1)
        zd = despread(chips(11 * hdr_end, 11 * n_data).reshape(-1, 11))
        steps = _diff_steps(np.concatenate([[last], zd]), qpsk)
        data_scr = _bits_of_steps(steps, qpsk)
    else:
        per = 8 if rate == 11.0 else 4
        n_cck = n_bits // per
        rx = chips(11 * hdr_end, 8 * n_cck).reshape(n_cck, 8)
        cand, cand_bits = _CCK[rate]
        corr = np.einsum("ni,ki->nk", rx, np.conj(cand))  # (n_cck, n_cand)
        best = np.argmax(np.abs(corr), axis=1)
        c = corr[np.arange(n_cck), best]  # (n_cck,) ~ e^{j phi1}
        ref = np.concatenate([[last], c])
        # phi1 changes by the DQPSK step plus pi on every odd-numbered symbol (16.4.6.5).
        step = np.round(np.angle(ref[1:] * np.conj(ref[:-1])) / (np.pi / 2)).astype(np.int64)
        step = (step - 2 * (np.arange(n_cck) % 2)) % 4
        d01 = np.array([_DIBIT_OF_STEP[int(s)] for s in step], np.uint8).reshape(n_cck, 2)
        data_scr = np.concatenate([d01, cand_bits[best]], axis=1).reshape(-1)
    data = descramble(np.concatenate([tail_scr, data_scr]))[7:]
    result.psdu = np.packbits(data[:n_bits], bitorder="little").tobytes()
    return result

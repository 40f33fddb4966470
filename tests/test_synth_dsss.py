"""The 802.11b transmitter against the standard: known vectors, properties and a receiver.

Known vectors and where they come from:

* CRC-16 example, 5.5 Mbit/s CCK codewords, LENGTH/extension examples: IEEE 802.11-2007
  Figure 15-3, Tables 18-13 and 18-2, as quoted literally in pellegre/libcrafter,
  crafter/tests/fixtures/iq/README.md ("DSSS/CCK vectors: source contract").
* Scrambled long SYNC: the 128-bit "expected WLAN preamble" of a public preamble-detection
  script found by code search (its repository is not named by the index); its first 16 bits and
  the short-SYNC bits also appear in the libcrafter README above, which labels them as derived
  from the scrambler figure (18-5 in 802.11-2007), not printed in the standard.
* SFD bit order: MathWorks WLAN Toolbox dsssInfo.m (SFD = flipud of the hex bits).
* CRC residue 0x1D0F (0xF0B8 bit-reversed, ka9q-unix crc.h FCS_FINAL): the CCITT property that
  a message followed by its ones-complement CRC always leaves the same remainder.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from edge_core.synth import dsss
from edge_core.synth.dsss import (
    BARKER,
    DSSS_RATES_MBPS,
    LONG_SEED,
    SHORT_SEED,
    cck_encode,
    chips_to_20msps,
    crc16_plcp,
    dbpsk,
    descramble,
    dqpsk,
    dsss_chips,
    dsss_ppdu,
    plcp_header_bits,
    plcp_length,
    ppdu_duration_samples,
    scramble,
)

COMBOS = [(r, p) for p in ("long", "short") for r in DSSS_RATES_MBPS if (r, p) != (1.0, "short")]


def bits_of(text: str) -> np.ndarray:
    return np.array([int(c) for c in text if c in "01"], dtype=np.uint8)


def psdu_of(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


# --- Test-side receiver, written from the standard's tables, not from the module's internals.

DQPSK_DIBIT = {0: (0, 0), 1: (0, 1), 2: (1, 1), 3: (1, 0)}  # phase change / (pi/2) -> (d0, d1)
QPSK_DIBIT = {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1)}  # CCK phi2..phi4 (Table 18-14)


def quadrants(z: np.ndarray) -> np.ndarray:
    q = np.angle(z) / (np.pi / 2)
    assert np.allclose(q, np.round(q), atol=1e-3), "phase off the QPSK grid"
    return np.round(q).astype(int) % 4


def despread(chips: np.ndarray) -> np.ndarray:
    symbols = chips.reshape(-1, 11) @ BARKER.astype(float) / 11  # (n_sym,)
    assert np.allclose(np.abs(symbols), 1, atol=1e-3), "not a Barker-spread symbol"
    return symbols


def differential(symbols: np.ndarray, ref: complex) -> np.ndarray:
    prev = np.concatenate([[ref], symbols[:-1]])
    return quadrants(symbols * np.conj(prev))


def dbpsk_bits(changes: np.ndarray) -> np.ndarray:
    assert set(changes.tolist()) <= {0, 2}
    return (changes // 2).astype(np.uint8)


def dqpsk_bits(changes: np.ndarray) -> np.ndarray:
    return np.array([DQPSK_DIBIT[c] for c in changes.tolist()], dtype=np.uint8).reshape(-1)


def cck_codeword(p1: int, p2: int, p3: int, p4: int) -> np.ndarray:
    """The CCK formula, restated: phases in quadrants, c0 first, c3 and c6 negated."""
    e = lambda q: 1j ** (q % 4)  # noqa: E731
    return np.array(
        [e(p1 + p2 + p3 + p4), e(p1 + p3 + p4), e(p1 + p2 + p4), -e(p1 + p4),
         e(p1 + p2 + p3), e(p1 + p3), -e(p1 + p2), e(p1)]
    )  # fmt: skip


def cck_bits(chips: np.ndarray, rate: float, ref: complex) -> np.ndarray:
    words = chips.reshape(-1, 8)
    p1 = quadrants(words[:, 7])
    p2 = (quadrants(-words[:, 6]) - p1) % 4
    p3 = (quadrants(words[:, 5]) - p1) % 4
    p4 = (quadrants(-words[:, 3]) - p1) % 4
    out = []
    prev = quadrants(np.array([ref]))[0]
    for i, w in enumerate(words):
        assert np.allclose(w, cck_codeword(p1[i], p2[i], p3[i], p4[i]), atol=1e-5)
        change = (p1[i] - prev - 2 * (i % 2)) % 4  # odd-numbered symbols carry an extra pi
        prev = p1[i]
        bits = list(DQPSK_DIBIT[change])
        if rate == 11.0:
            for p in (p2[i], p3[i], p4[i]):
                bits += QPSK_DIBIT[p]
        else:
            assert p2[i] in (1, 3) and p3[i] == 0 and p4[i] in (0, 2)
            bits += [(p2[i] - 1) // 2, p4[i] // 2]
        out += bits
    return np.array(out, dtype=np.uint8)


def receive(chips: np.ndarray, rate: float, preamble: str, n_bytes: int) -> dict:
    """Demodulate a chip-rate PPDU; returns the descrambled fields."""
    is_long = preamble == "long"
    n_pre = 144 if is_long else 72
    n_hdr_sym = 48 if is_long else 24
    plcp_chips = 11 * (n_pre + n_hdr_sym)
    symbols = despread(chips[:plcp_chips])
    changes = differential(symbols, ref=1)  # the transmitter starts from phase 0
    bits = [dbpsk_bits(changes[:n_pre])]
    header = changes[n_pre:]
    bits.append(dbpsk_bits(header) if is_long else dqpsk_bits(header))
    data = chips[plcp_chips:]
    if rate in (1.0, 2.0):
        data_changes = differential(despread(data), ref=symbols[-1])
        bits.append(dbpsk_bits(data_changes) if rate == 1.0 else dqpsk_bits(data_changes))
    else:
        bits.append(cck_bits(data, rate, ref=symbols[-1]))
    raw = descramble(np.concatenate(bits), LONG_SEED if is_long else SHORT_SEED)
    sync_end = n_pre - 16
    hdr = raw[n_pre : n_pre + 48]
    return {
        "sync": raw[:sync_end],
        "sfd": raw[sync_end:n_pre],
        "signal": int(np.packbits(hdr[:8], bitorder="little")[0]),
        "service": int(np.packbits(hdr[8:16], bitorder="little")[0]),
        "length_us": int(hdr[16:32] @ (1 << np.arange(16))),
        "crc_ok": np.array_equal(crc16_plcp(hdr[:32]), hdr[32:48]),
        "psdu": np.packbits(raw[n_pre + 48 :], bitorder="little")[:n_bytes],
    }


# --- Barker code


def test_barker_chips_are_the_standard_sequence():
    assert BARKER.tolist() == [1, -1, 1, 1, -1, 1, 1, 1, -1, -1, -1]


def test_barker_autocorrelation_sidelobes_at_most_one():
    acf = np.correlate(BARKER.astype(int), BARKER.astype(int), mode="full")  # (21,)
    assert acf[10] == 11
    assert np.max(np.abs(np.delete(acf, 10))) <= 1


# --- Scrambler


def reference_scrambler(bits: np.ndarray, seed: tuple[int, ...]) -> np.ndarray:
    """Figure 18-5 as a shift register: out = in ^ Z4 ^ Z7, out shifts into Z1."""
    z = list(seed)
    out = []
    for b in bits.tolist():
        o = b ^ z[3] ^ z[6]
        out.append(o)
        z = [o, *z[:-1]]
    return np.array(out, dtype=np.uint8)


@pytest.mark.parametrize("n", [0, 1, 6, 7, 8, 29, 127, 128, 1000, 4099])
def test_scramble_matches_shift_register_and_round_trips(n):
    rng = np.random.default_rng(n)
    bits = rng.integers(0, 2, n).astype(np.uint8)
    for seed in (LONG_SEED, SHORT_SEED, tuple(rng.integers(0, 2, 7).tolist())):
        s = scramble(bits, seed)
        assert np.array_equal(s, reference_scrambler(bits, seed))
        assert np.array_equal(descramble(s, seed), bits)


def test_descrambler_is_self_synchronising():
    bits = np.random.default_rng(1).integers(0, 2, 200).astype(np.uint8)
    s = scramble(bits, LONG_SEED)
    recovered = descramble(s, (0, 1, 0, 0, 1, 1, 0))  # wrong state
    assert not np.array_equal(recovered[:7], bits[:7])
    assert np.array_equal(recovered[7:], bits[7:])


def test_long_sync_scrambled_with_seed_1101100_is_the_known_sequence():
    known = (
        "01111110111011001110100010100100111110011001010110001100001001011110"
        "101010000010110101110010001110000000111100010000110100110110"
    )
    s = scramble(np.ones(128, np.uint8), LONG_SEED)
    assert np.array_equal(s, bits_of(known))
    assert np.array_equal(s[:16], bits_of("0111111011101100"))  # libcrafter, derived
    assert np.array_equal(descramble(s, LONG_SEED), np.ones(128, np.uint8))


def test_short_sync_scrambled_with_seed_0011011():
    s = scramble(np.zeros(56, np.uint8), SHORT_SEED)
    assert np.array_equal(s[:16], bits_of("0001100110101001"))  # libcrafter, derived
    assert np.array_equal(descramble(s, SHORT_SEED), np.zeros(56, np.uint8))


# --- CRC-16 and header fields


def test_crc16_standard_example():
    # 802.11-2007 Figure 15-3: SIGNAL 0x0A, SERVICE 0, LENGTH 192 us; leftmost bit sent first.
    header = bits_of("0101 0000 0000 0000 0000 0011 0000 0000")
    assert np.array_equal(crc16_plcp(header), bits_of("0101 1011 0101 0111"))


def test_header_bits_reproduce_the_standard_example():
    # The same example is a 24-byte PSDU at 1 Mbit/s with the locked-clocks bit clear.
    expected = bits_of("0101 0000 0000 0000 0000 0011 0000 0000 0101 1011 0101 0111")
    assert np.array_equal(plcp_header_bits(1.0, 24, "long", locked_clocks=False), expected)


def test_crc16_residue_and_error_detection():
    rng = np.random.default_rng(2)
    residue = bits_of("1110 0010 1111 0000")  # ones complement of 0x1D0F
    for _ in range(20):
        fields = rng.integers(0, 2, 32).astype(np.uint8)
        header = np.concatenate([fields, crc16_plcp(fields)])
        assert np.array_equal(crc16_plcp(header), residue)
    fields = rng.integers(0, 2, 32).astype(np.uint8)
    crc = crc16_plcp(fields)
    for i in range(32):
        for j in range(i, 32):  # every 1- and 2-bit error changes the CRC
            bad = fields.copy()
            bad[i] ^= 1
            if j != i:
                bad[j] ^= 1
            assert not np.array_equal(crc16_plcp(bad), crc)


def test_length_extension_examples_at_11_mbps():
    # 802.11-2007 Table 18-2: (octets, LENGTH, length extension bit).
    for octets, length_us, ext in [(1023, 744, 0), (1024, 745, 0), (1025, 746, 0), (1026, 747, 1)]:
        assert plcp_length(octets, 11.0) == (length_us, ext)


@pytest.mark.parametrize("rate", DSSS_RATES_MBPS)
def test_receiver_recovers_byte_count_from_length_field(rate):
    # The receiver's rule: octets = floor(LENGTH * R / 8) - extension bit. It must invert the
    # transmitter's LENGTH for every byte count; without the extension bit 11 Mbps cannot.
    r = dsss.SIGNAL[rate]  # 100 kbit/s units
    for octets in range(4096):
        length_us, ext = plcp_length(octets, rate)
        assert octets * 8 / rate <= length_us < octets * 8 / rate + 1
        assert (length_us * r) // 80 - ext == octets
        assert ext == 0 or rate == 11.0


@pytest.mark.parametrize("rate", DSSS_RATES_MBPS)
def test_header_fields(rate):
    code = {1.0: 0x0A, 2.0: 0x14, 5.5: 0x37, 11.0: 0x6E}[rate]
    for octets in (14, 1026):
        h = plcp_header_bits(rate, octets, "long")
        length_us, ext = plcp_length(octets, rate)
        assert np.array_equal(h[:8], (code >> np.arange(8)) & 1)  # SIGNAL, LSB first
        assert h[8 + 2] == 1 and h[8 + 3] == 0 and h[8 + 7] == ext  # locked, CCK, extension
        assert h[[8, 9, 12, 13, 14]].sum() == 0  # reserved SERVICE bits
        assert np.array_equal(h[16:32], (length_us >> np.arange(16)) & 1)


# --- Modulation


def test_dbpsk_and_dqpsk_tables():
    assert np.allclose(dbpsk(bits_of("0110"), ref=1), [1, -1, 1, 1])
    # 00 -> 0, 01 -> +pi/2, 11 -> +pi, 10 -> +3pi/2, accumulated from the reference.
    assert np.allclose(dqpsk(bits_of("00 01 11 10"), ref=1), [1, 1j, -1j, -1])
    assert np.allclose(dqpsk(bits_of("00"), ref=1j), [1j])


def test_cck_5_5_mbps_codewords_from_the_standard_table():
    # 802.11-2007 Table 18-13, phi1 = 0 (first symbol, d0 d1 = 00, reference phase 0).
    assert np.allclose(cck_encode(bits_of("0000"), 5.5), [1j, 1, 1j, -1, 1j, 1, -1j, 1])
    assert np.allclose(cck_encode(bits_of("0011"), 5.5), [1j, -1, 1j, 1, -1j, 1, 1j, 1])


def test_cck_cover_code_and_11_mbps_qpsk_table():
    # All phases zero: the codeword is the cover code itself, c3 and c6 (4th, 7th) negated.
    assert np.allclose(cck_encode(np.zeros(8, np.uint8), 11.0), [1, 1, 1, -1, 1, 1, -1, 1])
    # (d2, d3) = 10 -> phi2 = pi (Table 18-14); it shows in c0, c2, c4 and c6.
    word = cck_encode(bits_of("00 10 00 00"), 11.0)[0]
    assert np.allclose(word, [-1, 1, -1, -1, -1, 1, 1, 1])


def test_cck_codeword_set_and_unit_chips():
    d2_7 = (np.arange(64)[:, None] >> np.arange(6)) & 1  # (64, 6) every (d2..d7)
    words = np.stack([cck_encode(np.r_[0, 0, b].astype(np.uint8), 11.0)[0] for b in d2_7])
    assert np.allclose(words[:, 7], 1)  # same phi1 for all
    assert len({tuple(np.round(w, 6)) for w in words}) == 64
    words55 = np.stack([cck_encode(np.r_[0, 0, b].astype(np.uint8), 5.5)[0] for b in d2_7[:4, :2]])
    assert len({tuple(np.round(w, 6)) for w in words55}) == 4
    rand = np.random.default_rng(3).integers(0, 2, 8 * 300).astype(np.uint8)
    assert np.allclose(np.abs(cck_encode(rand, 11.0)), 1)
    assert np.allclose(np.abs(cck_encode(rand, 5.5)), 1)


def test_cck_odd_symbols_get_an_extra_pi():
    words = cck_encode(np.zeros(16, np.uint8), 11.0)  # two symbols, dibit 00 each
    assert np.allclose(words[1], -words[0])
    words = cck_encode(bits_of("00000000 11000000"), 11.0)  # odd symbol: 11 -> pi + pi = 0
    assert np.allclose(words[1], words[0])


# --- The whole PPDU


@pytest.mark.parametrize(("rate", "preamble"), COMBOS)
def test_chip_rate_packet_demodulates_to_the_standard_fields(rate, preamble):
    psdu = psdu_of(57, seed=int(rate * 10))
    chips = dsss_chips(psdu, rate, preamble)
    assert chips.dtype == np.complex64 and np.allclose(np.abs(chips), 1)
    rx = receive(chips, rate, preamble, psdu.size)
    if preamble == "long":
        assert np.array_equal(rx["sync"], np.ones(128, np.uint8))
        assert np.array_equal(rx["sfd"], bits_of("0000 0101 1100 1111"))  # 0xF3A0 LSB first
    else:
        assert np.array_equal(rx["sync"], np.zeros(56, np.uint8))
        assert np.array_equal(rx["sfd"], bits_of("1111 0011 1010 0000"))  # 0x05CF LSB first
    assert rx["signal"] == {1.0: 0x0A, 2.0: 0x14, 5.5: 0x37, 11.0: 0x6E}[rate]
    length_us, ext = plcp_length(psdu.size, rate)
    assert rx["service"] == 0x04 | (ext << 7)
    assert rx["length_us"] == length_us
    assert rx["crc_ok"]
    assert np.array_equal(rx["psdu"], psdu)


@pytest.mark.parametrize(("rate", "preamble"), [(1.0, "long"), (11.0, "short")])
def test_20msps_output_carries_the_header(rate, preamble):
    psdu = psdu_of(40)
    x = dsss_ppdu(psdu, rate, preamble, np.random.default_rng(0))
    chips = resample_poly(x, 11, 20)  # back to chip rate: chip k sits at t = k / 11 MHz
    plcp = 11 * (192 if preamble == "long" else 96)
    symbols = chips[:plcp].reshape(-1, 11) @ BARKER.astype(float)  # (n_sym,)
    symbols /= np.abs(symbols)
    ideal = dsss_chips(psdu, rate, preamble)[:plcp].reshape(-1, 11) @ BARKER.astype(float) / 11
    assert np.max(np.abs(symbols - ideal)) < 0.1


def test_resampler_is_resample_polys_default_filter():
    chips = dsss.dsss_chips(psdu_of(300), 11.0, "long")
    y = chips_to_20msps(chips)
    assert np.allclose(y, resample_poly(chips, 20, 11, window=dsss.TX_FILTER), atol=1e-5)
    default = resample_poly(chips.astype(np.complex128), 20, 11)  # scipy's own Kaiser design
    scale = np.vdot(default, y).real / np.vdot(default, default).real
    assert np.allclose(y, scale * default, atol=1e-5)


@pytest.mark.parametrize(("rate", "preamble"), COMBOS)
def test_duration_matches_output_and_length_field(rate, preamble):
    plcp_samples = 3840 if preamble == "long" else 1920  # 192 us or 96 us at 20 Msps
    assert ppdu_duration_samples(0, rate, preamble) == plcp_samples
    for octets in (1, 14, 101, 1500):
        x = dsss_ppdu(psdu_of(octets), rate, preamble, np.random.default_rng(0))
        n = ppdu_duration_samples(octets, rate, preamble)
        assert x.shape == (n,) and x.dtype == np.complex64
        # The PSDU's airtime is what LENGTH announces (LENGTH rounds it up to a microsecond).
        length_us, _ = plcp_length(octets, rate)
        airtime_us = (n - plcp_samples) / 20
        assert length_us - 1 < airtime_us <= length_us + 0.05


@pytest.mark.parametrize(("rate", "preamble"), COMBOS)
def test_unit_power_and_max_samples_prefix(rate, preamble):
    psdu = psdu_of(1200, seed=7)
    full = dsss_ppdu(psdu, rate, preamble, np.random.default_rng(0))
    assert 0.98 < np.mean(np.abs(full) ** 2) < 1.03
    for m in (0, 1, 1279, 1280, 3000, full.size + 5):
        cut = dsss_ppdu(psdu, rate, preamble, np.random.default_rng(0), max_samples=m)
        assert cut.shape == (min(m, full.size),)
        assert np.array_equal(cut, full[:m])


def test_deterministic_and_independent_of_rng():
    psdu = psdu_of(100)
    a = dsss_ppdu(psdu, 11.0, "short", np.random.default_rng(1))
    b = dsss_ppdu(psdu, 11.0, "short", np.random.default_rng(2))
    assert np.array_equal(a, b)
    c = dsss_ppdu(psdu_of(100, seed=1), 11.0, "short", np.random.default_rng(1))
    assert not np.allclose(a, c)


def test_rejects_what_the_standard_does_not_define():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="short preamble"):
        dsss_ppdu(psdu_of(10), 1.0, "short", rng)
    with pytest.raises(ValueError, match="rate"):
        dsss_ppdu(psdu_of(10), 6.0, "long", rng)
    with pytest.raises(ValueError, match="uint8"):
        dsss_ppdu(np.zeros(10, np.int64), 1.0, "long", rng)
    with pytest.raises(ValueError, match="LENGTH"):
        plcp_length(9000, 1.0)

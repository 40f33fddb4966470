"""The OFDM transmitter against the standard's own numbers (IEEE Std 802.11-2016, cl. 17 and 19).

Known vectors:
* ANNEX: the worked example of 802.11a-1999 Annex G, kept as IEEE 802.11-2016 Annex I.1 (100-octet
  message, 36 Mbit/s, scrambler state 1011101). Tables as transcribed in
  github.com/jgaeddert/liquid-wlan, annex-g-data/G<n>.c and G<n>.dat (Table G.n); the hex there
  packs bits in transmit order, first bit as the MSB.
* HT-SIG CRC: the example of 19.3.9.4.4 (m0..m33 -> c7..c0 = 10101000), as quoted in
  u-blox/ubx-v2x functions/crc8.m and at jhshi.me/2016/10/18/calculating-crc-for-ht-sig-in-80211n-
  preamble (openofdm's author); the same vector is in other public CRC-8 test benches.
* p_0..p_126 (17.3.5.10), as listed in MathWorks' WLAN toolbox pilotPolaritySequence.m (a copy is in
  asong2001/SUSTechCourseComunicationSystem, wlan/wlan/private/).
No published vector was found for the 2/3 and 5/6 puncturing or for the 13-column HT interleaver:
those are tested against the standard's patterns and its (receive-side) deinterleaver equations,
and end to end by decoding our own waveforms with the small receiver at the bottom of this file.
"""

import numpy as np
import pytest

from edge_core.synth import ofdm


def _bits(hex_str: str) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(hex_str.replace(" ", "")), dtype=np.uint8))


def _cplx(text: str) -> np.ndarray:
    """'re im, re im, ...' -> complex array."""
    pairs = [p.split() for p in text.replace("\n", " ").split(",") if p.strip()]
    return np.array([float(re) + 1j * float(im) for re, im in pairs])


# --- standard tables, written out independently of the module ------------------------------

# 17.3.3: S_{-26,26} / (sqrt(13/6) (1+j)).
S_SIGNS = [0, 0, 1, 0, 0, 0, -1, 0, 0, 0, 1, 0, 0, 0, -1, 0, 0, 0, -1, 0, 0, 0, 1, 0, 0, 0, 0]
S_SIGNS += [0, 0, 0, -1, 0, 0, 0, -1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0]
# 17.3.3: L_{-26,26}.
L_SEQ = [1, 1, -1, -1, 1, 1, -1, 1, -1, 1, 1, 1, 1, 1, 1, -1, -1, 1, 1, -1, 1, -1, 1, 1, 1, 1, 0]
L_SEQ += [1, -1, -1, 1, 1, -1, 1, -1, 1, -1, -1, -1, -1, -1, 1, 1, -1, -1, 1, -1, 1, -1, 1, 1, 1, 1]
# 17.3.5.5: the all-ones scrambler's 127-bit period.
SCRAMBLER_ALL_ONES = (
    "00001110 11110010 11001001 00000010 00100110 00101110 10110110 00001100"
    " 11010100 11100111 10110100 00101010 11111010 01010001 10111000 1111111"
)
# 17.3.5.10: p_0..p_126.
PILOT_POLARITY = [1, 1, 1, 1, -1, -1, -1, 1, -1, -1, -1, -1, 1, 1, -1, 1, -1, -1, 1, 1, -1, 1, 1]
PILOT_POLARITY += [-1, 1, 1, 1, 1, 1, 1, -1, 1, 1, 1, -1, 1, 1, -1, -1, 1, 1, 1, -1, 1, -1, -1]
PILOT_POLARITY += [-1, 1, -1, 1, -1, -1, 1, -1, -1, 1, 1, 1, 1, 1, -1, -1, 1, 1, -1, -1, 1, -1]
PILOT_POLARITY += [1, -1, 1, 1, -1, -1, -1, 1, 1, -1, -1, -1, -1, 1, -1, -1, 1, -1, 1, 1, 1, 1]
PILOT_POLARITY += [-1, 1, -1, 1, -1, 1, -1, -1, -1, -1, -1, 1, -1, 1, 1, -1, 1, -1, 1, 1, 1, -1]
PILOT_POLARITY += [-1, 1, -1, -1, -1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1]
# 17.3.4: RATE bits R1-R4.
RATE_BITS = {6: "1101", 9: "1111", 12: "0101", 18: "0111", 24: "1001", 36: "1011", 48: "0001"}
RATE_BITS[54] = "0011"
# 17.3.5.8: Gray bits -> axis level, before K_MOD.
AXIS = {
    1: {"0": -1, "1": 1},
    2: {"00": -3, "01": -1, "11": 1, "10": 3},
    3: {"000": -7, "001": -5, "011": -3, "010": -1, "110": 1, "111": 3, "101": 5, "100": 7},
}
K_MOD = {1: 1.0, 2: 1 / np.sqrt(2), 4: 1 / np.sqrt(10), 6: 1 / np.sqrt(42)}
LEGACY_MODES = {6: (1, "1/2"), 9: (1, "3/4"), 12: (2, "1/2"), 18: (2, "3/4"), 24: (4, "1/2")}
LEGACY_MODES |= {36: (4, "3/4"), 48: (6, "2/3"), 54: (6, "3/4")}
HT_MODES = [(1, "1/2"), (2, "1/2"), (2, "3/4"), (4, "1/2"), (4, "3/4"), (6, "2/3"), (6, "3/4")]
HT_MODES += [(6, "5/6")]
# 17.3.5.6 and 19.3.11.6: which of A0 B0 A1 B1 ... are sent.
PUNCTURE = {"1/2": [1, 1], "2/3": [1, 1, 1, 0], "3/4": [1, 1, 1, 0, 0, 1]}
PUNCTURE["5/6"] = [1, 1, 1, 0, 0, 1, 1, 0, 0, 1]
DATA_K = [k for k in range(-26, 27) if k not in (0, -21, -7, 7, 21)]
HT_DATA_K = [k for k in range(-28, 29) if k not in (0, -21, -7, 7, 21)]
PILOT_K = [-21, -7, 7, 21]


def _point(bits: str) -> complex:
    """One constellation point from its bits b0 b1 ..., by the standard's tables."""
    n = len(bits)
    if n == 1:
        return complex(AXIS[1][bits])
    i, q = bits[: n // 2], bits[n // 2 :]
    return (AXIS[n // 2][i] + 1j * AXIS[n // 2][q]) * K_MOD[n]


# --- Annex I.1 (802.11a Annex G) -------------------------------------------------------------

ANNEX_PSDU = np.frombuffer(
    bytes.fromhex(
        "0402002e006008cd37a60020d6013cf1006008ad3baf00004a6f792c2062726967687420737061726b"
        "206f6620646976696e6974792c0a4461756768746572206f6620456c797369756d2c0a466972652d69"
        "6e73697265642077652074726561da5799ed"
    ),
    dtype=np.uint8,
)  # Table G.1
ANNEX_SEED = 0b1011101
ANNEX_SIGNAL_BITS = _bits("b13000")  # Table G.7
ANNEX_SIGNAL_CODED = _bits("d1a1023e7000")  # Table G.8
ANNEX_SIGNAL_INTERLEAVED = _bits("94d014832494")  # Table G.9
ANNEX_DATA_144 = _bits("0000204000740006 10b3ec6500046b803c8f")  # Table G.13
ANNEX_DATA_144_SCRAMBLED = _bits("6c19898f6821f4a5614fd7ae240cf33ae4bc")  # Table G.16
ANNEX_DATA_CODED = _bits("2b08a1f09db59a1d4afbe8c28fc0c873c043e019e0d3ebb2")  # Table G.18
ANNEX_DATA_INTERLEAVED = _bits("77f0efc47300bf11109a1d126e38f5691b6b9843000db36d")  # G.21
# Table G.11: SIGNAL subcarriers -26..26 with pilots.
ANNEX_SIGNAL_FREQ = [1, -1, -1, 1, -1, 1, 1, -1, -1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1]
ANNEX_SIGNAL_FREQ += [1, -1, 1, -1, -1, 0, 1, -1, -1, -1, -1, -1, 1, 1, 1, -1, -1, 1, -1, -1, 1]
ANNEX_SIGNAL_FREQ += [-1, -1, 1, -1, -1, -1, 1, -1, 1, -1, -1]
# Table G.22: first DATA symbol, subcarriers -26..26 (3 decimals).
ANNEX_DATA_FREQ = _cplx("""
    -.316 .316, -.316 .316, .316 .316, -.949 -.949, .316 .949, 1 0, .316 .316, .316 -.949,
    -.316 -.949, -.316 .316, -.949 .316, -.949 -.949, -.949 -.949, .949 .316, .316 .316,
    -.949 -.316, -.949 -.316, -.949 -.316, -.949 -.949, 1 0, .949 -.316, .949 .949,
    -.949 -.316, .316 -.316, -.949 -.316, -.949 .949, 0 0, -.316 .949, .316 .949, -.949 .316,
    .949 -.949, .316 .316, -.316 -.316, 1 0, -.316 .949, .949 -.316, -.949 -.316, .949 .316,
    -.316 .949, .949 .316, .949 -.316, .949 -.949, -.316 -.949, -.949 .316, -.949 -.949,
    -.949 -.949, -.949 -.949, -1 0, .316 -.316, .949 .316, -.949 .316, -.316 .949, .316 -.316
""")
# Time domain (IDFT with 1/64, 3 decimals), first samples of each field past the windowed one:
# Table G.3 (one short period), Table G.24 samples 161-176 (L-LTF GI2), Table G.12 samples 1-16.
ANNEX_STF_PERIOD = _cplx("""
    .046 .046, -.132 .002, -.013 -.079, .143 -.013, .092 0, .143 -.013, -.013 -.079,
    -.132 .002, .046 .046, .002 -.132, -.079 -.013, -.013 .143, 0 .092, -.013 .143,
    -.079 -.013, .002 -.132
""")
ANNEX_LTF_161 = _cplx("""
    .012 -.098, .092 -.106, -.092 -.115, -.003 -.054, .075 .074, -.127 .021, -.122 .017,
    -.035 .151, -.056 .022, -.060 -.081, .070 -.014, .082 -.092, -.131 -.065, -.057 -.039,
    .037 -.098, .062 .062
""")
ANNEX_SIGNAL_1 = _cplx("""
    .033 -.044, -.002 -.038, -.081 .084, .007 -.100, -.001 -.113, -.021 -.005, .136 -.105,
    .098 -.044, .011 -.002, -.033 .044, -.060 .124, .010 .097, 0 -.008, .018 -.083,
    -.069 .027, -.219 0
""")


@pytest.fixture(scope="module")
def annex_ppdu() -> np.ndarray:
    return ofdm.legacy_ppdu(
        ANNEX_PSDU, 36, np.random.default_rng(0), scrambler_seed=ANNEX_SEED
    ).astype(complex)


def _fft(x: np.ndarray, start: int) -> np.ndarray:
    """64-point DFT of x[start:start+64] as subcarriers -32..31."""
    return np.fft.fftshift(np.fft.fft(x[start : start + 64]))


def _sc(values: np.ndarray, ks: list[int]) -> np.ndarray:
    return values[np.array(ks) + 32]


def _ltf_gain(x: np.ndarray) -> complex:
    """Scale of the packet from its second L-LTF symbol (no channel, so one complex number)."""
    ks = [k for k in range(-26, 27) if k]
    return complex(np.mean(_sc(_fft(x, 96 + 96), ks) / np.array(L_SEQ)[np.array(ks) + 26]))


# --- preamble --------------------------------------------------------------------------------


def test_l_stf_is_the_standards_short_sequence():
    s = np.array(S_SIGNS) * np.sqrt(13 / 6) * (1 + 1j)
    assert s.size == 53
    np.testing.assert_allclose(ofdm.l_stf_subcarriers(), s, atol=1e-12)
    x = ofdm.l_stf()
    assert x.shape == (160,)
    # DFT scaled back by the documented per-field normalisation 64 / sqrt(52).
    spectrum = _fft(x, 0) * np.sqrt(52) / 64
    np.testing.assert_allclose(spectrum[6:59], s, atol=1e-9)
    np.testing.assert_allclose(spectrum[:6], 0, atol=1e-9)
    np.testing.assert_allclose(spectrum[59:], 0, atol=1e-9)
    np.testing.assert_allclose(x[16:], x[:-16], atol=1e-12)  # ten 16-sample short symbols
    assert not np.allclose(x[8:], x[:-8])
    assert np.mean(np.abs(x) ** 2) == pytest.approx(1.0)


def test_l_ltf_is_the_standards_long_sequence():
    np.testing.assert_allclose(ofdm.l_ltf_subcarriers(), L_SEQ, atol=0)
    x = ofdm.l_ltf()
    assert x.shape == (160,)
    np.testing.assert_allclose(x[32:96], x[96:160], atol=1e-12)  # two identical long symbols
    np.testing.assert_allclose(x[:32], x[128:160], atol=1e-12)  # GI2 = last 32 samples
    for start in (32, 96):
        spectrum = _fft(x, start) * np.sqrt(52) / 64
        np.testing.assert_allclose(spectrum[6:59], L_SEQ, atol=1e-9)
        np.testing.assert_allclose(np.r_[spectrum[:6], spectrum[59:]], 0, atol=1e-9)


def test_waveform_matches_annex_time_domain(annex_ppdu):
    # Sample 0 of each field is the Annex's windowed half-sum (we do not window): skip it.
    ours = np.concatenate((annex_ppdu[16:32], annex_ppdu[161:177], annex_ppdu[321:337]))
    annex = np.concatenate((ANNEX_STF_PERIOD, ANNEX_LTF_161, ANNEX_SIGNAL_1))
    scale = np.vdot(ours, annex) / np.vdot(ours, ours)  # the Annex is not unit power
    assert abs(scale.imag) < 1e-3 * abs(scale)
    np.testing.assert_allclose(ours * scale, annex, atol=1.5e-3)


def test_legacy_ppdu_matches_annex_frequency_domain(annex_ppdu):
    assert annex_ppdu.size == 880  # 16 + 4 + 6 * 4 us
    gain = _ltf_gain(annex_ppdu)
    signal = _fft(annex_ppdu, 336) / gain
    np.testing.assert_allclose(signal[6:59], ANNEX_SIGNAL_FREQ, atol=1e-6)
    first_data = _fft(annex_ppdu, 416) / gain
    np.testing.assert_allclose(first_data[6:59], ANNEX_DATA_FREQ, atol=1e-3)


# --- SIGNAL ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", ofdm.LEGACY_RATES_MBPS)
def test_l_sig_bits_follow_17_3_4(rate):
    for length in (1, 100, 0xABC, 4095):
        bits = ofdm.l_sig_bits(rate, length)
        assert bits.shape == (24,)
        assert "".join(map(str, bits[:4])) == RATE_BITS[rate]
        assert bits[4] == 0
        assert sum(int(b) << i for i, b in enumerate(bits[5:17])) == length  # LSB first
        assert bits[:18].sum() % 2 == 0  # even parity over bits 0-16 plus the parity bit
        assert not bits[18:].any()


def test_l_sig_annex_vector():
    np.testing.assert_array_equal(ofdm.l_sig_bits(36, 100), ANNEX_SIGNAL_BITS)


# --- BCC, scrambler, interleaver, mapping ----------------------------------------------------


def test_bcc_encodes_annex_signal_and_punctured_data():
    np.testing.assert_array_equal(ofdm.bcc_encode(ANNEX_SIGNAL_BITS), ANNEX_SIGNAL_CODED)
    # The first 144 scrambled bits make exactly the first 192 rate-3/4 coded bits.
    coded = ofdm.bcc_encode(ANNEX_DATA_144_SCRAMBLED, "3/4")
    np.testing.assert_array_equal(coded, ANNEX_DATA_CODED)


def test_bcc_impulse_response_is_133_171_octal():
    coded = ofdm.bcc_encode(np.r_[1, np.zeros(9, dtype=np.uint8)])
    assert "".join(map(str, coded[0::2][:7])) == format(0o133, "07b")
    assert "".join(map(str, coded[1::2][:7])) == format(0o171, "07b")
    assert not coded[14:].any()


@pytest.mark.parametrize("rate", ["2/3", "3/4", "5/6"])
def test_bcc_puncturing_keeps_the_standards_positions(rate):
    bits = np.random.default_rng(3).integers(0, 2, 600).astype(np.uint8)
    mother = ofdm.bcc_encode(bits, "1/2")
    keep = np.tile(np.array(PUNCTURE[rate], dtype=bool), mother.size // len(PUNCTURE[rate]))
    np.testing.assert_array_equal(ofdm.bcc_encode(bits, rate), mother[keep])
    with pytest.raises(ValueError):
        ofdm.bcc_encode(bits[:-1], rate)


def test_scrambler_all_ones_period_is_the_standards():
    expected = np.array([int(c) for c in SCRAMBLER_ALL_ONES if c in "01"], dtype=np.uint8)
    assert expected.size == 127
    seq = ofdm.scrambler_sequence(0b1111111, 254)
    np.testing.assert_array_equal(seq[:127], expected)
    np.testing.assert_array_equal(seq[127:], expected)  # period 127
    np.testing.assert_array_equal(ofdm.PILOT_POLARITY, PILOT_POLARITY)
    np.testing.assert_array_equal(ofdm.PILOT_POLARITY, 1 - 2 * expected.astype(int))


def test_scrambler_seed_is_the_register_x1_to_x7():
    # The 17.3.5.5 scrambler step by step: output x7 xor x4, fed back into x1; the seed's MSB
    # is x1 (the Annex's 1011101 and all ones read the same either way, so check every seed).
    for seed in range(1, 128):
        x = [int(c) for c in format(seed, "07b")]  # x1..x7
        expected = []
        for _ in range(20):
            out = x[6] ^ x[3]
            expected.append(out)
            x = [out, *x[:6]]
        np.testing.assert_array_equal(ofdm.scrambler_sequence(seed, 20), expected)


def test_scrambler_annex_vector_and_involution():
    scrambled = ofdm.scramble(ANNEX_DATA_144, ANNEX_SEED)
    np.testing.assert_array_equal(scrambled, ANNEX_DATA_144_SCRAMBLED)
    np.testing.assert_array_equal(ofdm.scramble(scrambled, ANNEX_SEED), ANNEX_DATA_144)
    with pytest.raises(ValueError):
        ofdm.scramble(ANNEX_DATA_144, 0)


def test_interleaver_annex_vectors():
    np.testing.assert_array_equal(
        ofdm.interleave(ANNEX_SIGNAL_CODED, 48, 1), ANNEX_SIGNAL_INTERLEAVED
    )
    np.testing.assert_array_equal(ofdm.interleave(ANNEX_DATA_CODED, 192, 4), ANNEX_DATA_INTERLEAVED)


def _standard_deinterleave_index(n_cbps: int, n_bpsc: int, n_col: int) -> np.ndarray:
    """Deinterleaver equations (17.3.5.7; 19.3.11.8 with N_COL = 13): position j -> bit k."""
    n_row = n_cbps // n_col
    s = max(n_bpsc // 2, 1)
    j = np.arange(n_cbps)
    i = s * (j // s) + (j + (n_col * j) // n_cbps) % s
    return n_col * i - (n_cbps - 1) * (i // n_row)


INTERLEAVERS = [(48 * b, b, 16) for b in (1, 2, 4, 6)] + [(52 * b, b, 13) for b in (1, 2, 4, 6)]


@pytest.mark.parametrize(("n_cbps", "n_bpsc", "n_col"), INTERLEAVERS)
def test_interleaver_is_the_standards_permutation(n_cbps, n_bpsc, n_col):
    k = np.arange(2 * n_cbps)
    out = ofdm.interleave(k, n_cbps, n_bpsc, n_col)
    np.testing.assert_array_equal(np.sort(out[:n_cbps]), np.arange(n_cbps))  # a permutation
    np.testing.assert_array_equal(out[n_cbps:], out[:n_cbps] + n_cbps)  # per symbol
    np.testing.assert_array_equal(out[:n_cbps], _standard_deinterleave_index(n_cbps, n_bpsc, n_col))
    np.testing.assert_array_equal(ofdm.deinterleave(out, n_cbps, n_bpsc, n_col), k)


@pytest.mark.parametrize("n_bpsc", [1, 2, 4, 6])
def test_constellations_are_the_standards_gray_maps(n_bpsc):
    patterns = [format(v, f"0{n_bpsc}b") for v in range(2**n_bpsc)]
    bits = np.array([[int(c) for c in p] for p in patterns], dtype=np.uint8)
    points = ofdm.map_constellation(bits.reshape(-1), n_bpsc)
    np.testing.assert_allclose(points, [_point(p) for p in patterns], atol=1e-6)
    assert np.mean(np.abs(points) ** 2) == pytest.approx(1.0, abs=1e-6)  # K_MOD


# --- HT-SIG ----------------------------------------------------------------------------------

CRC_EXAMPLE_M = "1111000100100110000000001110000000"  # 19.3.9.4.4 example, m0..m33
CRC_EXAMPLE_C = "10101000"  # c7..c0


def _mod2_remainder(bits: list[int], poly: list[int]) -> list[int]:
    r = list(bits)
    for i in range(len(r) - len(poly) + 1):
        if r[i]:
            for j, p in enumerate(poly):
                r[i + j] ^= p
    return r[-(len(poly) - 1) :]


def test_crc8_standard_example():
    crc = ofdm.crc8_ht_sig(np.array([int(c) for c in CRC_EXAMPLE_M], dtype=np.uint8))
    assert "".join(map(str, crc)) == CRC_EXAMPLE_C


def test_crc8_is_the_complemented_remainder_mod_x8_x2_x_1():
    rng = np.random.default_rng(5)
    for _ in range(20):
        m = rng.integers(0, 2, 34).astype(np.uint8)
        crc = ofdm.crc8_ht_sig(m)
        # All-ones preset = complement the first 8 message bits; then message||~crc divides.
        preset = np.r_[1 - m[:8], m[8:]].tolist()
        assert (
            _mod2_remainder([*preset, *(1 - crc).tolist()], [1, 0, 0, 0, 0, 0, 1, 1, 1]) == [0] * 8
        )
        flipped = m.copy()
        flipped[rng.integers(34)] ^= 1
        assert not np.array_equal(ofdm.crc8_ht_sig(flipped), crc)


def test_ht_sig_bits_layout_reproduces_the_crc_example():
    # The example's bits read as: MCS 15, 40 MHz, HT length 100, smoothing, not sounding.
    bits = ofdm.ht_sig_bits(15, 100, cbw40=True, smoothing=True, not_sounding=True)
    assert "".join(map(str, bits[:34])) == CRC_EXAMPLE_M
    assert "".join(map(str, bits[34:42])) == CRC_EXAMPLE_C
    assert not bits[42:].any()
    bits = ofdm.ht_sig_bits(5, 1234, aggregation=True, short_gi=True, stbc=1, n_ess=2)
    assert bits[0:7].tolist() == [1, 0, 1, 0, 0, 0, 0] and bits[7] == 0
    assert sum(int(b) << i for i, b in enumerate(bits[8:24])) == 1234
    assert bits[24:34].tolist() == [1, 1, 1, 1, 1, 0, 0, 1, 0, 1]


# --- a small receiver: FFT, demap, deinterleave, erasure decode, descramble ------------------


def _demap(points: np.ndarray, n_bpsc: int) -> list[int]:
    patterns = [format(v, f"0{n_bpsc}b") for v in range(2**n_bpsc)]
    table = np.array([_point(p) for p in patterns])
    nearest = np.argmin(np.abs(points[:, None] - table[None, :]), axis=1)
    assert np.max(np.min(np.abs(points[:, None] - table[None, :]), axis=1)) < 1e-3
    return [int(c) for i in nearest for c in patterns[i]]


def _deinterleave(bits: list[int], n_cbps: int, n_bpsc: int, n_col: int) -> list[int]:
    k = _standard_deinterleave_index(n_cbps, n_bpsc, n_col)
    out = [0] * n_cbps
    for j, b in enumerate(bits):
        out[k[j]] = b
    return out


def _decode(coded: list[int], rate: str) -> list[int]:
    """Noise-free BCC decode: each input bit is solved from whichever of A or B was sent."""
    pattern = np.array(PUNCTURE[rate], dtype=bool)
    n_periods, rest = divmod(len(coded), int(pattern.sum()))
    assert rest == 0
    stream: list[int | None] = [None] * (n_periods * pattern.size)
    for pos, bit in zip(np.flatnonzero(np.tile(pattern, n_periods)), coded, strict=True):
        stream[pos] = bit
    a, b = stream[0::2], stream[1::2]
    u = [0] * 6  # the encoder starts in the zero state
    for n in range(len(a)):
        p = u[-6:]  # p[5] = u[n-1], ..., p[0] = u[n-6]
        bit_a = None if a[n] is None else a[n] ^ p[4] ^ p[3] ^ p[1] ^ p[0]
        bit_b = None if b[n] is None else b[n] ^ p[5] ^ p[4] ^ p[3] ^ p[0]
        assert bit_a is not None or bit_b is not None
        assert bit_a is None or bit_b is None or bit_a == bit_b  # a valid codeword
        u.append(bit_a if bit_a is not None else bit_b)
    return u[6:]


def _descramble(bits: list[int]) -> list[int]:
    """x^7 + x^4 + 1 descrambler synchronised on the first 7 bits (SERVICE bits are zero)."""
    seq = list(bits[:7])
    while len(seq) < len(bits):
        seq.append(seq[-7] ^ seq[-4])
    return [b ^ s for b, s in zip(bits, seq, strict=True)]


def _receive_sig(x: np.ndarray, start: int, gain: complex, pilot_n: int, qbpsk: bool) -> list[int]:
    sym = _fft(x, start + 16) / gain
    data = _sc(sym, DATA_K)
    if qbpsk:
        np.testing.assert_allclose(data.real, 0, atol=1e-4)  # HT-SIG sits on the Q axis
        data = data.imag + 0j
    else:
        np.testing.assert_allclose(data.imag, 0, atol=1e-4)
    np.testing.assert_allclose(
        _sc(sym, PILOT_K), PILOT_POLARITY[pilot_n] * np.array([1, 1, 1, -1]), atol=1e-4
    )
    return _demap(data, 1)


def _check_data(bits: list[int], psdu: np.ndarray) -> None:
    n_payload = 16 + 8 * psdu.size
    assert not any(bits[n_payload : n_payload + 6])  # tail zeroed after scrambling
    plain = _descramble(bits)
    assert not any(plain[:16])  # SERVICE
    got = np.packbits(np.array(plain[16:n_payload], dtype=np.uint8), bitorder="little")
    np.testing.assert_array_equal(got, psdu)
    assert not any(plain[n_payload + 6 :])  # pad


@pytest.mark.parametrize("rate", ofdm.LEGACY_RATES_MBPS)
def test_legacy_ppdu_decodes_back_to_its_psdu(rate):
    rng = np.random.default_rng(rate)
    psdu = rng.integers(0, 256, 45, dtype=np.uint8)
    x = ofdm.legacy_ppdu(psdu, rate, rng).astype(complex)
    gain = _ltf_gain(x)
    signal = _decode(_deinterleave(_receive_sig(x, 320, gain, 0, False), 48, 1, 16), "1/2")
    assert "".join(map(str, signal[:4])) == RATE_BITS[rate]
    assert sum(b << i for i, b in enumerate(signal[5:17])) == psdu.size
    n_bpsc, code_rate = LEGACY_MODES[rate]
    n_sym = (x.size - 400) // 80
    coded: list[int] = []
    for n in range(n_sym):
        sym = _fft(x, 400 + 80 * n + 16) / gain
        pilots = PILOT_POLARITY[(n + 1) % 127] * np.array([1, 1, 1, -1])
        np.testing.assert_allclose(_sc(sym, PILOT_K), pilots, atol=1e-4)
        np.testing.assert_allclose(np.r_[sym[:6], sym[32], sym[59:]], 0, atol=1e-4)
        coded += _deinterleave(_demap(_sc(sym, DATA_K), n_bpsc), 48 * n_bpsc, n_bpsc, 16)
    _check_data(_decode(coded, code_rate), psdu)


def _ht_txtime_us(n_sym: int, short_gi: bool) -> int:
    # 19.4.3 with one HT-LTF: 16 + 4 + 8 + 4 + 4 us of preamble and SIGs.
    return 36 + (4 * -(-9 * n_sym // 10) if short_gi else 4 * n_sym)  # 3.6 us symbols


@pytest.mark.parametrize("short_gi", [False, True])
@pytest.mark.parametrize("mcs", range(8))
def test_ht_ppdu_decodes_back_to_its_psdu(mcs, short_gi):
    rng = np.random.default_rng(100 + mcs)
    psdu = rng.integers(0, 256, 61, dtype=np.uint8)
    x = ofdm.ht_ppdu(psdu, mcs, rng, short_gi=short_gi).astype(complex)
    n_bpsc, code_rate = HT_MODES[mcs]
    gi = 8 if short_gi else 16
    n_sym = (x.size - 720) // (64 + gi)
    assert 720 + n_sym * (64 + gi) == x.size
    gain = _ltf_gain(x)
    # L-SIG: 6 Mbit/s and a LENGTH that makes a legacy receiver defer for TXTIME (19.3.9.3.5).
    lsig = _decode(_deinterleave(_receive_sig(x, 320, gain, 0, False), 48, 1, 16), "1/2")
    assert "".join(map(str, lsig[:4])) == "1101"
    length = sum(b << i for i, b in enumerate(lsig[5:17]))
    txtime = _ht_txtime_us(n_sym, short_gi)
    assert length == int(np.ceil((txtime - 20) / 4)) * 3 - 3
    assert 20 + 4 * int(np.ceil((16 + 8 * length + 6) / 24)) == txtime
    assert x.size <= 20 * txtime < x.size + 80
    # HT-SIG on QBPSK, pilots p_1 and p_2.
    coded = _receive_sig(x, 400, gain, 1, True) + _receive_sig(x, 480, gain, 2, True)
    htsig = _decode(
        _deinterleave(coded[:48], 48, 1, 16) + _deinterleave(coded[48:], 48, 1, 16), "1/2"
    )
    assert sum(b << i for i, b in enumerate(htsig[:7])) == mcs and htsig[7] == 0
    assert sum(b << i for i, b in enumerate(htsig[8:24])) == psdu.size
    assert htsig[24:34] == [1, 1, 1, 1, 0, 0, 0, int(short_gi), 0, 0]
    assert htsig[34:42] == ofdm.crc8_ht_sig(np.array(htsig[:34])).tolist()
    assert not any(htsig[42:])
    # HT-STF: the L-STF pattern for 4 us; HT-LTF: HTLTF_{-28,28}.
    np.testing.assert_allclose(x[560:640], x[:80], atol=1e-5)
    ht_ltf = _fft(x, 656)
    expected = np.r_[1, 1, L_SEQ, -1, -1]
    ht_gain = np.mean(ht_ltf[4:61][expected != 0] / expected[expected != 0])
    np.testing.assert_allclose(ht_ltf[4:61] / ht_gain, expected, atol=1e-4)
    # Every field at the same power (1/sqrt(N_tone)): 56 HT tones at the level of 52 legacy ones.
    assert ht_gain / gain == pytest.approx(np.sqrt(52 / 56), rel=1e-5)
    np.testing.assert_allclose(x[640:656], x[704:720], atol=1e-6)
    data_coded: list[int] = []
    for n in range(n_sym):
        start = 720 + n * (64 + gi)
        np.testing.assert_allclose(
            x[start : start + gi], x[start + 64 : start + 64 + gi], atol=1e-6
        )
        sym = _fft(x, start + gi) / ht_gain
        psi = np.array([1, 1, 1, -1])[(n + np.arange(4)) % 4]
        np.testing.assert_allclose(
            _sc(sym, PILOT_K), PILOT_POLARITY[(n + 3) % 127] * psi, atol=1e-4
        )
        data_coded += _deinterleave(_demap(_sc(sym, HT_DATA_K), n_bpsc), 52 * n_bpsc, n_bpsc, 13)
    _check_data(_decode(data_coded, code_rate), psdu)


# --- durations, power, determinism -----------------------------------------------------------


def test_ppdu_duration_samples_is_the_synthesised_length():
    rng = np.random.default_rng(9)
    for length in (1, 14, 100, 1500, 4095):
        psdu = rng.integers(0, 256, length, dtype=np.uint8)
        for rate in ofdm.LEGACY_RATES_MBPS:
            assert (
                ofdm.ppdu_duration_samples("legacy", length, rate)
                == ofdm.legacy_ppdu(psdu, rate, rng).size
            )
        for mcs in range(8):
            for sgi in (False, True):
                assert (
                    ofdm.ppdu_duration_samples("ht", length, mcs, sgi)
                    == ofdm.ht_ppdu(psdu, mcs, rng, short_gi=sgi).size
                )
    # 1500 B at 6 Mbit/s is 20 us + 501 symbols of 4 us.
    assert ofdm.ppdu_duration_samples("legacy", 1500, 6) == 20 * (20 + 4 * 501)


def test_output_is_complex64_unit_power_and_deterministic():
    psdu = np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8)
    for make in (
        lambda r: ofdm.legacy_ppdu(psdu, 24, r),
        lambda r: ofdm.ht_ppdu(psdu, 4, r, short_gi=True),
    ):
        a, b, c = (
            make(np.random.default_rng(7)),
            make(np.random.default_rng(7)),
            make(np.random.default_rng(8)),
        )
        assert a.dtype == np.complex64 and a.ndim == 1
        assert np.mean(np.abs(a.astype(complex)) ** 2) == pytest.approx(1.0, rel=1e-5)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)  # another scrambler seed


def test_bad_arguments_are_rejected():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        ofdm.legacy_ppdu(np.zeros(10, dtype=np.uint8), 11, rng)
    with pytest.raises(ValueError):
        ofdm.ht_ppdu(np.zeros(10, dtype=np.uint8), 8, rng)
    with pytest.raises(ValueError):
        ofdm.legacy_ppdu(np.zeros(10, dtype=np.int64), 6, rng)
    with pytest.raises(ValueError):
        ofdm.ht_ppdu(np.zeros(6000, dtype=np.uint8), 0, rng)  # longer than 5.484 ms
    with pytest.raises(ValueError):
        ofdm.ppdu_duration_samples("ht", 6000, 0)
    with pytest.raises(ValueError):
        ofdm.ppdu_duration_samples("legacy", 4096, 54)

"""The PHY header decoder (`edge_core.rx.headers`, issue 12) on packets from the real generator.

It shares no code with the transmitter; the truth is what the generator put in each packet
(`PacketSpec`: rate/MCS, PSDU length, preamble, short GI, A-MPDU). Rows are dataset rows (3000
samples, 0-32 samples of noise first) with multipath, CFO, IQ imbalance and noise. The trivial
baseline of a decode rate is 0 (no header read); for the fields it is the majority value, far
below the 0.99 bar at these draws (e.g. HT rows: the commonest (MCS, length) pair is a few %).

Decode rates at 5-15 dB are measured by `tools/header_decode_rate.py`, not asserted here.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from header_packets import agrees, draw_packets, draw_session_packets, expected, format_of
from receivers import bcc

from edge_core.rx import HEADER_FIELDS, decode_headers
from edge_core.rx import headers as rx
from edge_core.synth import dsss, ofdm
from edge_core.synth.generator import generate_packets
from edge_core.synth.impairments import Impairments

BAR = 0.99
OK, FORMAT = HEADER_FIELDS.index("hdr_ok"), HEADER_FIELDS.index("hdr_format")


def _report(decoded: np.ndarray, specs: list, good: np.ndarray) -> str:
    bad = np.flatnonzero(~good)[:8]
    return "\n".join(
        f"  {format_of(specs[i])} rate {specs[i].rate} {specs[i].length_bytes} B: got "
        f"{decoded[i].tolist()}, want {expected(specs[i]).tolist()}"
        for i in bad
    )


@pytest.fixture(scope="module")
def generated() -> dict[str, tuple[np.ndarray, list]]:
    phys = ("802.11b", "802.11g", "802.11n")
    return {phy: draw_packets(phy, 240, (20.0, 30.0), seed=i) for i, phy in enumerate(phys)}


@pytest.mark.parametrize("phy", ["802.11b", "802.11g", "802.11n"])
def test_headers_of_generated_packets_at_20_db(generated, phy):
    iq, specs = generated[phy]
    decoded = decode_headers(iq)
    good = agrees(decoded, specs)
    kinds = np.array([format_of(s) for s in specs])
    for kind in np.unique(kinds):
        rate = good[kinds == kind].mean()
        assert rate >= BAR, f"{kind}: {rate:.3f} of headers agree\n{_report(decoded, specs, good)}"
    if phy == "802.11b":  # both preambles drawn: the short one decoded, the long one recognised
        assert {"802.11b short", "802.11b long"} <= set(kinds)
        assert decoded[kinds == "802.11b short", OK].all()
    if phy == "802.11n":  # the A-MPDU and short GI bits are exercised both ways
        assert {bool(s.mpdu_lengths) for s in specs} == {False, True}
        assert {s.short_gi for s in specs} == {False, True}


def test_headers_of_session_packets_at_20_db():
    """The dataset's path: capture-session frames with their transmitters' radios."""
    iq, specs = draw_session_packets(300, (20.0, 40.0), seed=7)
    decoded = decode_headers(iq)
    good = agrees(decoded, specs)
    kinds = np.array([format_of(s) for s in specs])
    assert len(set(kinds)) >= 3, f"sessions gave only {set(kinds)}"
    for kind in np.unique(kinds):
        rate = good[kinds == kind].mean()
        assert rate >= BAR, f"{kind}: {rate:.3f} of headers agree\n{_report(decoded, specs, good)}"


def test_late_packet_start():
    """Up to 250 samples of noise before the packet (an assembler with a long pre-trigger)."""
    imp = dataclasses.replace(Impairments(), timing_offset_samples=(100, 250))
    for i, phy in enumerate(("802.11b", "802.11n")):
        iq, specs = draw_packets(phy, 80, (20.0, 30.0), seed=20 + i, impairments=imp)
        good = agrees(decode_headers(iq), specs)
        assert good.mean() >= BAR, _report(decode_headers(iq), specs, good)


def test_a_batch_decodes_as_its_rows_one_by_one(generated):
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal((4, 3000)) + 1j * rng.standard_normal((4, 3000))).astype(
        np.complex64
    )
    batch = np.concatenate([generated["802.11b"][0][:20], generated["802.11n"][0][:20], noise])
    batch = batch[rng.permutation(len(batch))]
    together = decode_headers(batch)
    alone = np.concatenate([decode_headers(row[None]) for row in batch])
    np.testing.assert_array_equal(together, alone)
    assert together[:, OK].sum() >= 20  # the comparison is not between two empty results


def test_any_scale(generated):
    iq = generated["802.11g"][0][:16]
    ref = decode_headers(iq)
    assert ref[:, OK].all()
    for scale in (1e-30, 3e4, 1e30):
        np.testing.assert_array_equal(decode_headers(iq * np.float32(scale)), ref)


def test_garbage_gives_not_decoded_and_nan(generated):
    rng = np.random.default_rng(11)
    noise = (rng.standard_normal((400, 3000)) + 1j * rng.standard_normal((400, 3000))) * 0.3
    out = decode_headers(noise.astype(np.complex64))
    assert not out[:, OK].any()
    assert np.isnan(out[:, 1:]).all()

    packet = generated["802.11g"][0][0]
    nan_row, inf_row = packet.copy(), packet.copy()
    nan_row[1000] = np.nan
    inf_row[5] = np.inf + 0j
    junk = np.stack([np.zeros(3000, np.complex64), nan_row, inf_row, np.full(3000, np.nan)])
    out = decode_headers(junk.astype(np.complex64))
    assert not out[:, OK].any() and np.isnan(out[:, 1:]).all()

    # Cut inside the preamble, and rows far shorter than a preamble.
    cut = generated["802.11n"][0][:8].copy()
    cut[:, 300:] = 0
    for rows in (cut, cut[:, :100], cut[:, :1]):
        out = decode_headers(rows)
        assert not out[:, OK].any() and np.isnan(out[:, 1:]).all()
    for empty in (np.zeros((0, 3000), np.complex64), np.zeros((3, 0), np.complex64)):
        out = decode_headers(empty)
        assert out.shape == (empty.shape[0], len(HEADER_FIELDS)) and not out[:, OK].any()


def test_truncated_ht_sig_keeps_only_the_format(generated):
    """L-SIG and the QBPSK symbol say HT-mixed; with HT-SIG2 gone the CRC cannot pass."""
    cut = generated["802.11n"][0][:10].copy()
    cut[:, 500:] = 0  # HT-SIG2 ends near sample 560 + the timing offset
    out = decode_headers(cut)
    assert not out[:, OK].any()
    assert (out[:, FORMAT] == rx.FORMAT_HT).all()
    assert np.isnan(out[:, 2:]).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_packets, n_samples"):
        decode_headers(np.zeros(3000, np.complex64))
    with pytest.raises(ValueError, match="complex"):
        decode_headers(np.zeros((2, 3000), np.float32))
    with pytest.raises(ValueError, match="20 Msps"):
        decode_headers(np.zeros((2, 3000), np.complex64), sample_rate_hz=40e6)


# --- building blocks against independent implementations --------------------------------------


def test_viterbi_corrects_noisy_codewords():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (200, 48)).astype(np.uint8)
    bits[:, -6:] = 0
    coded = np.stack([bcc.encode(b) for b in bits])  # the test receivers' encoder
    soft = (1.0 - 2.0 * coded) + rng.normal(0, 0.6, coded.shape)
    assert ((soft < 0) != coded).sum() > 300  # the channel does flip bits
    decoded = rx._viterbi(soft.reshape(200, 48, 2).astype(np.float32), np.full(200, 48))
    np.testing.assert_array_equal(decoded, bits)
    # Rows of different lengths in one call: 24-step rows stop (in state 0) at their end.
    short = bits[:50, :24].copy()
    short[:, -6:] = 0
    mixed = np.zeros((50, 48, 2), np.float32)
    mixed[:, :24] = (1.0 - 2.0 * np.stack([bcc.encode(b) for b in short])).reshape(50, 24, 2)
    out = rx._viterbi(mixed, np.full(50, 24))
    np.testing.assert_array_equal(out[:, :24], short)


def test_crcs_match_the_transmitter():
    rng = np.random.default_rng(1)
    for _ in range(20):
        sig = rng.integers(0, 2, 34).astype(np.uint8)
        ht = np.concatenate([sig, ofdm.crc8_ht_sig(sig)])[None]
        assert rx._crc_ok(ht, rx._CRC8).all()
        ht[0, rng.integers(0, 42)] ^= 1
        assert not rx._crc_ok(ht, rx._CRC8).any()
        hdr = rng.integers(0, 2, 32).astype(np.uint8)
        plcp = np.concatenate([hdr, dsss.crc16_plcp(hdr)])[None]
        assert rx._crc_ok(plcp, rx._CRC16).all()
        plcp[0, rng.integers(0, 48)] ^= 1
        assert not rx._crc_ok(plcp, rx._CRC16).any()


# --- frozen output: the decoder's rows on fixed packets, saved before any speed-up ----------

REFERENCE = Path(__file__).parent / "data" / "rx_headers_reference.npz"


def reference_batches() -> dict[str, np.ndarray]:
    """Fixed batches (regenerated from seeds) whose decoded rows are frozen in REFERENCE: every
    format at 20-30 dB, 0-10 dB and -5-3 dB (borderline decisions), late starts up to 300 samples,
    session frames, the bench's packets, noise and junk rows, cut rows and short rows."""
    batches: dict[str, np.ndarray] = {}
    late = dataclasses.replace(Impairments(), timing_offset_samples=(100, 300))
    for i, phy in enumerate(("802.11b", "802.11g", "802.11n")):
        name = phy.removeprefix("802.11")
        batches[f"{name}_high"] = draw_packets(phy, 30, (20.0, 30.0), seed=100 + i)[0]
        batches[f"{name}_low"] = draw_packets(phy, 20, (0.0, 10.0), seed=110 + i)[0]
        batches[f"{name}_noisy"] = draw_packets(phy, 12, (-5.0, 3.0), seed=150 + i)[0]
        batches[f"{name}_late"] = draw_packets(phy, 12, (5.0, 30.0), 120 + i, late)[0]
    batches["sessions"] = draw_session_packets(30, (5.0, 40.0), seed=130)[0]
    bench = generate_packets(16, np.random.default_rng(0))
    batches["bench"] = np.stack([p.iq for p in bench]).astype(np.complex64)
    rng = np.random.default_rng(140)
    noise = (rng.standard_normal((6, 3000)) + 1j * rng.standard_normal((6, 3000))) * 0.3
    junk = batches["g_high"][:2].copy()
    junk[0, 1000] = np.nan
    junk[1, 5] = np.inf
    batches["junk"] = np.concatenate([noise, np.zeros((1, 3000)), junk]).astype(np.complex64)
    cut = batches["n_high"][:8].copy()
    cut[:4, 500:] = 0  # HT-SIG2 gone
    cut[4:, 300:] = 0  # inside the preamble
    batches["cut"] = cut
    batches["short_2000"] = batches["b_high"][:10, :2000].copy()  # padded to _MIN_SAMPLES
    batches["short_900"] = batches["g_high"][:6, :900].copy()
    return batches


def _digest(iq: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(iq, np.complex64).tobytes()).hexdigest()


def write_reference() -> None:
    """Freeze the current decoder's rows (run once, from a decoder known to be right)."""
    arrays = {}
    for name, iq in reference_batches().items():
        arrays[f"out_{name}"] = decode_headers(iq)
        arrays[f"iq_sha256_{name}"] = np.array(_digest(iq))
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCE, **arrays)


def test_output_is_bit_identical_to_the_frozen_reference():
    """A faster decoder must give exactly the rows the reference decoder gave (NaN for NaN)."""
    with np.load(REFERENCE) as ref:
        frozen = {k: ref[k] for k in ref.files}
    batches = reference_batches()
    assert {f"out_{k}" for k in batches} == {k for k in frozen if k.startswith("out_")}
    assert sum(int(frozen[f"out_{k}"][:, OK].sum()) for k in batches) >= 150
    for name, iq in batches.items():
        want = frozen[f"out_{name}"]
        same_packets = _digest(iq) == str(frozen[f"iq_sha256_{name}"])
        why = "" if same_packets else " (the generated packets changed, not only the decoder)"
        np.testing.assert_array_equal(decode_headers(iq), want, err_msg=f"batch {name}{why}")
        # One by one, as the daemon decodes a batch of 1.
        for i in range(0, len(iq), 7):
            np.testing.assert_array_equal(decode_headers(iq[i : i + 1]), want[i : i + 1])


if __name__ == "__main__":
    write_reference()
    print(f"wrote {REFERENCE}")

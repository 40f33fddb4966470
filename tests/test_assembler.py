"""The packet assembler on seeded synthetic bursts in complex Gaussian noise.

`make_burst_stream` is a stand-in for the real channel simulator: OFDM-like bursts (a true L-STF,
an L-LTF-like block, then random-QPSK symbols with cyclic prefix) and constant-envelope bursts
(DBPSK chips at 11 Mchip/s, like 802.11b), each with a random CFO, separated by noise gaps.
tools/bench_assembler.py uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from edge_core.assembler import AssemblerConfig, Packet, PacketAssembler, moving_sum, step_points
from edge_core.errors import ConfigError
from edge_core.inspect import inspect_packets

FS = 20e6
NOISE_POWER = 1e-4  # -40 dBFS, like the channel simulator

# L-STF: subcarriers -26..26, every 4th loaded (802.11-2020 Eq. 17-6); period 16 samples.
_STF_TONES = {-24: 1, -20: -1, -16: 1, -12: -1, -8: -1, -4: 1, 4: -1, 8: -1, 12: 1, 16: 1,
              20: 1, 24: 1}  # fmt: skip
_DATA_BINS = np.array([k for k in range(-26, 27) if k != 0])


def _stf() -> np.ndarray:
    spectrum = np.zeros(64, dtype=np.complex128)
    for k, sign in _STF_TONES.items():
        spectrum[k % 64] = sign * (1 + 1j)
    period = np.fft.ifft(spectrum)  # (64,), periodic in 16
    x = np.tile(period, 3)[:160]
    return x / np.sqrt(np.mean(np.abs(x) ** 2))


_STF = _stf()


def _ofdm_symbols(n_symbols: int, rng: np.random.Generator, cp: int = 16) -> np.ndarray:
    spectrum = np.zeros((n_symbols, 64), dtype=np.complex128)
    qpsk = rng.choice([-1.0, 1.0], (n_symbols, 52)) + 1j * rng.choice([-1.0, 1.0], (n_symbols, 52))
    spectrum[:, _DATA_BINS % 64] = qpsk
    body = np.fft.ifft(spectrum, axis=1)  # (n_symbols, 64)
    sym = np.concatenate((body[:, -cp:], body), axis=1)  # (n_symbols, 64 + cp)
    sym /= np.sqrt(np.mean(np.abs(sym) ** 2))
    return sym.reshape(-1)


def ofdm_burst(n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples (>= 160) of L-STF, an LTF-like block and QPSK OFDM symbols; unit power."""
    ltf = _ofdm_symbols(2, rng, cp=16)  # 160 samples
    data = _ofdm_symbols(max(1, -(-(n - 320) // 80)), rng)
    return np.concatenate((_STF, ltf, data))[:n].astype(np.complex64)


def constant_envelope_burst(n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of DBPSK chips at 11 Mchip/s held at 20 Msps; |x| = 1."""
    chips = -(-n * 11 // 20) + 1
    phase = np.pi * np.cumsum(rng.integers(0, 2, chips))
    return np.exp(1j * phase[(np.arange(n) * 11) // 20]).astype(np.complex64)


@dataclass
class BurstStream:
    samples: np.ndarray  # (n,) complex64
    starts: np.ndarray  # (bursts,) first sample of each burst
    lengths: np.ndarray
    kinds: list[str]

    @property
    def intervals(self) -> list[tuple[int, int]]:
        return [(int(s), int(s + n)) for s, n in zip(self.starts, self.lengths, strict=True)]


def make_burst_stream(
    seed: int,
    n_bursts: int,
    snr_db: float,
    lengths: tuple[int, int] = (400, 6000),
    gaps: tuple[int, int] = (320, 20_000),
    lead: int = 6000,
    cfo_hz_max: float = 50e3,
) -> BurstStream:
    """Seeded bursts (half OFDM-like, half constant envelope) in noise of power NOISE_POWER."""
    rng = np.random.default_rng(seed)
    n_len = rng.integers(lengths[0], lengths[1] + 1, n_bursts)
    n_gap = rng.integers(gaps[0], gaps[1] + 1, n_bursts)
    starts = lead + np.concatenate(([0], np.cumsum(n_len + n_gap)[:-1]))
    total = int(starts[-1] + n_len[-1] + gaps[0])
    x = np.sqrt(NOISE_POWER / 2) * (rng.standard_normal(total) + 1j * rng.standard_normal(total))
    amplitude = np.sqrt(NOISE_POWER * 10 ** (snr_db / 10))
    kinds = []
    for s, n in zip(starts, n_len, strict=True):
        kind = "ofdm" if rng.random() < 0.5 else "ce"
        burst = ofdm_burst(n, rng) if kind == "ofdm" else constant_envelope_burst(n, rng)
        cfo = rng.uniform(-cfo_hz_max, cfo_hz_max)
        rot = np.exp(2j * np.pi * (cfo * np.arange(n) / FS + rng.random()))
        x[s : s + n] += amplitude * burst * rot
        kinds.append(kind)
    return BurstStream(x.astype(np.complex64), starts, n_len, kinds)


def run(x: np.ndarray, chunk: int, config: AssemblerConfig | None = None) -> list[Packet]:
    asm = PacketAssembler(config)
    out: list[Packet] = []
    for i in range(0, x.size, chunk):
        out += asm.feed(x[i : i + chunk], first_sample_index=i, arrival_time=float(i))
    return out + asm.flush()


def score(stream: BurstStream, packets: list[Packet], pre: int = 16) -> dict:
    return inspect_packets(packets, stream.intervals, pre_trigger_samples=pre)


@pytest.fixture(scope="module")
def streams() -> dict[float, BurstStream]:
    return {snr: make_burst_stream(seed=11, n_bursts=120, snr_db=snr) for snr in (5.0, 10.0, 20.0)}


@pytest.mark.parametrize(("snr_db", "floor"), [(5.0, 0.95), (10.0, 0.98), (20.0, 0.98)])
def test_recall_precision_and_start_error_on_bursts(streams, snr_db, floor):
    stream = streams[snr_db]
    report = score(stream, run(stream.samples, 65536))
    assert report["recall"] >= floor, report
    assert report["precision"] >= floor, report
    assert abs(report["start_error_samples_median"]) <= 1, report
    assert report["start_error_samples_abs_p95"] <= (6 if snr_db < 10 else 2), report
    assert abs(report["end_error_samples_median"]) <= 2, report


def _key(p: Packet) -> tuple:
    return (p.start_sample, p.end_sample, p.truncated, p.snr_db_estimate, p.iq.tobytes())


def test_chunk_size_does_not_change_the_packets(streams):
    x = streams[10.0].samples[:600_000]
    runs = {chunk: run(x, chunk) for chunk in (1000, 4096, 65536)}
    assert len(runs[65536]) > 10
    reference = [_key(p) for p in runs[65536]]
    for chunk in (1000, 4096):
        assert [_key(p) for p in runs[chunk]] == reference, f"chunk {chunk} differs"


def test_same_input_same_packets(streams):
    x = streams[20.0].samples[:400_000]
    assert [_key(p) for p in run(x, 8192)] == [_key(p) for p in run(x, 8192)]


def _stream_with(bursts: list[tuple[int, np.ndarray]], total: int, seed: int = 3) -> np.ndarray:
    """Noise of NOISE_POWER with unit-power bursts at 20 dB SNR placed at the given starts."""
    rng = np.random.default_rng(seed)
    x = np.sqrt(NOISE_POWER / 2) * (rng.standard_normal(total) + 1j * rng.standard_normal(total))
    for start, burst in bursts:
        x[start : start + burst.size] += np.sqrt(NOISE_POWER * 100) * burst
    return x.astype(np.complex64)


def test_frame_and_ack_one_sifs_apart_are_two_packets():
    rng = np.random.default_rng(5)
    data, ack = ofdm_burst(2000, rng), ofdm_burst(560, rng)
    x = _stream_with([(10_000, data), (12_000 + 320, ack)], 20_000)
    packets = run(x, 4096)
    assert [(p.start_sample + 16, p.end_sample) for p in packets] == [
        (10_000, 12_000),
        (12_320, 12_880),
    ]


def test_long_burst_keeps_its_first_3000_samples_and_is_flagged():
    rng = np.random.default_rng(6)
    x = _stream_with([(9000, constant_envelope_burst(7000, rng))], 30_000)
    asm = PacketAssembler()
    (pkt,) = asm.feed(x, 0) + asm.flush()
    assert pkt.truncated and asm.stats.truncated == 1
    assert (pkt.start_sample, pkt.end_sample) == (9000 - 16, 16_000)
    assert pkt.iq.shape == (3000,) and pkt.iq.dtype == np.complex64
    np.testing.assert_array_equal(pkt.iq, x[pkt.start_sample : pkt.start_sample + 3000])


def test_short_burst_is_post_padded_with_zeros():
    rng = np.random.default_rng(7)
    x = _stream_with([(9000, ofdm_burst(800, rng))], 20_000)
    (pkt,) = run(x, 4096)
    assert pkt.start_sample == 9000 - 16 and abs(pkt.end_sample - 9800) <= 2
    kept = pkt.end_sample - pkt.start_sample
    assert not pkt.truncated
    np.testing.assert_array_equal(pkt.iq[:kept], x[pkt.start_sample : pkt.end_sample])
    assert not pkt.iq[kept:].any()
    assert 17.0 < pkt.snr_db_estimate < 23.0


def test_too_short_bursts_are_dropped_and_counted():
    rng = np.random.default_rng(8)
    x = _stream_with([(9000, ofdm_burst(160, rng)), (15_000, ofdm_burst(1000, rng))], 25_000)
    asm = PacketAssembler()
    packets = asm.feed(x, 0) + asm.flush()
    assert [p.start_sample + 16 for p in packets] == [15_000]
    assert asm.stats.too_short == 1


def test_reset_drops_the_packet_in_progress_and_counts_it():
    rng = np.random.default_rng(9)
    x = _stream_with([(9000, ofdm_burst(4000, rng)), (20_000, ofdm_burst(1000, rng))], 30_000)
    asm = PacketAssembler()
    assert asm.feed(x[:11_000], 0) == []  # the first burst is under way
    asm.reset()
    assert asm.stats.dropped_on_reset == 1
    packets = asm.feed(x[11_000:]) + asm.flush()
    assert [p.start_sample + 16 for p in packets] == [20_000]  # not the rest of the first


def test_index_jump_is_a_discontinuity():
    rng = np.random.default_rng(10)
    x = _stream_with([(9000, ofdm_burst(4000, rng))], 20_000)
    asm = PacketAssembler()
    asm.feed(x[:11_000], 0)
    assert asm.feed(x[11_000:], first_sample_index=50_000) + asm.flush() == []
    assert asm.stats.discontinuities == 1 and asm.stats.dropped_on_reset == 1


def test_nonfinite_samples_are_counted_and_no_packet_spans_them():
    rng = np.random.default_rng(11)
    bursts = [(9000, ofdm_burst(1000, rng)), (15_000, ofdm_burst(2000, rng)),
              (25_000, ofdm_burst(1000, rng))]  # fmt: skip
    x = _stream_with(bursts, 35_000)
    x[16_000:16_010] = np.nan
    x[16_500] = complex(np.inf, 0)
    asm = PacketAssembler()
    packets = []
    for i in range(0, x.size, 4096):
        packets += asm.feed(x[i : i + 4096], i)
    packets += asm.flush()
    assert asm.stats.nonfinite_samples == 11
    assert asm.stats.dropped_on_reset == 1  # the burst the NaNs hit
    assert [p.start_sample + 16 for p in packets] == [9000, 25_000]
    assert all(np.isfinite(p.iq).all() for p in packets)


def test_a_never_ending_burst_is_force_cut_and_detection_resumes():
    rng = np.random.default_rng(12)
    bursts = [(9000, constant_envelope_burst(30_000, rng)), (60_000, ofdm_burst(1000, rng))]
    x = _stream_with(bursts, 80_000)
    asm = PacketAssembler(AssemblerConfig(max_packet_samples=10_000))
    packets = []
    for i in range(0, x.size, 4096):
        packets += asm.feed(x[i : i + 4096], i)
    packets += asm.flush()
    assert asm.stats.force_cut == 1
    assert packets[0].truncated and packets[0].start_sample == 9000 - 16
    assert packets[-1].start_sample + 16 == 60_000
    assert asm.noise_floor_power == pytest.approx(NOISE_POWER, rel=0.2)


def test_a_floor_far_too_low_is_estimated_afresh():
    rng = np.random.default_rng(14)
    x = _stream_with([(150_000, ofdm_burst(1000, rng))], 200_000)
    config = AssemblerConfig(
        noise_floor_power=NOISE_POWER / 100, max_packet_samples=20_000,
        noise_floor_update_samples=16_384,
    )  # fmt: skip
    asm = PacketAssembler(config)
    packets = asm.feed(x, 0) + asm.flush()
    # The noise never looked quiet against the configured floor: after max_packet_samples
    # of waiting the floor was estimated again, and the packet found.
    assert packets[-1].start_sample + 16 == 150_000
    assert asm.noise_floor_power == pytest.approx(NOISE_POWER, rel=0.2)


def test_arrival_time_is_that_of_the_chunk_holding_the_last_sample():
    rng = np.random.default_rng(13)
    x = _stream_with([(9000, ofdm_burst(3000, rng))], 20_000)
    asm = PacketAssembler()
    packets = []
    for k, i in enumerate(range(0, x.size, 1000)):
        packets += asm.feed(x[i : i + 1000], arrival_time=100.0 + k)
    (pkt,) = packets
    assert pkt.end_sample == 12_000
    assert pkt.arrival_time == 100.0 + 11  # sample 11_999 arrived in chunk 11


def test_arrival_time_in_a_joined_chunk_is_that_of_the_part_holding_the_last_sample():
    # chunks of 10 parts of 1000 samples (queued messages a source joined); part k of the
    # stream arrived at 100 + k
    rng = np.random.default_rng(13)
    x = _stream_with([(9000, ofdm_burst(3000, rng)), (15_000, ofdm_burst(2000, rng))], 30_000)
    ends = np.arange(1000, 10_001, 1000)  # (10,) within each chunk
    asm = PacketAssembler()
    packets = []
    for i in range(0, x.size, 10_000):
        times = 100.0 + (i + ends) // 1000 - 1  # (10,)
        packets += asm.feed(x[i : i + 10_000], i, float(times[-1]), (ends, times))
    packets += asm.flush()
    # samples 11_999 and 16_999: parts 11 and 16 (of the chunk that arrived at 119)
    assert [(p.end_sample, p.arrival_time) for p in packets] == [(12_000, 111.0), (17_000, 116.0)]

    # one chunk of 30 parts with a NaN at 5000: the halves around it keep their parts' times
    y = x.copy()
    y[5000] = np.nan
    ends = np.arange(1000, 30_001, 1000)
    asm = PacketAssembler()
    packets = asm.feed(y, 0, 129.0, (ends, 100.0 + ends // 1000 - 1)) + asm.flush()
    assert [(p.end_sample, p.arrival_time) for p in packets] == [(12_000, 111.0), (17_000, 116.0)]


def test_bad_part_arrivals_are_named():
    x = np.zeros(100, np.complex64)
    for parts, wrong in [
        ((np.array([50, 100]), np.array([1.0])), "same length"),
        ((np.array([50, 99]), np.array([1.0, 2.0])), "ending at the chunk's 100"),
        ((np.array([60, 50, 100]), np.array([1.0, 2.0, 3.0])), "increasing"),
        ((np.array([50.0, 100.0]), np.array([1.0, 2.0])), "integers"),
        ((np.array([0, 100]), np.array([1.0, 2.0])), "first part"),
    ]:
        with pytest.raises(ValueError, match=f"part_arrivals: .*{wrong}"):
            PacketAssembler().feed(x, 0, 2.0, parts)


def test_noise_alone_gives_no_packets_and_a_good_floor():
    x = _stream_with([], 400_000)
    asm = PacketAssembler()
    assert run(x, 65536) == []
    for i in range(0, x.size, 65536):
        asm.feed(x[i : i + 65536])
    assert asm.noise_floor_power == pytest.approx(NOISE_POWER, rel=0.05)


def test_stf_refinement_keeps_ofdm_starts_exact(streams):
    stream = streams[10.0]
    report = score(stream, run(stream.samples, 65536, AssemblerConfig(use_stf_autocorr=True)))
    assert report["recall"] >= 0.98 and report["precision"] >= 0.98
    assert report["start_error_samples_abs_p95"] <= 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"end_threshold_db": 7.0},
        {"hangover_samples": 400},
        {"window_samples": 0},
        {"noise_floor_percentile": 100.0},
        {"max_packet_samples": 10},
    ],
)
def test_bad_config_is_a_config_error(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        AssemblerConfig(**kwargs)


def test_feed_rejects_real_samples():
    with pytest.raises(ValueError, match="complex"):
        PacketAssembler().feed(np.zeros(10, dtype=np.float32))


@pytest.mark.parametrize("width", [1, 3, 16, 21])
def test_moving_sum_matches_a_direct_sum(width):
    p = np.random.default_rng(width).random(500).astype(np.float32)
    expected = np.convolve(p.astype(np.float64), np.ones(width), mode="valid")
    np.testing.assert_allclose(moving_sum(p, width), expected, rtol=1e-5)


def test_step_points_find_a_power_step():
    rng = np.random.default_rng(0)
    p = np.concatenate((rng.exponential(1.0, 40), rng.exponential(10.0, 40)))[None, :]
    assert abs(int(step_points(p, np.array([1.0]), np.array([10.0]))[0]) - 40) <= 2
    down = p[:, ::-1]
    assert abs(int(step_points(down, np.array([10.0]), np.array([1.0]))[0]) - 40) <= 2


def test_inspect_recording_scores_a_sigmf_recording(tmp_path):
    from edge_core.inspect import inspect_recording
    from edge_core.iq.sigmf_io import SigMFWriter

    stream = make_burst_stream(seed=4, n_bursts=30, snr_db=15.0)
    with SigMFWriter(tmp_path / "rec", FS, "ci16_le") as writer:
        for i in range(0, stream.samples.size, 100_000):
            writer.write(stream.samples[i : i + 100_000] * 10)  # well inside ci16 full scale
        for (start, end), kind in zip(stream.intervals, stream.kinds, strict=True):
            phy = "802.11g" if kind == "ofdm" else "802.11b"
            writer.annotate(start, end - start, {"edge_tc:phy": phy})
    report = inspect_recording(tmp_path / "rec.sigmf-meta", chunk_samples=50_000)
    keys = ("annotated", "detected", "matched", "recall", "precision",
            "start_error_samples_median", "per_label", "stats", "samples", "seconds")  # fmt: skip
    assert set(keys) <= set(report)
    assert report["annotated"] == 30 and report["recall"] == 1.0 and report["precision"] == 1.0
    assert set(report["per_label"]) == {"802.11b", "802.11g"}
    assert report["stats"]["detected"] == 30
    assert report["seconds"] == pytest.approx(stream.samples.size / FS)

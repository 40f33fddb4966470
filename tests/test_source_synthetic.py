"""The live synthetic source: deterministic, contiguous, packets where it says, config errors."""

import copy

import numpy as np
import pytest

from edge_core.assembler import PacketAssembler
from edge_core.synth.stream import NOISE_POWER, ChannelSimulator, StreamConfig
from edge_daemon.sources.base import NullEvents, SourceConfigError, source_config_from_dict
from edge_daemon.sources.synthetic import LiveChannel, SyntheticSource, SyntheticSourceConfig


def _read(source, n_chunks):
    chunks = []
    while len(chunks) < n_chunks:
        chunk = source.read(1.0)
        if chunk is not None:
            chunks.append(chunk)
    return chunks


def _open(**kwargs):
    source = SyntheticSource(SyntheticSourceConfig(pace="fast", **kwargs), NullEvents())
    source.open()
    return source


def test_same_seed_same_samples_other_seed_other_samples():
    a = np.concatenate([c.samples for c in _read(_open(seed=3), 4)])
    b = np.concatenate([c.samples for c in _read(_open(seed=3), 4)])
    c = np.concatenate([c.samples for c in _read(_open(seed=4), 4)])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_chunks_are_contiguous_complex64_at_20msps():
    source = _open(chunk_samples=5000)
    assert source.sample_rate_hz == 20e6
    chunks = _read(source, 20)
    assert [c.first_sample_index for c in chunks] == [5000 * i for i in range(20)]
    assert all(c.samples.dtype == np.complex64 and c.samples.shape == (5000,) for c in chunks)
    assert not any(c.discontinuity for c in chunks)


def test_generated_packets_stand_out_of_the_noise():
    source = _open(seed=1, snr_db=(20.0, 25.0), chunk_samples=1 << 16)
    x = np.concatenate([c.samples for c in _read(source, 31)])  # ~0.1 s
    packets = [p for p in source.packets if p.start + p.count <= x.size]
    assert len(packets) >= 10 and source.packets_generated >= len(packets)
    busy = np.zeros(x.size, bool)
    for p in packets:
        busy[p.start : p.start + p.count] = True
        assert {"edge_tc:phy", "edge_tc:frame", "edge_tc:app"} <= set(p.annotation)
    # 20-25 dB above the noise inside packets; the noise floor between them (up to the end of
    # the last finished packet: a packet still being sent at the end is not in `packets`)
    end = max(p.start + p.count for p in packets)
    assert np.mean(np.abs(x[busy]) ** 2) > 30 * NOISE_POWER
    idle_power = np.mean(np.abs(x[:end][~busy[:end]]) ** 2)
    assert 0.8 * NOISE_POWER < idle_power < 1.25 * NOISE_POWER


def test_live_rendering_matches_the_recorded_channel():
    # The live channel renders packets in complex64 with a CFO table; from the same random
    # numbers it must give the recording's waveforms (multipath, CFO, gain), to float precision.
    config = StreamConfig()
    recorded, live = ChannelSimulator(config, 2), LiveChannel(config, 2)
    _, _, done = next(recorded.chunks(1 << 18))
    assert len(done) >= 10
    for i, pkt in enumerate(done[:30]):
        recorded.rng, live.rng = np.random.default_rng(i), np.random.default_rng(i)
        live.bss = copy.deepcopy(recorded.bss)  # same MAC state: sequence and packet numbers
        want, got = recorded._render(pkt), live._render(pkt)
        assert got.dtype == np.complex64 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_the_packet_detector_finds_the_generated_packets():
    # The live channel (pooled noise) is what the detector was built for: nearly every packet
    # the generator reports is cut where it starts, and little else is.
    source = _open(seed=0, duration_s=0.25)
    assembler = PacketAssembler()
    cut = []
    while not source.finished:
        chunk = source.read(1.0)
        if chunk is not None:
            cut += assembler.feed(chunk.samples, chunk.first_sample_index)
    truth = list(source.packets)
    starts = np.array([p.start_sample + assembler.config.pre_trigger_samples for p in cut])
    found = [np.min(np.abs(starts - p.start)) <= 32 for p in truth]
    assert len(truth) > 100
    assert np.mean(found) >= 0.97
    assert abs(len(cut) - len(truth)) <= 0.05 * len(truth)


def test_duration_ends_the_stream():
    source = _open(duration_s=0.01, chunk_samples=30_000)
    chunks = []
    for _ in range(100):
        chunk = source.read(1.0)
        if chunk is None and source.finished:
            break
        if chunk is not None:
            chunks.append(chunk)
    assert sum(c.samples.size for c in chunks) == 200_000
    assert chunks[-1].samples.size == 200_000 - 6 * 30_000
    assert source.read(0.0) is None and source.finished
    assert source.packets and all(p.start + p.count <= 200_000 for p in source.packets)


def test_realtime_pace_holds_back_a_block_that_is_not_due():
    # A 16384-sample block is due 0.8 ms after the clock starts: a zero timeout gets None.
    source = SyntheticSource(SyntheticSourceConfig(), NullEvents())
    source.open()
    assert source.read(0.0) is None
    assert source.read(1.0) is not None


def test_config_problems_name_their_keys():
    with pytest.raises(SourceConfigError) as err:
        source_config_from_dict(
            {
                "type": "synthetic",
                "traffic_scale": 0,
                "snr_db": [30, 5],
                "apps": ["skype"],
                "duration_s": -1.0,
                "chunk_samples": 1 << 30,
            }
        )
    text = str(err.value)
    for key in ("traffic_scale", "snr_db", "apps", "duration_s", "chunk_samples"):
        assert f"source.{key}: want" in text
    config = source_config_from_dict({"type": "synthetic", "snr_db": [10, 20], "seed": 5})
    assert isinstance(config, SyntheticSourceConfig) and config.snr_db == (10, 20)
    assert config.stream_config().snr_db == (10.0, 20.0)

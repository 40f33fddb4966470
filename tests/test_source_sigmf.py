"""The SigMF replay source: exact samples, chunking, looping, pacing, config errors."""

import itertools

import numpy as np
import pytest

from edge_core.errors import SourceError
from edge_core.iq.sigmf_io import SigMFWriter
from edge_core.synth.stream import StreamConfig, write_stream
from edge_daemon.sources.base import (
    NullEvents,
    SourceConfigError,
    create_source,
    source_config_from_dict,
)
from edge_daemon.sources.sigmf import SigMFSource, SigMFSourceConfig


def _iq(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)


def _record(base, x, rate=20e6, datatype="cf32_le"):
    with SigMFWriter(base, rate, datatype) as writer:
        writer.write(x)
        writer.annotate(10, 20, {"core:label": "a"})
    return base


def _drain(source, limit=10_000):
    chunks = []
    for _ in range(limit):
        chunk = source.read(1.0)
        if chunk is None:
            if source.finished:
                return chunks
            continue
        chunks.append(chunk)
    raise AssertionError("source never finished")


def test_fast_replay_gives_every_sample_once_in_order(tmp_path):
    x = _iq(10_000)
    base = _record(tmp_path / "rec", x)
    config = source_config_from_dict({"type": "sigmf", "path": str(base), "pace": "fast",
                                      "chunk_samples": 3000})  # fmt: skip
    source = create_source(config, NullEvents())
    assert isinstance(source, SigMFSource)
    source.open()
    assert source.sample_rate_hz == 20e6
    chunks = _drain(source)
    assert source.read(0.01) is None and source.finished
    source.close()
    assert [c.first_sample_index for c in chunks] == [0, 3000, 6000, 9000]
    assert [c.samples.size for c in chunks] == [3000, 3000, 3000, 1000]
    assert not any(c.discontinuity for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), x)
    assert all(b.arrival_time >= a.arrival_time for a, b in itertools.pairwise(chunks))


def test_integer_recording_is_scaled_to_full_scale(tmp_path):
    x = _iq(500) / 4  # inside full scale: no clipping
    base = _record(tmp_path / "rec", x, datatype="ci16_le")
    source = SigMFSource(SigMFSourceConfig(path=str(base), pace="fast"), NullEvents())
    source.open()
    (chunk,) = _drain(source)
    np.testing.assert_allclose(chunk.samples, x, atol=1 / 32768)


def test_loop_continues_the_index_and_flags_each_wrap(tmp_path):
    x = _iq(5000)
    base = _record(tmp_path / "rec", x)
    config = SigMFSourceConfig(path=str(base), pace="fast", loop=True, chunk_samples=2000)
    source = SigMFSource(config, NullEvents())
    source.open()
    chunks = [source.read(1.0) for _ in range(7)]
    assert all(c is not None for c in chunks)
    assert [c.first_sample_index for c in chunks] == [0, 2000, 4000, 5000, 7000, 9000, 10000]
    assert [c.discontinuity for c in chunks] == [False, False, False, True, False, False, True]
    np.testing.assert_array_equal(chunks[3].samples, x[:2000])
    assert not source.finished


def test_realtime_pacing_holds_back_a_chunk_that_is_not_due(tmp_path):
    # At 1 kHz a 2000-sample chunk is due 2 s after the clock starts: a 10 ms read returns None.
    base = _record(tmp_path / "rec", _iq(4000), rate=1e3)
    source = SigMFSource(SigMFSourceConfig(path=str(base), chunk_samples=2000), NullEvents())
    source.open()
    assert source.read(0.01) is None
    assert not source.finished
    source.close()


def test_realtime_pacing_releases_due_chunks(tmp_path):
    # At 1 GHz every chunk is due within microseconds of the previous one.
    x = _iq(4000)
    base = _record(tmp_path / "rec", x, rate=1e9)
    source = SigMFSource(SigMFSourceConfig(path=str(base), chunk_samples=1000), NullEvents())
    source.open()
    chunks = _drain(source)
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), x)


def test_annotations_of_a_generated_stream(tmp_path):
    base = write_stream(tmp_path / "stream", 0.02, seed=1, config=StreamConfig(), progress=False)
    source = SigMFSource(SigMFSourceConfig(path=str(base), pace="fast"), NullEvents())
    source.open()
    annotations = source.annotations
    assert annotations, "a 20 ms stream holds packets"
    assert all("edge_tc:phy" in a and "core:sample_start" in a for a in annotations)
    total = sum(c.samples.size for c in _drain(source))
    assert total == round(0.02 * 20e6)


def test_missing_recording_is_a_source_error(tmp_path):
    source = SigMFSource(SigMFSourceConfig(path=str(tmp_path / "nope")), NullEvents())
    with pytest.raises(SourceError, match="nope"):
        source.open()


def test_config_problems_name_their_keys():
    with pytest.raises(SourceConfigError) as err:
        source_config_from_dict({"type": "sigmf", "pace": "slow", "chunk_samples": 0, "x": 1})
    text = str(err.value)
    assert "source.pace" in text and "source.x: unknown key" in text
    with pytest.raises(SourceConfigError) as err:
        source_config_from_dict({"type": "sigmf", "chunk_samples": 0})
    assert "source.path: missing" in str(err.value)
    assert "source.chunk_samples: want >= 1" in str(err.value)

"""The synthetic source's replay loop (`loop_s`): generated once, replayed with the index running
on, its packets' truth following every pass (issue 13: the demo measures the daemon)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_core.assembler import PacketAssembler
from edge_daemon.sources.base import NullEvents, SourceConfigError
from edge_daemon.sources.synthetic import (
    LOOP_CUT_AFTER_END,
    SyntheticSource,
    SyntheticSourceConfig,
)


def _source(**kw) -> SyntheticSource:
    config = SyntheticSourceConfig(pace="fast", traffic_scale=4.0, seed=3, **kw)
    source = SyntheticSource(config, NullEvents())
    source.open()
    return source


def _read(source: SyntheticSource, samples: int) -> tuple[np.ndarray, list[int]]:
    parts, firsts = [], []
    got = 0
    while got < samples:
        chunk = source.read(1.0)
        assert chunk is not None
        parts.append(chunk.samples)
        firsts.append(chunk.first_sample_index)
        got += chunk.samples.size
    return np.concatenate(parts), firsts


def test_the_loop_replays_the_same_samples_with_the_index_running_on():
    source = _source(loop_s=0.02, chunk_samples=3000)
    loop = source._loop
    assert loop is not None
    n = loop.samples.size
    assert 0.02 * 20e6 - 30_000 < n <= 0.02 * 20e6  # cut after the last packet's end
    assert n == max(p.end for p in loop.packets) + LOOP_CUT_AFTER_END
    x, firsts = _read(source, 3 * n)
    assert firsts == sorted(firsts) and firsts[0] == 0
    sizes = np.diff(firsts)
    assert set(sizes.tolist()) <= {3000, n % 3000}  # a chunk never spans the seam
    np.testing.assert_array_equal(x[:n], loop.samples)
    np.testing.assert_array_equal(x[n : 2 * n], loop.samples)
    np.testing.assert_array_equal(x[2 * n : 3 * n], loop.samples)
    again = _source(loop_s=0.02, chunk_samples=3000)._loop  # the same seed, the same loop
    assert again is not None
    np.testing.assert_array_equal(again.samples, loop.samples)


def test_the_truth_follows_every_pass_and_the_assembler_finds_the_packets_again():
    source = _source(loop_s=0.05, chunk_samples=4096)
    loop = source._loop
    assert loop is not None and len(loop.packets) > 20, len(loop.packets)
    n = loop.samples.size
    x, _ = _read(source, 3 * n)
    truth = [p for p in source.packets if p.start + p.count <= 3 * n]
    per_pass = len(loop.packets)
    assert len(truth) >= 2 * per_pass
    starts = [p.start for p in truth]
    assert starts[per_pass : 2 * per_pass] == [s + n for s in starts[:per_pass]]
    assembler = PacketAssembler()
    found = assembler.feed(x[: 3 * n], 0)
    first = [p for p in found if p.end_sample <= n]
    third = [p for p in found if 2 * n <= p.start_sample and p.end_sample <= 3 * n]
    assert len(first) > 10  # (the first pass loses the noise-floor warm-up)
    third_starts = {p.start_sample - 2 * n for p in third}
    same = {p.start_sample for p in first} & third_starts  # the same packets, pass after pass
    assert len(same) >= 0.9 * len(first), (len(same), len(first))


def test_loop_s_bounds_are_checked():
    with pytest.raises(SourceConfigError, match=r"source\.loop_s: want 0\.\.10 s"):
        SyntheticSourceConfig.from_dict({"type": "synthetic", "loop_s": 11}, "source")

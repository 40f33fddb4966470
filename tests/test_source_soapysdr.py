"""The SoapySDR source on the fake `SoapySDR` module in tests/fakes (the real one needs a radio).

The fake serves a ramp: sample k of the radio's stream is complex(k, -k), so each chunk's
`first_sample_index` can be checked against the samples it carries.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from edge_core.errors import SourceError
from edge_daemon.sources.base import NullEvents, SourceConfigError, source_config_from_dict
from edge_daemon.sources.soapysdr import SoapySDRSource, SoapySDRSourceConfig

FAKES = Path(__file__).parent / "fakes"


@pytest.fixture
def soapy(monkeypatch):
    """The fake SoapySDR module, importable as `SoapySDR` for this test only."""
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.delitem(sys.modules, "SoapySDR", raising=False)
    import SoapySDR

    yield SoapySDR
    sys.modules.pop("SoapySDR", None)


def _open(device: str, events=None, **config):
    source = SoapySDRSource(SoapySDRSourceConfig(device=device, **config), events or NullEvents())
    source.open()
    return source


def _index_of(chunk) -> int:
    """The radio's own index of the chunk's first sample (the ramp's value)."""
    return int(chunk.samples[0].real)


def _chunks(source, n):
    out = []
    for _ in range(10 * n):
        chunk = source.read(0.1)
        if chunk is not None:
            out.append(chunk)
        if len(out) == n:
            return out
    raise AssertionError(f"only {len(out)} of {n} chunks")


def test_setup_follows_the_config(soapy):
    source = _open("driver=fake", channel=1, sample_rate_hz=10e6, center_freq_hz=5.18e9,
                   gain_db=32.5, bandwidth_hz=20e6, antenna="RX2")  # fmt: skip
    device = soapy.DEVICES[-1]
    rx = soapy.SOAPY_SDR_RX
    assert device.calls[:7] == [
        ("setSampleRate", rx, 1, 10e6),
        ("setFrequency", rx, 1, 5.18e9),
        ("setGainMode", rx, 1, False),
        ("setGain", rx, 1, 32.5),
        ("setBandwidth", rx, 1, 20e6),
        ("setAntenna", rx, 1, "RX2"),
        ("setupStream", rx, soapy.SOAPY_SDR_CF32, [1]),
    ]
    assert source.sample_rate_hz == 10e6
    source.close()
    assert device.calls[-2:] == [("deactivateStream",), ("closeStream",)] and device.closed
    source.close()  # idempotent


def test_error_codes_are_the_bindings(soapy):
    from edge_daemon.sources import soapysdr

    assert (soapysdr.TIMEOUT, soapysdr.CORRUPTION, soapysdr.OVERFLOW, soapysdr.TIME_ERROR) == (
        soapy.SOAPY_SDR_TIMEOUT, soapy.SOAPY_SDR_CORRUPTION, soapy.SOAPY_SDR_OVERFLOW,
        soapy.SOAPY_SDR_TIME_ERROR,
    )  # fmt: skip
    assert soapysdr.HAS_TIME == soapy.SOAPY_SDR_HAS_TIME


def test_agc_when_no_gain_is_set(soapy):
    _open("driver=fake")
    assert ("setGainMode", soapy.SOAPY_SDR_RX, 0, True) in soapy.DEVICES[-1].calls


def test_samples_arrive_contiguous_with_partial_reads(soapy):
    source = _open("driver=fake,mtu=1000", chunk_samples=4096)
    chunks = _chunks(source, 5)
    assert [c.samples.size for c in chunks] == [1000] * 5
    assert [c.first_sample_index for c in chunks] == [0, 1000, 2000, 3000, 4000]
    k = np.arange(5000, dtype=np.float32)
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), k - 1j * k)
    assert not any(c.discontinuity for c in chunks)


def test_overflow_is_counted_and_flags_the_next_chunk(soapy):
    events = NullEvents()
    source = _open("driver=fake,mtu=500,overflow_at=3,lost=700", events)
    chunks = _chunks(source, 4)
    assert events.overflows == 1
    assert [c.discontinuity for c in chunks] == [False, False, True, False]
    # no hardware time: the index counts samples received; the radio's own index skipped 700
    assert [c.first_sample_index for c in chunks] == [0, 500, 1000, 1500]
    assert [_index_of(c) for c in chunks] == [0, 500, 1700, 2200]


def test_hardware_time_reveals_the_samples_lost_in_an_overflow(soapy):
    events = NullEvents()
    source = _open("driver=fake,mtu=500,overflow_at=2,lost=700,time=1", events,
                   sample_rate_hz=1e6)  # fmt: skip
    chunks = _chunks(source, 3)
    assert [c.first_sample_index for c in chunks] == [_index_of(c) for c in chunks]
    assert [c.first_sample_index for c in chunks] == [0, 1200, 1700]
    assert [c.discontinuity for c in chunks] == [False, True, False]
    assert events.overflows == 1


def test_timeouts_loop_and_a_short_read_returns_none(soapy):
    source = _open("driver=fake,timeout_at=1:2:3")
    (chunk,) = _chunks(source, 1)
    assert chunk.first_sample_index == 0 and not chunk.discontinuity
    assert soapy.DEVICES[-1].reads == 4


def test_corruption_is_counted_as_a_drop(soapy):
    events = NullEvents()
    source = _open("driver=fake,corrupt_at=2", events)
    chunks = _chunks(source, 2)
    assert events.drops == {"corruption": 0}
    assert [c.discontinuity for c in chunks] == [False, True]


def test_stream_error_raises_source_error(soapy):
    source = _open("driver=fake,fail_at=2")
    _chunks(source, 1)
    with pytest.raises(SourceError, match="STREAM_ERROR"):
        source.read(0.1)


def test_reopen_continues_the_index_and_flags_the_gap(soapy):
    source = _open("driver=fake,mtu=100")
    (first,) = _chunks(source, 1)
    source.close()
    source.open()
    (second,) = _chunks(source, 1)
    assert (first.first_sample_index, second.first_sample_index) == (0, 100)
    assert not first.discontinuity and second.discontinuity


def test_no_such_device(soapy):
    with pytest.raises(SourceError, match="no device for args 'driver=hackrf'"):
        _open("driver=hackrf")


def test_missing_binding_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "SoapySDR", None)  # import raises ImportError
    source = SoapySDRSource(SoapySDRSourceConfig(), NullEvents())
    with pytest.raises(SourceError, match=r"source 'soapysdr' unavailable: .*python3-soapysdr"):
        source.open()


def test_config_problems_name_their_keys():
    with pytest.raises(SourceConfigError) as err:
        source_config_from_dict({"type": "soapysdr", "channel": -1, "sample_rate_hz": 0,
                                 "bandwidth_hz": -5.0, "gain_db": "high"})  # fmt: skip
    text = str(err.value)
    assert "source.gain_db: want a number" in text
    config = source_config_from_dict({"type": "soapysdr", "gain_db": 20, "device": "driver=x"})
    assert isinstance(config, SoapySDRSourceConfig) and config.gain_db == 20
    with pytest.raises(SourceConfigError) as err:
        source_config_from_dict({"type": "soapysdr", "channel": -1, "sample_rate_hz": 0,
                                 "bandwidth_hz": -5.0})  # fmt: skip
    text = str(err.value)
    for key in ("channel", "sample_rate_hz", "bandwidth_hz"):
        assert f"source.{key}: want" in text

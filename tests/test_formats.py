import numpy as np
import pytest

from edge_core.errors import IQFormatError
from edge_core.iq import formats


def _random_iq(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-0.9, 0.9, n) + 1j * rng.uniform(-0.9, 0.9, n)).astype(np.complex64)


@pytest.mark.parametrize(
    ("fmt", "size", "tolerance"),
    [
        ("cf32_le", 8, 0.0),
        ("cf32_be", 8, 0.0),
        ("ci16_le", 4, 0.5 / 32768),
        ("ci16_be", 4, 0.5 / 32768),
        ("ci8", 2, 0.5 / 128),
        ("cu8", 2, 0.5 / 127.5),
    ],
)
def test_round_trip_within_half_a_code(fmt, size, tolerance):
    x = _random_iq(1000)
    raw = formats.encode(x, fmt)
    assert len(raw) == 1000 * size == 1000 * formats.bytes_per_sample(fmt)
    y = formats.decode(raw, fmt)
    assert y.dtype == np.complex64 and y.shape == (1000,)
    assert np.max(np.abs(y.real - x.real)) <= tolerance + 1e-7
    assert np.max(np.abs(y.imag - x.imag)) <= tolerance + 1e-7


def test_cu8_is_offset_by_127_5():
    y = formats.decode(bytes([127, 128, 0, 255]), "cu8")
    np.testing.assert_allclose(y, [-0.5 / 127.5 + 0.5j / 127.5, -1.0 + 1.0j], rtol=1e-6)


def test_ci16_full_scale():
    raw = np.array([-32768, 32767, 0, -16384], dtype="<i2").tobytes()
    y = formats.decode(raw, "ci16_le")
    np.testing.assert_allclose(y, [-1.0 + (32767 / 32768) * 1j, -0.5j], rtol=1e-7)
    clipped = np.frombuffer(formats.encode(np.array([1.5 - 1.5j], np.complex64), "ci16_le"), "<i2")
    assert clipped.tolist() == [32767, -32768]


def test_ci8_and_big_endian_layouts():
    assert formats.decode(bytes([0x80, 0x7F]), "ci8")[0] == np.complex64(-1.0 + 127 / 128 * 1j)
    big = np.array([1.0, -2.0], dtype=">f4").tobytes()
    assert formats.decode(big, "cf32_be")[0] == np.complex64(1.0 - 2.0j)
    assert formats.decode(np.array([256, -512], ">i2").tobytes(), "ci16_be")[0] == np.complex64(
        256 / 32768 - 512j / 32768
    )


def test_decode_accepts_memoryview_and_native_cf32_is_zero_copy():
    x = _random_iq(16)
    buf = bytearray(x.tobytes())
    y = formats.decode(memoryview(buf), "cf32_le")
    np.testing.assert_array_equal(y, x)
    buf[0:4] = np.float32(7.0).tobytes()
    assert y[0].real == 7.0  # a view of the buffer, not a copy


@pytest.mark.parametrize(("fmt", "nbytes", "size"), [("ci16_le", 7, 4), ("cf32_le", 12, 8),
                                                      ("cu8", 3, 2)])  # fmt: skip
def test_partial_sample_names_format_and_counts(fmt, nbytes, size):
    with pytest.raises(IQFormatError) as err:
        formats.decode(b"\x00" * nbytes, fmt)
    message = str(err.value)
    assert fmt in message and f"{nbytes} bytes" in message and f"{size}-byte" in message


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(IQFormatError, match=r"cf32_le.*ci16_le.*cu8"):
        formats.decode(b"", "cs8")
    with pytest.raises(IQFormatError, match="unknown sample format 'cs8'"):
        formats.bytes_per_sample("cs8")


def test_sanitize_zeroes_and_counts_nonfinite_samples():
    x = _random_iq(6)
    x[1] = complex(np.nan, 0.2)
    x[4] = complex(0.1, np.inf)
    clean, n_bad = formats.sanitize(x)
    assert n_bad == 2
    assert clean[1] == 0 and clean[4] == 0
    np.testing.assert_array_equal(clean[[0, 2, 3, 5]], x[[0, 2, 3, 5]])
    assert np.isnan(x[1].real)  # the input is left alone

    finite = _random_iq(6)
    same, n_bad = formats.sanitize(finite)
    assert n_bad == 0 and same is finite


def test_nan_read_from_float_bytes_is_caught():
    raw = np.array([0.5, np.nan, -np.inf, 0.25], dtype="<f4").tobytes()
    _, n_bad = formats.sanitize(formats.decode(raw, "cf32_le"))
    assert n_bad == 2


@pytest.mark.parametrize(
    ("datatype", "fmt"),
    [("cf32_le", "cf32_le"), ("ci16_le", "ci16_le"), ("ci8", "ci8"), ("cu8", "cu8"),
     ("CI16_BE", "ci16_be"), ("ci8_le", "ci8"), ("cu8_be", "cu8")],
)  # fmt: skip
def test_sigmf_datatypes(datatype, fmt):
    assert formats.from_sigmf_datatype(datatype) == fmt


@pytest.mark.parametrize("datatype", ["rf32_le", "cf64_le", "ci32_le", "cu16_le", "ci16"])
def test_unsupported_sigmf_datatype_lists_supported(datatype):
    with pytest.raises(IQFormatError) as err:
        formats.from_sigmf_datatype(datatype)
    assert datatype in str(err.value)
    for name in ("cf32_le", "ci16_le", "ci8", "cu8"):
        assert name in str(err.value)

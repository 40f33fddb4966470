"""The one table of IQ sample formats, and byte <-> complex64 conversion through it.

Like sigmf's `dtype_info`: a format name (the SigMF datatype it is, e.g. "ci16_le") maps to the
numpy dtype of one component (I or Q) and the affine map to complex64 full scale +-1:
`component = (raw - offset) * scale`. Bytes are read with `np.frombuffer`, never sample by sample.

Full scale: float formats are taken as they are; signed integers divide by 2**(bits-1), so the
most negative code is exactly -1.0; unsigned 8-bit (RTL-SDR) is offset by 127.5, the middle of
0..255, and divided by 127.5, so 0 -> -1.0, 255 -> +1.0 and 127/128 sit symmetric around zero.
(sigmf's own autoscale uses offset 128 and scale 1/128 for cu8; we follow the RTL-SDR convention.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_core.errors import IQFormatError


@dataclass(frozen=True)
class SampleFormat:
    """One interleaved complex sample format."""

    name: str
    component_dtype: np.dtype
    offset: float  # subtracted from each raw component ...
    scale: float  # ... before it is multiplied by this

    @property
    def bytes_per_sample(self) -> int:
        """Bytes of one complex sample (I and Q)."""
        return 2 * self.component_dtype.itemsize

    @property
    def is_float(self) -> bool:
        return self.component_dtype.kind == "f"


def _fmt(name: str, dtype: str, offset: float, scale: float) -> SampleFormat:
    return SampleFormat(name, np.dtype(dtype), offset, scale)


FORMATS: dict[str, SampleFormat] = {
    f.name: f
    for f in (
        _fmt("cf32_le", "<f4", 0.0, 1.0),
        _fmt("cf32_be", ">f4", 0.0, 1.0),
        _fmt("ci16_le", "<i2", 0.0, 1.0 / 32768.0),
        _fmt("ci16_be", ">i2", 0.0, 1.0 / 32768.0),
        _fmt("ci8", "i1", 0.0, 1.0 / 128.0),
        _fmt("cu8", "u1", 127.5, 1.0 / 127.5),
    )
}
"""Supported formats by name; every name is also the SigMF `core:datatype` it reads."""


def get_format(fmt: str) -> SampleFormat:
    """The table entry of `fmt`; IQFormatError listing the supported names if unknown."""
    try:
        return FORMATS[fmt]
    except KeyError:
        raise IQFormatError(
            f"unknown sample format {fmt!r}; supported: {', '.join(FORMATS)}"
        ) from None


def bytes_per_sample(fmt: str) -> int:
    """Bytes of one complex sample in format `fmt`."""
    return get_format(fmt).bytes_per_sample


def decode(buf: bytes | bytearray | memoryview | np.ndarray, fmt: str) -> np.ndarray:
    """Interleaved IQ bytes in format `fmt` -> complex64 samples at full scale +-1.

    For native-endian cf32 the result is a zero-copy (possibly read-only) view of `buf`.
    IQFormatError if the format is unknown or the byte count is not a whole number of samples.
    """
    spec = get_format(fmt)
    nbytes = buf.nbytes if isinstance(buf, (memoryview, np.ndarray)) else len(buf)
    if nbytes % spec.bytes_per_sample:
        raise IQFormatError(
            f"{fmt}: {nbytes} bytes is not a whole number of {spec.bytes_per_sample}-byte "
            f"samples ({nbytes % spec.bytes_per_sample} bytes left over)"
        )
    raw = np.frombuffer(buf, dtype=spec.component_dtype)  # (2 * n,) I, Q, I, Q, ...
    if spec.is_float:
        if spec.component_dtype.isnative:
            return raw.view(np.complex64)
        return raw.astype(np.float32).view(np.complex64)
    out = np.empty(raw.size // 2, dtype=np.complex64)
    parts = out.view(np.float32)  # (2 * n,)
    if spec.offset:
        np.subtract(raw, np.float32(spec.offset), out=parts, dtype=np.float32)
    else:
        parts[:] = raw
    parts *= np.float32(spec.scale)
    return out


def encode(samples: np.ndarray, fmt: str) -> bytes:
    """complex samples at full scale +-1 -> interleaved bytes in format `fmt`.

    Integer formats round to the nearest code and clip to the code range, so a value of +1.0
    becomes the largest code (e.g. 32767) rather than wrapping.
    """
    spec = get_format(fmt)
    x = np.ascontiguousarray(samples, dtype=np.complex64).reshape(-1)
    parts = x.view(np.float32)  # (2 * n,)
    if spec.is_float:
        return parts.astype(spec.component_dtype, copy=False).tobytes()
    info = np.iinfo(spec.component_dtype)
    codes = parts / np.float32(spec.scale) + np.float32(spec.offset)
    np.rint(codes, out=codes)
    np.clip(codes, info.min, info.max, out=codes)
    return codes.astype(spec.component_dtype).tobytes()


def count_nonfinite(samples: np.ndarray) -> int:
    """How many samples have a NaN or Inf in I or Q (0 for integer formats' output)."""
    finite = np.isfinite(samples)  # complex: False if either part is NaN/Inf
    return int(finite.size - np.count_nonzero(finite))


def sanitize(samples: np.ndarray) -> tuple[np.ndarray, int]:
    """Zero the non-finite (NaN/Inf in I or Q) samples; return (samples, how many there were).

    Returns `samples` itself when all are finite, otherwise a copy; callers count `n_bad` as
    dropped samples. Only float formats can carry non-finite values.
    """
    finite = np.isfinite(samples)  # complex: False if either part is NaN/Inf
    n_bad = int(finite.size - np.count_nonzero(finite))
    if n_bad == 0:
        return samples, 0
    clean = np.where(finite, samples, np.zeros((), dtype=samples.dtype))
    return clean, n_bad


def from_sigmf_datatype(datatype: str) -> str:
    """The format name of a SigMF `core:datatype` (e.g. "cf32_le" -> "cf32_le").

    8-bit types may carry a meaningless endianness suffix ("ci8_le"); it is dropped.
    IQFormatError listing the supported datatypes for anything else (real, 64-bit, ...).
    """
    name = str(datatype).strip().lower()
    if name in FORMATS:
        return name
    base, _, suffix = name.partition("_")
    if base in ("ci8", "cu8") and suffix in ("le", "be"):
        return base
    raise IQFormatError(f"unsupported SigMF datatype {datatype!r}; supported: {', '.join(FORMATS)}")

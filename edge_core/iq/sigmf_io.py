"""SigMF recordings (`X.sigmf-meta` + `X.sigmf-data`): a streaming writer and a chunked reader.

The metadata is built, validated and written by the `sigmf` package; samples go through the one
format table in `edge_core.iq.formats`, so the writer never holds more than one chunk and the
reader never more than one `iter_chunks` chunk. Problems with a file are reported as
SourceError (cannot open) or IQFormatError (malformed), always naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import jsonschema
import numpy as np
import sigmf
from sigmf.error import SigMFError
from sigmf.sigmffile import get_dataset_filename_from_metadata, get_sigmf_filenames

from edge_core import __version__
from edge_core.errors import IQFormatError, SourceError
from edge_core.iq import formats
from edge_core.typed_config import load_nested

log = logging.getLogger(__name__)

_CORE_OWNED = ("core:datatype", "core:sample_rate", "core:version", "core:sha512")


def _base_path(path: str | Path) -> Path:
    """`X`, `X.sigmf-meta` or `X.sigmf-data` -> `X`."""
    return Path(get_sigmf_filenames(path)["base_fn"])


def _namespaces(items: list[dict[str, Any]]) -> set[str]:
    return {key.split(":", 1)[0] for item in items for key in item if ":" in key} - {"core"}


class SigMFWriter:
    """Stream samples to `<base>.sigmf-data`; on close write `<base>.sigmf-meta` via sigmf.

    Use as a context manager. Samples are encoded chunk by chunk (`write`) and hashed on the way
    (`core:sha512`), so hours of IQ never need to fit in memory. Annotations are collected and
    written sorted by start. Extension namespaces used in keys (e.g. "edge_tc:phy") are declared
    in `core:extensions`. Existing files of the same base name are overwritten. The metadata is
    also written when the `with` body raises, so an interrupted recording stays readable.
    """

    def __init__(
        self,
        path_base: str | Path,
        sample_rate_hz: float,
        datatype: str = "cf32_le",
        description: str = "",
        extra_global: dict[str, Any] | None = None,
    ) -> None:
        if not sample_rate_hz > 0:
            raise ValueError(f"sample_rate_hz must be > 0, got {sample_rate_hz}")
        self.fmt = formats.from_sigmf_datatype(datatype)
        extra = dict(extra_global or {})
        owned = sorted(k for k in extra if k in _CORE_OWNED)
        if owned:
            raise ValueError(f"extra_global may not set {owned}: the writer owns them")
        self.base = _base_path(path_base)
        names = get_sigmf_filenames(self.base)
        self.data_path = Path(names["data_fn"])
        self.meta_path = Path(names["meta_fn"])
        self.sample_rate_hz = float(sample_rate_hz)
        self.description = description
        self.extra_global = extra
        self.num_samples = 0
        self._annotations: list[dict[str, Any]] = []
        self._hash = hashlib.sha512()
        self.data_path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO | None = open(self.data_path, "wb")  # closed in close()

    def __enter__(self) -> SigMFWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._file is None

    def write(self, samples: np.ndarray) -> None:
        """Append complex samples (any complex dtype, 1-D) in the writer's datatype."""
        if self._file is None:
            raise ValueError(f"{self.data_path}: write() after close()")
        x = np.asarray(samples)
        if x.ndim != 1 or not np.iscomplexobj(x):
            raise ValueError(f"write() needs a 1-D complex array, got {x.dtype} {x.shape}")
        payload = formats.encode(x, self.fmt)
        self._file.write(payload)
        self._hash.update(payload)
        self.num_samples += x.size

    def annotate(self, sample_start: int, sample_count: int, metadata: dict[str, Any]) -> None:
        """Annotate `sample_count` samples from absolute index `sample_start`."""
        if sample_start < 0 or sample_count < 0:
            raise ValueError(
                f"annotation needs sample_start >= 0 and sample_count >= 0, "
                f"got {sample_start}, {sample_count}"
            )
        # numpy scalars (np.int64 lengths, np.float32 SNRs) are not JSON: store plain values
        entry = {k: v.item() if isinstance(v, np.generic) else v for k, v in metadata.items()}
        entry["core:sample_start"] = int(sample_start)
        entry["core:sample_count"] = int(sample_count)
        self._annotations.append(entry)

    def metadata(self) -> dict[str, Any]:
        """The metadata document as it will be written (before sigmf normalises it)."""
        global_info: dict[str, Any] = {
            "core:datatype": self.fmt,
            "core:sample_rate": self.sample_rate_hz,
            "core:version": sigmf.__specification__,
            "core:recorder": f"edge-tc {__version__}",
            "core:sha512": self._hash.hexdigest(),
        }
        if self.description:
            global_info["core:description"] = self.description
        global_info.update(self.extra_global)
        annotations = sorted(self._annotations, key=lambda a: a["core:sample_start"])
        declared = list(global_info.get("core:extensions", []))
        known = {ext.get("name") for ext in declared if isinstance(ext, dict)}
        for name in sorted(_namespaces([global_info, *annotations]) - known):
            declared.append({"name": name, "version": __version__, "optional": True})
        if declared:
            global_info["core:extensions"] = declared
        return {
            "global": global_info,
            "captures": [{"core:sample_start": 0}],
            "annotations": annotations,
        }

    def close(self) -> None:
        """Close the data file and write the validated metadata file. Idempotent."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        meta = sigmf.SigMFFile(metadata=self.metadata())
        try:
            meta.validate()
        except (jsonschema.ValidationError, SigMFError) as exc:
            raise IQFormatError(
                f"{self.meta_path}: metadata does not validate: {_first_line(exc)}"
            ) from exc
        meta.tofile(self.base, skip_validate=True, overwrite=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class Recording:
    """A SigMF recording opened for chunked reading (one channel, one format)."""

    meta_path: Path
    data_path: Path
    sample_rate_hz: float
    datatype: str
    fmt: str
    num_samples: int
    annotations: list[dict[str, Any]]
    global_info: dict[str, Any]
    captures: list[dict[str, Any]]
    header_bytes: int = 0
    trailing_bytes: int = 0
    """Bytes after the last whole sample (non-zero only when opened with strict=False)."""
    _bytes_per_sample: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        self._bytes_per_sample = formats.bytes_per_sample(self.fmt)

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate_hz

    def read(self, start: int = 0, count: int | None = None) -> np.ndarray:
        """Samples [start, start + count) as complex64 (count None: to the end)."""
        if start < 0 or start > self.num_samples:
            raise ValueError(f"start {start} outside 0..{self.num_samples}")
        stop = self.num_samples if count is None else min(self.num_samples, start + count)
        with open(self.data_path, "rb") as f:
            return self._read_at(f, start, max(0, stop - start))

    def _read_at(self, f: BinaryIO, start: int, count: int) -> np.ndarray:
        f.seek(self.header_bytes + start * self._bytes_per_sample)
        want = count * self._bytes_per_sample
        buf = f.read(want)
        if len(buf) != want:
            raise SourceError(
                f"{self.data_path}: short read at sample {start}: got {len(buf)} of {want} "
                "bytes (file changed while reading?)"
            )
        return formats.decode(buf, self.fmt)

    def iter_chunks(
        self, chunk_samples: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first sample index, complex64 chunk) over [start, stop), chunk by chunk."""
        if chunk_samples <= 0:
            raise ValueError(f"chunk_samples must be > 0, got {chunk_samples}")
        stop = self.num_samples if stop is None else min(stop, self.num_samples)
        with open(self.data_path, "rb") as f:
            for first in range(start, stop, chunk_samples):
                yield first, self._read_at(f, first, min(chunk_samples, stop - first))


def _load_json(meta_path: Path) -> dict[str, Any]:
    try:
        with open(meta_path, encoding="utf-8") as f:
            doc = load_nested(lambda: json.load(f), str(meta_path))
    except FileNotFoundError:
        raise SourceError(f"{meta_path}: SigMF metadata file not found") from None
    except json.JSONDecodeError as exc:
        raise IQFormatError(
            f"{meta_path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise IQFormatError(f"{meta_path}: not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise SourceError(f"{meta_path}: cannot read: {exc}") from exc
    except ValueError as exc:  # nested too deeply
        raise IQFormatError(str(exc)) from None
    if not isinstance(doc, dict):
        raise IQFormatError(f"{meta_path}: top level is {type(doc).__name__}, not a JSON object")
    return doc


def open_recording(path: str | Path, strict: bool = True) -> Recording:
    """Open `X.sigmf-meta`, `X.sigmf-data` or base name `X` for chunked reading.

    The metadata is parsed and schema-validated by sigmf. Raises SourceError for a missing
    file, IQFormatError for invalid JSON or schema, an unsupported datatype, a missing or bad
    sample rate, more than one channel, or a data file that does not hold a whole number of
    samples or ends before the last annotation. With `strict=False` the last two only log a
    warning: the whole samples are readable and `trailing_bytes` says how many bytes are left.
    """
    names = get_sigmf_filenames(path)
    meta_path = Path(names["meta_fn"])
    doc = _load_json(meta_path)
    for key, kind, name in (("global", dict, "object"), ("captures", list, "array"),
                            ("annotations", list, "array")):  # fmt: skip
        if not isinstance(doc.get(key), kind):
            raise IQFormatError(
                f"{meta_path}: not valid SigMF metadata: '{key}' must be a JSON {name}"
            )
    try:
        meta = sigmf.SigMFFile(metadata=doc)
        meta.validate()
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "document"
        raise IQFormatError(
            f"{meta_path}: not valid SigMF metadata at {where}: {exc.message}"
        ) from exc
    except SigMFError as exc:
        raise IQFormatError(f"{meta_path}: not valid SigMF metadata: {exc}") from exc
    global_info: dict[str, Any] = dict(meta.get_global_info())
    captures: list[dict[str, Any]] = list(meta.get_captures())
    annotations: list[dict[str, Any]] = list(meta.get_annotations())

    datatype = global_info["core:datatype"]  # required by the schema
    try:
        fmt = formats.from_sigmf_datatype(datatype)
    except IQFormatError as exc:
        raise IQFormatError(f"{meta_path}: {exc}") from None
    if global_info.get("core:num_channels", 1) != 1:
        raise IQFormatError(
            f"{meta_path}: core:num_channels is {global_info['core:num_channels']}; only 1 "
            "channel is supported"
        )
    rate = global_info.get("core:sample_rate")
    if rate is None:
        raise IQFormatError(f"{meta_path}: no core:sample_rate in the global object")
    if not isinstance(rate, (int, float)) or not rate > 0:
        raise IQFormatError(f"{meta_path}: core:sample_rate must be > 0, got {rate!r}")
    header_bytes = sum(int(c.get("core:header_bytes", 0)) for c in captures)
    if len([c for c in captures if c.get("core:header_bytes")]) > 1:
        raise IQFormatError(f"{meta_path}: core:header_bytes in several captures is not supported")

    try:
        data_path = get_dataset_filename_from_metadata(meta_path, doc)
    except SigMFError as exc:
        raise SourceError(f"{meta_path}: {exc}") from exc
    if data_path is None:
        raise SourceError(f"{names['data_fn']}: SigMF data file not found (for {meta_path})")
    data_path = Path(data_path)

    size = data_path.stat().st_size
    payload = size - header_bytes - int(global_info.get("core:trailing_bytes", 0))
    if payload < 0:
        raise IQFormatError(
            f"{data_path}: {size} bytes, fewer than the {size - payload} header/trailing bytes "
            f"its metadata declares"
        )
    sample_size = formats.bytes_per_sample(fmt)
    num_samples, trailing = divmod(payload, sample_size)
    problems = []
    if trailing:
        problems.append(
            f"{payload} bytes of {datatype} is not a whole number of {sample_size}-byte samples: "
            f"{trailing} trailing bytes after {num_samples} samples (truncated file?)"
        )
    annotated_end = max(
        (a["core:sample_start"] + a.get("core:sample_count", 0) for a in annotations), default=0
    )
    if annotated_end > num_samples:
        problems.append(
            f"holds {num_samples} samples but annotations reach sample {annotated_end} "
            "(truncated file?)"
        )
    if problems:
        message = f"{data_path}: " + "; ".join(problems)
        if strict:
            raise IQFormatError(message + "; open with strict=False to read the samples it holds")
        log.warning("%s", message)
    return Recording(
        meta_path=meta_path,
        data_path=data_path,
        sample_rate_hz=float(rate),
        datatype=str(datatype),
        fmt=fmt,
        num_samples=num_samples,
        annotations=annotations,
        global_info=global_info,
        captures=captures,
        header_bytes=header_bytes,
        trailing_bytes=trailing,
    )

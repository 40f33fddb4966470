#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of the parsers that read input from outside
(issue 14): the ZeroMQ message parser, gr-zeromq's tag header, SigMF metadata and the config.

An input's first byte chooses the target (`TARGETS`, modulo their number), the rest is the
target's input. A target may refuse its input only with its own clear error (TagHeaderError,
IQFormatError/SourceError, ConfigProblems; a ZeroMQ message is dropped and counted); anything
else (another exception, a broken accounting invariant) is a crash that libFuzzer reports
with the input that caused it.

    # the kept corpus is tests/fuzz_corpus/<target>/, replayed by tests/test_fuzz_corpus.py
    python tools/fuzz_inputs.py -max_total_time=600 out/fuzz/new tests/fuzz_corpus/*/
    # then keep a minimal set covering the same code, sorted by target
    python tools/fuzz_inputs.py -merge=1 out/fuzz/merged tests/fuzz_corpus/*/ out/fuzz/new
    python tools/fuzz_inputs.py --keep out/fuzz/merged tests/fuzz_corpus
    # replay files without atheris (what the test does), or write the seed inputs
    python tools/fuzz_inputs.py --replay tests/fuzz_corpus/*/
    python tools/fuzz_inputs.py --seed tests/fuzz_corpus

atheris 2.3.0 has wheels for x86-64 CPython up to 3.11 (the dev extra installs it there).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))
FUZZING = __name__ == "__main__" and sys.argv[1:2] not in (["--replay"], ["--seed"], ["--keep"])
"""Run as the fuzzer: our packages are imported under atheris' instrumentation (coverage
feedback). Not `atheris.instrument_all()`: under CPython 3.11 it breaks tomllib."""

try:
    import atheris
except ImportError:
    atheris = None

with (
    atheris.instrument_imports(include=["edge_core", "edge_daemon", "engines"])
    if FUZZING and atheris is not None
    else nullcontext()
):
    from edge_core.errors import IQFormatError, SourceError
    from edge_core.iq import formats
    from edge_core.iq.sigmf_io import open_recording
    from edge_core.typed_config import ConfigProblems
    from edge_daemon.config import DaemonConfig, read_toml
    from edge_daemon.sources import zmq as zmq_source

_SCRATCH: Path | None = None


def _scratch() -> Path:
    """One temporary folder per process for the files the SigMF and config targets read."""
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = Path(tempfile.mkdtemp(prefix="edge-tc-fuzz-"))
    return _SCRATCH


class _Events:
    """SourceEvents that records drops and overflows."""

    def __init__(self) -> None:
        self.drops: list[tuple[str, int, int, int]] = []
        self.overflows = 0

    def dropped(self, reason: str, samples: int, messages: int = 0, nbytes: int = 0) -> None:
        self.drops.append((reason, samples, messages, nbytes))

    def overflow(self) -> None:
        self.overflows += 1

    def reconnected(self) -> None:
        pass


def zmq_message(data: bytes) -> None:
    """Byte 0: the config (sample format, pass_tags, frame count); then frames, each but the
    last preceded by its length byte. Every sample is delivered or counted with its reason."""
    if not data:
        return
    names = [*formats.FORMATS, *zmq_source.FORMAT_ALIASES]
    control, rest = data[0], data[1:]
    fmt = names[control % len(names)]
    pass_tags = bool(control & 0x80)
    frames: list[bytes] = []
    for _ in range((control >> 5) & 0x3):
        if not rest:
            break
        size, rest = rest[0], rest[1:]
        frames.append(rest[:size])
        rest = rest[size:]
    frames.append(rest)
    config = zmq_source.ZmqSourceConfig(sample_format=fmt, pass_tags=pass_tags,
                                        max_message_bytes=256)  # fmt: skip
    events = _Events()
    source = zmq_source.ZmqSource(config, events)
    sample_bytes = formats.bytes_per_sample(config.format_name)
    chunk = source._chunk([zmq.Frame(f) for f in frames], 0.0)
    message_drops = [d for d in events.drops if d[2]]
    assert len(message_drops) <= 1, events.drops
    for _reason, samples, _messages, nbytes in message_drops:
        assert samples == nbytes // sample_bytes, message_drops
    delivered = 0 if chunk is None else chunk.samples.size
    counted = sum(d[1] for d in message_drops)
    if chunk is not None:
        assert not message_drops and chunk.samples.size * sample_bytes <= len(frames[-1])
    if not events.overflows:
        assert source._next_index == delivered + counted, (source._next_index, delivered, counted)


def tag_header(data: bytes) -> None:
    """Any bytes: (offset, length) inside the buffer, or a TagHeaderError."""
    try:
        offset, length = zmq_source.parse_tag_header(data)
    except zmq_source.TagHeaderError:
        return
    assert zmq_source.TAG_HEADER.size <= length <= len(data) and 0 <= offset < 2**64


def sigmf_meta(data: bytes) -> None:
    """The bytes as a .sigmf-meta file beside 40 bytes of data: a recording or a clear error."""
    base = _scratch() / "rec"
    Path(f"{base}.sigmf-meta").write_bytes(data)
    Path(f"{base}.sigmf-data").write_bytes(bytes(range(40)))
    try:
        open_recording(base)
    except (IQFormatError, SourceError) as exc:
        assert str(exc).startswith(str(base)), exc


def config_toml(data: bytes) -> None:
    """The bytes as a config file: a DaemonConfig or ConfigProblems."""
    path = _scratch() / "edge-tc.toml"
    path.write_bytes(data)
    try:
        DaemonConfig.from_dict(read_toml(path), "")
    except ConfigProblems as exc:
        assert exc.problems and all(p for p in exc.problems), exc


TARGETS: dict[str, Callable[[bytes], None]] = {
    "zmq_message": zmq_message,
    "tag_header": tag_header,
    "sigmf_meta": sigmf_meta,
    "config_toml": config_toml,
}
"""Selector byte (modulo the number of targets) -> target, in this order."""


def target_of(data: bytes) -> str:
    """The name of the target an input goes to."""
    return list(TARGETS)[data[0] % len(TARGETS)] if data else "zmq_message"


def run_one(data: bytes) -> None:
    """The fuzz target: one input through the parser its first byte chooses."""
    if not data:
        return
    TARGETS[target_of(data)](data[1:])


def seeds() -> dict[str, list[bytes]]:
    """Valid inputs of each target, for a first corpus."""
    import numpy as np

    names = list(TARGETS)
    iq = (np.arange(8, dtype=np.float32) / 8).view(np.complex64).tobytes()
    header = zmq_source.TAG_HEADER.pack(zmq_source.TAG_MAGIC, zmq_source.TAG_VERSION, 1000, 1)
    pmt_tag = zmq_source.TAG_OFFSET.pack(1000) + b"\x02\x00\x03key" + b"\x04" + bytes(8) + b"\x06"
    meta = {
        "global": {"core:datatype": "cf32_le", "core:sample_rate": 20e6, "core:version": "1.2.0"},
        "captures": [{"core:sample_start": 0}],
        "annotations": [{"core:sample_start": 1, "core:sample_count": 2, "core:label": "ack"}],
    }
    config = (ROOT / "deploy" / "edge-tc.example.toml").read_bytes()
    sel = {name: bytes([i]) for i, name in enumerate(names)}
    return {
        "zmq_message": [
            sel["zmq_message"] + b"\x00" + iq,
            sel["zmq_message"] + b"\xa0\x02iq" + header + pmt_tag + iq,
        ],
        "tag_header": [sel["tag_header"] + header + pmt_tag],
        "sigmf_meta": [sel["sigmf_meta"] + json.dumps(meta).encode()],
        "config_toml": [
            sel["config_toml"] + config,
            sel["config_toml"] + b'[source]\ntype = "zmq"\n',
        ],
    }


def _files(paths: Iterable[str | Path]) -> list[Path]:
    """The files given and the files under the folders given."""
    found: list[Path] = []
    for path in map(Path, paths):
        found += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sorted(found)


def keep(found: Path, corpus: Path) -> dict[str, int]:
    """Replace `corpus`/<target>/ with the inputs in `found`, sorted by target, named by hash."""
    sorted_inputs: dict[str, list[bytes]] = {name: [] for name in TARGETS}
    for path in _files([found]):
        data = path.read_bytes()
        if data:
            sorted_inputs[target_of(data)].append(data)
    for name, inputs in sorted_inputs.items():
        folder = corpus / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for data in inputs:
            (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return {name: len(inputs) for name, inputs in sorted_inputs.items()}


def main(argv: list[str]) -> int:
    if argv[1:2] == ["--replay"]:
        files = _files(argv[2:])
        for path in files:
            run_one(path.read_bytes())
        print(f"{len(files)} inputs replayed, none failed")
        return 0
    if argv[1:2] == ["--seed"] and len(argv) == 3:
        for name, inputs in seeds().items():
            folder = Path(argv[2]) / name
            folder.mkdir(parents=True, exist_ok=True)
            for data in inputs:
                (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
        return 0
    if argv[1:2] == ["--keep"] and len(argv) == 4:
        print(json.dumps(keep(Path(argv[2]), Path(argv[3]))))
        return 0
    if atheris is None:
        print("fuzz_inputs: atheris is not installed; pip install 'atheris==2.3.0' (x86-64, "
              "CPython <= 3.11), or use --replay", file=sys.stderr)  # fmt: skip
        return 2
    atheris.Setup(argv, run_one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

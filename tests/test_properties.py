"""Property-based tests (hypothesis) of every parser that reads input from outside (issue 14):

* the ZeroMQ message parser (`ZmqSource._chunk`, what each received message goes through): any
  frames in any sample format give samples or a drop counted under its reason, and the sample
  index moves by exactly what was delivered plus what was counted;
* gr-zeromq's tag header (`parse_tag_header`): any bytes give (offset, length) inside the buffer
  or a TagHeaderError; a well-formed header of any PMTs parses to its exact length, and every
  truncation of it is an error;
* SigMF metadata (`open_recording`): any JSON document, and any one-field change of a valid one,
  gives a Recording or an IQFormatError/SourceError naming the file and what is wrong;
* the config (`DaemonConfig.from_dict`, `read_toml`): any table, and any one-key change of a
  valid one, gives a DaemonConfig or ConfigProblems, each problem under its key path.

Never any other exception. Example counts are modest (the whole file runs in seconds;
EDGE_TC_HYPOTHESIS_EXAMPLES raises them); `tools/fuzz_inputs.py` runs the same parsers under a
coverage-guided fuzzer for longer.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge_core.errors import IQFormatError, SourceError
from edge_core.iq import formats
from edge_core.iq.sigmf_io import Recording, open_recording
from edge_core.typed_config import ConfigProblems
from edge_daemon.config import DaemonConfig, read_toml
from edge_daemon.sources.zmq import (
    FORMAT_ALIASES,
    MAX_KEY_BYTES,
    TAG_HEADER,
    TAG_MAGIC,
    TAG_OFFSET,
    TAG_VERSION,
    TagHeaderError,
    ZmqSource,
    ZmqSourceConfig,
    parse_tag_header,
)

EXAMPLES = int(os.environ.get("EDGE_TC_HYPOTHESIS_EXAMPLES", "150"))
"""Examples per property; a longer hunt: EDGE_TC_HYPOTHESIS_EXAMPLES=5000 pytest ..."""
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# -- the ZeroMQ message parser ---------------------------------------------------------------------
class Events:
    """SourceEvents that records every call."""

    def __init__(self) -> None:
        self.drops: list[tuple[str, int, int, int]] = []
        self.overflows = 0
        self.reconnects = 0

    def dropped(self, reason: str, samples: int, messages: int = 0, nbytes: int = 0) -> None:
        self.drops.append((reason, samples, messages, nbytes))

    def overflow(self) -> None:
        self.overflows += 1

    def reconnected(self) -> None:
        self.reconnects += 1


MESSAGE_REASONS = {"oversized", "odd_bytes", "bad_frames", "bad_tag_header"}


def tag_header(offset: int, tags: list[tuple[int, bytes, bytes, bytes]]) -> bytes:
    """gr-zeromq's pass_tags header: magic, version, offset, ntags, then per tag its offset and
    serialized key, value and srcid."""
    out = [TAG_HEADER.pack(TAG_MAGIC, TAG_VERSION, offset, len(tags))]
    for tag_offset, key, value, srcid in tags:
        out += [TAG_OFFSET.pack(tag_offset), key, value, srcid]
    return b"".join(out)


# PMTs as gnuradio's pmt_serialize writes them (big-endian)
pmt_leaf = st.one_of(
    st.sampled_from([b"\x00", b"\x01", b"\x06"]),  # true, false, nil
    st.binary(min_size=4, max_size=4).map(lambda b: b"\x03" + b),  # int32
    st.floats().map(lambda f: b"\x04" + struct.pack(">d", f)),  # double
    st.binary(min_size=16, max_size=16).map(lambda b: b"\x05" + b),  # complex
    st.binary(min_size=8, max_size=8).map(lambda b: b"\x0b" + b),  # int64
    st.binary(min_size=8, max_size=8).map(lambda b: b"\x0d" + b),  # uint64
    st.binary(max_size=40).map(lambda b: b"\x02" + struct.pack(">H", len(b)) + b),  # symbol
    st.tuples(st.integers(0, 11), st.integers(0, 6), st.integers(0, 3)).map(
        lambda t: (
            b"\x0a"
            + bytes([t[0]])
            + struct.pack(">I", t[1])
            + bytes([t[2]])
            + b"\x00" * t[2]
            + b"\x00" * (t[1] * (1, 1, 2, 2, 4, 4, 8, 8, 4, 8, 8, 16)[t[0]])
        )
    ),  # uniform vector
)


def _pmt_containers(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    items = st.lists(children, max_size=4)
    return st.one_of(
        st.tuples(children, children).map(lambda p: b"\x07" + p[0] + p[1]),  # pair
        st.tuples(children, children).map(lambda p: b"\x09" + p[0] + p[1]),  # dict
        items.map(lambda xs: b"\x08" + struct.pack(">I", len(xs)) + b"".join(xs)),  # vector
        items.map(lambda xs: b"\x0c" + struct.pack(">I", len(xs)) + b"".join(xs)),  # tuple
    )


pmt = st.recursive(pmt_leaf, _pmt_containers, max_leaves=12)
tags = st.lists(st.tuples(st.integers(0, 2**64 - 1), pmt, pmt, pmt), max_size=4)
headers = st.builds(tag_header, st.integers(0, 2**64 - 1), tags)


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_are_a_tag_header_inside_the_buffer_or_a_tag_header_error(data):
    try:
        offset, length = parse_tag_header(data)
    except TagHeaderError as exc:
        assert str(exc)
        return
    assert TAG_HEADER.size <= length <= len(data)
    assert 0 <= offset < 2**64


@SETTINGS
@given(headers, st.binary(max_size=16))
def test_a_well_formed_tag_header_parses_to_its_length_and_every_cut_of_it_fails(header, rest):
    offset = TAG_HEADER.unpack_from(header)[2]
    assert parse_tag_header(header + rest) == (offset, len(header))
    for cut in sorted({0, 1, TAG_HEADER.size - 1, TAG_HEADER.size, len(header) - 1}):
        if 0 <= cut < len(header):
            with pytest.raises(TagHeaderError):
                parse_tag_header(header[:cut])


def _payloads(pass_tags: bool) -> st.SearchStrategy[bytes]:
    raw = st.binary(max_size=120)
    if not pass_tags:
        return raw
    return st.one_of(raw, st.builds(lambda h, b: h + b, headers, raw))


@st.composite
def messages(draw: Any) -> tuple[str, bool, int, list[list[bytes]]]:
    fmt = draw(st.sampled_from([*formats.FORMATS, "cf32", "ci16"]))
    pass_tags = draw(st.booleans())
    limit = draw(st.integers(formats.bytes_per_sample(FORMAT_ALIASES.get(fmt, fmt)), 400))
    frame = st.one_of(_payloads(pass_tags), st.binary(max_size=MAX_KEY_BYTES + 2))
    shapes = st.one_of(
        st.tuples(_payloads(pass_tags)).map(list),  # [payload]
        st.tuples(st.binary(max_size=MAX_KEY_BYTES + 2), _payloads(pass_tags)).map(list),
        st.lists(frame, min_size=1, max_size=4),  # anything
    )
    return fmt, pass_tags, limit, draw(st.lists(shapes, min_size=1, max_size=6))


@SETTINGS
@given(messages())
def test_any_message_gives_samples_or_a_drop_counted_under_its_reason(case):
    fmt, pass_tags, limit, stream = case
    config = ZmqSourceConfig(sample_format=fmt, pass_tags=pass_tags, max_message_bytes=limit)
    events = Events()
    source = ZmqSource(config, events)
    sample_bytes = formats.bytes_per_sample(config.format_name)
    for frames in stream:
        index, drops, overflows = source._next_index, len(events.drops), events.overflows
        chunk = source._chunk([zmq.Frame(f) for f in frames], 0.0)
        new = events.drops[drops:]
        message_drops = [d for d in new if d[2]]
        assert len(message_drops) <= 1, new
        for reason, samples, n_messages, nbytes in message_drops:
            assert reason in MESSAGE_REASONS and n_messages == 1
            assert samples == nbytes // sample_bytes
            if reason == "bad_frames":
                assert nbytes == sum(map(len, frames))
            elif reason == "odd_bytes":  # the samples after the tag header
                header = parse_tag_header(frames[-1])[1] if pass_tags else 0
                assert nbytes == len(frames[-1]) - header and nbytes % sample_bytes
            else:
                assert nbytes == len(frames[-1])
        if chunk is None:  # a counted drop, or a message without a single byte of samples
            if not message_drops:
                header = parse_tag_header(frames[-1])[1] if pass_tags else 0
                assert len(frames) <= 2 and len(frames[-1]) == header, frames
                assert not new
        else:
            assert not message_drops
            assert chunk.first_sample_index >= index
            assert chunk.samples.dtype == np.complex64 and chunk.samples.size > 0
            assert chunk.samples.size * sample_bytes <= len(frames[-1])
            nonfinite = sum(d[1] for d in new if d[0] == "nonfinite")
            assert nonfinite == int(np.count_nonzero(~np.isfinite(chunk.samples)))
        # every sample the message carried is delivered or counted (or skipped as a gap the
        # tag header's offset revealed, counted as an overflow)
        delivered = 0 if chunk is None else chunk.samples.size
        counted = sum(d[1] for d in message_drops)
        advanced = source._next_index - index
        if events.overflows == overflows:
            assert advanced == delivered + counted, (advanced, delivered, counted)
        else:
            assert advanced > delivered + counted
    assert source.messages == len(stream)


# -- SigMF metadata ----------------------------------------------------------------------------
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
)  # fmt: skip


def _arrays_and_tables(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    tables = st.dictionaries(st.text(max_size=12), children, max_size=3)
    return st.one_of(st.lists(children, max_size=3), tables)


json_value = st.recursive(json_scalar, _arrays_and_tables, max_leaves=8)

VALID_META: dict[str, Any] = {
    "global": {"core:datatype": "cf32_le", "core:sample_rate": 20e6, "core:version": "1.2.0"},
    "captures": [{"core:sample_start": 0}],
    "annotations": [{"core:sample_start": 2, "core:sample_count": 3, "core:label": "x"}],
}
META_PATHS: list[tuple[Any, ...]] = [
    ("global",), ("captures",), ("annotations",),
    ("global", "core:datatype"), ("global", "core:sample_rate"), ("global", "core:version"),
    ("global", "core:num_channels"), ("global", "core:trailing_bytes"),
    ("captures", 0), ("captures", 0, "core:sample_start"), ("captures", 0, "core:header_bytes"),
    ("annotations", 0), ("annotations", 0, "core:sample_start"),
    ("annotations", 0, "core:sample_count"), ("annotations", 0, "core:label"),
]  # fmt: skip
DELETE = object()
SIZE_KEYS = {"core:sample_count", "core:sample_start", "core:header_bytes", "core:trailing_bytes",
             "core:datatype"}  # fmt: skip


def _changed(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = json.loads(json.dumps(doc))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        if isinstance(parent, list) or path[-1] in parent:
            del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def _open(doc: Any, data: bytes) -> Recording | Exception:
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder) / "rec"
        Path(f"{base}.sigmf-meta").write_text(json.dumps(doc))
        Path(f"{base}.sigmf-data").write_bytes(data)
        try:
            return open_recording(base)
        except (IQFormatError, SourceError) as exc:
            assert str(exc).startswith(str(base)), exc  # names the file
            return exc


@SETTINGS
@given(json_value, st.binary(max_size=64))
def test_any_json_is_a_recording_or_a_clear_error(doc, data):
    _open(doc, data)


@SETTINGS
@given(st.sampled_from(META_PATHS), st.one_of(st.just(DELETE), json_value),
       st.integers(0, 24))  # fmt: skip
@example(("global", "core:num_channels"), 2, 0)  # found: "2 channels" named no field
def test_one_changed_field_of_valid_sigmf_metadata_is_named_if_it_is_refused(path, value, samples):
    data = np.zeros(samples, np.complex64).tobytes()
    assert isinstance(_open(VALID_META, np.zeros(8, np.complex64).tobytes()), Recording)
    got = _open(_changed(VALID_META, path, value), data)
    if isinstance(got, Recording):
        return
    message = str(got).replace("SigMF datatype", "core:datatype")
    named = [str(k) for k in path if isinstance(k, str)]
    if "annotations reach sample" in message or "whole number of" in message:
        return  # the data's size against the metadata: holds what it names
    assert any(name in message for name in named) or set(named) & SIZE_KEYS, (path, message)


# -- the config ----------------------------------------------------------------------------------
toml_scalar = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=12),
)  # fmt: skip
toml_value = st.recursive(toml_scalar, _arrays_and_tables, max_leaves=6)
VALID_CONFIG: dict[str, Any] = {
    "source": {"type": "zmq", "address": "tcp://127.0.0.1:5555", "rcvhwm": 1000},
    "bundle": "",
    "engine": {"type": "onnxruntime", "threads": 1},
    "batcher": {"max_batch": 8},
    "publisher": {"bind": "tcp://127.0.0.1:5556", "sndhwm": 1000},
    "metrics": {"enabled": False, "port": 9464},
    "power": {"type": "none"},
    "assembler": {"threshold_db": 5.0},
    "drain_timeout_s": 2.0,
    "source_cpus": [0],
}


def _config_paths() -> list[tuple[str, ...]]:
    full = DaemonConfig.from_dict(VALID_CONFIG, "").to_dict()
    paths: list[tuple[str, ...]] = []
    for key, value in full.items():
        paths.append((key,))
        if isinstance(value, dict):
            paths += [(key, sub) for sub in value]
    return paths


CONFIG_PATHS = _config_paths()


_KEY = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*")(?:\[\d+\])*'  # bare or quoted (TOML), [i]
KEY_PATH = re.compile(rf"{_KEY}(?:\.{_KEY})*: \S")


def _check(data: Any) -> DaemonConfig | ConfigProblems:
    try:
        return DaemonConfig.from_dict(data, "")
    except ConfigProblems as exc:
        assert exc.problems, "ConfigProblems without a problem"
        for problem in exc.problems:
            assert KEY_PATH.match(problem), problem  # 'key.path: message'
        return exc


@SETTINGS
@given(st.dictionaries(st.text(max_size=10), toml_value, max_size=5))
@example({"": []})  # found by this test: the problem read ": unknown key"
@example({": ": []})  # and ": : unknown key"
def test_any_table_is_a_config_or_problems(data):
    _check(data)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(CONFIG_PATHS), st.one_of(st.just(DELETE), toml_value)),
                min_size=1, max_size=3))  # fmt: skip
@example([(("source", "type"), [])])  # found by this test: TypeError, unhashable type
@example([(("engine", "type"), {})])
def test_changed_keys_of_a_valid_config_are_named_if_they_are_refused(changes):
    assert isinstance(_check(VALID_CONFIG), DaemonConfig)
    data = DaemonConfig.from_dict(VALID_CONFIG, "").to_dict()
    for path, value in changes:
        parent = data
        for key in path[:-1]:
            if not isinstance(parent.get(key), dict):
                break
            parent = parent[key]
        else:
            if value is DELETE:
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = value
    got = _check(data)
    if isinstance(got, DaemonConfig):
        return
    # a problem under some changed key path (or its section: a changed `type` changes what
    # the whole section may hold)
    keys = [p.partition(": ")[0] for p in got.problems]
    assert any(k.startswith(path[0]) for k in keys for path, _ in changes), (changes, keys)


@SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes_as_a_config_file_are_a_table_or_problems(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "edge-tc.toml"
        path.write_bytes(data)
        try:
            table = read_toml(path)
        except ConfigProblems as exc:
            assert all(p.startswith(str(path)) for p in exc.problems), exc.problems
            return
    assert isinstance(table, dict)
    _check(table)


def test_floats_the_config_refuses_are_named():
    """NaN and infinities in a float key are problems, not a config that fails later."""
    for bad in (math.nan, math.inf, -math.inf):
        got = _check({**VALID_CONFIG, "drain_timeout_s": bad})
        assert isinstance(got, ConfigProblems), bad
        assert any(p.startswith("drain_timeout_s:") for p in got.problems), got.problems

"""IQ over ZeroMQ (config `type = "zmq"`): a SUB or PULL socket fed by GNU Radio's gr-zeromq.

A `zeromq.pub_sink` / `push_sink` binds and sends one message per work() call: the raw item
bytes, no framing (`sample_format` says how to read them; complex float items are "cf32_le" on
every little-endian host). With a sink `key` the message is multipart `[key, payload]`; the
payload is always the last frame. With `pass_tags = true` the payload starts with gr-zeromq's
tag header (native-endian, packed): uint16 magic 0x5FF0, uint8 version 1, uint64 offset (the
absolute index of the message's first item), uint64 ntags, then per tag a uint64 offset and the
PMT-serialized key, value and srcid. The header is skipped by its length; its offset reveals
messages the publisher dropped (a jump forward is counted as an overflow and the sample index
jumps with it).

A message that cannot be used is dropped and counted through `SourceEvents.dropped` with a
reason (one message, and its bytes' worth of samples), never raised: "oversized" (more than
`max_message_bytes`), "odd_bytes" (not a whole number of samples), "bad_frames" (not `[payload]`
or `[key, payload]` with a key of at most `MAX_KEY_BYTES`: frames swapped, extra frames),
"bad_tag_header" (pass_tags set and the header is missing or malformed). Its samples still
advance the sample index and the next chunk is flagged `discontinuity`. `max_message_bytes` is
also ZMQ_MAXMSGSIZE, so libzmq refuses a larger message before buffering it: it closes that
connection instead, which in "connect" mode it never retries; the source then counts one
"oversized" message (0 samples: its size is unknown), re-opens the socket and counts a
reconnect. In "bind" mode the producer reconnects by itself (counted as a reconnect only).

Non-finite samples (NaN/Inf in I or Q) are counted as "nonfinite" and passed on as they are:
the assembler ends the packet in progress at them and skips them (no packet spans them; zeroed
here, they would have been cut into packets and dragged the noise floor down). ZeroMQ has no
sequence numbers: without pass_tags a PUB socket's drops at its high-water mark cannot be seen.
ZeroMQ reconnects on its own; a socket monitor watches the peer coming and going: each
reconnection is reported through `SourceEvents.reconnected` and the next chunk is flagged
`discontinuity`.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from edge_core.errors import SourceError
from edge_core.iq import formats
from edge_daemon.sources.base import (
    Chunk,
    Source,
    SourceBackend,
    SourceConfig,
    SourceEvents,
    unavailable,
)

KEY = "zmq"
INSTALL = "pyzmq (pip install pyzmq; a core dependency of edge-tc)"

FORMAT_ALIASES = {"cf32": "cf32_le", "ci16": "ci16_le"}
"""Short names for the little-endian formats GNU Radio items are on every common host."""

MAX_KEY_BYTES = 255
"""The longest first frame taken as a gr-zeromq sink `key` of a `[key, payload]` message."""

DEAD_S = 0.2
"""A connect-mode connection closed without a retry this long after is dead (see _revive)."""

JOIN_SAMPLES = 65536
"""Queued messages are joined into chunks of up to this many samples (3.3 ms at 20 Msps)."""

TAG_MAGIC = 0x5FF0
TAG_VERSION = 1
TAG_HEADER = struct.Struct("=HBQQ")  # magic, version, offset, ntags: 19 bytes, no padding
TAG_OFFSET = struct.Struct("=Q")


class TagHeaderError(ValueError):
    """A gr-zeromq tag header that cannot be skipped (truncated, bad magic, bad PMT)."""


# PMT serialization (gnuradio-runtime/lib/pmt/pmt_serialize.cc, big-endian): a tag byte, then
# a fixed-size payload, or a length and items.
_PMT_FIXED = {0x00: 0, 0x01: 0, 0x06: 0, 0x03: 4, 0x04: 8, 0x05: 16, 0x0B: 8, 0x0D: 8}
_PMT_SYMBOL, _PMT_PAIR, _PMT_VECTOR, _PMT_DICT, _PMT_UVECTOR, _PMT_TUPLE = (
    0x02, 0x07, 0x08, 0x09, 0x0A, 0x0C,
)  # fmt: skip
# uniform vector item sizes by subtype: u8 s8 u16 s16 u32 s32 u64 s64 f32 f64 c32 c64
_UVECTOR_ITEM = (1, 1, 2, 2, 4, 4, 8, 8, 4, 8, 8, 16)


def _need(buf: bytes | memoryview, pos: int, n: int) -> int:
    if pos + n > len(buf):
        raise TagHeaderError(f"PMT truncated at byte {pos}: {n} more bytes needed")
    return pos + n


def pmt_end(buf: bytes | memoryview, pos: int, depth: int = 0) -> int:
    """Index just past the serialized PMT that starts at `buf[pos]`; TagHeaderError if bad."""
    if depth > 32:
        raise TagHeaderError("PMT nested deeper than 32 levels")
    while True:  # a pair's cdr is the next PMT: loop instead of recursing on long lists
        tag = buf[_need(buf, pos, 1) - 1]
        pos += 1
        if tag in _PMT_FIXED:
            return _need(buf, pos, _PMT_FIXED[tag])
        if tag == _PMT_SYMBOL:
            (length,) = struct.unpack_from(">H", buf, _need(buf, pos, 2) - 2)
            return _need(buf, pos + 2, length)
        if tag in (_PMT_PAIR, _PMT_DICT):
            pos = pmt_end(buf, pos, depth + 1)  # car; the loop reads the cdr
            continue
        if tag in (_PMT_VECTOR, _PMT_TUPLE):
            (count,) = struct.unpack_from(">I", buf, _need(buf, pos, 4) - 4)
            pos += 4
            for _ in range(count):
                pos = pmt_end(buf, pos, depth + 1)
            return pos
        if tag == _PMT_UVECTOR:
            _need(buf, pos, 6)
            subtype = buf[pos] & 0x7F
            (count,) = struct.unpack_from(">I", buf, pos + 1)
            npad = buf[pos + 5]
            if subtype >= len(_UVECTOR_ITEM):
                raise TagHeaderError(f"PMT uniform vector of unknown type {subtype}")
            return _need(buf, pos + 6 + npad, count * _UVECTOR_ITEM[subtype])
        raise TagHeaderError(f"unknown PMT tag 0x{tag:02x} at byte {pos - 1}")


def parse_tag_header(buf: bytes | memoryview) -> tuple[int, int]:
    """(offset of the first item, header length in bytes) of a gr-zeromq pass_tags payload."""
    if len(buf) < TAG_HEADER.size:
        raise TagHeaderError(f"{len(buf)} bytes, shorter than the {TAG_HEADER.size}-byte header")
    magic, version, offset, ntags = TAG_HEADER.unpack_from(buf, 0)
    if magic != TAG_MAGIC or version != TAG_VERSION:
        raise TagHeaderError(f"magic 0x{magic:04x} version {version}, want 0x5ff0 version 1")
    if ntags > len(buf) // (TAG_OFFSET.size + 3):
        raise TagHeaderError(f"{ntags} tags cannot fit in {len(buf)} bytes")
    pos = TAG_HEADER.size
    for _ in range(ntags):
        pos = _need(buf, pos, TAG_OFFSET.size)
        for _part in ("key", "value", "srcid"):
            pos = pmt_end(buf, pos)
    return offset, pos


@dataclass(frozen=True)
class ZmqSourceConfig(SourceConfig):
    """`[source]` table for ZeroMQ.

    address: the endpoint ("tcp://host:port", "ipc:///path"). socket: "sub" (for a pub_sink)
    or "pull" (for a push_sink). mode: "connect" (the sinks bind) or "bind". subscribe: SUB
    topic prefix (a sink's `key`; "" takes every message). sample_format: a name of
    `edge_core.iq.formats.FORMATS` ("cf32_le", "ci16_le", "ci8", ...) or "cf32"/"ci16".
    sample_rate_hz: the stream's rate (ZeroMQ does not carry it). pass_tags: payloads start
    with gr-zeromq's tag header. max_message_bytes: larger messages are dropped. rcvhwm:
    messages queued in the socket before ZeroMQ drops (ZMQ_RCVHWM). reconnect_ivl_ms: how soon
    a lost connection is retried (ZMQ_RECONNECT_IVL).
    """

    c_int_fields: ClassVar[tuple[str, ...]] = ("rcvhwm", "reconnect_ivl_ms")
    type: Literal["zmq"] = "zmq"
    address: str = "tcp://127.0.0.1:5555"
    socket: Literal["sub", "pull"] = "sub"
    mode: Literal["connect", "bind"] = "connect"
    subscribe: str = ""
    sample_format: str = "cf32_le"
    sample_rate_hz: float = 20e6
    pass_tags: bool = False
    max_message_bytes: int = 16 * 1024 * 1024
    rcvhwm: int = 1000
    reconnect_ivl_ms: int = 100

    @property
    def format_name(self) -> str:
        """The `formats.FORMATS` name of `sample_format`."""
        return FORMAT_ALIASES.get(self.sample_format, self.sample_format)

    def problems(self) -> list[tuple[str, str]]:
        out = []
        transport, sep, rest = self.address.partition("://")
        if not sep or not rest or transport not in ("tcp", "ipc", "inproc", "pgm", "epgm"):
            want = "'tcp://host:port' or 'ipc:///path'"
            out.append(("address", f"want {want}, got {self.address!r}"))
        if self.format_name not in formats.FORMATS:
            names = [*formats.FORMATS, *FORMAT_ALIASES]
            out.append(("sample_format", f"{self.sample_format!r} is not one of {names}"))
        elif self.max_message_bytes < formats.bytes_per_sample(self.format_name):
            out.append(("max_message_bytes", f"want >= one sample, got {self.max_message_bytes}"))
        if self.subscribe and self.socket != "sub":
            out.append(("subscribe", "only a 'sub' socket subscribes; remove it for 'pull'"))
        if not self.sample_rate_hz > 0:
            out.append(("sample_rate_hz", f"want > 0, got {self.sample_rate_hz}"))
        if self.rcvhwm < 0:
            out.append(("rcvhwm", f"want >= 0 (0: no limit), got {self.rcvhwm}"))
        if self.reconnect_ivl_ms < 1:
            out.append(("reconnect_ivl_ms", f"want >= 1, got {self.reconnect_ivl_ms}"))
        return out


class ZmqSource(Source):
    """Messages of a SUB/PULL socket as chunks.

    Messages already queued when one is read are joined to it, up to `join_samples` samples
    (never waiting for more, never across a loss), so small messages do not cost one assembler
    call each; `join_samples=1` gives one message per chunk. A joined chunk keeps each
    message's arrival time (`Chunk.part_arrivals`): a packet that ended in an earlier message
    is timed from that message, not from the last one. `clock` stamps arrivals
    (time.monotonic).
    """

    config: ZmqSourceConfig

    def __init__(
        self,
        config: ZmqSourceConfig,
        events: SourceEvents,
        join_samples: int = JOIN_SAMPLES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config, events)
        if join_samples < 1:
            raise ValueError(f"join_samples must be >= 1, got {join_samples}")
        self.join_samples = join_samples
        self._clock = clock
        self._zmq: Any = None
        self._context: Any = None
        self._socket: Any = None
        self._monitor: Any = None
        self._poller: Any = None
        self._fmt = config.format_name
        self._sample_bytes = formats.bytes_per_sample(self._fmt)
        self._is_float = formats.get_format(self._fmt).is_float
        self._next_index = 0
        self._next_offset: int | None = None  # the tag header offset expected next
        self._discontinuity = False
        self._held: Chunk | None = None  # received while joining, but not contiguous
        self._peers = 0  # connections up now
        self._ever_connected = False
        self._dropped_at: float | None = None  # a connection closed and not being retried
        self.messages = 0
        """Messages received (used or dropped)."""

    @property
    def sample_rate_hz(self) -> float:
        return self.config.sample_rate_hz

    def open(self) -> None:
        self.close()
        try:
            import zmq
        except ImportError as exc:
            raise unavailable(KEY, exc, INSTALL) from exc
        c = self.config
        self._zmq = zmq
        self._context = zmq.Context()
        kind = zmq.SUB if c.socket == "sub" else zmq.PULL
        sock = self._context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, c.rcvhwm)
        # libzmq buffers a whole message before handing it over: only it can refuse one too
        # large before it takes the memory (it then closes that connection; see read())
        sock.setsockopt(zmq.MAXMSGSIZE, c.max_message_bytes)
        sock.setsockopt(zmq.RECONNECT_IVL, c.reconnect_ivl_ms)
        if c.socket == "sub":
            sock.setsockopt(zmq.SUBSCRIBE, c.subscribe.encode())
        watch = (
            zmq.EVENT_CONNECTED | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
            | zmq.EVENT_CONNECT_RETRIED
        )  # fmt: skip
        self._monitor = sock.get_monitor_socket(watch)
        self._socket = sock
        try:
            if c.mode == "connect":
                sock.connect(c.address)
            else:
                sock.bind(c.address)
        except zmq.ZMQError as exc:
            self.close()
            raise SourceError(f"zmq source: cannot {c.mode} {c.address}: {exc}") from exc
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._next_offset = None
        self._peers = 0
        self._ever_connected = False
        self._dropped_at = None
        self._discontinuity = self._next_index > 0  # re-opened: samples were missed meanwhile

    @property
    def endpoint(self) -> str:
        """The address the socket is bound or connected to (the real port after 'tcp://*:*')."""
        if self._socket is None:
            raise SourceError("zmq source: not open")
        last = self._socket.getsockopt(self._zmq.LAST_ENDPOINT)
        return last.decode() if last else self.config.address

    def read(self, timeout_s: float) -> Chunk | None:
        if self._socket is None:
            raise SourceError("zmq source: read() before open()")
        if self._held is not None:
            held, self._held = self._held, None
            return self._join(held)
        zmq = self._zmq
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            remaining_ms = max(0.0, (deadline - time.monotonic()) * 1000.0)
            ready = dict(self._poller.poll(remaining_ms))
            if self._monitor in ready:
                self._read_monitor()
            if self._dropped_at is not None and time.monotonic() - self._dropped_at > DEAD_S:
                self._revive()
                continue
            if self._socket in ready:
                try:
                    frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    continue
                chunk = self._chunk(frames, self._clock())
                if chunk is not None:
                    return self._join(chunk)
                continue
            if time.monotonic() >= deadline:
                return None

    def _join(self, chunk: Chunk) -> Chunk:
        """`chunk` followed by the contiguous messages already queued, up to join_samples."""
        parts, total = [chunk], chunk.samples.size
        while total < self.join_samples:
            if self._monitor.poll(0):  # the peer came or went: what follows is not contiguous
                self._read_monitor()
                if self._discontinuity:
                    break
            try:
                frames = self._socket.recv_multipart(self._zmq.NOBLOCK, copy=False)
            except self._zmq.Again:
                break
            following = self._chunk(frames, self._clock())
            if following is None:  # dropped: the chunk after it carries the discontinuity
                break
            if following.discontinuity:
                self._held = following
                break
            parts.append(following)
            total += following.samples.size
        if len(parts) == 1:
            return chunk
        samples = np.concatenate([p.samples for p in parts])  # (total,)
        ends = np.cumsum([p.samples.size for p in parts], dtype=np.int64)  # (parts,)
        times = np.array([p.arrival_time for p in parts], np.float64)  # (parts,)
        return Chunk(
            samples, chunk.first_sample_index, parts[-1].arrival_time, chunk.discontinuity,
            part_arrivals=(ends, times),
        )  # fmt: skip

    def _read_monitor(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        zmq = self._zmq
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = event["event"]
            if kind in (zmq.EVENT_CONNECTED, zmq.EVENT_ACCEPTED):
                if self._ever_connected and self._peers == 0:
                    self.events.reconnected()
                    self._discontinuity = True
                    self._next_offset = None  # a restarted publisher counts from 0 again
                self._ever_connected = True
                self._peers += 1
            elif kind == zmq.EVENT_DISCONNECTED:
                # not a discontinuity yet: what the peer sent before it went is still queued,
                # contiguous, and is read after this event (the monitor is its own socket, read
                # first); samples are missed only if it comes back (EVENT_CONNECTED above)
                self._peers = max(0, self._peers - 1)
                if self.config.mode == "connect":
                    self._dropped_at = time.monotonic()
            if kind in (zmq.EVENT_CONNECT_RETRIED, zmq.EVENT_CONNECTED):
                self._dropped_at = None

    def _revive(self) -> None:
        """A connection libzmq closed for good: a protocol error, in practice a message over
        ZMQ_MAXMSGSIZE (a peer that went away is retried at once, CONNECT_RETRIED). Counted as
        one oversized message (its size unknown), and the socket is opened afresh."""
        self.events.dropped("oversized", 0, messages=1)
        index = self._next_index
        self.close()
        self.open()
        self._next_index = index
        self._discontinuity = True
        self.events.reconnected()

    def _drop(self, reason: str, nbytes: int) -> None:
        samples = nbytes // self._sample_bytes
        self.events.dropped(reason, samples, messages=1, nbytes=nbytes)
        self._next_index += samples
        self._discontinuity = True

    def _chunk(self, frames: list[Any], arrival: float) -> Chunk | None:
        """The message's samples as a chunk, or None (dropped and counted)."""
        self.messages += 1
        if len(frames) > 2 or (len(frames) == 2 and frames[0].buffer.nbytes > MAX_KEY_BYTES):
            self._drop("bad_frames", sum(f.buffer.nbytes for f in frames))
            return None
        payload: memoryview = frames[-1].buffer
        nbytes = payload.nbytes
        if nbytes > self.config.max_message_bytes:
            self._drop("oversized", nbytes)
            return None
        if self.config.pass_tags:
            try:
                offset, header = parse_tag_header(payload)
            except TagHeaderError:
                self._drop("bad_tag_header", nbytes)
                return None
            payload = payload[header:]
            nbytes = payload.nbytes
            if self._next_offset is not None and offset != self._next_offset:
                if offset > self._next_offset:  # the publisher dropped messages
                    self.events.overflow()
                    self._next_index += offset - self._next_offset
                self._discontinuity = True
        if nbytes % self._sample_bytes:
            self._drop("odd_bytes", nbytes)
            return None
        if nbytes == 0:
            return None
        samples = formats.decode(payload, self._fmt)  # (n,) complex64
        if self._is_float:  # counted here, passed on: the assembler ends packets at them
            n_bad = formats.count_nonfinite(samples)
            if n_bad:
                self.events.dropped("nonfinite", n_bad)
        if self.config.pass_tags:
            self._next_offset = offset + samples.size
        chunk = Chunk(samples, self._next_index, arrival, self._discontinuity)
        self._next_index += samples.size
        self._discontinuity = False
        return chunk

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.disable_monitor()
            except self._zmq.ZMQError:
                pass  # already stopped: nothing to undo
            self._monitor.close(linger=0)
            self._socket.close(linger=0)
        if self._context is not None:
            self._context.term()
        self._socket = self._monitor = self._poller = self._context = None
        self._held = None


def _create(config: SourceConfig, events: SourceEvents) -> Source:
    assert isinstance(config, ZmqSourceConfig)
    return ZmqSource(config, events)


SOURCE = SourceBackend(KEY, ZmqSourceConfig, _create, INSTALL)

__all__ = ["SOURCE", "ZmqSource", "ZmqSourceConfig", "parse_tag_header", "pmt_end"]

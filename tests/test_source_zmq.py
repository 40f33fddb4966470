"""The ZeroMQ source against real PUB/PUSH sockets on 127.0.0.1 (and ipc in tmp_path, inproc)."""

import struct

import numpy as np
import pytest
import zmq

from edge_core.assembler import PacketAssembler
from edge_core.iq import formats
from edge_daemon.sources.base import NullEvents, SourceConfigError, source_config_from_dict
from edge_daemon.sources.zmq import (
    TagHeaderError,
    ZmqSource,
    ZmqSourceConfig,
    parse_tag_header,
    pmt_end,
)


def _warmup(number: int) -> bytes:
    """Warm-up message `number`: one sample, number + 1 ("are you there?")."""
    return np.array([number + 1], np.complex64).tobytes()


def _iq(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)


# -- gr-zeromq's pass_tags header, written as tag_headers.cc and pmt_serialize.cc do ----------
def _symbol(text: str) -> bytes:
    return b"\x02" + struct.pack(">H", len(text)) + text.encode()


def _double(value: float) -> bytes:
    return b"\x04" + struct.pack(">d", value)


def _long(value: int) -> bytes:
    return b"\x03" + struct.pack(">i", value)


def _f32vector(values) -> bytes:
    data = np.asarray(values, ">f4").tobytes()
    return b"\x0a\x08" + struct.pack(">I", len(values)) + b"\x01\x00" + data


def _pair(car: bytes, cdr: bytes) -> bytes:
    return b"\x07" + car + cdr


def _tag_header(offset: int, tags=()) -> bytes:
    out = struct.pack("=HBQQ", 0x5FF0, 1, offset, len(tags))
    for tag_offset, key, value, srcid in tags:
        out += struct.pack("=Q", tag_offset) + key + value + srcid
    return out


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _bind(context, kind=zmq.PUB, address="tcp://127.0.0.1:*"):
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(address)
    return sock, sock.getsockopt(zmq.LAST_ENDPOINT).decode()


def _open(events=None, join_samples=1, **config):
    # one message per chunk unless a test joins them
    source = ZmqSource(ZmqSourceConfig(**config), events or NullEvents(), join_samples)
    source.open()
    return source


def _sync(source, send, rounds=500):
    """Send numbered warm-up messages (`send(payload)`) until one comes through (a SUB misses
    what is sent before it has subscribed), then read up to the last one sent: every one after
    the first that came through comes, in order. Returns the index the next sample will have."""
    for sent in range(rounds):
        send(_warmup(sent))
        chunk = source.read(0.01)
        while chunk is not None:
            last = chunk.first_sample_index + chunk.samples.size
            if chunk.samples[-1] == sent + 1:
                return last
            chunk = source.read(10.0)  # the later warm-ups are on their way
    raise AssertionError("no warm-up message came through")


def _collect(source, n_samples, limit=500):
    chunks, total = [], 0
    for _ in range(limit):
        chunk = source.read(0.05)
        if chunk is not None:
            chunks.append(chunk)
            total += chunk.samples.size
        if total >= n_samples:
            return chunks
    raise AssertionError(f"got {total} of {n_samples} samples")


def test_sub_round_trip_is_exact(context):
    pub, endpoint = _bind(context)
    source = _open(address=endpoint)
    start = _sync(source, pub.send)
    sent = [_iq(n, seed) for seed, n in enumerate((4096, 1, 10_000, 777))]
    for x in sent:
        pub.send(x.tobytes())
    chunks = _collect(source, sum(x.size for x in sent))
    source.close()
    assert [c.samples.size for c in chunks] == [x.size for x in sent]
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), np.concatenate(sent))
    assert [c.first_sample_index for c in chunks] == list(
        start + np.cumsum([0] + [x.size for x in sent[:-1]])
    )
    assert not any(c.discontinuity for c in chunks)


def test_pull_bind_on_ipc_reads_ci16(context, tmp_path):
    address = f"ipc://{tmp_path}/iq.sock"
    source = _open(address=address, socket="pull", mode="bind", sample_format="ci16")
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(address)
    x = _iq(3000, 1) / 2
    push.send(formats.encode(x, "ci16_le"))  # PUSH queues until connected: nothing is lost
    (chunk,) = _collect(source, x.size)
    assert chunk.first_sample_index == 0
    np.testing.assert_allclose(chunk.samples, x, atol=1 / 32768)
    source.close()


def test_multipart_key_payload_and_subscribe_prefix(context):
    pub, endpoint = _bind(context)
    source = _open(address=endpoint, subscribe="iq")
    _sync(source, lambda warmup: pub.send_multipart([b"iq", warmup]))
    wanted, other = _iq(500, 2), _iq(300, 3)
    pub.send_multipart([b"other", other.tobytes()])
    pub.send_multipart([b"iq", wanted.tobytes()])
    (chunk,) = _collect(source, wanted.size)
    np.testing.assert_array_equal(chunk.samples, wanted)
    assert source.read(0.05) is None  # the other topic was filtered out


def test_pass_tags_header_is_skipped_and_its_offset_reveals_drops(context):
    push, endpoint = _bind(context, zmq.PUSH)
    events = NullEvents()
    source = _open(events, address=endpoint, socket="pull", pass_tags=True)
    a, b, c = _iq(1000, 4), _iq(2000, 5), _iq(500, 6)
    tags = [
        (5, _symbol("rx_freq"), _double(2.412e9), _symbol("usrp_source1")),
        (900, _symbol("burst"), _pair(_long(7), _f32vector([1.0, 2.0])), b"\x01"),
    ]
    push.send(_tag_header(10_000, tags) + a.tobytes())
    push.send(_tag_header(11_000) + b.tobytes())
    push.send(_tag_header(20_000) + c.tobytes())  # 7000 items the publisher never sent us
    chunks = _collect(source, 3500)
    assert [ch.samples.size for ch in chunks] == [1000, 2000, 500]
    for chunk, x in zip(chunks, (a, b, c), strict=True):
        np.testing.assert_array_equal(chunk.samples, x)
    assert [ch.first_sample_index for ch in chunks] == [0, 1000, 3000 + 7000]
    assert [ch.discontinuity for ch in chunks] == [False, False, True]
    assert events.overflows == 1 and events.drops == {}


def test_every_malformed_kind_is_dropped_counted_and_flags_the_next_chunk(context):
    push, endpoint = _bind(context, zmq.PUSH)
    events = NullEvents()
    source = _open(events, address=endpoint, socket="pull", max_message_bytes=8000)
    good = _iq(100, 7)
    bad = good.copy()
    bad[[3, 50]] = [np.nan, np.inf + 0j]
    push.send(good.tobytes())
    push.send(good.tobytes() + b"\x01\x02\x03")  # 803 bytes: odd
    push.send(good.tobytes())
    push.send_multipart([b"key", good.tobytes(), b"\x00" * 8])  # a third frame
    push.send(good.tobytes())
    push.send(bad.tobytes())  # two non-finite samples: counted, passed on to the assembler
    # (oversized messages: ZMQ_MAXMSGSIZE, tests/test_faults_zmq.py)
    chunks = _collect(source, 400)
    assert events.drops == {"odd_bytes": 100, "bad_frames": 101, "nonfinite": 2}
    assert events.dropped_messages == {"odd_bytes": 1, "bad_frames": 1}
    assert [c.first_sample_index for c in chunks] == [0, 200, 401, 501]
    assert [c.discontinuity for c in chunks] == [False, True, True, False]
    np.testing.assert_array_equal(chunks[-1].samples, bad)  # the assembler skips them
    assert source.messages == 6


def test_bad_tag_headers_are_dropped_and_counted(context):
    push, endpoint = _bind(context, zmq.PUSH)
    events = NullEvents()
    source = _open(events, address=endpoint, socket="pull", pass_tags=True)
    x = _iq(64, 9)
    push.send(x.tobytes())  # no header at all
    push.send(_tag_header(0, [(1, b"\x7f", b"", b"")]) + x.tobytes())  # unknown PMT tag
    push.send(_tag_header(0)[:10])  # truncated
    push.send(_tag_header(0) + x.tobytes())
    (chunk,) = _collect(source, 64)
    np.testing.assert_array_equal(chunk.samples, x)
    assert chunk.discontinuity
    assert events.drops == {"bad_tag_header": 64 + (19 + 9 + 512) // 8 + 1}


def test_publisher_restart_on_the_same_port_reconnects_and_is_counted(context):
    pub, endpoint = _bind(context)
    events = NullEvents()
    source = _open(events, address=endpoint, reconnect_ivl_ms=20)
    _sync(source, pub.send)
    pub.close(linger=0)
    for _ in range(20):  # let the source see the peer go
        source.read(0.01)
    pub, _ = _bind(context, address=endpoint)
    _sync(source, pub.send)
    x = _iq(2000, 10)
    pub.send(x.tobytes())
    (chunk,) = _collect(source, x.size)
    np.testing.assert_array_equal(chunk.samples, x)
    assert events.reconnects == 1
    source.close()


def test_discontinuity_after_a_reconnect(context):
    push, endpoint = _bind(context, zmq.PUSH)
    events = NullEvents()
    source = _open(events, address=endpoint, socket="pull", reconnect_ivl_ms=20)
    push.send(_iq(10, 0).tobytes())
    (first,) = _collect(source, 10)
    push.close(linger=0)
    for _ in range(20):
        source.read(0.01)
    push, _ = _bind(context, zmq.PUSH, address=endpoint)
    push.send(_iq(10, 1).tobytes())
    (second,) = _collect(source, 10)
    assert not first.discontinuity and second.discontinuity
    assert second.first_sample_index == 10 and events.reconnects == 1


def test_what_a_peer_sent_before_it_went_is_contiguous(context):
    """A stream's last messages are still queued when its publisher exits, and the monitor's
    disconnect event is read first: they are contiguous, the assembler must not be reset (it
    was: the packet in progress was lost, 1 in 277 in the GNU Radio test, issue 13)."""
    pub, endpoint = _bind(context)
    pub.setsockopt(zmq.LINGER, 10_000)  # close() delivers what was sent
    source = _open(address=endpoint)
    start = _sync(source, pub.send)
    sent = [_iq(4096, seed) for seed in range(8)]
    for x in sent:
        pub.send(x.tobytes())
    pub.close()
    # the disconnect is on the monitor before any of these messages is read
    assert source._monitor.poll(10_000), "no monitor event after the publisher closed"
    chunks = _collect(source, sum(x.size for x in sent))
    source.close()
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), np.concatenate(sent))
    assert chunks[0].first_sample_index == start
    assert not any(c.discontinuity for c in chunks)


def test_queued_messages_are_joined_but_never_across_a_loss(context, monkeypatch):
    # inproc in one context: a message is in the receiving socket's queue once send() returns
    # (over tcp or ipc an I/O thread moves it there some time later), so which messages are
    # queued at the first read does not depend on timing
    push, endpoint = _bind(context, zmq.PUSH, address="inproc://join")
    events = NullEvents()
    with monkeypatch.context() as patch:
        patch.setattr(zmq, "Context", lambda: context)  # the one open() makes for the source
        source = _open(events, address=endpoint, socket="pull", join_samples=2500)
    sent = [_iq(1000, seed) for seed in range(8)]
    for x in sent[:4]:
        push.send(x.tobytes())
    push.send(b"\x00" * 12)  # odd bytes: dropped, and the next message starts a new chunk
    for x in sent[4:]:
        push.send(x.tobytes())
    chunks = _collect(source, 8000)
    assert [c.samples.size for c in chunks] == [3000, 1000, 3000, 1000]
    assert [c.first_sample_index for c in chunks] == [0, 3000, 4001, 7001]
    assert [c.discontinuity for c in chunks] == [False, False, True, False]
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), np.concatenate(sent))
    assert events.drops == {"odd_bytes": 1}


def test_a_packet_in_an_earlier_joined_message_keeps_that_messages_arrival_time(
    context, monkeypatch
):
    """Two messages joined into one chunk: a packet that ended in the first is timed from the
    first's arrival (latency is measured from it), not from the second's."""
    push, endpoint = _bind(context, zmq.PUSH, address="inproc://join-times")
    received_at = (100.0, 100.5)  # message k is taken off the socket at received_at[k]
    with monkeypatch.context() as patch:
        patch.setattr(zmq, "Context", lambda: context)  # inproc: both queued before the read
        source = ZmqSource(
            ZmqSourceConfig(address=endpoint, socket="pull"), NullEvents(), 65536,
            clock=lambda: received_at[source.messages],
        )  # fmt: skip
        source.open()
    rng = np.random.default_rng(7)
    noise = 0.01 * (rng.standard_normal(40_000) + 1j * rng.standard_normal(40_000)) / np.sqrt(2)
    x = noise.astype(np.complex64)  # (40_000,) noise at -40 dBFS, two bursts at 0 dBFS
    for start in (9_000, 27_000):
        x[start : start + 3000] += (_iq(3000, start) / 0.3 / np.sqrt(2)).astype(np.complex64)
    push.send(x[:20_000].tobytes())  # burst 1 ends at 12_000, in the first message
    push.send(x[20_000:].tobytes())  # burst 2 ends at 30_000, in the second
    (chunk,) = _collect(source, 40_000)  # the fixture ends the shared context's sockets
    assert chunk.samples.size == 40_000 and chunk.arrival_time == 100.5
    assert chunk.part_arrivals is not None
    ends, times = chunk.part_arrivals
    assert ends.tolist() == [20_000, 40_000] and times.tolist() == [100.0, 100.5]

    assembler = PacketAssembler()
    packets = assembler.feed(
        chunk.samples, chunk.first_sample_index, chunk.arrival_time, chunk.part_arrivals
    )
    packets += assembler.flush()
    assert [p.end_sample for p in packets] == [12_000, 30_000]
    assert [p.arrival_time for p in packets] == [100.0, 100.5]


def test_reopen_continues_the_index_and_flags_the_gap(context, tmp_path):
    address = f"ipc://{tmp_path}/iq.sock"
    source = _open(address=address, socket="pull", mode="bind")
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(address)
    push.send(_iq(10, 0).tobytes())
    (first,) = _collect(source, 10)
    source.close()
    source.open()
    push.send(_iq(10, 1).tobytes())
    (second,) = _collect(source, 10)
    assert (first.first_sample_index, second.first_sample_index) == (0, 10)
    assert not first.discontinuity and second.discontinuity


def test_read_returns_none_on_timeout_and_close_is_idempotent(context):
    _, endpoint = _bind(context)
    source = _open(address=endpoint)
    assert source.read(0.02) is None
    source.close()
    source.close()


def test_pmt_end_and_header_parser():
    symbol = _symbol("abc")
    assert pmt_end(symbol, 0) == len(symbol)
    nested = _pair(_symbol("k"), _pair(_long(1), b"\x06"))
    assert pmt_end(nested + b"rest", 0) == len(nested)
    assert parse_tag_header(_tag_header(42) + b"samples") == (42, 19)
    # a tag-less header as a gr-zeromq 3.10 push_sink sends it (bytes from a capture)
    captured = bytes.fromhex("f05f01567f2d00000000000000000000000000")
    assert parse_tag_header(captured) == (0x2D7F56, 19)
    tuple_ = b"\x0c" + struct.pack(">I", 2) + _long(1) + _symbol("x")
    dict_ = b"\x09" + _pair(_symbol("k"), _double(1.0)) + b"\x06"
    u8vector = b"\x0a\x00" + struct.pack(">I", 3) + b"\x01\x00" + b"abc"
    for pmt in (tuple_, dict_, u8vector, _f32vector([1.0, 2.0, 3.0])):
        assert pmt_end(pmt + b"tail", 0) == len(pmt)
    with pytest.raises(TagHeaderError, match="truncated"):
        pmt_end(u8vector[:-1], 0)
    with pytest.raises(TagHeaderError, match="magic"):
        parse_tag_header(struct.pack("=HBQQ", 0x1234, 1, 0, 0))
    with pytest.raises(TagHeaderError, match="truncated"):
        parse_tag_header(_tag_header(0, [(0, _symbol("long key"), b"", b"")])[:-3])


def test_config_problems_name_their_keys():
    with pytest.raises(SourceConfigError) as err:
        source_config_from_dict(
            {
                "type": "zmq",
                "address": "127.0.0.1:5555",
                "socket": "pull",
                "subscribe": "x",
                "sample_format": "cf64",
                "sample_rate_hz": 0,
                "rcvhwm": -1,
            }
        )
    text = str(err.value)
    for key in ("address", "sample_format", "subscribe", "sample_rate_hz", "rcvhwm"):
        assert f"source.{key}:" in text
    config = source_config_from_dict({"type": "zmq", "sample_format": "ci8", "pass_tags": True})
    assert isinstance(config, ZmqSourceConfig) and config.format_name == "ci8"

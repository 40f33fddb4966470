"""Publisher: real PUB/SUB sockets on 127.0.0.1; schema, topics, formats, a reader that stalls."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import zmq

from edge_core.errors import ConfigError
from edge_core.schema import TASKS
from edge_core.typed_config import ConfigProblems
from edge_daemon.publisher import (
    Classified,
    Publisher,
    PublisherConfig,
    Subscriber,
    decode_payload,
    label_entries,
)

ANY_PORT = "tcp://127.0.0.1:*"


def probs_for(indices: dict[str, int]) -> dict[str, np.ndarray]:
    out = {}
    for task in TASKS:
        p = np.full(task.num_classes, 0.1 / task.num_classes, np.float32)
        p[indices[task.name]] += 0.9
        out[task.name] = p
    return out


def item(packet_id: int, age_s: float = 0.001) -> Classified:
    probs = probs_for({"phy": 2, "frame": 2, "app_type": 1, "app": 4})
    return Classified(packet_id, 1000 * packet_id, 1000 * packet_id + 3000,
                      time.monotonic() - age_s, probs)  # fmt: skip


def test_label_entries_pick_each_packets_top_class():
    probs = {"phy": np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], np.float32),
             "frame": np.array([[0.2, 0.5, 0.3], [0.0, 0.0, 1.0]], np.float32)}  # fmt: skip
    got = label_entries(probs)
    assert got[0]["phy"] == {"label": "802.11n", "index": 2, "probability": pytest.approx(0.7)}
    assert got[1]["phy"] == {"label": "802.11b", "index": 0, "probability": pytest.approx(0.6)}
    assert got[0]["frame"]["label"] == "ctrl" and got[1]["frame"]["label"] == "data"
    assert label_entries({}) == []


@pytest.fixture
def publisher(request):
    config = PublisherConfig.from_dict({"bind": ANY_PORT, **getattr(request, "param", {})})
    sent: list[int] = []
    pub = Publisher(config, on_sent=sent.append)
    pub.sent = sent  # type: ignore[attr-defined]
    yield pub
    pub.close()


def test_json_message_schema(publisher):
    with Subscriber(publisher.endpoint) as sub:
        sub.wait_connected()
        latency = publisher.publish(item(7, age_s=10.0))
        message = sub.recv(5.0)
    assert message is not None and message.topic == "all"
    p = message.payload
    assert set(p) == {"packet_id", "sample_start", "sample_end", "arrival_ns", "published_ns",
                      "latency_ms", "labels"}  # fmt: skip
    assert (p["packet_id"], p["sample_start"], p["sample_end"]) == (7, 7000, 10000)
    # an arrival 10 s old: the units show (ms, ns) with a minute of room for a busy machine
    assert 10_000 <= p["latency_ms"] < 70_000 and latency == pytest.approx(
        p["latency_ms"] / 1e3, abs=1e-6
    )
    assert 9.999e9 <= p["published_ns"] - p["arrival_ns"] < 70e9
    assert abs(p["published_ns"] - time.time_ns()) < 60e9
    assert p["labels"]["phy"] == {
        "label": "802.11n",
        "index": 2,
        "probability": pytest.approx(0.9333, abs=1e-3),
    }
    assert p["labels"]["app"]["label"] == "netflix"
    assert p["labels"]["app_type"]["label"] == "video"
    assert set(p["labels"]) == {t.name for t in TASKS}
    assert publisher.sent == [1]


@pytest.mark.parametrize("publisher", [{"topics": ["phy", "app", "all"]}], indirect=True)
def test_per_task_topics_carry_their_task_only(publisher):
    with Subscriber(publisher.endpoint, topics=["app", "phy"]) as sub:
        sub.wait_connected()
        publisher.publish(item(1))
        got = sub.collect(count=2, idle_timeout_s=10)
        got += sub.collect(count=None, idle_timeout_s=0.2)  # and no third (tc.all)
    # tc.all is sent but not subscribed; tc.app does not deliver tc.app_type (exact topics)
    assert sorted(m.topic for m in got) == ["app", "phy"]
    for m in got:
        assert list(m.payload["labels"]) == [m.topic]
    assert publisher.sent == [3]


def test_wait_connected_when_the_handshake_is_already_over(publisher):
    # on loopback the handshake can be over before wait_connected() is called: it still sees
    # it (it watches from before connect; a monitor attached later waited its whole timeout)
    with Subscriber(publisher.endpoint) as sub:
        deadline = time.monotonic() + 30
        while sub.recv(0.05) is None:  # a message came: connected and subscribed
            assert time.monotonic() < deadline, "no message came through"
            publisher.publish(item(len(publisher.sent)))
        sub.wait_connected(timeout_s=1.0)


@pytest.mark.parametrize("publisher", [{"format": "msgpack"}], indirect=True)
def test_msgpack_payload(publisher):
    with Subscriber(publisher.endpoint) as sub:
        sub.wait_connected()
        publisher.publish(item(3))
        message = sub.recv(5.0)
    assert message is not None
    assert message.payload["packet_id"] == 3
    assert message.payload["labels"]["frame"]["label"] == "data"


def test_raw_frames_are_topic_then_payload(publisher):
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"tc.")
    sub.connect(publisher.endpoint)
    try:
        # PUB drops what it sends before the subscription arrives: send until one comes
        deadline = time.monotonic() + 30
        while not sub.poll(100):
            assert time.monotonic() < deadline, "the SUB socket got nothing"
            publisher.publish(item(5))
        frames = sub.recv_multipart()
    finally:
        sub.close(linger=0)
        context.term()
    assert frames[0] == b"tc.all"
    assert decode_payload(frames[1])["packet_id"] == 5


@pytest.mark.parametrize("publisher", [{"sndhwm": 10}], indirect=True)
def test_a_subscriber_that_never_reads_does_not_block(publisher):
    context = zmq.Context()
    stalled = context.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 10)
    stalled.setsockopt(zmq.RCVBUF, 4096)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(publisher.endpoint)
    try:
        with Subscriber(publisher.endpoint) as reader:
            reader.wait_connected()
            for i in range(20_000):  # a blocking send would hang here (the suite's timeout)
                publisher.publish(item(i))
            # the reader still gets messages: the stalled one costs nothing
            assert reader.recv(5.0) is not None
    finally:
        stalled.close(linger=0)
        context.term()
    assert len(publisher.sent) == 20_000  # every send returned: none blocked


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"bind": "localhost:5556"}, "bind: want a ZeroMQ endpoint"),
        ({"topics": ["phy", "bogus"]}, "topics[1]: 'bogus' is not one of"),
        ({"topics": []}, "topics: want at least one"),
        ({"format": "xml"}, "format: 'xml' is not one of"),
        ({"sndhwm": 0}, "sndhwm: want >= 1"),
        ({"hwm": 3}, "hwm: unknown key"),
    ],
)
def test_config_problems_name_the_key(table, problem):
    with pytest.raises(ConfigProblems) as err:
        PublisherConfig.from_dict(table)
    assert any(p.startswith(f"publisher.{problem}") for p in err.value.problems), err.value.problems


def test_bind_failure_is_a_config_error(publisher):
    with pytest.raises(ConfigError, match=r"publisher\.bind: cannot bind"):
        Publisher(PublisherConfig(bind=publisher.endpoint))


def load_tool():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "tc_subscribe.py"
    spec = importlib.util.spec_from_file_location("tc_subscribe", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tc_subscribe_tool_prints_each_message(publisher, capsys):
    import threading

    tool = load_tool()
    done: list[int] = []
    args = ["--connect", publisher.endpoint, "--count", "2", "--idle-timeout", "10"]
    runner = threading.Thread(target=lambda: done.append(tool.main(args)))
    runner.start()
    deadline = time.monotonic() + 20
    while runner.is_alive() and time.monotonic() < deadline:  # until its SUB has joined
        publisher.publish(item(len(publisher.sent)))
        time.sleep(0.05)
    runner.join(timeout=10)
    assert done == [0]
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert re.match(r"\[all\] #\d+ \d+\.\.\d+ [\d.]+ ms phy=802\.11n \(0\.93\) frame=data", out[0])

"""ZeroMQ output: one message per classified packet and topic, on a PUB socket that never blocks.

Message: multipart `[topic, payload]`. Topic `tc.all` carries every task, `tc.<task>` (`tc.phy`,
`tc.frame`, `tc.app_type`, `tc.app`) that task only. ZeroMQ subscriptions match by prefix
(`tc.app` also matches `tc.app_type`): compare the topic frame exactly, as `Subscriber` does.
Payload, JSON (UTF-8) by default or msgpack, one map::

    {"packet_id": 17,                  # per daemon run, from 0, in detection order
     "sample_start": 123456,           # source sample index of the packet's first sample
     "sample_end": 126456,             # one past its last sample
     "arrival_ns": 1764472467000000,   # wall clock (time_ns) when its last sample arrived
     "published_ns": 1764472467001200, # wall clock when the message was handed to ZeroMQ
     "latency_ms": 1.2,                # published - arrival, monotonic clock
     "stages_ms": {"assemble": 0.1, "queue": 0.3, "batch": 0.02, "inference": 0.6,
                   "publish": 0.18},     # where latency_ms went (edge_daemon/stages.py)
     "labels": {"phy": {"label": "802.11n", "index": 2, "probability": 0.97}, ...}}

The socket is non-blocking: a PUB socket at a subscriber's high-water mark (`sndhwm`) drops
that subscriber's messages (ZeroMQ PUB semantics) and the daemon goes on; a subscriber that never
reads costs at most `sndhwm` queued messages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import zmq

from edge_core.errors import ConfigError
from edge_core.schema import TASK_BY_NAME, TASK_NAMES
from edge_core.typed_config import TypedConfig

TOPIC_PREFIX = "tc."
TOPIC_ALL = "all"
LINGER_MS = 500
"""How long close() keeps trying to deliver queued messages (drained packets at shutdown)."""


@dataclass(frozen=True)
class PublisherConfig(TypedConfig):
    """`[publisher]`: the ZeroMQ PUB socket classifications go out on.

    `topics`: "all" (topic `tc.all`, every task in one message) and/or task names (topic
    `tc.<task>`, that task only). `sndhwm`: messages queued per subscriber before ZeroMQ drops.
    """

    section: ClassVar[str] = "publisher"
    c_int_fields: ClassVar[tuple[str, ...]] = ("sndhwm",)
    bind: str = "tcp://127.0.0.1:5556"
    format: Literal["json", "msgpack"] = "json"
    topics: tuple[str, ...] = (TOPIC_ALL,)
    sndhwm: int = 10_000
    # -- CurveZMQ (see `enable_curve`; docs/operations.md, "Security") --
    curve_secret_key_file: str = ""
    curve_authorized_keys_dir: str = ""

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.curve_authorized_keys_dir and not self.curve_secret_key_file:
            out.append(
                ("curve_authorized_keys_dir", "needs curve_secret_key_file (the server's key)")
            )
        if "://" not in self.bind:
            out.append(
                ("bind", f"want a ZeroMQ endpoint like tcp://127.0.0.1:5556, got {self.bind!r}")
            )
        choices = [TOPIC_ALL, *TASK_NAMES]
        for i, topic in enumerate(self.topics):
            if topic not in choices:
                out.append((f"topics[{i}]", f"{topic!r} is not one of {choices}"))
        if not self.topics:
            out.append(("topics", f"want at least one of {choices}"))
        elif len(set(self.topics)) != len(self.topics):
            out.append(("topics", f"duplicates in {list(self.topics)}"))
        if self.sndhwm < 1:
            out.append(("sndhwm", f"want >= 1, got {self.sndhwm}"))
        return out


@dataclass(frozen=True)
class Classified:
    """One packet's result as published: ids, sample span, times and per-task probabilities.

    `labels`: the top label entries (`label_entries`) when already made for the whole batch;
    else `publish` makes them from `probabilities`.
    """

    packet_id: int
    sample_start: int
    sample_end: int
    arrival_time: float  # time.monotonic() of its last sample's arrival
    probabilities: Mapping[str, np.ndarray]  # task -> (classes,) float32
    labels: Mapping[str, dict[str, Any]] | None = None  # task -> {"label", "index", ...}
    stages: Mapping[str, float] | None = None
    """Seconds spent in each stage before publication (assemble, queue, batch, inference);
    the message's `stages_ms` adds `publish`, the rest of its latency."""


def topic_of(name: str) -> bytes:
    """`all` -> b"tc.all", `phy` -> b"tc.phy"."""
    return (TOPIC_PREFIX + name).encode()


def label_entries(probs: Mapping[str, np.ndarray]) -> list[dict[str, dict[str, Any]]]:
    """Per packet of a batch, task -> {"label", "index", "probability"} of its most probable
    class; `probs` task -> (n, classes). Vectorized per task: one NumPy pass per batch."""
    n = len(next(iter(probs.values()))) if probs else 0
    out: list[dict[str, dict[str, Any]]] = [{} for _ in range(n)]
    for task, p in probs.items():
        best = p.argmax(axis=1)  # (n,)
        top = np.round(p[np.arange(n), best].astype(np.float64), 6)  # (n,)
        names = TASK_BY_NAME[task].classes
        for entry, index, probability in zip(out, best.tolist(), top.tolist(), strict=True):
            entry[task] = {"label": names[index], "index": index, "probability": probability}
    return out


def _msgpack_packb() -> Callable[[Any], bytes]:
    try:
        import msgpack
    except ImportError as exc:
        raise ConfigError(
            f"publisher.format: msgpack unavailable: {exc}; install 'edge-tc[msgpack]'"
        ) from None
    packb: Callable[[Any], bytes] = msgpack.packb
    return packb


def encoder(format: str) -> Callable[[Any], bytes]:
    """The payload encoder of a format ("json" or "msgpack")."""
    if format == "json":
        return lambda obj: json.dumps(obj, separators=(",", ":")).encode()
    if format == "msgpack":
        return _msgpack_packb()
    raise ConfigError(f"publisher.format: {format!r} is not one of ['json', 'msgpack']")


def decode_payload(payload: bytes) -> dict[str, Any]:
    """A payload as a dict, JSON or msgpack (told apart by the first byte)."""
    if payload[:1] == b"{":
        out: dict[str, Any] = json.loads(payload)
        return out
    import msgpack

    decoded: dict[str, Any] = msgpack.unpackb(payload)
    return decoded


class Publisher:
    """The PUB socket. `publish` sends one packet's messages and returns its latency (s).

    Used from one thread (the inference worker).
    """

    def __init__(
        self,
        config: PublisherConfig,
        on_sent: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._encode = encoder(config.format)
        self._topics = [(topic_of(t), None if t == TOPIC_ALL else t) for t in config.topics]
        self._on_sent = on_sent
        self._clock = clock
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, config.sndhwm)
        self._socket.setsockopt(zmq.LINGER, LINGER_MS)
        self._authenticator: Any = None
        if config.curve_secret_key_file:
            try:
                self._authenticator = enable_curve(self._context, self._socket, config)
            except ConfigError:
                self._socket.close(linger=0)
                self._context.term()
                raise
        try:
            self._socket.bind(config.bind)
        except zmq.ZMQError as exc:
            self._socket.close(linger=0)
            self._context.term()
            raise ConfigError(f"publisher.bind: cannot bind {config.bind!r}: {exc}") from None
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        # monotonic -> wall clock, fixed at start so arrival and publish times stay consistent
        self._wall_offset_ns = time.time_ns() - int(time.monotonic() * 1e9)

    def publish(self, item: Classified) -> float:
        """Send `item` on every configured topic, without blocking; its latency in seconds."""
        now = self._clock()
        latency = now - item.arrival_time
        labels = item.labels
        if labels is None:
            labels = label_entries({t: p[None] for t, p in item.probabilities.items()})[0]
        head: dict[str, Any] = {
            "packet_id": item.packet_id,
            "sample_start": item.sample_start,
            "sample_end": item.sample_end,
            "arrival_ns": int(item.arrival_time * 1e9) + self._wall_offset_ns,
            "published_ns": time.time_ns(),
            "latency_ms": round(latency * 1e3, 4),
        }
        if item.stages is not None:
            stages = {k: round(v * 1e3, 4) for k, v in item.stages.items()}
            stages["publish"] = round((latency - sum(item.stages.values())) * 1e3, 4)
            head["stages_ms"] = stages
        sent = 0
        for topic, task in self._topics:
            chosen = labels if task is None else {task: labels[task]}
            # PUB never blocks and never raises EAGAIN: at the HWM ZeroMQ drops the message.
            self._socket.send_multipart(
                [topic, self._encode({**head, "labels": chosen})], zmq.NOBLOCK
            )
            sent += 1
        if self._on_sent is not None:
            self._on_sent(sent)
        return latency

    def close(self) -> None:
        """Close the socket (queued messages get LINGER_MS to go) and the context."""
        if not self._socket.closed:
            if self._authenticator is not None:
                self._authenticator.stop()
            self._socket.close()
            self._context.term()


def enable_curve(
    context: zmq.Context[Any], socket: zmq.Socket[Any], config: PublisherConfig
) -> Any:
    """Make `socket` a CurveZMQ server (encrypted; clients need its public key).

    `curve_secret_key_file`: the server's secret certificate as `zmq.auth.create_certificates`
    writes it (`*.key_secret`). `curve_authorized_keys_dir`: a directory of client public
    certificates (`*.key`); only those clients may connect (a ZAP authenticator thread, returned
    for `stop()`), read once at start. Without it any client that has the server's public key
    may subscribe (encryption, no client authentication): returns None.
    """
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    key = "publisher.curve_secret_key_file"
    if not zmq.has("curve"):
        raise ConfigError(f"{key}: this libzmq ({zmq.zmq_version()}) has no CURVE support")
    try:
        public, secret = zmq.auth.load_certificate(config.curve_secret_key_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{key}: cannot read {config.curve_secret_key_file!r}: {exc}") from None
    if secret is None:
        raise ConfigError(
            f"{key}: {config.curve_secret_key_file!r} holds no secret key (a public certificate?"
            " want the server's *.key_secret)"
        )
    authenticator = None
    if config.curve_authorized_keys_dir:
        keys_dir = config.curve_authorized_keys_dir
        if not Path(keys_dir).is_dir() or not any(Path(keys_dir).glob("*.key")):
            raise ConfigError(
                f"publisher.curve_authorized_keys_dir: {keys_dir!r} is not a directory of client "
                "public certificates (*.key)"
            )
        authenticator = ThreadAuthenticator(context)
        authenticator.start()
        authenticator.configure_curve(domain="*", location=keys_dir)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return authenticator


@dataclass(frozen=True)
class Message:
    """A received message: its topic name without the prefix ("all", "phy", ...) and payload."""

    topic: str
    payload: dict[str, Any]


class Subscriber:
    """A SUB socket on the daemon's publisher; `recv(timeout_s)` -> Message or None."""

    def __init__(
        self,
        endpoint: str,
        topics: Iterable[str] = (TOPIC_ALL,),
        rcvhwm: int = 0,
        curve_server_key_file: str = "",
        curve_client_key_file: str = "",
    ) -> None:
        """`curve_server_key_file`: the publisher's public certificate (`*.key`) when it speaks
        CurveZMQ; `curve_client_key_file`: this client's secret certificate (`*.key_secret`,
        whose public half is in the publisher's authorized keys), else a fresh key pair."""
        self.topics = {topic_of(t) for t in topics}
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, rcvhwm)  # 0: unlimited (tests must not lose any)
        self._socket.setsockopt(zmq.LINGER, 0)
        if curve_server_key_file:
            self._curve_client(curve_server_key_file, curve_client_key_file)
        elif curve_client_key_file:
            raise ConfigError("a CURVE client key needs the server's public key file too")
        for topic in self.topics:
            self._socket.setsockopt(zmq.SUBSCRIBE, topic)
        # watched from before connect(): on loopback the handshake can be over before a
        # monitor attached later would see it (wait_connected then waited in vain, issue 17)
        self._monitor: zmq.Socket[Any] | None = self._socket.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED
        )
        self._socket.connect(endpoint)

    def _curve_client(self, server_key_file: str, client_key_file: str) -> None:
        import zmq.auth

        def load(path: str, what: str) -> tuple[bytes, bytes | None]:
            try:
                return zmq.auth.load_certificate(path)
            except (OSError, ValueError) as exc:
                self.close()
                raise ConfigError(f"{what}: cannot read {path!r}: {exc}") from None

        server_public, _ = load(server_key_file, "CURVE server key")
        if client_key_file:
            public, secret = load(client_key_file, "CURVE client key")
            if secret is None:
                self.close()
                raise ConfigError(f"CURVE client key: {client_key_file!r} holds no secret key")
        else:
            public, secret = zmq.curve_keypair()
        self._socket.curve_serverkey = server_public
        self._socket.curve_publickey = public
        self._socket.curve_secretkey = secret

    def recv(self, timeout_s: float) -> Message | None:
        """The next message of a subscribed topic (exact match), or None after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._socket.poll(int(left * 1000) + 1):
                return None
            frames = self._socket.recv_multipart()
            if len(frames) == 2 and frames[0] in self.topics:
                name = frames[0].decode()[len(TOPIC_PREFIX) :]
                return Message(name, decode_payload(frames[1]))

    def wait_connected(self, timeout_s: float = 5.0) -> None:
        """Block until the connection's ZeroMQ handshake is done (then subscriptions reach the
        publisher within a moment: PUB/SUB drops what it sends before). TimeoutError if not."""
        if self._monitor is not None:
            if not self._monitor.poll(int(timeout_s * 1000)):
                raise TimeoutError(f"no connection to the publisher within {timeout_s} s")
            self._monitor.recv_multipart()
            self._close_monitor()
        time.sleep(0.05)  # the SUBSCRIBE frames travel after the handshake

    def collect(self, count: int | None, idle_timeout_s: float) -> list[Message]:
        """Messages until `count` arrived (None: any number) or none came for `idle_timeout_s`."""
        out: list[Message] = []
        while count is None or len(out) < count:
            message = self.recv(idle_timeout_s)
            if message is None:
                break
            out.append(message)
        return out

    def _close_monitor(self) -> None:
        if self._monitor is not None:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None

    def close(self) -> None:
        if not self._socket.closed:
            if getattr(self, "_monitor", None) is not None:  # not made yet if CURVE keys failed
                self._close_monitor()
            self._socket.close()
            self._context.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "TOPIC_ALL",
    "TOPIC_PREFIX",
    "Classified",
    "Message",
    "Publisher",
    "PublisherConfig",
    "Subscriber",
    "decode_payload",
    "enable_curve",
    "encoder",
    "label_entries",
    "topic_of",
]

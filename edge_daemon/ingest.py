"""The source side of the daemon: `source.read` -> packet assembler -> model inputs, in the
daemon's own thread (`ingest = "thread"`) or in a process of its own (`ingest = "process"`).

Why a process: the source side runs for every chunk of samples (thousands a second when chunks
are 0.1-0.2 ms long, as a latency-first path wants), and most of its time is Python and small
NumPy calls that hold the GIL. In the daemon's process it takes the GIL from the worker (fusion
stage) and the publisher, whose packets then wait: on the demo's traffic on two cores the GIL was
held ~75 % of the time, ~37 % of it by this side (py-spy --gil; docs/daemon.md, "Threads and
processes"). In its own process it runs on another core and the daemon's threads keep the GIL.

`SourceLoop` is the loop both modes run. In process mode (`IngestProcess`, the daemon side, and
`ingest_main`, the child) the child owns the source, the assembler, the detector's health and
the rate check, and sends to the daemon over one pipe:

* `("packets", closed, meta, xs, follow)`: the packets one `feed` closed, their model inputs
  already made (xs: float32 (k, 2, 3000)), meta float64 (k, 3): start sample, end sample,
  arrival time (CLOCK_MONOTONIC, the same clock in both processes); follow: their PHY headers
  come next;
* `("headers", first, rows)`: the PHY headers (`decode_headers`, float32 (k, 7)) of the packets
  numbered first.. (in the order sent, from 0: the daemon's packet ids), decoded after their
  packets went out, for the fusion stage (which waits for them after the engine);
* `("metrics", values, samples)`: the child's source and detector metrics (every
  `edgetc_source_*` and `edgetc_detector_*` series) and the samples fed to its assembler so far,
  at least every `HEARTBEAT_S`: they are the child's heartbeat too, and the daemon's reader
  beats the systemd watchdog for "source" on each message;
* `("log", level, logger, text)`: the child's log records, logged again by the daemon (one
  stream, journald priorities, tests' capture);
* `("open", rate)`, `("finished",)`, `("crashed", text)`, `("done",)`.

The child ignores SIGINT and SIGTERM (systemd sends SIGTERM to the whole control group; the
daemon stops the child itself, after which the worker drains what was accepted) and exits when
the daemon's end of the pipe closes. A child that dies is a failed source thread: the daemon
stops and exits 1, as when the source thread raises.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np
from prometheus_client import CollectorRegistry

from edge_core.assembler import AssemblerConfig, Packet, PacketAssembler
from edge_core.errors import EdgeTcError, IQFormatError, SourceError
from edge_core.rx.headers import SAMPLE_RATE_HZ as HEADER_RATE_HZ
from edge_core.rx.headers import decode_headers
from edge_core.schema import INPUT_LENGTH
from edge_daemon.config import PacketGain
from edge_daemon.logs import LOGGER_NAME, get_logger
from edge_daemon.metrics import DaemonMetrics, DetectorHealth
from edge_daemon.rate_check import SampleRateCheck
from edge_daemon.sources.base import Source, SourceConfig, create_source
from edge_daemon.tuning import tune_thread

POLL_S = 0.1
"""Longest wait of the loop before it looks at the stop event again."""
HEARTBEAT_S = 0.1
"""The child sends its metrics (its heartbeat) at least this often."""
STOP_TIMEOUT_S = 5.0
"""How long the daemon waits for the child's last messages after asking it to stop."""
MIRRORED = ("source_", "detector_")
"""The DaemonMetrics attributes the child owns (by prefix): its values replace the daemon's."""

log = get_logger("source")


class StopFlag(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass
class SourceHooks:
    """What the loop tells its owner: beat once per round, the source opened at a rate, a
    finite source ended, packets closed at a time, the source was re-opened."""

    beat: Callable[[], None]
    opened: Callable[[float], None]
    finished: Callable[[], None]
    emit: Callable[[list[Packet], float], None]
    reconnected: Callable[[], None]


class SourceLoop:
    """`source.read` -> `assembler.feed` -> `hooks.emit`, with the detector's health and the
    rate check; a SourceError closes the source and re-opens it with back-off (counted
    `source_reconnects`); a chunk flagged `discontinuity` resets the assembler first; a
    malformed recording (IQFormatError) does not heal and raises."""

    def __init__(
        self,
        source: Source,
        assembler_config: AssemblerConfig,
        metrics: DaemonMetrics,
        hooks: SourceHooks,
        reopen_max_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.metrics = metrics
        self.hooks = hooks
        self._assembler_config = assembler_config
        self._reopen_max_s = reopen_max_s
        self._clock = clock
        self.assembler: PacketAssembler | None = None
        """Made at the source's first open, at its sample rate (known once open)."""
        self.health: DetectorHealth | None = None
        """The detector's health metrics and log lines (made with the assembler)."""
        self.rate_check: SampleRateCheck | None = None
        """Does the stream look like it is at the configured rate? (made with the assembler)"""
        self.samples_handled = 0
        """Samples of the chunks fed, emitted and counted by the detector's metrics so far."""
        self.messages_handled = 0
        """The source's message count (`source.messages`, where it keeps one) after the last
        chunk was fed, emitted and counted by the detector's metrics: every message up to it
        has been handled whole (a source may join several messages into one chunk)."""

    def _opened(self) -> None:
        source = self.source
        rate = float(source.sample_rate_hz)
        log.info("source %s open at %.0f samples/s", source.config.type, rate)
        if self.assembler is None:
            config = replace(self._assembler_config, sample_rate_hz=rate)
            self.assembler = PacketAssembler(config)
            self.health = DetectorHealth(
                self.metrics, get_logger("detector"), rate, config.threshold_db
            )
            self.rate_check = SampleRateCheck(
                self.metrics.source_rate_suspect, get_logger("source"), rate,
                config.output_length,
            )  # fmt: skip
        self.hooks.opened(rate)

    def run(self, stop: StopFlag) -> None:
        """Until `stop` is set or a finite source has given everything (then flushed)."""
        source, hooks = self.source, self.hooks
        backoff, is_open = POLL_S, False
        try:
            while not stop.is_set():
                hooks.beat()
                if not is_open:
                    try:
                        source.open()
                    except IQFormatError:  # a malformed recording does not heal: stop (exit 1)
                        raise
                    except SourceError as exc:
                        log.warning("source unavailable: %s; retrying in %.1f s", exc, backoff)
                        stop.wait(backoff)
                        backoff = min(2 * backoff, self._reopen_max_s)
                        continue
                    is_open, backoff = True, POLL_S
                    self._opened()
                assembler = self.assembler
                assert assembler is not None
                try:
                    chunk = source.read(POLL_S)
                except SourceError as exc:
                    log.warning("source lost: %s; re-opening", exc)
                    source.close()
                    is_open = False
                    assembler.reset()
                    self.metrics.source_reconnects.inc()
                    hooks.reconnected()
                    continue
                if chunk is None:
                    if source.finished:
                        hooks.emit(assembler.flush(), self._clock())
                        log.info("source finished: end of the recording")
                        hooks.finished()
                        return
                    continue
                if chunk.discontinuity:
                    assembler.reset()
                packets = assembler.feed(
                    chunk.samples, chunk.first_sample_index, chunk.arrival_time,
                    chunk.part_arrivals,
                )  # fmt: skip
                hooks.emit(packets, self._clock())
                assert self.health is not None and self.rate_check is not None
                self.health.update(assembler, chunk.samples, len(packets))
                self.rate_check.check(packets)
                self.samples_handled += chunk.samples.size
                self.messages_handled = getattr(source, "messages", self.messages_handled)
        finally:
            source.close()


# -- what the source side makes ------------------------------------------------------------
class MetricsEvents:
    """SourceEvents -> metrics, with one log line the first time each kind of loss happens."""

    def __init__(self, metrics: DaemonMetrics, logger: logging.Logger) -> None:
        self._metrics = metrics
        self._log = logger
        self._seen: set[str] = set()

    def dropped(self, reason: str, samples: int, messages: int = 0, nbytes: int = 0) -> None:
        self._metrics.source_dropped_samples.labels(reason).inc(samples)
        if messages:
            self._metrics.source_dropped_messages.labels(reason).inc(messages)
        if reason not in self._seen:
            self._seen.add(reason)
            what = f"{samples} samples"
            if messages:
                size = f"{nbytes}-byte message" if messages == 1 else f"{messages} messages"
                what = f"a {size}, {samples} samples' worth,"
            self._log.warning(
                "source dropped %s (%s); further drops are only counted in "
                "edgetc_source_dropped_samples_total{reason=%r}%s",
                what, reason, reason,
                " and edgetc_source_dropped_messages_total" if messages else "",
            )  # fmt: skip

    def overflow(self) -> None:
        self._metrics.source_overflows.inc()
        if "overflow" not in self._seen:
            self._seen.add("overflow")
            self._log.warning("source overflow: samples lost; counted in edgetc_source_overflows")

    def reconnected(self) -> None:
        self._metrics.source_reconnects.inc()
        self._log.info("source reconnected")


def packet_input(packet: Packet, gain: PacketGain = "unit_rms") -> np.ndarray:
    """A packet's complex IQ -> the model's input, float32 (2, 3000): row 0 I, row 1 Q.

    `gain` "unit_rms" scales the packet to unit mean power over its own samples (not the zero
    padding), the level the training packets have: the dataset generator models packets after a
    receiver's AGC (unit signal power, +-6 dB), while a stream carries them at their received
    level, tens of dB lower. "none" passes the samples as they are.
    """
    x = np.zeros((2, INPUT_LENGTH), np.float32)  # (2, L)
    iq = packet.iq[:INPUT_LENGTH]
    if gain == "unit_rms":
        used = iq[: max(1, min(packet.num_samples, iq.size))]
        power = float(np.vdot(used, used).real) / used.size
        if power > 0:
            iq = iq * np.float32(1.0 / np.sqrt(power))
    x[0, : iq.size] = iq.real
    x[1, : iq.size] = iq.imag
    return x


# -- metrics across the process boundary -------------------------------------------------------
def mirrored_metrics(metrics: DaemonMetrics) -> dict[str, Any]:
    """attribute name -> metric, for the metrics the source side owns."""
    return {
        name: value
        for name, value in vars(metrics).items()
        if name.startswith(MIRRORED) and value is not None
    }


def snapshot(metrics: DaemonMetrics) -> list[tuple[str, str, tuple[str, ...], float]]:
    """(attribute, kind, label values, value) of every series of the mirrored metrics."""
    out = []
    for name, metric in mirrored_metrics(metrics).items():
        label_names = tuple(metric._labelnames)
        for family in metric.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = tuple(sample.labels[k] for k in label_names)
                out.append((name, family.type, labels, float(sample.value)))
    return out


class MetricsMirror:
    """Applies the child's snapshots to the daemon's metrics: a gauge takes the child's value, a
    counter grows by what the child's grew since the last snapshot."""

    def __init__(self, metrics: DaemonMetrics) -> None:
        self._targets = mirrored_metrics(metrics)
        self._last: dict[tuple[str, tuple[str, ...]], float] = {}

    def apply(self, values: Iterable[tuple[str, str, tuple[str, ...], float]]) -> dict[str, float]:
        """Apply one snapshot; returns each counter's growth by attribute (summed over labels)."""
        grown: dict[str, float] = {}
        for name, kind, labels, value in values:
            metric = self._targets.get(name)
            if metric is None:
                continue
            series = metric.labels(*labels) if labels else metric
            if kind == "counter":
                delta = value - self._last.get((name, labels), 0.0)
                self._last[(name, labels)] = value
                if delta > 0:
                    series.inc(delta)
                    grown[name] = grown.get(name, 0.0) + delta
            else:
                series.set(value)
        return grown


# -- the child ---------------------------------------------------------------------------------
class _PipeLogHandler(logging.Handler):
    """The child's log records, sent to the daemon to be logged there."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            self._send(("log", record.levelno, record.name, text))
        except (BrokenPipeError, EOFError, OSError):
            pass  # the daemon is gone; the child ends at its next send


@dataclass(frozen=True)
class IngestSettings:
    """What the child needs (pickled to it): the source and assembler configs, the packet gain,
    the back-off limit, CPU affinity and real-time priority, the log level."""

    source: SourceConfig
    assembler: AssemblerConfig
    packet_gain: PacketGain
    reopen_max_s: float
    cpus: tuple[int, ...] = ()
    realtime_priority: int = 0
    log_level: str = "info"
    headers: bool = False
    """Decode each packet's PHY header here (`decode_headers`, for the fusion stage): its NumPy
    work then runs beside the daemon's worker, not in it."""


def packet_inputs(packets: list[Packet], gain: PacketGain) -> tuple[np.ndarray, np.ndarray]:
    """meta float64 (k, 3) [start, end, arrival (NaN: unknown)] and inputs float32 (k, 2, L)."""
    k = len(packets)
    meta = np.empty((k, 3), np.float64)
    xs = np.empty((k, 2, INPUT_LENGTH), np.float32)
    for i, packet in enumerate(packets):
        arrival = packet.arrival_time if packet.arrival_time is not None else np.nan
        meta[i] = (packet.start_sample, packet.end_sample, arrival)
        xs[i] = packet_input(packet, gain)
    return meta, xs


def ingest_main(conn: Connection, settings: IngestSettings, stop_conn: Connection) -> None:
    """The child process: run the source side until the daemon asks it to stop (or is gone),
    sending what it makes."""
    stop = PipeFlag(stop_conn)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    lock = threading.Lock()  # prometheus' HTTP thread is not here, but a source may log from one

    def send(message: tuple[Any, ...]) -> None:
        with lock:
            conn.send(message)

    root = logging.getLogger(LOGGER_NAME)
    root.setLevel(settings.log_level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_PipeLogHandler(send))
    root.propagate = False
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addHandler(_PipeLogHandler(send))

    metrics = DaemonMetrics(CollectorRegistry())
    last_beat = [0.0]
    loops: list[SourceLoop] = []

    def fed() -> int:  # handled whole: the metrics snapshot sent with it counts them too
        return loops[0].samples_handled if loops else 0

    def beat(force: bool = False) -> None:
        now = time.monotonic()
        if force or now - last_beat[0] >= HEARTBEAT_S:
            last_beat[0] = now
            send(("metrics", snapshot(metrics), fed()))

    rate = [0.0]
    sent = [0]  # packets sent so far: the next one's number (the daemon's packet_id)

    def opened(sample_rate_hz: float) -> None:
        rate[0] = sample_rate_hz
        send(("open", sample_rate_hz))

    def emit(packets: list[Packet], closed: float) -> None:
        if packets:
            meta, xs = packet_inputs(packets, settings.packet_gain)
            # the headers follow in their own message: the packets are on their way (and in
            # the engine) while they are decoded; without them (another rate than 20 Msps) the
            # worker decodes, and fails the batch naming the rate, as in thread mode
            follow = settings.headers and rate[0] == HEADER_RATE_HZ
            send(("packets", closed, meta, xs, follow))
            if follow:
                headers = decode_headers((xs[:, 0] + 1j * xs[:, 1]).astype(np.complex64))
                send(("headers", sent[0], headers))
            sent[0] += len(packets)
        beat()

    try:
        applied = tune_thread("source", settings.cpus, settings.realtime_priority, log)
        if applied:
            log.info("ingest process: %s", ", ".join(applied))
        source = create_source(settings.source, MetricsEvents(metrics, get_logger("source")))
        hooks = SourceHooks(
            beat=beat,
            opened=opened,
            finished=lambda: send(("finished",)),
            emit=emit,
            reconnected=lambda: None,
        )
        loops.append(SourceLoop(source, settings.assembler, metrics, hooks, settings.reopen_max_s))
        loops[0].run(stop)
        beat(force=True)
        send(("done",))
    except (BrokenPipeError, EOFError):
        return  # the daemon is gone
    except BaseException as exc:
        try:
            beat(force=True)
            send(("crashed", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        except (BrokenPipeError, EOFError, OSError):
            pass
    finally:
        conn.close()


# -- the daemon's side -------------------------------------------------------------------------
class IngestDied(EdgeTcError):
    """The ingest process crashed, died, or did not start."""


class IngestProcess:
    """The child process and the daemon's end of its pipe. `read(on_message)` hands each message
    to the daemon until the child is done; `request_stop()` asks it to finish."""

    def __init__(self, settings: IngestSettings) -> None:
        ctx = multiprocessing.get_context("spawn")  # safe with the daemon's threads running
        # two pipes, no semaphore (no resource tracker process, nothing in /dev/shm): data from
        # the child, and a stop pipe that also reads as "stop" when the daemon is gone
        self._conn, child_conn = ctx.Pipe(duplex=False)
        stop_r, self._stop_w = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=ingest_main, args=(child_conn, settings, stop_r),
            name="edge-tc-ingest", daemon=True,
        )  # fmt: skip
        self.process.start()
        child_conn.close()
        stop_r.close()
        self._stop_asked_at: float | None = None

    def request_stop(self) -> None:
        if self._stop_asked_at is None:
            self._stop_asked_at = time.monotonic()
            try:
                self._stop_w.send_bytes(b"stop")
            except OSError:
                pass  # the child is gone; poll() says how

    def poll(self, timeout_s: float) -> tuple[Any, ...] | None:
        """The next message within `timeout_s`, or None; IngestDied if the child is gone
        without saying done, or does not finish within STOP_TIMEOUT_S of a stop request."""
        try:
            if self._conn.poll(timeout_s):
                message: tuple[Any, ...] = self._conn.recv()
                return message
        except (EOFError, OSError):
            self.process.join(1.0)
            raise IngestDied(
                f"the ingest process ended without finishing (exit code {self.process.exitcode})"
            ) from None
        asked = self._stop_asked_at
        if asked is not None and time.monotonic() - asked > STOP_TIMEOUT_S:
            self.kill()
            raise IngestDied(f"the ingest process did not stop within {STOP_TIMEOUT_S:g} s")
        return None

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(1.0)

    def close(self) -> None:
        self.request_stop()
        self.process.join(STOP_TIMEOUT_S)
        self.kill()
        self._conn.close()
        self._stop_w.close()


class PipeFlag:
    """The child's stop flag: set once the daemon writes to its end of the stop pipe, or
    closes it (the daemon exited or died: the child must not outlive it)."""

    CHECK_EVERY_S = 0.005
    """`is_set` looks at the pipe at most this often (the source loop asks once per chunk, up to
    ~10,000 times a second; a poll is a system call): stopping waits at most this long more."""

    def __init__(self, conn: Connection, clock: Callable[[], float] = time.monotonic) -> None:
        self._conn = conn
        self._set = False
        self._clock = clock
        self._next_check = 0.0

    def is_set(self) -> bool:
        if self._set:
            return True
        now = self._clock()
        if now < self._next_check:
            return False
        self._next_check = now + self.CHECK_EVERY_S
        return self.wait(0)

    def wait(self, timeout: float | None = None) -> bool:
        if not self._set and self._conn.poll(timeout):
            self._set = True
        return self._set


__all__ = [
    "HEARTBEAT_S",
    "IngestDied",
    "IngestProcess",
    "IngestSettings",
    "MetricsEvents",
    "MetricsMirror",
    "PipeFlag",
    "SourceHooks",
    "SourceLoop",
    "ingest_main",
    "mirrored_metrics",
    "packet_input",
    "packet_inputs",
    "snapshot",
]

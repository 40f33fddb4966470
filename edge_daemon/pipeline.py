"""The daemon's data path: source -> packet assembler -> dynamic batcher -> engine -> publisher.

Four threads share one stop event, and every loop waits on it (or on a queue) with a timeout:

* source: `source.read` -> `assembler.feed` -> `batcher.put`. Never blocked: a full queue drops
  by the configured policy (counted `dropped{reason="queue_full"}`). A SourceError closes the
  source and re-opens it with back-off (counted `source_reconnects`); a chunk flagged
  `discontinuity` resets the assembler first.
* worker: `batcher.next_batch` -> `engine.infer` -> a small hand-over queue (it blocks: the
  worker is not the source). An engine exception fails that batch (counted `failed`, logged
  once per streak with its cause) and the worker goes on; `engine_reload_after_failures`
  failed batches in a row reload the engine (counted).
* publisher: `publisher.publish` per packet, then the metrics (classified, latency per task
  from the arrival of the packet's last sample to its publication, max_exec violations,
  labels, batch size, queue depth). Its own thread so that encoding and sending (Python, under
  the GIL) overlap the next batch's inference (native, without it).
* power (when a meter is readable): reads it every `power.interval_s`; the meter integrates
  energy, and joules per classified packet follow each reading.

Source, worker and publisher each beat the systemd watchdog (sdnotify.py) once per round: one
stuck in a call (an engine call that never returns) stops WATCHDOG=1 and is named in the log.
When the bundle has a fusion stage (edge_core/fusion.py), the publisher thread applies it to
each inferred batch before publishing it (app_type/app from the CNN's classes, duration and PHY
header): its NumPy work, under the GIL, then overlaps the worker's next engine call, which
runs without it (measured: saturation 0.50 -> 0.58 of the bare engine, tools/bench_daemon.py).

`stop()`: the source stops first; the worker publishes what was accepted until the queue is
empty or `drain_timeout_s` has passed; what is left is counted `dropped{reason="shutdown"}`.
At rest, detected = classified + failed + dropped (all reasons).
"""

from __future__ import annotations

import gc
import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from edge_core.assembler import Packet, PacketAssembler
from edge_core.bundle import Bundle, load_manifest
from edge_core.errors import ConfigError, EdgeTcError
from edge_core.fusion import Fusion, load_fusion
from edge_core.schema import INPUT_LENGTH, TASK_BY_NAME
from edge_daemon.batcher import DynamicBatcher
from edge_daemon.config import DaemonConfig, PacketGain
from edge_daemon.ingest import (
    IngestDied,
    IngestProcess,
    IngestSettings,
    MetricsEvents,
    MetricsMirror,
    SourceHooks,
    SourceLoop,
    packet_input,
    packet_inputs,
)
from edge_daemon.logs import get_logger
from edge_daemon.metrics import DaemonMetrics, DetectorHealth, MetricsServer
from edge_daemon.power import (
    NoPowerMeter,
    PowerMeter,
    PowerReading,
    PowerUnavailable,
    open_power_meter,
)
from edge_daemon.publisher import Classified, Publisher, label_entries
from edge_daemon.rate_check import SampleRateCheck
from edge_daemon.sdnotify import Notifier, NullNotifier
from edge_daemon.sources.base import Source, create_source
from edge_daemon.stages import StageRecorder
from edge_daemon.tuning import tune_thread
from engines.base import Engine, load

POLL_S = 0.1
"""Longest wait of any loop before it looks at the stop event again."""
OUTBOX_BATCHES = 4
"""Inferred batches waiting for the publisher thread (the worker waits when it is full)."""
HEADERS_WAIT_S = 0.05
"""How long the worker waits for PHY headers the ingest process has still to send."""
RECENT_LATENCIES = 8192
"""Latencies kept for live percentiles (`Daemon.recent_latencies`)."""

log = get_logger("daemon")


@dataclass(eq=False)
class QueuedPacket:
    """A detected packet waiting for the engine, numbered in detection order, with its model
    input already made (by the source thread: the worker is the busier one)."""

    packet_id: int
    start_sample: int
    end_sample: int
    arrival_time: float
    x: np.ndarray  # (2, L) float32, as `packet_input` makes it
    closed_time: float = float("nan")
    """When the assembler returned it (the end of its `assemble` stage, edge_daemon/stages.py)."""
    headers: np.ndarray | None = None
    """Its PHY header fields (7,) float32 when the ingest process decoded them (fusion stage)."""
    headers_ready: threading.Event | None = None
    """Set when `headers` came (ingest process); None: none are coming, the worker decodes."""


@dataclass
class Totals:
    """Packet counts since start, read by the demo table and tests (the metrics say the same)."""

    detected: int = 0
    classified: int = 0
    failed: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"queue_full": 0, "shutdown": 0})
    engine_failures: int = 0
    engine_reloads: int = 0
    source_reconnects: int = 0
    energy_joules: float | None = None

    @property
    def accounted(self) -> int:
        """classified + failed + dropped: equals `detected` once nothing is in flight."""
        return self.classified + self.failed + sum(self.dropped.values())


def resolve_packet_gain(config: DaemonConfig, bundle: Bundle | None = None) -> PacketGain:
    """`packet_gain = "bundle"` -> the level the bundle's manifest declares (input.normalization);
    with no bundle directory (an engine given directly) the synthetic training level, unit_rms.
    `bundle`: config.bundle already opened (else it is opened here)."""
    if config.packet_gain != "bundle":
        return config.packet_gain
    if not config.bundle:
        return "unit_rms"
    bundle = bundle or load_manifest(config.bundle)
    kind = bundle.manifest["input"]["normalization"]["kind"]
    return "unit_rms" if kind == "unit_rms" else "none"


def packets_to_batch(packets: list[Packet], gain: PacketGain = "unit_rms") -> np.ndarray:
    """`packet_input` of each packet, stacked: float32 (n, 2, 3000)."""
    if not packets:
        return np.zeros((0, 2, INPUT_LENGTH), np.float32)
    return np.stack([packet_input(p, gain) for p in packets])  # (n, 2, L)


class Daemon:
    """The running service. `start()` loads everything (errors raise here), `stop()` drains.

    Tests inject `source`, `engine_factory` and `power_meter`; otherwise they come from the
    config. `registry`: where the metrics go (a fresh one by default).
    """

    def __init__(
        self,
        config: DaemonConfig,
        *,
        registry: CollectorRegistry | None = None,
        source: Source | None = None,
        engine_factory: Callable[[], Engine] | None = None,
        power_meter: PowerMeter | None = None,
        clock: Callable[[], float] = time.monotonic,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        # systemd notify (edge_daemon/sdnotify.py): READY once the source is open, a watchdog
        # beat from each loop, nothing when not under systemd.
        self.notifier: Notifier = notifier if notifier is not None else NullNotifier()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = DaemonMetrics(self.registry)
        self.totals = Totals()
        self.events = MetricsEvents(self.metrics, get_logger("source"))
        self._injected = source is not None
        if source is None:
            if config.source is None:
                raise EdgeTcError("no source configured (a [source] table)")
            source = create_source(config.source, self.events)
        self.source = source
        self._engine_factory = engine_factory or (lambda: load(config.bundle, config.engine))
        self._power_meter = power_meter
        self._clock = clock
        self._loop: SourceLoop | None = None
        """The source side when it runs in this process (`ingest = "thread"`)."""
        self._ingest: IngestProcess | None = None
        """The ingest process when the source side runs there (`ingest = "process"`)."""
        self._samples_fed = 0
        self._awaiting_headers: dict[int, QueuedPacket] = {}
        """Queued packets whose PHY headers the ingest process has still to send, by id."""
        self._headers_late_logged = False
        b = config.batcher
        self.batcher: DynamicBatcher[QueuedPacket] = DynamicBatcher(
            b.max_batch, b.max_queue_delay_ms / 1e3, b.queue_size, b.drop_policy, clock,
            on_drop=self._on_queue_drop,
        )  # fmt: skip
        self.stop_event = threading.Event()
        self.source_done = threading.Event()
        """Set when a finite source (a recording without loop) has given everything."""
        self.source_open = threading.Event()
        """Set when the source first opened (the demo's loop is generated by then)."""
        self.recent_latencies: deque[float] = deque(maxlen=RECENT_LATENCIES)
        self.stages = StageRecorder(self.registry)
        """Per-packet stage times: edgetc_stage_latency_seconds{stage} and recent rows."""
        self.failure: str | None = None
        """Why a thread died (the daemon then stops and `edge-tc run` exits 1)."""
        self.power_status: str | None = None
        """Why there are no power figures (no meter, a failed meter); None while they come."""
        self.engine: Engine | None = None
        self.fusion: Fusion | None = None
        """The bundle's fusion stage (app_type/app from the CNN, duration and PHY header)."""
        self.publisher: Publisher | None = None
        self.metrics_server: MetricsServer | None = None
        self._threads: list[threading.Thread] = []
        self._source_thread: threading.Thread | None = None
        self._worker_thread: threading.Thread | None = None
        self._publisher_thread: threading.Thread | None = None
        self._outbox: queue.Queue[
            tuple[
                list[QueuedPacket],
                dict[str, np.ndarray],
                tuple[float, float, float],
                np.ndarray | None,
            ]
        ] = queue.Queue(OUTBOX_BATCHES)
        self._meter: PowerMeter | None = None
        self._next_id = 0
        self._packet_gain: PacketGain = "unit_rms"  # resolved in start()
        self._failure_streak = 0
        self._fusion_failures = 0
        self._started = False
        self._stopped = False
        self._switch_interval = sys.getswitchinterval()

    @property
    def assembler(self) -> PacketAssembler | None:
        """The packet assembler (in this process only: `ingest = "thread"`), once the source
        opened."""
        return None if self._loop is None else self._loop.assembler

    @property
    def health(self) -> DetectorHealth | None:
        """The detector's health (with the assembler)."""
        return None if self._loop is None else self._loop.health

    @property
    def rate_check(self) -> SampleRateCheck | None:
        """The sample rate check (with the assembler)."""
        return None if self._loop is None else self._loop.rate_check

    @property
    def samples_fed(self) -> int:
        """Samples the source side has handled whole so far (fed to the packet assembler, its
        packets emitted, counted by the detector's metrics), wherever it runs (in process mode
        as of the ingest process's last report: every packet cut from them has reached the
        queue, and the metrics mirrored with that report count them)."""
        if self._loop is not None:
            return self._loop.samples_handled
        return self._samples_fed

    @property
    def messages_handled(self) -> int | None:
        """`ingest = "thread"`: the source's messages handled whole (`SourceLoop`); None in
        process mode (there `samples_fed` is reported once a chunk is handled)."""
        return None if self._loop is None else self._loop.messages_handled

    @property
    def ingest_mode(self) -> str:
        """Where the source side runs: "thread", or "process" when configured and the source
        came from the config (an injected source object stays in this process)."""
        return "process" if self.config.ingest == "process" and not self._injected else "thread"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the engine, bind the publisher and metrics, start the threads."""
        if self._started:
            raise EdgeTcError("daemon already started")
        self._started = True
        try:
            self.engine = self._load_engine()
            # opened once here (every file's sha256 checked) for the fusion stage and the gain
            bundle = load_manifest(self.config.bundle) if self.config.bundle else None
            self.fusion = self._load_fusion(bundle)
            self._packet_gain = resolve_packet_gain(self.config, bundle)
            self.publisher = Publisher(self.config.publisher, self.metrics.messages_published.inc)
            m = self.config.metrics
            if m.enabled:
                try:
                    self.metrics_server = MetricsServer(self.registry, m.addr, m.port)
                except OSError as exc:
                    raise ConfigError(
                        f"metrics: cannot listen on {m.addr}:{m.port}: {exc}"
                    ) from None
        except BaseException:
            self._close_outputs()
            raise
        info = self.engine.info
        log.info(
            "started: source %s, engine %s %s on %s (%s), bundle %s, packet gain %s, "
            "publishing on %s%s",
            self.source.config.type, info.backend, info.precision, info.device, info.model_file,
            self.config.bundle or "(given)", self._packet_gain, self.publisher.endpoint,
            f", metrics on http://{m.addr}:{self.metrics_server.port}/metrics"
            if self.metrics_server else ", metrics off",
        )  # fmt: skip
        source_target = self._source_loop
        if self.ingest_mode == "process":
            assert self.config.source is not None
            settings = IngestSettings(
                self.config.source, self.config.assembler, self._packet_gain,
                self.config.source_reopen_max_s, self.config.source_cpus,
                self.config.realtime_priority, self.config.log_level,
                headers=self.fusion is not None and self.fusion.needs_headers(),
            )  # fmt: skip
            try:
                self._ingest = IngestProcess(settings)
            except BaseException:
                self._close_outputs()
                raise
            source_target = self._ingest_loop
        for name, target in (
            ("edge-tc-source", source_target),
            ("edge-tc-worker", self._worker_loop),
            ("edge-tc-publisher", self._publisher_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
        self._source_thread, self._worker_thread, self._publisher_thread = self._threads
        self._meter = self._open_power()
        if self._meter is not None:
            meter = self._meter
            self._threads.append(
                threading.Thread(
                    target=lambda: self._power_loop(meter), name="edge-tc-power", daemon=True
                )
            )
        # What exists now (the engine, the bundle, imported modules) lives as long as the daemon:
        # out of the collector's sight, a full collection scans only what the data path makes,
        # and a collection pause stays well below a packet's budget.
        gc.collect()
        gc.freeze()
        self._switch_interval = sys.getswitchinterval()
        if self.config.switch_interval_ms > 0:
            # A thread that wants the GIL waits up to this long for the one holding it (Python's
            # default is 5 ms, more than a packet's whole budget): docs/daemon.md, "Threads".
            sys.setswitchinterval(self.config.switch_interval_ms / 1e3)
        for thread in self._threads:
            thread.start()

    def stop(self) -> Totals:
        """Stop the source, drain the queue within `drain_timeout_s`, close everything."""
        if self._stopped or not self._started:
            return self.totals
        self._stopped = True
        self.stop_event.set()
        deadline = time.monotonic() + self.config.drain_timeout_s + 5.0
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                log.error("thread %s did not stop in time", thread.name)
        if self._meter is not None:
            self._read_power(self._meter)  # the energy up to the end of the drain
            self._meter.close()
        self._close_outputs()
        sys.setswitchinterval(self._switch_interval)
        gc.unfreeze()
        t = self.totals
        log.info(
            "stopped: detected %d, classified %d, failed %d, dropped %s",
            t.detected, t.classified, t.failed, t.dropped,
        )  # fmt: skip
        return t

    def _close_outputs(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
        if self.engine is not None:
            self.engine.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None

    def _load_engine(self) -> Engine:
        engine = self._engine_factory()
        # Every batch size the batcher can hand out, largest first, so first-call costs are paid
        # before READY. (The ~25 MiB RSS step a soak saw minutes in, at the first backlog, was
        # ONNX Runtime's memory patterns, which one warm-up per size did not cover: the engine
        # turns them off for a dynamic batch, engines/onnxruntime.py, issue 17.)
        largest = min(self.config.batcher.max_batch, engine.input_spec.max_batch)
        for size in range(largest, 0, -1):
            engine.warmup(size)
        self.metrics.set_engine_info(engine.info, str(Path(self.config.bundle)))
        return engine

    def _load_fusion(self, bundle: Bundle | None) -> Fusion | None:
        """The bundle's fusion stage, measured with this daemon's pre-trigger; None without."""
        if not self.config.fusion or bundle is None or bundle.fusion is None:
            return None
        fusion = load_fusion(bundle.fusion, bundle.tasks)
        fusion = replace(fusion, pre_trigger_samples=self.config.assembler.pre_trigger_samples)
        log.info("fusion: %s from the CNN, packet duration and PHY header (%s)",
                 ", ".join(fusion.tasks), bundle.fusion.name)  # fmt: skip
        return fusion

    # -- source thread --------------------------------------------------------------------------
    def _on_queue_drop(self, item: QueuedPacket) -> None:
        self.metrics.dropped.labels("queue_full").inc()
        self.totals.dropped["queue_full"] += 1

    def _tune(self, name: str, pin: bool = True) -> None:
        """This thread's CPU affinity (unless not `pin`) and real-time priority
        (edge_daemon/tuning.py)."""
        c = self.config
        cpus = {"source": c.source_cpus, "worker": c.worker_cpus, "publisher": c.publisher_cpus}
        applied = tune_thread(name, cpus[name] if pin else (), c.realtime_priority, log)
        if applied:
            log.info("%s thread: %s", name, ", ".join(applied))

    def _source_hooks(self, emit: Callable[[list[Packet], float], None]) -> SourceHooks:
        def opened(rate: float) -> None:
            self.notifier.ready(f"source {self.source.config.type} open at {rate:.0f} samples/s")
            self.source_open.set()

        def reconnected() -> None:
            self.totals.source_reconnects += 1

        return SourceHooks(
            beat=lambda: self.notifier.beat("source"), opened=opened,
            finished=self.source_done.set, emit=emit, reconnected=reconnected,
        )  # fmt: skip

    def _source_loop(self) -> None:
        """`ingest = "thread"`: the source side (edge_daemon/ingest.py) in this thread."""
        self._tune("source")
        try:
            loop = SourceLoop(
                self.source, self.config.assembler, self.metrics,
                self._source_hooks(self._enqueue), self.config.source_reopen_max_s, self._clock,
            )  # fmt: skip
            self._loop = loop
            loop.run(self.stop_event)
        except Exception as exc:
            self._crashed("source", exc)

    def _ingest_loop(self) -> None:
        """`ingest = "process"`: the source side runs in the ingest process; this thread takes
        what it sends (packets to the batcher, metrics, log records) and stops it on stop."""
        ingest = self._ingest
        assert ingest is not None
        # this thread is on every packet's path too: the real-time priority (the CPUs of
        # `source_cpus` are the ingest process's)
        self._tune("source", pin=False)
        hooks = self._source_hooks(self._enqueue)
        mirror = MetricsMirror(self.metrics)
        try:
            while True:
                if self.stop_event.is_set():
                    ingest.request_stop()
                message = ingest.poll(POLL_S)
                if message is None:
                    continue
                kind = message[0]
                hooks.beat()  # the child sends at least every HEARTBEAT_S while it loops
                if kind == "packets":
                    _, closed, meta, xs, follow = message
                    self._enqueue_inputs(meta, xs, closed, follow)
                elif kind == "headers":
                    _, first, rows = message
                    for i, row in enumerate(rows):
                        waiting = self._awaiting_headers.pop(first + i, None)
                        if waiting is not None:
                            waiting.headers = row
                            assert waiting.headers_ready is not None
                            waiting.headers_ready.set()
                elif kind == "metrics":
                    self._samples_fed = message[2]
                    grown = mirror.apply(message[1])
                    self.totals.source_reconnects += int(grown.get("source_reconnects", 0))
                elif kind == "log":
                    _, level, name, text = message
                    logging.getLogger(name).log(level, "%s", text)
                elif kind == "open":
                    hooks.opened(message[1])
                elif kind == "finished":
                    hooks.finished()
                elif kind == "crashed":
                    log.error("ingest process: %s", message[2].rstrip())
                    raise IngestDied(f"ingest process failed: {message[1]}")
                elif kind == "done":
                    return
        except Exception as exc:
            self._crashed("source", exc)
        finally:
            ingest.close()

    def _enqueue(self, packets: list[Packet], closed: float | None = None) -> None:
        """Queue packets the assembler closed at `closed` (now when None)."""
        meta, xs = packet_inputs(packets, self._packet_gain)
        self._enqueue_inputs(meta, xs, closed)

    def _enqueue_inputs(
        self, meta: np.ndarray, xs: np.ndarray, closed: float | None, follow: bool = False
    ) -> None:
        """Queue packets by their model inputs xs (k, 2, L) and meta (k, 3): start and end
        sample, arrival time (NaN: unknown, then `closed`, when the assembler closed them);
        follow: their PHY headers come later (the ingest process's "headers" message)."""
        if closed is None:
            closed = self._clock()
        k = len(meta)
        if k:
            self.metrics.detected.inc(k)
            self.totals.detected += k
            for (start, end, arrival), x in zip(meta.tolist(), xs, strict=True):
                arrival = closed if arrival != arrival else arrival  # NaN: not known
                queued = QueuedPacket(self._next_id, int(start), int(end), arrival, x, closed)
                if follow:
                    queued.headers_ready = threading.Event()
                    self._awaiting_headers[self._next_id] = queued
                self.batcher.put(queued)
                self._next_id += 1
        self.metrics.queue_depth.set(self.batcher.depth)

    # -- worker thread --------------------------------------------------------------------------
    def _crashed(self, where: str, exc: Exception) -> None:
        """A bug or an unexpected error in a thread: log it and stop the daemon (exit 1)."""
        log.exception("%s thread failed; stopping", where)
        self.failure = f"{where} thread failed: {type(exc).__name__}: {exc}"
        self.stop_event.set()

    def _worker_loop(self) -> None:
        self._tune("worker")
        try:
            self._work()
        except Exception as exc:
            self._crashed("worker", exc)
            self._count_left_over()

    def _work(self) -> None:
        source_thread = self._source_thread
        assert source_thread is not None
        drain_deadline: float | None = None
        while True:
            self.notifier.beat("worker")
            if self.stop_event.is_set() and drain_deadline is None:
                drain_deadline = time.monotonic() + self.config.drain_timeout_s
            draining = drain_deadline is not None
            batch = self.batcher.next_batch(POLL_S, flush=draining)
            if batch:
                self._process(batch)
            self.metrics.queue_depth.set(self.batcher.depth)
            if drain_deadline is not None:
                if not batch and not source_thread.is_alive():
                    break
                if time.monotonic() > drain_deadline:
                    break
        self._count_left_over()

    def _count_left_over(self) -> None:
        left = self.batcher.drain()
        if left:
            log.warning("shutdown: %d queued packets not classified (drain deadline)", len(left))
            self.metrics.dropped.labels("shutdown").inc(len(left))
            self.totals.dropped["shutdown"] += len(left)
        self.metrics.queue_depth.set(0)

    def _process(self, batch: list[QueuedPacket]) -> None:
        taken = self._clock()
        n = len(batch)
        self.metrics.batch_size.observe(n)
        x = np.stack([q.x for q in batch])  # (n, 2, L)
        stacked = self._clock()
        try:
            if self.engine is None:
                raise EdgeTcError("no engine loaded (the last reload failed)")
            probs = self.engine.infer(x)
        except Exception as exc:
            self._engine_failed(n, exc)
            return
        inferred = self._clock()
        if self._failure_streak:
            log.info("engine recovered after %d failed batches", self._failure_streak)
            self._failure_streak = 0
        # the fusion stage runs in the publisher thread (`_deliver`): its NumPy work (under the
        # GIL) overlaps the next batch's engine call (without it)
        fuse = x if self.fusion is not None else None
        self._hand_over(batch, probs, (taken, stacked, inferred), fuse)

    def _headers_of(self, batch: list[QueuedPacket]) -> np.ndarray | None:
        """The batch's PHY headers (n, 7) from the ingest process, waiting up to
        HEADERS_WAIT_S for those still on their way (decoded there after their packets went
        out, they come while the engine runs); None: the fusion stage decodes them itself."""
        deadline = None
        for q in batch:
            ready = q.headers_ready
            if ready is None:
                return None
            if not ready.is_set():
                deadline = deadline or time.monotonic() + HEADERS_WAIT_S
                if not ready.wait(max(0.0, deadline - time.monotonic())):
                    self._awaiting_headers.pop(q.packet_id, None)
                    if not self._headers_late_logged:
                        self._headers_late_logged = True
                        log.warning(
                            "PHY headers from the ingest process late (> %g ms): the worker "
                            "decodes them itself (logged once)", HEADERS_WAIT_S * 1e3,
                        )  # fmt: skip
                    return None
        return np.stack([q.headers for q in batch])  # type: ignore[misc]

    def _hand_over(
        self,
        batch: list[QueuedPacket],
        probs: dict[str, np.ndarray],
        times: tuple[float, float, float] | None = None,
        fuse: np.ndarray | None = None,
    ) -> None:
        """Queue an inferred batch for the publisher thread, waiting while it is busy.

        `times`: when the worker took the batch, stacked its input and had the engine's answer.
        `fuse`: the batch's input (n, 2, L) when the fusion stage is still to run on it.
        """
        publisher_thread = self._publisher_thread
        assert publisher_thread is not None
        if times is None:
            now = self._clock()
            times = (now, now, now)
        while True:
            try:
                self._outbox.put((batch, probs, times, fuse), timeout=POLL_S)
                return
            except queue.Full:
                if not publisher_thread.is_alive():
                    raise EdgeTcError("the publisher thread is gone") from None
                # waiting for the publisher is not being stuck: the publisher's own beat
                # stops the watchdog if it is the one that hangs, and the log names it
                self.notifier.beat("worker")

    # -- publisher thread -----------------------------------------------------------------------
    def _publisher_loop(self) -> None:
        worker_thread = self._worker_thread
        assert worker_thread is not None
        self._tune("publisher")
        try:
            while True:
                self.notifier.beat("publisher")
                try:
                    batch, probs, times, fuse = self._outbox.get(timeout=POLL_S)
                except queue.Empty:
                    if worker_thread.is_alive():
                        continue
                    while not self._outbox.empty():  # the worker's last batches
                        self._deliver(*self._outbox.get_nowait())
                    return
                self._deliver(batch, probs, times, fuse)
        except Exception as exc:
            self._crashed("publisher", exc)

    def _deliver(
        self,
        batch: list[QueuedPacket],
        probs: dict[str, np.ndarray],
        times: tuple[float, float, float],
        fuse: np.ndarray | None,
    ) -> None:
        """The fusion stage on an inferred batch (when `fuse`, its input), then `_publish`. A
        fusion error fails the batch (counted `failed`, logged once per streak); the engine is
        not to blame and is not reloaded."""
        if fuse is not None:
            assert self.fusion is not None
            n = len(batch)
            try:
                lengths = np.fromiter((q.end_sample - q.start_sample for q in batch), np.int64, n)
                probs = self.fusion.apply(probs, fuse, lengths, self._headers_of(batch))
            except Exception as exc:
                self.metrics.failed.inc(n)
                self.totals.failed += n
                self._fusion_failures += 1
                if self._fusion_failures == 1:
                    log.error(
                        "fusion stage failed on a batch of %d packets: %s: %s (counted in "
                        "edgetc_packets_failed_total)", n, type(exc).__name__, exc,
                    )  # fmt: skip
                return
            if self._fusion_failures:
                log.info("fusion stage recovered after %d failed batches", self._fusion_failures)
                self._fusion_failures = 0
        self._publish(batch, probs, times)

    def _publish(
        self,
        batch: list[QueuedPacket],
        probs: dict[str, np.ndarray],
        times: tuple[float, float, float] | None = None,
    ) -> None:
        """Publish each packet (its latency measured as it goes out), then the batch's metrics.

        `times` (taken, stacked, inferred) give each packet's stage breakdown (stages.py), which
        its message carries (`stages_ms`) and the stage histograms count.
        """
        assert self.publisher is not None
        m = self.metrics
        n = len(batch)
        arrival = np.fromiter((q.arrival_time for q in batch), np.float64, n)  # (n,)
        closed = np.fromiter((q.closed_time for q in batch), np.float64, n)  # (n,)
        closed = np.where(np.isnan(closed), arrival, closed)
        taken, stacked, inferred = times if times is not None else (arrival.max(),) * 3
        rows = StageRecorder.rows(arrival, closed, taken, stacked, inferred, arrival)  # (n, 5)
        before = rows[:, :4].tolist()  # the stages up to the engine's answer, per packet
        latencies = np.empty(n, np.float64)  # (n,) seconds
        for i, (q, labels) in enumerate(zip(batch, label_entries(probs), strict=True)):
            a, c, b, inf = before[i]
            item = Classified(
                q.packet_id, q.start_sample, q.end_sample, q.arrival_time,
                {t: v[i] for t, v in probs.items()}, labels,
                {"assemble": a, "queue": c, "batch": b, "inference": inf},
            )  # fmt: skip
            latencies[i] = self.publisher.publish(item)
        rows[:, 4] = latencies - (inferred - arrival)  # publish: the engine's answer -> sent
        self.stages.record(rows)
        for name, task_probs in probs.items():
            task = TASK_BY_NAME[name]
            histogram = m.latency.labels(name)
            for latency in latencies:
                histogram.observe(latency)
            late = int(np.count_nonzero(latencies > task.max_exec_s))
            if late:
                m.max_exec_violations.labels(name).inc(late)
            counts = np.bincount(task_probs.argmax(axis=1), minlength=task.num_classes)
            for index in np.flatnonzero(counts):
                m.labels.labels(name, task.classes[index]).inc(int(counts[index]))
        self.recent_latencies.extend(latencies.tolist())
        m.classified.inc(len(batch))
        self.totals.classified += len(batch)

    def _engine_failed(self, n: int, exc: Exception) -> None:
        self.metrics.failed.inc(n)
        self.metrics.engine_failures.inc()
        self.totals.failed += n
        self.totals.engine_failures += 1
        self._failure_streak += 1
        limit = self.config.engine_reload_after_failures
        if self._failure_streak == 1:
            log.error(
                "engine failed on a batch of %d packets: %s: %s (counted in "
                "edgetc_packets_failed_total; reload after %d failures in a row)",
                n, type(exc).__name__, exc, limit,
            )  # fmt: skip
        if self._failure_streak % limit == 0:
            self._reload_engine()

    def _reload_engine(self) -> None:
        log.warning("reloading the engine after %d failed batches in a row", self._failure_streak)
        self.metrics.engine_reloads.inc()
        self.totals.engine_reloads += 1
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        try:
            self.engine = self._load_engine()
        except Exception as exc:
            log.error("engine reload failed: %s: %s", type(exc).__name__, exc)
            return
        log.info("engine reloaded")

    # -- power thread ---------------------------------------------------------------------------
    def _open_power(self) -> PowerMeter | None:
        """The meter, or None (no power metrics, and one log line saying why)."""
        meter = self._power_meter or open_power_meter(self.config.power)
        if meter.name == NoPowerMeter.name:
            self.power_status = meter.reason
            log.info("power: no meter (%s); power metrics absent", meter.reason)
            meter.close()
            return None
        why = f" ({meter.reason})" if meter.reason else ""
        log.info(
            "power: reading %s (%s) every %g s%s",
            meter.name, meter.method, self.config.power.interval_s, why,
        )  # fmt: skip
        self.metrics.enable_power(meter.method)
        return meter

    def _power_loop(self, meter: PowerMeter) -> None:
        while True:
            self._read_power(meter)
            if self.stop_event.wait(self.config.power.interval_s):
                return

    def _read_power(self, meter: PowerMeter) -> None:
        """One reading; a meter that stops answering is logged once, then retried."""
        try:
            reading = meter.read()
        except (PowerUnavailable, OSError) as exc:
            if self.power_status is None:
                log.warning("power meter %s stopped answering: %s", meter.name, exc)
            self.power_status = f"{meter.name} stopped answering: {exc}"
            return
        if self.power_status is not None:
            log.info("power meter %s answers again", meter.name)
            self.power_status = None
        self._on_power(reading)

    def _on_power(self, reading: PowerReading) -> None:
        """A meter reading -> power gauge, energy counter, joules per classified packet."""
        m = self.metrics
        assert m.power_watts is not None and m.energy_joules is not None
        assert m.joules_per_sample is not None
        if reading.watts is not None:
            m.power_watts.set(reading.watts)
        if reading.joules_total is None:
            return
        before = self.totals.energy_joules or 0.0
        if reading.joules_total > before:
            m.energy_joules.inc(reading.joules_total - before)
        self.totals.energy_joules = reading.joules_total
        if self.totals.classified:
            m.joules_per_sample.set(reading.joules_total / self.totals.classified)


__all__ = [
    "POLL_S",
    "Daemon",
    "MetricsEvents",
    "QueuedPacket",
    "Totals",
    "packet_input",
    "packets_to_batch",
]

"""systemd integration: the unit passes `systemd-analyze verify`, and the notify protocol works
against a real AF_UNIX datagram socket standing in for systemd's: READY=1 after the engine is
warm and the source is open, WATCHDOG=1 while packets flow and none while the engine is stuck,
STATUS= with the rate, STOPPING=1 on SIGTERM (the daemon run as `edge-tc run` in a subprocess).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import daemon_config_file

from edge_daemon.config import DaemonConfig
from edge_daemon.logs import LOGGER_NAME
from edge_daemon.pipeline import Daemon
from edge_daemon.sdnotify import (
    NullNotifier,
    StatusReporter,
    SystemdNotifier,
    notifier_from_env,
    socket_address,
    watchdog_interval_s,
)
from engines.base import Engine, load

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "edge-tc.service"
DROP_INS = ROOT / "deploy" / "systemd" / "edge-tc.service.d"
INSTALLED_EDGE_TC = "/opt/edge-tc/venv/bin/edge-tc"
NEWER_THAN_237 = ("ProtectHostname", "ProtectKernelLogs", "ProtectClock", "ProtectProc",
                  "SystemCallFilter", "ConfigurationDirectory", "PrivateUsers")  # fmt: skip


class FakeSystemd:
    """A datagram socket where systemd's would be; records (monotonic time, message)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(socket_address(address))
        self.socket.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(4096)
            except TimeoutError:
                continue
            for line in data.decode().split("\n"):
                self.messages.append((time.monotonic(), line))

    def times(self, message: str, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [t for t, m in list(self.messages) if m == message and since <= t < until]

    def wait_for(self, message: str, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.times(message)
            if got:
                return got[0]
            time.sleep(0.02)
        raise AssertionError(f"no {message!r} within {timeout_s} s; got {self.messages}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.socket.close()


# -- the unit --------------------------------------------------------------------------------------
def unit_text() -> str:
    return UNIT.read_text()


def test_unit_runs_the_installed_daemon_as_notify_service_with_a_watchdog():
    text = unit_text()
    lines = {line.split("=", 1)[0]: line for line in text.splitlines() if "=" in line}
    assert lines["Type"] == "Type=notify"
    assert lines["Restart"] == "Restart=on-failure"
    assert "WatchdogSec" in lines and "DynamicUser" in lines and "CacheDirectory" in lines
    assert f"ExecStart={INSTALLED_EDGE_TC} run --config /etc/edge-tc/edge-tc.toml" in text
    assert "DeviceAllow=char-usb_device rw" in text and "DeviceAllow=char-apex rw" in text
    assert "SupplementaryGroups=plugdev video" in text
    assert "PrivateDevices=yes" not in [line.strip() for line in text.splitlines()]
    # JetPack 4.x has systemd 237: the base unit uses nothing newer (the drop-in does)
    keys = {line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line}
    keys = {k for k in keys if not k.startswith("#")}
    assert not keys & set(NEWER_THAN_237), keys & set(NEWER_THAN_237)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
@pytest.mark.parametrize("with_drop_ins", [False, True], ids=["unit", "unit+drop-ins"])
def test_systemd_analyze_verify(tmp_path, with_drop_ins):
    # verify needs ExecStart's binary to exist: point it at this checkout's edge-tc
    edge_tc = Path(sys.executable).parent / "edge-tc"
    assert edge_tc.is_file(), edge_tc
    unit = tmp_path / "edge-tc.service"
    unit.write_text(unit_text().replace(INSTALLED_EDGE_TC, str(edge_tc)))
    if with_drop_ins:
        shutil.copytree(DROP_INS, tmp_path / "edge-tc.service.d")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # unknown keys are only warnings (exit 0): any output at all is a failure here
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_systemd_analyze_verify_can_fail(tmp_path):
    unit = tmp_path / "edge-tc.service"
    unit.write_text(unit_text().replace("WatchdogSec=", "WatchdogSecs="))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "WatchdogSecs" in done.stderr  # unknown key, and the missing /opt binary
    assert INSTALLED_EDGE_TC in done.stderr


# -- the protocol's pieces -------------------------------------------------------------------------
def test_socket_address_and_watchdog_environment():
    assert socket_address("@systemd/notify") == "\0systemd/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert watchdog_interval_s({}, 42) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}, 42) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "42"}, 42) == 2.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "41"}, 42) is None
    with pytest.raises(ValueError, match="WATCHDOG_USEC: want microseconds, got 'x'"):
        watchdog_interval_s({"WATCHDOG_USEC": "x"}, 42)
    assert isinstance(notifier_from_env({}), NullNotifier)


def test_pings_need_every_loop_and_half_the_interval(tmp_path):
    systemd = FakeSystemd(f"@edge-tc-test-{os.getpid()}-{tmp_path.name}")
    now = [0.0]
    notifier = SystemdNotifier(
        systemd.address, watchdog_s=1.0, loops=("source", "worker"), clock=lambda: now[0]
    )
    try:
        notifier.beat("source")
        notifier.beat("worker")  # before READY: nothing
        notifier.ready("warm")
        now[0] = 0.6
        notifier.beat("source")  # the worker has not gone round: no ping
        now[0] = 0.7
        notifier.beat("worker")  # both have: ping
        notifier.beat("worker")
        notifier.beat("source")  # both again, but only 0 s later: no ping
        now[0] = 1.3
        notifier.beat("worker")  # both since the last ping, 0.6 s later: ping
        StatusReporter(notifier, 5.0, clock=lambda: now[0]).tick(10, 0)
        reporter = StatusReporter(notifier, 5.0, clock=lambda: now[0])
        reporter.tick(100, 0)
        now[0] = 6.3
        reporter.tick(1100, 50)
        notifier.stopping()
        deadline = time.monotonic() + 30  # a hang guard: returns as soon as all 7 are in
        while len(systemd.messages) < 7 and time.monotonic() < deadline:
            time.sleep(0.02)
        got = [m for _, m in systemd.messages]
        assert got == [
            "READY=1", "STATUS=warm", "WATCHDOG=1", "WATCHDOG=1",
            "STATUS=200 packets/s classified, 10/s dropped, 1100 in total",
            "STOPPING=1", "STATUS=stopping",
        ]  # fmt: skip
    finally:
        notifier.close()
        systemd.close()


# -- the daemon under a stand-in systemd -----------------------------------------------------------
def unit_commands(config: Path) -> tuple[list[str], list[str]]:
    """ExecStartPre= and ExecStart= of the unit, run with this checkout's edge-tc on `config`."""
    edge_tc = str(Path(sys.executable).parent / "edge-tc")
    lines = dict(
        line.split("=", 1) for line in unit_text().splitlines() if line.startswith("ExecStart")
    )

    def command(key: str) -> list[str]:
        words = lines[key].split()
        assert words[0] == INSTALLED_EDGE_TC and words[-1] == "/etc/edge-tc/edge-tc.toml"
        return [edge_tc, *words[1:-1], str(config)]

    return command("ExecStartPre"), command("ExecStart")


def write_config(tmp_path: Path, bundle: Path) -> Path:
    return daemon_config_file(tmp_path, bundle, 'type = "synthetic"\npace = "realtime"\nseed = 3')


def test_edge_tc_run_notifies_ready_watchdog_status_and_stopping(tiny_bundle, tmp_path):
    systemd = FakeSystemd(str(tmp_path / "notify"))
    config = write_config(tmp_path, tiny_bundle.directory)
    env = {**os.environ, "NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "1000000",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    env.pop("WATCHDOG_PID", None)
    # the unit's own command lines, with this checkout's edge-tc and the test's config
    pre, start = unit_commands(config)
    checked = subprocess.run(pre, env=env, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0 and checked.stdout.strip() == f"{config}: OK", checked.stderr
    assert not systemd.messages  # check-config does not notify
    daemon = subprocess.Popen(start, env=env, stderr=subprocess.PIPE, text=True)
    try:
        ready = systemd.wait_for("READY=1", timeout_s=90)
        assert daemon.poll() is None
        statuses = [m for _, m in systemd.messages if m.startswith("STATUS=")]
        assert statuses[0] == "STATUS=source synthetic open at 20000000 samples/s"
        # the first rate line comes after STATUS_INTERVAL_S (5 s)
        line = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rates = [m for _, m in systemd.messages if "packets/s classified" in m]
            if rates:
                line = rates[0]
                break
            time.sleep(0.1)
        assert line is not None, systemd.messages
        pings = systemd.times("WATCHDOG=1", since=ready)
        assert len(pings) >= 4, systemd.messages  # every 0.5 s for >= 5 s
        assert not systemd.times("WATCHDOG=1", until=ready)
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        systemd.close()
    assert daemon.returncode == 0, stderr
    stopping = systemd.times("STOPPING=1")
    assert len(stopping) == 1 and stopping[0] > ready
    assert "SIGTERM: stopping" in stderr
    assert line.startswith("STATUS=") and line.endswith(" in total"), line


class StallingEngine:
    """A real engine whose `infer` blocks while `stalled` is set (a hung GPU call)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.stalled = threading.Event()
        self.blocked = threading.Event()
        self.release = threading.Event()
        real_infer = engine.infer

        def infer(batch):
            if self.stalled.is_set():
                self.blocked.set()
                self.release.wait(60)
            return real_infer(batch)

        engine.infer = infer  # type: ignore[method-assign]


class StallingPublisher:
    """The daemon's real Publisher whose `publish` blocks while `stalled` is set (a publisher
    thread stuck in a call)."""

    def __init__(self, daemon: Daemon) -> None:
        publisher = daemon.publisher
        assert publisher is not None
        self.stalled = threading.Event()
        self.blocked = threading.Event()
        self.release = threading.Event()
        real_publish = publisher.publish

        def publish(item):
            if self.stalled.is_set():
                self.blocked.set()
                self.release.wait(60)
            return real_publish(item)

        publisher.publish = publish  # type: ignore[method-assign]


class Captured(logging.Handler):
    """The daemon's log records (on the `edge_tc` logger itself: setup_logging, run by other
    tests in this process, stops it propagating to pytest's caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._logger = logging.getLogger(LOGGER_NAME)
        self._level = self._logger.level

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> Captured:
        self._logger.addHandler(self)
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)

    def lines(self, containing: str, since: int = 0) -> list[str]:
        """Messages containing `containing`, from record number `since` on."""
        return [r.getMessage() for r in self.records[since:] if containing in r.getMessage()]


def test_a_stuck_loop_is_named_in_the_log_once_and_when_it_goes_round_again(tmp_path):
    systemd = FakeSystemd(f"@edge-tc-test-{os.getpid()}-{tmp_path.name}")
    now = [0.0]
    notifier = SystemdNotifier(systemd.address, watchdog_s=1.0, clock=lambda: now[0])
    try:
        with Captured() as log:
            notifier.ready()
            for t in (0.1, 0.2, 0.6):  # the publisher never goes round
                now[0] = t
                notifier.beat("source")
                notifier.beat("worker")
            stuck = log.lines("WATCHDOG=1 withheld")  # a ping was due at 0.5 s
            assert len(stuck) == 1, stuck
            assert "the publisher thread has not gone round for 0.6 s" in stuck[0], stuck
            assert "worker" not in stuck[0] and "source" not in stuck[0], stuck
            now[0] = 1.5
            notifier.beat("source")
            notifier.beat("worker")
            assert len(log.lines("WATCHDOG=1 withheld")) == 1  # once per stall, not per beat
            now[0] = 1.6
            notifier.beat("publisher")  # it comes back: one line, and a ping
            back = log.lines("goes round again")
            assert back == ["watchdog: the publisher thread goes round again after 1.6 s; "
                            "WATCHDOG=1 resumes"], back  # fmt: skip
            assert len(log.lines("WATCHDOG=1 withheld")) == 1
        deadline = time.monotonic() + 30  # a hang guard
        while len(systemd.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [m for _, m in systemd.messages] == ["READY=1", "WATCHDOG=1"]
    finally:
        notifier.close()
        systemd.close()


def daemon_config(bundle: Path) -> DaemonConfig:
    return DaemonConfig.from_dict(
        {
            "source": {"type": "synthetic", "pace": "realtime", "seed": 4},
            "bundle": str(bundle),
            "engine": {"type": "onnxruntime", "threads": 1},
            "publisher": {"bind": "tcp://127.0.0.1:*"},
            "metrics": {"enabled": False},
            "power": {"type": "none"},
        },
        "",
    )


def wait_for_pings(systemd: FakeSystemd, daemon: Daemon, count: int, deadline: float) -> None:
    """`count` more pings and at least one more classified packet."""
    classified = daemon.totals.classified
    pinged = len(systemd.times("WATCHDOG=1"))
    while len(systemd.times("WATCHDOG=1")) < pinged + count or (
        daemon.totals.classified == classified
    ):
        assert time.monotonic() < deadline, systemd.messages
        time.sleep(0.02)


def test_watchdog_pings_stop_while_the_engine_is_stuck_and_resume_after(tiny_bundle, tmp_path):
    """An engine call that never returns (in-thread isolation): at most one ping once the
    worker is inside it, a log line naming the worker thread, pings again once it returns."""
    systemd = FakeSystemd(str(tmp_path / "notify"))
    notifier = SystemdNotifier(systemd.address, watchdog_s=0.4)  # a ping every 0.2 s
    config = daemon_config(tiny_bundle.directory)
    assert config.engine.isolation == "thread"
    stalling: list[StallingEngine] = []

    warmed: list[float] = []

    def factory() -> Engine:
        engine = load(config.bundle, config.engine)
        stalling.append(StallingEngine(engine))
        real_warmup = engine.warmup

        def slow_warmup(batch: int = 1) -> None:  # a TensorRT plan build, in miniature
            time.sleep(0.5)
            real_warmup(batch)
            warmed.append(time.monotonic())

        engine.warmup = slow_warmup  # type: ignore[method-assign]
        return engine

    daemon = Daemon(config, engine_factory=factory, notifier=notifier)
    with Captured() as log:
        daemon.start()
        try:
            ready = systemd.wait_for("READY=1", timeout_s=60)
            assert warmed and ready > warmed[0]  # READY only once the engine is warm
            # packets flow and pings keep coming
            deadline = time.monotonic() + 60
            while len(systemd.times("WATCHDOG=1", since=ready)) < 5:
                assert time.monotonic() < deadline, systemd.messages
                time.sleep(0.02)
            wait_for_pings(systemd, daemon, 5, deadline)
            # the engine hangs: no ping once the worker is inside infer (at most one in flight)
            stalling[0].stalled.set()
            assert stalling[0].blocked.wait(30)
            blocked_at, logged = time.monotonic(), len(log.records)
            classified = daemon.totals.classified
            time.sleep(2.0)  # ten ping intervals, five watchdog intervals
            assert len(systemd.times("WATCHDOG=1", since=blocked_at)) <= 1, systemd.messages
            assert daemon.totals.classified == classified, (classified, daemon.totals)
            stuck = log.lines("WATCHDOG=1 withheld", since=logged)
            assert len([line for line in stuck if "the worker thread" in line]) == 1, stuck
            logged = len(log.records)
            # it comes back: pings resume, and the log says so
            stalling[0].stalled.clear()
            stalling[0].release.set()
            resumed = time.monotonic()
            deadline = resumed + 30
            while len(systemd.times("WATCHDOG=1", since=resumed)) < 3:
                assert time.monotonic() < deadline, systemd.messages
                time.sleep(0.05)
            assert daemon.totals.classified > classified
            back = log.lines("goes round again", since=logged)
            assert any("the worker thread" in line for line in back), back
        finally:
            for engine in stalling:
                engine.release.set()
            t = daemon.stop()
            notifier.close()
            systemd.close()
    assert t.detected == t.accounted, "accounting identity at rest"
    assert t.classified > 0 and t.failed == 0


def test_watchdog_pings_stop_while_the_publisher_is_stuck(tiny_bundle, tmp_path):
    """A publisher thread stuck in a call: the pings stop (the worker, waiting for it, is not
    blamed), the log names the publisher thread; nothing is lost uncounted at stop."""
    systemd = FakeSystemd(str(tmp_path / "notify"))
    notifier = SystemdNotifier(systemd.address, watchdog_s=0.4)  # a ping every 0.2 s
    daemon = Daemon(daemon_config(tiny_bundle.directory), notifier=notifier)
    with Captured() as log:
        daemon.start()
        stalling = StallingPublisher(daemon)
        try:
            ready = systemd.wait_for("READY=1", timeout_s=60)
            deadline = ready + 60
            wait_for_pings(systemd, daemon, 5, deadline)
            stalling.stalled.set()
            assert stalling.blocked.wait(30)
            blocked_at, logged = time.monotonic(), len(log.records)
            time.sleep(2.0)  # ten ping intervals; the outbox fills and the worker waits
            assert len(systemd.times("WATCHDOG=1", since=blocked_at)) <= 1, systemd.messages
            stuck = log.lines("WATCHDOG=1 withheld", since=logged)
            assert len([line for line in stuck if "the publisher thread" in line]) == 1, stuck
            assert not [line for line in stuck if "the worker thread" in line], stuck
            assert daemon.totals.detected > daemon.totals.accounted  # packets are held up
            logged = len(log.records)
            stalling.stalled.clear()
            stalling.release.set()
            resumed = time.monotonic()
            wait_for_pings(systemd, daemon, 3, resumed + 30)
            back = log.lines("goes round again", since=logged)
            assert any("the publisher thread" in line for line in back), back
        finally:
            stalling.release.set()
            t = daemon.stop()
            notifier.close()
            systemd.close()
    assert t.detected == t.accounted, "accounting identity at rest"
    assert t.classified > 0


def test_watchdog_pings_stop_while_the_ingest_process_is_stuck(tiny_bundle, tmp_path):
    """The source side in its own process (the default): a child that stops sending (SIGSTOP,
    as a read that never returns would) stops the pings and the log names the source thread;
    after SIGCONT it goes round again and nothing is lost uncounted."""
    systemd = FakeSystemd(str(tmp_path / "notify"))
    notifier = SystemdNotifier(systemd.address, watchdog_s=0.4)  # a ping every 0.2 s
    daemon = Daemon(daemon_config(tiny_bundle.directory), notifier=notifier)
    assert daemon.ingest_mode == "process"
    with Captured() as log:
        daemon.start()
        try:
            ready = systemd.wait_for("READY=1", timeout_s=60)
            deadline = time.monotonic() + 60
            while len(systemd.times("WATCHDOG=1", since=ready)) < 5:
                assert time.monotonic() < deadline, systemd.messages
                time.sleep(0.02)
            wait_for_pings(systemd, daemon, 3, deadline)
            assert daemon._ingest is not None and daemon._ingest.process.pid is not None
            child = daemon._ingest.process.pid
            os.kill(child, signal.SIGSTOP)
            stopped_at, logged = time.monotonic(), len(log.records)
            time.sleep(2.0)  # ten ping intervals, five watchdog intervals
            assert len(systemd.times("WATCHDOG=1", since=stopped_at + 0.5)) == 0, systemd.messages
            stuck = log.lines("WATCHDOG=1 withheld", since=logged)
            assert len([line for line in stuck if "the source thread" in line]) == 1, stuck
            logged = len(log.records)
            os.kill(child, signal.SIGCONT)
            resumed = time.monotonic()
            deadline = resumed + 30
            while len(systemd.times("WATCHDOG=1", since=resumed)) < 3:
                assert time.monotonic() < deadline, systemd.messages
                time.sleep(0.05)
            back = log.lines("goes round again", since=logged)
            assert any("the source thread" in line for line in back), back
            assert daemon.failure is None
        finally:
            if daemon._ingest is not None and daemon._ingest.process.pid is not None:
                os.kill(daemon._ingest.process.pid, signal.SIGCONT)
            t = daemon.stop()
            notifier.close()
            systemd.close()
    assert t.detected == t.accounted, "accounting identity at rest"
    assert t.classified > 0

"""`edge-tc run` (the daemon, or `--demo`) and `edge-tc check-config`.

    edge-tc run --config /etc/edge-tc/edge-tc.toml [--set batcher.max_batch=16 ...]
    edge-tc run --demo [--duration 30]     # synthetic channel, models/default, CPU, live table
    edge-tc check-config FILE              # OK, or every problem with its key path (exit 2)

Exit codes: 0 after a clean stop (SIGTERM/SIGINT, --duration, the end of a recording), 2 for a
bad config or a missing bundle, 1 when the daemon fails while running.
"""

from __future__ import annotations

import argparse
import gc
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import edge_daemon
from edge_daemon.tuning import realtime_allowed

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2
REFRESH_S = 0.5
GIL_SWITCH_INTERVAL_S = 0.0005


def default_bundle() -> Path:
    """The bundle the package ships: `<repo or install root>/models/default`."""
    return Path(edge_daemon.__file__).resolve().parents[1] / "models" / "default"


DEMO_REALTIME_PRIORITY = 10
"""SCHED_FIFO priority of the demo's packet-path threads, where allowed (1..99 rank only among
real-time threads; 10 stays below the kernel's threaded interrupts, 50)."""


def demo_table(bundle: Path) -> dict[str, Any]:
    """The `--demo` config: a replayed synthetic channel at real-time pace, the bundle on CPU."""
    return {
        # one second of channel generated at start and replayed (the demo measures the daemon,
        # not the generator), in 0.2 ms blocks (a packet's end reaches the assembler soon)
        "source": {"type": "synthetic", "pace": "realtime", "loop_s": 1.0, "chunk_samples": 4096},
        "bundle": str(bundle),
        # the fastest engine x precision of the bundle that meets its agreement here, timed at
        # the first run and cached (engines/auto.py); one engine thread: a few hundred packets/s
        # need a fraction of a core, the source, assembler and publisher want the rest
        "engine": {"type": "auto", "threads": 1},
        # where this user may (root, CAP_SYS_NICE or an RLIMIT_RTPRIO), the threads a packet
        # waits on run under SCHED_FIFO: a bounded run at a fixed load far below saturation,
        # where it takes the tail from p99 4-7 ms to about 2 ms (README, "Real time"); the
        # service's default stays off (docs/daemon.md: a saturated real-time worker would starve
        # the access point's own processes). `--set realtime_priority=0` turns it off.
        **({"realtime_priority": DEMO_REALTIME_PRIORITY} if realtime_allowed() else {}),
    }


def add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `edge-tc run` and `edge-tc check-config`."""
    run = sub.add_parser(
        "run", help="run the classification daemon", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    what = run.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", metavar="FILE", help="TOML config (deploy/edge-tc.example.toml)")
    what.add_argument(
        "--demo", action="store_true",
        help="synthetic source, the shipped bundle (models/default) on CPU, live table",
    )  # fmt: skip
    _add_overrides(run)
    run.add_argument("--bundle", metavar="DIR", help="model bundle (overrides `bundle`)")
    run.add_argument("--engine", metavar="TYPE", help="engine backend (overrides `engine.type`)")
    run.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="stop cleanly S seconds after the source opened (the demo first generates its "
        "loop: seconds on a slow CPU); use timeout(1) for a wall-clock limit",
    )
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a daemon config file")
    check.add_argument("file", help="TOML config")
    _add_overrides(check)
    check.set_defaults(func=cmd_check_config)


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
        help="override a config key; VALUE is TOML (3, true, \"x\", [1, 2]) or a bare string",
    )  # fmt: skip


def _overrides(args: argparse.Namespace) -> list[str]:
    out = list(args.overrides)
    if getattr(args, "bundle", None):
        out.append(f"bundle={args.bundle}")
    if getattr(args, "engine", None):
        out.append(f"engine.type={args.engine}")
    if getattr(args, "log_level", None):
        out.append(f"log_level={args.log_level}")
    return out


def _report(problems: list[str], file: str) -> int:
    print(f"{file}: {len(problems)} problem(s)", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_BAD_CONFIG


def cmd_check_config(args: argparse.Namespace) -> int:
    """Print OK, or every problem with its key path and exit 2."""
    from edge_core.typed_config import ConfigProblems
    from edge_daemon.config import file_problems, load_config

    try:
        config = load_config(args.file, _overrides(args))
    except ConfigProblems as exc:
        return _report(exc.problems, args.file)
    problems = file_problems(config)
    if problems:
        return _report(problems, args.file)
    print(f"{args.file}: OK")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Load, validate, run until a signal, --duration or the end of the source; drain; exit."""
    from edge_core.typed_config import ConfigProblems
    from edge_daemon.config import file_problems, load_config
    from edge_daemon.logs import get_logger, setup_logging
    from edge_daemon.pipeline import Daemon
    from edge_daemon.sdnotify import StatusReporter, notifier_from_env

    if args.duration is not None and not args.duration > 0:
        return _report([f"--duration: want > 0 seconds, got {args.duration}"], "command line")
    where = args.config or "--demo"
    try:
        if args.demo:
            config = load_config(None, _overrides(args), base=demo_table(default_bundle()))
        else:
            config = load_config(args.config, _overrides(args))
    except ConfigProblems as exc:
        return _report(exc.problems, where)
    problems = file_problems(config)
    if problems and args.demo and not args.bundle:
        problems = [
            f"bundle: the default bundle {config.bundle} is missing; export one there "
            "(edge-tc train export ... --out models/default) or pass --bundle DIR"
        ]
    if problems:
        return _report(problems, where)

    setup_logging(config.log_level)
    log = get_logger("run")
    # The source thread's NumPy work holds the GIL between calls; the worker must get it back
    # within a fraction of the 2 ms budget, not CPython's default 5 ms switch interval.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)

    notifier = notifier_from_env()  # systemd Type=notify; a no-op elsewhere
    daemon = Daemon(config, notifier=notifier)
    stop = daemon.stop_event  # set by a signal, or by a thread that failed

    def on_signal(signum: int, frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        daemon.stop_event.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        daemon.start()
        # What is loaded now lives as long as the process: keep it out of the cyclic
        # collector, whose full passes over it would stall the loops for milliseconds.
        gc.freeze()
        if args.demo:
            _run_with_table(daemon, stop, args.duration)
        else:
            _wait(daemon, stop, args.duration, StatusReporter(notifier))
    finally:
        notifier.stopping()
        daemon.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if daemon.failure is not None:
        print(f"edge-tc: error: {daemon.failure}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _wait(daemon: Any, stop: threading.Event, duration: float | None, status: Any = None) -> None:
    """Until a signal, the duration or the end of a finite source; `status`: a
    sdnotify.StatusReporter told the totals every round."""
    clock = _Deadline(daemon, duration)
    while not stop.is_set() and not daemon.source_done.is_set():
        if status is not None:
            status.tick(daemon.totals.classified, sum(daemon.totals.dropped.values()))
        left = clock.left()
        if left <= 0:
            return
        stop.wait(min(REFRESH_S, left))


class _Deadline:
    """`--duration`: counted from the source's first open, so the seconds a slow CPU spends
    generating the demo's loop (23 s under qemu arm64) or waiting for a device do not eat it."""

    def __init__(self, daemon: Any, duration: float | None) -> None:
        self.daemon, self.duration = daemon, duration
        self.deadline: float | None = None

    def left(self) -> float:
        """Seconds left (inf without a duration or before the source opened)."""
        if self.duration is None:
            return math.inf
        if self.deadline is None:
            if not self.daemon.source_open.is_set():
                return math.inf
            self.deadline = time.monotonic() + self.duration
        return self.deadline - time.monotonic()


def _run_with_table(daemon: Any, stop: threading.Event, duration: float | None) -> None:
    from rich.live import Live

    from edge_daemon.demo import DemoTable

    table = DemoTable(daemon)
    with Live(table.render(), refresh_per_second=4, transient=False) as live:
        clock = _Deadline(daemon, duration)
        while not stop.is_set() and not daemon.source_done.is_set():
            if clock.left() <= 0:
                break
            stop.wait(REFRESH_S)
            live.update(table.render())
        live.update(table.render())


__all__ = ["add_run_parser", "cmd_check_config", "cmd_run", "default_bundle", "demo_table"]

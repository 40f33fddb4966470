"""Per-thread CPU affinity and real-time scheduling: the knobs edge deployments use.

`source_cpus`, `worker_cpus`, `publisher_cpus` (top-level config keys, [] = any CPU) pin each
of the daemon's threads to those CPUs; `realtime_priority` (0 = off, 1..99) runs the source,
worker and publisher threads under SCHED_FIFO at that priority, so that none of them waits
behind ordinary work on a busy device. Linux applies both per thread (`sched_setaffinity` /
`sched_setscheduler` with pid 0 act on the calling thread), so each thread applies its own at
its start.

SCHED_FIFO needs CAP_SYS_NICE (root, or `AmbientCapabilities=CAP_SYS_NICE` in the systemd unit,
or an RLIMIT_RTPRIO); without it the thread runs at normal priority and one warning says why. A
CPU that does not exist is a config error (`check_cpus`), found before any thread starts.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

REALTIME_THREADS = ("source", "worker", "publisher")
"""Threads `realtime_priority` applies to: the ones a packet waits on (the publisher runs the
fusion stage and sends; with the ingest process, its loop and the daemon's thread receiving
from it are both "source")."""


def available_cpus() -> set[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def check_cpus(key: str, cpus: Sequence[int], available: set[int] | None = None) -> str | None:
    """Why `cpus` cannot be used for `key` (a CPU this process cannot run on), or None."""
    have = available_cpus() if available is None else available
    missing = sorted(set(cpus) - have)
    if missing:
        return f"{key}: CPU(s) {missing} not available to this process (it may use {sorted(have)})"
    return None


def tune_thread(
    name: str, cpus: Sequence[int], realtime_priority: int, log: logging.Logger
) -> list[str]:
    """Apply affinity and (for `REALTIME_THREADS`) SCHED_FIFO to the calling thread.

    Returns what was applied, for the log; a refused setting is logged as a warning once here
    and the thread goes on without it.
    """
    applied = []
    if cpus:
        try:
            os.sched_setaffinity(0, set(cpus))
            applied.append(f"CPUs {sorted(set(cpus))}")
        except OSError as exc:
            log.warning("%s thread: cannot pin to CPUs %s: %s", name, sorted(set(cpus)), exc)
    if realtime_priority and name in REALTIME_THREADS:
        try:
            param = os.sched_param(realtime_priority)
            os.sched_setscheduler(0, os.SCHED_FIFO, param)
            applied.append(f"SCHED_FIFO {realtime_priority}")
        except (OSError, AttributeError) as exc:
            log.warning(
                "%s thread: cannot use SCHED_FIFO priority %d (%s); it runs at normal priority "
                "(needs CAP_SYS_NICE, docs/daemon.md 'Threads')",
                name, realtime_priority, exc,
            )  # fmt: skip
    return applied


def realtime_allowed(priority: int = 1) -> bool:
    """Whether this process may run a thread under SCHED_FIFO at `priority`: tried on a
    short-lived thread (Linux scheduling policy is per thread; the caller's is untouched)."""
    if not hasattr(os, "SCHED_FIFO"):
        return False
    result: list[bool] = []

    def attempt() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
            result.append(True)
        except (OSError, AttributeError):
            result.append(False)

    thread = threading.Thread(target=attempt, name="edge-tc-rt-probe")
    thread.start()
    thread.join()
    return bool(result and result[0])


__all__ = ["REALTIME_THREADS", "available_cpus", "check_cpus", "realtime_allowed", "tune_thread"]

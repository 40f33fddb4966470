"""systemd's notify protocol (sd_notify(3)) with the standard library only.

Under `Type=notify` systemd passes `NOTIFY_SOCKET` (an AF_UNIX datagram socket; a leading '@'
names one in the abstract namespace) and, with `WatchdogSec=`, `WATCHDOG_USEC` (and
`WATCHDOG_PID`). The daemon sends:

* `READY=1` once the engine is warm and the source is open (systemd then calls it started);
* `WATCHDOG=1` at half the watchdog interval, only while every processing loop (source,
  worker and publisher) has gone round since the last ping: a loop stuck in a call stops the
  pings, a log line names it, and systemd kills and restarts the service
  (`Restart=on-failure`);
* `STATUS=...` with the current rate every few seconds (`systemctl status edge-tc`);
* `STOPPING=1` when it begins to shut down.

Without `NOTIFY_SOCKET` (not under systemd) `notifier_from_env()` returns a `NullNotifier`.
The protocol is stable and documented in systemd's `man/notify-selfcontained-example.py`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from edge_daemon.logs import get_logger

log = get_logger("sdnotify")

STATUS_INTERVAL_S = 5.0
"""How often `StatusReporter` sends STATUS= (systemd keeps only the last one)."""


class Notifier(Protocol):
    """What the daemon tells its service manager. All calls are cheap and never raise."""

    def ready(self, status: str = "") -> None: ...

    def beat(self, loop: str) -> None: ...

    def status(self, text: str) -> None: ...

    def stopping(self) -> None: ...


class NullNotifier:
    """Not under systemd: every call does nothing."""

    def ready(self, status: str = "") -> None:
        pass

    def beat(self, loop: str) -> None:
        pass

    def status(self, text: str) -> None:
        pass

    def stopping(self) -> None:
        pass


def socket_address(notify_socket: str) -> str:
    """`NOTIFY_SOCKET` as an AF_UNIX address: '@name' is the abstract-namespace '\\0name'."""
    if notify_socket.startswith("@"):
        return "\0" + notify_socket[1:]
    return notify_socket


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """`WATCHDOG_USEC` in seconds when the watchdog applies to process `pid` (sd_watchdog_enabled:
    `WATCHDOG_PID` unset or ours), else None. A malformed value is an error naming it."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner.strip() != str(pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        raise ValueError(f"WATCHDOG_USEC: want microseconds, got {usec!r}") from None
    if value <= 0:
        raise ValueError(f"WATCHDOG_USEC: want > 0 microseconds, got {usec!r}")
    return value / 1e6


class SystemdNotifier:
    """Datagrams to `NOTIFY_SOCKET`. `loops`: the loops that must all `beat` between two
    watchdog pings; `watchdog_s`: `WATCHDOG_USEC` in seconds (None: no watchdog).

    A loop that has not gone round when a ping is due is stuck (in an engine call that never
    returns, a publisher call...): the ping is withheld and a warning names the loop, once per
    stall; an info line says when it goes round again."""

    def __init__(
        self,
        address: str,
        watchdog_s: float | None = None,
        loops: Iterable[str] = ("source", "worker", "publisher"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.watchdog_s = watchdog_s
        self.ping_interval_s = None if watchdog_s is None else watchdog_s / 2
        self._loops = frozenset(loops)
        self._clock = clock
        self._lock = threading.Lock()
        self._beaten: set[str] = set()
        self._last_beat = dict.fromkeys(self._loops, clock())  # when each loop last went round
        self._stuck: set[str] = set()  # loops named in the log as stuck, until they go round
        self._last_ping = clock()
        self._ready = False
        self._failed = False
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def send(self, message: str) -> bool:
        """One datagram; a failure is logged once (the service goes on without systemd)."""
        try:
            self._socket.sendto(message.encode(), socket_address(self.address))
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("sd_notify to %s failed: %s (%s)", self.address, exc, message)
            return False
        return True

    def ready(self, status: str = "") -> None:
        """READY=1 (once), with a first STATUS= if given; starts the watchdog period."""
        with self._lock:
            if self._ready:
                return
            self._ready = True
            self._last_ping = self._clock()
            self._last_beat = dict.fromkeys(self._loops, self._last_ping)
            self._beaten.clear()
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def beat(self, loop: str) -> None:
        """`loop` went round. WATCHDOG=1 goes when every loop has, at most every half interval;
        when one is due and a loop has not, that loop is named in the log (once per stall)."""
        if self.ping_interval_s is None or not self._ready:
            return
        with self._lock:
            now = self._clock()
            self._beaten.add(loop)
            stalled_s = now - self._last_beat.get(loop, now)
            self._last_beat[loop] = now
            back = loop in self._stuck
            self._stuck.discard(loop)
            newly_stuck: list[tuple[str, float]] = []
            due = now - self._last_ping >= self.ping_interval_s
            if due:
                for missing in sorted(self._loops - self._beaten - self._stuck):
                    self._stuck.add(missing)
                    newly_stuck.append((missing, now - self._last_beat[missing]))
            ping = due and self._loops <= self._beaten
            if ping:
                self._beaten.clear()
                self._last_ping = now
            still_stuck = sorted(self._stuck)
        if back:
            log.info(
                "watchdog: the %s thread goes round again after %.1f s; %s",
                loop, stalled_s,
                f"still stuck: {', '.join(still_stuck)}" if still_stuck else "WATCHDOG=1 resumes",
            )  # fmt: skip
        for missing, since_s in newly_stuck:
            log.warning(
                "watchdog: WATCHDOG=1 withheld: the %s thread has not gone round for %.1f s "
                "(stuck in a call?); systemd restarts the service %g s after the last ping "
                "(WatchdogSec)",
                missing, since_s, self.watchdog_s,
            )  # fmt: skip
        if ping:
            self.send("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def stopping(self) -> None:
        self.send("STOPPING=1\nSTATUS=stopping")

    def close(self) -> None:
        self._socket.close()


def notifier_from_env(env: Mapping[str, str] | None = None) -> SystemdNotifier | NullNotifier:
    """A SystemdNotifier when `NOTIFY_SOCKET` is set (under systemd), else a NullNotifier."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return NullNotifier()
    watchdog_s = watchdog_interval_s(env, os.getpid())
    notifier = SystemdNotifier(address, watchdog_s)
    log.info(
        "systemd notify socket %s%s", address,
        f", watchdog {watchdog_s:g} s (pinged every {watchdog_s / 2:g} s)" if watchdog_s else "",
    )  # fmt: skip
    return notifier


class StatusReporter:
    """STATUS= lines with the rates since the last one, at most every `interval_s`."""

    def __init__(
        self,
        notifier: Notifier,
        interval_s: float = STATUS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = notifier
        self._interval_s = interval_s
        self._clock = clock
        self._last: tuple[float, int, int] | None = None

    def tick(self, classified: int, dropped: int) -> None:
        """Call often with the running totals; sends when `interval_s` has passed."""
        now = self._clock()
        if self._last is None:
            self._last = (now, classified, dropped)
            return
        then, classified_then, dropped_then = self._last
        if now - then < self._interval_s:
            return
        seconds = now - then
        self._notifier.status(
            f"{(classified - classified_then) / seconds:.0f} packets/s classified, "
            f"{(dropped - dropped_then) / seconds:.0f}/s dropped, {classified} in total"
        )
        self._last = (now, classified, dropped)


__all__ = [
    "STATUS_INTERVAL_S",
    "Notifier",
    "NullNotifier",
    "StatusReporter",
    "SystemdNotifier",
    "notifier_from_env",
    "socket_address",
    "watchdog_interval_s",
]

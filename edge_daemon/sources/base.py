"""The source contract: where IQ samples come from, as the daemon's source thread sees it.

Every source module in this package (`zmq.py`, `soapysdr.py`, `sigmf.py`, `synthetic.py`)
defines a config dataclass (a `TypedConfig` with `type: Literal["<key>"]`), a `Source`
subclass and a module-level `SOURCE = SourceBackend(...)`; the registry finds them by scanning
the package, so nothing else names a source. Vendor imports (SoapySDR, zmq) live inside the
module's `open`, and a missing one is a SourceError "source 'X' unavailable: ...; install ...".

The daemon's source thread does, until its stop event is set::

    source.open()                      # SourceError: retried with back-off, counted
    while not stop.is_set():
        chunk = source.read(timeout_s)  # None: nothing arrived in time (loop, check stop)
        ...                            # chunk.discontinuity: the assembler is reset first
    source.close()

`read` never blocks longer than its timeout. Bytes that cannot be used (odd byte counts,
oversized or malformed messages, NaN/Inf) are dropped by the source and reported through
`SourceEvents`, never raised: a SourceError from `read` means the source itself is gone (the
thread closes it and re-opens it with back-off, counting a reconnect).
"""

from __future__ import annotations

import builtins
import importlib
import pkgutil
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from edge_core.errors import SourceError
from edge_core.typed_config import ConfigProblems, TypedConfig


class SourceConfigError(ConfigProblems):
    """Invalid source configuration; `problems` lists each one as 'source.key: message'."""


@dataclass(frozen=True)
class SourceConfig(TypedConfig):
    """Fields every source's config has. Subclasses narrow `type` to `Literal["<key>"]`."""

    errors: ClassVar[type[ConfigProblems]] = SourceConfigError
    section: ClassVar[str] = "source"
    type: str


@dataclass(frozen=True)
class Chunk:
    """Consecutive complex64 samples as they arrived.

    `first_sample_index`: absolute index of samples[0] in the source's sample clock (counts
    samples since open, plus any gap the source knows of: an SDR overflow, dropped messages).
    `discontinuity`: samples were lost right before this chunk (the assembler resets).
    `arrival_time`: time.monotonic() when the chunk's last sample was received.
    `part_arrivals`: for a chunk joined from parts received at different times (queued ZeroMQ
    messages), (ends, times): part i is samples[ends[i - 1]:ends[i]] (ends (parts,) int64,
    increasing, the last == n) and was received at times[i] ((parts,) float64). None: the whole
    chunk arrived at `arrival_time`.
    """

    samples: np.ndarray  # (n,) complex64
    first_sample_index: int
    arrival_time: float
    discontinuity: bool = False
    part_arrivals: tuple[np.ndarray, np.ndarray] | None = None


class SourceEvents(Protocol):
    """What a source reports as it happens; the daemon turns it into metrics and log lines."""

    def dropped(self, reason: str, samples: int, messages: int = 0, nbytes: int = 0) -> None:
        """Samples (or a message's worth) thrown away; reason like 'odd_bytes', 'nonfinite'.
        `messages`: whole messages dropped, `nbytes` their size (a message shorter than a
        sample counts 0 samples but 1 message)."""

    def overflow(self) -> None:
        """The hardware or transport lost samples (SoapySDR SOAPY_SDR_OVERFLOW, a gap)."""

    def reconnected(self) -> None:
        """The transport re-established a lost connection on its own (a ZeroMQ peer came back)."""


class NullEvents:
    """SourceEvents that only counts, for tools and tests."""

    def __init__(self) -> None:
        self.drops: dict[str, int] = {}
        self.dropped_messages: dict[str, int] = {}
        self.overflows = 0
        self.reconnects = 0

    def dropped(self, reason: str, samples: int, messages: int = 0, nbytes: int = 0) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + samples
        if messages:
            self.dropped_messages[reason] = self.dropped_messages.get(reason, 0) + messages

    def overflow(self) -> None:
        self.overflows += 1

    def reconnected(self) -> None:
        self.reconnects += 1


class Source(ABC):
    """An open-able stream of complex64 chunks. Used from one thread."""

    def __init__(self, config: SourceConfig, events: SourceEvents) -> None:
        self.config = config
        self.events = events

    @property
    @abstractmethod
    def sample_rate_hz(self) -> float:
        """Samples per second of the stream (after any resampling the source does)."""

    @abstractmethod
    def open(self) -> None:
        """Connect / start streaming; SourceError when it cannot (the daemon retries)."""

    @abstractmethod
    def read(self, timeout_s: float) -> Chunk | None:
        """The next chunk, or None if none arrived within `timeout_s`. SourceError: gone."""

    @abstractmethod
    def close(self) -> None:
        """Release the device or socket; idempotent."""

    @property
    def finished(self) -> bool:
        """True once a finite source (a recording without loop) has nothing more to give."""
        return False


class Pacer:
    """Hands out samples at `sample_rate_hz` of wall time (replays, generators).

    The clock starts at the first `release`: the chunk that ends `n` samples after that start is
    due `n / sample_rate_hz` seconds later. A late consumer gets overdue chunks at once (nothing
    is skipped), as a receiver's buffer would hand them over.
    """

    def __init__(self, sample_rate_hz: float) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._t0: float | None = None
        self._released = 0

    def release(self, count: int, timeout_s: float) -> float | None:
        """Wait until the next `count` samples are due; return time.monotonic() then, or None
        (after sleeping `timeout_s`) if they are due later than that."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        delay = self._t0 + (self._released + count) / self.sample_rate_hz - now
        if delay > timeout_s:
            time.sleep(max(0.0, timeout_s))
            return None
        if delay > 0:
            time.sleep(delay)
        self._released += count
        return time.monotonic()

    def restart(self) -> None:
        """Start the clock again at the next `release` (after a re-open)."""
        self._t0 = None
        self._released = 0


class PacedChunks:
    """The read step that replays and generators share: take the next (first sample index,
    samples) from a producer once, hold it until the `Pacer` says it is due (at once unless
    `realtime`), and remember when the producer has run dry (`finished`)."""

    def __init__(self, sample_rate_hz: float, realtime: bool) -> None:
        self.pacer = Pacer(sample_rate_hz)
        self.realtime = realtime
        self.finished = False
        self._pending: tuple[int, np.ndarray] | None = None  # produced, not yet due

    def reset(self) -> None:
        """A fresh start (after a re-open): clock restarted, nothing held, not finished."""
        self.pacer.restart()
        self._pending = None
        self.finished = False

    def drop(self) -> None:
        """Forget the held chunk (on close)."""
        self._pending = None

    def next(
        self, produce: Callable[[], tuple[int, np.ndarray] | None], timeout_s: float
    ) -> tuple[int, np.ndarray, float] | None:
        """(first index, samples, arrival time) when due, or None: not due within `timeout_s`,
        or finished (`produce` returned None)."""
        if self.finished:
            return None
        if self._pending is None:
            self._pending = produce()
            if self._pending is None:
                self.finished = True
                return None
        first, samples = self._pending
        if self.realtime:
            arrival = self.pacer.release(samples.size, timeout_s)
            if arrival is None:
                return None
        else:
            arrival = time.monotonic()
        self._pending = None
        return first, samples, arrival


@dataclass(frozen=True)
class SourceBackend:
    """A source as the registry sees it: its config key, config class and constructor."""

    type: str
    config: builtins.type[SourceConfig]
    create: Callable[[SourceConfig, SourceEvents], Source]
    install: str


_REGISTRY: dict[str, SourceBackend] = {}
_DISCOVERED = False


def register(backend: SourceBackend) -> None:
    """Add a source backend (a plugin, a test's fake); ValueError if its key is taken."""
    have = _REGISTRY.get(backend.type)
    if have is not None and have is not backend:
        raise ValueError(f"source type {backend.type!r} is already registered")
    _REGISTRY[backend.type] = backend


def source_backends() -> dict[str, SourceBackend]:
    """Every source: modules of this package that define `SOURCE`, plus registered ones."""
    global _DISCOVERED
    if not _DISCOVERED:
        package = sys.modules[__name__.rpartition(".")[0]]
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            found = getattr(module, "SOURCE", None)
            if isinstance(found, SourceBackend):
                register(found)
        _DISCOVERED = True
    return dict(sorted(_REGISTRY.items()))


def source_config_from_dict(data: object, path: str = "source") -> SourceConfig:
    """The source config a table describes, chosen by its `type` key."""
    if not isinstance(data, dict):
        raise SourceConfigError([f"{path}: want a table, got {type(data).__name__}"])
    known = source_backends()
    key = data.get("type")
    if not isinstance(key, str) or key not in known:  # [] would be unhashable
        what = "missing" if key is None else f"{key!r} is not one of {list(known)}"
        raise SourceConfigError([f"{path}.type: {what}"])
    return known[key].config.from_dict(data, path)


def create_source(config: SourceConfig, events: SourceEvents) -> Source:
    """A (not yet opened) source for `config`."""
    backend = source_backends().get(config.type)
    if backend is None:
        raise SourceConfigError([f"source.type: {config.type!r} is not registered"])
    return backend.create(config, events)


def unavailable(key: str, exc: BaseException | str, install: str) -> SourceError:
    """The error for a source whose library cannot be imported."""
    return SourceError(f"source '{key}' unavailable: {exc}; install {install}")


__all__ = [
    "Chunk",
    "NullEvents",
    "Pacer",
    "Source",
    "SourceBackend",
    "SourceConfig",
    "SourceConfigError",
    "SourceEvents",
    "create_source",
    "register",
    "source_backends",
    "source_config_from_dict",
    "unavailable",
]

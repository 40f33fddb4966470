"""Dynamic batcher, in the manner of Triton's: a bounded queue that hands out batches.

A batch goes when `max_batch` items are waiting, or when the oldest waiting item has waited
`max_queue_delay_s`, whichever comes first; with no delay, whatever is waiting goes at once.
`put` never blocks: a full queue drops the oldest or the newest item (`drop_policy`), counts it
and tells the `on_drop` callback, so a slow consumer never stalls the producer (the source).

The clock is injected (`time.monotonic` by default) so tests drive the delay without sleeping:
`next_batch(0)` decides from the clock alone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Generic, Literal, TypeVar

from edge_core.typed_config import TypedConfig

T = TypeVar("T")

DropPolicy = Literal["oldest", "newest"]
DROP_POLICIES: tuple[str, ...] = ("oldest", "newest")


@dataclass(frozen=True)
class BatcherConfig(TypedConfig):
    """`[batcher]`: Triton-like dynamic batching in front of the engine.

    A batch goes when `max_batch` packets wait or the oldest has waited `max_queue_delay_ms`.
    `queue_size` packets at most wait; beyond that `drop_policy` drops the oldest or the newest.
    """

    section: ClassVar[str] = "batcher"
    max_batch: int = 32
    max_queue_delay_ms: float = 0.0
    queue_size: int = 1024
    drop_policy: DropPolicy = "oldest"

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.max_batch < 1:
            out.append(("max_batch", f"want >= 1, got {self.max_batch}"))
        if not 0 <= self.max_queue_delay_ms <= 1000:
            out.append(("max_queue_delay_ms", f"want 0..1000, got {self.max_queue_delay_ms}"))
        if self.queue_size < max(self.max_batch, 1):
            out.append(
                ("queue_size", f"want >= max_batch ({self.max_batch}), got {self.queue_size}")
            )
        return out


class DynamicBatcher(Generic[T]):
    """Bounded FIFO of items; `next_batch` returns up to `max_batch` of them. Thread-safe.

    `on_drop(item)` is called (outside the lock) for every item a full queue throws away.
    """

    def __init__(
        self,
        max_batch: int,
        max_queue_delay_s: float,
        queue_size: int,
        drop_policy: DropPolicy = "oldest",
        clock: Callable[[], float] = time.monotonic,
        on_drop: Callable[[T], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_queue_delay_s < 0:
            raise ValueError(f"max_queue_delay_s must be >= 0, got {max_queue_delay_s}")
        if queue_size < max_batch:
            raise ValueError(f"queue_size ({queue_size}) must be >= max_batch ({max_batch})")
        if drop_policy not in DROP_POLICIES:
            raise ValueError(
                f"drop_policy must be one of {list(DROP_POLICIES)}, got {drop_policy!r}"
            )
        self.max_batch = max_batch
        self.max_queue_delay_s = max_queue_delay_s
        self.queue_size = queue_size
        self.drop_policy = drop_policy
        self.dropped = 0
        self._clock = clock
        self._on_drop = on_drop
        self._items: deque[tuple[float, T]] = deque()  # (enqueue time, item), oldest first
        self._ready = threading.Condition()

    @property
    def depth(self) -> int:
        """Items waiting."""
        return len(self._items)

    def put(self, item: T) -> bool:
        """Queue `item`; never blocks. False when it was dropped itself (policy 'newest')."""
        lost: T | None = None
        accepted = True
        with self._ready:
            if len(self._items) >= self.queue_size:
                self.dropped += 1
                if self.drop_policy == "newest":
                    lost, accepted = item, False
                else:
                    lost = self._items.popleft()[1]
            if accepted:
                self._items.append((self._clock(), item))
                self._ready.notify()
        if lost is not None and self._on_drop is not None:
            self._on_drop(lost)
        return accepted

    def next_batch(self, timeout_s: float, flush: bool = False) -> list[T]:
        """The next batch, waiting at most `timeout_s`; [] if none became due in that time.

        `flush`: whatever is waiting goes now, without waiting for the delay (shutdown drain).
        """
        deadline = self._clock() + timeout_s
        with self._ready:
            while True:
                now = self._clock()
                wait = self._due_in(now, flush)
                if wait <= 0:
                    count = min(len(self._items), self.max_batch)
                    return [self._items.popleft()[1] for _ in range(count)]
                left = deadline - now
                if left <= 0:
                    return []
                self._ready.wait(min(wait, left))

    def drain(self) -> list[T]:
        """Take every waiting item (those nobody will batch any more)."""
        with self._ready:
            items = [item for _, item in self._items]
            self._items.clear()
        return items

    def _due_in(self, now: float, flush: bool) -> float:
        """Seconds until a batch is due (<= 0: due now; inf: queue empty). Lock held."""
        if not self._items:
            return float("inf")
        if flush or len(self._items) >= self.max_batch:
            return 0.0
        return self._items[0][0] + self.max_queue_delay_s - now


__all__ = ["DROP_POLICIES", "BatcherConfig", "DropPolicy", "DynamicBatcher"]

"""DynamicBatcher: batch when full or when the oldest item has waited the delay; never block."""

from __future__ import annotations

import threading

import pytest

from edge_daemon.batcher import DynamicBatcher


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock, **kwargs) -> DynamicBatcher[int]:
    args = {"max_batch": 4, "max_queue_delay_s": 0.002, "queue_size": 8, "clock": clock}
    return DynamicBatcher(**{**args, **kwargs})


def test_full_batch_goes_at_once():
    clock = FakeClock()
    b = make(clock)
    for i in range(5):
        assert b.put(i)
    assert b.next_batch(0) == [0, 1, 2, 3]
    assert b.depth == 1


def test_partial_batch_waits_for_the_oldest_items_delay():
    clock = FakeClock()
    b = make(clock)
    b.put(1)
    clock.now += 0.001
    b.put(2)
    assert b.next_batch(0) == []  # the oldest has waited 1 ms of 2
    clock.now += 0.0011
    assert b.next_batch(0) == [1, 2]
    assert b.next_batch(0) == []


def test_zero_delay_sends_whatever_is_waiting():
    b = make(FakeClock(), max_queue_delay_s=0.0)
    b.put(7)
    assert b.next_batch(0) == [7]


def test_flush_ignores_the_delay():
    b = make(FakeClock())
    b.put(1)
    assert b.next_batch(0) == []
    assert b.next_batch(0, flush=True) == [1]


@pytest.mark.parametrize(
    ("policy", "kept", "lost"), [("oldest", [2, 3, 4, 5], [0, 1]), ("newest", [0, 1, 2, 3], [4, 5])]
)
def test_full_queue_drops_by_policy_and_reports(policy, kept, lost):
    dropped: list[int] = []
    b = make(FakeClock(), queue_size=4, drop_policy=policy, on_drop=dropped.append)
    accepted = [b.put(i) for i in range(6)]
    assert accepted == ([True] * 6 if policy == "oldest" else [True] * 4 + [False] * 2)
    assert dropped == lost
    assert b.dropped == 2
    assert b.depth == 4
    assert b.drain() == kept
    assert b.depth == 0


def test_waiting_consumer_wakes_when_a_batch_fills():
    b: DynamicBatcher[int] = DynamicBatcher(max_batch=2, max_queue_delay_s=60.0, queue_size=4)
    got: list[list[int]] = []
    consumer = threading.Thread(target=lambda: got.append(b.next_batch(30.0)))
    consumer.start()
    b.put(1)
    b.put(2)
    consumer.join(timeout=10)
    assert not consumer.is_alive()
    assert got == [[1, 2]]


def test_timeout_returns_empty_when_nothing_comes():
    b: DynamicBatcher[int] = DynamicBatcher(max_batch=2, max_queue_delay_s=0.0, queue_size=4)
    assert b.next_batch(0.01) == []


def test_producer_and_consumer_threads_lose_nothing_uncounted():
    dropped: list[int] = []
    lock = threading.Lock()

    def on_drop(item: int) -> None:
        with lock:
            dropped.append(item)

    b: DynamicBatcher[int] = DynamicBatcher(
        max_batch=8, max_queue_delay_s=0.0005, queue_size=16, on_drop=on_drop
    )
    taken: list[int] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or b.depth:
            batch = b.next_batch(0.01, flush=done.is_set())
            assert len(batch) <= 8
            taken.extend(batch)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(5000):
        b.put(i)
    done.set()
    consumer.join(timeout=30)
    assert not consumer.is_alive()
    assert sorted(taken + dropped) == list(range(5000))
    assert len(dropped) == b.dropped
    assert taken == sorted(taken)  # FIFO


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch": 0}, "max_batch"),
        ({"max_queue_delay_s": -1.0}, "max_queue_delay_s"),
        ({"queue_size": 2}, "queue_size"),
        ({"drop_policy": "random"}, "drop_policy"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(FakeClock(), **kwargs)

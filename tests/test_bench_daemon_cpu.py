"""tools/bench_daemon.py's CPU accounting: the daemon (with its engine worker process), the load
generator (the bench, the daemon's parent) and everything else add up to the machine's busy
time, each counted once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_tool

GENERATOR, DAEMON, WORKER, UNRELATED = 100, 200, 300, 400


@pytest.fixture(scope="module")
def bench():
    return load_tool("bench_daemon")


def write_proc(root: Path, ticks: dict[int, int], busy: int, children_files: bool) -> None:
    """A fake /proc: the bench (GENERATOR) started the daemon, which started an engine worker;
    UNRELATED is someone else's process. `ticks`: utime + stime of each (split 3:1)."""
    parents = {GENERATOR: 1, DAEMON: GENERATOR, WORKER: DAEMON, UNRELATED: 1}
    for pid, ppid in parents.items():
        task = root / str(pid) / "task" / str(pid)
        task.mkdir(parents=True, exist_ok=True)
        utime, stime = 3 * ticks[pid] // 4, ticks[pid] - 3 * ticks[pid] // 4
        # a command name with ") " in it, as a process may name itself
        (root / str(pid) / "stat").write_text(
            f"{pid} (py) thon) S {ppid} {pid} {pid} 0 -1 4194304 10 0 0 0 {utime} {stime} "
            "7 3 20 0 4 0 1000 100000 2000\n"
        )
        if children_files:  # a kernel with CONFIG_PROC_CHILDREN
            kids = " ".join(str(c) for c, p in parents.items() if p == pid)
            (task / "children").write_text(kids + (" " if kids else ""))
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    user = busy - 40
    (root / "stat").write_text(f"cpu  {user} 0 30 99999 77 5 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n")


@pytest.mark.parametrize("children_files", [True, False], ids=["children-files", "ppid-only"])
def test_generator_daemon_and_other_are_disjoint_and_add_up(bench, tmp_path, children_files):
    before = {GENERATOR: 10, DAEMON: 50, WORKER: 20, UNRELATED: 5}
    # in 2 s: the bench 20 ticks, the daemon 200 + its worker 100, everything else 80
    after = {GENERATOR: 30, DAEMON: 250, WORKER: 120, UNRELATED: 65}
    write_proc(tmp_path, before, busy=1000, children_files=children_files)
    first = bench.cpu_ticks(DAEMON, GENERATOR, tmp_path)
    write_proc(tmp_path, after, busy=1000 + 20 + 300 + 80, children_files=children_files)
    second = bench.cpu_ticks(DAEMON, GENERATOR, tmp_path)
    assert bench.cpu_split(first, second, hz=100, seconds=2.0) == {
        "cpu_cores_total": 2.0,
        "cpu_cores_daemon": 1.5,
        "cpu_cores_load_generator": 0.1,
        "cpu_cores_other": 0.4,
    }


BURN = """
import subprocess, sys, time
worker = None
if sys.argv[1] == "daemon":  # it starts its engine worker, which burns too
    worker = subprocess.Popen([sys.executable, "-c", sys.argv[2], "worker", ""],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    worker.stdout.readline()
print("ready", flush=True)
sys.stdin.readline()
if worker:
    worker.stdin.write("go\\n"); worker.stdin.flush()
start = time.process_time()
while time.process_time() - start < 0.2:
    pass
if worker:
    worker.stdout.readline()
print("done", flush=True)
sys.stdin.read()
if worker:
    worker.stdin.close(); worker.wait()
"""


def test_a_real_daemon_and_its_worker_count_as_the_daemon_not_as_the_generator(bench):
    """A stand-in daemon, child of this process (as the bench's daemon is), and its own child
    each burn 0.2 s of CPU while this process waits."""
    daemon = subprocess.Popen(
        [sys.executable, "-c", BURN, "daemon", BURN],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert daemon.stdin is not None and daemon.stdout is not None
    try:
        assert daemon.stdout.readline() == "ready\n"
        before = bench.cpu_ticks(daemon.pid, os.getpid())
        daemon.stdin.write("go\n")
        daemon.stdin.flush()
        assert daemon.stdout.readline() == "done\n"
        after = bench.cpu_ticks(daemon.pid, os.getpid())
    finally:
        daemon.stdin.close()
        daemon.wait(timeout=60)
    # seconds = 1: each figure reads as CPU seconds; ticks are 1/100 s, rounded to 0.01
    cpu = bench.cpu_split(before, after, hz=os.sysconf("SC_CLK_TCK"), seconds=1.0)
    assert cpu["cpu_cores_daemon"] >= 0.4 - 0.04, cpu  # its worker's 0.2 s included
    assert cpu["cpu_cores_load_generator"] < 0.1, cpu  # this process only waited
    assert cpu["cpu_cores_other"] >= -0.02, cpu
    parts = cpu["cpu_cores_daemon"] + cpu["cpu_cores_load_generator"] + cpu["cpu_cores_other"]
    assert parts == pytest.approx(cpu["cpu_cores_total"], abs=0.015), cpu

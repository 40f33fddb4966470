"""Benchmark the whole daemon (ZeroMQ in -> ZeroMQ out) against the bare engine.

1. Packets: a seeded synthetic channel is cut by the packet assembler; each packet's samples
   (at most 3000), framed by quiet noise, become a burst, and bursts are grouped into ZeroMQ
   messages of about `--message-samples` samples, as a gr-zeromq sink's work() calls carry.
2. Bare engine: `engines.bench.bench_engine` (the code of `edge-tc bench engines`) on those
   packets, ONNX Runtime FP32, every batch of `--batches`; the best packets/s is the bare rate.
3. Daemon: `edge-tc run` in a subprocess with a zmq source fed by this process's PUB socket and
   its publisher read by a SUB socket here. For each rate (a fraction of the bare rate) bursts
   are sent at that many packets per second for `--seconds`; delivered packets/s and the
   latency the daemon publishes (arrival of a packet's last sample -> publication) are measured,
   and its metrics scraped for drops.

`--isolation thread,process` runs the daemon once per engine isolation (`engine.isolation`:
the runtime in the daemon's worker thread, or in a worker process fed through shared memory)
against the same bare-engine figure, and reports what the process costs at each rate
(`isolation_cost`: p50/p99 process minus thread).

Each rate also reports where the latency went: per stage (`stages_ms_p50`, `stages_ms_p99`,
`stages_ms_mean`: assemble, queue, batch, inference, publish, from every message's `stages_ms`,
edge_daemon/stages.py). `--pruned-bundle` runs the same for the pruned bundle (its own bare
engine, same precision and threads, in the same run) plus the absolute rates of
`--pruned-rates` (`bundles` in the report; the top-level keys stay the default bundle's).

Goals (issue 5): sustained end-to-end rate >= 80 % of the bare engine rate; p99 latency < 7 ms
at half that rate. Issue 13: p99 <= 2 ms at half the bare rate and sustained >= 0.95 of it;
the pruned bundle >= 6,000 packets/s sustained, p99 <= 2 ms at 3,000 packets/s. The load
generator shares the CPU with the daemon, as it would not in the field; the figures are a lower
bound for the daemon. Its packets are generated once, before any timing (the feeder only sends
ready bytes).

    .venv/bin/python tools/bench_daemon.py --bundle models/default --out out/bench_daemon.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
GAP_SAMPLES = 800  # quiet before and after each burst: more than the detector's hangover
WARMUP_NOISE_SAMPLES = 20_000  # the detector's noise floor warm-up, sent first
NOISE_POWER = 1e-4
CONFIG_KEYS = ("threads", "max_batch", "max_queue_delay_ms", "queue_size", "seconds", "packets",
               "message_samples", "precision", "ingest", "realtime_priority")  # fmt: skip
STAGES = ("assemble", "queue", "batch", "inference", "publish")


def make_messages(
    count: int, seed: int, message_samples: int
) -> tuple[list[bytes], list[int], np.ndarray]:
    """Bursts of `count` packets grouped into messages of about `message_samples` samples (as a
    gr-zeromq sink's work() calls would carry them): (messages as cf32 bytes, packets in each,
    the packets' model input (count, 2, 3000))."""
    from edge_core.assembler import PacketAssembler
    from edge_daemon.pipeline import packets_to_batch
    from edge_daemon.sources.base import NullEvents
    from edge_daemon.sources.synthetic import SyntheticSource, SyntheticSourceConfig

    config = SyntheticSourceConfig(pace="fast", traffic_scale=4.0, seed=seed)
    source = SyntheticSource(config, NullEvents())
    source.open()
    assembler = PacketAssembler()
    packets: list[Any] = []
    while len(packets) < count:
        chunk = source.read(1.0)
        if chunk is not None:
            packets += assembler.feed(chunk.samples, chunk.first_sample_index)
    packets = packets[:count]
    rng = np.random.default_rng(seed)
    scale = np.sqrt(NOISE_POWER / 2)
    messages: list[bytes] = []
    per_message: list[int] = []
    parts: list[np.ndarray] = []
    for i, p in enumerate(packets):
        body = p.iq[: min(p.num_samples, p.iq.size)]
        noise = rng.standard_normal((2, 2 * GAP_SAMPLES)) * scale
        gap = (noise[0] + 1j * noise[1]).astype(np.complex64)
        parts += [gap[:GAP_SAMPLES], body, gap[GAP_SAMPLES:]]
        if sum(x.size for x in parts) >= message_samples or i == len(packets) - 1:
            messages.append(np.concatenate(parts).astype(np.complex64).tobytes())
            per_message.append(len(parts) // 3)
            parts = []
    return messages, per_message, packets_to_batch(packets)


def bare_engine(
    bundle: Path, x: np.ndarray, batches: list[int], threads: int, precision: str = "fp32"
) -> dict[str, Any]:
    """Packets/s of the engine alone per batch (median of repeats), best batch first."""
    from engines.base import load
    from engines.bench import bench_engine

    engine = load(bundle, {"type": "onnxruntime", "precision": precision, "threads": threads})
    try:
        timings = bench_engine(engine, x, batches, warmup=3, repeats=15)
    finally:
        engine.close()
    per_batch = {b: b / t.median_s for b, t in timings.items()}
    best = max(per_batch, key=lambda b: per_batch[b])
    return {
        "backend": f"onnxruntime {precision} cpu",
        "threads": threads,
        "packets_per_s_by_batch": {str(b): round(v, 1) for b, v in per_batch.items()},
        "best_batch": best,
        "packets_per_s": round(per_batch[best], 1),
    }


def scrape(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items()))
            out[key] = s.value
    return out


class Receiver(threading.Thread):
    """Reads the daemon's tc.all messages; keeps (receive time, latency_ms) of each, and its
    stage breakdown (`stages`, one row of `STAGES` in ms per message)."""

    def __init__(self, context: zmq.Context, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.socket = context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, 0)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"tc.all")
        self.socket.connect(endpoint)
        self.got: list[tuple[float, float]] = []
        self.stages: list[bytes] = []  # raw `stages_ms` objects, parsed after the run
        self.stop = threading.Event()
        self.pattern = re.compile(rb'"latency_ms":([0-9.e-]+)')
        self.stage_pattern = re.compile(rb'"stages_ms":(\{[^}]*\})')

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.socket.poll(100):
                continue
            while True:
                try:
                    _, payload = self.socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                found = self.pattern.search(payload)
                stages = self.stage_pattern.search(payload)
                self.stages.append(stages.group(1) if stages else b"{}")
                self.got.append((time.monotonic(), float(found.group(1)) if found else -1.0))
        self.socket.close(linger=0)


def feed(
    socket: zmq.Socket, messages: list[bytes], per_message: list[int], rate: float,
    seconds: float,
) -> int:  # fmt: skip
    """Send messages so that `rate` packets per second go out for `seconds` (catching up at
    once when late); the number of packets sent."""
    t0 = time.monotonic()
    sent = index = 0
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((time.monotonic() - t0) * rate) + 1)
        while sent < due:
            k = index % len(messages)
            socket.send(messages[k], copy=False)
            sent += per_message[k]
            index += 1
        wait = t0 + sent / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    return sent


def run_daemon(
    bundle: Path, args: argparse.Namespace, port: int, workdir: Path, isolation: str = "thread"
) -> tuple[subprocess.Popen[bytes], Any, str, str]:
    config = workdir / "bench.toml"
    config.write_text(f"""
bundle = "{bundle}"
log_level = "info"
drain_timeout_s = 2.0
ingest = "{args.ingest}"
realtime_priority = {args.realtime_priority}
[source]
type = "zmq"
address = "tcp://127.0.0.1:{port}"
rcvhwm = 100000
[engine]
type = "onnxruntime"
precision = "{args.precision}"
threads = {args.threads}
isolation = "{isolation}"
[batcher]
max_batch = {args.max_batch}
max_queue_delay_ms = {args.max_queue_delay_ms}
queue_size = {args.queue_size}
[publisher]
bind = "tcp://127.0.0.1:*"
sndhwm = 100000
[metrics]
port = 0
[power]
type = "none"
""")  # fmt: skip
    log = (workdir / "daemon.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_core.cli", "run", "--config", str(config)],
        cwd=ROOT, stderr=log, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = Path(log.name).read_text()
        found = re.search(r"publishing on (\S+), metrics on (http://\S+/metrics)", text)
        if found:
            return proc, log, found.group(1), found.group(2)
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited:\n{text}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the daemon did not start in 60 s")


PROC = Path("/proc")


def busy_ticks(proc: Path = PROC) -> int:
    """CPU ticks spent by anything on the machine (all cores), from /proc/stat."""
    with (proc / "stat").open() as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # less idle and iowait


def process_table(proc: Path = PROC) -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, utime + stime of all its threads) of every process, from /proc."""
    table = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended meanwhile
            continue
        fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold ")"
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def tree_ticks(
    table: dict[int, tuple[int, int]], root: int, exclude: frozenset[int] = frozenset()
) -> int:
    """Ticks of `root` and of its running descendants, less the subtrees rooted at `exclude`."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    ticks, stack = 0, [root]
    while stack:
        pid = stack.pop()
        if pid in exclude or pid not in table:
            continue
        ticks += table[pid][1]
        stack += children.get(pid, [])
    return ticks


def cpu_ticks(daemon_pid: int, generator_pid: int, proc: Path = PROC) -> tuple[int, int, int]:
    """(busy ticks of the machine, the daemon's with its engine worker process, the load
    generator's without the daemon, its child), read now."""
    busy = busy_ticks(proc)
    table = process_table(proc)
    daemon = tree_ticks(table, daemon_pid)
    return busy, daemon, tree_ticks(table, generator_pid, exclude=frozenset({daemon_pid}))


def cpu_split(
    before: tuple[int, int, int], after: tuple[int, int, int], hz: float, seconds: float
) -> dict[str, float]:
    """Cores busy between two `cpu_ticks` readings `seconds` apart: the whole machine, the
    daemon, the load generator, and everything else."""
    busy, daemon, generator = (b - a for a, b in zip(before, after, strict=True))

    def cores(ticks: int) -> float:
        return round(ticks / hz / seconds, 2)

    return {
        "cpu_cores_total": cores(busy),
        "cpu_cores_daemon": cores(daemon),
        "cpu_cores_load_generator": cores(generator),
        "cpu_cores_other": cores(busy - daemon - generator),
    }


def measure_rate(
    feeder: zmq.Socket, receiver: Receiver, metrics_url: str, messages: list[bytes],
    per_message: list[int], rate: float, seconds: float, daemon_pid: int,
) -> dict[str, Any]:  # fmt: skip
    before = scrape(metrics_url)
    ticks = cpu_ticks(daemon_pid, os.getpid())
    start_index = len(receiver.got)
    t0 = time.monotonic()
    sent = feed(feeder, messages, per_message, rate, seconds)
    t1 = time.monotonic()
    cpu = cpu_split(ticks, cpu_ticks(daemon_pid, os.getpid()), os.sysconf("SC_CLK_TCK"), t1 - t0)
    time.sleep(1.0)  # let the queue drain before counting
    after = scrape(metrics_url)
    got = receiver.got[start_index:]
    stage_rows = np.array(
        [
            [float(json.loads(raw).get(k, "nan")) for k in STAGES]
            for raw in receiver.stages[start_index : start_index + len(got)]
        ],
        np.float64,
    ).reshape(-1, len(STAGES))  # parsed here, after the timed window, not in the receiver
    in_window = [lat for t, lat in got if t0 + 0.5 <= t <= t1]  # skip the ramp-up
    window_count = sum(1 for t, _ in got if t0 + 0.5 <= t <= t1)
    latencies = np.array([lat for _, lat in got], dtype=np.float64)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    return {
        "offered_packets_per_s": round(sent / (t1 - t0), 1),
        **cpu,  # cores busy while feeding: the daemon, this load generator, everything else
        "sent": sent,
        "received": len(got),
        "delivered_packets_per_s": round(window_count / max(1e-9, t1 - t0 - 0.5), 1),
        "detected": delta("edgetc_packets_detected_total"),
        "classified": delta("edgetc_packets_classified_total"),
        "dropped_queue_full": delta("edgetc_packets_dropped_total{reason=queue_full}"),
        "failed": delta("edgetc_packets_failed_total"),
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 3) if got else None,
        "latency_ms_p99": round(float(np.percentile(latencies, 99)), 3) if got else None,
        "latency_ms_p99_steady": round(float(np.percentile(in_window, 99)), 3)
        if in_window
        else None,
        "mean_batch": round(
            delta("edgetc_batch_size_sum") / max(1.0, delta("edgetc_batch_size_count")), 2
        ),
        **stage_summary(stage_rows),
    }


def stage_summary(rows: np.ndarray) -> dict[str, Any]:
    """Per stage p50, p99 and mean in ms over messages' `stages_ms` rows (n, stages)."""
    rows = rows[~np.isnan(rows).any(axis=1)] if rows.size else rows.reshape(0, len(STAGES))
    if not len(rows):
        return {"stages_ms_p50": None, "stages_ms_p99": None, "stages_ms_mean": None}
    return {
        f"stages_ms_{name}": {
            stage: round(float(v), 3) for stage, v in zip(STAGES, values, strict=True)
        }
        for name, values in (
            ("p50", np.percentile(rows, 50, axis=0)),
            ("p99", np.percentile(rows, 99, axis=0)),
            ("mean", rows.mean(axis=0)),
        )
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench_daemon.json")
    parser.add_argument("--packets", type=int, default=1000, help="distinct bursts to cycle")
    parser.add_argument("--rates", default="0.25,0.5,0.8,1.0,1.2", help="x the bare rate")
    parser.add_argument("--seconds", type=float, default=4.0, help="per rate")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="engine threads (1: leaves the second core to the source, publisher and load)",
    )  # fmt: skip
    parser.add_argument("--batches", default="1,4,8,16,32,64,128")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-queue-delay-ms", type=float, default=0.0)
    parser.add_argument("--queue-size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--message-samples", type=int, default=16384,
        help="samples per ZeroMQ message (packets are grouped; 1: one packet per message)",
    )  # fmt: skip
    parser.add_argument(
        "--isolation", default="thread",
        help="engine.isolation of the daemon: thread, process, or both in one run (thread,process)",
    )  # fmt: skip
    parser.add_argument("--precision", default="fp32", help="ONNX Runtime precision (fp32, int8)")
    parser.add_argument(
        "--ingest", default="process", choices=("thread", "process"),
        help="where the daemon's source side runs (`ingest`; default: the daemon's default)",
    )  # fmt: skip
    parser.add_argument(
        "--realtime-priority", type=int, default=0, metavar="N",
        help="the daemon's `realtime_priority` (0: off, the service's default; 1..99: SCHED_FIFO "
        "for the threads a packet waits on, where this user may)",
    )  # fmt: skip
    parser.add_argument(
        "--pruned-bundle", default=str(ROOT / "models" / "default-pruned-int8"),
        help="also run this bundle (its own bare engine, same precision/threads); '' to skip",
    )  # fmt: skip
    parser.add_argument(
        "--pruned-rates", default="3000,6000",
        help="absolute packets/s the pruned bundle is also offered (issue 13's goals)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    isolations = args.isolation.split(",")
    if not isolations or any(i not in ("thread", "process") for i in isolations):
        parser.error(f"--isolation: want thread, process or thread,process, got {args.isolation!r}")
    bundle = args.bundle.resolve()
    load_before = os.getloadavg()  # other work on the machine skews every figure: recorded

    messages, per_message, x = make_messages(args.packets, args.seed, args.message_samples)
    batches = [int(b) for b in args.batches.split(",")]
    bare = bare_engine(bundle, x, batches, args.threads, args.precision)
    print(f"bare engine: {bare['packets_per_s']} packets/s at batch {bare['best_batch']}")

    by_isolation = {}
    for isolation in isolations:
        print(f"daemon with engine.isolation = {isolation!r}")
        by_isolation[isolation] = run_rates(bundle, args, messages, per_message, bare, isolation)
    runs, rc, daemon_log = by_isolation[isolations[0]]
    report: dict[str, Any] = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg()},
        "bundle": str(bundle),
        "config": {k: getattr(args, k) for k in CONFIG_KEYS},
        "bare_engine": bare,
        "daemon": runs,
        "daemon_exit_code": rc,
        "daemon_log_tail": daemon_log,
        "goals": goals(runs, bare),
    }  # fmt: skip
    if len(isolations) > 1 or isolations != ["thread"]:
        report["isolation"] = {
            i: {"daemon": r, "daemon_exit_code": c, "goals": goals(r, bare)}
            for i, (r, c, _) in by_isolation.items()
        }
    if {"thread", "process"} <= set(by_isolation):
        report["isolation_cost"] = [
            {
                "fraction_of_bare": t["fraction_of_bare"],
                **{
                    f"{key}_added": round(p[key] - t[key], 3)
                    if p[key] is not None and t[key] is not None
                    else None
                    for key in ("latency_ms_p50", "latency_ms_p99")
                },
            }
            for t, p in zip(by_isolation["thread"][0], by_isolation["process"][0], strict=True)
        ]
        print(json.dumps(report["isolation_cost"], indent=2))
    report["bundles"] = {"default": {"bundle": str(bundle), "bare_engine": bare, "daemon": runs,
                                     "goals": report["goals"]}}  # fmt: skip
    if args.pruned_bundle:
        pruned = Path(args.pruned_bundle).resolve()
        pruned_bare = bare_engine(pruned, x, batches, args.threads, args.precision)
        print(f"pruned bundle, bare engine: {pruned_bare['packets_per_s']} packets/s")
        absolute = [float(r) for r in args.pruned_rates.split(",") if r]
        pruned_runs, pruned_rc, _ = run_rates(
            pruned, args, messages, per_message, pruned_bare, isolations[0], absolute
        )
        report["bundles"]["pruned"] = {
            "bundle": str(pruned),
            "bare_engine": pruned_bare,
            "daemon": pruned_runs,
            "daemon_exit_code": pruned_rc,
            "goals": goals(pruned_runs, pruned_bare, pruned=True),
        }
        print(json.dumps(report["bundles"]["pruned"]["goals"], indent=2))
    report["machine"]["loadavg_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["goals"], indent=2))
    print(f"wrote {args.out}")
    return 0


def goals(runs: list[dict[str, Any]], bare: dict[str, Any], pruned: bool = False) -> dict[str, Any]:
    """Issue 5's goals and issue 13's (for the pruned bundle, its absolute-rate ones too)."""
    sustained = max(r["delivered_packets_per_s"] for r in runs)
    relative = [r for r in runs if r.get("fraction_of_bare") is not None] or runs
    half = min(relative, key=lambda r: abs(r["fraction_of_bare"] - 0.5))
    p99_half = half["latency_ms_p99"]
    out: dict[str, Any] = {
        "sustained_packets_per_s": sustained,
        "sustained_fraction_of_bare": round(sustained / bare["packets_per_s"], 3),
        "sustained_goal_0.8_met": sustained >= 0.8 * bare["packets_per_s"],
        "p99_ms_at_half_rate": p99_half,
        "p99_goal_7ms_met": p99_half is not None and p99_half < 7.0,
        "p99_goal_2ms_met": p99_half is not None and p99_half <= 2.0,
        "sustained_goal_0.95_met": sustained >= 0.95 * bare["packets_per_s"],
        "stages_ms_at_half_rate": {"p50": half.get("stages_ms_p50"),
                                   "p99": half.get("stages_ms_p99")},
    }  # fmt: skip
    if pruned:
        at_3000 = [r for r in runs if r.get("offered_rate_goal") == 3000.0]
        p99 = at_3000[0]["latency_ms_p99"] if at_3000 else None
        out["sustained_goal_6000_met"] = sustained >= 6000
        out["p99_ms_at_3000_per_s"] = p99
        out["p99_goal_2ms_at_3000_met"] = p99 is not None and p99 <= 2.0
    return out


def run_rates(
    bundle: Path, args: argparse.Namespace, messages: list[bytes], per_message: list[int],
    bare: dict[str, Any], isolation: str, absolute: list[float] | None = None,
) -> tuple[list[dict[str, Any]], int, list[str]]:  # fmt: skip
    """One daemon (`engine.isolation`), every rate of `--rates` (x the bare rate), then each
    of `absolute` (packets/s): (runs, exit code, log tail)."""
    context = zmq.Context()
    feeder = context.socket(zmq.PUB)
    feeder.setsockopt(zmq.SNDHWM, 100_000)
    port = feeder.bind_to_random_port("tcp://127.0.0.1")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        proc, log, publish_at, metrics_url = run_daemon(bundle, args, port, Path(tmp), isolation)
        receiver = Receiver(context, publish_at)
        receiver.start()
        try:
            deadline = time.monotonic() + 30  # until the daemon's SUB and ours have joined
            rng = np.random.default_rng(1)
            noise = rng.standard_normal((2, WARMUP_NOISE_SAMPLES)) * np.sqrt(NOISE_POWER / 2)
            noise_bytes = (noise[0] + 1j * noise[1]).astype(np.complex64).tobytes()
            while not receiver.got and time.monotonic() < deadline:
                feeder.send(noise_bytes)
                for message in messages[:5]:
                    feeder.send(message)
                time.sleep(0.3)
            time.sleep(1.0)
            plan: list[tuple[float | None, float]] = [
                (float(r), float(r) * bare["packets_per_s"]) for r in args.rates.split(",")
            ]
            plan += [(None, rate) for rate in absolute or []]
            for fraction, rate in plan:
                result = measure_rate(
                    feeder, receiver, metrics_url, messages, per_message, rate, args.seconds,
                    proc.pid,
                )  # fmt: skip
                result["fraction_of_bare"] = fraction
                if fraction is None:
                    result["offered_rate_goal"] = rate
                result["isolation"] = isolation
                result["delivered_fraction_of_bare"] = round(
                    result["delivered_packets_per_s"] / bare["packets_per_s"], 3
                )
                runs.append(result)
                print(json.dumps(result))
        finally:
            receiver.stop.set()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=30)
            receiver.join(timeout=5)
            feeder.close(linger=0)
            context.term()
            log.seek(0)
            daemon_log = log.read().splitlines()[-5:]
            log.close()
    return runs, rc, daemon_log


if __name__ == "__main__":
    sys.exit(main())

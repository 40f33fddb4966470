"""Benchmark the packet assembler on one core against real time at 20 Msps.

Makes a seeded synthetic stream (the channel simulator `edge_core.synth.stream` when it can
be imported, else the burst maker of tests/test_assembler.py), feeds it to a PacketAssembler in
chunks, and reports the median of `--repeat` runs as JSON (`--out`, default
out/bench_assembler.json). The target is realtime_factor >= 10: one core detects and cuts 20
Msps ten times faster than the samples arrive.

    .venv/bin/python tools/bench_assembler.py --seconds 2 --out out/bench_assembler.json
"""

from __future__ import annotations

import os

# One core: the BLAS/OpenMP pools read these when numpy is first imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_core.assembler import AssemblerConfig, PacketAssembler  # noqa: E402
from edge_core.schema import SAMPLE_RATE_HZ  # noqa: E402

TARGET_REALTIME_FACTOR = 10.0


def pin_one_core() -> str:
    """Limit this process (and any thread pool) to one CPU; say how."""
    how = ["*_NUM_THREADS=1"]
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        how.append(f"affinity cpu {cpu}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        threadpool_limits(1)
        how.append("threadpoolctl")
    return ", ".join(how)


def channel_stream(seconds: float, seed: int, traffic_scale: float) -> np.ndarray:
    """`seconds` of the channel simulator's 802.11 traffic (complex64)."""
    from edge_core.synth.stream import ChannelSimulator, StreamConfig

    total = round(seconds * SAMPLE_RATE_HZ)
    sim = ChannelSimulator(StreamConfig(traffic_scale=traffic_scale), seed)
    out = np.empty(total, dtype=np.complex64)
    for start, samples, _ in sim.chunks():
        n = min(samples.size, total - start)
        out[start : start + n] = samples[:n]
        if start + n >= total:
            return out
    raise AssertionError("unreachable")


def burst_stream(seconds: float, seed: int) -> np.ndarray:
    """`seconds` of the test burst maker's stream (complex64)."""
    path = ROOT / "tests" / "test_assembler.py"
    spec = importlib.util.spec_from_file_location("_assembler_tests", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    # Bursts average ~3200 samples and gaps ~10000: ~1500 packets per second.
    n_bursts = max(1, round(seconds * SAMPLE_RATE_HZ / 13_360))
    samples: np.ndarray = module.make_burst_stream(
        seed=seed, n_bursts=n_bursts, snr_db=15.0
    ).samples
    return samples


def run_once(x: np.ndarray, chunk_samples: int, config: AssemblerConfig) -> tuple[float, int, dict]:
    """Feed x chunk by chunk, dropping the packets as a consumer would; (wall s, packets, stats)."""
    assembler = PacketAssembler(config)
    packets = 0
    t0 = time.perf_counter()
    for start in range(0, x.size, chunk_samples):
        packets += len(assembler.feed(x[start : start + chunk_samples], start, time.monotonic()))
    packets += len(assembler.flush())
    return time.perf_counter() - t0, packets, assembler.stats.as_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="signal length (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-samples", type=int, default=65536)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--source",
        choices=("auto", "channel", "bursts"),
        default="auto",
        help="channel simulator, test bursts, or auto: the simulator if it imports",
    )
    parser.add_argument("--traffic-scale", type=float, default=1.0, help="channel source only")
    parser.add_argument("--stf", action="store_true", help="enable the L-STF refinement")
    parser.add_argument("--out", default=str(ROOT / "out" / "bench_assembler.json"))
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.repeat < 1 or args.chunk_samples < 1:
        parser.error("--seconds, --repeat and --chunk-samples must be positive")

    cores = pin_one_core()
    source = args.source
    if source == "auto":
        try:
            importlib.import_module("edge_core.synth.stream")
            source = "channel"
        except ImportError:
            source = "bursts"
    t0 = time.perf_counter()
    if source == "channel":
        x = channel_stream(args.seconds, args.seed, args.traffic_scale)
    else:
        x = burst_stream(args.seconds, args.seed)
    make_s = time.perf_counter() - t0

    config = AssemblerConfig(use_stf_autocorr=args.stf)
    run_once(x[: min(x.size, 1 << 20)], args.chunk_samples, config)  # warm the buffers up
    runs = [run_once(x, args.chunk_samples, config) for _ in range(args.repeat)]
    walls = [wall for wall, _, _ in runs]
    wall = statistics.median(walls)
    seconds = x.size / SAMPLE_RATE_HZ
    _, packets, stats = runs[0]
    report: dict[str, Any] = {
        "samples": int(x.size),
        "seconds_of_signal": seconds,
        "wall_seconds": wall,
        "realtime_factor": seconds / wall,
        "samples_per_s": x.size / wall,
        "target_realtime_factor": TARGET_REALTIME_FACTOR,
        "meets_target": seconds / wall >= TARGET_REALTIME_FACTOR,
        "wall_seconds_runs": walls,
        "packets": packets,
        "packets_per_s_of_signal": packets / seconds,
        "source": source,
        "seed": args.seed,
        "chunk_samples": args.chunk_samples,
        "use_stf_autocorr": args.stf,
        "one_core": cores,
        "stream_make_seconds": make_s,
        "stats": stats,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{source}: {x.size} samples ({seconds:.2f} s of signal, {packets} packets) in "
        f"{wall:.3f} s median of {args.repeat}: realtime factor {seconds / wall:.1f} "
        f"(target {TARGET_REALTIME_FACTOR:.0f}), {x.size / wall / 1e6:.1f} Msamples/s"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

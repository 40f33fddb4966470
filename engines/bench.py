"""`edge-tc bench engines`: every available backend and precision of a bundle, side by side.

One process runs each engine the registry offers for the bundle (`Backend.bench_configs`):
load, warm up, then `repeats` timed `infer` calls per batch size; per-task top-1 agreement
with the ONNX FP32 engine on the same packets; the process's peak resident set per batch
(VmHWM, reset before each batch through /proc/self/clear_refs). A roofline bound comes from
the manifest's FLOPs per sample and this machine's measured float32 matmul rate in the same
run. Single-task bundles (`--stl-bundle`, or a sibling directory `<bundle>-stl`) are timed run
one after another on the same batch, against the multi-task model (the paper's 3.4x claim).

A fixed-batch model (the Edge TPU's TFLite INT8 takes batch 1) is timed at its batch and
reported at each requested batch as that many calls, labelled (`timed_batch`,
`calls_per_batch`). Output JSON: {"machine", "roofline", "rows", "stl_vs_mtl", "goals",
"skipped"}; `--plot` draws ms/sample and peak memory vs batch (the papers' Fig. 9).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_core.bundle import MANIFEST_NAME, Bundle, load_manifest
from edge_core.errors import EdgeTcError, ModelError
from edge_core.schema import INPUT_LENGTH, TASKS
from engines.base import Engine, EngineConfig, backends, load, rss_bytes

MIB = 1 << 20
MATMUL_SIZE = 1024
"""Square float32 matmul used to measure the machine's sustained GFLOP/s."""
RUNTIME_PACKAGES = ("numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime", "tensorrt")
GOAL_ROOFLINE_RATIO = 1.5
GOAL_INT8_SPEEDUP = 1.5
GOAL_INT8_AGREEMENT = 0.97
GOAL_BATCH = 64
"""The batch the roofline and INT8 goals are judged at (the paper's Table 12 batch)."""


# ---------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else `platform.processor()`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions(names: Sequence[str] = RUNTIME_PACKAGES) -> dict[str, str]:
    """Version of each installed package among `names` (absent ones are left out)."""
    out = {}
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        out[name] = str(getattr(module, "__version__", "?"))
    return out


def _openblas() -> ctypes.CDLL | None:
    """The OpenBLAS numpy loaded (found in /proc/self/maps), or None."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def blas_threads(set_to: int = 0) -> int | None:
    """numpy's OpenBLAS thread count (set first when `set_to` > 0); None if not OpenBLAS."""
    lib = _openblas()
    if lib is None:
        return None
    prefixes = ("scipy_openblas", "openblas")
    suffixes = ("64_", "_64_", "")
    if set_to > 0:
        for name in (f"{p}_set_num_threads{s}" for p in prefixes for s in suffixes):
            if hasattr(lib, name):
                getattr(lib, name)(ctypes.c_int(set_to))
                break
    for name in (f"{p}_get_num_threads{s}" for p in prefixes for s in suffixes):
        if hasattr(lib, name):
            return int(getattr(lib, name)())
    return None


def measure_matmul_gflops(threads: int, seconds: float = 1.5) -> dict[str, Any]:
    """float32 GFLOP/s of numpy matmul calls for about `seconds`: per-call rates, threads used."""
    used = blas_threads(threads)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((MATMUL_SIZE, MATMUL_SIZE), dtype=np.float32)
    b = rng.standard_normal((MATMUL_SIZE, MATMUL_SIZE), dtype=np.float32)
    out = np.empty_like(a)
    for _ in range(3):  # warm up: thread pool, caches, frequency
        np.matmul(a, b, out=out)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    flops = 2.0 * MATMUL_SIZE**3
    return {
        "rates": [flops / t / 1e9 for t in times],
        "matmul": f"float32 {MATMUL_SIZE}x{MATMUL_SIZE} @ {MATMUL_SIZE}x{MATMUL_SIZE}",
        "threads": used if used is not None else (threads or os.cpu_count() or 1),
        "threads_source": "openblas" if used is not None else "assumed",
    }


def describe_machine(threads: int) -> dict[str, Any]:
    """CPU, cores, OS, Python and runtime versions, load average: where the figures come from."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtimes": package_versions(),
        "engine_threads": threads or "runtime default",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "baseline_rss_mib": _mib(rss_bytes()),
    }


# --------------------------------------------------------------------------------- packets


def bench_packets(count: int, data: Path | None, seed: int) -> tuple[np.ndarray, str]:
    """(packets (count, 2, 3000) float32, where they come from): a dataset's or synthetic."""
    if data is not None:
        path = data / "iq.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: --data wants a dataset directory with iq.npy")
        iq = np.load(path, mmap_mode="r")  # (N, 2, 3000)
        if iq.ndim != 3 or iq.shape[1:] != (2, INPUT_LENGTH):
            raise ValueError(f"{path}: want packets (N, 2, {INPUT_LENGTH}), got {iq.shape}")
        index = np.linspace(0, len(iq) - 1, min(count, len(iq))).round().astype(int)
        return np.asarray(iq[index], dtype=np.float32), f"{len(index)} packets of {data}"
    from edge_core.synth.generator import generate_packets

    rng = np.random.default_rng(seed)
    x = np.empty((count, 2, INPUT_LENGTH), np.float32)
    for i, packet in enumerate(generate_packets(count, rng)):
        x[i, 0], x[i, 1] = packet.iq.real, packet.iq.imag
    return x, f"{count} synthetic packets (generator seed {seed})"


def tile(x: np.ndarray, n: int) -> np.ndarray:
    """`n` packets cycling through `x`."""
    return np.ascontiguousarray(x[np.arange(n) % len(x)])


# --------------------------------------------------------------------------------- timing


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux clear_refs 5); False if unable."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / MIB, 1)


@dataclass
class Timing:
    """Per-call wall times (seconds) of one engine at one batch, and the peak RSS meanwhile."""

    batch: int
    seconds: list[float]
    peak_rss: int | None

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    def quantile_s(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def time_calls(
    run: Callable[[np.ndarray], object], x: np.ndarray, warmup: int, repeats: int
) -> Timing:
    """`warmup` untimed then `repeats` timed calls of `run(x)`; peak RSS over all of them."""
    reset_peak_rss()
    for _ in range(warmup):
        run(x)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        seconds.append(time.perf_counter() - start)
    return Timing(len(x), seconds, rss_bytes("VmHWM"))


def agreement(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, float]:
    """Per task, the fraction of packets whose arg-max class is the reference's."""
    return {
        t: round(float(np.mean(reference[t].argmax(1) == other[t].argmax(1))), 4)
        for t in reference
        if t in other
    }


# ------------------------------------------------------------------------------------ rows


@dataclass
class BenchResult:
    """What `run_bench` measured; `to_json()` is the file `--out` gets."""

    machine: dict[str, Any]
    roofline: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    stl_vs_mtl: list[dict[str, Any]] = field(default_factory=list)
    goals: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "roofline": self.roofline,
            "rows": self.rows,
            "stl_vs_mtl": self.stl_vs_mtl,
            "goals": self.goals,
            "skipped": self.skipped,
        }


def _rows_for(
    engine: Engine,
    model: str,
    timings: dict[int, Timing],
    batches: Sequence[int],
    agree: dict[str, float],
) -> list[dict[str, Any]]:
    """One row per requested batch; a fixed-batch engine's are its timed batch, repeated."""
    spec = engine.input_spec
    rows = []
    for batch in batches:
        timed = spec.max_batch if spec.fixed_batch else batch
        t = timings[timed]
        calls = math.ceil(batch / timed)
        per_call = t.median_s
        row: dict[str, Any] = {
            "engine": engine.info.backend,
            "precision": engine.info.precision,
            "batch": batch,
            "ms_per_sample_median": round(per_call * 1e3 / timed, 5),
            "samples_per_s": round(timed / per_call, 1),
            "peak_rss_mib": _mib(t.peak_rss),
            "agreement_vs_fp32": agree,
            "model": model,
            "model_file": engine.info.model_file,
            "device": engine.info.device,
            "timed_batch": timed,
            "calls_per_batch": calls,
            "ms_per_call_median": round(per_call * 1e3, 4),
            "ms_per_call_p90": round(t.quantile_s(0.9) * 1e3, 4),
            "ms_per_call_min": round(min(t.seconds) * 1e3, 4),
            "repeats": len(t.seconds),
        }
        if spec.fixed_batch:
            row["note"] = (
                f"fixed batch {timed}: timed at batch {timed}; a batch of {batch} is "
                f"{calls} call(s) of batch {timed}"
            )
        rows.append(row)
    return rows


def _infer_all(engine: Engine, x: np.ndarray, chunk: int = 256) -> dict[str, np.ndarray]:
    parts = [engine.infer(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    return {t: np.concatenate([p[t] for p in parts]) for t in engine.tasks}


def bench_engine(
    engine: Engine,
    packets: np.ndarray,
    batches: Sequence[int],
    warmup: int,
    repeats: int,
) -> dict[int, Timing]:
    """Timings at every batch the engine is really called with (its own, if fixed)."""
    spec = engine.input_spec
    sizes = sorted({spec.max_batch} if spec.fixed_batch else set(batches))
    return {b: time_calls(engine.infer, tile(packets, b), warmup, repeats) for b in sizes}


def _configs(bundle: Bundle, threads: int, only: Sequence[str]) -> list[EngineConfig]:
    configs = []
    for key, backend in backends().items():
        if only and key not in only:
            continue
        configs += backend.bench_configs(bundle, threads)
    return configs


def _label(config: EngineConfig) -> str:
    precision = getattr(config, "precision", "")
    return f"{config.type}/{precision}" + (f" ({config.model})" if config.model else "")


def run_bench(
    bundle_dir: Path,
    batches: Sequence[int],
    *,
    repeats: int = 20,
    warmup: int = 3,
    threads: int = 0,
    packets: int = 256,
    data: Path | None = None,
    seed: int = 2026,
    stl_bundles: Sequence[Path] = (),
    only: Sequence[str] = (),
    log: Callable[[str], None] = lambda s: None,
) -> BenchResult:
    """Measure every available engine of the bundle (and its STL siblings); see the module."""
    if not batches or any(b < 1 for b in batches):
        raise ValueError(f"--batch wants sizes >= 1, got {list(batches)}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"want --repeats >= 1 and --warmup >= 0, got {repeats}, {warmup}")
    unknown = sorted(set(only) - set(backends()))
    if unknown:
        raise ValueError(f"--engines: unknown {unknown}; the engines are {list(backends())}")
    batches = sorted(set(batches))
    bundle = load_manifest(bundle_dir)
    machine = describe_machine(threads)
    machine["peak_rss_method"] = (
        "VmHWM reset per batch (/proc/self/clear_refs)"
        if reset_peak_rss()
        else "process peak since start (ru_maxrss): not per row"
    )
    x, source = bench_packets(packets, data, seed)
    machine["agreement_packets"] = source
    log(f"measuring float32 matmul ({MATMUL_SIZE}^3) ...")
    matmul = measure_matmul_gflops(threads)
    flops = int(bundle.manifest["model"]["flops"])
    roofline: dict[str, Any] = {
        "model_flops_per_sample": flops,
        "model": f"{bundle.manifest['model']['architecture']} {list(bundle.tasks)}",
        "matmul": matmul["matmul"],
        "matmul_threads": matmul["threads"],
        "matmul_threads_source": matmul["threads_source"],
    }
    result = BenchResult(machine, roofline)
    reference: dict[str, np.ndarray] | None = None
    configs = _configs(bundle, threads, only)
    # the FP32 ONNX engine first: it is the agreement reference of every other row
    configs.sort(key=lambda c: (c.type != "onnxruntime", getattr(c, "precision", "") != "fp32"))
    for config in configs:
        label = _label(config)
        try:
            engine = load(bundle, config)
        except EdgeTcError as exc:
            log(f"{label}: skipped: {exc}")
            result.skipped.append(
                {"engine": config.type, "config": config.to_dict(), "reason": str(exc)}
            )
            continue
        with engine:
            log(f"{label}: {engine.info.device}, {engine.info.runtime} ...")
            # timing first, batches in increasing order, so each row's peak RSS is what that
            # batch needs (runtimes keep their arenas), not the agreement pass's bigger chunks
            timings = bench_engine(engine, x, batches, warmup, repeats)
            outputs = _infer_all(engine, x)
            is_reference = engine.info.backend == "onnxruntime" and engine.info.precision == "fp32"
            if reference is None and is_reference:
                reference = outputs
            agree = agreement(reference, outputs) if reference is not None else {}
            result.rows += _rows_for(engine, "mtl", timings, batches, agree)
    _stl_rows(result, bundle, stl_bundles, x, batches, warmup, repeats, threads, reference, log)
    log("measuring float32 matmul again ...")
    rates = matmul["rates"] + measure_matmul_gflops(threads)["rates"]
    # the bound needs the machine's rate, not what other processes left of it: the fastest
    # call of two windows (start and end of the run); the median is kept for comparison
    best = max(rates)
    roofline.update(
        matmul_gflops=round(best, 2),
        matmul_gflops_median=round(statistics.median(rates), 2),
        matmul_calls=len(rates),
        matmul_rate_used="fastest call, windows of 1.5 s at the start and the end of the run",
        bound_ms_per_sample=round(flops / (best * 1e9) * 1e3, 6),
    )
    result.goals = judge_goals(result)
    # measured / bound for ONNX Runtime FP32 at the goal batch (64, else the largest run)
    roofline["ratio_batch"] = result.goals["roofline"].get("batch")
    roofline["ratio_onnxruntime_fp32"] = result.goals["roofline"].get("ratio")
    machine["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return result


# ------------------------------------------------------------------------------------- STL


def find_stl_bundles(bundle_dir: Path, given: Sequence[Path]) -> list[Path]:
    """Single-task bundle directories: each given path, or its subdirectories that are bundles;
    by default the sibling `<bundle>-stl/` when it exists."""
    roots = list(given)
    sibling = bundle_dir.parent / f"{bundle_dir.name}-stl"
    if not roots and sibling.is_dir():
        roots = [sibling]
    found: list[Path] = []
    for root in roots:
        if (root / MANIFEST_NAME).is_file():
            found.append(root)
        elif root.is_dir():
            found += sorted(p for p in root.iterdir() if (p / MANIFEST_NAME).is_file())
        else:
            raise FileNotFoundError(f"{root}: --stl-bundle wants a bundle or a folder of bundles")
    return found


def _stl_rows(
    result: BenchResult,
    mtl: Bundle,
    given: Sequence[Path],
    x: np.ndarray,
    batches: Sequence[int],
    warmup: int,
    repeats: int,
    threads: int,
    reference: dict[str, np.ndarray] | None,
    log: Callable[[str], None],
) -> None:
    """STL models run one after another vs the MTL model: ONNX Runtime FP32 (and INT8)."""
    paths = find_stl_bundles(mtl.directory, given)
    if not paths:
        return
    stl = [load_manifest(p) for p in paths]
    for b in stl:
        if len(b.tasks) != 1:
            raise ModelError(f"{b.directory}: an STL bundle has one task, this has {list(b.tasks)}")
    tasks = [b.tasks[0] for b in stl]
    if sorted(tasks) != sorted(mtl.tasks):
        raise ModelError(
            f"STL bundles {[str(p) for p in paths]} cover tasks {tasks}, the MTL bundle "
            f"{list(mtl.tasks)}"
        )
    for precision in ("fp32", "int8"):
        if not all(
            any(m.format == "onnx" and m.precision == precision for m in b.models) for b in stl
        ):
            continue
        # four sessions' idle pool threads would spin against the one running: spin off
        config = {"type": "onnxruntime", "precision": precision, "threads": threads, "spin": False}
        engines = [load(b, config) for b in stl]
        try:
            log(f"STL x{len(engines)} onnxruntime/{precision}, sequential ...")

            def run_all(batch: np.ndarray, engines: list[Engine] = engines) -> None:
                for e in engines:
                    e.infer(batch)

            timings = [time_calls(run_all, tile(x, b), warmup, repeats) for b in batches]
            outputs: dict[str, np.ndarray] = {}
            for e in engines:
                outputs |= _infer_all(e, x)
            agree = agreement(reference, outputs) if reference is not None else {}
            for batch, t in zip(batches, timings, strict=True):
                result.rows.append(
                    {
                        "engine": "onnxruntime",
                        "precision": precision,
                        "batch": batch,
                        "ms_per_sample_median": round(t.median_s * 1e3 / batch, 5),
                        "samples_per_s": round(batch / t.median_s, 1),
                        "peak_rss_mib": _mib(t.peak_rss),
                        "agreement_vs_fp32": agree,
                        "model": f"stl x{len(engines)} sequential",
                        "model_file": ", ".join(
                            f"{b.directory.name}/{e.info.model_file}"
                            for b, e in zip(stl, engines, strict=True)
                        ),
                        "device": engines[0].info.device,
                        "timed_batch": batch,
                        "calls_per_batch": len(engines),
                        "ms_per_call_median": round(t.median_s * 1e3, 4),
                        "ms_per_call_p90": round(t.quantile_s(0.9) * 1e3, 4),
                        "ms_per_call_min": round(min(t.seconds) * 1e3, 4),
                        "repeats": len(t.seconds),
                        "note": "agreement: the STL models' answers vs the MTL FP32 model's; "
                        "ONNX Runtime spin off (several sessions in one process)",
                    }
                )
        finally:
            for e in engines:
                e.close()
    mtl_rows = {
        (r["precision"], r["batch"]): r
        for r in result.rows
        if r["model"] == "mtl" and r["engine"] == "onnxruntime"
    }
    for r in result.rows:
        base = mtl_rows.get((r["precision"], r["batch"]))
        if r["model"] != "mtl" and base is not None:
            result.stl_vs_mtl.append(
                {
                    "precision": r["precision"],
                    "batch": r["batch"],
                    "stl_ms_per_sample": r["ms_per_sample_median"],
                    "mtl_ms_per_sample": base["ms_per_sample_median"],
                    "stl_over_mtl": round(
                        r["ms_per_sample_median"] / base["ms_per_sample_median"], 3
                    ),
                }
            )


# ----------------------------------------------------------------------------------- goals


def judge_goals(result: BenchResult) -> dict[str, Any]:
    """The issue's goals, each with the measured figure and whether it is met."""
    rows = [r for r in result.rows if r["model"] == "mtl"]
    by = {(r["engine"], r["precision"], r["batch"]): r for r in rows}
    batches = sorted({r["batch"] for r in rows})
    at = GOAL_BATCH if GOAL_BATCH in batches else (batches[-1] if batches else None)
    goals: dict[str, Any] = {}
    bound = result.roofline["bound_ms_per_sample"]
    fp32 = by.get(("onnxruntime", "fp32", at)) if at is not None else None
    roofline: dict[str, Any] = {
        "target": f"ONNX Runtime FP32 at batch {at} <= {GOAL_ROOFLINE_RATIO}x the roofline bound"
    }
    if fp32 is not None and bound > 0:
        ratio = fp32["ms_per_sample_median"] / bound
        best = fp32["ms_per_call_min"] / fp32["timed_batch"] / bound
        roofline.update(
            batch=at,
            ratio=round(ratio, 2),
            ratio_fastest_call=round(best, 2),
            met=ratio <= GOAL_ROOFLINE_RATIO,
        )
    goals["roofline"] = roofline
    int8 = []
    for r in rows:
        if r["precision"] != "int8" or r["batch"] != at or fp32 is None:
            continue
        speedup = fp32["ms_per_sample_median"] / r["ms_per_sample_median"]
        low = min(r["agreement_vs_fp32"].values()) if r["agreement_vs_fp32"] else None
        int8.append(
            {
                "engine": r["engine"],
                "batch": at,
                "speedup_vs_fp32": round(speedup, 2),
                "min_agreement": low,
                "met": speedup >= GOAL_INT8_SPEEDUP
                and low is not None
                and low >= GOAL_INT8_AGREEMENT,
            }
        )
    goals["int8"] = {
        "target": f">= {GOAL_INT8_SPEEDUP}x faster than FP32 with agreement >= "
        f"{GOAL_INT8_AGREEMENT} on every task",
        "engines": int8,
    }
    budget_ms = min(t.max_exec_ms for t in TASKS)
    latency = [
        {
            "engine": r["engine"],
            "precision": r["precision"],
            "ms": r["ms_per_call_median"],
            "met": r["ms_per_call_median"] < budget_ms,
        }
        for r in rows
        if r["batch"] == 1
    ]
    goals["batch1_latency"] = {
        "target": f"batch-1 call < {budget_ms} ms (max_exec)",
        "engines": latency,
    }
    return goals


# ------------------------------------------------------------------------------------ plot


def plot(result: BenchResult, path: Path) -> bool:
    """ms/sample and peak RSS vs batch per engine/precision (Fig. 9); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    series: dict[str, list[dict[str, Any]]] = {}
    for r in result.rows:
        label = f"{r['engine']} {r['precision'].upper()}"
        if r["model"] != "mtl":
            label += f" ({r['model']})"
        elif r.get("note", "").startswith("fixed batch"):
            label += f" (batch-{r['timed_batch']} calls)"
        series.setdefault(label, []).append(r)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, rows in series.items():
        rows = sorted(rows, key=lambda r: r["batch"])
        b = [r["batch"] for r in rows]
        ax_t.plot(b, [r["ms_per_sample_median"] for r in rows], marker="o", label=label)
        ax_m.plot(b, [r["peak_rss_mib"] for r in rows], marker="o", label=label)
    bound = result.roofline["bound_ms_per_sample"]
    ax_t.axhline(
        bound,
        color="k",
        ls="--",
        lw=1,
        label=f"roofline bound ({result.roofline['matmul_gflops']:.0f} GFLOP/s)",
    )
    for ax in (ax_t, ax_m):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.grid(alpha=0.3, which="both")
    ax_t.set_yscale("log")
    ax_t.set_ylabel("time per sample (ms, median)")
    ax_m.set_ylabel("process peak RSS (MiB)")
    ax_t.legend(fontsize=7)
    m = result.machine
    fig.suptitle(
        f"{result.roofline['model']} on {m['cpu']}, {m['cores']} cores, engine threads: "
        f"{m['engine_threads']}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------- CLI


def format_table(result: BenchResult) -> str:
    """The rows as a Markdown table (the README / docs copy)."""
    lines = [
        "| engine | precision | model | batch | ms/sample | samples/s | peak RSS MiB | "
        "agreement vs FP32 (phy/frame/app_type/app) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result.rows:
        agree = "/".join(f"{v:.3f}" for v in r["agreement_vs_fp32"].values()) or "-"
        model = r["model"] + (
            f", {r['calls_per_batch']} calls" if r["timed_batch"] != r["batch"] else ""
        )
        lines.append(
            f"| {r['engine']} | {r['precision']} | {model} | {r['batch']} | "
            f"{r['ms_per_sample_median']:.4f} | {r['samples_per_s']:.0f} | {r['peak_rss_mib']} | "
            f"{agree} |"
        )
    return "\n".join(lines)


def _batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--batch wants comma-separated sizes, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--batch wants sizes >= 1, got {text!r}")
    return values


def cmd_bench_engines(args: argparse.Namespace) -> int:
    """`edge-tc bench engines`."""
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    result = run_bench(
        Path(args.bundle),
        args.batch,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        packets=args.packets,
        data=Path(args.data) if args.data else None,
        seed=args.seed,
        stl_bundles=[Path(p) for p in args.stl_bundle],
        only=[e for e in args.engines.split(",") if e] if args.engines else (),
        log=log,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    print(format_table(result))
    print(f"wrote {out}")
    if args.plot:
        if plot(result, Path(args.plot)):
            print(f"wrote {args.plot}")
        else:
            print("no plot: matplotlib is not installed (pip install 'edge-tc[plot]')")
    return 0


def add_bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `edge-tc bench engines ...`."""
    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    p = bench_sub.add_parser(
        "engines",
        help="every available engine and precision of a bundle, side by side",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--bundle", required=True, help="model bundle directory (manifest.json)")
    p.add_argument(
        "--batch",
        type=_batches,
        default=[1, 8, 64, 128],
        help="comma-separated batch sizes (default 1,8,64,128)",
    )
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per batch (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="engine and matmul threads (default 0: each runtime's default)",
    )
    p.add_argument(
        "--packets", type=int, default=256, help="packets for agreement with FP32 (default 256)"
    )
    p.add_argument("--data", help="dataset directory to draw packets from (default: synthesize)")
    p.add_argument("--seed", type=int, default=2026, help="synthetic packets' seed")
    p.add_argument(
        "--stl-bundle",
        action="append",
        default=[],
        help="single-task bundle, or a folder of them (default: <bundle>-stl/)",
    )
    p.add_argument("--engines", default="", help="only these backends, comma-separated")
    p.add_argument("--plot", help="PNG of ms/sample and memory vs batch (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_bench_engines)

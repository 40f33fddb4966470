"""`engine.type = "auto"`: the fastest engine x precision of the bundle on this machine.

Candidates are every backend's bench configurations for the bundle (`Backend.bench_configs`,
one per model file the backend can run, at `threads`), less those whose agreement with the
PyTorch model (the manifest's, measured at export in that runtime, per task) is below the
bundle's bar for their precision (`evaluation.agreement_required`) or below `min_agreement`.
Each candidate is loaded and timed on this machine (`bench_batch` packets per call, median of
`bench_repeats` calls after a warm-up) and the fastest per packet is opened. A runtime that is
not installed or cannot load the file is skipped, with why.

The timings are cached in a JSON file (`cache_path`; "" = $XDG_CACHE_HOME/edge-tc/
engine-auto.json, or ~/.cache/edge-tc/engine-auto.json), one entry per bundle (sha256 of its
manifest), machine (CPU model, cores), threads and batch, so a restart reads them instead of
timing again. The entry records each candidate's runtime version; when the winner's runtime
has changed since, the candidates are timed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_core.bundle import MANIFEST_NAME, Bundle
from edge_core.errors import EdgeTcError, ModelError
from edge_core.schema import INPUT_LENGTH
from engines.base import (
    IQ_ROWS,
    Backend,
    Engine,
    EngineConfig,
    backends,
    config_from_dict,
    load,
)

KEY = "auto"
CACHE_VERSION = 1


@dataclass(frozen=True)
class AutoConfig(EngineConfig):
    """`[engine]` table for `type = "auto"`.

    threads: the thread count every candidate is timed and run with (0 = runtime default).
    cache_path: the timings' JSON file ("" = $XDG_CACHE_HOME/edge-tc/engine-auto.json).
    bench_batch: packets per timed call (the batch the daemon runs under load).
    bench_repeats: timed calls per candidate. min_agreement: a stricter per-task agreement
    bar than the bundle's own (0: the bundle's). rebench: time again even with a cache entry.
    """

    type: Literal["auto"] = "auto"
    threads: int = 0
    cache_path: str = ""
    bench_batch: int = 64
    bench_repeats: int = 20
    min_agreement: float = 0.0
    rebench: bool = False

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.threads < 0:
            out.append(("threads", f"want >= 0 (0: runtime default), got {self.threads}"))
        if not 1 <= self.bench_batch <= 4096:
            out.append(("bench_batch", f"want 1..4096 packets, got {self.bench_batch}"))
        if not 1 <= self.bench_repeats <= 10_000:
            out.append(("bench_repeats", f"want 1..10000 calls, got {self.bench_repeats}"))
        if not 0.0 <= self.min_agreement <= 1.0:
            out.append(("min_agreement", f"want 0..1, got {self.min_agreement}"))
        if self.model:
            out.append(("model", "auto picks the model file; name one with its engine's type"))
        if self.isolation != "thread":
            out.append(
                ("isolation", 'auto runs in the daemon\'s thread; for "process" name the engine')
            )
        return out


def default_cache_path() -> Path:
    """$XDG_CACHE_HOME/edge-tc/engine-auto.json, or ~/.cache/edge-tc/engine-auto.json."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-tc" / "engine-auto.json"


def _cpu_model() -> str:
    from engines.bench import cpu_model  # engines.bench imports the registry: not at the top

    return cpu_model()


def cache_key(bundle: Bundle, config: AutoConfig) -> str:
    """What a cached choice depends on: the bundle's manifest, the machine, threads, batch."""
    manifest = hashlib.sha256((bundle.directory / MANIFEST_NAME).read_bytes()).hexdigest()
    parts = [
        f"manifest={manifest}",
        f"cpu={_cpu_model()}",
        f"cores={os.cpu_count()}",
        f"threads={config.threads}",
        f"batch={config.bench_batch}",
    ]
    return ";".join(parts)


@dataclass(frozen=True)
class Candidate:
    """One engine x precision: its config (as a table), what it scored, or why it was left out."""

    label: str
    config: dict[str, Any]
    ms_per_packet: float | None = None
    runtime: str = ""
    skipped: str = ""


def candidates(bundle: Bundle, config: AutoConfig) -> list[Candidate]:
    """Every backend's bench configs for the bundle; those below the agreement bar skipped."""
    required = bundle.manifest["evaluation"]["agreement_required"]
    files = {m.path.name: m for m in bundle.models}
    found: list[Candidate] = []
    for key, backend in backends().items():
        if key == KEY:
            continue
        for engine_config in backend.bench_configs(bundle, config.threads):
            table = {k: v for k, v in asdict(engine_config).items() if v != ""}
            model = files.get(engine_config.model)
            label = f"{key}/{getattr(engine_config, 'precision', '?')}"
            if model is None:
                found.append(Candidate(label, table, skipped="names no model file of the bundle"))
                continue
            label += f" ({model.path.name})"
            bar = max(float(required.get(model.precision, 0.0)), config.min_agreement)
            low = {t: a for t, a in model.agreement.items() if a < bar}
            why = f"agreement {low} below {bar}" if low else ""
            found.append(Candidate(label, table, skipped=why))
    return found


def time_candidate(engine: Engine, batch: int, repeats: int) -> float:
    """Median ms per packet of `repeats` calls on `batch` packets, after two untimed calls."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, IQ_ROWS, INPUT_LENGTH)).astype(np.float32)
    engine.warmup(batch)
    engine.infer(x)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.infer(x)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds) * 1e3 / batch


def bench_candidates(bundle: Bundle, config: AutoConfig) -> list[Candidate]:
    """The candidates, each timed here (or skipped with why)."""
    out = []
    for c in candidates(bundle, config):
        if c.skipped:
            out.append(c)
            continue
        try:
            with load(bundle, c.config) as engine:
                ms = time_candidate(engine, config.bench_batch, config.bench_repeats)
                out.append(replace(c, ms_per_packet=round(ms, 5), runtime=engine.info.runtime))
        except (EdgeTcError, ValueError) as exc:
            out.append(replace(c, skipped=str(exc)))
    return out


def _read_cache(path: Path) -> dict[str, Any]:
    """The cache file's content; an absent, unreadable or foreign file reads as empty (the
    candidates are then timed again and the file rewritten)."""
    empty = {"version": CACHE_VERSION, "entries": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return empty
    if (
        not isinstance(data, dict)
        or data.get("version") != CACHE_VERSION
        or not isinstance(data.get("entries"), dict)
    ):
        return empty
    return data


def _write_cache(path: Path, data: dict[str, Any]) -> str:
    """Write the cache atomically; "" or why it could not be written (the choice stands)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
    except OSError as exc:
        return f"not cached: {exc}"
    return ""


def fastest(found: list[Candidate]) -> Candidate:
    """The timed candidate with the least ms per packet; ModelError listing why when none."""
    timed = [c for c in found if c.ms_per_packet is not None and not c.skipped]
    if not timed:
        why = "; ".join(f"{c.label}: {c.skipped}" for c in found) or "the bundle has no model"
        raise ModelError(f"engine 'auto': no engine can run this bundle here ({why})")
    return min(timed, key=lambda c: c.ms_per_packet or 0.0)


def choose(bundle: Bundle, config: AutoConfig) -> tuple[Candidate, list[Candidate], str]:
    """(the winner, every candidate, how: "cached timings", "timed now" or "timed now, not
    cached: <why>"), updating the cache."""
    path = Path(config.cache_path) if config.cache_path else default_cache_path()
    key = cache_key(bundle, config)
    cache = _read_cache(path)
    entry = cache["entries"].get(key)
    if entry is not None and not config.rebench:
        try:
            found = [Candidate(**c) for c in entry["candidates"]]
        except (TypeError, KeyError):
            found = []
        if found:
            return fastest(found), found, "cached timings"
    found = bench_candidates(bundle, config)
    cache["entries"][key] = {
        "bundle": str(bundle.directory),
        "timed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "candidates": [asdict(c) for c in found],
    }
    unwritten = _write_cache(path, cache)
    return fastest(found), found, "timed now" + (f", {unwritten}" if unwritten else "")


def load_auto(bundle: Bundle, config: AutoConfig) -> Engine:
    """Open the fastest candidate (from the cache, else timed now and cached)."""
    winner, found, how = choose(bundle, config)
    engine = load(bundle, config_from_dict(winner.config))
    if how == "cached timings" and engine.info.runtime != winner.runtime:
        engine.close()  # the runtime was upgraded since: the old timings say nothing
        winner, found, how = choose(bundle, replace(config, rebench=True))
        engine = load(bundle, config_from_dict(winner.config))
    timed = sum(c.ms_per_packet is not None for c in found)
    engine.info = replace(
        engine.info,
        device=f"{engine.info.device}; auto: fastest of {timed} ({how}, "
        f"{winner.ms_per_packet} ms/packet at batch {config.bench_batch})",
    )
    return engine


def _no_bench_configs(bundle: Bundle, threads: int) -> list[EngineConfig]:
    return []  # `edge-tc bench engines` times the real engines, not the chooser


BACKEND = Backend(
    KEY,
    AutoConfig,
    load_auto,
    "any engine's runtime, e.g. 'edge-tc[onnx]' or 'edge-tc[tflite]'",
    _no_bench_configs,
)

#!/usr/bin/env python3
"""What the fusion stage costs beside the bare engine, per batch size, in one run.

    .venv/bin/python tools/bench_fusion.py [--bundle models/default] [--engine tflite]
        [--batch 1 8 64] [--repeats 30] [--data DATASET_DIR] [--out docs/bench_fusion.json]

Per batch size: the engine's `infer` alone (the bare engine), the PHY header decoder
(`edge_core.rx.headers`) and the trees (`Fusion.forest` on every packet of the batch; the daemon
gives them only those the CNN calls data frames), each the median of
`--repeats` calls on the same packets, in ms per batch and per packet, and the stage's cost as a
share of the engine's. Absolute times move with the machine's load; the ratios are the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_core.bundle import load_manifest  # noqa: E402
from edge_core.fusion import feature_matrix, load_fusion  # noqa: E402
from edge_core.rx.headers import decode_headers  # noqa: E402
from engines.base import load  # noqa: E402
from engines.bench import bench_packets, tile  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "models" / "default"))
    ap.add_argument("--engine", default="tflite", help="engine type (tflite, onnxruntime)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--data", type=Path, help="dataset directory (default: synthetic packets)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_fusion.json")
    args = ap.parse_args(argv)

    bundle = load_manifest(args.bundle)
    if bundle.fusion is None:
        print(f"{args.bundle}: no fusion stage (edge-tc train fusion adds one)", file=sys.stderr)
        return 2
    fusion = load_fusion(bundle.fusion, bundle.tasks)
    forest = fusion.forest
    assert forest is not None
    packets, where = bench_packets(max(args.batch), args.data, seed=0)
    rng = np.random.default_rng(0)
    rows = []
    with load(args.bundle, {"type": args.engine, "threads": 1}) as engine:
        for b in args.batch:
            x = tile(packets, b)
            iq = (x[:, 0] + 1j * x[:, 1]).astype(np.complex64)
            lengths = rng.integers(400, 60_000, b)
            probs = engine.infer(x)
            headers = decode_headers(iq)
            duration = (lengths - fusion.pre_trigger_samples) / 20.0

            def trees(probs=probs, headers=headers, duration=duration) -> None:
                features = feature_matrix(probs, duration, headers, fusion.features)
                forest.proba(features)  # as the daemon walks them; here every packet of the batch

            engine_ms = median_ms(lambda x=x: engine.infer(x), args.repeats)
            header_ms = median_ms(lambda iq=iq: decode_headers(iq), args.repeats)
            trees_ms = median_ms(trees, args.repeats)
            row = {
                "batch": b,
                "engine_ms": round(engine_ms, 4),
                "headers_ms": round(header_ms, 4),
                "trees_ms": round(trees_ms, 4),
                "engine_ms_per_packet": round(engine_ms / b, 4),
                "fusion_ms_per_packet": round((header_ms + trees_ms) / b, 4),
                "fusion_over_engine": round((header_ms + trees_ms) / engine_ms, 3),
            }
            rows.append(row)
            print(json.dumps(row))
        info = engine.info
    result = {
        "bundle": str(args.bundle),
        "engine": f"{info.backend} {info.precision} ({info.model_file}), 1 thread",
        "packets": where,
        "trees": {t: int(e.feature.shape[0]) for t, e in fusion.ensembles.items()},
        "depth": {t: e.depth for t, e in fusion.ensembles.items()},
        "repeats": args.repeats,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

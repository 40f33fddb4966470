"""Decode rates and speed of the PHY header decoder (`edge_core.rx.headers`) on generated rows.

For each SNR bin and PHY format, draws N dataset-like rows (3000 samples, 0-32 samples of noise
first, default impairments: multipath, CFO, IQ imbalance) from `sample_spec` ("generator") and
from capture sessions ("sessions"), decodes them in batches of 64 and counts per format:
decoded (hdr_ok), and agree (every field equal to what the transmitter put in the packet; for a
long-preamble DSSS row, whose header lies past the row, hdr_ok 0 with format DSSS and
preamble long). Also: false decodes on noise-only rows, and the time per packet for batch 1
and batch 64 (median and best of repeated runs, on this machine, with its load average):

    .venv/bin/python tools/header_decode_rate.py --n 300 --snr 5 10 15 20 30 --out hdr_rate.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from header_packets import agrees, draw_packets, draw_session_packets, format_of

from edge_core.rx import HEADER_FIELDS, decode_headers

BATCH = 64


def _decode(iq: np.ndarray) -> np.ndarray:
    return np.concatenate([decode_headers(iq[i : i + BATCH]) for i in range(0, len(iq), BATCH)])


def _table(iq: np.ndarray, specs: list) -> dict[str, dict[str, float]]:
    decoded = _decode(iq)
    good = agrees(decoded, specs)
    kinds = np.array([format_of(s) for s in specs])
    table = {}
    for kind in sorted(set(kinds.tolist())):
        sel = kinds == kind
        table[kind] = {
            "n": int(sel.sum()),
            "decoded": int(decoded[sel, HEADER_FIELDS.index("hdr_ok")].sum()),
            "agree": int(good[sel].sum()),
            "agree_rate": round(float(good[sel].mean()), 4),
        }
    return table


def _time_per_packet(iq: np.ndarray, batch: int, repeats: int) -> dict[str, float]:
    rows = iq[:batch]
    decode_headers(rows)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        decode_headers(rows)
        times.append((time.perf_counter() - t0) / batch)
    return {
        "median_ms": round(1e3 * float(np.median(times)), 4),
        "best_ms": round(1e3 * min(times), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="rows per format and SNR bin")
    ap.add_argument("--snr", type=float, nargs="+", default=[5.0, 10.0, 15.0, 20.0, 30.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=30, help="timed runs per batch size")
    ap.add_argument("--out", type=Path, default=Path("header_decode_rate.json"))
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n must be >= 1, got {args.n}")
    edges = sorted(args.snr)
    if len(edges) < 2:
        ap.error("--snr needs at least two bin edges")
    t0 = time.perf_counter()
    results: dict[str, dict[str, object]] = {"generator": {}, "sessions": {}}
    timing_rows = []
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        key = f"{lo:g}-{hi:g}"
        rows, specs = [], []
        for j, phy in enumerate(("802.11b", "802.11g", "802.11n")):
            iq, sp = draw_packets(phy, args.n, (lo, hi), seed=args.seed + 100 * i + j)
            rows.append(iq)
            specs += sp
        iq = np.concatenate(rows)
        results["generator"][key] = _table(iq, specs)
        if lo >= 20:
            timing_rows.append(iq)
        try:
            s_iq, s_specs = draw_session_packets(4 * args.n, (lo, hi), seed=args.seed + 100 * i + 9)
            results["sessions"][key] = _table(s_iq, s_specs)
        except ValueError as e:  # no session frame in this bin
            results["sessions"][key] = {"error": str(e)}
        for source in ("generator", "sessions"):
            table = results[source][key]
            line = ", ".join(
                f"{k} {v['agree']}/{v['n']}" for k, v in table.items() if isinstance(v, dict)
            )
            print(f"{source} {key} dB: {line}", flush=True)

    rng = np.random.default_rng(args.seed)
    noise = rng.standard_normal((4 * args.n, 3000)) + 1j * rng.standard_normal((4 * args.n, 3000))
    false = _decode(noise.astype(np.complex64))
    pool = np.concatenate(timing_rows) if timing_rows else iq
    pool = pool[rng.permutation(len(pool))]  # a mixed batch of every format
    report = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "rows_per_format_and_bin": args.n,
        "seed": args.seed,
        "criterion": (
            "agree: every HEADER_FIELDS value equals the transmitter's (long-preamble DSSS: "
            "hdr_ok 0, format 0, preamble_short 0, the rest NaN); decoded: hdr_ok = 1"
        ),
        "trivial_baseline": "a decode rate of 0: without a receiver no header field is known",
        "results": results,
        "noise_rows": {
            "n": len(noise),
            "false_decodes": int(false[:, HEADER_FIELDS.index("hdr_ok")].sum()),
            "format_claimed": int(np.isfinite(false[:, HEADER_FIELDS.index("hdr_format")]).sum()),
        },
        "time_per_packet": {
            "batch_1": _time_per_packet(pool, 1, args.repeats * 4),
            "batch_64": _time_per_packet(pool, BATCH, args.repeats),
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(report["time_per_packet"]), json.dumps(report["noise_rows"]))
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

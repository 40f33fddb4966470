"""Packet-detector recall and precision against SNR, on channel-simulator recordings.

For each SNR it writes a seeded stream (every station at exactly that SNR), runs the packet
assembler over it as `edge-tc inspect` does, and records the report. Figures go to `--out`
(JSON) and a markdown table to stdout.

    .venv/bin/python tools/detector_curve.py --seconds 1 --out out/detector_curve.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_core.inspect import inspect_recording  # noqa: E402
from edge_core.synth.stream import StreamConfig, write_stream  # noqa: E402

KEYS = ("annotated", "detected", "matched", "recall", "precision", "start_error_samples_median")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snr-db", type=float, nargs="+", default=[0, 2, 4, 6, 8, 10, 15, 20])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "detector_curve.json")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for snr in args.snr_db:
            base = Path(tmp) / f"snr{snr:g}"
            write_stream(base, args.seconds, args.seed, StreamConfig(snr_db=(snr, snr)), False)
            report = inspect_recording(base.with_suffix(".sigmf-meta"))
            row = {"snr_db": snr, **{k: report[k] for k in KEYS}}
            row["recall_by_phy"] = {p: v["recall"] for p, v in report["per_label"].items()}
            rows.append(row)
            print(f"snr {snr:g} dB: recall {row['recall']:.3f} precision {row['precision']:.3f}",
                  file=sys.stderr)  # fmt: skip

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "seconds": args.seconds,
        "seed": args.seed,
        "machine": platform.machine(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    phys = sorted({p for r in rows for p in r["recall_by_phy"]})
    print("| SNR (dB) | packets | recall | precision | " + " | ".join(phys) + " |")
    print("|---" * (4 + len(phys)) + "|")
    for r in rows:
        per = " | ".join(f"{r['recall_by_phy'].get(p, float('nan')):.2f}" for p in phys)
        print(f"| {r['snr_db']:g} | {r['annotated']} | {r['recall']:.3f} | "
              f"{r['precision']:.3f} | {per} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

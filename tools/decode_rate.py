"""Decode rates of the independent 802.11 receivers (tests/receivers/) on generated frames.

For each SNR bin and each receiver (DSSS for 802.11b, OFDM for 802.11g/n), draws N frames
(their rates chosen by the traffic model at that SNR), impairs the whole PPDU with the default
impairments, decodes it and counts a frame as decoded when every MPDU has a valid FCS and a
Frame Control type/subtype that agrees with the frame's label. Writes a JSON of decode rates per
source, receiver, SNR bin and PHY/rate:

    .venv/bin/python tools/decode_rate.py --n 200 --snr 5 10 15 20 25 30 --out decode_rate.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from receivers import harness


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="frames per receiver and SNR bin")
    ap.add_argument(
        "--snr", type=float, nargs="+", default=[20.0, 25.0, 30.0], help="SNR bin edges, dB"
    )
    ap.add_argument(
        "--source", choices=["generator", "sessions", "both"], default="both",
        help="generator: specs as generate_packets draws them; sessions: capture sessions",
    )  # fmt: skip
    ap.add_argument("--receiver", choices=["dsss", "ofdm", "both"], default="both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("decode_rate.json"))
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n must be >= 1, got {args.n}")
    edges = sorted(args.snr)
    if len(edges) < 2:
        ap.error("--snr needs at least two bin edges")
    sources = ["generator", "sessions"] if args.source == "both" else [args.source]
    receivers = ["dsss", "ofdm"] if args.receiver == "both" else [args.receiver]
    results: dict[str, dict[str, dict[str, object]]] = {}
    t0 = time.perf_counter()
    for source in sources:
        for receiver in receivers:
            per_bin: dict[str, object] = {}
            for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
                try:
                    trials = harness.run(receiver, args.n, args.seed + i, (lo, hi), source)
                except ValueError as e:  # a session draw with no frame in this bin
                    per_bin[f"{lo:g}-{hi:g}"] = {"error": str(e)}
                    continue
                table = harness.rates(trials)
                per_bin[f"{lo:g}-{hi:g}"] = table
                print(
                    f"{source} {receiver} {lo:g}-{hi:g} dB: "
                    f"{table['all']['decoded']}/{table['all']['n']} = {table['all']['rate']:.3f}",
                    flush=True,
                )
            results.setdefault(source, {})[receiver] = per_bin
    report = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "frames_per_bin": args.n,
        "seed": args.seed,
        "criterion": "every MPDU has a valid FCS and Frame Control type/subtype of its label",
        "seconds": round(time.perf_counter() - t0, 1),
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

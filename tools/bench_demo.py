#!/usr/bin/env python3
"""The README's first command, measured: `edge-tc run --demo` and variants, one after another.

    .venv/bin/python tools/bench_demo.py [--duration 20] [--variant NAME=--set,key=value ...]
        [--out docs/bench_demo.json]

Each variant runs the real command in a subprocess (the live table included: it is part of what
the user runs) and its last table is parsed: classifications per second, packets detected,
classified and dropped, per task the latency p50/p99 and the packets over `max_exec`, and the
stage breakdown p50/p99. Default variants: the defaults (SCHED_FIFO for the packet path where
this user may), `realtime_priority=0` (normal priority), `fusion=false` (the CNN's own app and
app_type), `ingest=thread` (the source side in the daemon's process). Run on a quiet machine:
the variants share the CPU with nothing else, one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VARIANTS = {
    "default": [],
    "realtime_priority=0": ["--set", "realtime_priority=0"],
    "fusion=false": ["--set", "fusion=false"],
    "ingest=thread": ["--set", "ingest=thread"],
}


def table_text(output: str) -> str:
    """The last live table's rows joined per row (a long value wraps onto continuation lines)."""
    start = output.rfind("edge-tc live")
    if start < 0:
        raise ValueError("no live table in the output")
    rows: list[str] = []
    for line in output[start:].splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) != 2:
            continue
        name, value = cells
        if name:
            rows.append(f"{name}: {value}")
        elif rows:
            rows[-1] += " " + value
    return "\n".join(rows)


def number(text: str) -> float:
    return float(text.replace(",", ""))


def parse(output: str) -> dict[str, Any]:
    """The figures of the last table (see the module docstring)."""
    text = table_text(output)
    out: dict[str, Any] = {}
    rate = re.search(r"classifications/s: ([\d,.]+)", text)
    packets = re.search(r"packets: detected ([\d,]+)\s+classified ([\d,]+)\s+failed ([\d,]+)", text)
    if rate is None or packets is None:
        raise ValueError(f"cannot read the table:\n{text}")
    out["classifications_per_s"] = number(rate.group(1))
    out["detected"], out["classified"], out["failed"] = (int(number(g)) for g in packets.groups())
    dropped = re.search(r"dropped: (.*)", text)
    out["dropped"] = {
        k: int(number(v))
        for k, v in re.findall(r"(\w+) ([\d,]+)", dropped.group(1) if dropped else "")
    }
    out["tasks"] = {}
    for task, p50, p99, budget, over in re.findall(
        r"(\w+) latency: p50 ([\d.]+) ms\s+p99 ([\d.]+) ms\s+\(max_exec (\d+) ms, over: ([\d,]+)\)",
        text,
    ):
        out["tasks"][task] = {
            "p50_ms": float(p50), "p99_ms": float(p99), "max_exec_ms": float(budget),
            "over_max_exec": int(number(over)),
        }  # fmt: skip
    for which in ("p50", "p99"):
        stages = re.search(rf"stages {which} \(ms\): (.*)", text)
        if stages:
            out[f"stages_{which}_ms"] = {
                k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+)", stages.group(1))
            }
    return out


def run(extra: list[str], duration: float) -> dict[str, Any]:
    cmd = [
        str(ROOT / ".venv" / "bin" / "edge-tc"),
        "run",
        "--demo",
        "--duration",
        str(duration),
        *extra,
    ]
    if not Path(cmd[0]).exists():
        cmd = [sys.executable, "-m", "edge_core.cli", *cmd[1:]]
    env = {**os.environ, "COLUMNS": "120"}
    t0 = time.monotonic()
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=duration + 600
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    result = parse(done.stdout + done.stderr)
    result["command"] = " ".join(["edge-tc", *cmd[1:]] if "edge-tc" in cmd[0] else cmd)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    engine = re.search(r"engine (\S+ \S+) on", done.stderr)
    result["engine"] = engine.group(1) if engine else None
    # the threads that logged a real-time priority ("worker thread: SCHED_FIFO 10", ...)
    result["sched_fifo_threads"] = len(re.findall(r"SCHED_FIFO \d+", done.stderr))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument(
        "--variant", action="append", default=[], metavar="NAME=ARGS",
        help="a variant: a name, '=', its extra arguments joined by commas "
        "(e.g. 'no-fusion=--set,fusion=false'); default: the four of the docstring",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_demo.json")
    args = ap.parse_args(argv)
    variants = dict(DEFAULT_VARIANTS)
    if args.variant:
        variants = {}
        for item in args.variant:
            name, _, rest = item.partition("=")
            variants[name] = [a for a in rest.split(",") if a]
    load = os.getloadavg()[0]
    results = {}
    for name, extra in variants.items():
        print(
            f"{name}: edge-tc run --demo --duration {args.duration:g} {' '.join(extra)}", flush=True
        )
        results[name] = run(extra, args.duration)
        tasks = results[name]["tasks"]
        print("  " + ", ".join(f"{t} p50 {v['p50_ms']} p99 {v['p99_ms']} over {v['over_max_exec']}"
                               for t, v in tasks.items()), flush=True)  # fmt: skip
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_average_at_start": round(load, 2),
        "cpus": os.cpu_count(),
        "duration_s": args.duration,
        "variants": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

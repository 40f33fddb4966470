"""Run the packet assembler over an annotated recording and score it against the annotations.

A detection matches an annotation when their sample intervals overlap and the detected start
(the packet's `start_sample` plus the assembler's pre-trigger, i.e. where the detector put the
first sample of the packet) is within `tolerance_samples` of the annotated start; matching is
one to one, each detection taking the closest unmatched annotation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_core.assembler import AssemblerConfig, Packet, PacketAssembler
from edge_core.iq.sigmf_io import open_recording

DEFAULT_TOLERANCE_S = 2e-6


def default_tolerance_samples(config: AssemblerConfig) -> int:
    """max(half a window, 2 us): generous next to the 16 us a preamble lasts."""
    return max(config.window_samples // 2, round(DEFAULT_TOLERANCE_S * config.sample_rate_hz))


def match_intervals(
    detected: Sequence[tuple[int, int]],
    truth: Sequence[tuple[int, int]],
    tolerance_samples: int,
) -> list[tuple[int, int]]:
    """One-to-one (detection index, truth index) pairs; see the module docstring."""
    order = sorted(range(len(truth)), key=lambda k: truth[k][0])
    t_starts = np.array([truth[k][0] for k in order], dtype=np.int64)
    used = np.zeros(len(order), dtype=bool)
    pairs: list[tuple[int, int]] = []
    for d, (start, end) in sorted(enumerate(detected), key=lambda item: item[1][0]):
        lo = int(np.searchsorted(t_starts, start - tolerance_samples, side="left"))
        hi = int(np.searchsorted(t_starts, start + tolerance_samples, side="right"))
        best, best_err = -1, None
        for j in range(lo, hi):
            t_start, t_end = truth[order[j]]
            if used[j] or not (start < t_end and t_start < max(end, start + 1)):
                continue
            err = abs(start - t_start)
            if best_err is None or err < best_err:
                best, best_err = j, err
        if best >= 0:
            used[best] = True
            pairs.append((d, order[best]))
    return pairs


def inspect_packets(
    packets: Sequence[Packet],
    truth: Sequence[tuple[int, int]],
    pre_trigger_samples: int,
    tolerance_samples: int = 40,
    labels: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """Score detected packets against true [start, end) intervals (JSON-ready dict)."""
    detected = [(p.start_sample + pre_trigger_samples, p.end_sample) for p in packets]
    pairs = match_intervals(detected, truth, tolerance_samples)
    start_err = np.array([detected[d][0] - truth[t][0] for d, t in pairs], dtype=np.int64)
    end_err = np.array([detected[d][1] - truth[t][1] for d, t in pairs], dtype=np.int64)
    n_truth, n_det, n_match = len(truth), len(detected), len(pairs)

    def stat(values: np.ndarray, fn: Any) -> float | None:
        return float(fn(values)) if values.size else None

    report: dict[str, Any] = {
        "annotated": n_truth,
        "detected": n_det,
        "matched": n_match,
        "recall": n_match / n_truth if n_truth else None,
        "precision": n_match / n_det if n_det else None,
        "start_error_samples_median": stat(start_err, np.median),
        "start_error_samples_abs_p95": stat(np.abs(start_err), lambda v: np.percentile(v, 95)),
        "end_error_samples_median": stat(end_err, np.median),
        "tolerance_samples": tolerance_samples,
        "pre_trigger_samples": pre_trigger_samples,
    }
    if labels is not None and any(label is not None for label in labels):
        matched_truth = {t for _, t in pairs}
        per_label: dict[str, dict[str, Any]] = {}
        for t, label in enumerate(labels):
            entry = per_label.setdefault(str(label), {"annotated": 0, "matched": 0})
            entry["annotated"] += 1
            entry["matched"] += int(t in matched_truth)
        for entry in per_label.values():
            entry["recall"] = entry["matched"] / entry["annotated"]
        report["per_label"] = dict(sorted(per_label.items()))
    return report


def inspect_recording(
    path: str | Path,
    config: AssemblerConfig | None = None,
    chunk_samples: int = 65536,
    tolerance_samples: int | None = None,
) -> dict[str, Any]:
    """Detect packets in a SigMF recording and score them against its annotations.

    The assembler runs at the recording's own sample rate; per-label recall uses the
    annotations' "edge_tc:phy" key when present.
    """
    rec = open_recording(path)
    config = replace(config or AssemblerConfig(), sample_rate_hz=rec.sample_rate_hz)
    tolerance = (
        default_tolerance_samples(config) if tolerance_samples is None else tolerance_samples
    )
    assembler = PacketAssembler(config)
    packets: list[Packet] = []
    t0 = time.perf_counter()
    for start, chunk in rec.iter_chunks(chunk_samples):
        packets += assembler.feed(chunk, first_sample_index=start)
    packets += assembler.flush()
    wall = time.perf_counter() - t0
    truth = [
        (int(a["core:sample_start"]), int(a["core:sample_start"] + a.get("core:sample_count", 1)))
        for a in rec.annotations
    ]
    labels = [a.get("edge_tc:phy") for a in rec.annotations]
    report = inspect_packets(packets, truth, config.pre_trigger_samples, tolerance, labels)
    seconds = rec.num_samples / rec.sample_rate_hz
    report.update(
        {
            "file": str(rec.meta_path),
            "samples": rec.num_samples,
            "seconds": seconds,
            "sample_rate_hz": rec.sample_rate_hz,
            "wall_seconds": wall,
            "realtime_factor": seconds / wall if wall > 0 else None,
            "stats": assembler.stats.as_dict(),
            "noise_floor_power": assembler.noise_floor_power,
            "config": asdict(config),
        }
    )
    return report

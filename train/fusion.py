"""`edge-tc train fusion`: fit the fusion stage of a bundle (edge_core/fusion.py).

For every packet of a dataset that the bundle's CNN has not seen: the CNN's probabilities (its
FP32 model, through its real engine), the packet's duration (`packets.csv` duration_us, what the
daemon's assembler measures to within a sample) and the decoded PHY header
(`edge_core.rx.headers`, from the packet's IQ window as stored). Per fused task a
HistGradientBoostingClassifier is fitted on the training sessions with app-balancing weights (as
the CNN was trained on the app-balanced split), scored on held-out sessions beside the CNN alone,
and written into the bundle as `fusion.npz` with a `fusion` record in the manifest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_core.bundle import load_manifest, write_manifest
from edge_core.fusion import (
    DURATION_FEATURE,
    FUSION_FILE,
    Fusion,
    data_rows,
    feature_matrix,
    feature_names,
    from_sklearn,
    save_fusion,
)
from edge_core.rx.headers import decode_headers
from edge_core.schema import SAMPLE_RATE_HZ, TASK_NAMES

FUSED_TASKS: tuple[str, ...] = ("app_type", "app")
DEFAULT_PRE_TRIGGER = 16
"""The assembler's default pre-trigger (edge_core.assembler.AssemblerConfig.pre_trigger_samples);
the daemon takes it from its own config."""
CHUNK = 2048
LEARNING_RATE = 0.3
MAX_ITER = 40
"""Few trees: the daemon walks every one for every packet (K per iteration). At 0.1 and up to 200
iterations early stopping kept 91 (app_type) and 126 (app) iterations, 1,155 trees, and the
demo's worker could not keep up with 1,000 packets/s."""
CNN_INPUTS: tuple[str, ...] = ("phy", "frame")
"""The CNN heads whose class (not probabilities) the trees take. Trees split probabilities at
fine thresholds that INT8 moves across: with all 16 probabilities the TFLite INT8 model's
published app agreed with FP32's on 0.72 of packets, with phy's and frame's 0.86; a class is
what INT8 keeps (phy, frame agreement >= 0.998)."""
MAX_DEPTH = 8
"""Trees at most this deep: the daemon walks every tree one level per step, so depth is its cost
(unbounded, scikit-learn grew 17-20 levels: 2.5x the walk)."""


def dataset_inputs(
    bundle_dir: str | Path, data_dir: str | Path, indices: np.ndarray, batch: int = 64
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(CNN probabilities per task, durations in us, header rows) for `indices` of a dataset."""
    from engines.base import load, open_bundle
    from train.data import PacketDataset, read_packets_csv
    from train.export import gather_packets

    bundle = open_bundle(bundle_dir)
    fp32 = [m for m in bundle.models if m.format == "onnx" and m.precision == "fp32"]
    if not fp32:
        raise ValueError(f"{bundle_dir}: the fusion stage is fitted on an ONNX FP32 model's output")
    dataset = PacketDataset(data_dir)
    header = read_packets_csv(Path(data_dir) / "packets.csv", [DURATION_FEATURE])
    duration = np.asarray(header[DURATION_FEATURE], np.float64)[indices]
    probs: dict[str, list[np.ndarray]] = {t: [] for t in bundle.tasks}
    headers: list[np.ndarray] = []
    with load(bundle, {"type": "onnxruntime", "model": fp32[0].path.name}) as engine:
        for start in range(0, len(indices), CHUNK):
            x = gather_packets(dataset, indices[start : start + CHUNK]).x  # (n, 2, L)
            for s in range(0, len(x), batch):
                part = x[s : s + batch]
                out = engine.infer(part)
                for t in bundle.tasks:
                    probs[t].append(out[t])
                headers.append(decode_headers((part[:, 0] + 1j * part[:, 1]).astype(np.complex64)))
    return {t: np.concatenate(v) for t, v in probs.items()}, duration, np.concatenate(headers)


def fit_fusion(
    bundle_dir: str | Path,
    data_dir: str | Path,
    *,
    tasks: Sequence[str] = FUSED_TASKS,
    val: float = 0.2,
    seed: int = 0,
    max_packets: int | None = None,
    pre_trigger_samples: int = DEFAULT_PRE_TRIGGER,
    max_depth: int | None = MAX_DEPTH,
    learning_rate: float = LEARNING_RATE,
    max_iter: int = MAX_ITER,
    cnn_tasks: Sequence[str] | None = CNN_INPUTS,
    headers: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Fit, score and write the fusion stage into `bundle_dir`; returns the manifest record."""
    import sklearn
    from threadpoolctl import threadpool_limits

    from train.baselines import _classifier, app_balancing_weights
    from train.data import read_labels_csv, require_sessions, session_split

    labels = read_labels_csv(Path(data_dir) / "labels.csv")[0]
    sessions = require_sessions(data_dir, len(labels))
    indices = np.arange(len(labels))
    if max_packets is not None and max_packets < len(labels):
        keep = np.random.default_rng(seed).permutation(np.unique(sessions))
        chosen = np.isin(sessions, keep[: max(1, math.ceil(len(keep) * max_packets / len(labels)))])
        indices = np.flatnonzero(chosen)
    split = session_split(sessions[indices], labels[indices], val=val, test=0.0, seed=seed)
    train, held = split.train, split.val  # positions within `indices`
    log(f"fusion: {len(indices)} packets ({len(train)} fit, {len(held)} held out by session)")
    bundle = load_manifest(bundle_dir)
    probs, duration, header_rows = dataset_inputs(bundle_dir, data_dir, indices)
    names = feature_names(bundle.tasks)
    if cnn_tasks is not None:  # the CNN's classes of these heads, not its probabilities
        names = [n for n in names if not n.startswith("cnn:") or n[4:] in cnn_tasks]
    if not headers:  # duration and the CNN's classes only: no header decoding in the daemon
        names = [n for n in names if not n.startswith("hdr_")]
    x = feature_matrix(probs, duration, header_rows, names)
    y_all = labels[indices]
    weights = app_balancing_weights(y_all, train)
    ensembles = {}
    scores: dict[str, dict[str, float]] = {}
    for task in tasks:
        y = y_all[:, TASK_NAMES.index(task)]
        model = _classifier([False] * len(names), seed).set_params(
            max_depth=max_depth, learning_rate=learning_rate, max_iter=max_iter
        )
        with threadpool_limits(limits=1):
            model.fit(x[train], y[train], sample_weight=weights)
        ensembles[task] = from_sklearn(task, model)
        # held-out sessions, app-balanced like the CNN's test (weights = balanced priors)
        w_held = app_balancing_weights(y_all, held)
        # as the daemon does: the trees for CNN data frames, the CNN's answer for the others
        fused = np.where(
            data_rows({t: p[held] for t, p in probs.items()}),
            ensembles[task].proba(x[held]).argmax(1),
            probs[task][held].argmax(1),
        )
        cnn = probs[task][held].argmax(1)
        scores[task] = {
            "fused": float(np.average(fused == y[held], weights=w_held)),
            "cnn": float(np.average(cnn == y[held], weights=w_held)),
        }
        log(
            f"fusion: {task}: held-out sessions (app-balanced) fused "
            f"{scores[task]['fused']:.3f} vs CNN alone {scores[task]['cnn']:.3f}; "
            f"{len(model._predictors)} iterations"
        )
    fusion = Fusion(tuple(names), ensembles, pre_trigger_samples, float(SAMPLE_RATE_HZ))
    save_fusion(Path(bundle_dir) / FUSION_FILE, fusion)
    record = {
        "file": FUSION_FILE,
        "method": "gradient-boosted trees (scikit-learn HistGradientBoostingClassifier) on the "
        "CNN's probabilities, the measured packet duration and the decoded PHY header",
        "tasks": list(tasks),
        "features": names,
        "pre_trigger_samples": pre_trigger_samples,
        "training": {
            "dataset": str(data_dir),
            "packets": len(indices),
            "fit_packets": len(train),
            "heldout_packets": len(held),
            "split": "by capture session",
            "weights": "app-balanced",
            "seed": seed,
            "max_depth": max_depth,
            "learning_rate": learning_rate,
            "max_iter": max_iter,
            "cnn_model": next(m.path.name for m in bundle.models if m.precision == "fp32"),
            "scikit_learn": sklearn.__version__,
            "heldout_accuracy": scores,
        },
    }
    manifest = dict(bundle.manifest)
    manifest["fusion"] = record
    write_manifest(bundle_dir, manifest)
    return record


__all__ = ["FUSED_TASKS", "dataset_inputs", "fit_fusion"]

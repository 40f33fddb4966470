"""A run directory's report: report.md with PNG plots (matplotlib, Agg backend, no display).

Reads what `edge-tc train fit` leaves in a run directory: history.json (`train.trainer.History`),
kpi.json (`train.kpi`: test-split evaluation and resource KPIs) and config.json, each optional
except history.json. Plots:

* accuracy.png: per-task and mean accuracy per epoch, training and validation (paper 1 Fig. 8).
* loss.png: per-task cross-entropy per epoch, training and validation.
* dtp_weights.png: the DTP weights beta_i at the end of each epoch (multi-task DTP runs).
* confusion_<task>.png: the test confusion matrix of each task, class names from the schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_core.errors import ModelError
from edge_core.schema import TASK_BY_NAME


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: want a JSON object, got {type(data).__name__}")
    return data


def _series(epochs: Sequence[Mapping[str, Any]], key: str, task: str) -> list[float]:
    return [float(e[key][task]) for e in epochs if task in e.get(key, {})]


def plot_curves(history: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """accuracy.png, loss.png and (when DTP weighted several tasks) dtp_weights.png."""
    plt = _pyplot()
    out = Path(out_dir)
    epochs = history["epochs"]
    tasks = list(history["tasks"])
    x = [e["epoch"] for e in epochs]
    written = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, key, title in zip(
        axes, ("train_accuracy", "val_accuracy"), ("training", "validation"), strict=True
    ):
        for t in tasks:
            ax.plot(x, _series(epochs, key, t), label=t)
        mean = np.mean([_series(epochs, key, t) for t in tasks], axis=0)  # (epochs,)
        ax.plot(x, mean, "k--", label="mean")
        ax.set(title=f"{title} accuracy", xlabel="epoch", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(loc="lower right")
    if history.get("best_epoch"):
        for ax in axes:
            ax.axvline(history["best_epoch"], color="grey", lw=0.8, ls=":")
    written.append(_save(fig, out / "accuracy.png", plt, axes))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, key, title in zip(
        axes, ("train_loss", "val_loss"), ("training", "validation"), strict=True
    ):
        for t in tasks:
            ax.plot(x, _series(epochs, key, t), label=t)
        ax.set(title=f"{title} cross-entropy", xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss")
    axes[1].legend(loc="upper right")
    written.append(_save(fig, out / "loss.png", plt, axes))

    weighting = history.get("config", {}).get("weighting")
    if weighting == "dtp" and len(tasks) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for t in tasks:
            ax.plot(x, _series(epochs, "dtp_weights", t), label=t)
        ax.set(title="DTP weights beta_i (end of epoch)", xlabel="epoch", ylabel="beta")
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(_save(fig, out / "dtp_weights.png", plt, [ax]))
    return written


def plot_confusion(task: str, confusion: Sequence[Sequence[int]], path: str | Path) -> Path:
    """One task's confusion matrix (rows true, columns predicted), row-normalised colours."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=np.int64)  # (classes, classes)
    classes = TASK_BY_NAME[task].classes
    if cm.shape != (len(classes), len(classes)):
        raise ModelError(f"{task}: confusion {cm.shape} for {len(classes)} classes")
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    size = 1.0 + 0.7 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=f"{task}: test confusion")
    for i in range(len(classes)):
        for j in range(len(classes)):
            colour = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=colour, fontsize=8)
    return _save(fig, Path(path), plt)


def _save(fig: Any, path: Path, plt: Any, epoch_axes: Sequence[Any] = ()) -> Path:
    from matplotlib.ticker import MaxNLocator

    for ax in epoch_axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


_BASELINE_COLUMNS = (
    ("majority", "majority"),
    ("no_app_uniform", "no-app + uniform"),
    ("bound_window", "bound window"),
    ("bound_phy", "bound PHY"),
    ("bound_phy_mac", "bound PHY+MAC"),
)
"""kpi.json's `baselines` keys (`train.baselines`) and their column titles."""


def _accuracy_table(kpi: Mapping[str, Any]) -> list[str]:
    """Accuracy per task with its trivial baselines and information bounds beside it."""
    per_task = kpi.get("per_task", {})
    baselines = kpi.get("baselines") or {}
    shown = [
        (key, title)
        for key, title in _BASELINE_COLUMNS
        if any(baselines.get(t, {}).get(key) is not None for t in per_task)
    ]
    head = "| task | accuracy | macro-F1 | packets |" + "".join(f" {t} |" for _, t in shown)
    lines = [head, "|---|---:|---:|---:|" + "---:|" * len(shown)]
    for t, v in per_task.items():
        cells = "".join(
            f" {baselines[t][key]:.4f} |" if baselines.get(t, {}).get(key) is not None else " - |"
            for key, _ in shown
        )
        lines.append(f"| {t} | {v['accuracy']:.4f} | {v['macro_f1']:.4f} | {v['support']} |{cells}")
    if shown:
        lines += [
            "",
            "Beside each accuracy, on the same test packets (`train.baselines`, "
            "docs/train/baselines.md): the majority-class rate; a no-app detector then a uniform "
            "guess (app, app_type); the information bound, gradient boosting on what a receiver "
            "decodes per packet (PHY fields; PHY + clear MAC header).",
        ]
    info = kpi.get("information_bound") or {}
    if info.get("computed"):
        lines.append(f"The bound was fitted on {info.get('fitted_on')}.")
        if info.get("missing"):
            lines.append(f"Fields the dataset lacks: {', '.join(info['missing'])}.")
        lines += [f"Note: {n}." for n in info.get("notes", [])]
    elif info:
        lines.append(f"No information bound: {info.get('reason')}.")
    return lines


def _kpi_markdown(kpi: Mapping[str, Any]) -> list[str]:
    lines = ["## Test KPIs", ""]
    split = kpi.get("split")
    if split:
        lines += [f"Split: {json.dumps(split)}; {kpi.get('packets', '?')} packets.", ""]
    lines += _accuracy_table(kpi)
    res = kpi.get("resources")
    if res:
        lines += [
            "",
            f"| resource (batch {res['batch_size']}) | value |",
            "|---|---:|",
            f"| trainable parameters | {res['params']:,} |",
            f"| FLOPs per sample | {res['flops']:,} |",
            f"| size (float32, MiB) | {res['size_mib']:.3f} |",
            f"| buffered memory (MiB) | {res['buffered_memory_mib']:.2f} |",
            f"| CPU inference (ms/sample, {res['inference_threads']} threads) | "
            f"{res['inference_ms_per_sample']:.4f} |",
            "",
            "Buffered memory: input batch + distinct outputs of every layer in one forward pass "
            "+ float32 parameters (`train.kpi.buffered_memory`). Inference time is measured on "
            "this machine and only comparable to runs on the same one.",
        ]
    return lines


def write_report(run_dir: str | Path) -> Path:
    """Write run_dir/report.md and its PNG plots from history.json (required), kpi.json and
    config.json (optional); return the report's path."""
    run = Path(run_dir)
    history = _read_json(run / "history.json")
    if history is None:
        raise FileNotFoundError(f"{run}/history.json not found: not a training run directory")
    kpi = _read_json(run / "kpi.json")
    config = _read_json(run / "config.json")
    plots = plot_curves(history, run)
    lines = [f"# Training run {run.name}", ""]
    if config:
        lines += [f"- {key}: `{json.dumps(value)}`" for key, value in config.items()] + [""]
    epochs = history["epochs"]
    lines += [
        f"Tasks: {', '.join(history['tasks'])}; weighting "
        f"{history.get('config', {}).get('weighting', '?')}; {len(epochs)} epochs"
        f"{' (stopped early)' if history.get('stopped_early') else ''}; best epoch "
        f"{history['best_epoch']} (mean validation accuracy {history['best_val_accuracy']:.4f}).",
        "",
    ]
    if kpi:
        lines += _kpi_markdown(kpi)
        for t, v in kpi.get("per_task", {}).items():
            plots.append(plot_confusion(t, v["confusion"], run / f"confusion_{t}.png"))
        lines.append("")
    lines += ["## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    path = run / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path

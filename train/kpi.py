"""Paper 1's KPIs (Sec. IV-C/D, Tables 8-11): learning KPIs per task, resource KPIs per model, and
the KPIstl vs KPImtl comparison with its Delta-tolerance gate.

* `evaluate`: per task accuracy, macro-F1 and confusion matrix over a set of packets.
* `resource_kpis`: trainable parameters, size, buffered memory at batch 64, CPU time per sample.
* `compare`: per task MTL / STL accuracy against Delta; STL resources aggregated as the paper's
  sequential execution of one model per task (Tables 10 and 11 sum them).

A model's outputs are read through `task_logits`: a multi-task model returns task name ->
logits, a single-task model one logits tensor that belongs to the one task it was trained for.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from edge_core.errors import ModelError
from edge_core.schema import INPUT_LENGTH, TASK_BY_NAME, TASK_NAMES
from train.models import count_macs, trainable_param_count

KPI = dict[str, Any]
"""What `evaluate` + `resource_kpis` produce and `kpi.json` holds: `per_task` task ->
{accuracy, macro_f1, confusion, classes, support}; `resources` (see `resource_kpis`)."""

DEFAULT_DELTA = 0.95
"""Paper 1 Sec. VI: "Let us set Delta = 0.95 as the tolerance for the whole methodology"."""

BUFFER_BATCH = 64
"""Paper 1 measures buffered memory and inference time at batch 64 (Tables 10 and 12)."""


# --- model outputs -----------------------------------------------------------------------------


def task_logits(
    output: torch.Tensor | Mapping[str, torch.Tensor], tasks: Sequence[str]
) -> dict[str, torch.Tensor]:
    """`tasks` -> logits (batch, classes) from a model's output.

    A dict output (multi-task) must hold every task; a tensor output (single-task) needs exactly
    one task.
    """
    if isinstance(output, Mapping):
        missing = [t for t in tasks if t not in output]
        if missing:
            raise ModelError(f"model outputs {sorted(output)} lack tasks {missing}")
        return {t: output[t] for t in tasks}
    if len(tasks) != 1:
        raise ModelError(f"a single-output model serves one task, got tasks {list(tasks)}")
    return {tasks[0]: output}


def output_classes(model: nn.Module, length: int = INPUT_LENGTH) -> dict[str, int] | int:
    """What `model` outputs for one zero packet: task -> classes (multi-task), or classes."""
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(1, 2, length, device=device))
    finally:
        model.train(was_training)
    if isinstance(out, Mapping):
        return {t: int(v.shape[-1]) for t, v in out.items()}
    return int(out.shape[-1])


def resolve_tasks(
    model: nn.Module, tasks: Sequence[str] | None, length: int = INPUT_LENGTH
) -> tuple[str, ...]:
    """Check `tasks` against the schema and `model`'s outputs; None means all of a multi-task
    model's outputs. A single-task model needs its one task named (its classes must match)."""
    outputs = output_classes(model, length)
    if tasks is None:
        if isinstance(outputs, int):
            raise ValueError("a single-task model needs its task named, e.g. tasks=('app',)")
        tasks = tuple(outputs)
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError("tasks is empty")
    unknown = [t for t in tasks if t not in TASK_BY_NAME]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; expected some of {list(TASK_NAMES)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks {list(tasks)} repeat a task")
    if isinstance(outputs, int):
        if len(tasks) != 1:
            raise ValueError(f"a single-task model serves one task, got {list(tasks)}")
        want = TASK_BY_NAME[tasks[0]].num_classes
        if outputs != want:
            raise ModelError(
                f"model has {outputs} outputs but task {tasks[0]!r} has {want} classes"
            )
        return tasks
    for t in tasks:
        if t not in outputs:
            raise ModelError(f"model outputs {sorted(outputs)} lack task {t!r}")
        if outputs[t] != TASK_BY_NAME[t].num_classes:
            raise ModelError(
                f"model's {t!r} head has {outputs[t]} outputs, the schema "
                f"{TASK_BY_NAME[t].num_classes} classes"
            )
    return tasks


# --- learning KPIs -----------------------------------------------------------------------------


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts; rows true class, columns predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat[: num_classes * num_classes].reshape(num_classes, num_classes)


def macro_f1(confusion: np.ndarray) -> float:
    """Unweighted mean of per-class F1 = 2 TP / (2 TP + FP + FN).

    Classes that neither occur nor are predicted are left out (scikit-learn's default label
    set); NaN for an empty matrix.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    present = (support + predicted) > 0
    if not present.any():
        return float("nan")
    f1 = 2 * tp[present] / (support[present] + predicted[present])
    return float(f1.mean())


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    indices: Sequence[int] | np.ndarray | None,
    tasks: Sequence[str] | None,
    batch_size: int = BUFFER_BATCH,
) -> KPI:
    """Per task accuracy, macro-F1 and confusion matrix of `model` on `dataset[indices]`.

    `indices=None` takes the whole dataset; `tasks=None` every output of a multi-task model.
    The model runs in eval mode on its own device. Returns {packets, mean_accuracy, per_task:
    task -> {accuracy, macro_f1, support, classes, confusion (rows true, columns predicted)}}.
    """
    length = int(dataset[0][0].shape[-1])
    tasks = resolve_tasks(model, tasks, length)
    subset = dataset if indices is None else Subset(dataset, [int(i) for i in indices])
    if len(subset) == 0:  # type: ignore[arg-type]
        raise ValueError("nothing to evaluate: no packets selected")
    device = next(model.parameters()).device
    cms = {t: np.zeros((TASK_BY_NAME[t].num_classes,) * 2, dtype=np.int64) for t in tasks}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, labels in DataLoader(subset, batch_size=batch_size, shuffle=False):
                logits = task_logits(model(x.to(device)), tasks)
                for t in tasks:
                    pred = logits[t].argmax(dim=1).cpu().numpy()
                    cms[t] += confusion_matrix(labels[t].numpy(), pred, len(cms[t]))
    finally:
        model.train(was_training)
    per_task = {}
    for t, cm in cms.items():
        total = int(cm.sum())
        per_task[t] = {
            "accuracy": float(np.trace(cm) / total),
            "macro_f1": macro_f1(cm),
            "support": total,
            "classes": list(TASK_BY_NAME[t].classes),
            "confusion": cm.tolist(),
        }
    return {
        "packets": len(subset),  # type: ignore[arg-type]
        "mean_accuracy": float(np.mean([per_task[t]["accuracy"] for t in tasks])),
        "per_task": per_task,
    }


# --- resource KPIs -----------------------------------------------------------------------------


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def buffered_memory(
    model: nn.Module, length: int = INPUT_LENGTH, batch_size: int = BUFFER_BATCH
) -> dict[str, int]:
    """Bytes "to load a batch of samples at runtime" (paper 1 Sec. IV-C), our definition:

    the float32 input batch (batch, 2, length), plus every distinct tensor storage that a leaf
    module outputs in one eval forward pass of that batch (views such as Flatten and eval-mode
    Dropout's pass-through add nothing), plus the float32 parameters. Activations of 3-D and
    larger outputs count as conv memory, 2-D ones as dense memory (Table 10's two columns). An
    upper bound on what a runtime that frees or fuses intermediate tensors needs.
    """
    seen: dict[int, torch.Tensor] = {}  # holding the tensors keeps their addresses unique
    conv = dense = 0

    def hook(_m: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal conv, dense
        outs = output.values() if isinstance(output, Mapping) else [output]
        for o in outs:
            if not isinstance(o, torch.Tensor) or _storage_key(o) in seen:
                continue
            seen[_storage_key(o)] = o
            nbytes = o.untyped_storage().nbytes()
            if o.dim() >= 3:
                conv += nbytes
            else:
                dense += nbytes

    x = torch.zeros(batch_size, 2, length, device=next(model.parameters()).device)
    seen[_storage_key(x)] = x
    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    input_bytes = x.numel() * 4
    param_bytes = sum(p.numel() for p in model.parameters()) * 4
    return {
        "input_bytes": input_bytes,
        "conv_activation_bytes": conv,
        "dense_activation_bytes": dense,
        "param_bytes": param_bytes,
        "buffered_memory_bytes": input_bytes + conv + dense + param_bytes,
    }


def inference_seconds_per_sample(
    model: nn.Module, length: int = INPUT_LENGTH, batch_size: int = BUFFER_BATCH, repeats: int = 5
) -> float:
    """Median wall-clock seconds of `repeats` eval forward passes of one batch, per sample,
    after one warm-up pass, on the model's device with torch's current thread count."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = next(model.parameters()).device
    x = torch.randn(batch_size, 2, length, device=device)
    was_training = model.training
    times = []
    try:
        model.eval()
        with torch.no_grad():
            model(x)
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return statistics.median(times) / batch_size


def resource_kpis(
    model: nn.Module,
    length: int = INPUT_LENGTH,
    batch_size: int = BUFFER_BATCH,
    repeats: int = 5,
) -> dict[str, Any]:
    """Resource and runtime KPIs of `model` on CPU (it is moved there and back).

    `params`: trainable parameters (paper 1's count); `size_mib`: float32 parameter bytes /
    2**20 (paper 1's "MiB" are 10**6 bytes: 784.8K parameters -> its 3.14); `flops` (2 x conv
    and linear MACs per sample); `buffered_memory` (see `buffered_memory`) at `batch_size`;
    `inference_ms_per_sample` measured (see `inference_seconds_per_sample`), to report, not to
    compare across machines.
    """
    original = next(model.parameters()).device
    model.to("cpu")
    try:
        memory = buffered_memory(model, length, batch_size)
        seconds = inference_seconds_per_sample(model, length, batch_size, repeats)
        macs = count_macs(model, length)
    finally:
        model.to(original)
    param_bytes = memory["param_bytes"]
    return {
        "params": trainable_param_count(model),
        "size_mib": param_bytes / 2**20,
        "flops": 2 * macs,
        "batch_size": batch_size,
        **memory,
        "buffered_memory_mib": memory["buffered_memory_bytes"] / 2**20,
        "inference_ms_per_sample": seconds * 1e3,
        "inference_device": "cpu",
        "inference_threads": torch.get_num_threads(),
    }


# --- KPIstl vs KPImtl --------------------------------------------------------------------------

_AGGREGATED = ("params", "size_mib", "flops", "buffered_memory_mib", "inference_ms_per_sample")


def _task_accuracy(kpi: KPI, task: str, where: str) -> dict[str, float]:
    try:
        entry = kpi["per_task"][task]
        return {"accuracy": float(entry["accuracy"]), "macro_f1": float(entry["macro_f1"])}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{where}: no accuracy for task {task!r} ({exc!r})") from None


def compare(stl: Mapping[str, KPI], mtl: KPI, delta: float = DEFAULT_DELTA) -> dict[str, Any]:
    """Paper 1's gate (Sec. IV-D): proceed with the MTL model when, for every task of `stl`,
    MTL accuracy / STL accuracy >= `delta`.

    `stl` maps task -> KPI of that task's single-task model; `mtl` is the multi-task KPI. STL
    resources are aggregated as sequential execution of all STL models (Tables 10, 11): sums of
    params, size, FLOPs, buffered memory and time per sample (a KPI without `resources` adds
    nothing and the aggregate is left out).
    """
    if not 0.0 <= delta <= 1.0:
        raise ValueError(f"delta must be in [0, 1], got {delta}")
    if not stl:
        raise ValueError("no STL KPIs to compare with")
    tasks: dict[str, dict[str, Any]] = {}
    for task, kpi in stl.items():
        if task not in TASK_BY_NAME:
            raise ValueError(f"unknown task {task!r}; expected one of {list(TASK_NAMES)}")
        s = _task_accuracy(kpi, task, f"STL {task}")
        m = _task_accuracy(mtl, task, "MTL")
        ratio = m["accuracy"] / s["accuracy"] if s["accuracy"] > 0 else math.inf
        tasks[task] = {
            "stl_accuracy": s["accuracy"],
            "mtl_accuracy": m["accuracy"],
            "ratio": ratio,
            "within": ratio >= delta,
            "stl_macro_f1": s["macro_f1"],
            "mtl_macro_f1": m["macro_f1"],
        }
    resources: dict[str, Any] = {}
    if all("resources" in kpi for kpi in stl.values()):
        resources["stl"] = {
            t: {k: kpi["resources"][k] for k in _AGGREGATED} for t, kpi in stl.items()
        }
        resources["stl_aggregated"] = {
            k: sum(kpi["resources"][k] for kpi in stl.values()) for k in _AGGREGATED
        }
    if "resources" in mtl:
        resources["mtl"] = {k: mtl["resources"][k] for k in _AGGREGATED}
    return {
        "delta": delta,
        "proceed": all(v["within"] for v in tasks.values()),
        "tasks": tasks,
        "resources": resources,
    }


def comparison_markdown(result: Mapping[str, Any]) -> str:
    """`compare`'s result as markdown tables and the decision line."""
    lines = [
        "| task | STL acc | MTL acc | MTL/STL | within Delta | STL macro-F1 | MTL macro-F1 |",
        "|---|---:|---:|---:|:---:|---:|---:|",
    ]
    for t, v in result["tasks"].items():
        lines.append(
            f"| {t} | {v['stl_accuracy']:.4f} | {v['mtl_accuracy']:.4f} | {v['ratio']:.4f} | "
            f"{'yes' if v['within'] else 'NO'} | {v['stl_macro_f1']:.4f} | "
            f"{v['mtl_macro_f1']:.4f} |"
        )
    res = result.get("resources", {})
    columns = [
        (name, res[key])
        for name, key in (("STL aggregated", "stl_aggregated"), ("MTL", "mtl"))
        if key in res
    ]
    if columns:
        lines += [
            "",
            "| resource | " + " | ".join(n for n, _ in columns) + " |",
            "|---" + "|---:" * len(columns) + "|",
        ]
        for k in _AGGREGATED:
            cells = [f"{c[k]:,}" if isinstance(c[k], int) else f"{c[k]:.4g}" for _, c in columns]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    verdict = "PROCEED with the MTL model" if result["proceed"] else "REDESIGN: MTL outside Delta"
    lines += ["", f"Delta = {result['delta']}: {verdict}"]
    return "\n".join(lines)

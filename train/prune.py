"""Structured pruning (paper 2): MiniDrop's automatic per-layer widths and the pre-defined
(uniform-rate) baseline, with weight inheritance, multi-iteration pruning, the h / rate sweep
and the control paper 2 lacks: the pruned widths trained from scratch (`from_scratch`).

Prunable layers are every Conv of a trunk, stem or block and every hidden Linear of a dense
head; a task's output Linear never is (its width is the class count). Each output filter (unit)
is scored by the L2 norm of its own weights: Conv1d `weight[o]` over (in, kernel), Linear
`weight[o]` over in. PyTorch keeps the output axis first, so a row of `weight.reshape(out, -1)`
is one filter, unlike the channels-last Keras reshape of the authors' code (seed_code.md, paper
2 (a)), which mixes filters.

MiniDrop (`find_knee`) follows the authors' rule exactly (seed_code.md, paper 2 (a) step 2):
min-max map the layer's M scores to integers 0..100, sort them descending, drop the first
(s[1:]), take the forward slope g[j] = (s[j+h] - s[j]) / h, mark the first flattest window
j* = argmax g, k = int(j* + h/2), pruning rate p = round(1 - k/len(g), 2) clipped to [0, 0.9],
and keep int(M (1 - p)) filters, at least 1. Unlike their code: the kept filters are the
*highest*-scoring ones, each layer's ratio applies to that layer (theirs applied r1 twice), and
when h >= M-1 leaves no window the layer keeps all M filters with a note in its report (theirs
silently dropped the layer, shifting every later rate). `train prune --dry-run` prints the
knees, rates and resulting sizes for several h without fine-tuning.

The slim network (`prune_model`) is the same class rebuilt from a `ModelSpec` with the new
widths; it inherits the kept filters' weights and biases, their BatchNorm entries (weight,
bias, running mean and variance) and the next layer's matching input channels. A Flatten
between a conv and a Linear is channel-major (feature = c * L_out + t), so a kept channel keeps
its L_out features. Every entry of the new state dict is inherited and loaded strictly: no
layer is silently left random. Supported: mtl1d (shared trunk and every head), stl1d, cnn2d and
resnet with skip=False (the published net; the last block's conv feeds the classifier Linear
through the Flatten). A resnet with skip=True is refused: its identity shortcuts tie a block's
conv1 filters to its input channels.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edge_core.errors import ModelError
from edge_core.schema import INPUT_LENGTH, TASK_NAMES
from train.checkpoint import ModelSpec, save_checkpoint
from train.models import Cnn2d, Mtl1d, ResNet, Stl1d, describe

Method = Literal["minidrop", "uniform"]
METHODS: tuple[str, ...] = ("minidrop", "uniform")
"""Rules that choose widths; a from-scratch run records method `scratch` and its `widths_from`."""

Finetune = Callable[[nn.Module, ModelSpec], nn.Module]
"""Fine-tunes a pruned model (built from the spec) and returns it, e.g. `train.trainer.fit`."""
Evaluate = Callable[[nn.Module], dict[str, float]]
"""Accuracy per task name of a model on held-out packets."""

DEFAULT_HS: tuple[int, ...] = (2, 4, 8, 16)
DEFAULT_RATES: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)

_BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# --- scores and the knee --------------------------------------------------------------------


def filter_scores(layer: nn.Module) -> torch.Tensor:
    """L2 norm of each output filter (Conv) or unit (Linear) over its own weights: (out,)."""
    if not isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Linear):
        raise TypeError(f"cannot score a {type(layer).__name__}; want Conv1d, Conv2d or Linear")
    with torch.no_grad():
        w = layer.weight.detach()
        return w.reshape(w.shape[0], -1).norm(dim=1).cpu()  # (out,)


MAX_PRUNING_RATE = 0.9
"""The authors' clip of a layer's MiniDrop pruning rate p (so a layer keeps >= 10 %)."""


def mapped_scores(scores: Sequence[float] | np.ndarray | torch.Tensor) -> np.ndarray:
    """The authors' min-max map of raw scores to integers 0..100, in the input order: (M,).

    round((r - min) / ((max - min) / 100)), NumPy's round half to even as theirs. Equal scores
    (max = min, where their division gives NaN) all map to 0.
    """
    r = np.asarray(scores, dtype=np.float64).ravel()  # (M,)
    if len(r) == 0:
        raise ValueError("no scores: a layer has at least one filter")
    if not np.isfinite(r).all():
        raise ValueError("scores must be finite (NaN or inf weights?)")
    lo, hi = float(r.min()), float(r.max())
    if hi == lo:
        return np.zeros(len(r))
    return np.round((r - lo) / ((hi - lo) / 100.0))


@dataclass(frozen=True)
class Knee:
    """MiniDrop's choice for one layer of `width` filters.

    `knee` is j* (the first flattest window), `k` = int(j* + h/2), `windows` = len(g), `p` the
    layer's pruning rate (rounded to 0.01, clipped to [0, 0.9]) and `keep` = int(width (1 - p)),
    at least 1. `knee`, `k` and `windows` are None when there is no window (h >= width - 1).
    """

    keep: int
    knee: int | None
    note: str | None = None
    k: int | None = None
    windows: int | None = None
    p: float = 0.0

    @property
    def keep_ratio(self) -> float:
        """1 - p, the fraction of the layer's filters MiniDrop keeps (before int())."""
        return round(1.0 - self.p, 2)


def find_knee(scores: Sequence[float] | np.ndarray | torch.Tensor, h: int) -> Knee:
    """MiniDrop's pruning rate and kept count for one layer's raw filter `scores`, step `h` >= 1.

    The authors' rule (seed_code.md, paper 2 (a) step 2): s = the min-max mapped scores
    (`mapped_scores`) sorted descending, minus the first (s[1:], M-1 values); g[j] =
    (s[j+h] - s[j]) / h for j = 0 .. M-2-h; j* = the first argmax of g (all g <= 0: the
    flattest window); k = int(j* + h/2); p = round(1 - k/len(g), 2) clipped to [0, 0.9]; keep
    int(M (1 - p)) filters, at least 1 (computed in integer percent, so 0.57 * 100 is 57).
    h >= M-1 leaves no window (the authors' code silently dropped such a layer and shifted every
    later rate): the layer keeps all M filters, p = 0, and the note says so.
    """
    if isinstance(h, bool) or not isinstance(h, int | np.integer) or h < 1:
        raise ValueError(f"MiniDrop h must be an integer >= 1, got {h!r}")
    h = int(h)
    mapped = mapped_scores(scores)
    m = len(mapped)
    s = np.sort(mapped)[::-1][1:]  # (M-1,) descending, the top one dropped
    windows = len(s) - h
    if windows < 1:
        return Knee(m, None, f"h={h} >= M-1={m - 1}: no window, all {m} kept (p=0)")
    g = (s[h:] - s[:-h]) / h  # (M-1-h,) forward slopes, all <= 0
    j = int(np.argmax(g))  # the first one on ties
    k = int(j + h / 2)
    p = min(max(round(1.0 - k / windows, 2), 0.0), MAX_PRUNING_RATE)
    percent = 100 - round(p * 100)  # the keep ratio, exactly, in percent
    keep = m * percent // 100
    if keep < 1:
        note = f"p={p:.2f} keeps int({m} x {percent / 100:.2f}) = 0: kept 1 (the minimum)"
        return Knee(1, j, note, k, windows, p)
    return Knee(keep, j, None, k, windows, p)


def uniform_keep(width: int, rate: float) -> int:
    """Filters a layer of `width` keeps under the pre-defined rate: round(width (1-rate)), >= 1."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"pruning rate must be in [0, 1), got {rate}")
    return max(1, round(width * (1.0 - rate)))


def top_filters(scores: torch.Tensor, keep: int) -> list[int]:
    """Indices of the `keep` highest scores, in their original (ascending index) order."""
    order = torch.argsort(scores, descending=True, stable=True)
    return sorted(int(i) for i in order[:keep])


# --- the layers of each architecture --------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    name: str  # module path of the Conv / Linear
    bn: str | None  # module path of the BatchNorm normalizing its output
    source: str | None  # the layer feeding it (None: the network input)
    prunable: bool = True  # False for output layers: their width is the class count


def _sequence(seq: nn.Module, prefix: str, source: str | None) -> list[_Layer]:
    """Conv/Linear layers of a Sequential in order, each with the BatchNorm that follows it."""
    layers: list[_Layer] = []
    current: dict[str, Any] | None = None
    for child_name, child in seq.named_children():
        path = f"{prefix}.{child_name}"
        if isinstance(child, nn.Conv1d | nn.Conv2d | nn.Linear):
            if current is not None:
                layers.append(_Layer(**current))
                source = current["name"]
            current = {"name": path, "bn": None, "source": source}
        elif isinstance(child, nn.BatchNorm1d | nn.BatchNorm2d) and current is not None:
            current["bn"] = path
    if current is not None:
        layers.append(_Layer(**current))
    return layers


def _output(layers: list[_Layer]) -> list[_Layer]:
    """The same chain with its last layer (the classifier) marked not prunable."""
    last = layers[-1]
    return [*layers[:-1], _Layer(last.name, last.bn, last.source, prunable=False)]


WidthsToKwargs = Callable[[dict[str, int]], dict[str, Any]]


def _plan(model: nn.Module) -> tuple[str, list[_Layer], WidthsToKwargs]:
    """(model name, its Conv/Linear layers in forward order, new widths -> spec kwargs)."""
    if isinstance(model, Mtl1d):
        trunk = _sequence(model.trunk, "trunk", None)
        heads = {
            t: _output(_sequence(model.heads[t], f"heads.{t}", trunk[-1].name)) for t in TASK_NAMES
        }

        def mtl_kwargs(w: dict[str, int]) -> dict[str, Any]:
            return {
                "conv_widths": [w[x.name] for x in trunk],
                "head_widths": {t: [w[x.name] for x in heads[t][:-1]] for t in TASK_NAMES},
            }

        return "mtl1d", trunk + [x for t in TASK_NAMES for x in heads[t]], mtl_kwargs
    if isinstance(model, Stl1d):
        trunk = _sequence(model.trunk, "trunk", None)
        head = _output(_sequence(model.head, "head", trunk[-1].name))

        def stl_kwargs(w: dict[str, int]) -> dict[str, Any]:
            return {
                "conv_widths": [w[x.name] for x in trunk],
                "dense": [w[x.name] for x in head[:-1]],
            }

        return "stl1d", trunk + head, stl_kwargs
    if isinstance(model, Cnn2d):
        features = _sequence(model.features, "features", None)
        classifier = _output(_sequence(model.classifier, "classifier", features[-1].name))

        def cnn_kwargs(w: dict[str, int]) -> dict[str, Any]:
            return {
                "filters": [w[x.name] for x in features],
                "dense": [w[x.name] for x in classifier[:-1]],
            }

        return "cnn2d", features + classifier, cnn_kwargs
    if isinstance(model, ResNet):
        return _resnet_plan(model)
    raise ModelError(f"cannot prune a {type(model).__name__}: not one of train.models' networks")


def _resnet_plan(model: ResNet) -> tuple[str, list[_Layer], WidthsToKwargs]:
    for i, block in enumerate(model.blocks):
        if getattr(block, "shortcut", None) is not None:
            raise ModelError(
                f"cannot prune resnet with skip=True (block {i} has a shortcut): the shortcut "
                "ties each block's conv1 filters to its input channels, which this pruner does "
                "not do; prune the published skip=False network"
            )
    stem = _sequence(model.stem, "stem", None)
    if len(stem) != 1:
        raise ModelError(f"resnet stem has {len(stem)} convolutions, expected 1")
    layers = list(stem)
    pairs: list[tuple[str, str]] = []
    source = stem[-1].name
    for i in range(len(model.blocks)):
        conv1, conv2 = f"blocks.{i}.conv1", f"blocks.{i}.conv2"
        layers.append(_Layer(conv1, f"blocks.{i}.bn1", source))
        layers.append(_Layer(conv2, f"blocks.{i}.bn2", conv1))
        pairs.append((conv1, conv2))
        source = conv2
    layers += _output(_sequence(model.head, "head", source))

    def resnet_kwargs(w: dict[str, int]) -> dict[str, Any]:
        return {"stem": w[stem[-1].name], "blocks": [[w[a], w[b]] for a, b in pairs]}

    return "resnet", layers, resnet_kwargs


def _module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def _weight(model: nn.Module, path: str) -> torch.Tensor:
    w = _module(model, path).weight
    assert isinstance(w, torch.Tensor)
    return w


def prunable_layers(model: nn.Module) -> list[str]:
    """Module paths of `model`'s prunable Conv/Linear layers, in forward order."""
    _, layers, _ = _plan(model)
    return [x.name for x in layers if x.prunable]


# --- building the slim network --------------------------------------------------------------


def _input_index(kept: torch.Tensor, per_channel: int) -> torch.Tensor:
    """Input features of the kept source channels: c * per_channel + t (channel-major Flatten)."""
    if per_channel == 1:
        return kept
    return (kept[:, None] * per_channel + torch.arange(per_channel)).reshape(-1)


def _check_spec(model: nn.Module, spec: ModelSpec) -> tuple[list[_Layer], WidthsToKwargs]:
    name, layers, to_kwargs = _plan(model)
    if spec.name != name:
        raise ModelError(f"spec names model {spec.name!r} but the model is a {name}")
    return layers, to_kwargs


def prune_model(
    model: nn.Module, spec: ModelSpec, keep: Mapping[str, Sequence[int]]
) -> tuple[nn.Module, ModelSpec]:
    """The slim copy of `model` keeping, for each prunable layer named in `keep`, those filters.

    Layers not in `keep` keep all their filters. The new model is `ModelSpec(spec.name, kwargs
    with the new widths).build()` and inherits every weight (see the module docstring); `model`
    is not modified. Returns (slim model, its spec); the model is in `model`'s train/eval mode.
    """
    layers, to_kwargs = _check_spec(model, spec)
    prunable = {x.name for x in layers if x.prunable}
    unknown = sorted(set(keep) - prunable)
    if unknown:
        raise ValueError(f"not prunable layers: {unknown}; prunable: {sorted(prunable)}")
    kept: dict[str, torch.Tensor] = {}
    for layer in layers:
        width = _weight(model, layer.name).shape[0]
        if layer.name not in keep:
            kept[layer.name] = torch.arange(width)
            continue
        idx = sorted({int(i) for i in keep[layer.name]})
        if not idx or idx[0] < 0 or idx[-1] >= width:
            raise ValueError(
                f"{layer.name}: keep indices must be a non-empty subset of 0..{width - 1}"
            )
        kept[layer.name] = torch.tensor(idx, dtype=torch.long)
    widths = {x.name: len(kept[x.name]) for x in layers if x.prunable}
    new_spec = ModelSpec(spec.name, {**spec.kwargs, **to_kwargs(widths)})
    new_model = new_spec.build()
    old = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for layer in layers:
            out_idx = kept[layer.name].to(_weight(model, layer.name).device)
            w = old[f"{layer.name}.weight"].index_select(0, out_idx)
            if layer.source is not None:
                in_dim = w.shape[1]
                source_width = _weight(model, layer.source).shape[0]
                if in_dim % source_width:
                    raise ModelError(f"{layer.name}: {in_dim} inputs from {source_width} channels")
                per_channel = in_dim // source_width
                src = _input_index(kept[layer.source], per_channel).to(w.device)
                w = w.index_select(1, src)
            state[f"{layer.name}.weight"] = w
            if f"{layer.name}.bias" in old:
                state[f"{layer.name}.bias"] = old[f"{layer.name}.bias"].index_select(0, out_idx)
            if layer.bn is not None:
                for entry in _BN_ENTRIES:
                    value = old[f"{layer.bn}.{entry}"]
                    state[f"{layer.bn}.{entry}"] = (
                        value.clone() if value.ndim == 0 else value.index_select(0, out_idx)
                    )
        try:
            new_model.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # a layer the plan missed must not stay random
            raise ModelError(f"pruned {spec.name}: weights not fully inherited: {exc}") from exc
    device = _weight(model, layers[0].name).device
    new_model.to(device).train(model.training)
    return new_model, new_spec


# --- one pruning step and its report --------------------------------------------------------


@dataclass(frozen=True)
class LayerPrune:
    """One layer's pruning: widths, MiniDrop's h and knee j* (or the uniform rate)."""

    name: str
    kind: Literal["conv", "linear"]
    original: int
    kept: int
    h: int | None
    rate: float | None
    knee: int | None
    kept_indices: tuple[int, ...]
    note: str | None = None
    k: int | None = None
    windows: int | None = None
    p: float | None = None

    @property
    def keep_ratio(self) -> float | None:
        """1 - p (MiniDrop) or 1 - rate (uniform)."""
        return None if self.p is None else round(1.0 - self.p, 4)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "original": self.original,
            "kept": self.kept,
            "h": self.h,
            "rate": self.rate,
            "knee": self.knee,
            "k": self.k,
            "windows": self.windows,
            "p": self.p,
            "keep_ratio": self.keep_ratio,
            "kept_indices": list(self.kept_indices),
            "note": self.note,
        }


@dataclass(frozen=True)
class PruneReport:
    """One pruning step: the method, per layer what was kept, and size before / after."""

    method: str
    h: int | None
    rate: float | None
    iteration: int
    layers: tuple[LayerPrune, ...]
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    spec: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "h": self.h,
            "rate": self.rate,
            "iteration": self.iteration,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "spec": self.spec,
            "layers": [x.to_dict() for x in self.layers],
        }


def check_method(method: str, h: int | None, rate: float | None) -> None:
    """ValueError unless `method` is minidrop with an int h >= 1 or uniform with 0 <= rate < 1."""
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; expected one of {list(METHODS)}")
    if method == "minidrop" and (h is None or rate is not None):
        raise ValueError("minidrop takes h (and no rate)")
    if method == "uniform" and (rate is None or h is not None):
        raise ValueError("uniform pruning takes a rate (and no h)")
    if method == "uniform" and rate is not None and not 0.0 <= rate < 1.0:
        raise ValueError(f"pruning rate must be in [0, 1), got {rate}")
    if method == "minidrop" and (isinstance(h, bool) or not isinstance(h, int) or h < 1):
        raise ValueError(f"MiniDrop h must be an integer >= 1, got {h!r}")


def _length(spec: ModelSpec) -> int:
    return int(spec.kwargs.get("length", INPUT_LENGTH))


def prune_once(
    model: nn.Module,
    spec: ModelSpec,
    method: Method,
    *,
    h: int | None = None,
    rate: float | None = None,
    iteration: int = 1,
) -> tuple[nn.Module, ModelSpec, PruneReport]:
    """Score, choose each prunable layer's filters (MiniDrop with `h`, or uniform `rate`), build.

    Returns the slim model (weights inherited, not fine-tuned), its spec and the report.
    """
    check_method(method, h, rate)
    layers, _ = _check_spec(model, spec)
    keep: dict[str, list[int]] = {}
    rows: list[LayerPrune] = []
    for layer in layers:
        if not layer.prunable:
            continue
        module = _module(model, layer.name)
        scores = filter_scores(module)
        if method == "minidrop":
            assert h is not None
            choice = find_knee(scores, h)
        else:
            assert rate is not None
            choice = Knee(uniform_keep(len(scores), rate), None, p=rate)
        idx = top_filters(scores, choice.keep)
        keep[layer.name] = idx
        rows.append(
            LayerPrune(
                name=layer.name,
                kind="linear" if isinstance(module, nn.Linear) else "conv",
                original=len(scores),
                kept=len(idx),
                h=h,
                rate=rate,
                knee=choice.knee,
                kept_indices=tuple(idx),
                note=choice.note,
                k=choice.k,
                windows=choice.windows,
                p=choice.p,
            )
        )
    new_model, new_spec = prune_model(model, spec, keep)
    before, after = describe(model, _length(spec)), describe(new_model, _length(spec))
    report = PruneReport(
        method=method,
        h=h,
        rate=rate,
        iteration=iteration,
        layers=tuple(rows),
        params_before=int(before["params"]),
        params_after=int(after["params"]),
        flops_before=int(before["flops"]),
        flops_after=int(after["flops"]),
        spec=new_spec.to_dict(),
    )
    return new_model, new_spec, report


@dataclass(frozen=True)
class IterationResult:
    """One prune (-> fine-tune) iteration: its report and accuracies, when evaluated."""

    report: PruneReport
    accuracy_before: dict[str, float] | None = None
    accuracy_after: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "report": self.report.to_dict(),
            "accuracy_before_finetune": self.accuracy_before,
            "accuracy_after_finetune": self.accuracy_after,
        }


@dataclass
class PruneResult:
    """The final model and spec of `prune`, with one `IterationResult` per iteration.

    `from_scratch`: the final model was trained from a fresh initialisation with the pruned
    widths (the control), not from the inherited weights.
    """

    model: nn.Module
    spec: ModelSpec
    iterations: list[IterationResult]
    from_scratch: bool = False

    @property
    def method(self) -> str:
        """What the final weights are: `minidrop` / `uniform` (inherited) or `scratch`."""
        return "scratch" if self.from_scratch else self.iterations[-1].report.method

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "from_scratch": self.from_scratch,
            "iterations": [i.to_dict() for i in self.iterations],
        }


def fresh_model(spec: ModelSpec, seed: int) -> nn.Module:
    """`spec.build()` under `torch.manual_seed(seed)`: the random start of a from-scratch run."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return spec.build()


def prune(
    model: nn.Module,
    spec: ModelSpec,
    method: Method,
    *,
    h: int | None = None,
    rate: float | None = None,
    iterations: int = 1,
    finetune: Finetune | None = None,
    evaluate: Evaluate | None = None,
    from_scratch: bool = False,
    seed: int = 0,
) -> PruneResult:
    """Prune -> fine-tune, `iterations` times, each iteration starting from the previous result.

    `finetune(model, spec)` returns the fine-tuned model (None: no fine-tuning, the iterations
    then prune the inherited weights again); `evaluate(model)` gives accuracy per task before and
    after each fine-tuning. `model` itself is not modified.

    `from_scratch` is the control paper 2 lacks: the widths are chosen the same way (one
    iteration), but the inherited weights are replaced by `fresh_model(spec, seed)` before
    `finetune` trains it, so the same training budget starts from random weights.
    """
    check_method(method, h, rate)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if from_scratch and iterations != 1:
        raise ValueError(
            f"from_scratch trains the widths of one pruning step; got iterations={iterations}"
        )
    results: list[IterationResult] = []
    for i in range(1, iterations + 1):
        model, spec, report = prune_once(model, spec, method, h=h, rate=rate, iteration=i)
        if from_scratch:
            device = next(model.parameters()).device
            model = fresh_model(spec, seed).to(device).train(model.training)
        before = evaluate(model) if evaluate is not None else None
        after = None
        if finetune is not None:
            model = finetune(model, spec)
            after = evaluate(model) if evaluate is not None else None
        results.append(IterationResult(report, before, after))
    return PruneResult(model, spec, results, from_scratch)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (the parent checkpoint a pruned model came from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_RECORD_LAYER_KEYS = ("name", "original", "kept", "knee", "k", "windows", "p", "keep_ratio", "note")


def pruning_record(
    result: PruneResult,
    parent: str | Path,
    *,
    fine_tuning: Mapping[str, Any] | None,
    data: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Provenance of a pruned model for its checkpoint and bundle manifest (`pruning` key).

    {method (minidrop / uniform / scratch), widths_from (the rule that chose the widths), h,
    rate, iterations, parent_checkpoint {path, sha256}, fine_tuning (epochs, lr, batch, patience,
    seed, ...; None: not fine-tuned), data, params/flops before and after, rounds: per
    iteration, per layer {name, original, kept, knee j*, k, windows len(g), p, keep_ratio,
    note}}. `fine_tuning` and `data` are JSON values.
    """
    first, last = result.iterations[0].report, result.iterations[-1].report
    return json.loads(
        json.dumps(
            {
                "method": result.method,
                "widths_from": last.method,
                "h": last.h,
                "rate": last.rate,
                "iterations": len(result.iterations),
                "parent_checkpoint": {"path": str(parent), "sha256": file_sha256(parent)},
                "fine_tuning": dict(fine_tuning) if fine_tuning is not None else None,
                "data": dict(data) if data is not None else None,
                "params_before": first.params_before,
                "params_after": last.params_after,
                "flops_before": first.flops_before,
                "flops_after": last.flops_after,
                "rounds": [
                    {
                        "iteration": it.report.iteration,
                        "params_after": it.report.params_after,
                        "layers": [
                            {k: v for k, v in row.to_dict().items() if k in _RECORD_LAYER_KEYS}
                            for row in it.report.layers
                        ],
                    }
                    for it in result.iterations
                ],
            }
        )
    )


def dry_run(
    model: nn.Module,
    spec: ModelSpec,
    *,
    hs: Sequence[int] = DEFAULT_HS,
    rates: Sequence[float] = (),
) -> dict[str, Any]:
    """Widths, params and FLOPs MiniDrop (every h) and the uniform rule (every rate) would give.

    No fine-tuning, no data: one `prune_once` per setting. Returns {"baseline": {params,
    flops}, "runs": [{name, method, h, rate, params, flops, widths (spec kwargs), layers:
    [{name, original, kept, knee, k, windows, p, keep_ratio, note}]}]}.
    """
    for step in hs:
        check_method("minidrop", step, None)
    for r in rates:
        check_method("uniform", None, r)
    size = describe(model, _length(spec))
    runs: list[dict[str, Any]] = []
    settings: list[tuple[Method, int | None, float | None]] = [("minidrop", k, None) for k in hs]
    settings += [("uniform", None, r) for r in rates]
    for method, h, rate in settings:
        _, new_spec, report = prune_once(model, spec, method, h=h, rate=rate)
        runs.append(
            {
                "name": run_name(method, h, rate),
                "method": method,
                "h": h,
                "rate": rate,
                "params": report.params_after,
                "flops": report.flops_after,
                "widths": new_spec.to_dict()["kwargs"],
                "layers": [
                    {k: v for k, v in row.to_dict().items() if k in _RECORD_LAYER_KEYS}
                    for row in report.layers
                ],
            }
        )
    return {"baseline": {"params": int(size["params"]), "flops": int(size["flops"])}, "runs": runs}


# --- the sweep (paper 2 Fig. 4) -------------------------------------------------------------


def run_name(
    method: str, h: int | None = None, rate: float | None = None, *, scratch: bool = False
) -> str:
    """File-name stem of one sweep run: `minidrop_h8`, `uniform_p0.5`, `scratch_minidrop_h8`."""
    stem = f"minidrop_h{h}" if method == "minidrop" else f"uniform_p{rate:g}"
    return f"scratch_{stem}" if scratch else stem


def sweep(
    model: nn.Module,
    spec: ModelSpec,
    *,
    finetune: Finetune,
    evaluate: Evaluate,
    hs: Sequence[int] = DEFAULT_HS,
    rates: Sequence[float] = DEFAULT_RATES,
    iterations: int = 1,
    from_scratch: bool = False,
    seed: int = 0,
    out_dir: str | Path | None = None,
    save_models: bool = True,
    progress: Callable[[str], None] | None = None,
    parent: str | Path | None = None,
    fine_tuning: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """MiniDrop for every h and the uniform baseline for every rate, from the same `model`.

    Each run prunes, evaluates, fine-tunes and evaluates again. With `from_scratch` every
    setting also gets a `scratch_<name>` run: the same widths trained from `fresh_model(spec,
    seed)` by the same `finetune` (needs iterations=1). Returns a JSON-able dict
    {"baseline": {params, flops, accuracy}, "runs": [{name, method (minidrop / uniform /
    scratch), widths_from, h, rate, params, flops, accuracy_before_finetune,
    accuracy_after_finetune, iterations: [...]}, ...]}. With `out_dir` it writes `sweep.json`,
    `sweep.png` (`plot_sweep`) and, with `save_models`, each run's fine-tuned checkpoint
    `<run_name>.pt`; given the `parent` checkpoint's path, its extra holds `pruning_record`.
    """
    for step in hs:
        check_method("minidrop", step, None)
    for r in rates:
        check_method("uniform", None, r)
    if from_scratch and iterations != 1:
        raise ValueError(f"from_scratch runs take iterations=1, got {iterations}")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    size = describe(model, _length(spec))
    result: dict[str, Any] = {
        "baseline": {
            "spec": spec.to_dict(),
            "params": int(size["params"]),
            "flops": int(size["flops"]),
            "accuracy": evaluate(model),
        },
        "iterations": iterations,
        "runs": [],
    }
    rules: list[tuple[Method, int | None, float | None]] = [("minidrop", k, None) for k in hs]
    rules += [("uniform", None, r) for r in rates]
    settings = [(m, k, r, False) for m, k, r in rules]
    if from_scratch:
        settings += [(m, k, r, True) for m, k, r in rules]
    for method, h, rate, scratch in settings:
        name = run_name(method, h, rate, scratch=scratch)
        if progress is not None:
            progress(name)
        res = prune(
            model,
            spec,
            method,
            h=h,
            rate=rate,
            iterations=iterations,
            finetune=finetune,
            evaluate=evaluate,
            from_scratch=scratch,
            seed=seed,
        )
        last = res.iterations[-1]
        run: dict[str, Any] = {
            "name": name,
            "method": res.method,
            "widths_from": method,
            "h": h,
            "rate": rate,
            "params": last.report.params_after,
            "flops": last.report.flops_after,
            "accuracy_before_finetune": last.accuracy_before,
            "accuracy_after_finetune": last.accuracy_after,
            "spec": res.spec.to_dict(),
            "iterations": [i.to_dict() for i in res.iterations],
            "checkpoint": None,
        }
        if out is not None and save_models:
            path = out / f"{name}.pt"
            extra: dict[str, Any] = {"prune": res.to_dict()}
            if parent is not None:
                extra["pruning"] = pruning_record(res, parent, fine_tuning=fine_tuning, data=data)
            save_checkpoint(path, res.model, res.spec, extra)
            run["checkpoint"] = path.name
        result["runs"].append(run)
    if out is not None:
        with open(out / "sweep.json", "w") as f:
            json.dump(result, f, indent=2)
        plot_sweep(result, out / "sweep.png")
    return result


def plot_sweep(result: Mapping[str, Any], path: str | Path) -> Path:
    """Accuracy after fine-tuning vs FLOPs and vs parameters, one series per method (Fig. 4).

    One row of panels per task; the unpruned baseline is a star, accuracy before fine-tuning
    (inherited weights) hollow markers. Axes are logarithmic in FLOPs / parameters.
    """
    from matplotlib.figure import Figure

    baseline = result["baseline"]
    tasks = list(baseline["accuracy"])
    fig = Figure(figsize=(10, 2.6 * max(1, len(tasks))), layout="constrained")
    axes = fig.subplots(max(1, len(tasks)), 2, squeeze=False)
    styles = {
        "minidrop": ("o-", "C0", "MiniDrop"),
        "uniform": ("s--", "C1", "pre-defined"),
        "scratch": ("^:", "C2", "from scratch"),
    }
    for row, task in enumerate(tasks):
        for col, size in enumerate(("flops", "params")):
            ax = axes[row][col]
            for method, (fmt, color, label) in styles.items():
                runs = sorted(
                    (r for r in result["runs"] if r["method"] == method), key=lambda r: r[size]
                )
                if not runs:
                    continue
                xs = [r[size] for r in runs]
                after = [_acc(r["accuracy_after_finetune"], task) for r in runs]
                before = [_acc(r["accuracy_before_finetune"], task) for r in runs]
                ax.plot(xs, after, fmt, color=color, label=f"{label} (fine-tuned)")
                if method != "scratch":  # a scratch run's "before" is its random start
                    ax.plot(
                        xs, before, fmt[0], color=color, mfc="none", alpha=0.5,
                        label=f"{label} (inherited, not fine-tuned)",
                    )  # fmt: skip
                for r, x, y in zip(runs, xs, after, strict=True):
                    tag = f"h={r['h']}" if r["h"] is not None else f"p={r['rate']:g}"
                    ax.annotate(tag, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
            ax.plot(baseline[size], baseline["accuracy"][task], "k*", ms=10, label="unpruned")
            ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("FLOPs per packet" if size == "flops" else "parameters")
            ax.set_ylabel(f"{task} accuracy")
            ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"pruning sweep ({result.get('iterations', 1)} iteration(s))")
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def _acc(accuracy: Mapping[str, float] | None, task: str) -> float:
    if accuracy is None or task not in accuracy:
        return math.nan
    return float(accuracy[task])

"""The fusion stage: the CNN's outputs, the packet's measured duration and its decoded PHY header
in, the application heads' probabilities out.

Why: the CNN sees 150 us of spectrum; what tells applications apart per packet is mostly the
PSDU length, which lies in the coded header bits and in how long the packet lasts (issue 12;
`train/baselines.py` measures it: a classifier on the window's visible quantities stays at the
baseline, one on the decoded fields does not). The assembler measures each packet's full
duration before truncating it to the window, and `edge_core.rx.headers` decodes the header; a
gradient-boosted tree ensemble per task (fitted by `edge-tc train fusion`, scikit-learn's
HistGradientBoostingClassifier) maps [CNN probabilities, duration, header fields] to the task's
classes.

The fitted trees are stored as plain arrays in the bundle (`fusion.npz`, loaded with
allow_pickle=False) and evaluated here in NumPy, so the daemon needs neither scikit-learn nor a
particular engine: every engine's probabilities go through the same trees. The evaluation is
tested to reproduce scikit-learn's `predict_proba` (tests/test_fusion.py).

Feature names: `cnn:<task>` (the CNN's class for that task), `cnn:<task>:<class>` (its
probability of that class), `duration_us` (the
packet's length in the stream, the detector's pre-trigger excluded) and the names of
`edge_core.rx.headers.HEADER_FIELDS` (NaN where not decoded; the trees send missing values the way
they learned to).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_core.errors import ModelError
from edge_core.rx.headers import HEADER_FIELDS, decode_headers
from edge_core.schema import TASK_BY_NAME

FUSION_FILE = "fusion.npz"
DURATION_FEATURE = "duration_us"
_ARRAYS = ("feature", "threshold", "left", "right", "is_leaf", "value", "missing_left", "klass")


def cnn_feature_names(tasks: Sequence[str]) -> list[str]:
    """`cnn:<task>:<class>` for every class of every task, in schema order."""
    return [f"cnn:{t}:{c}" for t in tasks for c in TASK_BY_NAME[t].classes]


def cnn_label_names(tasks: Sequence[str]) -> list[str]:
    """`cnn:<task>`: the CNN's class (index of the largest probability) for every task."""
    return [f"cnn:{t}" for t in tasks]


def feature_names(tasks: Sequence[str]) -> list[str]:
    """Every feature the fusion stage can use, given the CNN's tasks."""
    return [*cnn_label_names(tasks), *cnn_feature_names(tasks), DURATION_FEATURE, *HEADER_FIELDS]


def feature_matrix(
    probs: Mapping[str, np.ndarray],
    duration_us: np.ndarray,
    headers: np.ndarray,
    names: Sequence[str],
) -> np.ndarray:
    """(n, len(names)) float64 from the CNN's probabilities per task ((n, classes) each), the
    packets' durations (n,) and `decode_headers` rows (n, len(HEADER_FIELDS))."""
    n = len(duration_us)
    columns: dict[str, np.ndarray] = {DURATION_FEATURE: np.asarray(duration_us, np.float64)}
    for i, name in enumerate(HEADER_FIELDS):
        columns[name] = np.asarray(headers[:, i], np.float64)
    out = np.empty((n, len(names)), np.float64)
    for j, name in enumerate(names):
        if name.startswith("cnn:") and name.count(":") == 1:
            out[:, j] = probs[name[4:]].argmax(axis=1)
        elif name.startswith("cnn:"):
            _, task, cls = name.split(":", 2)
            out[:, j] = probs[task][:, TASK_BY_NAME[task].index(cls)]
        else:
            out[:, j] = columns[name]
    return out


@dataclass(frozen=True)
class TreeEnsemble:
    """One task's boosted trees as padded node arrays (trees x nodes); `klass[t]`: the class
    whose raw score tree t adds to; `baseline`: the raw score before any tree (classes,)."""

    task: str
    feature: np.ndarray  # (T, N) int64, feature index of a split node
    threshold: np.ndarray  # (T, N) float64, go left when x <= threshold
    left: np.ndarray  # (T, N) int64
    right: np.ndarray  # (T, N) int64
    is_leaf: np.ndarray  # (T, N) bool
    value: np.ndarray  # (T, N) float64, a leaf's raw score
    missing_left: np.ndarray  # (T, N) bool, where NaN goes
    klass: np.ndarray  # (T,) int64
    baseline: np.ndarray  # (K,) float64
    depth: int

    def __post_init__(self) -> None:
        # One flat node array over all trees, the trees grouped by class (tree i's nodes at
        # i * N ...), each leaf pointing to itself both ways: a walk is then `depth` rounds of 1-D
        # gathers with no per-tree loop, and a class's score one reduceat over its trees.
        order = np.argsort(self.klass, kind="stable")
        t, width = self.feature.shape
        base = (np.arange(t, dtype=np.int64) * width)[:, None]  # (T, 1)
        own = base + np.arange(width, dtype=np.int64)[None, :]
        leaf = self.is_leaf[order]
        flat = {
            "feature": self.feature[order].ravel(),
            "threshold": self.threshold[order].ravel(),
            "left": np.where(leaf, own, base + self.left[order]).ravel(),
            "right": np.where(leaf, own, base + self.right[order]).ravel(),
            "missing_left": self.missing_left[order].ravel(),
            "value": self.value[order].ravel(),
        }
        starts = np.searchsorted(self.klass[order], np.arange(len(self.baseline)))
        if len(np.unique(self.klass)) != len(self.baseline):
            raise ModelError(f"{self.task}: every class needs at least one tree")
        object.__setattr__(self, "_flat", flat)
        object.__setattr__(self, "_roots", base[:, 0])
        object.__setattr__(self, "_starts", starts)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """(n, K) raw scores for x (n, features): all trees walked together, one level a step."""
        f = self._flat  # type: ignore[attr-defined]
        n, width = x.shape
        node = np.repeat(self._roots[:, None], n, axis=1)  # type: ignore[attr-defined]
        offsets = (np.arange(n, dtype=np.int64) * width)[None, :]  # (1, n)
        xs = np.ascontiguousarray(x, dtype=np.float64).ravel()
        for _ in range(self.depth):
            v = xs[offsets + f["feature"][node]]  # (T, n)
            go_left = (v <= f["threshold"][node]) | (np.isnan(v) & f["missing_left"][node])
            node = np.where(go_left, f["left"][node], f["right"][node])
        scores = np.add.reduceat(f["value"][node], self._starts, axis=0)  # type: ignore[attr-defined]
        return self.baseline[None, :] + scores.T

    def proba(self, x: np.ndarray) -> np.ndarray:
        """(n, K) float32 class probabilities (softmax of the raw scores)."""
        raw = self.raw(x)
        raw -= raw.max(axis=1, keepdims=True)
        e = np.exp(raw)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class Forest:
    """Several tasks' ensembles walked as one, for few packets at a time (the daemon's batches
    of 1-8): what costs there is the number of NumPy calls, so every tree of every task moves
    one level per round of 7 calls (two ensembles walked apart take 12 each).

    Missing values without a per-node test: the rows are laid out twice, NaN as -inf and as
    it is, and a node that sends missing values left reads the first copy (-inf <= threshold),
    one that sends them right the second (NaN <= threshold is false, also for the +inf
    threshold of a split on missingness); other values read the same either way. Node k is
    stored at 2k, so that "2k + went left" indexes its children; both children of a leaf are
    the leaf. Trees are ordered by task, then class, each class's in its original order, so the
    sums are the same additions as `TreeEnsemble.raw`'s.
    """

    def __init__(self, ensembles: Sequence[TreeEnsemble], width: int) -> None:
        self.tasks = tuple(e.task for e in ensembles)
        self.width = width
        self.depth = max(e.depth for e in ensembles)
        self.baselines = [e.baseline for e in ensembles]
        split, threshold, child, value, sizes = [], [], [], [], []
        start = 0
        for e in ensembles:
            order = np.argsort(e.klass, kind="stable")
            t, n = e.feature.shape
            base = start + (np.arange(t, dtype=np.int64) * n)[:, None]  # (t, 1)
            own = base + np.arange(n, dtype=np.int64)[None, :]
            leaf = e.is_leaf[order]
            left = np.where(leaf, own, base + e.left[order])
            right = np.where(leaf, own, base + e.right[order])
            split.append(e.feature[order] + np.where(e.missing_left[order], 0, width))
            threshold.append(np.where(leaf, np.inf, e.threshold[order]))
            child.append(np.stack([2 * right, 2 * left], axis=-1))  # [2k + went left]
            value.append(e.value[order])
            sizes.append(np.bincount(e.klass, minlength=len(e.baseline)))
            start += t * n
        doubled = np.zeros(2 * start, np.int64)
        doubled[0::2] = np.concatenate([a.ravel() for a in split])
        self._split = doubled  # (2 N,) column of x2 a node reads, at its even slot
        self._threshold = np.repeat(np.concatenate([a.ravel() for a in threshold]), 2)
        self._child = np.concatenate([a.reshape(-1) for a in child])  # (2 N,)
        self._value = np.repeat(np.concatenate([a.ravel() for a in value]), 2)
        roots = [np.arange(e.feature.shape[0]) * e.feature.shape[1] for e in ensembles]
        offsets = np.cumsum([0] + [e.feature.size for e in ensembles[:-1]])
        self._roots = 2 * np.concatenate([r + o for r, o in zip(roots, offsets, strict=True)])
        counts = np.concatenate(sizes)  # trees per (task, class), in walk order
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._classes = [len(b) for b in self.baselines]

    def proba(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """task -> (n, K) float32 class probabilities for x (n, width)."""
        n = x.shape[0]
        x = np.asarray(x, np.float64)
        x2 = np.concatenate([np.where(np.isnan(x), -np.inf, x), x], axis=1).ravel()  # (n 2 W,)
        rows = (np.arange(n, dtype=np.int64) * (2 * self.width))[None, :]  # (1, n)
        node = np.repeat(self._roots[:, None], n, axis=1)  # (T, n), doubled indices
        for _ in range(self.depth):
            went_left = x2[self._split[node] + rows] <= self._threshold[node]
            node = self._child[node + went_left]
        scores = np.add.reduceat(self._value[node], self._starts, axis=0)  # (classes, n)
        out = {}
        first = 0
        for task, baseline, k in zip(self.tasks, self.baselines, self._classes, strict=True):
            raw = baseline[None, :] + scores[first : first + k].T
            first += k
            raw -= raw.max(axis=1, keepdims=True)
            e = np.exp(raw)
            out[task] = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        return out


@dataclass(frozen=True)
class Fusion:
    """The fusion stage of a bundle: per fused task its trees, over `features`."""

    features: tuple[str, ...]
    ensembles: dict[str, TreeEnsemble]
    pre_trigger_samples: int
    sample_rate_hz: float

    def __post_init__(self) -> None:
        trees = list(self.ensembles.values())
        object.__setattr__(self, "_forest", Forest(trees, len(self.features)) if trees else None)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.ensembles)

    @property
    def forest(self) -> Forest | None:
        """Every task's trees as one `Forest` (None without tasks)."""
        forest: Forest | None = self._forest  # type: ignore[attr-defined]
        return forest

    def needs_headers(self) -> bool:
        return any(f in HEADER_FIELDS for f in self.features)

    def apply(
        self,
        probs: Mapping[str, np.ndarray],
        iq: np.ndarray,
        num_samples: np.ndarray,
        headers: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """`probs` with the fused tasks replaced. iq: the batch as the model took it, (n, 2, L)
        float32 (row 0 I, row 1 Q) or (n, L) complex; num_samples: each packet's length in
        the stream as the assembler cut it (its pre-trigger samples included); headers: the
        batch's `decode_headers` rows (n, 7) when already decoded elsewhere (the daemon's ingest
        process), else they are decoded here from iq."""
        duration_us = (np.asarray(num_samples, np.float64) - self.pre_trigger_samples) * (
            1e6 / self.sample_rate_hz
        )

        def headers_of(rows: np.ndarray) -> np.ndarray:
            if headers is not None:
                return np.asarray(headers, np.float32)[rows]
            part = iq[rows]
            if part.ndim == 3:
                part = (part[:, 0] + 1j * part[:, 1]).astype(np.complex64)
            return decode_headers(part, self.sample_rate_hz)

        return self.fuse(probs, duration_us, headers_of)

    def fuse(
        self,
        probs: Mapping[str, np.ndarray],
        duration_us: np.ndarray,
        headers_of: Callable[[np.ndarray], np.ndarray],
    ) -> dict[str, np.ndarray]:
        """The fused tasks for the packets the CNN calls data frames; the others keep the CNN's
        answer (app "none" is by definition a management or control frame, paper 1 Table 5, and
        the CNN's frame class is right on 0.985 of packets): half the stage's work on a busy
        channel's ACKs and beacons saved. `headers_of(rows)`: header rows of those packets."""
        rows = data_rows(probs)
        out = dict(probs)
        forest = self.forest
        if forest is None or not rows.any():
            return out
        n = int(rows.sum())
        headers = (
            headers_of(rows)
            if self.needs_headers()
            else np.full((n, len(HEADER_FIELDS)), np.nan, np.float32)
        )
        part = {t: p[rows] for t, p in probs.items()}
        x = feature_matrix(part, np.asarray(duration_us)[rows], headers, self.features)
        for task, p in forest.proba(x).items():
            fused = np.array(probs[task], dtype=np.float32, copy=True)
            fused[rows] = p
            out[task] = fused
        return out


def data_rows(probs: Mapping[str, np.ndarray]) -> np.ndarray:
    """(n,) bool: the packets whose CNN frame class is "data" (all of them without a frame head)."""
    n = len(next(iter(probs.values())))
    if "frame" not in probs:
        return np.ones(n, bool)
    return np.asarray(probs["frame"]).argmax(axis=1) == TASK_BY_NAME["frame"].index("data")


def save_fusion(path: str | Path, fusion: Fusion) -> Path:
    """Write `fusion` as an .npz of plain arrays (no pickles)."""
    arrays: dict[str, np.ndarray] = {
        "features": np.array(fusion.features, dtype=np.str_),
        "tasks": np.array(fusion.tasks, dtype=np.str_),
        "pre_trigger_samples": np.array(fusion.pre_trigger_samples, np.int64),
        "sample_rate_hz": np.array(fusion.sample_rate_hz, np.float64),
    }
    for task, e in fusion.ensembles.items():
        for name in _ARRAYS:
            arrays[f"{task}/{name}"] = getattr(e, name)
        arrays[f"{task}/baseline"] = e.baseline
        arrays[f"{task}/depth"] = np.array(e.depth, np.int64)
    path = Path(path)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
    return path


def _get(z: Any, key: str, where: str) -> np.ndarray:
    if key not in z.files:
        raise ModelError(f"{where}: no array {key!r}")
    return np.asarray(z[key])


def load_fusion(path: str | Path, cnn_tasks: Sequence[str]) -> Fusion:
    """Read and check a fusion file against the CNN's tasks; ModelError names what is wrong."""
    where = str(path)
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ModelError(f"{where}: missing") from None
    except (ValueError, OSError, EOFError) as exc:
        raise ModelError(f"{where}: not a readable .npz of plain arrays: {exc}") from exc
    with z:
        features = tuple(str(s) for s in _get(z, "features", where).tolist())
        known = set(feature_names(cnn_tasks))
        unknown = [f for f in features if f not in known]
        if unknown:
            raise ModelError(
                f"{where}: features {unknown} are not inputs this bundle has "
                f"(CNN tasks {list(cnn_tasks)}, duration, header fields)"
            )
        tasks = tuple(str(s) for s in _get(z, "tasks", where).tolist())
        ensembles = {}
        for task in tasks:
            if task not in TASK_BY_NAME:
                raise ModelError(f"{where}: unknown task {task!r}")
            a = {name: _get(z, f"{task}/{name}", where) for name in _ARRAYS}
            baseline = _get(z, f"{task}/baseline", where).astype(np.float64)
            k = TASK_BY_NAME[task].num_classes
            shape = a["feature"].shape
            if baseline.shape != (k,) or len(shape) != 2 or shape[0] == 0:
                raise ModelError(f"{where}: {task}: want {k} baseline scores and (trees, nodes)")
            for name in _ARRAYS[:-1]:
                if a[name].shape != shape:
                    raise ModelError(f"{where}: {task}/{name}: shape {a[name].shape}, want {shape}")
            if a["klass"].shape != (shape[0],) or not np.all((a["klass"] >= 0) & (a["klass"] < k)):
                raise ModelError(f"{where}: {task}/klass: want one class in 0..{k - 1} per tree")
            split = ~a["is_leaf"].astype(bool)
            bad = (
                (a["feature"][split] < 0).any()
                or (a["feature"][split] >= len(features)).any()
                or (a["left"] < 0).any()
                or (a["left"] >= shape[1]).any()
                or (a["right"] < 0).any()
                or (a["right"] >= shape[1]).any()
                or not np.isfinite(a["value"]).all()
            )
            if bad:
                raise ModelError(f"{where}: {task}: node indices or values out of range")
            depth = int(_get(z, f"{task}/depth", where))
            if not 0 <= depth <= shape[1]:
                raise ModelError(f"{where}: {task}/depth: {depth} out of range")
            ensembles[task] = TreeEnsemble(
                task,
                a["feature"].astype(np.int64).clip(0, max(len(features) - 1, 0)),
                a["threshold"].astype(np.float64),
                a["left"].astype(np.int64),
                a["right"].astype(np.int64),
                a["is_leaf"].astype(bool),
                a["value"].astype(np.float64),
                a["missing_left"].astype(bool),
                a["klass"].astype(np.int64),
                baseline,
                depth,
            )
        return Fusion(
            features,
            ensembles,
            int(_get(z, "pre_trigger_samples", where)),
            float(_get(z, "sample_rate_hz", where)),
        )


def from_sklearn(task: str, model: Any) -> TreeEnsemble:
    """The trees of a fitted scikit-learn HistGradientBoostingClassifier (numeric features only)
    as a TreeEnsemble (multi-class: one tree per class and iteration)."""
    predictors = model._predictors  # [iteration][class] TreePredictor
    trees = [p for it in predictors for p in it]
    klass = np.array([c for it in predictors for c in range(len(it))], np.int64)
    if any(p.nodes["is_categorical"].any() for p in trees):
        raise ValueError("categorical splits are not supported; encode features as numbers")
    width = max(len(p.nodes) for p in trees)
    t = len(trees)
    feature = np.zeros((t, width), np.int64)
    threshold = np.zeros((t, width), np.float64)
    left = np.zeros((t, width), np.int64)
    right = np.zeros((t, width), np.int64)
    is_leaf = np.ones((t, width), bool)
    value = np.zeros((t, width), np.float64)
    missing_left = np.zeros((t, width), bool)
    depth = 0
    for i, p in enumerate(trees):
        nd = p.nodes
        m = len(nd)
        feature[i, :m] = nd["feature_idx"]
        threshold[i, :m] = nd["num_threshold"]
        left[i, :m] = nd["left"]
        right[i, :m] = nd["right"]
        is_leaf[i, :m] = nd["is_leaf"].astype(bool)
        value[i, :m] = nd["value"]
        missing_left[i, :m] = nd["missing_go_to_left"].astype(bool)
        depth = max(depth, int(nd["depth"].max()))
    baseline = np.asarray(model._baseline_prediction, np.float64).reshape(-1)
    if len(baseline) != len(model.classes_) or not np.array_equal(
        model.classes_, np.arange(len(baseline))
    ):
        raise ValueError(
            f"{task}: the model must be fitted on every class 0..K-1, has {model.classes_}"
        )
    return TreeEnsemble(
        task, feature, threshold, left, right, is_leaf, value, missing_left, klass, baseline, depth
    )


__all__ = [
    "DURATION_FEATURE",
    "FUSION_FILE",
    "Forest",
    "Fusion",
    "TreeEnsemble",
    "cnn_feature_names",
    "cnn_label_names",
    "data_rows",
    "feature_matrix",
    "feature_names",
    "from_sklearn",
    "load_fusion",
    "save_fusion",
]

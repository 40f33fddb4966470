"""Trivial baselines and the per-packet information bound that every accuracy stands beside.

For a labels table (and our dataset's `packets.csv`), per task:

* `majority`: the accuracy of always answering the test set's most common class, i.e. its
  largest class prior (no constant answer does better on that set).
* `no_app_uniform` (app and app_type only): a detector that recognises every non-data frame as
  "none" (management and control frames never carry an application), then a uniform guess
  among the task's other classes for every data frame. Computed exactly from the test set's
  label priors: P(frame != data) + P(frame == data, label != none) / K, K = 6 apps or 2 app
  types. Data frames labelled "none" are always wrong under it.
* `bound_phy`: the test accuracy of a gradient-boosting classifier (scikit-learn's
  `HistGradientBoostingClassifier`) on what a receiver decodes per packet without a CNN: PHY
  format, rate/MCS, PSDU length, preamble, short GI, aggregation bit, duration, receive power
  and CFO estimate (`PHY_FEATURES`, those `packets.csv` has).
* `bound_window`: the same classifier on what the model's 3000-sample window shows WITHOUT
  decoding the bits of the L-SIG / HT-SIG / PLCP header (`WINDOW_FEATURES`): PHY format, rate
  (the constellation), preamble, guard interval, receive power, CFO, and the packet's duration
  only as far as the window reaches (150 us at 20 Msps). The PSDU length, the aggregation bit
  and any duration past the window are there only as coded SIG bits, which a CNN would have to
  learn to demodulate and Viterbi-decode; the gap between this bound and `bound_phy` is what
  the length fields carry.
* `bound_phy_mac`: the same with the clear MAC header added (`MAC_FEATURES`: frame subtype,
  To/From DS as `uplink`, MPDUs in the A-MPDU, QoS TID), when `packets.csv` has any of them.
* `bound_phy_mac_flow` (only when asked, `flow_window` > 0): the same with what a receiver
  knows of the packet's flow (`FLOW_FEATURES`): over the last `flow_window` data frames of the
  same station (its MAC address is in the clear header; in our datasets one station per capture
  session), itself included and none after it, the mean and largest PSDU length, the mean
  duration, A-MPDU depth and rate, and the shares of aggregated and uplink frames; and, where
  `packets.csv` has them (`FLOW_RATE_FEATURES`), the station's data bytes, frames and downlink
  bytes in the second ending with the packet, counted over all its frames. It measures
  what classifying flows instead of single packets could add (issue 12). The datasets keep a
  subsample of each session's frames in time order, so a window here spans more of the session
  than `flow_window` consecutive frames of a live stream would.

The bound classifier is fitted on the training part and scored on the test part of the same
split, never on a packet it saw. No session, station, SNR truth or label is a feature, except
that the PHY format (which a receiver's format detection decodes: DSSS, OFDM or HT) is the
`phy` label when `packets.csv` has no `phy_format` column; it is then left out of the `phy`
task's own bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_core.errors import IQFormatError
from edge_core.schema import FRAME, INPUT_LENGTH, SAMPLE_RATE_HZ, TASK_BY_NAME, TASK_NAMES, TASKS
from train.data import (
    PACKETS_CSV,
    balanced_subset,
    packets_csv_header,
    read_labels_csv,
    read_packets_csv,
    read_sessions,
    require_sessions,
    session_split,
    tc_spectrum_split,
)

PHY_FEATURES: tuple[str, ...] = (
    "phy_format",
    "rate",
    "length_bytes",
    "preamble",
    "short_gi",
    "aggregated",
    "duration_us",
    "rx_power_db",
    "cfo_hz_est",
)
"""Per-packet fields a receiver decodes from the PHY header and the signal (L-SIG / HT-SIG /
PLCP header, energy and CFO estimation), as `packets.csv` names them."""

WINDOW_US = INPUT_LENGTH / SAMPLE_RATE_HZ * 1e6
"""The model's window in microseconds (3000 samples at 20 Msps: 150 us)."""

WINDOW_FEATURES: tuple[str, ...] = (
    "phy_format",
    "rate",
    "preamble",
    "short_gi",
    "duration_in_window_us",
    "rx_power_db",
    "cfo_hz_est",
)
"""What the window shows without decoding header bits (`duration_in_window_us` is
min(duration_us, WINDOW_US), derived from `duration_us`)."""

MAC_FEATURES: tuple[str, ...] = ("subtype", "uplink", "n_mpdu", "tid")
"""Fields of the MAC header that WPA2 leaves in clear: Frame Control type/subtype, To/From DS
(`uplink`), the A-MPDU's MPDU count (its delimiters) and the QoS TID."""

FLOW_FEATURES: tuple[str, ...] = (
    "flow_frames",
    "flow_length_mean",
    "flow_length_max",
    "flow_duration_mean",
    "flow_mpdu_mean",
    "flow_rate_mean",
    "flow_aggregated_share",
    "flow_uplink_share",
)
"""Per data frame, over its flow's window (`add_flow_features`); NaN for other frames."""
FLOW_RATE_FEATURES: tuple[str, ...] = ("flow_bytes_1s", "flow_frames_1s", "flow_down_bytes_1s")
"""The station's data bytes, data frames and downlink bytes in the second ending with the
frame, counted over every frame of its session (`edge-tc synth dataset` writes them; they
need packet times, which a dataset's kept frames alone would give wrongly)."""
DATA_SUBTYPES: frozenset[str] = frozenset({"data", "qos_data"})
"""Frame Control subtypes of data frames, as `packets.csv` names them."""

CATEGORICAL: frozenset[str] = frozenset(
    {"phy_format", "preamble", "short_gi", "aggregated", "subtype", "uplink", "tid"}
)
NEVER_FEATURES: frozenset[str] = frozenset({"session", "station", "snr_db", *TASK_NAMES})
"""Truths a receiver does not decode from one packet: never given to the bound classifier."""

NO_APP_TASKS: dict[str, int] = {"app": 6, "app_type": 2}
"""Tasks with a "none" class and how many other classes the uniform guess spreads over."""

_DATA = FRAME.index("data")


# --- trivial baselines (exact, from label priors) -----------------------------------------------


def majority_accuracy(y: np.ndarray, num_classes: int) -> tuple[float, int]:
    """(accuracy, class) of always answering the most common class of `y`."""
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        raise ValueError("no packets: a baseline needs at least one")
    counts = np.bincount(y, minlength=num_classes)
    best = int(counts.argmax())
    return float(counts[best] / len(y)), best


def no_app_uniform_accuracy(labels: np.ndarray, task: str) -> float:
    """Exact accuracy of "non-data frame -> none, else a uniform guess among the other classes"
    on `labels` (N, 4) schema order, for `task` app or app_type."""
    if task not in NO_APP_TASKS:
        raise ValueError(f"no-app baseline is for {list(NO_APP_TASKS)}, not {task!r}")
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("no packets: a baseline needs at least one")
    spec = TASK_BY_NAME[task]
    none = spec.classes.index("none")
    y = labels[:, TASK_NAMES.index(task)]
    data = labels[:, TASK_NAMES.index("frame")] == _DATA
    n = len(labels)
    not_data_none = np.count_nonzero(~data & (y == none))  # the detector's right answers
    data_app = np.count_nonzero(data & (y != none))  # guessed right with probability 1/K
    return float(not_data_none / n + data_app / (n * NO_APP_TASKS[task]))


def trivial_baselines(labels: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per task: majority accuracy and class, and no_app_uniform (None where it does not apply)."""
    labels = np.asarray(labels)
    out: dict[str, dict[str, Any]] = {}
    for t, spec in enumerate(TASKS):
        acc, cls = majority_accuracy(labels[:, t], spec.num_classes)
        out[spec.name] = {
            "majority": acc,
            "majority_class": spec.classes[cls],
            "no_app_uniform": (
                no_app_uniform_accuracy(labels, spec.name) if spec.name in NO_APP_TASKS else None
            ),
        }
    return out


# --- decoded per-packet features -----------------------------------------------------------------


@dataclass(frozen=True)
class DecodedFeatures:
    """The decoded fields of every packet, encoded for the bound classifier.

    `matrix` (N, F) float64: numbers as they are (NaN where empty), categorical fields as codes
    0..k-1 in sorted order of their values. `missing`: wanted fields `packets.csv` lacks.
    """

    names: tuple[str, ...]
    matrix: np.ndarray
    categorical: tuple[bool, ...]
    missing: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    def columns(self, names: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        at = [self.names.index(n) for n in names]
        return self.matrix[:, at], [self.categorical[i] for i in at]


def _encode(name: str, raw: Sequence[str], where: str) -> tuple[np.ndarray, bool]:
    if name in CATEGORICAL:
        values = sorted(set(raw))
        code = {v: i for i, v in enumerate(values)}
        return np.array([code[v] for v in raw], dtype=np.float64), True
    return _numbers(name, raw, where), False


def _numbers(name: str, raw: Sequence[str], where: str) -> np.ndarray:
    """Column `name` of `where` as float64, NaN where empty; IQFormatError naming the row."""
    out = np.empty(len(raw), dtype=np.float64)
    for i, v in enumerate(raw):
        try:
            out[i] = float(v) if v != "" else np.nan
        except ValueError:
            bad = f"{where}: column {name!r} row {i + 2}: not a number: {v!r}"
            raise IQFormatError(bad) from None
    return out


def decoded_features(directory: str | Path, labels: np.ndarray | None = None) -> DecodedFeatures:
    """`PHY_FEATURES` and `MAC_FEATURES` of a dataset directory, those its `packets.csv` has."""
    directory = Path(directory)
    path = directory / PACKETS_CSV
    header = packets_csv_header(directory)
    if not header:
        raise IQFormatError(
            f"{path} not found: the information bound needs the per-packet details that "
            "`edge-tc synth dataset` writes"
        )
    if labels is None:
        labels, _ = read_labels_csv(directory / "labels.csv")
    wanted = [c for c in (*PHY_FEATURES, *MAC_FEATURES) if c in header and c not in NEVER_FEATURES]
    columns = read_packets_csv(path, wanted)
    names: list[str] = []
    parts: list[np.ndarray] = []
    categorical: list[bool] = []
    notes: list[str] = []
    if "phy_format" not in header:
        # DSSS / OFDM / HT: what format detection decodes; here taken from the phy label
        names.append("phy_format")
        parts.append(np.asarray(labels[:, TASK_NAMES.index("phy")], dtype=np.float64))
        categorical.append(True)
        notes.append("phy_format is the phy label (packets.csv has no phy_format column)")
    for name in wanted:
        if len(columns[name]) != len(labels):
            raise IQFormatError(f"{path}: {len(columns[name])} rows, labels.csv has {len(labels)}")
        values, is_cat = _encode(name, columns[name], str(path))
        names.append(name)
        parts.append(values)
        categorical.append(is_cat)
    if "duration_us" in names:  # the part of the packet the model's window holds
        names.append("duration_in_window_us")
        parts.append(np.minimum(parts[names.index("duration_us")], WINDOW_US))
        categorical.append(False)
    missing = tuple(c for c in (*PHY_FEATURES, *MAC_FEATURES) if c not in names)
    matrix = np.stack(parts, axis=1) if parts else np.empty((len(labels), 0))  # (N, F)
    return DecodedFeatures(tuple(names), matrix, tuple(categorical), missing, tuple(notes))


def bound_feature_sets(features: DecodedFeatures, task: str) -> dict[str, list[str]]:
    """ "phy" and (when any MAC field exists) "phy_mac": the feature names each bound uses for
    `task`. A phy_format taken from the phy label is left out of the phy task's bounds."""
    derived = any(n.startswith("phy_format is the phy label") for n in features.notes)
    phy = [n for n in PHY_FEATURES if n in features.names]
    if task == "phy" and derived:
        phy.remove("phy_format")
    sets = {"phy": phy}
    window = [n for n in WINDOW_FEATURES if n in features.names]
    if task == "phy" and derived and "phy_format" in window:
        window.remove("phy_format")
    if "duration_in_window_us" in window:
        sets["window"] = window
    mac = [n for n in MAC_FEATURES if n in features.names]
    if mac:
        sets["phy_mac"] = phy + mac
    flow = [n for n in (*FLOW_FEATURES, *FLOW_RATE_FEATURES) if n in features.names]
    if flow:
        sets["phy_mac_flow"] = phy + mac + flow
    return sets


def add_flow_features(
    features: DecodedFeatures, directory: str | Path, window: int
) -> DecodedFeatures:
    """`features` with `FLOW_FEATURES` added: for each data frame, statistics of the last
    `window` data frames of its station up to and including it (rows in time order within a
    session, as `edge-tc synth dataset` writes them); NaN for management and control frames."""
    if window < 1:
        raise ValueError(f"flow window must be >= 1 data frames, got {window}")
    path = Path(directory) / PACKETS_CSV
    rates = [c for c in FLOW_RATE_FEATURES if c in packets_csv_header(Path(directory))]
    columns = read_packets_csv(path, ["subtype", "session", "aggregated", "uplink", *rates])
    n = len(features.matrix)
    if len(columns["subtype"]) != n:
        raise IQFormatError(f"{path}: {len(columns['subtype'])} rows, want {n}")
    data = np.flatnonzero(np.isin(np.asarray(columns["subtype"]), sorted(DATA_SUBTYPES)))
    session = np.asarray(columns["session"], dtype=np.int64)[data]  # (D,)
    # position of each data frame among its station's, in row order
    new_group = np.r_[True, session[1:] != session[:-1]]
    starts = np.flatnonzero(new_group)
    position = np.arange(len(data)) - np.repeat(starts, np.diff(np.r_[starts, len(data)]))

    def column(name: str) -> np.ndarray:
        if name in ("aggregated", "uplink"):  # 0/1 as written (the matrix has category codes)
            return _numbers(name, columns[name], str(path))[data]
        if name not in features.names:
            return np.full(len(data), np.nan)
        return features.matrix[data, features.names.index(name)]

    values = {
        "length": column("length_bytes"), "duration": column("duration_us"),
        "mpdu": column("n_mpdu"), "rate": column("rate"),
        "aggregated": column("aggregated"), "uplink": column("uplink"),
    }  # fmt: skip
    sums = {k: np.zeros(len(data)) for k in values}
    known = {k: np.zeros(len(data)) for k in values}  # values present (a field may be empty)
    counts = np.zeros(len(data))
    longest = np.full(len(data), np.nan)
    for back in range(min(window, len(data))):
        at = np.flatnonzero(position >= back)  # a data frame of the station `back` before
        counts[at] += 1
        for k, v in values.items():
            earlier = v[at - back]
            sums[k][at] += np.nan_to_num(earlier)
            known[k][at] += ~np.isnan(earlier)
        longest[at] = np.fmax(longest[at], values["length"][at - back])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = {k: np.where(known[k] > 0, sums[k] / known[k], np.nan) for k in values}
    derived = {
        "flow_frames": counts,
        "flow_length_mean": mean["length"],
        "flow_length_max": longest,
        "flow_duration_mean": mean["duration"],
        "flow_mpdu_mean": mean["mpdu"],
        "flow_rate_mean": mean["rate"],
        "flow_aggregated_share": mean["aggregated"],
        "flow_uplink_share": mean["uplink"],
    }
    extra = np.full((n, len(FLOW_FEATURES)), np.nan)
    for j, name in enumerate(FLOW_FEATURES):
        extra[data, j] = derived[name]
    counted = [_numbers(c, columns[c], str(path))[:, None] for c in rates]  # (N, 1) each
    extra = np.concatenate([extra, *counted], axis=1)
    names = [*FLOW_FEATURES, *rates]
    return DecodedFeatures(
        (*features.names, *names),
        np.concatenate([features.matrix, extra], axis=1),
        (*features.categorical, *([False] * len(names))),
        features.missing,
        (*features.notes, f"flow window: the last {window} data frames of the station"),
    )


# --- the information bound ----------------------------------------------------------------------


def _classifier(categorical: list[bool], seed: int) -> Any:
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError as exc:
        from train import TRAIN_EXTRA_MISSING

        raise ImportError(f"{TRAIN_EXTRA_MISSING} (scikit-learn: {exc})") from exc
    return HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.1,
        max_leaf_nodes=31,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=10,
        categorical_features=np.asarray(categorical, dtype=bool) if any(categorical) else None,
        random_state=seed,
    )


def app_balancing_weights(labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Sample weights giving every app class of `indices` the same total weight."""
    app = np.asarray(labels)[indices, TASK_NAMES.index("app")]
    counts = np.bincount(app)
    return (len(app) / (np.count_nonzero(counts) * counts[app])).astype(np.float64)


def fit_predict(
    x: np.ndarray,
    y: np.ndarray,
    categorical: list[bool],
    train: np.ndarray,
    predict: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    seed: int = 0,
    threads: int | None = 1,
) -> np.ndarray:
    """Fit gradient boosting on x[train] -> y[train], return its classes for x[predict]
    (`threads`: OpenMP threads, None for all cores)."""
    classes = np.unique(y[train])
    if len(classes) == 1:  # one class to learn: the classifier is that constant
        return np.full(len(predict), classes[0], dtype=np.int64)
    if x.shape[1] == 0:
        raise ValueError("no decoded features to fit the bound on")
    model = _classifier(categorical, seed)
    from threadpoolctl import threadpool_limits

    # OpenMP on a busy machine: one thread is 10-30x faster than spinning on all cores
    with threadpool_limits(limits=threads):
        model.fit(x[train], y[train], sample_weight=weights)
        return np.asarray(model.predict(x[predict]), dtype=np.int64)


def information_bounds(
    features: DecodedFeatures,
    labels: np.ndarray,
    train: np.ndarray,
    tests: Mapping[str, tuple[np.ndarray, bool]],
    *,
    tasks: Sequence[str] = TASK_NAMES,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, float]]]:
    """test name -> task -> {"bound_phy": acc, "bound_phy_mac": acc} (the latter when MAC
    fields exist). `tests`: name -> (indices, balanced); a balanced test is scored by a model
    fitted with app-balancing weights (its priors), a natural one by an unweighted model."""
    labels = np.asarray(labels)
    out: dict[str, dict[str, dict[str, float]]] = {name: {} for name in tests}
    weightings = sorted({balanced for _, balanced in tests.values()})
    for task in tasks:
        y = labels[:, TASK_NAMES.index(task)]
        for set_name, names in bound_feature_sets(features, task).items():
            x, categorical = features.columns(names)
            for balanced in weightings:
                wanted = [(n, idx) for n, (idx, b) in tests.items() if b == balanced and len(idx)]
                if not wanted:
                    continue
                every = np.concatenate([idx for _, idx in wanted])
                weights = app_balancing_weights(labels, train) if balanced else None
                pred = fit_predict(x, y, categorical, train, every, weights=weights, seed=seed)
                start = 0
                for name, idx in wanted:
                    p = pred[start : start + len(idx)]
                    start += len(idx)
                    out[name].setdefault(task, {})[f"bound_{set_name}"] = float(
                        np.mean(p == y[idx])
                    )
    return out


def cross_fitted_bounds(
    features: DecodedFeatures,
    labels: np.ndarray,
    indices: np.ndarray,
    groups: np.ndarray | None,
    *,
    balanced: bool,
    tasks: Sequence[str] = TASK_NAMES,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """The bound on `indices` of a dataset that has no training part of its own (a fresh test
    dataset): two folds of whole `groups` (sessions; packets when None); each fold's packets are
    predicted by a model fitted on every packet of the other fold."""
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng(seed)
    if groups is None:
        fold = rng.permutation(n) % 2  # (N,)
    else:
        ids = np.unique(groups)
        fold_of = dict(zip(ids.tolist(), (rng.permutation(len(ids)) % 2).tolist(), strict=True))
        fold = np.array([fold_of[g] for g in groups.tolist()], dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    hits: dict[str, dict[str, int]] = {}
    for k in (0, 1):
        train = np.flatnonzero(fold != k)
        test = indices[fold[indices] == k]
        if len(train) == 0 or len(test) == 0:
            continue
        part = information_bounds(
            features, labels, train, {"t": (test, balanced)}, tasks=tasks, seed=seed
        )["t"]
        for task, bounds in part.items():
            for key, acc in bounds.items():
                hits.setdefault(task, {}).setdefault(key, 0)
                hits[task][key] += round(acc * len(test))
    return {t: {k: v / len(indices) for k, v in b.items()} for t, b in hits.items()}


# --- the whole table for a dataset directory -----------------------------------------------------


def baseline_split(
    labels: np.ndarray, sessions: np.ndarray | None, by: str, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, natural test, balanced test) indices: 80/10/10 by session or packet (the val
    part is left unused), the balanced test the app-balanced subset of the natural one."""
    if by == "session":
        if sessions is None:
            raise ValueError("cannot split by session: the dataset has no session column")
        parts = session_split(sessions, labels, val=0.1, test=0.1, seed=seed)
    elif by == "random":
        parts = tc_spectrum_split(len(labels), seed=seed)
    else:
        raise ValueError(f"split by must be session or random, got {by!r}")
    return parts.train, parts.test, balanced_subset(labels, parts.test, seed=seed)


def dataset_baselines(
    directory: str | Path,
    *,
    by: str = "session",
    seed: int = 42,
    bound: bool = True,
    flow_window: int = 0,
) -> dict[str, Any]:
    """Majority, no-app + uniform and the information bounds of a dataset directory, on the
    natural-mix and the class-balanced (app) test sets of one split (`baseline_split`);
    `flow_window` > 0 adds the bound with the flow's last data frames (`add_flow_features`)."""
    directory = Path(directory)
    if not (directory / "labels.csv").is_file():
        raise FileNotFoundError(f"{directory}/labels.csv not found: not a dataset directory")
    labels, _ = read_labels_csv(directory / "labels.csv")
    sessions = (
        require_sessions(directory, len(labels)) if by == "session" else read_sessions(directory)
    )
    train, natural, balanced = baseline_split(labels, sessions, by, seed)
    if len(natural) == 0:
        raise ValueError(f"{directory}: the {by} split leaves no test packets")
    result: dict[str, Any] = {
        "data": str(directory),
        "split_by": by,
        "seed": seed,
        "packets": {"train": len(train), "natural": len(natural), "balanced": len(balanced)},
    }
    if sessions is not None and by == "session":
        result["sessions"] = {
            "train": len(np.unique(sessions[train])),
            "test": len(np.unique(sessions[natural])),
            "shared": len(np.intersect1d(sessions[train], sessions[natural])),
        }
    tables = {
        "natural": trivial_baselines(labels[natural]),
        "balanced": trivial_baselines(labels[balanced]),
    }
    if bound:
        features = decoded_features(directory, labels)
        if flow_window:
            features = add_flow_features(features, directory, flow_window)
        bounds = information_bounds(
            features,
            labels,
            train,
            {"natural": (natural, False), "balanced": (balanced, True)},
            seed=seed,
        )
        for test_set, per_task in bounds.items():
            for task, values in per_task.items():
                tables[test_set][task].update(values)
        sets = bound_feature_sets(features, "app")
        result["features"] = {
            "phy": sets["phy"],
            "phy_mac": sets.get("phy_mac"),
            "window": sets.get("window"),
            "phy_mac_flow": sets.get("phy_mac_flow"),
            "flow_window": flow_window or None,
            "missing": list(features.missing),
            "notes": list(features.notes),
        }
    result["tasks"] = {
        task: {test_set: tables[test_set][task] for test_set in ("natural", "balanced")}
        for task in TASK_NAMES
    }
    return result


BASELINE_KEYS: tuple[tuple[str, str], ...] = (
    ("majority", "majority"),
    ("no_app_uniform", "no-app+uniform"),
    ("bound_window", "bound window"),
    ("bound_phy", "bound PHY"),
    ("bound_phy_mac", "bound PHY+MAC"),
    ("bound_phy_mac_flow", "bound PHY+MAC+flow"),
)
"""Baseline keys in display order, with their column titles."""


def format_value(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def baselines_text(result: Mapping[str, Any]) -> str:
    """`dataset_baselines`'s result as a plain-text table per task."""
    p = result["packets"]
    lines = [
        f"{result['data']}: split by {result['split_by']} (seed {result['seed']}), "
        f"{p['train']} training packets, test {p['natural']} natural / {p['balanced']} balanced"
    ]
    if "sessions" in result:
        s = result["sessions"]
        lines.append(f"sessions: {s['train']} train, {s['test']} test, {s['shared']} shared")
    if "features" in result:
        f = result["features"]
        mac = [n for n in f["phy_mac"] or [] if n not in f["phy"]]
        lines.append(f"bound features: {', '.join(f['phy'])}; + MAC: {', '.join(mac) or '-'}")
        if f["missing"]:
            lines.append(f"not in packets.csv: {', '.join(f['missing'])}")
        lines += [f"note: {n}" for n in f["notes"]]
    header = f"{'task':>9} {'test set':>9}" + "".join(f"{t:>16}" for _, t in BASELINE_KEYS)
    lines.append(header)
    for task, sets in result["tasks"].items():
        for test_set, values in sets.items():
            cells = "".join(f"{format_value(values.get(k)):>16}" for k, _ in BASELINE_KEYS)
            lines.append(f"{task:>9} {test_set:>9}{cells}")
    return "\n".join(lines)

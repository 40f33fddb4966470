"""Packet datasets streamed from disk, the papers' splits, and the task correlation analysis.

Two on-disk formats, one item contract: `dataset[i]` is `(x, labels)` with `x` float32
(2, length) (row 0 I, row 1 Q) and `labels` task name -> class index in `edge_core.schema`
order. Both datasets are map-style (`__len__`, `__getitem__`) and picklable, so they work with
`torch.utils.data.DataLoader` (its default collate turns them into tensors) and its worker
processes; this module itself needs neither torch nor, for our format, h5py.

* `PacketDataset`: ours (`edge_core/synth/dataset.py`): `iq.npy` memory-mapped + `labels.csv`.
* `MatPacketDataset`: the papers' real dataset (tc_spectrum, Zenodo 10.5281/zenodo.5208201),
  MATLAB v7.3 files `waveforms_2G_n_SNR_<task>_balanced.mat`, read packet by packet with h5py.

Labels are read whole (N x 4 small integers); IQ never is.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_core.errors import IQFormatError
from edge_core.schema import INPUT_LENGTH, REAL_LABEL_ORDER, TASK_BY_NAME, TASK_NAMES, TASKS
from train import TRAIN_EXTRA_MISSING

TaskLabels = dict[str, int]
Item = tuple[np.ndarray, TaskLabels]

LABEL_COLUMNS = (*TASK_NAMES, "snr_db")
"""Header of our `labels.csv`, as `edge_core.synth.dataset` writes it (not imported from
there: that module pulls in the whole generator)."""


def _items(labels: np.ndarray, i: int) -> TaskLabels:
    row = labels[i]
    return {name: int(row[t]) for t, name in enumerate(TASK_NAMES)}


def read_labels_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Our `labels.csv` as (labels (N, 4) int64 in schema order, snr_db (N,) float32)."""
    path = Path(path)
    lookup = [{c: i for i, c in enumerate(t.classes)} for t in TASKS]
    labels: list[list[int]] = []
    snr: list[float] = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header[: len(LABEL_COLUMNS)]) != LABEL_COLUMNS:
            raise IQFormatError(f"{path}: header {header} does not start with {LABEL_COLUMNS}")
        for line, row in enumerate(reader, start=2):
            try:
                labels.append([lookup[t][row[t]] for t in range(len(TASKS))])
                snr.append(float(row[len(TASKS)]))
            except (KeyError, IndexError, ValueError) as exc:
                raise IQFormatError(f"{path}:{line}: bad label row {row}: {exc!r}") from None
    return (
        np.asarray(labels, dtype=np.int64).reshape(-1, len(TASKS)),
        np.asarray(snr, dtype=np.float32),
    )


class PacketDataset:
    """Our dataset directory: `iq.npy` float32 (N, 2, L) memory-mapped, `labels.csv`.

    `labels` (N, 4) int64 and `snr_db` (N,) are in memory; packets are read on access. The
    memory map is opened lazily, once per process, and left out of pickles (DataLoader workers).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.labels, self.snr_db = read_labels_csv(self.directory / "labels.csv")
        self._iq: np.ndarray | None = None
        iq = self._open()
        if iq.ndim != 3 or iq.shape[1] != 2 or iq.dtype != np.float32:
            got = f"{iq.dtype} {iq.shape}"
            raise IQFormatError(f"{self.directory}/iq.npy: want float32 (N, 2, L), got {got}")
        if iq.shape[0] != len(self.labels):
            raise IQFormatError(
                f"{self.directory}: iq.npy has {iq.shape[0]} packets, labels.csv {len(self.labels)}"
            )
        self.length = int(iq.shape[2])

    def _open(self) -> np.ndarray:
        if self._iq is None:
            self._iq = np.load(self.directory / "iq.npy", mmap_mode="r")
        return self._iq

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Item:
        x = np.array(self._open()[i], dtype=np.float32)  # (2, L), a writable copy
        return x, _items(self.labels, i)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_iq"] = None  # pickling a memmap would copy the whole array
        return state


def _import_h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:
        raise ImportError(f"{TRAIN_EXTRA_MISSING} (h5py: {exc})") from exc
    return h5py


_REAL_TO_SCHEMA = [REAL_LABEL_ORDER.index(name) for name in TASK_NAMES]
_NUM_CLASSES = np.array([t.num_classes for t in TASKS])


def _iq_rows(raw: np.ndarray, layout: Literal["auto", "authors"], where: str) -> np.ndarray:
    """One packet's int16 array as (2, n) rows I, Q."""
    if layout == "authors":
        if raw.size % 2:
            raise IQFormatError(f"{where}: {raw.size} values cannot reshape to (2, L)")
        return raw.reshape(2, -1)
    arr = np.squeeze(raw)
    if arr.ndim == 1:
        if arr.size % 2:
            raise IQFormatError(f"{where}: {arr.size} values cannot reshape to (2, L)")
        return arr.reshape(2, -1)
    if arr.ndim == 2 and arr.shape[0] == 2:
        return arr
    if arr.ndim == 2 and arr.shape[1] == 2:
        return arr.T
    raise IQFormatError(f"{where}: packet of shape {raw.shape} is neither (2, L) nor (L, 2)")


class MatPacketDataset:
    """One of the papers' MATLAB v7.3 files, read packet by packet with h5py.

    Layout (tc_spectrum `get_raw_xy_spectrum`): `X` is a cell array of HDF5 object references,
    one per L1 packet, each to an array read as int16; `Y` the same for uint8 label vectors
    [frame, phy, app_type, app] (`schema.REAL_LABEL_ORDER`). A numeric `Y` matrix (N x 4 or
    4 x N) is accepted too.

    Orientation: MATLAB is column-major, so h5py shows a MATLAB 2 x L matrix as (L, 2) and an
    L x 2 one as (2, L). `layout="auto"` takes whichever axis has 2 entries as I/Q (the first
    when both do; a 1-D array is split in halves, [I..., Q...]). `layout="authors"` does what
    tc_spectrum did, `reshape(2, -1)` of h5py's array: the same when h5py shows (2, L), but
    I/Q-interleaved halves when it shows (L, 2). The published files could not be checked here.

    Packets with a label the schema lacks (app 7 and app_type 3 "unknown", phy/frame codes >= 3)
    are dropped; `dropped` counts them and `rows` maps item -> row in the file. Each packet is
    post-padded with zeros / post-truncated to `length` (keep the first `length` samples), cast
    int16 -> float32 without scaling (the notebooks use `scale=False`).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        length: int = INPUT_LENGTH,
        layout: Literal["auto", "authors"] = "auto",
        progress: bool = False,
    ) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if layout not in ("auto", "authors"):
            raise ValueError(f"layout must be 'auto' or 'authors', got {layout!r}")
        self.path = Path(path)
        self.length = length
        self.layout = layout
        self._file: Any = None
        self._x_refs: np.ndarray | None = None
        self._pid = 0
        try:
            real = self._read_real_labels(progress)  # (N, 4) [frame, phy, app_type, app]
        finally:
            self.close()  # a handle must not cross fork() into DataLoader workers
        labels = real[:, _REAL_TO_SCHEMA]  # schema order
        keep = np.all(labels < _NUM_CLASSES, axis=1)  # (N,)
        self.rows = np.flatnonzero(keep)
        self.labels = labels[keep]
        self.dropped = int(labels.shape[0] - len(self.rows))

    def _open(self) -> Any:
        if self._file is not None and self._pid != os.getpid():
            self._file = self._x_refs = None  # inherited through fork(): open our own
        if self._file is None:
            h5py = _import_h5py()
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
            self._x_refs = self._refs("X")
        return self._file

    def _refs(self, name: str) -> np.ndarray:
        f = self._file
        if name not in f:
            raise IQFormatError(f"{self.path}: no dataset {name!r}")
        return np.asarray(f[name][()]).reshape(-1)

    def _read_real_labels(self, progress: bool) -> np.ndarray:
        f = self._open()
        assert self._x_refs is not None
        n = len(self._x_refs)
        if "Y" not in f:
            raise IQFormatError(f"{self.path}: no dataset 'Y'")
        y = f["Y"]
        if y.dtype.kind != "O":  # a numeric matrix
            arr = np.asarray(y[()])
            if arr.ndim == 2 and arr.shape == (n, 4):
                return arr.astype(np.int64)
            if arr.ndim == 2 and arr.shape == (4, n):
                return arr.T.astype(np.int64)
            raise IQFormatError(f"{self.path}: Y of shape {arr.shape} for {n} packets")
        refs = self._refs("Y")
        if len(refs) != n:
            raise IQFormatError(f"{self.path}: {n} packets in X, {len(refs)} labels in Y")
        out = np.empty((n, 4), dtype=np.int64)
        iterator: Any = range(n)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc=f"labels {self.path.name}", unit="pkt")
        for i in iterator:
            vec = np.asarray(f[refs[i]][()]).reshape(-1)
            if vec.size != 4:
                raise IQFormatError(f"{self.path}: label {i} has {vec.size} values, want 4")
            out[i] = vec
        return out

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Item:
        f = self._open()
        assert self._x_refs is not None
        row = int(self.rows[i])
        ds = f[self._x_refs[row]]
        x = np.zeros((2, self.length), dtype=np.float32)  # (2, length), post-padded with zeros
        if not ds.attrs.get("MATLAB_empty", 0):
            raw = np.asarray(ds[()], dtype=np.int16)  # as tc_spectrum: np.array(..., np.int16)
            iq = _iq_rows(raw, self.layout, f"{self.path} packet {row}")
            n = min(iq.shape[1], self.length)
            x[:, :n] = iq[:, :n]
        return x, _items(self.labels, i)

    def close(self) -> None:
        """Close this process's file handle; the next access reopens it."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._x_refs = None

    def __enter__(self) -> MatPacketDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None  # h5py handles and references do not pickle; reopen per process
        state["_x_refs"] = None
        return state


# --- splits -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Index arrays (int64, sorted) into a dataset."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> tuple[int, int, int]:
        return len(self.train), len(self.val), len(self.test)


PAPER1_BALANCED_PACKETS = 71_603
"""Paper 1's balanced set: 7 applications x 10,229 (TuneIn, the rarest; Table 5), "71.6K". It is
also the size of tc_spectrum's balanced app file (57,282 train + 7,161 test in its results)."""
PAPER1_VAL_PACKETS = 16_384
PAPER1_TEST_PACKETS = 8_192
PAPER1_VAL_FRACTION = PAPER1_VAL_PACKETS / PAPER1_BALANCED_PACKETS
PAPER1_TEST_FRACTION = PAPER1_TEST_PACKETS / PAPER1_BALANCED_PACKETS


def _split_count(value: int | float, total: int, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a fraction or a count, got {value!r}")
    if isinstance(value, float):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} fraction must be in [0, 1), got {value}")
        return round(value * total)
    if not 0 <= value <= total:
        raise ValueError(f"{name} count must be in [0, {total}], got {value}")
    return int(value)


def _spread(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """n split over k classes as evenly as possible; random classes get the remainder."""
    base, rest = divmod(n, k)
    quota = np.full(k, base, dtype=np.int64)
    quota[rng.choice(k, rest, replace=False)] += 1
    return quota


def balanced_split(
    labels: np.ndarray,
    *,
    task: str = "app",
    val: int | float = PAPER1_VAL_FRACTION,
    test: int | float = PAPER1_TEST_FRACTION,
    per_class: int | None = None,
    seed: int = 42,
) -> Split:
    """Paper 1's split (Sec. VI): equalize `task`'s classes to the rarest one, then split.

    Every class of `task` keeps `per_class` packets (default: as many as the rarest class has),
    drawn at random. `val` and `test` are fractions of the balanced total or counts; train gets
    the rest. Each part is stratified (class counts differ by at most 1).

    The paper says 65/20/10 % but its counts, 47,027 / 16,384 / 8,192 of 71,603 (7 x 10,229),
    are 65.7 / 22.9 / 11.4 %; the default fractions are those counts', so the paper's balanced
    set splits exactly as published. The seed is ours (the paper gives none).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(TASKS):
        raise ValueError(f"labels must be (N, {len(TASKS)}), got {labels.shape}")
    if task not in TASK_BY_NAME:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASK_NAMES)}")
    spec = TASK_BY_NAME[task]
    y = labels[:, TASK_NAMES.index(task)]
    counts = np.bincount(y, minlength=spec.num_classes)[: spec.num_classes]
    absent = [spec.classes[c] for c in np.flatnonzero(counts == 0)]
    if absent:
        raise ValueError(f"cannot balance {task}: no packets of {absent}")
    rarest = int(counts.min())
    m = rarest if per_class is None else per_class
    if not 1 <= m <= rarest:
        raise ValueError(f"per_class must be in [1, {rarest}] (the rarest {task} class)")
    k = spec.num_classes
    total = k * m
    n_val, n_test = _split_count(val, total, "val"), _split_count(test, total, "test")
    if n_val + n_test > total:
        raise ValueError(f"val {n_val} + test {n_test} > {total} balanced packets")
    rng = np.random.default_rng(seed)
    val_quota, test_quota = _spread(n_val, k, rng), _spread(n_test, k, rng)
    if (val_quota + test_quota > m).any():
        raise ValueError(f"val {n_val} + test {n_test} leave a class without training packets")
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for c in range(k):
        chosen = rng.permutation(np.flatnonzero(y == c))[:m]
        v, t = int(val_quota[c]), int(test_quota[c])
        parts[1].append(chosen[:v])
        parts[2].append(chosen[v : v + t])
        parts[0].append(chosen[v + t :])
    train, val_idx, test_idx = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return Split(train, val_idx, test_idx)


def tc_spectrum_split(n: int, *, seed: int = 42) -> Split:
    """tc_spectrum's 80/10/10 split (`get_xy_4_training`), index for index.

    Two scikit-learn `train_test_split(test_size=0.2, random_state=seed)` then `(test_size=0.5)`
    calls: each draws `RandomState(seed).permutation(n)` and takes the first ceil(test_size * n)
    as its test part. Reproduced with NumPy so scikit-learn is not needed; sorted.
    """
    if n < 2:
        raise ValueError(f"need at least 2 packets to split, got {n}")
    perm = np.random.RandomState(seed).permutation(n)  # sklearn's check_random_state(int)
    n_held = math.ceil(0.2 * n)
    held, train = perm[:n_held], perm[n_held:]
    perm2 = np.random.RandomState(seed).permutation(n_held)
    n_test = math.ceil(0.5 * n_held)
    test, val = held[perm2[:n_test]], held[perm2[n_test:]]
    return Split(*(np.sort(p).astype(np.int64) for p in (train, val, test)))


# --- sessions: session-disjoint splits and class-balanced subsets (issue 12) ----------------

SPLIT_BY: tuple[str, ...] = ("session", "random")
"""How a split draws its parts: whole capture sessions (`session_split`) or single packets."""

PACKETS_CSV = "packets.csv"
SESSION_COLUMN = "session"


def read_packets_csv(
    path: str | Path, columns: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Columns of our `packets.csv` (what the generator drew per packet) as lists of strings.

    `columns`: the ones wanted (default all); a missing file or column is an `IQFormatError`
    naming it and the columns the file has.
    """
    path = Path(path)
    if not path.is_file():
        raise IQFormatError(f"{path} not found: the dataset has no per-packet details")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise IQFormatError(f"{path}: empty file, no header")
        wanted = list(header) if columns is None else list(columns)
        missing = [c for c in wanted if c not in header]
        if missing:
            raise IQFormatError(f"{path}: no column {missing}; it has {header}")
        at = [header.index(c) for c in wanted]
        out: dict[str, list[str]] = {c: [] for c in wanted}
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise IQFormatError(f"{path}:{line}: {len(row)} fields, header has {len(header)}")
            for c, i in zip(wanted, at, strict=True):
                out[c].append(row[i])
    return out


def packets_csv_header(directory: str | Path) -> tuple[str, ...]:
    """The header of `directory/packets.csv`, () when the file is absent."""
    path = Path(directory) / PACKETS_CSV
    if not path.is_file():
        return ()
    with open(path, newline="") as f:
        return tuple(next(csv.reader(f), []))


def read_sessions(directory: str | Path, expected: int | None = None) -> np.ndarray | None:
    """The capture session of each packet, int64 (N,), from `packets.csv`; None when the dataset
    has no `session` column (made before sessions existed, or by another generator)."""
    if SESSION_COLUMN not in packets_csv_header(directory):
        return None
    path = Path(directory) / PACKETS_CSV
    raw = read_packets_csv(path, [SESSION_COLUMN])[SESSION_COLUMN]
    try:
        sessions = np.asarray([int(v) for v in raw], dtype=np.int64)
    except ValueError as exc:
        raise IQFormatError(f"{path}: column {SESSION_COLUMN!r} is not an integer: {exc}") from None
    if expected is not None and len(sessions) != expected:
        raise IQFormatError(f"{path}: {len(sessions)} rows, labels.csv has {expected}")
    return sessions


def default_split_by(directory: str | Path) -> str:
    """`session` when the dataset records sessions, else `random` (the behaviour before them)."""
    return "session" if SESSION_COLUMN in packets_csv_header(directory) else "random"


def require_sessions(directory: str | Path, expected: int | None = None) -> np.ndarray:
    """`read_sessions`, with a clear error when the dataset has no session column."""
    sessions = read_sessions(directory, expected)
    if sessions is None:
        header = packets_csv_header(directory)
        has = f"its columns are {list(header)}" if header else f"it has no {PACKETS_CSV}"
        raise ValueError(
            f"{directory}: cannot split by session: {PACKETS_CSV} has no {SESSION_COLUMN!r} "
            f"column ({has}); regenerate it with `edge-tc synth dataset` or use --split-by random"
        )
    return sessions


def _session_strata(sessions: np.ndarray, y: np.ndarray, none_class: int | None) -> dict:
    """Session id -> its stratum: the most common class of `y` in it, other than `none_class`
    (a session's management and control frames carry no application) unless it has only that."""
    strata: dict[int, int] = {}
    order = np.argsort(sessions, kind="stable")
    ids, starts = np.unique(sessions[order], return_index=True)
    for sid, part in zip(ids, np.split(order, starts[1:]), strict=True):
        counts = np.bincount(y[part], minlength=0 if none_class is None else none_class + 1)
        if none_class is not None and counts.sum() > counts[none_class]:
            counts[none_class] = 0
        strata[int(sid)] = int(counts.argmax())
    return strata


def session_split(
    sessions: np.ndarray,
    labels: np.ndarray,
    *,
    val: float = 0.1,
    test: float = 0.1,
    task: str = "app",
    seed: int = 42,
) -> Split:
    """Train/val/test parts made of whole capture sessions: no session has packets in two parts.

    Sessions are stratified by their `task` class (a session's most common class other than
    "none"), so each class has sessions in each part when it has enough: in every stratum of k
    sessions, round(test k) go to test and round(val k) to val, at least one each while k >= 3
    (k = 2: train and test; k = 1: train), the rest to train. Which sessions go where is a
    permutation seeded by `seed`. The parts keep the natural class mix of their sessions;
    `balanced_subset` equalizes one afterwards.
    """
    sessions = np.asarray(sessions)
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(TASKS):
        raise ValueError(f"labels must be (N, {len(TASKS)}), got {labels.shape}")
    if sessions.shape != (len(labels),):
        raise ValueError(f"sessions must be ({len(labels)},), got {sessions.shape}")
    if task not in TASK_BY_NAME:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASK_NAMES)}")
    for name, frac in (("val", val), ("test", test)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} fraction must be in [0, 1), got {frac}")
    if val + test >= 1.0:
        raise ValueError(f"val {val} + test {test} leave no training sessions")
    spec = TASK_BY_NAME[task]
    none_class = spec.classes.index("none") if "none" in spec.classes else None
    strata = _session_strata(sessions, labels[:, TASK_NAMES.index(task)], none_class)
    rng = np.random.default_rng(seed)
    part_of: dict[int, int] = {}  # session -> 0 train, 1 val, 2 test
    for stratum in sorted(set(strata.values())):
        ids = np.array(sorted(s for s, c in strata.items() if c == stratum), dtype=np.int64)
        ids = rng.permutation(ids)
        k = len(ids)
        n_test = max(round(test * k), 1 if k >= 2 and test > 0 else 0)
        n_val = max(round(val * k), 1 if k >= 3 and val > 0 else 0)
        while n_test + n_val >= k and n_val > 0:  # keep one training session
            n_val -= 1
        while n_test + n_val >= k and n_test > 0:
            n_test -= 1
        for s in ids[:n_test]:
            part_of[int(s)] = 2
        for s in ids[n_test : n_test + n_val]:
            part_of[int(s)] = 1
        for s in ids[n_test + n_val :]:
            part_of[int(s)] = 0
    part = np.array([part_of[int(s)] for s in sessions], dtype=np.int64)  # (N,)
    return Split(*(np.flatnonzero(part == p).astype(np.int64) for p in range(3)))


def balanced_subset(
    labels: np.ndarray, indices: np.ndarray | None = None, *, task: str = "app", seed: int = 42
) -> np.ndarray:
    """The class-balanced subset of `indices` (default all packets): every class of `task` that
    occurs there keeps as many packets as the rarest occurring one, drawn with `seed`; sorted.

    Classes absent from `indices` are left out (a balanced set cannot hold them); paper 1's
    balanced set is this on app.
    """
    labels = np.asarray(labels)
    if task not in TASK_BY_NAME:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASK_NAMES)}")
    idx = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(idx) == 0:
        return idx.astype(np.int64)
    y = labels[idx, TASK_NAMES.index(task)]
    present = np.unique(y)
    m = min(int((y == c).sum()) for c in present)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(idx[y == c])[:m] for c in present]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def split_dataset(
    labels: np.ndarray,
    sessions: np.ndarray | None,
    kind: str = "balanced",
    by: str = "random",
    seed: int = 42,
    *,
    val: int | float | None = None,
    test: int | float | None = None,
) -> Split:
    """The split `kind` ("balanced" or "tc_spectrum") drawn `by` "random" packets or "session".

    By random: `balanced_split` / `tc_spectrum_split` as they were. By session: the parts are
    `session_split`s (tc_spectrum: 80/10/10 of the sessions; balanced: paper 1's fractions),
    and for "balanced" each part is then equalized on app (`balanced_subset`), so training,
    validation and test are class-balanced like paper 1's and session-disjoint.
    """
    if by not in SPLIT_BY:
        raise ValueError(f"split by must be one of {list(SPLIT_BY)}, got {by!r}")
    if kind not in ("balanced", "tc_spectrum"):
        raise ValueError(f"split must be balanced or tc_spectrum, got {kind!r}")
    if by == "random":
        if kind == "tc_spectrum":
            if val is not None or test is not None:
                raise ValueError("the tc_spectrum split is 80/10/10; val and test are fixed")
            return tc_spectrum_split(len(labels), seed=seed)
        return balanced_split(
            labels,
            val=PAPER1_VAL_FRACTION if val is None else val,
            test=PAPER1_TEST_FRACTION if test is None else test,
            seed=seed,
        )
    if sessions is None:
        raise ValueError("cannot split by session: the dataset has no session column")
    for name, v in (("val", val), ("test", test)):
        if v is not None and not isinstance(v, float):
            raise ValueError(f"a split by session takes {name} as a fraction, got {v!r}")
    if kind == "tc_spectrum":
        if val is not None or test is not None:
            raise ValueError("the tc_spectrum split is 80/10/10; val and test are fixed")
        return session_split(sessions, labels, val=0.1, test=0.1, seed=seed)
    parts = session_split(
        sessions,
        labels,
        val=PAPER1_VAL_FRACTION if val is None else float(val),
        test=PAPER1_TEST_FRACTION if test is None else float(test),
        seed=seed,
    )
    parts_of = (parts.train, parts.val, parts.test)
    return Split(*(balanced_subset(labels, p, seed=seed) for p in parts_of))


# --- task correlation (paper 1, Phase 1 step 2; Tables 4 and 5) -----------------------------


def cramers_v(counts: np.ndarray) -> float:
    """Cramér's V of a contingency table: sqrt(chi2 / (n (min(r, c) - 1))), in [0, 1].

    Empty rows and columns are dropped first; NaN when fewer than 2 remain on either axis
    (association is undefined for a constant label). No small-sample bias correction.
    """
    table = np.asarray(counts, dtype=np.float64)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    if min(table.shape) < 2:
        return float("nan")
    n = table.sum()
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n  # (r, c)
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return float(min(1.0, math.sqrt(chi2 / (n * (min(table.shape) - 1)))))


@dataclass(frozen=True)
class Contingency:
    """Packet counts of `row_task` classes (rows) against `col_task` classes (columns)."""

    row_task: str
    col_task: str
    counts: np.ndarray  # (rows, cols) int64

    @property
    def row_classes(self) -> tuple[str, ...]:
        return TASK_BY_NAME[self.row_task].classes

    @property
    def col_classes(self) -> tuple[str, ...]:
        return TASK_BY_NAME[self.col_task].classes

    @property
    def cramers_v(self) -> float:
        return cramers_v(self.counts)

    def _grid(self) -> list[list[str]]:
        header = [f"{self.row_task} \\ {self.col_task}", *self.col_classes, "total"]
        rows = [header]
        for name, line in zip(self.row_classes, self.counts, strict=True):
            rows.append([name, *(str(int(v)) for v in line), str(int(line.sum()))])
        rows.append(["total", *(str(int(v)) for v in self.counts.sum(axis=0)),
                     str(int(self.counts.sum()))])  # fmt: skip
        return rows

    def to_markdown(self) -> str:
        grid = self._grid()
        lines = ["| " + " | ".join(grid[0]) + " |", "|---" + "|---:" * (len(grid[0]) - 1) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in grid[1:]]
        lines.append(f"\nCramér's V = {self.cramers_v:.3f}")
        return "\n".join(lines)

    def to_text(self) -> str:
        grid = self._grid()
        widths = [max(len(r[c]) for r in grid) for c in range(len(grid[0]))]
        lines = [
            "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                      for c, (cell, w) in enumerate(zip(r, widths, strict=True)))
            for r in grid
        ]  # fmt: skip
        lines.append(f"Cramér's V = {self.cramers_v:.3f}")
        return "\n".join(lines)


def contingency(labels: np.ndarray, row_task: str, col_task: str) -> Contingency:
    """Contingency table of two tasks over `labels` (N, 4) in schema order."""
    for task in (row_task, col_task):
        if task not in TASK_BY_NAME:
            raise ValueError(f"unknown task {task!r}; expected one of {list(TASK_NAMES)}")
    labels = np.asarray(labels)
    r, c = TASK_NAMES.index(row_task), TASK_NAMES.index(col_task)
    nr, nc = TASKS[r].num_classes, TASKS[c].num_classes
    counts = np.zeros((nr, nc), dtype=np.int64)
    np.add.at(counts, (labels[:, r], labels[:, c]), 1)
    return Contingency(row_task, col_task, counts)


@dataclass(frozen=True)
class CorrelationReport:
    """Every pair of tasks: contingency tables and Cramér's V (paper 1 Tables 4 and 5)."""

    tables: tuple[Contingency, ...]

    def cramers_v_matrix(self) -> np.ndarray:
        """(4, 4) symmetric, schema order, ones on the diagonal."""
        v = np.eye(len(TASKS))
        for t in self.tables:
            i, j = TASK_NAMES.index(t.row_task), TASK_NAMES.index(t.col_task)
            v[i, j] = v[j, i] = t.cramers_v
        return v

    def to_markdown(self) -> str:
        v = self.cramers_v_matrix()
        lines = ["| Cramér's V | " + " | ".join(TASK_NAMES) + " |",
                 "|---" + "|---:" * len(TASK_NAMES) + "|"]  # fmt: skip
        lines += [f"| {a} | " + " | ".join(f"{x:.3f}" for x in v[i]) + " |"
                  for i, a in enumerate(TASK_NAMES)]  # fmt: skip
        for t in self.tables:
            lines += ["", f"### {t.row_task} x {t.col_task}", "", t.to_markdown()]
        return "\n".join(lines)

    def to_text(self) -> str:
        v = self.cramers_v_matrix()
        width = max(len(n) for n in TASK_NAMES) + 2
        lines = ["Cramér's V".ljust(width) + "".join(n.rjust(width) for n in TASK_NAMES)]
        lines += [a.ljust(width) + "".join(f"{x:.3f}".rjust(width) for x in v[i])
                  for i, a in enumerate(TASK_NAMES)]  # fmt: skip
        for t in self.tables:
            lines += ["", f"{t.row_task} x {t.col_task}", t.to_text()]
        return "\n".join(lines)


def task_correlation(
    labels: np.ndarray, pairs: Sequence[tuple[str, str]] | None = None
) -> CorrelationReport:
    """Contingency tables and Cramér's V for `pairs` of tasks (default: all six, schema order).

    Paper 1 reads Table 4 (phy x frame) and Table 5 (app and app_type x frame) by eye to decide
    that the tasks are correlated enough for hard parameter sharing; V puts a number on it.
    """
    if pairs is None:
        pairs = [(a, b) for i, a in enumerate(TASK_NAMES) for b in TASK_NAMES[i + 1 :]]
    return CorrelationReport(tuple(contingency(labels, a, b) for a, b in pairs))

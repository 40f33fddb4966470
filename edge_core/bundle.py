"""Model bundles: a directory of exported model files described by one `manifest.json`.

`train.export.export_bundle` writes bundles; engines and the daemon open them with
`load_manifest`, which checks everything before a model file is handed to a runtime: the
manifest's keys (unknown and missing keys are errors), its copy of the task schema against
`edge_core.schema`, the sha256 and size of every file, that every file in the directory is
listed, that no file is a pickle, and that each export's recorded agreement with the PyTorch
model meets the bar the bundle was exported under. Outputs map to tasks by tensor name, never
by position. This module needs neither torch nor any runtime.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_core.errors import ModelError
from edge_core.schema import INPUT_LENGTH, TASK_BY_NAME, TASK_NAMES, check_schema
from edge_core.typed_config import load_nested

MANIFEST_NAME = "manifest.json"
BUNDLE_FORMAT = "edge-tc-bundle"
BUNDLE_FORMAT_VERSION = 1

MODEL_FORMATS = ("onnx", "tflite", "tensorrt-plan")
PRECISIONS = ("fp32", "fp16", "int8")
OUTPUT_KINDS = ("probabilities",)
NORMALIZATIONS = ("none", "unit_rms")
"""Input level a model expects: samples as stored, or each packet scaled to unit mean power over
its own samples (the zero padding excluded) before the model."""
EXPORTS: dict[str, tuple[str, str]] = {
    "onnx-fp32": ("onnx", "fp32"),
    "onnx-int8": ("onnx", "int8"),
    "tflite-int8": ("tflite", "int8"),
    "tensorrt-fp16": ("tensorrt-plan", "fp16"),
    "tensorrt-fp32": ("tensorrt-plan", "fp32"),
}
"""The exports `train.export` makes: name -> (model format, precision)."""
DEFAULT_EXPORTS = ("onnx-fp32", "onnx-int8", "tflite-int8")
AGREEMENT_REQUIRED: dict[str, float] = {"fp32": 0.99, "fp16": 0.99, "int8": 0.97}
"""Least per-task top-1 agreement of an export with the PyTorch model on held-out packets."""
INPUT_NAME = "iq"
INPUT_SHAPE: list[int | str] = ["batch", 2, INPUT_LENGTH]
"""The bundle-level input: float32 IQ packets, row 0 I, row 1 Q, as `PacketDataset` yields."""
INPUT_ROWS = ["I", "Q"]

PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy"})
"""Refused in a bundle by name: torch/pickle containers (and .npy, which may hold objects)."""

_TOP_KEYS = frozenset(
    {
        "format",
        "format_version",
        "created_by",
        "schema",
        "input",
        "model",
        "evaluation",
        "training_data",
        "files",
        "models",
    }
)
_TOP_OPTIONAL = frozenset({"pruning", "fusion"})
"""`pruning`: a pruned model's provenance (method, h, per-layer knees, parent, fine-tuning);
`fusion`: the fusion stage (edge_core/fusion.py): its file, fused tasks, features, training."""
_INPUT_KEYS = frozenset({"name", "shape", "dtype", "rows", "normalization"})
_NORMALIZATION_KEYS = frozenset({"kind", "note"})
_MODEL_KEYS = frozenset({"architecture", "kwargs", "tasks", "params", "flops", "test_accuracy"})
_EVALUATION_KEYS = frozenset(
    {"heldout_packets", "calibration_packets", "heldout_source", "agreement_required"}
)
_FILE_KEYS = frozenset({"sha256", "bytes"})
_ENTRY_KEYS = frozenset(
    {"file", "format", "precision", "input", "outputs", "output_kind", "test_accuracy", "agreement"}
)
_ENTRY_OPTIONAL = frozenset({"target", "notes"})
_TENSOR_KEYS = frozenset({"name", "shape", "dtype", "quantization"})
_TENSOR_OPTIONAL = frozenset({"layout"})
_QUANT_KEYS = frozenset({"scale", "zero_point"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_INTEGER_DTYPES = ("int8", "uint8")


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of an integer tensor: real = (q - zero_point) * scale."""

    scale: float
    zero_point: int

    def quantize(self, x: np.ndarray, dtype: np.dtype | type = np.int8) -> np.ndarray:
        """Float array to the integer tensor's values, rounded and saturated."""
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, dtype=np.float32) / self.scale) + self.zero_point
        return np.clip(q, info.min, info.max).astype(dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """Integer tensor values to float32."""
        return ((q.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of a model file, found by `name`."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    quantization: QuantParams | None
    layout: str | None = None


@dataclass(frozen=True)
class BundleModel:
    """One exported model file of a bundle; `outputs` maps task name -> output tensor."""

    path: Path
    format: str
    precision: str
    input: TensorSpec
    outputs: dict[str, TensorSpec]
    output_kind: str
    test_accuracy: dict[str, float]
    agreement: dict[str, float]
    target: dict[str, Any] | None


@dataclass(frozen=True)
class Bundle:
    """A validated bundle; `manifest` is the parsed JSON as written."""

    directory: Path
    manifest: dict[str, Any]
    tasks: tuple[str, ...]
    models: tuple[BundleModel, ...]
    fusion: Path | None = None
    """The fusion stage's file (`edge_core.fusion.load_fusion` reads it), if the bundle has one."""

    def select(self, format: str, precision: str | None = None) -> BundleModel:
        """The model file of `format` (and `precision`); ModelError lists what the bundle has."""
        for m in self.models:
            if m.format == format and (precision is None or m.precision == precision):
                return m
        have = [f"{m.format}/{m.precision}" for m in self.models]
        want = format if precision is None else f"{format}/{precision}"
        raise ModelError(f"{self.directory}: no {want} model in the bundle; it has {have}")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(directory: str | Path) -> dict[str, dict[str, Any]]:
    """The manifest's `files` section for every file in `directory` but the manifest."""
    directory = Path(directory)
    return {
        p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(directory.iterdir())
        if p.name != MANIFEST_NAME
    }


def is_pickle(path: Path) -> bool:
    """True for a pickle or torch.save file, by name or by content (pickle / zip+data.pkl)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    with open(path, "rb") as f:
        head = f.read(4096)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5 header
        return True
    return head.startswith(b"PK\x03\x04") and b"data.pkl" in head  # torch.save's zip layout


class _Checker:
    """Key checks that name the manifest file and the key path in every error."""

    def __init__(self, manifest_path: Path) -> None:
        self.path = manifest_path

    def fail(self, where: str, message: str) -> ModelError:
        return ModelError(f"{self.path}: {where}: {message}")

    def keys(
        self,
        obj: Any,
        where: str,
        required: frozenset[str],
        optional: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise self.fail(where, f"want an object, got {type(obj).__name__}")
        missing = sorted(required - set(obj))
        if missing:
            raise self.fail(where, f"missing key {missing[0]!r}")
        unknown = sorted(set(obj) - required - optional, key=str)
        if unknown:
            raise self.fail(where, f"unknown key {unknown[0]!r}")
        return obj

    def string(self, obj: dict[str, Any], key: str, where: str, choices: Any = None) -> str:
        value = obj[key]
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", f"want a string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(f"{where}.{key}", f"{value!r} is not one of {list(choices)}")
        return value

    def count(self, obj: dict[str, Any], key: str, where: str) -> int:
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(f"{where}.{key}", f"want a non-negative integer, got {value!r}")
        return value

    def fractions(self, obj: Any, where: str, tasks: tuple[str, ...]) -> dict[str, float]:
        """A task -> value in [0, 1] mapping covering exactly `tasks`."""
        self.keys(obj, where, frozenset(tasks))
        out: dict[str, float] = {}
        for task in tasks:
            value = obj[task]
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not 0.0 <= float(value) <= 1.0:
                raise self.fail(f"{where}.{task}", f"want a fraction in [0, 1], got {value!r}")
            out[task] = float(value)
        return out

    def quant(self, obj: Any, where: str) -> QuantParams:
        self.keys(obj, where, _QUANT_KEYS)
        scale, zero_point = obj["scale"], obj["zero_point"]
        if not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
            raise self.fail(f"{where}.scale", f"want a positive number, got {scale!r}")
        if isinstance(zero_point, bool) or not isinstance(zero_point, int):
            raise self.fail(f"{where}.zero_point", f"want an integer, got {zero_point!r}")
        return QuantParams(float(scale), zero_point)

    def tensor(self, obj: Any, where: str) -> TensorSpec:
        self.keys(obj, where, _TENSOR_KEYS, _TENSOR_OPTIONAL)
        name = self.string(obj, "name", where)
        dtype = self.string(obj, "dtype", where)
        shape = obj["shape"]
        if not isinstance(shape, list) or not all(
            isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool) and d > 0)
            for d in shape
        ):
            raise self.fail(f"{where}.shape", f"want a list of sizes or axis names, got {shape!r}")
        quantization = None
        if obj["quantization"] is not None:
            quantization = self.quant(obj["quantization"], f"{where}.quantization")
        elif dtype in _INTEGER_DTYPES:
            raise self.fail(f"{where}.quantization", f"an {dtype} tensor needs scale/zero_point")
        layout = self.string(obj, "layout", where) if "layout" in obj else None
        return TensorSpec(name, tuple(shape), dtype, quantization, layout)


def _check_files(c: _Checker, directory: Path, files: Any) -> None:
    """Every file listed and present, sha256 and size as recorded, nothing unlisted, no pickle."""
    for p in sorted(directory.iterdir()):
        if p.name == MANIFEST_NAME:
            continue
        if not p.is_file() or p.is_symlink():
            raise ModelError(f"{p}: a bundle holds plain files only")
        if is_pickle(p):
            raise ModelError(f"{p}: pickles are not allowed in a bundle (they can run code)")
    if not isinstance(files, dict) or not files:
        raise c.fail("files", "want a non-empty object of file name -> {sha256, bytes}")
    for name, entry in files.items():
        where = f"files.{name}"
        if "/" in name or "\\" in name or name in ("", ".", "..", MANIFEST_NAME):
            raise c.fail(where, "a file name must be a plain name inside the bundle")
        c.keys(entry, where, _FILE_KEYS)
        want = c.string(entry, "sha256", where)
        if not _SHA256.match(want):
            raise c.fail(f"{where}.sha256", f"want 64 lowercase hex digits, got {want!r}")
        path = directory / name
        if not path.is_file():
            raise ModelError(f"{path}: listed in {c.path} but missing")
        size = c.count(entry, "bytes", where)
        if path.stat().st_size != size:
            raise ModelError(f"{path}: {path.stat().st_size} bytes, manifest says {size}")
        got = sha256_file(path)
        if got != want:
            raise ModelError(f"{path}: sha256 {got} does not match the manifest's {want}")
    unlisted = sorted(p.name for p in directory.iterdir() if p.name not in files)
    unlisted = [n for n in unlisted if n != MANIFEST_NAME]
    if unlisted:
        raise ModelError(f"{directory / unlisted[0]}: not listed in {c.path} (files)")


def _check_input(c: _Checker, obj: Any) -> None:
    c.keys(obj, "input", _INPUT_KEYS)
    c.string(obj, "name", "input", (INPUT_NAME,))
    if obj["shape"] != INPUT_SHAPE:
        raise c.fail("input.shape", f"{obj['shape']!r} != {INPUT_SHAPE!r}")
    c.string(obj, "dtype", "input", ("float32",))
    if obj["rows"] != INPUT_ROWS:
        raise c.fail("input.rows", f"{obj['rows']!r} != {INPUT_ROWS!r}")
    norm = c.keys(obj["normalization"], "input.normalization", _NORMALIZATION_KEYS)
    c.string(norm, "kind", "input.normalization", NORMALIZATIONS)
    c.string(norm, "note", "input.normalization")


def _check_model(c: _Checker, obj: Any) -> tuple[str, ...]:
    c.keys(obj, "model", _MODEL_KEYS)
    c.string(obj, "architecture", "model")
    if not isinstance(obj["kwargs"], dict):
        raise c.fail("model.kwargs", f"want an object, got {obj['kwargs']!r}")
    tasks = obj["tasks"]
    if not isinstance(tasks, list) or not tasks or len(set(tasks)) != len(tasks):
        raise c.fail("model.tasks", f"want a non-empty list of distinct tasks, got {tasks!r}")
    for task in tasks:
        if task not in TASK_BY_NAME:
            raise c.fail("model.tasks", f"unknown task {task!r}; schema has {list(TASK_NAMES)}")
    c.count(obj, "params", "model")
    c.count(obj, "flops", "model")
    c.fractions(obj["test_accuracy"], "model.test_accuracy", tuple(tasks))
    return tuple(tasks)


def _check_evaluation(c: _Checker, obj: Any) -> dict[str, float]:
    c.keys(obj, "evaluation", _EVALUATION_KEYS)
    c.count(obj, "heldout_packets", "evaluation")
    c.count(obj, "calibration_packets", "evaluation")
    c.string(obj, "heldout_source", "evaluation")
    return c.fractions(obj["agreement_required"], "evaluation.agreement_required", PRECISIONS)


def _check_entry(
    c: _Checker,
    directory: Path,
    obj: Any,
    where: str,
    tasks: tuple[str, ...],
    files: dict[str, Any],
    required: dict[str, float],
) -> BundleModel:
    c.keys(obj, where, _ENTRY_KEYS, _ENTRY_OPTIONAL)
    name = c.string(obj, "file", where)
    if name not in files:
        raise c.fail(f"{where}.file", f"{name!r} is not listed in files")
    fmt = c.string(obj, "format", where, MODEL_FORMATS)
    precision = c.string(obj, "precision", where, PRECISIONS)
    tensor_in = c.tensor(obj["input"], f"{where}.input")
    outputs_obj = c.keys(obj["outputs"], f"{where}.outputs", frozenset(tasks))
    outputs = {t: c.tensor(outputs_obj[t], f"{where}.outputs.{t}") for t in tasks}
    for task, spec in outputs.items():
        classes = TASK_BY_NAME[task].num_classes
        if not spec.shape or spec.shape[-1] != classes:
            raise c.fail(
                f"{where}.outputs.{task}.shape",
                f"{list(spec.shape)!r} does not end in the task's {classes} classes",
            )
    if len({s.name for s in outputs.values()}) != len(outputs):
        raise c.fail(f"{where}.outputs", "two tasks name the same output tensor")
    kind = c.string(obj, "output_kind", where, OUTPUT_KINDS)
    accuracy = c.fractions(obj["test_accuracy"], f"{where}.test_accuracy", tasks)
    agreement = c.fractions(obj["agreement"], f"{where}.agreement", tasks)
    for task, value in agreement.items():
        if value < required[precision]:
            raise c.fail(
                f"{where}.agreement.{task}",
                f"{value:.4f} is below the {precision} bar {required[precision]}",
            )
    target = obj.get("target")
    if target is not None and not isinstance(target, dict):
        raise c.fail(f"{where}.target", f"want an object, got {target!r}")
    if "notes" in obj:
        c.string(obj, "notes", where)
    return BundleModel(
        directory / name, fmt, precision, tensor_in, outputs, kind, accuracy, agreement, target
    )


def load_manifest(directory: str | Path) -> Bundle:
    """Open and validate the bundle in `directory`; ModelError names the file and the key."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    try:
        with open(path, encoding="utf-8") as f:
            manifest = load_nested(lambda: json.load(f), str(path))
    except FileNotFoundError:
        raise ModelError(f"{path}: no manifest; is {directory} a model bundle?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON: {exc}") from exc
    except ValueError as exc:  # nested too deeply
        raise ModelError(str(exc)) from None
    c = _Checker(path)
    c.keys(manifest, "manifest", _TOP_KEYS, _TOP_OPTIONAL)
    c.string(manifest, "format", "manifest", (BUNDLE_FORMAT,))
    if manifest["format_version"] != BUNDLE_FORMAT_VERSION:
        raise c.fail(
            "format_version", f"{manifest['format_version']!r}, want {BUNDLE_FORMAT_VERSION}"
        )
    c.string(manifest, "created_by", "manifest")
    if not isinstance(manifest["schema"], dict):
        raise c.fail("schema", "want an object")
    check_schema(manifest["schema"], where=f"{path}: schema")
    _check_input(c, manifest["input"])
    tasks = _check_model(c, manifest["model"])
    required = _check_evaluation(c, manifest["evaluation"])
    if not isinstance(manifest["training_data"], dict):
        raise c.fail("training_data", f"want an object, got {manifest['training_data']!r}")
    if "pruning" in manifest and not isinstance(manifest["pruning"], dict):
        raise c.fail("pruning", f"want an object, got {manifest['pruning']!r}")
    _check_files(c, directory, manifest["files"])
    fusion = _check_fusion(c, directory, manifest.get("fusion"), tasks, manifest["files"])
    entries = manifest["models"]
    if not isinstance(entries, list) or not entries:
        raise c.fail("models", "want a non-empty list of model files")
    models = tuple(
        _check_entry(c, directory, e, f"models[{i}]", tasks, manifest["files"], required)
        for i, e in enumerate(entries)
    )
    return Bundle(directory, manifest, tasks, models, fusion)


def _check_fusion(
    c: _Checker, directory: Path, obj: Any, tasks: tuple[str, ...], files: dict[str, Any]
) -> Path | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise c.fail("fusion", f"want an object, got {obj!r}")
    if "file" not in obj:
        raise c.fail("fusion.file", "missing: the fusion stage's file name")
    name = c.string(obj, "file", "fusion")
    if name not in files:
        raise c.fail("fusion.file", f"{name!r} is not among the bundle's files")
    fused = obj.get("tasks")
    if not isinstance(fused, list) or not fused or any(t not in tasks for t in fused):
        raise c.fail(
            "fusion.tasks", f"want a non-empty list of the model's tasks {tasks}, got {fused!r}"
        )
    if not isinstance(obj.get("features"), list):
        raise c.fail("fusion.features", "want the list of the stage's input features")
    return directory / name


def write_manifest(directory: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write `manifest` (with `files` recomputed from the directory) and validate the bundle."""
    directory = Path(directory)
    data = dict(manifest)
    data["files"] = file_entries(directory)
    path = directory / MANIFEST_NAME
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    tmp.replace(path)
    load_manifest(directory)
    return path

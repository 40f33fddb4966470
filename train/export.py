"""Exports of a trained model, each checked against PyTorch, written as a model bundle.

From a checkpoint (`train.checkpoint.load_checkpoint`):

* ONNX FP32 (`export_onnx_fp32`): input `iq` (batch, 2, 3000) float32, one output per task
  named after it, holding softmax probabilities; dynamic batch axis.
* ONNX INT8 (`export_onnx_int8`): onnxruntime's static quantization, QDQ format, per-channel
  weights, calibrated on training packets; float32 input and outputs like FP32. Its source is
  the model with the trunk BatchNorms folded into the convs and their shifts into the next
  conv's bias (`fold_trunk_shifts`), so that the trunk is int8 from end to end (QLinearConv
  with the ReLU fused, int8 max-pool) instead of a float Add between a dequantize and a
  quantize in every block, which took half of the INT8 time (issue 13).
* TFLite full-integer INT8 for the Edge TPU (`export_tflite_int8`): the model is lowered by hand
  to the ops `edgetpu_compiler` maps (Conv1d -> CONV_2D with a (1, K) kernel on NHWC
  (1, 1, 3000, 2), MAX_POOL_2D, RESHAPE, FULLY_CONNECTED, SOFTMAX, plus ADD/MUL where a
  BatchNorm cannot be folded exactly), batch 1, int8 input and outputs. The float graph is
  written with LiteRT's flatbuffer schema and quantized by the TFLite calibrator/quantizer that
  `tf.lite.TFLiteConverter` itself runs, both shipped in `ai-edge-litert`: no TensorFlow.
* A TensorRT plan (`build_tensorrt_plan`, FP16/FP32, dynamic batch profile), built on the GPU
  that will run it.

`export_bundle` runs held-out packets through PyTorch and every export, records per-task test
accuracy and top-1 agreement with PyTorch, refuses an export whose agreement is below
`AGREEMENT_REQUIRED`, and writes the bundle (`edge_core.bundle`).
"""

from __future__ import annotations

import copy
import itertools
import json
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_core import bundle as bundle_mod
from edge_core.errors import EdgeTcError, ModelError
from edge_core.schema import INPUT_LENGTH, TASK_BY_NAME, TASK_NAMES, as_dict
from train import TRAIN_EXTRA_MISSING
from train.checkpoint import ModelSpec, load_checkpoint
from train.models import ConvTrunk1d, DenseHead, SameConv1d, describe

EXPORT_FORMATS: tuple[str, ...] = tuple(bundle_mod.EXPORTS)
DEFAULT_FORMATS: tuple[str, ...] = bundle_mod.DEFAULT_EXPORTS
AGREEMENT_REQUIRED: dict[str, float] = bundle_mod.AGREEMENT_REQUIRED

ONNX_OPSET = 18
"""torch.export-based exporter's opset; `opset < 18` uses the (deprecated) TorchScript one."""

EDGETPU_OPS = frozenset(
    {
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "EXPAND_DIMS",
        "FULLY_CONNECTED",
        "L2_NORMALIZATION",
        "LOGISTIC",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MUL",
        "PACK",
        "PAD",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SQUARED_DIFFERENCE",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "TANH",
        "TRANSPOSE_CONV",
    }
)
"""TFLite builtins the Edge TPU compiler maps (Coral's "supported operations" table, mirrored by
Axis' ARTPEC-7 list). DEQUANTIZE is not among them: a full-integer model has none."""

_FILE_NAMES: dict[str, str] = {
    "onnx-fp32": "model_fp32.onnx",
    "onnx-int8": "model_int8.onnx",
    "tflite-int8": "model_int8.tflite",
    "tensorrt-fp16": "model_fp16.plan",
    "tensorrt-fp32": "model_fp32.plan",
}
_NORMALIZATION_NOTES = {
    "none": "the model takes IQ as stored by the dataset (float32, row 0 I, row 1 Q, zero "
    "post-padded / post-truncated to 3000 samples), without scaling",
    "unit_rms": "trained on edge-tc synthetic packets, which model a receiver's AGC (unit signal "
    "power, +-6 dB gain, noise added): scale each received packet to unit mean power over its "
    "own samples (not the zero padding) before the model",
}
SYNTHETIC_GENERATOR = "synthetic"
"""What the generator field of an edge-tc synthetic dataset's description contains
(`dataset.json`: "edge-tc 0.1.0 synthetic 802.11")."""


def input_normalization(data_description: Mapping[str, Any]) -> str:
    """The input level of a model trained on the described data: unit_rms for edge-tc synthetic
    datasets (AGC-level packets), none otherwise (e.g. the papers' int16 captures as stored)."""
    training = data_description.get("training_dataset", data_description)
    generator = str(training.get("generator", "")) if isinstance(training, Mapping) else ""
    return "unit_rms" if SYNTHETIC_GENERATOR in generator.lower() else "none"


def _require(module: str, what: str) -> Any:
    """Import an optional export dependency, or say which extra provides it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise EdgeTcError(f"{what} needs {module}: {TRAIN_EXTRA_MISSING} ({exc})") from exc


# ---------------------------------------------------------------------------- packets and metrics


@dataclass(frozen=True)
class Packets:
    """Packets in memory: `x` (N, 2, L) float32 and per-task labels (N,) int64."""

    x: np.ndarray
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.x)


def gather_packets(dataset: Any, indices: Sequence[int] | np.ndarray) -> Packets:
    """Read `dataset[i]` (items `(x (2, L), {task: class})`) for `indices` into memory."""
    xs: list[np.ndarray] = []
    labels: dict[str, list[int]] = {t: [] for t in TASK_NAMES}
    for i in indices:
        x, y = dataset[int(i)]
        xs.append(np.asarray(x, dtype=np.float32))
        for t in TASK_NAMES:
            labels[t].append(int(y[t]))
    if not xs:
        raise ValueError("no packets selected")
    return Packets(np.stack(xs), {t: np.asarray(v, dtype=np.int64) for t, v in labels.items()})


def pick_packets(
    calib_ds: Any, heldout_ds: Any, calib: int, heldout: int, seed: int = 0
) -> tuple[Packets, Packets]:
    """Random calibration and held-out packets; disjoint when both come from one dataset."""
    if calib < 1 or heldout < 1:
        raise ValueError(f"calibration and held-out counts must be >= 1, got {calib}, {heldout}")
    rng = np.random.default_rng(seed)
    if calib_ds is heldout_ds:
        if calib + heldout > len(calib_ds):
            raise ValueError(
                f"{calib} calibration + {heldout} held-out packets > the dataset's "
                f"{len(calib_ds)}; pass fewer or a separate held-out dataset"
            )
        order = rng.permutation(len(calib_ds))
        calib_idx, held_idx = order[:calib], order[calib : calib + heldout]
    else:
        calib_idx = rng.permutation(len(calib_ds))[:calib]
        held_idx = rng.permutation(len(heldout_ds))[:heldout]
    return gather_packets(calib_ds, np.sort(calib_idx)), gather_packets(
        heldout_ds, np.sort(held_idx)
    )


def top1_agreement(
    reference: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """Per task, the fraction of packets whose arg-max class is the same in both."""
    return {t: float(np.mean(reference[t].argmax(-1) == other[t].argmax(-1))) for t in reference}


def accuracy(probs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per task top-1 accuracy of `probs` (N, classes) against `labels` (N,)."""
    return {t: float(np.mean(p.argmax(-1) == labels[t])) for t, p in probs.items()}


# --------------------------------------------------------------------------------- PyTorch side


def model_tasks(model: nn.Module, extra: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """Tasks the model predicts: a multi-task model's output keys, else the checkpoint's task."""
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 2, INPUT_LENGTH))
    if isinstance(out, dict):
        unknown = sorted(set(out) - set(TASK_NAMES))
        if unknown:
            raise ModelError(f"model outputs unknown tasks {unknown}")
        return tuple(t for t in TASK_NAMES if t in out)
    tasks = list((extra or {}).get("tasks") or [])
    if len(tasks) != 1 or tasks[0] not in TASK_BY_NAME:
        raise ModelError(
            f"a single-output model needs its task in the checkpoint's extra 'tasks', got {tasks}"
        )
    if out.shape[-1] != TASK_BY_NAME[tasks[0]].num_classes:
        raise ModelError(
            f"model has {out.shape[-1]} outputs, task {tasks[0]!r} has "
            f"{TASK_BY_NAME[tasks[0]].num_classes} classes"
        )
    return (tasks[0],)


class Probabilities(nn.Module):
    """`model` with a softmax per task, returning a tuple in `tasks` order (export wrapper)."""

    def __init__(self, model: nn.Module, tasks: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.tasks = tuple(tasks)

    def forward(self, iq: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(iq)
        if isinstance(out, dict):
            return tuple(torch.softmax(out[t], dim=-1) for t in self.tasks)
        return (torch.softmax(out, dim=-1),)


def torch_probabilities(
    model: nn.Module, x: np.ndarray, tasks: Sequence[str], batch: int = 256
) -> dict[str, np.ndarray]:
    """Per-task probabilities of the PyTorch model for packets `x` (N, 2, L)."""
    wrapped = Probabilities(model, tasks).eval()
    parts: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    with torch.no_grad():
        for start in range(0, len(x), batch):
            outs = wrapped(torch.from_numpy(np.ascontiguousarray(x[start : start + batch])))
            for t, o in zip(tasks, outs, strict=True):
                parts[t].append(o.numpy())
    return {t: np.concatenate(v) for t, v in parts.items()}


# ------------------------------------------------------------------------------------------- ONNX


def export_onnx_fp32(
    model: nn.Module, path: str | Path, tasks: Sequence[str], *, opset: int = ONNX_OPSET
) -> Path:
    """ONNX with input `iq` (batch, 2, L) and softmax outputs named after `tasks`.

    `opset >= 18` uses the torch.export-based exporter (PyTorch's maintained one); a lower
    opset, e.g. 13 for the TensorRT 8.x parser of JetPack 4, falls back to the deprecated
    TorchScript exporter, since the former cannot down-convert BatchNormalization.
    """
    path = Path(path)
    wrapped = Probabilities(model, tasks).eval()
    example = (torch.zeros(2, 2, INPUT_LENGTH),)
    names = list(tasks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if opset >= 18:
            torch.onnx.export(
                wrapped,
                example,
                str(path),
                input_names=["iq"],
                output_names=names,
                opset_version=opset,
                dynamo=True,
                external_data=False,
                dynamic_shapes={"iq": {0: torch.export.Dim("batch")}},
                verbose=False,
            )
        else:
            torch.onnx.export(
                wrapped,
                example,
                str(path),
                input_names=["iq"],
                output_names=names,
                opset_version=opset,
                dynamo=False,
                dynamic_axes={n: {0: "batch"} for n in ["iq", *names]},
            )
    return path


def onnx_session(path: str | Path) -> Any:
    """An onnxruntime CPU session for `path`."""
    ort = _require("onnxruntime", "running an ONNX export")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(
    path: str | Path, x: np.ndarray, tasks: Sequence[str], batch: int = 64
) -> dict[str, np.ndarray]:
    """Per-task outputs of an ONNX export for packets `x` (N, 2, L), fetched by name."""
    session = onnx_session(path)
    parts: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    for start in range(0, len(x), batch):
        outs = session.run(list(tasks), {"iq": np.ascontiguousarray(x[start : start + batch])})
        for t, o in zip(tasks, outs, strict=True):
            parts[t].append(np.asarray(o, dtype=np.float32))
    return {t: np.concatenate(v) for t, v in parts.items()}


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over packets, in small batches."""

    def __init__(self, x: np.ndarray, batch: int = 16) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [np.ascontiguousarray(x[i : i + batch]) for i in range(0, len(x), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"iq": batch}


def logit_layers(graph: Any) -> list[str]:
    """Names of the nodes whose output a Softmax takes: each head's last layer (its logits).

    The INT8 export leaves them in float: a head's last layer is a few hundred multiply-adds
    per packet, and quantizing it flipped near-tied classes. Measured on the pruned bundle's
    checkpoint (`train export`'s own check, 512 held-out packets): app agreement with PyTorch
    0.965 with it quantized, 0.992 in float; ONNX Runtime INT8 time per packet at batch 64 the
    same (0.092 / 0.092 ms, one thread); calibrating with percentile or entropy instead of
    min-max did not help (0.967, 0.965)."""
    producer = {out: node for node in graph.node for out in node.output}
    return sorted(
        producer[node.input[0]].name
        for node in graph.node
        if node.op_type == "Softmax" and node.input and node.input[0] in producer
    )


def export_onnx_int8(fp32_path: str | Path, path: str | Path, calib_x: np.ndarray) -> Path:
    """Static INT8 quantization of an FP32 export: QDQ, per-channel weights, min-max ranges;
    each head's logit layer stays in float (`logit_layers`)."""
    quant = _require("onnxruntime.quantization", "ONNX INT8 export")
    onnx = _require("onnx", "ONNX INT8 export")
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="edge-tc-onnx-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant.quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        # BatchNorm after a ReLU cannot fuse into the conv and has no int8 kernel: keep it float.
        # Softmax stays float too: int8 probabilities (1/256 steps) tie the near-equal classes
        # of the app head and its top-1 flipped on 5.5 % of held-out packets (0.9453 agreement)
        graph = onnx.load(str(prepared)).graph
        op_types = {n.op_type for n in graph.node}
        quant.quantize_static(
            str(prepared),
            str(path),
            _CalibrationReader(calib_x),
            op_types_to_quantize=sorted(op_types - {"BatchNormalization", "Softmax"}),
            nodes_to_exclude=logit_layers(graph),
            quant_format=quant.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quant.QuantType.QInt8,
            weight_type=quant.QuantType.QInt8,
            calibrate_method=quant.CalibrationMethod.MinMax,
        )
    return path


def onnx_io(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(input spec, task -> output spec) of an ONNX export, for the manifest."""
    session = onnx_session(path)
    (inp,) = session.get_inputs()
    dims = [d if isinstance(d, int) else "batch" for d in inp.shape]
    spec_in = {"name": inp.name, "shape": dims, "dtype": "float32", "quantization": None}
    spec_in["layout"] = "NCW"
    outputs = {}
    for o in session.get_outputs():
        shape = [d if isinstance(d, int) else "batch" for d in o.shape]
        outputs[o.name] = {"name": o.name, "shape": shape, "dtype": "float32", "quantization": None}
    return spec_in, outputs


# ----------------------------------------------------------------------------------------- TFLite


class _TfliteGraph:
    """A one-subgraph float TFLite model built with LiteRT's flatbuffer object API."""

    def __init__(self) -> None:
        self.fb = _require("ai_edge_litert.schema_py_generated", "TFLite export")
        fb = self.fb
        self.model = fb.ModelT()
        self.model.version = 3
        self.model.description = "edge-tc"
        self.model.buffers = [fb.BufferT()]  # buffer 0: the empty sentinel
        self.model.operatorCodes = []
        self.sub = fb.SubGraphT()
        self.sub.tensors, self.sub.operators, self.sub.inputs, self.sub.outputs = [], [], [], []
        self.sub.name = "main"
        self.model.subgraphs = [self.sub]
        self._codes: dict[int, int] = {}

    def tensor(self, shape: Sequence[int], name: str, data: np.ndarray | None = None) -> int:
        fb = self.fb
        t = fb.TensorT()
        t.shape = [int(s) for s in shape]
        t.name = name
        t.type = fb.TensorType.FLOAT32
        t.buffer = 0
        if data is not None:
            if data.dtype == np.int32:
                t.type = fb.TensorType.INT32
            else:
                data = data.astype(np.float32)
            if tuple(data.shape) != tuple(t.shape):
                raise AssertionError(f"{name}: data {data.shape} != tensor {t.shape}")
            buf = fb.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.model.buffers.append(buf)
            t.buffer = len(self.model.buffers) - 1
        self.sub.tensors.append(t)
        return len(self.sub.tensors) - 1

    def op(
        self,
        code: int,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options_type: int = 0,
        options: Any = None,
    ) -> None:
        fb = self.fb
        if code not in self._codes:
            oc = fb.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)  # the int8 field saturates at 127
            oc.version = 1
            self.model.operatorCodes.append(oc)
            self._codes[code] = len(self.model.operatorCodes) - 1
        o = fb.OperatorT()
        o.opcodeIndex = self._codes[code]
        o.inputs, o.outputs = list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.sub.operators.append(o)

    def to_bytes(self) -> bytes:
        fbu = _require("ai_edge_litert.tools.flatbuffer_utils", "TFLite export")
        return bytes(fbu.convert_object_to_bytearray(self.model))


def _bn_affine(bn: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BatchNorm as y = a * x + b per channel."""
    assert isinstance(bn, nn.BatchNorm1d)
    mean, var = bn.running_mean, bn.running_var
    assert mean is not None and var is not None
    a = torch.ones_like(var) if bn.weight is None else bn.weight.detach().clone()
    a = a / torch.sqrt(var + bn.eps)
    b = -mean * a if bn.bias is None else bn.bias.detach() - mean * a
    return a.double().numpy(), b.double().numpy()


def _trunk_blocks(trunk: ConvTrunk1d) -> list[tuple[SameConv1d, nn.BatchNorm1d, nn.MaxPool1d]]:
    """ConvTrunk1d's (conv, ReLU, BN, max-pool, dropout) blocks, checked to be exactly that."""
    layers = list(trunk)
    if len(layers) % 5:
        raise ValueError(f"ConvTrunk1d of {len(layers)} layers is not (conv, ReLU, BN, pool, drop)")
    blocks = []
    for i in range(0, len(layers), 5):
        conv, relu, bn, pool, drop = layers[i : i + 5]
        ok = (
            isinstance(conv, SameConv1d)
            and conv.stride == (1,)
            and conv.dilation == (1,)
            and conv.groups == 1
            and isinstance(relu, nn.ReLU)
            and isinstance(bn, nn.BatchNorm1d)
            and isinstance(pool, nn.MaxPool1d)
            and pool.padding == 0
            and pool.dilation == 1
            and not pool.ceil_mode
            and isinstance(drop, nn.Dropout)
        )
        if not ok:
            raise ValueError(f"ConvTrunk1d block {i // 5} is not conv, ReLU, BN, max-pool, dropout")
        assert isinstance(conv, SameConv1d) and isinstance(bn, nn.BatchNorm1d)
        assert isinstance(pool, nn.MaxPool1d)
        blocks.append((conv, bn, pool))
    return blocks


def _pool_size(value: Any) -> int:
    return int(value if isinstance(value, int) else value[0])


def _heads(model: nn.Module, tasks: Sequence[str]) -> tuple[ConvTrunk1d, dict[str, DenseHead]]:
    """The shared trunk and each task's head of an mtl1d (`heads`) or stl1d (`head`) model."""
    trunk = getattr(model, "trunk", None)
    found: dict[str, Any] = {}
    heads_dict = getattr(model, "heads", None)
    if isinstance(heads_dict, nn.ModuleDict):
        found = {t: heads_dict[t] for t in tasks if t in heads_dict}
    elif len(tasks) == 1:
        found = {tasks[0]: getattr(model, "head", None)}
    heads = {t: h for t, h in found.items() if isinstance(h, DenseHead)}
    if not isinstance(trunk, ConvTrunk1d) or len(heads) != len(tasks):
        raise ValueError(
            f"tflite-int8 export lowers ConvTrunk1d + DenseHead models (mtl1d, stl1d), "
            f"not {type(model).__name__}"
        )
    return trunk, heads


def equalize_heads(model: nn.Module, tasks: Sequence[str]) -> nn.Module:
    """An eval-mode copy of `model` whose dense heads quantize well; the same function in float.

    Each head BatchNorm (after a ReLU) folds into the next Linear and becomes an Identity; then
    cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019) rescales every
    hidden unit k by s_k = sqrt(r1_k / r2_k) (r1: its row of the Linear before the ReLU, r2: its
    column of the Linear after): ReLU(z / s) * s = ReLU(z), so the function is unchanged while
    the two weight ranges meet in the middle. Without it, a BatchNorm over a rarely firing unit
    (tiny running variance; DTP starves easy tasks' heads into those) folds a column 100x larger
    than the rest into the next layer, and per-tensor INT8 weights round everything else away.
    Models other than ConvTrunk1d + DenseHead come back unchanged (not copied).
    """
    try:
        _, heads = _heads(model, tasks)
    except ValueError:
        return model
    model = copy.deepcopy(model).eval()
    _, heads = _heads(model, tasks)
    with torch.no_grad():
        for head in heads.values():
            layers = list(head)
            linears = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
            for before, after in itertools.pairwise(linears):
                between = layers[before + 1 : after]
                relu = any(isinstance(m, nn.ReLU) for m in between)
                for i, m in enumerate(between, start=before + 1):
                    if isinstance(m, nn.BatchNorm1d):
                        a, c = (torch.from_numpy(v).float() for v in _bn_affine(m))
                        nxt = layers[after]
                        assert isinstance(nxt, nn.Linear) and nxt.bias is not None
                        nxt.bias.add_(nxt.weight @ c)
                        nxt.weight.mul_(a[None, :])
                        head[i] = nn.Identity()
                if not relu:
                    continue
                first, second = layers[before], layers[after]
                assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)
                r1 = first.weight.abs().amax(dim=1)
                r2 = second.weight.abs().amax(dim=0)
                ok = (r1 > 0) & (r2 > 0)
                scale = torch.where(ok, torch.sqrt(r1 / r2.clamp_min(1e-30)), torch.ones_like(r1))
                first.weight.div_(scale[:, None])
                if first.bias is not None:
                    first.bias.div_(scale)
                second.weight.mul_(scale[None, :])
    return model


class ChannelShift(nn.Module):
    """x + shift per channel: what is left of a BatchNorm whose scale folded into the conv."""

    shift: torch.Tensor

    def __init__(self, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("shift", shift.reshape(1, -1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


def fold_trunk_batchnorm(model: nn.Module, tasks: Sequence[str]) -> nn.Module:
    """A copy whose trunk BatchNorms (after a ReLU) fold into the conv before, for ONNX INT8.

    With every scale a > 0, a * relu(z) + c = relu(a * z) + c: the conv takes the scale and a
    `ChannelShift` (one int8 Add) keeps c in place, so the shift still meets the next conv's zero
    padding as it did. ONNX Runtime has no int8 BatchNormalization: left alone, each block runs
    it in float between a dequantize and a quantize. A block with a non-positive scale keeps its
    BatchNorm. Models other than ConvTrunk1d + DenseHead come back unchanged (not copied).
    """
    try:
        trunk, _ = _heads(model, tasks)
        _trunk_blocks(trunk)
    except ValueError:
        return model
    model = copy.deepcopy(model).eval()
    trunk, _ = _heads(model, tasks)
    with torch.no_grad():
        for conv, bn, _pool in _trunk_blocks(trunk):
            a, c = (torch.from_numpy(v).float() for v in _bn_affine(bn))
            if not bool(torch.all(a > 0)):
                continue
            conv.weight.mul_(a[:, None, None])
            if conv.bias is not None:
                conv.bias.mul_(a)
            index = next(i for i, m in enumerate(trunk) if m is bn)
            trunk[index] = ChannelShift(c)
    return model


def fold_trunk_shifts(model: nn.Module, tasks: Sequence[str]) -> nn.Module:
    """A copy of a `fold_trunk_batchnorm` model whose `ChannelShift`s fold into what follows.

    A shift c before the next conv becomes that conv's bias + W c summed over the kernel: the
    same function except at the conv's zero padding, where the shifted input had c and the new
    one has 0, so the K // 2 outputs at each end of the layer differ (by W c over the padded
    taps). The shift after the last block folds exactly into every head's first Linear (its
    bias + W c summed over the positions). What is left is Conv(+ReLU) -> MaxPool -> Conv: int8
    end to end under QDQ. The border change is what the INT8 export's agreement check measures
    with the rest of the quantization. Other models come back unchanged (not copied).
    """
    try:
        trunk, heads = _heads(model, tasks)
    except ValueError:
        return model
    if not any(isinstance(m, ChannelShift) for m in trunk):
        return model
    model = copy.deepcopy(model).eval()
    trunk, heads = _heads(model, tasks)
    pending: torch.Tensor | None = None
    with torch.no_grad():
        for index, layer in enumerate(list(trunk)):
            if isinstance(layer, ChannelShift):
                shift = layer.shift.reshape(-1)
                pending = shift if pending is None else pending + shift
                trunk[index] = nn.Identity()
            elif isinstance(layer, nn.Conv1d) and pending is not None:
                if layer.bias is None:
                    layer.bias = nn.Parameter(torch.zeros(layer.out_channels))
                layer.bias.add_(layer.weight.sum(dim=2) @ pending)
                pending = None
            elif pending is not None and not isinstance(layer, nn.MaxPool1d | nn.Dropout):
                raise ValueError(f"a channel shift meets {type(layer).__name__}; cannot fold it")
        if pending is not None:
            for head in heads.values():
                first = next(m for m in head if isinstance(m, nn.Linear))
                w = first.weight.reshape(first.out_features, len(pending), -1)  # (out, C, L)
                assert first.bias is not None
                first.bias.add_(w.sum(dim=2) @ pending)
    return model


def tflite_float_model(model: nn.Module, tasks: Sequence[str]) -> bytes:
    """The model as a float32 TFLite graph of Edge-TPU-mappable ops, batch 1, NHWC input.

    Input `iq` (1, 1, L, 2): the packet's I and Q rows as the two channels. Each Conv1d becomes
    CONV_2D with a (1, K) kernel and SAME padding (Keras' rule, as `SameConv1d`), ReLU fused.
    The BatchNorm that follows the ReLU (paper 1's order) is folded exactly: its scale into the
    conv when all of it is positive (a * relu(z) = relu(a * z)), its shift carried through the
    max-pool and added before the next conv (ADD; the next conv zero-pads the shifted values) or
    folded into the dense layers after the flatten; a non-positive scale is kept as MUL + ADD
    before the pool. BatchNorm in the heads folds into the next dense layer. Dropout vanishes.
    Outputs: SOFTMAX tensors named after the tasks.
    """
    fb_graph = _TfliteGraph()
    fb = fb_graph.fb
    ops, opts, act = fb.BuiltinOperator, fb.BuiltinOptions, fb.ActivationFunctionType
    trunk, heads = _heads(model, tasks)
    length, channels = INPUT_LENGTH, 2
    current = fb_graph.tensor([1, 1, length, channels], "iq")
    fb_graph.sub.inputs = [current]
    pending_shift: np.ndarray | None = None

    def add_const(x: int, shape: list[int], vec: np.ndarray, name: str, code: int) -> int:
        const = fb_graph.tensor([1, 1, 1, len(vec)], f"{name}/const", vec.reshape(1, 1, 1, -1))
        out = fb_graph.tensor(shape, name)
        if code == ops.ADD:
            o: Any = fb.AddOptionsT()
            fb_graph.op(code, [x, const], [out], opts.AddOptions, o)
        else:
            o = fb.MulOptionsT()
            fb_graph.op(code, [x, const], [out], opts.MulOptions, o)
        o.fusedActivationFunction = act.NONE
        return out

    for i, (conv, bn, pool) in enumerate(_trunk_blocks(trunk)):
        if pending_shift is not None:
            current = add_const(
                current, [1, 1, length, channels], pending_shift, f"trunk{i}/shift_in", ops.ADD
            )
            pending_shift = None
        weight = conv.weight.detach().double().numpy()  # (out, in, K)
        bias = (
            conv.bias.detach().double().numpy()
            if conv.bias is not None
            else np.zeros(weight.shape[0])
        )
        scale, shift = _bn_affine(bn)
        fold = bool(np.all(scale > 0))
        if fold:
            weight, bias = weight * scale[:, None, None], bias * scale
        out_channels, kernel = weight.shape[0], weight.shape[2]
        w_tfl = weight.transpose(0, 2, 1).reshape(out_channels, 1, kernel, channels)  # OHWI
        w_t = fb_graph.tensor(w_tfl.shape, f"trunk{i}/conv/weight", w_tfl)
        b_t = fb_graph.tensor([out_channels], f"trunk{i}/conv/bias", bias)
        conv_out = fb_graph.tensor([1, 1, length, out_channels], f"trunk{i}/conv")
        co = fb.Conv2DOptionsT()
        co.padding, co.strideH, co.strideW = fb.Padding.SAME, 1, 1
        co.dilationHFactor, co.dilationWFactor = 1, 1
        co.fusedActivationFunction = act.RELU
        fb_graph.op(ops.CONV_2D, [current, w_t, b_t], [conv_out], opts.Conv2DOptions, co)
        current, channels = conv_out, out_channels
        if not fold:
            shape = [1, 1, length, channels]
            current = add_const(current, shape, scale, f"trunk{i}/bn_scale", ops.MUL)
            current = add_const(current, shape, shift, f"trunk{i}/bn_shift", ops.ADD)
        k, s = _pool_size(pool.kernel_size), _pool_size(pool.stride)
        length = (length - k) // s + 1
        pooled = fb_graph.tensor([1, 1, length, channels], f"trunk{i}/pool")
        po = fb.Pool2DOptionsT()
        po.padding, po.strideH, po.strideW = fb.Padding.VALID, 1, s
        po.filterHeight, po.filterWidth = 1, k
        po.fusedActivationFunction = act.NONE
        fb_graph.op(ops.MAX_POOL_2D, [current], [pooled], opts.Pool2DOptions, po)
        current = pooled
        pending_shift = shift if fold else None

    features = length * channels
    # -1, not 1: the batch axis stays free, so the CPU interpreter can be resized to a batch
    # (engines/tflite.py); at batch 1 (the Edge TPU's) it is the same reshape
    shape_t = fb_graph.tensor([2], "flatten/shape", np.array([-1, features], dtype=np.int32))
    flat = fb_graph.tensor([1, features], "flatten")
    ro = fb.ReshapeOptionsT()
    ro.newShape = [-1, features]
    fb_graph.op(ops.RESHAPE, [current, shape_t], [flat], opts.ReshapeOptions, ro)

    outputs = []
    for task in tasks:
        skip = nn.Flatten | nn.Dropout | nn.Identity
        layers = [m for m in heads[task] if not isinstance(m, skip)]
        x, first = flat, True
        in_scale: np.ndarray | None = None
        in_shift: np.ndarray | None = pending_shift
        j = 0
        while j < len(layers):
            lin = layers[j]
            if not isinstance(lin, nn.Linear):
                raise ValueError(f"head {task!r}: expected Linear at layer {j}, got {lin}")
            w = lin.weight.detach().double().numpy()  # (out, in)
            b = lin.bias.detach().double().numpy() if lin.bias is not None else np.zeros(len(w))
            if first:
                # PyTorch flattens (C, L) channel-major, TFLite (L, C): permute the columns
                w = w.reshape(len(w), channels, length)
                if in_shift is not None:
                    b = b + w.sum(axis=2) @ in_shift
                w = w.transpose(0, 2, 1).reshape(len(w), features)
            else:
                if in_shift is not None:
                    b = b + w @ in_shift
                if in_scale is not None:
                    w = w * in_scale[None, :]
            relu = j + 1 < len(layers) and isinstance(layers[j + 1], nn.ReLU)
            j += 2 if relu else 1
            in_scale, in_shift = None, None
            if j < len(layers) and isinstance(layers[j], nn.BatchNorm1d):
                in_scale, in_shift = _bn_affine(layers[j])
                j += 1
            last = j >= len(layers)
            name = f"{task}/logits" if last else f"{task}/dense{j}"
            w_t = fb_graph.tensor(w.shape, f"{name}/weight", w)
            b_t = fb_graph.tensor([len(b)], f"{name}/bias", b)
            y = fb_graph.tensor([1, len(b)], name)
            fo = fb.FullyConnectedOptionsT()
            fo.fusedActivationFunction = act.RELU if relu else act.NONE
            fb_graph.op(ops.FULLY_CONNECTED, [x, w_t, b_t], [y], opts.FullyConnectedOptions, fo)
            x, first = y, False
        if in_scale is not None:
            raise ValueError(f"head {task!r} ends in a BatchNorm; expected a final Linear")
        probs = fb_graph.tensor([1, TASK_BY_NAME[task].num_classes], task)
        so = fb.SoftmaxOptionsT()
        so.beta = 1.0
        fb_graph.op(ops.SOFTMAX, [x], [probs], opts.SoftmaxOptions, so)
        outputs.append(probs)
    fb_graph.sub.outputs = outputs
    return fb_graph.to_bytes()


def nhwc_packet(x: np.ndarray) -> np.ndarray:
    """One packet (2, L) as the TFLite input (1, 1, L, 2): I, Q as channels."""
    return np.ascontiguousarray(x.T[None, None, :, :], dtype=np.float32)


def quantize_tflite(float_model: bytes, calib_x: np.ndarray) -> bytes:
    """Full-integer INT8 (int8 input and outputs) of a float TFLite model, calibrated on `calib_x`.

    TFLite's own calibrator and quantizer (what `tf.lite.TFLiteConverter` runs for
    `inference_input_type = tf.int8`), from `ai-edge-litert`'s calibration wrapper. That module
    is private to the wheel, hence the exact pin. Per-channel conv weights; per-tensor dense
    weights (the layout the Edge TPU compiler of the TF 2.x era was built for).
    """
    wrapper = _require(
        "ai_edge_litert._pywrap_tensorflow_lite_calibration_wrapper", "TFLite INT8 export"
    )
    calibrator = wrapper.CalibrationWrapper(float_model, [], [])
    calibrator.Prepare([[1, 1, INPUT_LENGTH, 2]])
    for packet in calib_x:
        calibrator.FeedTensor([nhwc_packet(packet)])
    int8 = np.dtype(np.int8).num
    return bytes(
        calibrator.QuantizeModel(
            int8,  # input type
            int8,  # output type
            False,  # allow_float: every op quantized
            int8,  # activations
            np.dtype(np.int32).num,  # bias
            False,  # disable_per_channel
            True,  # disable_per_channel_quantization_for_dense_layers
        )
    )


def export_tflite_int8(
    model: nn.Module, path: str | Path, tasks: Sequence[str], calib_x: np.ndarray
) -> Path:
    """Write the Edge TPU-ready full-integer TFLite model; ModelError if an op is not mappable."""
    path = Path(path)
    data = quantize_tflite(tflite_float_model(model, tasks), calib_x)
    off = sorted(set(tflite_ops(data)) - EDGETPU_OPS)
    if off:
        raise ModelError(f"{path}: ops {off} are not mapped by the Edge TPU compiler")
    path.write_bytes(data)
    return path


def tflite_ops(model: bytes | str | Path) -> list[str]:
    """Builtin op names of a TFLite model, in graph order."""
    fbu = _require("ai_edge_litert.tools.flatbuffer_utils", "reading a TFLite model")
    data = Path(model).read_bytes() if isinstance(model, str | Path) else model
    m = fbu.read_model_from_bytearray(bytearray(data))
    return [
        str(fbu.opcode_to_name(m, op.opcodeIndex)) for sub in m.subgraphs for op in sub.operators
    ]


def _interpreter(model: bytes | str | Path) -> Any:
    interpreter_mod = _require("ai_edge_litert.interpreter", "running a TFLite export")
    if isinstance(model, bytes):
        interp = interpreter_mod.Interpreter(model_content=model)
    else:
        interp = interpreter_mod.Interpreter(model_path=str(model))
    interp.allocate_tensors()
    return interp


def _quant_of(detail: Mapping[str, Any]) -> bundle_mod.QuantParams | None:
    scale, zero_point = detail["quantization"]
    return bundle_mod.QuantParams(float(scale), int(zero_point)) if scale else None


def run_tflite(
    model: bytes | str | Path, x: np.ndarray, tasks: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-task outputs (dequantized to float) of a TFLite export, one packet at a time."""
    interp = _interpreter(model)
    (inp,) = interp.get_input_details()
    outs = {d["name"]: d for d in interp.get_output_details()}
    missing = [t for t in tasks if t not in outs]
    if missing:
        raise ModelError(f"TFLite model has no outputs named {missing}; it has {sorted(outs)}")
    in_q = _quant_of(inp)
    parts: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    for packet in x:
        value = nhwc_packet(packet)
        if in_q is not None:
            value = in_q.quantize(value, inp["dtype"])
        interp.set_tensor(inp["index"], value)
        interp.invoke()
        for t in tasks:
            raw = interp.get_tensor(outs[t]["index"])
            q = _quant_of(outs[t])
            parts[t].append(q.dequantize(raw) if q is not None else raw.astype(np.float32))
    return {t: np.concatenate(v) for t, v in parts.items()}


def tflite_io(path: str | Path, tasks: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input spec, task -> output spec) of a TFLite export, with int8 scale/zero-point."""
    interp = _interpreter(path)

    def spec(d: Mapping[str, Any]) -> dict[str, Any]:
        q = _quant_of(d)
        return {
            "name": str(d["name"]),
            "shape": [int(s) for s in d["shape"]],
            "dtype": np.dtype(d["dtype"]).name,
            "quantization": None if q is None else {"scale": q.scale, "zero_point": q.zero_point},
        }

    (inp,) = interp.get_input_details()
    spec_in = {**spec(inp), "layout": "NHWC"}
    outs = {d["name"]: spec(d) for d in interp.get_output_details()}
    return spec_in, {t: outs[t] for t in tasks}


# --------------------------------------------------------------------------------------- TensorRT


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise EdgeTcError(
            f"engine 'tensorrt' unavailable: {exc}; install TensorRT on the target GPU "
            "(JetPack ships it; elsewhere pip install 'edge-tc[tensorrt]')"
        ) from exc
    return tensorrt


def build_tensorrt_plan(
    onnx_path: str | Path,
    out_path: str | Path,
    *,
    precision: str = "fp16",
    min_batch: int = 1,
    opt_batch: int = 64,
    max_batch: int = 256,
    workspace_bytes: int = 1 << 30,
) -> Path:
    """Build a TensorRT plan from an FP32 ONNX export, with a dynamic batch profile on `iq`.

    Run it on the GPU that will execute the plan: plans are tied to the TensorRT version and
    the device. FP16 uses the builder's FP16 flag (TensorRT 8.x-10.x).
    """
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(
            f"want 1 <= min <= opt <= max batch, got {min_batch, opt_batch, max_batch}"
        )
    trt = _import_tensorrt()
    from engines.tensorrt import build_plan  # the engine's builder: one place for 8.x/10.x

    plan = build_plan(
        trt, Path(onnx_path).read_bytes(), bundle_mod.INPUT_NAME, (2, INPUT_LENGTH), precision,
        (min_batch, opt_batch, max_batch), workspace_bytes, str(onnx_path),
    )  # fmt: skip
    out_path = Path(out_path)
    out_path.write_bytes(plan)
    return out_path


def run_tensorrt(
    plan_path: str | Path, x: np.ndarray, tasks: Sequence[str], batch: int = 64
) -> dict[str, np.ndarray]:
    """Per-task outputs of a TensorRT plan (TensorRT >= 8.5 tensor API; CUDA memory via torch)."""
    trt = _import_tensorrt()
    if not torch.cuda.is_available():
        raise EdgeTcError("engine 'tensorrt' unavailable: torch sees no CUDA device")
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(plan_path).read_bytes())
    if engine is None:
        raise ModelError(f"{plan_path}: TensorRT cannot load this plan here")
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()
    parts: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    for start in range(0, len(x), batch):
        xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch])).cuda()
        context.set_input_shape("iq", tuple(xb.shape))
        context.set_tensor_address("iq", xb.data_ptr())
        buffers = {}
        for t in tasks:
            shape = tuple(context.get_tensor_shape(t))
            buffers[t] = torch.empty(shape, dtype=torch.float32, device="cuda")
            context.set_tensor_address(t, buffers[t].data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise ModelError(f"{plan_path}: TensorRT execution failed")
        stream.synchronize()
        for t in tasks:
            parts[t].append(buffers[t].cpu().numpy())
    return {t: np.concatenate(v) for t, v in parts.items()}


def _tensorrt_target() -> dict[str, Any]:
    trt = _import_tensorrt()
    return {"tensorrt_version": str(trt.__version__), "device": torch.cuda.get_device_name(0)}


# ----------------------------------------------------------------------------------------- bundle


def check_agreement(
    fmt: str, agreement: Mapping[str, float], required: float, packets: int
) -> None:
    """ModelError naming the export, the tasks and the figures when agreement is below the bar."""
    low = {t: round(v, 4) for t, v in agreement.items() if v < required}
    if low:
        raise ModelError(
            f"{fmt} export disagrees with the PyTorch model: top-1 agreement on {packets} "
            f"held-out packets {low} is below the required {required}"
        )


def _created_by() -> str:
    try:
        return f"edge-tc {metadata.version('edge-tc')}"
    except metadata.PackageNotFoundError:
        return "edge-tc"


def export_bundle(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = DEFAULT_FORMATS,
    calib_ds: Any,
    heldout_ds: Any,
    data_description: Mapping[str, Any],
    calib_packets: int = 256,
    heldout_packets: int = 512,
    seed: int = 0,
    onnx_opset: int = ONNX_OPSET,
    tensorrt_batches: tuple[int, int, int] = (1, 64, 256),
    agreement_required: Mapping[str, float] | None = None,
) -> Path:
    """Export `checkpoint` to `formats` in the new bundle directory `out_dir` and return it.

    Calibration packets come from `calib_ds` (the training data), held-out packets from
    `heldout_ds` (disjoint from the calibration ones when it is the same dataset). Every export
    runs the held-out packets in its real runtime; an agreement with PyTorch below
    `agreement_required` (default `AGREEMENT_REQUIRED`) aborts with ModelError and leaves no
    bundle. `data_description` (dataset seed, size, generator, ...) goes into the manifest.
    """
    unknown = [f for f in formats if f not in bundle_mod.EXPORTS]
    if unknown or not formats:
        raise ValueError(f"unknown export formats {unknown}; choose from {list(EXPORT_FORMATS)}")
    required = {**AGREEMENT_REQUIRED, **(agreement_required or {})}
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose another --out")
    model, spec, extra = load_checkpoint(checkpoint)
    tasks = model_tasks(model, extra)
    normalization = input_normalization(data_description)
    calib, heldout = pick_packets(calib_ds, heldout_ds, calib_packets, heldout_packets, seed)
    reference = torch_probabilities(model, heldout.x, tasks)
    info = describe(model)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        entries = _export_all(
            equalize_heads(model, tasks), tasks, formats, staging, calib, heldout, reference,
            required, onnx_opset, tensorrt_batches,
        )  # fmt: skip
        manifest = {
            "format": bundle_mod.BUNDLE_FORMAT,
            "format_version": bundle_mod.BUNDLE_FORMAT_VERSION,
            "created_by": _created_by(),
            "schema": as_dict(),
            "input": {
                "name": bundle_mod.INPUT_NAME,
                "shape": bundle_mod.INPUT_SHAPE,
                "dtype": "float32",
                "rows": bundle_mod.INPUT_ROWS,
                "normalization": {
                    "kind": normalization,
                    "note": _NORMALIZATION_NOTES[normalization],
                },
            },
            "model": {
                "architecture": spec.name,
                "kwargs": ModelSpec(spec.name, spec.kwargs).to_dict()["kwargs"],
                "tasks": list(tasks),
                "params": int(info["params"]),
                "flops": int(info["flops"]),
                "test_accuracy": accuracy(reference, heldout.labels),
            },
            "evaluation": {
                "heldout_packets": len(heldout),
                "calibration_packets": len(calib),
                "heldout_source": "same dataset, disjoint from calibration"
                if calib_ds is heldout_ds
                else "separate held-out dataset",
                "agreement_required": required,
            },
            "training_data": json.loads(json.dumps(dict(data_description))),
            "models": entries,
        }
        if isinstance(extra.get("pruning"), dict):  # train prune's provenance record
            manifest["pruning"] = extra["pruning"]
        bundle_mod.write_manifest(staging, manifest)
        if out.exists():
            out.rmdir()
        staging.replace(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _export_all(
    model: nn.Module,
    tasks: tuple[str, ...],
    formats: Sequence[str],
    staging: Path,
    calib: Packets,
    heldout: Packets,
    reference: dict[str, np.ndarray],
    required: Mapping[str, float],
    onnx_opset: int,
    tensorrt_batches: tuple[int, int, int],
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    needs_fp32_onnx = any(f != "tflite-int8" for f in formats)
    scratch = Path(tempfile.mkdtemp(prefix="edge-tc-export-"))
    try:
        fp32_onnx = scratch / "model_fp32.onnx"
        if needs_fp32_onnx:
            export_onnx_fp32(model, fp32_onnx, tasks, opset=onnx_opset)
        int8_source = scratch / "model_fp32_folded.onnx"
        if "onnx-int8" in formats:
            folded = fold_trunk_shifts(fold_trunk_batchnorm(model, tasks), tasks)
            export_onnx_fp32(folded, int8_source, tasks, opset=onnx_opset)
        for fmt in formats:
            kind, precision = bundle_mod.EXPORTS[fmt]
            name = _FILE_NAMES[fmt]
            path = staging / name
            target = None
            if fmt == "onnx-fp32":
                shutil.copyfile(fp32_onnx, path)
            elif fmt == "onnx-int8":
                export_onnx_int8(int8_source, path, calib.x)
            elif fmt == "tflite-int8":
                export_tflite_int8(model, path, tasks, calib.x)
            else:
                lo, opt, hi = tensorrt_batches
                build_tensorrt_plan(
                    fp32_onnx, path, precision=precision, min_batch=lo, opt_batch=opt, max_batch=hi
                )
                target = {**_tensorrt_target(), "batch_profile": [lo, opt, hi]}
            if kind == "onnx":
                probs = run_onnx(path, heldout.x, tasks)
                spec_in, outputs = onnx_io(path)
            elif kind == "tflite":
                probs = run_tflite(path, heldout.x, tasks)
                spec_in, outputs = tflite_io(path, tasks)
            else:
                probs = run_tensorrt(path, heldout.x, tasks, batch=tensorrt_batches[2])
                spec_in, outputs = onnx_io(fp32_onnx)
            agreement = top1_agreement(reference, probs)
            check_agreement(fmt, agreement, required[precision], len(heldout))
            entry: dict[str, Any] = {
                "file": name,
                "format": kind,
                "precision": precision,
                "input": spec_in,
                "outputs": {t: outputs[t] for t in tasks},
                "output_kind": "probabilities",
                "test_accuracy": accuracy(probs, heldout.labels),
                "agreement": agreement,
            }
            if target is not None:
                entry["target"] = target
            entries.append(entry)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return entries

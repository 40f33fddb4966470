"""TFLite backend (config `type = "tflite"`): LiteRT on the CPU (XNNPACK) or the Coral Edge TPU.

The interpreter comes from `tflite_runtime` or `ai_edge_litert`, whichever is installed
(`tflite_runtime` first: on a Coral host it is the build matched to libedgetpu). On the CPU the
interpreter applies XNNPACK by default (`xnnpack = false` turns it off). `device = "edgetpu"`
loads the Edge TPU delegate, `load_delegate("libedgetpu.so.1", {"device": "usb:0"})`.

A model compiled by `edgetpu_compiler` holds one `edgetpu-custom-op` that only the delegate can
run; such a model on the CPU is refused at load time with how to install the Edge TPU runtime,
found from the model's operator codes (`tflite_operator_codes`, a small flatbuffer reader that
needs no runtime). The Edge TPU takes batch 1, so a batch is run one packet at a time (the
engine base class splits it); int8 inputs are quantized and int8 outputs dequantized with the
manifest's scale and zero-point, which must equal the file's.

On the CPU a batch-1 model is run on whole batches (`max_batch`, default 64): one interpreter
per power of two up to it, each with its input resized once (`resize_tensor_input` +
`allocate_tensors`, about 0.5 ms: too slow to pay per call), and a batch of n packets split by
the binary digits of n (37 = 32 + 4 + 1), so nothing is padded and nothing resized on the hot
path. A Reshape whose constant target shape pins the batch axis to 1 (bundles exported before
issue 13 flatten to [1, features]) is made batch-generic ([-1, features]) in the bytes handed
to those interpreters; the batch-1 computation is unchanged. A model that still cannot be
resized runs one packet per call, and `info.device` says why.
"""

from __future__ import annotations

import ctypes
import importlib
import math
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np

from edge_core.bundle import Bundle, BundleModel, TensorSpec
from edge_core.errors import ModelError
from engines.base import (
    Backend,
    Engine,
    EngineConfig,
    EngineInfo,
    InputSpec,
    batch_limits,
    check_tensor,
    layout_adapter,
    runtime_version,
    select_model,
    unavailable,
)

KEY = "tflite"
INSTALL = (
    "'edge-tc[tflite]' (pip install 'edge-tc[tflite]', i.e. ai-edge-litert), or on a Coral host "
    "the tflite_runtime wheel built for its libedgetpu"
)
RUNTIME_MODULES = ("tflite_runtime.interpreter", "ai_edge_litert.interpreter")
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
EDGETPU_INSTALL = (
    "the Edge TPU runtime: apt-get install libedgetpu1-std from Coral's apt repository "
    "(https://coral.ai/software/#debian-packages), built for this TFLite runtime's version "
    "(docs/engines.md, 'Edge TPU')"
)
_EDGETPU_DEVICE = re.compile(r"^(|:\d+|usb(:\d+)?|pci(:\d+)?)$")
_TFLITE_IDENTIFIER = b"TFL3"


@dataclass(frozen=True)
class TfliteConfig(EngineConfig):
    """`[engine]` table for TFLite / LiteRT.

    precision: which .tflite file of the bundle. device: cpu or edgetpu. edgetpu_device: which
    Edge TPU ("" the first found, "usb", "usb:0", "pci:0", ":0"). delegate_library: the Edge TPU
    delegate's shared library. threads: interpreter threads, 0 = runtime default. xnnpack: use
    the runtime's default XNNPACK CPU delegate. max_batch: on the CPU, the most packets one
    interpreter call takes (1: one packet per call, as the Edge TPU always runs).
    """

    type: Literal["tflite"] = "tflite"
    precision: Literal["int8", "fp16", "fp32"] = "int8"
    device: Literal["cpu", "edgetpu"] = "cpu"
    edgetpu_device: str = ""
    delegate_library: str = "libedgetpu.so.1"
    threads: int = 0
    xnnpack: bool = True
    max_batch: int = 64

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not _EDGETPU_DEVICE.match(self.edgetpu_device):
            out.append(
                (
                    "edgetpu_device",
                    f"want '', ':N', 'usb[:N]' or 'pci[:N]', got {self.edgetpu_device!r}",
                )
            )
        elif self.edgetpu_device and self.device != "edgetpu":
            out.append(("edgetpu_device", "only used with device = 'edgetpu'"))
        if not self.delegate_library:
            out.append(("delegate_library", "want a library name, e.g. 'libedgetpu.so.1'"))
        if self.threads < 0:
            out.append(("threads", f"want >= 0 (0: runtime default), got {self.threads}"))
        if not 1 <= self.max_batch <= 4096:
            out.append(("max_batch", f"want 1..4096 packets per call, got {self.max_batch}"))
        return out


# ------------------------------------------------------------------------------ model inspection


class _FlatBuffer:
    """Just enough of the flatbuffer rules (root offset, vtables, vectors) to read a TFLite model.

    Positions are byte offsets into `data`; `field` gives a field's position or None when the
    table leaves it at its default. struct.error / IndexError on a corrupt buffer.
    """

    def __init__(self, data: bytes) -> None:
        if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
            raise ValueError("not a TFLite model (no 'TFL3' file identifier)")
        self.data = data
        self.root = self.u32(0)

    def u32(self, pos: int) -> int:
        return int(struct.unpack_from("<I", self.data, pos)[0])

    def field(self, table: int, index: int) -> int | None:
        vtable = table - struct.unpack_from("<i", self.data, table)[0]
        slot = 4 + 2 * index
        if slot >= struct.unpack_from("<H", self.data, vtable)[0]:
            return None
        offset = struct.unpack_from("<H", self.data, vtable + slot)[0]
        return table + offset if offset else None

    def scalar(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        pos = self.field(table, index)
        return default if pos is None else int(struct.unpack_from(fmt, self.data, pos)[0])

    def vector(self, table: int, index: int) -> tuple[int, int]:
        """(position of the first element, length) of a vector field; (0, 0) when absent."""
        pos = self.field(table, index)
        if pos is None:
            return 0, 0
        vector = pos + self.u32(pos)
        return vector + 4, self.u32(vector)

    def tables(self, table: int, index: int) -> list[int]:
        """The tables a vector-of-tables field points to."""
        first, count = self.vector(table, index)
        return [first + 4 * i + self.u32(first + 4 * i) for i in range(count)]

    def ints(self, table: int, index: int) -> list[int]:
        """An int32 vector field."""
        first, count = self.vector(table, index)
        return list(struct.unpack_from(f"<{count}i", self.data, first)) if count else []


def tflite_operator_codes(data: bytes) -> list[tuple[int, str | None]]:
    """(builtin code, custom code or None) of each operator code of a TFLite flatbuffer.

    Reads `Model.operator_codes` with the flatbuffer rules (root offset, vtables) so that no
    runtime is needed. ValueError when `data` is not a TFLite model.
    """
    fb = _FlatBuffer(data)
    try:
        codes = []
        for table in fb.tables(fb.root, 1):  # Model.operator_codes
            code = max(
                fb.scalar(table, 0, "<b"),  # deprecated_builtin_code
                fb.scalar(table, 3, "<i"),  # builtin_code
            )  # the schema's rule: the larger of the int8 and int32 fields
            name = None
            custom = fb.field(table, 1)
            if custom is not None:
                start = custom + fb.u32(custom)
                name = data[start + 4 : start + 4 + fb.u32(start)].decode("utf-8", "replace")
            codes.append((int(code), name))
    except (struct.error, IndexError) as exc:
        raise ValueError(f"not a valid TFLite flatbuffer: {exc}") from None
    return codes


_RESHAPE = 22  # BuiltinOperator.RESHAPE
_INT32 = 2  # TensorType.INT32


def batch_generic_reshapes(data: bytes) -> tuple[bytes, int]:
    """(model bytes, how many Reshapes changed): batch-1 Reshape targets made batch-generic.

    A Reshape of a tensor whose first axis is 1 to a constant int32 shape [1, ...] (and the
    same `new_shape` option) pins the batch to 1, so the interpreter cannot be resized; writing
    -1 there (the runtime infers it: the batch) changes nothing at batch 1. Patched in place in
    a copy, so the flatbuffer stays valid. Other models come back unchanged.
    ValueError when `data` is not a TFLite model.
    """
    fb = _FlatBuffer(data)
    out = bytearray(data)
    changed = 0
    try:
        codes = [code for code, _ in tflite_operator_codes(data)]
        buffers = fb.tables(fb.root, 4)  # Model.buffers
        for subgraph in fb.tables(fb.root, 2):  # Model.subgraphs
            tensors = fb.tables(subgraph, 0)
            for op in fb.tables(subgraph, 3):  # SubGraph.operators
                if codes[fb.scalar(op, 0, "<I")] != _RESHAPE:
                    continue
                inputs = fb.ints(op, 1)
                if len(inputs) != 2 or fb.ints(tensors[inputs[0]], 0)[:1] != [1]:
                    continue
                shape_tensor = tensors[inputs[1]]
                if fb.scalar(shape_tensor, 1, "<b") != _INT32:
                    continue
                first, count = fb.vector(buffers[fb.scalar(shape_tensor, 2, "<I")], 0)
                target = list(struct.unpack_from(f"<{count // 4}i", data, first))
                if count < 8 or target[0] != 1 or -1 in target:
                    continue
                struct.pack_into("<i", out, first, -1)
                options = fb.field(op, 4)  # Operator.builtin_options (ReshapeOptions)
                if options is not None:
                    table = options + fb.u32(options)
                    new_first, new_count = fb.vector(table, 0)
                    if new_count and fb.ints(table, 0)[0] == 1:
                        struct.pack_into("<i", out, new_first, -1)
                changed += 1
    except (struct.error, IndexError) as exc:
        raise ValueError(f"not a valid TFLite flatbuffer: {exc}") from None
    return bytes(out), changed


def is_edgetpu_compiled(custom_ops: Iterable[str | None]) -> bool:
    """True when a model's custom ops include the Edge TPU compiler's `edgetpu-custom-op`."""
    return EDGETPU_CUSTOM_OP in set(custom_ops)


def edgetpu_needed_message(path: str | Path) -> str:
    """Why an Edge-TPU-compiled model cannot run without the delegate, and what to do."""
    return (
        f"{path}: compiled for the Edge TPU (it holds an '{EDGETPU_CUSTOM_OP}'), which only the "
        f'Edge TPU delegate can run: set device = "edgetpu" in the engine config and '
        f"install {EDGETPU_INSTALL}; or run the bundle's uncompiled .tflite on the CPU"
    )


def interpreter_module() -> ModuleType:
    """`tflite_runtime.interpreter` or `ai_edge_litert.interpreter`, whichever imports."""
    errors = []
    for name in RUNTIME_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise unavailable(KEY, "; ".join(errors), INSTALL)


# ---------------------------------------------------------------------------------------- engine


class TfliteEngine(Engine):
    """TFLite interpreters; output tensors found by the manifest's names.

    `interpreter` runs one packet; `make_batched(n)` (None: batch 1 only) opens one resized to
    n packets, made once per power of two the first time a batch needs it (`warmup` makes all).
    """

    def __init__(
        self,
        interpreter: Any,
        model: BundleModel,
        tasks: tuple[str, ...],
        spec: InputSpec,
        info: EngineInfo,
        input_index: int,
        output_indices: dict[str, int],
        make_batched: Callable[[int], Any] | None = None,
    ) -> None:
        super().__init__(model, tasks, spec, info)
        self._interpreters: dict[int, Any] = {1: interpreter}
        self._make_batched = make_batched
        self._input_index = input_index
        self._output_indices = output_indices

    def _interpreter(self, size: int) -> Any:
        found = self._interpreters.get(size)
        if found is None:
            assert self._make_batched is not None
            found = self._interpreters[size] = self._make_batched(size)
        return found

    def _invoke(self, x: np.ndarray) -> Mapping[str, np.ndarray]:
        n = len(x)
        if n == 1 or self._make_batched is None:
            return self._run(self._interpreters[1], x)
        parts: list[Mapping[str, np.ndarray]] = []
        start = 0
        for bit in reversed(range(n.bit_length())):
            size = 1 << bit
            if n & size:
                parts.append(self._run(self._interpreter(size), x[start : start + size]))
                start += size
        if len(parts) == 1:
            return parts[0]
        return {t: np.concatenate([p[t] for p in parts]) for t in self.tasks}

    def _run(self, interpreter: Any, x: np.ndarray) -> dict[str, np.ndarray]:
        interpreter.set_tensor(self._input_index, x)
        interpreter.invoke()
        return {t: interpreter.get_tensor(i) for t, i in self._output_indices.items()}

    def warmup(self, batch: int = 1) -> None:
        """Open (and run once) every interpreter a batch of up to `batch` packets uses."""
        if self._make_batched is not None:
            size = 1
            while size <= min(batch, self.input_spec.max_batch):
                self._interpreter(size)
                size *= 2
        super().warmup(batch)

    def _release(self) -> None:
        self._interpreters.clear()
        self._make_batched = None


def _check_detail(where: str, role: str, want: TensorSpec, detail: Mapping[str, Any]) -> None:
    """The interpreter's tensor detail against the manifest: shape, dtype, scale/zero-point."""
    check_tensor(
        where, role, want, [int(d) for d in detail["shape"]], np.dtype(detail["dtype"]).name
    )
    scale, zero_point = detail["quantization"]
    have = (float(scale), int(zero_point)) if scale else None
    expected = (
        None
        if want.quantization is None
        else (want.quantization.scale, want.quantization.zero_point)
    )
    same = (have is None) == (expected is None) and (
        have is None
        or expected is None
        or (math.isclose(have[0], expected[0], rel_tol=1e-6) and have[1] == expected[1])
    )
    if not same:
        raise ModelError(
            f"{where}: {role} {want.name!r} has scale/zero-point {have} in the file, "
            f"the manifest says {expected}"
        )


def load_tflite(bundle: Bundle, config: TfliteConfig) -> TfliteEngine:
    """Open the bundle's .tflite of `config.precision` (or `config.model`) on CPU or Edge TPU."""
    model = select_model(bundle, config, "tflite", config.precision)
    where = str(model.path)
    layout = layout_adapter(model.input, where)[0]
    data = model.path.read_bytes()
    try:
        codes = tflite_operator_codes(data)
    except ValueError as exc:
        raise ModelError(f"{where}: {exc}") from None
    compiled = is_edgetpu_compiled(custom for _, custom in codes)
    if compiled and config.device != "edgetpu":
        raise ModelError(edgetpu_needed_message(where))
    runtime = interpreter_module()
    delegates = []
    if config.device == "edgetpu":
        options = {"device": config.edgetpu_device} if config.edgetpu_device else {}
        which = config.edgetpu_device or "the first one found"
        try:
            # a missing library is found here: load_delegate's Delegate would fail in __del__
            ctypes.CDLL(config.delegate_library)
            delegates.append(runtime.load_delegate(config.delegate_library, options))
        except (ValueError, OSError, RuntimeError) as exc:
            raise unavailable(
                KEY,
                f"cannot open the Edge TPU ({which}) through {config.delegate_library}: {exc}",
                f"{EDGETPU_INSTALL}, and attach the Edge TPU",
            ) from exc
    kwargs: dict[str, Any] = {"model_content": data}
    if config.threads:
        kwargs["num_threads"] = config.threads
    if delegates:
        kwargs["experimental_delegates"] = delegates
    if not config.xnnpack and hasattr(runtime, "OpResolverType"):
        kwargs["experimental_op_resolver_type"] = (
            runtime.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    try:
        interpreter = runtime.Interpreter(**kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        if EDGETPU_CUSTOM_OP in str(exc):
            raise ModelError(edgetpu_needed_message(where)) from exc
        raise ModelError(f"{where}: the TFLite runtime cannot load it: {exc}") from exc
    inputs = interpreter.get_input_details()
    if len(inputs) != 1 or inputs[0]["name"] != model.input.name:
        raise ModelError(
            f"{where}: want one input named {model.input.name!r}, the file has "
            f"{[d['name'] for d in inputs]}"
        )
    _check_detail(where, "input", model.input, inputs[0])
    outputs = {d["name"]: d for d in interpreter.get_output_details()}
    indices = {}
    for task, spec in model.outputs.items():
        found = outputs.get(spec.name)
        if found is None:
            raise ModelError(
                f"{where}: no output {spec.name!r} for task {task!r}; it has {sorted(outputs)}"
            )
        _check_detail(where, f"task {task!r} output", spec, found)
        indices[task] = int(found["index"])
    max_batch, fixed = batch_limits(model.input, 1)
    device = "cpu" + (" (xnnpack)" if config.xnnpack else "")
    make_batched = None
    if config.device == "cpu" and config.max_batch > 1 and max_batch == 1:
        make_batched, why = _batched_interpreters(
            runtime, kwargs, where, int(inputs[0]["index"]), indices
        )
        if make_batched is None:
            device += f", batch 1 ({why})"
        else:
            max_batch, fixed = config.max_batch, False
            device += f", batches of up to {max_batch}"
    spec_in = InputSpec(
        model.input.name, layout, model.input.shape, model.input.dtype, max_batch, fixed
    )
    if config.device == "edgetpu":
        device = f"edgetpu{':' + config.edgetpu_device if config.edgetpu_device else ''}"
        if not compiled:
            device += " (model not compiled for it: runs on the CPU)"
    package = importlib.import_module(runtime.__name__.split(".")[0])
    info = EngineInfo(
        KEY, model.precision, device, model.path.name, runtime_version(package), config.threads
    )
    return TfliteEngine(
        interpreter,
        model,
        bundle.tasks,
        spec_in,
        info,
        int(inputs[0]["index"]),
        indices,
        make_batched,
    )


def _batched_interpreters(
    runtime: ModuleType,
    kwargs: Mapping[str, Any],
    where: str,
    input_index: int,
    output_indices: Mapping[str, int],
) -> tuple[Callable[[int], Any] | None, str]:
    """(a function n -> interpreter resized to n packets, "") or (None, why it cannot be).

    Tried on 2 packets: every output must come back with 2 rows.
    """
    try:
        data, _ = batch_generic_reshapes(kwargs["model_content"])
    except ValueError as exc:
        return None, str(exc)
    options = {**kwargs, "model_content": data}

    def make(n: int) -> Any:
        interpreter = runtime.Interpreter(**options)
        shape = [int(d) for d in interpreter.get_input_details()[0]["shape"]]
        interpreter.resize_tensor_input(input_index, [n, *shape[1:]], strict=False)
        interpreter.allocate_tensors()
        return interpreter

    try:
        probe = make(2)
        detail = probe.get_input_details()[0]
        probe.set_tensor(input_index, np.zeros(detail["shape"], detail["dtype"]))
        probe.invoke()
        rows = {t: probe.get_tensor(i).shape[:1] for t, i in output_indices.items()}
    except (ValueError, RuntimeError) as exc:
        return None, f"the model cannot be resized: {str(exc).strip().splitlines()[0]}"
    if any(r != (2,) for r in rows.values()):
        return None, f"outputs of 2 packets came back with rows {rows}"

    def make_checked(n: int) -> Any:
        try:
            return probe if n == 2 else make(n)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{where}: cannot resize the input to {n} packets: {exc}") from exc

    return make_checked, ""


def bench_configs(bundle: Bundle, threads: int) -> list[EngineConfig]:
    """One config per .tflite file: CPU, or the Edge TPU for a compiled model."""
    configs: list[EngineConfig] = []
    for m in bundle.models:
        if m.format != "tflite":
            continue
        try:
            compiled = is_edgetpu_compiled(c for _, c in tflite_operator_codes(m.path.read_bytes()))
        except ValueError:
            compiled = False  # load() reports it
        configs.append(
            TfliteConfig(
                precision=m.precision,  # type: ignore[arg-type]
                model=m.path.name,
                device="edgetpu" if compiled else "cpu",
                threads=threads,
            )
        )
    return configs


BACKEND = Backend(KEY, TfliteConfig, load_tflite, INSTALL, bench_configs)

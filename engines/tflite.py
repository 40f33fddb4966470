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
"""

from __future__ import annotations

import ctypes
import importlib
import math
import re
import struct
from collections.abc import Iterable, Mapping
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
    the runtime's default XNNPACK CPU delegate.
    """

    type: Literal["tflite"] = "tflite"
    precision: Literal["int8", "fp16", "fp32"] = "int8"
    device: Literal["cpu", "edgetpu"] = "cpu"
    edgetpu_device: str = ""
    delegate_library: str = "libedgetpu.so.1"
    threads: int = 0
    xnnpack: bool = True

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
        return out


# ------------------------------------------------------------------------------ model inspection


def tflite_operator_codes(data: bytes) -> list[tuple[int, str | None]]:
    """(builtin code, custom code or None) of each operator code of a TFLite flatbuffer.

    Reads `Model.operator_codes` with the flatbuffer rules (root offset, vtables) so that no
    runtime is needed. ValueError when `data` is not a TFLite model.
    """
    if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
        raise ValueError("not a TFLite model (no 'TFL3' file identifier)")

    def u32(pos: int) -> int:
        return int(struct.unpack_from("<I", data, pos)[0])

    def field(table: int, index: int) -> int | None:
        vtable = table - struct.unpack_from("<i", data, table)[0]
        slot = 4 + 2 * index
        if slot >= struct.unpack_from("<H", data, vtable)[0]:
            return None
        offset = struct.unpack_from("<H", data, vtable + slot)[0]
        return table + offset if offset else None

    try:
        codes_field = field(u32(0), 1)  # Model.operator_codes
        if codes_field is None:
            return []
        vector = codes_field + u32(codes_field)
        codes = []
        for i in range(u32(vector)):
            element = vector + 4 + 4 * i
            table = element + u32(element)
            deprecated, custom, builtin = field(table, 0), field(table, 1), field(table, 3)
            code = max(
                struct.unpack_from("<b", data, deprecated)[0] if deprecated else 0,
                struct.unpack_from("<i", data, builtin)[0] if builtin else 0,
            )  # the schema's rule: the larger of the int8 and int32 fields
            name = None
            if custom is not None:
                start = custom + u32(custom)
                name = data[start + 4 : start + 4 + u32(start)].decode("utf-8", "replace")
            codes.append((int(code), name))
    except (struct.error, IndexError) as exc:
        raise ValueError(f"not a valid TFLite flatbuffer: {exc}") from None
    return codes


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
    """A TFLite interpreter; output tensors found by the manifest's names."""

    def __init__(
        self,
        interpreter: Any,
        model: BundleModel,
        tasks: tuple[str, ...],
        spec: InputSpec,
        info: EngineInfo,
        input_index: int,
        output_indices: dict[str, int],
    ) -> None:
        super().__init__(model, tasks, spec, info)
        self._interpreter = interpreter
        self._input_index = input_index
        self._output_indices = output_indices

    def _invoke(self, x: np.ndarray) -> Mapping[str, np.ndarray]:
        self._interpreter.set_tensor(self._input_index, x)
        self._interpreter.invoke()
        return {t: self._interpreter.get_tensor(i) for t, i in self._output_indices.items()}

    def _release(self) -> None:
        self._interpreter = None


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
    spec_in = InputSpec(
        model.input.name, layout, model.input.shape, model.input.dtype, max_batch, fixed
    )
    device = "cpu" + (" (xnnpack)" if config.xnnpack else "")
    if config.device == "edgetpu":
        device = f"edgetpu{':' + config.edgetpu_device if config.edgetpu_device else ''}"
        if not compiled:
            device += " (model not compiled for it: runs on the CPU)"
    package = importlib.import_module(runtime.__name__.split(".")[0])
    info = EngineInfo(
        KEY, model.precision, device, model.path.name, runtime_version(package), config.threads
    )
    return TfliteEngine(
        interpreter, model, bundle.tasks, spec_in, info, int(inputs[0]["index"]), indices
    )


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

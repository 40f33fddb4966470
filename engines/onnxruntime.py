"""ONNX Runtime backend (config `type = "onnxruntime"`): FP32 and INT8 (QDQ) ONNX files.

CPU by default; `device = "cuda"` or `"tensorrt"` asks for onnxruntime's CUDA / TensorRT
execution providers, which only the `onnxruntime-gpu` build has (an error says so otherwise).
`threads` sets the intra-op thread pool (0: onnxruntime's default, one per physical core); the
inter-op pool is 1 thread since the graph is one chain of ops.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from edge_core.bundle import Bundle, BundleModel
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

KEY = "onnxruntime"
INSTALL = "'edge-tc[onnx]' (pip install 'edge-tc[onnx]'; onnxruntime-gpu for CUDA/TensorRT)"

_PROVIDERS: dict[str, list[str]] = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
}


@dataclass(frozen=True)
class OnnxRuntimeConfig(EngineConfig):
    """`[engine]` table for onnxruntime.

    precision: which ONNX file of the bundle (fp32 or int8). device: cpu, cuda or tensorrt
    (execution provider). threads: intra-op threads, 0 = onnxruntime's default. gpu: CUDA device
    index. max_batch: packets per session.run for a dynamic-batch model (larger calls are split).
    spin: let idle pool threads spin-wait between ops (lower latency; false leaves the cores to
    the daemon's other threads and other processes).
    """

    type: Literal["onnxruntime"] = "onnxruntime"
    precision: Literal["fp32", "int8"] = "fp32"
    device: Literal["cpu", "cuda", "tensorrt"] = "cpu"
    threads: int = 0
    gpu: int = 0
    max_batch: int = 256
    spin: bool = True

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.threads < 0:
            out.append(("threads", f"want >= 0 (0: runtime default), got {self.threads}"))
        if self.gpu < 0:
            out.append(("gpu", f"want a device index >= 0, got {self.gpu}"))
        if self.max_batch < 1:
            out.append(("max_batch", f"want >= 1, got {self.max_batch}"))
        return out


class OnnxRuntimeEngine(Engine):
    """An onnxruntime InferenceSession; outputs fetched by the manifest's tensor names."""

    def __init__(
        self,
        session: Any,
        model: BundleModel,
        tasks: tuple[str, ...],
        spec: InputSpec,
        info: EngineInfo,
    ) -> None:
        super().__init__(model, tasks, spec, info)
        self._session = session
        self._input_name = model.input.name
        self._output_names = [model.outputs[t].name for t in tasks]

    def _invoke(self, x: np.ndarray) -> Mapping[str, np.ndarray]:
        outs = self._session.run(self._output_names, {self._input_name: x})
        return dict(zip(self.tasks, outs, strict=True))

    def _release(self) -> None:
        self._session = None


def load_onnxruntime(bundle: Bundle, config: OnnxRuntimeConfig) -> OnnxRuntimeEngine:
    """Open the bundle's ONNX file of `config.precision` (or `config.model`) in onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise unavailable(KEY, exc, INSTALL) from exc
    model = select_model(bundle, config, "onnx", config.precision)
    where = str(model.path)
    layout = layout_adapter(model.input, where)[0]
    providers = _PROVIDERS[config.device]
    have = ort.get_available_providers()
    if providers[0] not in have:
        raise unavailable(
            KEY, f"device {config.device!r} needs {providers[0]}, this build has {have}", INSTALL
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    max_batch, fixed = batch_limits(model.input, config.max_batch)
    if not fixed:
        # A memory pattern is planned per input shape and, from a shape's second run on, taken
        # from the CPU arena as one block: with a dynamic batch axis the first backlog after the
        # warm-up (a second batch of more than ~16 packets) made the arena map a second 32 MiB
        # region that it keeps, a 25 MiB RSS step (issue 17, docs/operations.md). Without the
        # patterns the arena's first region serves every batch size; no slower on CPU.
        options.enable_mem_pattern = False
    if not config.spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    provider_options: list[dict[str, Any]] = [
        {"device_id": config.gpu} if p != "CPUExecutionProvider" else {} for p in providers
    ]
    try:
        session = ort.InferenceSession(
            where, options, providers=providers, provider_options=provider_options
        )
    except Exception as exc:  # onnxruntime raises its own pybind types (InvalidProtobuf, Fail, ...)
        raise ModelError(f"{where}: onnxruntime cannot load it: {exc}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != model.input.name:
        raise ModelError(
            f"{where}: want one input named {model.input.name!r}, the file has "
            f"{[i.name for i in inputs]}"
        )
    check_tensor(where, "input", model.input, inputs[0].shape, _ORT_TYPES.get(inputs[0].type, "?"))
    outputs = {o.name: o for o in session.get_outputs()}
    for task, spec in model.outputs.items():
        found = outputs.get(spec.name)
        if found is None:
            raise ModelError(
                f"{where}: no output {spec.name!r} for task {task!r}; it has {sorted(outputs)}"
            )
        check_tensor(
            where, f"task {task!r} output", spec, found.shape, _ORT_TYPES.get(found.type, "?")
        )
    spec_in = InputSpec(
        model.input.name, layout, model.input.shape, model.input.dtype, max_batch, fixed
    )
    used = session.get_providers()[0]
    device = "cpu" if used == "CPUExecutionProvider" else f"cuda:{config.gpu} ({used})"
    info = EngineInfo(
        KEY, model.precision, device, model.path.name, runtime_version(ort), config.threads
    )
    return OnnxRuntimeEngine(session, model, bundle.tasks, spec_in, info)


def bench_configs(bundle: Bundle, threads: int) -> list[EngineConfig]:
    """One CPU config per ONNX file of the bundle."""
    return [
        OnnxRuntimeConfig(precision=m.precision, model=m.path.name, threads=threads)  # type: ignore[arg-type]
        for m in bundle.models
        if m.format == "onnx" and m.precision in ("fp32", "int8")
    ]


BACKEND = Backend(KEY, OnnxRuntimeConfig, load_onnxruntime, INSTALL, bench_configs)

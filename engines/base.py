"""The engine contract, the backend registry and `load(bundle, config) -> Engine`.

Every backend module in this package (`engines/onnxruntime.py`, `engines/tflite.py`,
`engines/tensorrt.py`, ...) defines a config dataclass (a subclass of `EngineConfig` with
`type: Literal["<key>"]`), an `Engine` subclass, and a module-level `BACKEND = Backend(...)`.
The registry finds them by scanning the package for `BACKEND`, so nothing here names a backend;
`register` adds one from elsewhere (a plugin, a test). Vendor runtimes are imported inside the
backend module's loader, and a missing one is an `EdgeTcError` "engine 'X' unavailable: ...".

`Engine.infer` takes float32 IQ (n, 2, 3000) in the bundle's normalization and returns
task -> float32 probabilities (n, classes). The base class does what every backend shares, once:
it adapts the layout to the model's input tensor, quantizes an integer input and dequantizes
integer outputs with the manifest's scale/zero-point, and splits a batch into the sizes the
model accepts (zero-padding the last chunk of a fixed-batch model). Outputs are found by the
manifest's task -> tensor-name mapping, never by position.
"""

from __future__ import annotations

import builtins
import importlib
import pkgutil
import resource
import sys
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from edge_core.bundle import Bundle, BundleModel, TensorSpec, load_manifest
from edge_core.errors import EdgeTcError, ModelError
from edge_core.schema import INPUT_LENGTH, TASK_BY_NAME
from edge_core.typed_config import ConfigProblems, TypedConfig

IQ_ROWS = 2
"""I and Q: the bundle-level input is (batch, 2, INPUT_LENGTH) float32."""

LAYOUTS: dict[str, str] = {
    "NCW": "(n, 2, L): I and Q as channels, channel-major (PyTorch Conv1d, the bundle's own)",
    "NWC": "(n, L, 2): I and Q as channels, channel-last (Keras Conv1D / GRU)",
    "NCHW": "(n, 1, 2, L): one image channel, I and Q as rows",
    "NHWC": "(n, 1, L, 2) I and Q as channels, or (n, 2, L, 1) I and Q as rows (Edge TPU)",
}
"""Input layouts an engine adapts (n, 2, L) to; the model's tensor shape says which applies."""

# ---------------------------------------------------------------------------------------- config


class EngineConfigError(ConfigProblems):
    """Invalid engine configuration; `problems` lists each one as 'key.path: message'."""


@dataclass(frozen=True)
class EngineConfig(TypedConfig):
    """Fields every backend's config has. Subclasses narrow `type` to `Literal["<key>"]`.

    `model` picks a model file of the bundle by name; empty picks the backend's format at the
    config's `precision`. Unknown keys, wrong types and impossible values are errors that name
    the key path (`from_dict(..., path="engine")` -> "engine.threads: ...").
    """

    errors: ClassVar[type[ConfigProblems]] = EngineConfigError
    section: ClassVar[str] = "engine"
    type: str
    model: str = ""
    isolation: Literal["thread", "process"] = "thread"
    """"process": the runtime runs in a worker process (`engines/isolated.py`), so that its
    crash or hang fails a batch, not the daemon; "thread": in the daemon's worker thread."""
    deadline_ms: float = 1000.0
    """Process isolation: the longest one model call may take before the worker is killed."""
    start_timeout_s: float = 120.0
    """Process isolation: the longest a worker may take to load the model (TensorRT plans)."""
    restart_backoff_max_s: float = 10.0
    """Process isolation: the longest wait before restarting a failed worker (0.1 s, doubling)."""
    worker_python: str = ""
    """Process isolation: the worker's interpreter ("" = the daemon's own); a backend that has
    a foreign-interpreter runtime (TensorRT on JetPack 4.6's Python 3.6) runs it there."""

    @classmethod
    def _collect(cls, data: Any, path: str) -> tuple[list[str], Any]:
        problems, config = super()._collect(data, path)
        if config is None:
            return problems, None
        own = []
        if not 0 < config.deadline_ms <= 3_600_000:
            own.append(("deadline_ms", f"want 0..3600000 ms, got {config.deadline_ms}"))
        if not 0 < config.start_timeout_s <= 3600:
            own.append(("start_timeout_s", f"want 0..3600 s, got {config.start_timeout_s}"))
        if not 0.1 <= config.restart_backoff_max_s <= 3600:
            own.append(
                ("restart_backoff_max_s", f"want 0.1..3600 s, got {config.restart_backoff_max_s}")
            )
        if config.worker_python and config.isolation != "process":
            own.append(("worker_python", 'only with isolation = "process"'))
        problems += [f"{path + '.' if path else ''}{key}: {message}" for key, message in own]
        return problems, (None if problems else config)


# ---------------------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class InputSpec:
    """What one model call takes: the model's input tensor and the largest batch it accepts.

    `infer` always takes (n, 2, 3000) float32 and adapts; this says what the runtime sees.
    `fixed_batch`: the model takes exactly `max_batch` packets (a shorter chunk is zero-padded).
    """

    name: str
    layout: str
    shape: tuple[int | str, ...]
    dtype: str
    max_batch: int
    fixed_batch: bool


@dataclass(frozen=True)
class EngineInfo:
    """What runs: backend key, precision, device, the model file, the runtime and its memory.

    `memory` (bytes): `model_file` (size on disk), `load_rss_delta` (the process's resident set
    before vs after loading, from /proc/self/status; absent where unavailable) and whatever the
    backend adds (`device`: GPU memory of a TensorRT engine).
    """

    backend: str
    precision: str
    device: str
    model_file: str
    runtime: str
    threads: int
    memory: dict[str, int] = field(default_factory=dict)


class Engine(ABC):
    """A loaded model: `infer(batch (n, 2, 3000) float32) -> {task: float32 (n, classes)}`.

    Subclasses implement `_invoke` (one model call on an adapted chunk, returning the raw output
    tensor of each task) and `_release`. Not thread-safe: call from one thread at a time.
    """

    def __init__(
        self, model: BundleModel, tasks: Sequence[str], input_spec: InputSpec, info: EngineInfo
    ) -> None:
        self.model = model
        self.tasks = tuple(tasks)
        self.input_spec = input_spec
        self.info = info
        self._adapt = layout_adapter(model.input, str(model.path))[1]
        self._closed = False

    @abstractmethod
    def _invoke(self, x: np.ndarray) -> Mapping[str, np.ndarray]:
        """Run one chunk already in the model's layout and dtype; task -> raw output tensor."""

    @abstractmethod
    def _release(self) -> None:
        """Free the runtime's resources (called once, by `close`)."""

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Per-task probabilities (n, classes) float32 for IQ packets (n, 2, 3000) float32."""
        if self._closed:
            raise EdgeTcError(f"engine '{self.info.backend}' ({self.model.path.name}) is closed")
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (IQ_ROWS, INPUT_LENGTH):
            raise ValueError(f"want packets (n, {IQ_ROWS}, {INPUT_LENGTH}), got {x.shape}")
        n, step = len(x), self.input_spec.max_batch
        parts: dict[str, list[np.ndarray]] = {t: [] for t in self.tasks}
        for start in range(0, n, step):
            chunk = x[start : start + step]  # (m, 2, L)
            m = len(chunk)
            if self.input_spec.fixed_batch and m < step:
                chunk = np.concatenate([chunk, np.zeros((step - m, *chunk.shape[1:]), np.float32)])
            raw = self._invoke(self._to_model(chunk))
            for task in self.tasks:
                parts[task].append(self._from_model(task, raw[task])[:m])
        return {
            t: np.concatenate(p)
            if len(p) > 1
            else (p[0] if p else np.zeros((0, TASK_BY_NAME[t].num_classes), np.float32))
            for t, p in parts.items()
        }

    def _to_model(self, chunk: np.ndarray) -> np.ndarray:
        """(m, 2, L) float32 -> the model's layout, quantized if its input is an integer tensor."""
        x = self._adapt(chunk)
        spec = self.model.input
        if spec.quantization is not None and spec.dtype in ("int8", "uint8"):
            return spec.quantization.quantize(x, np.dtype(spec.dtype))
        return np.ascontiguousarray(x, dtype=np.dtype(spec.dtype))

    def _from_model(self, task: str, raw: np.ndarray) -> np.ndarray:
        """A raw output (m, classes) -> float32 probabilities, dequantized with the manifest's."""
        spec = self.model.outputs[task]
        out = np.asarray(raw).reshape(len(raw), -1)
        if spec.quantization is not None and spec.dtype in ("int8", "uint8"):
            return spec.quantization.dequantize(out)
        return out.astype(np.float32, copy=False)

    def warmup(self, batch: int = 1) -> None:
        """Run `batch` zero packets once, so first-call costs (allocation, JIT) are paid now."""
        self.infer(np.zeros((batch, IQ_ROWS, INPUT_LENGTH), np.float32))

    def close(self) -> None:
        """Release the runtime; later `infer` calls fail. Idempotent."""
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- layout


def layout_adapter(spec: TensorSpec, where: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """(layout, function (n, 2, L) -> the model's input layout) for a model input tensor.

    Found from the tensor's shape (batch axis first); a `layout` the manifest gives must agree.
    ModelError (naming `where`) for a shape that is none of `LAYOUTS` or has another length.
    """
    dims = tuple(spec.shape[1:])
    length = INPUT_LENGTH
    adapters: dict[tuple[Any, ...], tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
        (IQ_ROWS, length): ("NCW", lambda x: x),
        (length, IQ_ROWS): ("NWC", lambda x: x.transpose(0, 2, 1)),
        (1, IQ_ROWS, length): ("NCHW", lambda x: x[:, None]),
        (1, length, IQ_ROWS): ("NHWC", lambda x: x.transpose(0, 2, 1)[:, None]),
        (IQ_ROWS, length, 1): ("NHWC", lambda x: x[..., None]),
    }
    found = adapters.get(dims)
    if found is None:
        lengths = [d for d in dims if isinstance(d, int) and d > IQ_ROWS]
        why = (
            f"input length {lengths[0]}, the task schema's is {length}"
            if len(lengths) == 1 and lengths[0] != length
            else f"not a layout of (2, {length}) IQ packets ({', '.join(LAYOUTS)})"
        )
        raise ModelError(f"{where}: input {spec.name!r} has shape {list(spec.shape)}: {why}")
    if spec.layout is not None and spec.layout != found[0]:
        raise ModelError(
            f"{where}: input {spec.name!r} of shape {list(spec.shape)} is {found[0]}, "
            f"the manifest says {spec.layout}"
        )
    return found


def check_tensor(where: str, role: str, want: TensorSpec, shape: Sequence[Any], dtype: str) -> None:
    """ModelError unless a runtime tensor's shape and dtype are the manifest's.

    Dimensions the runtime leaves symbolic (a str, None or -1) match a manifest axis name.
    """
    got = [d if isinstance(d, int) and d >= 0 else "?" for d in shape]
    expected = [d if isinstance(d, int) else "?" for d in want.shape]
    if got != expected or dtype != want.dtype:
        raise ModelError(
            f"{where}: {role} {want.name!r} is {dtype} {list(shape)} in the file, "
            f"the manifest says {want.dtype} {list(want.shape)}"
        )


def batch_limits(spec: TensorSpec, configured_max: int) -> tuple[int, bool]:
    """(max batch per call, fixed?) from a model input's batch axis: an int is fixed."""
    batch = spec.shape[0] if spec.shape else 1
    if isinstance(batch, int):
        return batch, True
    return configured_max, False


# -------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Backend:
    """A backend as the registry sees it.

    `type`: the config key. `config`: its `EngineConfig` subclass. `load(bundle, config)`: open
    the engine (imports the runtime; EdgeTcError "unavailable" when missing). `install`: what
    to install when the runtime is missing. `bench_configs(bundle, threads)`: the configs
    `edge-tc bench engines` runs for a bundle (one per precision this backend can run).
    `foreign_runtime(bundle, config)`: for a worker under another interpreter
    (`engine.worker_python`), the worker's runtime name and its config (a JSON-ready dict);
    None where only the daemon's own interpreter can run the backend.
    """

    type: str
    config: builtins.type[EngineConfig]
    load: Callable[[Bundle, Any], Engine]
    install: str
    bench_configs: Callable[[Bundle, int], list[EngineConfig]]
    foreign_runtime: Callable[[Bundle, Any], tuple[str, dict[str, Any]]] | None = None


_REGISTRY: dict[str, Backend] = {}
_DISCOVERED = False


def register(backend: Backend) -> None:
    """Add a backend (a plugin, a test's fake); ValueError if its key is taken by another."""
    have = _REGISTRY.get(backend.type)
    if have is not None and have is not backend:
        raise ValueError(f"engine type {backend.type!r} is already registered")
    _REGISTRY[backend.type] = backend


def unregister(key: str) -> None:
    """Remove a backend registered with `register` (tests)."""
    _REGISTRY.pop(key, None)


def backends() -> dict[str, Backend]:
    """Every backend: modules of this package that define `BACKEND`, plus registered ones."""
    global _DISCOVERED
    if not _DISCOVERED:
        package = sys.modules[__name__.rpartition(".")[0]]
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            found = getattr(module, "BACKEND", None)
            if isinstance(found, Backend):
                register(found)
        _DISCOVERED = True
    return dict(sorted(_REGISTRY.items()))


def unavailable(key: str, exc: BaseException | str, install: str) -> EdgeTcError:
    """The error for a runtime that cannot be imported or started."""
    return EdgeTcError(f"engine '{key}' unavailable: {exc}; install {install}")


def config_from_dict(data: Mapping[str, Any], path: str = "engine") -> EngineConfig:
    """The backend config a table describes, chosen by its `type` key."""
    if not isinstance(data, Mapping):
        raise EngineConfigError([f"{path}: want a table, got {type(data).__name__}"])
    known = backends()
    key = data.get("type")
    if not isinstance(key, str) or key not in known:  # [] would be unhashable
        what = "missing" if key is None else f"{key!r} is not one of {list(known)}"
        raise EngineConfigError([f"{path}.type: {what}"])
    return known[key].config.from_dict(data, path)


def open_bundle(bundle: str | Path | Bundle) -> Bundle:
    """A `Bundle` as given, or loaded (and validated) from its directory."""
    return bundle if isinstance(bundle, Bundle) else load_manifest(bundle)


def select_model(bundle: Bundle, config: EngineConfig, format: str, precision: str) -> BundleModel:
    """The bundle's model file `config.model` names, else the one of `format` at `precision`."""
    if config.model:
        for m in bundle.models:
            if m.path.name == config.model:
                if m.format != format:
                    raise ModelError(
                        f"{m.path}: engine '{config.type}' runs {format} models, not {m.format}"
                    )
                return m
        names = [m.path.name for m in bundle.models]
        raise ModelError(f"{bundle.directory}: no model file {config.model!r}; it has {names}")
    return bundle.select(format, precision)


def load(bundle: str | Path | Bundle, config: EngineConfig | Mapping[str, Any]) -> Engine:
    """Open the engine `config` describes on a bundle; every check happens here, not later.

    ModelError: corrupt model file, wrong input length, outputs or classes not the manifest's.
    EdgeTcError: the backend's runtime (or device) is unavailable.
    """
    if not isinstance(config, EngineConfig):
        config = config_from_dict(config)
    backend = backends().get(config.type)
    if backend is None:
        raise EngineConfigError([f"engine.type: {config.type!r} is not one of {list(backends())}"])
    opened = open_bundle(bundle)
    if config.isolation == "process":
        from engines.isolated import load_isolated  # imports this module: not at the top

        return load_isolated(opened, config)
    before = rss_bytes()
    engine = backend.load(opened, config)
    after = rss_bytes()
    memory = {"model_file": engine.model.path.stat().st_size, **engine.info.memory}
    if before is not None and after is not None:
        memory["load_rss_delta"] = after - before
    engine.info = replace(engine.info, memory=memory)
    if engine.tasks != opened.tasks:
        engine.close()
        raise ModelError(
            f"{engine.model.path}: engine serves tasks {list(engine.tasks)}, "
            f"the bundle has {list(opened.tasks)}"
        )
    return engine


# ---------------------------------------------------------------------------------------- memory


def rss_bytes(kind: str = "VmRSS") -> int | None:
    """This process's resident set (`VmRSS`) or its peak (`VmHWM`), from /proc/self/status.

    Without /proc, the peak falls back to getrusage's ru_maxrss (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(f"{kind}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if kind == "VmHWM":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    return None


def runtime_version(module: types.ModuleType) -> str:
    """'name version' of an imported runtime module."""
    return f"{module.__name__.split('.')[0]} {getattr(module, '__version__', '?')}"


__all__ = [
    "LAYOUTS",
    "Backend",
    "Engine",
    "EngineConfig",
    "EngineConfigError",
    "EngineInfo",
    "InputSpec",
    "backends",
    "batch_limits",
    "check_tensor",
    "config_from_dict",
    "layout_adapter",
    "load",
    "open_bundle",
    "register",
    "rss_bytes",
    "select_model",
    "unavailable",
    "unregister",
]

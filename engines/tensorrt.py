"""TensorRT backend (config `type = "tensorrt"`): FP16/FP32 plans on an NVIDIA GPU.

The engine runs a plan from the bundle when one was built for this TensorRT version and GPU
(its manifest `target`), else builds one from the bundle's FP32 ONNX with a dynamic batch
profile and caches it under `cache_dir`, keyed by the ONNX file's sha256, precision, batch
profile, TensorRT version and GPU name (`plan_cache_name`): plans only load on the TensorRT
version and GPU they were built with.

`TrtAdapter` hides the two Python APIs: TensorRT 8.x before 8.5 (JetPack 4.6 on the TX2:
bindings, `set_binding_shape`, `execute_async_v2(bindings=...)`) and the name-based tensor API
of 8.5+ and 10.x (`num_io_tensors`, `set_input_shape`, `set_tensor_address`,
`execute_async_v3`). CUDA memory and a non-default stream come from pycuda, or cuda-python's
runtime API where pycuda is missing (`CudaMemory`). All CUDA and TensorRT calls run on one
thread that the engine owns (a one-worker executor), whatever thread calls `infer`: a CUDA
context is bound to the thread that made it.

Everything that touches the vendor modules takes them as parameters (`load_tensorrt(...,
trt=..., cuda=...)`), so the pure-Python parts are tested with fakes on machines without a GPU.
"""

from __future__ import annotations

import ctypes
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from edge_core.bundle import Bundle, BundleModel, sha256_file
from edge_core.errors import EdgeTcError, ModelError
from edge_core.schema import INPUT_LENGTH
from engines.base import (
    Backend,
    Engine,
    EngineConfig,
    EngineInfo,
    InputSpec,
    check_tensor,
    layout_adapter,
    unavailable,
)

KEY = "tensorrt"
INSTALL = (
    "TensorRT and pycuda (or cuda-python) on the GPU host: JetPack ships TensorRT; elsewhere "
    "pip install 'edge-tc[tensorrt]'"
)
_T = TypeVar("_T")


@dataclass(frozen=True)
class TensorRtConfig(EngineConfig):
    """`[engine]` table for TensorRT.

    precision: fp16 or fp32. gpu: CUDA device index. batch_profile: [min, opt, max] batch of a
    plan built here (min must be 1). cache_dir: where built plans are kept ("" = $XDG_CACHE_HOME
    or ~/.cache, then edge-tc/tensorrt). workspace_mib: builder workspace. cuda: which CUDA
    binding ("auto": pycuda, else cuda-python). timeout_s: longest wait for one GPU call.
    """

    type: Literal["tensorrt"] = "tensorrt"
    precision: Literal["fp16", "fp32"] = "fp16"
    gpu: int = 0
    batch_profile: tuple[int, ...] = (1, 64, 256)
    cache_dir: str = ""
    workspace_mib: int = 1024
    cuda: Literal["auto", "pycuda", "cuda-python"] = "auto"
    timeout_s: float = 30.0

    def problems(self) -> list[tuple[str, str]]:
        out = []
        profile = self.batch_profile
        if len(profile) != 3 or not 1 == profile[0] <= profile[1] <= profile[2]:
            out.append(
                ("batch_profile", f"want [1, opt, max] with 1 <= opt <= max, got {list(profile)}")
            )
        if self.gpu < 0:
            out.append(("gpu", f"want a device index >= 0, got {self.gpu}"))
        if self.workspace_mib < 1:
            out.append(("workspace_mib", f"want >= 1, got {self.workspace_mib}"))
        if self.timeout_s <= 0:
            out.append(("timeout_s", f"want > 0, got {self.timeout_s}"))
        return out


# ----------------------------------------------------------------------------------- CUDA memory


class CudaMemory(Protocol):
    """Device buffers, pinned host arrays and one non-default stream on one GPU."""

    runtime: str
    device_name: str

    def alloc(self, nbytes: int) -> int:
        """A device buffer of `nbytes`; its address."""

    def host(self, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
        """A page-locked host array."""

    def to_device(self, address: int, host: np.ndarray) -> None:
        """Queue a copy of `host` (contiguous) to the device buffer at `address`."""

    def to_host(self, host: np.ndarray, address: int) -> None:
        """Queue a copy of the device buffer at `address` into `host` (contiguous)."""

    @property
    def stream_handle(self) -> int:
        """The stream's handle, as TensorRT's execute calls take it."""

    def synchronize(self) -> None:
        """Wait for the stream."""

    def close(self) -> None:
        """Free every buffer, the stream and the context."""


class PycudaMemory:
    """pycuda: a context made (and kept current) on the calling thread, a `cuda.Stream`."""

    def __init__(self, gpu: int) -> None:
        import pycuda.driver as cuda

        self._cuda = cuda
        cuda.init()
        device = cuda.Device(gpu)
        self._context = device.make_context()  # current on this (the engine's) thread
        self.runtime = f"pycuda {getattr(__import__('pycuda'), 'VERSION_TEXT', '?')}"
        major, minor = device.compute_capability()
        self.device_name = f"{device.name()} (sm_{major}{minor})"
        self._stream = cuda.Stream()
        self._keep: list[Any] = []

    def alloc(self, nbytes: int) -> int:
        buffer = self._cuda.mem_alloc(max(1, nbytes))
        self._keep.append(buffer)
        return int(buffer)

    def host(self, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
        return np.asarray(self._cuda.pagelocked_empty(tuple(shape), dtype))

    def to_device(self, address: int, host: np.ndarray) -> None:
        self._cuda.memcpy_htod_async(address, host, self._stream)

    def to_host(self, host: np.ndarray, address: int) -> None:
        self._cuda.memcpy_dtoh_async(host, address, self._stream)

    @property
    def stream_handle(self) -> int:
        return int(self._stream.handle)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def close(self) -> None:
        for buffer in self._keep:
            buffer.free()
        self._keep.clear()
        self._context.pop()
        self._context.detach()


class CudaPythonMemory:
    """cuda-python's runtime API (`cuda.bindings.runtime`, or `cuda.cudart` before 12.6)."""

    def __init__(self, gpu: int) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # type: ignore[no-redef, unused-ignore]
        self._rt = cudart
        self._check(cudart.cudaSetDevice(gpu), "cudaSetDevice")
        props = self._check(cudart.cudaGetDeviceProperties(gpu), "cudaGetDeviceProperties")
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else props.name
        self.device_name = f"{name.rstrip(chr(0))} (sm_{props.major}{props.minor})"
        self.runtime = f"cuda-python {getattr(__import__('cuda'), '__version__', '?')}"
        self._stream = self._check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._device: list[int] = []
        self._host: list[int] = []

    def _check(self, result: Any, what: str) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self._rt.cudaError_t.cudaSuccess:
            raise EdgeTcError(f"engine 'tensorrt': {what} failed: {err}")
        return values[0] if len(values) == 1 else values

    def alloc(self, nbytes: int) -> int:
        address = int(self._check(self._rt.cudaMalloc(max(1, nbytes)), "cudaMalloc"))
        self._device.append(address)
        return address

    def host(self, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        address = int(self._check(self._rt.cudaMallocHost(max(1, nbytes)), "cudaMallocHost"))
        self._host.append(address)
        raw = (ctypes.c_byte * max(1, nbytes)).from_address(address)
        return np.frombuffer(memoryview(raw), dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def _copy(self, dst: int, src: int, nbytes: int, kind: Any, what: str) -> None:
        self._check(self._rt.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream), what)

    def to_device(self, address: int, host: np.ndarray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._copy(address, host.ctypes.data, host.nbytes, kind, "cudaMemcpyAsync (to device)")

    def to_host(self, host: np.ndarray, address: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._copy(host.ctypes.data, address, host.nbytes, kind, "cudaMemcpyAsync (to host)")

    @property
    def stream_handle(self) -> int:
        return int(self._stream)

    def synchronize(self) -> None:
        self._check(self._rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        for address in self._device:
            self._rt.cudaFree(address)
        for address in self._host:
            self._rt.cudaFreeHost(address)
        self._device.clear()
        self._host.clear()
        self._rt.cudaStreamDestroy(self._stream)


def open_cuda(kind: str, gpu: int) -> CudaMemory:
    """pycuda or cuda-python memory on `gpu` ("auto": pycuda first); EdgeTcError if neither."""
    errors = []
    makers: dict[str, Callable[[int], CudaMemory]] = {
        "pycuda": PycudaMemory,
        "cuda-python": CudaPythonMemory,
    }
    for name in ("pycuda", "cuda-python") if kind == "auto" else (kind,):
        try:
            return makers[name](gpu)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
        except Exception as exc:  # the CUDA driver's own errors: no device, no driver
            raise unavailable(
                KEY, f"cannot open CUDA device {gpu} with {name}: {exc}", INSTALL
            ) from exc
    raise unavailable(KEY, "; ".join(errors), INSTALL)


# -------------------------------------------------------------------------------------- adapter


@dataclass(frozen=True)
class TrtTensor:
    """One I/O tensor of an engine: name, direction, numpy dtype, engine-level shape (-1 free)."""

    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]
    index: int


def tensorrt_major(trt: ModuleType) -> int:
    """TensorRT's major version from `trt.__version__` ("8.2.1.8" -> 8)."""
    return int(str(trt.__version__).split(".")[0])


class TrtAdapter:
    """One execution context over either TensorRT Python API.

    `api` is "tensor" (8.5+, the only one in 10.x: names, set_input_shape, set_tensor_address,
    execute_async_v3) or "binding" (8.0-8.4: indices, set_binding_shape, execute_async_v2).
    """

    def __init__(self, trt: ModuleType, engine: Any) -> None:
        self.trt = trt
        self.engine = engine
        if hasattr(engine, "num_io_tensors"):
            self.api = "tensor"
        elif hasattr(engine, "num_bindings"):
            self.api = "binding"
        else:
            raise ModelError("TensorRT engine has neither num_io_tensors nor num_bindings")
        self.context = engine.create_execution_context()
        if self.context is None:
            raise ModelError("TensorRT could not create an execution context")
        self.tensors = self._tensors()
        self._by_name = {t.name: t for t in self.tensors}

    def _tensors(self) -> list[TrtTensor]:
        e, trt = self.engine, self.trt
        out = []
        if self.api == "tensor":
            for i in range(e.num_io_tensors):
                name = e.get_tensor_name(i)
                is_input = e.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                dtype = np.dtype(trt.nptype(e.get_tensor_dtype(name)))
                out.append(TrtTensor(name, is_input, dtype, tuple(e.get_tensor_shape(name)), i))
        else:
            for i in range(e.num_bindings):
                dtype = np.dtype(trt.nptype(e.get_binding_dtype(i)))
                shape = tuple(e.get_binding_shape(i))
                out.append(TrtTensor(e.get_binding_name(i), e.binding_is_input(i), dtype, shape, i))
        return out

    def profile_shape(self, name: str) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) shapes of input `name` in optimization profile 0."""
        if self.api == "tensor":
            shapes = self.engine.get_tensor_profile_shape(name, 0)
        else:
            shapes = self.engine.get_profile_shape(0, self._by_name[name].index)
        return tuple(tuple(int(d) for d in s) for s in shapes)

    def set_input_shape(self, name: str, shape: Sequence[int]) -> None:
        if self.api == "tensor":
            ok = self.context.set_input_shape(name, tuple(shape))
        else:
            ok = self.context.set_binding_shape(self._by_name[name].index, tuple(shape))
        if ok is False:
            raise ModelError(f"TensorRT refused input shape {tuple(shape)} for {name!r}")

    def output_shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor `name` for the input shape set last."""
        if self.api == "tensor":
            return tuple(int(d) for d in self.context.get_tensor_shape(name))
        return tuple(int(d) for d in self.context.get_binding_shape(self._by_name[name].index))

    def execute(self, addresses: Mapping[str, int], stream_handle: int) -> None:
        """Enqueue one run with the device buffer of every I/O tensor, by name."""
        if self.api == "tensor":
            for name, address in addresses.items():
                self.context.set_tensor_address(name, address)
            ok = self.context.execute_async_v3(stream_handle=stream_handle)
        else:
            bindings = [0] * len(self.tensors)
            for name, address in addresses.items():
                bindings[self._by_name[name].index] = address
            ok = self.context.execute_async_v2(bindings=bindings, stream_handle=stream_handle)
        if not ok:
            raise ModelError("TensorRT execution failed")

    def device_memory_bytes(self) -> int:
        """Scratch memory the engine's context takes on the GPU."""
        e = self.engine
        value = getattr(e, "device_memory_size_v2", None)
        return int(value if value is not None else getattr(e, "device_memory_size", 0))


# ------------------------------------------------------------------------------------ plan cache


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/edge-tc/tensorrt, or ~/.cache/edge-tc/tensorrt."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-tc" / "tensorrt"


def plan_cache_name(
    onnx_sha256: str, precision: str, batch_profile: Sequence[int], trt_version: str, gpu_name: str
) -> str:
    """File name of a cached plan: the model, how it was built, and where it can run."""
    gpu = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")
    version = re.sub(r"[^0-9.]+", "", trt_version)
    lo, opt, hi = batch_profile
    return f"{onnx_sha256[:16]}-{precision}-b{lo}-{opt}-{hi}-trt{version}-{gpu}.plan"


def build_plan(
    trt: ModuleType,
    onnx: bytes,
    input_name: str,
    input_dims: Sequence[int],
    precision: str,
    batch_profile: Sequence[int],
    workspace_bytes: int,
    where: str,
) -> bytes:
    """Serialize a plan from ONNX bytes with a dynamic batch profile on `input_name`.

    TensorRT 10.x: networks are always explicit batch (`create_network(0)`), workspace via
    `set_memory_pool_limit`. 8.x: the EXPLICIT_BATCH flag and `max_workspace_size`.
    """
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if tensorrt_major(trt) >= 10:  # the EXPLICIT_BATCH flag is deprecated, ignored, then gone
        network = builder.create_network(0)
    else:
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{where}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    else:
        config.max_workspace_size = workspace_bytes
    if precision == "fp16":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise ModelError(f"TensorRT {trt.__version__} has no FP16 flag (strong typing only)")
        if not builder.platform_has_fast_fp16:
            raise ModelError('this GPU has no fast FP16; use precision = "fp32"')
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    lo, opt, hi = batch_profile
    dims = tuple(input_dims)
    profile.set_shape(input_name, (lo, *dims), (opt, *dims), (hi, *dims))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError(f"{where}: TensorRT failed to build a {precision} plan")
    return bytes(plan)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- engine


class _GpuState:
    """What lives on the CUDA thread: the runtime objects, the adapter and the buffers."""

    def __init__(
        self,
        memory: CudaMemory,
        runtime: Any,
        engine: Any,
        adapter: TrtAdapter,
        input_name: str,
        outputs: Mapping[str, str],
        max_batch: int,
    ) -> None:
        self.memory, self.runtime, self.engine, self.adapter = memory, runtime, engine, adapter
        self.input_name = input_name
        self.outputs = dict(outputs)  # task -> tensor name
        by_name = {t.name: t for t in adapter.tensors}
        self.buffers: dict[str, tuple[int, np.ndarray]] = {}  # name -> (device address, host)
        for name in [input_name, *self.outputs.values()]:
            t = by_name[name]
            shape = (max_batch, *t.shape[1:])
            host = memory.host(shape, t.dtype)
            self.buffers[name] = (memory.alloc(host.nbytes), host)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        n = len(x)
        address, host_in = self.buffers[self.input_name]
        host_in[:n] = x
        self.memory.to_device(address, host_in[:n])
        self.adapter.set_input_shape(self.input_name, x.shape)
        self.adapter.execute(
            {name: a for name, (a, _) in self.buffers.items()}, self.memory.stream_handle
        )
        for name in self.outputs.values():
            shape = self.adapter.output_shape(name)
            if shape[0] != n:
                raise ModelError(f"TensorRT output {name!r} has shape {shape} for batch {n}")
            out_address, host_out = self.buffers[name]
            self.memory.to_host(host_out[:n], out_address)
        self.memory.synchronize()
        return {task: self.buffers[name][1][:n].copy() for task, name in self.outputs.items()}

    def close(self) -> None:
        self.buffers.clear()
        self.adapter.context = None
        self.engine = self.runtime = None
        self.memory.close()


class TensorRtEngine(Engine):
    """A TensorRT plan on one GPU; every CUDA call runs on the engine's own thread."""

    def __init__(
        self,
        worker: ThreadPoolExecutor,
        state: _GpuState,
        timeout_s: float,
        model: BundleModel,
        tasks: tuple[str, ...],
        spec: InputSpec,
        info: EngineInfo,
    ) -> None:
        super().__init__(model, tasks, spec, info)
        self._worker = worker
        self._state = state
        self._timeout_s = timeout_s

    def _invoke(self, x: np.ndarray) -> Mapping[str, np.ndarray]:
        return self._worker.submit(self._state.run, x).result(timeout=self._timeout_s)

    def _release(self) -> None:
        try:
            self._worker.submit(self._state.close).result(timeout=self._timeout_s)
        finally:
            self._worker.shutdown(wait=False)


def import_tensorrt() -> ModuleType:
    """The `tensorrt` module, or EdgeTcError "engine 'tensorrt' unavailable: ..."."""
    try:
        import tensorrt
    except ImportError as exc:
        raise unavailable(KEY, exc, INSTALL) from exc
    return tensorrt


def _plan_target_matches(model: BundleModel, trt_version: str, gpu_name: str) -> bool:
    target = model.target or {}
    built_on = str(target.get("device", ""))
    return (
        target.get("tensorrt_version") == trt_version
        and bool(built_on)
        and (gpu_name == built_on or gpu_name.startswith(f"{built_on} ("))
    )


def _setup(
    trt: ModuleType,
    memory: CudaMemory,
    bundle: Bundle,
    config: TensorRtConfig,
) -> tuple[BundleModel, Any, Any, TrtAdapter, str]:
    """On the CUDA thread: pick or build the plan, deserialize it, open a context."""
    version = str(trt.__version__)
    plans = [
        m for m in bundle.models if m.format == "tensorrt-plan" and m.precision == config.precision
    ]
    if config.model:
        plans = [m for m in bundle.models if m.path.name == config.model]
        if not plans or plans[0].format not in ("tensorrt-plan", "onnx"):
            raise ModelError(f"{bundle.directory}: no TensorRT plan or ONNX file {config.model!r}")
    usable = [
        m
        for m in plans
        if m.format == "tensorrt-plan" and _plan_target_matches(m, version, memory.device_name)
    ]
    source = "bundle"
    if usable:
        model = usable[0]
        plan = model.path.read_bytes()
    else:
        onnx_model = (
            plans[0] if plans and plans[0].format == "onnx" else bundle.select("onnx", "fp32")
        )
        where = str(onnx_model.path)
        layout_adapter(onnx_model.input, where)
        cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        name = plan_cache_name(
            sha256_file(onnx_model.path),
            config.precision,
            config.batch_profile,
            version,
            memory.device_name,
        )
        path = cache / name
        if path.is_file():
            plan, source = path.read_bytes(), "cache"
        else:
            plan = build_plan(
                trt,
                onnx_model.path.read_bytes(),
                onnx_model.input.name,
                onnx_model.input.shape[1:],  # type: ignore[arg-type]
                config.precision,
                config.batch_profile,
                config.workspace_mib << 20,
                where,
            )
            _write_atomic(path, plan)
            source = "built"
        target = {
            "tensorrt_version": version,
            "device": memory.device_name,
            "batch_profile": list(config.batch_profile),
        }
        model = replace(
            onnx_model, path=path, format="tensorrt-plan", precision=config.precision, target=target
        )
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise ModelError(
            f"{model.path}: TensorRT {version} cannot deserialize it on {memory.device_name}; a "
            f"plan only loads on the TensorRT version and GPU it was built with"
            + (" (delete this cached plan to rebuild it)" if source == "cache" else "")
        )
    return model, runtime, engine, TrtAdapter(trt, engine), source


def _check_io(adapter: TrtAdapter, model: BundleModel) -> int:
    """The plan's tensors against the manifest; returns the profile's max batch."""
    where = str(model.path)
    inputs = [t for t in adapter.tensors if t.is_input]
    if len(inputs) != 1 or inputs[0].name != model.input.name:
        raise ModelError(
            f"{where}: want one input named {model.input.name!r}, the plan has "
            f"{[t.name for t in inputs]}"
        )
    check_tensor(where, "input", model.input, inputs[0].shape, inputs[0].dtype.name)
    outputs = {t.name: t for t in adapter.tensors if not t.is_input}
    for task, spec in model.outputs.items():
        found = outputs.get(spec.name)
        if found is None:
            raise ModelError(
                f"{where}: no output {spec.name!r} for task {task!r}; it has {sorted(outputs)}"
            )
        check_tensor(where, f"task {task!r} output", spec, found.shape, found.dtype.name)
    lo, _, hi = adapter.profile_shape(model.input.name)
    if lo[0] != 1 or tuple(hi[1:]) != tuple(inputs[0].shape[1:]):
        raise ModelError(
            f"{where}: batch profile {lo} .. {hi}: want min batch 1 and "
            f"input (…, {INPUT_LENGTH}) dims"
        )
    return hi[0]


def load_tensorrt(
    bundle: Bundle,
    config: TensorRtConfig,
    *,
    trt: ModuleType | None = None,
    cuda: Callable[[str, int], CudaMemory] | None = None,
) -> TensorRtEngine:
    """Open a TensorRT engine for the bundle; `trt` and `cuda` replace the vendor modules."""
    trt_module = trt if trt is not None else import_tensorrt()
    make_memory = cuda if cuda is not None else open_cuda
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-tc-cuda")

    def setup() -> tuple[_GpuState, BundleModel, str]:
        memory = make_memory(config.cuda, config.gpu)
        try:
            model, runtime, engine, adapter, source = _setup(trt_module, memory, bundle, config)
            max_batch = _check_io(adapter, model)
            outputs = {t: s.name for t, s in model.outputs.items()}
            state = _GpuState(
                memory, runtime, engine, adapter, model.input.name, outputs, max_batch
            )
        except BaseException:
            memory.close()
            raise
        return state, model, source

    try:
        state, model, source = _on_thread(worker, setup, config.timeout_s * 20)
    except BaseException:
        worker.shutdown(wait=False)
        raise
    layout = layout_adapter(model.input, str(model.path))[0]
    max_batch = len(state.buffers[model.input.name][1])
    spec = InputSpec(
        model.input.name, layout, model.input.shape, model.input.dtype, max_batch, False
    )
    device_bytes = state.adapter.device_memory_bytes() + sum(
        h.nbytes for _, h in state.buffers.values()
    )
    info = EngineInfo(
        KEY,
        config.precision,
        f"cuda:{config.gpu} {state.memory.device_name}",
        model.path.name,
        f"tensorrt {trt_module.__version__} ({state.adapter.api} API, {state.memory.runtime}, "
        f"plan from {source})",
        0,
        {"device": device_bytes},
    )
    return TensorRtEngine(worker, state, config.timeout_s, model, bundle.tasks, spec, info)


def _on_thread(worker: ThreadPoolExecutor, fn: Callable[[], _T], timeout_s: float) -> _T:
    return worker.submit(fn).result(timeout=timeout_s)


def foreign_runtime(bundle: Bundle, config: TensorRtConfig) -> tuple[str, dict[str, Any]]:
    """The worker's runtime under another interpreter: `engines/trt_runtime.py` (TensorRT 8.0-8.4
    through pycuda, Python 3.6: JetPack 4.6), and what it needs to pick, build or load a plan."""
    if config.cuda == "cuda-python":
        raise EdgeTcError(
            'engine.worker_python runs TensorRT through pycuda: set engine.cuda = "auto"'
        )
    if config.model:
        raise EdgeTcError("engine.worker_python: engine.model is not supported; use precision")
    onnx_model = bundle.select("onnx", "fp32")
    layout = layout_adapter(onnx_model.input, str(onnx_model.path))[0]
    plans = [
        {"path": str(m.path), "file": m.path.name, "target": m.target or {}}
        for m in bundle.models
        if m.format == "tensorrt-plan" and m.precision == config.precision
    ]
    return "tensorrt-plan", {
        "plans": plans,
        "onnx": str(onnx_model.path),
        "onnx_file": onnx_model.path.name,
        "onnx_sha256": sha256_file(onnx_model.path),
        "input_name": onnx_model.input.name,
        "input_dims": list(onnx_model.input.shape[1:]),
        "layout": layout,
        "outputs": {t: s.name for t, s in onnx_model.outputs.items()},
        "precision": config.precision,
        "batch_profile": list(config.batch_profile),
        "workspace_bytes": config.workspace_mib << 20,
        "gpu": config.gpu,
        "cache_dir": str(Path(config.cache_dir) if config.cache_dir else default_cache_dir()),
    }


def bench_configs(bundle: Bundle, threads: int) -> list[EngineConfig]:
    """FP16 and FP32 (plans from the bundle, or built from its FP32 ONNX)."""
    has_source = any(m.format in ("onnx", "tensorrt-plan") for m in bundle.models)
    return [TensorRtConfig(precision=p) for p in ("fp32", "fp16")] if has_source else []


BACKEND = Backend(KEY, TensorRtConfig, load_tensorrt, INSTALL, bench_configs, foreign_runtime)

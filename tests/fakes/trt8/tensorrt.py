"""Fake `tensorrt` 8.2.1.8 (JetPack 4.6), binding API only (tests/fakes/trt8/README.md).

The calls engines/trt_runtime.py makes, with TensorRT 8.2's Python names: Logger, Builder
(create_network with the EXPLICIT_BATCH flag, platform_has_fast_fp16, create_builder_config with
max_workspace_size and set_flag, create_optimization_profile, build_serialized_network),
OnnxParser, Runtime.deserialize_cuda_engine, ICudaEngine (num_bindings, get_binding_name,
binding_is_input, get_binding_dtype, get_binding_shape, get_profile_shape,
create_execution_context, device_memory_size), IExecutionContext (set_binding_shape,
get_binding_shape, execute_async_v2), DataType and nptype. No name-based tensor API (8.5+).
A plan is "FAKEPLAN", a JSON header (profile, flags, TensorRT version, GPU) and the ONNX bytes;
execution runs that ONNX in onnxruntime on the fake device memory of pycuda.driver.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort

__version__ = "8.2.1.8"
PLAN_MAGIC = b"FAKEPLAN"
BUILT: list[dict] = []


class Logger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4

    def __init__(self, min_severity: int = 2) -> None:
        self.min_severity = min_severity


class DataType:
    FLOAT, HALF, INT8, INT32, BOOL = 0, 1, 2, 3, 4


class NetworkDefinitionCreationFlag:
    EXPLICIT_BATCH = 0
    EXPLICIT_PRECISION = 1


class BuilderFlag:
    FP16, INT8, DEBUG, GPU_FALLBACK, STRICT_TYPES, REFIT = 0, 1, 2, 3, 4, 5


def nptype(trt_type: int) -> type:
    return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
            DataType.INT32: np.int32, DataType.BOOL: np.bool_}[trt_type]  # fmt: skip


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.onnx: bytes | None = None


class IBuilderConfig:
    def __init__(self) -> None:
        self.max_workspace_size = 0
        self.flags: list[int] = []
        self.profiles: list[IOptimizationProfile] = []

    def set_flag(self, flag: int) -> None:
        self.flags.append(flag)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list[list[int]]] = {}

    def set_shape(self, input: str, min, opt, max) -> None:
        self.shapes[input] = [list(min), list(opt), list(max)]


class Builder:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger
        self.platform_has_fast_fp16 = True  # the TX2's Pascal GPU (sm_62)
        self.platform_has_fast_int8 = False

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        if not flags & (1 << NetworkDefinitionCreationFlag.EXPLICIT_BATCH):
            raise TypeError("the ONNX parser needs an explicit-batch network in TensorRT 8.x")
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig):
        if network.onnx is None or len(config.profiles) != 1 or config.max_workspace_size <= 0:
            return None
        import pycuda.driver as cuda

        cuda._need_context("build_serialized_network")
        header = {"profile": config.profiles[0].shapes, "flags": config.flags,
                  "version": __version__, "device": "NVIDIA Tegra X2 (sm_62)"}  # fmt: skip
        BUILT.append(header)
        return PLAN_MAGIC + json.dumps(header).encode() + b"\n" + network.onnx


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
        self.network = network
        self.num_errors = 0

    def parse(self, model: bytes) -> bool:
        if not bytes(model[:2]) or b"FAKEPLAN" in bytes(model[:8]):
            self.num_errors = 1
            return False
        self.network.onnx = bytes(model)
        return True

    def get_error(self, index: int) -> str:
        return "In node -1 (importModel): INVALID_GRAPH"


class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        data = bytes(serialized_engine)
        if not data.startswith(PLAN_MAGIC):
            return None  # TensorRT logs "Serialization assertion ... failed" and returns None
        header, onnx = data[len(PLAN_MAGIC) :].split(b"\n", 1)
        meta = json.loads(header)
        if meta["version"] != __version__:
            return None
        return ICudaEngine(meta, onnx)


class ICudaEngine:
    def __init__(self, meta: dict, onnx: bytes) -> None:
        self.meta = meta
        self.session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        self._io = [(i.name, True, [-1, *i.shape[1:]]) for i in self.session.get_inputs()]
        self._io += [(o.name, False, [-1, *o.shape[1:]]) for o in self.session.get_outputs()]
        self.device_memory_size = 1 << 20

    @property
    def num_bindings(self) -> int:
        return len(self._io)

    def get_binding_name(self, index: int) -> str:
        return self._io[index][0]

    def binding_is_input(self, index: int) -> bool:
        return self._io[index][1]

    def get_binding_dtype(self, index: int) -> int:
        return DataType.FLOAT

    def get_binding_shape(self, index: int) -> tuple[int, ...]:
        return tuple(self._io[index][2])

    def get_profile_shape(self, profile_index: int, binding: int) -> list[tuple[int, ...]]:
        if profile_index != 0 or not self._io[binding][1]:
            raise ValueError("get_profile_shape: not an input binding of profile 0")
        return [tuple(s) for s in self.meta["profile"][self._io[binding][0]]]

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.batch = -1

    def set_binding_shape(self, binding: int, shape) -> bool:
        lo, _, hi = self.engine.get_profile_shape(0, binding)
        shape = tuple(int(d) for d in shape)
        if not lo[0] <= shape[0] <= hi[0] or shape[1:] != tuple(lo[1:]):
            return False
        self.batch = shape[0]
        return True

    def get_binding_shape(self, binding: int) -> tuple[int, ...]:
        return (self.batch, *self.engine._io[binding][2][1:])

    def execute_async_v2(self, bindings: list[int], stream_handle: int) -> bool:
        import pycuda.driver as cuda

        cuda._need_context("enqueueV2")
        if self.batch < 1 or len(bindings) != self.engine.num_bindings:
            return False
        if not all(isinstance(b, int) for b in bindings):
            raise TypeError("execute_async_v2(): bindings must be a list of int addresses")
        names = [name for name, _, _ in self.engine._io]
        (name, _, shape), *outputs = self.engine._io
        shape = [self.batch, *shape[1:]]
        x = cuda.MEMORY[bindings[0]][: int(np.prod(shape)) * 4].view(np.float32).reshape(shape)
        results = self.engine.session.run([o for o, _, _ in outputs], {name: x})
        for (out_name, _, _), value in zip(outputs, results, strict=True):
            raw = np.ascontiguousarray(value, np.float32).view(np.uint8).reshape(-1)
            cuda.MEMORY[bindings[names.index(out_name)]][: raw.size] = raw
        return True

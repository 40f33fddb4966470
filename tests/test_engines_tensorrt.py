"""The TensorRT backend: on a GPU with the real runtime, elsewhere through fakes of its API.

No GPU here: `FakeTensorRT` follows the TensorRT Python API names exactly, in its 8.x binding
flavour (JetPack 4.6: `num_bindings`, `set_binding_shape`, `execute_async_v2`) and its 10.x
tensor flavour (`num_io_tensors`, `set_input_shape`, `set_tensor_address`,
`execute_async_v3`); its "GPU" runs the plan's ONNX in onnxruntime on bytes that `FakeCuda`
(the engine's `CudaMemory` interface) keeps per device address. That checks the adapter, the
plan build / cache / bundle-plan choice, buffers and the one CUDA thread without hardware.
"""

from __future__ import annotations

import json
import shutil
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from edge_core.bundle import MANIFEST_NAME, load_manifest, write_manifest
from edge_core.errors import EdgeTcError, ModelError
from edge_core.schema import TASK_BY_NAME, TASK_NAMES
from engines import tensorrt as trt_backend
from engines.base import load
from engines.tensorrt import TensorRtConfig, TrtAdapter, load_tensorrt, plan_cache_name

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

PLAN_MAGIC = b"FAKEPLAN"


# ------------------------------------------------------------------------------------- fakes


class FakeCuda:
    """`CudaMemory` over host bytes: device addresses index a dict; records the calling threads."""

    def __init__(self, kind: str = "auto", gpu: int = 0) -> None:
        self.runtime = "fake-cuda 1.0"
        self.device_name = "Fake GPU (sm_87)"
        self.device: dict[int, np.ndarray] = {}
        self.threads: set[int] = set()
        self.closed = False

    def _here(self) -> None:
        self.threads.add(threading.get_ident())

    def alloc(self, nbytes: int) -> int:
        self._here()
        address = 0x1000 * (len(self.device) + 1)
        self.device[address] = np.zeros(max(1, nbytes), np.uint8)
        return address

    def host(self, shape, dtype) -> np.ndarray:
        self._here()
        return np.zeros(tuple(shape), dtype)

    def to_device(self, address: int, host: np.ndarray) -> None:
        self._here()
        raw = np.ascontiguousarray(host).view(np.uint8).reshape(-1)
        self.device[address][: raw.size] = raw

    def to_host(self, host: np.ndarray, address: int) -> None:
        self._here()
        flat = host.reshape(-1).view(np.uint8)
        flat[:] = self.device[address][: flat.size]

    @property
    def stream_handle(self) -> int:
        return 0xBEEF

    def synchronize(self) -> None:
        self._here()

    def close(self) -> None:
        self._here()
        self.closed = True


class _Enum:
    def __init__(self, **values: int) -> None:
        self.__dict__.update(values)


class FakeTensorRT(types.ModuleType):
    """The parts of the `tensorrt` module the backend uses, as 8.x (`major=8`) or 10.x."""

    def __init__(self, version: str, cuda: FakeCuda) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.major = int(version.split(".")[0])
        self.cuda = cuda
        self.built: list[dict] = []
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level=2: None})
        if self.major < 10:  # deprecated in 10.x, so the 10.x fake leaves it out
            self.NetworkDefinitionCreationFlag = _Enum(EXPLICIT_BATCH=0)
        self.MemoryPoolType = _Enum(WORKSPACE=0)
        self.BuilderFlag = _Enum(FP16=0)
        self.TensorIOMode = _Enum(NONE=0, INPUT=1, OUTPUT=2)
        self.DataType = _Enum(FLOAT=0, HALF=1)
        module = self

        class Builder:
            platform_has_fast_fp16 = True

            def __init__(self, logger):
                pass

            def create_network(self, flags):
                if module.major < 10 and flags != 1:
                    raise AssertionError("TensorRT 8.x needs the EXPLICIT_BATCH flag")
                if module.major >= 10 and flags != 0:
                    raise AssertionError("TensorRT 10.x networks take no flags")
                return types.SimpleNamespace(onnx=None)

            def create_builder_config(self):
                return FakeBuilderConfig(module.major)

            def create_optimization_profile(self):
                return FakeProfile()

            def build_serialized_network(self, network, config):
                (profile,) = config.profiles
                header = {"profile": profile.shapes, "flags": config.flags}
                module.built.append(header)
                return PLAN_MAGIC + json.dumps(header).encode() + b"\n" + network.onnx

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                self.network = network

            def parse(self, data):
                self.network.onnx = bytes(data)
                return True

            def get_error(self, i):
                return None

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, plan):
                if not plan.startswith(PLAN_MAGIC):
                    return None
                header, onnx = plan[len(PLAN_MAGIC) :].split(b"\n", 1)
                maker = FakeEngine10 if module.major >= 10 else FakeEngine8
                return maker(module, json.loads(header), onnx)

        self.Builder, self.OnnxParser, self.Runtime = Builder, OnnxParser, Runtime

    def nptype(self, dtype: int) -> type:
        return {self.DataType.FLOAT: np.float32, self.DataType.HALF: np.float16}[dtype]


class FakeBuilderConfig:
    def __init__(self, major: int) -> None:
        self.profiles: list[FakeProfile] = []
        self.flags: list[int] = []
        if major >= 10:
            self.set_memory_pool_limit = lambda pool, size: None
        else:
            self.max_workspace_size = 0

    def set_flag(self, flag: int) -> None:
        self.flags.append(flag)

    def add_optimization_profile(self, profile) -> int:
        self.profiles.append(profile)
        return 0


class FakeProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list] = {}

    def set_shape(self, name, lo, opt, hi) -> None:
        self.shapes[name] = [list(lo), list(opt), list(hi)]


class _FakeEngineBase:
    """A deserialized plan: I/O from its ONNX; execution runs it in onnxruntime on FakeCuda."""

    def __init__(self, trt: FakeTensorRT, header: dict, onnx: bytes) -> None:
        self.trt = trt
        self.session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        self.profile = header["profile"]
        self.io = [(i.name, True, [-1, *i.shape[1:]]) for i in self.session.get_inputs()]
        self.io += [(o.name, False, [-1, *o.shape[1:]]) for o in self.session.get_outputs()]
        self.device_memory_size = 1 << 20

    def create_execution_context(self):
        return FakeContext(self)

    def run(self, addresses: dict[str, int], shapes: dict[str, list]) -> None:
        memory = self.trt.cuda
        memory.threads.add(threading.get_ident())
        (name, _, _), *outputs = self.io
        shape = shapes[name]
        x = memory.device[addresses[name]][: int(np.prod(shape)) * 4].view(np.float32)
        results = self.session.run([o for o, _, _ in outputs], {name: x.reshape(shape)})
        for (out_name, _, _), value in zip(outputs, results, strict=True):
            raw = np.ascontiguousarray(value, np.float32).view(np.uint8).reshape(-1)
            memory.device[addresses[out_name]][: raw.size] = raw


class FakeEngine10(_FakeEngineBase):
    """ICudaEngine of TensorRT 10.x: the name-based tensor API only."""

    @property
    def num_io_tensors(self) -> int:
        return len(self.io)

    def get_tensor_name(self, index: int) -> str:
        return self.io[index][0]

    def _find(self, name: str):
        return next(t for t in self.io if t[0] == name)

    def get_tensor_mode(self, name: str) -> int:
        modes = self.trt.TensorIOMode
        return modes.INPUT if self._find(name)[1] else modes.OUTPUT

    def get_tensor_dtype(self, name: str) -> int:
        return self.trt.DataType.FLOAT

    def get_tensor_shape(self, name: str) -> list[int]:
        return list(self._find(name)[2])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[list[int]]:
        assert profile_index == 0
        return self.profile[name]

    @property
    def device_memory_size_v2(self) -> int:
        return self.device_memory_size


class FakeEngine8(_FakeEngineBase):
    """ICudaEngine of TensorRT 8.2 (JetPack 4.6): bindings by index."""

    @property
    def num_bindings(self) -> int:
        return len(self.io)

    def get_binding_name(self, index: int) -> str:
        return self.io[index][0]

    def binding_is_input(self, index: int) -> bool:
        return self.io[index][1]

    def get_binding_dtype(self, index: int) -> int:
        return self.trt.DataType.FLOAT

    def get_binding_shape(self, index: int) -> list[int]:
        return list(self.io[index][2])

    def get_profile_shape(self, profile_index: int, binding: int) -> list[list[int]]:
        assert profile_index == 0
        return self.profile[self.io[binding][0]]


class FakeContext:
    """IExecutionContext: the shape set on the input decides every output's batch."""

    def __init__(self, engine: _FakeEngineBase) -> None:
        self.engine = engine
        self.batch = -1
        self.addresses: dict[str, int] = {}
        self.calls: list[str] = []

    def _shape(self, name: str) -> list[int]:
        shape = next(s for n, _, s in self.engine.io if n == name)
        return [self.batch, *shape[1:]]

    # 10.x
    def set_input_shape(self, name: str, shape) -> bool:
        self.batch = int(shape[0])
        return True

    def get_tensor_shape(self, name: str) -> list[int]:
        return self._shape(name)

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.calls.append("execute_async_v3")
        shapes = {n: self._shape(n) for n, _, _ in self.engine.io}
        self.engine.run(self.addresses, shapes)
        return True

    # 8.x
    def set_binding_shape(self, index: int, shape) -> bool:
        self.batch = int(shape[0])
        return True

    def get_binding_shape(self, index: int) -> list[int]:
        return self._shape(self.engine.io[index][0])

    def execute_async_v2(self, bindings, stream_handle: int) -> bool:
        self.calls.append("execute_async_v2")
        names = [n for n, _, _ in self.engine.io]
        shapes = {n: self._shape(n) for n in names}
        self.engine.run(dict(zip(names, bindings, strict=True)), shapes)
        return True


# ------------------------------------------------------------------------------------- tests


def _fake(version: str) -> tuple[FakeTensorRT, FakeCuda]:
    cuda = FakeCuda()
    return FakeTensorRT(version, cuda), cuda


def _load(bundle_dir: Path, trt, cuda, **config):
    bundle = load_manifest(bundle_dir)
    return load_tensorrt(bundle, TensorRtConfig(**config), trt=trt, cuda=lambda kind, gpu: cuda)


@pytest.mark.parametrize(
    ("version", "api", "call"),
    [("8.2.1.8", "binding", "execute_async_v2"), ("10.3.0", "tensor", "execute_async_v3")],
)
def test_fake_tensorrt_runs_like_onnx_fp32(tiny_bundle, tmp_path, version, api, call):
    trt, cuda = _fake(version)
    x = tiny_bundle.x[:5]
    engine = _load(
        tiny_bundle.directory,
        trt,
        cuda,
        precision="fp32",
        cache_dir=str(tmp_path),
        batch_profile=(1, 4, 8),
    )
    try:
        adapter = engine._state.adapter
        assert adapter.api == api
        assert engine.input_spec.max_batch == 8 and not engine.input_spec.fixed_batch
        assert (
            f"tensorrt {version} ({api} API, fake-cuda 1.0, plan from built)" == engine.info.runtime
        )
        assert engine.info.device == "cuda:0 Fake GPU (sm_87)"
        assert engine.info.memory["device"] > 1 << 20
        got = engine.infer(np.concatenate([x, x]))  # 10 packets: split 8 + 2
        assert adapter.context.calls == [call, call]
    finally:
        engine.close()
    with load(tiny_bundle.directory, {"type": "onnxruntime"}) as reference:
        want = reference.infer(x)
    for task in TASK_NAMES:
        assert got[task].shape == (10, TASK_BY_NAME[task].num_classes)
        np.testing.assert_allclose(got[task][:5], want[task], atol=1e-6)
        np.testing.assert_allclose(got[task][5:], want[task], atol=1e-6)
    assert cuda.closed
    assert len(cuda.threads) == 1 and threading.get_ident() not in cuda.threads
    assert trt.built == [
        {"profile": {"iq": [[1, 2, 3000], [4, 2, 3000], [8, 2, 3000]]}, "flags": []}
    ]


def test_plan_is_built_once_then_cached(tiny_bundle, tmp_path):
    trt, cuda = _fake("10.3.0")
    engine = _load(tiny_bundle.directory, trt, cuda, precision="fp16", cache_dir=str(tmp_path))
    engine.close()
    assert trt.built[0]["flags"] == [trt.BuilderFlag.FP16]
    (plan,) = tmp_path.iterdir()
    from edge_core.bundle import sha256_file

    onnx_sha = sha256_file(tiny_bundle.directory / "model_fp32.onnx")
    assert plan.name == plan_cache_name(
        onnx_sha, "fp16", (1, 64, 256), "10.3.0", "Fake GPU (sm_87)"
    )
    again = _load(tiny_bundle.directory, trt, FakeCuda(), precision="fp16", cache_dir=str(tmp_path))
    assert again.info.runtime.endswith("plan from cache)")
    assert again.info.model_file == plan.name
    again.close()
    assert len(trt.built) == 1
    # another TensorRT version or GPU does not reuse it
    other, other_cuda = _fake("10.4.0")
    third = _load(
        tiny_bundle.directory, other, other_cuda, precision="fp16", cache_dir=str(tmp_path)
    )
    third.close()
    assert len(other.built) == 1 and len(list(tmp_path.iterdir())) == 2


def test_a_stale_cached_plan_says_to_delete_it(tiny_bundle, tmp_path):
    trt, cuda = _fake("10.3.0")
    _load(tiny_bundle.directory, trt, cuda, precision="fp32", cache_dir=str(tmp_path)).close()
    (plan,) = tmp_path.iterdir()
    plan.write_bytes(b"a plan of another build")
    with pytest.raises(ModelError, match=r"cannot deserialize it on Fake GPU .*delete this cached"):
        _load(tiny_bundle.directory, trt, FakeCuda(), precision="fp32", cache_dir=str(tmp_path))


def test_plan_cache_name_keys():
    name = plan_cache_name("ab" * 32, "fp16", (1, 64, 256), "8.2.1.8", "NVIDIA Tegra X2 (sm_62)")
    assert name == f"{'ab' * 8}-fp16-b1-64-256-trt8.2.1.8-nvidia-tegra-x2-sm-62.plan"
    keys = [
        plan_cache_name("cd" * 32, "fp16", (1, 64, 256), "8.2.1.8", "NVIDIA Tegra X2 (sm_62)"),
        plan_cache_name("ab" * 32, "fp32", (1, 64, 256), "8.2.1.8", "NVIDIA Tegra X2 (sm_62)"),
        plan_cache_name("ab" * 32, "fp16", (1, 32, 256), "8.2.1.8", "NVIDIA Tegra X2 (sm_62)"),
        plan_cache_name("ab" * 32, "fp16", (1, 64, 256), "10.3.0", "NVIDIA Tegra X2 (sm_62)"),
        plan_cache_name("ab" * 32, "fp16", (1, 64, 256), "8.2.1.8", "NVIDIA H200 (sm_90)"),
    ]
    assert len({name, *keys}) == 6


def test_adapter_refuses_an_unknown_engine_object():
    trt, _ = _fake("10.3.0")
    with pytest.raises(ModelError, match="neither num_io_tensors nor num_bindings"):
        TrtAdapter(trt, object())


def _with_plan(tiny_bundle, directory: Path, target: dict) -> Path:
    """A bundle copy holding a (fake) FP16 plan built for `target`."""
    shutil.copytree(tiny_bundle.directory, directory)
    onnx = (directory / "model_fp32.onnx").read_bytes()
    header = {"profile": {"iq": [[1, 2, 3000], [16, 2, 3000], [32, 2, 3000]]}, "flags": [0]}
    (directory / "model_fp16.plan").write_bytes(
        PLAN_MAGIC + json.dumps(header).encode() + b"\n" + onnx
    )
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    entry = json.loads(json.dumps(manifest["models"][0]))
    entry.update(file="model_fp16.plan", format="tensorrt-plan", precision="fp16", target=target)
    manifest["models"].append(entry)
    write_manifest(directory, manifest)
    return directory


def test_bundle_plan_used_only_on_its_tensorrt_and_gpu(tiny_bundle, tmp_path):
    target = {"tensorrt_version": "8.2.1.8", "device": "Fake GPU", "batch_profile": [1, 16, 32]}
    directory = _with_plan(tiny_bundle, tmp_path / "b", target)
    trt, cuda = _fake("8.2.1.8")
    with _load(directory, trt, cuda, precision="fp16", cache_dir=str(tmp_path / "c")) as engine:
        assert engine.info.runtime.endswith("plan from bundle)")
        assert engine.info.model_file == "model_fp16.plan"
        assert engine.input_spec.max_batch == 32
    assert trt.built == []
    newer, newer_cuda = _fake("10.3.0")
    with _load(
        directory, newer, newer_cuda, precision="fp16", cache_dir=str(tmp_path / "c")
    ) as engine:
        assert engine.info.runtime.endswith("plan from built)")
    assert len(newer.built) == 1


def test_missing_tensorrt_is_reported(tiny_bundle, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)
    with pytest.raises(EdgeTcError) as err:
        load(tiny_bundle.directory, {"type": "tensorrt"})
    message = str(err.value)
    assert message.startswith("engine 'tensorrt' unavailable: import of tensorrt halted")
    assert "install TensorRT and pycuda (or cuda-python)" in message


def test_no_cuda_binding_is_reported(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pycuda", None)
    monkeypatch.setitem(__import__("sys").modules, "pycuda.driver", None)
    monkeypatch.setitem(__import__("sys").modules, "cuda", None)
    with pytest.raises(
        EdgeTcError, match=r"engine 'tensorrt' unavailable: pycuda: .*; cuda-python"
    ):
        trt_backend.open_cuda("auto", 0)


# ----------------------------------------------------------------------------- on a real GPU


def test_real_tensorrt_matches_onnx(tiny_bundle, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (no NVIDIA GPU here)")
    x = tiny_bundle.x[:16]
    with load(tiny_bundle.directory, {"type": "onnxruntime"}) as reference:
        want = reference.infer(x)
    for precision, atol in (("fp32", 1e-4), ("fp16", 2e-2)):
        config = {"type": "tensorrt", "precision": precision, "cache_dir": str(tmp_path)}
        with load(tiny_bundle.directory, config) as engine:
            got = engine.infer(x)
        for task in TASK_NAMES:
            np.testing.assert_allclose(got[task], want[task], atol=atol)

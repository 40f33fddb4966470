"""TensorRT 8.0-8.4 plans through pycuda, for the engine worker under Python 3.6 (JetPack 4.6).

JetPack 4.6 (L4T R32, the Jetson TX2's last release) ships TensorRT 8.0/8.2 and its Python
bindings for the system's Python 3.6 only, while the daemon needs Python >= 3.10. So with
`engine.isolation = "process"` and `engine.worker_python = "/usr/bin/python3"` the TensorRT
backend's worker (`engines/worker.py`, `--runtime tensorrt-plan`) loads this file by path and
runs here, with JetPack's `tensorrt` and a `pycuda` built for 3.6; the daemon's side
(`engines/isolated.py`) adapts layouts, splits batches and dequantizes as for any engine.

What it does (`PlanRuntime`), with TensorRT's 8.x binding API (`num_bindings`,
`set_binding_shape`, `execute_async_v2`): takes a plan of the bundle whose manifest `target`
is this TensorRT version and GPU, else one cached under `cache_dir`, else builds one from the
bundle's FP32 ONNX (explicit batch, a dynamic batch profile, FP16 when asked and the GPU has
fast FP16: the TX2's Pascal sm_62 has; there is no INT8 here: the TX2 has no INT8 tensor
path) and caches it under the same name engines/tensorrt.py gives it. Then one execution
context, pinned host and device buffers for the profile's largest batch, one CUDA stream.

Python 3.6 only (checked by `vermin --target=3.6-` in tests/test_engines_isolated.py): no
`from __future__ import annotations`, dataclasses, walrus or positional-only parameters.
Errors are plain exceptions with the reason; the worker sends their text to the daemon.
"""

import os
import re
import sys
import tempfile

import numpy as np


class PlanError(Exception):
    """A plan that cannot be found, built, loaded or run; the message says why."""


def plan_cache_name(onnx_sha256, precision, batch_profile, trt_version, gpu_name):
    """File name of a cached plan (the same as engines.tensorrt.plan_cache_name)."""
    gpu = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")
    version = re.sub(r"[^0-9.]+", "", trt_version)
    lo, opt, hi = batch_profile
    return f"{onnx_sha256[:16]}-{precision}-b{lo}-{opt}-{hi}-trt{version}-{gpu}.plan"


def build_plan(trt, onnx, input_name, input_dims, precision, batch_profile, workspace_bytes):
    """Serialize a plan from ONNX bytes with TensorRT 8.x (explicit batch, max_workspace_size)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PlanError(f"TensorRT cannot parse the ONNX file: {errors}")
    config = builder.create_builder_config()
    config.max_workspace_size = workspace_bytes
    if precision == "fp16":
        if not builder.platform_has_fast_fp16:
            raise PlanError('this GPU has no fast FP16; use precision = "fp32"')
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision != "fp32":
        raise PlanError(f"precision {precision!r}: want fp32 or fp16 (no INT8 here)")
    profile = builder.create_optimization_profile()
    lo, opt, hi = batch_profile
    dims = tuple(input_dims)
    profile.set_shape(input_name, (lo, *dims), (opt, *dims), (hi, *dims))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise PlanError(f"TensorRT failed to build a {precision} plan")
    return bytes(plan)


def pycuda_version():
    return getattr(sys.modules.get("pycuda"), "VERSION_TEXT", "?")


def write_atomic(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class PlanRuntime:
    """One plan on one GPU; `invoke(x)` runs a chunk (n, ...) float32 -> task -> outputs.

    `config` (a dict, from `engines.tensorrt.foreign_runtime`): plans (bundle plans of the
    precision: path, file, target), onnx, onnx_file, onnx_sha256, input_name, input_dims,
    outputs (task -> tensor name), precision, batch_profile, workspace_bytes, gpu, cache_dir.
    """

    def __init__(self, config, trt=None, cuda=None):
        """`trt`, `cuda`: the `tensorrt` and `pycuda.driver` modules (imported when None)."""
        if trt is None:
            trt = __import__("tensorrt")
        if cuda is None:
            cuda = __import__("pycuda.driver", fromlist=["driver"])
        self.trt, self.cuda, self.config = trt, cuda, config
        cuda.init()
        device = cuda.Device(int(config["gpu"]))
        self.context_cuda = device.make_context()  # current on this (the worker's) thread
        try:
            major, minor = device.compute_capability()
            self.device_name = f"{device.name()} (sm_{major}{minor})"
            self._open()
        except BaseException:
            self.context_cuda.pop()
            self.context_cuda.detach()
            raise

    def _choose_plan(self):
        """(plan bytes, path, bundle file it stands for, source: bundle, cache or built)."""
        c, version = self.config, str(self.trt.__version__)
        for plan in c["plans"]:
            target = plan.get("target") or {}
            built_on = str(target.get("device", ""))
            if (
                target.get("tensorrt_version") == version
                and built_on
                and (self.device_name == built_on or self.device_name.startswith(built_on + " ("))
            ):
                with open(plan["path"], "rb") as f:
                    return f.read(), plan["path"], plan["file"], "bundle"
        name = plan_cache_name(
            c["onnx_sha256"], c["precision"], c["batch_profile"], version, self.device_name
        )
        path = os.path.join(c["cache_dir"], name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return f.read(), path, c["onnx_file"], "cache"
        with open(c["onnx"], "rb") as f:
            onnx = f.read()
        plan = build_plan(
            self.trt, onnx, c["input_name"], c["input_dims"], c["precision"],
            c["batch_profile"], int(c["workspace_bytes"]),
        )  # fmt: skip
        write_atomic(path, plan)
        return plan, path, c["onnx_file"], "built"

    def _open(self):
        trt, cuda, c = self.trt, self.cuda, self.config
        plan, self.plan_path, self.bundle_file, self.source = self._choose_plan()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise PlanError(
                "{}: TensorRT {} cannot deserialize it on {}; a plan only loads on the TensorRT "
                "version and GPU it was built with{}".format(
                    self.plan_path, trt.__version__, self.device_name,
                    " (delete this cached plan to rebuild it)" if self.source == "cache" else "",
                )
            )  # fmt: skip
        e = self.engine
        if not hasattr(e, "num_bindings"):
            raise PlanError(f"TensorRT {trt.__version__}: no binding API (8.0-8.4 here)")
        names = [e.get_binding_name(i) for i in range(e.num_bindings)]
        inputs = [n for i, n in enumerate(names) if e.binding_is_input(i)]
        if inputs != [c["input_name"]]:
            raise PlanError(
                "want one input named {!r}, the plan has {}".format(c["input_name"], inputs)
            )
        missing = [t for t in c["outputs"].values() if t not in names]
        if missing:
            raise PlanError(f"the plan has no outputs {missing}; it has {names}")
        self.input_index = names.index(c["input_name"])
        lo, _, hi = e.get_profile_shape(0, self.input_index)
        if int(lo[0]) != 1:
            raise PlanError(f"batch profile {lo} .. {hi}: want min batch 1")
        self.max_batch = int(hi[0])
        self.context = e.create_execution_context()
        if self.context is None:
            raise PlanError("TensorRT could not create an execution context")
        self.stream = cuda.Stream()
        self.buffers = []  # per binding: (device allocation, pinned host array)
        for i in range(e.num_bindings):
            dtype = np.dtype(trt.nptype(e.get_binding_dtype(i)))
            dims = tuple(int(d) for d in e.get_binding_shape(i))[1:]
            host = cuda.pagelocked_empty((self.max_batch, *dims), dtype)
            self.buffers.append((cuda.mem_alloc(max(1, host.nbytes)), host))
        self.outputs = dict((task, names.index(t)) for task, t in c["outputs"].items())

    def describe(self):
        e, c = self.engine, self.config
        dims = [int(d) for d in e.get_binding_shape(self.input_index)][1:]
        memory = getattr(e, "device_memory_size", 0) + sum(h.nbytes for _, h in self.buffers)
        return {
            "model_file": os.path.basename(self.plan_path),
            "bundle_model": self.bundle_file,
            "tasks": list(c["outputs"]),
            "input": {
                "name": c["input_name"],
                "layout": c["layout"],
                "shape": ["batch", *dims],
                "dtype": np.dtype(self.buffers[self.input_index][1].dtype).name,
                "max_batch": self.max_batch,
                "fixed_batch": False,
            },
            "info": {
                "backend": "tensorrt",
                "precision": c["precision"],
                "device": "cuda:{} {}".format(c["gpu"], self.device_name),
                "model_file": os.path.basename(self.plan_path),
                "runtime": (
                    f"tensorrt {self.trt.__version__} (binding API, pycuda {pycuda_version()}, "
                    f"plan from {self.source})"
                ),
                "threads": 0,
                "memory": {"device": int(memory)},
            },
        }

    def invoke(self, x):
        n, cuda = len(x), self.cuda
        if n > self.max_batch:
            raise PlanError(f"a chunk of {n} exceeds the plan's batch {self.max_batch}")
        device_in, host_in = self.buffers[self.input_index]
        host_in[:n] = x
        cuda.memcpy_htod_async(device_in, host_in[:n], self.stream)
        if self.context.set_binding_shape(self.input_index, tuple(x.shape)) is False:
            raise PlanError(f"TensorRT refused input shape {tuple(x.shape)}")
        bindings = [int(device) for device, _ in self.buffers]
        if not self.context.execute_async_v2(bindings=bindings, stream_handle=self.stream.handle):
            raise PlanError("TensorRT execution failed")
        for index in self.outputs.values():
            shape = tuple(int(d) for d in self.context.get_binding_shape(index))
            if shape[0] != n:
                raise PlanError(f"output binding {index} has shape {shape} for batch {n}")
            device_out, host_out = self.buffers[index]
            cuda.memcpy_dtoh_async(host_out[:n], device_out, self.stream)
        self.stream.synchronize()
        return dict((task, self.buffers[i][1][:n].copy()) for task, i in self.outputs.items())

    def close(self):
        for device, _ in self.buffers:
            device.free()
        self.buffers = []
        self.context = self.engine = self.runtime = None
        self.context_cuda.pop()
        self.context_cuda.detach()

"""TensorRT under another interpreter (JetPack 4.6: TensorRT 8.2 and pycuda for Python 3.6 only):
`engine.worker_python` starts the worker (engines/worker.py) with `engines/trt_runtime.py`, on
fakes of `tensorrt` 8.2 and `pycuda` 2021.1 that follow their Python API (tests/fakes/trt8).

The "foreign" interpreter here is this venv's Python behind a wrapper that puts the fakes on its
path (no Python 3.6 on this machine); that the two modules are 3.6 code is checked by vermin in
tests/test_engines_isolated.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_core.bundle import load_manifest, sha256_file
from engines.base import load
from engines.isolated import EngineWorkerError, IsolatedEngine
from engines.tensorrt import plan_cache_name

pytest.importorskip("onnxruntime", reason="the fake TensorRT runs plans in onnxruntime")
pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "models" / "default"
FAKES = Path(__file__).parent / "fakes" / "trt8"
TX2 = "NVIDIA Tegra X2 (sm_62)"


@pytest.fixture
def python36(tmp_path) -> str:
    """An interpreter whose `tensorrt` and `pycuda` are JetPack 4.6's (the fakes)."""
    wrapper = tmp_path / "python3.6"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{FAKES}" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def config(python: str, cache: Path, **extra) -> dict:
    return {"type": "tensorrt", "isolation": "process", "worker_python": python,
            "cache_dir": str(cache), "batch_profile": [1, 8, 32], **extra}  # fmt: skip


def test_fp32_plan_is_built_cached_and_agrees_with_onnxruntime(python36, tmp_path):
    x = np.random.default_rng(4).standard_normal((40, 2, 3000)).astype(np.float32)
    with load(BUNDLE, {"type": "onnxruntime", "threads": 1}) as reference:
        want = reference.infer(x)
    cache = tmp_path / "cache"
    with load(BUNDLE, config(python36, cache, precision="fp32")) as engine:
        assert isinstance(engine, IsolatedEngine)
        assert engine.input_spec.max_batch == 32  # the profile's max: 40 packets = 32 + 8
        got = engine.infer(x)
        info = engine.info
    assert info.backend == "tensorrt" and info.precision == "fp32"
    assert info.runtime == "tensorrt 8.2.1.8 (binding API, pycuda 2021.1, plan from built)"
    assert info.device == f"cuda:0 {TX2}, worker process"
    for task, probs in want.items():
        np.testing.assert_allclose(got[task], probs, rtol=1e-6, atol=1e-7)
    onnx = load_manifest(BUNDLE).select("onnx", "fp32").path
    name = plan_cache_name(sha256_file(onnx), "fp32", (1, 8, 32), "8.2.1.8", TX2)
    assert [p.name for p in cache.iterdir()] == [name]  # named as the in-process backend does
    with load(BUNDLE, config(python36, cache, precision="fp32")) as again:
        assert again.info.runtime.endswith("plan from cache)")
        np.testing.assert_allclose(again.infer(x[:3])["app"], want["app"][:3], rtol=1e-6)


def test_fp16_plan_asks_tensorrt_for_fp16(python36, tmp_path):
    cache = tmp_path / "cache"
    with load(BUNDLE, config(python36, cache, precision="fp16")) as engine:
        assert engine.info.precision == "fp16"
        probs = engine.infer(np.zeros((2, 2, 3000), np.float32))
    assert probs["phy"].shape == (2, 3)
    (plan,) = cache.iterdir()
    assert "-fp16-b1-8-32-trt8.2.1.8-nvidia-tegra-x2-sm-62.plan" in plan.name
    header = json.loads(plan.read_bytes()[len(b"FAKEPLAN") :].split(b"\n", 1)[0])
    assert header["flags"] == [0]  # BuilderFlag.FP16
    assert header["profile"]["iq"] == [[1, 2, 3000], [8, 2, 3000], [32, 2, 3000]]


def test_a_worker_python_without_tensorrt_names_the_import_error(tmp_path):
    with pytest.raises(EngineWorkerError, match="No module named 'tensorrt'"):
        load(BUNDLE, config(sys.executable, tmp_path / "cache"))


def test_only_backends_with_a_foreign_runtime_take_worker_python(python36):
    with pytest.raises(Exception, match="only the daemon's own interpreter runs it"):
        load(BUNDLE, {"type": "onnxruntime", "isolation": "process", "worker_python": python36})

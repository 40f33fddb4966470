"""Engines on the tiny exported bundle: the real onnxruntime and LiteRT interpreters.

Each engine is compared with the exporter's reference: ONNX FP32 with the PyTorch model, the
INT8 engines with the same file run directly in its runtime. Bundles with other conventions
(the paper-1 authors' tensor names, an NHWC (n, 2, 3000, 1) float-input TFLite model, a file
compiled for the Edge TPU, corrupt or mismatched files) are made from the tiny bundle's files.
"""

from __future__ import annotations

import builtins
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_core.bundle import MANIFEST_NAME, load_manifest, write_manifest
from edge_core.errors import EdgeTcError, ModelError
from edge_core.schema import TASK_BY_NAME, TASK_NAMES
from engines import base
from engines.base import EngineConfigError, load

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert not installed")

AUTHORS_ORDER = ("app", "phy", "app_type", "frame")
"""Output order of the crafted authors' TFLite model: not the task order."""


def _x(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 2, 3000)).astype(np.float32)


def _check_probabilities(out: dict[str, np.ndarray], n: int, atol: float = 1e-5) -> None:
    assert list(out) == list(TASK_NAMES)
    for task, p in out.items():
        assert p.dtype == np.float32
        assert p.shape == (n, TASK_BY_NAME[task].num_classes)
        assert np.all(p >= 0)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=atol)


def _copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_manifest(directory: Path, edit) -> None:
    """Apply `edit(manifest)` and rewrite it (file hashes recomputed, validated)."""
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    edit(manifest)
    write_manifest(directory, manifest)


def _entry(manifest: dict, file: str) -> dict:
    return next(e for e in manifest["models"] if e["file"] == file)


def _only(directory: Path, keep: str) -> None:
    """Drop every model file of a bundle copy but `keep`."""

    def edit(m):
        m["models"] = [e for e in m["models"] if e["file"] == keep]

    for p in directory.iterdir():
        if p.name not in (keep, MANIFEST_NAME):
            p.unlink()
    _edit_manifest(directory, edit)


# ----------------------------------------------------------------------------- reference outputs


def test_onnx_fp32_matches_pytorch(tiny_bundle):
    from train.export import torch_probabilities

    x = tiny_bundle.x[:40]
    want = torch_probabilities(tiny_bundle.model, x, TASK_NAMES)
    with load(tiny_bundle.directory, {"type": "onnxruntime", "threads": 1}) as engine:
        got = engine.infer(x)
        assert engine.info.backend == "onnxruntime"
        assert engine.info.precision == "fp32"
        assert engine.info.device == "cpu"
        assert engine.info.memory["model_file"] > 0
        assert engine.input_spec.layout == "NCW"
        assert not engine.input_spec.fixed_batch
    _check_probabilities(got, len(x))
    for task in TASK_NAMES:
        np.testing.assert_allclose(got[task], want[task], atol=1e-4)


def test_onnx_int8_matches_the_file_run_directly(tiny_bundle):
    path = tiny_bundle.directory / "model_int8.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = tiny_bundle.x[:24]
    want = dict(zip(TASK_NAMES, session.run(list(TASK_NAMES), {"iq": x}), strict=True))
    with load(tiny_bundle.directory, {"type": "onnxruntime", "precision": "int8"}) as engine:
        got = engine.infer(x)
        assert engine.info.precision == "int8"
        assert engine.info.model_file == "model_int8.onnx"
    # QDQ softmax outputs are multiples of 1/256: the sum is 1 to a few steps
    _check_probabilities(got, len(x), atol=8 / 256)
    for task in TASK_NAMES:
        np.testing.assert_allclose(got[task], want[task], atol=1e-6)


def _tflite_direct(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The file run by hand: NHWC, quantize, invoke one packet at a time, dequantize."""
    interp = litert.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    outs = {d["name"]: d for d in interp.get_output_details()}
    in_scale, in_zero = inp["quantization"]
    parts: dict[str, list[np.ndarray]] = {t: [] for t in TASK_NAMES}
    for packet in x:  # (2, L)
        value = packet.T[None, None]  # (1, 1, L, 2)
        q = np.clip(np.round(value / in_scale) + in_zero, -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        for task in TASK_NAMES:
            scale, zero = outs[task]["quantization"]
            raw = interp.get_tensor(outs[task]["index"]).astype(np.float32)
            parts[task].append((raw - zero) * scale)
    return {t: np.concatenate(v) for t, v in parts.items()}


def test_tflite_int8_matches_the_file_run_directly(tiny_bundle):
    x = tiny_bundle.x[:7]
    want = _tflite_direct(tiny_bundle.directory / "model_int8.tflite", x)
    with load(tiny_bundle.directory, {"type": "tflite", "threads": 1, "max_batch": 1}) as engine:
        spec = engine.input_spec
        assert (spec.layout, spec.dtype, spec.max_batch, spec.fixed_batch) == (
            "NHWC",
            "int8",
            1,
            True,
        )
        assert engine.info.device == "cpu (xnnpack)"
        got = engine.infer(x)  # 7 calls of batch 1
    _check_probabilities(got, len(x), atol=8 / 256)
    for task in TASK_NAMES:
        np.testing.assert_allclose(got[task], want[task], atol=1e-6)


def test_tflite_runs_whole_batches_on_the_cpu_with_the_batch_1_answers(tiny_bundle):
    x = np.concatenate([tiny_bundle.x] * 2)[:37]  # 37 = 32 + 4 + 1: three interpreters
    want = _tflite_direct(tiny_bundle.directory / "model_int8.tflite", x)
    with load(tiny_bundle.directory, {"type": "tflite", "threads": 1}) as engine:
        spec = engine.input_spec
        assert (spec.max_batch, spec.fixed_batch) == (64, False)
        assert engine.info.device == "cpu (xnnpack), batches of up to 64"
        got = engine.infer(x)
        assert sorted(engine._interpreters) == [1, 4, 32]  # one per binary digit, no padding
        engine.warmup(20)
        assert sorted(engine._interpreters) == [1, 2, 4, 8, 16, 32]
        assert engine.infer(x[:2])["app"].shape == (2, 7)
    for task in TASK_NAMES:
        np.testing.assert_allclose(got[task], want[task], atol=1e-6)


def test_tflite_batch_1_reshape_is_made_batch_generic_and_nothing_else(tiny_bundle):
    from engines.tflite import batch_generic_reshapes

    data = (tiny_bundle.directory / "model_int8.tflite").read_bytes()
    patched, changed = batch_generic_reshapes(data)
    assert len(patched) == len(data)
    if changed:  # an export before issue 13: the flatten's [1, features] target
        diff = [i for i, (a, b) in enumerate(zip(data, patched, strict=True)) if a != b]
        assert changed == 1 and len(diff) == 8  # int32 1 -> -1 in the shape tensor and option
        assert {patched[i] for i in diff} == {0xFF}
    again, twice = batch_generic_reshapes(patched)
    assert (again, twice) == (patched, 0)
    with pytest.raises(ValueError, match="not a TFLite model"):
        batch_generic_reshapes(b"\x08\x07 onnx bytes")


def test_tflite_without_xnnpack_gives_the_same_answer(tiny_bundle):
    x = tiny_bundle.x[:3]
    with load(tiny_bundle.directory, {"type": "tflite", "xnnpack": False}) as engine:
        assert engine.info.device == "cpu, batches of up to 64"
        got = engine.infer(x)
    want = _tflite_direct(tiny_bundle.directory / "model_int8.tflite", x)
    # XNNPACK and TFLite's builtin kernels requantize with different rounding; which one wins a
    # tie depends on the CPU's SIMD path, and two quanta of the uint8 output were seen here
    for task in TASK_NAMES:
        np.testing.assert_allclose(got[task], want[task], atol=2 / 256 + 1e-6)


# ------------------------------------------------------------------------------ batch splitting


def test_threads_and_spinning_do_not_change_the_answer(tiny_bundle):
    x = tiny_bundle.x[:6]
    with load(tiny_bundle.directory, {"type": "onnxruntime", "threads": 2, "spin": False}) as e:
        assert e.info.threads == 2
        got = e.infer(x)
    with load(tiny_bundle.directory, {"type": "onnxruntime", "threads": 1}) as e:
        want = e.infer(x)
    for task in TASK_NAMES:
        np.testing.assert_allclose(got[task], want[task], atol=1e-6)


def test_batch_larger_than_max_is_split(tiny_bundle):
    x = _x(11, seed=3)
    with load(tiny_bundle.directory, {"type": "onnxruntime", "max_batch": 4}) as small:
        assert small.input_spec.max_batch == 4
        split = small.infer(x)  # runs as 4 + 4 + 3
    with load(tiny_bundle.directory, {"type": "onnxruntime"}) as whole:
        once = whole.infer(x)
    _check_probabilities(split, 11)
    for task in TASK_NAMES:
        np.testing.assert_allclose(split[task], once[task], atol=1e-6)


def test_fixed_batch_model_gets_padded_chunks(tiny_bundle):
    """A fixed-batch model sees exactly its batch every call; the padding is dropped again."""
    with load(tiny_bundle.directory, {"type": "tflite", "max_batch": 1}) as engine:
        seen: list[tuple[int, ...]] = []
        invoke = engine._invoke

        def spy(chunk):
            seen.append(chunk.shape)
            return invoke(chunk)

        engine._invoke = spy  # type: ignore[method-assign]
        out = engine.infer(_x(3))
        empty = engine.infer(np.zeros((0, 2, 3000), np.float32))
    assert seen == [(1, 1, 3000, 2)] * 3
    _check_probabilities(out, 3, atol=8 / 256)
    assert {t: v.shape for t, v in empty.items()} == {
        t: (0, TASK_BY_NAME[t].num_classes) for t in TASK_NAMES
    }


def test_fixed_batch_larger_than_one_pads_the_last_chunk(tiny_bundle, tmp_path):
    """An ONNX model exported with batch 4 fixed: 6 packets run as 4 + (2 + 2 zero packets)."""
    onnx = pytest.importorskip("onnx")
    directory = _copy_bundle(tiny_bundle.directory, tmp_path / "fixed4")
    _only(directory, "model_fp32.onnx")
    path = directory / "model_fp32.onnx"
    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(model, str(path))

    def edit(m):
        entry = m["models"][0]
        entry["input"]["shape"][0] = 4
        for spec in entry["outputs"].values():
            spec["shape"][0] = 4

    _edit_manifest(directory, edit)
    x = _x(6, seed=5)
    with load(directory, {"type": "onnxruntime"}) as engine:
        assert (engine.input_spec.max_batch, engine.input_spec.fixed_batch) == (4, True)
        got = engine.infer(x)
    with load(tiny_bundle.directory, {"type": "onnxruntime"}) as dynamic:
        want = dynamic.infer(x)
    for task in TASK_NAMES:
        np.testing.assert_allclose(got[task], want[task], atol=1e-6)


def test_infer_rejects_wrong_packet_shape_and_closed_engine(tiny_bundle):
    engine = load(tiny_bundle.directory, {"type": "onnxruntime"})
    with pytest.raises(ValueError, match=r"want packets \(n, 2, 3000\), got \(2, 2, 2999\)"):
        engine.infer(np.zeros((2, 2, 2999), np.float32))
    engine.warmup(2)
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(EdgeTcError, match="is closed"):
        engine.infer(_x(1))


# ------------------------------------------------------------------------------ missing runtime


def _block_imports(monkeypatch, *prefixes: str) -> None:
    """Make `import <prefix>...` fail as if the package were not installed."""
    for name in list(sys.modules):
        if name.split(".")[0] in prefixes:
            monkeypatch.delitem(sys.modules, name)
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in prefixes:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_missing_onnxruntime_is_reported(tiny_bundle, monkeypatch):
    _block_imports(monkeypatch, "onnxruntime")
    with pytest.raises(EdgeTcError) as err:
        load(tiny_bundle.directory, {"type": "onnxruntime"})
    message = str(err.value)
    assert message.startswith("engine 'onnxruntime' unavailable: No module named 'onnxruntime'")
    assert "; install 'edge-tc[onnx]'" in message


def test_missing_tflite_runtime_is_reported(tiny_bundle, monkeypatch):
    _block_imports(monkeypatch, "tflite_runtime", "ai_edge_litert")
    with pytest.raises(EdgeTcError) as err:
        load(tiny_bundle.directory, {"type": "tflite"})
    message = str(err.value)
    assert message.startswith("engine 'tflite' unavailable: tflite_runtime.interpreter: No module")
    assert "ai_edge_litert.interpreter: No module" in message
    assert "; install 'edge-tc[tflite]'" in message


def test_onnxruntime_gpu_provider_missing_is_reported(tiny_bundle):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(EdgeTcError, match=r"engine 'onnxruntime' unavailable: device 'cuda' needs"):
        load(tiny_bundle.directory, {"type": "onnxruntime", "device": "cuda"})


# ------------------------------------------------------------------------------- bad model files


def test_corrupt_model_file_names_the_file(tiny_bundle, tmp_path):
    directory = _copy_bundle(tiny_bundle.directory, tmp_path / "corrupt")
    for name in ("model_fp32.onnx", "model_int8.tflite"):
        (directory / name).write_bytes((directory / name).read_bytes()[:4000])
    _edit_manifest(directory, lambda m: None)  # the hashes now match the truncated files
    with pytest.raises(ModelError, match=r"model_fp32\.onnx: onnxruntime cannot load it"):
        load(directory, {"type": "onnxruntime"})
    with pytest.raises(ModelError, match=r"model_int8\.tflite: "):
        load(directory, {"type": "tflite"})


def test_tampered_model_file_is_refused_before_the_runtime(tiny_bundle, tmp_path):
    directory = _copy_bundle(tiny_bundle.directory, tmp_path / "tampered")
    path = directory / "model_int8.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelError, match=r"model_int8\.onnx: \d+ bytes, manifest says"):
        load(directory, {"type": "onnxruntime", "precision": "int8"})


def _dense_onnx(path: Path, input_name: str, input_shape: list, outputs: dict[str, int]) -> None:
    """A small real ONNX model: flatten, one dense layer and a softmax per output."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    features = int(np.prod(input_shape[1:]))
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Flatten", [input_name], ["flat"], axis=1)]
    inits = []
    for name, classes in outputs.items():
        w = numpy_helper.from_array(
            (rng.standard_normal((features, classes)) * 0.01).astype(np.float32), f"{name}_w"
        )
        inits.append(w)
        nodes.append(helper.make_node("MatMul", ["flat", w.name], [f"{name}_logits"]))
        nodes.append(helper.make_node("Softmax", [f"{name}_logits"], [name], axis=-1))
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", c])
            for n, c in outputs.items()
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_wrong_input_length_in_the_file(tiny_bundle, tmp_path):
    directory = _copy_bundle(tiny_bundle.directory, tmp_path / "length")
    _only(directory, "model_fp32.onnx")
    classes = {t: TASK_BY_NAME[t].num_classes for t in TASK_NAMES}
    _dense_onnx(directory / "model_fp32.onnx", "iq", ["batch", 2, 2048], classes)
    _edit_manifest(directory, lambda m: None)
    with pytest.raises(ModelError) as err:
        load(directory, {"type": "onnxruntime"})
    message = str(err.value)
    assert "model_fp32.onnx: input 'iq' is float32 ['batch', 2, 2048] in the file" in message
    assert "the manifest says float32 ['batch', 2, 3000]" in message


def test_wrong_input_length_in_the_manifest(tiny_bundle, tmp_path):
    directory = _copy_bundle(tiny_bundle.directory, tmp_path / "length2")

    def edit(m):
        _entry(m, "model_fp32.onnx")["input"]["shape"] = ["batch", 2, 2048]

    _edit_manifest(directory, edit)
    with pytest.raises(
        ModelError,
        match=r"model_fp32\.onnx: input 'iq' has shape .*2048.*: "
        r"input length 2048, the task schema's is 3000",
    ):
        load(directory, {"type": "onnxruntime"})


def test_output_classes_not_the_task_schema(tiny_bundle, tmp_path):
    directory = _copy_bundle(tiny_bundle.directory, tmp_path / "classes")
    _only(directory, "model_fp32.onnx")
    classes = {t: TASK_BY_NAME[t].num_classes for t in TASK_NAMES} | {"phy": 4}
    _dense_onnx(directory / "model_fp32.onnx", "iq", ["batch", 2, 3000], classes)
    _edit_manifest(directory, lambda m: None)
    with pytest.raises(
        ModelError,
        match=r"model_fp32\.onnx: task 'phy' output 'phy' is "
        r"float32 \['batch', 4\] in the file, the manifest says",
    ):
        load(directory, {"type": "onnxruntime"})


def test_task_schema_mismatch_in_the_manifest(tiny_bundle, tmp_path):
    directory = _copy_bundle(tiny_bundle.directory, tmp_path / "schema")
    manifest_path = directory / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["schema"]["tasks"][0]["classes"] = ["802.11b", "802.11g", "802.11ax"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"manifest\.json: schema: task 'phy' classes"):
        load(directory, {"type": "onnxruntime"})


def test_output_tensor_missing_from_the_file(tiny_bundle, tmp_path):
    directory = _copy_bundle(tiny_bundle.directory, tmp_path / "names")

    def edit(m):
        _entry(m, "model_int8.tflite")["outputs"]["app"]["name"] = "task4"

    _edit_manifest(directory, edit)
    with pytest.raises(ModelError, match=r"model_int8\.tflite: no output 'task4' for task 'app'"):
        load(directory, {"type": "tflite"})


def test_quantization_not_the_manifest_s(tiny_bundle, tmp_path):
    directory = _copy_bundle(tiny_bundle.directory, tmp_path / "quant")

    def edit(m):
        _entry(m, "model_int8.tflite")["outputs"]["frame"]["quantization"]["zero_point"] = 0

    _edit_manifest(directory, edit)
    with pytest.raises(ModelError, match=r"task 'frame' output 'frame' has scale/zero-point"):
        load(directory, {"type": "tflite"})


def test_model_key_picks_a_file_and_checks_its_format(tiny_bundle):
    config = {"type": "onnxruntime", "model": "model_int8.onnx"}
    with load(tiny_bundle.directory, config) as engine:
        assert engine.info.model_file == "model_int8.onnx"
    with pytest.raises(ModelError, match="engine 'onnxruntime' runs onnx models, not tflite"):
        load(tiny_bundle.directory, {"type": "onnxruntime", "model": "model_int8.tflite"})
    with pytest.raises(ModelError, match=r"no model file 'nope\.onnx'"):
        load(tiny_bundle.directory, {"type": "onnxruntime", "model": "nope.onnx"})
    with pytest.raises(ModelError, match=r"no tflite/fp32 model in the bundle"):
        load(tiny_bundle.directory, {"type": "tflite", "precision": "fp32"})


# ---------------------------------------------------------------------------------- Edge TPU


def _with_edgetpu_op(data: bytes) -> bytes:
    """The model with the operator code `edgetpu_compiler` adds (custom, 'edgetpu-custom-op')."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(data))
    code = fb.OperatorCodeT()
    code.builtinCode = fb.BuiltinOperator.CUSTOM
    code.deprecatedBuiltinCode = fb.BuiltinOperator.CUSTOM
    code.customCode = "edgetpu-custom-op"
    code.version = 1
    model.operatorCodes.append(code)
    return bytes(fbu.convert_object_to_bytearray(model))


def test_operator_code_reader_agrees_with_litert(tiny_bundle):
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    from engines.tflite import is_edgetpu_compiled, tflite_operator_codes

    data = (tiny_bundle.directory / "model_int8.tflite").read_bytes()
    model = fbu.read_model_from_bytearray(bytearray(data))
    want = [
        (max(c.builtinCode, c.deprecatedBuiltinCode), c.customCode) for c in model.operatorCodes
    ]
    assert tflite_operator_codes(data) == want
    assert not is_edgetpu_compiled(c for _, c in want)
    compiled = tflite_operator_codes(_with_edgetpu_op(data))
    assert compiled[-1] == (32, "edgetpu-custom-op")
    assert is_edgetpu_compiled(c for _, c in compiled)
    with pytest.raises(ValueError, match="no 'TFL3' file identifier"):
        tflite_operator_codes(b"\x08\x07 onnx bytes")


def test_edgetpu_model_without_the_delegate(tiny_bundle, tmp_path):
    directory = _copy_bundle(tiny_bundle.directory, tmp_path / "edgetpu")
    path = directory / "model_int8.tflite"
    path.write_bytes(_with_edgetpu_op(path.read_bytes()))
    _edit_manifest(directory, lambda m: None)
    with pytest.raises(ModelError) as err:
        load(directory, {"type": "tflite"})
    message = str(err.value)
    assert message.startswith(f"{path}: compiled for the Edge TPU")
    assert "apt-get install libedgetpu1-std" in message
    assert 'device = "edgetpu"' in message
    # asking for the Edge TPU on a host without libedgetpu: the delegate cannot load
    with pytest.raises(EdgeTcError) as err2:
        load(directory, {"type": "tflite", "device": "edgetpu", "edgetpu_device": "usb:0"})
    message = str(err2.value)
    assert message.startswith("engine 'tflite' unavailable: cannot open the Edge TPU (usb:0)")
    assert "libedgetpu.so.1" in message and "libedgetpu1-std" in message
    # the bench picks the Edge TPU for a compiled model
    from engines.tflite import bench_configs

    (config,) = bench_configs(load_manifest(directory), 1)
    assert config.device == "edgetpu"  # type: ignore[attr-defined]


# ------------------------------------------------------------------- the authors' conventions


def _authors_onnx(src: Path, dst: Path) -> None:
    """The FP32 export renamed as the paper-1 authors name theirs: input_buffer, output_taskN."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(src))
    names = {"iq": "input_buffer"} | {
        t: f"output_task{TASK_BY_NAME[t].task_id + 1}" for t in TASK_NAMES
    }
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    for info in graph.value_info:
        info.name = names.get(info.name, info.name)
    onnx.save(model, str(dst))


def _name(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _authors_tflite(model, calib_x: np.ndarray) -> bytes:
    """An Edge-TPU-style model as the authors' is: float32 input `input_buffer` (1, 2, 3000, 1),
    int8 softmax outputs `quant_task_N_output` stored in `AUTHORS_ORDER`, not task order.

    The exporter's float graph gets a TRANSPOSE (0, 3, 2, 1) in front, then TFLite's own
    calibrator quantizes it with a float input and int8 outputs.
    """
    from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as wrapper
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    from train.export import tflite_float_model

    graph = fbu.read_model_from_bytearray(bytearray(tflite_float_model(model, TASK_NAMES)))
    sub = graph.subgraphs[0]
    (old_input,) = sub.inputs

    def tensor(shape, name, kind, buffer=0):
        t = fb.TensorT()
        t.shape, t.name, t.type, t.buffer = list(shape), name, kind, buffer
        sub.tensors.append(t)
        return len(sub.tensors) - 1

    perm = fb.BufferT()
    perm.data = np.frombuffer(np.array([0, 3, 2, 1], np.int32).tobytes(), np.uint8)
    graph.buffers.append(perm)
    new_input = tensor([1, 2, 3000, 1], "input_buffer", fb.TensorType.FLOAT32)
    perm_t = tensor([4], "input_buffer/perm", fb.TensorType.INT32, len(graph.buffers) - 1)
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.TRANSPOSE
    code.version = 1
    graph.operatorCodes.append(code)
    op = fb.OperatorT()
    op.opcodeIndex = len(graph.operatorCodes) - 1
    op.inputs, op.outputs = [new_input, perm_t], [old_input]
    op.builtinOptionsType = fb.BuiltinOptions.TransposeOptions
    op.builtinOptions = fb.TransposeOptionsT()
    sub.operators.insert(0, op)
    sub.inputs = [new_input]
    by_name = {_name(sub.tensors[i].name): i for i in sub.outputs}
    sub.outputs = [by_name[t] for t in AUTHORS_ORDER]
    float_model = bytes(fbu.convert_object_to_bytearray(graph))

    calibrator = wrapper.CalibrationWrapper(float_model, [], [])
    calibrator.Prepare([[1, 2, 3000, 1]])
    for packet in calib_x:
        calibrator.FeedTensor([packet[None, :, :, None]])
    int8 = np.dtype(np.int8).num
    quantized = calibrator.QuantizeModel(
        np.dtype(np.float32).num, int8, False, int8, np.dtype(np.int32).num, False, True
    )
    graph = fbu.read_model_from_bytearray(bytearray(quantized))
    sub = graph.subgraphs[0]
    for i in sub.outputs:
        task = _name(sub.tensors[i].name)
        sub.tensors[i].name = f"quant_task_{TASK_BY_NAME[task].task_id + 1}_output"
    return bytes(fbu.convert_object_to_bytearray(graph))


@pytest.fixture(scope="module")
def authors_bundle(tiny_bundle, tmp_path_factory):
    """The tiny model's files in the authors' conventions, mapped to tasks by the manifest."""
    directory = _copy_bundle(tiny_bundle.directory, tmp_path_factory.mktemp("authors") / "b")
    _authors_onnx(directory / "model_fp32.onnx", directory / "model_fp32.onnx")
    (directory / "model_int8.tflite").write_bytes(
        _authors_tflite(tiny_bundle.model, tiny_bundle.x[:48])
    )
    (directory / "model_int8.onnx").unlink()
    interp = litert.Interpreter(model_path=str(directory / "model_int8.tflite"))
    outputs = {d["name"]: d for d in interp.get_output_details()}
    (inp,) = interp.get_input_details()

    def edit(m):
        m["models"] = [e for e in m["models"] if e["file"] != "model_int8.onnx"]
        onnx_entry = _entry(m, "model_fp32.onnx")
        onnx_entry["input"]["name"] = "input_buffer"
        for task, spec in onnx_entry["outputs"].items():
            spec["name"] = f"output_task{TASK_BY_NAME[task].task_id + 1}"
        tfl = _entry(m, "model_int8.tflite")
        tfl["input"] = {
            "name": inp["name"],
            "shape": [int(d) for d in inp["shape"]],
            "dtype": "float32",
            "quantization": None,
            "layout": "NHWC",
        }
        for task, spec in tfl["outputs"].items():
            d = outputs[f"quant_task_{TASK_BY_NAME[task].task_id + 1}_output"]
            scale, zero = d["quantization"]
            spec["name"] = d["name"]
            spec["quantization"] = {"scale": float(scale), "zero_point": int(zero)}

    _edit_manifest(directory, edit)
    return directory


def test_authors_onnx_names_resolved_through_the_manifest(tiny_bundle, authors_bundle):
    x = tiny_bundle.x[:9]
    with load(authors_bundle, {"type": "onnxruntime"}) as engine:
        assert engine.input_spec.name == "input_buffer"
        got = engine.infer(x)
    with load(tiny_bundle.directory, {"type": "onnxruntime"}) as ours:
        want = ours.infer(x)
    for task in TASK_NAMES:
        np.testing.assert_allclose(got[task], want[task], atol=1e-6)


def test_authors_tflite_float_input_outputs_out_of_order(tiny_bundle, authors_bundle):
    path = authors_bundle / "model_int8.tflite"
    interp = litert.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    details = interp.get_output_details()
    assert inp["name"] == "input_buffer" and list(inp["shape"]) == [1, 2, 3000, 1]
    assert inp["dtype"] == np.float32
    stored = [d["name"] for d in details]
    assert stored == [f"quant_task_{TASK_BY_NAME[t].task_id + 1}_output" for t in AUTHORS_ORDER]
    x = tiny_bundle.x[:12]
    with load(authors_bundle, {"type": "tflite"}) as engine:
        assert (engine.input_spec.layout, engine.input_spec.dtype) == ("NHWC", "float32")
        got = engine.infer(x)
    _check_probabilities(got, len(x), atol=8 / 256)
    by_name = {d["name"]: d for d in details}
    for i, packet in enumerate(x):  # the file by hand: (1, 2, L, 1), outputs by name
        interp.set_tensor(inp["index"], packet[None, :, :, None])
        interp.invoke()
        for task in TASK_NAMES:
            d = by_name[f"quant_task_{TASK_BY_NAME[task].task_id + 1}_output"]
            scale, zero = d["quantization"]
            want = (interp.get_tensor(d["index"]).astype(np.float32) - zero) * scale
            np.testing.assert_allclose(got[task][i], want[0], atol=1e-6)
    # the quantized model still answers like the float one on most packets
    from train.export import torch_probabilities

    reference = torch_probabilities(tiny_bundle.model, x, TASK_NAMES)
    assert np.mean(got["phy"].argmax(1) == reference["phy"].argmax(1)) >= 0.75


# ----------------------------------------------------------------------------------- config


def test_unknown_config_keys_name_the_key_path(tiny_bundle):
    with pytest.raises(EngineConfigError) as err:
        load(tiny_bundle.directory, {"type": "onnxruntime", "thread": 2, "precision": "int4"})
    assert err.value.problems == [
        "engine.thread: unknown key",
        "engine.precision: 'int4' is not one of ['fp32', 'int8']",
    ]
    with pytest.raises(EngineConfigError, match=r"engine\.type: 'openvino' is not one of"):
        load(tiny_bundle.directory, {"type": "openvino"})
    with pytest.raises(EngineConfigError, match=r"engine\.type: missing"):
        load(tiny_bundle.directory, {})
    with pytest.raises(EngineConfigError, match=r"engine\.edgetpu_device: want '', ':N'"):
        base.config_from_dict({"type": "tflite", "device": "edgetpu", "edgetpu_device": "usb0"})
    with pytest.raises(EngineConfigError, match=r"engine\.threads: want >= 0"):
        base.config_from_dict({"type": "tflite", "threads": -1})
    with pytest.raises(EngineConfigError, match=r"engine\.batch_profile: want \[1, opt, max\]"):
        base.config_from_dict({"type": "tensorrt", "batch_profile": [2, 64, 256]})


def test_registry_lists_the_backends_and_takes_plugins(tiny_bundle):
    assert {"onnxruntime", "tflite", "tensorrt"} <= set(base.backends())
    onnx_backend = base.backends()["onnxruntime"]
    with pytest.raises(ValueError, match="already registered"):
        base.register(
            base.Backend(
                "onnxruntime",
                onnx_backend.config,
                onnx_backend.load,
                "",
                onnx_backend.bench_configs,
            )
        )


# ------------------------------------------------------------------------- the shipped bundles


@pytest.mark.parametrize("name", ["default", "default-pruned-int8"])
def test_shipped_bundle_runs_on_every_cpu_engine(name):
    directory = Path(__file__).resolve().parent.parent / "models" / name
    if not (directory / MANIFEST_NAME).is_file():
        pytest.skip(f"models/{name} is not in this checkout")
    from engines.bench import bench_packets

    x, _ = bench_packets(32, None, seed=7)
    with load(directory, {"type": "onnxruntime", "threads": 1}) as fp32:
        reference = fp32.infer(x)
    _check_probabilities(reference, len(x))
    for config in ({"type": "onnxruntime", "precision": "int8"}, {"type": "tflite"}):
        with load(directory, {**config, "threads": 1}) as engine:
            got = engine.infer(x)
        _check_probabilities(got, len(x), atol=8 / 256)
        for task in ("phy", "frame"):  # the easy tasks: INT8 must not break them
            assert np.mean(got[task].argmax(1) == reference[task].argmax(1)) >= 0.9

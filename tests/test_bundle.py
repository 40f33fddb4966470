"""The bundle manifest validator (edge_core.bundle): torch-free, strict, names file and key."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

from edge_core.bundle import (
    MANIFEST_NAME,
    QuantParams,
    load_manifest,
    sha256_file,
    write_manifest,
)
from edge_core.errors import ModelError
from edge_core.schema import TASK_NAMES, TASKS, as_dict

FILES = {"model_fp32.onnx": b"\x08\x07fake onnx bytes", "model_int8.tflite": b"\x1c\0\0\0TFL3"}


def _outputs(dtype, quant):
    return {
        t.name: {"name": t.name, "shape": ["batch", t.num_classes], "dtype": dtype, **quant}
        for t in TASKS
    }


def _manifest():
    fractions = dict.fromkeys(TASK_NAMES, 0.995)
    int8_q = {"quantization": {"scale": 1 / 256, "zero_point": -128}}
    return {
        "format": "edge-tc-bundle",
        "format_version": 1,
        "created_by": "edge-tc test",
        "schema": as_dict(),
        "input": {
            "name": "iq",
            "shape": ["batch", 2, 3000],
            "dtype": "float32",
            "rows": ["I", "Q"],
            "normalization": {"kind": "none", "note": "raw IQ"},
        },
        "model": {
            "architecture": "mtl1d",
            "kwargs": {"conv_widths": [4, 4, 4, 4]},
            "tasks": list(TASK_NAMES),
            "params": 1234,
            "flops": 56789,
            "test_accuracy": fractions,
        },
        "evaluation": {
            "heldout_packets": 100,
            "calibration_packets": 50,
            "heldout_source": "test",
            "agreement_required": {"fp32": 0.99, "fp16": 0.99, "int8": 0.97},
        },
        "training_data": {"generator": "synthetic", "seed": 1, "packets": 300},
        "models": [
            {
                "file": "model_fp32.onnx",
                "format": "onnx",
                "precision": "fp32",
                "input": {
                    "name": "iq",
                    "shape": ["batch", 2, 3000],
                    "dtype": "float32",
                    "quantization": None,
                    "layout": "NCW",
                },
                "outputs": _outputs("float32", {"quantization": None}),
                "output_kind": "probabilities",
                "test_accuracy": fractions,
                "agreement": dict.fromkeys(TASK_NAMES, 1.0),
            },
            {
                "file": "model_int8.tflite",
                "format": "tflite",
                "precision": "int8",
                "input": {
                    "name": "iq",
                    "shape": [1, 1, 3000, 2],
                    "dtype": "int8",
                    "quantization": {"scale": 0.03, "zero_point": -3},
                    "layout": "NHWC",
                },
                "outputs": {
                    t: {**o, "shape": [1, o["shape"][1]]}
                    for t, o in _outputs("int8", int8_q).items()
                },
                "output_kind": "probabilities",
                "test_accuracy": fractions,
                "agreement": dict.fromkeys(TASK_NAMES, 0.98),
            },
        ],
    }


@pytest.fixture
def bundle_dir(tmp_path):
    d = tmp_path / "bundle"
    d.mkdir()
    for name, data in FILES.items():
        (d / name).write_bytes(data)
    write_manifest(d, _manifest())
    return d


def _edit(bundle_dir, change):
    path = bundle_dir / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_round_trip(bundle_dir):
    bundle = load_manifest(bundle_dir)
    assert bundle.tasks == TASK_NAMES
    files = bundle.manifest["files"]
    assert set(files) == set(FILES)
    assert files["model_fp32.onnx"]["sha256"] == sha256_file(bundle_dir / "model_fp32.onnx")
    tfl = bundle.select("tflite", "int8")
    assert tfl.path == bundle_dir / "model_int8.tflite"
    assert tfl.input.quantization == QuantParams(0.03, -3)
    assert tfl.outputs["app"].name == "app" and tfl.outputs["app"].shape == (1, 7)
    assert bundle.select("onnx").input.layout == "NCW"
    with pytest.raises(ModelError, match=r"no tensorrt-plan/fp16 model"):
        bundle.select("tensorrt-plan", "fp16")


def test_tampered_file_is_named(bundle_dir):
    (bundle_dir / "model_int8.tflite").write_bytes(b"\x1c\0\0\0TFL4")  # same size
    with pytest.raises(ModelError, match=r"model_int8\.tflite: sha256 .* does not match"):
        load_manifest(bundle_dir)


def test_missing_key_is_named(bundle_dir):
    _edit(bundle_dir, lambda m: m["models"][1].pop("precision"))
    with pytest.raises(ModelError, match=r"manifest\.json: models\[1\]: missing key 'precision'"):
        load_manifest(bundle_dir)


def test_missing_output_task_is_named(bundle_dir):
    _edit(bundle_dir, lambda m: m["models"][0]["outputs"].pop("app_type"))
    with pytest.raises(ModelError, match=r"models\[0\]\.outputs: missing key 'app_type'"):
        load_manifest(bundle_dir)


def test_unknown_key_is_named(bundle_dir):
    _edit(bundle_dir, lambda m: m["input"].update(scale=1.0))
    with pytest.raises(ModelError, match=r"input: unknown key 'scale'"):
        load_manifest(bundle_dir)


def test_int8_tensor_without_quantization(bundle_dir):
    _edit(bundle_dir, lambda m: m["models"][1]["outputs"]["phy"].update(quantization=None))
    with pytest.raises(ModelError, match=r"outputs\.phy\.quantization: an int8 tensor needs"):
        load_manifest(bundle_dir)


def test_schema_mismatch(bundle_dir):
    _edit(bundle_dir, lambda m: m["schema"]["tasks"][0]["classes"].reverse())
    with pytest.raises(ModelError, match=r"schema: task 'phy' classes"):
        load_manifest(bundle_dir)


def test_agreement_below_the_bar(bundle_dir):
    _edit(bundle_dir, lambda m: m["models"][1]["agreement"].update(app=0.9))
    with pytest.raises(ModelError, match=r"models\[1\]\.agreement\.app: 0\.9000 is below"):
        load_manifest(bundle_dir)


def test_output_class_count_checked(bundle_dir):
    _edit(bundle_dir, lambda m: m["models"][0]["outputs"]["app"].update(shape=["batch", 3]))
    with pytest.raises(ModelError, match=r"outputs\.app\.shape.*7 classes"):
        load_manifest(bundle_dir)


def test_pickle_refused_by_name_even_if_listed(bundle_dir):
    (bundle_dir / "weights.pt").write_bytes(b"not really a pickle")
    _edit(
        bundle_dir,
        lambda m: m["files"].update(
            {"weights.pt": {"sha256": sha256_file(bundle_dir / "weights.pt"), "bytes": 19}}
        ),
    )
    with pytest.raises(ModelError, match=r"weights\.pt: pickles are not allowed"):
        load_manifest(bundle_dir)


def test_pickle_refused_by_content(bundle_dir):
    (bundle_dir / "model_fp32.onnx").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(ModelError, match=r"model_fp32\.onnx: pickles are not allowed"):
        load_manifest(bundle_dir)


def test_unlisted_file_refused(bundle_dir):
    (bundle_dir / "extra.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"extra\.bin: not listed"):
        load_manifest(bundle_dir)


def test_no_manifest(tmp_path):
    with pytest.raises(ModelError, match="no manifest"):
        load_manifest(tmp_path)


def test_quant_params_round_trip():
    q = QuantParams(0.5, -10)
    x = np.array([-100.0, -1.0, 0.0, 0.26, 70.0], dtype=np.float32)
    codes = q.quantize(x)
    assert codes.dtype == np.int8
    assert codes.tolist() == [-128, -12, -10, -9, 127]  # saturates at both ends
    assert q.dequantize(codes).tolist() == [-59.0, -1.0, 0.0, 0.5, 68.5]


def test_importing_bundle_pulls_no_runtime():
    code = (
        "import sys, edge_core.bundle; "
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'ai_edge_litert', 'tensorrt') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

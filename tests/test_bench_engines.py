"""`edge-tc bench engines` on the tiny bundle: the JSON's layout and rows (no timing claims)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_core.cli import main
from edge_core.schema import TASK_BY_NAME, TASK_NAMES
from engines import bench

ROW_KEYS = {
    "engine",
    "precision",
    "batch",
    "ms_per_sample_median",
    "samples_per_s",
    "peak_rss_mib",
    "agreement_vs_fp32",
}


@pytest.fixture(scope="module")
def stl_bundles(tiny_bundle, tmp_path_factory):
    """One untrained single-task stl1d bundle per task (ONNX FP32), in one folder."""
    from conftest import build_tiny_bundle

    root = tmp_path_factory.mktemp("stl")
    for task in TASK_NAMES:
        (root / task).mkdir()
        kwargs = {
            "classes": TASK_BY_NAME[task].num_classes,
            "conv_widths": [4, 4, 4, 4],
            "dense": [16],
            "dropout": 0,
        }
        built = build_tiny_bundle(
            root / task, kwargs, tasks=[task], formats=("onnx-fp32",), data=tiny_bundle.data
        )
        built.directory.rename(root / f"bundle_{task}")
    return root


def test_bench_engines_cli(tiny_bundle, stl_bundles, tmp_path, capsys):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    argv = [
        "bench",
        "engines",
        "--bundle",
        str(tiny_bundle.directory),
        "--batch",
        "1,4",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--packets",
        "24",
        "--data",
        str(tiny_bundle.data),
        "--stl-bundle",
        str(stl_bundles),
        "--out",
        str(out),
        "--plot",
        str(png),
        "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| engine | precision | model | batch | ms/sample |" in printed
    result = json.loads(out.read_text())
    assert list(result)[:3] == ["machine", "roofline", "rows"]

    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["cpu"]
    assert machine["runtimes"]["onnxruntime"] and machine["runtimes"]["ai_edge_litert"]
    assert machine["agreement_packets"] == f"24 packets of {tiny_bundle.data}"

    roofline = result["roofline"]
    manifest = json.loads((tiny_bundle.directory / "manifest.json").read_text())
    assert roofline["model_flops_per_sample"] == manifest["model"]["flops"]
    assert roofline["matmul_gflops"] >= roofline["matmul_gflops_median"] > 0
    assert roofline["matmul_threads"] >= 1 and roofline["matmul_calls"] >= 10
    bound = manifest["model"]["flops"] / (roofline["matmul_gflops"] * 1e9) * 1e3
    assert roofline["bound_ms_per_sample"] == pytest.approx(bound, rel=1e-2)
    assert roofline["ratio_batch"] == 4  # 64 was not run: the largest batch stands in
    assert roofline["ratio_onnxruntime_fp32"] > 0

    rows = result["rows"]
    assert all(ROW_KEYS <= set(r) for r in rows)
    mtl = {(r["engine"], r["precision"], r["batch"]): r for r in rows if r["model"] == "mtl"}
    assert set(mtl) == {
        (e, p, b)
        for e, p in [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("tflite", "int8")]
        for b in (1, 4)
    }
    for r in rows:
        assert r["ms_per_sample_median"] > 0 and r["samples_per_s"] > 0
        assert r["peak_rss_mib"] > 0
        assert r["repeats"] == 2
        assert set(r["agreement_vs_fp32"]) == set(TASK_NAMES)
        assert all(0 <= v <= 1 for v in r["agreement_vs_fp32"].values())
    assert mtl[("onnxruntime", "fp32", 4)]["agreement_vs_fp32"] == dict.fromkeys(TASK_NAMES, 1.0)
    # the batch-1 TFLite model runs resized on the CPU (issue 13): a batch of 4 is one call
    t4 = mtl[("tflite", "int8", 4)]
    assert (t4["timed_batch"], t4["calls_per_batch"]) == (4, 1)
    assert mtl[("onnxruntime", "fp32", 4)]["timed_batch"] == 4

    stl = [r for r in rows if r["model"] == "stl x4 sequential"]
    assert [(r["engine"], r["precision"], r["batch"]) for r in stl] == [
        ("onnxruntime", "fp32", 1),
        ("onnxruntime", "fp32", 4),
    ]
    assert [(c["precision"], c["batch"]) for c in result["stl_vs_mtl"]] == [
        ("fp32", 1),
        ("fp32", 4),
    ]
    for c in result["stl_vs_mtl"]:
        ratio = c["stl_ms_per_sample"] / c["mtl_ms_per_sample"]
        assert c["stl_over_mtl"] == pytest.approx(ratio, rel=1e-2)

    goals = result["goals"]
    assert goals["roofline"]["batch"] == 4 and isinstance(goals["roofline"]["met"], bool)
    assert 0 < goals["roofline"]["ratio_fastest_call"] <= goals["roofline"]["ratio"]
    assert {g["engine"] for g in goals["int8"]["engines"]} == {"onnxruntime", "tflite"}
    assert len(goals["batch1_latency"]["engines"]) == 3
    # no GPU here: TensorRT is listed as skipped with its reason
    if not any(r["engine"] == "tensorrt" for r in rows):
        assert any("engine 'tensorrt' unavailable" in s["reason"] for s in result["skipped"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rejects_bad_arguments(tiny_bundle, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "bench",
                "engines",
                "--bundle",
                str(tiny_bundle.directory),
                "--batch",
                "1,x",
                "--out",
                str(tmp_path / "b.json"),
            ]
        )
    assert "--batch wants comma-separated sizes, got '1,x'" in capsys.readouterr().err
    code = main(
        ["bench", "engines", "--bundle", str(tmp_path / "nope"), "--out", str(tmp_path / "b.json")]
    )
    assert code != 0
    assert "no manifest" in capsys.readouterr().err
    code = main(
        [
            "bench",
            "engines",
            "--bundle",
            str(tiny_bundle.directory),
            "--engines",
            "onnxruntime,openvino",
            "--out",
            str(tmp_path / "b.json"),
        ]
    )
    assert code != 0
    assert "--engines: unknown ['openvino']" in capsys.readouterr().err


def test_matmul_rate_and_thread_count():
    rate = bench.measure_matmul_gflops(threads=1, seconds=0.05)
    assert len(rate["rates"]) >= 5 and min(rate["rates"]) > 0
    if rate["threads_source"] == "openblas":
        assert rate["threads"] == 1


def test_synthetic_packets_are_seeded():
    a, where = bench.bench_packets(3, None, seed=5)
    b, _ = bench.bench_packets(3, None, seed=5)
    assert a.shape == (3, 2, 3000) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert where == "3 synthetic packets (generator seed 5)"

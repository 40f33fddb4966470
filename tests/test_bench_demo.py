"""tools/bench_demo.py on the real command: `edge-tc run --demo` (tiny bundle, 2 s), its last
live table read back into the figures the tool writes."""

from __future__ import annotations

import json

import pytest
from conftest import load_tool

pytestmark = pytest.mark.timeout(300)


def test_the_demo_table_is_read_back(tiny_bundle, tmp_path):
    bench_demo = load_tool("bench_demo")
    extra = ["--bundle", str(tiny_bundle.directory), "--engine", "onnxruntime",
             "--set", "publisher.bind=tcp://127.0.0.1:*", "--set", "metrics.port=0"]  # fmt: skip
    result = bench_demo.run(extra, 2.0)
    assert result["classified"] > 0 and result["detected"] >= result["classified"]
    assert set(result["tasks"]) == {"phy", "frame", "app_type", "app"}
    for task, figures in result["tasks"].items():
        assert 0 < figures["p50_ms"] <= figures["p99_ms"], (task, figures)
        assert figures["max_exec_ms"] == (2.0 if task in ("phy", "frame") else 7.0)
        assert 0 <= figures["over_max_exec"] <= result["classified"]
    assert set(result["stages_p50_ms"]) == {"assemble", "queue", "batch", "inference", "publish"}
    assert result["engine"] == "onnxruntime fp32"
    # the whole tool: one variant, its JSON
    out = tmp_path / "demo.json"
    assert bench_demo.main(["--duration", "2", "--out", str(out),
                            "--variant", "tiny=" + ",".join(extra)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["variants"]["tiny"]["classified"] > 0


def test_a_table_that_is_not_there_is_an_error():
    bench_demo = load_tool("bench_demo")
    with pytest.raises(ValueError, match="no live table"):
        bench_demo.parse("edge-tc: nothing ran")

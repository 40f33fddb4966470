"""engine.type = "auto": candidates from the bundle, timed here, the fastest opened, cached."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_core.errors import ModelError
from engines.auto import AutoConfig, cache_key, candidates
from engines.base import EngineConfigError, config_from_dict, load, open_bundle

pytest.importorskip("onnxruntime")


def _auto(tmp_path, **extra):
    return {
        "type": "auto",
        "threads": 1,
        "cache_path": str(tmp_path / "auto.json"),
        "bench_batch": 4,
        "bench_repeats": 2,
        **extra,
    }


def _entry(tmp_path):
    data = json.loads((tmp_path / "auto.json").read_text())
    (entry,) = data["entries"].values()
    return data, entry


def test_auto_times_every_candidate_opens_the_fastest_and_caches(tiny_bundle, tmp_path):
    x = tiny_bundle.x[:5]
    with load(tiny_bundle.directory, _auto(tmp_path)) as engine:
        assert "auto: fastest of 3 (timed now" in engine.info.device
        got = engine.infer(x)
        chosen = (engine.info.backend, engine.info.precision)
    data, entry = _entry(tmp_path)
    found = {c["label"].split(" ")[0]: c for c in entry["candidates"] if not c["skipped"]}
    assert set(found) == {"onnxruntime/fp32", "onnxruntime/int8", "tflite/int8"}
    assert all(c["ms_per_packet"] > 0 and c["runtime"] for c in found.values())
    left_out = [c for c in entry["candidates"] if c["skipped"]]  # no TensorRT here: why, kept
    assert all(c["ms_per_packet"] is None and c["skipped"] for c in left_out)
    best = min(found.values(), key=lambda c: c["ms_per_packet"])
    assert (best["config"]["type"], best["config"]["precision"]) == chosen
    assert got["app"].shape == (5, 7)
    bundle = open_bundle(tiny_bundle.directory)
    assert list(data["entries"]) == [cache_key(bundle, config_from_dict(_auto(tmp_path)))]


def test_auto_takes_the_cached_timings(tiny_bundle, tmp_path):
    with load(tiny_bundle.directory, _auto(tmp_path)):
        pass
    data, entry = _entry(tmp_path)
    for c in entry["candidates"]:  # make TFLite the fastest on paper
        c["ms_per_packet"] = 0.001 if c["config"]["type"] == "tflite" else 9.0
    (tmp_path / "auto.json").write_text(json.dumps(data))
    with load(tiny_bundle.directory, _auto(tmp_path)) as engine:
        assert engine.info.backend == "tflite"
        assert "(cached timings, 0.001 ms/packet at batch 4)" in engine.info.device
    with load(tiny_bundle.directory, _auto(tmp_path, rebench=True)) as engine:
        assert "timed now" in engine.info.device


def test_auto_times_again_when_the_winners_runtime_changed(tiny_bundle, tmp_path):
    with load(tiny_bundle.directory, _auto(tmp_path)):
        pass
    data, entry = _entry(tmp_path)
    for c in entry["candidates"]:
        c["runtime"] = "some-runtime 0.0"
    (tmp_path / "auto.json").write_text(json.dumps(data))
    with load(tiny_bundle.directory, _auto(tmp_path)) as engine:
        assert "timed now" in engine.info.device
    _, entry = _entry(tmp_path)
    assert all(c["runtime"] != "some-runtime 0.0" for c in entry["candidates"])


def test_auto_leaves_out_files_below_the_agreement_bar(tiny_bundle, tmp_path):
    bundle = open_bundle(tiny_bundle.directory)
    below = {m.path.name for m in bundle.models if min(m.agreement.values()) < 1.0}
    if not below:
        pytest.skip("every file of the tiny bundle agrees fully with PyTorch: no bar to test")
    config = config_from_dict(_auto(tmp_path, min_agreement=1.0))
    assert isinstance(config, AutoConfig)
    found = {c.config.get("model"): c for c in candidates(bundle, config)}
    for name in below:
        assert "below 1.0" in found[name].skipped
    assert "model_fp32.onnx" not in below and not found["model_fp32.onnx"].skipped
    with load(bundle, config) as engine:
        assert engine.info.model_file not in below
        out = engine.infer(tiny_bundle.x[:2])
    assert np.allclose(out["phy"].sum(1), 1, atol=1e-4)


def test_auto_with_no_runnable_candidate_says_why(tiny_bundle, tmp_path, monkeypatch):
    import engines.auto as auto

    monkeypatch.setattr(auto, "backends", lambda: {})
    with pytest.raises(ModelError, match=r"engine 'auto': no engine can run this bundle"):
        load(tiny_bundle.directory, _auto(tmp_path))


def test_auto_config_problems_name_the_key():
    with pytest.raises(EngineConfigError) as err:
        config_from_dict(
            {
                "type": "auto",
                "bench_batch": 0,
                "min_agreement": 2,
                "model": "model_fp32.onnx",
                "isolation": "process",
            }
        )
    text = str(err.value)
    for key in ("bench_batch", "min_agreement", "model", "isolation"):
        assert f"engine.{key}: " in text


def test_an_unwritable_or_corrupt_cache_still_gives_an_engine(tiny_bundle, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    unwritable = _auto(tmp_path, cache_path=str(blocker / "sub" / "auto.json"))
    with load(tiny_bundle.directory, unwritable) as engine:
        assert "timed now, not cached: " in engine.info.device
    (tmp_path / "auto.json").write_text("{not json")
    with load(tiny_bundle.directory, _auto(tmp_path)) as engine:
        assert "timed now" in engine.info.device
    _, entry = _entry(tmp_path)  # rewritten whole
    assert entry["candidates"]

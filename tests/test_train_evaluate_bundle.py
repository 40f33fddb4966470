"""`edge-tc train evaluate --bundle`: every model file of a bundle run by its real engine."""

import json

import numpy as np
import pytest

from edge_core.cli import main
from edge_core.schema import TASK_NAMES


def test_evaluate_bundle_runs_each_model_through_its_engine(tiny_bundle, capsys):
    assert main(["train", "evaluate", "--bundle", str(tiny_bundle.directory),
                 "--data", str(tiny_bundle.data), "--split", "all", "--json"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["packets"] == len(tiny_bundle.x)
    assert set(result["models"]) == {"model_fp32.onnx", "model_int8.onnx", "model_int8.tflite"}
    assert result["models"]["model_int8.tflite"]["engine"] == "tflite"
    # the FP32 engine's accuracy is the fitted PyTorch model's on the same packets
    import torch

    with torch.no_grad():
        out = tiny_bundle.model(torch.from_numpy(tiny_bundle.x))
    fp32 = result["models"]["model_fp32.onnx"]["per_task"]
    for t in TASK_NAMES:
        want = float(np.mean(out[t].argmax(1).numpy() == tiny_bundle.labels[t]))
        assert fp32[t]["accuracy"] == pytest.approx(want, abs=1.5 / len(tiny_bundle.x))
        assert 0 <= fp32[t]["macro_f1"] <= 1


def test_evaluate_bundle_refuses_the_training_split(tiny_bundle, capsys):
    code = main(["train", "evaluate", "--bundle", str(tiny_bundle.directory),
                 "--data", str(tiny_bundle.data)])  # fmt: skip
    assert code == 2
    assert "--split balanced or all" in capsys.readouterr().err


def test_evaluate_bundle_puts_the_flow_bound_beside_the_others(tiny_bundle, capsys):
    """--flow-window K: the PHY+MAC+flow bound (cross-fitted like the others) in the report."""
    assert main(["train", "evaluate", "--bundle", str(tiny_bundle.directory),
                 "--data", str(tiny_bundle.data), "--split", "all", "--flow-window", "4",
                 "--json"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    info = result["information_bound"]
    assert info["computed"], info
    assert "flow window: the last 4 data frames of the station" in info["notes"]
    assert "flow_length_mean" in info["features"]["phy_mac_flow"]
    for t in TASK_NAMES:
        assert 0 <= result["baselines"][t]["bound_phy_mac_flow"] <= 1

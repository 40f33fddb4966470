"""`edge-tc train fit` under torchrun: two CPU processes, gloo, DistributedDataParallel."""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from edge_core.schema import TASK_NAMES  # noqa: E402
from edge_core.synth.dataset import write_dataset  # noqa: E402
from train.checkpoint import load_checkpoint  # noqa: E402


def test_fit_runs_data_parallel_on_two_cpu_processes(tmp_path):
    data = write_dataset(tmp_path / "ds", 200, seed=11, workers=1, progress=False)
    run = tmp_path / "run"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "edge_core.cli",
        "train",
        "fit",
        "--data",
        str(data),
        "--out",
        str(run),
        "--model",
        "mtl1d",
        "--split",
        "tc_spectrum",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--conv-widths",
        "4",
        "4",
        "4",
        "4",
        "--dense-widths",
        "8",
        "8",
        "8",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    history = json.loads((run / "history.json").read_text())
    assert history["world_size"] == 2 and len(history["epochs"]) == 2
    # each rank saw its shard; the all-reduced counts cover the whole 160/20 split
    first = history["epochs"][0]
    assert first["train_packets"] == 160 and first["val_packets"] == 20
    model, spec, extra = load_checkpoint(run / "best.pt")
    assert spec.name == "mtl1d" and extra["tasks"] == list(TASK_NAMES)
    assert not any(k.startswith("module.") for k in model.state_dict())  # unwrapped from DDP
    assert (run / "kpi.json").is_file() and (run / "report.md").is_file()
    assert proc.stdout.count("best epoch") == 1  # only rank 0 reports

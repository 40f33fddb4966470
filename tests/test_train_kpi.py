"""train.kpi (evaluate, macro-F1, resources, the Delta gate), train.report, `train compare`."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from torch import nn  # noqa: E402

from edge_core.cli import main  # noqa: E402
from edge_core.errors import ModelError  # noqa: E402
from edge_core.schema import TASK_BY_NAME, TASK_NAMES  # noqa: E402
from train.kpi import (  # noqa: E402
    buffered_memory,
    compare,
    comparison_markdown,
    confusion_matrix,
    evaluate,
    macro_f1,
    resource_kpis,
)
from train.report import write_report  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids OpenMP spin-waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


LENGTH = 10


class LabelDataset:
    """Packets whose first sample carries the phy class: x[0, 0] = phy label."""

    def __init__(self, phy, others=0):
        self.phy = list(phy)
        self.others = others

    def __len__(self):
        return len(self.phy)

    def __getitem__(self, i):
        x = np.zeros((2, LENGTH), dtype=np.float32)  # (2, L)
        x[0, 0] = self.phy[i]
        labels = dict.fromkeys(TASK_NAMES, self.others)
        labels["phy"] = self.phy[i]
        return x, labels


class ReadsPhy(nn.Module):
    """Multi-task fake: phy predicted from x[:, 0, 0]; every other task always class 1."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        n = x.shape[0]
        out = {}
        for name in TASK_NAMES:
            logits = torch.zeros(n, TASK_BY_NAME[name].num_classes)
            if name == "phy":
                logits[torch.arange(n), x[:, 0, 0].long()] = 1.0
            else:
                logits[:, 1] = 1.0
            out[name] = logits + self.dummy
        return out


def test_confusion_matrix_counts_true_rows_predicted_columns():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_macro_f1_on_a_known_confusion():
    # class 0: TP 3, support 4, predicted 5 -> 6/9; class 1: TP 4, support 6, predicted 5 -> 8/11
    assert macro_f1(np.array([[3, 1], [2, 4]])) == pytest.approx((6 / 9 + 8 / 11) / 2)
    assert macro_f1(np.eye(3) * 5) == 1.0
    # a class neither present nor predicted is left out
    assert macro_f1(np.array([[2, 0, 0], [0, 2, 0], [0, 0, 0]])) == 1.0
    # a class present but never predicted counts as F1 0
    assert macro_f1(np.array([[2, 0], [2, 0]])) == pytest.approx((4 / 6 + 0) / 2)


def test_evaluate_per_task_accuracy_f1_and_confusion():
    ds = LabelDataset([0, 1, 2, 2, 1, 0, 2], others=0)
    result = evaluate(ReadsPhy(), ds, None, None, batch_size=3)
    assert result["packets"] == 7
    phy = result["per_task"]["phy"]
    assert phy["accuracy"] == 1.0 and phy["macro_f1"] == 1.0
    assert phy["confusion"] == [[2, 0, 0], [0, 2, 0], [0, 0, 3]]
    app = result["per_task"]["app"]  # always predicts class 1, truth always 0
    assert app["accuracy"] == 0.0 and app["confusion"][0][1] == 7
    assert app["classes"] == list(TASK_BY_NAME["app"].classes)
    assert result["mean_accuracy"] == pytest.approx(0.25)


def test_evaluate_indices_and_task_subset():
    ds = LabelDataset([0, 1, 2, 2], others=1)
    result = evaluate(ReadsPhy(), ds, [1, 3], ["frame"])
    assert result["packets"] == 2 and list(result["per_task"]) == ["frame"]
    assert result["per_task"]["frame"]["accuracy"] == 1.0


def test_evaluate_single_task_model_needs_matching_classes():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * LENGTH, 3))
    ds = LabelDataset([0, 1])
    assert set(evaluate(model, ds, None, ["phy"])["per_task"]) == {"phy"}
    with pytest.raises(ModelError, match="7 classes"):
        evaluate(model, ds, None, ["app"])
    with pytest.raises(ValueError, match="needs its task"):
        evaluate(model, ds, None, None)


def test_buffered_memory_of_a_known_model():
    model = nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Dropout(),
        nn.Flatten(),
        nn.Linear(4 * LENGTH, 3),
    )
    mem = buffered_memory(model, LENGTH, batch_size=64)
    assert mem["input_bytes"] == 64 * 2 * LENGTH * 4
    # conv and ReLU outputs; eval Dropout passes its input through and Flatten is a view
    assert mem["conv_activation_bytes"] == 2 * 64 * 4 * LENGTH * 4
    assert mem["dense_activation_bytes"] == 64 * 3 * 4
    assert mem["param_bytes"] == ((2 * 4 * 3 + 4) + (4 * LENGTH * 3 + 3)) * 4
    assert mem["buffered_memory_bytes"] == sum(
        mem[k]
        for k in ("input_bytes", "conv_activation_bytes", "dense_activation_bytes", "param_bytes")
    )


def test_resource_kpis_of_mtl1d():
    from train.checkpoint import ModelSpec

    model = ModelSpec("mtl1d", {"conv_widths": [4, 4], "head_widths": [8]}).build()
    kpis = resource_kpis(model, repeats=2)
    params = sum(p.numel() for p in model.parameters())
    assert kpis["params"] == params
    assert kpis["size_mib"] == pytest.approx(params * 4 / 2**20)
    assert kpis["batch_size"] == 64 and kpis["inference_ms_per_sample"] > 0
    assert kpis["buffered_memory_bytes"] > kpis["input_bytes"] + kpis["param_bytes"]
    assert model.training  # left as it was


def _kpi(acc, params=100, ms=0.1, tasks=None):
    tasks = tasks or list(acc)
    return {
        "tasks": list(tasks),
        "per_task": {t: {"accuracy": acc[t], "macro_f1": acc[t] - 0.01} for t in tasks},
        "resources": {
            "params": params,
            "size_mib": params * 4 / 2**20,
            "flops": 10 * params,
            "buffered_memory_mib": 1.5,
            "inference_ms_per_sample": ms,
        },
    }


def test_compare_gate_both_ways():
    stl = {"phy": _kpi({"phy": 1.0}), "app": _kpi({"app": 0.90})}
    ok = compare(stl, _kpi({"phy": 0.99, "app": 0.86}, 300, 0.2), delta=0.95)
    assert ok["proceed"] is True
    assert ok["tasks"]["app"]["ratio"] == pytest.approx(0.86 / 0.90)
    assert ok["resources"]["stl_aggregated"]["params"] == 200
    assert ok["resources"]["stl_aggregated"]["inference_ms_per_sample"] == pytest.approx(0.2)
    assert ok["resources"]["mtl"]["params"] == 300
    assert "PROCEED" in comparison_markdown(ok)
    bad = compare(stl, _kpi({"phy": 0.99, "app": 0.85}), delta=0.95)
    assert bad["proceed"] is False and bad["tasks"]["app"]["within"] is False
    assert bad["tasks"]["phy"]["within"] is True
    assert "REDESIGN" in comparison_markdown(bad)


def test_compare_bad_inputs():
    with pytest.raises(ValueError, match="no accuracy for task 'app'"):
        compare({"app": _kpi({"app": 0.9})}, _kpi({"phy": 0.9}))
    with pytest.raises(ValueError, match="delta"):
        compare({"app": _kpi({"app": 0.9})}, _kpi({"app": 0.9}), delta=1.5)
    with pytest.raises(ValueError, match="unknown task"):
        compare({"nope": _kpi({"app": 0.9})}, _kpi({"app": 0.9}))


def test_cli_compare(tmp_path, capsys):
    for name, kpi in (
        ("stl_app", _kpi({"app": 0.9})),
        ("stl_phy", _kpi({"phy": 1.0})),
        ("mtl", _kpi({"phy": 0.5, "app": 0.9})),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "kpi.json").write_text(json.dumps(kpi))
    out = tmp_path / "gate.json"
    rc = main(
        [
            "train",
            "compare",
            "--stl",
            str(tmp_path / "stl_app"),
            str(tmp_path / "stl_phy"),
            "--mtl",
            str(tmp_path / "mtl"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0  # a failed gate is a result, not an error
    assert "REDESIGN" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["proceed"] is False and saved["tasks"]["phy"]["ratio"] == 0.5
    rc = main(["train", "compare", "--stl", str(tmp_path / "mtl"), "--mtl", str(tmp_path / "mtl")])
    assert rc == 2 and "single-task run" in capsys.readouterr().err
    rc = main(["train", "compare", "--stl", str(tmp_path / "x"), "--mtl", str(tmp_path / "mtl")])
    assert rc == 2 and "kpi.json not found" in capsys.readouterr().err


def _history(weighting, tasks=("phy", "app")):
    epochs = [
        {
            "epoch": e,
            "train_loss": dict.fromkeys(tasks, 1.0 / e),
            "val_loss": dict.fromkeys(tasks, 1.2 / e),
            "train_accuracy": dict.fromkeys(tasks, 0.3 * e),
            "val_accuracy": dict.fromkeys(tasks, 0.3 * e),
            "dtp_weights": dict.fromkeys(tasks, 1.0 / e),
            "dtp_k": dict.fromkeys(tasks, 0.3 * e),
        }
        for e in (1, 2, 3)
    ]
    return {
        "tasks": list(tasks),
        "config": {"weighting": weighting},
        "epochs": epochs,
        "best_epoch": 3,
        "best_val_accuracy": 0.9,
        "stopped_early": False,
    }


def test_write_report_with_kpis(tmp_path):
    (tmp_path / "history.json").write_text(json.dumps(_history("dtp")))
    kpi = {
        "per_task": {
            "phy": {
                "accuracy": 0.9,
                "macro_f1": 0.8,
                "support": 3,
                "confusion": [[1, 0, 0], [0, 1, 0], [0, 1, 0]],
            }
        }
    }
    (tmp_path / "kpi.json").write_text(json.dumps(kpi))
    report = write_report(tmp_path).read_text()
    for png in ("accuracy.png", "loss.png", "dtp_weights.png", "confusion_phy.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert f"]({png})" in report
    assert "| phy | 0.9000 | 0.8000 | 3 |" in report


def test_write_report_uniform_has_no_dtp_plot(tmp_path):
    (tmp_path / "history.json").write_text(json.dumps(_history("uniform")))
    write_report(tmp_path)
    assert (tmp_path / "accuracy.png").exists() and not (tmp_path / "dtp_weights.png").exists()


def test_write_report_needs_history(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"history\.json"):
        write_report(tmp_path)

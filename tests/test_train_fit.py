"""train.trainer (DTP, fit, determinism, splits) and `edge-tc train fit/evaluate/correlate`."""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from edge_core.cli import main  # noqa: E402
from edge_core.errors import ModelError  # noqa: E402
from edge_core.schema import TASK_NAMES  # noqa: E402
from edge_core.synth.dataset import write_dataset  # noqa: E402
from train.checkpoint import ModelSpec, load_checkpoint  # noqa: E402
from train.data import read_labels_csv  # noqa: E402
from train.trainer import (  # noqa: E402
    TaskWeighting,
    TrainConfig,
    dtp_weights,
    finetune,
    fit,
    load_split,
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids OpenMP spin-waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_MTL = ModelSpec("mtl1d", {"conv_widths": [4, 4, 4, 4], "head_widths": [8, 8, 8]})
TINY_STL = ModelSpec("stl1d", {"classes": 3, "conv_widths": [4, 4], "dense": [8]})
TINY_FLAGS = ["--conv-widths", "4", "4", "4", "4", "--dense-widths", "8", "8", "8"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(
        tmp_path_factory.mktemp("ds") / "ds", 320, seed=7, workers=1, progress=False
    )


@pytest.fixture(scope="module")
def split(data_dir):
    return load_split(data_dir, "tc_spectrum", seed=0)


def cfg(**kw):
    kw.setdefault("max_epochs", 1)
    kw.setdefault("batch_size", 32)
    kw.setdefault("seed", 1)
    return TrainConfig(**kw)


# --- DTP -----------------------------------------------------------------------------------


def test_dtp_weight_matches_hand_values():
    beta = dtp_weights(torch.tensor([0.5, 0.25, 0.9]), torch.tensor([1.0, 2.0, 1.0]))
    want = [0.5 * math.log(2), 0.75**2 * math.log(4), 0.1 * -math.log(0.9)]
    assert beta.tolist() == pytest.approx(want, rel=1e-6)


def test_dtp_weight_is_finite_at_the_ends():
    beta = dtp_weights(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]))
    assert torch.isfinite(beta).all()
    assert beta[0] > 9 and 0 < beta[1] < 1e-6  # -log(1e-4) ~ 9.2; (1e-4) * -log(1 - 1e-4)


def test_dtp_gives_the_worse_task_the_larger_weight():
    w = TaskWeighting(("phy", "app"), "dtp", smoothing=1.0)
    beta = w.update(torch.tensor([0.9, 0.3]))
    assert beta[1] > beta[0] > 0


def test_dtp_smooths_accuracy_with_an_ema():
    w = TaskWeighting(("phy", "app"), "dtp", smoothing=0.5)
    w.update(torch.tensor([0.2, 0.8]))  # the first step starts k
    w.update(torch.tensor([0.6, 0.4]))
    state = w.state()
    assert state["dtp_k"] == pytest.approx({"phy": 0.4, "app": 0.6})
    assert state["dtp_weights"]["phy"] == pytest.approx(-0.6 * math.log(0.4), rel=1e-6)


def test_uniform_and_single_task_weights_are_one():
    uniform = TaskWeighting(("phy", "app"), "uniform")
    assert uniform.update(torch.tensor([0.9, 0.1])).tolist() == [1.0, 1.0]
    single = TaskWeighting(("app",), "dtp")
    assert single.update(torch.tensor([0.1])).tolist() == [1.0]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"weighting": "dwa"}, "weighting"),
        ({"dtp_gamma": {"nope": 1.0}}, "unknown tasks"),
        ({"batch_size": 0}, "batch_size"),
        ({"dtp_smoothing": 0.0}, "dtp_smoothing"),
    ],
)
def test_bad_config_is_a_value_error(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


# --- splits --------------------------------------------------------------------------------


def test_load_split_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_split(tmp_path / "nope")


def test_balanced_split_accepts_fractions_on_a_small_set(data_dir):
    data = load_split(data_dir, "balanced", seed=0, val=0.2, test=0.2)
    train, val, test = data.split.sizes()
    assert val > 0 and test > 0 and train > 0
    kept = torch.cat(
        [torch.from_numpy(p) for p in (data.split.train, data.split.val, data.split.test)]
    )
    app = torch.from_numpy(data.dataset.labels[:, TASK_NAMES.index("app")])[kept]
    counts = torch.bincount(app, minlength=7)
    assert counts.min() == counts.max() == len(kept) // 7  # equalized to the rarest application


def test_tc_spectrum_split_has_fixed_fractions(data_dir):
    with pytest.raises(ValueError, match="80/10/10"):
        load_split(data_dir, "tc_spectrum", val=0.3)


# --- fit -----------------------------------------------------------------------------------


def test_fit_reduces_loss_and_writes_checkpoint_and_history(split, tmp_path):
    history = fit(
        TINY_MTL, split.train, split.val, cfg(max_epochs=3, lr=3e-3), tmp_path, progress=False
    )
    losses = [sum(e["train_loss"].values()) for e in history.epochs]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert history.tasks == TASK_NAMES
    on_disk = json.loads((tmp_path / "history.json").read_text())
    assert [e["epoch"] for e in on_disk["epochs"]] == [1, 2, 3]
    assert on_disk["epochs"][0]["train_packets"] == len(split.train) == 256
    assert on_disk["best_epoch"] == history.best_epoch
    best = max(on_disk["epochs"], key=lambda e: e["val_accuracy_mean"])
    assert best["epoch"] == history.best_epoch
    for e in on_disk["epochs"]:
        assert set(e["dtp_weights"]) == set(TASK_NAMES)
        k = e["dtp_k"]["app"]
        assert e["dtp_weights"]["app"] == pytest.approx(-(1 - k) * math.log(k), rel=1e-5)
    _, spec, extra = load_checkpoint(tmp_path / "best.pt")
    assert spec == TINY_MTL and extra["tasks"] == list(TASK_NAMES)
    assert extra["epoch"] == history.best_epoch


def test_fit_is_deterministic_under_the_seed(split, tmp_path):
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        fit(TINY_MTL, split.train, split.val, cfg(seed=seed), tmp_path / name, progress=False)
        runs[name] = load_checkpoint(tmp_path / name / "best.pt")[0].state_dict()
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_uniform_weighting_records_weights_of_one(split, tmp_path):
    history = fit(
        TINY_MTL, split.train, split.val, cfg(weighting="uniform"), tmp_path, progress=False
    )
    assert set(history.epochs[0]["dtp_weights"].values()) == {1.0}


def test_fit_single_task_model(split, tmp_path):
    history = fit(
        TINY_STL, split.train, split.val, cfg(), tmp_path, tasks=("frame",), progress=False
    )
    assert history.tasks == ("frame",)
    assert set(history.epochs[0]["val_accuracy"]) == {"frame"}
    assert load_checkpoint(tmp_path / "best.pt")[2]["tasks"] == ["frame"]


def test_finetune_starts_from_the_given_weights(split, tmp_path):
    torch.manual_seed(123)
    start = TINY_MTL.build()
    tuned = finetune(start, TINY_MTL, split.train, split.val, cfg(lr=1e-12), tmp_path)
    assert (tmp_path / "best.pt").is_file()
    for name, p in tuned.named_parameters():
        assert torch.allclose(p, start.state_dict()[name], atol=1e-6), name


def test_fit_rejects_an_init_state_of_another_shape(split, tmp_path):
    wrong = ModelSpec("mtl1d", {"conv_widths": [8, 4, 4, 4], "head_widths": [8, 8, 8]})
    with pytest.raises(ModelError, match="init_state"):
        fit(
            TINY_MTL,
            split.train,
            split.val,
            cfg(),
            tmp_path,
            init_state=wrong.build().state_dict(),
            progress=False,
        )


@pytest.mark.parametrize(
    "spec, tasks, error, match",
    [
        (TINY_STL, None, ValueError, "needs its task"),
        (TINY_STL, ("app",), ModelError, "7 classes"),
        (TINY_MTL, ("nope",), ValueError, "unknown tasks"),
    ],
)
def test_fit_checks_tasks_against_the_model(split, tmp_path, spec, tasks, error, match):
    with pytest.raises(error, match=match):
        fit(spec, split.train, split.val, cfg(), tmp_path, tasks=tasks, progress=False)
    assert not (tmp_path / "best.pt").exists()


# --- CLI -----------------------------------------------------------------------------------


def test_cli_fit_then_evaluate(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "fit",
            "--data",
            str(data_dir),
            "--out",
            str(run),
            "--model",
            "mtl1d",
            "--split",
            "tc_spectrum",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--no-progress",
            *TINY_FLAGS,
        ]
    )
    assert rc == 0
    for name in (
        "config.json",
        "history.json",
        "best.pt",
        "kpi.json",
        "report.md",
        "accuracy.png",
        "dtp_weights.png",
        "confusion_app.png",
    ):
        assert (run / name).is_file(), name
    kpi = json.loads((run / "kpi.json").read_text())
    assert kpi["packets"] == 32 and set(kpi["per_task"]) == set(TASK_NAMES)
    assert kpi["resources"]["params"] == sum(p.numel() for p in TINY_MTL.build().parameters())
    capsys.readouterr()
    rc = main(
        [
            "train",
            "evaluate",
            "--checkpoint",
            str(run / "best.pt"),
            "--data",
            str(data_dir),
            "--json",
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["packets"] == 32  # the checkpoint's test split
    assert result["per_task"]["app"]["accuracy"] == kpi["per_task"]["app"]["accuracy"]
    rc = main(
        [
            "train",
            "evaluate",
            "--checkpoint",
            str(run / "best.pt"),
            "--data",
            str(data_dir),
            "--split",
            "all",
            "--json",
        ]
    )
    assert rc == 0 and json.loads(capsys.readouterr().out)["packets"] == 320
    rc = main(["train", "evaluate", "--checkpoint", str(run / "best.pt"), "--data",
               str(data_dir), "--split", "balanced", "--json"])  # fmt: skip
    assert rc == 0
    apps = read_labels_csv(data_dir / "labels.csv")[0][:, TASK_NAMES.index("app")]
    rarest = np.bincount(apps, minlength=7).min()
    assert json.loads(capsys.readouterr().out)["packets"] == 7 * rarest
    rc = main(["train", "fit", "--data", str(data_dir), "--out", str(run), "--model", "mtl1d"])
    assert rc == 2 and "already holds" in capsys.readouterr().err


def test_cli_fit_single_task(data_dir, tmp_path):
    run = tmp_path / "stl"
    rc = main(
        [
            "train",
            "fit",
            "--data",
            str(data_dir),
            "--out",
            str(run),
            "--model",
            "stl1d",
            "--task",
            "app_type",
            "--split",
            "tc_spectrum",
            "--epochs",
            "1",
            "--no-progress",
            "--conv-widths",
            "4",
            "4",
            "--dense-widths",
            "8",
        ]
    )
    assert rc == 0
    kpi = json.loads((run / "kpi.json").read_text())
    assert kpi["tasks"] == ["app_type"] and kpi["model"]["kwargs"]["classes"] == 3


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--model", "stl1d"], "--task"),
        (["--model", "stl1d", "--task", "nope"], "unknown task"),
        (["--model", "mtl1d", "--task", "app"], "drop --task"),
        (["--model", "resnet", "--task", "app", "--conv-widths", "4"], "--model-kwargs"),
    ],
)
def test_cli_fit_bad_arguments(data_dir, tmp_path, capsys, extra, match):
    rc = main(["train", "fit", "--data", str(data_dir), "--out", str(tmp_path / "r"), *extra])
    assert rc == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_fit_missing_data_dir(tmp_path, capsys):
    rc = main(
        [
            "train",
            "fit",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "r"),
            "--model",
            "mtl1d",
        ]
    )
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_correlate(data_dir, tmp_path, capsys):
    rc = main(["train", "correlate", "--data", str(data_dir), "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Cramér's V" in out and "frame x app" in out
    saved = json.loads((tmp_path / "correlation.json").read_text())
    assert saved["packets"] == 320 and len(saved["tables"]) == 6
    matrix = saved["cramers_v"]
    i, j = TASK_NAMES.index("app_type"), TASK_NAMES.index("app")
    assert matrix[i][j] == pytest.approx(1.0)  # app_type follows from app
    assert "| phy |" in (tmp_path / "correlation.md").read_text()

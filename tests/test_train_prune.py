import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from edge_core.errors import ModelError  # noqa: E402
from edge_core.schema import TASK_NAMES  # noqa: E402
from train.checkpoint import ModelSpec, load_checkpoint, save_checkpoint  # noqa: E402
from train.models import describe  # noqa: E402
from train.prune import (  # noqa: E402
    filter_scores,
    find_knee,
    prunable_layers,
    prune,
    prune_model,
    prune_once,
    sweep,
    top_filters,
    uniform_keep,
)

LENGTH = 256
MTL = ModelSpec("mtl1d", {"length": LENGTH, "conv_widths": [6, 8, 6, 8], "head_widths": [10, 8, 6]})
RESNET = ModelSpec(
    "resnet",
    {
        "classes": 4,
        "length": LENGTH,
        "stem": 6,
        "skip": False,
        "blocks": [[6, 8], [8, 10], [10, 4]],
    },
)

STL = ModelSpec("stl1d", {"classes": 7, "length": LENGTH, "conv_widths": [4, 6], "dense": [8, 6]})
CNN = ModelSpec(
    "cnn2d", {"classes": 3, "length": LENGTH, "kernel": 2, "filters": [4, 6, 5], "dense": [8, 6]}
)


def _randomized(spec: ModelSpec, seed: int = 0) -> torch.nn.Module:
    """`spec`'s model in eval mode with random weights, biases and BatchNorm statistics."""
    torch.manual_seed(seed)
    model = spec.build()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv1d | torch.nn.Linear) and m.bias is not None:
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _outputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, dict) else {"out": out}


def _zero_filters(model: torch.nn.Module, layer: str, bn: str, filters: list[int]) -> None:
    """Make `filters` of `layer` output exactly 0 after its BatchNorm (so they carry nothing)."""
    conv, norm = model.get_submodule(layer), model.get_submodule(bn)
    with torch.no_grad():
        conv.weight[filters] = 0.0
        conv.bias[filters] = 0.0
        norm.bias[filters] = 0.0
        norm.running_mean[filters] = 0.0


# --- the knee ---------------------------------------------------------------------------------


def test_knee_at_the_flattest_window_of_the_sorted_scores():
    # Descending: 100 60 30 10 5 5 5 3 2 1. h=2 slopes: -35 -25 -12.5 -2.5 0 -1 -1.5 -2:
    # the flattest window starts at j*=4 and MiniDrop keeps j* + h//2 = 5 filters.
    scores = [5, 1, 100, 3, 10, 5, 60, 2, 30, 5]  # unsorted on purpose
    knee = find_knee(scores, 2)
    assert (knee.knee, knee.keep, knee.note) == (4, 5, None)
    top = top_filters(torch.tensor(scores, dtype=torch.float32), knee.keep)
    assert sorted(scores[i] for i in top) == [5, 10, 30, 60, 100]  # the highest, top one too


def test_smaller_h_finds_a_more_local_knee():
    scores = [10.0, 9.0, 8.0, 7.98, 7.96, 4.0, 3.0, 2.9, 2.8, 2.7]
    # h=2 slopes: -1 -0.5 -0.02 -1.99 -2.48 -0.55 -0.1 -0.1: the short plateau at j=2 wins
    assert (find_knee(scores, 2).knee, find_knee(scores, 2).keep) == (2, 3)
    # h=4 slopes: -0.51 -1.25 -1.25 -1.27 -1.29 -0.325: only the tail is flat over 4 steps
    assert (find_knee(scores, 4).knee, find_knee(scores, 4).keep) == (5, 7)


def test_flat_scores_take_the_first_window():
    knee = find_knee(np.full(10, 3.0), 4)
    assert (knee.knee, knee.keep) == (0, 2)
    one = find_knee(np.full(10, 3.0), 1)  # j*=0 and h//2=0 would keep nothing
    assert one.keep == 1 and "kept 1" in (one.note or "")


def test_h_at_least_m_minus_1_keeps_every_filter_and_says_so():
    for h in (4, 5, 64):
        knee = find_knee([5.0, 4.0, 3.0, 2.0, 1.0], h)
        assert knee.keep == 5 and knee.knee is None
        assert "no knee" in (knee.note or "")
    assert find_knee([5.0, 4.0, 3.0, 2.0, 1.0], 3).knee is not None  # M-1 = 4 > 3: a real knee
    assert find_knee([7.0], 1).keep == 1


@pytest.mark.parametrize("h", [0, -2, 1.5, True])
def test_bad_h_is_rejected(h):
    with pytest.raises(ValueError, match="h must be"):
        find_knee([3.0, 2.0, 1.0], h)


def test_uniform_keep():
    assert uniform_keep(32, 0.5) == 16
    assert uniform_keep(10, 0.3) == 7
    assert uniform_keep(20, 0.9) == 2
    assert uniform_keep(8, 0.95) == 1  # never below one filter
    assert uniform_keep(8, 0.0) == 8
    with pytest.raises(ValueError, match="rate"):
        uniform_keep(8, 1.0)


def test_filter_scores_are_per_filter_norms():
    conv = torch.nn.Conv1d(3, 4, 5)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[2, 1, 3] = 3.0
        conv.weight[2, 0, 0] = 4.0
        conv.weight[0, 2, 4] = 1.0
    assert filter_scores(conv).tolist() == [1.0, 0.0, 5.0, 0.0]


# --- inheritance ------------------------------------------------------------------------------


def test_prunable_layers_exclude_the_output_layers():
    layers = prunable_layers(MTL.build())
    assert layers[:4] == ["trunk.0", "trunk.5", "trunk.10", "trunk.15"]
    assert len(layers) == 4 + 3 * len(TASK_NAMES)
    assert "heads.app.13" not in layers and "heads.app.1" in layers
    res = prunable_layers(RESNET.build())
    assert res[0] == "stem.0" and res[-1] == "blocks.2.conv2" and "head.2" not in res


@pytest.mark.parametrize("spec", [MTL, RESNET, STL, CNN], ids=["mtl1d", "resnet", "stl1d", "cnn2d"])
def test_pruning_nothing_reproduces_outputs_exactly(spec):
    model = _randomized(spec)
    x = torch.randn(5, 2, LENGTH)
    want = _outputs(model, x)
    for slim, _ in (
        prune_model(model, spec, {}),
        prune_once(model, spec, "uniform", rate=0.0)[:2],
        prune_once(model, spec, "minidrop", h=64)[:2],  # h >= every M-1: all kept
    ):
        got = _outputs(slim, x)
        assert all(torch.equal(want[k], got[k]) for k in want)


def test_mtl_pruning_zero_filters_leaves_outputs_unchanged():
    model = _randomized(MTL)
    dead = {"trunk.0": [1, 4], "trunk.5": [0, 7], "trunk.15": [2, 3, 5], "heads.app.1": [0, 9]}
    bns = {"trunk.0": "trunk.2", "trunk.5": "trunk.7", "trunk.15": "trunk.17"}
    for layer, filters in dead.items():
        _zero_filters(model, layer, bns.get(layer, layer.replace(".1", ".3")), filters)
    widths = {name: model.get_submodule(name).weight.shape[0] for name in dead}
    keep = {n: [i for i in range(widths[n]) if i not in f] for n, f in dead.items()}
    slim, slim_spec = prune_model(model, MTL, keep)
    assert slim_spec.kwargs["conv_widths"] == [4, 6, 6, 5]
    assert slim_spec.kwargs["head_widths"]["app"] == [8, 8, 6]
    assert slim_spec.kwargs["head_widths"]["phy"] == [10, 8, 6]
    x = torch.randn(6, 2, LENGTH)
    want, got = _outputs(model, x), _outputs(slim, x)
    for task in TASK_NAMES:
        torch.testing.assert_close(got[task], want[task], rtol=1e-5, atol=1e-5)
    # the outputs differ if a live filter goes instead
    other, _ = prune_model(model, MTL, {"trunk.15": [0, 1, 2, 3, 4]})
    assert (_outputs(other, x)["app"] - want["app"]).abs().max() > 1e-3


def test_first_dense_layer_keeps_every_time_step_of_kept_channels():
    model = _randomized(MTL)
    slim, _ = prune_model(model, MTL, {"trunk.15": [1, 6], "heads.frame.1": [2, 3, 9]})
    steps = model.trunk.out_features // 8  # L_out per channel
    old_w, new_w = model.heads.frame[1].weight, slim.heads.frame[1].weight
    assert new_w.shape == (3, 2 * steps)
    assert torch.equal(new_w[:, :steps], old_w[[2, 3, 9], steps : 2 * steps])
    assert torch.equal(new_w[:, steps:], old_w[[2, 3, 9], 6 * steps : 7 * steps])
    assert torch.equal(slim.heads.frame[3].running_var, model.heads.frame[3].running_var[[2, 3, 9]])
    assert torch.equal(slim.heads.frame[5].weight, model.heads.frame[5].weight[:, [2, 3, 9]])
    assert torch.equal(slim.trunk[17].running_mean, model.trunk[17].running_mean[[1, 6]])


def test_resnet_pruning_zero_filters_leaves_outputs_unchanged():
    model = _randomized(RESNET)
    dead = {
        "stem.0": ("stem.1", [0, 5]),
        "blocks.0.conv1": ("blocks.0.bn1", [2]),
        "blocks.1.conv2": ("blocks.1.bn2", [1, 3, 8]),
        "blocks.2.conv2": ("blocks.2.bn2", [3]),  # feeds the dense classifier
    }
    keep = {}
    for layer, (bn, filters) in dead.items():
        _zero_filters(model, layer, bn, filters)
        width = model.get_submodule(layer).weight.shape[0]
        keep[layer] = [i for i in range(width) if i not in filters]
    slim, slim_spec = prune_model(model, RESNET, keep)
    assert slim_spec.kwargs["stem"] == 4
    assert slim_spec.kwargs["blocks"] == [[5, 8], [8, 7], [10, 3]]
    x = torch.randn(6, 2, LENGTH)
    torch.testing.assert_close(slim(x), model(x), rtol=1e-5, atol=1e-5)


def test_cnn2d_pruning_zero_filters_leaves_outputs_unchanged():
    model = _randomized(CNN)  # features: conv, relu, pool, dropout, bn; flatten 5 x 1 x 4
    _zero_filters(model, "features.10", "features.14", [1, 3])  # feeds the dense layers
    _zero_filters(model, "features.5", "features.9", [0])
    _zero_filters(model, "classifier.1", "classifier.4", [2, 5, 6])
    keep = {
        "features.10": [0, 2, 4],
        "features.5": [1, 2, 3, 4, 5],
        "classifier.1": [0, 1, 3, 4, 7],
    }
    slim, slim_spec = prune_model(model, CNN, keep)
    assert (slim_spec.kwargs["filters"], slim_spec.kwargs["dense"]) == ([4, 5, 3], [5, 6])
    assert slim.classifier[1].in_features == 3 * 4
    x = torch.randn(6, 2, LENGTH)
    torch.testing.assert_close(slim(x), model(x), rtol=1e-5, atol=1e-5)


def test_resnet_with_skip_is_refused():
    spec = ModelSpec("resnet", {"classes": 4, "length": LENGTH, "skip": True})
    with pytest.raises(ModelError, match="skip=True"):
        prune_once(spec.build(), spec, "minidrop", h=4)


def test_spec_must_match_model_and_keep_must_be_valid():
    model = MTL.build()
    with pytest.raises(ModelError, match="spec names"):
        prune_model(model, RESNET, {})
    with pytest.raises(ValueError, match="not prunable"):
        prune_model(model, MTL, {"heads.app.13": [0]})
    with pytest.raises(ValueError, match="non-empty subset"):
        prune_model(model, MTL, {"trunk.0": []})
    with pytest.raises(ValueError, match="non-empty subset"):
        prune_model(model, MTL, {"trunk.0": [6]})


# --- the two methods --------------------------------------------------------------------------


def test_uniform_rate_keeps_the_top_filters_of_every_layer():
    model = _randomized(MTL)
    slim, spec, report = prune_once(model, MTL, "uniform", rate=0.5)
    assert spec.kwargs["conv_widths"] == [3, 4, 3, 4]
    assert spec.kwargs["head_widths"] == {t: [5, 4, 3] for t in TASK_NAMES}
    for row in report.layers:
        scores = filter_scores(model.get_submodule(row.name))
        assert row.kept_indices == tuple(top_filters(scores, row.kept))
        dropped = np.delete(scores.numpy(), row.kept_indices)
        assert scores[list(row.kept_indices)].min() >= dropped.max()
    assert report.flops_after < report.flops_before / 3
    assert report.params_after == describe(spec.build(), LENGTH)["params"]
    assert describe(slim, LENGTH)["flops"] == report.flops_after


@pytest.mark.parametrize("spec", [MTL, RESNET], ids=["mtl1d", "resnet"])
def test_minidrop_report_and_smaller_flops(spec):
    model = _randomized(spec)
    _, new_spec, report = prune_once(model, spec, "minidrop", h=2)
    assert report.method == "minidrop" and report.h == 2
    assert [r.name for r in report.layers] == prunable_layers(model)
    for row in report.layers:
        knee = find_knee(filter_scores(model.get_submodule(row.name)), 2)
        assert (row.kept, row.knee) == (knee.keep, knee.knee)
        assert row.kept == len(row.kept_indices) and 1 <= row.kept <= row.original
    assert report.flops_after < report.flops_before
    assert report.params_after < report.params_before
    d = json.loads(json.dumps(report.to_dict()))
    assert d["layers"][0]["original"] == report.layers[0].original
    assert d["spec"] == new_spec.to_dict()


def test_minidrop_reports_layers_it_cannot_choose_for():
    model = _randomized(MTL)
    _, _, report = prune_once(model, MTL, "minidrop", h=7)  # M-1 = 5 or 7 for widths 6 and 8
    for row in report.layers:
        if row.original - 1 <= 7:
            assert row.kept == row.original and row.knee is None and "no knee" in row.note
        else:
            assert row.knee is not None


def test_pruned_checkpoint_round_trip(tmp_path):
    model = _randomized(MTL)
    slim, spec, report = prune_once(model, MTL, "minidrop", h=2)
    save_checkpoint(tmp_path / "p.pt", slim, spec, {"prune": report.to_dict()})
    loaded, spec2, extra = load_checkpoint(tmp_path / "p.pt")
    assert spec2.kwargs["head_widths"] == {
        t: list(v) for t, v in spec.kwargs["head_widths"].items()
    }
    assert extra["prune"]["h"] == 2
    x = torch.randn(3, 2, LENGTH)
    want, got = _outputs(slim, x), _outputs(loaded, x)
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_iterations_prune_the_fine_tuned_model_again():
    calls = []

    def finetune(model, spec):
        calls.append(spec)
        with torch.no_grad():  # stands in for training: changes the weights
            model.trunk[0].weight.mul_(1.5)
        return model

    model = _randomized(MTL)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    res = prune(
        model,
        MTL,
        "uniform",
        rate=0.3,
        iterations=2,
        finetune=finetune,
        evaluate=lambda m: {"phy": float(describe(m, LENGTH)["params"])},
    )
    first, second = (it.report for it in res.iterations)
    assert [len(res.iterations), len(calls)] == [2, 2]
    assert second.params_before == first.params_after > second.params_after
    assert calls[1] == res.spec and res.spec.kwargs["conv_widths"] == [3, 4, 3, 4]
    assert res.iterations[1].accuracy_after == {"phy": second.params_after}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.items())


def test_sweep_writes_json_plot_and_checkpoints(tmp_path):
    model = _randomized(MTL)
    tuned = []

    def finetune(m, spec):
        tuned.append(spec.kwargs["conv_widths"])
        return m

    def evaluate(m):  # a stand-in accuracy that shrinks with the model
        return {t: describe(m, LENGTH)["params"] / 1e5 for t in TASK_NAMES}

    result = sweep(
        model, MTL, finetune=finetune, evaluate=evaluate, hs=(2, 4), rates=(0.5,), out_dir=tmp_path
    )
    assert [r["name"] for r in result["runs"]] == ["minidrop_h2", "minidrop_h4", "uniform_p0.5"]
    assert len(tuned) == 3
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved == json.loads(json.dumps(result))
    for run in saved["runs"]:
        assert run["flops"] < saved["baseline"]["flops"]
        assert set(run["accuracy_after_finetune"]) == set(TASK_NAMES)
        slim, spec, _ = load_checkpoint(tmp_path / run["checkpoint"])
        assert spec.to_dict() == run["spec"]
        assert describe(slim, LENGTH)["flops"] == run["flops"]
    png = (tmp_path / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


# --- CLI --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 240-packet synthetic dataset and an (untrained) small mtl1d checkpoint naming a split."""
    from edge_core.synth.dataset import write_dataset

    root = tmp_path_factory.mktemp("prune_cli")
    data = write_dataset(root / "data", 240, seed=3, workers=1, progress=False)
    spec = ModelSpec("mtl1d", {"conv_widths": [6, 6, 6, 6], "head_widths": [8, 8, 8]})
    torch.manual_seed(0)
    extra = {"tasks": list(TASK_NAMES), "split": {"kind": "tc_spectrum", "seed": 42}}
    save_checkpoint(root / "best.pt", spec.build().eval(), spec, extra)
    return root, data


def _cli(command, root, data, out, options):
    """`edge-tc train COMMAND --checkpoint root/best.pt --data data --out out OPTIONS...`."""
    from edge_core.cli import main

    argv = ["train", command, "--checkpoint", str(root / "best.pt"), "--data", str(data)]
    return main([*argv, "--out", str(out), "--no-progress", *options.split()])


def test_cli_prune_minidrop_fine_tunes_and_writes_checkpoint_and_report(tiny_run, capsys):
    root, data = tiny_run
    out = root / "minidrop"
    assert _cli("prune", root, data, out, "--method minidrop --h 2 --epochs 1") == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err  # the checkpoint's split is used
    assert "wrote" in captured.out
    report = json.loads((out / "prune.json").read_text())
    assert report["data"]["kind"] == "tc_spectrum"
    assert report["pruned"]["flops"] < report["baseline"]["flops"]
    assert set(report["pruned"]["accuracy"]) == set(TASK_NAMES)
    (iteration,) = report["iterations"]
    assert iteration["report"]["layers"][0]["original"] == 6
    assert iteration["accuracy_before_finetune"] is not None
    assert (out / "finetune" / "round_1" / "best.pt").exists()
    model, spec, extra = load_checkpoint(out / "pruned.pt")
    assert spec.to_dict() == report["spec"]
    assert extra["tasks"] == list(TASK_NAMES)
    assert extra["split"] == {"kind": "tc_spectrum", "seed": 42}
    assert describe(model)["flops"] == report["pruned"]["flops"]
    # the run directory is not overwritten
    assert _cli("prune", root, data, out, "--method minidrop --h 2 --epochs 0") == 2
    assert "already holds prune.json" in capsys.readouterr().err


def test_cli_prune_uniform_iterations_without_fine_tuning(tiny_run, capsys):
    root, data = tiny_run
    out = root / "uniform"
    options = "--method uniform --rate 0.5 --iterations 2 --epochs 0 --split-seed 7"
    assert _cli("prune", root, data, out, options) == 0
    assert "may test on its training packets" in capsys.readouterr().err
    report = json.loads((out / "prune.json").read_text())
    assert report["spec"]["kwargs"]["conv_widths"] == [2, 2, 2, 2]  # 6 -> 3 -> 2 (rounded)
    assert [i["accuracy_after_finetune"] for i in report["iterations"]] == [None, None]
    assert not (out / "finetune").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("--method minidrop", "takes --h"),
        ("--method uniform --rate 0.5 --h 4", "takes --rate"),
        ("--method minidrop --h 0", "h must be"),
        ("--method uniform --rate 1.0", "rate must be in"),
    ],
)
def test_cli_prune_rejects_bad_method_arguments(tiny_run, capsys, options, message):
    root, data = tiny_run
    assert _cli("prune", root, data, root / "bad", f"{options} --epochs 0") == 2
    assert message in capsys.readouterr().err


def test_cli_sweep_writes_json_and_plot(tiny_run, capsys):
    root, data = tiny_run
    out = root / "sweep"
    assert _cli("sweep", root, data, out, "--h 4 --rates 0.5 --epochs 1") == 0
    assert "minidrop_h4" in capsys.readouterr().out
    result = json.loads((out / "sweep.json").read_text())
    assert [r["name"] for r in result["runs"]] == ["minidrop_h4", "uniform_p0.5"]
    for run in result["runs"]:
        assert (out / "finetune" / run["name"] / "round_1" / "best.pt").exists()
        assert (out / run["checkpoint"]).exists()
        assert run["accuracy_after_finetune"] is not None
    assert (out / "sweep.png").stat().st_size > 10_000

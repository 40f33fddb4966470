import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from edge_core.errors import ModelError  # noqa: E402
from edge_core.schema import TASK_NAMES  # noqa: E402
from train.checkpoint import ModelSpec, load_checkpoint, save_checkpoint  # noqa: E402
from train.models import describe  # noqa: E402
from train.prune import (  # noqa: E402
    dry_run,
    file_sha256,
    filter_scores,
    find_knee,
    mapped_scores,
    prunable_layers,
    prune,
    prune_model,
    prune_once,
    pruning_record,
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


def _authors_rate(raw, h):
    """gratitude_pr of TinyRadio as seed_code.md transcribes it, for one layer's raw scores."""
    r = np.asarray(raw, dtype=np.float64)
    mapped = np.round((r - r.min()) / ((r.max() - r.min()) / 100))
    s = sorted(mapped, reverse=True)[1:]
    g = [(s[j + h] - s[j]) / h for j in range(len(s) - h)]
    k = int(int(np.argmax(g)) + h / 2)
    return float(np.clip(round(1 - k / len(g), 2), 0, 0.9))


def test_knee_follows_the_authors_rule():
    # mapped to 0..100: 100 60 29 9 4 4 4 2 1 0 -> s[1:] = 60 29 9 4 4 4 2 1 0 (9 values);
    # h=2 slopes: -25.5 -12.5 -2.5 0 -1 -1.5 -1: j*=3, k=int(3 + 1)=4, len(g)=7,
    # p = round(1 - 4/7, 2) = 0.43, keep int(10 x 0.57) = 5.
    scores = [5, 1, 100, 3, 10, 5, 60, 2, 30, 5]  # unsorted on purpose
    assert mapped_scores(scores).tolist() == [4, 0, 100, 2, 9, 4, 60, 1, 29, 4]
    knee = find_knee(scores, 2)
    assert (knee.knee, knee.k, knee.windows, knee.p, knee.keep, knee.note) == (
        3,
        4,
        7,
        0.43,
        5,
        None,
    )
    assert knee.keep_ratio == 0.57
    top = top_filters(torch.tensor(scores, dtype=torch.float32), knee.keep)
    assert sorted(scores[i] for i in top) == [5, 10, 30, 60, 100]  # the highest, top one too


@pytest.mark.parametrize("h", [1, 2, 3, 4, 8, 16])
def test_rate_matches_the_authors_code_on_random_layers(h):
    rng = np.random.default_rng(h)
    for m in (h + 2, 20, 32, 64):
        for _ in range(20):
            raw = rng.gamma(2.0, 1.0, m) * rng.choice([1.0, 10.0], m)  # (M,) with a few big ones
            knee = find_knee(raw, h)
            assert knee.p == _authors_rate(raw, h)
            assert knee.keep == max(1, m * (100 - round(100 * knee.p)) // 100)


def test_rate_is_clipped_to_0_9_and_counts_are_exact():
    # Four equal top scores then a steep fall: j*=0, k=1, p = round(1 - 1/17, 2) = 0.94 -> 0.9;
    # int(20 x (1 - 0.9)) is 1 in floats (0.09999...), 2 exactly.
    scores = [100.0] * 4 + [90.0 - 5 * i for i in range(16)]
    knee = find_knee(scores, 2)
    assert (knee.knee, knee.k, knee.windows, knee.p, knee.keep) == (0, 1, 17, 0.9, 2)
    small = find_knee([10, 10, 10, 5, 0], 1)  # p=0.9 of 5 filters is 0: one is kept, said so
    assert (small.p, small.keep) == (0.9, 1) and "kept 1" in (small.note or "")


def test_rate_never_negative():
    # The flattest window is the last one: k = int(4 + 4/2) = 6 > len(g) = 5, p clipped to 0.
    scores = [100, 90, 80, 70, 60, 50, 50, 50, 50, 50]
    knee = find_knee(scores, 4)
    assert (knee.knee, knee.k, knee.windows, knee.p, knee.keep) == (4, 6, 5, 0.0, 10)


def test_larger_h_keeps_more_on_this_layer():
    scores = [10.0, 9.0, 8.0, 7.98, 7.96, 4.0, 3.0, 2.9, 2.8, 2.7, 2.6, 2.5]
    keeps = [find_knee(scores, h).keep for h in (1, 2, 4, 8)]
    assert keeps == sorted(keeps) and keeps[0] < keeps[-1]


def test_flat_scores_take_the_first_window():
    knee = find_knee(np.full(10, 3.0), 4)  # all map to 0: j*=0, k=2, p = 1 - 2/5
    assert (knee.knee, knee.k, knee.p, knee.keep) == (0, 2, 0.6, 4)
    one = find_knee(np.full(10, 3.0), 1)  # k = int(0.5) = 0: p = 1 -> 0.9, one filter
    assert (one.p, one.keep) == (0.9, 1)


def test_h_at_least_m_minus_1_keeps_every_filter_and_says_so():
    for h in (4, 5, 64):  # s[1:] has M-1 = 4 values: no window of step h
        knee = find_knee([5.0, 4.0, 3.0, 2.0, 1.0], h)
        assert knee.keep == 5 and knee.knee is None and knee.p == 0.0
        assert "no window" in (knee.note or "")
    assert find_knee([5.0, 4.0, 3.0, 2.0, 1.0], 3).knee is not None  # M-1 = 4 > 3: one window
    assert find_knee([7.0], 1).keep == 1


def test_bad_scores_are_rejected():
    with pytest.raises(ValueError, match="no scores"):
        find_knee([], 2)
    with pytest.raises(ValueError, match="finite"):
        find_knee([1.0, float("nan"), 2.0], 1)


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
        assert (row.kept, row.knee, row.k, row.p) == (knee.keep, knee.knee, knee.k, knee.p)
        assert row.kept == max(1, int(round(row.original * row.keep_ratio, 6)))
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
            assert row.kept == row.original and row.knee is None and "no window" in row.note
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


def test_dry_run_lists_knees_and_sizes_per_h_without_changing_the_model():
    model = _randomized(MTL)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = dry_run(model, MTL, hs=(1, 2, 4), rates=(0.5,))
    assert result["baseline"]["params"] == describe(model, LENGTH)["params"]
    assert [r["name"] for r in result["runs"]] == [
        "minidrop_h1", "minidrop_h2", "minidrop_h4", "uniform_p0.5"
    ]  # fmt: skip
    for run in result["runs"]:
        _, spec, report = prune_once(model, MTL, run["method"], h=run["h"], rate=run["rate"])
        assert run["params"] == report.params_after
        assert run["widths"] == spec.to_dict()["kwargs"]
        assert [x["kept"] for x in run["layers"]] == [x.kept for x in report.layers]
        assert all(0.1 <= x["keep_ratio"] <= 1.0 for x in run["layers"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_from_scratch_trains_the_same_widths_from_random_weights():
    model = _randomized(MTL)
    seen = []

    def finetune(m, spec):
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return m

    inherited = prune(model, MTL, "minidrop", h=2, finetune=finetune)
    scratch = prune(model, MTL, "minidrop", h=2, finetune=finetune, from_scratch=True, seed=3)
    prune(model, MTL, "minidrop", h=2, finetune=finetune, from_scratch=True, seed=3)  # again
    assert scratch.spec == inherited.spec and scratch.method == "scratch"
    assert inherited.method == "minidrop"
    w = "trunk.0.weight"
    assert not torch.equal(seen[1][w], seen[0][w])  # not the inherited filters
    assert all(torch.equal(seen[1][k], seen[2][k]) for k in seen[1])  # seeded
    torch.manual_seed(3)
    assert torch.equal(seen[1][w], scratch.spec.build().state_dict()[w])
    with pytest.raises(ValueError, match="one pruning step"):
        prune(model, MTL, "minidrop", h=2, iterations=2, from_scratch=True)


def test_pruning_record_names_parent_settings_and_knees(tmp_path):
    model = _randomized(MTL)
    parent = tmp_path / "parent.pt"
    save_checkpoint(parent, model, MTL, {})
    res = prune(model, MTL, "minidrop", h=2)
    settings = {"max_epochs": 3, "lr": 1e-3, "batch_size": 64, "patience": 2, "seed": 0}
    record = pruning_record(res, parent, fine_tuning=settings, data={"kind": "balanced"})
    assert record["method"] == "minidrop" and record["h"] == 2 and record["rate"] is None
    assert record["parent_checkpoint"] == {"path": str(parent), "sha256": file_sha256(parent)}
    assert len(record["parent_checkpoint"]["sha256"]) == 64
    assert record["fine_tuning"] == settings and record["data"] == {"kind": "balanced"}
    (round_1,) = record["rounds"]
    report = res.iterations[0].report
    assert [x["knee"] for x in round_1["layers"]] == [x.knee for x in report.layers]
    assert [x["keep_ratio"] for x in round_1["layers"]] == [x.keep_ratio for x in report.layers]
    assert record["params_after"] == report.params_after < record["params_before"]
    assert json.loads(json.dumps(record)) == record
    scratch = prune(model, MTL, "uniform", rate=0.5, from_scratch=True)
    scratch_record = pruning_record(scratch, parent, fine_tuning=None, data=None)
    assert (scratch_record["method"], scratch_record["widths_from"]) == ("scratch", "uniform")


def test_export_carries_the_pruning_record_into_the_manifest(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    from edge_core.bundle import load_manifest
    from edge_core.synth.dataset import write_dataset
    from train.data import PacketDataset
    from train.export import export_bundle

    data = write_dataset(tmp_path / "data", 48, seed=4, workers=1, progress=False)
    spec = ModelSpec("mtl1d", {"conv_widths": [6, 6, 6, 6], "head_widths": [8, 8, 8]})
    model = _randomized(spec)
    parent = tmp_path / "parent.pt"
    save_checkpoint(parent, model, spec, {"tasks": list(TASK_NAMES)})
    res = prune(model, spec, "minidrop", h=2)
    record = pruning_record(res, parent, fine_tuning=None, data={"kind": "balanced"})
    child = tmp_path / "pruned.pt"
    save_checkpoint(child, res.model, res.spec, {"tasks": list(TASK_NAMES), "pruning": record})
    ds = PacketDataset(data)
    out = export_bundle(
        child, tmp_path / "bundle", formats=("onnx-fp32",), calib_ds=ds, heldout_ds=ds,
        data_description={"generator": "synthetic"}, calib_packets=16, heldout_packets=24,
    )  # fmt: skip
    manifest = load_manifest(out).manifest
    assert manifest["pruning"] == record
    assert manifest["model"]["params"] == record["params_after"]
    path = out / "manifest.json"
    bad = json.loads(path.read_text())
    bad["pruning"] = ["not", "an", "object"]
    path.write_text(json.dumps(bad))
    with pytest.raises(ModelError, match="pruning"):
        load_manifest(out)


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
    pruning = extra["pruning"]
    assert pruning == report["pruning"]
    assert (pruning["method"], pruning["h"], pruning["iterations"]) == ("minidrop", 2, 1)
    assert pruning["parent_checkpoint"]["sha256"] == file_sha256(root / "best.pt")
    tuning = pruning["fine_tuning"]
    assert (tuning["max_epochs"], tuning["lr"], tuning["batch_size"]) == (1, 1e-3, 64)
    assert (tuning["patience"], tuning["seed"]) == (10, 0)
    assert pruning["data"]["kind"] == "tc_spectrum"
    assert pruning["rounds"][0]["layers"][0]["keep_ratio"] is not None
    assert extra["split"] == {"kind": "tc_spectrum", "seed": 42, "by": "random"}  # as the parent
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
        ("--method minidrop --h 2 4", "takes one value"),
        ("--h 2", "takes --method"),
        ("--dry-run --method minidrop --h 2", "--dry-run takes"),
        ("--method minidrop --h 2 --from-scratch --iterations 2", "one pruning step"),
    ],
)
def test_cli_prune_rejects_bad_method_arguments(tiny_run, capsys, options, message):
    root, data = tiny_run
    assert _cli("prune", root, data, root / "bad", f"{options} --epochs 0") == 2
    assert message in capsys.readouterr().err


def test_cli_prune_dry_run_prints_knees_and_sizes_per_h(tiny_run, capsys):
    from edge_core.cli import main

    root, _ = tiny_run
    argv = ["train", "prune", "--dry-run", "--checkpoint", str(root / "best.pt")]
    assert main([*argv, "--h", "1", "2", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    model, spec, _ = load_checkpoint(root / "best.pt")
    want = dry_run(model, spec, hs=(1, 2, 4))
    assert result["runs"] == want["runs"] and result["baseline"] == want["baseline"]
    assert result["checkpoint"]["sha256"] == file_sha256(root / "best.pt")
    assert main([*argv, "--rate", "0.5"]) == 0  # text; needs no --data or --out
    text = capsys.readouterr().out
    assert "uniform_p0.5" in text and "trunk.0" in text and "minidrop" not in text


def test_cli_prune_from_scratch_trains_the_pruned_widths(tiny_run, capsys):
    root, data = tiny_run
    inherited, scratch = root / "inherit_h1", root / "scratch_h1"
    options = "--method minidrop --h 1 --epochs 1"
    assert _cli("prune", root, data, inherited, options) == 0
    assert _cli("prune", root, data, scratch, f"{options} --from-scratch") == 0
    capsys.readouterr()
    a, b = (json.loads((d / "prune.json").read_text()) for d in (inherited, scratch))
    assert a["spec"] == b["spec"]  # the same widths
    assert (b["pruning"]["method"], b["pruning"]["widths_from"]) == ("scratch", "minidrop")
    assert a["pruning"]["method"] == "minidrop" and b["from_scratch"]
    wa, wb = (
        load_checkpoint(d / "finetune" / "round_1" / "best.pt")[0] for d in (inherited, scratch)
    )
    assert not torch.equal(wa.trunk[0].weight, wb.trunk[0].weight)
    _, _, extra = load_checkpoint(scratch / "pruned.pt")
    assert extra["pruning"]["method"] == "scratch"


def test_cli_sweep_writes_json_and_plot(tiny_run, capsys):
    root, data = tiny_run
    out = root / "sweep"
    assert _cli("sweep", root, data, out, "--h 2 --rates 0.5 --epochs 1 --from-scratch") == 0
    assert "minidrop_h2" in capsys.readouterr().out
    result = json.loads((out / "sweep.json").read_text())
    names = ["minidrop_h2", "uniform_p0.5", "scratch_minidrop_h2", "scratch_uniform_p0.5"]
    assert [r["name"] for r in result["runs"]] == names
    assert [r["method"] for r in result["runs"]] == ["minidrop", "uniform", "scratch", "scratch"]
    for run in result["runs"]:
        assert (out / "finetune" / run["name"] / "round_1" / "best.pt").exists()
        assert run["accuracy_after_finetune"] is not None
        _, _, extra = load_checkpoint(out / run["checkpoint"])
        assert extra["pruning"]["method"] == run["method"]
        assert extra["pruning"]["widths_from"] == run["widths_from"]
        assert extra["pruning"]["parent_checkpoint"]["path"] == str(root / "best.pt")
    assert result["runs"][0]["spec"] == result["runs"][2]["spec"]
    assert (out / "sweep.png").stat().st_size > 10_000

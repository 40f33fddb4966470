"""The fusion stage's trees (edge_core/fusion.py) against scikit-learn, its file, its checks."""

from __future__ import annotations

import numpy as np
import pytest

from edge_core.errors import ModelError
from edge_core.fusion import (
    DURATION_FEATURE,
    Forest,
    Fusion,
    feature_matrix,
    feature_names,
    from_sklearn,
    load_fusion,
    save_fusion,
)
from edge_core.rx.headers import HEADER_FIELDS
from edge_core.schema import TASK_NAMES

sklearn_ensemble = pytest.importorskip("sklearn.ensemble", reason="scikit-learn (train extra)")


def fitted(seed: int = 0, k: int = 7, nan_share: float = 0.2):
    """A HistGradientBoostingClassifier on data with NaNs (so missing-value routing is used)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3000, 5))
    y = (np.digitize(x[:, 0] + 0.5 * x[:, 1] ** 2, np.linspace(-1.5, 2.5, k - 1))).astype(int)
    x[rng.random(x.shape) < nan_share] = np.nan
    model = sklearn_ensemble.HistGradientBoostingClassifier(
        max_iter=40, max_leaf_nodes=15, early_stopping=False, random_state=seed
    ).fit(x, y)
    return model, x


@pytest.mark.parametrize("k", [3, 7])
def test_trees_reproduce_sklearn_predict_proba(k):
    model, x = fitted(k=k)
    ensemble = from_sklearn("app" if k == 7 else "app_type", model)
    expected = model.predict_proba(x)
    got = ensemble.proba(x)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    # one row at a time gives the same as the batch
    np.testing.assert_allclose(ensemble.proba(x[:1]), got[:1], atol=1e-7)


def test_the_forest_walks_every_task_at_once_to_the_same_bits():
    """`Forest` (the daemon's walk: both tasks together, missing values routed by layout) gives
    exactly each ensemble's own probabilities: NaN both ways, +-inf, a split on missingness
    (sklearn's +inf threshold, which only a NaN fails), batches of one and many."""
    model7, x = fitted(seed=1, k=7, nan_share=0.3)
    model3, _ = fitted(seed=2, k=3, nan_share=0.3)
    ensembles = [from_sklearn("app_type", model3), from_sklearn("app", model7)]
    assert any(np.isposinf(e.threshold[~e.is_leaf]).any() for e in ensembles)
    x = x.copy()
    x[:40, 2] = np.inf
    x[40:80, 3] = -np.inf
    forest = Forest(ensembles, x.shape[1])
    got = forest.proba(x)
    for e in ensembles:
        assert np.array_equal(got[e.task], e.proba(x)), e.task
        assert np.array_equal(forest.proba(x[5:6])[e.task], e.proba(x[5:6])), e.task


def a_fusion(tmp_path):
    names = [*feature_names(TASK_NAMES)[:3], DURATION_FEATURE, HEADER_FIELDS[3]]
    model, x = fitted(k=7)
    fusion = Fusion(tuple(names), {"app": from_sklearn("app", model)}, 16, 20e6)
    return save_fusion(tmp_path / "fusion.npz", fusion), model, x


def test_file_round_trip_gives_the_same_probabilities(tmp_path):
    path, model, x = a_fusion(tmp_path)
    loaded = load_fusion(path, TASK_NAMES)
    assert loaded.tasks == ("app",) and loaded.pre_trigger_samples == 16
    np.testing.assert_allclose(loaded.ensembles["app"].proba(x), model.predict_proba(x), atol=1e-5)


def test_apply_builds_features_from_probs_duration_and_headers(tmp_path):
    path, model, _x = a_fusion(tmp_path)
    fusion = load_fusion(path, TASK_NAMES)
    n = 50
    rng = np.random.default_rng(1)
    probs = {t: rng.dirichlet(np.ones(k), n).astype(np.float32) for t, k in
             zip(TASK_NAMES, (3, 3, 3, 7), strict=True)}  # fmt: skip
    num_samples = rng.integers(400, 100_000, n)
    iq = (rng.normal(size=(n, 2, 3000)) * 0.01).astype(np.float32)  # noise: no header decodes
    out = fusion.apply(probs, iq, num_samples)
    assert out["phy"] is probs["phy"] and out["app"].shape == (n, 7)
    headers = np.full((n, len(HEADER_FIELDS)), np.nan)
    headers[:, 0] = 0
    want = feature_matrix(probs, (num_samples - 16) / 20.0, headers, fusion.features)
    data = probs["frame"].argmax(1) == 2  # the CNN's data frames get the trees
    assert 0 < data.sum() < n
    np.testing.assert_allclose(out["app"][data], model.predict_proba(want)[data], atol=1e-5)
    assert np.array_equal(out["app"][~data], probs["app"][~data])  # the others: the CNN's


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda a: a.pop("app/value"), "no array 'app/value'"),
        (lambda a: a.__setitem__("features", np.array(["cnn:app:bogus"])), "not inputs"),
        (lambda a: a.__setitem__("app/left", a["app/left"] + 10_000), "out of range"),
        (lambda a: a.__setitem__("app/baseline", np.zeros(3)), "baseline"),
        (lambda a: a.__setitem__("tasks", np.array(["nonsense"])), "unknown task"),
    ],
)
def test_a_damaged_file_is_a_clear_model_error(tmp_path, damage, message):
    path, _, _ = a_fusion(tmp_path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    damage(arrays)
    np.savez(path, **arrays)
    with pytest.raises(ModelError, match=message):
        load_fusion(path, TASK_NAMES)


def test_not_an_npz_or_a_pickle_is_refused(tmp_path):
    bad = tmp_path / "fusion.npz"
    bad.write_bytes(b"\x80\x04not a zip")
    with pytest.raises(ModelError, match="not a readable"):
        load_fusion(bad, TASK_NAMES)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ModelError):
        load_fusion(tmp_path / "obj.npy", TASK_NAMES)


# --- fitted on a real dataset, through the CLI, evaluate and the daemon --------------------------


@pytest.fixture(scope="module")
def fused_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle with a fusion stage fitted by `edge-tc train fusion` on 3,000 packets."""
    import shutil

    from edge_core.cli import main

    root = tmp_path_factory.mktemp("fused")
    data = root / "data"
    assert main(["synth", "dataset", "--out", str(data), "--packets", "3000", "--seed", "7",
                 "--workers", "1", "--quiet"]) == 0  # fmt: skip
    bundle = root / "bundle"
    shutil.copytree(tiny_bundle.directory, bundle)
    assert main(["train", "fusion", "--bundle", str(bundle), "--data", str(data)]) == 0
    return bundle, data


def test_train_fusion_writes_a_checked_stage_into_the_bundle(fused_bundle, capsys):
    import json

    from edge_core.bundle import load_manifest
    from edge_core.cli import main

    bundle, data = fused_bundle
    loaded = load_manifest(bundle)
    assert loaded.fusion == bundle / "fusion.npz"
    record = loaded.manifest["fusion"]
    assert record["tasks"] == ["app_type", "app"]
    held = record["training"]["heldout_accuracy"]
    assert set(held) == {"app_type", "app"} and all(0 <= v["fused"] <= 1 for v in held.values())
    fusion = load_fusion(loaded.fusion, loaded.tasks)
    assert fusion.features == tuple(record["features"]) and fusion.needs_headers()
    capsys.readouterr()
    assert main(["train", "evaluate", "--bundle", str(bundle), "--data", str(data),
                 "--split", "all", "--no-bound", "--json"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    for name, model in result["models"].items():
        assert set(model["fused"]) == {"app_type", "app"}, name
        assert all(0 <= v["accuracy"] <= 1 for v in model["fused"].values())
        agreement = model["published_agreement_with_fp32"]
        assert set(agreement) == {"phy", "frame", "app_type", "app"}
        if model["precision"] == "fp32":
            assert set(agreement.values()) == {1.0}


def test_a_fusion_file_that_does_not_match_its_sha256_is_refused(fused_bundle, tmp_path):
    import shutil

    from edge_core.bundle import load_manifest

    bundle = tmp_path / "b"
    shutil.copytree(fused_bundle[0], bundle)
    with open(bundle / "fusion.npz", "ab") as f:
        f.write(b"x")
    with pytest.raises(ModelError, match=r"fusion\.npz"):
        load_manifest(bundle)


def test_the_daemon_publishes_the_fused_tasks(fused_bundle, tiny_bundle):
    """Same synthetic packets, same CNN, with and without the stage: phy and frame are the
    CNN's in both; app_type/app come from the trees when the bundle has them."""
    from test_pipeline import assert_counts_add_up, run_to_the_end

    runs = {}
    for name, directory in (("cnn", tiny_bundle.directory), ("fused", fused_bundle[0])):
        daemon, got = run_to_the_end(directory)
        assert_counts_add_up(daemon)
        assert (daemon.fusion is not None) == (name == "fused")
        runs[name] = {m.payload["packet_id"]: m.payload["labels"] for m in got}
    assert runs["cnn"].keys() == runs["fused"].keys() and len(runs["cnn"]) > 100
    ids = sorted(runs["cnn"])
    for task in ("phy", "frame"):
        assert [runs["cnn"][i][task] for i in ids] == [runs["fused"][i][task] for i in ids]
    changed = sum(runs["cnn"][i]["app"] != runs["fused"][i]["app"] for i in ids)
    assert changed > 0

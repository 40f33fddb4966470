"""Trivial baselines, the information bound and session-disjoint splits (issue 12)."""

import csv
import json

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the train extra (scikit-learn) is not installed")

from edge_core.cli import main
from edge_core.errors import IQFormatError
from edge_core.schema import APP_TYPE_OF_APP, TASK_NAMES, TASKS
from edge_core.synth.dataset import write_dataset
from train.baselines import (
    FLOW_FEATURES,
    DecodedFeatures,
    add_flow_features,
    app_balancing_weights,
    dataset_baselines,
    information_bounds,
    majority_accuracy,
    no_app_uniform_accuracy,
    trivial_baselines,
)
from train.data import (
    balanced_subset,
    default_split_by,
    read_labels_csv,
    read_sessions,
    session_split,
    split_dataset,
)

PHY, FRAME, APP_TYPE, APP = TASKS


def row(phy, frame, app):
    return [PHY.index(phy), FRAME.index(frame), APP_TYPE.index(APP_TYPE_OF_APP[app]),
            APP.index(app)]  # fmt: skip


def table(*rows_and_counts):
    return np.array([row(*r) for r, n in rows_and_counts for _ in range(n)], dtype=np.int64)


# --- exact trivial baselines ---------------------------------------------------------------------


def test_majority_is_the_largest_prior():
    assert majority_accuracy(np.array([0, 2, 2, 1, 2]), 3) == (pytest.approx(0.6), 2)
    with pytest.raises(ValueError, match="no packets"):
        majority_accuracy(np.array([], dtype=np.int64), 3)


def test_no_app_uniform_by_hand():
    # 4 mgmt/ctrl frames (none), 2 data frames without an app, 3 spotify, 1 netflix
    labels = table(
        (("802.11b", "mgmt", "none"), 3),
        (("802.11g", "ctrl", "none"), 1),
        (("802.11n", "data", "none"), 2),
        (("802.11n", "data", "spotify"), 3),
        (("802.11g", "data", "netflix"), 1),
    )
    # the detector gets the 4 non-data frames; each of the 4 app packets is guessed right with
    # probability 1/6 (app) or 1/2 (app_type); the 2 data frames labelled none are always wrong
    assert no_app_uniform_accuracy(labels, "app") == pytest.approx(4 / 10 + 4 / 60)
    assert no_app_uniform_accuracy(labels, "app_type") == pytest.approx(4 / 10 + 4 / 20)
    got = trivial_baselines(labels)
    assert got["app"]["majority"] == pytest.approx(0.6) and got["app"]["majority_class"] == "none"
    assert got["frame"]["majority"] == pytest.approx(0.6)
    assert got["frame"]["majority_class"] == "data"
    assert got["phy"]["no_app_uniform"] is None and got["frame"]["no_app_uniform"] is None
    with pytest.raises(ValueError, match="no-app baseline"):
        no_app_uniform_accuracy(labels, "phy")


def test_no_app_uniform_on_an_app_balanced_set_is_two_and_four_sevenths():
    # issue 12's figures: 7 apps x m, "none" only on management frames
    apps = [a for a in APP.classes if a != "none"]
    labels = table((("802.11b", "mgmt", "none"), 5), *((("802.11n", "data", a), 5) for a in apps))
    assert no_app_uniform_accuracy(labels, "app") == pytest.approx(2 / 7)
    assert no_app_uniform_accuracy(labels, "app_type") == pytest.approx(4 / 7)
    assert trivial_baselines(labels)["app_type"]["majority"] == pytest.approx(3 / 7)


# --- the information bound -----------------------------------------------------------------------


def features(**columns):
    names = tuple(columns)
    matrix = np.stack([np.asarray(v, dtype=np.float64) for v in columns.values()], axis=1)
    return DecodedFeatures(names, matrix, (True,) * len(names), ())


def frame_labels(frame):
    """(N, 4) labels with the given frame classes (mgmt/ctrl: no app; data: spotify)."""
    app = np.where(frame == FRAME.index("data"), APP.index("spotify"), APP.index("none"))
    app_type = np.array([APP_TYPE.index(APP_TYPE_OF_APP[APP.classes[a]]) for a in app])
    return np.stack([np.zeros_like(frame), frame, app_type, app], axis=1)


def test_bound_beats_majority_on_an_informative_field_and_equals_it_on_others():
    rng = np.random.default_rng(0)
    n = 3000
    frame = rng.choice(3, size=n, p=[0.15, 0.15, 0.7])
    labels = frame_labels(frame)
    noisy = np.where(rng.random(n) < 0.9, frame, rng.integers(0, 3, n))  # 90 % the label
    feats = features(
        phy_format=noisy, rate=np.zeros(n), preamble=rng.integers(0, 4, n)
    )  # phy_format carries frame; rate is constant; preamble is noise
    train, test = np.arange(2000), np.arange(2000, n)
    majority = majority_accuracy(frame[test], 3)[0]

    def bound(names):
        sub = DecodedFeatures(tuple(names), feats.columns(names)[0], (True,) * len(names), ())
        return information_bounds(sub, labels, train, {"t": (test, False)}, tasks=["frame"])["t"]

    informative = bound(["phy_format"])["frame"]["bound_phy"]
    assert informative > majority + 0.15
    assert informative == pytest.approx(np.mean(noisy[test] == frame[test]), abs=0.02)
    assert bound(["rate"])["frame"]["bound_phy"] == pytest.approx(majority)  # exactly
    assert bound(["preamble"])["frame"]["bound_phy"] == pytest.approx(majority, abs=0.02)


def test_balanced_weights_equalize_app_classes():
    labels = table((("802.11n", "data", "spotify"), 6), (("802.11n", "data", "youtube"), 2))
    w = app_balancing_weights(labels, np.arange(8))
    app = labels[:, TASK_NAMES.index("app")]
    spotify, youtube = (w[app == APP.index(a)].sum() for a in ("spotify", "youtube"))
    assert spotify == pytest.approx(youtube)
    assert w.sum() == pytest.approx(8)


# --- session-disjoint splits ---------------------------------------------------------------------


def sessions_of(rng, sessions_per_app=6, packets=40):
    """Labels and sessions as a capture campaign gives them: one app per session, with the
    session's management and control frames labelled none."""
    apps = [a for a in APP.classes if a != "none"]
    rows, sessions = [], []
    for s in range(sessions_per_app * len(apps)):
        app = apps[s % len(apps)]
        for _ in range(packets):
            frame = rng.choice(["mgmt", "ctrl", "data"], p=[0.1, 0.2, 0.7])
            rows.append(row("802.11n", frame, app if frame == "data" else "none"))
            sessions.append(1000 + s)
    return np.array(rows, dtype=np.int64), np.array(sessions, dtype=np.int64)


def test_session_split_is_disjoint_stratified_and_seeded():
    labels, sessions = sessions_of(np.random.default_rng(1))
    split = session_split(sessions, labels, val=0.2, test=0.2, seed=5)
    parts = (split.train, split.val, split.test)
    assert sum(len(p) for p in parts) == len(labels)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    part_sessions = [set(sessions[p].tolist()) for p in parts]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not part_sessions[a] & part_sessions[b]
    app = labels[:, TASK_NAMES.index("app")]
    for p in parts:  # every app has sessions in every part
        assert set(np.unique(app[p])) == set(range(len(APP.classes)))
    again = session_split(sessions, labels, val=0.2, test=0.2, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(parts, again.__dict__.values(), strict=True))
    other = session_split(sessions, labels, val=0.2, test=0.2, seed=6)
    assert not np.array_equal(split.test, other.test)


def test_session_split_with_few_sessions_keeps_training_ones():
    labels, sessions = sessions_of(np.random.default_rng(2), sessions_per_app=2)
    split = session_split(sessions, labels, val=0.1, test=0.1, seed=0)
    app = labels[:, TASK_NAMES.index("app")]
    assert set(np.unique(app[split.train])) == set(range(len(APP.classes)))
    assert set(np.unique(app[split.test])) == set(range(len(APP.classes)))  # 2: train + test
    assert len(split.val) == 0
    with pytest.raises(ValueError, match="sessions must be"):
        session_split(sessions[:-1], labels)


def test_balanced_split_by_session_is_balanced_and_disjoint():
    labels, sessions = sessions_of(np.random.default_rng(3))
    split = split_dataset(labels, sessions, "balanced", "session", seed=1)
    app = labels[:, TASK_NAMES.index("app")]
    for p in (split.train, split.val, split.test):
        counts = np.bincount(app[p], minlength=len(APP.classes))
        assert counts.min() == counts.max() > 0
    assert not set(sessions[split.train]) & set(sessions[split.test])
    with pytest.raises(ValueError, match="no session column"):
        split_dataset(labels, None, "balanced", "session")
    random = split_dataset(labels, None, "tc_spectrum", "random", seed=1)
    assert sum(random.sizes()) == len(labels)


def test_balanced_subset_leaves_out_absent_classes():
    labels = table((("802.11n", "data", "spotify"), 5), (("802.11n", "data", "twitch"), 3))
    sub = balanced_subset(labels, seed=0)
    app = labels[sub, TASK_NAMES.index("app")]
    assert len(sub) == 6 and np.bincount(app).max() == 3


# --- on a generated dataset, and the CLI ---------------------------------------------------------


def add_sessions(directory, packets_per_session=60):
    """Cut packets.csv's packets into short hand-made sessions, runs of one app each.

    2,000 generated packets hold only a handful of the generator's capture sessions (hundreds
    of packets each), too few to split three ways; these tests need several per app."""
    path = directory / "packets.csv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    at = header.index("session") if "session" in header else len(header)
    labels, _ = read_labels_csv(directory / "labels.csv")
    app = labels[:, TASK_NAMES.index("app")]
    order = np.argsort(app, kind="stable")  # group by app, then cut into runs
    session = np.empty(len(app), dtype=np.int64)
    session[order] = np.arange(len(app)) // packets_per_session
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*header[:at], "session", *header[at + 1 :]])
        for r, s in zip(rows[1:], session, strict=True):
            w.writerow([*r[:at], int(s), *r[at + 1 :]])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = write_dataset(tmp_path_factory.mktemp("bl") / "d", 2000, seed=4, workers=1, progress=False)
    add_sessions(d)
    return d


@pytest.fixture(scope="module")
def sessionless(tmp_path_factory):
    d = write_dataset(tmp_path_factory.mktemp("bl") / "d", 400, seed=5, workers=1, progress=False)
    path = d / "packets.csv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if "session" in rows[0]:  # a generator that writes sessions: drop them again
        at = rows[0].index("session")
        path.write_text("".join(",".join(r[:at] + r[at + 1 :]) + "\n" for r in rows))
    return d


def test_dataset_baselines_on_generated_packets(dataset):
    result = dataset_baselines(dataset, by="session", seed=3)
    assert result["sessions"]["shared"] == 0 and result["sessions"]["test"] > 0
    labels, _ = read_labels_csv(dataset / "labels.csv")
    sessions = read_sessions(dataset)
    test = session_split(sessions, labels, val=0.1, test=0.1, seed=3).test
    app = result["tasks"]["app"]
    want = trivial_baselines(labels[test])["app"]["majority"]
    assert app["natural"]["majority"] == pytest.approx(want)
    for test_set in ("natural", "balanced"):
        for task in TASK_NAMES:
            v = result["tasks"][task][test_set]
            assert 0 <= v["majority"] <= 1 and 0 <= v["bound_phy"] <= 1
        frame = result["tasks"]["frame"][test_set]
        assert frame["bound_phy"] >= frame["majority"]
    # the decoded fields tell frames apart far better than the majority class
    frame = result["tasks"]["frame"]["natural"]
    assert frame["bound_phy"] > frame["majority"] + 0.2
    assert "session" not in result["features"]["phy"] and "snr_db" not in result["features"]["phy"]


def test_cli_baselines_json_has_both_splits(dataset, capsys):
    assert default_split_by(dataset) == "session"
    assert main(["train", "baselines", "--data", str(dataset), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["split_by"]) == {"session", "random"}
    for result in out["split_by"].values():
        for task in TASK_NAMES:
            for test_set in ("natural", "balanced"):
                v = result["tasks"][task][test_set]
                assert {"majority", "majority_class", "no_app_uniform", "bound_phy"} <= set(v)
        assert result["tasks"]["app"]["balanced"]["no_app_uniform"] is not None
    assert main(["train", "baselines", "--data", str(dataset), "--split-by", "random",
                 "--no-bound"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "no-app+uniform" in text and "split by random" in text


def test_cli_split_by_session_needs_the_column(sessionless, capsys):
    assert default_split_by(sessionless) == "random"
    code = main(["train", "baselines", "--data", str(sessionless), "--split-by", "session"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no 'session' column" in err and "--split-by random" in err


def test_cli_fit_by_session_then_evaluate_reports_baselines(dataset, tmp_path, capsys):
    pytest.importorskip("torch", reason="the train extra (torch) is not installed")
    import torch

    torch.set_num_threads(1)
    run = tmp_path / "run"
    assert main(["train", "fit", "--data", str(dataset), "--out", str(run), "--model", "mtl1d",
                 "--split", "tc_spectrum", "--epochs", "1", "--batch-size", "64",
                 "--no-progress", "--conv-widths", "2", "2", "2", "2", "--dense-widths", "4",
                 "4", "4"]) == 0  # fmt: skip
    kpi = json.loads((run / "kpi.json").read_text())
    assert kpi["split"]["by"] == "session"
    assert set(kpi["baselines"]) == set(TASK_NAMES) and kpi["information_bound"]["computed"]
    report = (run / "report.md").read_text()
    assert "| majority |" in report and "bound PHY" in report
    capsys.readouterr()
    assert main(["train", "evaluate", "--checkpoint", str(run / "best.pt"), "--data",
                 str(dataset), "--json"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["split_by"] == "session" and result["packets"] == kpi["packets"]
    assert result["per_task"]["app"]["accuracy"] == kpi["per_task"]["app"]["accuracy"]
    for task in TASK_NAMES:
        assert result["baselines"][task] == kpi["baselines"][task]
    assert main(["train", "evaluate", "--checkpoint", str(run / "best.pt"), "--data",
                 str(dataset), "--split", "balanced", "--no-bound"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "majority" in text and "no information bound: --no-bound" in text


def test_window_bound_sees_no_header_bits_and_only_the_window_of_the_duration(dataset):
    """`bound_window`: no PSDU length or aggregation bit, duration clipped to the 150 us window."""
    from train.baselines import WINDOW_US, bound_feature_sets, decoded_features

    assert WINDOW_US == pytest.approx(150.0)
    features = decoded_features(dataset)
    window = bound_feature_sets(features, "app")["window"]
    assert "length_bytes" not in window and "aggregated" not in window
    assert "duration_us" not in window and "duration_in_window_us" in window
    full, _ = features.columns(["duration_us"])
    clipped, _ = features.columns(["duration_in_window_us"])
    assert (full[:, 0] > WINDOW_US).any()  # long packets exist, and the window cuts them
    np.testing.assert_allclose(clipped[:, 0], np.minimum(full[:, 0], WINDOW_US))
    result = dataset_baselines(dataset, by="session", seed=3)
    assert result["features"]["window"] == window
    assert 0 <= result["tasks"]["app"]["balanced"]["bound_window"] <= 1


# --- the flow bound ------------------------------------------------------------------------------


def test_flow_features_by_hand(tmp_path):
    """Each data frame sees its station's last K data frames (itself included, none after it,
    never another station's); management and control frames get NaN."""
    rows = [  # subtype, session, length, aggregated, uplink
        ("qos_data", 1, 100, 1, 0), ("ack", 1, 14, 0, 1), ("qos_data", 1, 200, 1, 0),
        ("qos_data", 1, 300, 0, 1), ("beacon", 1, 180, 0, 0), ("qos_data", 1, 400, 1, 0),
        ("data", 2, 1000, 0, 1), ("qos_data", 2, 50, 0, 0),
    ]  # fmt: skip
    with open(tmp_path / "packets.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subtype", "session", "length_bytes", "aggregated", "uplink"])
        w.writerows(rows)
    length = np.array([r[2] for r in rows], np.float64)
    base = DecodedFeatures(("length_bytes",), length[:, None], (False,), ())
    got = add_flow_features(base, tmp_path, window=2)
    assert got.names == ("length_bytes", *FLOW_FEATURES)
    col = {n: got.matrix[:, got.names.index(n)] for n in FLOW_FEATURES}
    data = [0, 2, 3, 5, 6, 7]
    np.testing.assert_array_equal(col["flow_frames"][data], [1, 2, 2, 2, 1, 2])
    np.testing.assert_allclose(col["flow_length_mean"][data], [100, 150, 250, 350, 1000, 525])
    np.testing.assert_array_equal(col["flow_length_max"][data], [100, 200, 300, 400, 1000, 1000])
    np.testing.assert_allclose(col["flow_aggregated_share"][data], [1, 1, 0.5, 0.5, 0, 0])
    np.testing.assert_allclose(col["flow_uplink_share"][data], [0, 0, 0.5, 0.5, 1, 0.5])
    for name in FLOW_FEATURES:
        assert np.isnan(col[name][[1, 4]]).all(), name  # the ACK and the beacon
    assert np.isnan(col["flow_duration_mean"][data]).all()  # no duration column: unknown
    with pytest.raises(ValueError, match="flow window must be >= 1"):
        add_flow_features(base, tmp_path, window=0)
    # a damaged value is named: file, column and row
    csv_path = tmp_path / "packets.csv"
    csv_path.write_text(csv_path.read_text().replace("qos_data,1,300,0,1", "qos_data,1,300,0,x"))
    with pytest.raises(IQFormatError, match=r"packets\.csv: column 'uplink' row 5: not a number"):
        add_flow_features(base, tmp_path, window=2)


def test_cli_baselines_with_a_flow_window(dataset, capsys):
    """`train baselines --flow-window K`: the PHY+MAC+flow bound beside the others; on app it
    can only add to what the same classifier gets from the packet alone (same split)."""
    args = ["train", "baselines", "--data", str(dataset), "--split-by", "session",
            "--flow-window", "4", "--json"]  # fmt: skip
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)["split_by"]["session"]
    assert result["features"]["flow_window"] == 4
    assert set(FLOW_FEATURES) <= set(result["features"]["phy_mac_flow"])
    for task in TASK_NAMES:
        for test_set in ("natural", "balanced"):
            v = result["tasks"][task][test_set]
            assert 0 <= v["bound_phy_mac_flow"] <= 1
    assert main(args[:-1]) == 0
    assert "bound PHY+MAC+flow" in capsys.readouterr().out

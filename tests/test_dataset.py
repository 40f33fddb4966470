import csv
import json

import numpy as np
import pytest

from edge_core import schema
from edge_core.cli import main
from edge_core.synth import dataset, traffic
from edge_core.synth import sessions as sessions_model
from edge_core.synth.dataset import read_labels, write_dataset
from edge_core.synth.traffic import TrafficMix

CHUNK = 400  # small chunks keep the tests fast; the default is dataset.CHUNK_PACKETS
N = CHUNK + 88  # more than one chunk, the last one partial


@pytest.fixture(autouse=True, scope="module")
def small_chunks():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dataset, "CHUNK_PACKETS", CHUNK)
        yield


@pytest.fixture(scope="module")
def ds_dir(tmp_path_factory, small_chunks):
    return write_dataset(tmp_path_factory.mktemp("ds") / "a", N, seed=7, workers=2, progress=False)


def _packets(ds_dir):
    with open(ds_dir / "packets.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_layout_is_memory_mappable_float32_n_2_3000(ds_dir):
    iq = np.load(ds_dir / "iq.npy", mmap_mode="r")
    assert isinstance(iq, np.memmap)
    assert iq.shape == (N, 2, schema.INPUT_LENGTH)
    assert iq.dtype == np.float32
    assert np.isfinite(iq).all()
    with open(ds_dir / "labels.csv", newline="") as f:
        assert next(csv.reader(f)) == ["phy", "frame", "app_type", "app", "snr_db"]
    meta = json.loads((ds_dir / "dataset.json").read_text())
    assert meta["packets"] == N and meta["seed"] == 7
    assert not (ds_dir / "dataset.json.partial").exists()
    assert sum(meta["label_counts"]["phy"].values()) == N


def test_labels_obey_the_dataset_rules(ds_dir):
    rows = read_labels(ds_dir)
    assert len(rows) == N
    for r in rows:
        schema.check_labels(r["phy"], r["frame"], r["app_type"], r["app"])
        assert 5.0 <= float(r["snr_db"]) <= 30.0
        # Table 5: No-App is management and control frames; every data frame has its app.
        assert (r["app"] == "none") == (r["frame"] != "data")


def test_packets_come_from_sessions_with_what_a_receiver_decodes(ds_dir):
    rows, labels = _packets(ds_dir), read_labels(ds_dir)
    assert tuple(rows[0]) == dataset.PACKET_COLUMNS
    meta = json.loads((ds_dir / "dataset.json").read_text())
    sessions = {int(r["session"]) for r in rows}
    assert meta["sessions"] == len(sessions) >= 6  # one per application at least
    assert meta["generator_model"] == sessions_model.MODEL_VERSION
    # One session, one application.
    app_of = {}
    for r, lab in zip(rows, labels, strict=True):
        if lab["frame"] == "data":
            assert app_of.setdefault(r["session"], lab["app"]) == lab["app"]
    for r, lab in zip(rows, labels, strict=True):
        n_mpdu, aggregated = int(r["n_mpdu"]), int(r["aggregated"])
        assert aggregated == (n_mpdu > 1)
        assert not aggregated or (lab["phy"] == "802.11n" and lab["frame"] == "data")
        assert float(r["duration_us"]) * 20 >= int(r["n_samples"]) - 32
        assert abs(int(r["rx_power_db"]) - (-95 + float(lab["snr_db"]))) <= 0.51
        assert abs(float(r["cfo_hz_est"]) - float(r["cfo_hz"])) < 20e3
        assert r["uplink"] in {"0", "1"} and r["tid"] == "0"
    # The same transmitter keeps its CFO through a session (a fingerprint, not a per-packet draw).
    by_tx = {}
    for r in rows:
        by_tx.setdefault((r["session"], r["uplink"], r["subtype"] == "beacon"), set()).add(
            r["cfo_hz"]
        )
    assert sum(len(v) == 1 for v in by_tx.values()) > len(by_tx) // 2


def test_label_mix_follows_tables_4_and_5(ds_dir):
    rows = read_labels(ds_dir)
    n = len(rows)
    total4 = sum(sum(r.values()) for r in traffic.TABLE4_PHY_BY_FRAME.values())
    for frame, row in traffic.TABLE4_PHY_BY_FRAME.items():
        for phy, count in row.items():
            got = sum(r["phy"] == phy and r["frame"] == frame for r in rows) / n
            expected = count / total4
            assert abs(got - expected) < 4 * np.sqrt(expected / n) + 2e-3, (phy, frame, got)
    data = [r for r in rows if r["frame"] == "data"]
    total5 = sum(traffic.TABLE5_APPS_OF_DATA.values())
    for app, count in traffic.TABLE5_APPS_OF_DATA.items():
        got = sum(r["app"] == app for r in data) / len(data)
        expected = count / total5
        assert abs(got - expected) < 4 * np.sqrt(expected / len(data)) + 1e-2, (app, got)


def test_post_padding_with_zeros_and_post_truncation(ds_dir):
    iq = np.load(ds_dir / "iq.npy", mmap_mode="r")
    with open(ds_dir / "packets.csv", newline="") as f:
        details = list(csv.DictReader(f))
    short = [i for i, d in enumerate(details) if int(d["n_samples"]) < schema.INPUT_LENGTH]
    full = [i for i, d in enumerate(details) if int(d["n_samples"]) == schema.INPUT_LENGTH]
    assert short and full  # ACKs are short, long data frames are truncated
    for i in short[:50]:
        n = int(details[i]["n_samples"])
        assert not iq[i, :, n:].any()
        assert np.abs(iq[i, :, n - 8 : n]).sum() > 0
    for i in full[:50]:
        assert np.abs(iq[i, :, -16:]).sum() > 0


def test_content_depends_on_seed_not_on_workers(ds_dir, tmp_path):
    again = write_dataset(tmp_path / "b", N, seed=7, workers=1, progress=False)
    assert np.array_equal(np.load(ds_dir / "iq.npy"), np.load(again / "iq.npy"))
    assert (ds_dir / "labels.csv").read_bytes() == (again / "labels.csv").read_bytes()
    other = write_dataset(tmp_path / "c", 16, seed=8, workers=1, progress=False)
    assert not np.array_equal(np.load(ds_dir / "iq.npy")[:16], np.load(other / "iq.npy"))


def test_a_mix_sessions_cannot_fill_is_refused(tmp_path):
    only_unknown_data = TrafficMix(
        phy_by_frame={"mgmt": {}, "ctrl": {}, "data": {"802.11n": 1.0}}, apps_of_data={"none": 1.0}
    )
    with pytest.raises(ValueError, match="cells that capture sessions do not produce"):
        write_dataset(tmp_path / "d", 8, seed=1, mix=only_unknown_data, workers=1, progress=False)


def test_refuses_to_overwrite_a_dataset(ds_dir):
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        write_dataset(ds_dir, 4, seed=1, progress=False)


def test_cli_synth_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["synth", "dataset", "--out", str(out), "--packets", "20", "--seed", "3",
               "--snr-db", "10", "12", "--workers", "1", "--quiet"])  # fmt: skip
    assert rc == 0
    assert "wrote 20 packets" in capsys.readouterr().out
    snrs = [float(r["snr_db"]) for r in read_labels(out)]
    assert min(snrs) >= 10 and max(snrs) <= 12
    assert main(["synth", "dataset", "--out", str(out), "--packets", "5", "--quiet"]) == 2
    assert "already holds a dataset" in capsys.readouterr().err


def test_flow_counters_count_every_frame_of_the_station_in_the_last_second(ds_dir):
    """packets.csv's t_us and flow_*_1s: times in session order; the station's data bytes and
    frames over the second ending with each frame are at least what the kept frames of that
    second add up to (the dataset keeps a subsample), downlink bytes are part of them, and
    video sessions carry more bytes per second than audio ones (table of the traffic models)."""
    rows = _packets(ds_dir)
    labels = read_labels(ds_dir)
    by_session: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_session.setdefault(r["session"], []).append(i)
    rate = {"audio": [], "video": []}
    for members in by_session.values():
        t = [float(rows[i]["t_us"]) for i in members]
        assert t == sorted(t)
        for i in members:
            r = rows[i]
            total, frames, down = (int(r[k]) for k in (
                "flow_bytes_1s", "flow_frames_1s", "flow_down_bytes_1s"))  # fmt: skip
            assert 0 <= down <= total and (frames == 0) == (total == 0)
            now = float(r["t_us"])
            kept = [
                j for j in members
                if rows[j]["subtype"] in ("data", "qos_data")
                and now - 1e6 <= float(rows[j]["t_us"]) <= now
            ]  # fmt: skip
            if r["subtype"] in ("data", "qos_data"):
                assert frames >= len(kept) >= 1
                assert total >= sum(int(rows[j]["length_bytes"]) for j in kept)
                rate[labels[i]["app_type"]].append(total)
    assert rate["audio"] and rate["video"]
    assert np.median(rate["video"]) > np.median(rate["audio"])

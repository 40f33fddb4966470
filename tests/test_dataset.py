import csv
import json

import numpy as np
import pytest

from edge_core import schema
from edge_core.cli import main
from edge_core.synth import dataset
from edge_core.synth.dataset import read_labels, write_dataset

N = dataset.CHUNK_PACKETS + 88  # more than one chunk, the last one partial


@pytest.fixture(scope="module")
def ds_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds") / "a", N, seed=7, workers=2, progress=False)


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

import csv
import pickle

import numpy as np
import pytest

from edge_core.errors import IQFormatError
from edge_core.schema import APP_TYPE_OF_APP, INPUT_LENGTH, TASK_NAMES, TASKS
from train.data import (
    PAPER1_BALANCED_PACKETS,
    MatPacketDataset,
    PacketDataset,
    balanced_split,
    contingency,
    cramers_v,
    read_labels_csv,
    task_correlation,
    tc_spectrum_split,
)

PHY, FRAME, APP_TYPE, APP = TASKS
APPS = APP.classes


def consistent_labels(rng, n, app_weights=None):
    """(N, 4) schema-order labels obeying the dataset rules (no application on mgmt/ctrl)."""
    app = rng.choice(len(APPS), size=n, p=app_weights)
    app_type = np.array([APP_TYPE.index(APP_TYPE_OF_APP[APPS[a]]) for a in app])
    frame = np.where(app == APP.index("none"), rng.integers(0, 2, n), FRAME.index("data"))
    phy = rng.integers(0, 3, n)
    return np.stack([phy, frame, app_type, app], axis=1)


def write_our_dataset(directory, n=12, seed=3):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    iq = rng.standard_normal((n, 2, INPUT_LENGTH)).astype(np.float32)  # (n, 2, 3000)
    np.save(directory / "iq.npy", iq)
    labels = consistent_labels(rng, n)
    snr = rng.uniform(5, 30, n)
    with open(directory / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*TASK_NAMES, "snr_db"])
        for row, s in zip(labels, snr, strict=True):
            w.writerow([t.classes[v] for t, v in zip(TASKS, row, strict=True)] + [f"{s:.2f}"])
    return iq, labels


@pytest.fixture
def our_dataset(tmp_path):
    iq, labels = write_our_dataset(tmp_path / "ds")
    return tmp_path / "ds", iq, labels


def test_packet_dataset_reads_items_from_the_memory_map(our_dataset):
    directory, iq, labels = our_dataset
    ds = PacketDataset(directory)
    assert len(ds) == len(iq) and ds.length == INPUT_LENGTH
    assert np.array_equal(ds.labels, labels)
    for i in (0, 5, len(ds) - 1):
        x, y = ds[i]
        assert x.dtype == np.float32 and x.shape == (2, INPUT_LENGTH) and x.flags.writeable
        assert np.array_equal(x, iq[i])
        assert list(y) == list(TASK_NAMES)
        assert [y[t] for t in TASK_NAMES] == labels[i].tolist()
    assert isinstance(ds._open(), np.memmap)


def test_packet_dataset_pickles_without_its_samples(our_dataset):
    directory, iq, _ = our_dataset
    ds = PacketDataset(directory)
    ds[0]
    blob = pickle.dumps(ds)
    assert len(blob) < iq.nbytes / 20  # the memmap is not copied into the pickle
    again = pickle.loads(blob)
    assert np.array_equal(again[3][0], iq[3]) and again[3][1] == ds[3][1]


def test_packet_dataset_rejects_bad_files(our_dataset):
    directory = our_dataset[0]
    lines = (directory / "labels.csv").read_text().splitlines()
    (directory / "labels.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(IQFormatError, match="12 packets"):
        PacketDataset(directory)
    (directory / "labels.csv").write_text(lines[0] + "\n802.11ax,data,video,youtube,10\n")
    with pytest.raises(IQFormatError, match=r"labels.csv:2"):
        read_labels_csv(directory / "labels.csv")
    (directory / "labels.csv").write_text("frame,phy,app_type,app,snr_db\n")
    with pytest.raises(IQFormatError, match="header"):
        read_labels_csv(directory / "labels.csv")


# --- the papers' MATLAB v7.3 files --------------------------------------------------------

MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Aug 16 10:00:00 2021 HDF5 schema 1.00 ."  # noqa: E501


def write_mat(path, packets, real_labels, numeric_y=False):
    """A file laid out like MATLAB's v7.3 `save`: 512-byte user block, cells as references.

    `packets` are the arrays exactly as h5py should show them (MATLAB 2 x L -> (L, 2));
    None stands for a MATLAB empty array. `real_labels` are [frame, phy, app_type, app].
    """
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        x_refs, y_refs = [], []
        for i, (packet, y) in enumerate(zip(packets, real_labels, strict=True)):
            if packet is None:
                d = refs.create_dataset(f"x{i}", data=np.array([0, 0], dtype=np.uint64))
                d.attrs["MATLAB_empty"] = np.uint8(1)
            else:
                d = refs.create_dataset(f"x{i}", data=packet)
            d.attrs["MATLAB_class"] = np.bytes_("int16")
            x_refs.append(d.ref)
            e = refs.create_dataset(f"y{i}", data=np.asarray(y, np.uint8).reshape(4, 1))
            e.attrs["MATLAB_class"] = np.bytes_("uint8")  # MATLAB 1 x 4 shows as (4, 1)
            y_refs.append(e.ref)
        x = f.create_dataset("X", data=np.array(x_refs, dtype=h5py.ref_dtype).reshape(-1, 1))
        x.attrs["MATLAB_class"] = np.bytes_("cell")
        if numeric_y:
            f.create_dataset("Y", data=np.asarray(real_labels, np.uint8).T)  # MATLAB N x 4
        else:
            y = f.create_dataset("Y", data=np.array(y_refs, dtype=h5py.ref_dtype).reshape(-1, 1))
            y.attrs["MATLAB_class"] = np.bytes_("cell")
    with open(path, "r+b") as fh:  # MATLAB's 128-byte header at the start of the user block
        fh.write(MATLAB_HEADER.ljust(116) + bytes(8) + b"\x00\x02" + b"IM")


@pytest.fixture
def mat_file(tmp_path):
    rng = np.random.default_rng(5)
    iq_short = rng.integers(-3000, 3000, (2, 100), dtype=np.int16)  # (2, 100) I, Q
    iq_long = rng.integers(-3000, 3000, (2, 3500), dtype=np.int16)
    iq_exact = rng.integers(-3000, 3000, (2, 3000), dtype=np.int16)
    packets = [
        iq_short.T,  # MATLAB 2 x 100 -> h5py (100, 2)
        iq_long,  # MATLAB 3500 x 2 -> h5py (2, 3500)
        iq_short.T,  # unknown application: dropped
        iq_exact.T,
        iq_short.T,  # 802.11a (phy code 3): dropped
        None,  # MATLAB empty
    ]
    real = [  # [frame, phy, app_type, app]
        [2, 2, 1, 3],  # data, n, video, youtube
        [0, 0, 2, 6],  # mgmt, b, none, none
        [2, 2, 3, 7],
        [1, 1, 2, 6],  # ctrl, g
        [2, 3, 0, 0],
        [2, 2, 0, 1],  # data, n, audio, tunein
    ]
    path = tmp_path / "waveforms_2G_n_SNR_app_balanced.mat"
    write_mat(path, packets, real)
    return path, packets, real, (iq_short, iq_long, iq_exact)


def test_mat_file_has_the_matlab_v73_layout(mat_file):
    h5py = pytest.importorskip("h5py")
    path = mat_file[0]
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
        assert f["X"].shape == (6, 1) and f["X"].dtype == h5py.ref_dtype


def test_mat_dataset_orients_pads_truncates_and_drops_unknown(mat_file):
    path, _, real, (iq_short, iq_long, iq_exact) = mat_file
    with MatPacketDataset(path) as ds:
        assert len(ds) == 4 and ds.dropped == 2
        assert ds.rows.tolist() == [0, 1, 3, 5]
        x, y = ds[0]
        assert x.dtype == np.float32 and x.shape == (2, INPUT_LENGTH)
        assert np.array_equal(x[:, :100], iq_short) and not x[:, 100:].any()
        assert y == {"phy": 2, "frame": 2, "app_type": 1, "app": 3}
        x, y = ds[1]
        assert np.array_equal(x, iq_long[:, :INPUT_LENGTH])  # keep the first 3000
        assert y == {"phy": 0, "frame": 0, "app_type": 2, "app": 6}
        assert np.array_equal(ds[2][0], iq_exact)
        x, y = ds[3]
        assert not x.any() and y["app"] == APP.index("tunein")
        kept = (real[0], real[1], real[3], real[5])
        expected = np.array([[r[1], r[0], r[2], r[3]] for r in kept])  # schema order
        assert np.array_equal(ds.labels, expected)


def test_mat_dataset_authors_layout_reshapes_like_tc_spectrum(mat_file):
    path, packets, *_ = mat_file
    with MatPacketDataset(path, layout="authors") as ds:
        x, _ = ds[0]
    h5_view = packets[0]  # (100, 2) as h5py shows it
    assert np.array_equal(x[:, :100], h5_view.reshape(2, -1))  # I/Q interleaved halves
    assert x[0, 1] == h5_view[0, 1]  # Q0 lands next to I0


def test_mat_dataset_reads_a_numeric_label_matrix_and_pickles(tmp_path):
    pytest.importorskip("h5py")
    rng = np.random.default_rng(1)
    packets = [rng.integers(-9, 9, (50, 2), dtype=np.int16) for _ in range(3)]
    real = [[2, 2, 0, 0], [1, 1, 2, 6], [2, 2, 1, 5]]
    write_mat(tmp_path / "m.mat", packets, real, numeric_y=True)
    ds = MatPacketDataset(tmp_path / "m.mat", length=64)
    assert ds[2][0].shape == (2, 64) and ds[2][1]["app"] == 5
    again = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(again[1][0], ds[1][0])
    assert np.array_equal(again[1][0][:, :50], packets[1].T)
    ds.close()
    again.close()


# --- splits ------------------------------------------------------------------------------


def paper1_like_labels(seed=0):
    """Application counts of paper 1's Table 5 scaled so TuneIn (the rarest) has 10,229."""
    counts = [13822, 10229, 15002, 16671, 18268, 21314, 45359]
    rng = np.random.default_rng(seed)
    app = rng.permutation(np.repeat(np.arange(7), counts))
    labels = consistent_labels(rng, len(app))
    labels[:, 3] = app
    labels[:, 2] = [APP_TYPE.index(APP_TYPE_OF_APP[APPS[a]]) for a in app]
    labels[:, 1] = np.where(app == 6, rng.integers(0, 2, len(app)), 2)
    return labels


def test_balanced_split_reproduces_paper1_counts():
    labels = paper1_like_labels()
    split = balanced_split(labels)
    assert split.sizes() == (47_027, 16_384, 8_192)
    assert sum(split.sizes()) == PAPER1_BALANCED_PACKETS
    everything = np.concatenate([split.train, split.val, split.test])
    assert len(np.unique(everything)) == len(everything)  # disjoint
    app = labels[everything, 3]
    assert (np.bincount(app, minlength=7) == 10_229).all()  # balanced to TuneIn
    for part in (split.train, split.val, split.test):
        per_class = np.bincount(labels[part, 3], minlength=7)
        assert per_class.max() - per_class.min() <= 1  # stratified
        assert (np.diff(part) > 0).all()


def test_balanced_split_is_seeded_and_takes_counts_or_fractions():
    labels = consistent_labels(np.random.default_rng(2), 2000)
    a = balanced_split(labels, task="phy", val=0.2, test=0.1, seed=1)
    b = balanced_split(labels, task="phy", val=0.2, test=0.1, seed=1)
    c = balanced_split(labels, task="phy", val=0.2, test=0.1, seed=2)
    assert np.array_equal(a.train, b.train) and not np.array_equal(a.train, c.train)
    rarest = np.bincount(labels[:, 0]).min()
    assert sum(a.sizes()) == 3 * rarest
    assert a.sizes()[1] == round(0.2 * 3 * rarest)
    d = balanced_split(labels, task="phy", val=30, test=9, per_class=100)
    assert d.sizes() == (261, 30, 9)
    assert (np.bincount(labels[d.test, 0], minlength=3) == 3).all()


def test_balanced_split_rejects_impossible_requests():
    labels = consistent_labels(np.random.default_rng(2), 500)
    only_data = labels[labels[:, 1] == FRAME.index("data")]
    with pytest.raises(ValueError, match="no packets of"):
        balanced_split(only_data, task="frame")
    with pytest.raises(ValueError, match="per_class"):
        balanced_split(labels, task="phy", per_class=10_000)
    with pytest.raises(ValueError, match="fraction"):
        balanced_split(labels, task="phy", val=1.5)
    with pytest.raises(ValueError, match="unknown task"):
        balanced_split(labels, task="mcs")


@pytest.mark.parametrize(
    ("n", "train", "test"),
    [  # train/test sizes stored in tc_spectrum's result JSONs (frames, app-type, app)
        (225_468, 180_374, 22_547),
        (117_159, 93_727, 11_716),
        (71_603, 57_282, 7_161),
    ],
)
def test_tc_spectrum_split_sizes_match_the_published_runs(n, train, test):
    split = tc_spectrum_split(n)
    assert split.sizes() == (train, n - train - test, test)
    assert np.array_equal(np.sort(np.concatenate([split.train, split.val, split.test])),
                          np.arange(n))  # fmt: skip


def test_tc_spectrum_split_follows_sklearn_shuffle_split():
    split = tc_spectrum_split(10, seed=42)
    perm = np.random.RandomState(42).permutation(10)
    assert sorted(split.train) == sorted(perm[2:])  # ceil(0.2 * 10) = 2 held out
    held = perm[:2]
    assert sorted(split.test) == [held[np.random.RandomState(42).permutation(2)[0]]]


# --- task correlation --------------------------------------------------------------------


def test_cramers_v_is_one_for_perfect_association_and_zero_for_independence():
    rng = np.random.default_rng(0)
    labels = consistent_labels(rng, 5000)
    assert contingency(labels, "app", "app_type").cramers_v == pytest.approx(1.0)
    assert contingency(labels, "app_type", "app").cramers_v == pytest.approx(1.0)
    mirrored = labels.copy()
    mirrored[:, 1] = mirrored[:, 0]  # frame == phy class for class
    assert contingency(mirrored, "phy", "frame").cramers_v == pytest.approx(1.0)
    independent = labels.copy()
    independent[:, 0] = rng.integers(0, 3, len(labels))
    independent[:, 1] = rng.integers(0, 3, len(labels))
    assert contingency(independent, "phy", "frame").cramers_v < 0.05
    assert np.isnan(cramers_v(np.array([[5, 7]])))


def test_contingency_tables_and_report_print():
    labels = consistent_labels(np.random.default_rng(4), 300)
    table = contingency(labels, "phy", "frame")
    assert table.counts.shape == (3, 3) and table.counts.sum() == 300
    assert table.counts[1, 2] == ((labels[:, 0] == 1) & (labels[:, 1] == 2)).sum()
    md = table.to_markdown()
    assert md.splitlines()[0] == "| phy \\ frame | mgmt | ctrl | data | total |"
    assert "Cramér's V" in md and "802.11g" in table.to_text()
    report = task_correlation(labels)
    assert len(report.tables) == 6
    v = report.cramers_v_matrix()
    assert np.allclose(v, v.T) and np.allclose(np.diag(v), 1)
    assert v[2, 3] == pytest.approx(1.0)  # app_type x app
    assert "### app_type x app" in report.to_markdown()
    assert report.to_text().splitlines()[0].split() == ["Cramér's", "V", *TASK_NAMES]

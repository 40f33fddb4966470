import itertools

import numpy as np
import pytest

from edge_core import schema
from edge_core.cli import main
from edge_core.iq.sigmf_io import open_recording
from edge_core.synth.stream import DIFS, SIFS, StreamConfig, write_stream

SECONDS = 0.15


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    base = write_stream(tmp_path_factory.mktemp("st") / "s", SECONDS, seed=5, progress=False)
    return open_recording(f"{base}.sigmf-meta")


def _labels(a):
    return tuple(a[f"edge_tc:{t}"] for t in schema.TASK_NAMES)


def test_recording_is_cf32_at_20_msps_with_annotated_packets(rec):
    assert rec.sample_rate_hz == schema.SAMPLE_RATE_HZ
    assert rec.datatype == "cf32_le"
    assert rec.num_samples == round(SECONDS * schema.SAMPLE_RATE_HZ)
    assert len(rec.annotations) > 20
    for a in rec.annotations:
        schema.check_labels(*_labels(a))
        assert a["core:sample_count"] > 0


def test_packets_never_overlap_and_gaps_are_802_11_gaps(rec):
    ann = rec.annotations
    starts = [a["core:sample_start"] for a in ann]
    assert starts == sorted(starts)
    gaps = np.array([b["core:sample_start"] - (a["core:sample_start"] + a["core:sample_count"])
                     for a, b in itertools.pairwise(ann)])  # fmt: skip
    assert gaps.min() >= SIFS
    assert (gaps == SIFS).any()  # a frame and its response
    new_exchange = gaps[gaps != SIFS]
    assert new_exchange.min() >= DIFS


def test_responses_follow_their_frames(rec):
    ann = rec.annotations
    for a, b in itertools.pairwise(ann):
        gap = b["core:sample_start"] - (a["core:sample_start"] + a["core:sample_count"])
        if gap == SIFS and a["edge_tc:frame"] == "data":
            assert b["edge_tc:frame"] == "ctrl"
            assert b["edge_tc:subtype"] in {"ack", "block_ack"}


def test_packets_stand_out_of_the_noise(rec):
    x = next(rec.iter_chunks(rec.num_samples))[1]
    busy = np.zeros(x.size, bool)
    for a in rec.annotations:
        busy[a["core:sample_start"] : a["core:sample_start"] + a["core:sample_count"]] = True
    noise = np.mean(np.abs(x[~busy]) ** 2)
    errors = []
    for a in rec.annotations[:60]:
        s, n = a["core:sample_start"], a["core:sample_count"]
        measured = 10 * np.log10(np.mean(np.abs(x[s : s + n]) ** 2) / noise - 1 + 1e-12)
        errors.append(measured - a["edge_tc:snr_db"])
    # Multipath taps keep a white signal's power; DSSS (11 MHz wide) sees a few dB of
    # frequency-selective fading across its band, OFDM less.
    assert np.max(np.abs(errors)) < 5.0
    assert abs(np.median(errors)) < 1.0


def test_one_application_per_session_and_all_four_tasks_present(tmp_path):
    cfg = StreamConfig(apps=("netflix",), session_seconds=1.0)
    base = write_stream(tmp_path / "n", 0.15, seed=1, config=cfg, progress=False)
    ann = open_recording(base).annotations
    apps = {a["edge_tc:app"] for a in ann}
    assert apps == {"netflix", "none"}
    assert {a["edge_tc:frame"] for a in ann} >= {"ctrl", "data"}


def test_same_seed_same_bytes(tmp_path):
    a = write_stream(tmp_path / "a", 0.01, seed=9, progress=False)
    b = write_stream(tmp_path / "b", 0.01, seed=9, progress=False)
    assert (tmp_path / "a.sigmf-data").read_bytes() == (tmp_path / "b.sigmf-data").read_bytes()
    assert open_recording(a).annotations == open_recording(b).annotations


def test_cli_synth_stream(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", "stream", "--out", str(out), "--seconds", "0.01", "--seed", "2",
                 "--quiet"]) == 0  # fmt: skip
    assert (tmp_path / "cli.sigmf-meta").exists()
    assert main(["synth", "stream", "--out", str(out), "--seconds", "-1", "--quiet"]) == 2
    assert "seconds must be > 0" in capsys.readouterr().err


def test_application_traffic_comes_from_the_session_model(tmp_path):
    cfg = StreamConfig(apps=("youtube",), session_seconds=1.0, background_rate_hz=0.0)
    ann = open_recording(write_stream(tmp_path / "y", 0.3, seed=3, config=cfg, progress=False))
    data = [a for a in ann.annotations if a["edge_tc:frame"] == "data"]
    down = [a for a in data if a["edge_tc:station"] == "ap"]
    up = [a for a in data if a["edge_tc:station"] == "client"]
    assert down and up and {a["edge_tc:app"] for a in data} == {"youtube"}
    # Uplink: (aggregated) QUIC ACKs of 60-80 B IP and HTTP/3 requests; downlink: A-MPDUs of
    # 1378 B QUIC packets.
    assert np.median([a["edge_tc:length_bytes"] for a in up]) < 1378
    assert max(a["edge_tc:length_bytes"] for a in down) > 2 * (1378 + 54)
    assert (
        max(a["edge_tc:length_bytes"] for a in up)
        < max(a["edge_tc:length_bytes"] for a in down) / 2
    )

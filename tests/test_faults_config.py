"""Hostile configs, manifests and recordings (issue 14, points 6-8): `check-config` and `run`
agree on every value, report every problem at once, and never print a traceback for bad input
(exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import UniformEngine

from edge_core.cli import main

BUNDLE = Path(__file__).resolve().parents[1] / "models" / "default"
needs_bundle = pytest.mark.skipif(not (BUNDLE / "manifest.json").is_file(),
                                  reason="models/default not exported")  # fmt: skip


def write(tmp_path: Path, text: str, bundle: Path = BUNDLE) -> Path:
    path = tmp_path / "edge-tc.toml"
    path.write_text(f'bundle = "{bundle}"\n' + text)
    return path


def check(path: Path, capsys) -> tuple[int, str]:
    code = main(["check-config", str(path)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return code, out.err + out.out


@needs_bundle
def test_integers_beyond_a_c_int_are_refused_by_check_config(tmp_path, capsys):
    path = write(tmp_path, '[source]\ntype = "zmq"\nrcvhwm = 3000000000\n'
                 'reconnect_ivl_ms = 2147483648\n[publisher]\nsndhwm = 9999999999\n')  # fmt: skip
    code, err = check(path, capsys)
    assert code == 2, err
    for key in ("source.rcvhwm", "source.reconnect_ivl_ms", "publisher.sndhwm"):
        assert f"{key}: want at most 2147483647" in err, err


@needs_bundle
def test_a_queue_larger_than_memory_is_refused(tmp_path, capsys):
    path = write(tmp_path, '[source]\ntype = "zmq"\n[batcher]\nqueue_size = 1000000000000\n')
    code, err = check(path, capsys)
    assert code == 2 and "batcher.queue_size:" in err and "GiB" in err, err


def test_every_problem_of_a_section_is_reported_at_once(tmp_path, capsys):
    path = write(tmp_path, '[source]\ntype = "zmq"\nrcvhwm = "many"\nreconnect_ivl_ms = 0\n'
                 '[assembler]\nwindow_samples = 0\nnoise_floor_alpha = 5.0\n'
                 'stf_min_correlation = 2.0\n')  # fmt: skip
    code, err = check(path, capsys)
    assert code == 2
    for key in ("source.rcvhwm", "source.reconnect_ivl_ms", "assembler.window_samples",
                "assembler.noise_floor_alpha", "assembler.stf_min_correlation"):  # fmt: skip
        assert f"{key}:" in err, (key, err)


@needs_bundle
def test_a_missing_curve_key_file_is_caught_by_check_config(tmp_path, capsys):
    path = write(tmp_path, '[source]\ntype = "zmq"\n[publisher]\n'
                 f'curve_secret_key_file = "{tmp_path}/nope.key_secret"\n'
                 f'curve_authorized_keys_dir = "{tmp_path}/nokeys"\n')  # fmt: skip
    code, err = check(path, capsys)
    assert code == 2
    assert (
        "publisher.curve_secret_key_file:" in err and "publisher.curve_authorized_keys_dir:" in err
    )


def deep_toml(depth: int) -> str:
    return "x = " + "[" * depth + "]" * depth + "\n"


def test_deeply_nested_config_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "deep.toml"
    path.write_text(deep_toml(100_000))
    code, err = check(path, capsys)
    assert code == 2 and "nested" in err, err
    assert main(["run", "--config", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_deeply_nested_manifest_is_a_clear_error(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    code, err = check(write(tmp_path, '[source]\ntype = "zmq"\n', bundle), capsys)
    assert code == 2 and "bundle:" in err and "nested" in err, err


def test_deeply_nested_sigmf_meta_is_a_clear_error(tmp_path):
    from edge_core.errors import EdgeTcError
    from edge_core.iq import sigmf_io

    meta = tmp_path / "rec.sigmf-meta"
    meta.write_text('{"global": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (tmp_path / "rec.sigmf-data").write_bytes(b"\x00" * 64)
    with pytest.raises(EdgeTcError, match="nested"):
        sigmf_io.open_recording(meta)


@needs_bundle
@pytest.mark.parametrize("meta", ["{not json", '{"global": {}, "captures": [], "annotations": []}'])
def test_a_malformed_sigmf_recording_is_a_clear_error_not_retried(tmp_path, capsys, meta):
    (tmp_path / "rec.sigmf-meta").write_text(meta)
    (tmp_path / "rec.sigmf-data").write_bytes(b"\x00" * 64)
    path = write(tmp_path, f'[source]\ntype = "sigmf"\npath = "{tmp_path}/rec"\n')
    code, err = check(path, capsys)
    assert code == 2 and "source.path:" in err and "rec.sigmf-meta" in err, err
    assert main(["run", "--config", str(path), "--duration", "2"]) == 2
    err = capsys.readouterr().err
    assert "source.path:" in err and "Traceback" not in err, err


def test_a_recording_that_turns_malformed_stops_the_daemon_instead_of_retrying(tmp_path):
    from edge_core.errors import IQFormatError
    from edge_daemon.config import DaemonConfig
    from edge_daemon.pipeline import Daemon
    from edge_daemon.sources.base import NullEvents
    from edge_daemon.sources.sigmf import SigMFSource, SigMFSourceConfig

    (tmp_path / "rec.sigmf-meta").write_text("{not json")
    config = DaemonConfig.from_dict(
        {"source": {"type": "sigmf", "path": str(tmp_path / "rec")}, "packet_gain": "unit_rms",
         "publisher": {"bind": "tcp://127.0.0.1:*"}, "metrics": {"enabled": False},
         "power": {"type": "none"}}, "",
    )  # fmt: skip
    assert isinstance(config.source, SigMFSourceConfig)
    with pytest.raises(IQFormatError):
        SigMFSource(config.source, NullEvents()).open()
    daemon = Daemon(config, engine_factory=UniformEngine)  # type: ignore[arg-type]
    daemon.start()
    try:
        assert daemon.stop_event.wait(10), "the daemon kept retrying a malformed recording"
    finally:
        daemon.stop()
    assert daemon.failure is not None and "rec.sigmf-meta" in daemon.failure

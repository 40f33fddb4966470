"""Hostile configs, manifests and recordings (issue 14, points 6-8): `check-config` and `run`
agree on every value, report every problem at once, and never print a traceback for bad input
(exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

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

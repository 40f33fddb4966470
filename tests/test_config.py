"""Daemon config: TOML validated up front, every problem with its key path, CLI overrides."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from edge_core.cli import main
from edge_core.typed_config import ConfigProblems, TypedConfig
from edge_daemon.config import (
    DaemonConfig,
    apply_overrides,
    file_problems,
    load_config,
    parse_override,
)
from edge_daemon.power import PowerConfig
from edge_daemon.sources.base import source_backends
from engines.base import backends

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "edge-tc.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge-tc.toml"
    path.write_text(text)
    return path


def problems_of(path: Path, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(ConfigProblems) as err:
        load_config(path, overrides)
    return err.value.problems


def test_example_loads_and_matches_the_defaults():
    config = load_config(EXAMPLE)
    assert config.source is not None and config.source.type == "zmq"
    assert Path(config.bundle) == EXAMPLE.parent / "../models/default"
    defaults = DaemonConfig(source=config.source)
    names = [f.name for f in dataclasses.fields(DaemonConfig) if f.name not in ("source", "bundle")]
    for name in names:
        assert getattr(config, name) == getattr(defaults, name), name


def documented_keys(text: str) -> set[str]:
    """Keys set or shown commented out (`# key = ...`) in the example."""
    return set(re.findall(r"^(?:# )?([a-z_]+) = ", text, flags=re.MULTILINE))


def keys_of(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_example_documents_every_key():
    text = EXAMPLE.read_text()
    shown = documented_keys(text)
    sections = {f.name for f in dataclasses.fields(DaemonConfig)}
    table_sections = {"source", "assembler", "engine", "batcher", "publisher", "metrics", "power"}
    assert sections - table_sections <= shown
    for section in table_sections:
        assert f"[{section}]" in text
    config = DaemonConfig(source=None)
    for name in ("batcher", "publisher", "metrics"):
        assert keys_of(type(getattr(config, name))) <= shown, name
    assert keys_of(PowerConfig) <= shown
    assert keys_of(type(config.assembler)) - {"sample_rate_hz"} <= shown
    for key, backend in source_backends().items():
        missing = keys_of(backend.config) - shown
        assert not missing, f"source {key}: {missing} not documented"
        assert f'type = "{key}"' in text
    for key, backend in backends().items():
        missing = keys_of(backend.config) - shown
        assert not missing, f"engine {key}: {missing} not documented"
        assert f'type = "{key}"' in text


def test_every_problem_is_reported_with_its_key_path(tmp_path):
    path = write(tmp_path, """
bundle = 3
log_level = "loud"
drain_timeout_s = -1.0
colour = "blue"
[source]
type = "synthetic"
traffic_scale = "high"
[engine]
type = "onnxruntime"
precision = "fp8"
[assembler]
threshold_db = "5"
[batcher]
max_batch = 0
queue_size = 4
[publisher]
topics = ["phy", "mac"]
[metrics]
port = 70000
""")  # fmt: skip
    got = problems_of(path)
    expected = [
        "bundle: want a string",
        "log_level: 'loud' is not one of",
        "colour: unknown key",
        "source.traffic_scale: want a number",
        "engine.precision: 'fp8' is not one of",
        "assembler.threshold_db: want a number",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in got), (start, got)


def test_impossible_values_once_the_types_are_right(tmp_path):
    path = write(tmp_path, """
drain_timeout_s = -1.0
engine_reload_after_failures = 0
[source]
type = "synthetic"
[batcher]
max_batch = 0
queue_size = 4
[publisher]
topics = ["phy", "mac"]
[metrics]
port = 70000
[assembler]
end_threshold_db = 9.0
""")  # fmt: skip
    got = problems_of(path)
    for start in (
        "drain_timeout_s: want 0..60",
        "engine_reload_after_failures: want >= 1",
        "batcher.max_batch: want >= 1",
        "publisher.topics[1]: 'mac' is not one of",
        "metrics.port: want 0..65535",
        "assembler.end_threshold_db: must be <= threshold_db",
    ):
        assert any(p.startswith(start) for p in got), (start, got)


def test_missing_source_and_unknown_types(tmp_path):
    got = problems_of(write(tmp_path, '[engine]\ntype = "openvino"\n'))
    assert any(p.startswith("source: missing") for p in got)
    assert any(p.startswith("engine.type: 'openvino' is not one of") for p in got)
    got = problems_of(write(tmp_path, '[source]\ntype = "hackrf"\n'))
    assert got[0].startswith("source.type: 'hackrf' is not one of")


def test_not_toml_and_no_file(tmp_path):
    got = problems_of(write(tmp_path, "[source\n"))
    assert "not valid TOML" in got[0] and "line 1" in got[0]
    got = problems_of(tmp_path / "nope.toml")
    assert got == [f"{tmp_path / 'nope.toml'}: no such file"]


@pytest.mark.parametrize(
    ("item", "keys", "value"),
    [
        ("batcher.max_batch=16", ["batcher", "max_batch"], 16),
        ("metrics.enabled=false", ["metrics", "enabled"], False),
        ('publisher.topics=["all", "phy"]', ["publisher", "topics"], ["all", "phy"]),
        ("bundle=models/other", ["bundle"], "models/other"),
        ('log_level="debug"', ["log_level"], "debug"),
        ("source.snr_db=[0.5, 9]", ["source", "snr_db"], [0.5, 9]),
    ],
)
def test_override_values_are_toml_or_bare_strings(item, keys, value):
    assert parse_override(item) == (keys, value)


def test_overrides_apply_and_a_new_type_starts_a_fresh_table():
    base = {"source": {"type": "sigmf", "path": "x.sigmf-meta"}, "batcher": {"max_batch": 8}}
    out = apply_overrides(base, ["batcher.max_batch=4", "source.type=synthetic", "source.seed=3"])
    assert out == {"source": {"type": "synthetic", "seed": 3}, "batcher": {"max_batch": 4}}
    assert base["batcher"]["max_batch"] == 8  # the input is not changed
    with pytest.raises(ConfigProblems, match=r"want KEY\.PATH=VALUE"):
        apply_overrides(base, ["batcher"])
    with pytest.raises(ConfigProblems, match=r"batcher\.max_batch is not a table"):
        apply_overrides(base, ["batcher.max_batch.x=1"])


def test_overridden_values_are_validated_too(tmp_path):
    path = write(tmp_path, '[source]\ntype = "synthetic"\n')
    got = problems_of(path, ("batcher.max_batch=many", "publisher.nope=1"))
    assert any(p.startswith("batcher.max_batch: want an integer, got 'many'") for p in got)
    assert "publisher.nope: unknown key" in got


def test_relative_bundle_is_relative_to_the_file_unless_given_on_the_command_line(tmp_path):
    path = write(tmp_path, 'bundle = "b"\n[source]\ntype = "synthetic"\n')
    assert load_config(path).bundle == str(tmp_path / "b")
    assert load_config(path, ["bundle=elsewhere"]).bundle == "elsewhere"


def test_relative_sigmf_path_is_relative_to_the_file_unless_given_on_the_command_line(tmp_path):
    path = write(tmp_path, 'bundle = "b"\n[source]\ntype = "sigmf"\npath = "rec/x"\n')
    assert load_config(path).source.path == str(tmp_path / "rec" / "x")
    assert load_config(path, ["source.path=y"]).source.path == "y"
    absolute = write(tmp_path, 'bundle = "b"\n[source]\ntype = "sigmf"\npath = "/data/x"\n')
    assert load_config(absolute).source.path == "/data/x"


def test_check_config_cli(tmp_path, capsys, tiny_bundle):
    bad = write(tmp_path, 'log_level = 1\n[source]\ntype = "synthetic"\nseed = "x"\n')
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert (
        "2 problem(s)" in err and "log_level: 1 is not one of" in err and "source.seed: want" in err
    )
    good = tmp_path / "good.toml"
    good.write_text(f'bundle = "{tiny_bundle.directory}"\n[source]\ntype = "synthetic"\n')
    assert main(["check-config", str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: OK"
    nobundle = tmp_path / "nobundle.toml"
    nobundle.write_text(f'bundle = "{tmp_path}"\n[source]\ntype = "synthetic"\n')
    assert main(["check-config", str(nobundle)]) == 2
    assert "has no manifest.json" in capsys.readouterr().err


def test_file_problems_want_a_bundle(tmp_path):
    config = DaemonConfig(source=None)
    assert file_problems(config) == ["bundle: missing (a model bundle directory)"]


def test_sections_are_typed_configs():
    config = DaemonConfig(source=None)
    for name in ("batcher", "publisher", "metrics", "power", "engine"):
        assert isinstance(getattr(config, name), TypedConfig)

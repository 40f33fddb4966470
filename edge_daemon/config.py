"""The daemon's configuration: one TOML file, validated up front, every problem at once.

Sections (each documented key by key in `deploy/edge-tc.example.toml`)::

    bundle = "models/default"      # relative paths are relative to the config file
    [source]     type = "zmq" | "soapysdr" | "sigmf" | "synthetic", then that source's keys
    [assembler]  packet detector settings (`AssemblerConfig`, less the sample rate: the source's)
    [engine]     type = "onnxruntime" | "tflite" | "tensorrt", then that engine's keys
    [batcher]    max_batch, max_queue_delay_ms, queue_size, drop_policy
    [publisher]  bind, format, topics, sndhwm
    [metrics]    enabled, addr, port
    [power]      which power meter (auto-detected by default)

`load_config(path, overrides)` reads the file, applies `--set key.path=value` overrides (values
parsed as TOML, bare words taken as strings) and raises `ConfigProblems` listing each problem as
'key.path: message': unknown keys, wrong types, missing keys and impossible values, in every
section, together.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_core.assembler import AssemblerConfig
from edge_core.bundle import MANIFEST_NAME, load_manifest
from edge_core.errors import ConfigError, ModelError
from edge_core.typed_config import ConfigProblems, TypedConfig, load_nested
from edge_daemon.batcher import BatcherConfig
from edge_daemon.metrics import MetricsConfig
from edge_daemon.power import PowerConfig
from edge_daemon.publisher import PublisherConfig
from edge_daemon.sources.base import SourceConfig, source_config_from_dict
from edge_daemon.tuning import check_cpus
from engines.base import EngineConfig, config_from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

LOG_LEVELS = ("debug", "info", "warning", "error")
QUEUED_PACKET_BYTES = 25_800
"""Memory of one queued packet: its (2, 3000) float32 model input and the bookkeeping."""
MAX_QUEUE_BYTES = 4 * 2**30
"""The most a full `batcher.queue_size` may take (an edge device has a few GiB in all)."""
PacketGain = Literal["bundle", "unit_rms", "none"]
"""How packets are scaled before the engine (`pipeline.packets_to_batch`)."""


def _default_engine() -> EngineConfig:
    return config_from_dict({"type": "onnxruntime"})


_ASSEMBLER_KEYS = tuple(
    f.name for f in dataclasses.fields(AssemblerConfig) if f.name != "sample_rate_hz"
)


def _assembler_table_class() -> type[TypedConfig]:
    """A TypedConfig with AssemblerConfig's fields (less the sample rate), so the `[assembler]`
    table is type-checked key by key; AssemblerConfig's own checks then find impossible values."""
    specs = [
        (f.name, f.type, field(default=f.default))
        for f in dataclasses.fields(AssemblerConfig)
        if f.name in _ASSEMBLER_KEYS
    ]
    return dataclasses.make_dataclass(
        "AssemblerTable",
        specs,
        bases=(TypedConfig,),
        frozen=True,
        namespace={"section": "assembler"},
    )


_AssemblerTable = _assembler_table_class()


def assembler_config_from_dict(data: Any, path: str = "assembler") -> AssemblerConfig:
    """The `[assembler]` table as an AssemblerConfig; ConfigProblems names each bad key."""
    table = _AssemblerTable.from_dict(data, path)
    values = {k: getattr(table, k) for k in _ASSEMBLER_KEYS}
    try:
        return AssemblerConfig(**values)
    except ConfigProblems as exc:  # "assembler.<key>: why", every impossible value
        raise ConfigProblems(
            [p.replace("assembler.", f"{path}.", 1) for p in exc.problems]
        ) from None
    except ConfigError as exc:
        raise ConfigProblems([str(exc).replace("assembler.", f"{path}.", 1)]) from None


@dataclass(frozen=True)
class DaemonConfig(TypedConfig):
    """The whole daemon config; see the module docstring. `source` is required."""

    source: SourceConfig | None = None
    assembler: AssemblerConfig = field(default_factory=AssemblerConfig)
    engine: EngineConfig = field(default_factory=_default_engine)
    bundle: str = ""
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    publisher: PublisherConfig = field(default_factory=PublisherConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    power: PowerConfig = field(default_factory=PowerConfig)
    packet_gain: PacketGain = "bundle"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    drain_timeout_s: float = 2.0
    engine_reload_after_failures: int = 3
    source_reopen_max_s: float = 5.0
    source_cpus: tuple[int, ...] = ()
    worker_cpus: tuple[int, ...] = ()
    publisher_cpus: tuple[int, ...] = ()
    realtime_priority: int = 0
    switch_interval_ms: float = 0.5
    fusion: bool = True
    ingest: Literal["thread", "process"] = "process"
    """Where the source side (read, packet assembly, model inputs) runs: a thread of the daemon,
    or a process of its own that keeps its GIL time off the worker and publisher
    (edge_daemon/ingest.py; docs/daemon.md, "Threads and processes")."""
    """Use the bundle's fusion stage (edge_core/fusion.py) for the tasks it fuses, if it has one."""

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not 0 <= self.switch_interval_ms <= 100:
            out.append(
                ("switch_interval_ms", f"want 0..100 ms (0: Python's own, 5), got "
                 f"{self.switch_interval_ms}")
            )  # fmt: skip
        for key in ("source_cpus", "worker_cpus", "publisher_cpus"):
            why = check_cpus(key, getattr(self, key))
            if why is not None:
                out.append((key, why.split(": ", 1)[1]))
        if not 0 <= self.realtime_priority <= 99:
            out.append(
                ("realtime_priority", f"want 0 (off) or 1..99, got {self.realtime_priority}")
            )
        if not 0 <= self.drain_timeout_s <= 60:
            out.append(("drain_timeout_s", f"want 0..60 s, got {self.drain_timeout_s}"))
        if self.engine_reload_after_failures < 1:
            out.append(
                (
                    "engine_reload_after_failures",
                    f"want >= 1, got {self.engine_reload_after_failures}",
                )
            )
        if not 0 < self.source_reopen_max_s <= 600:
            out.append(("source_reopen_max_s", f"want 0..600 s, got {self.source_reopen_max_s}"))
        need = self.batcher.queue_size * QUEUED_PACKET_BYTES
        if need > MAX_QUEUE_BYTES:
            out.append((
                "batcher.queue_size",
                f"{self.batcher.queue_size} queued packets need about {need / 2**30:.1f} GiB "
                f"(about {QUEUED_PACKET_BYTES / 1e3:.1f} KB each); want at most "
                f"{MAX_QUEUE_BYTES // QUEUED_PACKET_BYTES} ({MAX_QUEUE_BYTES / 2**30:.0f} GiB)",
            ))  # fmt: skip
        return out

    @classmethod
    def _collect(cls, data: Any, path: str) -> tuple[list[str], Any]:
        """Sections chosen by their `type` key (source, engine) and the assembler are validated
        by their own parsers; the rest by the TypedConfig rules. Every problem is kept."""
        if not isinstance(data, Mapping):
            return [f"{path or 'config'}: want a table, got {type(data).__name__}"], None
        rest = dict(data)
        problems: list[str] = []
        parsed: dict[str, Any] = {}
        parsers = {
            "source": source_config_from_dict,
            "engine": config_from_dict,
            "assembler": assembler_config_from_dict,
        }
        for key, parse in parsers.items():
            if key in rest:
                try:
                    parsed[key] = parse(rest.pop(key), key)
                except ConfigProblems as exc:
                    problems += exc.problems
        if "source" not in data:
            problems.append("source: missing (a [source] table with a type)")
        # Top-level values are checked apart from the sub-tables too, so that an impossible
        # top-level value is reported even when a sub-table has problems of its own.
        scalars = {k: v for k, v in rest.items() if not isinstance(v, Mapping)}
        scalar_problems = super()._collect(scalars, path)[0]
        base_problems, config = super()._collect(rest, path)
        problems += scalar_problems + [p for p in base_problems if p not in scalar_problems]
        if problems or config is None:
            return problems, None
        return [], dataclasses.replace(config, **parsed)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        assembler = {k: getattr(self.assembler, k) for k in _ASSEMBLER_KEYS}
        out["assembler"] = {k: v for k, v in assembler.items() if v is not None}
        return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value): the value as TOML (`3`, `true`, `"x"`,
    `[1, 2]`), or the bare text as a string when it is not TOML (`--set bundle=models/x`)."""
    key, sep, raw = item.partition("=")
    keys = [k.strip() for k in key.split(".")]
    if not sep or not all(keys):
        raise ConfigProblems([f"--set {item!r}: want KEY.PATH=VALUE"])
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of the raw table with each `--set` override applied (later ones win)."""
    out = _deep_copy(data)
    for item in overrides:
        keys, value = parse_override(item)
        table = out
        for depth, key in enumerate(keys[:-1]):
            nxt = table.setdefault(key, {})
            if not isinstance(nxt, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigProblems([f"--set {item!r}: {where} is not a table"])
            table = nxt
        if keys[-1] == "type" and table.get("type") not in (None, value):
            table.clear()  # another backend: the old one's keys do not apply
        table[keys[-1]] = value
    return out


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def read_toml(path: str | Path) -> dict[str, Any]:
    """The TOML file as a table; ConfigProblems (with the parser's line and column) if not TOML."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read()
        return load_nested(lambda: tomllib.loads(data.decode("utf-8")), str(path))
    except FileNotFoundError:
        raise ConfigProblems([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigProblems([f"{path}: a directory, not a config file"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigProblems([f"{path}: not UTF-8 text: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigProblems([f"{path}: not valid TOML: {exc}"]) from None
    except ValueError as exc:  # nested too deeply
        raise ConfigProblems([str(exc)]) from None


def load_config(
    path: str | Path | None, overrides: Sequence[str] = (), base: Mapping[str, Any] | None = None
) -> DaemonConfig:
    """Read, override and validate; relative `bundle` and `source.path` paths in the file resolve
    against the file's folder (given on the command line, against the working directory).

    `base`: the table to start from when there is no file (`run --demo`).
    """
    raw = read_toml(path) if path is not None else _deep_copy(base or {})
    config = DaemonConfig.from_dict(apply_overrides(raw, overrides), "")
    from_file = path is not None and "bundle" in raw
    overridden = any(parse_override(item)[0] == ["bundle"] for item in overrides)
    if from_file and not overridden and config.bundle and not Path(config.bundle).is_absolute():
        assert path is not None
        config = dataclasses.replace(config, bundle=str(Path(path).parent / config.bundle))
    # the same for a source that reads a file (sigmf's `path`)
    source = config.source
    source_path = getattr(source, "path", None)
    in_file = isinstance(raw.get("source"), Mapping) and "path" in raw["source"]
    path_overridden = any(parse_override(item)[0] == ["source", "path"] for item in overrides)
    if (
        path is not None and source is not None and in_file and not path_overridden
        and isinstance(source_path, str) and source_path and not Path(source_path).is_absolute()
    ):  # fmt: skip
        resolved = dataclasses.replace(source, **{"path": str(Path(path).parent / source_path)})
        config = dataclasses.replace(config, source=resolved)
    return config


def file_problems(config: DaemonConfig) -> list[str]:
    """What the file system says about the config, every problem: the bundle must be a bundle
    directory (manifest keys and every file's sha256, as `run` checks before loading), and the
    CurveZMQ key file and allow-list directory, when set, must be readable."""
    return _bundle_problems(config) + _curve_problems(config) + _recording_problems(config)


def _recording_problems(config: DaemonConfig) -> list[str]:
    """A SigMF recording to replay must open (metadata, datatype, data size), as `run` needs:
    a malformed one is a config error (exit 2), never a source retried forever."""
    source = config.source
    path = getattr(source, "path", None)
    if source is None or source.type != "sigmf" or not isinstance(path, str) or not path:
        return []
    from edge_core.errors import EdgeTcError
    from edge_core.iq.sigmf_io import open_recording

    try:
        open_recording(path)
    except EdgeTcError as exc:
        return [f"source.path: {exc}"]
    return []


def _bundle_problems(config: DaemonConfig) -> list[str]:
    if not config.bundle:
        return ["bundle: missing (a model bundle directory)"]
    manifest = Path(config.bundle) / MANIFEST_NAME
    if not manifest.is_file():
        return [f"bundle: {config.bundle!r} has no {MANIFEST_NAME} (not a model bundle)"]
    try:
        bundle = load_manifest(config.bundle)
        if config.fusion and bundle.fusion is not None:
            from edge_core.fusion import load_fusion

            load_fusion(bundle.fusion, bundle.tasks)
    except ModelError as exc:
        return [f"bundle: {exc}"]
    return []


def _curve_problems(config: DaemonConfig) -> list[str]:
    p = config.publisher
    out = []
    if p.curve_secret_key_file:
        key = Path(p.curve_secret_key_file)
        if not key.is_file():
            out.append(f"publisher.curve_secret_key_file: {key} does not exist or is no file")
        else:
            try:
                key.read_bytes()
            except OSError as exc:
                out.append(f"publisher.curve_secret_key_file: cannot read {key}: {exc}")
    if p.curve_authorized_keys_dir and not Path(p.curve_authorized_keys_dir).is_dir():
        out.append(
            f"publisher.curve_authorized_keys_dir: {p.curve_authorized_keys_dir} is no directory"
        )
    return out


__all__ = [
    "LOG_LEVELS",
    "BatcherConfig",
    "DaemonConfig",
    "MetricsConfig",
    "PacketGain",
    "PublisherConfig",
    "apply_overrides",
    "assembler_config_from_dict",
    "file_problems",
    "load_config",
    "parse_override",
    "read_toml",
]

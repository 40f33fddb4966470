"""Shared fixtures: one tiny exported model bundle per test session (engines, bench).

A narrow mtl1d is fitted briefly on a few hundred synthetic packets and exported to ONNX FP32,
ONNX INT8 and TFLite INT8 by `train.export.export_bundle`, so engines are tested on the files
the exporter really writes. The INT8 agreement bar is lowered: a briefly fitted model is not
confident enough for the 97 % bar, and engine tests compare each engine with the exporter's own
reference runner, not with a quality goal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

BUNDLE_PACKETS = 160


@dataclass(frozen=True)
class TinyBundle:
    """The bundle directory, its dataset, the fitted PyTorch model and packets in memory."""

    directory: Path
    data: Path
    model: object
    x: np.ndarray
    labels: dict[str, np.ndarray]


def _fit(torch, model, x, labels, epochs: int) -> None:
    from edge_core.schema import TASK_NAMES

    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for epoch in range(epochs):
        model.train()
        order = np.random.default_rng(epoch).permutation(len(x))
        for start in range(0, len(order), 32):
            b = order[start : start + 32]
            out = model(torch.from_numpy(x[b]))
            loss = sum(
                torch.nn.functional.cross_entropy(out[t], torch.from_numpy(labels[t][b]))
                for t in TASK_NAMES
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def build_tiny_bundle(root: Path, spec_kwargs: dict, tasks: list[str] | None = None,
                      formats: tuple[str, ...] = ("onnx-fp32", "onnx-int8", "tflite-int8"),
                      epochs: int = 6, data: Path | None = None) -> TinyBundle:  # fmt: skip
    """Fit and export a small model (mtl1d, or stl1d for one task) into `root / 'bundle'`."""
    torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
    from edge_core.synth.dataset import write_dataset
    from train import export as ex
    from train.checkpoint import ModelSpec, save_checkpoint
    from train.data import PacketDataset

    if data is None:
        data = write_dataset(root / "data", BUNDLE_PACKETS, seed=11, workers=1, progress=False)
    packets = ex.gather_packets(PacketDataset(data), range(BUNDLE_PACKETS))
    name = "mtl1d" if tasks is None else "stl1d"
    spec = ModelSpec(name, spec_kwargs)
    torch.manual_seed(0)
    model = spec.build()
    if tasks is None:
        _fit(torch, model, packets.x, packets.labels, epochs)
    else:
        model.eval()  # an STL model only times inference: untrained is fine
    checkpoint = root / "best.pt"
    save_checkpoint(checkpoint, model, spec, {"tasks": list(tasks or []), "epoch": epochs})
    out = ex.export_bundle(
        checkpoint,
        root / "bundle",
        formats=formats,
        calib_ds=PacketDataset(data),
        heldout_ds=PacketDataset(data),
        data_description={"generator": "synthetic", "seed": 11, "packets": BUNDLE_PACKETS},
        calib_packets=48,
        heldout_packets=96,
        agreement_required={"int8": 0.5},
    )
    return TinyBundle(out, data, model, packets.x, packets.labels)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> TinyBundle:
    """mtl1d (conv 4x4, heads [16]) exported to onnx-fp32, onnx-int8 and tflite-int8."""
    root = tmp_path_factory.mktemp("tiny_bundle")
    kwargs = {"conv_widths": [4, 4, 4, 4], "head_widths": [16], "dropout": 0}
    return build_tiny_bundle(root, kwargs)


def offline_labels(bundle_dir, packets) -> list[dict[str, int]]:
    """What the daemon publishes for `packets` (assembler Packets), computed offline: the
    bundle's ONNX engine, then its fusion stage when it has one."""
    from edge_core.bundle import load_manifest
    from edge_core.fusion import load_fusion
    from edge_daemon.pipeline import packets_to_batch
    from engines.base import load

    batch = packets_to_batch(packets)
    with load(bundle_dir, {"type": "onnxruntime", "threads": 1}) as engine:
        probs = engine.infer(batch)
    fusion_file = load_manifest(bundle_dir).fusion
    if fusion_file is not None:
        fusion = load_fusion(fusion_file, tuple(probs))
        lengths = np.array([p.end_sample - p.start_sample for p in packets])
        probs = fusion.apply(probs, batch, lengths)
    return [{t: int(probs[t][i].argmax()) for t in probs} for i in range(len(packets))]


def load_tool(name: str):
    """tools/<name>.py as a module (tools/ is scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class UniformEngine:
    """What the daemon needs of an Engine, answering uniform probabilities for every task: for
    tests of the data path, where the model is not under test."""

    from engines.base import EngineInfo, InputSpec

    info = EngineInfo("stub", "fp32", "cpu", "none", "none", 1)
    input_spec = InputSpec("x", "NCW", ("n", 2, 3000), "float32", 64, False)

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        from edge_core.schema import TASKS

        return {t.name: np.full((len(x), t.num_classes), 1 / t.num_classes, np.float32)
                for t in TASKS}  # fmt: skip

    def warmup(self, batch: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def daemon_config_file(tmp_path: Path, bundle: Path, source: str) -> Path:
    """A daemon config file: `bundle` on ONNX Runtime (one thread), the `[source]` table's
    body `source`, publisher and metrics on free ports, no power meter."""
    path = tmp_path / "edge-tc.toml"
    path.write_text(f"""
bundle = "{bundle}"
drain_timeout_s = 2.0
[source]
{source}
[engine]
type = "onnxruntime"
threads = 1
[publisher]
bind = "tcp://127.0.0.1:*"
[metrics]
port = 0
[power]
type = "none"
""")  # fmt: skip
    return path

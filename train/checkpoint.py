"""Checkpoints: a model's architecture (`ModelSpec`) together with its weights, no pickled code.

A checkpoint is one `torch.save` of plain containers and tensors, loaded with
`weights_only=True`, so opening one never executes code. The spec is what `build_model` needs
to rebuild the (possibly pruned) architecture: widths travel in `kwargs`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_core.errors import ModelError
from train.models import build_model

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class ModelSpec:
    """`build_model(name, **kwargs)`; kwargs are JSON values (lists, not tuples, after a load)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        return build_model(self.name, **self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": _jsonable(self.kwargs)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "spec") -> ModelSpec:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise ModelError(f"{where}: want {{'name': str, 'kwargs': dict}}, got {d!r}")
        kwargs = d.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise ModelError(f"{where}.kwargs: want a dict, got {type(kwargs).__name__}")
        return cls(d["name"], dict(kwargs))


def _jsonable(value: Any) -> Any:
    """Tuples to lists, recursively, so a spec survives JSON and `weights_only` loads alike."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"model spec value {value!r} is not JSON-serialisable")


def save_checkpoint(
    path: str | Path, model: nn.Module, spec: ModelSpec, extra: dict[str, Any] | None = None
) -> None:
    """Write `model`'s state dict with its spec and JSON-able `extra` (epoch, metrics, ...)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "spec_json": json.dumps(spec.to_dict()),
        "extra_json": json.dumps(extra or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a truncated checkpoint


def load_checkpoint(path: str | Path) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """Rebuild the model of checkpoint `path` with its weights, in eval mode."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise ModelError(f"{path}: not a readable edge-tc checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelError(f"{path}: checkpoint format {got!r}, want {CHECKPOINT_FORMAT}")
    try:
        spec = ModelSpec.from_dict(json.loads(payload["spec_json"]), f"{path}: spec")
        extra = json.loads(payload["extra_json"])
        model = spec.build()
        model.load_state_dict(payload["state_dict"])
    except ModelError:
        raise
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ModelError(f"{path}: bad checkpoint: {exc}") from exc
    model.eval()
    return model, spec, extra

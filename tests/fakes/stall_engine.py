"""A plugin backend `stall` for the process-isolation tests: the real ONNX Runtime engine whose
model calls block forever once `stall_after` calls have run in this process (a hung runtime).

Importing the module registers the backend (`engines.base.register`), as a plugin does; the
isolated engine's worker imports it by the module that defined the backend's loader.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from edge_core.bundle import Bundle
from engines.base import Backend, Engine, EngineConfig, register
from engines.onnxruntime import OnnxRuntimeConfig, load_onnxruntime

KEY = "stall"


@dataclass(frozen=True)
class StallConfig(EngineConfig):
    """onnxruntime's engine, blocking every call after the first `stall_after` ones."""

    type: Literal["stall"] = "stall"
    stall_after: int = 1


class StallEngine(Engine):
    def __init__(self, inner: Engine, stall_after: int) -> None:
        super().__init__(inner.model, inner.tasks, inner.input_spec, inner.info)
        self._inner = inner
        self._left = stall_after

    def _invoke(self, x: np.ndarray) -> Mapping[str, np.ndarray]:
        if self._left <= 0:
            threading.Event().wait()  # hangs, as a wedged driver call does
        self._left -= 1
        return self._inner._invoke(x)

    def _release(self) -> None:
        self._inner.close()


def load_stall(bundle: Bundle, config: StallConfig) -> StallEngine:
    common = {f.name: getattr(config, f.name) for f in fields(EngineConfig) if f.name != "type"}
    inner = load_onnxruntime(bundle, OnnxRuntimeConfig(**common, threads=1))
    return StallEngine(inner, config.stall_after)


BACKEND = Backend(KEY, StallConfig, load_stall, "nothing (a test fake)", lambda b, t: [])
register(BACKEND)

"""Any engine in its own process (`engine.isolation = "process"`), behind the same contract.

A crash in a runtime (a TensorRT or Edge TPU delegate segfault, a Coral unplugged mid-call)
kills the worker process, not the daemon; a call that hangs misses its deadline. As Frigate runs
its detectors: the worker (`engines/worker.py`) owns the runtime; the daemon side
(`IsolatedEngine`) keeps the `Engine` contract, adapting layouts, quantizing, splitting and
dequantizing as every engine does, and hands each model call to the worker:

* the chunk goes through a shared-memory segment (`multiprocessing.shared_memory`), the raw
  outputs come back through another; only a short JSON request and answer cross the pipes;
* an answer that does not come within `engine.deadline_ms` kills the worker (SIGKILL) and fails
  the call; a worker that dies (SIGSEGV, SIGABRT, exit) fails the call it was running;
* the next call starts a new worker, after a back-off that doubles with each failure in a row
  (0.1 s up to `engine.restart_backoff_max_s`); calls made meanwhile fail at once, naming the
  cause and when the restart is due. A call that succeeds resets the back-off.

The daemon counts each failed call's packets as failed (its accounting does not change), and
its own rule (`engine_reload_after_failures`) still reloads the engine after failures in a row.

`python` (the `engine.worker_python` key): the worker's interpreter, e.g. JetPack 4.6's Python
3.6 for its TensorRT bindings; a runtime that is not the daemon's own package then runs
(`runtime="tensorrt-plan"`, `engines/trt_runtime.py`).
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping
from dataclasses import replace
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from edge_core.bundle import Bundle, BundleModel
from edge_core.errors import EdgeTcError, ModelError
from edge_core.schema import INPUT_LENGTH
from engines import worker as protocol
from engines.base import Engine, EngineConfig, EngineInfo, InputSpec, backends

log = logging.getLogger("edge_tc.engine")

WORKER = Path(protocol.__file__).resolve()
"""The worker's source file (the command line loads it by path, whatever the interpreter)."""
BACKOFF_START_S = 0.1
CLOSE_TIMEOUT_S = 2.0
_BOOTSTRAP = (
    "import importlib.util as u, sys; s = u.spec_from_file_location('edge_tc_worker', sys.argv[1]);"
    " m = u.module_from_spec(s); s.loader.exec_module(m); sys.exit(m.main(sys.argv[2:]))"
)


class EngineWorkerError(EdgeTcError):
    """The worker died, missed its deadline, or is waiting for its restart."""


class _Worker:
    """One worker process and its pipes: start, call with a deadline, kill, close."""

    def __init__(self, argv: list[str], env: dict[str, str], start_timeout_s: float) -> None:
        to_worker_r, self._to_worker = os.pipe()
        self._from_worker, from_worker_w = os.pipe()
        argv = [*argv, "--read-fd", str(to_worker_r), "--write-fd", str(from_worker_w)]
        try:
            self.process = subprocess.Popen(
                argv,
                pass_fds=(to_worker_r, from_worker_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a terminal's Ctrl-C is the daemon's to handle
            )
        except OSError as exc:
            for fd in (to_worker_r, from_worker_w, self._to_worker, self._from_worker):
                os.close(fd)
            raise EngineWorkerError(f"cannot start the engine worker {argv[0]}: {exc}") from exc
        os.close(to_worker_r)
        os.close(from_worker_w)
        self._pending = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._from_worker, selectors.EVENT_READ)
        self._closed = False
        try:
            hello = self.receive(start_timeout_s, "loading the engine")
        except BaseException:
            self.kill()
            raise
        if not hello.get("ok"):
            self.kill()
            # the runtime's own message, as in-process loading gives it; a bad model file stays
            # a ModelError (every other kind: EdgeTcError, an unavailable runtime, a bug)
            kind, message = hello.get("kind"), str(hello.get("error"))
            if kind == "ModelError":
                raise ModelError(message)
            raise EngineWorkerError(message if kind == "EdgeTcError" else f"{kind}: {message}")
        self.describe: dict[str, Any] = hello["describe"]

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: Mapping[str, Any]) -> None:
        try:
            protocol.send(self._to_worker, message)
        except OSError as exc:  # EPIPE: the worker is gone
            raise self._died(f"while sending a request ({exc})") from None

    def receive(self, timeout_s: float, doing: str) -> dict[str, Any]:
        """The next answer within `timeout_s`; EngineWorkerError if it died or is late."""
        deadline = time.monotonic() + timeout_s
        buffer, self._pending = self._pending, b""
        while True:
            answer, rest = protocol.split_message(buffer)
            if answer is not None:
                self._pending = rest
                return dict(answer)
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                self.kill()
                raise EngineWorkerError(
                    f"engine worker (pid {self.pid}) missed its deadline of "
                    f"{timeout_s * 1e3:.0f} ms {doing}; killed"
                )
            data = os.read(self._from_worker, protocol.READ_SIZE)
            if not data:
                raise self._died(doing)
            buffer += data

    def _died(self, doing: str) -> EngineWorkerError:
        try:
            code = self.process.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        self._close_fds()
        how = (
            f"killed by {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"exited with status {code}"
        )
        return EngineWorkerError(f"engine worker (pid {self.pid}) {how} {doing}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_fds()

    def close(self) -> None:
        """Ask the worker to release its runtime and exit; kill it if it does not."""
        if self.process.poll() is None and not self._closed:
            try:
                protocol.send(self._to_worker, {"op": "close"})
                self.process.wait(timeout=CLOSE_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def _close_fds(self) -> None:
        if not self._closed:
            self._closed = True
            self._selector.close()
            os.close(self._to_worker)
            os.close(self._from_worker)


def _segment_path(segment: shared_memory.SharedMemory) -> str:
    return f"/dev/shm/{segment.name.lstrip('/')}"


def _release_segments(segments: list[shared_memory.SharedMemory]) -> None:
    for segment in segments:
        segment.close()
        try:
            segment.unlink()
        except FileNotFoundError:
            pass
    segments.clear()


class IsolatedEngine(Engine):
    """An engine whose runtime lives in a worker process; see the module docstring.

    `argv`: the worker's command line (less its pipe descriptors); `model`: the bundle's model
    file the worker runs (from its first answer). `restarts` counts workers started after the
    first.
    """

    def __init__(
        self,
        bundle: Bundle,
        argv: list[str],
        env: dict[str, str],
        deadline_s: float,
        backoff_max_s: float,
        start_timeout_s: float,
    ) -> None:
        self._argv, self._env = argv, env
        self.deadline_s = deadline_s
        self.backoff_max_s = backoff_max_s
        self.start_timeout_s = start_timeout_s
        self.restarts = 0
        self._backoff_s = BACKOFF_START_S
        self._next_start = 0.0
        self._down_because = ""
        self._segments: list[shared_memory.SharedMemory] = []
        self._finalizer = weakref.finalize(self, _release_segments, self._segments)
        self._worker: _Worker | None = _Worker(argv, env, start_timeout_s)
        try:
            described = self._worker.describe
            # a plan built or cached by the worker stands for the bundle file it came from
            model = _bundle_model(bundle, described.get("bundle_model", described["model_file"]))
            spec = InputSpec(**{**described["input"], "shape": tuple(described["input"]["shape"])})
            info = EngineInfo(**described["info"])
            info = replace(info, device=f"{info.device}, worker process")
            super().__init__(model, described["tasks"], spec, info)
            self._make_segments()
            self._attach(self._worker)
        except BaseException:
            self._worker.kill()
            _release_segments(self._segments)
            raise

    @property
    def worker_pid(self) -> int | None:
        """The running worker's process id (None while it is down)."""
        return self._worker.pid if self._worker is not None else None

    # -- shared memory ---------------------------------------------------------------------------
    def _make_segments(self) -> None:
        spec, model = self.input_spec, self.model
        per_packet_in = 2 * INPUT_LENGTH * np.dtype(spec.dtype).itemsize
        per_packet_out = sum(
            int(np.prod([d for d in o.shape[1:] if isinstance(d, int)] or [1])) * 8
            for o in model.outputs.values()
        )
        in_bytes = spec.max_batch * per_packet_in
        out_bytes = spec.max_batch * per_packet_out + protocol.ALIGN * len(model.outputs)
        for size in (in_bytes, out_bytes):
            self._segments.append(shared_memory.SharedMemory(create=True, size=size))
        self._input = np.ndarray((self._segments[0].size,), np.uint8, buffer=self._segments[0].buf)

    def _attach(self, worker: _Worker) -> None:
        worker.send(
            {
                "op": "attach",
                "input": _segment_path(self._segments[0]),
                "output": _segment_path(self._segments[1]),
            }
        )
        answer = worker.receive(self.start_timeout_s, "mapping shared memory")
        if not answer.get("ok"):
            raise EngineWorkerError(f"engine worker: {answer.get('error')}")

    # -- calls -----------------------------------------------------------------------------------
    def _running_worker(self) -> _Worker:
        if self._worker is not None:
            return self._worker
        wait = self._next_start - time.monotonic()
        if wait > 0:
            raise EngineWorkerError(
                f"engine worker down ({self._down_because}); restart in {wait:.1f} s"
            )
        try:
            worker = _Worker(self._argv, self._env, self.start_timeout_s)
        except EdgeTcError as exc:
            self._down(str(exc))
            raise
        try:
            if worker.describe["model_file"] != self.info.model_file:
                raise ModelError(
                    f"restarted engine worker runs {worker.describe['model_file']}, "
                    f"not {self.info.model_file}"
                )
            self._attach(worker)
        except EdgeTcError as exc:
            worker.kill()
            self._down(str(exc))
            raise
        self.restarts += 1
        log.warning("engine worker restarted (pid %d, restart %d)", worker.pid, self.restarts)
        self._worker = worker
        return worker

    def _down(self, why: str) -> None:
        """The worker is gone: schedule the next start after the back-off, then double it."""
        self._worker = None
        self._down_because = why
        self._next_start = time.monotonic() + self._backoff_s
        log.error("%s; restarting it in %.1f s", why, self._backoff_s)
        self._backoff_s = min(2 * self._backoff_s, self.backoff_max_s)

    def _invoke(self, x: np.ndarray) -> Mapping[str, np.ndarray]:
        worker = self._running_worker()
        flat = x.reshape(-1).view(np.uint8)
        if flat.size > self._input.size:
            raise ValueError(
                f"a chunk of {flat.size} bytes exceeds the {self._input.size}-byte segment"
            )
        self._input[: flat.size] = flat
        try:
            worker.send({"op": "invoke", "shape": list(x.shape), "dtype": x.dtype.str})
            answer = worker.receive(self.deadline_s, f"on a batch of {len(x)}")
        except EngineWorkerError as exc:
            self._down(str(exc))
            raise
        if not answer.get("ok"):
            raise EdgeTcError(f"engine worker: {answer.get('error')}")
        self._backoff_s = BACKOFF_START_S
        out = self._segments[1].buf
        return {
            task: np.ndarray(tuple(shape), np.dtype(dtype), buffer=out, offset=offset).copy()
            for task, (offset, shape, dtype) in answer["outputs"].items()
        }

    def _release(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        self._input = np.zeros(0, np.uint8)  # drop the view before the segment closes
        _release_segments(self._segments)


def _bundle_model(bundle: Bundle, file_name: str) -> BundleModel:
    for m in bundle.models:
        if m.path.name == file_name:
            return m
    raise ModelError(f"{bundle.directory}: the engine worker runs {file_name!r}, not in the bundle")


def worker_env(extra_paths: list[str] | None = None) -> dict[str, str]:
    """The daemon's environment, with its import path (so plugins and tests resolve alike)."""
    env = dict(os.environ)
    paths = [p for p in (extra_paths or []) + sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def worker_argv(python: str, runtime: str, config: Mapping[str, Any], bundle: str = "",
                imports: tuple[str, ...] = ()) -> list[str]:  # fmt: skip
    """The worker's command line: `python -c BOOTSTRAP worker.py --runtime ... --config JSON`."""
    argv = [python, "-c", _BOOTSTRAP, str(WORKER), "--runtime", runtime]
    argv += ["--bundle", bundle, "--config", json.dumps(dict(config))]
    for name in imports:
        argv += ["--import", name]
    return argv


def load_isolated(bundle: Bundle, config: EngineConfig) -> IsolatedEngine:
    """The engine `config` describes, run by a worker process on this interpreter (or on
    `config.worker_python` with the backend's foreign-interpreter runtime)."""
    backend = backends()[config.type]
    inner = replace(config, isolation="thread")
    foreign = backend.foreign_runtime
    if config.worker_python and foreign is not None:
        runtime, runtime_config = foreign(bundle, inner)
        argv = worker_argv(config.worker_python, runtime, runtime_config)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the foreign interpreter must not see this one's packages
    else:
        if config.worker_python:
            raise EdgeTcError(
                f"engine '{config.type}' cannot run under engine.worker_python = "
                f"{config.worker_python!r}: only the daemon's own interpreter runs it"
            )
        module = backend.load.__module__  # a plugin's backend registers itself when imported
        imports = () if module.startswith("engines.") else (module,)
        where = str(bundle.directory)
        argv = worker_argv(sys.executable, "engine", inner.to_dict(), where, imports)
        env = worker_env()
    return IsolatedEngine(
        bundle,
        argv,
        env,
        deadline_s=config.deadline_ms / 1e3,
        backoff_max_s=config.restart_backoff_max_s,
        start_timeout_s=config.start_timeout_s,
    )


__all__ = ["EngineWorkerError", "IsolatedEngine", "load_isolated", "worker_argv", "worker_env"]

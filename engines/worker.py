"""The engine worker process: owns one runtime, runs model calls on arrays in shared memory.

Started by `engines/isolated.py` (`IsolatedEngine`), never imported by the daemon's data path.
This file and the runtime modules it loads for a foreign interpreter (`trt_runtime.py`) are
written for Python >= 3.6 (checked by `vermin --target=3.6` in tests/test_engines_isolated.py):
on JetPack 4.6 the worker runs under the system's Python 3.6, whose `tensorrt` and `pycuda`
exist for that version only, while the daemon runs on Python >= 3.10.

Protocol, over two pipes (file descriptors given on the command line): each message is a
4-byte little-endian length and a UTF-8 JSON object.

* worker -> parent, once the runtime is loaded: `{"ok": true, "describe": {...}}` (input
  tensor, largest batch, output tensors, engine info; see `Runtime.describe`), or
  `{"ok": false, "error": "...", "kind": "ModelError"}` (the exception's text and class name)
  and exit 1.
* parent -> worker `{"op": "attach", "input": PATH, "output": PATH}`: the two shared-memory
  files (`/dev/shm/<name>` of a `multiprocessing.shared_memory.SharedMemory`), mapped here with
  mmap (Python 3.6 has no `multiprocessing.shared_memory`).
* parent -> worker `{"op": "invoke", "shape": [...], "dtype": "float32"}`: the chunk is at
  offset 0 of the input segment, in the model's layout and dtype. The worker writes each task's
  raw output into the output segment and answers `{"ok": true, "outputs": {task: [offset,
  shape, dtype]}}`, or `{"ok": false, "error": "..."}` when the runtime raised (the parent
  fails that batch; the worker goes on). No array is ever pickled or sent through the pipe.
* parent -> worker `{"op": "close"}`: release the runtime and exit 0.

Runtimes (`--runtime`): `engine` loads any backend with `engines.base.load` (the daemon's own
interpreter and package; `--import MODULE` first imports the module that registered a plugin
backend); `tensorrt-plan` loads `trt_runtime.py` from this folder by path (no package import,
so a foreign interpreter needs nothing of ours installed).
"""

import argparse
import importlib.util
import json
import mmap
import os
import signal
import struct
import sys
import traceback

import numpy as np

HEADER = struct.Struct("<I")
MAX_MESSAGE = 1 << 20
"""Longest JSON message (a guard against a garbled length)."""
ALIGN = 64
"""Byte alignment of each output array in the output segment."""


# ------------------------------------------------------------------------------------ messages


READ_SIZE = 1 << 16
_pending = {}  # type: dict[int, bytes]
"""fd -> bytes read past the last whole message (the protocol alternates, so normally none)."""


def split_message(buffer):
    """(message, rest) when `buffer` starts with a whole message, else (None, buffer)."""
    if len(buffer) < HEADER.size:
        return None, buffer
    (length,) = HEADER.unpack_from(buffer)
    if length > MAX_MESSAGE:
        raise ValueError(f"message of {length} bytes: not our protocol")
    end = HEADER.size + length
    if len(buffer) < end:
        return None, buffer
    return json.loads(bytes(buffer[HEADER.size : end]).decode("utf-8")), buffer[end:]


def receive(fd):
    """The next message, or None when the other end closed the pipe (one read, usually)."""
    buffer = _pending.pop(fd, b"")
    while True:
        message, rest = split_message(buffer)
        if message is not None:
            if rest:
                _pending[fd] = rest
            return message
        data = os.read(fd, READ_SIZE)
        if not data:
            if buffer:
                raise EOFError("pipe closed in the middle of a message")
            return None
        buffer += data


def send(fd, message):
    """Write one message (length prefix and JSON) to fd."""
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    data = HEADER.pack(len(body)) + body
    while data:
        written = os.write(fd, data)
        data = data[written:]


# ------------------------------------------------------------------------------------ runtimes


class EngineRuntime:
    """Any backend of the `engines` package, loaded in this process with `engines.base.load`."""

    def __init__(self, bundle, config):
        from engines.base import load  # the daemon's interpreter: the package is importable

        self.engine = load(bundle, config)

    def describe(self):
        e = self.engine
        spec = e.input_spec
        info = e.info
        return {
            "model_file": e.model.path.name,
            "tasks": list(e.tasks),
            "input": {
                "name": spec.name,
                "layout": spec.layout,
                "shape": list(spec.shape),
                "dtype": spec.dtype,
                "max_batch": spec.max_batch,
                "fixed_batch": spec.fixed_batch,
            },
            "outputs": {
                t: {"shape": list(e.model.outputs[t].shape), "dtype": e.model.outputs[t].dtype}
                for t in e.tasks
            },
            "info": {
                "backend": info.backend,
                "precision": info.precision,
                "device": info.device,
                "model_file": info.model_file,
                "runtime": info.runtime,
                "threads": info.threads,
                "memory": dict(info.memory),
            },
        }

    def invoke(self, x):
        return self.engine._invoke(x)

    def close(self):
        self.engine.close()


def load_sibling(name):
    """A module of this folder, loaded by its path (not as part of the `engines` package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = importlib.util.spec_from_file_location("edge_tc_" + name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def open_runtime(args):
    if args.runtime == "engine":
        for name in args.imports:
            importlib.import_module(name)
        return EngineRuntime(args.bundle, json.loads(args.config))
    if args.runtime == "tensorrt-plan":
        return load_sibling("trt_runtime").PlanRuntime(json.loads(args.config))
    raise ValueError(f"unknown runtime {args.runtime!r}")


# ---------------------------------------------------------------------------------------- loop


class Segment:
    """A shared-memory file mapped read-write."""

    def __init__(self, path):
        fd = os.open(path, os.O_RDWR)
        try:
            self.size = os.fstat(fd).st_size
            self.map = mmap.mmap(fd, self.size)
        finally:
            os.close(fd)

    def array(self, offset, shape, dtype):
        return np.ndarray(tuple(shape), np.dtype(dtype), buffer=self.map, offset=offset)

    def close(self):
        self.map.close()


def invoke(runtime, request, segments):
    """Run one chunk from the input segment; write the outputs; the answer's `outputs`."""
    source, target = segments
    x = source.array(0, request["shape"], request["dtype"])
    raw = runtime.invoke(x)
    outputs = {}
    offset = 0
    for task, value in raw.items():
        value = np.ascontiguousarray(value)
        end = offset + value.nbytes
        if end > target.size:
            raise ValueError(
                f"outputs of {end} bytes do not fit the {target.size}-byte output segment"
            )
        target.array(offset, value.shape, value.dtype)[...] = value
        outputs[task] = [offset, list(value.shape), value.dtype.str]
        offset = (end + ALIGN - 1) // ALIGN * ALIGN
    return outputs


def serve(runtime, rfd, wfd):
    segments = None
    while True:
        request = receive(rfd)
        if request is None or request.get("op") == "close":
            return
        op = request.get("op")
        try:
            if op == "attach":
                segments = (Segment(request["input"]), Segment(request["output"]))
                send(wfd, {"ok": True})
            elif op == "invoke":
                if segments is None:
                    raise RuntimeError("invoke before attach")
                send(wfd, {"ok": True, "outputs": invoke(runtime, request, segments)})
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:  # the runtime's own error types: the parent fails the batch
            send(wfd, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def die_with_parent():
    """Linux: SIGKILL this process when the daemon dies, even while the runtime hangs."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the closed pipe still ends an idle worker
        pass


def main(argv=None):
    parser = argparse.ArgumentParser(prog="edge-tc engine worker")
    parser.add_argument("--read-fd", type=int, required=True)
    parser.add_argument("--write-fd", type=int, required=True)
    parser.add_argument("--runtime", choices=("engine", "tensorrt-plan"), required=True)
    parser.add_argument("--bundle", default="")
    parser.add_argument("--config", required=True, help="the runtime's config as JSON")
    parser.add_argument("--import", dest="imports", action="append", default=[])
    args = parser.parse_args(argv)
    # The daemon's Ctrl-C reaches the whole process group: the parent closes us in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    try:
        runtime = open_runtime(args)
        hello = {"ok": True, "describe": runtime.describe()}
    except Exception as exc:
        traceback.print_exc()
        send(args.write_fd, {"ok": False, "error": str(exc), "kind": type(exc).__name__})
        return 1
    send(args.write_fd, hello)
    try:
        serve(runtime, args.read_fd, args.write_fd)
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fake `pycuda.driver`: the calls engines/trt_runtime.py makes, with pycuda's names and
argument order. Device memory is host bytes keyed by a fake address; a context must be current
(made by `Device.make_context`, popped by `Context.pop`) for allocation and copies, and async
copies need page-locked host arrays, as with the real driver."""

from __future__ import annotations

import numpy as np

MEMORY: dict[int, np.ndarray] = {}
"""Fake device memory: address -> bytes (uint8)."""
_CONTEXTS: list[Context] = []
_PINNED: list[np.ndarray] = []
_initialized = False
_next_address = 0x7F0000000000


class Error(Exception):
    pass


class LogicError(Error):
    pass


def init(flags: int = 0) -> None:
    global _initialized
    _initialized = True


def _need_context(what: str) -> None:
    if not _initialized:
        raise LogicError(f"cuInit has not been called ({what})")
    if not _CONTEXTS:
        raise LogicError(f"{what} failed: invalid device context - no currently active context?")


class Device:
    def __init__(self, number: int) -> None:
        if not _initialized:
            raise LogicError("cuInit has not been called")
        if number != 0:
            raise LogicError(f"cuDeviceGet failed: invalid device ordinal {number}")
        self.number = number

    def name(self) -> str:
        return "NVIDIA Tegra X2"

    def compute_capability(self) -> tuple[int, int]:
        return (6, 2)

    def make_context(self, flags: int = 0) -> Context:
        context = Context()
        _CONTEXTS.append(context)
        return context


class Context:
    detached = False

    def pop(self) -> None:
        if not _CONTEXTS or _CONTEXTS[-1] is not self:
            raise LogicError("cuCtxPopCurrent failed: invalid context")
        _CONTEXTS.pop()

    def detach(self) -> None:
        self.detached = True


class Stream:
    def __init__(self, flags: int = 0) -> None:
        _need_context("cuStreamCreate")
        self.handle = 0x5EED

    def synchronize(self) -> None:
        _need_context("cuStreamSynchronize")


class DeviceAllocation:
    def __init__(self, address: int) -> None:
        self._address = address

    def __int__(self) -> int:
        return self._address

    def free(self) -> None:
        MEMORY.pop(self._address, None)


def mem_alloc(nbytes: int) -> DeviceAllocation:
    global _next_address
    _need_context("cuMemAlloc")
    address = _next_address
    _next_address += (int(nbytes) + 0xFFF) // 0x1000 * 0x1000
    MEMORY[address] = np.zeros(int(nbytes), np.uint8)
    return DeviceAllocation(address)


def pagelocked_empty(shape, dtype, order: str = "C", mem_flags: int = 0) -> np.ndarray:
    _need_context("cuMemHostAlloc")
    array = np.empty(shape, dtype)  # order "C", the only one engines ask for
    _PINNED.append(array)
    return array


def _pinned(array: np.ndarray) -> bool:
    base = array
    while isinstance(base.base, np.ndarray):
        base = base.base
    return any(base is p for p in _PINNED)


def _device(address) -> np.ndarray:
    return MEMORY[int(address)]


def memcpy_htod_async(dest, src: np.ndarray, stream: Stream | None = None) -> None:
    _need_context("cuMemcpyHtoDAsync")
    if not _pinned(src) or not src.flags.c_contiguous:
        raise LogicError("cuMemcpyHtoDAsync failed: host memory is not page-locked/contiguous")
    raw = src.reshape(-1).view(np.uint8)
    _device(dest)[: raw.size] = raw


def memcpy_dtoh_async(dest: np.ndarray, src, stream: Stream | None = None) -> None:
    _need_context("cuMemcpyDtoHAsync")
    if not _pinned(dest) or not dest.flags.c_contiguous:
        raise LogicError("cuMemcpyDtoHAsync failed: host memory is not page-locked/contiguous")
    raw = dest.reshape(-1).view(np.uint8)
    raw[:] = _device(src)[: raw.size]

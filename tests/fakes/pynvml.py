"""A stand-in for `pynvml` (nvidia-ml-py), for tests (no NVIDIA driver here).

The names, error class and units of the real module: `nvmlInit`, `nvmlShutdown`,
`nvmlDeviceGetCount`, `nvmlDeviceGetHandleByIndex`, `nvmlDeviceGetTotalEnergyConsumption` (mJ
since the driver loaded), `nvmlDeviceGetPowerUsage` (mW), `NVMLError` with its `value`.

Tests script it: `ENERGY_MJ` and `POWER_MW` give one value per call (the last repeating);
`DRIVER_LOADED = False` makes `nvmlInit` fail; `ENERGY_SUPPORTED = False` makes the energy
counter NOT_SUPPORTED (pre-Volta GPUs).
"""

from __future__ import annotations

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_DRIVER_NOT_LOADED = 9

_MESSAGES = {
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
}

ENERGY_MJ: list[int] = [1_000_000]
POWER_MW: list[int] = [70_000]
DRIVER_LOADED = True
ENERGY_SUPPORTED = True
DEVICE_COUNT = 1
SHUTDOWNS = 0
_calls = {"energy": 0, "power": 0}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        self.value = value
        super().__init__(value)

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, "Unknown Error")


def _next(values: list[int], key: str) -> int:
    value = values[min(_calls[key], len(values) - 1)]
    _calls[key] += 1
    return value


def nvmlInit() -> None:
    if not DRIVER_LOADED:
        raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)


def nvmlShutdown() -> None:
    global SHUTDOWNS
    SHUTDOWNS += 1


def nvmlDeviceGetCount() -> int:
    return DEVICE_COUNT


def nvmlDeviceGetHandleByIndex(index: int) -> object:
    if not 0 <= index < DEVICE_COUNT:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return ("gpu", index)


def nvmlDeviceGetTotalEnergyConsumption(handle: object) -> int:
    if not ENERGY_SUPPORTED:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return _next(ENERGY_MJ, "energy")


def nvmlDeviceGetPowerUsage(handle: object) -> int:
    return _next(POWER_MW, "power")

"""A stand-in for the `SoapySDR` SWIG module of Debian's python3-soapysdr 0.8, for tests.

Same names, constants and call signatures as the real binding (pothosware/SoapySDR
swig/python/SoapySDR.in.i, include/SoapySDR/{Constants,Errors}.h): `Device(args)` with a
string or dict of device args, `readStream(stream, buffs, numElems, flags=0, timeoutUs=100000)`
filling the caller's numpy buffer and returning a `StreamResult` (`ret`, `flags`, `timeNs`,
`chanMask`), `close()` unmaking the device.

The device serves a ramp: sample k of the stream (k counted from activateStream, lost samples
included) is `complex(k, -k)`, so a test can check each chunk's index against its samples.
Device args script the faults, as colon-separated read-call numbers (1 = the first readStream):
`driver=fake` (required), `mtu=N` (most samples per read), `overflow_at=3:7` (the read returns
SOAPY_SDR_OVERFLOW and `lost=N` samples are skipped), `timeout_at=...` (SOAPY_SDR_TIMEOUT),
`corrupt_at=...` (SOAPY_SDR_CORRUPTION), `fail_at=...` (SOAPY_SDR_STREAM_ERROR), `time=1`
(stamp reads with hardware time, SOAPY_SDR_HAS_TIME).
"""

from __future__ import annotations

import numpy as np

SOAPY_SDR_TX = 0
SOAPY_SDR_RX = 1

SOAPY_SDR_CF64 = "CF64"
SOAPY_SDR_CF32 = "CF32"
SOAPY_SDR_CS32 = "CS32"
SOAPY_SDR_CS16 = "CS16"
SOAPY_SDR_CS8 = "CS8"
SOAPY_SDR_CU8 = "CU8"

SOAPY_SDR_END_BURST = 1 << 1
SOAPY_SDR_HAS_TIME = 1 << 2
SOAPY_SDR_END_ABRUPT = 1 << 3
SOAPY_SDR_ONE_PACKET = 1 << 4
SOAPY_SDR_MORE_FRAGMENTS = 1 << 5
SOAPY_SDR_WAIT_TRIGGER = 1 << 6

SOAPY_SDR_TIMEOUT = -1
SOAPY_SDR_STREAM_ERROR = -2
SOAPY_SDR_CORRUPTION = -3
SOAPY_SDR_OVERFLOW = -4
SOAPY_SDR_NOT_SUPPORTED = -5
SOAPY_SDR_TIME_ERROR = -6
SOAPY_SDR_UNDERFLOW = -7

_ERRORS = {
    SOAPY_SDR_TIMEOUT: "TIMEOUT",
    SOAPY_SDR_STREAM_ERROR: "STREAM_ERROR",
    SOAPY_SDR_CORRUPTION: "CORRUPTION",
    SOAPY_SDR_OVERFLOW: "OVERFLOW",
    SOAPY_SDR_NOT_SUPPORTED: "NOT_SUPPORTED",
    SOAPY_SDR_TIME_ERROR: "TIME_ERROR",
    SOAPY_SDR_UNDERFLOW: "UNDERFLOW",
}

DEVICES: list[Device] = []
"""Every Device made, newest last (tests inspect their calls)."""


def errToStr(errorCode: int) -> str:
    return _ERRORS.get(errorCode, "UNKNOWN")


def _kwargs(args: str | dict | None) -> dict[str, str]:
    if isinstance(args, dict):
        return {str(k): str(v) for k, v in args.items()}
    out = {}
    for part in (args or "").split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def _calls(value: str | None) -> set[int]:
    return {int(v) for v in value.split(":")} if value else set()


class StreamResult:
    """What readStream returns."""

    def __init__(self) -> None:
        self.ret = 0
        self.flags = 0
        self.timeNs = 0
        self.chanMask = 0

    def __str__(self) -> str:
        return f"ret={self.ret}, flags={self.flags}, timeNs={self.timeNs}"


class _Stream:
    def __init__(self, direction: int, fmt: str, channels: list[int]) -> None:
        self.direction, self.format, self.channels = direction, fmt, channels
        self.active = False


class Device:
    """A fake radio; `args` as for the real one (`driver=fake,...`)."""

    def __init__(self, *args: str | dict) -> None:
        kwargs = _kwargs(args[0] if args else None)
        if kwargs.get("driver") != "fake":
            raise RuntimeError("SoapySDR::Device::make() no match")
        self.kwargs = kwargs
        self.calls: list[tuple] = []
        self.rate = 1e6
        self.mtu = int(kwargs.get("mtu", 4096))
        self.lost = int(kwargs.get("lost", 1000))
        self.faults = {
            SOAPY_SDR_OVERFLOW: _calls(kwargs.get("overflow_at")),
            SOAPY_SDR_TIMEOUT: _calls(kwargs.get("timeout_at")),
            SOAPY_SDR_CORRUPTION: _calls(kwargs.get("corrupt_at")),
            SOAPY_SDR_STREAM_ERROR: _calls(kwargs.get("fail_at")),
        }
        self.stamp_time = kwargs.get("time") == "1"
        self.reads = 0
        self.position = 0  # index of the next sample the radio produces
        self.closed = False
        DEVICES.append(self)

    @staticmethod
    def enumerate(args: str | dict = "") -> list[dict[str, str]]:
        return [{"driver": "fake", "label": "fake radio"}]

    def getDriverKey(self) -> str:
        return "fake"

    def setSampleRate(self, direction: int, channel: int, rate: float) -> None:
        self.calls.append(("setSampleRate", direction, channel, rate))
        self.rate = float(rate)

    def getSampleRate(self, direction: int, channel: int) -> float:
        return self.rate

    def setFrequency(self, direction: int, channel: int, *args: float | str) -> None:
        self.calls.append(("setFrequency", direction, channel, *args))

    def setGainMode(self, direction: int, channel: int, automatic: bool) -> None:
        self.calls.append(("setGainMode", direction, channel, automatic))

    def setGain(self, direction: int, channel: int, *args: float | str) -> None:
        self.calls.append(("setGain", direction, channel, *args))

    def setBandwidth(self, direction: int, channel: int, bw: float) -> None:
        self.calls.append(("setBandwidth", direction, channel, bw))

    def setAntenna(self, direction: int, channel: int, name: str) -> None:
        self.calls.append(("setAntenna", direction, channel, name))

    def setupStream(
        self,
        direction: int,
        format: str,
        channels: list[int] | None = None,
        args: dict | None = None,
    ) -> _Stream:
        self.calls.append(("setupStream", direction, format, list(channels or [])))
        return _Stream(direction, format, list(channels or [0]))

    def getStreamMTU(self, stream: _Stream) -> int:
        return self.mtu

    def activateStream(
        self,
        stream: _Stream,
        flags: int = 0,
        timeNs: int = 0,
        numElems: int = 0,
    ) -> int:
        self.calls.append(("activateStream",))
        stream.active = True
        return 0

    def deactivateStream(
        self,
        stream: _Stream,
        flags: int = 0,
        timeNs: int = 0,
    ) -> int:
        self.calls.append(("deactivateStream",))
        stream.active = False
        return 0

    def closeStream(self, stream: _Stream) -> None:
        self.calls.append(("closeStream",))

    def readStream(
        self,
        stream: _Stream,
        buffs: list[np.ndarray],
        numElems: int,
        flags: int = 0,
        timeoutUs: int = 100000,
    ) -> StreamResult:
        if not stream.active:
            raise RuntimeError("readStream on an inactive stream")
        self.reads += 1
        result = StreamResult()
        for code, at in self.faults.items():
            if self.reads in at:
                result.ret = code
                if code == SOAPY_SDR_OVERFLOW:
                    self.position += self.lost
                return result
        n = min(numElems, self.mtu, buffs[0].size)
        k = np.arange(self.position, self.position + n, dtype=np.float32)
        buffs[0][:n] = k - 1j * k
        if self.stamp_time:
            result.flags |= SOAPY_SDR_HAS_TIME
            result.timeNs = round(self.position * 1e9 / self.rate)
        self.position += n
        result.ret = n
        return result

    @staticmethod
    def unmake(device: Device) -> None:
        device.closed = True

    def close(self) -> None:
        """As the binding: unmake once, flag the object for later calls and the deleter."""
        if not getattr(self, "_closed_flag", False):
            Device.unmake(self)
        self._closed_flag = True

"""An SDR through SoapySDR (config `type = "soapysdr"`): Debian's `python3-soapysdr` binding.

The binding is the SWIG module `SoapySDR` (not on PyPI): `Device(args)`, `setSampleRate`,
`setFrequency`, `setGain` or `setGainMode` (AGC), `setupStream(SOAPY_SDR_RX, SOAPY_SDR_CF32,
[channel])`, `activateStream`, and `readStream(stream, [buffer], n, timeoutUs=...)`, which
returns a `StreamResult` (`.ret`: samples read or a negative error code, `.flags`, `.timeNs`).

Error codes (SoapySDR/Errors.h): SOAPY_SDR_TIMEOUT (-1) is no data yet: keep reading until the
read's own timeout. SOAPY_SDR_OVERFLOW (-4) means the driver's buffer filled and samples were
lost: it is counted (`SourceEvents.overflow`) and the next chunk is flagged `discontinuity`, so
the assembler drops its half-seen packet. SOAPY_SDR_CORRUPTION (-3) and SOAPY_SDR_TIME_ERROR
(-6) are counted as drops and also flag a discontinuity. Anything else (STREAM_ERROR, a device
unplugged) raises SourceError: the daemon closes the source and re-opens it with back-off.
When the driver stamps reads with hardware time (SOAPY_SDR_HAS_TIME), a jump in `timeNs`
beyond the samples received is a gap the sample index skips too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from edge_core.errors import SourceError
from edge_daemon.sources.base import (
    Chunk,
    Source,
    SourceBackend,
    SourceConfig,
    SourceEvents,
    unavailable,
)

KEY = "soapysdr"
INSTALL = "apt-get install python3-soapysdr (and the SoapySDR module of your radio)"

# SoapySDR/Errors.h and Constants.h, exported by the binding as SOAPY_SDR_<NAME>.
TIMEOUT = -1
CORRUPTION = -3
OVERFLOW = -4
TIME_ERROR = -6
HAS_TIME = 1 << 2
_COUNTED_ERRORS = {CORRUPTION: "corruption", TIME_ERROR: "time_error"}


@dataclass(frozen=True)
class SoapySDRSourceConfig(SourceConfig):
    """`[source]` table for a SoapySDR device.

    device: SoapySDR device args ("driver=rtlsdr", "driver=uhd,serial=..."; "" for the first
    device found). channel: RX channel. sample_rate_hz, center_freq_hz: tuning. gain_db: overall
    RX gain (unset: the driver's AGC). bandwidth_hz: analog filter (unset: the driver's
    default). antenna: RX antenna ("" for the default). chunk_samples: samples per readStream.
    """

    type: Literal["soapysdr"] = "soapysdr"
    device: str = ""
    channel: int = 0
    sample_rate_hz: float = 20e6
    center_freq_hz: float = 2.412e9
    gain_db: float | None = None
    bandwidth_hz: float | None = None
    antenna: str = ""
    chunk_samples: int = 16384

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.channel < 0:
            out.append(("channel", f"want >= 0, got {self.channel}"))
        for key in ("sample_rate_hz", "center_freq_hz"):
            if not getattr(self, key) > 0:
                out.append((key, f"want > 0, got {getattr(self, key)}"))
        if self.bandwidth_hz is not None and not self.bandwidth_hz > 0:
            out.append(("bandwidth_hz", f"want > 0 (or leave unset), got {self.bandwidth_hz}"))
        if self.chunk_samples < 1:
            out.append(("chunk_samples", f"want >= 1, got {self.chunk_samples}"))
        return out


class SoapySDRSource(Source):
    """RX samples of one channel of a SoapySDR device, as complex64."""

    config: SoapySDRSourceConfig

    def __init__(self, config: SoapySDRSourceConfig, events: SourceEvents) -> None:
        super().__init__(config, events)
        self._soapy: Any = None
        self._device: Any = None
        self._stream: Any = None
        self._rate = config.sample_rate_hz
        self._next_index = 0
        self._next_time_ns: int | None = None  # hardware time the next sample should have
        self._discontinuity = False

    @property
    def sample_rate_hz(self) -> float:
        """The rate the device settled on (drivers round the requested one)."""
        return self._rate

    def open(self) -> None:
        self.close()
        try:
            import SoapySDR
        except ImportError as exc:
            raise unavailable(KEY, exc, INSTALL) from exc
        c, rx = self.config, SoapySDR.SOAPY_SDR_RX
        try:
            device = SoapySDR.Device(c.device)
        except (RuntimeError, ValueError) as exc:
            raise SourceError(f"soapysdr: no device for args {c.device!r}: {exc}") from exc
        self._soapy, self._device = SoapySDR, device
        try:
            device.setSampleRate(rx, c.channel, c.sample_rate_hz)
            device.setFrequency(rx, c.channel, c.center_freq_hz)
            if c.gain_db is None:
                device.setGainMode(rx, c.channel, True)
            else:
                device.setGainMode(rx, c.channel, False)
                device.setGain(rx, c.channel, c.gain_db)
            if c.bandwidth_hz is not None:
                device.setBandwidth(rx, c.channel, c.bandwidth_hz)
            if c.antenna:
                device.setAntenna(rx, c.channel, c.antenna)
            self._rate = float(device.getSampleRate(rx, c.channel))
            self._stream = device.setupStream(rx, SoapySDR.SOAPY_SDR_CF32, [c.channel])
            status = device.activateStream(self._stream)
        except (RuntimeError, ValueError) as exc:
            self.close()
            raise SourceError(f"soapysdr {c.device!r}: setting up RX: {exc}") from exc
        if status != 0:
            self.close()
            raise SourceError(f"soapysdr {c.device!r}: activateStream: {self._error(status)}")
        self._next_time_ns = None
        self._discontinuity = self._next_index > 0  # re-opened: samples were missed meanwhile

    def _error(self, code: int) -> str:
        to_str = getattr(self._soapy, "errToStr", None)  # SoapySDR/Errors.hpp, 0.6 and later
        return f"{to_str(code)} ({code})" if to_str is not None else f"error {code}"

    def read(self, timeout_s: float) -> Chunk | None:
        if self._stream is None:
            raise SourceError("soapysdr source: read() before open()")
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            remaining_us = max(0, int((deadline - time.monotonic()) * 1e6))
            buf = np.empty(self.config.chunk_samples, np.complex64)
            result = self._device.readStream(self._stream, [buf], buf.size, timeoutUs=remaining_us)
            arrival = time.monotonic()
            if result.ret > 0:
                return self._chunk(buf[: result.ret], result, arrival)
            if result.ret == OVERFLOW:
                self.events.overflow()
                self._discontinuity = True
            elif result.ret in _COUNTED_ERRORS:
                self.events.dropped(_COUNTED_ERRORS[result.ret], 0)
                self._discontinuity = True
            elif result.ret not in (0, TIMEOUT):
                raise SourceError(f"soapysdr {self.config.device!r}: {self._error(result.ret)}")
            if time.monotonic() >= deadline:
                return None

    def _chunk(self, samples: np.ndarray, result: Any, arrival: float) -> Chunk:
        if result.flags & HAS_TIME:
            if self._next_time_ns is not None:
                gap = round((result.timeNs - self._next_time_ns) * self._rate / 1e9)
                if gap > 0:  # samples the driver lost (an overflow) or never handed over
                    self._next_index += gap
                    self._discontinuity = True
            self._next_time_ns = result.timeNs + round(samples.size * 1e9 / self._rate)
        chunk = Chunk(samples, self._next_index, arrival, self._discontinuity)
        self._next_index += samples.size
        self._discontinuity = False
        return chunk

    def close(self) -> None:
        device, stream = self._device, self._stream
        self._device = self._stream = None
        if device is None:
            return
        try:
            if stream is not None:
                device.deactivateStream(stream)
                device.closeStream(stream)
        finally:
            device.close()


def _create(config: SourceConfig, events: SourceEvents) -> Source:
    assert isinstance(config, SoapySDRSourceConfig)
    return SoapySDRSource(config, events)


SOURCE = SourceBackend(KEY, SoapySDRSourceConfig, _create, INSTALL)

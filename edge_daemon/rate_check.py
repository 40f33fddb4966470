"""Is the stream at the configured sample rate? Judged from the packets themselves (issue 14).

ZeroMQ does not carry the rate, and a wrong `[source] sample_rate_hz` is otherwise silent: the
detector still cuts packets and the engine labels them, all junk. An 802.11 OFDM symbol is a
3.2 us body preceded by a copy of its last 0.8 us (the cyclic prefix), so an OFDM packet
correlates with itself 3.2 us later and nowhere else: that lag, measured in samples, is the
stream's real rate. 802.11a/g/n/ac packets all have it; 802.11b (DSSS) has none and votes
for nothing, nor do 802.11ax data symbols (12.8 us, out of `LAG_RANGE`).

Per checked packet (its first `output_length` samples, less the first third: the L-STF's
0.8 us period would correlate at every multiple of 16 samples), one FFT gives the
autocorrelation; the lag with the strongest normalized correlation within a factor
`LAG_RANGE` of the configured rate's 3.2 us is kept when the correlation is strong
(`MIN_CORRELATION`) and the lagged product repeats at the symbol rate (1.25 x the lag: the
prefix is a quarter of the body), which tells a cyclic prefix from DSSS's 1 us Barker period.

Cheap: every `EVERY`-th packet of at least `MIN_PACKET_SAMPLES` until `WINDOW` packets have
voted, then at most one per `INTERVAL_S` of stream, about 0.1 ms each. When at least
`MIN_VOTES` recent votes agree (`AGREE` within +-`TOLERANCE`) on a lag other than the
configured rate's, the rate is reported once: an error log line and `edgetc_source_rate_suspect`
= 1.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable

import numpy as np
from prometheus_client import Gauge

from edge_core.assembler import Packet

SYMBOL_BODY_S = 3.2e-6
"""802.11 OFDM symbol without its cyclic prefix (64 samples at 20 Msps)."""
MIN_PACKET_SAMPLES = 1200
"""Shorter packets (at the configured rate) are not checked: too little body after the preamble."""
LAG_RANGE = 3.0
"""Rates from 1/3 to 3 times the configured one are recognised. Not 4: 802.11ax data symbols
have a 12.8 us body, 4 x 3.2 us, and an 802.11ax network must not read as a 4x rate."""
MIN_CORRELATION = 0.08
"""A cyclic prefix is 20 % of an OFDM symbol; noise alone stays near 1/sqrt(samples)."""
MIN_SYMBOL_PERIODICITY = 0.5
"""|symbol-rate Fourier coefficient| / |mean| of the lagged product: about 0.93 for a prefix."""
MIN_PREFIX_SHARE = 0.35
"""Share of the folded product's magnitude in its best prefix-long window: 0.2 when uniform
(DSSS: at most 0.30 on the synthetic PPDUs of every rate and preamble), about 0.5 for OFDM."""
EVERY = 2
WINDOW = 32
MIN_VOTES = 16
AGREE = 0.6
TOLERANCE = 0.04
INTERVAL_S = 1.0


def cyclic_prefix_lag(iq: np.ndarray, expected_lag: float) -> tuple[int, float] | None:
    """The lag (samples) at which an OFDM packet repeats its cyclic prefix, and the normalized
    correlation there; None when `iq` shows no cyclic prefix within a factor LAG_RANGE of
    `expected_lag` (802.11b, noise, too short)."""
    body = iq[iq.size // 3 :]  # (m,) without the L-STF
    m = body.size
    lo = max(8, int(expected_lag / LAG_RANGE))
    hi = min(m // 3, int(np.ceil(expected_lag * LAG_RANGE)))
    if hi <= lo:
        return None
    body = body.astype(np.complex128)
    nfft = 1 << int(np.ceil(np.log2(2 * m)))
    spectrum = np.fft.fft(body, nfft)  # (nfft,)
    r = np.fft.ifft(spectrum.real**2 + spectrum.imag**2)[: hi + 1]  # (hi+1,) autocorrelation
    energy = r[0].real
    if not energy > 0:
        return None
    rho = np.abs(r[lo:]) / energy  # (hi-lo+1,)
    lag = lo + int(np.argmax(rho))
    peak = float(rho[lag - lo])
    if not peak >= MIN_CORRELATION:
        return None
    product = body[lag:] * np.conj(body[:-lag])  # (m-lag,) large within each prefix only
    mean = abs(product.sum())
    phase = np.exp(-2j * np.pi * np.arange(product.size) / (1.25 * lag))
    if not abs(np.dot(product, phase)) >= MIN_SYMBOL_PERIODICITY * mean:
        return None
    # folded over the symbol, the product adds up coherently in one prefix-long window only
    symbol = round(1.25 * lag)
    symbols = product.size // symbol
    if symbols < 2:
        return None
    folded = product[: symbols * symbol].reshape(symbols, symbol).sum(axis=0)  # (symbol,)
    prefix = max(1, round(lag / 4))
    sums = np.cumsum(np.concatenate(([0], folded, folded[:prefix])))  # (symbol+prefix+1,)
    window = np.abs(sums[prefix : prefix + symbol] - sums[:symbol])  # (symbol,) circular
    if not window.max() >= MIN_PREFIX_SHARE * np.abs(folded).sum():
        return None
    return lag, peak


class SampleRateCheck:
    """Votes of sampled packets on the stream's real rate; reports a mismatch once."""

    def __init__(
        self, gauge: Gauge, logger: logging.Logger, sample_rate_hz: float, output_length: int
    ) -> None:
        self._gauge = gauge
        self._log = logger
        self._rate = float(sample_rate_hz)
        self._expected_lag = SYMBOL_BODY_S * self._rate
        self._output_length = output_length
        self._ratios: deque[float] = deque(maxlen=WINDOW)  # found lag / expected lag
        self._eligible = 0
        self._next_check = 0  # stream sample index of the next check once the window is full
        self.votes = 0
        self.suspect: str | None = None

    def check(self, packets: Iterable[Packet]) -> None:
        """Look at a sample of the packets the assembler just cut."""
        if self.suspect is not None:
            return
        for packet in packets:
            n = min(packet.num_samples, packet.iq.size, self._output_length)
            if n < MIN_PACKET_SAMPLES:
                continue
            self._eligible += 1
            if len(self._ratios) < WINDOW:
                if self._eligible % EVERY:
                    continue
            elif packet.start_sample < self._next_check:
                continue
            self._next_check = packet.start_sample + int(INTERVAL_S * self._rate)
            found = cyclic_prefix_lag(packet.iq[:n], self._expected_lag)
            if found is None:
                continue
            self.votes += 1
            self._ratios.append(found[0] / self._expected_lag)
            if self._judge():
                return

    def _judge(self) -> bool:
        """Report when the recent votes agree on another rate; True once reported."""
        if len(self._ratios) < MIN_VOTES:
            return False
        ratios = np.array(self._ratios)  # (votes,)
        median = float(np.median(ratios))
        at_configured = np.count_nonzero(np.abs(ratios - 1) <= TOLERANCE)
        at_median = np.count_nonzero(np.abs(ratios / median - 1) <= TOLERANCE)
        if abs(median - 1) <= TOLERANCE or at_median < AGREE * ratios.size:
            return False
        if at_configured > (1 - AGREE) * ratios.size:
            return False
        lag = median * self._expected_lag
        estimate = self._rate * median
        self.suspect = (
            f"{at_median} of {ratios.size} OFDM packets repeat their cyclic prefix "
            f"{lag:.0f} samples apart, not {self._expected_lag:.0f} (802.11's 3.2 us symbol "
            f"at the configured rate)"
        )
        self._gauge.set(1)
        self._log.error(
            "source: the samples do not look like the configured [source] sample_rate_hz = "
            "%.0f: %s; the stream is probably about %.1f Msps; check sample_rate_hz against "
            "the producer (edgetc_source_rate_suspect = 1)",
            self._rate, self.suspect, estimate / 1e6,
        )  # fmt: skip
        return True


__all__ = ["SYMBOL_BODY_S", "SampleRateCheck", "cyclic_prefix_lag"]

"""Packet assembler: cut a continuous complex64 stream into L1 packets of `output_length` samples.

Detector (per chunk, in NumPy; Python iterates only over threshold crossings):

1. Power `|x|^2` and its moving sum over `window_samples` (computed by doubling: every output is
   the same sum of the same samples however the stream is chunked, so packets do not depend on
   the chunk size).
2. Noise floor: after a warm-up (`noise_floor_warmup_samples`), a low percentile of window
   powers, corrected to the mean with the Gamma(window) distribution of windowed noise power.
   Then every `noise_floor_update_samples` the same estimate over the idle windows of that
   stretch (outside packets) updates the floor by a log-domain EMA (`noise_floor_alpha`).
3. A packet starts where the window power rises above floor + `threshold_db`, and ends once it
   has stayed below floor + `end_threshold_db` (hysteresis) for `hangover_samples`.
4. Edges are then refined to the sample: the maximum-likelihood step point of the power
   (exponential model, noise floor vs the packet's level) near each crossing; optionally
   (`use_stf_autocorr`) the start of an OFDM packet from the delay-16 autocorrelation of its
   L-STF (Schmidl-Cox), which is sharp even at low SNR.
5. The cut starts `pre_trigger_samples` before the refined start and keeps the first
   `output_length` samples (post-truncation), zero post-padded, like Keras `pad_sequences(...,
   padding="post", truncating="post")`.

The state machine runs a few hundred samples behind the input (the lookahead the refinement
needs), and the refinement of all packets delimited in one `feed()` is one batch of array
operations. Only the last few hundred samples of the stream and the first `output_length`
samples of the packet in progress are kept.

A burst longer than `max_packet_samples` is force-cut (emitted, truncated, counted) and the rest
of it ignored; a channel that has not been quiet for `max_packet_samples` gets its floor
estimated afresh (the floor was too low: gain change, constant interferer). Non-finite samples,
`reset()` and index jumps drop the packet in progress (counted) and wait for a quiet channel
before the next start. Packets starting during the warm-up are missed.

Hostile input (issue 14): a sample with a component beyond `max_sample_magnitude` (random bytes
read as float32 reach 3e38, whose square overflows) is corrupt like a NaN: it ends the packet
in progress and is counted (`out_of_range_samples`), and no window sum ever holds it. The floor
estimate ignores windows below `noise_floor_min_power` (runs of zeros: no receiver's noise is
exactly zero), is never non-finite, stays within [`noise_floor_min_power`,
`noise_floor_max_power`], and follows an estimate more than 20 dB below it at once (a floor
left too high after a loud burst or a gain step would miss every packet), so detection recovers
within one `noise_floor_update_samples` (3.3 ms at 20 Msps) of quiet input.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field, fields

import numpy as np
from scipy.special import gammaincinv

from edge_core.schema import INPUT_LENGTH, SAMPLE_RATE_HZ
from edge_core.typed_config import ConfigProblems

SIFS_S = 16e-6
STF_PERIOD_S = 0.8e-6  # L-STF: ten 0.8 us short symbols
STF_LENGTH_S = 8e-6

_IDLE, _PACKET, _BLOCKED = 0, 1, 2
FAST_DROP_RATIO = 100.0
"""An estimate this much (20 dB) below the floor replaces it at once instead of by the EMA."""


@dataclass(frozen=True)
class AssemblerConfig:
    """Detector settings; lengths are in samples at `sample_rate_hz`."""

    sample_rate_hz: float = float(SAMPLE_RATE_HZ)
    window_samples: int = 16
    threshold_db: float = 5.0
    end_threshold_db: float = 2.5
    hangover_samples: int = 48
    pre_trigger_samples: int = 16
    min_packet_samples: int = 320
    max_packet_samples: int = 400_000  # 20 ms: longer than any 802.11 PPDU
    output_length: int = INPUT_LENGTH
    noise_floor_warmup_samples: int = 4096
    noise_floor_update_samples: int = 65_536
    noise_floor_percentile: float = 20.0
    noise_floor_alpha: float = 0.2
    noise_floor_power: float | None = None  # known mean noise power per sample: skip warm-up
    use_stf_autocorr: bool = False
    stf_min_correlation: float = 0.5
    # sane range of the input (full scale is +-1): beyond these the samples are corrupt
    max_sample_magnitude: float = 1e12  # |I| or |Q| above this: counted, skipped like NaN
    noise_floor_min_power: float = 1e-20  # windows below (zero runs) never set the floor
    noise_floor_max_power: float = 1e20

    def __post_init__(self) -> None:
        found = self.problems()
        if found:
            raise ConfigProblems([f"assembler.{key}: {why}" for key, why in found])

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) for every impossible value, all of them."""
        out: list[tuple[str, str]] = []

        def bad(name: str, why: str) -> None:
            out.append((name, f"{why}, got {getattr(self, name)!r}"))

        if not self.sample_rate_hz > 0:
            bad("sample_rate_hz", "must be > 0")
        for name in (
            "window_samples",
            "hangover_samples",
            "min_packet_samples",
            "output_length",
            "noise_floor_warmup_samples",
            "noise_floor_update_samples",
        ):
            if int(getattr(self, name)) < 1:
                bad(name, "must be >= 1")
        if self.pre_trigger_samples < 0:
            bad("pre_trigger_samples", "must be >= 0")
        if self.end_threshold_db > self.threshold_db:
            bad("end_threshold_db", f"must be <= threshold_db ({self.threshold_db})")
        if self.end_threshold_db <= 0:
            bad("end_threshold_db", "must be > 0 dB above the noise floor")
        if self.max_packet_samples < self.min_packet_samples:
            bad("max_packet_samples", "must be >= min_packet_samples")
        sifs = SIFS_S * self.sample_rate_hz
        if self.hangover_samples + self.window_samples >= sifs:
            bad(
                "hangover_samples",
                f"hangover + window must stay below SIFS ({sifs:.0f} samples) or a frame and "
                "its ACK merge",
            )
        if not 0 < self.noise_floor_percentile < 100:
            bad("noise_floor_percentile", "must be in (0, 100)")
        if not 0 < self.noise_floor_alpha <= 1:
            bad("noise_floor_alpha", "must be in (0, 1]")
        if self.noise_floor_power is not None and not self.noise_floor_power > 0:
            bad("noise_floor_power", "must be > 0")
        if not 0 < self.stf_min_correlation < 1:
            bad("stf_min_correlation", "must be in (0, 1)")
        if not 0 < self.max_sample_magnitude <= 1e15:
            bad("max_sample_magnitude", "must be in (0, 1e15] (float32 powers overflow)")
        if not 0 < self.noise_floor_min_power < self.noise_floor_max_power <= 1e30:
            bad(
                "noise_floor_min_power",
                f"want 0 < noise_floor_min_power < noise_floor_max_power "
                f"({self.noise_floor_max_power!r}) <= 1e30",
            )
        return out


@dataclass(eq=False)
class Packet:
    """One L1 packet cut from the stream."""

    start_sample: int  # absolute index of iq[0] (pre_trigger_samples before the detected start)
    end_sample: int  # absolute index one past the packet's last sample
    iq: np.ndarray = field(repr=False)  # (output_length,) complex64, zero post-padded
    truncated: bool  # longer than output_length: only the first output_length samples kept
    snr_db_estimate: float
    arrival_time: float | None  # arrival_time of the chunk (or its part) that held the last sample

    @property
    def num_samples(self) -> int:
        return self.end_sample - self.start_sample


@dataclass
class AssemblerStats:
    """Counters since construction (never reset)."""

    samples: int = 0
    detected: int = 0  # packets emitted
    truncated: int = 0  # emitted packets longer than output_length
    too_short: int = 0  # bursts shorter than min_packet_samples, dropped
    force_cut: int = 0  # bursts cut at max_packet_samples (also emitted and counted detected)
    dropped_on_reset: int = 0  # packets in progress at reset(), a discontinuity or bad samples
    nonfinite_samples: int = 0  # NaN/Inf samples zeroed and skipped
    out_of_range_samples: int = 0  # samples beyond max_sample_magnitude, skipped
    skipped_samples: int = 0  # all samples skipped around corrupt ones (first to last bad)
    discontinuities: int = 0  # feed() calls whose first_sample_index jumped

    def as_dict(self) -> dict[str, int]:
        # not dataclasses.asdict, which deep-copies: the source thread calls this per chunk
        # (DetectorHealth), and asdict was 40 % of its time at 0.2 ms chunks (issue 13)
        return {f.name: getattr(self, f.name) for f in fields(self)}


def moving_sum(
    p: np.ndarray, width: int, work: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """out[i] = sum(p[i : i + width]), (len(p) - width + 1,), by doubling (log2(width) passes).

    Each output is the same float operations on the same inputs wherever the array starts, so
    the result does not depend on how a stream was chunked (a running cumulative sum would).
    `work`: three scratch arrays of at least len(p) elements; the result may be a view of one.
    """
    n_out = p.size - width + 1
    if n_out <= 0:
        return np.empty(0, dtype=p.dtype)
    if work is None:
        work = (np.empty_like(p), np.empty_like(p), np.empty_like(p))
    spare_a, spare_b, acc = work
    block = p  # block[i] = sum(p[i : i + size])
    size, offset, started, toggle = 1, 0, False, 0
    while size <= width:
        if width & size:
            piece = block[offset : offset + n_out]
            if not started and offset + size == width:  # the only piece: no copy
                return piece
            if started:
                np.add(acc[:n_out], piece, out=acc[:n_out])
            else:
                acc[:n_out] = piece
                started = True
            offset += size
        if size * 2 <= width:
            target = (spare_a, spare_b)[toggle]  # never the array being read
            toggle ^= 1
            n_next = block.size - size
            np.add(block[:-size], block[size:], out=target[:n_next])
            block = target[:n_next]
        size *= 2
    return acc[:n_out]


def step_points(p: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per row of p (k, n): the split s in 0..n that best explains p[:s] by mean power
    before[row] and p[s:] by mean power after[row]; (k,) int.

    Maximum likelihood for exponentially distributed power (complex Gaussian signal and noise):
    the cost of a split at s is s log(before/after) + sum(p[:s]) (1/before - 1/after) + const.
    """
    k, n = p.shape
    cost = np.empty((k, n + 1), dtype=np.float64)
    cost[:, 0] = 0.0
    np.cumsum(p, axis=1, dtype=np.float64, out=cost[:, 1:])
    cost *= (1.0 / before - 1.0 / after)[:, None]
    cost += np.arange(n + 1, dtype=np.float64) * np.log(before / after)[:, None]
    return cost.argmin(axis=1)


class _Buffers:
    """Scratch arrays reused from chunk to chunk: fresh large temporaries cost page faults."""

    def __init__(self) -> None:
        self.size = 0
        self.ensure(1 << 12)

    def ensure(self, n: int) -> None:
        if n <= self.size:
            return
        self.size = size = max(n, 2 * self.size)
        self.power = np.empty(size, dtype=np.float32)
        self.squares = np.empty(2 * size, dtype=np.float32)
        self.sums = (
            np.empty(size, dtype=np.float32),
            np.empty(size, dtype=np.float32),
            np.empty(size, dtype=np.float32),
        )
        self.flag_a = np.empty(size, dtype=bool)
        self.flag_b = np.empty(size, dtype=bool)


_Parts = tuple[np.ndarray, np.ndarray]
"""(ends, times) of a chunk's parts: ends (parts,) int64 one past each part's last sample,
increasing; times (parts,) float64 their arrival times."""


def _check_parts(part_arrivals: _Parts | None, n: int) -> _Parts | None:
    """`part_arrivals` of a chunk of `n` samples as (int64 ends, float64 times), checked."""
    if part_arrivals is None:
        return None
    ends = np.asarray(part_arrivals[0])
    times = np.asarray(part_arrivals[1], dtype=np.float64)
    if ends.ndim != 1 or not ends.size or ends.shape != times.shape:
        raise ValueError(
            f"part_arrivals: want (ends, times) of the same length >= 1, got shapes "
            f"{ends.shape} and {times.shape}"
        )
    if ends.dtype.kind not in "iu" or int(ends[-1]) != n or not (np.diff(ends) > 0).all():
        raise ValueError(
            f"part_arrivals: ends must be increasing integers ending at the chunk's {n} "
            f"samples, got {ends.dtype} ending at {ends[-1]}"
        )
    if ends[0] <= 0:
        raise ValueError(f"part_arrivals: the first part must hold samples, ends[0] = {ends[0]}")
    return ends.astype(np.int64, copy=False), times


@dataclass
class _Span:
    """The samples in hand: history + new chunk, their power and window sums."""

    hist: np.ndarray  # (h,) complex64 at absolute e0 ..
    x: np.ndarray  # (n,) complex64 right after
    power: np.ndarray  # (h + n,) float32 |samples|^2
    sums: np.ndarray  # (h + n - w + 1,) window sums, sums[0] ends at absolute e0 + w - 1
    e0: int
    arrival_time: float | None
    _joined: np.ndarray | None = None

    def samples(self, lo: int, hi: int) -> np.ndarray:
        """Samples at absolute [lo, hi) (a view unless the range straddles history and chunk)."""
        a = self.e0 + self.hist.size
        if lo >= a:
            return self.x[lo - a : hi - a]
        if hi <= a:
            return self.hist[lo - self.e0 : hi - self.e0]
        return np.concatenate((self.hist[lo - self.e0 :], self.x[: hi - a]))

    def take(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Samples at absolute rows[:, None] + cols, clipped into the span; (k, len(cols))."""
        if self._joined is None:
            self._joined = np.concatenate((self.hist, self.x))
        idx = (rows - self.e0)[:, None] + cols[None, :]
        np.clip(idx, 0, self._joined.size - 1, out=idx)
        return self._joined[idx]


@dataclass
class _Events:
    """Packets the state machine delimited during one call, refined and cut together."""

    triggers: list[tuple[int, float]] = field(default_factory=list)  # (absolute, floor)
    # (trigger, quiet run complete or force-cut index, floor, forced, iq of a packet begun
    # in an earlier call or None), in stream order
    ended: list[tuple[int, int, float, bool, np.ndarray | None]] = field(default_factory=list)


class PacketAssembler:
    """Streaming packet detector and cutter; see the module docstring for the method.

    The state machine runs `lookahead` samples behind the input so that every edge refinement
    finds the samples it needs in hand; packets therefore come out at most a few microseconds
    after their end has arrived.
    """

    def __init__(self, config: AssemblerConfig | None = None) -> None:
        self.config = c = config or AssemblerConfig()
        self.stats = AssemblerStats()
        w = self._w = c.window_samples
        self._start_ratio = 10 ** (c.threshold_db / 10)
        self._end_ratio = 10 ** (c.end_threshold_db / 10)
        # Windowed noise power (mean of w exponentials) is Gamma(w, 1/w): its percentile q sits
        # at this fraction of the mean.
        self._percentile_to_mean = float(gammaincinv(w, c.noise_floor_percentile / 100) / w)
        self._max_power = 2.0 * float(c.max_sample_magnitude) ** 2  # of one sample
        self._stf_period = max(1, round(STF_PERIOD_S * c.sample_rate_hz))
        self._stf_half = max(2 * self._stf_period, round(STF_LENGTH_S * c.sample_rate_hz) // 2)
        self._cols = np.arange(10 * w + 1)  # edge refinement rows (see _refine)
        self._stf_cols = np.arange(2 * w + self._stf_half)  # from edge - 2w
        self._lookahead = 4 * w + self._stf_half + self._stf_period + 1
        back = max(8 * w + c.pre_trigger_samples, c.hangover_samples + 9 * w) + 8
        self._keep = self._lookahead + back
        self._buf = _Buffers()
        self._floor: float | None = None
        self._floor_values: list[np.ndarray] = []  # idle window sums since the last update
        self._next_event = 0  # absolute index of the next noise floor update
        self._next: int | None = None  # absolute index of the next sample to arrive
        self._proc = 0  # the state machine has run up to here (absolute, exclusive)
        self._valid_from = 0  # first absolute index whose window is all real samples
        self._data_from = 0  # first absolute index after the last break
        self._hist = np.empty(0, dtype=np.complex64)  # the last samples before self._next
        self._hist_power = np.empty(0, dtype=np.float32)
        # (lo, hi, arrival time, parts) of the chunks whose samples refinement may still read
        self._chunk_times: deque[tuple[int, int, float | None, _Parts | None]] = deque()
        self._pending: list[Packet] = []  # finished by a break, handed out by the next call
        self._mode = _BLOCKED
        self._blocked_since = 0  # where the current blocked stretch began
        self._run = 0  # quiet window sums in a row so far (packet / blocked)
        # The packet in progress: trigger, refined start, cut start, iq filled so far.
        self._trigger = 0
        self._edge = 0
        self._iq: np.ndarray | None = None
        self._filled = 0

    # -- public ---------------------------------------------------------------------------------
    @property
    def noise_floor_power(self) -> float | None:
        """Current estimate of the mean noise power per sample (None during warm-up)."""
        return self._floor

    def feed(
        self,
        samples: np.ndarray,
        first_sample_index: int | None = None,
        arrival_time: float | None = None,
        part_arrivals: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> list[Packet]:
        """Process the next chunk; return the packets finished so far.

        `first_sample_index` is the absolute index of samples[0]; a value other than the next
        expected index is a discontinuity (the packet in progress is dropped and counted).
        `arrival_time` is when the chunk's last sample arrived; a chunk joined from parts that
        arrived at different times gives `part_arrivals` = (ends, times) too: part i is
        samples[ends[i - 1]:ends[i]] and arrived at times[i], and a packet's arrival_time is
        that of the part that held its last sample.
        """
        x = np.asarray(samples)
        if x.ndim != 1 or not np.iscomplexobj(x):
            raise ValueError(f"feed() needs a 1-D complex array, got {x.dtype} {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.complex64)
        parts = _check_parts(part_arrivals, x.size)
        if self._next is None:
            self._start(0 if first_sample_index is None else int(first_sample_index))
        elif first_sample_index is not None and first_sample_index != self._next:
            self.stats.discontinuities += 1
            self._break(int(first_sample_index))
        self.stats.samples += x.size
        if parts is not None:  # absolute ends, so that any slice of x finds its parts
            parts = (parts[0] + self._next, parts[1])
        out = self._ingest(x, arrival_time, parts) if x.size else []
        if self._pending:
            out, self._pending = self._pending + out, []
        return out

    def flush(self) -> list[Packet]:
        """End of stream: finish detection and emit the packet in progress, cut where the
        samples end (if long enough)."""
        out, self._pending = self._pending, []
        if self._next is None:
            return out
        out += self._drain()
        if self._mode == _PACKET and self._floor is not None:
            pkt = self._emit(self._edge, self._next, self._floor, False, self._iq, None)
            if pkt is not None:
                out.append(pkt)
            self._block(self._next)
        return out

    def reset(self) -> None:
        """Discontinuity: drop the packet in progress (counted), keep the noise floor.

        Packets that ended before the discontinuity still come out of the next feed()/flush().
        """
        if self._next is not None:
            self._break(self._next)

    # -- stream bookkeeping ---------------------------------------------------------------------
    def _start(self, index: int) -> None:
        c = self.config
        self._next = self._proc = self._data_from = self._blocked_since = index
        self._valid_from = index + self._w - 1
        if c.noise_floor_power is not None:
            self._floor = float(c.noise_floor_power)
            self._next_event = index + c.noise_floor_update_samples
        else:
            self._next_event = index + c.noise_floor_warmup_samples

    def _break(self, next_index: int) -> None:
        """Forget the stream before `next_index`: drop any packet, wait for an idle channel."""
        self._pending += self._drain()
        if self._mode == _PACKET:
            self.stats.dropped_on_reset += 1
        self._block(next_index)
        self._hist = np.empty(0, dtype=np.complex64)
        self._hist_power = np.empty(0, dtype=np.float32)
        self._chunk_times.clear()
        self._next = self._proc = self._data_from = next_index
        self._valid_from = next_index + self._w - 1

    def _drain(self) -> list[Packet]:
        """Run the state machine up to the last sample received (no lookahead left)."""
        assert self._next is not None
        if self._proc >= self._next or self._hist.size < self._w:
            return []
        self._buf.ensure(self._hist.size)
        e0 = self._next - self._hist.size
        sums = moving_sum(self._hist_power, self._w, self._buf.sums)
        empty = np.empty(0, dtype=np.complex64)
        return self._advance(_Span(self._hist, empty, self._hist_power, sums, e0, None), True)

    def _time_of(self, index: int, fallback: float | None) -> float | None:
        """Arrival time of the sample at absolute `index` (its chunk's, or its part's)."""
        for lo, hi, t, parts in reversed(self._chunk_times):
            if lo <= index < hi:
                if parts is None:
                    return t
                ends, times = parts
                return float(times[np.searchsorted(ends, index, side="right")])
        return fallback

    def _floor_event(self, at: int) -> None:
        """Update the noise floor from the idle window sums collected since the last event."""
        c = self.config
        vals = np.concatenate(self._floor_values) if self._floor_values else np.empty(0)
        self._floor_values = []
        # windows of (near) zeros are no noise: a gap filled with zeros must not set the floor
        vals = vals[vals >= c.noise_floor_min_power * self._w]
        estimate = None
        if vals.size >= 16:
            k = round(c.noise_floor_percentile / 100 * (vals.size - 1))
            q = float(np.partition(vals, k)[k])  # the percentile, without np.percentile's cost
            estimate = q / self._w / self._percentile_to_mean
            if math.isfinite(estimate):
                estimate = min(max(estimate, c.noise_floor_min_power), c.noise_floor_max_power)
            else:  # cannot happen with sane samples; never let it reach the floor
                estimate = None
        if self._floor is None:
            if estimate is None:  # too little data (a break during warm-up): keep warming up
                self._next_event = at + c.noise_floor_warmup_samples
                return
            self._floor = estimate
            self._block(at)  # a packet may be under way: wait for quiet
        elif self._mode == _BLOCKED and at - self._blocked_since >= c.max_packet_samples:
            # Never quiet for longer than any packet lasts: the floor is too low (gain change,
            # constant interferer). Estimate it afresh.
            self._floor = None
            self._next_event = at + c.noise_floor_warmup_samples
            return
        elif estimate is not None and estimate * FAST_DROP_RATIO < self._floor:
            # Far below: the floor was left high by a loud burst or a gain step, and would
            # miss every packet until the EMA came down. Missed packets can only raise the
            # estimate, so one this low is the channel's.
            self._floor = estimate
        elif estimate is not None:
            # Missed packets can only raise the estimate, so follow decreases faster.
            alpha = c.noise_floor_alpha if estimate > self._floor else max(c.noise_floor_alpha, 0.5)
            log_floor = math.log(self._floor)
            log_floor += alpha * (math.log(estimate) - log_floor)
            self._floor = math.exp(log_floor)
        self._next_event = at + c.noise_floor_update_samples

    def _block(self, at: int) -> None:
        """Wait for a quiet channel from absolute index `at` on (no packet in progress)."""
        self._mode, self._run, self._iq = _BLOCKED, 0, None
        self._blocked_since = at

    # -- processing -----------------------------------------------------------------------------
    def _ingest(
        self, x: np.ndarray, arrival_time: float | None, parts: _Parts | None = None
    ) -> list[Packet]:
        assert self._next is not None
        a, n, h, w = self._next, x.size, self._hist.size, self._w
        buf = self._buf
        buf.ensure(h + n)
        power = buf.power[: h + n]
        power[:h] = self._hist_power
        squares = buf.squares[: 2 * n]
        with np.errstate(over="ignore", invalid="ignore"):  # corrupt samples: handled below
            np.multiply(x.view(np.float32), x.view(np.float32), out=squares)
            np.add(squares[0::2], squares[1::2], out=power[h:])
            sums = moving_sum(power, w, buf.sums)
        # NaN/Inf and out-of-range powers show in the window sums (powers are >= 0); windows
        # h, h + w, ... and the last one cover every new sample.
        probe = sums[h::w] if n >= w else power[h:]
        peak = max(float(probe.max()) if probe.size else 0.0, float(sums[-1]) if sums.size else 0.0)
        if not peak <= self._max_power * w:  # NaN compares False
            bad = self._corrupt(x)
            if bad.size:  # no packet may span corrupt samples: skip from the first to the last
                first, last = int(bad[0]), int(bad[-1])
                self.stats.skipped_samples += last - first + 1
                out = self._ingest(x[:first], arrival_time, parts) if first else []
                self._break(a + last + 1)
                if last + 1 < n:
                    out += self._ingest(x[last + 1 :], arrival_time, parts)
                return out
        self._chunk_times.append((a, a + n, arrival_time, parts))
        while self._chunk_times[0][1] <= a - self._keep:  # older than any refinement reads
            self._chunk_times.popleft()
        self._next = a + n
        out = self._advance(_Span(self._hist, x, power, sums, a - h, arrival_time), final=False)
        keep = self._keep
        if n >= keep:
            self._hist = x[-keep:].copy()
        else:
            self._hist = np.concatenate((self._hist, x))[-keep:]
        self._hist_power = power[-keep:].copy()
        return out

    def _corrupt(self, x: np.ndarray) -> np.ndarray:
        """Indices of the samples of `x` that are non-finite or beyond max_sample_magnitude
        (counted in the stats by kind)."""
        parts = x.view(np.float32).reshape(-1, 2)  # (n, 2) I, Q
        with np.errstate(invalid="ignore"):
            sane = (np.abs(parts) <= np.float32(self.config.max_sample_magnitude)).all(axis=1)
        bad = np.flatnonzero(~sane)
        if bad.size:
            nonfinite = int(np.count_nonzero(~np.isfinite(x[bad])))
            self.stats.nonfinite_samples += nonfinite
            self.stats.out_of_range_samples += bad.size - nonfinite
        return bad

    def _advance(self, span: _Span, final: bool) -> list[Packet]:
        """Run the state machine over the span's window sums (up to the lookahead unless
        `final`), then refine and cut the packets it delimited, all in one batch."""
        assert self._next is not None
        if self._iq is not None:
            self._fill_iq(span)
        carried = self._trigger if self._mode == _PACKET else None
        events = _Events()
        pos = max(self._proc, self._valid_from)
        end = self._next if final else self._next - self._lookahead
        while pos < end:
            if self._next_event <= pos:
                self._floor_event(pos)
                continue
            pos = self._run_segment(pos, min(end, self._next_event), span, events)
        self._proc = max(self._proc, end)
        if not events.triggers and not events.ended:
            return []
        return self._cut(events, span, carried)

    def _run_segment(self, lo: int, hi: int, span: _Span, events: _Events) -> int:
        """State machine over absolute [lo, hi) with a constant noise floor; Python only visits
        threshold crossings. Returns where it stopped: hi, or earlier after a force cut (the
        floor is then estimated afresh)."""
        c, w, m = self.config, self._w, hi - lo
        seg = span.sums[lo - span.e0 - w + 1 : hi - span.e0 - w + 1]  # (m,) window sums
        if self._floor is None:  # warm-up: collect, do not detect
            self._floor_values.append(seg[(-lo) % w :: w].copy())
            return hi
        floor, buf = self._floor, self._buf
        rising: list[int] | None = None
        completions: list[int] = []
        trailing = 0
        if self._mode != _IDLE:
            completions, trailing = self._quiet_runs(seg, 0)
        busy: list[tuple[int, int]] = [] if self._mode == _IDLE else [(0, m)]
        i = 0
        while True:
            if self._mode == _IDLE:
                if rising is None:
                    above = np.greater(seg, floor * self._start_ratio * w, out=buf.flag_a[:m])
                    rises = np.greater(above[1:], above[:-1], out=buf.flag_b[: m - 1])
                    rising = ([0] if above[0] else []) + (np.flatnonzero(rises) + 1).tolist()
                    if rising and not busy:  # runs only matter from the first trigger on
                        completions, trailing = self._quiet_runs(seg, rising[0])
                k = bisect_left(rising, i)
                if k == len(rising):
                    self._run = 0
                    break
                j = rising[k]
                self._mode, self._trigger, i = _PACKET, lo + j, j + 1
                events.triggers.append((lo + j, floor))
                busy.append((j, m))
            k = bisect_left(completions, i)
            done = completions[k] if k < len(completions) else None
            if self._mode == _PACKET:
                limit = self._trigger + c.max_packet_samples - lo
                if limit < (m if done is None else done):
                    limit = max(limit, 0)
                    events.ended.append((self._trigger, lo + limit, floor, True, self._iq))
                    self._block(lo + limit)  # the rest of the burst is no new packet
                    return lo + limit
            if done is None:
                self._run = trailing
                break
            busy[-1] = (busy[-1][0], done + 1)
            if self._mode == _PACKET:
                events.ended.append((self._trigger, lo + done, floor, False, self._iq))
                self._iq = None
            self._mode, self._run, i = _IDLE, 0, done + 1
        self._collect_idle(seg, lo, busy)
        return hi

    def _quiet_runs(self, seg: np.ndarray, begin: int) -> tuple[list[int], int]:
        """Where runs of window sums below the end threshold reach hangover_samples (indices
        into seg, looking from `begin` on; the run carried over from the last segment counts),
        and the length of the run at the end of `seg`."""
        assert self._floor is not None
        seg = seg[begin:]
        m, buf = seg.size, self._buf
        quiet = np.less(seg, self._floor * self._end_ratio * self._w, out=buf.flag_a[:m])
        flips = np.flatnonzero(np.not_equal(quiet[1:], quiet[:-1], out=buf.flag_b[: m - 1]))
        bounds = np.concatenate(([0], flips + 1, [m]))  # alternating False/True runs
        first = 0 if quiet[0] else 1
        run_starts = bounds[first:-1:2].copy()
        if first == 0 and begin == 0 and self._mode != _IDLE:
            run_starts[0] -= self._run
        complete = run_starts + (self.config.hangover_samples - 1)
        completions = (complete[complete < bounds[first + 1 :: 2]] + begin).tolist()
        trailing = int(m - run_starts[-1]) if quiet[-1] and run_starts.size else 0
        return completions, trailing

    def _cut(self, events: _Events, span: _Span, carried: int | None) -> list[Packet]:
        """Refine the edges of the delimited packets (one batch) and cut them."""
        c = self.config
        natural = [(index - c.hangover_samples + 1, floor) for _, index, floor, forced, _ in
                   events.ended if not forced]  # fmt: skip
        starts, ends = self._refine(events.triggers, natural, span)
        edges = {t: e for (t, _), e in zip(events.triggers, starts, strict=True)}
        if carried is not None:
            edges[carried] = self._edge
        out: list[Packet] = []
        k = 0
        for trigger, index, floor, forced, iq in events.ended:
            edge = edges[trigger]
            if forced:
                end = index
            else:
                end, k = max(ends[k], edge), k + 1
            pkt = self._emit(edge, end, floor, forced, iq, span)
            if pkt is not None:
                out.append(pkt)
        if self._mode == _PACKET and self._trigger != carried:  # begun here, still going
            self._edge = edges[self._trigger]
            self._iq = np.zeros(c.output_length, dtype=np.complex64)
            self._filled = 0
            self._fill_iq(span)
        return out

    def _refine(
        self,
        triggers: list[tuple[int, float]],
        quiet_from: list[tuple[int, float]],
        span: _Span,
    ) -> tuple[list[int], list[int]]:
        """Sample-exact packet starts (from triggers) and ends (from where the quiet runs
        began), each the maximum-likelihood step between the noise floor and the packet's
        level. One batch: a row per edge, end rows read backwards so that every row steps up
        from the floor: [step window (6w + 1) | level window (4w)].

        Starts are searched in [trigger - 6w, trigger]; ends in [quiet - 5w, quiet + w] (noise
        can hold the window sum above the end threshold for a while after the packet)."""
        w, n1 = self._w, len(triggers)
        if not triggers and not quiet_from:
            return [], []
        step, width = 6 * w + 1, self._cols.size
        base = [t - 6 * w for t, _ in triggers] + [q + w for q, _ in quiet_from]
        floors = [f for _, f in triggers] + [f for _, f in quiet_from]
        direction = np.ones(len(base), dtype=np.int64)
        direction[n1:] = -1
        origin = np.array(base, dtype=np.int64) - span.e0
        idx = origin[:, None] + direction[:, None] * self._cols  # (k, 10w + 1)
        lowest = min(base[:n1] + [b - width + 1 for b in base[n1:]]) - span.e0
        highest = max([b + width - 1 for b in base[:n1]] + base[n1:]) - span.e0
        if lowest < 0 or highest >= span.power.size:  # stream start, or flush
            np.clip(idx, 0, span.power.size - 1, out=idx)
        p = span.power[idx]  # (k, 10w + 1)
        level = (p[:, step:].sum(axis=1, dtype=np.float64) / (width - step)).tolist()
        usable = [lv > 1.05 * f for lv, f in zip(level, floors, strict=True)]
        after = [lv if ok else 2 * f for lv, f, ok in zip(level, floors, usable, strict=True)]
        split = step_points(p[:, :step], np.array(floors), np.array(after)).tolist()
        starts = [
            b + s if ok else b + 6 * w - w // 2
            for b, s, ok in zip(base[:n1], split, usable, strict=False)
        ]
        ends = [
            b + 1 - s if ok else b - w
            for b, s, ok in zip(base[n1:], split[n1:], usable[n1:], strict=True)
        ]
        if starts and self.config.use_stf_autocorr:
            starts = self._refine_stf(np.array(starts, dtype=np.int64), span).tolist()
        return [max(e, self._data_from) for e in starts], ends

    def _collect_idle(self, seg: np.ndarray, lo: int, busy: list[tuple[int, int]]) -> None:
        """Keep every fourth whole-window sum outside packets for the floor estimate."""
        stride = 4 * self._w
        first = (-lo) % stride
        vals = seg[first::stride]
        if busy and vals.size:
            keep = np.ones(vals.size, dtype=bool)
            for a, b in busy:
                keep[max(0, -((first - a) // stride)) : max(0, -((first - b) // stride))] = False
            vals = vals[keep]
        if vals.size:
            self._floor_values.append(vals.copy())

    def _refine_stf(self, edges: np.ndarray, span: _Span) -> np.ndarray:
        """OFDM starts from the L-STF: r[k] = x[k] conj(x[k + 16]) has a constant phase and
        mean inside the L-STF and mean zero before it; the start is the least-squares step of r
        projected on that phase. Rows without an L-STF plateau keep their edge."""
        w, d = self._w, self._stf_period
        lo = edges - 2 * w
        x = span.take(lo, self._stf_cols)  # (k, 2w + half STF)
        delayed = span.take(lo + d, self._stf_cols)
        r = x * np.conj(delayed)
        plateau = r[:, 2 * w + d :]  # well inside the L-STF if the edge is roughly right
        total = plateau.sum(axis=1)
        energy = (np.abs(delayed[:, 2 * w + d :]) ** 2).sum(axis=1)
        strength = np.abs(total)
        has_stf = (energy > 0) & (strength >= self.config.stf_min_correlation * energy)
        phase = np.where(has_stf, np.conj(total) / np.maximum(strength, 1e-30), 1.0)
        projected = (r * phase[:, None]).real - (0.5 * strength / plateau.shape[1])[:, None]
        prefix = np.zeros((r.shape[0], r.shape[1] + 1), dtype=np.float64)
        np.cumsum(projected, axis=1, dtype=np.float64, out=prefix[:, 1:])
        stf = lo + np.argmin(prefix, axis=1)
        return np.where(has_stf & (np.abs(stf - edges) <= 2 * w), stf, edges)

    def _fill_iq(self, span: _Span) -> None:
        """Copy the newly arrived samples of the packet in progress into its iq."""
        assert self._iq is not None
        start = self._edge - self.config.pre_trigger_samples
        start = max(start, self._data_from)
        lo = start + self._filled
        hi = min(start + self._iq.size, span.e0 + span.hist.size + span.x.size)
        if hi > lo:
            self._iq[self._filled : hi - start] = span.samples(lo, hi)
            self._filled = hi - start

    def _emit(
        self,
        edge: int,
        end: int,
        floor: float,
        forced: bool,
        iq: np.ndarray | None,
        span: _Span | None,
    ) -> Packet | None:
        """Cut [edge - pre_trigger, end) to output_length samples: into `iq` (the packet began
        in an earlier call and was filled as it came) or from `span`."""
        c = self.config
        if not forced and end - edge < c.min_packet_samples:
            self.stats.too_short += 1
            return None
        start = max(edge - c.pre_trigger_samples, self._data_from)
        kept = min(end - start, c.output_length)
        if iq is None:
            assert span is not None
            iq = np.empty(c.output_length, dtype=np.complex64)
            iq[:kept] = span.samples(start, start + kept)
        iq[kept:] = 0
        inside = iq[edge - start : kept]
        signal = float(np.vdot(inside, inside).real) / inside.size if inside.size else floor
        snr_db = 10 * math.log10(max(signal / floor - 1.0, 1e-3))
        truncated = end - start > c.output_length
        self.stats.detected += 1
        self.stats.truncated += int(truncated)
        self.stats.force_cut += int(forced)
        fallback = span.arrival_time if span is not None else None
        if fallback is None and self._chunk_times:
            fallback = self._chunk_times[-1][2]
        return Packet(
            start_sample=start,
            end_sample=end,
            iq=iq,
            truncated=truncated,
            snr_db_estimate=round(snr_db, 2),
            arrival_time=self._time_of(end - 1, fallback),
        )

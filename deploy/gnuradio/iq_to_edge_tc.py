#!/usr/bin/env python3
"""A headless GNU Radio flowgraph that feeds edge-tc: IQ samples -> zeromq.pub_sink.

    python3 deploy/gnuradio/iq_to_edge_tc.py --sigmf rec.sigmf-meta            # a recording
    python3 deploy/gnuradio/iq_to_edge_tc.py --sigmf rec --repeat               # looped
    python3 deploy/gnuradio/iq_to_edge_tc.py --sigmf rec --tail-s 0.01 --wait   # tests

Flowgraph: blocks.file_source (the recording's cf32 samples, optionally followed by `--tail-s`
seconds of zeros from a blocks.vector_source_c so that its last packet ends) -> blocks.throttle
(at the recording's sample rate: real time) -> zeromq.pub_sink(gr_complex, bind on
`--address`, pass_tags off). The daemon's matching source:

    [source]
    type = "zmq"
    address = "tcp://127.0.0.1:5555"
    socket = "sub"
    sample_rate_hz = 20000000.0

Runs with the system's Python and GNU Radio (Debian `gnuradio` 3.10); imports nothing from
edge-tc. With an SDR, replace the file source with `soapy.source` or `osmosdr.source` at
20 MS/s, as in GNU Radio Companion. Prints "done <items> ..." at the end.

`--wait` (tests): a PUB socket drops what it sends until a subscriber's subscription has reached
it, and nothing tells the sender when that is. So the flowgraph binds and sends probe messages
of NaN items (`PROBE_ITEMS` every `PROBE_PERIOD_S`; edge-tc counts non-finite samples and its
detector skips them, logging "detector: corrupt input") and prints "probing <address>"; after
a line on stdin it restarts the throttle's clock and streams the recording, then
`END_PROBE_ITEMS` NaN items (a peer that sees them has had every sample before them), and
prints "done <items> (probe items: <before> before, <after> after the recording)". The peer
sees the last of the probe items before the recording: its own count of skipped non-finite
samples says how many.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

import numpy as np
from gnuradio import blocks, gr, zeromq

PROBE_ITEMS = 256
PROBE_PERIOD_S = 0.01
END_PROBE_ITEMS = 256


def recording_paths(base: str) -> tuple[Path, Path]:
    """`X`, `X.sigmf-meta` or `X.sigmf-data` -> (meta, data)."""
    stem = base.removesuffix(".sigmf-meta").removesuffix(".sigmf-data")
    return Path(stem + ".sigmf-meta"), Path(stem + ".sigmf-data")


class ProbeGate(gr.basic_block):
    """Until `go`: NaN probe items (PROBE_ITEMS every PROBE_PERIOD_S; the input waits). Then the
    input as it is, and after `items` of it (None: no end), END_PROBE_ITEMS NaN items."""

    def __init__(self, items: int | None) -> None:
        gr.basic_block.__init__(
            self, name="probe_gate", in_sig=[np.complex64], out_sig=[np.complex64]
        )
        self.go = threading.Event()
        self.items = items
        self.passed = 0
        self.before = 0  # probe items sent before the input
        self.after = 0  # probe items sent after it

    def _input_left(self) -> int:
        return -1 if self.items is None else self.items - self.passed

    def forecast(self, noutput_items: int, ninputs: int) -> list[int]:
        if not self.go.is_set() or self._input_left() == 0:
            return [0]
        left = self._input_left()
        return [noutput_items if left < 0 else min(noutput_items, left)]

    def general_work(self, input_items, output_items) -> int:
        out = output_items[0]
        if not self.go.is_set():
            self.go.wait(PROBE_PERIOD_S)
            n = min(len(out), PROBE_ITEMS)
            out[:n] = np.nan
            self.before += n
            return n
        left = self._input_left()
        if left != 0:
            n = min(len(input_items[0]), len(out), left if left > 0 else len(out))
            out[:n] = input_items[0][:n]
            self.consume(0, n)
            self.passed += n
            return n
        if self.after < END_PROBE_ITEMS:
            n = min(len(out), END_PROBE_ITEMS - self.after)
            out[:n] = np.nan
            self.after += n
            return n
        return -1  # WORK_DONE


class IqToEdgeTc(gr.top_block):
    def __init__(
        self, data: Path, rate_hz: float, address: str, repeat: bool, tail: int, probe: bool
    ):
        super().__init__("iq_to_edge_tc")
        item = gr.sizeof_gr_complex
        self.rate_hz = rate_hz
        self.source = blocks.file_source(item, str(data), repeat)
        self.throttle = blocks.throttle(item, rate_hz, True)
        self.sink = zeromq.pub_sink(item, 1, address, 100, False, -1, "")
        self.gate: ProbeGate | None = None
        if probe:
            total = None if repeat else data.stat().st_size // item + max(tail, 0)
            self.gate = ProbeGate(total)
            self.connect(self.gate, self.sink)
        if tail > 0 and not repeat:
            self.tail = blocks.vector_source_c([0j] * tail, False)
            self.join = blocks.stream_mux(item, [data.stat().st_size // item, tail])
            self.connect(self.source, (self.join, 0))
            self.connect(self.tail, (self.join, 1))
            self.connect(self.join, self.throttle)
        else:
            self.connect(self.source, self.throttle)
        self.connect(self.throttle, self.gate if self.gate is not None else self.sink)

    def go(self) -> None:
        """End the probe: the recording streams at the sample rate from now on."""
        assert self.gate is not None
        # the throttle stood still behind the gate: restart its clock, or it would send the
        # time it stood still at full speed to catch up (set_sample_rate resets it)
        self.throttle.set_sample_rate(self.rate_hz)
        self.gate.go.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigmf", required=True, help="recording: X, X.sigmf-meta or -data")
    parser.add_argument("--address", default="tcp://127.0.0.1:5555", help="pub_sink bind")
    parser.add_argument("--repeat", action="store_true", help="loop the recording")
    parser.add_argument("--tail-s", type=float, default=0.0, help="zeros after the recording")
    parser.add_argument(
        "--wait", action="store_true", help="send NaN probe items until a line on stdin (tests)"
    )
    args = parser.parse_args(argv)

    meta_path, data_path = recording_paths(args.sigmf)
    with meta_path.open() as f:
        meta = json.load(f)
    datatype = meta["global"]["core:datatype"]
    if datatype not in ("cf32_le", "cf32"):
        parser.error(f"{meta_path}: core:datatype {datatype!r}; this flowgraph reads cf32_le")
    rate_hz = float(meta["global"]["core:sample_rate"])
    tail = round(args.tail_s * rate_hz)
    flowgraph = IqToEdgeTc(data_path, rate_hz, args.address, args.repeat, tail, args.wait)
    flowgraph.start()
    if flowgraph.gate is not None:
        print(f"probing {args.address}", flush=True)
        sys.stdin.readline()
        flowgraph.go()
    flowgraph.wait()
    gate, probes = flowgraph.gate, ""
    if gate is not None:
        probes = f" (probe items: {gate.before} before, {gate.after} after the recording)"
    print(f"done {flowgraph.sink.nitems_read(0)}{probes}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

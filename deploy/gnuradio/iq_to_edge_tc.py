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
20 MS/s, as in GNU Radio Companion. `--wait`: bind, print "bound <address>", and start only
after a line on stdin (a test connects the daemon first: a PUB socket drops what it sends
before a subscriber is there). Prints "done <items>" at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gnuradio import blocks, gr, zeromq


def recording_paths(base: str) -> tuple[Path, Path]:
    """`X`, `X.sigmf-meta` or `X.sigmf-data` -> (meta, data)."""
    stem = base.removesuffix(".sigmf-meta").removesuffix(".sigmf-data")
    return Path(stem + ".sigmf-meta"), Path(stem + ".sigmf-data")


class IqToEdgeTc(gr.top_block):
    def __init__(self, data: Path, rate_hz: float, address: str, repeat: bool, tail: int):
        super().__init__("iq_to_edge_tc")
        item = gr.sizeof_gr_complex
        self.source = blocks.file_source(item, str(data), repeat)
        self.throttle = blocks.throttle(item, rate_hz, True)
        self.sink = zeromq.pub_sink(item, 1, address, 100, False, -1, "")
        if tail > 0 and not repeat:
            self.tail = blocks.vector_source_c([0j] * tail, False)
            self.join = blocks.stream_mux(item, [data.stat().st_size // item, tail])
            self.connect(self.source, (self.join, 0))
            self.connect(self.tail, (self.join, 1))
            self.connect(self.join, self.throttle)
        else:
            self.connect(self.source, self.throttle)
        self.connect(self.throttle, self.sink)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigmf", required=True, help="recording: X, X.sigmf-meta or -data")
    parser.add_argument("--address", default="tcp://127.0.0.1:5555", help="pub_sink bind")
    parser.add_argument("--repeat", action="store_true", help="loop the recording")
    parser.add_argument("--tail-s", type=float, default=0.0, help="zeros after the recording")
    parser.add_argument("--wait", action="store_true", help="start after a line on stdin")
    args = parser.parse_args(argv)

    meta_path, data_path = recording_paths(args.sigmf)
    with meta_path.open() as f:
        meta = json.load(f)
    datatype = meta["global"]["core:datatype"]
    if datatype not in ("cf32_le", "cf32"):
        parser.error(f"{meta_path}: core:datatype {datatype!r}; this flowgraph reads cf32_le")
    rate_hz = float(meta["global"]["core:sample_rate"])
    tail = round(args.tail_s * rate_hz)
    flowgraph = IqToEdgeTc(data_path, rate_hz, args.address, args.repeat, tail)
    if args.wait:
        print(f"bound {args.address}", flush=True)
        sys.stdin.readline()
    flowgraph.start()
    flowgraph.wait()
    print(f"done {flowgraph.sink.nitems_read(0)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

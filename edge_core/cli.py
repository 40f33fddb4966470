"""The `edge-tc` command: one entry point; each package registers its own subcommands.

A package adds commands through the `edge_tc.commands` entry-point group (pyproject.toml): each
entry names a function that takes the main parser's subparsers and adds its commands, the way
pytest and flask find their plugins. The core registers `synth` and `inspect` here, `engines`
registers `bench`, the service `run` and `check-config`, the offline tool `train`; this module
imports none of them, so the layers below never import the layers above.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points

from edge_core.errors import EdgeTcError

EXIT_BAD_INPUT = 2
COMMAND_GROUP = "edge_tc.commands"
"""The entry-point group of subcommand registrars: `name = "module:add_parser"`."""


def _snr_range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = float(values[0]), float(values[1])
    if lo > hi:
        raise argparse.ArgumentTypeError(f"--snr-db: LO {lo} > HI {hi}")
    return lo, hi


def _cmd_synth_dataset(args: argparse.Namespace) -> int:
    from edge_core.synth.dataset import write_dataset
    from edge_core.synth.impairments import Impairments

    impairments = Impairments(snr_db=_snr_range(args.snr_db))
    out = write_dataset(
        args.out, args.packets, args.seed, impairments=impairments, workers=args.workers,
        progress=not args.quiet,
    )  # fmt: skip
    print(f"wrote {args.packets} packets to {out}")
    return 0


def _cmd_synth_stream(args: argparse.Namespace) -> int:
    from edge_core.synth.stream import StreamConfig, write_stream

    config = StreamConfig(snr_db=_snr_range(args.snr_db), traffic_scale=args.traffic_scale)
    base = write_stream(args.out, args.seconds, args.seed, config, progress=not args.quiet)
    print(f"wrote {base}.sigmf-meta and {base}.sigmf-data")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from edge_core.assembler import AssemblerConfig
    from edge_core.inspect import inspect_recording

    config = AssemblerConfig(use_stf_autocorr=args.stf)
    report = inspect_recording(args.file, config)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key in ("annotated", "detected", "matched", "recall", "precision",
                    "start_error_samples_median"):  # fmt: skip
            print(f"{key:>28}: {report[key]}")
    return 0


def add_core_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `edge-tc synth ...` and `edge-tc inspect`."""
    synth = sub.add_parser("synth", help="generate synthetic 802.11 traffic")
    synth_sub = synth.add_subparsers(dest="synth_command", required=True)

    ds = synth_sub.add_parser("dataset", help="labelled packet dataset (iq.npy + labels.csv)")
    ds.add_argument("--out", required=True, help="output directory")
    ds.add_argument("--packets", type=int, default=10_000, help="number of packets (default 10000)")
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--snr-db", type=float, nargs=2, metavar=("LO", "HI"), default=(5.0, 30.0))
    ds.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, <=4)")
    ds.add_argument("--quiet", action="store_true", help="no progress bar")
    ds.set_defaults(func=_cmd_synth_dataset)

    st = synth_sub.add_parser("stream", help="continuous channel as a SigMF recording")
    st.add_argument("--out", default="out/stream", help="recording base name (default out/stream)")
    st.add_argument("--seconds", type=float, default=1.0)
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--snr-db", type=float, nargs=2, metavar=("LO", "HI"), default=(5.0, 30.0))
    st.add_argument("--traffic-scale", type=float, default=1.0, help="multiply packet rates")
    st.add_argument("--quiet", action="store_true", help="no progress bar")
    st.set_defaults(func=_cmd_synth_stream)

    ins = sub.add_parser(
        "inspect", help="run the packet detector on a recording vs its annotations"
    )
    ins.add_argument("file", help="X.sigmf-meta (or .sigmf-data, or the base name)")
    ins.add_argument("--json", action="store_true", help="print the report as JSON")
    ins.add_argument("--stf", action="store_true", help="refine OFDM starts with L-STF autocorr")
    ins.set_defaults(func=_cmd_inspect)


def _unavailable(name: str, error: BaseException) -> Callable[[argparse.Namespace], int]:
    def fail(_args: argparse.Namespace) -> int:
        raise EdgeTcError(
            f"command {name!r} unavailable: {type(error).__name__}: {error}; "
            "install the extra that provides it (pip install 'edge-tc[...]')"
        )

    return fail


def _register(sub: argparse._SubParsersAction[argparse.ArgumentParser], ep: EntryPoint) -> None:
    """Run one registrar; one that cannot be imported leaves a command that says why."""
    try:
        add_parser = ep.load()
    except ImportError as exc:
        stub = sub.add_parser(ep.name, help=f"unavailable ({exc})", add_help=False)
        stub.add_argument("rest", nargs=argparse.REMAINDER)
        stub.set_defaults(func=_unavailable(ep.name, exc))
        return
    add_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    """The main parser, with every installed package's subcommands."""
    parser = argparse.ArgumentParser(
        prog="edge-tc", description="Spectrum-based 802.11 traffic classification at the edge."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    registrars = sorted(entry_points(group=COMMAND_GROUP), key=lambda ep: ep.name)
    if not registrars:
        raise EdgeTcError(
            f"no {COMMAND_GROUP!r} entry points: edge-tc is not installed (pip install -e .)"
        )
    for ep in registrars:
        _register(sub, ep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (EdgeTcError, ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"edge-tc: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())

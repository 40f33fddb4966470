"""The `edge-tc train ...` command group; `add_train_parser` hooks it into the main parser.

Importing this module needs no torch: the handlers import `train.models` when they run, and a
missing torch becomes an `EdgeTcError` saying which extra to install.
"""

from __future__ import annotations

import argparse
import json
from types import ModuleType

from edge_daemon.errors import EdgeTcError
from edge_daemon.schema import INPUT_LENGTH
from train import MODEL_NAMES, TRAIN_EXTRA_MISSING

DEFAULT_CLASSES = 3
"""Classes of a single-task model when --classes is not given (phy, frame, app_type)."""

_TRAIN_MODULES = ("torch", "h5py")


def _models() -> ModuleType:
    try:
        from train import models
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in _TRAIN_MODULES:
            raise EdgeTcError(f"{TRAIN_EXTRA_MISSING} ({exc})") from exc
        raise
    return models


def _cmd_describe(args: argparse.Namespace) -> int:
    if args.model == "mtl1d" and args.classes is not None:
        raise ValueError("mtl1d takes its classes from the task schema; drop --classes")
    models = _models()
    classes = args.classes
    if args.model != "mtl1d" and classes is None:
        classes = DEFAULT_CLASSES
    model = models.build_model(args.model, classes=classes, length=args.length, kernel=args.kernel)
    info = models.describe(model, args.length)
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:>16}: {value:,}" if isinstance(value, int) else f"{key:>16}: {value}")
    return 0


def add_train_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `train` and its subcommands to the main parser's `subparsers`."""
    train = subparsers.add_parser("train", help="design, train and prune models (train extra)")
    train_sub = train.add_subparsers(dest="train_command", required=True)

    desc = train_sub.add_parser(
        "describe",
        help="parameters and FLOPs of an architecture",
        description="Parameters (the source paper's convention) and FLOPs (2 x conv/linear MACs) "
        "per sample.",
    )
    desc.add_argument("model", choices=MODEL_NAMES)
    desc.add_argument(
        "--classes",
        type=int,
        default=None,
        help=f"classes of a single-task model (default {DEFAULT_CLASSES}; mtl1d: the schema's)",
    )
    desc.add_argument(
        "--length", type=int, default=INPUT_LENGTH, help=f"input length (default {INPUT_LENGTH})"
    )
    desc.add_argument(
        "--kernel", type=int, default=None, help="kernel size (default: the published one)"
    )
    desc.add_argument("--json", action="store_true", help="print the result as JSON")
    desc.set_defaults(func=_cmd_describe)

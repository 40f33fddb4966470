"""The `edge-tc train ...` command group; `add_train_parser` hooks it into the main parser.

Importing this module needs no torch: the handlers import `train.models` when they run, and a
missing torch becomes an `EdgeTcError` saying which extra to install.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_core.errors import EdgeTcError
from edge_core.schema import INPUT_LENGTH, TASK_BY_NAME
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


# --- prune and sweep (paper 2) ------------------------------------------------------------------


def _add_finetune_options(p: argparse.ArgumentParser, *, data_required: bool = True) -> None:
    """Options shared by `prune` and `sweep`: the model, the data and the fine-tuning."""
    p.add_argument("--checkpoint", required=True, help="trained model (a train.checkpoint file)")
    p.add_argument("--data", required=data_required, help="dataset directory (iq.npy + labels.csv)")
    p.add_argument("--out", required=data_required, help="directory to write the results to")
    p.add_argument(
        "--iterations", type=int, default=1, help="prune -> fine-tune rounds (default 1)"
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=150,
        help="most fine-tuning epochs per round, 0 for none (default 150, as paper 2)",
    )
    p.add_argument(
        "--patience", type=int, default=10, help="early-stopping patience (default 10, paper 2)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="fine-tuning batch (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument(
        "--weighting", choices=("dtp", "uniform"), default="dtp", help="multi-task loss weights"
    )
    p.add_argument("--seed", type=int, default=0, help="fine-tuning seed (default 0)")
    p.add_argument(
        "--split",
        choices=("balanced", "tc_spectrum"),
        default=None,
        help="data split; accuracies are on its test part (default: the checkpoint's, else "
        "balanced)",
    )
    p.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="split seed (default: the checkpoint's, else 42)",
    )
    p.add_argument(
        "--task",
        default=None,
        help="task of a single-task model whose checkpoint does not name it",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--workers", type=int, default=0, help="data loader workers (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


class _PruneSession:
    """The checkpoint, the split and the fine-tune / evaluate callables of `prune` and `sweep`."""

    def __init__(self, args: argparse.Namespace) -> None:
        _models()  # a missing torch is reported as the missing train extra
        from train import kpi, trainer
        from train.checkpoint import load_checkpoint

        if args.iterations < 1:
            raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
        if args.epochs < 0:
            raise ValueError(f"--epochs must be >= 0, got {args.epochs}")
        self.args = args
        self.model, self.spec, extra = load_checkpoint(args.checkpoint)
        recorded = extra.get("split")
        trained: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
        kind = args.split or trained.get("kind", "balanced")
        seed = int(args.split_seed if args.split_seed is not None else trained.get("seed", 42))
        if trained and (kind, seed) != (trained.get("kind"), trained.get("seed")):
            print(
                f"warning: {args.checkpoint} was trained on the {trained.get('kind')} split "
                f"(seed {trained.get('seed')}); the {kind} split (seed {seed}) may test on its "
                "training packets",
                file=sys.stderr,
            )
        by = str(trained.get("by", "random"))  # the checkpoint's own test packets stay unseen
        self.data = _load_split(trainer, args.data, kind, seed, by)
        self.split_info = {"kind": self.data.kind, "seed": self.data.seed, "by": by}
        length = int(self.spec.kwargs.get("length", INPUT_LENGTH))
        packet_length = int(self.data.dataset[0][0].shape[-1])
        if packet_length != length:
            raise ValueError(
                f"{args.checkpoint}: model input length {length}, {args.data} packets "
                f"{packet_length}"
            )
        if len(self.data.split.test) == 0:
            raise ValueError(f"{args.data}: the {kind} split leaves no test packets")
        tasks = [args.task] if args.task else extra.get("tasks")
        self.tasks = kpi.resolve_tasks(self.model, tasks, length)
        self.cfg = None
        if args.epochs > 0:
            self.cfg = trainer.TrainConfig(
                lr=args.lr,
                batch_size=args.batch_size,
                max_epochs=args.epochs,
                patience=args.patience,
                seed=args.seed,
                weighting=args.weighting,
                num_workers=args.workers,
                device=args.device,
            )
        self._kpi, self._trainer = kpi, trainer

    def evaluate(self, model: Any) -> dict[str, float]:
        """Accuracy per task on the split's test packets."""
        kpis = self._kpi.evaluate(model, self.data.test, None, self.tasks)
        return {t: float(v["accuracy"]) for t, v in kpis["per_task"].items()}

    def fine_tuning(self) -> dict[str, Any] | None:
        """The fine-tuning settings a pruned model records (None: --epochs 0)."""
        return self.cfg.to_dict() if self.cfg is not None else None

    def finetune_into(self, directory: Path) -> Callable[[Any, Any], Any]:
        """A `train.prune.Finetune` training each round in directory/round_<i> (best.pt etc.)."""
        rounds = 0

        def finetune(model: Any, spec: Any) -> Any:
            nonlocal rounds
            if self.cfg is None:  # --epochs 0: the inherited weights as they are
                return model
            rounds += 1
            history = self._trainer.fit(
                spec,
                self.data.train,
                self.data.val,
                self.cfg,
                directory / f"round_{rounds}",
                init_state=model.state_dict(),
                tasks=self.tasks,
                progress=not self.args.no_progress,
                checkpoint_extra={
                    "pruned_from": str(self.args.checkpoint),
                    "data": str(self.data.dataset.directory),
                    "split": self.split_info,
                },
            )
            best, _, _ = history.load_best()
            return best

        return finetune


def _fresh_out(directory: str, result_file: str) -> Path:
    out = Path(directory)
    if (out / result_file).exists():
        raise FileExistsError(f"{out} already holds {result_file}; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _cmd_prune_dry_run(args: argparse.Namespace) -> int:
    """`train prune --dry-run`: per h (and rate) the knees, keep ratios and sizes, no training."""
    if args.method is not None or args.from_scratch:
        raise ValueError("--dry-run takes --h and/or --rate lists, not --method or --from-scratch")
    _models()
    from train import prune
    from train.checkpoint import load_checkpoint

    model, spec, _ = load_checkpoint(args.checkpoint)
    hs = args.h if args.h is not None else ([] if args.rate else list(prune.DEFAULT_HS))
    result = prune.dry_run(model, spec, hs=hs, rates=args.rate or [])
    result["checkpoint"] = {
        "path": str(args.checkpoint),
        "sha256": prune.file_sha256(args.checkpoint),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    base = result["baseline"]
    print(f"{args.checkpoint}: {base['params']:,} params, {base['flops']:,} FLOPs per packet")
    for run in result["runs"]:
        print(f"\n{run['name']}: {run['params']:,} params, {run['flops']:,} FLOPs")
        print(f"  {'layer':<18} {'M':>4} {'j*':>4} {'k':>4} {'len(g)':>6}     p  keep  kept")
        for row in run["layers"]:
            cells = [row[key] for key in ("knee", "k", "windows")]
            knee, k, windows = ("-" if c is None else c for c in cells)
            print(
                f"  {row['name']:<18} {row['original']:>4} {knee:>4} {k:>4} {windows:>6} "
                f"{row['p']:>5.2f} {row['keep_ratio']:>5.2f} {row['kept']:>5}"
                + (f"  ({row['note']})" if row["note"] else "")
            )
    print(f"\n{'run':>14} {'params':>10} {'FLOPs':>13}")
    print(f"{'unpruned':>14} {base['params']:>10,} {base['flops']:>13,}")
    for run in result["runs"]:
        print(f"{run['name']:>14} {run['params']:>10,} {run['flops']:>13,}")
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _cmd_prune_dry_run(args)
    if args.json:
        raise ValueError("--json goes with --dry-run")
    if args.method is None:
        raise ValueError("train prune takes --method (or --dry-run)")
    if args.data is None or args.out is None:
        raise ValueError("train prune takes --data and --out (unless --dry-run)")
    if args.method == "minidrop" and (args.h is None or args.rate is not None):
        raise ValueError("--method minidrop takes --h (and no --rate)")
    if args.method == "uniform" and (args.rate is None or args.h is not None):
        raise ValueError("--method uniform takes --rate (and no --h)")
    for flag, values in (("--h", args.h), ("--rate", args.rate)):
        if values is not None and len(values) != 1:
            raise ValueError(f"{flag} takes one value without --dry-run, got {values}")
    h = args.h[0] if args.h is not None else None
    rate = args.rate[0] if args.rate is not None else None
    _models()
    from train import models, prune
    from train.checkpoint import save_checkpoint

    prune.check_method(args.method, h, rate)
    if args.from_scratch and args.iterations != 1:
        raise ValueError("--from-scratch trains the widths of one pruning step; drop --iterations")
    if args.from_scratch and args.epochs == 0:
        raise ValueError("--from-scratch needs training epochs (--epochs > 0)")
    session = _PruneSession(args)

    out = _fresh_out(args.out, "prune.json")
    length = int(session.spec.kwargs.get("length", INPUT_LENGTH))
    size = models.describe(session.model, length)
    baseline: dict[str, Any] = {
        "params": size["params"],
        "flops": size["flops"],
        "accuracy": session.evaluate(session.model),
    }
    result = prune.prune(
        session.model,
        session.spec,
        args.method,
        h=h,
        rate=rate,
        iterations=args.iterations,
        finetune=session.finetune_into(out / "finetune") if session.cfg else None,
        evaluate=session.evaluate,
        from_scratch=args.from_scratch,
        seed=args.seed,
    )
    last = result.iterations[-1]
    accuracy = last.accuracy_after or last.accuracy_before
    pruning = prune.pruning_record(
        result, args.checkpoint, fine_tuning=session.fine_tuning(), data=session.data.describe()
    )
    summary = {
        "checkpoint": str(args.checkpoint),
        "method": args.method,
        "h": h,
        "rate": rate,
        "from_scratch": args.from_scratch,
        "pruning": pruning,
        "iterations": args.iterations,
        "fine_tuning": session.cfg.to_dict() if session.cfg else None,
        "data": session.data.describe(),
        "tasks": list(session.tasks),
        "baseline": baseline,
        "pruned": {
            "params": last.report.params_after,
            "flops": last.report.flops_after,
            "accuracy": accuracy,
        },
        **result.to_dict(),
    }
    save_checkpoint(
        out / "pruned.pt",
        result.model,
        result.spec,
        {
            "tasks": list(session.tasks),
            "data": str(session.data.dataset.directory),
            "split": session.split_info,
            "test_accuracy": accuracy,
            "prune": summary,
            "pruning": pruning,
        },
    )
    with open(out / "prune.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(
        f"params {baseline['params']:,} -> {last.report.params_after:,}, "
        f"FLOPs {baseline['flops']:,} -> {last.report.flops_after:,}"
    )
    for task, acc in (accuracy or {}).items():
        print(f"{task:>10}: test accuracy {baseline['accuracy'][task]:.4f} -> {acc:.4f}")
    for it in result.iterations:
        for layer in it.report.layers:
            if layer.note:
                print(f"note: round {it.report.iteration}, {layer.name}: {layer.note}")
    print(f"wrote {out / 'pruned.pt'} and {out / 'prune.json'}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    _models()
    from train import prune

    for h in args.h:
        prune.check_method("minidrop", h, None)
    for rate in args.rates:
        prune.check_method("uniform", None, rate)
    if args.from_scratch and (args.iterations != 1 or args.epochs == 0):
        raise ValueError("--from-scratch runs take one iteration and --epochs > 0")
    session = _PruneSession(args)
    out = _fresh_out(args.out, "sweep.json")
    current = {"name": ""}

    def starting(name: str) -> None:
        current["name"] = name
        if not args.no_progress:
            print(f"sweep: {name}", flush=True)

    finetune_rounds: dict[str, Callable[[Any, Any], Any]] = {}

    def finetune(model: Any, spec: Any) -> Any:
        name = current["name"]
        if name not in finetune_rounds:
            finetune_rounds[name] = session.finetune_into(out / "finetune" / name)
        return finetune_rounds[name](model, spec)

    result = prune.sweep(
        session.model,
        session.spec,
        finetune=finetune,
        evaluate=session.evaluate,
        hs=args.h,
        rates=args.rates,
        iterations=args.iterations,
        from_scratch=args.from_scratch,
        seed=args.seed,
        out_dir=out,
        progress=starting,
        parent=args.checkpoint,
        fine_tuning=session.fine_tuning(),
        data=session.data.describe(),
    )
    base = result["baseline"]
    print(f"{'run':>14} {'params':>10} {'FLOPs':>13}  accuracy ({', '.join(session.tasks)})")
    rows = [("unpruned", base["params"], base["flops"], base["accuracy"])]
    rows += [
        (r["name"], r["params"], r["flops"], r["accuracy_after_finetune"]) for r in result["runs"]
    ]
    for name, params, flops, acc in rows:
        accs = " ".join(f"{acc[t]:.3f}" for t in session.tasks)
        print(f"{name:>14} {params:>10,} {flops:>13,}  {accs}")
    print(f"wrote {out / 'sweep.json'} and {out / 'sweep.png'}")
    return 0


def _add_prune_parsers(train_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`train prune` and `train sweep` (paper 2: MiniDrop and the pre-defined baseline)."""
    pr = train_sub.add_parser(
        "prune",
        help="prune a trained model (MiniDrop or a uniform rate) and fine-tune it",
        description="Score every prunable filter by its L2 norm, keep per layer the top "
        "int(M (1 - p)) with MiniDrop's rate p (the authors' rule, step --h) or the top "
        "(1 - rate), inherit the kept weights and fine-tune (--from-scratch: train the same "
        "widths from random weights instead, the control). Writes OUT/pruned.pt and OUT/"
        "prune.json (per-layer knees and keep ratios, params, FLOPs, test accuracy, parent "
        "checkpoint, fine-tuning settings). --dry-run prints the knees and sizes for several "
        "--h (and --rate) without data or training.",
    )
    pr.add_argument("--method", choices=("minidrop", "uniform"), default=None)
    pr.add_argument(
        "--h",
        type=int,
        nargs="+",
        default=None,
        help="MiniDrop's step / window (2, 4, 8, ...); several with --dry-run",
    )
    pr.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=None,
        help="uniform pruning rate in [0, 1); several with --dry-run",
    )
    pr.add_argument(
        "--from-scratch",
        action="store_true",
        help="train the pruned widths from random weights (same epochs, seed) instead of "
        "fine-tuning the inherited ones: the control paper 2 lacks",
    )
    pr.add_argument(
        "--dry-run",
        action="store_true",
        help="only print per-layer knees, keep ratios, params and FLOPs per --h / --rate "
        "(default h 2 4 8 16); needs only --checkpoint",
    )
    pr.add_argument("--json", action="store_true", help="--dry-run result as JSON")
    _add_finetune_options(pr, data_required=False)
    pr.set_defaults(func=_cmd_prune)

    sw = train_sub.add_parser(
        "sweep",
        help="MiniDrop over h and the uniform baseline over rates (paper 2 Fig. 4)",
        description="Prune, fine-tune and test one model for every --h and --rates. Writes OUT/"
        "sweep.json, OUT/sweep.png (accuracy vs FLOPs and params) and a checkpoint per run.",
    )
    sw.add_argument("--h", type=int, nargs="+", default=[2, 4, 8, 16], help="MiniDrop h values")
    sw.add_argument(
        "--rates",
        type=float,
        nargs="*",
        default=[0.1, 0.3, 0.5, 0.7, 0.9],
        help="uniform pruning rates (none: MiniDrop only)",
    )
    sw.add_argument(
        "--from-scratch",
        action="store_true",
        help="also train every setting's widths from random weights (scratch_<run> runs)",
    )
    _add_finetune_options(sw)
    sw.set_defaults(func=_cmd_sweep)


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
    _add_prune_parsers(train_sub)
    _add_fit_parsers(train_sub)
    _add_export_parser(train_sub)


# --- fit, evaluate, compare, correlate ---------------------------------------------------------

_WIDTH_KWARGS: dict[str, tuple[str | None, str | None]] = {
    "mtl1d": ("conv_widths", "head_widths"),
    "stl1d": ("conv_widths", "dense"),
    "cnn2d": ("filters", "dense"),
    "resnet": (None, None),
}
"""Which constructor argument --conv-widths and --dense-widths set, per model."""


def _train_module(name: str) -> ModuleType:
    """`train.<name>`, with a missing torch reported as the missing train extra."""
    _models()
    import importlib

    return importlib.import_module(f"train.{name}")


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")


def _fit_spec_kwargs(args: argparse.Namespace, length: int, classes: int | None) -> dict:
    kwargs: dict = {"length": length}
    if classes is not None:
        kwargs["classes"] = classes
    if args.kernel is not None:
        kwargs["kernel"] = args.kernel
    conv_key, dense_key = _WIDTH_KWARGS[args.model]
    for flag, key, value in (
        ("--conv-widths", conv_key, args.conv_widths),
        ("--dense-widths", dense_key, args.dense_widths),
    ):
        if value is None:
            continue
        if key is None:
            raise ValueError(f"{flag} does not apply to {args.model}; use --model-kwargs")
        kwargs[key] = list(value)
    if args.model_kwargs:
        try:
            extra = json.loads(args.model_kwargs)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--model-kwargs: not JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise ValueError(f"--model-kwargs: want a JSON object, got {args.model_kwargs!r}")
        kwargs.update(extra)
    return kwargs


# --- session-disjoint splits and the baselines beside every accuracy (issue 12) ---------------


def _split_by(data_dir: str, requested: str | None) -> str:
    """--split-by as given, else "session" when the dataset records sessions, else "random"."""
    from train.data import default_split_by

    return requested or default_split_by(data_dir)


def _load_split(trainer: ModuleType, data_dir: str, kind: str, seed: int, by: str) -> Any:
    """`trainer.load_split` drawn by "random" packets (as before sessions) or by whole capture
    "session"s (`train.data.split_dataset`)."""
    if by == "random":
        return trainer.load_split(data_dir, kind, seed)
    from train.data import PacketDataset, require_sessions, split_dataset

    directory = Path(data_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"data directory {directory} does not exist")
    dataset = PacketDataset(directory)
    sessions = require_sessions(directory, len(dataset))
    try:
        parts = split_dataset(dataset.labels, sessions, kind, "session", seed)
    except ValueError as exc:
        raise ValueError(
            f"{directory}: no {kind} split by session ({exc}); use more packets or --split-by "
            "random"
        ) from exc
    for name, idx in zip(("train", "val"), (parts.train, parts.val), strict=True):
        if len(idx) == 0:
            raise ValueError(
                f"{directory}: the {kind} split by session leaves no {name} packets (too few "
                "sessions); use more packets or --split-by random"
            )
    return trainer.SplitData(dataset, parts, kind, seed)


def _baselines_beside(
    data_dir: str | Path,
    labels: Any,
    indices: Any,
    *,
    train: Any = None,
    balanced: bool = False,
    bound: bool = True,
    seed: int = 42,
    flow_window: int = 0,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(per task: majority, no_app_uniform, bound_phy[, bound_phy_mac]; how the bound was got)
    on labels[indices] (all packets when None). The bound is fitted on `train` when given (the
    model's own training packets), else cross-fitted in two folds of whole sessions."""
    import numpy as np

    from train import baselines
    from train.data import read_sessions

    idx = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
    table = baselines.trivial_baselines(labels[idx])
    info: dict[str, Any] = {"computed": False}
    if not bound:
        info["reason"] = "--no-bound"
        return table, info
    try:
        features = baselines.decoded_features(data_dir, labels)
        if flow_window:
            features = baselines.add_flow_features(features, data_dir, flow_window)
        if train is not None:
            bounds = baselines.information_bounds(
                features, labels, np.asarray(train), {"t": (idx, balanced)}, seed=seed
            )["t"]
            info["fitted_on"] = f"the split's {len(train)} training packets"
        else:
            groups = read_sessions(data_dir, len(labels))
            bounds = baselines.cross_fitted_bounds(
                features, labels, idx, groups, balanced=balanced, seed=seed
            )
            whole = "sessions" if groups is not None else "packets"
            info["fitted_on"] = f"two folds of the dataset's {whole}, each predicting the other"
    except (ImportError, EdgeTcError, FileNotFoundError) as exc:
        info["reason"] = str(exc)
        return table, info
    for task, values in bounds.items():
        table[task].update(values)
    info.update(
        computed=True,
        features=baselines.bound_feature_sets(features, "app"),
        missing=list(features.missing),
        notes=list(features.notes),
    )
    return table, info


def _baseline_cells(values: dict[str, Any]) -> str:
    from train.baselines import BASELINE_KEYS, format_value

    return "  ".join(
        f"{title} {format_value(values.get(key))}"
        for key, title in BASELINE_KEYS
        if values.get(key) is not None
    )


def _cmd_baselines(args: argparse.Namespace) -> int:
    from train import baselines
    from train.data import default_split_by

    data_dir = Path(args.data)
    if not (data_dir / "labels.csv").is_file():
        raise FileNotFoundError(f"{data_dir}/labels.csv not found: not a dataset directory")
    if args.split_by is not None:
        kinds = [args.split_by] if args.split_by != "both" else ["session", "random"]
    else:
        kinds = ["session", "random"] if default_split_by(data_dir) == "session" else ["random"]
    results = {
        by: baselines.dataset_baselines(
            data_dir, by=by, seed=args.seed, bound=not args.no_bound, flow_window=args.flow_window
        )
        for by in kinds
    }
    out = {"data": str(data_dir), "split_by": results}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for i, r in enumerate(results.values()):
        print(("\n" if i else "") + baselines.baselines_text(r))
    if len(results) == 2 and not args.no_bound:
        print("\ninformation bound, session-disjoint vs random split (leakage across sessions):")
        for task in results["session"]["tasks"]:
            for test_set in ("natural", "balanced"):
                cells = []
                for key, title in baselines.BASELINE_KEYS[2:]:
                    s, r = (results[b]["tasks"][task][test_set].get(key) for b in kinds)
                    if s is not None or r is not None:
                        cells.append(
                            f"{title} {baselines.format_value(s)} vs {baselines.format_value(r)}"
                        )
                print(f"{task:>9} {test_set:>9}  " + "  ".join(cells))
    return 0


def _cmd_fusion(args: argparse.Namespace) -> int:
    fusion = _train_module("fusion")
    log = (lambda _msg: None) if args.json else print
    record = fusion.fit_fusion(
        args.bundle,
        args.data,
        val=args.val,
        seed=args.seed,
        max_packets=args.max_packets,
        max_depth=args.max_depth or None,
        cnn_tasks=args.cnn_inputs,
        headers=not args.no_headers,
        log=log,
    )
    if args.json:
        print(json.dumps(record, indent=1))
    else:
        print(f"wrote {Path(args.bundle) / record['file']} and the bundle's manifest")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    trainer = _train_module("trainer")
    if args.model == "mtl1d" and args.task is not None:
        raise ValueError("mtl1d trains every task of the schema; drop --task")
    if args.model != "mtl1d" and args.task is None:
        raise ValueError(f"{args.model} is a single-task model: name its task with --task")
    classes = None if args.task is None else trainer.single_task_classes(args.task)
    out = Path(args.out)
    if (out / "history.json").exists():
        raise FileExistsError(f"{out} already holds a training run; choose another --out")
    split_by = _split_by(args.data, args.split_by)
    try:
        data = _load_split(trainer, args.data, args.split, args.split_seed, split_by)
    except ValueError as exc:
        if args.split_by is not None or split_by != "session":
            raise
        # the default on a dataset too small for whole sessions: said, and recorded as "random"
        print(f"warning: {exc}; splitting by random packets instead", file=sys.stderr)
        split_by = "random"
        data = _load_split(trainer, args.data, args.split, args.split_seed, split_by)
    from train.checkpoint import ModelSpec

    spec = ModelSpec(args.model, _fit_spec_kwargs(args, data.dataset.length, classes))
    cfg = trainer.TrainConfig(
        lr=args.lr,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
        weighting=args.weighting,
        num_workers=args.workers,
        device=args.device,
    )
    spec.build()  # a bad width or model argument fails here, before any file is written
    split_info = {"kind": data.kind, "seed": data.seed, "by": split_by}
    main_rank = trainer.rank() == 0
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
        config = {
            "model": spec.to_dict(),
            "task": args.task,
            "train": cfg.to_dict(),
            "split": {**data.describe(), "by": split_by},
            "world_size": trainer.world_size(),
        }
        _write_json(out / "config.json", config)
    tasks = None if args.task is None else (args.task,)
    history = trainer.fit(
        spec,
        data.train,
        data.val,
        cfg,
        out,
        tasks=tasks,
        progress=not args.no_progress,
        checkpoint_extra={"data": str(data.dataset.directory), "split": split_info},
    )
    if not main_rank:
        return 0
    kpi_mod = _train_module("kpi")
    model, _, _ = history.load_best()
    kpi: dict = {
        "model": spec.to_dict(),
        "tasks": list(history.tasks),
        "best_epoch": history.best_epoch,
    }
    if len(data.split.test):
        kpi["split"] = {**split_info, "part": "test"}
        kpi.update(kpi_mod.evaluate(model, data.dataset, data.split.test, history.tasks))
        kpi["baselines"], kpi["information_bound"] = _baselines_beside(
            data.dataset.directory,
            data.dataset.labels,
            data.split.test,
            train=data.split.train,
            balanced=data.kind == "balanced",
            seed=data.seed,
        )
    kpi["resources"] = kpi_mod.resource_kpis(model, data.dataset.length)
    _write_json(out / "kpi.json", kpi)
    report = _train_module("report").write_report(out)
    print(
        f"best epoch {history.best_epoch}: mean validation accuracy {history.best_val_accuracy:.4f}"
    )
    for task, v in kpi.get("per_task", {}).items():
        print(
            f"  test {task:>8}: accuracy {v['accuracy']:.4f}  macro-F1 {v['macro_f1']:.4f}  "
            + _baseline_cells(kpi["baselines"][task])
        )
    print(f"wrote {out}/best.pt, history.json, kpi.json and {report}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    kpi_mod = _train_module("kpi")
    trainer = _train_module("trainer")
    from train.checkpoint import load_checkpoint
    from train.data import PacketDataset, balanced_split

    if args.bundle is not None:
        if args.split == "test":
            raise ValueError("--bundle has no training split: use --split balanced or all")
        return _evaluate_bundle(args)
    if args.checkpoint is None:
        raise ValueError("give --checkpoint or --bundle")
    model, spec, extra = load_checkpoint(args.checkpoint)
    tasks = extra.get("tasks")
    if args.split == "test":
        split = extra.get("split")
        if not isinstance(split, dict) or "kind" not in split:
            raise ValueError(f"{args.checkpoint} records no split; use --split all")
        by = args.split_by or str(split.get("by", "random"))  # before sessions: random
        if args.split_by and args.split_by != split.get("by", "random"):
            print(
                f"warning: {args.checkpoint} was trained on a split by "
                f"{split.get('by', 'random')}; testing on one by {args.split_by} may test on its "
                "training packets",
                file=sys.stderr,
            )
        data = _load_split(trainer, args.data, split["kind"], int(split.get("seed", 42)), by)
        dataset, indices = data.dataset, data.split.test
        bound_train, balanced = data.split.train, data.kind == "balanced"
    elif args.split == "balanced":  # a fresh dataset, equalized on app like paper 1's sets
        dataset = PacketDataset(args.data)
        indices = balanced_split(dataset.labels, val=0, test=0).train
        bound_train, balanced = None, True
    else:
        data_dir = Path(args.data)
        if not data_dir.is_dir():
            raise FileNotFoundError(f"data directory {data_dir} does not exist")
        dataset, indices = PacketDataset(data_dir), None
        bound_train, balanced = None, False
    result = kpi_mod.evaluate(model, dataset, indices, tasks, batch_size=args.batch_size)
    result = {
        "checkpoint": str(args.checkpoint),
        "model": spec.to_dict(),
        "split": args.split,
        **result,
    }
    if args.split == "test":
        result["split_by"] = by
    result["baselines"], result["information_bound"] = _baselines_beside(
        args.data,
        dataset.labels,
        indices,
        train=bound_train,
        balanced=balanced,
        bound=not args.no_bound,
        flow_window=args.flow_window,
    )
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{result['packets']} packets ({args.split}) of {args.data}")
        for task, v in result["per_task"].items():
            print(
                f"  {task:>8}: accuracy {v['accuracy']:.4f}  macro-F1 {v['macro_f1']:.4f}  "
                + _baseline_cells(result["baselines"][task])
            )
        _print_bound_info(result["information_bound"])
    return 0


def _print_bound_info(info: dict[str, Any]) -> None:
    if info.get("computed"):
        print(f"  information bound fitted on {info['fitted_on']}")
        if info.get("missing"):
            print(f"  (packets.csv lacks {', '.join(info['missing'])})")
    else:
        print(f"  no information bound: {info.get('reason')}")


_ENGINE_OF_FORMAT = {"onnx": "onnxruntime", "tflite": "tflite", "tensorrt": "tensorrt"}


def _evaluate_bundle(args: argparse.Namespace) -> int:
    """Every model file of a bundle, run by its real engine, on --data's balanced subset (or all).

    What a deployment gets: the engine's own input handling, int8 (de)quantization and batching.
    A model whose engine is not installed here (TensorRT without a GPU) is reported as skipped.
    """
    import numpy as np

    from engines.base import load, open_bundle
    from train.data import PacketDataset, balanced_split
    from train.export import gather_packets
    from train.kpi import confusion_matrix, macro_f1

    bundle = open_bundle(args.bundle)
    dataset = PacketDataset(args.data)
    if args.split == "balanced":
        indices = balanced_split(dataset.labels, val=0, test=0).train
    else:
        indices = np.arange(len(dataset))
    packets = gather_packets(dataset, indices)
    result: dict[str, Any] = {
        "bundle": str(bundle.directory),
        "data": str(args.data),
        "split": args.split,
        "packets": len(packets.x),
        "models": {},
    }
    result["baselines"], result["information_bound"] = _baselines_beside(
        args.data,
        dataset.labels,
        indices,
        balanced=args.split == "balanced",
        bound=not args.no_bound,
        flow_window=args.flow_window,
    )
    fusion = fusion_inputs = None
    if bundle.fusion is not None:
        from edge_core.fusion import DURATION_FEATURE, load_fusion
        from edge_core.rx.headers import decode_headers
        from train.data import read_packets_csv

        fusion = load_fusion(bundle.fusion, bundle.tasks)
        csv = read_packets_csv(Path(args.data) / "packets.csv", [DURATION_FEATURE])
        duration = np.asarray(csv[DURATION_FEATURE], np.float64)[indices]
        iq = packets.x[:, 0] + 1j * packets.x[:, 1]
        headers = np.concatenate(
            [decode_headers(iq[s : s + 256].astype(np.complex64)) for s in range(0, len(iq), 256)]
        )
        fusion_inputs = (duration, headers)
    predictions: dict[str, dict[str, np.ndarray]] = {}  # model file -> task -> published class
    for entry in bundle.models:
        name = entry.path.name
        config = {"type": _ENGINE_OF_FORMAT[entry.format], "model": name}
        try:
            engine = load(bundle, config)
        except EdgeTcError as exc:
            result["models"][name] = {"precision": entry.precision, "skipped": str(exc)}
            continue
        with engine:
            parts: dict[str, list[np.ndarray]] = {t: [] for t in bundle.tasks}
            raw: dict[str, list[np.ndarray]] = {t: [] for t in bundle.tasks}
            for start in range(0, len(packets.x), args.batch_size):
                probs = engine.infer(packets.x[start : start + args.batch_size])
                for t in bundle.tasks:
                    parts[t].append(probs[t].argmax(axis=1))
                    raw[t].append(probs[t])
        per_task = {}
        for t in bundle.tasks:
            classes = TASK_BY_NAME[t].num_classes
            cm = confusion_matrix(packets.labels[t], np.concatenate(parts[t]), classes)
            per_task[t] = {"accuracy": float(np.trace(cm) / cm.sum()), "macro_f1": macro_f1(cm)}
        result["models"][name] = {
            "format": entry.format,
            "precision": entry.precision,
            "engine": config["type"],
            "per_task": per_task,
        }
        if fusion is not None and fusion_inputs is not None:
            # the same model's probabilities through the bundle's fusion stage, as the daemon
            duration, headers = fusion_inputs
            fused_probs = fusion.fuse(
                {t: np.concatenate(v) for t, v in raw.items()}, duration, headers.__getitem__
            )
            fused = {}
            for t in fusion.ensembles:
                pred = fused_probs[t].argmax(1)
                predictions.setdefault(name, {})[t] = pred
                cm = confusion_matrix(packets.labels[t], pred, TASK_BY_NAME[t].num_classes)
                fused[t] = {"accuracy": float(np.trace(cm) / cm.sum()), "macro_f1": macro_f1(cm)}
            result["models"][name]["fused"] = fused
        for t in bundle.tasks:
            if fusion is None or t not in fusion.ensembles:
                predictions.setdefault(name, {})[t] = np.concatenate(parts[t])
    # what the daemon publishes (fused tasks fused), each model file against the FP32 one
    reference = next((e.path.name for e in bundle.models if e.precision == "fp32"), None)
    if reference in predictions:
        for name, preds in predictions.items():
            result["models"][name]["published_agreement_with_fp32"] = {
                t: float(np.mean(p == predictions[reference][t])) for t, p in preds.items()
            }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{result['packets']} packets ({args.split}) of {args.data}, bundle {args.bundle}")
        for name, r in result["models"].items():
            if "skipped" in r:
                print(f"  {name}: skipped ({r['skipped']})")
                continue
            accs = "  ".join(f"{t}={v['accuracy']:.4f}" for t, v in r["per_task"].items())
            print(f"  {name:<20} {accs}")
            if "fused" in r:
                accs = "  ".join(f"{t}={v['accuracy']:.4f}" for t, v in r["fused"].items())
                print(f"  {'  + fusion':<20} {accs}")
            if "published_agreement_with_fp32" in r:
                agree = r["published_agreement_with_fp32"]
                print(
                    f"  {'  agrees with fp32':<20} "
                    + "  ".join(f"{t}={v:.4f}" for t, v in agree.items())
                )
        from train.baselines import BASELINE_KEYS, format_value

        for key, title in BASELINE_KEYS:
            cells = [(t, b.get(key)) for t, b in result["baselines"].items()]
            if any(v is not None for _, v in cells):
                accs = "  ".join(f"{t}={format_value(v)}" for t, v in cells)
                print(f"  {title:<20} {accs}")
        _print_bound_info(result["information_bound"])
    return 0


def _read_kpi(run_dir: str) -> dict:
    path = Path(run_dir) / "kpi.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `edge-tc train fit` there first")
    with open(path) as f:
        kpi = json.load(f)
    if not isinstance(kpi, dict) or "per_task" not in kpi:
        raise ValueError(f"{path}: no per-task test KPIs")
    return kpi


def _cmd_compare(args: argparse.Namespace) -> int:
    kpi_mod = _train_module("kpi")
    stl: dict[str, dict] = {}
    for run in args.stl:
        kpi = _read_kpi(run)
        tasks = kpi.get("tasks", [])
        if len(tasks) != 1:
            raise ValueError(f"{run}: --stl wants a single-task run, this one has tasks {tasks}")
        if tasks[0] in stl:
            raise ValueError(f"{run}: a second STL run for task {tasks[0]!r}")
        stl[tasks[0]] = kpi
    result = kpi_mod.compare(stl, _read_kpi(args.mtl), delta=args.delta)
    text = kpi_mod.comparison_markdown(result)
    print(text)
    if args.out:
        out = Path(args.out)
        if out.suffix == ".json":
            _write_json(out, result)
        else:
            out.write_text("# KPIstl vs KPImtl\n\n" + text + "\n")
        print(f"wrote {out}")
    return 0


def _nan_to_none(x: float) -> float | None:
    return None if x != x else x


def _cmd_correlate(args: argparse.Namespace) -> int:
    from train.data import read_labels_csv, task_correlation

    data_dir = Path(args.data)
    if not (data_dir / "labels.csv").is_file():
        raise FileNotFoundError(f"{data_dir}/labels.csv not found: not a dataset directory")
    labels, _ = read_labels_csv(data_dir / "labels.csv")
    report = task_correlation(labels)
    print(report.to_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "correlation.md").write_text(
        f"# Task correlation of {data_dir} ({len(labels)} packets)\n\n{report.to_markdown()}\n"
    )
    tables = [
        {
            "rows": t.row_task,
            "columns": t.col_task,
            "row_classes": list(t.row_classes),
            "column_classes": list(t.col_classes),
            "counts": t.counts.tolist(),
            "cramers_v": _nan_to_none(t.cramers_v),
        }
        for t in report.tables
    ]
    matrix = [[_nan_to_none(float(v)) for v in row] for row in report.cramers_v_matrix()]
    _write_json(
        out / "correlation.json",
        {"data": str(data_dir), "packets": len(labels), "cramers_v": matrix, "tables": tables},
    )
    print(f"wrote {out}/correlation.md and correlation.json")
    return 0


def _add_fit_parsers(train_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fit = train_sub.add_parser(
        "fit",
        help="train a model (paper 1: Adam, early stopping, DTP), evaluate it, write a report",
        description="Train MODEL on a dataset directory, keep the best mean validation accuracy "
        "(RUN_DIR/best.pt), then evaluate it on the test split and write config.json, "
        "history.json, kpi.json, report.md and plots. Runs data-parallel under torchrun.",
    )
    fit.add_argument("--data", required=True, help="dataset directory (iq.npy + labels.csv)")
    fit.add_argument("--out", required=True, help="run directory to create")
    fit.add_argument("--model", required=True, choices=MODEL_NAMES)
    fit.add_argument("--task", default=None, help="the task of a single-task model")
    fit.add_argument("--split", choices=("balanced", "tc_spectrum"), default="balanced")
    fit.add_argument("--split-seed", type=int, default=42, help="seed of the split (default 42)")
    fit.add_argument(
        "--split-by",
        choices=("session", "random"),
        default=None,
        help="draw the split's parts as whole capture sessions or single packets (default: "
        "session when packets.csv has a session column, else random)",
    )
    fit.add_argument("--epochs", type=int, default=400, help="maximum epochs (default 400)")
    fit.add_argument("--patience", type=int, default=20, help="early-stopping patience (20)")
    fit.add_argument("--batch-size", type=int, default=64, help="per process (default 64)")
    fit.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    fit.add_argument("--weighting", choices=("dtp", "uniform"), default="dtp")
    fit.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    fit.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    fit.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    fit.add_argument("--kernel", type=int, default=None, help="conv kernel (default published)")
    fit.add_argument(
        "--conv-widths",
        type=int,
        nargs="+",
        default=None,
        help="conv filters per layer (mtl1d/stl1d conv_widths, cnn2d filters)",
    )
    fit.add_argument(
        "--dense-widths",
        type=int,
        nargs="+",
        default=None,
        help="hidden dense widths (mtl1d head_widths, stl1d/cnn2d dense)",
    )
    fit.add_argument(
        "--model-kwargs",
        default=None,
        help="more constructor arguments as JSON, e.g. '{\"dropout\": 0.2}'",
    )
    fit.add_argument("--no-progress", action="store_true", help="no progress bars")
    fit.set_defaults(func=_cmd_fit)

    ev = train_sub.add_parser(
        "evaluate", help="per-task accuracy and macro-F1 of a checkpoint or a bundle's models"
    )
    what = ev.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="a checkpoint written by fit (best.pt)")
    what.add_argument(
        "--bundle", help="an exported bundle: every model file, run by its engine (not with test)"
    )
    ev.add_argument("--data", required=True, help="dataset directory")
    ev.add_argument(
        "--split",
        choices=("test", "all", "balanced"),
        default="test",
        help="test: the checkpoint's test split of --data; all: every packet; balanced: every "
        "packet of --data's app-balanced subset (for a fresh dataset)",
    )
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument(
        "--split-by",
        choices=("session", "random"),
        default=None,
        help="with --split test: how the split was drawn (default: as the checkpoint records, "
        "random before sessions)",
    )
    ev.add_argument(
        "--no-bound",
        action="store_true",
        help="skip the information bound (gradient boosting on decoded fields); majority and "
        "no-app + uniform are always reported",
    )
    ev.add_argument(
        "--flow-window", type=int, default=0, metavar="K",
        help="the bound also with each data frame's flow (its station's last K data frames; "
        "train baselines --flow-window)",
    )  # fmt: skip
    ev.add_argument("--json", action="store_true", help="print the result (confusions too) as JSON")
    ev.set_defaults(func=_cmd_evaluate)

    bl = train_sub.add_parser(
        "baselines",
        help="trivial baselines and the per-packet information bound of a dataset",
        description="Per task, on the natural-mix and the class-balanced (app) test sets of an "
        "80/10/10 split: the majority-class accuracy, a no-app detector then a uniform guess "
        "(app, app_type), and the information bound: gradient boosting fitted on the training "
        "part's decoded per-packet fields (PHY; PHY + clear MAC header). See "
        "docs/train/baselines.md.",
    )
    bl.add_argument("--data", required=True, help="dataset directory (labels.csv + packets.csv)")
    bl.add_argument(
        "--split-by",
        choices=("session", "random", "both"),
        default=None,
        help="whole capture sessions or single packets (default: both side by side when "
        "packets.csv has a session column, else random)",
    )
    bl.add_argument("--seed", type=int, default=42, help="split and classifier seed (42)")
    bl.add_argument("--no-bound", action="store_true", help="majority and no-app only")
    bl.add_argument(
        "--flow-window", type=int, default=0, metavar="K",
        help="also the bound with each data frame's flow: its station's last K data frames "
        "(0: per packet only)",
    )  # fmt: skip
    bl.add_argument("--json", action="store_true", help="print the result as JSON")
    bl.set_defaults(func=_cmd_baselines)

    fu = train_sub.add_parser(
        "fusion",
        help="fit a bundle's fusion stage (CNN outputs + packet duration + decoded PHY header)",
        description="Fit gradient-boosted trees per task (app_type, app) on the bundle's FP32 "
        "CNN probabilities, each packet's duration and its decoded PHY header "
        "(edge_core/rx/headers.py), on a dataset the CNN has not seen; score them on held-out "
        "capture sessions beside the CNN alone; write fusion.npz and a `fusion` record into "
        "the bundle. The daemon then publishes the fused app_type/app. See docs/train/fusion.md.",
    )
    fu.add_argument("--bundle", required=True, help="the bundle to add the stage to (rewritten)")
    fu.add_argument("--data", required=True, help="dataset directory with capture sessions")
    fu.add_argument("--val", type=float, default=0.2, help="held-out share of sessions (0.2)")
    fu.add_argument("--max-packets", type=int, help="use about this many packets (whole sessions)")
    fu.add_argument("--seed", type=int, default=0, help="split and trees seed (0)")
    fu.add_argument("--max-depth", type=int, default=8, help="deepest tree level (8; 0: no limit)")
    fu.add_argument(
        "--cnn-inputs", nargs="+", default=["phy", "frame"], metavar="TASK",
        help="CNN heads whose probabilities the trees take (phy frame)",
    )  # fmt: skip
    fu.add_argument(
        "--no-headers", action="store_true",
        help="duration and CNN classes only: no PHY header decoding in the daemon (cheaper)",
    )  # fmt: skip
    fu.add_argument("--json", action="store_true", help="print the manifest record as JSON")
    fu.set_defaults(func=_cmd_fusion)

    cmp = train_sub.add_parser("compare", help="KPIstl vs KPImtl and the Delta-tolerance gate")
    cmp.add_argument("--stl", nargs="+", required=True, help="single-task run directories")
    cmp.add_argument("--mtl", required=True, help="the multi-task run directory")
    cmp.add_argument("--delta", type=float, default=0.95, help="tolerance (default 0.95)")
    cmp.add_argument("--out", default=None, help="write the table (.json: JSON, else markdown)")
    cmp.set_defaults(func=_cmd_compare)

    cor = train_sub.add_parser("correlate", help="task contingency tables and Cramér's V")
    cor.add_argument("--data", required=True, help="dataset directory")
    cor.add_argument("--out", required=True, help="directory for correlation.md and .json")
    cor.set_defaults(func=_cmd_correlate)


# --- export (model bundles) ---------------------------------------------------------------------

_DATASET_KEYS = ("format", "generator", "packets", "seed", "input_length", "sample_rate_hz")


def _dataset_description(directory: str) -> dict[str, Any]:
    """What a bundle records about a dataset directory: its path and dataset.json's summary."""
    info: dict[str, Any] = {"path": str(Path(directory).resolve())}
    meta = Path(directory) / "dataset.json"
    if meta.is_file():
        with open(meta, encoding="utf-8") as f:
            data = json.load(f)
        info.update({k: data[k] for k in _DATASET_KEYS if k in data})
    return info


def _cmd_export(args: argparse.Namespace) -> int:
    _models()
    from train import export
    from train.checkpoint import load_checkpoint
    from train.data import PacketDataset

    if args.int8_agreement is not None and not 0.0 <= args.int8_agreement <= 1.0:
        raise ValueError(f"--int8-agreement must be in [0, 1], got {args.int8_agreement}")
    calib_ds = PacketDataset(args.data)
    heldout_ds = PacketDataset(args.heldout_data) if args.heldout_data else calib_ds
    _, _, extra = load_checkpoint(args.checkpoint)
    description: dict[str, Any] = {"training_dataset": _dataset_description(args.data)}
    if args.heldout_data:
        description["heldout_dataset"] = _dataset_description(args.heldout_data)
    description["checkpoint"] = {
        "file": Path(args.checkpoint).name,
        **{k: extra[k] for k in ("epoch", "tasks", "val_accuracy", "train_config") if k in extra},
    }
    out = export.export_bundle(
        args.checkpoint,
        args.out,
        formats=args.formats,
        calib_ds=calib_ds,
        heldout_ds=heldout_ds,
        data_description=description,
        calib_packets=args.calib,
        heldout_packets=args.heldout,
        seed=args.seed,
        onnx_opset=args.onnx_opset,
        tensorrt_batches=tuple(args.trt_batch),
        agreement_required=None if args.int8_agreement is None else {"int8": args.int8_agreement},
    )
    from edge_core.bundle import load_manifest

    bundle = load_manifest(out)
    print(f"bundle {out}: {len(bundle.models)} model files, tasks {', '.join(bundle.tasks)}")
    torch_acc = bundle.manifest["model"]["test_accuracy"]
    print("  pytorch".ljust(28) + " ".join(f"{t}={torch_acc[t]:.4f}" for t in bundle.tasks))
    for m in bundle.models:
        agree = " ".join(f"{t}={v:.4f}" for t, v in m.agreement.items())
        print(f"  {m.path.name:<26} agreement {agree}")
    return 0


def _add_export_parser(train_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`train export`: a checkpoint to a model bundle (ONNX, TFLite Edge TPU, TensorRT)."""
    from edge_core.bundle import DEFAULT_EXPORTS, EXPORTS

    ex = train_sub.add_parser(
        "export",
        help="export a checkpoint to a model bundle",
        description="Export a checkpoint to a bundle directory (manifest.json + model files). "
        "Each export runs held-out packets in its runtime and must agree with PyTorch on the "
        "top-1 class (>= 0.99 fp32/fp16, >= 0.97 int8, per task).",
    )
    ex.add_argument("--checkpoint", required=True, help="trained model (a train.checkpoint file)")
    ex.add_argument("--data", required=True, help="dataset directory: calibration packets")
    ex.add_argument("--out", required=True, help="bundle directory to create (new or empty)")
    ex.add_argument(
        "--heldout-data",
        default=None,
        help="dataset directory of held-out packets (default: --data, disjoint from calibration)",
    )
    ex.add_argument(
        "--formats",
        nargs="+",
        choices=list(EXPORTS),
        default=list(DEFAULT_EXPORTS),
        help=f"exports to make (default {' '.join(DEFAULT_EXPORTS)}); tensorrt-* build on this "
        "machine's GPU",
    )
    ex.add_argument("--calib", type=int, default=256, help="calibration packets (default 256)")
    ex.add_argument("--heldout", type=int, default=512, help="held-out packets (default 512)")
    ex.add_argument("--seed", type=int, default=0, help="packet selection seed (default 0)")
    ex.add_argument(
        "--onnx-opset",
        type=int,
        default=18,
        help="ONNX opset (default 18; 13 for the TensorRT 8.x parsers of JetPack 4)",
    )
    ex.add_argument(
        "--trt-batch",
        type=int,
        nargs=3,
        metavar=("MIN", "OPT", "MAX"),
        default=[1, 64, 256],
        help="TensorRT dynamic batch profile (default 1 64 256)",
    )
    ex.add_argument(
        "--int8-agreement",
        type=float,
        default=None,
        metavar="MIN",
        help="least per-task top-1 agreement of an INT8 export with PyTorch (default 0.97); "
        "a lower bar is recorded in the manifest's evaluation.agreement_required",
    )
    ex.set_defaults(func=_cmd_export)

"""Training as in paper 1 (Sec. IV-D3, Sec. VI): Adam, cross-entropy, batch 64, early stopping and
a best-accuracy checkpoint, and Dynamic Task Prioritization for the multi-task model.

`fit` trains any `ModelSpec`: a multi-task model (dict outputs, loss sum_i beta_i(t) CE_i) or a
single-task one (one task named). The same call runs data-parallel when started by `torchrun`
(WORLD_SIZE > 1): gloo on CPU, NCCL on CUDA, a `DistributedSampler`, metrics all-reduced so
every rank takes the same early-stopping decision, files and progress bars on rank 0 only.

Fine-tuning (pruning) passes the slim model's `ModelSpec` and its inherited weights as
`init_state`; `fit` builds the spec and loads the state strictly before training.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from edge_core.errors import ModelError
from edge_core.schema import TASK_BY_NAME, TASK_NAMES
from train.checkpoint import ModelSpec, load_checkpoint, save_checkpoint
from train.data import (
    PAPER1_TEST_FRACTION,
    PAPER1_VAL_FRACTION,
    PacketDataset,
    Split,
    balanced_split,
    tc_spectrum_split,
)
from train.kpi import output_classes, resolve_tasks, task_logits

DTP_EPS = 1e-4
"""k_i(t) is clamped to [DTP_EPS, 1 - DTP_EPS]: log(0) is undefined and k = 1 would zero a task."""

Weighting = Literal["dtp", "uniform"]
SplitKind = Literal["balanced", "tc_spectrum"]
SPLIT_KINDS: tuple[str, ...] = ("balanced", "tc_spectrum")
WEIGHTINGS: tuple[str, ...] = ("dtp", "uniform")


@dataclass
class TrainConfig:
    """Hyper-parameters of `fit`. Defaults are paper 1's (Adam 1e-3, batch 64).

    `batch_size` is per process under DDP. `patience`: epochs without a better mean validation
    accuracy before stopping. `dtp_gamma`: task -> gamma_i (1.0 for tasks not listed; the
    paper's choice). `dtp_smoothing`: alpha of k_i(t) = alpha acc_i(batch t) + (1 - alpha)
    k_i(t-1), the first batch's accuracy starting it.
    """

    lr: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 400
    patience: int = 20
    seed: int = 0
    weighting: Weighting = "dtp"
    dtp_gamma: dict[str, float] = field(default_factory=dict)
    dtp_smoothing: float = 0.1
    num_workers: int = 0
    device: Literal["cpu", "cuda"] = "cpu"

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}, got {self.weighting!r}")
        if not 0.0 < self.dtp_smoothing <= 1.0:
            raise ValueError(f"dtp_smoothing must be in (0, 1], got {self.dtp_smoothing}")
        unknown = sorted(set(self.dtp_gamma) - set(TASK_NAMES))
        if unknown:
            raise ValueError(f"dtp_gamma: unknown tasks {unknown}; expected {list(TASK_NAMES)}")
        if any(not g >= 0 for g in self.dtp_gamma.values()):
            raise ValueError(f"dtp_gamma values must be >= 0, got {self.dtp_gamma}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")

    def gamma(self, task: str) -> float:
        return float(self.dtp_gamma.get(task, 1.0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- Dynamic Task Prioritization ----------------------------------------------------------------


def dtp_weights(k: torch.Tensor, gamma: torch.Tensor, eps: float = DTP_EPS) -> torch.Tensor:
    """Paper 1 eq. (7): beta_i = -(1 - k_i)^gamma_i log k_i, k_i clamped to [eps, 1 - eps].

    Decreasing in k on (0, 1): the task with the lower accuracy k gets the larger weight.
    """
    k = k.clamp(eps, 1.0 - eps)
    return -((1.0 - k) ** gamma) * torch.log(k)


class TaskWeighting:
    """beta_i(t) per training step: DTP on smoothed batch accuracy, or uniform (all 1).

    State lives on the training device, so a step needs no host synchronisation. With a single
    task the weight is 1 either way: DTP balances tasks against each other.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        mode: Weighting,
        gamma: Mapping[str, float] | None = None,
        smoothing: float = 0.1,
        device: torch.device | str = "cpu",
    ) -> None:
        self.tasks = tuple(tasks)
        self.dynamic = mode == "dtp" and len(self.tasks) > 1
        gamma = gamma or {}
        self.gamma = torch.tensor([float(gamma.get(t, 1.0)) for t in self.tasks], device=device)
        self.smoothing = smoothing
        self.k: torch.Tensor | None = None
        self.beta = torch.ones(len(self.tasks), device=device)

    def update(self, batch_accuracy: torch.Tensor) -> torch.Tensor:
        """Fold one step's per-task accuracy (len(tasks),) into k and return beta (detached)."""
        if not self.dynamic:
            return self.beta
        acc = batch_accuracy.detach().float()
        if self.k is None:
            self.k = acc.clone()
        else:
            self.k = self.smoothing * acc + (1.0 - self.smoothing) * self.k
        self.beta = dtp_weights(self.k, self.gamma)
        return self.beta

    def state(self) -> dict[str, dict[str, float]]:
        """Current k and beta per task, for the history (k empty until the first DTP step)."""
        k = [] if self.k is None else self.k.tolist()
        return {
            "dtp_k": dict(zip(self.tasks, k, strict=False)),
            "dtp_weights": dict(zip(self.tasks, self.beta.tolist(), strict=True)),
        }


# --- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitData:
    """A dataset directory with one of the papers' splits; `train`/`val`/`test` are Subsets."""

    dataset: PacketDataset
    split: Split
    kind: str
    seed: int

    def part(self, name: str) -> Subset:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split part must be train, val or test, got {name!r}")
        return Subset(cast(Dataset, self.dataset), getattr(self.split, name).tolist())

    @property
    def train(self) -> Subset:
        return self.part("train")

    @property
    def val(self) -> Subset:
        return self.part("val")

    @property
    def test(self) -> Subset:
        return self.part("test")

    def describe(self) -> dict[str, Any]:
        train, val, test = self.split.sizes()
        return {
            "data": str(self.dataset.directory),
            "kind": self.kind,
            "seed": self.seed,
            "train": train,
            "val": val,
            "test": test,
        }


def load_split(
    data_dir: str | Path,
    split: SplitKind | str = "balanced",
    seed: int = 42,
    *,
    val: int | float | None = None,
    test: int | float | None = None,
) -> SplitData:
    """Open our dataset directory (memory-mapped) and split it.

    "balanced": paper 1's (`balanced_split` on app; `val`/`test` fractions or counts override
    its defaults). "tc_spectrum": the 80/10/10 split of the authors' code (fixed proportions).
    """
    directory = Path(data_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"data directory {directory} does not exist")
    if split not in SPLIT_KINDS:
        raise ValueError(f"split must be one of {list(SPLIT_KINDS)}, got {split!r}")
    dataset = PacketDataset(directory)
    if split == "tc_spectrum":
        if val is not None or test is not None:
            raise ValueError("the tc_spectrum split is 80/10/10; val and test are fixed")
        parts = tc_spectrum_split(len(dataset), seed=seed)
    else:
        try:
            parts = balanced_split(
                dataset.labels,
                val=PAPER1_VAL_FRACTION if val is None else val,
                test=PAPER1_TEST_FRACTION if test is None else test,
                seed=seed,
            )
        except ValueError as exc:
            raise ValueError(
                f"{directory}: no balanced split ({exc}); use more packets or --split tc_spectrum"
            ) from exc
    for name, idx in zip(("train", "val"), (parts.train, parts.val), strict=True):
        if len(idx) == 0:
            raise ValueError(f"{directory}: the {split} split leaves no {name} packets")
    return SplitData(dataset, parts, str(split), seed)


def _seed_worker(_worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # DataLoader derives it from its seeded generator
    np.random.seed(seed)  # noqa: NPY002 (the legacy global RNG that third-party transforms use)
    random.seed(seed)


# --- distributed -------------------------------------------------------------------------------


def world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's RANK under torchrun, 0 otherwise; only rank 0 writes files."""
    return int(os.environ.get("RANK", "0"))


def _all_reduce(t: torch.Tensor, distributed: bool) -> torch.Tensor:
    if distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# --- history -----------------------------------------------------------------------------------


@dataclass
class History:
    """What `fit` did: one dict per epoch (also in out_dir/history.json) and the best epoch."""

    tasks: tuple[str, ...]
    config: TrainConfig
    out_dir: Path
    world_size: int = 1
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float = -math.inf
    stopped_early: bool = False

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    def load_best(self) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
        """The best checkpoint (`train.checkpoint.load_checkpoint`)."""
        return load_checkpoint(self.best_path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "config": self.config.to_dict(),
            "world_size": self.world_size,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "stopped_early": self.stopped_early,
            "epochs": self.epochs,
        }

    def save(self) -> Path:
        path = self.out_dir / "history.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path


# --- fit ---------------------------------------------------------------------------------------


def _device(cfg: TrainConfig, distributed: bool) -> torch.device:
    if cfg.device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA device")
        index = int(os.environ.get("LOCAL_RANK", "0")) if distributed else 0
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def _loader(
    ds: Dataset,
    cfg: TrainConfig,
    *,
    train: bool,
    distributed: bool,
    generator: torch.Generator,
) -> tuple[DataLoader, DistributedSampler | None]:
    n = len(ds)  # type: ignore[arg-type]
    sampler: DistributedSampler | None = None
    if distributed and train:
        sampler = DistributedSampler(ds, shuffle=True, seed=cfg.seed)
        per_rank = math.ceil(n / dist.get_world_size())
    elif distributed:  # validation: disjoint shards, no padding, so all-reduced counts are exact
        ds = Subset(ds, list(range(dist.get_rank(), n, dist.get_world_size())))
        per_rank = len(ds)
    else:
        per_rank = n
    # BatchNorm cannot train on a batch of one: drop a last batch of exactly one packet
    drop_last = train and per_rank % cfg.batch_size == 1 and per_rank > 1
    loader = DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=cfg.num_workers,
        worker_init_fn=_seed_worker,
        generator=generator,
        persistent_workers=cfg.num_workers > 0,
    )
    return loader, sampler


def _epoch_sums(ntasks: int, device: torch.device) -> torch.Tensor:
    return torch.zeros(ntasks, 3, dtype=torch.float64, device=device)  # loss sum, correct, count


def _per_task(tasks: Sequence[str], values: torch.Tensor) -> dict[str, float]:
    return dict(zip(tasks, (float(v) for v in values), strict=True))


def _validate(
    model: nn.Module,
    loader: DataLoader,
    tasks: tuple[str, ...],
    device: torch.device,
    distributed: bool,
) -> torch.Tensor:
    sums = _epoch_sums(len(tasks), device)
    model.eval()
    with torch.no_grad():
        for x, labels in loader:
            logits = task_logits(model(x.to(device)), tasks)
            for i, t in enumerate(tasks):
                y = labels[t].to(device)
                sums[i, 0] += F.cross_entropy(logits[t], y, reduction="sum")
                sums[i, 1] += (logits[t].argmax(dim=1) == y).sum()
                sums[i, 2] += len(y)
    return _all_reduce(sums, distributed).cpu()


def fit(
    spec: ModelSpec,
    train_ds: Dataset,
    val_ds: Dataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    init_state: Mapping[str, torch.Tensor] | None = None,
    tasks: Sequence[str] | None = None,
    progress: bool = True,
    checkpoint_extra: Mapping[str, Any] | None = None,
) -> History:
    """Train `spec.build()` on `train_ds`, keep the best mean validation accuracy.

    Datasets are map-style items `(x (2, L) float32, {task: class})`, e.g. `SplitData.train`.
    `init_state`: a state dict loaded strictly into the built model before training (weights
    inherited by a pruned model); otherwise the spec's initialisation under `cfg.seed`.
    `tasks`: None trains every output of a multi-task model; a single-task model needs its task
    (`("app",)`). Writes out_dir/best.pt (`save_checkpoint`, extra: epoch, tasks, validation
    accuracy, config, plus `checkpoint_extra`) and out_dir/history.json after every epoch.
    Deterministic under `cfg.seed` on a given machine and world size.
    """
    out = Path(out_dir)
    distributed = world_size() > 1
    owns_group = False
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if cfg.device == "cuda" else "gloo")
        owns_group = True
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        history = _fit(
            spec,
            train_ds,
            val_ds,
            cfg,
            out,
            init_state=init_state,
            tasks_arg=tasks,
            progress=progress,
            checkpoint_extra=checkpoint_extra,
            distributed=distributed,
        )
        if owns_group:
            dist.barrier()  # rank 0 may still be writing files
        return history
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
        if owns_group:
            dist.destroy_process_group()


def _fit(
    spec: ModelSpec,
    train_ds: Dataset,
    val_ds: Dataset,
    cfg: TrainConfig,
    out: Path,
    *,
    init_state: Mapping[str, torch.Tensor] | None,
    tasks_arg: Sequence[str] | None,
    progress: bool,
    checkpoint_extra: Mapping[str, Any] | None,
    distributed: bool,
) -> History:
    is_main = not distributed or dist.get_rank() == 0
    if len(train_ds) == 0 or len(val_ds) == 0:  # type: ignore[arg-type]
        raise ValueError("training and validation sets must not be empty")
    device = _device(cfg, distributed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)  # noqa: NPY002 (as above)
    torch.manual_seed(cfg.seed)
    model = spec.build()
    if init_state is not None:
        try:
            model.load_state_dict(dict(init_state), strict=True)
        except RuntimeError as exc:
            raise ModelError(f"init_state does not fit model {spec.name!r}: {exc}") from exc
    length = int(train_ds[0][0].shape[-1])
    tasks = resolve_tasks(model, tasks_arg, length)
    model.to(device)
    net: nn.Module = model
    if distributed:
        outputs = output_classes(model, length)
        untrained_heads = isinstance(outputs, dict) and len(outputs) > len(tasks)
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=untrained_heads,  # DDP must not wait for their gradients
        )
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader, sampler = _loader(
        train_ds, cfg, train=True, distributed=distributed, generator=generator
    )
    val_loader, _ = _loader(val_ds, cfg, train=False, distributed=distributed, generator=generator)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    weighting = TaskWeighting(
        tasks, cfg.weighting, {t: cfg.gamma(t) for t in tasks}, cfg.dtp_smoothing, device
    )
    history = History(tasks, cfg, out, dist.get_world_size() if distributed else 1)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    extra_base = dict(checkpoint_extra or {})
    since_best = 0
    for epoch in range(1, cfg.max_epochs + 1):
        started = time.perf_counter()
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        sums = _epoch_sums(len(tasks), device)
        weighted = torch.zeros((), dtype=torch.float64, device=device)
        bar = tqdm(
            train_loader,
            desc=f"epoch {epoch}/{cfg.max_epochs}",
            unit="batch",
            leave=False,
            disable=not (progress and is_main),
        )
        for step, (x, labels) in enumerate(bar):
            logits = task_logits(net(x.to(device)), tasks)
            targets = [labels[t].to(device) for t in tasks]
            losses = torch.stack(
                [F.cross_entropy(logits[t], y) for t, y in zip(tasks, targets, strict=True)]
            )  # (tasks,)
            correct = torch.stack(
                [(logits[t].argmax(dim=1) == y).sum() for t, y in zip(tasks, targets, strict=True)]
            ).double()  # (tasks,)
            n = len(targets[0])
            if weighting.dynamic:  # every rank folds the same global accuracy into k
                counts = _all_reduce(torch.cat([correct, correct.new_tensor([n])]), distributed)
                beta = weighting.update(counts[:-1] / counts[-1])
            else:
                beta = weighting.update(correct / n)
            loss = (beta * losses).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums[:, 0] += losses.detach().double() * n
            sums[:, 1] += correct
            sums[:, 2] += n
            weighted += loss.detach().double() * n
            if bar.disable is False and step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        sums = _all_reduce(sums, distributed).cpu()
        weighted_total = float(_all_reduce(weighted, distributed).cpu())
        val = _validate(model, val_loader, tasks, device, distributed)
        val_acc = val[:, 1] / val[:, 2]
        mean_val = float(val_acc.mean())
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": _per_task(tasks, sums[:, 0] / sums[:, 2]),
            "train_weighted_loss": weighted_total / float(sums[0, 2]),
            "train_accuracy": _per_task(tasks, sums[:, 1] / sums[:, 2]),
            "val_loss": _per_task(tasks, val[:, 0] / val[:, 2]),
            "val_accuracy": _per_task(tasks, val_acc),
            "val_accuracy_mean": mean_val,
            "train_packets": int(sums[0, 2]),
            "val_packets": int(val[0, 2]),
            **weighting.state(),
            "seconds": time.perf_counter() - started,
        }
        history.epochs.append(record)
        improved = mean_val > history.best_val_accuracy
        if improved:
            history.best_val_accuracy = mean_val
            history.best_epoch = epoch
            since_best = 0
            if is_main:
                extra = {
                    **extra_base,
                    "epoch": epoch,
                    "tasks": list(tasks),
                    "val_accuracy": record["val_accuracy"],
                    "train_config": cfg.to_dict(),
                }
                save_checkpoint(out / "best.pt", model, spec, extra)
        else:
            since_best += 1
        if since_best >= cfg.patience:
            history.stopped_early = True
        if is_main:
            history.save()
            if progress:
                accs = " ".join(f"{t}={v:.3f}" for t, v in record["val_accuracy"].items())
                tqdm.write(
                    f"epoch {epoch}: train loss {record['train_weighted_loss']:.4f}, val acc "
                    f"{accs} (mean {mean_val:.4f}{', best' if improved else ''})"
                )
        if history.stopped_early:
            break
    return history


def finetune(
    model: nn.Module,
    spec: ModelSpec,
    train_ds: Dataset,
    val_ds: Dataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    tasks: Sequence[str] | None = None,
    progress: bool = False,
) -> nn.Module:
    """`fit` starting from `model`'s weights (`spec` must build the same architecture); returns
    the best checkpoint's model, in eval mode, on CPU. Fits `train.prune.Finetune` once the
    datasets and config are bound (functools.partial)."""
    history = fit(
        spec,
        train_ds,
        val_ds,
        cfg,
        out_dir,
        init_state=model.state_dict(),
        tasks=tasks,
        progress=progress,
    )
    return history.load_best()[0]


def single_task_classes(task: str) -> int:
    """Classes of `task` in the schema (the `classes` of a single-task model's spec)."""
    if task not in TASK_BY_NAME:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASK_NAMES)}")
    return TASK_BY_NAME[task].num_classes

"""The four architectures of the two papers, as PyTorch modules taking (batch, 2, L) float32.

* `cnn2d`: the 2D-CNN baseline of Camelo et al. (tc_spectrum `helpers/tr_models.py`, Keras).
* `stl1d`: the single-task 1D-CNN of Góez et al. 2024 (paper 1, Sec. IV-C, Fig. 4, Table 8).
* `mtl1d`: their multi-task 1D-CNN with hard parameter sharing (Sec. IV-D2, Fig. 5, Table 10).
* `resnet`: TinyRadio's lightweight "ResNet" baseline (paper 2, Table I; its Keras code).

The two Keras baselines (`cnn2d`, `resnet`) are rebuilt layer for layer: Keras 'same' padding
(an odd pad goes after), Keras BatchNorm defaults (eps 1e-3, momentum 0.99) and Glorot init, and
their parameter counts follow Keras' convention (`keras_param_count`: BatchNorm counts 4 per
channel). PyTorch flattens channels first where Keras flattens channels last: counts and FLOPs
are the same, imported Keras weights would need a permutation.

Layer widths are constructor arguments (lists), so a pruned model is the same class built with
slimmer widths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from edge_core.schema import INPUT_LENGTH, TASK_NAMES, TASKS
from train import MODEL_NAMES

KERAS_BN_EPS = 1e-3
KERAS_BN_MOMENTUM = 0.01
"""Keras' BatchNormalization momentum 0.99 (weight of the old running value) is PyTorch's 0.01."""

_KERAS_BN_BUFFERS = ("running_mean", "running_var")


def keras_same_padding(size: int, kernel: int, stride: int = 1) -> tuple[int, int]:
    """(before, after) padding of Keras 'same' along one axis, so that out = ceil(size/stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _check_widths(name: str, widths: Sequence[int]) -> tuple[int, ...]:
    widths = tuple(int(w) for w in widths)
    if not widths or min(widths) < 1:
        raise ValueError(f"{name} must be a non-empty list of positive widths, got {list(widths)}")
    return widths


class SameConv1d(nn.Conv1d):
    """Conv1d (stride 1) with Keras 'same' padding; an even kernel pads one more sample after."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        odd = kernel % 2 == 1
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2 if odd else 0)
        self._extra_pad = (0, 0) if odd else keras_same_padding(1, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._extra_pad != (0, 0):
            x = F.pad(x, self._extra_pad)
        return super().forward(x)


class SameConv2d(nn.Conv2d):
    """Conv2d (square kernel, stride 1) with Keras 'same' padding on both axes."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        odd = kernel % 2 == 1
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2 if odd else 0)
        self._extra_pad = (0, 0, 0, 0) if odd else keras_same_padding(1, kernel) * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._extra_pad != (0, 0, 0, 0):
            x = F.pad(x, self._extra_pad)
        return super().forward(x)


class SameMaxPool(nn.Module):
    """Keras MaxPooling with padding='same' over the last `len(kernel)` axes.

    Keras pads (with -inf) before *and* after when the pad is 2 or more, which shifts the windows;
    PyTorch's ceil_mode only pads after, so it is not the same (e.g. 750 -> 188 with pool 4).
    """

    def __init__(self, kernel: tuple[int, ...], stride: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride or kernel

    @staticmethod
    def out_size(size: int, stride: int) -> int:
        return -(-size // stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for axis in range(1, len(self.kernel) + 1):  # F.pad lists the last axis first
            k, s = self.kernel[-axis], self.stride[-axis]
            pads.extend(keras_same_padding(int(x.shape[-axis]), k, s))
        if any(pads):
            x = F.pad(x, pads, value=float("-inf"))
        if len(self.kernel) == 1:
            return F.max_pool1d(x, self.kernel, self.stride)
        return F.max_pool2d(x, self.kernel, self.stride)


def _keras_bn(dims: int, channels: int) -> nn.Module:
    cls = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    return cls(channels, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)


def _keras_init(model: nn.Module) -> None:
    """Keras defaults: glorot_uniform kernels, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class Cnn2d(nn.Module):
    """The 2D-CNN baseline of Camelo et al. (tc_spectrum `CNNClassifier.construct_model`).

    Keras input (2, L, 1), i.e. a 2 x L image with one channel; per filter count:
    Conv2D(f, K x K, same, ReLU) -> MaxPool2D(4, same) -> Dropout -> BatchNorm, then Flatten and
    per dense width Dense(ReLU) -> Dropout -> BatchNorm, then Dense(classes) (logits; Keras had
    softmax). 'same' pooling turns 2 x 3000 into 1 x 750, 1 x 188, 1 x 47, 1 x 12 (Flatten 384).
    Published: K = 32 (app, app-type), K = 2 (frames), dropout 0.1 (`get_params_model`).
    Keras-style parameters: 3,239,747 (K=32, C=3); 3,239,879 (K=32, C=7); 73,667 (K=2, C=3).
    """

    param_convention: ClassVar[str] = "keras"

    def __init__(
        self,
        classes: int,
        length: int = INPUT_LENGTH,
        kernel: int = 32,
        filters: Sequence[int] = (32, 32, 32, 32),
        dense: Sequence[int] = (128, 64, 32),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _check_positive(classes=classes, length=length, kernel=kernel)
        filters = _check_widths("filters", filters)
        dense = _check_widths("dense", dense)
        layers: list[nn.Module] = []
        height, width, channels = 2, length, 1
        for f in filters:
            layers += [SameConv2d(channels, f, kernel), nn.ReLU(), SameMaxPool((4, 4))]
            layers += [nn.Dropout(dropout), _keras_bn(2, f)]
            height, width = SameMaxPool.out_size(height, 4), SameMaxPool.out_size(width, 4)
            channels = f
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        features = channels * height * width  # 32 * 1 * 12 = 384 for L = 3000
        for w in dense:
            head += [nn.Linear(features, w), nn.ReLU(), nn.Dropout(dropout), _keras_bn(1, w)]
            features = w
        head.append(nn.Linear(features, classes))
        self.classifier = nn.Sequential(*head)
        _keras_init(self)
        first = self.features[0]
        assert isinstance(first, SameConv2d)
        nn.init.xavier_normal_(first.weight)  # kernel_initializer="glorot_normal" there

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.unsqueeze(1)))  # (batch, 1, 2, L) NCHW


class ConvTrunk1d(nn.Sequential):
    """Paper 1's feature extractor: per width, Conv1D(same) -> ReLU -> BN -> MaxPool(2) -> Dropout.

    The order is Sec. IV-D2's ("each followed by ReLU activation, batch normalization,
    maxpooling, and dropout"); pooling floors (PyTorch's default): 3000 -> 1500, 750, 375, 187.
    """

    def __init__(
        self,
        widths: Sequence[int],
        kernel: int,
        length: int,
        dropout: float,
        in_channels: int = 2,
        pool: int = 2,
    ) -> None:
        layers: list[nn.Module] = []
        channels = in_channels
        for w in widths:
            layers += [SameConv1d(channels, w, kernel), nn.ReLU(), nn.BatchNorm1d(w)]
            layers += [nn.MaxPool1d(pool), nn.Dropout(dropout)]
            length //= pool
            channels = w
        super().__init__(*layers)
        if length < 1:
            raise ValueError(f"{len(widths)} poolings by {pool} leave nothing of the input")
        self.out_features = channels * length
        """Flattened size of the output: 32 * 187 = 5984 for L = 3000."""


class DenseHead(nn.Sequential):
    """Per width Linear -> ReLU -> BN -> Dropout, then Linear(classes) giving logits."""

    def __init__(
        self, in_features: int, widths: Sequence[int], classes: int, dropout: float
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        for w in widths:
            layers += [nn.Linear(in_features, w), nn.ReLU(), nn.BatchNorm1d(w), nn.Dropout(dropout)]
            in_features = w
        layers.append(nn.Linear(in_features, classes))
        super().__init__(*layers)


class Stl1d(nn.Module):
    """Single-task 1D-CNN of paper 1 (Sec. IV-C, Fig. 4, Table 8): Conv1D over L, I/Q as channels.

    The paper gives the layer types, not their sizes. Fig. 4 presents it as the 2D-CNN's twin, so
    the head keeps Dense 128/64/32; the trunk is `ConvTrunk1d` with 4 x 32 filters. Kernel 3 is
    the choice that reproduces Table 8's "786K" trainable parameters: 786,755 for C=3 (786,887
    for C=7); kernel 2 would give 783.6K, kernel 5 793.0K. With `dense=(32, 32, 32)` it is the
    STL model of Table 10 (203,715 vs the paper's 203.6K). Counts are PyTorch's (trainable),
    as the paper reports; dropout is not stated (0.1 as in tc_spectrum). The authors' TensorRT
    log (batch 1: 578,048 B of activations, about 4 B x (32 x 3000 + 32 x 1500)) agrees with 32
    filters, 'same' padding and pooling by 2.
    """

    param_convention: ClassVar[str] = "torch"

    def __init__(
        self,
        classes: int,
        length: int = INPUT_LENGTH,
        kernel: int = 3,
        conv_widths: Sequence[int] = (32, 32, 32, 32),
        dense: Sequence[int] = (128, 64, 32),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _check_positive(classes=classes, length=length, kernel=kernel)
        self.trunk = ConvTrunk1d(_check_widths("conv_widths", conv_widths), kernel, length, dropout)
        dense = _check_widths("dense", dense)
        self.head = DenseHead(self.trunk.out_features, dense, classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class Mtl1d(nn.Module):
    """Multi-task 1D-CNN of paper 1 with hard parameter sharing (Sec. IV-D2, Fig. 5, Table 10).

    A shared `ConvTrunk1d` (4 x 32 filters, kernel 3, as `Stl1d`) and, per task of the schema, a
    `DenseHead` of three hidden layers. The paper "reduce[s] the number of neurons on the first
    two dense layers"; Table 10 gives 784.8K parameters for the MTL model and 203.6K for an STL
    model of "a similar number of layers and neurons". Both force a first width of 32 (31 or 33
    miss by about 24K); (32, 32, 32) gives 785,616 and 203,715 (+0.1 %, +0.06 %). The paper's
    percentages around these numbers contradict each other, so no width choice matches them all.

    `head_widths` is one list for every head or a mapping task name -> list (pruning slims heads
    one by one). `forward` returns task name -> logits (batch, classes), in schema order.
    """

    param_convention: ClassVar[str] = "torch"

    def __init__(
        self,
        length: int = INPUT_LENGTH,
        kernel: int = 3,
        conv_widths: Sequence[int] = (32, 32, 32, 32),
        head_widths: Sequence[int] | Mapping[str, Sequence[int]] = (32, 32, 32),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _check_positive(length=length, kernel=kernel)
        self.trunk = ConvTrunk1d(_check_widths("conv_widths", conv_widths), kernel, length, dropout)
        if isinstance(head_widths, Mapping):
            unknown = sorted(set(head_widths) - set(TASK_NAMES))
            missing = [t for t in TASK_NAMES if t not in head_widths]
            if unknown or missing:
                raise ValueError(f"head_widths: unknown tasks {unknown}, missing tasks {missing}")
            per_task = {t: _check_widths(f"head_widths[{t!r}]", head_widths[t]) for t in TASK_NAMES}
        else:
            widths = _check_widths("head_widths", head_widths)
            per_task = dict.fromkeys(TASK_NAMES, widths)
        self.heads = nn.ModuleDict(
            {
                t.name: DenseHead(self.trunk.out_features, per_task[t.name], t.num_classes, dropout)
                for t in TASKS
            }
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        return {name: self.heads[name](features) for name in TASK_NAMES}


class ResNetBlock(nn.Module):
    """TinyRadio's `resnet_block`: Conv(mid) -> BN -> ReLU -> Conv(out) -> BN -> MaxPool(2, same).

    The authors' `Add()` (after the first BN, before the ReLU) is commented out in every version,
    so `skip=False` is the published network. `skip=True` restores it as `ReLU(BN(conv1(x)) +
    shortcut(x))`, the shortcut being the identity when conv1 keeps the channel count (always in
    the baseline) and a 1x1 projection without bias otherwise (pruned widths).
    """

    def __init__(self, in_channels: int, mid: int, out: int, kernel: int, skip: bool) -> None:
        super().__init__()
        self.conv1 = SameConv1d(in_channels, mid, kernel)
        self.bn1 = _keras_bn(1, mid)
        self.shortcut: nn.Module | None = None
        if skip:
            self.shortcut = (
                nn.Identity() if in_channels == mid else nn.Conv1d(in_channels, mid, 1, bias=False)
            )
        self.conv2 = SameConv1d(mid, out, kernel)
        self.bn2 = _keras_bn(1, out)
        self.pool = SameMaxPool((2,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn1(self.conv1(x))
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.pool(self.bn2(self.conv2(torch.relu(y))))


class ResNet(nn.Module):
    """TinyRadio's lightweight "ResNet" baseline (paper 2 Table I; `model_training.py`).

    Keras input (L, 1, 2) with (5, 1) kernels is a 1-D network over L with the 2 I/Q channels:
    stem Conv(16, 5, same) -> BN -> ReLU; 5 `ResNetBlock`s of widths (16, 32), (32, 64),
    (64, 128), (128, 256), (256, C), each halving L (ceil); Flatten -> Dropout(0.5) -> Dense(C).
    The published Dense has a ReLU before the softmax (`head_relu=True`, as published).
    Keras-style parameters: 717,250 (L=1024, C=27); 695,720 (L=864, C=20); 674,760 (L=864,
    C=10), the paper's Table II. `blocks` lists (mid, out) widths, for pruned variants.
    """

    param_convention: ClassVar[str] = "keras"

    def __init__(
        self,
        classes: int,
        length: int = INPUT_LENGTH,
        kernel: int = 5,
        stem: int = 16,
        blocks: Sequence[tuple[int, int]] | None = None,
        skip: bool = False,
        dropout: float = 0.5,
        head_relu: bool = True,
    ) -> None:
        super().__init__()
        _check_positive(classes=classes, length=length, kernel=kernel, stem=stem)
        if blocks is None:
            blocks = ((16, 32), (32, 64), (64, 128), (128, 256), (256, classes))
        if not blocks or min(min(b) for b in blocks) < 1:
            raise ValueError("blocks must be a non-empty list of positive (mid, out) widths")
        self.stem = nn.Sequential(SameConv1d(2, stem, kernel), _keras_bn(1, stem), nn.ReLU())
        channels = stem
        layers: list[nn.Module] = []
        for mid, out in blocks:
            layers.append(ResNetBlock(channels, mid, out, kernel, skip))
            length = SameMaxPool.out_size(length, 2)
            channels = out
        self.blocks = nn.Sequential(*layers)
        head: list[nn.Module] = [
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * length, classes),
        ]
        if head_relu:
            head.append(nn.ReLU())
        self.head = nn.Sequential(*head)
        _keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "cnn2d": Cnn2d,
    "stl1d": Stl1d,
    "mtl1d": Mtl1d,
    "resnet": ResNet,
}
if tuple(_BUILDERS) != MODEL_NAMES:  # the CLI lists models without importing torch
    raise RuntimeError(f"train.MODEL_NAMES {MODEL_NAMES} != models {tuple(_BUILDERS)}")


def build_model(
    name: str,
    *,
    classes: int | None = None,
    length: int = INPUT_LENGTH,
    kernel: int | None = None,
    **kw: Any,
) -> nn.Module:
    """Build architecture `name`; `kernel=None` keeps its published default.

    Single-task models need `classes`; `mtl1d` takes its tasks and classes from the schema.
    Other keyword arguments go to the class (widths, dropout, `skip`, ...).
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {list(MODEL_NAMES)}")
    if kernel is not None:
        kw["kernel"] = kernel
    if name == "mtl1d":
        if classes is not None:
            raise ValueError("mtl1d takes its classes from the task schema; do not pass classes")
        return Mtl1d(length=length, **kw)
    if classes is None:
        raise ValueError(f"model {name!r} needs the number of classes")
    return _BUILDERS[name](classes=classes, length=length, **kw)


def trainable_param_count(model: nn.Module) -> int:
    """Parameters with requires_grad, what PyTorch code (and paper 1) reports."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def keras_param_count(model: nn.Module) -> int:
    """Parameters counted like Keras' `model.summary()` total.

    Keras counts BatchNormalization's moving mean and variance as (non-trainable) weights, so
    BatchNorm is 4 per channel; PyTorch keeps those two as buffers.
    """
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(
        b.numel()
        for name, b in model.named_buffers()
        if name.rsplit(".", 1)[-1] in _KERAS_BN_BUFFERS
    )
    return params + buffers


def count_macs(model: nn.Module, length: int = INPUT_LENGTH) -> int:
    """Multiply-accumulates of conv and linear layers for one (2, length) input.

    Counted with forward hooks on one zero input in eval mode (zero-padding positions count, as
    a dense convolution computes them); BatchNorm, activations, pooling and bias adds are free.
    """
    macs = 0

    def conv_hook(m: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal macs
        assert isinstance(m, nn.Conv1d | nn.Conv2d)
        kernel = 1
        for k in m.kernel_size:
            kernel *= k
        macs += output[0].numel() * (m.in_channels // m.groups) * kernel

    def linear_hook(m: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal macs
        assert isinstance(m, nn.Linear)
        macs += output[0].numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 2, length))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs


def describe(model: nn.Module, length: int = INPUT_LENGTH) -> dict[str, int | str]:
    """Size and cost of `model` for inputs (2, length).

    `params` follows the convention of the paper the model comes from (`param_convention`):
    Keras-style (`keras_param_count`) for the Keras baselines cnn2d and resnet, trainable
    (`trainable_param_count`) for paper 1's PyTorch models stl1d and mtl1d; both are also given.
    `flops` = 2 x `macs` (`count_macs`: conv and linear layers only, per sample). Paper 2's FLOPs
    (241.75M for its RadioML ResNet) come from a profiler that also counts other operations and
    are not reproduced (conv + linear: 164.7M).
    """
    convention = getattr(model, "param_convention", "torch")
    keras = keras_param_count(model)
    trainable = trainable_param_count(model)
    macs = count_macs(model, length)
    return {
        "params": keras if convention == "keras" else trainable,
        "flops": 2 * macs,
        "macs": macs,
        "keras_params": keras,
        "trainable_params": trainable,
        "param_convention": convention,
    }

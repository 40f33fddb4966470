import argparse
import csv
import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import train  # noqa: E402
from edge_core.errors import EdgeTcError  # noqa: E402
from edge_core.schema import INPUT_LENGTH, TASK_NAMES, TASKS  # noqa: E402
from train import MODEL_NAMES, TRAIN_EXTRA_MISSING  # noqa: E402
from train.cli import add_train_parser  # noqa: E402
from train.data import PacketDataset  # noqa: E402
from train.models import (  # noqa: E402
    SameMaxPool,
    build_model,
    count_macs,
    describe,
    keras_param_count,
    keras_same_padding,
    trainable_param_count,
)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [  # Keras-style totals of the published Keras code (seed study; TinyRadio Table II)
        ("cnn2d", {"classes": 3, "kernel": 32}, 3_239_747),
        ("cnn2d", {"classes": 3, "kernel": 2}, 73_667),
        ("cnn2d", {"classes": 7, "kernel": 32}, 3_239_879),
        ("resnet", {"classes": 27, "length": 1024}, 717_250),
        ("resnet", {"classes": 20, "length": 864}, 695_720),
        ("resnet", {"classes": 10, "length": 864}, 674_760),
    ],
)
def test_keras_baselines_reproduce_published_parameter_counts(name, kwargs, expected):
    assert keras_param_count(build_model(name, **kwargs)) == expected


@pytest.mark.parametrize(
    ("name", "kwargs", "exact", "paper"),
    [  # paper 1 (PyTorch, trainable counts): Table 8 STL "786K"; Table 10 STL 203.6K, MTL 784.8K
        ("stl1d", {"classes": 3}, 786_755, 786_000),
        ("stl1d", {"classes": 7}, 786_887, 786_000),
        ("stl1d", {"classes": 3, "dense": (32, 32, 32)}, 203_715, 203_600),
        ("mtl1d", {}, 785_616, 784_800),
    ],
)
def test_paper1_models_are_within_a_fraction_of_a_percent_of_the_paper(name, kwargs, exact, paper):
    model = build_model(name, **kwargs)
    assert trainable_param_count(model) == exact
    assert abs(exact - paper) / paper < 0.002
    assert describe(model)["params"] == exact


def test_mtl1d_outputs_one_logit_tensor_per_task_in_schema_order():
    model = build_model("mtl1d").eval()
    assert trainable_param_count(model) <= 800_000
    with torch.no_grad():
        out = model(torch.randn(5, 2, INPUT_LENGTH))
    assert list(out) == list(TASK_NAMES)
    for task in TASKS:
        assert out[task.name].shape == (5, task.num_classes)


def test_mtl1d_widths_are_configurable_per_layer_and_per_head():
    heads = {"phy": [8, 8, 8], "frame": [4, 4, 4], "app_type": [16, 8], "app": [32, 16, 8]}
    slim = build_model("mtl1d", conv_widths=[16, 12, 8, 8], head_widths=heads, kernel=5)
    assert trainable_param_count(slim) < trainable_param_count(build_model("mtl1d")) / 4
    out = slim.eval()(torch.randn(2, 2, INPUT_LENGTH))
    assert out["app"].shape == (2, 7)
    with pytest.raises(ValueError, match="missing tasks"):
        build_model("mtl1d", head_widths={"phy": [8]})
    with pytest.raises(ValueError, match="classes from the task schema"):
        build_model("mtl1d", classes=3)


def test_keras_same_padding_and_pooling_match_keras():
    assert keras_same_padding(3000, 4, 4) == (0, 0)
    assert keras_same_padding(750, 4, 4) == (1, 1)  # pads before too: windows shift
    assert keras_same_padding(2, 4, 4) == (1, 1)
    assert keras_same_padding(27, 2, 2) == (0, 1)
    assert keras_same_padding(1, 32) == (15, 16)  # stride-1 conv, even kernel: more after
    pooled = SameMaxPool((4,))(torch.arange(750.0).reshape(1, 1, 750))
    assert pooled.shape[-1] == 188
    assert pooled[0, 0, :2].tolist() == [2.0, 6.0]  # window [-inf, 0, 1, 2], then [3..6]


def test_cnn2d_spatial_sizes_follow_keras_same_pooling():
    model = build_model("cnn2d", classes=3, kernel=2).eval()
    sizes = []
    for m in model.features:
        if isinstance(m, SameMaxPool):
            m.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[2:])))
    with torch.no_grad():
        logits = model(torch.randn(2, 2, INPUT_LENGTH))
    assert sizes == [(1, 750), (1, 188), (1, 47), (1, 12)]  # Flatten 32 * 12 = 384
    assert logits.shape == (2, 3)


def test_resnet_skip_option():
    plain = build_model("resnet", classes=10, length=864)
    skip = build_model("resnet", classes=10, length=864, skip=True)
    assert keras_param_count(skip) == keras_param_count(plain)  # identity shortcuts
    x = torch.randn(3, 2, 864)
    assert skip.eval()(x).shape == (3, 10)
    pruned = [(3, 22), (8, 21), (8, 19), (6, 25), (11, 6)]  # TinyRadio RadioML N2 widths
    slim = build_model("resnet", classes=27, length=1024, stem=13, blocks=pruned, skip=True)
    assert slim.eval()(torch.randn(2, 2, 1024)).shape == (2, 27)
    assert keras_param_count(build_model("resnet", classes=27, length=1024, stem=13,
                                         blocks=pruned)) == 12_921  # fmt: skip


def test_count_macs_matches_hand_count():
    # TinyRadio RadioML ResNet: sum over convs of L_out * k * cin * cout, plus the dense layer
    lengths, widths = [1024, 512, 256, 128, 64], [16, 32, 64, 128, 256]
    convs = 1024 * 5 * 2 * 16
    for length, w in zip(lengths, widths, strict=True):  # a block's input has w channels
        out = 2 * w if w < 256 else 27
        convs += length * 5 * (w * w + w * out)
    expected = convs + 32 * 27 * 27
    model = build_model("resnet", classes=27, length=1024)
    assert count_macs(model, 1024) == expected == 82_352_928
    assert describe(model, 1024)["flops"] == 2 * expected
    assert model.training  # restored after the counting pass


def test_build_model_rejects_bad_arguments():
    assert set(MODEL_NAMES) == {"cnn2d", "stl1d", "mtl1d", "resnet"}
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg10", classes=3)
    with pytest.raises(ValueError, match="needs the number of classes"):
        build_model("stl1d")
    with pytest.raises(ValueError, match="nothing of the input"):
        build_model("stl1d", classes=3, length=10)


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="edge-tc")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_describe_cli_prints_json(capsys):
    assert run_cli(["train", "describe", "resnet", "--classes", "27", "--length", "1024",
                    "--json"]) == 0  # fmt: skip
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 717_250 and info["flops"] == 2 * 82_352_928
    assert run_cli(["train", "describe", "cnn2d", "--kernel", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 73_667
    assert run_cli(["train", "describe", "mtl1d", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 785_616
    assert run_cli(["train", "describe", "stl1d"]) == 0
    assert "786,755" in capsys.readouterr().out
    with pytest.raises(ValueError, match="drop --classes"):
        run_cli(["train", "describe", "mtl1d", "--classes", "3"])


def test_describe_cli_without_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    monkeypatch.delitem(sys.modules, "train.models", raising=False)
    monkeypatch.delattr(train, "models", raising=False)
    with pytest.raises(EdgeTcError, match="the train extra is missing") as info:
        run_cli(["train", "describe", "stl1d", "--json"])
    assert str(info.value).startswith(TRAIN_EXTRA_MISSING)


def test_dataloader_workers_feed_the_mtl_model(tmp_path):
    rng = np.random.default_rng(0)
    n = 10
    np.save(tmp_path / "iq.npy", rng.standard_normal((n, 2, INPUT_LENGTH)).astype(np.float32))
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*TASK_NAMES, "snr_db"])
        for _ in range(n):
            w.writerow(["802.11n", "data", "video", "netflix", "12.5"])
    loader = torch.utils.data.DataLoader(PacketDataset(tmp_path), batch_size=4, num_workers=2)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (4, 2, INPUT_LENGTH)
    assert y["app"].tolist() == [4] * 4 and y["phy"].tolist() == [2] * 4
    out = build_model("mtl1d")(x)
    loss = sum(torch.nn.functional.cross_entropy(out[t], y[t]) for t in TASK_NAMES)
    loss.backward()

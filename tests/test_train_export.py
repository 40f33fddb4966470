"""Exports (train.export) checked in the real runtimes: onnxruntime, LiteRT, TensorRT (GPU only).

One narrow mtl1d is fitted on a few hundred synthetic packets until it is confident on them
(as a trained model is on its data), then exported once per module; the evaluation packets are
drawn from those packets, so agreement measures the exports, not generalisation.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime (train/onnx extra) is not installed")
pytest.importorskip("onnx", reason="onnx (train extra) is not installed")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert (train extra) is not installed")

from edge_core.bundle import load_manifest  # noqa: E402
from edge_core.cli import main  # noqa: E402
from edge_core.errors import EdgeTcError, ModelError  # noqa: E402
from edge_core.schema import TASK_NAMES, TASKS  # noqa: E402
from edge_core.synth.dataset import write_dataset  # noqa: E402
from train import export as ex  # noqa: E402
from train.checkpoint import ModelSpec, save_checkpoint  # noqa: E402
from train.data import PacketDataset  # noqa: E402

PACKETS = 200
SPEC = ModelSpec("mtl1d", {"conv_widths": [8, 8, 8, 8], "head_widths": [16, 16, 16], "dropout": 0})


def _fit(model, packets, epochs=8, lr=3e-3):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr)
    for epoch in range(epochs):
        model.train()
        order = np.random.default_rng(epoch).permutation(len(packets))
        for start in range(0, len(order), 32):
            b = order[start : start + 32]
            out = model(torch.from_numpy(packets.x[b]))
            loss = sum(
                torch.nn.functional.cross_entropy(out[t], torch.from_numpy(packets.labels[t][b]))
                for t in TASK_NAMES
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = write_dataset(root / "data", PACKETS, seed=7, workers=1, progress=False)
    packets = ex.gather_packets(PacketDataset(data), range(PACKETS))
    torch.manual_seed(0)
    model = _fit(SPEC.build(), packets)
    checkpoint = root / "best.pt"
    save_checkpoint(checkpoint, model, SPEC, {"tasks": list(TASK_NAMES), "epoch": 8})
    return root, data, checkpoint, model, packets


@pytest.fixture(scope="module")
def bundle(trained):
    root, data, checkpoint, _, _ = trained
    out = ex.export_bundle(
        checkpoint,
        root / "bundle",
        calib_ds=PacketDataset(data),
        heldout_ds=PacketDataset(data),  # another object: may overlap the calibration packets
        data_description={"generator": "synthetic", "seed": 7, "packets": PACKETS},
        calib_packets=48,
        heldout_packets=160,
    )
    return load_manifest(out)


def test_manifest_round_trip(bundle, trained):
    _, _, _, model, _ = trained
    m = bundle.manifest
    assert bundle.tasks == TASK_NAMES
    assert [(e.format, e.precision) for e in bundle.models] == [
        ("onnx", "fp32"),
        ("onnx", "int8"),
        ("tflite", "int8"),
    ]
    assert m["input"]["normalization"]["kind"] == "unit_rms"  # synthetic training data
    assert m["model"]["params"] == sum(p.numel() for p in model.parameters())
    assert m["model"]["kwargs"]["conv_widths"] == [8, 8, 8, 8]
    assert m["training_data"] == {"generator": "synthetic", "seed": 7, "packets": PACKETS}
    assert m["evaluation"]["heldout_packets"] == 160
    on_disk = {p.name for p in bundle.directory.iterdir()} - {"manifest.json"}
    assert set(m["files"]) == on_disk == {e.path.name for e in bundle.models}
    assert not any(p.suffix == ".pt" for p in bundle.directory.iterdir())
    for e in bundle.models:
        bar = 0.99 if e.precision == "fp32" else 0.97
        assert min(e.agreement.values()) >= bar, (e.path.name, e.agreement)
        assert set(e.outputs) == set(TASK_NAMES)
    assert bundle.select("onnx", "fp32").agreement == dict.fromkeys(TASK_NAMES, 1.0)


def test_onnx_fp32_names_and_dynamic_batch(bundle, trained):
    _, _, _, model, packets = trained
    onnx_fp32 = bundle.select("onnx", "fp32")
    session = ex.onnx_session(onnx_fp32.path)
    assert [i.name for i in session.get_inputs()] == ["iq"]
    assert [o.name for o in session.get_outputs()] == list(TASK_NAMES)
    assert onnx_fp32.input.shape == ("batch", 2, 3000)
    for batch in (1, 5):
        x = packets.x[:batch]
        ref = ex.torch_probabilities(model, x, TASK_NAMES)
        got = dict(zip(TASK_NAMES, session.run(None, {"iq": x}), strict=True))
        for task in TASK_NAMES:
            assert got[task].shape == (batch, ref[task].shape[1])
            np.testing.assert_allclose(got[task], ref[task], atol=1e-5)
            np.testing.assert_allclose(got[task].sum(-1), 1.0, atol=1e-5)  # probabilities


def test_onnx_int8_is_qdq_per_channel(bundle, trained):
    import onnx

    path = bundle.select("onnx", "int8").path
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    inits = {i.name: i for i in graph.initializer}
    weight_scales = [
        inits[n.input[1]]
        for n in graph.node
        if n.op_type == "DequantizeLinear"
        and inits.get(n.input[0]) is not None
        and inits[n.input[0]].data_type == onnx.TensorProto.INT8
    ]
    assert any(len(s.dims) == 1 and s.dims[0] > 1 for s in weight_scales)  # per-channel
    x = trained[4].x[:3]
    out = ex.run_onnx(path, x, TASK_NAMES)
    assert {t: o.shape for t, o in out.items()} == {t.name: (3, t.num_classes) for t in TASKS}


def test_tflite_is_edgetpu_ready(bundle):
    entry = bundle.select("tflite", "int8")
    ops = ex.tflite_ops(entry.path)
    assert set(ops) <= ex.EDGETPU_OPS, sorted(set(ops) - ex.EDGETPU_OPS)
    assert ops.count("CONV_2D") == 4 and ops.count("SOFTMAX") == 4
    assert "DEQUANTIZE" not in ops
    assert entry.input.shape == (1, 1, 3000, 2) and entry.input.dtype == "int8"
    assert entry.input.layout == "NHWC" and entry.input.quantization is not None
    for task in TASKS:
        out = entry.outputs[task.name]
        assert out.name == task.name and out.dtype == "int8" and out.shape == (1, task.num_classes)
        assert out.quantization is not None
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(entry.path))
    sub = model.subgraphs[0]
    for op in sub.operators:
        if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) == "CONV_2D":
            assert list(sub.tensors[op.inputs[1]].shape)[1] == 1  # (out, 1, K, in): a (1, K) kernel


def test_tflite_float_lowering_is_exact(trained):
    """The float graph (BN folded, flatten permuted) equals PyTorch before quantization."""
    _, _, _, model, packets = trained
    x = packets.x[:8]
    ref = ex.torch_probabilities(model, x, TASK_NAMES)
    got = ex.run_tflite(ex.tflite_float_model(model, TASK_NAMES), x, TASK_NAMES)
    for task in TASK_NAMES:
        np.testing.assert_allclose(got[task], ref[task], atol=2e-5)


def test_tflite_lowering_negative_bn_scale_and_single_task(trained):
    """A BN with a negative scale cannot fold into the ReLU conv: MUL + ADD keep it exact."""
    packets = trained[4]
    torch.manual_seed(1)
    model = ModelSpec("stl1d", {"classes": 3, "conv_widths": [4, 6], "dense": [8]}).build()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        model.trunk[2].weight[0] = -1.0
    model.eval()
    assert ex.model_tasks(model, {"tasks": ["frame"]}) == ("frame",)
    data = ex.tflite_float_model(model, ("frame",))
    ops = ex.tflite_ops(data)
    assert "MUL" in ops and "ADD" in ops
    x = packets.x[:6]
    ref = ex.torch_probabilities(model, x, ("frame",))["frame"]
    got = ex.run_tflite(data, x, ("frame",))["frame"]
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_unsupported_architecture_for_tflite():
    model = ModelSpec("resnet", {"classes": 3}).build().eval()
    with pytest.raises(ValueError, match="ConvTrunk1d"):
        ex.tflite_float_model(model, ("phy",))


def test_agreement_gate_fails_clearly_and_leaves_no_bundle(trained):
    root, data, checkpoint, _, _ = trained
    out = root / "refused"
    ds = PacketDataset(data)
    with pytest.raises(ModelError, match=r"tflite-int8 export disagrees.*below the required 1\.01"):
        ex.export_bundle(
            checkpoint,
            out,
            formats=("tflite-int8",),
            calib_ds=ds,
            heldout_ds=ds,
            data_description={},
            calib_packets=32,
            heldout_packets=40,
            agreement_required={"int8": 1.01},
        )
    assert not out.exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".refused")]


def test_cli_export(trained, capsys):
    root, data, checkpoint, _, _ = trained
    out = root / "cli_bundle"
    argv = ["train", "export", "--checkpoint", str(checkpoint), "--data", str(data)]
    argv += ["--out", str(out), "--formats", "tflite-int8", "--calib", "32", "--heldout", "60"]
    argv += ["--int8-agreement", "0.9"]  # 32 calibration packets: a rough quantization
    assert main(argv) == 0
    assert "model_int8.tflite" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training_data"]["training_dataset"]["seed"] == 7
    assert manifest["training_data"]["checkpoint"]["epoch"] == 8
    assert manifest["evaluation"]["agreement_required"]["int8"] == 0.9
    assert main(argv) == 2  # the bundle directory is not empty any more
    assert "exists and is not empty" in capsys.readouterr().err


def test_cli_export_rejects_an_impossible_agreement_bar(trained, capsys):
    root, data, checkpoint, _, _ = trained
    argv = ["train", "export", "--checkpoint", str(checkpoint), "--data", str(data)]
    argv += ["--out", str(root / "never"), "--int8-agreement", "1.5"]
    assert main(argv) == 2
    assert "--int8-agreement must be in [0, 1]" in capsys.readouterr().err


def test_tensorrt_missing_is_reported(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EdgeTcError, match="engine 'tensorrt' unavailable"):
        ex.build_tensorrt_plan(tmp_path / "m.onnx", tmp_path / "m.plan")


def test_tensorrt_plan_on_gpu(bundle, trained, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (GPU machines only)")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU for TensorRT")
    _, _, _, model, packets = trained
    plan = ex.build_tensorrt_plan(
        bundle.select("onnx", "fp32").path, tmp_path / "m.plan", precision="fp16",
        min_batch=1, opt_batch=8, max_batch=16,
    )  # fmt: skip
    ref = ex.torch_probabilities(model, packets.x[:64], TASK_NAMES)
    got = ex.run_tensorrt(plan, packets.x[:64], TASK_NAMES, batch=16)
    assert min(ex.top1_agreement(ref, got).values()) >= 0.99


def test_equalize_heads_keeps_the_function_and_tames_a_starved_unit(trained):
    """A head BN over a rarely firing unit (tiny running variance) would fold a column far larger
    than the rest into the next Linear; equalization folds the BN away and balances the ranges
    without changing what the model computes, and the TFLite INT8 export then agrees."""
    _, _, _, model, packets = trained
    starved = SPEC.build()
    starved.load_state_dict(model.state_dict())
    starved.eval()
    bn = starved.heads["frame"][3]
    assert isinstance(bn, torch.nn.BatchNorm1d)
    with torch.no_grad():
        bn.running_var[0] = 1e-7  # scale ~ 3000x the others
    eq = ex.equalize_heads(starved, TASK_NAMES)
    assert eq is not starved and isinstance(starved.heads["frame"][3], torch.nn.BatchNorm1d)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for h in eq.heads.values() for m in h)
    x = torch.from_numpy(packets.x[:64])
    with torch.no_grad():
        a, b = starved(x), eq(x)
    for t in TASK_NAMES:
        np.testing.assert_allclose(b[t].numpy(), a[t].numpy(), rtol=1e-3, atol=1e-3)
    nxt = eq.heads["frame"][5].weight.detach().abs()
    col = nxt.amax(dim=0)
    assert float(col.max() / col.median()) < 50
    # the lowered graph of the equalized model is the same function too
    probs = ex.run_tflite(ex.tflite_float_model(eq, TASK_NAMES), packets.x[:8], TASK_NAMES)
    ref = ex.torch_probabilities(starved, packets.x[:8], TASK_NAMES)
    for t in TASK_NAMES:
        np.testing.assert_allclose(probs[t], ref[t], atol=1e-4)


def test_equalize_heads_leaves_other_models_alone():
    resnet = ModelSpec("resnet", {"classes": 3, "length": 864}).build()
    assert ex.equalize_heads(resnet, ["phy"]) is resnet


def test_fold_trunk_batchnorm_is_the_same_function_with_int8_friendly_ops(trained):
    _, _, _, model, packets = trained
    folded = ex.fold_trunk_batchnorm(model, TASK_NAMES)
    assert folded is not model
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.trunk)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.trunk)  # the original is kept
    x = torch.from_numpy(packets.x[:32])
    with torch.no_grad():
        a, b = model.eval()(x), folded(x)
    for t in TASK_NAMES:
        np.testing.assert_allclose(b[t].numpy(), a[t].numpy(), rtol=1e-4, atol=1e-4)


def test_onnx_int8_keeps_every_heads_logit_layer_in_float(bundle):
    """The layer feeding each task's Softmax has float weights (no DequantizeLinear before it);
    the layers before it are quantized."""
    import onnx

    graph = onnx.load(str(bundle.select("onnx", "int8").path)).graph
    producer = {out: n for n in graph.node for out in n.output}
    inits = {i.name for i in graph.initializer}
    logits = [producer[n.input[0]] for n in graph.node if n.op_type == "Softmax"]
    assert len(logits) == len(TASK_NAMES)
    for node in logits:
        weight = node.input[1]
        assert weight in inits, f"{node.name}: weight {weight} is not a float initializer"
    dequantized = [n for n in graph.node if n.op_type in ("Gemm", "MatMul", "Conv")
                   and n.input[1] in producer
                   and producer[n.input[1]].op_type == "DequantizeLinear"]  # fmt: skip
    assert dequantized, "no quantized layer at all"
    assert ex.logit_layers(graph) == sorted(n.name for n in logits)


def test_onnx_int8_has_no_float_batchnorm(bundle):
    import onnx

    graph = onnx.load(str(bundle.select("onnx", "int8").path)).graph
    assert "BatchNormalization" not in {n.op_type for n in graph.node}


def test_the_manifest_declares_the_input_level_of_the_training_data(bundle):
    norm = bundle.manifest["input"]["normalization"]
    assert norm["kind"] == "unit_rms"  # exported from an edge-tc synthetic dataset
    assert ex.input_normalization({"training_dataset": {"generator": "MATLAB v7.3"}}) == "none"
    assert ex.input_normalization({}) == "none"


def test_fold_trunk_shifts_leaves_conv_relu_pool_and_changes_only_the_borders(trained):
    _, _, _, model, packets = trained
    folded = ex.fold_trunk_batchnorm(model, TASK_NAMES)
    shifted = ex.fold_trunk_shifts(folded, TASK_NAMES)
    assert shifted is not folded
    assert not any(isinstance(m, ex.ChannelShift) for m in shifted.trunk)
    assert any(isinstance(m, ex.ChannelShift) for m in folded.trunk)  # the input is kept
    x = torch.from_numpy(packets.x[:16])
    kernel = next(m for m in model.trunk if isinstance(m, torch.nn.Conv1d)).kernel_size[0]
    with torch.no_grad():
        a, b = x, x
        for la, lb in zip(folded.trunk, shifted.trunk, strict=True):
            a, b = la(a), lb(b)
            if isinstance(la, torch.nn.Conv1d):
                differ = (a - b).abs().amax(dim=(0, 1)) > 1e-4  # (L,) positions that differ
                inner = differ[kernel : len(differ) - kernel]
                # only the conv's zero padding saw the shift: the borders of each layer (and
                # what the earlier borders reach), never its middle
                assert not inner[len(inner) // 4 : 3 * len(inner) // 4].any()
        outs_a, outs_b = folded(x), shifted(x)
    for t in TASK_NAMES:
        agree = (outs_a[t].argmax(1) == outs_b[t].argmax(1)).float().mean().item()
        assert agree >= 0.9, (t, agree)
    assert ex.fold_trunk_shifts(shifted, TASK_NAMES) is shifted  # nothing left to fold


def test_onnx_int8_trunk_has_no_float_add(bundle):
    import onnx

    graph = onnx.load(str(bundle.select("onnx", "int8").path)).graph
    ops = [n.op_type for n in graph.node]
    assert "Add" not in ops and "BatchNormalization" not in ops, sorted(set(ops))

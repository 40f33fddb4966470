import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from edge_core.errors import ModelError  # noqa: E402
from train.checkpoint import ModelSpec, load_checkpoint, save_checkpoint  # noqa: E402


def test_round_trip_keeps_pruned_widths_and_weights(tmp_path):
    spec = ModelSpec("mtl1d", {"conv_widths": (8, 16, 8, 4), "head_widths": (16, 8, 4)})
    model = spec.build().eval()
    save_checkpoint(tmp_path / "m.pt", model, spec, {"epoch": 3})
    loaded, spec2, extra = load_checkpoint(tmp_path / "m.pt")
    assert extra == {"epoch": 3}
    assert spec2.kwargs["conv_widths"] == [8, 16, 8, 4]
    x = torch.randn(2, 2, 3000)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for task in a:
        assert torch.equal(a[task], b[task])


def test_garbage_file_is_a_model_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match=r"bad\.pt"):
        load_checkpoint(bad)


def test_wrong_widths_for_state_dict_is_a_model_error(tmp_path):
    spec = ModelSpec("stl1d", {"classes": 3})
    save_checkpoint(tmp_path / "m.pt", spec.build(), ModelSpec("stl1d", {"classes": 7}))
    with pytest.raises(ModelError, match="bad checkpoint"):
        load_checkpoint(tmp_path / "m.pt")

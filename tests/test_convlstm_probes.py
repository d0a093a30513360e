"""benchmarks/convlstm_probes.py: the probe models and their training loop."""

import pytest
import torch

from benchmarks import convlstm_probes as cp
from crnn.config import load_config
from crnn.model import build_model


def _batch(b=3, t=4, h=8, w=4):
    torch.manual_seed(0)
    return torch.rand(b, t, 3, h, w), torch.rand(b, 23)


@pytest.mark.parametrize("probe", cp.PROBES)
def test_every_probe_starts_as_persistence(probe):
    x, p = _batch()
    m = cp.ProbeConvLSTM(probe, hidden=(8, 8))
    assert torch.equal(m(x, p), x)                       # residual head from zero


@pytest.mark.parametrize("probe,overrides", [
    ("base", []),
    # what the convlstm-cpu preset trains
    ("norm+skip", ["model.convlstm.norm=true", "model.convlstm.skip=true"]),
    ("norm+skip+axial", ["model.convlstm.norm=true", "model.convlstm.skip=true", "model.convlstm.axial=true"]),
    ("axial", ["model.convlstm.axial=true"]),
])
def test_probe_is_the_convlstm_family(probe, overrides):
    # the convlstm-fast preset's model (with the overrides): the same parameter names and shapes,
    # the same initial weights from the same seed, and the same outputs from the same weights
    torch.manual_seed(0)
    fam = build_model(load_config("convlstm-fast", overrides=overrides).model)
    torch.manual_seed(0)
    model = cp.ProbeConvLSTM(probe)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in fam.state_dict().items()}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fam.state_dict().values()))
    with torch.no_grad():
        for q in fam.parameters():
            q.normal_(0, 0.1)
        model.load_state_dict(fam.state_dict())
        x = torch.rand(2, 4, 3, 32, 16)
        assert torch.allclose(model(x), fam(x), atol=1e-6)


def test_oracle_reads_the_parameters_and_coord_and_global_add_what_they_say():
    x, p = _batch()
    m = cp.ProbeConvLSTM("oracle", hidden=(8,))
    with torch.no_grad():
        m.head.weight.normal_(0, 0.5)
    assert not torch.allclose(m(x, p), m(x, 1 - p))
    with pytest.raises(ValueError, match="needs the parameters"):
        m(x)
    assert cp.ProbeConvLSTM("oracle", hidden=(8,)).cells[0].conv.in_channels == 12 + 23 + 8
    assert cp.ProbeConvLSTM("coord", hidden=(8,)).cells[0].conv.in_channels == 12 + 2 + 8
    assert len(cp.ProbeConvLSTM("global", hidden=(8, 8)).context) == 2
    with pytest.raises(ValueError, match="probe 'nope'"):
        cp.ProbeConvLSTM("nope")


def test_train_probe_learns_a_constant_change():
    # frames brighten by 0.1 per step: every probe must learn it in a few epochs
    torch.manual_seed(0)
    base = torch.rand(64, 1, 3, 8, 4) * 0.5
    frames = base + 0.1 * torch.arange(5).view(1, 5, 1, 1, 1)
    params = torch.rand(64, 23)
    lines = []
    res = cp.train_probe("coord", (frames, params), (frames[:16], params[:16]), epochs=3,
                         batch_size=16, lr=1e-2, log=lines.append)
    persistence = (0.1 * 255) ** 2
    assert len(res["test_mse"]) == 4 and all(v < 0.3 * persistence for v in res["test_mse"])
    assert len(lines) == 3 and lines[0].startswith("coord: epoch 0")


def test_cli_refuses_unknown_probes(capsys):
    with pytest.raises(SystemExit):
        cp.main(["--data", "nowhere", "--probes", "base,nope"])
    assert "unknown ['nope']" in capsys.readouterr().err


def test_cli_refuses_a_missing_dataset(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cp.main(["--data", str(tmp_path / "none"), "--probes", "base"])
    assert "none" in capsys.readouterr().err


def test_kernel_and_patch_options_reach_the_cells(capsys):
    m = cp.ProbeConvLSTM("base", hidden=(8,), kernel_size=5, patch=1)
    assert m.cells[0].conv.kernel_size == (5, 5) and m.cells[0].conv.in_channels == 3 + 8
    for bad in (["--kernel-size", "4"], ["--patch", "0"]):
        with pytest.raises(SystemExit):
            cp.main(["--data", "nowhere", "--probes", "base", *bad])
        assert "--kernel-size" in capsys.readouterr().err


def _card(**kw):
    card = {"ages": [10, 15, 20, 25, 30], "height": 32, "width": 16, "splits": {"train": 50, "test": 5},
            "columns": {n: "float64" for n in cp.pine.PARAM_NAMES}, "generator_version": "pine-1"}
    card.update(kw)
    return card


@pytest.mark.parametrize("card,args,match", [
    (_card(layout="irregular", max_frames=9), [], "irregular dataset"),
    (_card(ages=[10]), [], "1 frame"),
    (_card(columns={}), ["--probes", "oracle"], "oracle probe needs"),
    (_card(splits={"train": 50, "test": 0}), [], "no test series"),
    (_card(), ["--train-series", "51"], "training split has 50"),
    (_card(height=30), ["--patch", "4"], "30x16 frames are not divisible"),
    (_card(), ["--threads", "0"], "--threads 0"),
    (_card(), ["--step-weights", "1,1"], "has 4 forecast steps"),
    (_card(), ["--step-weights", "0,0,0,0"], "not all 0"),
    (_card(), ["--step-weights", "1,x,1,1"], "comma-separated numbers"),
    (_card(), ["--ema", "0.99,1.5"], "decays in (0, 1)"),
    (_card(), ["--hidden", "64,0"], "positive channel counts"),
    (_card(), ["--batch-size", "0"], "--batch-size 0"),
    (_card(), ["--lr", "0"], "--lr 0.0 > 0"),
    (_card(), ["--probes", "axial", "--hidden", "6"], "multiples of 4"),
    (_card(), ["--probes", "st+norm", "--hidden", "64,32"], "expected equal sizes"),
    (_card(), ["--probes", "norm", "--hidden", "30,30,30"], "multiples of 4 for the axial and norm"),
    (_card(), ["--probes", "st+norm", "--hidden", "30,30"], "multiples of 4 for the axial and norm"),
    (_card(), ["--probes", "norm+nope"], "unknown ['norm+nope']"),
])
def test_cli_refuses_before_loading_frames(monkeypatch, capsys, card, args, match):
    monkeypatch.setattr(cp, "read_card", lambda path: card)
    monkeypatch.setattr(cp, "read_numpy", lambda *a, **k: pytest.fail("frames loaded before the checks"))
    with pytest.raises(SystemExit):
        cp.main(["--data", "somewhere", *(args if "--probes" in args else ["--probes", "base", *args])])
    assert match in capsys.readouterr().err


def test_probe_follows_the_number_of_frames():
    # 3 frames per series: the model sees 2 and forecasts 2 (one MSE per forecast age)
    torch.manual_seed(0)
    frames = torch.rand(16, 3, 3, 8, 4)
    res = cp.train_probe("base", (frames, torch.zeros(16, 23)), (frames[:4], torch.zeros(4, 23)),
                         epochs=1, in_frames=2, log=lambda *_: None, hidden=(4,))
    assert len(res["test_mse"]) == 2


def test_axial_attention_sees_its_whole_column_or_row_and_nothing_else():
    torch.manual_seed(0)
    for axis in ("h", "w"):
        block = cp.AxialAttention(8, axis)
        x = torch.rand(1, 8, 6, 4)
        assert torch.equal(block(x), x)                 # zero-initialised output: the identity
        with torch.no_grad():
            block.out.weight.normal_(0, 0.5)
            y = x.clone()
            y[0, :, 0, 0] += 1.0                        # change the top-left cell only
            d = (block(y) - block(x)).abs().sum(1)[0]   # (6, 4): which cells the change reached
        if axis == "h":                                 # the whole first column, no other column
            assert (d[:, 0] > 0).all() and (d[:, 1:] == 0).all()
        else:                                           # the whole first row, no other row
            assert (d[0, :] > 0).all() and (d[1:, :] == 0).all()
    with pytest.raises(ValueError, match="axial attention"):
        cp.AxialAttention(6, "h")
    m = cp.ProbeConvLSTM("axial", hidden=(8, 8))
    assert len(m.axial) == 2 and m.cells[0].conv.in_channels == 12 + 8


def test_step_weights_and_moving_averages():
    torch.manual_seed(0)
    base = torch.rand(32, 1, 3, 8, 4) * 0.5
    frames = base + 0.1 * torch.arange(5).view(1, 5, 1, 1, 1)
    data = (frames, torch.zeros(32, 23))
    kw = dict(epochs=1, batch_size=8, lr=1e-2, log=lambda *_: None, hidden=(4,))
    first = cp.train_probe("base", data, data, step_weights=[1, 0, 0, 0], **kw)
    last = cp.train_probe("base", data, data, step_weights=[0, 0, 0, 1], ema=(0.5, 0.9), **kw)
    assert first["test_mse"] != last["test_mse"]
    assert set(last["ema_test_mse"]) == {"0.5", "0.9"} and all(len(v) == 4 for v in last["ema_test_mse"].values())
    assert "ema_test_mse" not in first
    for bad in ({"step_weights": [1, 1]}, {"step_weights": [0, 0, 0, 0]}, {"step_weights": [1, -1, 1, 1]},
                {"ema": (1.0,)}):
        with pytest.raises(ValueError):
            cp.train_probe("base", data, data, **{**kw, **bad})


def test_probes_combine_with_plus_and_reach_the_model():
    """norm+skip: normalised cells and a head reading every layer; st: PredRNN's cells (the family's
    own class) with a memory; diff and coord add their input channels together."""
    from crnn.models.predrnn import SpatioTemporalLSTMCell

    m = cp.ProbeConvLSTM("norm+skip", hidden=(8, 8))
    assert m.cells[0].gate_norm is not None and m.head.in_channels == 16
    st = cp.ProbeConvLSTM("st+norm", hidden=(8, 8))
    assert isinstance(st.cells[0], SpatioTemporalLSTMCell) and st.cells[0].norm
    assert cp.ProbeConvLSTM("diff+coord", hidden=(8,)).cells[0].conv.in_channels == 12 + 12 + 2 + 8
    x, p = _batch()
    for probe in ("norm+skip", "st+norm", "diff+coord", "refine", "composite"):
        model = cp.ProbeConvLSTM(probe, hidden=(8, 8))
        with torch.no_grad():
            for q in model.parameters():
                q.normal_(0, 0.2)
            y = model(x, p)
        assert y.shape == x.shape and not torch.allclose(y, x)
    with pytest.raises(ValueError, match="equal hidden sizes"):
        cp.ProbeConvLSTM("st", hidden=(8, 4))
    for probe in ("norm", "st+norm", "norm+skip"):
        with pytest.raises(ValueError, match="multiples of 4"):
            cp.ProbeConvLSTM(probe, hidden=(30, 30))


def test_composite_moves_each_pixel_towards_a_predicted_colour():
    """composite: x + a (sigmoid(colour) - x); the head's last patch^2 channels are the amount a."""
    x, p = _batch()
    m = cp.ProbeConvLSTM("composite+norm+skip", hidden=(8, 8))
    assert m.head.out_channels == (3 + 1) * 4
    with torch.no_grad():
        m.head.bias[-4:] = 1.0                           # a = 1, colour logits 0: every pixel -> 0.5
        assert torch.allclose(m(x, p), torch.full_like(x, 0.5))
        m.head.bias[-4:] = 0.25                          # a quarter of the way from x to 0.5
        assert torch.allclose(m(x, p), x + 0.25 * (0.5 - x))
        m.head.bias[:-4] = 20.0                          # colour -> 1 (sigmoid saturates)
        assert torch.allclose(m(x, p), x + 0.25 * (1 - x), atol=1e-6)


def test_augment_hflip_reaches_the_training_batches(monkeypatch):
    """--augment hflip: every training batch goes through crnn.loop.augment with the dataset's axis;
    the test split is scored as it is."""
    seen = []
    real = cp.augment_batch
    monkeypatch.setattr(cp, "augment_batch", lambda x, kind, axis: seen.append((kind, axis)) or real(x, kind, axis))
    torch.manual_seed(0)
    frames = torch.rand(16, 5, 3, 8, 4)
    params = torch.rand(16, 23)
    res = cp.train_probe("base", (frames, params), (frames[:4], params[:4]), epochs=1, batch_size=8,
                         augment="hflip", mirror_axis=2.0, hidden=(4,), log=lambda s: None)
    assert seen == [("hflip", 2.0)] * 2 and len(res["test_mse"]) == 4
    with pytest.raises(ValueError, match="mirror axis 9"):
        cp.train_probe("base", (frames, params), (frames[:4], params[:4]), epochs=1, batch_size=8,
                       augment="hflip", mirror_axis=9, hidden=(4,), log=lambda s: None)

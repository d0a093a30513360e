"""The forecaster family (crnn.models): shapes at several image sizes, size-independent parameter
counts, causality, learning on a tiny set, FLOP counts, configs, and the analog baseline."""

import dataclasses
import os
import re

import numpy as np
import pytest
import torch

from crnn.config import from_dict, load_config, to_dict
from crnn.model import FAMILIES, ModelConfig, build_model, count_flops, count_parameters, rollout
from crnn.models.analog import AnalogForecaster
from crnn.models.base import causal_windows
from crnn.models.convlstm import ConvLSTMConfig
from crnn.models.predrnn import PredRNNConfig
from crnn.models.simvp import SimVPConfig
from crnn.models.timevp import TimeVPConfig

NEW = ("convlstm", "predrnn", "simvp", "timevp")  # timevp: its regular-grid call (tests/test_timeaware.py: the rest)
SIZES = [(32, 16), (64, 64), (128, 128)]


def small(kind: str, height: int = 32, width: int = 16) -> ModelConfig:
    return ModelConfig(kind=kind, height=height, width=width,
                       convlstm=ConvLSTMConfig(hidden=(8, 8)), predrnn=PredRNNConfig(hidden=(8, 8)),
                       simvp=SimVPConfig(hid_s=8, hid_t=16, n_t=2),
                       timevp=TimeVPConfig(hid_s=8, hid_t=16, n_t=2, window=4))


@pytest.mark.parametrize("kind", NEW)
@pytest.mark.parametrize("hw", SIZES)
def test_output_shape_at_every_size(kind, hw):
    m = build_model(small(kind, *hw)).eval()
    x = torch.rand(2, 4, 3, *hw)
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("kind", NEW)
def test_parameters_do_not_grow_with_image_size(kind):
    """The default preset's model at 32x16 and at 128x128: convolution only, so the same count
    (the paper's CRNN grows 43x, from 17.8 M to 775 M)."""
    n = {hw: count_parameters(build_model(ModelConfig(kind=kind, height=hw[0], width=hw[1]))) for hw in SIZES}
    assert n[(128, 128)] <= 1.5 * n[(32, 16)]
    assert n[(32, 16)] > 10_000
    crnn = {hw: count_parameters(build_model(ModelConfig(height=hw[0], width=hw[1]))) for hw in SIZES[:2]}
    assert crnn[(64, 64)] > 10 * crnn[(32, 16)]  # the contrast this family exists for


@pytest.mark.parametrize("kind", NEW)
def test_causal_output_t_sees_only_inputs_up_to_t(kind):
    """Changing frame 2 must leave the forecasts of steps 0 and 1 unchanged and change step 2: a
    window model that read ahead would copy the frame it is asked to forecast."""
    torch.manual_seed(0)
    m = build_model(small(kind)).eval()
    for p in m.parameters():  # residual heads start at zero: give them something to say
        torch.nn.init.normal_(p, std=0.2)
    x = torch.rand(3, 4, 3, 32, 16)
    x2 = x.clone()
    x2[:, 2] = torch.rand(3, 3, 32, 16)
    with torch.no_grad():
        y, y2 = m(x), m(x2)
    assert torch.allclose(y[:, :2], y2[:, :2], atol=1e-5)
    assert not torch.allclose(y[:, 2:], y2[:, 2:], atol=1e-4)


@pytest.mark.parametrize("kind", NEW)
def test_residual_model_starts_as_persistence(kind):
    m = build_model(small(kind)).eval()
    x = torch.rand(2, 4, 3, 32, 16)
    with torch.no_grad():
        assert torch.allclose(m(x), x)


@pytest.mark.parametrize("kind", NEW)
def test_loss_decreases_on_a_tiny_set(kind):
    """Twenty Adam steps on 16 series of moving squares lower the next-frame MSE by a third."""
    torch.manual_seed(0)
    x = torch.zeros(16, 5, 3, 32, 16)
    for i in range(16):
        for t in range(5):
            r = 4 + 4 * t + (i % 3)
            x[i, t, i % 3, r:r + 6, 4:10] = 1.0
    m = build_model(small(kind)).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.mse_loss(m(x[:, :4]), x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("kind", NEW)
def test_rollout_and_shorter_windows(kind):
    """Rollout feeds forecasts back (any horizon), and a series shorter than the window works."""
    m = build_model(small(kind)).eval()
    with torch.no_grad():
        assert rollout(m, torch.rand(2, 4, 3, 32, 16), 3).shape == (2, 3, 3, 32, 16)
        assert m(torch.rand(2, 2, 3, 32, 16)).shape == (2, 2, 3, 32, 16)


@pytest.mark.parametrize("field,value,match", [
    ("convlstm", ConvLSTMConfig(patch=3), "model.convlstm.patch=3"),
    ("convlstm", ConvLSTMConfig(kernel_size=4), "model.convlstm.kernel_size=4"),
    ("convlstm", ConvLSTMConfig(hidden=()), "model.convlstm.hidden"),
    ("predrnn", PredRNNConfig(hidden=(8, 4)), "model.predrnn.hidden=[8, 4]: expected equal"),
    ("predrnn", PredRNNConfig(hidden=(6, 6), norm=True), "model.predrnn.hidden=[6, 6]: with norm=true"),
    ("predrnn", PredRNNConfig(patch=3), "model.predrnn.patch=3"),
    ("predrnn", PredRNNConfig(kernel_size=2), "model.predrnn.kernel_size=2"),
    ("predrnn", PredRNNConfig(residual="yes"), "model.predrnn.residual='yes'"),
    ("simvp", SimVPConfig(n_s=6), "model.simvp.n_s=6"),  # downsamples by 8; 36x20 is not divisible
    ("simvp", SimVPConfig(hid_s=0), "model.simvp.hid_s=0"),
    ("simvp", SimVPConfig(n_t=1), "model.simvp.n_t=1"),
    ("simvp", SimVPConfig(drop_path=1.0), "model.simvp.drop_path"),
])
def test_bad_family_fields_are_named(field, value, match):
    cfg = dataclasses.replace(ModelConfig(kind=field, height=36, width=20), **{field: value})
    with pytest.raises(ValueError, match=re.escape(match)):
        build_model(cfg)


def test_family_sections_round_trip_through_config_and_overrides():
    cfg = load_config("simvp", overrides=["model.simvp.hid_s=8", "model.convlstm.hidden=[4,4]"])
    assert cfg.model.kind == "simvp" and cfg.model.simvp.hid_s == 8 and cfg.model.convlstm.hidden == (4, 4)
    assert to_dict(from_dict(to_dict(cfg))) == to_dict(cfg)
    with pytest.raises(KeyError, match="model.simvp.nope"):
        load_config(overrides=["model.simvp.nope=1"])
    with pytest.raises(TypeError, match="model.simvp.hid_s"):
        load_config(overrides=["model.simvp.hid_s=wide"])
    # a checkpoint written before the family sections existed still loads (defaults fill them)
    old = to_dict(load_config("quick"))
    del old["model"]["simvp"], old["model"]["convlstm"]
    assert from_dict(old).model.simvp == SimVPConfig()


def test_every_family_preset_builds():
    from crnn.config import PRESETS

    kinds = {load_config(p).model.kind for p in PRESETS}
    assert set(FAMILIES) <= kinds
    for p in PRESETS:
        build_model(load_config(p).model)


def test_convlstm_muon_preset_is_the_best_models_recipe():
    """The preset reproduces the recorded best model's first run (BENCHMARKS.md part 13: 4 x 64
    normalised cells with skips, step weights 1,1,1,2, Muon 2e-3 at batch 8 in bf16, a warm-up epoch,
    3 epochs) and builds the 4-layer model."""
    cfg = load_config("convlstm-muon")
    assert cfg.model.kind == "convlstm"
    assert cfg.model.convlstm.hidden == (64, 64, 64, 64)
    assert (cfg.model.convlstm.norm, cfg.model.convlstm.skip, cfg.model.convlstm.residual) == (True, True, True)
    t = cfg.train
    assert (t.optimizer, t.lr, t.batch_size, t.precision, t.epochs) == ("muon", 2e-3, 8, "bf16", 3)
    assert (t.warmup_epochs, t.schedule, tuple(t.step_weights)) == (1, "cosine", (1.0, 1.0, 1.0, 2.0))
    m = build_model(cfg.model)
    assert len(m.cells) == 4
    # every field of the recorded run's config (BENCHMARKS.md part 13), its data path and threads aside
    from crnn.config import read_yaml

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rec = to_dict(from_dict(read_yaml(os.path.join(root, "benchmarks/results/2026-12-07-cpu-3/muon-40k-h4-sw-e3-config.yaml"))))
    got = to_dict(cfg)
    for d in (rec, got):
        d["data"].pop("path"), d["train"].pop("torch_threads")
    assert got == rec


def test_flop_counts_positive_and_ordered():
    """torch's FlopCounterMode: the baselines cost nothing, every family something; a convolutional
    family's cost grows with the pixel count (64x64 has 8x the pixels of 32x16), and a bigger
    config of one family costs more."""
    assert count_flops(ModelConfig(kind="persistence")) == 0
    for kind in FAMILIES:
        assert count_flops(ModelConfig(kind=kind)) > 0
    for kind in NEW:
        f32, f64 = (count_flops(ModelConfig(kind=kind, height=h, width=w)) for h, w in SIZES[:2])
        assert 7 < f64 / f32 < 9
    assert count_flops(small("simvp")) < count_flops(ModelConfig(kind="simvp"))
    # PredRNN's ST-LSTM has ~2x the ConvLSTM cell's convolutions at the same widths
    three = ConvLSTMConfig(hidden=(64, 64, 64))
    ratio = count_flops(ModelConfig(kind="predrnn")) / count_flops(ModelConfig(kind="convlstm", convlstm=three))
    assert 1.5 < ratio < 3
    # training (forward + backward) costs about 3x inference
    fwd, train = count_flops(small("convlstm")), count_flops(small("convlstm"), backward=True)
    assert 2.5 < train / fwd < 3.5


def test_causal_windows_layout():
    z = torch.arange(1, 4).view(1, 3, 1).float()  # (B=1, T=3, 1)
    win, valid = causal_windows(z, 2)
    assert win[0, :, :, 0].tolist() == [[0, 1], [1, 2], [2, 3]]
    assert valid.tolist() == [[0, 1], [1, 1], [1, 1]]


# ----------------------------------------------------------------------------- analog baseline
def _bank(n=40, t=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, t, 8, 4, 3), dtype=np.uint8)


def _float(frames):
    return torch.as_tensor(frames).permute(0, 1, 4, 2, 3).float() / 255.0


def test_analog_is_exact_on_a_bank_that_contains_the_series():
    bank = _bank()
    m = AnalogForecaster(bank, k=1)
    pick = [3, 17, 39]
    y = m(_float(bank[pick, :4]))
    assert torch.allclose(y, _float(bank[pick, 1:5]), atol=1e-6)


def test_analog_averages_the_k_nearest_changes():
    """Two bank series identical to the query up to frame t but with different futures: k=2 gives
    the query's frame plus their mean change."""
    base = _bank(n=1)[0]
    a, b = base.copy(), base.copy()
    a[4], b[4] = 0, 200
    far = np.full_like(base, 255)
    m = AnalogForecaster(np.stack([a, b, far]), k=2)
    y = m(_float(base[None, :4]))
    want = _float(base[None, 3:4])[:, 0] + (_float(a[None, 4:5])[:, 0] + _float(b[None, 4:5])[:, 0]) / 2 \
        - _float(base[None, 3:4])[:, 0]
    assert torch.allclose(y[:, 3], want.clamp(0, 1), atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    ({"k": 0}, "k=0"), ({"k": 41}, "k=41"), ({"change": "median"}, "change='median'")])
def test_analog_bad_settings_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AnalogForecaster(_bank(), **kwargs)


def test_analog_refuses_inputs_it_cannot_answer():
    m = AnalogForecaster(_bank(t=3), k=1)
    with pytest.raises(ValueError, match="need one more"):
        m(torch.rand(1, 3, 3, 8, 4))
    with pytest.raises(ValueError, match="shape"):
        m(torch.rand(1, 2, 3, 16, 4))


def test_zoo_benchmark_tables():
    """benchmarks/zoo.py: the cost rows come from the real models (parameters as count_parameters,
    FLOPs as count_flops) and the quality table lists models, baselines and the floor per age."""
    from benchmarks import zoo

    rows = zoo.measure_cost(["quick", "convlstm"], [(32, 16)], rounds=1, steps=1, batch=2, infer_batch=4)
    assert [r["preset"] for r in rows] == ["quick", "convlstm"]
    conv = load_config("convlstm").model
    assert rows[1]["params"] == count_parameters(build_model(conv)) and rows[1]["flops_fwd"] == count_flops(conv)
    assert all(r["train_series_per_s"] > 0 and r["infer_series_per_s"] > 0 for r in rows)
    assert "| convlstm | convlstm | 32x16 |" in zoo.format_cost(rows)
    assert "peak MiB" not in zoo.format_cost(rows)  # CPU rows carry no device-memory column
    bf16 = zoo.measure_cost(["convlstm"], [(32, 16)], rounds=1, steps=1, batch=2, infer_batch=4, precision="bf16")
    assert bf16[0]["precision"] == "bf16" and bf16[0]["train_series_per_s"] > 0
    gpu_row = dict(rows[1], train_peak_mib=1353.4, infer_peak_mib=524.0)
    assert zoo.format_cost([gpu_row]).splitlines()[-1].endswith("| 1353 / 524 |")

    def per_age(mse):
        return {a: {"mse": mse + i, "mae": 1.0, "ssim": 0.9, "mse_frame01": mse / 42} for i, a in
                enumerate(["15", "20", "25", "30"])}

    ev = {"ages": [15, 20, 25, 30], "results": {"model": per_age(50.0), "persistence": per_age(600.0),
                                                "analog": per_age(110.0)}}
    floor = {"floors": [{"forecast_age": a, "var_unbiased": 3.0, "sum01": 0.07} for a in (15, 20, 25, 30)]}
    text = zoo.quality_table({"simvp": ev}, floor)
    lines = text.splitlines()
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["simvp", "persistence", "analog",
                                                            "simulator floor (benchmarks/floor.py)"]
    assert "53.0 / 1.00 / 0.900" in lines[2] and "3.00" in lines[-1]
    # frames under SSIM's 11x11 window have no SSIM (null in metrics.json): n/a, not a TypeError
    small = {"ages": [15, 30], "results": {"model": {a: {"mse": 9.0, "mae": 1.0, "ssim": None, "mse_frame01": 0.1}
                                                     for a in ("15", "30")}}}
    assert "| 8x8 | 9.0 / 1.00 / n/a | 9.0 / 1.00 / n/a |" in zoo.quality_table({"8x8": small}).splitlines()[2]
    with pytest.raises(SystemExit):
        zoo.main(["cost", "--sizes", "32by16"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            zoo.main(["cost", "--device", "cuda", "--presets", "quick"])


def test_convlstm_norm_option():
    """model.convlstm.norm: group-normalised gates and cell state (Ba et al. 2016). Scaling a norm
    cell's convolution leaves its output unchanged (what normalisation is for); the plain cell's
    changes. Old checkpoints (no norm field, no norm weights) still build the plain cell."""
    from crnn.models.convlstm import ConvLSTMCell

    torch.manual_seed(0)
    x, h, c = torch.rand(2, 12, 8, 4), torch.rand(2, 8, 8, 4), torch.rand(2, 8, 8, 4)
    for norm in (True, False):
        cell = ConvLSTMCell(12, 8, 3, norm=norm)
        with torch.no_grad():
            cell.conv.bias.zero_()
            h1, c1 = cell(x, (h, c))
            cell.conv.weight.mul_(10)
            h2, c2 = cell(x, (h, c))
        change = max(float((h1 - h2).abs().max()), float((c1 - c2).abs().max()))
        assert change < 1e-3 if norm else change > 0.05
    cfg = small("convlstm")
    normed = dataclasses.replace(cfg, convlstm=ConvLSTMConfig(hidden=(8, 8), norm=True))
    m = build_model(normed).eval()
    assert any("gate_norm" in k for k in m.state_dict())
    assert not any("norm" in k for k in build_model(cfg).state_dict())
    xs = torch.rand(2, 4, 3, 32, 16)
    with torch.no_grad():
        assert torch.allclose(m(xs), xs)                        # residual head from zero
    old = to_dict(load_config("convlstm"))
    del old["model"]["convlstm"]["norm"]
    assert from_dict(old).model.convlstm.norm is False
    assert load_config("convlstm", overrides=["model.convlstm.norm=true"]).model.convlstm.norm is True


def test_convlstm_skip_option():
    """model.convlstm.skip: the head reads every layer (its input widens to the sum of the widths)
    and equal-width layers add their input: with the top layer's output projection zeroed, the
    forecast still depends on the lower layers (it does not without skip)."""
    x = torch.rand(2, 4, 3, 32, 16)
    outs = {}
    for skip in (False, True):
        torch.manual_seed(0)
        cfg = dataclasses.replace(small("convlstm"), convlstm=ConvLSTMConfig(hidden=(8, 8), skip=skip))
        m = build_model(cfg).eval()
        assert m.head.in_channels == (16 if skip else 8)
        with torch.no_grad():
            torch.nn.init.normal_(m.head.weight, std=0.2)
            m.cells[1].conv.weight.zero_()          # the top cell ignores its input and its past
            m.cells[1].conv.bias.fill_(-20.0)       # all gates shut: its own hidden state is 0
            base = m(x)
            m.cells[0].conv.weight.mul_(2)          # change the bottom layer only
            outs[skip] = float((m(x) - base).abs().max())
    assert outs[False] < 1e-6 and outs[True] > 1e-3


@pytest.mark.parametrize("hw", SIZES)
def test_convlstm_axial_option(hw):
    """model.convlstm.axial: attention along columns then rows after each cell. Starts as the model
    without it (zero output projections: the same forecast from the same cell weights); the same
    parameter count at every image size; a position then sees its whole column (a change at the top
    row moves the first step's forecast at the bottom row, which 2 layers of 3x3 cells cannot reach)
    and nothing beyond its column and row after one block."""
    torch.manual_seed(0)
    plain = build_model(small("convlstm", *hw)).eval()
    cfg = dataclasses.replace(small("convlstm", *hw), convlstm=ConvLSTMConfig(hidden=(8, 8), axial=True))
    torch.manual_seed(0)
    m = build_model(cfg).eval()
    counts = {s: count_parameters(build_model(dataclasses.replace(
        small("convlstm", *s), convlstm=ConvLSTMConfig(hidden=(8, 8), axial=True)))) for s in SIZES}
    assert len(set(counts.values())) == 1 and counts[hw] > count_parameters(plain)
    m.load_state_dict({**m.state_dict(), **plain.state_dict()})
    x = torch.rand(2, 4, 3, *hw)
    with torch.no_grad():
        torch.nn.init.normal_(plain.head.weight, std=0.2)
        m.head.weight.copy_(plain.head.weight)
        assert torch.allclose(m(x), plain(x), atol=1e-6)          # the identity at the start
        for blocks in m.axial:
            for block in blocks:
                torch.nn.init.normal_(block.out.weight, std=0.2)
        y = m(x)
        x2 = x.clone()
        x2[:, 0, :, 0, :] = 1 - x2[:, 0, :, 0, :]                 # the top row of the first frame
        moved = (m(x2) - y)[:, 0, :, -1].abs().amax()             # step 0's bottom row
        still = (plain(x2) - plain(x))[:, 0, :, -1].abs().amax()
    assert moved > 1e-4 and still < 1e-6


@pytest.mark.parametrize("value,match", [
    (dict(skip="yes"), "model.convlstm.skip='yes': expected a bool"),
    (dict(hidden=(8, 6), norm=True), "model.convlstm.hidden=[8, 6]: with norm=true"),
    (dict(norm=1), "model.convlstm.norm=1: expected a bool"),
    (dict(axial="on"), "model.convlstm.axial='on': expected a bool"),
    (dict(hidden=(8, 6), axial=True), "model.convlstm.hidden=[8, 6]: with axial=true"),
])
def test_convlstm_norm_bad_fields_are_named(value, match):
    cfg = dataclasses.replace(ModelConfig(kind="convlstm"), convlstm=ConvLSTMConfig(**value))
    with pytest.raises(ValueError, match=re.escape(match)):
        build_model(cfg)


def test_predrnn_memory_zigzags_through_the_stack():
    """PredRNN (Wang et al. 2017, Fig. 3): cell k at step t reads the spatiotemporal memory that
    cell k - 1 wrote at step t; the bottom cell reads what the top cell wrote at step t - 1 (zeros
    at step 0). Recorded by wrapping each cell."""
    m = build_model(small("predrnn")).eval()
    for p_ in m.parameters():
        torch.nn.init.normal_(p_, std=0.2)
    seen = []                                       # (layer, memory in, memory out)
    for k, cell in enumerate(m.cells):
        def wrapped(x, state, mem, _k=k, _f=cell.forward):
            out = _f(x, state, mem)
            seen.append((_k, mem, out[1]))
            return out
        cell.forward = wrapped
    with torch.no_grad():
        m(torch.rand(2, 3, 3, 32, 16))
    layers = len(m.cells)
    assert [k for k, _, _ in seen] == list(range(layers)) * 3
    assert torch.count_nonzero(seen[0][1]) == 0
    for i in range(1, len(seen)):
        assert seen[i][1] is seen[i - 1][2]         # each cell reads the memory written just before
    assert not torch.equal(seen[layers][1], seen[0][1])   # step 1's bottom read step 0's top memory

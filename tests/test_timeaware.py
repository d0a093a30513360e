"""The time-aware family (crnn.models.timevp, issue #14): irregular inputs at real-valued ages,
targets at any later age, padding, the regular-grid call, input errors, learning a motion that is
linear in age, sizes, FLOPs, config and checkpoint round trips."""

import re

import pytest
import torch

from crnn.config import Config, from_dict, load_config, to_dict
from crnn.model import ModelConfig, build_model, count_flops, count_parameters
from crnn.models.timevp import TimeVPConfig

SIZES = [(32, 16), (64, 64), (128, 128)]


def small(height=32, width=16, channels=3, **kw) -> ModelConfig:
    tv = dict(hid_s=8, hid_t=16, n_t=2, window=4, time_dim=8)
    tv.update(kw)
    return ModelConfig(kind="timevp", height=height, width=width, channels=channels, timevp=TimeVPConfig(**tv))


def perturbed(cfg: ModelConfig, seed: int = 0):
    """The model with random weights everywhere (the residual head starts at zero and says nothing)."""
    torch.manual_seed(seed)
    m = build_model(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    return m


def series(b=2, n=4, m=3, real=None, seed=0, hw=(32, 16), c=3):
    """Random irregular inputs: ``real`` real frames per series (default n), right-padded."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(b, n, c, *hw, generator=g)
    real = n if real is None else real
    ages = 7.3 + torch.cumsum(0.5 + 6 * torch.rand(b, n, generator=g), 1)  # off the 5-year grid
    mask = torch.arange(n)[None, :].expand(b, n) < real
    last = ages[:, real - 1]
    targets = last[:, None] + torch.cumsum(0.3 + 8 * torch.rand(b, m, generator=g), 1)
    return frames, ages, mask, targets


@pytest.mark.parametrize("n", [2, 3, 6])
def test_irregular_forward_shapes_and_range(n):
    m = perturbed(small())
    frames, ages, mask, targets = series(n=n, m=3)
    with torch.no_grad():
        y = m(frames, ages, mask, targets)
    assert y.shape == (2, 3, 3, 32, 16) and torch.isfinite(y).all()
    assert y.abs().max() < 100  # sane: random weights, but no blow-up
    # the trained-from-zero model (residual head at zero) returns exactly the last real frame
    m0 = build_model(small()).eval()
    with torch.no_grad():
        y0 = m0(frames, ages, mask, targets)
    assert torch.equal(y0, frames[:, n - 1:n].expand_as(y0))


def test_more_real_frames_than_the_window_use_the_most_recent():
    m = perturbed(small(window=3))
    frames, ages, mask, targets = series(n=6)
    f2 = frames.clone()
    f2[:, :3] = torch.rand_like(f2[:, :3])  # older than the 3 most recent: not seen
    with torch.no_grad():
        assert torch.allclose(m(frames, ages, mask, targets), m(f2, ages, mask, targets), atol=1e-6)


def test_padded_frames_do_not_change_the_output():
    """Right padding (the data layer's convention) and left padding: the content and ages of masked
    frames are never read; the same real frames give the same forecasts either way."""
    m = perturbed(small())
    frames, ages, mask, targets = series(n=5, real=3)
    f2, a2 = frames.clone(), ages.clone()
    f2[:, 3:] = torch.rand_like(f2[:, 3:])
    a2[:, 3:] = -1.0  # padded ages may be anything
    with torch.no_grad():
        y = m(frames, ages, mask, targets)
        assert torch.equal(y, m(f2, a2, mask, targets))
        left = m(frames.roll(2, 1), ages.roll(2, 1), mask.roll(2, 1), targets)
    assert torch.allclose(y, left, atol=1e-6)


def test_ages_matter():
    """Other target ages or other input ages give other forecasts (the untrained residual model
    gives the last real frame for any age: see test_irregular_forward_shapes_and_range)."""
    m = perturbed(small())
    frames, ages, mask, targets = series(n=3, m=2)
    with torch.no_grad():
        y = m(frames, ages, mask, targets)
        assert not torch.allclose(y, m(frames, ages, mask, targets + 3.0), atol=1e-4)
        assert not torch.allclose(y, m(frames, ages - 2.0, mask, targets), atol=1e-4)
        # one call with M targets == M calls with one target each
        for j in range(2):
            assert torch.allclose(y[:, j:j + 1], m(frames, ages, mask, targets[:, j:j + 1]), atol=1e-5)


def test_regular_grid_call_is_causal_and_matches_the_irregular_call():
    m = perturbed(small())
    x = torch.rand(2, 4, 3, 32, 16)
    x2 = x.clone()
    x2[:, 2] = torch.rand(2, 3, 32, 16)
    with torch.no_grad():
        y, y2 = m(x), m(x2)
        assert y.shape == x.shape
        assert torch.allclose(y[:, :2], y2[:, :2], atol=1e-6)
        assert not torch.allclose(y[:, 2:], y2[:, 2:], atol=1e-4)
        # step 3 of the grid call == the irregular call on ages 10..25 asking for 30
        ages = torch.tensor([[10.0, 15.0, 20.0, 25.0]]).expand(2, 4)
        irr = m(x, ages, torch.ones(2, 4, dtype=torch.bool), torch.full((2, 1), 30.0))
    assert torch.allclose(y[:, 3], irr[:, 0], atol=1e-5)
    assert torch.equal(build_model(small()).eval()(x), x)  # residual: starts as persistence


def _bad(frames, ages, mask, targets, **change):
    d = dict(frames=frames, ages=ages, mask=mask, targets=targets)
    d.update(change)
    return d["frames"], d["ages"], d["mask"], d["targets"]


@pytest.mark.parametrize("case,match", [
    ("one_real", "at least 2"),
    ("not_increasing", "not strictly increasing"),
    ("target_too_early", "after its last real input age"),
    ("ages_shape", "ages: expected shape"),
    ("mask_shape", "mask: expected shape"),
    ("mask_dtype", "torch.bool"),
    ("targets_shape", "target_ages: expected shape"),
    ("frame_shape", "expected input of shape"),
    ("nan_age", "finite"),
    ("partial", "together"),
])
def test_bad_inputs_raise_value_errors_naming_the_problem(case, match):
    m = build_model(small()).eval()
    f, a, k, t = series(n=4)
    if case == "one_real":
        k = k.clone()
        k[1, 1:] = False
    elif case == "not_increasing":
        a = a.clone()
        a[0, 2] = a[0, 1]
    elif case == "target_too_early":
        t = t.clone()
        t[1, 0] = a[1, 3]
    elif case == "ages_shape":
        a = a[:, :3]
    elif case == "mask_shape":
        k = k[:1]
    elif case == "mask_dtype":
        k = k.float()
    elif case == "targets_shape":
        t = t[:, 0]
    elif case == "frame_shape":
        f = f[..., :8]
    elif case == "nan_age":
        a = a.clone()
        a[0, 0] = float("nan")
    with pytest.raises(ValueError, match=re.escape(match)):
        with torch.no_grad():
            if case == "partial":
                m(f, a, k)
            else:
                m(f, a, k, t)


def blobs(n_series, gen, hw=16, n_in=4):
    """A Gaussian blob whose row is linear in age (random start and speed per series), observed at
    2..n_in irregular ages (right-padded) and asked for at one later age. 1 channel, hw x hw."""
    b = n_series
    real = torch.randint(2, n_in + 1, (b,), generator=gen)
    ages = torch.cumsum(1.0 + 6.0 * torch.rand(b, n_in, generator=gen), 1)
    mask = torch.arange(n_in)[None] < real[:, None]
    last = ages.gather(1, (real - 1)[:, None])
    target = last + 1.0 + 7.0 * torch.rand(b, 1, generator=gen)
    v = (0.25 + 0.35 * torch.rand(b, 1, generator=gen)) * torch.where(torch.rand(b, 1, generator=gen) < .5, -1, 1)
    row0 = hw / 2 - v * (ages[:, :1] + target) / 2  # centred over the series' span

    def draw(t):  # (B, K) ages -> (B, K, 1, hw, hw)
        r = (row0 + v * t)[..., None, None]
        yy = torch.arange(hw).float()[:, None]
        xx = torch.arange(hw).float()[None, :]
        return torch.exp(-((yy - r) ** 2 + (xx - hw / 2) ** 2) / 4.0)[:, :, None]

    return draw(ages), ages, mask, target, draw(target)


def test_learns_a_motion_linear_in_age_and_beats_persistence():
    """60 AdamW steps on fresh batches of 16 irregular blob series (~5 s on an idle 2-core CPU): the
    forecast at the requested age beats persistence (the last real frame) by 2x on held-out series
    (it reaches ~0.1x persistence's MSE after 100 steps)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cfg = small(16, 16, channels=1, n_s=2, window=4, hid_s=16, hid_t=32, mlp_ratio=2.0)
    m = build_model(cfg).train()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(60):
        frames, ages, mask, target, want = blobs(16, gen)
        loss = torch.nn.functional.mse_loss(m(frames, ages, mask, target), want)
        opt.zero_grad()
        loss.backward()
        opt.step()
    frames, ages, mask, target, want = blobs(256, torch.Generator().manual_seed(1))
    m.eval()
    with torch.no_grad():
        model_mse = torch.nn.functional.mse_loss(m(frames, ages, mask, target), want).item()
    last = frames[torch.arange(256), mask.sum(1) - 1][:, None]
    persistence = torch.nn.functional.mse_loss(last, want).item()
    assert model_mse < 0.5 * persistence, (model_mse, persistence)


def test_parameters_do_not_grow_with_image_size():
    n = {hw: count_parameters(build_model(ModelConfig(kind="timevp", height=hw[0], width=hw[1]))) for hw in SIZES}
    assert n[(32, 16)] > 10_000
    assert n[(128, 128)] <= 1.5 * n[(32, 16)] and n[(64, 64)] <= 1.5 * n[(32, 16)]


def test_flops_positive_and_grow_with_pixels():
    f32, f64 = (count_flops(ModelConfig(kind="timevp", height=h, width=w)) for h, w in SIZES[:2])
    assert f32 > 0 and 7 < f64 / f32 < 9


@pytest.mark.parametrize("field,value", [("n_s", 6), ("hid_s", 0), ("n_t", 1), ("time_dim", 7),
                                         ("grid_step", 0.0), ("max_period", 0.5), ("window", 0)])
def test_bad_config_fields_are_named(field, value):
    with pytest.raises(ValueError, match=re.escape(f"model.timevp.{field}=")):
        build_model(ModelConfig(kind="timevp", height=36, width=20, timevp=TimeVPConfig(**{field: value})))


def test_config_round_trip_and_preset():
    cfg = load_config("timevp-fast", overrides=["model.timevp.hid_s=8", "model.timevp.grid_step=2.5"])
    assert cfg.model.kind == "timevp" and cfg.train.epochs == 10
    assert cfg.model.timevp.hid_s == 8 and cfg.model.timevp.grid_step == 2.5
    assert to_dict(from_dict(to_dict(cfg))) == to_dict(cfg)
    with pytest.raises(KeyError, match="model.timevp.nope"):
        load_config(overrides=["model.timevp.nope=1"])
    old = to_dict(load_config("quick"))  # a checkpoint from before this family still loads
    del old["model"]["timevp"]
    assert from_dict(old).model.timevp == TimeVPConfig()


def test_checkpoint_round_trip(tmp_path):
    from crnn.checkpoint import save_model_dir
    from crnn.inference import load_model

    cfg = Config(model=small())
    m = perturbed(cfg.model)
    save_model_dir(str(tmp_path / "model"), m, cfg, epoch=3)
    loaded, cfg2, meta = load_model(str(tmp_path / "model"))
    assert cfg2.model == cfg.model and meta["epoch"] == 3
    frames, ages, mask, targets = series(n=3)
    with torch.no_grad():
        assert torch.equal(m(frames, ages, mask, targets), loaded(frames, ages, mask, targets))
        x = torch.rand(2, 4, 3, 32, 16)
        assert torch.equal(m(x), loaded(x))


def test_untrained_film_is_the_identity():
    """FiLM starts at zero (adaLN-Zero): an untrained model's translator sees the latents unmodulated,
    so the output does not depend on the ages until training moves the FiLM layers."""
    torch.manual_seed(0)
    m = build_model(small(residual=False)).eval()
    for film in (m.slot_film, m.target_film):
        assert torch.count_nonzero(film[-1].weight) == 0 and torch.count_nonzero(film[-1].bias) == 0
    frames, ages, mask, targets = series(n=3, m=2)
    with torch.no_grad():
        assert torch.allclose(m(frames, ages, mask, targets), m(frames, ages + 1.5, mask, targets + 4.0))


def test_time_domain_default_ages_come_from_the_training_data():
    """A time-aware model trained on per-series ages has no default history (a request must give its
    ages); trained on the regular grid, its defaults are that grid; a grid model keeps its grid."""
    from crnn.config import load_config
    from crnn.timeaware import check_ages, time_domain

    cfg = load_config("timevp-fast")
    irr = time_domain(cfg, {"layout": "irregular", "age_unit": "months", "age_range": [1.0, 24.0]})
    assert irr.time_aware and irr.default_ages == () and irr.age_unit == "months" and irr.age_range == (1.0, 24.0)
    grid = time_domain(cfg, {"layout": "regular", "age_unit": "years", "age_range": [10.0, 30.0],
                             "ages": [10.0, 15.0, 20.0, 25.0, 30.0]})
    assert grid.default_ages == (10.0, 15.0, 20.0, 25.0)
    assert time_domain(load_config("simvp-fast"), None).default_ages == (10.0, 15.0, 20.0, 25.0)
    # ages as the model reads them (float32): distinct in float64 only is not increasing
    with pytest.raises(ValueError, match=r"not strictly increasing .*float32"):
        check_ages(irr, [3, 3.0000001, 5], [7])
    with pytest.raises(ValueError, match=r"target age 5.0000001 is not after the last input age 5"):
        check_ages(irr, [3, 4, 5], [5.0000001])


def test_translator_is_simvps_and_old_checkpoints_load_unchanged():
    # TimeVP's gSTA blocks are simvp.Translator's (translator.blocks.<i>); a state dict written when
    # they were TimeVP's own list (blocks.<i>) loads strictly into the same weights and outputs
    from crnn.models.simvp import Translator

    cfg = small(n_t=3)
    m = perturbed(cfg)
    assert isinstance(m.translator, Translator) and len(m.translator.blocks) == 3
    sd = m.state_dict()
    old = {k.replace("translator.blocks.", "blocks."): v for k, v in sd.items()}
    assert sum(k.startswith("blocks.") for k in old) == sum(k.startswith("translator.blocks.") for k in sd) > 0
    fresh = build_model(cfg).eval()
    fresh.load_state_dict(old, strict=True)
    frames, ages, mask, targets = series()
    with torch.no_grad():
        assert torch.equal(fresh(frames, ages, mask, targets), m(frames, ages, mask, targets))
        x = torch.rand(2, 4, 3, 32, 16)
        assert torch.equal(fresh(x), m(x))
    # a key of neither form is still refused
    with pytest.raises(RuntimeError, match="Unexpected key"):
        build_model(cfg).load_state_dict({**old, "stray.weight": torch.zeros(1)}, strict=True)


def test_an_off_grid_request_names_the_grid_models_spacing_and_unit():
    """The refusal says the spacing the grid model was trained at, with its unit (it read "trained on
    1 months"); on the grid the same request passes."""
    from crnn.config import load_config
    from crnn.timeaware import AgeError, check_ages, time_domain

    cfg = load_config("demo")
    domain = time_domain(cfg, {"age_unit": "months", "ages": [1, 2, 3, 4, 5]})
    with pytest.raises(AgeError, match=r"trained at a spacing of 1, in months"):
        check_ages(domain, [1, 2, 3, 4], [5.5])
    assert check_ages(domain, [1, 2, 3, 4], [5, 6]) == ([1.0, 2.0, 3.0, 4.0], [5.0, 6.0])


def test_max_steps_bounds_a_grid_models_rollout_at_any_spacing_and_leaves_time_aware_models_alone():
    """``max_steps`` (Serve's max_horizon, predict's MAX_HORIZON): a grid model's last target at most
    that many steps of the inputs' own spacing after the last input -- exactly the limit passes, one
    step more is refused naming the target, the steps, the spacing and the limit; without max_steps
    any distance passes; a time-aware model has no rollout and is not bounded by it."""
    from crnn.config import load_config
    from crnn.timeaware import AgeError, check_ages, time_domain

    grid = time_domain(load_config("demo"), {"age_unit": "years", "ages": [10, 15, 20, 25, 30]})
    assert not grid.time_aware
    for ages, spacing in (([10, 15, 20, 25], 5), ([1, 2, 3, 4], 1), ([0.5, 1, 1.5, 2], 0.5)):
        last = ages[-1]
        assert check_ages(grid, ages, [last + 10 * spacing], max_steps=10)[1] == [last + 10 * spacing]
        assert check_ages(grid, ages, [last + spacing, last + 3 * spacing], max_steps=3)[1][-1] == last + 3 * spacing
        with pytest.raises(AgeError, match=rf"series\[2\]: target age {last + 11 * spacing:g} is 11 steps of "
                                           rf"{spacing:g} after the last input age {last:g}; a grid model rolls "
                                           rf"out at most 10 steps \(LIMIT\)"):
            check_ages(grid, ages, [last + spacing, last + 11 * spacing], "series[2]", max_steps=10,
                       max_steps_name="LIMIT")
        assert check_ages(grid, ages, [last + 50 * spacing])[1] == [last + 50 * spacing]  # no bound asked
    ta = time_domain(load_config("timevp-fast"), {"age_unit": "years", "ages": [10, 15, 20, 25, 30]})
    assert ta.time_aware
    assert check_ages(ta, [10, 15, 20, 25], [30, 34], max_steps=1)[1] == [30.0, 34.0]

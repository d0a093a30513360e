import math

import numpy as np
import pytest
import torch

from crnn.metrics import (
    PAPER_TABLE3,
    frame_metrics,
    gaussian_window,
    per_age_metrics,
    snr_candidates,
    ssim,
)


def _pair_0255():
    """Tiny (N=1, C=1, 11x11) images: target constant 100, pred = target except
    4 pixels off by +10, -10, +20, -20."""
    t = np.full((1, 1, 11, 11), 100.0)
    p = t.copy()
    p[0, 0, 0, :4] += [10, -10, 20, -20]
    return p, t


def test_hand_computed_mae_mse_psnr_snr():
    p, t = _pair_0255()
    m = frame_metrics(p, t, scale=1.0)
    n = 121
    assert m["mae"] == pytest.approx(60 / n)
    assert m["mse"] == pytest.approx(1000 / n)
    assert m["rmse"] == pytest.approx(math.sqrt(1000 / n))
    assert m["psnr"] == pytest.approx(10 * math.log10(255**2 / (1000 / n)))
    assert m["snr"] == pytest.approx(100**2 / (1000 / n))
    assert m["snr_db"] == pytest.approx(10 * math.log10(100**2 * n / 1000))


def test_unit_scale_float_equals_0255_input():
    p, t = _pair_0255()
    a = frame_metrics(p, t, scale=1.0)
    b = frame_metrics(p / 255.0, t / 255.0)  # default scale=255 for [0, 1] floats
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-9)


def test_uint8_and_channels_last_and_torch_inputs():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 256, size=(3, 2, 12, 13, 3), dtype=np.uint8)[:, 0]  # (N, H, W, C)
    p = rng.integers(0, 256, size=(3, 12, 13, 3), dtype=np.uint8)
    a = frame_metrics(p, t, scale=1.0, channels_last=True)
    # uint8 subtraction must not wrap around
    diff = p.astype(float) - t.astype(float)
    assert a["mae"] == pytest.approx(np.abs(diff).mean())
    cf = frame_metrics(np.moveaxis(p, -1, 1), np.moveaxis(t, -1, 1), scale=1.0)
    assert cf == pytest.approx(a)
    tt = torch.from_numpy(np.moveaxis(t, -1, 1).astype(np.float32) / 255)
    pt = torch.from_numpy(np.moveaxis(p, -1, 1).astype(np.float32) / 255)
    assert frame_metrics(pt, tt) == pytest.approx(a, rel=1e-5)


def test_perfect_prediction():
    t = np.random.default_rng(1).random((2, 3, 32, 16))
    m = frame_metrics(t, t.copy())
    assert m["mae"] == 0 and m["mse"] == 0
    assert m["psnr"] == math.inf and m["snr"] == math.inf
    assert m["ssim"] == pytest.approx(1.0)


def test_scale_misuse_is_caught():
    t = np.full((1, 1, 11, 11), 100.0)
    with pytest.raises(ValueError, match="scale=1.0"):
        frame_metrics(t, t)  # 0-255 floats with the default [0, 1] scale
    u = t.astype(np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        frame_metrics(u, u)


def test_shape_mismatch_names_shapes():
    a = np.zeros((2, 3, 32, 16))
    b = np.zeros((2, 3, 16, 32))
    with pytest.raises(ValueError, match=r"\(2, 3, 32, 16\).*\(2, 3, 16, 32\)"):
        frame_metrics(a, b)
    with pytest.raises(ValueError, match=r"\(2, 4, 3, 32, 16\).*\(2, 3, 3, 32, 16\)"):
        per_age_metrics(np.zeros((2, 4, 3, 32, 16)), np.zeros((2, 3, 3, 32, 16)), [15, 20, 25, 30])
    with pytest.raises(ValueError, match=r"\(3, 32, 16\)"):
        frame_metrics(np.zeros((3, 32, 16)), np.zeros((3, 32, 16)))


# ---- SSIM -------------------------------------------------------------------------


def _ssim_bruteforce(x, y, win=11, sigma=1.5):
    """Direct Wang et al. SSIM on a single 2-D image pair (0-255), 'valid' windows."""
    g = gaussian_window(win, sigma)
    w2 = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(x.shape[0] - win + 1):
        for j in range(x.shape[1] - win + 1):
            a, b = x[i : i + win, j : j + win], y[i : i + win, j : j + win]
            ma, mb = (w2 * a).sum(), (w2 * b).sum()
            va, vb = (w2 * (a - ma) ** 2).sum(), (w2 * (b - mb) ** 2).sum()
            cov = (w2 * (a - ma) * (b - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_gaussian_window():
    g = gaussian_window()
    assert g.shape == (11,) and g.sum() == pytest.approx(1.0)
    assert g[5] == g.max() and g[0] == pytest.approx(g[10])
    assert g[4] / g[5] == pytest.approx(math.exp(-1 / (2 * 1.5**2)))


def test_ssim_matches_bruteforce_and_averages_channels():
    rng = np.random.default_rng(0)
    t = rng.random((2, 3, 14, 12))
    p = np.clip(t + 0.1 * rng.standard_normal(t.shape), 0, 1)
    expected = np.mean(
        [np.mean([_ssim_bruteforce(255 * p[n, c], 255 * t[n, c]) for c in range(3)]) for n in range(2)]
    )
    assert ssim(p, t) == pytest.approx(expected, rel=1e-10)
    assert frame_metrics(p, t)["ssim"] == pytest.approx(expected, rel=1e-10)


def test_ssim_identity_noise_symmetry():
    rng = np.random.default_rng(2)
    t = rng.random((4, 3, 32, 16))
    assert ssim(t, t) == pytest.approx(1.0)
    light = np.clip(t + 0.02 * rng.standard_normal(t.shape), 0, 1)
    heavy = np.clip(t + 0.2 * rng.standard_normal(t.shape), 0, 1)
    s_light, s_heavy = ssim(light, t), ssim(heavy, t)
    assert s_heavy < s_light < 1.0
    assert ssim(t, heavy) == pytest.approx(s_heavy, rel=1e-12)


def test_ssim_image_smaller_than_window_raises():
    a = np.zeros((1, 3, 10, 16))
    with pytest.raises(ValueError, match="10x16"):
        ssim(a, a)


# ---- per age -----------------------------------------------------------------------


def test_per_age_metrics_keyed_by_age():
    rng = np.random.default_rng(3)
    t = rng.random((5, 4, 3, 32, 16))
    p = t.copy()
    p[:, 3] = np.clip(p[:, 3] + 0.1, 0, 1)  # only age 30 is wrong
    res = per_age_metrics(p, t, [15, 20, 25, 30])
    assert list(res) == [15, 20, 25, 30]
    for age in (15, 20, 25):
        assert res[age]["mse"] == 0 and res[age]["ssim"] == pytest.approx(1.0)
    assert res[30] == pytest.approx(frame_metrics(p[:, 3], t[:, 3]))
    assert res[30]["mae"] > 0
    # channels-last (N, T, H, W, C) gives the same numbers
    res_cl = per_age_metrics(np.moveaxis(p, 2, -1), np.moveaxis(t, 2, -1), [15, 20, 25, 30], channels_last=True)
    assert res_cl[30] == pytest.approx(res[30])


@pytest.mark.parametrize("h, w", [(10, 16), (16, 10), (8, 4), (1, 1), (11, 11), (11, 40)])
def test_frames_smaller_than_the_ssim_window_score_everything_but_ssim(h, w):
    """A user's thumbnails under 11 px: frame/per-age metrics give SSIM NaN (undefined) and every other
    metric as for any frame -- they raised, so evaluating a model trained on them failed after
    training; ssim() itself still refuses them. From 11 px on SSIM is a number."""
    rng = np.random.default_rng(5)
    t = rng.integers(0, 256, (3, 2, 3, h, w)).astype(np.float64)
    p = np.clip(t + rng.integers(-9, 10, t.shape), 0, 255)
    res = per_age_metrics(p, t, [25, 30], scale=1.0)
    for i, age in enumerate((25, 30)):
        err = p[:, i] - t[:, i]
        assert res[age]["mse"] == pytest.approx((err ** 2).mean()) and res[age]["mae"] == pytest.approx(np.abs(err).mean())
        assert res[age]["psnr"] == pytest.approx(10 * math.log10(255 ** 2 / (err ** 2).mean()))
        if min(h, w) < 11:
            assert math.isnan(res[age]["ssim"])
            with pytest.raises(ValueError, match=f"{h}x{w} smaller than the 11x11 window"):
                ssim(p[:, i], t[:, i], scale=1.0)
        else:
            assert res[age]["ssim"] == pytest.approx(ssim(p[:, i], t[:, i], scale=1.0)) and 0 < res[age]["ssim"] < 1
    assert math.isnan(frame_metrics(p[:, 0], t[:, 0], scale=1.0)["ssim"]) == (min(h, w) < 11)


def test_per_age_metrics_wrong_number_of_ages():
    a = np.zeros((1, 4, 3, 32, 16))
    with pytest.raises(ValueError, match="3 ages"):
        per_age_metrics(a, a, [15, 20, 25])


# ---- the paper's SNR -------------------------------------------------------------


def test_paper_table3_constant_and_snr_is_not_a_power_ratio():
    assert PAPER_TABLE3 == {"mae": 8.57, "mse": 377.35, "snr_paper": 322.55}
    # the largest possible power ratio mean(y^2)/MSE on 0-255 pixels at that MSE
    assert 255**2 / PAPER_TABLE3["mse"] < PAPER_TABLE3["snr_paper"]


def test_snr_candidates():
    p, t = _pair_0255()
    c = snr_candidates(p, t, scale=1.0)
    m = frame_metrics(p, t, scale=1.0)
    assert c["power_ratio"] == pytest.approx(m["snr"])
    assert c["mean_over_mae"] == pytest.approx(100 / m["mae"])
    assert c["frame_energy_over_mse"] == pytest.approx(121 * 100**2 / m["mse"])
    assert c["peak_power_ratio"] == pytest.approx(255**2 / m["mse"])

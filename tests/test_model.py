import dataclasses

import pytest
import torch

from crnn.model import (
    CRNN,
    KerasLSTM,
    LinearExtrapolationBaseline,
    ModelConfig,
    PersistenceBaseline,
    build_model,
    count_parameters,
    hard_sigmoid,
    rollout,
)
from crnn.models.crnn import _paper_parameter_count

PAPER_PARAMS = 1_792 + 73_856 + 4 * 384 * (10_752 + 384 + 1) + 591_360  # 17,773,440


def small_cfg(**kw) -> ModelConfig:
    base = dict(conv_filters=(4, 8), lstm_units=16)
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture(scope="module")
def paper_model() -> CRNN:
    torch.manual_seed(0)
    return build_model(ModelConfig())


# ---- architecture ----------------------------------------------------------------


def test_stage_shapes_paper_size(paper_model):
    x = torch.rand(2, 4, 3, 32, 16)
    h = x.reshape(8, 3, 32, 16)
    expected = [
        (8, 64, 30, 14),  # conv1
        (8, 64, 30, 14),  # tanh
        (8, 128, 28, 12),  # conv2
        (8, 128, 28, 12),  # tanh
        (8, 128, 14, 6),  # maxpool 2x2
        (8, 10752),  # flatten
    ]
    assert len(paper_model.encoder) == len(expected)
    for layer, shape in zip(paper_model.encoder, expected):
        h = layer(h)
        assert tuple(h.shape) == shape, layer
    assert paper_model.cfg.flat_features() == 10752
    seq = paper_model.lstm(h.view(2, 4, -1))
    assert tuple(seq.shape) == (2, 4, 384)
    out = paper_model.decoder(seq)
    assert tuple(out.shape) == (2, 4, 32 * 16 * 3)


def test_exact_parameter_count(paper_model):
    assert PAPER_PARAMS == 17_773_440
    assert count_parameters(paper_model) == 17_773_440
    assert paper_model.lstm.kernel.shape == (10752, 1536)
    assert paper_model.lstm.recurrent_kernel.shape == (384, 1536)
    assert sum(p.numel() for p in paper_model.lstm.parameters()) == 17_106_432
    assert sum(p.numel() for p in paper_model.decoder.parameters()) == 591_360
    assert _paper_parameter_count(ModelConfig()) == 17_773_440
    big = small_cfg(height=64, width=32, lstm_units=8)
    assert count_parameters(build_model(big)) == _paper_parameter_count(big)


def test_forward_shape_no_nan_and_deterministic_eval(paper_model):
    paper_model.eval()
    x = torch.rand(3, 4, 3, 32, 16)
    with torch.no_grad():
        y1, y2 = paper_model(x), paper_model(x)
    assert y1.shape == x.shape
    assert torch.isfinite(y1).all()
    assert torch.equal(y1, y2)


def test_train_mode_dropout_changes_output(paper_model):
    paper_model.train()
    x = torch.rand(2, 4, 3, 32, 16)
    with torch.no_grad():
        torch.manual_seed(1)
        a = paper_model(x)
        b = paper_model(x)
        torch.manual_seed(1)
        c = paper_model(x)
    paper_model.eval()
    assert not torch.allclose(a, b)
    assert torch.equal(a, c)  # randomness comes from the torch RNG only


def test_larger_image_64x32():
    cfg = small_cfg(height=64, width=32)
    m = build_model(cfg).eval()
    assert cfg.flat_features() == 8 * 30 * 14
    y = m(torch.rand(2, 4, 3, 64, 32))
    assert y.shape == (2, 4, 3, 64, 32)
    assert torch.isfinite(y).all()


def test_output_step_depends_only_on_past():
    """Output step t is the forecast after input frame t: no look-ahead."""
    torch.manual_seed(0)
    m = build_model(small_cfg()).eval()
    x = torch.rand(1, 4, 3, 32, 16)
    x2 = x.clone()
    x2[:, 3] = torch.rand(3, 32, 16)
    with torch.no_grad():
        y, y2 = m(x), m(x2)
    assert torch.equal(y[:, :3], y2[:, :3])
    assert not torch.allclose(y[:, 3], y2[:, 3])


def test_residual_adds_last_seen_frame():
    torch.manual_seed(0)
    cfg = small_cfg(residual=True)
    m = build_model(cfg).eval()
    plain = build_model(dataclasses.replace(cfg, residual=False)).eval()
    plain.load_state_dict(m.state_dict())
    x = torch.rand(2, 4, 3, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(m(x), plain(x) + x)


def test_wrong_input_shape_raises():
    m = build_model(small_cfg())
    with pytest.raises(ValueError, match=r"\(B, T, 3, 32, 16\)"):
        m(torch.rand(2, 4, 3, 16, 32))


# ---- Keras-equivalent LSTM ---------------------------------------------------------


def test_hard_sigmoid_matches_keras_formula():
    x = torch.linspace(-6, 6, 241)
    expected = torch.clamp(0.2 * x + 0.5, 0, 1)
    torch.testing.assert_close(hard_sigmoid(x), expected)
    assert hard_sigmoid(torch.tensor(-2.5)) == 0.0
    assert hard_sigmoid(torch.tensor(2.5)) == 1.0
    assert hard_sigmoid(torch.tensor(1.0)) == pytest.approx(0.7)


def test_lstm_matches_reference_keras_equations():
    """Compare the vectorised cell with a direct transcription of Keras' LSTMCell."""
    torch.manual_seed(0)
    lstm = KerasLSTM(7, 5, "tanh", "hard_sigmoid").eval()
    with torch.no_grad():
        lstm.bias.normal_()
    x = torch.randn(3, 4, 7)
    k, rk, b, u = lstm.kernel, lstm.recurrent_kernel, lstm.bias, 5
    h = torch.zeros(3, u)
    c = torch.zeros(3, u)
    outs = []
    for t in range(4):
        xt = x[:, t]
        i = hard_sigmoid(xt @ k[:, :u] + b[:u] + h @ rk[:, :u])
        f = hard_sigmoid(xt @ k[:, u : 2 * u] + b[u : 2 * u] + h @ rk[:, u : 2 * u])
        cc = torch.tanh(xt @ k[:, 2 * u : 3 * u] + b[2 * u : 3 * u] + h @ rk[:, 2 * u : 3 * u])
        o = hard_sigmoid(xt @ k[:, 3 * u :] + b[3 * u :] + h @ rk[:, 3 * u :])
        c = f * c + i * cc
        h = o * torch.tanh(c)
        outs.append(h)
    with torch.no_grad():
        torch.testing.assert_close(lstm(x), torch.stack(outs, 1))


def test_recurrent_kernel_orthogonal_like_keras(paper_model):
    # Keras Orthogonal on the (U, 4U) recurrent kernel: rows orthonormal, W W^T = I_U.
    w = paper_model.lstm.recurrent_kernel.detach().double()
    eye = torch.eye(384, dtype=torch.float64)
    torch.testing.assert_close(w @ w.T, eye, atol=1e-5, rtol=0)
    # ... which means the per-gate (U, U) blocks' Gram matrices sum to I, while no
    # single block is orthogonal on its own (as in Keras).
    blocks = w.split(384, dim=1)
    torch.testing.assert_close(sum(blk @ blk.T for blk in blocks), eye, atol=1e-5, rtol=0)
    assert (blocks[0] @ blocks[0].T - eye).abs().max() > 0.1


def test_initialisation_bias_and_glorot(paper_model):
    b = paper_model.lstm.bias.detach()
    u = 384
    assert torch.all(b[:u] == 0) and torch.all(b[u : 2 * u] == 1) and torch.all(b[2 * u :] == 0)
    for m in list(paper_model.encoder) + [paper_model.decoder]:
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            assert torch.all(m.bias == 0)
            w = m.weight.detach()
            fan_in = w[0].numel()
            fan_out = w.shape[0] * (w[0, 0].numel() if w.dim() == 4 else 1)
            limit = (6.0 / (fan_in + fan_out)) ** 0.5
            assert w.abs().max() <= limit
            assert w.abs().max() > 0.9 * limit
    k = paper_model.lstm.kernel.detach()
    assert k.abs().max() <= (6.0 / (10752 + 1536)) ** 0.5


def test_dropout_masks_shared_across_time_steps():
    """Keras-style (variational) dropout: one input mask and one recurrent mask per
    sequence, reused at every step. Reproduce forward's RNG draws and compare with a
    step-by-step reference using those fixed masks."""
    torch.manual_seed(0)
    lstm = KerasLSTM(50, 6, dropout=0.5, recurrent_dropout=0.4).train()
    x = torch.rand(2, 4, 50)
    torch.manual_seed(3)
    with torch.no_grad():
        out = lstm(x)
    torch.manual_seed(3)  # same draws, same order as forward
    in_mask = torch.empty(2, 1, 50).bernoulli_(0.5) / 0.5
    rec_mask = torch.empty(2, 6).bernoulli_(0.6) / 0.6
    assert (in_mask == 0).any() and (rec_mask == 0).any()
    k, rk, b = lstm.kernel.detach(), lstm.recurrent_kernel.detach(), lstm.bias.detach()
    h = torch.zeros(2, 6)
    c = torch.zeros(2, 6)
    for t in range(4):
        z = (x[:, t] * in_mask[:, 0]) @ k + b + (h * rec_mask) @ rk
        zi, zf, zc, zo = z.chunk(4, -1)
        c = hard_sigmoid(zf) * c + hard_sigmoid(zi) * torch.tanh(zc)
        h = hard_sigmoid(zo) * torch.tanh(c)
        torch.testing.assert_close(out[:, t], h)


def test_dropout_off_in_eval_and_when_zero():
    torch.manual_seed(0)
    m = build_model(small_cfg(dropout=0.0, recurrent_dropout=0.0)).train()
    x = torch.rand(2, 4, 3, 32, 16)
    with torch.no_grad():
        assert torch.equal(m(x), m(x))


# ---- training ------------------------------------------------------------------------


def test_adam_steps_reduce_loss():
    torch.manual_seed(0)
    m = build_model(small_cfg(dropout=0.0, recurrent_dropout=0.0))
    x = torch.rand(4, 4, 3, 32, 16)
    y = torch.rand(4, 4, 3, 32, 16)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(m(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_fullgraph_compile_traces():
    m = build_model(small_cfg()).train()
    compiled = torch.compile(m, fullgraph=True, backend="eager")
    y = compiled(torch.rand(2, 4, 3, 32, 16))
    assert y.shape == (2, 4, 3, 32, 16)


@pytest.mark.parametrize("conv_act", ["tanh", "relu", "selu"])
@pytest.mark.parametrize("lstm_act", ["tanh", "selu"])
@pytest.mark.parametrize("rec_act", ["hard_sigmoid", "sigmoid", "tanh"])
def test_every_activation_option_builds_and_runs(conv_act, lstm_act, rec_act):
    cfg = small_cfg(conv_activation=conv_act, lstm_activation=lstm_act, recurrent_activation=rec_act)
    m = build_model(cfg).train()
    y = m(torch.rand(2, 4, 3, 32, 16))
    assert y.shape == (2, 4, 3, 32, 16) and torch.isfinite(y).all()
    y.mean().backward()


# ---- baselines ------------------------------------------------------------------------


def _ramp_input() -> torch.Tensor:
    # one pixel per frame, values chosen to exercise both clamps
    vals = torch.tensor([0.2, 0.5, 0.9, 0.3])  # ages 10, 15, 20, 25
    x = vals.view(1, 4, 1, 1, 1).expand(1, 4, 1, 2, 2).clone()
    x[0, :, 0, 1, 1] = torch.tensor([0.6, 0.4, 0.1, 0.05])
    return x


def test_persistence_baseline():
    m = build_model(ModelConfig(kind="persistence"))
    assert isinstance(m, PersistenceBaseline) and count_parameters(m) == 0
    x = _ramp_input()
    assert torch.equal(m(x), x)


def test_linear_baseline_exact_values():
    m = build_model(ModelConfig(kind="linear"))
    assert isinstance(m, LinearExtrapolationBaseline) and count_parameters(m) == 0
    x = _ramp_input()
    y = m(x)
    # pixel (0,0): [0.2, 2*.5-.2=.8, 2*.9-.5=1.3->1, 2*.3-.9=-.3->0]
    torch.testing.assert_close(y[0, :, 0, 0, 0], torch.tensor([0.2, 0.8, 1.0, 0.0]))
    # pixel (1,1): [0.6, 0.2, -0.2->0, 0.0]
    torch.testing.assert_close(y[0, :, 0, 1, 1], torch.tensor([0.6, 0.2, 0.0, 0.0]))


# ---- rollout ----------------------------------------------------------------------------


def test_rollout_persistence_repeats_last_frame():
    m = build_model(ModelConfig(kind="persistence"))
    x = torch.rand(2, 4, 3, 32, 16)
    out = rollout(m, x, 3)
    assert out.shape == (2, 3, 3, 32, 16)
    for k in range(3):
        assert torch.equal(out[:, k], x[:, -1])
    assert torch.equal(m.rollout(x, 2), out[:, :2])


def test_rollout_linear_continues_trend_and_clamps():
    m = build_model(ModelConfig(kind="linear"))
    x = torch.tensor([0.1, 0.2, 0.3, 0.4]).view(1, 4, 1, 1, 1)
    out = rollout(m, x, 8)
    expected = torch.tensor([0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0, 1.0])
    torch.testing.assert_close(out.view(-1), expected)


def test_rollout_uses_window_of_recent_frames():
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x.shape[1])
            return x + 0.1

    x = torch.zeros(1, 6, 1, 2, 2)
    out = rollout(Spy(), x, 3, window=4)
    assert seen == [4, 4, 4]
    torch.testing.assert_close(out[0, :, 0, 0, 0], torch.tensor([0.1, 0.2, 0.3]))
    seen.clear()
    rollout(Spy(), torch.zeros(1, 2, 1, 2, 2), 3, window=4)
    assert seen == [2, 3, 4]


def test_rollout_crnn_shape_and_range():
    torch.manual_seed(0)
    m = build_model(small_cfg()).eval()
    with torch.no_grad():
        out = rollout(m, torch.rand(2, 4, 3, 32, 16), 2)
    assert out.shape == (2, 2, 3, 32, 16)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("horizon", [0, -1])
def test_rollout_bad_horizon(horizon):
    m = build_model(ModelConfig(kind="persistence"))
    with pytest.raises(ValueError, match="horizon"):
        rollout(m, torch.rand(1, 4, 3, 32, 16), horizon)


# ---- config validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("kind", "transformer"),
        ("height", 0),
        ("channels", -3),
        ("conv_filters", ()),
        ("kernel_size", 0),
        ("conv_activation", "gelu"),
        ("lstm_activation", "relu"),
        ("recurrent_activation", "softsign"),
        ("pool", 0),
        ("lstm_units", 0),
        ("dropout", 1.0),
        ("recurrent_dropout", -0.1),
    ],
)
def test_bad_config_raises_naming_field(field, value):
    with pytest.raises(ValueError, match=field):
        build_model(ModelConfig(**{field: value}))


def test_image_too_small_raises():
    with pytest.raises(ValueError, match="too small"):
        build_model(ModelConfig(height=5, width=16))
    with pytest.raises(ValueError, match="height/width"):
        build_model(ModelConfig(height=32, width=5))


def test_conv_filters_list_accepted():
    cfg = small_cfg(conv_filters=[4, 8])
    assert cfg.conv_filters == (4, 8)
    assert build_model(cfg) is not None

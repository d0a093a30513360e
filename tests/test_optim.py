"""crnn.optim.MuonAdamW (train.optimizer=muon): what it updates, how, and its state."""
import copy

import pytest
import torch
from torch import nn

from crnn.config import load_config
from crnn.loop import fit_plain, make_optimizer, make_scheduler
from crnn.model import build_model
from crnn.optim import MuonAdamW, is_matrix, load_optimizer_state

pytestmark = pytest.mark.unit


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.Tanh(),
                         nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 5 * 5, 6))


def _steps(model, opt, n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(4, 3, 5, 5, generator=g)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def test_kernels_and_matrices_go_to_muon_the_rest_to_adamw():
    model = _net()
    opt = MuonAdamW(model.parameters(), lr=1e-3)
    muon_ids = {id(p) for p, _ in opt._views}
    for name, p in model.named_parameters():
        assert (id(p) in muon_ids) == (p.ndim >= 2), name
    assert len(opt.param_groups) == 2  # Muon's group first, then AdamW's
    assert [len(g["params"]) for g in opt.param_groups] == [3, 5]  # 2 kernels + 1 matrix; 3 biases, norm gain/shift


@pytest.mark.parametrize("shape, muon", [
    ((8, 1, 1), False),     # a layer scale (SimVP's, TimeVP's): a gain shaped for broadcasting
    ((1, 8, 1, 1), False),  # a gain shaped (1, C, 1, 1)
    ((8, 1), False), ((1, 8), False), ((1, 4, 3, 3), False), ((1, 1), False),  # a side of 1: vectors
    ((8,), False), ((), False),
    ((8, 1, 3, 3), True),   # a depthwise kernel: the (8, 9) matrix
    ((2, 2), True), ((8, 4, 1, 1), True), ((4, 8, 3, 3), True),
])
def test_muon_takes_matrices_with_both_sides_over_1(shape, muon):
    p = nn.Parameter(torch.randn(shape))
    assert is_matrix(p) == muon
    opt = MuonAdamW([p, nn.Parameter(torch.randn(3, 3)), nn.Parameter(torch.randn(3))])
    assert (id(p) in {id(q) for q, _ in opt._views}) == muon
    assert (id(p) in {id(q) for q in opt.adamw.param_groups[0]["params"]}) != muon


def test_simvp_layer_scales_go_to_adamw():
    """The README's "AdamW on biases and norm gains": SimVP's (C, 1, 1) layer scales (init 1e-2) are
    gains; Muon would normalise their gradient over the C channels. Its kernels go to Muon."""
    model = build_model(load_config("simvp").model)
    opt = MuonAdamW(model.parameters())
    muon_ids = {id(p) for p, _ in opt._views}
    names = {n: (id(p) in muon_ids) for n, p in model.named_parameters()}
    scales = [n for n in names if n.endswith((".scale1", ".scale2"))]
    assert scales and not any(names[n] for n in scales)
    assert all(names[n] for n, p in model.named_parameters() if n.endswith(".weight") and p.ndim == 4)


def test_a_kernel_moves_as_torch_muon_moves_the_same_matrix():
    """The conv kernel (8, 3, 3, 3) steps exactly as torch.optim.Muon steps a 2-D copy (8, 27) given the
    same gradients; the vectors step exactly as torch's AdamW."""
    model = _net()
    ref = copy.deepcopy(model)
    opt = MuonAdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    mats = {n: nn.Parameter(p.detach().reshape(p.shape[0], -1).clone()) for n, p in ref.named_parameters()
            if p.ndim >= 2}
    vecs = [p for p in ref.parameters() if p.ndim < 2]
    ref_muon = torch.optim.Muon(list(mats.values()), lr=2e-3, weight_decay=0.01, adjust_lr_fn="match_rms_adamw")
    ref_adamw = torch.optim.AdamW(vecs, lr=2e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(4, 3, 5, 5, generator=g)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        for o in (ref_muon, ref_adamw):
            o.zero_grad()
        ref.zero_grad()
        ref(x).pow(2).mean().backward()
        for n, p in ref.named_parameters():
            if p.ndim >= 2:
                mats[n].grad = p.grad.reshape(mats[n].shape)
        ref_muon.step()
        ref_adamw.step()
        with torch.no_grad():  # the reference network runs on the updated matrices next time
            for n, p in ref.named_parameters():
                if p.ndim >= 2:
                    p.copy_(mats[n].view(p.shape))
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p, q, msg=n)
    start = _net()
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), start.parameters()))  # all moved


def test_the_schedule_scales_both_halves():
    model = _net()
    cfg = load_config("convlstm", overrides={"train.optimizer": "muon", "train.lr": 4e-3, "train.epochs": 2,
                                             "train.warmup_epochs": 1})
    opt = make_optimizer(model, cfg)
    assert isinstance(opt, MuonAdamW)
    sched = make_scheduler(opt, cfg, steps_per_epoch=4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 1e-3])  # warm-up step 1 of 4
    for _ in range(3):
        _steps(model, opt, n=1)
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([4e-3, 4e-3])
    assert opt.muon.param_groups[0]["lr"] == pytest.approx(4e-3)  # the inner optimizers' own groups
    assert opt.adamw.param_groups[0]["lr"] == pytest.approx(4e-3)


def test_state_round_trip_continues_the_same_trajectory():
    a = _net()
    opt_a = MuonAdamW(a.parameters(), lr=2e-3)
    _steps(a, opt_a, n=2)
    b = copy.deepcopy(a)
    opt_b = MuonAdamW(b.parameters(), lr=2e-3)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    _steps(a, opt_a, n=2, seed=5)
    _steps(b, opt_b, n=2, seed=5)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)
    fresh = copy.deepcopy(a)  # without the momentum the trajectory differs: the state mattered
    opt_f = MuonAdamW(fresh.parameters(), lr=2e-3)
    _steps(fresh, opt_f, n=1, seed=9)
    _steps(a, opt_a, n=1, seed=9)
    assert any(not torch.allclose(p, q) for p, q in zip(a.parameters(), fresh.parameters()))


@pytest.mark.parametrize("state, needle", [
    (lambda m: torch.optim.AdamW(m.parameters()).state_dict(), "another train.optimizer"),
    (lambda m: {"muon": None, "adamw": MuonAdamW(m.parameters()).state_dict()["adamw"]}, "muon half"),
    ("not a dict", "not a MuonAdamW"),
])
def test_a_foreign_state_is_refused_by_name(state, needle):
    model = _net()
    opt = MuonAdamW(model.parameters())
    with pytest.raises(ValueError, match=needle):
        opt.load_state_dict(state(model) if callable(state) else state)


def _other_net():  # _net's parameter counts, other shapes (6 channels, not 8)
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.GroupNorm(2, 6), nn.Tanh(),
                         nn.Conv2d(6, 4, 1), nn.Flatten(), nn.Linear(4 * 5 * 5, 6))


@pytest.mark.parametrize("half", ["muon", "adamw", "both"])
def test_a_state_of_other_shapes_is_refused_before_anything_loads(half):
    """A state of a model with as many parameters of other shapes: ValueError naming the half, and
    neither half loaded (it loaded, then the next step died of a tensor size mismatch)."""
    other = _other_net()
    opt_o = MuonAdamW(other.parameters(), lr=5e-3)
    other(torch.randn(2, 3, 5, 5)).pow(2).mean().backward()
    opt_o.step()
    model = _net()
    opt = MuonAdamW(model.parameters(), lr=2e-3)
    _steps(model, opt, n=1)
    own = copy.deepcopy(opt.state_dict())
    state = opt_o.state_dict() if half == "both" else {**own, half: opt_o.state_dict()[half]}
    with pytest.raises(ValueError, match=f"the {'muon' if half != 'adamw' else 'adamw'} half does not match"):
        opt.load_state_dict(state)
    now = opt.state_dict()  # nothing loaded
    for h in ("muon", "adamw"):
        assert now[h]["param_groups"] == own[h]["param_groups"]
        assert now[h]["state"].keys() == own[h]["state"].keys()
        for k, st in own[h]["state"].items():
            assert all(torch.equal(now[h]["state"][k][n], t) for n, t in st.items())
    assert [g["lr"] for g in opt.param_groups] == [2e-3, 2e-3]
    _steps(model, opt, n=1)  # and it still steps
    opt.load_state_dict(own)  # its own state still loads


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="empty parameter list"):
        MuonAdamW([])
    p = nn.Parameter(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="twice"):
        MuonAdamW([p, p])
    with pytest.raises(ValueError, match="lr=0"):
        MuonAdamW([p], lr=0)
    k = nn.Parameter(torch.zeros(4, 3, 3, 3).to(memory_format=torch.channels_last))
    with pytest.raises(ValueError, match=r"\(4, 3, 3, 3\) is not contiguous"):
        MuonAdamW([k])


def test_a_kernel_given_new_memory_after_the_optimizer_is_refused():
    """model.to(...) after the optimizer was made would leave Muon updating stale views: refused."""
    model = _net()
    opt = MuonAdamW(model.parameters())
    model[0].weight.data = model[0].weight.data.clone()
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    with pytest.raises(RuntimeError, match=r"\(8, 3, 3, 3\) no longer shares memory"):
        opt.step()


@pytest.mark.parametrize("params", [
    lambda: [nn.Parameter(torch.randn(3))],  # vectors only: AdamW alone
    lambda: [nn.Parameter(torch.randn(3, 4))],  # matrices only: Muon alone
])
def test_either_half_may_be_absent(params):
    ps = params()
    before = [p.detach().clone() for p in ps]
    opt = MuonAdamW(ps, lr=1e-2)
    assert len(opt.param_groups) == 1
    sum(p.pow(2).sum() for p in ps).backward()
    opt.step()
    assert all(not torch.equal(p, b) for p, b in zip(ps, before))
    opt.load_state_dict(opt.state_dict())


def test_zero_grad_clears_the_kernels_gradients():
    model = _net()
    opt = MuonAdamW(model.parameters())
    _steps(model, opt, n=1)
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def test_the_convlstm_learns_with_muon_in_the_plain_loop():
    """train.optimizer=muon through fit_plain: a small ConvLSTM learns squares that move down 4 pixels
    a frame (its training loss falls by a third in 20 steps; Muon's first steps are small -- about
    0.2 * lr per weight against Adam's lr -- so a short run wants a larger lr)."""
    import numpy as np
    frames = np.zeros((16, 5, 32, 16, 3), np.uint8)
    for i in range(16):
        for t in range(5):
            r = 4 + 4 * t + (i % 3)
            frames[i, t, r:r + 6, 4:10, i % 3] = 255
    cfg = load_config("convlstm", overrides={"model.convlstm.hidden": [8, 8], "train.optimizer": "muon",
                                             "train.epochs": 5, "train.batch_size": 4, "train.lr": 1e-1,
                                             "train.warmup_epochs": 0, "train.schedule": "constant"})
    model, hist = fit_plain(cfg, frames)
    losses = [h["train_loss"] for h in hist]
    assert losses[-1] < 0.7 * losses[0], losses


def test_a_schedule_made_before_a_resume_still_reaches_both_halves():
    """crnn/train.py resumes in this order: optimizer, schedule, then the optimizer's saved state (torch's
    load_state_dict gives each inner optimizer new group dicts). The schedule must still set the lr
    the inner optimizers use."""
    model = _net()
    opt = MuonAdamW(model.parameters(), lr=4e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    _steps(model, opt, n=1)
    sched.step()
    saved = copy.deepcopy(opt.state_dict())
    resumed = copy.deepcopy(model)
    opt2 = MuonAdamW(resumed.parameters(), lr=4e-3)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda step: 0.5 ** step)
    opt2.load_state_dict(saved)
    sched2.load_state_dict(sched.state_dict())
    for _ in range(2):
        _steps(resumed, opt2, n=1)
        sched2.step()
    assert opt2.muon.param_groups[0]["lr"] == pytest.approx(4e-3 / 8)
    assert opt2.adamw.param_groups[0]["lr"] == pytest.approx(4e-3 / 8)
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([4e-3 / 8] * 2)


_TORCH_KINDS = {"adam": torch.optim.Adam, "nadam": torch.optim.NAdam, "adamw": torch.optim.AdamW}


@pytest.mark.parametrize("kind", list(_TORCH_KINDS))
def test_a_muon_state_into_a_torch_optimizer_and_back_is_a_clear_value_error(kind):
    """A checkpoint written with train.optimizer=muon resumed with adam (or the reverse): torch's
    Adam failed with a bare KeyError: 'param_groups'. Now a ValueError naming both kinds."""
    model = _net()
    muon = MuonAdamW(model.parameters())
    plain = _TORCH_KINDS[kind](model.parameters())
    _steps(model, muon, n=1)
    _steps(model, plain, n=1)
    with pytest.raises(KeyError):  # what torch itself does: why the check is ours
        _TORCH_KINDS[kind](model.parameters()).load_state_dict(muon.state_dict())
    with pytest.raises(ValueError, match=rf"ckpt: expected a {_TORCH_KINDS[kind].__name__} state .*, found a "
                                         r"MuonAdamW state \(train.optimizer=muon\): was the checkpoint written "
                                         r"with another train.optimizer\?"):
        load_optimizer_state(_TORCH_KINDS[kind](model.parameters()), muon.state_dict(), "ckpt")
    with pytest.raises(ValueError, match=r"ckpt: expected a MuonAdamW state \(train.optimizer=muon\), found a torch "
                                         r"optimizer state"):
        load_optimizer_state(MuonAdamW(model.parameters()), plain.state_dict(), "ckpt")
    with pytest.raises(ValueError, match=r"not a MuonAdamW optimizer state: found a torch optimizer state"):
        MuonAdamW(model.parameters()).load_state_dict(plain.state_dict())
    for bad, found in (({"x": 1}, r"a dict with keys \['x'\]"), ([1], "a list"), (None, "a NoneType")):
        for opt in (MuonAdamW(model.parameters()), _TORCH_KINDS[kind](model.parameters())):
            with pytest.raises(ValueError, match=f"found {found}"):
                load_optimizer_state(opt, bad)
    # each kind's own state still loads, and the loaded optimizer steps
    for opt, state in ((MuonAdamW(model.parameters()), muon.state_dict()),
                       (_TORCH_KINDS[kind](model.parameters()), plain.state_dict())):
        load_optimizer_state(opt, copy.deepcopy(state))
        _steps(model, opt, n=1)


@pytest.mark.parametrize("saved, into", [(a, b) for a in _TORCH_KINDS for b in _TORCH_KINDS if a != b])
def test_a_torch_state_of_another_kind_is_a_clear_value_error(saved, into):
    """Adam/AdamW's state resumed into NAdam loaded, then the first step failed with a bare
    KeyError: 'mu_product'; AdamW's into Adam (or the reverse) silently swapped the weight decay
    (torch takes decoupled_weight_decay from the saved groups). Now a ValueError naming both kinds."""
    model = _net()
    old = _TORCH_KINDS[saved](model.parameters(), weight_decay=0.01)
    _steps(model, old, n=1)
    opt = _TORCH_KINDS[into](model.parameters(), weight_decay=0.01)
    with pytest.raises(ValueError, match=rf"ckpt: expected a {_TORCH_KINDS[into].__name__} state .*found an? "
                                         rf"{_TORCH_KINDS[saved].__name__} state .*another train.optimizer"):
        load_optimizer_state(opt, copy.deepcopy(old.state_dict()), "ckpt")
    load_optimizer_state(_TORCH_KINDS[saved](model.parameters()), old.state_dict())  # its own kind loads


def test_a_deep_copy_of_muon_adamw_steps_like_the_original():
    """copy.deepcopy(opt) failed (AttributeError: no '_views': torch's Optimizer pickles only defaults,
    state and param_groups). A copy made with its model steps its own kernels exactly as the original
    steps the original's; a copy of the optimizer alone updates copies and leaves the model alone."""
    model = _net()
    opt = MuonAdamW(model.parameters(), lr=5e-3)
    _steps(model, opt, n=2)
    model2, opt2 = copy.deepcopy((model, opt))
    assert all(v.data_ptr() == p.data_ptr() for p, v in opt2._views)
    assert {id(p) for g in opt2.param_groups for p in g["params"]} & {id(p) for p in model.parameters()} == set()
    _steps(model, opt, n=3, seed=7)
    _steps(model2, opt2, n=3, seed=7)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    before = [p.detach().clone() for p in model.parameters()]
    alone = copy.deepcopy(opt)
    for g in alone.param_groups:
        for p in g["params"]:
            p.grad = torch.ones_like(p)
    alone.step()  # steps its own copies
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    for (p, v), (q, w) in zip(opt._views, alone._views):
        assert w.data_ptr() == q.data_ptr() != p.data_ptr()
    empty_muon = MuonAdamW([nn.Parameter(torch.zeros(3))])  # no Muon half: copies too
    copy.deepcopy(empty_muon).step()

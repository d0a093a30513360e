import math
import os
import re

import numpy as np
import pytest
import torch

from tests.helpers import CrashOnce, ScriptedValidation, WatchAugment, tiny_config
from crnn.checkpoint import read_model_file
from crnn.inference import load_model
from crnn.config import load_config
from crnn.shards import read_numpy, torch_frames
from crnn.loop import eval_step, fit_plain, make_optimizer, make_scheduler, split_io, train_step
from crnn.rundir import read_metrics_csv
from crnn.train import fit


def _frames(n=24, t=5, seed=0):
    """Synthetic growing bars: frame t has a bar of height 4*(t+1) pixels, uint8 (N, T, 32, 16, 3)."""
    rng = np.random.default_rng(seed)
    f = np.full((n, t, 32, 16, 3), 230, np.uint8)
    for i in range(n):
        x = rng.integers(2, 12)
        for k in range(t):
            f[i, k, 32 - 4 * (k + 1):, x:x + 3] = (90, 60, 30)
    return f


def test_split_io_shapes_and_error():
    x = torch.zeros(2, 5, 3, 32, 16)
    i, t = split_io(x, 4)
    assert i.shape == t.shape == (2, 4, 3, 32, 16)
    x[:, 4] = 1
    assert t[:, 3].eq(1).all() and i.eq(0).all()
    with pytest.raises(ValueError, match="5 frames"):
        split_io(x, 5)


def test_scheduler_warmup_then_cosine():
    cfg = load_config("quick", overrides={"train.epochs": 4, "train.warmup_epochs": 1, "train.schedule": "cosine"})
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_scheduler(opt, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warm-up
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01                   # cosine decay
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_adam_is_fused_and_steps_like_the_reference():
    """Adam/AdamW use torch's fused kernel on CPU; one step matches torch's unfused Adam."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)
    b.load_state_dict(a.state_dict())
    for name in ("adam", "adamw"):
        cfg = load_config("quick", overrides={"train.optimizer": name, "train.weight_decay": 0.01})
        assert make_optimizer(a, cfg).defaults["fused"] is True
    opt_a = make_optimizer(a, load_config("quick"))
    opt_b = torch.optim.Adam(b.parameters(), lr=opt_a.defaults["lr"], foreach=False)
    x = torch.randn(5, 6)
    for m, o in ((a, opt_a), (b, opt_b)):
        for _ in range(3):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)
    assert make_optimizer(a, load_config("quick", overrides={"train.optimizer": "nadam"})).defaults.get("fused") is not True


def test_bad_optimizer_and_untrainable_model_named():
    cfg = load_config("quick", overrides={"train.optimizer": "sgdx"})
    with pytest.raises(ValueError, match="sgdx"):
        make_optimizer(torch.nn.Linear(2, 2), cfg)
    cfg = load_config("quick", overrides={"model.kind": "persistence"})
    with pytest.raises(ValueError, match="persistence"):
        fit_plain(cfg, _frames(4))


@pytest.mark.parametrize("key,value", [("train.compile_mode", "turbo"), ("train.precision", "fp8"),
                                       ("train.cache", "sometimes"), ("train.schedule", "step"),
                                       ("train.loss", "huber"), ("train.batch_size", 0), ("train.lr", 0.0),
                                       ("train.augment", "vflip"), ("train.augment", "")])
def test_bad_train_fields_are_named_before_anything_runs(key, value, tmp_path):
    cfg = load_config("quick", overrides={key: value})
    for call in (lambda: fit_plain(cfg, _frames(4)), lambda: fit(cfg, str(tmp_path / "run"))):
        with pytest.raises(ValueError, match=f"{key}={value!r}"):
            call()
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


def test_hflip_mirrors_whole_series_about_half_the_time_and_none_is_identity():
    from crnn.loop import augment

    x = torch_frames(torch.as_tensor(_frames(64)), "cpu")          # (64, 5, 3, 32, 16)
    assert augment(x, "none") is x
    torch.manual_seed(0)
    y = augment(x, "hflip")
    assert y.shape == x.shape and y.dtype == x.dtype
    kept = [torch.equal(y[i], x[i]) for i in range(64)]
    mirrored = [torch.equal(y[i], x[i].flip(-1)) for i in range(64)]
    assert all(k or m for k, m in zip(kept, mirrored))              # each series whole, every frame alike
    assert 20 <= sum(mirrored) <= 44                                # about half (binomial 64, 1/2)
    torch.manual_seed(0)
    assert torch.equal(augment(x, "hflip"), y)                      # torch's seed decides
    # an irregular batch: its frames are mirrored, ages and counts untouched
    batch = {"frames": x[:8], "ages": torch.arange(40.0).view(8, 5), "num_frames": torch.full((8,), 5),
             "num_inputs": torch.zeros(8, dtype=torch.long)}
    torch.manual_seed(1)
    out = augment(batch, "hflip")
    assert out["ages"] is batch["ages"] and out["num_frames"] is batch["num_frames"]
    assert all(torch.equal(out["frames"][i], x[i]) or torch.equal(out["frames"][i], x[i].flip(-1)) for i in range(8))
    with pytest.raises(ValueError, match="train.augment='rot90'"):
        augment(x, "rot90")


def test_train_step_sees_the_augmented_batch():
    """train.augment reaches the step: with hflip the model is given mirrored series, with none the
    batch as it is; validation (eval_step) never augments."""
    seen = []
    cfg = load_config("quick", overrides={"train.augment": "hflip"})
    model = _tiny_recording_model(seen)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x = torch_frames(torch.as_tensor(_frames(32)), "cpu")
    torch.manual_seed(3)
    train_step(model, opt, None, x, cfg)
    flipped = [not torch.equal(seen[-1][i], x[i, :4]) for i in range(32)]
    assert 0 < sum(flipped) < 32
    assert all(torch.equal(seen[-1][i], x[i, :4].flip(-1)) for i in range(32) if flipped[i])
    eval_step(model, x, cfg)
    assert torch.equal(seen[-1], x[:, :4])
    train_step(model, opt, None, x, load_config("quick"))
    assert torch.equal(seen[-1], x[:, :4])


def _tiny_recording_model(seen):
    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, inputs):
            seen.append(inputs.detach().clone())
            return inputs + self.w

    return Recorder()


def test_compile_mode_reaches_torch_compile(monkeypatch):
    seen = {}

    def fake_compile(model, mode=None):
        seen["mode"] = mode
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    from crnn.loop import maybe_compile

    m = torch.nn.Linear(2, 2)
    assert maybe_compile(m, load_config("quick")) is m and seen == {}  # compile off: untouched
    maybe_compile(m, load_config("quick", overrides={"train.compile": True}))
    assert seen.pop("mode") is None  # torch's default mode
    maybe_compile(m, load_config("quick", overrides={"train.compile": True, "train.compile_mode": "reduce-overhead"}))
    assert seen.pop("mode") == "reduce-overhead"


def test_plain_loop_learns_and_saves(tmp_path):
    cfg = load_config("quick", overrides={"model.conv_filters": [4, 8], "model.lstm_units": 32,
                                          "train.epochs": 6, "train.batch_size": 8, "train.lr": 3e-3,
                                          "model.dropout": 0.0, "model.recurrent_dropout": 0.0})
    data = _frames(32)
    model, hist = fit_plain(cfg, data[:24], data[24:], out=str(tmp_path / "m"))
    assert len(hist) == 6
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    loaded, cfg2, meta = load_model(str(tmp_path / "m"))
    assert cfg2 == cfg and meta["epoch"] == 5
    x = torch_frames(data[24:])
    with torch.no_grad():
        assert torch.equal(loaded(x[:, :4]), model.eval()(x[:, :4]))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_step_reduces_loss_on_fixed_batch(precision):
    cfg = load_config("quick", overrides={"model.conv_filters": [4, 8], "model.lstm_units": 16,
                                          "model.dropout": 0.0, "model.recurrent_dropout": 0.0,
                                          "train.precision": precision})
    from crnn.model import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model)
    opt = make_optimizer(model, cfg)
    x = torch_frames(_frames(8))
    first = train_step(model, opt, None, x, cfg).item()
    for _ in range(20):
        last = train_step(model, opt, None, x, cfg).item()
    assert last < first
    # bf16 is autocast: the weights and their Adam state stay fp32
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {v.dtype for st in opt.state.values() for v in st.values() if v.numel() > 1} == {torch.float32}
    err, n = eval_step(model, x, cfg)
    assert n == 8 * 4 * 3 * 32 * 16 and math.isfinite(float(err))


def test_ray_train_worker_hands_the_datas_mirror_axis_to_every_step(ray_local, tiny_dataset, tmp_path):
    """train.augment=hflip on Ray Train: every training step of the worker mirrors about the dataset
    card's axis (the pines' trunk column 8, not the image centre 7.5), and the model directory keeps it."""
    from crnn.shards import read_card

    log = str(tmp_path / "augment.log")
    cfg = tiny_config(tiny_dataset, **{"train.epochs": 2, "train.augment": "hflip"})
    fit(cfg, str(tmp_path / "run"), hooks=[WatchAugment(log)])
    calls = open(log).read().split("\n")[:-1]
    steps = 2 * (read_card(tiny_dataset)["splits"]["train"] // 8)          # epochs x full batches of 8
    assert read_card(tiny_dataset)["mirror_axis"] == 8.0
    assert calls == ["hflip 8.0"] * steps
    assert read_model_file(os.path.join(str(tmp_path / "run"), "model"))["data"]["mirror_axis"] == 8.0


@pytest.mark.parametrize("optimizer", ["adam", "muon"])
def test_ray_train_resumes_after_worker_dies(ray_local, tiny_dataset, tmp_path, optimizer):
    """One worker, killed at the start of epoch 1: Ray Train restarts it from the epoch-0 checkpoint
    (with train.optimizer=muon too: crnn.optim.MuonAdamW's state goes through the checkpoint)."""
    cfg = tiny_config(tiny_dataset, **{"train.epochs": 3, "train.optimizer": optimizer})
    out = str(tmp_path / "run")
    marker = str(tmp_path / "crashed")
    result = fit(cfg, out, hooks=[CrashOnce(1, marker)])
    assert os.path.exists(marker)  # the worker really died once
    rows = read_metrics_csv(os.path.join(out, "metrics.csv"))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert int(rows[0]["start_epoch"]) == 0
    assert int(rows[-1]["start_epoch"]) == 1  # resumed, not started over
    for f in ("config.yaml", "curve.png", "model/model.pt", "model/config.yaml"):
        assert os.path.exists(os.path.join(out, f)), f
    assert os.listdir(os.path.join(out, "tb"))
    assert not os.path.exists(os.path.join(out, "model", "optimizer.pt"))

    # model/ is the best-by-val checkpoint, and its reported val loss is reproducible from the data
    payload = read_model_file(os.path.join(out, "model"))
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert payload["epoch"] == int(best["epoch"])
    model, cfg2, _ = load_model(os.path.join(out, "model"))
    val = torch_frames(read_numpy(tiny_dataset, split="val")["frames"])
    err, n = eval_step(model, val, cfg2)
    assert float(err) / n == pytest.approx(float(best["val_loss"]), rel=1e-4)
    assert result.error is None


def test_ray_train_two_workers_ddp(ray_local, tiny_dataset, tmp_path):
    # streamed every epoch (the default caches a dataset this small): both data paths are covered
    cfg = tiny_config(tiny_dataset, **{"train.num_workers": 2, "train.epochs": 1, "train.cache": "never"})
    out = str(tmp_path / "run2")
    fit(cfg, out)
    rows = read_metrics_csv(os.path.join(out, "metrics.csv"))
    # both workers' series are counted: 66 train series, batches of 4 per worker, drop_last
    assert 48 <= float(rows[0]["series_seen"]) <= 66
    load_model(os.path.join(out, "model"))


def test_fit_rejects_mismatched_image_size(ray_local, tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, **{"model.height": 64, "model.width": 32})
    with pytest.raises(ValueError, match="32x16x3 but the model expects 64x32x3"):
        fit(cfg, str(tmp_path / "bad"))


def test_throttled_checkpoints_still_keep_the_best_epoch(ray_local, tiny_dataset, tmp_path):
    """Improvements are checkpointed at most once per checkpoint_interval_s; an improvement that
    was not written (epoch 1 here) is reported again after the last epoch, so model/ is still the
    best epoch, and metrics.csv has one row per epoch."""
    cfg = tiny_config(tiny_dataset, **{"train.epochs": 4, "train.checkpoint_every": 0,
                                       "train.checkpoint_interval_s": 1e9})
    out = str(tmp_path / "run")
    fit(cfg, out, hooks=[ScriptedValidation([0.5, 0.1, 0.3, 0.4])])
    rows = read_metrics_csv(os.path.join(out, "metrics.csv"))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert [float(r["val_loss"]) for r in rows] == [0.5, 0.1, 0.3, 0.4]
    best = read_model_file(os.path.join(out, "model"))
    assert best["epoch"] == 1 and best["metrics"]["val_loss"] == 0.1

    # written: epoch 0 (the first improvement), epoch 3 (the last) and the replay of epoch 1, of
    # which Train keeps the best two by val_loss (num_to_keep=2): 0.1 (epoch 1) and 0.4 (epoch 3)
    ckpts = sorted(os.path.join(out, "ray", "train", d) for d in os.listdir(os.path.join(out, "ray", "train"))
                   if d.startswith("checkpoint_") and os.path.isdir(os.path.join(out, "ray", "train", d)))
    epochs = sorted(read_model_file(c)["epoch"] for c in ckpts)
    assert epochs == [1, 3]
    last = next(c for c in ckpts if read_model_file(c)["epoch"] == 3)
    w_best, w_last = best["state_dict"], read_model_file(last)["state_dict"]
    assert any(not torch.equal(w_best[k], w_last[k]) for k in w_best)  # really the epoch-1 weights


# ----------------------------------------------------------------------------- run directories (#11)
def _row(epoch, start, loss):
    return {"epoch": epoch, "train_loss": loss, "val_loss": loss, "start_epoch": start}


def test_metrics_writer_keeps_earlier_epochs_on_resume(tmp_path):
    """A rerun resumes at the checkpoint's epoch: metrics.csv keeps the rows before it and replaces
    the rest (an interrupted run may have logged epochs past its last checkpoint)."""
    from crnn.rundir import _MetricsWriter, write_metrics_csv

    out = str(tmp_path)
    write_metrics_csv(out, [_row(e, 0, 1.0 - e / 10) for e in range(5)])  # epochs 0..4, then killed
    w = _MetricsWriter(out)  # the rerun resumes from the epoch-2 checkpoint: epoch 3 is next
    w.after_report(None, [_row(3, 3, 0.25)], None)
    rows = read_metrics_csv(os.path.join(out, "metrics.csv"))
    assert [(int(r["epoch"]), float(r["val_loss"]), int(r["start_epoch"])) for r in rows] == [
        (0, 1.0, 0), (1, 0.9, 0), (2, 0.8, 0), (3, 0.25, 3)]
    w.after_report(None, [{**_row(3, 3, 0.25), "best_replay": 1.0}], None)  # replays add no row
    w.after_report(None, [_row(4, 3, 0.2)], None)
    rows = read_metrics_csv(os.path.join(out, "metrics.csv"))
    assert [(int(r["epoch"]), float(r["val_loss"])) for r in rows] == [
        (0, 1.0), (1, 0.9), (2, 0.8), (3, 0.25), (4, 0.2)]
    # no checkpoint to resume from (start 0): the earlier rows are all superseded
    w = _MetricsWriter(out)
    w.after_report(None, [_row(0, 0, 0.7)], None)
    assert [(int(r["epoch"]), float(r["val_loss"])) for r in read_metrics_csv(os.path.join(out, "metrics.csv"))] == [
        (0, 0.7)]


def test_check_run_dir_owner_config(tmp_path):
    from crnn.config import save as save_config
    from crnn.rundir import RunDirError, check_run_dir

    cfg = tiny_config("data/x")
    out = tmp_path / "run"
    assert check_run_dir(str(out), cfg) is False  # missing: fresh
    out.mkdir()
    assert check_run_dir(str(out), cfg) is False  # empty: fresh
    save_config(cfg, str(out / "config.yaml"))
    assert check_run_dir(str(out), cfg) is False  # same config: resume
    runtime = tiny_config("data/x", **{"train.num_workers": 2, "train.max_failures": 0, "train.cache": "never"})
    assert check_run_dir(str(out), runtime) is False  # how it runs may change
    for key, value, shown in (("model.lstm_units", 32, "model.lstm_units: 16 -> 32"),
                              ("train.lr", 0.01, "train.lr: 0.001 -> 0.01"),
                              ("train.epochs", 3, "train.epochs: 2 -> 3"),
                              ("data.path", "data/y", "data.path: 'data/x' -> 'data/y'")):
        other = tiny_config("data/x", **{key: value})
        with pytest.raises(RunDirError, match="another configuration") as e:
            check_run_dir(str(out), other)
        assert shown in str(e.value) and str(out) in str(e.value) and "--overwrite" in str(e.value)
        assert check_run_dir(str(out), other, overwrite=True) is True
    (out / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(RunDirError, match="config.yaml cannot be read"):
        check_run_dir(str(out), cfg)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        check_run_dir(str(tmp_path / "file"), cfg)


def test_rerun_after_interruption_keeps_history_and_another_config_starts_over(ray_local, tiny_dataset, tmp_path):
    """The run dies at epoch 2 (no retries left), the same command is run again: it resumes at epoch
    2 and metrics.csv, tb/ and curve.png hold epochs 0-2. Another config is refused, and with
    overwrite starts over in a clean directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from crnn.rundir import RunDirError

    out = str(tmp_path / "run")
    cfg = tiny_config(tiny_dataset, **{"train.epochs": 3, "train.checkpoint_every": 1,
                                       "train.checkpoint_interval_s": 0.0, "train.max_failures": 0})
    marker = str(tmp_path / "crashed")
    with pytest.raises(Exception):
        fit(cfg, out, hooks=[CrashOnce(2, marker)])
    assert os.path.exists(marker)
    assert [int(r["epoch"]) for r in read_metrics_csv(os.path.join(out, "metrics.csv"))] == [0, 1]
    fit(cfg, out)  # the same command again
    rows = read_metrics_csv(os.path.join(out, "metrics.csv"))
    assert [(int(r["epoch"]), int(r["start_epoch"])) for r in rows] == [(0, 0), (1, 0), (2, 2)]
    tb = os.path.join(out, "tb")
    assert len(os.listdir(tb)) == 1
    acc = EventAccumulator(tb)
    acc.Reload()
    assert [e.step for e in acc.Scalars("val_loss")] == [0, 1, 2]
    assert os.path.getsize(os.path.join(out, "curve.png")) > 0

    other = tiny_config(tiny_dataset, **{"train.epochs": 1, "model.lstm_units": 8})
    with pytest.raises(RunDirError, match="model.lstm_units: 16 -> 8"):
        fit(other, out)
    assert len(read_metrics_csv(os.path.join(out, "metrics.csv"))) == 3  # refused: nothing touched
    fit(other, out, overwrite=True)
    rows = read_metrics_csv(os.path.join(out, "metrics.csv"))
    assert [(int(r["epoch"]), int(r["start_epoch"])) for r in rows] == [(0, 0)]
    assert load_model(os.path.join(out, "model"))[1].model.lstm_units == 8
    ckpts = [d for d in os.listdir(os.path.join(out, "ray", "train"))
             if d.startswith("checkpoint_") and os.path.isdir(os.path.join(out, "ray", "train", d))]
    assert ckpts and all(read_model_file(os.path.join(out, "ray", "train", d))["config"]["model"]["lstm_units"] == 8
               for d in ckpts)


# ----------------------------------------------------------------------------- irregular batches (#14)
def _irregular(num_frames, num_inputs, t_max=6, h=8, w=4):
    """An irregular batch dict: frame j of series i is the constant 10*i + j (/255), at age 3*j + 1."""
    b = len(num_frames)
    frames = torch.zeros(b, t_max, 3, h, w)
    ages = torch.zeros(b, t_max)
    for i, n in enumerate(num_frames):
        for j in range(n):
            frames[i, j] = (10 * i + j) / 255
            ages[i, j] = 3 * j + 1
    return {"frames": frames, "ages": ages, "num_frames": torch.tensor(num_frames),
            "num_inputs": torch.tensor(num_inputs)}


def test_irregular_io_splits_inputs_and_targets_and_masks_the_padding():
    from crnn.loop import irregular_io

    x = _irregular([5, 3, 6], [2, 2, 3])
    (frames, ages, mask, target_ages), targets, valid = irregular_io(x, training=True)
    assert mask.tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]]
    assert valid.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 1]]             # M = 3: the most targets
    assert target_ages.tolist() == [[7, 10, 13], [7, 5, 5], [10, 13, 16]]  # padding: last input (4) + 1
    assert torch.equal(targets[0, :, 0, 0, 0] * 255, torch.tensor([2.0, 3.0, 4.0]))
    assert torch.equal(targets[2, :, 0, 0, 0] * 255, torch.tensor([23.0, 24.0, 25.0]))
    assert frames is x["frames"] and ages is x["ages"]


def test_irregular_io_chooses_inputs_when_unmarked_and_keeps_unusable_series_masked():
    """num_inputs == 0: 2..n-1 inputs drawn in training, ceil(n/2) in validation; a series with too
    few inputs or no target stays in the batch with no valid target (the batch keeps its size)."""
    from crnn.loop import irregular_io

    torch.manual_seed(0)
    x = _irregular([6, 5, 2, 4], [0, 0, 0, 4])
    seen = set()
    for _ in range(200):
        (_, _, mask, tage), _, valid = irregular_io(x, training=True)
        k = mask.sum(1)
        seen.add(int(k[0]))
        assert 2 <= k[0] <= 5 and 2 <= k[1] <= 4
        assert valid[2].sum() == 0 and valid[3].sum() == 0                  # unusable rows
        assert (tage > torch.where(mask, x["ages"], -1e9).max(1).values[:, None]).all()  # targets after inputs
    assert seen == {2, 3, 4, 5}
    (_, _, mask, _), _, valid = irregular_io(x, training=False)
    assert mask.sum(1).tolist() == [3, 3, 2, 4] and valid.sum(1).tolist() == [3, 2, 0, 0]


def test_masked_loss_and_eval_count_only_valid_targets():
    from crnn.loop import eval_step, loss_fn

    pred, target = torch.zeros(2, 3, 1, 2, 2), torch.ones(2, 3, 1, 2, 2)
    target[1, 2] = 100.0                                                     # a padding target
    valid = torch.tensor([[True, True, True], [True, True, False]])
    assert loss_fn(pred, target, "mse", valid).item() == pytest.approx(1.0)
    assert loss_fn(pred, target, "l1", valid).item() == pytest.approx(1.0)
    assert loss_fn(pred, target, "mse", torch.zeros_like(valid)).item() == 0.0

    class Const(torch.nn.Module):  # forecasts 0 everywhere
        def forward(self, frames, ages, mask, target_ages):
            return torch.zeros(*target_ages.shape, *frames.shape[2:])

    cfg = load_config("timevp-fast")
    err, n = eval_step(Const(), _irregular([5, 3], [2, 2]), cfg)
    # targets: series 0 frames 2, 3, 4; series 1 frame 2 -> sum of squares over 3*8*4 values each
    assert n == 4 * 3 * 8 * 4
    assert float(err) == pytest.approx(3 * 8 * 4 * sum(((v) / 255) ** 2 for v in (2, 3, 4, 12)), rel=1e-5)


def test_fit_plain_trains_timevp_on_irregular_series_and_keeps_the_data_summary(tmp_path):
    from crnn import pine
    from crnn.irregular import IrregularSpec, rows_to_batch

    spec = IrregularSpec(min_inputs=2, max_inputs=4, min_targets=1, max_targets=2, age_min=1, age_max=30)
    rows = []
    for i in range(24):
        ages, k = spec.sample(0, i)
        _, frames = pine.make_series(100 + i, ages=tuple(int(a) for a in ages), height=16, width=8)
        rows.append({"series_id": f"s{i}", "seed": 100 + i, "split": "train", "ages": ages, "frames": frames,
                     "num_inputs": k})
    data = rows_to_batch(rows, spec.max_frames, [])
    cfg = load_config("timevp-fast", overrides={"model.height": 16, "model.width": 8, "model.timevp.hid_s": 8,
                                                "model.timevp.hid_t": 16, "train.epochs": 4, "train.batch_size": 8})
    summary = {"layout": "irregular", "age_unit": "years", "age_range": [1.0, 30.0]}
    _, history = fit_plain(cfg, data, data, out=str(tmp_path / "m"), data=summary)
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert read_model_file(str(tmp_path / "m"))["data"] == summary


@pytest.mark.parametrize("ages,expect", [
    ([1.0, 2.0, 4.0, 8.0, 16.0], [1.0, 2.0, 4.0, 8.0, 16.0]),      # months, unevenly spaced: these ages
    ([3.0, 6.0, 9.0, 12.0, 15.0], [3.0, 6.0, 9.0, 12.0, 15.0]),    # evenly spaced, another grid
    ([10.0, 15.0, 20.0, 25.0, 30.0], None),                        # the model's grid: model(x) as ever
])
def test_a_time_aware_model_trains_at_a_regular_datasets_own_ages(tmp_path, monkeypatch, ages, expect):
    """Found beside the evaluation fix: a time-aware model trained on a regular dataset whose ages are
    not its grid (photos at months 1, 2, 4, 8 -> 16) read them as ages 10, 15, 20, 25 -> 30, while
    Serve and the evaluation ask it at the real ages. Training and validation now pass the dataset's
    ages (``model(x, ages)``); on the grid nothing changes."""
    from crnn.models.timevp import TimeVP

    seen = []
    forward_grid = TimeVP.forward_grid

    def spy(self, x, ages=None):
        seen.append(None if ages is None else [float(a) for a in ages])
        return forward_grid(self, x, ages)

    monkeypatch.setattr(TimeVP, "forward_grid", spy)
    cfg = load_config("timevp-fast", overrides={"model.timevp.hid_s": 8, "model.timevp.hid_t": 16,
                                                "model.timevp.n_t": 2, "train.epochs": 1, "train.batch_size": 8})
    summary = {"layout": "regular", "age_unit": "months", "age_range": [ages[0], ages[-1]], "ages": ages,
               "mirror_axis": 7.5}
    data = _frames(16)
    fit_plain(cfg, data[:8], data[8:], out=str(tmp_path / "m"), data=summary)
    assert len(seen) == 2 and seen == [expect, expect], seen        # one training step, one validation batch
    assert read_model_file(str(tmp_path / "m"))["data"]["ages"] == ages


def test_a_plain_fine_tune_keeps_the_starting_ages_it_trains_on(tmp_path):
    """The review's input: fine-tuning (fit_plain, no data summary) a model trained at months 1, 2, 4,
    8 -> 16 with another data.in_frames. Fewer frames: the start's summary is cut to the ages trained
    on; more: their ages are not known, refused before training (it failed at the first step)."""
    tv = {"model.timevp.hid_s": 8, "model.timevp.hid_t": 16, "model.timevp.n_t": 2, "train.epochs": 1,
          "train.batch_size": 8}
    months = {"layout": "regular", "age_unit": "months", "age_range": [1.0, 16.0], "ages": [1.0, 2.0, 4.0, 8.0, 16.0],
              "mirror_axis": 7.5}
    start = str(tmp_path / "start")
    fit_plain(load_config("timevp-fast", overrides=tv), _frames(8), out=start, data=months)
    fewer = load_config("timevp-fast", overrides={**tv, "data.in_frames": 2, "train.init_from": start})
    fit_plain(fewer, _frames(8), out=str(tmp_path / "fewer"))
    assert read_model_file(str(tmp_path / "fewer"))["data"] == {**months, "ages": [1.0, 2.0, 4.0], "age_range": [1.0, 4.0]}
    more = load_config("timevp-fast", overrides={**tv, "data.in_frames": 6, "train.init_from": start})
    with pytest.raises(ValueError, match=r"records 5 ages \[1, 2, 4, 8, 16\], but data.in_frames=6 trains on 7"):
        fit_plain(more, _frames(8, t=7), out=str(tmp_path / "more"))
    assert not os.path.exists(tmp_path / "more")
    on_grid = {**months, "age_unit": "years", "age_range": [10.0, 30.0], "ages": [10.0, 15.0, 20.0, 25.0, 30.0]}
    fit_plain(load_config("timevp-fast", overrides=tv), _frames(8), out=str(tmp_path / "grid"), data=on_grid)
    longer = load_config("timevp-fast", overrides={**tv, "data.in_frames": 6, "train.init_from": str(tmp_path / "grid")})
    fit_plain(longer, _frames(8, t=7), out=str(tmp_path / "grid-more"))  # on the grid: the grid goes on


def _small_cfg(**over):
    base = {"model.conv_filters": [4, 8], "model.lstm_units": 32, "train.epochs": 6, "train.batch_size": 8,
            "train.lr": 3e-3, "model.dropout": 0.0, "model.recurrent_dropout": 0.0}
    return load_config("quick", overrides={**base, **over})


def test_init_from_starts_where_the_source_model_ended(tmp_path):
    """train.init_from loads a trained model's weights before the first step (fine-tuning, a warm
    restart): with a learning rate too small to move them, the run keeps the source's validation
    loss; from random weights the same run sits far above it."""
    data = _frames(32)
    src = str(tmp_path / "src")
    _, hist = fit_plain(_small_cfg(), data[:24], data[24:], out=src)
    frozen = {"train.epochs": 1, "train.lr": 1e-12}
    _, tuned = fit_plain(_small_cfg(**frozen, **{"train.init_from": src}), data[:24], data[24:],
                         out=str(tmp_path / "ft"))
    _, fresh = fit_plain(_small_cfg(**frozen), data[:24], data[24:])
    assert tuned[0]["val_loss"] == pytest.approx(hist[-1]["val_loss"], rel=1e-4)
    assert fresh[0]["val_loss"] > 2 * hist[-1]["val_loss"]
    a, b = read_model_file(src)["state_dict"], read_model_file(str(tmp_path / "ft"))["state_dict"]
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # the fine-tuned model records where it started
    _, cfg, _ = load_model(str(tmp_path / "ft"))
    assert cfg.train.init_from == src


@pytest.mark.parametrize("change,needle", [
    ({"model.lstm_units": 16}, "model.lstm_units: this run 16, that model 32"),
    ({"model.height": 64, "model.width": 32}, "model.height: this run 64, that model 32"),
    ({"model.kind": "convlstm"}, "model.kind: this run 'convlstm', that model 'crnn'"),
])
def test_init_from_refuses_another_network(tmp_path, change, needle):
    from crnn.checkpoint import check_init_from, model_differences

    src = str(tmp_path / "src")
    fit_plain(_small_cfg(**{"train.epochs": 1}), _frames(8), out=src)
    cfg = _small_cfg(**change, **{"train.init_from": src})
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        fit_plain(cfg, _frames(8))
    with pytest.raises(ValueError, match="train.init_from="):
        check_init_from(cfg)
    # fields that do not shape the network (another family's unused section, training fields,
    # regularisation rates) may differ
    same = _small_cfg(**{"model.convlstm.hidden": [8], "train.lr": 1e-2, "model.dropout": 0.1,
                         "model.recurrent_dropout": 0.5, "train.init_from": src})
    assert model_differences(same, _small_cfg()) == []
    check_init_from(same)


def test_init_from_names_a_missing_or_broken_model(tmp_path):
    from crnn.checkpoint import ModelError, check_init_from

    missing = str(tmp_path / "nowhere")
    with pytest.raises(ModelError, match=f"train.init_from: {missing}"):
        check_init_from(_small_cfg(**{"train.init_from": missing}))
    check_init_from(_small_cfg())  # "" : nothing to check
    # a run directory instead of its model/: the hint names the model directory
    fit_plain(_small_cfg(**{"train.epochs": 1}), _frames(8), out=str(tmp_path / "run" / "model"))
    with pytest.raises(ModelError, match=f"a run directory\\? its model is {tmp_path / 'run' / 'model'}"):
        check_init_from(_small_cfg(**{"train.init_from": str(tmp_path / "run")}))


def test_init_from_inside_out_is_refused_and_a_resumed_run_does_not_read_it(tmp_path):
    """--overwrite would delete a starting model inside --out (then the run fails with the model
    gone): refused with or without it. A run that holds a checkpoint resumes without its source."""
    from crnn.checkpoint import ModelError
    from crnn.rundir import RunDirError, check_run_dir
    from crnn.train import check_config

    out = tmp_path / "run"
    fit_plain(_small_cfg(**{"train.epochs": 1}), _frames(8), out=str(out / "model"))
    (out / "config.yaml").write_text("{}")
    cfg = _small_cfg(**{"train.init_from": str(out / "model")})
    for overwrite in (False, True):
        with pytest.raises(RunDirError, match="lies inside --out"):
            check_run_dir(str(out), cfg, overwrite)
    # the same place spelled otherwise: a file:// URI on either side, a trailing /, . and ..
    for src, where in ((f"file://{out}/model", str(out)), (str(out / "model"), f"file://{out}/"),
                       (f"{out}/./model/", str(out)), (f"{out}/../run/model", str(out)),
                       (str(out), f"file://{out}"), (f"/{out}/model", str(out))):
        with pytest.raises(RunDirError, match="lies inside --out"):
            check_run_dir(where, _small_cfg(**{"train.init_from": src}), True)
    # ... and through a symbolic link (the review's input: --overwrite then deleted the model)
    (tmp_path / "link-model").symlink_to(out / "model")
    (tmp_path / "link-run").symlink_to(out)
    for src, where in ((str(tmp_path / "link-model"), str(out)), (str(out / "model"), str(tmp_path / "link-run"))):
        with pytest.raises(RunDirError, match="lies inside --out"):
            check_run_dir(where, _small_cfg(**{"train.init_from": src}), True)
    assert (out / "model" / "model.pt").exists()
    gone = _small_cfg(**{"train.init_from": str(tmp_path / "moved-away")})
    resumed = tmp_path / "ft"
    with pytest.raises(ModelError, match="moved-away"):
        check_config(gone, str(resumed))
    (resumed / "ray" / "train" / "checkpoint_2026-11-30_00-00-00.000000").mkdir(parents=True)
    check_config(gone, str(resumed))                    # resumes from its own checkpoint
    with pytest.raises(ModelError, match="moved-away"):
        check_config(gone, str(resumed), overwrite=True)  # starting over needs the source again


@pytest.mark.parametrize("missing,other", [
    ("train.init_from", {"train.init_from": "/elsewhere"}),
    ("train.augment", {"train.augment": "hflip"}),
    ("model.timevp", {"model.timevp.window": 3}),
    # a family section saved before it gained fields (model.convlstm.norm / skip): nested leaves
    ("model.convlstm.norm", {"model.convlstm.norm": True}),
    ("model.convlstm.skip", {"model.convlstm.skip": True}),
    ("model.predrnn", {"model.predrnn.norm": True}),
])
def test_run_dir_written_before_a_field_existed_still_resumes(tmp_path, missing, other):
    """A saved config.yaml without a field added later (train.init_from, the model.timevp section, a
    field inside a family section) compares as that field's default: the rerun resumes, another value
    is still refused, naming the field."""
    import yaml

    from crnn.config import save as save_config
    from crnn.rundir import RunDirError, check_run_dir

    cfg = _small_cfg()
    save_config(cfg, str(tmp_path / "config.yaml"))
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    *path, name = missing.split(".")
    node = saved
    for part in path:
        node = node[part]
    del node[name]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert check_run_dir(str(tmp_path), cfg) is False
    with pytest.raises(RunDirError, match=re.escape(next(iter(other)))):
        check_run_dir(str(tmp_path), _small_cfg(**other))


def test_string_overrides_keep_their_text():
    from crnn.config import parse_overrides

    got = parse_overrides(["train.init_from=", "data.path=2026-11-30", "train.lr=3e-4", "model.simvp.hid_t=3"])
    assert got == {"train.init_from": "", "data.path": "2026-11-30", "train.lr": "3e-4", "model.simvp.hid_t": 3}
    assert parse_overrides(["train.init_from=20261130"]) == {"train.init_from": "20261130"}
    assert parse_overrides(["train.init_from=\"\""]) == {"train.init_from": ""}


def test_ray_train_init_from_and_rerun_from_another_directory(ray_local, tiny_dataset, tmp_path, monkeypatch):
    """Ray Train loads train.init_from in every worker before DDP; the run stores the absolute path,
    so a rerun of the same command from another working directory resumes instead of refusing."""
    src = str(tmp_path / "src")
    fit(tiny_config(tiny_dataset, **{"train.epochs": 2}), src)
    src_val = min(float(r["val_loss"]) for r in read_metrics_csv(os.path.join(src, "metrics.csv")))
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tiny_dataset, **{"train.epochs": 1, "train.lr": 1e-12, "train.init_from": "src/model",
                                       "train.num_workers": 2, "train.cache": "never"})
    fit(cfg, str(tmp_path / "ft"))
    rows = read_metrics_csv(os.path.join(tmp_path, "ft", "metrics.csv"))
    assert float(rows[0]["val_loss"]) == pytest.approx(src_val, rel=1e-3)
    _, saved, _ = load_model(str(tmp_path / "ft" / "model"))
    assert saved.train.init_from == os.path.join(src, "model")
    os.mkdir(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path / "elsewhere")
    from crnn.rundir import check_run_dir
    from crnn.train import with_absolute_paths

    again = with_absolute_paths(tiny_config(tiny_dataset, **{"train.epochs": 1, "train.lr": 1e-12,
                                                            "train.init_from": "../src/model",
                                                            "train.num_workers": 2, "train.cache": "never"}))
    check_run_dir(str(tmp_path / "ft"), again, False)  # the same run: no "another config" refusal


def test_overwrite_clears_a_run_directory_reached_through_a_symbolic_link(tmp_path):
    """--out may be a symbolic link to the run directory: --overwrite empties the directory it points
    to and keeps the link (shutil.rmtree refused the link with a traceback)."""
    from crnn.rundir import clear_run_dir

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "model.pt").write_bytes(b"x")
    (run / "config.yaml").write_text("{}")
    (tmp_path / "keep").mkdir()
    (run / "to-keep").symlink_to(tmp_path / "keep")         # a link inside: removed, its target kept
    (tmp_path / "link-run").symlink_to(run)
    clear_run_dir(str(tmp_path / "link-run"))
    assert (tmp_path / "link-run").is_symlink() and run.is_dir() and not any(run.iterdir())
    assert (tmp_path / "keep").is_dir()
    (run / "metrics.csv").write_text("epoch\n")
    clear_run_dir(f"file://{run}")
    assert run.is_dir() and not any(run.iterdir())


# ----------------------------------------------------------------------------- train.step_weights
def test_step_weights_weigh_each_forecast_steps_mean_error():
    from crnn.loop import loss_fn

    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(3, 4, 3, 8, 4, generator=g), torch.rand(3, 4, 3, 8, 4, generator=g)
    per_step = ((pred - target) ** 2).mean((0, 2, 3, 4))                     # (4,)
    assert torch.allclose(loss_fn(pred, target, "mse", None, (1, 1, 1, 1)), loss_fn(pred, target))
    assert torch.allclose(loss_fn(pred, target, "mse", None, (0, 0, 0, 1)), per_step[3])
    want = (per_step * torch.tensor([1, 1, 1, 2.0])).sum() / 5                # weights / their mean 5/4
    assert torch.allclose(loss_fn(pred, target, "mse", None, (1, 1, 1, 2)), want)
    assert torch.allclose(loss_fn(pred, target, "mse", None, (2, 2, 2, 4)), want)   # scale-free
    l1 = (pred - target).abs().mean((0, 2, 3, 4))
    assert torch.allclose(loss_fn(pred, target, "l1", None, (0, 1, 0, 0)), l1[1])
    with pytest.raises(ValueError, match=r"train.step_weights=\[1, 2\]: a regular batch with 2 forecast steps"):
        loss_fn(pred, target, "mse", None, (1, 2))
    with pytest.raises(ValueError, match="got an irregular batch"):
        loss_fn(pred, target, "mse", torch.ones(3, 4, dtype=torch.bool), (1, 1, 1, 1))


def test_train_step_trains_on_the_weighted_loss():
    """train.step_weights=0,0,0,1: the step's loss is the last forecast step's MSE only."""
    cfg = _small_cfg(**{"train.step_weights": [0, 0, 0, 1]})
    assert cfg.train.step_weights == (0.0, 0.0, 0.0, 1.0)
    from crnn.model import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model).eval()          # no dropout: the forward pass below is the step's
    x = torch_frames(_frames(8))
    with torch.no_grad():
        last = ((model(x[:, :4]) - x[:, 1:5]) ** 2)[:, 3].mean()
    loss = train_step(model, make_optimizer(model, cfg), None, x, cfg)
    assert float(loss) == pytest.approx(float(last), rel=1e-5)


@pytest.mark.parametrize("weights, needle", [
    ([1, -1, 1, 1], "expected finite numbers >= 0"), ([0, 0, 0, 0], "not all 0"),
    ([1, float("nan"), 1, 1], "expected finite numbers"), ([1, float("inf"), 1, 1], "expected finite numbers"),
])
def test_bad_step_weights_are_refused_by_name(weights, needle):
    with pytest.raises(ValueError, match=f"train.step_weights=.*{needle}"):
        _small_cfg(**{"train.step_weights": weights}).train.validate()


def test_step_weights_must_match_the_forecast_steps_and_a_regular_dataset():
    from crnn.train import check_config, check_data

    with pytest.raises(ValueError, match=r"train.step_weights=\[1.0, 2.0\]: expected one weight per forecast step, "
                                         r"data.in_frames=4"):
        check_config(_small_cfg(**{"train.step_weights": [1, 2]}))
    check_config(_small_cfg(**{"train.step_weights": [1, 1, 1, 2]}))
    cfg = load_config("timevp-fast", overrides={"data.path": "/d/irr", "model.height": 16, "model.width": 8,
                                                "train.step_weights": [1, 1, 1, 2]})
    card = {"layout": "irregular", "max_frames": 6, "height": 16, "width": 8, "channels": 3,
            "splits": {"train": 4}, "scene": "pines"}
    with pytest.raises(ValueError, match=r"/d/irr: an irregular dataset has no fixed forecast steps to weigh"):
        check_data(cfg, card)


@pytest.mark.parametrize("ages, in_frames, ok", [
    ([1, 2, 4, 8, 16], 4, False),               # photos at months 1, 2, 4, 8, 16
    ([10, 15, 20, 25, 40], 4, False),           # only the last step differs
    ([10, 15, 20, 25, 30, 40], 4, True),        # the frame after the ones trained on may be anywhere
    ([1, 2, 4, 8, 16], 1, True),                # two frames: one spacing
    ([10, 15, 20, 25, 30], 4, True),
    ([0.5, 1.0, 1.5, 2.0, 2.5], 4, True),       # real-valued ages, evenly spaced
])
def test_a_grid_model_is_not_trained_on_unevenly_spaced_ages(ages, in_frames, ok):
    """Photos ingested at months 1, 2, 4, 8, 16 trained a grid model (ConvLSTM, the demo preset)
    without a word; the model then labelled its window's last forecast 12 (the dataset's frame and
    training target is 16), refused --target-ages 16, and Serve refused its own default ages [1, 2,
    4, 8] -> [9] as off its grid (every request without ages: 422). Refused now before Ray starts,
    pointing to the time-aware model, which trains at these ages; a time-aware model takes them."""
    from crnn.train import check_data

    card = {"ages": ages, "height": 32, "width": 16, "channels": 3, "splits": {"train": 4}, "scene": "pines"}
    grid = load_config("demo", overrides={"data.path": "/d/photos", "data.in_frames": in_frames})
    if ok:
        check_data(grid, card)
    else:
        with pytest.raises(ValueError, match=rf"/d/photos: the {in_frames + 1} ages trained on, "
                                             rf"\[{', '.join(map(str, ages[:in_frames + 1]))}\], are not evenly spaced: "
                                             r"model.kind='convlstm' is a grid model .*model.kind=timevp"):
            check_data(grid, card)
    check_data(load_config("timevp-fast", overrides={"data.path": "/d/photos", "data.in_frames": in_frames}), card)


def test_step_weights_far_from_one_give_the_factors_of_their_ratios():
    """The review's inputs: float32 normalisation overflowed (1e39, 1e38 x 4) or underflowed (1e-320)
    to a NaN or zero loss; factors are now taken in float64 after scaling by the largest."""
    from crnn.config import step_weights_factors
    from crnn.loop import loss_fn

    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(2, 4, 3, 8, 4, generator=g), torch.rand(2, 4, 3, 8, 4, generator=g)
    plain, first = loss_fn(pred, target), loss_fn(pred, target, "mse", None, (1, 0, 0, 0))
    for weights, want in (((1e38,) * 4, plain), ((3e38,) * 4, plain), ((1e308,) * 4, plain), ((1e-46,) * 4, plain),
                          ((1e39, 1, 1, 1), first), ((1e308, 1, 1, 1), first), ((1e-320, 0, 0, 0), first),
                          ((1e-50, 0, 0, 0), first)):
        got = loss_fn(pred, target, "mse", None, weights)
        assert torch.isfinite(got) and torch.allclose(got, want), weights
    assert step_weights_factors([1, 1, 1, 2]) == [0.8, 0.8, 0.8, 1.6] and step_weights_factors([]) == []


@pytest.mark.parametrize("text, want", [("[1,1,1,2]", (1.0, 1.0, 1.0, 2.0)), ("1,1,1,2", (1.0, 1.0, 1.0, 2.0)),
                                        ("1, 1, 1, 2", (1.0, 1.0, 1.0, 2.0)), ("", ()), ("[]", ()), ("null", ())])
def test_step_weights_override_spellings(text, want):
    assert load_config("quick", overrides=[f"train.step_weights={text}"]).train.step_weights == want


def test_any_list_field_takes_commas_without_brackets():
    cfg = load_config("quick", overrides=["model.conv_filters=4,8", "data.train_splits=train,val"])
    assert cfg.model.conv_filters == (4, 8) and cfg.data.train_splits == ("train", "val")
    # names stay as typed (the second review's inputs: YAML read them as True, None, 1, a date)
    for text in ("yes,no", "train,null", "train,~", "1,2", "2026-01-01,val"):
        assert load_config("quick", overrides=[f"data.train_splits={text}"]).data.train_splits == \
            tuple(text.split(","))
    for bad, needle in (("model.conv_filters=4,x", "model.conv_filters: expected an integer, got 'x'"),
                        ("model.conv_filters=4,", "model.conv_filters: an empty item in '4,'"),
                        ("train.step_weights=1,,2", "train.step_weights: an empty item"),
                        ("model.conv_filters=,4", "model.conv_filters=,4.: the value is not valid YAML"),
                        ("model.conv_filters=4,[8", "model.conv_filters: cannot read '\\[8'"),
                        ("train.lr=[1", "override 'train.lr=\\[1': the value is not valid YAML"),
                        ("train.lr=" + "9" * 400, "beyond a float's range")):
        with pytest.raises((TypeError, ValueError), match=needle):
            load_config("quick", overrides=[bad])


def test_a_quoted_list_override_is_one_item():
    """A leftover of the ninth session's review: ``data.train_splits='a,b'`` was split at its comma
    like the unquoted ``a,b``; quoted (either quote), it is the one item as written. Neighbours: the
    unquoted text still splits, brackets still read YAML, quoted text in a list of numbers is
    refused as text (as YAML reads it), and a quoted string field is unchanged."""
    def splits(text):
        return load_config("quick", overrides=[f"data.train_splits={text}"]).data.train_splits

    assert splits("'train,extra'") == ("train,extra",) and splits('"train,extra"') == ("train,extra",)
    assert splits(" 'train,extra' ") == ("train,extra",) and splits("'train'") == ("train",)
    assert splits("train,extra") == ("train", "extra") and splits("['a,b', c]") == ("a,b", "c")
    for quoted in ("'4,8'", "'8'"):   # quoted is text, as in YAML: refused in a list of integers
        with pytest.raises(TypeError, match=f"model.conv_filters: expected an integer, got {quoted}"):
            load_config("quick", overrides=[f"model.conv_filters={quoted}"])
    assert load_config("quick", overrides=["data.path='a,b'"]).data.path == "a,b"


def test_in_frames_below_one_is_refused():
    from crnn.train import check_config

    for n in (0, -1):
        with pytest.raises(ValueError, match=f"data.in_frames={n}: expected >= 1"):
            check_config(_small_cfg(**{"data.in_frames": n}))


def test_an_empty_validation_split_publishes_the_last_epochs_model(tmp_path):
    """An empty val split reports val_loss NaN every epoch, and check_data warns that the model kept
    is the last epoch's. Ray Train keeps 2 checkpoints (a periodic one, epoch 4 with
    checkpoint_every=5, and the last); ``Result.get_best_checkpoint("val_loss", "min")``'s ``min``
    over NaN keys returned the first, so ``model/`` was epoch 4's of 6."""
    from ray.train import Checkpoint, Result

    from crnn.checkpoint import MODEL_FILE
    from crnn.rundir import best_checkpoint, finish_run, write_metrics_csv

    ckpts = {}
    for epoch in (4, 5):
        d = tmp_path / f"ckpt{epoch}"
        d.mkdir()
        (d / MODEL_FILE).write_text(f"epoch {epoch}")
        ckpts[epoch] = Checkpoint.from_directory(str(d))
    nan = float("nan")
    result = Result(metrics={"epoch": 5, "val_loss": nan}, checkpoint=ckpts[5], error=None, path=str(tmp_path),
                    best_checkpoints=[(ckpts[e], {"epoch": e, "val_loss": nan}) for e in (4, 5)])
    out = tmp_path / "run"
    out.mkdir()
    write_metrics_csv(str(out), [{"epoch": e, "train_loss": 0.1, "val_loss": nan} for e in range(6)])
    finish_run(str(out), tiny_config("data/x"), result)
    assert (out / "model" / MODEL_FILE).read_text() == "epoch 5"
    # with a val_loss that is a number, the lowest still wins (NaN ones aside)
    scored = Result(metrics={}, checkpoint=ckpts[5], error=None, path=str(tmp_path),
                    best_checkpoints=[(ckpts[4], {"val_loss": 0.2}), (ckpts[5], {"val_loss": nan})])
    assert best_checkpoint(scored) is ckpts[4]


def test_an_irregular_dataset_without_validation_series_is_refused_saying_so(monkeypatch):
    """The review's input: an irregular dataset whose val split is empty was refused as "have 0 series
    but none a time-aware model can learn from"; it says the split has no series now. A val split
    whose series are all unusable keeps the old, precise message."""
    import numpy as np

    import crnn.shards
    from crnn.train import _check_lessons

    cfg = tiny_config("data/irr")
    usable = {"num_frames": np.array([5, 4]), "num_inputs": np.array([3, 2])}
    for val, message in (({"num_frames": np.zeros(0, int), "num_inputs": np.zeros(0, int)},
                          r"data/irr: the validation split\(s\) \['val'\] have no series: a time-aware model's "
                          r"validation needs some"),
                         ({"num_frames": np.array([2]), "num_inputs": np.array([2])},
                          r"have 1 series but none a time-aware model can learn from")):
        monkeypatch.setattr(crnn.shards, "read_numpy", lambda path, split, columns, _v=val: _v if split == ["val"] else usable)
        with pytest.raises(ValueError, match=message):
            _check_lessons(cfg, {})
    monkeypatch.setattr(crnn.shards, "read_numpy", lambda path, split, columns: usable)
    assert _check_lessons(cfg, {}) == 2

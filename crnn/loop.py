"""Training in plain PyTorch: the step functions, optimizer and LR schedule, epoch loops, and a plain loop.

    history = fit_plain(cfg, train_frames, val_frames)   # no Ray: tests and benchmarks

The Ray Train worker loop (:func:`crnn.train.train_loop_per_worker`) runs the same ``train_step``/
``eval_step``, epochs and optimizer as :func:`fit_plain`. Two kinds of batch:

* the regular grid, a float tensor (B, T, C, H, W): the model sees frames 0..T-2 (ages 10..25) and is
  scored on frames 1..T-1 (ages 15..30), as in the paper;
* an irregular batch (issue #14), a dict of :func:`crnn.irregular.torch_series` tensors (``frames``
  (B, T_max, C, H, W), ``ages`` (B, T_max), ``num_frames``, ``num_inputs`` (B,)), for time-aware
  models: the first ``num_inputs`` frames are the inputs, the following valid frames the targets at
  their own ages (:func:`irregular_io`); the loss is the mean over the valid target frames only.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from crnn.checkpoint import read_checked_init, save_model_dir
from crnn.config import Config, step_weights_factors
from crnn.mirror import mirror
from crnn.model import build_model
from crnn.optim import MuonAdamW
from crnn.shards import torch_frames


# ----------------------------------------------------------------------------- step functions
def split_io(x: torch.Tensor, in_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, C, H, W) -> inputs (B, in, C, H, W) frames 0..in-1, targets frames 1..in."""
    if x.shape[1] < in_frames + 1:
        raise ValueError(f"series have {x.shape[1]} frames; need in_frames+1 = {in_frames + 1}")
    return x[:, :in_frames], x[:, 1:in_frames + 1]


def irregular_io(batch: dict[str, torch.Tensor], training: bool) -> tuple[tuple, torch.Tensor, torch.Tensor]:
    """An irregular batch -> (model args (frames, ages, input mask, target_ages), targets (B, M, C, H,
    W), valid bool (B, M)): series i's inputs are its first k_i = ``num_inputs[i]`` frames and its
    targets the next ``num_frames[i] - k_i`` (M = the batch's most); the padding targets repeat the
    series' last frame and age and are not valid.

    ``num_inputs == 0`` (the dataset does not mark inputs, e.g. ingested photos): k_i is drawn
    uniformly from 2..num_frames-1 when ``training`` (every split of a history is a lesson), else
    ceil(num_frames / 2) (deterministic validation). A series that cannot be a lesson (fewer than 2
    inputs, or no frame after them) keeps its shape -- its first max(2, k_i) frames as inputs and a
    target one age unit after them -- but no valid target, so batches and DDP steps stay aligned."""
    frames, ages = batch["frames"], batch["ages"]
    n, k = batch["num_frames"].to(ages.device), batch["num_inputs"].to(ages.device)
    b, t = ages.shape
    if training:
        drawn = 2 + (torch.rand(b, device=ages.device) * (n - 2).clamp(min=0)).long()
    else:
        drawn = (n + 1) // 2
    k = torch.where(k == 0, drawn.clamp(max=n - 1), k)
    usable = (k >= 2) & (n > k)
    k = torch.where(usable, k, torch.clamp(k, 2, t).minimum(n))
    slots = torch.arange(t, device=ages.device)
    in_mask = slots[None, :] < k[:, None]                                     # (B, T_max)
    m = max(1, int((n - k).clamp(min=1).max()))
    j = k[:, None] + torch.arange(m, device=ages.device)[None, :]            # (B, M) target slots
    valid = (j < n[:, None]) & usable[:, None]
    j = torch.minimum(j, n[:, None] - 1)
    rows = torch.arange(b, device=ages.device)[:, None]
    targets = frames[rows, j]                                                 # (B, M, C, H, W)
    last_in = ages[rows[:, 0], k - 1]                                         # (B,)
    target_ages = torch.where(valid, ages[rows, j], last_in[:, None] + 1.0)  # padding: after the inputs
    return (frames, ages, in_mask, target_ages), targets, valid


def batch_size_of(x) -> int:
    """Series in a batch (a tensor or an irregular batch dict)."""
    return (x["ages"] if isinstance(x, dict) else x).shape[0]


def _model_io(x, in_frames: int, training: bool, ages: torch.Tensor | None = None):
    """(model args, targets, valid or None) of a regular tensor or an irregular dict batch; ``ages``
    (regular batches of a time-aware model off its grid: :func:`crnn.timeaware.training_window_ages`)
    is passed on as ``model(inputs, ages)``."""
    if isinstance(x, dict):
        return irregular_io(x, training)
    inputs, targets = split_io(x, in_frames)
    return ((inputs,) if ages is None else (inputs, ages)), targets, None


def _device_of(x) -> torch.device:
    return (x["frames"] if isinstance(x, dict) else x).device


def loss_fn(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse",
            valid: torch.Tensor | None = None, step_weights=()) -> torch.Tensor:
    """Mean squared (``mse``) or absolute (``l1``) error; with ``valid`` (bool, the leading dims of
    ``pred``) the mean over the valid frames only (0 when none is). ``step_weights`` (regular
    batches, (B, T, C, H, W): T numbers, ``train.step_weights``): each forecast step's mean error
    weighted, the weights normalised to mean 1 (equal weights give the plain mean)."""
    if kind not in ("mse", "l1"):
        raise ValueError(f"train.loss={kind!r}: expected mse or l1")
    diff = pred.float() - target.float()
    err = diff.pow(2) if kind == "mse" else diff.abs()
    if step_weights:
        if valid is not None or len(step_weights) != err.shape[1]:
            raise ValueError(f"train.step_weights={list(step_weights)!r}: a regular batch with {len(step_weights)} "
                             f"forecast steps expected, got {'an irregular batch' if valid is not None else tuple(err.shape)}")
        w = torch.as_tensor(step_weights_factors(step_weights), dtype=err.dtype, device=err.device)
        return (err.flatten(2).mean(2) * w).mean()
    if valid is None:
        return err.mean()
    w = valid.to(err.dtype).reshape(*valid.shape, *([1] * (err.dim() - valid.dim())))
    per_frame = err.numel() // max(1, valid.numel())  # values per frame (C*H*W)
    return (err * w).sum() / (w.sum() * per_frame).clamp(min=1)


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"train.precision={precision!r}: expected fp32 or bf16")


def augment(x, kind: str, mirror_axis: float | None = None):
    """A training batch (float (B, T, C, H, W), or an irregular dict with ``frames``) with data
    augmentation ``kind`` (``train.augment``): ``none`` returns it as it is; ``hflip`` mirrors each
    series left-right (every frame of it: the series stays a series) with probability 1/2, drawn from
    torch's generator on the batch's device, about ``mirror_axis`` (pixel-column coordinates, the
    dataset's axis of symmetry: :func:`crnn.mirror.mirror_axis`; None: the image centre). Raises
    ValueError for another kind or an axis that is not a multiple of 0.5 inside the image."""
    if kind == "none":
        return x
    if kind != "hflip":
        raise ValueError(f"train.augment={kind!r}: expected none or hflip")
    frames = x["frames"] if isinstance(x, dict) else x
    width = frames.shape[-1]
    flip = torch.rand(frames.shape[0], device=frames.device) < 0.5
    mirrored = mirror(frames, (width - 1) / 2 if mirror_axis is None else mirror_axis, dim=-1)
    frames = torch.where(flip.view(-1, *[1] * (frames.dim() - 1)), mirrored, frames)
    return {**x, "frames": frames} if isinstance(x, dict) else frames


def train_step(model, optimizer, scheduler, x: torch.Tensor, cfg: Config,
               mirror_axis: float | None = None, ages: torch.Tensor | None = None) -> torch.Tensor:
    """One optimisation step on a batch (a float (B, T, C, H, W) tensor, or an irregular dict: see the
    module docstring), augmented as ``train.augment`` says (``mirror_axis``: see :func:`augment`);
    ``ages``: see :func:`_model_io`. Returns the loss (detached, no sync)."""
    x = augment(x, cfg.train.augment, mirror_axis)
    args, targets, valid = _model_io(x, cfg.data.in_frames, training=True, ages=ages)
    if _cudagraphs(cfg):  # a new iteration: the graphs may reuse the previous step's output memory
        torch.compiler.cudagraph_mark_step_begin()
    with autocast(_device_of(x), cfg.train.precision):
        pred = model(*args)
    loss = loss_fn(pred, targets, cfg.train.loss, valid, cfg.train.step_weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


@torch.no_grad()
def eval_step(model, x: torch.Tensor, cfg: Config, ages: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Sum of squared errors over a batch (pixels in [0,1], predictions clamped) and its element count
    (irregular batches: over the valid target frames). ``ages``: see :func:`_model_io`."""
    args, targets, valid = _model_io(x, cfg.data.in_frames, training=False, ages=ages)
    with autocast(_device_of(x), cfg.train.precision):
        pred = model(*args)
    err = (pred.float().clamp(0, 1) - targets.float()).pow(2)
    if valid is None:
        return err.sum(), targets.numel()
    per_frame = targets[0, 0].numel()
    return (err.flatten(2).sum(2) * valid).sum(), int(valid.sum()) * per_frame


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """The configured optimizer; Adam/AdamW use torch's fused kernels (same update rule, one
    kernel for all parameters: 1.38x the paper recipe's steps/s on a 2-core CPU, see BENCHMARKS.md);
    ``muon`` is :class:`crnn.optim.MuonAdamW` (Muon on kernels and weight matrices, AdamW on the rest).
    None when the model has nothing to train."""
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return None  # baselines have nothing to train
    fused = {"fused": True} if _fused_ok(params) else {}
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay, **fused)
    if t.optimizer == "nadam":  # no fused NAdam in torch: the multi-tensor (foreach) path
        return torch.optim.NAdam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, **fused)
    if t.optimizer == "muon":  # Muon on the kernels and matrices, AdamW on the rest (crnn.optim)
        return MuonAdamW(params, lr=t.lr, weight_decay=t.weight_decay, fused=fused.get("fused"))
    raise ValueError(f"train.optimizer={t.optimizer!r}: expected adam, nadam, adamw or muon")


def _fused_ok(params: list[torch.Tensor]) -> bool:
    """Fused Adam wants floating-point parameters on one CPU or CUDA device."""
    devices = {p.device for p in params}
    return (len(devices) == 1 and next(iter(devices)).type in ("cpu", "cuda")
            and all(p.is_floating_point() for p in params))


def make_scheduler(optimizer, cfg: Config, steps_per_epoch: int):
    """Per-step LR factor: linear warm-up over ``warmup_epochs``, then constant or cosine to 0."""
    t = cfg.train
    if t.schedule not in ("constant", "cosine"):
        raise ValueError(f"train.schedule={t.schedule!r}: expected constant or cosine")
    warm = max(0, int(round(t.warmup_epochs * steps_per_epoch)))
    total = max(1, t.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if t.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _cudagraphs(cfg: Config) -> bool:
    return cfg.train.compile and cfg.train.compile_mode in ("reduce-overhead", "max-autotune")


def maybe_compile(model, cfg: Config):
    """``torch.compile(model, mode=train.compile_mode)`` when ``train.compile``. The CUDA-graph modes
    replay each step's kernels in one launch: for a GPU step of a few milliseconds the Python launch
    overhead otherwise bounds the rate (on CPU, torch skips the graphs)."""
    if not cfg.train.compile:
        return model
    mode = cfg.train.compile_mode
    return torch.compile(model, mode=None if mode == "default" else mode)


def _all_reduce(*values: float | torch.Tensor, device) -> list[float]:
    """Sum scalars over workers (identity without torch.distributed)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------- epoch loops
def run_epoch(model, optimizer, scheduler, batches: Iterable[torch.Tensor], cfg: Config,
              log: Callable[[str], None] | None = None, mirror_axis: float | None = None,
              ages: torch.Tensor | None = None) -> dict[str, float]:
    """Train over ``batches`` (float (B, T, C, H, W), or irregular dicts) on the model's device;
    returns sums. ``mirror_axis``: the training data's axis of symmetry (``train.augment=hflip``);
    ``ages``: the window ages of a time-aware model off its grid (:func:`_model_io`)."""
    model.train()
    loss_sum, n_series, n_steps = None, 0, 0
    t0 = time.perf_counter()
    for x in batches:
        loss = train_step(model, optimizer, scheduler, x, cfg, mirror_axis, ages)
        b = batch_size_of(x)
        loss_sum = loss * b if loss_sum is None else loss_sum + loss * b
        n_series += b
        n_steps += 1
        if log and cfg.train.log_every and n_steps % cfg.train.log_every == 0:
            log(f"step {n_steps} loss {loss.item():.5f}")
    loss_total = float(loss_sum) if loss_sum is not None else 0.0  # one device sync per epoch
    return {"loss_sum": loss_total, "series": n_series, "seconds": time.perf_counter() - t0}


def run_eval(model, batches: Iterable[torch.Tensor], cfg: Config,
             ages: torch.Tensor | None = None) -> tuple[float, int]:
    model.eval()
    err, count = 0.0, 0
    for x in batches:
        e, n = eval_step(model, x, cfg, ages)
        err, count = err + e, count + n
    return float(err), count


def _array_batches(data: torch.Tensor | dict[str, torch.Tensor], batch_size: int, device, shuffle: bool,
                   generator=None, drop_last: bool = False) -> Iterator[torch.Tensor | dict[str, torch.Tensor]]:
    """Batches of float (B, T, C, H, W) from a uint8 (N, T, H, W, C) tensor (CPU or device); from an
    irregular dict of tensors (``frames`` uint8 (N, T_max, H, W, C), ``ages``, ``num_frames``,
    ``num_inputs``) batch dicts with ``frames`` float (B, T_max, C, H, W)."""
    first = data["frames"] if isinstance(data, dict) else data
    n = first.shape[0]
    order = torch.randperm(n, generator=generator, device=generator.device if generator is not None else "cpu") \
        if shuffle else torch.arange(n)
    order = order.to(first.device)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        pick = order[i:i + batch_size]
        if isinstance(data, dict):
            yield {k: (torch_frames(v[pick], device) if k == "frames" else v[pick].to(device))
                   for k, v in data.items()}
        else:
            yield torch_frames(data[pick], device)


def series_tensors(arrays: dict[str, np.ndarray] | np.ndarray) -> torch.Tensor | dict[str, torch.Tensor]:
    """Training data in memory as torch tensors: uint8 frames (N, T, H, W, C) as they are, or an
    irregular dataset's numpy columns (:func:`crnn.shards.read_numpy`) as a dict of ``frames`` uint8,
    ``ages`` float32, ``num_frames``/``num_inputs`` int64."""
    if not isinstance(arrays, dict):
        return torch.as_tensor(arrays)
    return {"frames": torch.as_tensor(np.asarray(arrays["frames"])),
            "ages": torch.as_tensor(np.asarray(arrays["ages"], np.float32)),
            "num_frames": torch.as_tensor(np.asarray(arrays["num_frames"], np.int64)),
            "num_inputs": torch.as_tensor(np.asarray(arrays["num_inputs"], np.int64))}


def _to(data, device):
    return {k: v.to(device) for k, v in data.items()} if isinstance(data, dict) else data.to(device)


def _length(data) -> int:
    return len(data["frames"]) if isinstance(data, dict) else len(data)


def _window_ages(cfg: Config, data: dict | None, device) -> torch.Tensor | None:
    """float32 (in_frames + 1,) on ``device``: the ages a time-aware model trains at on a regular
    dataset off its grid (:func:`crnn.timeaware.training_window_ages`), else None (``model(inputs)``)."""
    from crnn.timeaware import training_window_ages

    ages = training_window_ages(cfg, data)
    return None if ages is None else torch.tensor(ages, dtype=torch.float32, device=device)


def _carried_summary(start: dict | None, in_frames: int) -> dict | None:
    """The starting model's data summary for a fine-tune given none: a regular one cut to the
    ``in_frames + 1`` ages this run trains on (its ``age_range`` with them); fewer are left as they
    are (:func:`_window_ages` refuses a time-aware run on them)."""
    if not start or start.get("layout") == "irregular" or len(start.get("ages") or ()) <= in_frames + 1:
        return start
    ages = list(start["ages"][:in_frames + 1])
    return {**start, "ages": ages, "age_range": [ages[0], ages[-1]]}


# ----------------------------------------------------------------------------- plain loop
def fit_plain(cfg: Config, train_frames: np.ndarray | dict, val_frames: np.ndarray | dict | None = None,
              device: str | torch.device = "cpu", out: str | None = None,
              epoch_callback: Callable[[dict], None] | None = None, data: dict | None = None):
    """Train without Ray on in-memory uint8 frames (N, T, H, W, C) -- or, for a time-aware model, an
    irregular dataset's numpy columns (``frames``, ``ages``, ``num_frames``, ``num_inputs``:
    :func:`crnn.shards.read_numpy`). Returns (model, history); ``out`` gets the model directory
    (with ``data``, :func:`crnn.timeaware.data_summary` of the training set, when given; its
    ``mirror_axis`` is the axis ``train.augment=hflip`` mirrors about, else the image centre). With
    ``train.init_from`` and ``data``, a time-aware starting model must have been trained on ages in
    ``data``'s ``age_unit`` (ValueError otherwise: :func:`crnn.timeaware.check_start_ages`); with
    ``train.init_from`` and no ``data``, the frames' ages are not known and the starting model's data
    summary is kept (its age unit, ages and mirror axis; cut to the ``in_frames + 1`` ages trained on),
    as fine-tuning needs the same units anyway; a time-aware model needing more ages than it records
    is refused (ValueError, before training)."""
    device = torch.device(device)
    cfg.train.validate()
    torch.manual_seed(cfg.train.seed)
    if cfg.train.torch_threads:
        torch.set_num_threads(cfg.train.torch_threads)
    model = build_model(cfg.model)
    if cfg.train.init_from:  # fine-tuning / a warm restart: the same network, its trained weights
        state, start_data = read_checked_init(cfg, data)  # checked, then loaded from one read
        model.load_state_dict(state)
        if data is None:  # frames of unrecorded ages: the start's unit, ages and mirror axis carry over
            data = _carried_summary(start_data, cfg.data.in_frames)
    ages = _window_ages(cfg, data, device)  # before any work: ValueError when the frames' ages are not known
    model = model.to(device)
    opt = make_optimizer(model, cfg)
    if opt is None:
        raise ValueError(f"model.kind={cfg.model.kind!r} has no trainable parameters; evaluate it instead")
    train = _to(series_tensors(train_frames), device)  # uint8 on the device: batches never cross PCIe
    steps = max(1, _length(train) // cfg.train.batch_size)
    sched = make_scheduler(opt, cfg, steps)
    cmodel = maybe_compile(model, cfg)
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed)
    history = []
    for epoch in range(cfg.train.epochs):
        batches = _array_batches(train, cfg.train.batch_size, device, True, gen, drop_last=True)
        stats = run_epoch(cmodel, opt, sched, batches, cfg, mirror_axis=(data or {}).get("mirror_axis"), ages=ages)
        row = _epoch_row(epoch, stats, opt)
        if val_frames is not None and _length(val_frames):
            # validation runs eager: compiled, its other batch shapes would each cost a recompile
            err, count = run_eval(model, _array_batches(_to(series_tensors(val_frames), device), 512, device,
                                                        False), cfg, ages)
            row.update(val_loss=err / count, val_mse_255=err / count * 255**2)
        history.append(row)
        if epoch_callback:
            epoch_callback(row)
    if out:
        save_model_dir(out, model, cfg, epoch=cfg.train.epochs - 1, metrics=history[-1] if history else {},
                       data=data)
    return model, history


def _epoch_row(epoch: int, stats: dict, opt, world_loss_sum=None, world_series=None) -> dict:
    loss_sum = stats["loss_sum"] if world_loss_sum is None else world_loss_sum
    series = stats["series"] if world_series is None else world_series
    return {
        "epoch": epoch,
        "train_loss": loss_sum / max(1, series),
        "lr": opt.param_groups[0]["lr"] if opt is not None else 0.0,
        "epoch_s": stats["seconds"],
        "train_series_per_s": series / max(1e-9, stats["seconds"]),
        "series_seen": series,
    }

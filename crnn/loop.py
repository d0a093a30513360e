"""Training in plain PyTorch: the step functions, optimizer and LR schedule, epoch loops, and a plain loop.

    history = fit_plain(cfg, train_frames, val_frames)   # no Ray: tests and benchmarks

The Ray Train worker loop (:func:`crnn.train.train_loop_per_worker`) runs the same ``train_step``/
``eval_step``, epochs and optimizer as :func:`fit_plain`; the model sees frames 0..T-2 (ages 10..25)
and is scored on frames 1..T-1 (ages 15..30), as in the paper.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from crnn.checkpoint import save_model_dir
from crnn.config import Config
from crnn.model import build_model
from crnn.shards import torch_frames


# ----------------------------------------------------------------------------- step functions
def split_io(x: torch.Tensor, in_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, C, H, W) -> inputs (B, in, C, H, W) frames 0..in-1, targets frames 1..in."""
    if x.shape[1] < in_frames + 1:
        raise ValueError(f"series have {x.shape[1]} frames; need in_frames+1 = {in_frames + 1}")
    return x[:, :in_frames], x[:, 1:in_frames + 1]


def loss_fn(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(pred.float(), target.float())
    if kind == "l1":
        return F.l1_loss(pred.float(), target.float())
    raise ValueError(f"train.loss={kind!r}: expected mse or l1")


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"train.precision={precision!r}: expected fp32 or bf16")


def train_step(model, optimizer, scheduler, x: torch.Tensor, cfg: Config) -> torch.Tensor:
    """One optimisation step on a float batch (B, T, C, H, W); returns the loss (detached, no sync)."""
    inputs, targets = split_io(x, cfg.data.in_frames)
    if _cudagraphs(cfg):  # a new iteration: the graphs may reuse the previous step's output memory
        torch.compiler.cudagraph_mark_step_begin()
    with autocast(x.device, cfg.train.precision):
        pred = model(inputs)
    loss = loss_fn(pred, targets, cfg.train.loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


@torch.no_grad()
def eval_step(model, x: torch.Tensor, cfg: Config) -> tuple[torch.Tensor, int]:
    """Sum of squared errors over a batch (pixels in [0,1], predictions clamped) and its element count."""
    inputs, targets = split_io(x, cfg.data.in_frames)
    with autocast(x.device, cfg.train.precision):
        pred = model(inputs)
    err = (pred.float().clamp(0, 1) - targets.float()).pow(2).sum()
    return err, targets.numel()


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """The configured optimizer; Adam/AdamW use torch's fused kernels (same update rule, one
    kernel for all parameters: 1.38x the paper recipe's steps/s on a 2-core CPU, see BENCHMARKS.md)."""
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
    raise ValueError(f"train.optimizer={t.optimizer!r}: expected adam, nadam or adamw")


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
              log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Train over ``batches`` of float (B, T, C, H, W) on the model's device; returns sums."""
    model.train()
    loss_sum, n_series, n_steps = None, 0, 0
    t0 = time.perf_counter()
    for x in batches:
        loss = train_step(model, optimizer, scheduler, x, cfg)
        loss_sum = loss * x.shape[0] if loss_sum is None else loss_sum + loss * x.shape[0]
        n_series += x.shape[0]
        n_steps += 1
        if log and cfg.train.log_every and n_steps % cfg.train.log_every == 0:
            log(f"step {n_steps} loss {loss.item():.5f}")
    loss_total = float(loss_sum) if loss_sum is not None else 0.0  # one device sync per epoch
    return {"loss_sum": loss_total, "series": n_series, "seconds": time.perf_counter() - t0}


def run_eval(model, batches: Iterable[torch.Tensor], cfg: Config) -> tuple[float, int]:
    model.eval()
    err, count = 0.0, 0
    for x in batches:
        e, n = eval_step(model, x, cfg)
        err, count = err + e, count + n
    return float(err), count


def _array_batches(data: torch.Tensor, batch_size: int, device, shuffle: bool, generator=None,
                   drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Batches of float (B, T, C, H, W) from a uint8 (N, T, H, W, C) tensor (CPU or device)."""
    n = data.shape[0]
    order = torch.randperm(n, generator=generator, device=generator.device if generator is not None else "cpu") \
        if shuffle else torch.arange(n)
    order = order.to(data.device)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        yield torch_frames(data[order[i:i + batch_size]], device)


# ----------------------------------------------------------------------------- plain loop
def fit_plain(cfg: Config, train_frames: np.ndarray, val_frames: np.ndarray | None = None,
              device: str | torch.device = "cpu", out: str | None = None,
              epoch_callback: Callable[[dict], None] | None = None):
    """Train without Ray on in-memory uint8 frames (N, T, H, W, C). Returns (model, history)."""
    device = torch.device(device)
    cfg.train.validate()
    torch.manual_seed(cfg.train.seed)
    if cfg.train.torch_threads:
        torch.set_num_threads(cfg.train.torch_threads)
    model = build_model(cfg.model).to(device)
    opt = make_optimizer(model, cfg)
    if opt is None:
        raise ValueError(f"model.kind={cfg.model.kind!r} has no trainable parameters; evaluate it instead")
    train = torch.as_tensor(train_frames).to(device)  # uint8 on the device: batches never cross PCIe
    steps = max(1, len(train) // cfg.train.batch_size)
    sched = make_scheduler(opt, cfg, steps)
    cmodel = maybe_compile(model, cfg)
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed)
    history = []
    for epoch in range(cfg.train.epochs):
        batches = _array_batches(train, cfg.train.batch_size, device, True, gen, drop_last=True)
        stats = run_epoch(cmodel, opt, sched, batches, cfg)
        row = _epoch_row(epoch, stats, opt)
        if val_frames is not None and len(val_frames):
            # validation runs eager: compiled, its other batch shapes would each cost a recompile
            err, count = run_eval(model, _array_batches(torch.as_tensor(val_frames).to(device), 512, device,
                                                        False), cfg)
            row.update(val_loss=err / count, val_mse_255=err / count * 255**2)
        history.append(row)
        if epoch_callback:
            epoch_callback(row)
    if out:
        save_model_dir(out, model, cfg, epoch=cfg.train.epochs - 1, metrics=history[-1] if history else {})
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

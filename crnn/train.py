"""Training: shared step functions, the Ray Train worker loop, its driver, and a plain loop.

    cfg = load_config("quick", overrides=["data.path=data/pines"])
    result = fit(cfg, out="runs/quick")            # Ray Train (TorchTrainer, DDP), needs Ray
    history = fit_plain(cfg, train_frames, val_frames)   # no Ray: tests and benchmarks

Both loops run the same ``train_step``/``eval_step``; the model sees frames 0..T-2 (ages 10..25)
and is scored on frames 1..T-1 (ages 15..30), as in the paper.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import posixpath
import shutil
import tempfile
import time
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from crnn.checkpoint import load_training_state, read_model_file, save_model_dir, unwrap
from crnn.config import Config, from_dict, save as save_config, to_dict
from crnn.model import FAMILIES, build_model
from crnn.shards import torch_frames

METRIC_FIELDS = ("epoch", "train_loss", "val_loss", "val_mse_255", "lr", "epoch_s",
                 "train_series_per_s", "series_seen")


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


# ----------------------------------------------------------------------------- Ray Train worker
def _collate(device):
    def collate(batch: dict[str, np.ndarray]) -> torch.Tensor:
        return torch_frames(batch["frames"], device)  # uint8 (B,T,H,W,C) -> float (B,T,C,H,W)
    return collate


def _materialize(shard, device) -> torch.Tensor:
    """A worker's whole dataset shard as one uint8 (N, T, H, W, C) tensor on ``device``."""
    parts = [torch.as_tensor(b["frames"]) for b in shard.iter_batches(batch_size=4096, batch_format="numpy")]
    if not parts:
        return torch.zeros((0,), dtype=torch.uint8, device=device)
    return torch.cat(parts).to(device)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs on each Ray Train worker: DDP model, streamed shards, per-epoch validation, checkpoints."""
    import ray.train
    import ray.train.torch

    t_start = time.perf_counter()
    cfg = from_dict(loop_config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.train.seed + rank)
    if cfg.train.torch_threads:
        torch.set_num_threads(cfg.train.torch_threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    model = build_model(cfg.model)
    model = ray.train.torch.prepare_model(model)  # to device; DDP when world > 1
    opt = make_optimizer(model, cfg)
    per_worker = max(1, cfg.train.batch_size // world)
    n_train = loop_config["num_train"]
    steps = max(1, n_train // (per_worker * world))
    sched = make_scheduler(opt, cfg, steps)
    start_epoch, best = 0, float("inf")

    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:  # resuming after a failure (or a restored run)
        with ckpt.as_directory() as d:
            payload = read_model_file(d)  # one read of the (large) model file
            unwrap(model).load_state_dict(payload["state_dict"])
            best = payload["metrics"].get("best_val_loss", best)
            state = load_training_state(d)
            if state is not None:
                if state.get("optimizer"):
                    opt.load_state_dict(state["optimizer"])
                if state.get("scheduler"):
                    sched.load_state_dict(state["scheduler"])
                start_epoch = state["epoch"] + 1
    cmodel = maybe_compile(model, cfg)

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    cache = loop_config.get("cache", False)
    if cache:  # (streaming both shards at once in threads was slower on 2 cores: BENCHMARKS.md)
        train_data, val_data = _materialize(train_shard, device), _materialize(val_shard, device)
        gen = torch.Generator(device=device).manual_seed(cfg.train.seed + rank)
    hooks = loop_config.get("hooks") or ()  # test seam (fit's ``hooks``); none in normal runs
    last_write = -math.inf  # monotonic time of rank 0's last checkpoint
    pending = None          # rank 0: (row, weights) of the best epoch while it is not checkpointed

    for epoch in range(start_epoch, cfg.train.epochs):
        for h in hooks:
            getattr(h, "on_epoch_start", _no_hook)(epoch, rank)
        if cache:
            batches = _array_batches(train_data, per_worker, device, True, gen, drop_last=True)
            val_batches = _array_batches(val_data, 512, device, False)
        else:
            batches = train_shard.iter_torch_batches(
                batch_size=per_worker, collate_fn=_collate(device), drop_last=True, prefetch_batches=2,
                local_shuffle_buffer_size=min(4 * per_worker + 256, 2048),
                local_shuffle_seed=cfg.train.seed * 1000 + epoch * 10 + rank)
            val_batches = val_shard.iter_torch_batches(batch_size=512, collate_fn=_collate(device))
        setup_s = time.perf_counter() - t_start if epoch == start_epoch else 0.0
        stats = run_epoch(cmodel, opt, sched, batches, cfg)
        loss_sum, series = _all_reduce(stats["loss_sum"], stats["series"], device=device)
        row = _epoch_row(epoch, stats, opt, loss_sum, series)
        # validation runs eager: compiled, its other batch shapes would each cost a recompile
        err, count = _all_reduce(*run_eval(model, val_batches, cfg), device=device)
        row["val_loss"] = err / count if count else float("nan")
        for h in hooks:
            getattr(h, "on_validation", _no_hook)(epoch, row)
        row["val_mse_255"] = row["val_loss"] * 255**2
        improved = row["val_loss"] < best
        best = min(best, row["val_loss"])
        row["best_val_loss"] = best
        row["start_epoch"] = start_epoch  # > 0 after resuming from a checkpoint
        row["setup_s"] = setup_s          # worker start -> first batch (model, data cache, restore)

        # Checkpoints (213 MB for the paper's model with Adam's state) cost more than a whole GPU
        # epoch: periodic ones and improvements are written at most once per checkpoint_interval_s,
        # the last epoch always; the best weights wait in memory meanwhile (_report_pending_best).
        last = epoch == cfg.train.epochs - 1
        every = cfg.train.checkpoint_every
        due = improved or (every > 0 and (epoch + 1) % every == 0)
        write = rank == 0 and (last or (due and time.monotonic() - last_write >= cfg.train.checkpoint_interval_s))
        if write:
            with tempfile.TemporaryDirectory() as d:
                save_model_dir(d, model, cfg, epoch=epoch, metrics=row, optimizer=opt, scheduler=sched)
                ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(d))
            last_write = time.monotonic()
        else:
            ray.train.report(row)
        if rank == 0 and improved:
            pending = None if write else (
                dict(row), {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()})

    _report_pending_best(pending, model, cfg, device)


def _report_pending_best(pending, model, cfg: Config, device) -> None:
    """After the last epoch: if the best epoch was never checkpointed (improvements are throttled),
    report its weights and metrics once more, flagged ``best_replay``, so Ray Train's checkpoint
    ranking and ``model/`` get the true best. All workers call it (report is collective); the
    metrics writer and Tune skip the replayed row. Its training state says "done", so a restart
    after it resumes nothing. A worker failure loses an unwritten best (at most
    checkpoint_interval_s of progress): the run resumes from the last checkpoint as usual."""
    import ray.train

    if _all_reduce(float(pending is not None), device=device)[0] == 0:
        return
    if pending is None:  # ranks > 0
        ray.train.report({"best_replay": 1.0})
        return
    row, weights = pending
    row = {**row, "best_replay": 1.0}
    with tempfile.TemporaryDirectory() as d:
        save_model_dir(d, model, cfg, epoch=int(row["epoch"]), metrics=row, state_dict=weights, done=True)
        ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(d))


# ----------------------------------------------------------------------------- driver
class _MetricsWriter:
    """Train V2 callback on the controller: keeps ``metrics.csv`` in the run directory current."""

    def __init__(self, out: str):
        self.out = out
        self.rows: dict[int, dict] = {}
        # A rerun of an interrupted run resumes from its checkpoint: the rows of the epochs before
        # it come from the metrics.csv that run wrote, so the file keeps the whole history.
        self.earlier = {int(r["epoch"]): r for r in _read_metrics_rows(out)}

    def after_report(self, run_context, metrics, checkpoint):
        row = metrics[0]
        if row.get("best_replay"):  # the best epoch's checkpoint, reported again: its row is in
            return
        self.rows[int(row["epoch"])] = row  # keyed by epoch: a resumed epoch replaces the old row
        start = int(row.get("start_epoch", 0))  # epochs >= start are (re)run by this run
        merged = {**{k: r for k, r in self.earlier.items() if k < start}, **self.rows}
        write_metrics_csv(self.out, [merged[k] for k in sorted(merged)])


def _read_metrics_rows(out: str) -> list[dict]:
    """The rows of ``out``/metrics.csv (local or URI); [] when there is none."""
    import io

    from crnn.storage import join, read_text

    try:
        text = read_text(join(out, "metrics.csv"))
    except FileNotFoundError:
        return []
    return list(csv.DictReader(io.StringIO(text)))


def write_metrics_csv(out: str, rows: list[dict]) -> str:
    """Write ``out``/metrics.csv (local or URI; replaced whole, :func:`crnn.storage.write_text`)."""
    import io

    from crnn.storage import join, write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(METRIC_FIELDS) + ["best_val_loss", "start_epoch", "setup_s"],
                       extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return write_text(join(out, "metrics.csv"), buf.getvalue())


def _user_callback(out: str):
    from ray.train import UserCallback

    class MetricsCallback(_MetricsWriter, UserCallback):
        pass

    return MetricsCallback(out)


def load_datasets(cfg: Config):
    """Ray Datasets for training and validation, streamed from the Parquet shards."""
    from crnn.shards import read_card, read_ray

    card = read_card(cfg.data.path)
    n_train = check_data(cfg, card)
    train = read_ray(cfg.data.path, split=cfg.data.train_splits, columns=["frames"])
    val = read_ray(cfg.data.path, split=cfg.data.val_split, columns=["frames"])
    if cfg.data.max_train_series:
        train = train.limit(cfg.data.max_train_series)
    if cfg.data.max_val_series:
        val = val.limit(cfg.data.max_val_series)
    return train, val, n_train, card


def check_config(cfg: Config) -> None:
    """ValueError naming the field when ``cfg`` cannot be trained (no Ray: jobs call it first)."""
    cfg.model.validate()
    cfg.train.validate()
    if cfg.model.kind not in FAMILIES:
        raise ValueError(f"model.kind={cfg.model.kind!r} has no trainable parameters; evaluate it instead")


def check_data(cfg: Config, card: dict) -> int:
    """ValueError naming the dataset when its card does not fit ``cfg`` (frames, image size, splits);
    returns the number of training series. No Ray: jobs call it before starting Ray."""
    from crnn.inference import check_image_size
    from crnn.shardcheck import SPLITS

    need = cfg.data.in_frames + 1
    if len(card["ages"]) < need:
        raise ValueError(f"{cfg.data.path}: series have {len(card['ages'])} frames; in_frames+1 = {need} needed")
    check_image_size((cfg.model.height, cfg.model.width, cfg.model.channels),
                     (card["height"], card["width"], card["channels"]), cfg.data.path,
                     hint="set model.height/width/channels")
    bad = [s for s in (*cfg.data.train_splits, cfg.data.val_split, cfg.data.test_split) if s not in SPLITS]
    if bad:
        raise ValueError(f"data splits {bad}: expected some of {SPLITS}")
    n_train = sum(card["splits"].get(s, 0) for s in cfg.data.train_splits)
    if n_train == 0:
        raise ValueError(f"{cfg.data.path}: no series in split(s) {list(cfg.data.train_splits)}")
    return min(n_train, cfg.data.max_train_series) if cfg.data.max_train_series else n_train


# ----------------------------------------------------------------------------- run directories
class RunDirError(ValueError):
    """A run directory that belongs to another configuration (or is not a run directory)."""


# Fields that say how a run is executed, not what it trains: a rerun may change them and resume.
RUNTIME_FIELDS = frozenset(f"train.{k}" for k in (
    "num_workers", "use_gpu", "cpus_per_worker", "gpus_per_worker", "compile", "compile_mode", "cache",
    "max_failures", "checkpoint_every", "checkpoint_interval_s", "log_every", "torch_threads"))


def check_run_dir(out: str, cfg: Config, overwrite: bool = False) -> bool:
    """Whether ``out`` must be cleared before training: a run directory belongs to the configuration
    in its config.yaml. A rerun with the same one (runtime fields aside) resumes; another one is
    refused with a :class:`RunDirError` naming the differing fields, unless ``overwrite`` (then True:
    start over). A non-empty directory without config.yaml is never taken, nor cleared."""
    import pyarrow.fs as pafs
    import yaml

    from crnn.config import _flatten
    from crnn.storage import resolve

    fs, root = resolve(out)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        return False
    if info.type != pafs.FileType.Directory:
        raise RunDirError(f"--out {out} is a file, not a run directory")
    entries = fs.get_file_info(pafs.FileSelector(root))
    if not entries:
        return False
    saved_path = posixpath.join(root, "config.yaml")
    if not any(e.path.rstrip("/").endswith("/config.yaml") and e.type == pafs.FileType.File for e in entries):
        raise RunDirError(f"--out {out} is not empty and has no config.yaml: not a run directory of this "
                          f"project; choose another --out")
    if overwrite:
        return True
    try:
        with fs.open_input_stream(saved_path) as f:
            saved = yaml.safe_load(f.read().decode())
        saved = {k: v for k, v in _flatten(saved).items() if k.partition(".")[0] in ("model", "data", "train")}
    except Exception as e:  # corrupt YAML, not a mapping
        raise RunDirError(f"{out}/config.yaml cannot be read ({e}); pass --overwrite to start over") from None
    new = _flatten(to_dict(cfg))
    diff = [k for k in sorted(set(saved) | set(new)) if k not in RUNTIME_FIELDS and saved.get(k) != new.get(k)]
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in diff[:6])
        more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
        raise RunDirError(f"--out {out} holds a run of another configuration ({shown}{more}); pass --overwrite "
                          f"to delete it and start over, or choose another --out")
    return False


def clear_run_dir(out: str) -> None:
    """Delete a run directory's contents (``--overwrite``), so no file of the old run remains."""
    from crnn.storage import is_local, resolve

    fs, root = resolve(out)
    if is_local(out):
        shutil.rmtree(root)
    else:
        fs.delete_dir_contents(root, missing_dir_ok=True)


def _no_hook(*_args) -> None:
    return None


def fit(cfg: Config, out: str, cache: bool | None = None, hooks: list | None = None,
        name: str | None = None, callbacks: list | None = None, overwrite: bool = False):
    """Train with Ray Train (needs a running Ray). Writes the run directory ``out``::

        config.yaml  metrics.csv  model/ (best checkpoint)  curve.png  tb/  ray/ (Train storage)

    Returns the ``ray.train.Result``. ``cache`` overrides ``train.cache`` (each worker's shard
    streamed once, then kept in device memory); ``hooks`` is a seam for tests (picklable objects
    with ``on_epoch_start(epoch, rank)`` and/or ``on_validation(epoch, row)``, called in every
    worker; e.g. ``tests.helpers.CrashOnce`` kills a worker, ``ScriptedValidation`` scripts the
    validation curve). ``callbacks`` are extra Train
    ``UserCallback``s (e.g. Tune's ``TuneReportCallback`` when this runs inside a Tune trial).

    Rerunning into the same ``out`` with the same config resumes from its last checkpoint and
    keeps the earlier epochs' metrics; another config is refused (:func:`check_run_dir`) unless
    ``overwrite``, which deletes the old run first.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from crnn.runtime import check_shared_storage
    from crnn.storage import is_local, resolve

    check_config(cfg)
    check_shared_storage({"data.path": cfg.data.path, "out": out}, use_gpu=cfg.train.use_gpu)
    clear = check_run_dir(out, cfg, overwrite)
    train_ds, val_ds, n_train, card = load_datasets(cfg)
    if clear:  # only after the data checked out: a refused run deletes nothing
        clear_run_dir(out)
    fs, root = resolve(out)
    fs.create_dir(root, recursive=True)
    save_config(cfg, posixpath.join(out, "config.yaml"))
    storage = root if is_local(out) else out.rstrip("/")
    t = cfg.train
    if cache is None:
        frame_bytes = len(card["ages"]) * card["height"] * card["width"] * card["channels"]
        cache = t.cache == "always" or (t.cache == "auto" and n_train * frame_bytes / t.num_workers < 2**31)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": to_dict(cfg), "num_train": n_train,
                           "cache": cache,
                           "hooks": list(hooks or ())},
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": t.gpus_per_worker} if t.use_gpu else {})}),
        datasets={"train": train_ds, "val": val_ds},
        run_config=ray.train.RunConfig(
            name=name or "train", storage_path=posixpath.join(storage, "ray") if is_local(out) else f"{storage}/ray",
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="val_loss", checkpoint_score_order="min"),
            failure_config=ray.train.FailureConfig(max_failures=t.max_failures),
            callbacks=[_user_callback(out), *(callbacks or [])],
        ),
    )
    result = trainer.fit()
    finish_run(out, cfg, result)
    return result


def finish_run(out: str, cfg: Config, result) -> None:
    """Publish the best checkpoint, without its optimizer state, as ``out/model``
    (:func:`crnn.storage.publish_dir`: readers see the previous model or the whole new one); write
    TensorBoard logs and the learning curve."""
    from crnn.checkpoint import MODEL_FILE, OPTIM_FILE
    from crnn.storage import copy_dir, is_local, join, publish_dir, resolve

    best = result.get_best_checkpoint("val_loss", "min") or result.checkpoint
    if best is None:
        raise RuntimeError("training reported no checkpoint")
    with best.as_directory() as d:
        publish_dir(join(out, "model"), lambda staging: copy_dir(d, staging, ignore=(OPTIM_FILE,)),
                    marker=MODEL_FILE)
    if not is_local(out):
        return
    _, root = resolve(out)
    rows = read_metrics_csv(os.path.join(root, "metrics.csv"))
    shutil.rmtree(os.path.join(root, "tb"), ignore_errors=True)  # rebuilt from the whole history
    write_tensorboard(os.path.join(root, "tb"), rows)
    from crnn.plots import learning_curves

    learning_curves(rows, os.path.join(root, "curve.png"), title=f"{cfg.model.kind} (best epoch "
                    f"{min(rows, key=lambda r: float(r['val_loss']))['epoch'] if rows else '?'})")


def epoch_summary(rows: list[dict]) -> dict[str, float]:
    """From metrics.csv rows: time inside epochs and the steady-state training rate (median of the
    epochs after the first, which pays for compilation and warm-up)."""
    rates = [float(r["train_series_per_s"]) for r in rows]
    steady = rates[1:] or rates
    return {"epochs_s": sum(float(r["epoch_s"]) for r in rows),
            "steady_series_per_s": float(np.median(steady)) if steady else 0.0}


def read_metrics_csv(path: str) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def write_tensorboard(logdir: str, rows: list[dict]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(logdir) as w:
        for r in rows:
            for k, v in r.items():
                if k != "epoch" and v not in ("", None):
                    w.add_scalar(k, float(v), int(r["epoch"]))

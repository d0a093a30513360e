"""Training with Ray Train: the worker loop, its driver :func:`fit`, and the checks jobs run first.

    cfg = load_config("quick", overrides=["data.path=data/pines"])
    result = fit(cfg, out="runs/quick")            # Ray Train (TorchTrainer, DDP), needs Ray

Each worker streams its shards with Ray Data and runs the plain-PyTorch steps and epochs of
:mod:`crnn.loop` (which also has ``fit_plain``, the same training without Ray); the run directory
``out`` (config, metrics.csv, the best model, curves) is :mod:`crnn.rundir`'s.
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
import tempfile
import time
import warnings
from typing import Any

import numpy as np
import torch

from crnn.checkpoint import (check_init_from, init_weights, load_training_state, read_model_file, save_model_dir,
                             unwrap)
from crnn.config import Config, check_training_fields, from_dict, save as save_config, to_dict
from crnn.loop import (
    _all_reduce, _array_batches, _epoch_row, _window_ages, make_optimizer, make_scheduler, maybe_compile, run_epoch,
    run_eval, series_tensors,
)
from crnn.model import FAMILIES, build_model
from crnn.optim import load_optimizer_state
from crnn.timeaware import data_summary
from crnn.rundir import _user_callback, check_run_dir, clear_run_dir, finish_run, has_checkpoint
from crnn.irregular import is_irregular, torch_series
from crnn.shards import torch_frames


# ----------------------------------------------------------------------------- Ray Train worker
#: Columns training reads: the regular grid needs the frames only; the irregular layout (time-aware
#: models) also each series' ages and frame counts (crnn.irregular).
TRAIN_COLUMNS = {"regular": ["frames"], "irregular": ["frames", "ages", "num_frames", "num_inputs"]}


def _collate(device, irregular: bool = False):
    def collate(batch: dict[str, np.ndarray]) -> torch.Tensor:
        return torch_frames(batch["frames"], device)  # uint8 (B,T,H,W,C) -> float (B,T,C,H,W)

    def collate_series(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return torch_series(batch, device)            # + ages (B,T_max), mask, num_frames, num_inputs

    return collate_series if irregular else collate


def _materialize(shard, device, irregular: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
    """A worker's whole dataset shard on ``device``: one uint8 (N, T, H, W, C) tensor, or for the
    irregular layout a dict of ``frames`` uint8 (N, T_max, H, W, C), ``ages``, ``num_frames``,
    ``num_inputs`` (:func:`crnn.loop.series_tensors`)."""
    cols = TRAIN_COLUMNS["irregular" if irregular else "regular"]
    parts = {c: [] for c in cols}
    for b in shard.iter_batches(batch_size=4096, batch_format="numpy"):
        for c in cols:
            parts[c].append(b[c])
    if not parts["frames"]:
        empty = torch.zeros((0,), dtype=torch.uint8, device=device)
        return {c: empty for c in cols} if irregular else empty
    if not irregular:
        return torch.as_tensor(np.concatenate(parts["frames"])).to(device)
    data = series_tensors({c: np.concatenate(v) for c, v in parts.items()})
    return {k: v.to(device) for k, v in data.items()}


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
    if cfg.train.init_from and ray.train.get_checkpoint() is None:  # a resumed run keeps its own weights
        init_weights(model, cfg.train.init_from)  # every worker: the same weights before DDP wraps them
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
                if state.get("optimizer"):  # ValueError naming both kinds when train.optimizer changed
                    load_optimizer_state(opt, state["optimizer"], "the checkpoint's optimizer state")
                if state.get("scheduler"):
                    sched.load_state_dict(state["scheduler"])
                start_epoch = state["epoch"] + 1
    cmodel = maybe_compile(model, cfg)

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    cache = loop_config.get("cache", False)
    irregular = loop_config.get("irregular", False)
    data = loop_config.get("data")  # the training data's summary, kept in every checkpoint
    ages = _window_ages(cfg, data, device)  # a time-aware model on a regular dataset off its grid: model(x, ages)
    if cache:  # (streaming both shards at once in threads was slower on 2 cores: BENCHMARKS.md)
        train_data = _materialize(train_shard, device, irregular)
        val_data = _materialize(val_shard, device, irregular)
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
                batch_size=per_worker, collate_fn=_collate(device, irregular), drop_last=True, prefetch_batches=2,
                local_shuffle_buffer_size=min(4 * per_worker + 256, 2048),
                local_shuffle_seed=cfg.train.seed * 1000 + epoch * 10 + rank)
            val_batches = val_shard.iter_torch_batches(batch_size=512, collate_fn=_collate(device, irregular))
        setup_s = time.perf_counter() - t_start if epoch == start_epoch else 0.0
        stats = run_epoch(cmodel, opt, sched, batches, cfg, mirror_axis=(data or {}).get("mirror_axis"), ages=ages)
        loss_sum, series = _all_reduce(stats["loss_sum"], stats["series"], device=device)
        row = _epoch_row(epoch, stats, opt, loss_sum, series)
        # validation runs eager: compiled, its other batch shapes would each cost a recompile
        err, count = _all_reduce(*run_eval(model, val_batches, cfg, ages), device=device)
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
                save_model_dir(d, model, cfg, epoch=epoch, metrics=row, optimizer=opt, scheduler=sched, data=data)
                ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(d))
            last_write = time.monotonic()
        else:
            ray.train.report(row)
        if rank == 0 and improved:
            pending = None if write else (
                dict(row), {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()})

    _report_pending_best(pending, model, cfg, device, data)


def _report_pending_best(pending, model, cfg: Config, device, data: dict | None = None) -> None:
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
        save_model_dir(d, model, cfg, epoch=int(row["epoch"]), metrics=row, state_dict=weights, done=True,
                       data=data)
        ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(d))


# ----------------------------------------------------------------------------- driver
def load_datasets(cfg: Config):
    """Ray Datasets for training and validation, streamed from the Parquet shards."""
    from crnn.shards import read_card, read_ray

    card = read_card(cfg.data.path)
    n_train = check_data(cfg, card)
    cols = TRAIN_COLUMNS["irregular" if is_irregular(card) else "regular"]
    train = read_ray(cfg.data.path, split=cfg.data.train_splits, columns=cols)
    val = read_ray(cfg.data.path, split=cfg.data.val_split, columns=cols)
    if cfg.data.max_train_series:
        train = train.limit(cfg.data.max_train_series)
    if cfg.data.max_val_series:
        val = val.limit(cfg.data.max_val_series)
    return train, val, n_train, card


def with_absolute_paths(cfg: Config) -> Config:
    """``cfg`` with a local ``train.init_from`` made absolute (a copy; URIs unchanged): Train workers
    and Tune trials run in other working directories, and a rerun from elsewhere must compare equal
    with the run directory's saved config."""
    from crnn.storage import absolute

    if not cfg.train.init_from:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=absolute(cfg.train.init_from)))


def check_config(cfg: Config, out: str | None = None, overwrite: bool = False) -> None:
    """ValueError naming the field when ``cfg`` cannot be trained (no Ray: jobs call it first).

    With ``train.init_from`` it reads that model directory (:func:`crnn.checkpoint.check_init_from`),
    unless the run directory ``out`` already holds a checkpoint to resume from (and not
    ``overwrite``): a resumed run never reads its starting model again, which may be gone by then."""
    cfg.model.validate()
    check_training_fields(cfg)
    if cfg.model.kind not in FAMILIES:
        raise ValueError(f"model.kind={cfg.model.kind!r} has no trainable parameters; evaluate it instead")
    if cfg.train.init_from and not (out and not overwrite and has_checkpoint(out)):
        check_init_from(cfg)


def check_start_data(cfg: Config, card: dict, out: str | None = None, overwrite: bool = False,
                     remedy: str | None = None) -> None:
    """ValueError when ``train.init_from`` names a time-aware model trained on ages in another unit
    than the dataset ``card``'s (:func:`crnn.timeaware.check_start_ages`). Only a time-aware run
    reads its starting model again for this (grid models do not read ages; :func:`check_config` has
    checked the network), and, as there, not when ``out`` holds a checkpoint to resume from. ``remedy``:
    the error's last sentence, for a job whose data it makes itself (:func:`check_start_ages`)."""
    from crnn.checkpoint import read_init_source
    from crnn.timeaware import check_start_ages, is_time_aware

    if not cfg.train.init_from or not is_time_aware(cfg) or (out and not overwrite and has_checkpoint(out)):
        return
    source, payload = read_init_source(cfg.train.init_from)
    check_start_ages(cfg.train.init_from, source, payload.get("data"), card, cfg.data.path, remedy)


def check_data(cfg: Config, card: dict) -> int:
    """ValueError naming the dataset when its card does not fit ``cfg`` (frames, image size, splits);
    returns the number of training series. A UserWarning when a regular dataset's validation split is
    empty (training runs; the last epoch is kept). An irregular dataset (per-series ages, crnn.irregular)
    trains a time-aware model only (``model.kind=timevp``). No Ray: jobs call it before starting Ray."""
    from crnn.inference import check_image_size, resize_hint
    from crnn.mirror import mirror_axis
    from crnn.shardcheck import SPLITS
    from crnn.timeaware import TIME_AWARE_KINDS, evenly_spaced

    if is_irregular(card):
        if cfg.model.kind not in TIME_AWARE_KINDS:
            raise ValueError(f"{cfg.data.path}: an irregular dataset (per-series ages, up to {card['max_frames']} "
                             f"frames) trains a time-aware model only: model.kind={cfg.model.kind!r} reads the "
                             f"regular grid; use model.kind={TIME_AWARE_KINDS[0]} (preset {TIME_AWARE_KINDS[0]})")
        if cfg.train.step_weights:
            raise ValueError(f"{cfg.data.path}: an irregular dataset has no fixed forecast steps to weigh: "
                             f"train.step_weights={list(cfg.train.step_weights)!r} is for regular datasets; "
                             f"drop it (every target frame weighs the same)")
    else:
        need = cfg.data.in_frames + 1
        if len(card["ages"]) < need:
            raise ValueError(f"{cfg.data.path}: series have {len(card['ages'])} frames; in_frames+1 = {need} needed")
        if cfg.model.kind not in TIME_AWARE_KINDS and not evenly_spaced(card["ages"][:need]):
            # a grid model reads its frames as steps of one spacing: trained on these it would forecast
            # and label the wrong ages, and Serve would refuse its own default ages as off its grid
            raise ValueError(f"{cfg.data.path}: the {need} ages trained on, {card['ages'][:need]}, are not evenly "
                             f"spaced: model.kind={cfg.model.kind!r} is a grid model (evenly spaced frames); use a "
                             f"time-aware model (model.kind={TIME_AWARE_KINDS[0]}, preset {TIME_AWARE_KINDS[0]}) on them")
    size = (cfg.model.height, cfg.model.width, cfg.model.channels)
    if cfg.train.init_from:  # the starting model fixes the network, so model.height/width cannot change
        hint = f"train.init_from={cfg.train.init_from} was trained at that size; " + resize_hint(size)
    else:
        hint = f"set model.height/width/channels to the images' size, or {resize_hint(size)}"
    check_image_size(size, (card["height"], card["width"], card["channels"]), cfg.data.path, hint=hint)
    try:  # the axis train.augment=hflip mirrors about and the model directory keeps (crnn.mirror)
        mirror_axis(card)
    except ValueError as e:
        raise ValueError(f"{cfg.data.path}: {e}") from None
    bad = [s for s in (*cfg.data.train_splits, cfg.data.val_split, cfg.data.test_split) if s not in SPLITS]
    if bad:
        raise ValueError(f"data splits {bad}: expected some of {SPLITS}")
    n_train = sum(card["splits"].get(s, 0) for s in cfg.data.train_splits)
    if n_train == 0:
        raise ValueError(f"{cfg.data.path}: no series in split(s) {list(cfg.data.train_splits)}")
    if is_irregular(card):  # every split trained or validated on needs series that can be lessons
        n_train = _check_lessons(cfg, card)
    elif not card["splits"].get(cfg.data.val_split, 0) and _first_time(cfg, card):  # trains; nothing chooses
        warnings.warn(f"{cfg.data.path}: the validation split {cfg.data.val_split!r} is empty (series per split: "
                      f"{dict(card['splits'])}): val_loss is NaN, so the model kept is the last epoch's, not the "
                      f"best one's (jobs/ingest.py splits series by a hash of their names, ~10 % to val: a few "
                      f"series may give none)")
    return min(n_train, cfg.data.max_train_series) if cfg.data.max_train_series else n_train


_WARNED_EMPTY_VAL: set = set()


def _first_time(cfg: Config, card: dict) -> bool:
    """Whether this process has not yet warned of this dataset's empty validation split: the job checks
    the data before Ray starts and ``fit`` again after, and Ray's start resets Python's once-per-place
    warning registry, so the same warning was printed twice."""
    key = (cfg.data.path, cfg.data.val_split, tuple(sorted((str(k), int(v)) for k, v in card["splits"].items())))
    new = key not in _WARNED_EMPTY_VAL
    _WARNED_EMPTY_VAL.add(key)
    return new


def _check_lessons(cfg: Config, card: dict) -> int:
    """Training series of an irregular dataset that can be lessons (:func:`crnn.irregular.usable`:
    >= 2 inputs and a target; the others are carried with no valid target). ValueError naming the
    split when the training or the validation split has none (validation would be NaN, training
    would learn nothing). Reads the small columns only."""
    from crnn.irregular import usable
    from crnn.shards import read_numpy

    counts = {}
    for what, splits in (("training", list(cfg.data.train_splits)), ("validation", [cfg.data.val_split])):
        d = read_numpy(cfg.data.path, split=splits, columns=["num_frames", "num_inputs"])
        ok = int(usable(d["num_frames"], d["num_inputs"]).sum())
        if len(d["num_frames"]) == 0:  # (training: refused before, by check_data) an empty validation split
            raise ValueError(f"{cfg.data.path}: the {what} split(s) {splits} have no series: a time-aware model's "
                             f"{what} needs some (an irregular dataset is not trained without them)")
        if ok == 0:
            raise ValueError(f"{cfg.data.path}: the {what} split(s) {splits} have {len(d['num_frames'])} series but "
                             f"none a time-aware model can learn from: each needs at least 2 input frames and a "
                             f"target after them (num_inputs >= 2 and num_frames > num_inputs, or num_inputs 0 and "
                             f"at least 3 frames)")
        counts[what] = ok
    return counts["training"]


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

    cfg = with_absolute_paths(cfg)
    check_config(cfg, out, overwrite)
    check_shared_storage({"data.path": cfg.data.path, "out": out, "train.init_from": cfg.train.init_from},
                         use_gpu=cfg.train.use_gpu)
    clear = check_run_dir(out, cfg, overwrite)
    train_ds, val_ds, n_train, card = load_datasets(cfg)
    check_start_data(cfg, card, out, overwrite)
    if clear:  # only after the data checked out: a refused run deletes nothing
        clear_run_dir(out)
    fs, root = resolve(out)
    fs.create_dir(root, recursive=True)
    save_config(cfg, posixpath.join(out, "config.yaml"))
    storage = root if is_local(out) else out.rstrip("/")
    t = cfg.train
    if cache is None:
        frames = card["max_frames"] if is_irregular(card) else len(card["ages"])
        frame_bytes = frames * card["height"] * card["width"] * card["channels"]
        cache = t.cache == "always" or (t.cache == "auto" and n_train * frame_bytes / t.num_workers < 2**31)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": to_dict(cfg), "num_train": n_train,
                           "cache": cache, "irregular": is_irregular(card),
                           "data": data_summary(card, cfg.data.in_frames),
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

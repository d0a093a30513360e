"""Run directories: what :func:`crnn.train.fit` writes into ``out``, and how a rerun treats it.

    config.yaml  metrics.csv  model/ (best checkpoint)  curve.png  tb/  ray/ (Train storage)

:func:`check_run_dir` says whether ``out`` resumes (the same configuration, runtime fields aside), is
refused (:class:`RunDirError`) or is cleared first (:func:`clear_run_dir`); ``metrics.csv`` is kept
current epoch by epoch by a Train callback on the controller (:func:`write_metrics_csv`) and read
back by :func:`read_metrics_csv` and :func:`epoch_summary`; :func:`finish_run` publishes the best
checkpoint as ``model/`` and writes the TensorBoard logs and the learning curve.
"""

from __future__ import annotations

import csv
import os
import posixpath
import shutil

import numpy as np

from crnn.config import Config, to_dict


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

    from crnn.config import flatten_leaves
    from crnn.storage import resolve

    _check_init_from_outside(out, cfg)
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
        saved = {k: v for k, v in flatten_leaves(saved).items() if k.partition(".")[0] in ("model", "data", "train")}
    except Exception as e:  # corrupt YAML, not a mapping
        raise RunDirError(f"{out}/config.yaml cannot be read ({e}); pass --overwrite to start over") from None
    new = flatten_leaves(to_dict(cfg))
    # a field the saved config lacks (written before the field existed) had its default -- at any
    # depth: a family section saved before it gained a field (model.convlstm.norm) still resumes
    saved = {**{k: v for k, v in flatten_leaves(to_dict(Config())).items() if k not in saved}, **saved}
    diff = [k for k in sorted(set(saved) | set(new)) if k not in RUNTIME_FIELDS and saved.get(k) != new.get(k)]
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in diff[:6])
        more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
        raise RunDirError(f"--out {out} holds a run of another configuration ({shown}{more}); pass --overwrite "
                          f"to delete it and start over, or choose another --out")
    return False


def _check_init_from_outside(out: str, cfg: Config) -> None:
    """RunDirError when ``train.init_from`` lies inside ``out``: --overwrite would delete the starting
    model before the run reads it, and the run would replace out/model with its own anyway."""
    from crnn.storage import inside

    src = cfg.train.init_from
    if not src:
        return
    if inside(src, out):  # however spelled: file:///r/x and /r/x, a symbolic link, . and ..
        raise RunDirError(f"train.init_from={src!r} lies inside --out {out}: the run would delete or replace "
                          f"the model it starts from; copy that model elsewhere or choose another --out")


def has_checkpoint(out: str) -> bool:
    """Whether ``out`` holds a Ray Train checkpoint (``ray/<name>/checkpoint_*``), from which a rerun of
    its configuration resumes (then ``train.init_from`` is not read again)."""
    import pyarrow.fs as pafs

    from crnn.storage import resolve

    fs, root = resolve(out)
    ray_dir = posixpath.join(root, "ray")
    if fs.get_file_info(ray_dir).type != pafs.FileType.Directory:
        return False
    for run in fs.get_file_info(pafs.FileSelector(ray_dir)):
        if run.type == pafs.FileType.Directory and any(
                e.type == pafs.FileType.Directory and posixpath.basename(e.path).startswith("checkpoint_")
                for e in fs.get_file_info(pafs.FileSelector(run.path))):
            return True
    return False


def clear_run_dir(out: str) -> None:
    """Delete a run directory's contents (``--overwrite``), so no file of the old run remains."""
    from crnn.storage import is_local, resolve

    fs, root = resolve(out)
    if is_local(out):  # the contents, not the directory: --out may be a symbolic link to it (kept)
        real = os.path.realpath(root)
        for name in os.listdir(real):
            p = os.path.join(real, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.remove(p)
    else:
        fs.delete_dir_contents(root, missing_dir_ok=True)


def best_checkpoint(result):
    """The checkpoint ``out/model`` gets: the one of lowest ``val_loss`` among those Ray Train kept,
    else (no checkpoint has a val_loss that is a number: an empty validation split reports NaN every
    epoch) the latest, the last epoch's. Not ``result.get_best_checkpoint("val_loss", "min")`` alone:
    its ``min`` over NaN keys returns the FIRST checkpoint kept, an earlier periodic one's (epoch 5 of
    6), not the last epoch's that ``crnn.train.check_data``'s warning promises."""
    import math

    def score(metrics):
        v = (metrics or {}).get("val_loss")
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    scored = [(score(m), c) for c, m in (result.best_checkpoints or []) if score(m) is not None]
    if scored:
        return min(scored, key=lambda sc: sc[0])[1]  # the first of equal scores, as Ray's
    return result.checkpoint


def finish_run(out: str, cfg: Config, result) -> None:
    """Publish the best checkpoint, without its optimizer state, as ``out/model``
    (:func:`crnn.storage.publish_dir`: readers see the previous model or the whole new one); write
    TensorBoard logs and the learning curve."""
    from crnn.checkpoint import MODEL_FILE, OPTIM_FILE
    from crnn.storage import copy_dir, is_local, join, publish_dir, resolve

    best = best_checkpoint(result)
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


# ----------------------------------------------------------------------------- metrics
METRIC_FIELDS = ("epoch", "train_loss", "val_loss", "val_mse_255", "lr", "epoch_s",
                 "train_series_per_s", "series_seen")


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

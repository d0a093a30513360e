"""Helpers shared by the tests (import them: ``from tests.helpers import tiny_config``); fixtures
live in conftest.py, helpers for tests that start processes in cluster_utils.py, image builders in
image_utils.py.

Training hooks: ``crnn.train.fit(..., hooks=[...])`` calls each hook's ``on_epoch_start(epoch,
rank)`` before an epoch and ``on_validation(epoch, row)`` after its validation (``row`` is the
metrics row, editable). The hooks travel to the Ray Train workers by pickle, so they are classes of
this importable module, never closures.
"""

from __future__ import annotations

import contextlib
import os

from crnn.runtime import free_port, free_ports  # noqa: F401  (re-exported: one implementation)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_path, **overrides):
    """A small, fast CRNN config for tests (the ``quick`` preset, 4/8 filters, 16 LSTM units)."""
    from crnn.config import load_config

    base = {"data.path": data_path, "model.conv_filters": [4, 8], "model.lstm_units": 16,
            "train.epochs": 2, "train.batch_size": 8, "train.cpus_per_worker": 0.5}
    base.update(overrides)
    return load_config("quick", overrides=base)


class CrashOnce:
    """Kill the worker of ``rank`` at the start of ``epoch``, once: ``marker`` (a file) records the
    crash, so the worker group Ray Train restarts from the last checkpoint goes on."""

    def __init__(self, epoch: int, marker: str, rank: int = 0):
        self.epoch, self.marker, self.rank = epoch, marker, rank

    def on_epoch_start(self, epoch: int, rank: int) -> None:
        if epoch == self.epoch and rank == self.rank and not os.path.exists(self.marker):
            import ray.train

            ray.train.get_all_reported_checkpoints()  # wait until Ray Train holds the last checkpoint
            open(self.marker, "w").close()
            os._exit(1)


class ScriptedValidation:
    """Replace each epoch's validation loss by ``losses[epoch]`` (a scripted validation curve)."""

    def __init__(self, losses: list[float]):
        self.losses = list(losses)

    def on_validation(self, epoch: int, row: dict) -> None:
        row["val_loss"] = float(self.losses[epoch])


class WatchAugment:
    """Record, in the Ray Train worker itself, what each training step hands ``crnn.loop.augment``
    (its kind and mirror axis): one ``kind axis`` line per call appended to ``log`` (a file: the
    worker is another process). Installed at the first epoch's start; it then calls the real one."""

    def __init__(self, log: str):
        self.log = log

    def on_epoch_start(self, epoch: int, rank: int) -> None:
        import crnn.loop as loop

        if getattr(loop.augment, "watched", False):
            return
        real, log = loop.augment, self.log

        def watched(x, kind, mirror_axis=None):
            with open(log, "a") as f:
                f.write(f"{kind} {mirror_axis}\n")
            return real(x, kind, mirror_axis)

        watched.watched = True
        loop.augment = watched


def random_timevp_dir(path: str, data: dict, seed: int = 0, **overrides) -> str:
    """A tiny time-aware model directory (``timevp-fast`` with hid_s 8, hid_t 16, n_t 2, and config
    ``overrides`` such as ``**{"model.height": 16}``) with random weights everywhere -- its untrained
    residual head would answer persistence, the same frame at every age -- and the training-data
    summary ``data`` (what ages it answers). Returns ``path``."""
    import torch

    from crnn.checkpoint import save_model_dir
    from crnn.config import load_config
    from crnn.model import build_model

    cfg = load_config("timevp-fast", overrides={"model.timevp.hid_s": 8, "model.timevp.hid_t": 16,
                                                "model.timevp.n_t": 2, **overrides})
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    save_model_dir(path, model, cfg, epoch=0, metrics={"val_mse": 1.0}, data=data)
    return path


@contextlib.contextmanager
def serve_app(model_dir: str, name: str, limits):
    """Serve the model directory as app ``name`` on a free local port (one replica, half a CPU,
    ``limits`` as its user_config) on the running Ray; yields the base URL, shuts Serve down after."""
    from ray import serve

    from crnn.serve import ActorOptions, ServeSettings, build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = ServeSettings(model=model_dir, num_replicas=1, max_ongoing_requests=32,
                             ray_actor_options=ActorOptions(num_cpus=0.5), user_config=limits)
    try:
        serve.run(build_app(settings), name=name, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()

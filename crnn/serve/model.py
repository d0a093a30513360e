"""The model side of the app: :class:`ForecastEngine` (a loaded model, no Ray) and the
``CRNNForecaster`` deployment that runs it behind a ``@serve.batch`` queue.

The deployment is reached only through a ``DeploymentHandle`` from the ingress
(:mod:`crnn.serve.app`), which has already decoded requests to uint8 arrays, so a (GPU) model replica
never parses JSON or PNG. Each series is one item of the batch queue, so series from many requests
and many ingress replicas share one forward pass (``max_batch_size`` series, waiting at most
``batch_wait_timeout_s``). Two kinds of item share the queue: a grid model's horizon forecasts
(series with different horizons share a rollout that drops each series when its horizon is reached)
and forecasts at given ages (:func:`crnn.timeaware.forecast_at`: ragged histories and target lists in
one padded forward pass for a time-aware model; a rollout to the furthest step for a grid model).
The forward pass runs in a worker thread, so the replica keeps taking calls (and filling the next
batch) meanwhile.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from ray import serve

from crnn.checkpoint import ModelError
from crnn.inference import default_input_ages, forecast_uint8, load_model, pick_device, setup_torch
from crnn.serve.settings import MODEL_DEPLOYMENT, BatchLimits
from crnn.storage import join, json_safe, read_json
from crnn.timeaware import AgeError, forecast_at, time_domain

TRUST_FILE = "trust.json"  # in the model directory, written by the time-aware evaluation


def read_trust(model_dir: str) -> dict[str, Any] | None:
    """The model directory's ``trust.json`` (how far its forecasts beat persistence, written by the
    evaluation; passed on as it is), or None when there is none. ModelError naming the file when it
    is not a JSON object."""
    path = join(model_dir, TRUST_FILE)
    try:
        trust = read_json(path, None)
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None
    if trust is not None and not isinstance(trust, dict):
        raise ModelError(f"{path}: expected a JSON object, got a JSON {type(trust).__name__}")
    return trust


class ForecastEngine:
    """A loaded model and what requests are checked against; ``forecast`` runs batches."""

    def __init__(self, model: torch.nn.Module, cfg, meta: dict, device: str, source: str, version: str):
        self.model, self.cfg, self.meta, self.device, self.source, self.version = model, cfg, meta, device, source, version
        self.in_frames = int(cfg.data.in_frames)
        self.height, self.width, self.channels = cfg.model.height, cfg.model.width, cfg.model.channels
        self.domain = time_domain(cfg, meta.get("data"), meta.get("metrics"))  # what ages it answers
        # ages assumed when a request gives none: none for a model trained on per-series ages
        self.input_ages = default_input_ages(cfg, meta.get("metrics")) \
            if not self.domain.time_aware or self.domain.default_ages else []
        self.trust = read_trust(source)
        measured, served = (self.trust or {}).get("tta", "none"), meta.get("tta", "none")
        if self.trust is not None and measured != served:  # GET /model shows both; say it in the log too
            warnings.warn(f"{source}: trust.json was measured with test-time augmentation {measured!r}, this "
                          f"replica serves {served!r}: the trust it shows belongs to other forecasts (serve with "
                          f"tta {measured!r}, or measure trust again)", stacklevel=2)
        self.loaded_at = time.time()

    @classmethod
    def load(cls, path: str, device: str = "auto", torch_threads: int = 0, tta: str = "none",
             mirror_axis: float | None = None) -> "ForecastEngine":
        """Load the model directory ``path`` (and its ``trust.json`` when there is one), with test-time
        augmentation ``tta`` (:func:`crnn.inference.load_model`); raises ``ModelError`` naming what is
        wrong (a replica then refuses to start) or ``ValueError`` for a device that is not there or a
        bad ``tta``/axis."""
        device = pick_device(device)
        setup_torch(device, torch_threads)
        model, cfg, meta = load_model(path, device, version=True, tta=tta, mirror_axis=mirror_axis)
        return cls(model, cfg, meta, device, path, meta.pop("version"))

    def forecast(self, frames: np.ndarray, horizons: list[int]) -> list[np.ndarray]:
        """uint8 (B, in_frames, H, W, C) and one horizon per series -> B uint8 (h_i, H, W, C)."""
        return forecast_uint8(self.model, frames, self.in_frames, list(horizons), self.device)

    def forecast_at(self, frames: list[np.ndarray], ages: list[list[float]],
                    target_ages: list[list[float]]) -> list[np.ndarray]:
        """Forecasts at given ages (:func:`crnn.timeaware.forecast_at`): ``frames[i]`` uint8 (n_i, H,
        W, C) at ``ages[i]`` (n_i values), ``target_ages[i]`` m_i later ages -> uint8 (m_i, H, W, C)
        each. AgeError (a ValueError) naming ``series[i]`` for ages the model cannot answer."""
        return forecast_at(self.model, self.domain, frames, ages, target_ages, self.device)

    def warmup(self, batch: int = 2) -> None:
        x = np.zeros((batch, self.in_frames, self.height, self.width, self.channels), np.uint8)
        self.forecast(x, [1] * batch)
        ages = [float(a) for a in self.domain.default_ages]
        if len(ages) != self.in_frames:  # no default ages (trained on per-series ages): any it answers
            lo, hi = self.domain.age_range
            ages = np.linspace(lo, hi, self.in_frames + 1)[:-1].tolist()
        try:
            self.forecast_at(list(x), [ages] * batch, [self.domain.default_targets(ages)] * batch)
        except AgeError:  # default ages outside what the model answers (an odd card): nothing to warm
            pass

    def describe(self) -> dict[str, Any]:
        """What the ingress checks requests against: in_frames, height, width, channels, input_ages,
        the model version and ``domain`` (the :class:`crnn.timeaware.TimeDomain` object)."""
        return {"in_frames": self.in_frames, "height": self.height, "width": self.width,
                "channels": self.channels, "input_ages": list(self.input_ages), "version": self.version,
                "domain": self.domain}

    def info(self) -> dict[str, Any]:
        from crnn.config import to_dict

        return json_safe({
            "model": self.source, "version": self.version, "epoch": self.meta.get("epoch"),
            "metrics": self.meta.get("metrics"), "config": to_dict(self.cfg),
            "in_frames": self.in_frames, "input_ages": self.input_ages,
            "image": {"height": self.height, "width": self.width, "channels": self.channels},
            "device": self.device, "torch_threads": torch.get_num_threads(),
            "time": self.domain.as_dict(), "trust": self.trust, "tta": self.meta.get("tta", "none"),
        })


def replica_resources(device: str, torch_threads: int) -> tuple[str, int]:
    """(device, torch threads) of this replica: "auto" is cuda iff Ray gave it a GPU, 0 threads is
    ceil(the CPUs Ray gave it) -- read in the replica, so ``serve.yaml`` overrides count."""
    import ray

    got = ray.get_runtime_context().get_assigned_resources()
    if device == "auto":
        device = "cuda" if got.get("GPU", 0) > 0 else "cpu"
    return device, torch_threads or max(1, math.ceil(got.get("CPU", 1)))


@serve.deployment(name=MODEL_DEPLOYMENT, max_ongoing_requests=256)
class ForecastModel:
    """One model replica: the model and the batch queue. Called by the ingress with arrays only."""

    def __init__(self, model: str, device: str = "auto", torch_threads: int = 0, tta: str = "none",
                 mirror_axis: float | None = None):
        self.engine = ForecastEngine.load(model, *replica_resources(device, torch_threads), tta=tta,
                                          mirror_axis=mirror_axis)
        self.limits = BatchLimits()
        self.stats = {"requests": 0, "series": 0, "batches": 0, "largest_batch": 0}
        # One thread runs the forward passes, so the event loop keeps taking calls meanwhile.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crnn-forecast")
        self.engine.warmup()
        # The model, torch and Ray are long-lived: keep them out of every later GC pass.
        gc.collect()
        gc.freeze()

    def reconfigure(self, user_config: dict) -> None:
        limits = BatchLimits.model_validate(user_config or {})
        self._batched.set_max_batch_size(limits.max_batch_size)
        self._batched.set_batch_wait_timeout_s(limits.batch_wait_timeout_s)
        self.limits = limits

    def describe(self) -> dict[str, Any]:
        return self.engine.describe()

    def info(self) -> dict[str, Any]:
        """The model (config, metrics, version, device), this replica's batch limits and stats."""
        return {**self.engine.info(), "limits": self.limits.model_dump(), "stats": dict(self.stats)}

    async def forecast(self, frames: np.ndarray, horizons: list[int]) -> list[np.ndarray]:
        """uint8 (n, in_frames, H, W, C) and n horizons -> n uint8 (horizon_i, H, W, C), each series
        queued on its own so it can share a forward pass with other calls' series."""
        self.stats["requests"] += 1
        return list(await asyncio.gather(*(self._batched(("h", f, h)) for f, h in zip(frames, horizons))))

    async def forecast_at(self, frames: list[np.ndarray], ages: list[list[float]],
                          target_ages: list[list[float]]) -> list[np.ndarray]:
        """n series, uint8 (n_i, H, W, C) each, at ``ages[i]``, forecast at ``target_ages[i]`` -> n
        uint8 (m_i, H, W, C) (:meth:`ForecastEngine.forecast_at`); each series queued on its own."""
        self.stats["requests"] += 1
        out = list(await asyncio.gather(*(self._batched(("at", f, a, t))
                                          for f, a, t in zip(frames, ages, target_ages))))
        for r in out:  # an item the model refused (see _run): this call fails, its batch-mates do not
            if isinstance(r, Exception):
                raise r
        return out

    def _run(self, items: list[tuple]) -> list[np.ndarray]:
        """One batch (in the worker thread): the horizon items in one rollout, the items at given
        ages in one :func:`~crnn.timeaware.forecast_at` call; answers in the items' order."""
        out: list[Any] = [None] * len(items)
        hor = [i for i, it in enumerate(items) if it[0] == "h"]
        at = [i for i, it in enumerate(items) if it[0] == "at"]
        if hor:
            frames = np.stack([items[i][1] for i in hor])  # (B, in_frames, H, W, C)
            for i, o in zip(hor, self.engine.forecast(frames, [items[i][2] for i in hor])):
                out[i] = o
        if at:
            try:
                res = self.engine.forecast_at([items[i][1] for i in at], [items[i][2] for i in at],
                                              [items[i][3] for i in at])
            except ValueError:
                # One series the model refuses must not fail the other requests sharing its forward
                # pass: run the items one by one and hand the refused one its own error. (The ingress
                # checks ages as the model reads them, so this is defence in depth.)
                res = []
                for i in at:
                    try:
                        res.extend(self.engine.forecast_at([items[i][1]], [items[i][2]], [items[i][3]]))
                    except ValueError as e:
                        res.append(e)
            for i, o in zip(at, res):
                out[i] = o
        return out

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _batched(self, items: list[tuple]) -> list[np.ndarray]:
        # items: ("h", frames (in_frames, H, W, C), horizon) or ("at", frames (n, H, W, C), ages, targets)
        self.stats["batches"] += 1
        self.stats["series"] += len(items)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(items))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run, items)

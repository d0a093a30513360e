"""The model side of the app: :class:`ForecastEngine` (a loaded model, no Ray) and the
``CRNNForecaster`` deployment that runs it behind a ``@serve.batch`` queue.

The deployment is reached only through a ``DeploymentHandle`` from the ingress
(:mod:`crnn.serve.app`), which has already decoded requests to uint8 arrays, so a (GPU) model replica
never parses JSON or PNG. Each series is one item of the batch queue, so series from many requests
and many ingress replicas share one forward pass (``max_batch_size`` series, waiting at most
``batch_wait_timeout_s``); series with different horizons share a rollout that drops each series
when its horizon is reached. The forward pass runs in a worker thread, so the replica keeps taking
calls (and filling the next batch) meanwhile.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from ray import serve

from crnn.inference import default_input_ages, forecast_uint8, load_model, pick_device, setup_torch
from crnn.serve.settings import MODEL_DEPLOYMENT, BatchLimits
from crnn.storage import json_safe


class ForecastEngine:
    """A loaded model and what requests are checked against; ``forecast`` runs batches."""

    def __init__(self, model: torch.nn.Module, cfg, meta: dict, device: str, source: str, version: str):
        self.model, self.cfg, self.meta, self.device, self.source, self.version = model, cfg, meta, device, source, version
        self.in_frames = int(cfg.data.in_frames)
        self.height, self.width, self.channels = cfg.model.height, cfg.model.width, cfg.model.channels
        self.input_ages = default_input_ages(cfg, meta.get("metrics"))
        self.loaded_at = time.time()

    @classmethod
    def load(cls, path: str, device: str = "auto", torch_threads: int = 0) -> "ForecastEngine":
        """Load the model directory ``path``; raises ``ModelError`` naming what is wrong (a replica
        then refuses to start) or ``ValueError`` for a device that is not there."""
        device = pick_device(device)
        setup_torch(device, torch_threads)
        model, cfg, meta = load_model(path, device, version=True)
        return cls(model, cfg, meta, device, path, meta.pop("version"))

    def forecast(self, frames: np.ndarray, horizons: list[int]) -> list[np.ndarray]:
        """uint8 (B, in_frames, H, W, C) and one horizon per series -> B uint8 (h_i, H, W, C)."""
        return forecast_uint8(self.model, frames, self.in_frames, list(horizons), self.device)

    def warmup(self, batch: int = 2) -> None:
        x = np.zeros((batch, self.in_frames, self.height, self.width, self.channels), np.uint8)
        self.forecast(x, [1] * batch)

    def describe(self) -> dict[str, Any]:
        """What the ingress checks requests against: in_frames, height, width, channels, input_ages
        and the model version."""
        return {"in_frames": self.in_frames, "height": self.height, "width": self.width,
                "channels": self.channels, "input_ages": list(self.input_ages), "version": self.version}

    def info(self) -> dict[str, Any]:
        from crnn.config import to_dict

        return json_safe({
            "model": self.source, "version": self.version, "epoch": self.meta.get("epoch"),
            "metrics": self.meta.get("metrics"), "config": to_dict(self.cfg),
            "in_frames": self.in_frames, "input_ages": self.input_ages,
            "image": {"height": self.height, "width": self.width, "channels": self.channels},
            "device": self.device, "torch_threads": torch.get_num_threads(),
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

    def __init__(self, model: str, device: str = "auto", torch_threads: int = 0):
        self.engine = ForecastEngine.load(model, *replica_resources(device, torch_threads))
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
        return list(await asyncio.gather(*(self._batched((f, h)) for f, h in zip(frames, horizons))))

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _batched(self, items: list[tuple[np.ndarray, int]]) -> list[np.ndarray]:
        self.stats["batches"] += 1
        self.stats["series"] += len(items)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(items))
        frames = np.stack([f for f, _ in items])  # (B, in_frames, H, W, C)
        horizons = [h for _, h in items]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.engine.forecast, frames, horizons)

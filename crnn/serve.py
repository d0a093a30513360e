"""Online forecasting with Ray Serve: a FastAPI ingress that batches series from many clients.

    python jobs/serve.py --model runs/x/model                  # http://127.0.0.1:8000/docs
    PYTHONPATH=$PWD serve run serve.yaml                        # the same app from a Serve config

Endpoints (OpenAPI at ``/docs`` and ``/openapi.json``):

* ``POST /forecast`` -- ``{"series": [{"frames": [...]} | {"png": [...]}, ...], "horizon": 1, "ages": [...]}``
  -> ``{"forecasts": [{"ages": [...], "frames": [...]} | {"ages": [...], "png": [...]}, ...], ...}``,
  one forecast per series, in order, each in the format its series used. A series is exactly
  ``in_frames`` past images (the model's ``data.in_frames``, 4 for the paper: ages 10, 15, 20, 25),
  oldest first, either as H x W x C nested arrays of integers 0-255 or as base64 PNG strings
  (decoded by :mod:`crnn.images`, the decoder ``jobs/ingest.py`` uses, so a file means the same
  pixels in training and serving: any PNG colour type and bit depth, 16-bit scaled to 8,
  transparency composited over the ``background`` setting (white by default, as ingest), EXIF
  orientation applied, never resized; base64 may be wrapped with whitespace, e.g. every 76
  characters as ``base64`` and MIME encoders write it). The
  response holds the next ``horizon`` frames (default 1: age 30), forecast by autoregressive rollout
  (:func:`crnn.model.rollout`): beyond one step the model's own forecasts are fed back as inputs.
  ``ages`` (top level, or per series) gives the ages of the input frames, evenly spaced; the
  forecast ages continue that spacing. Default: the model's training ages (10, 15, 20, 25).
* ``GET /healthz`` -- ``{"status": "ok"}`` once the model is loaded.
* ``GET /model`` -- config, training metrics, epoch, version (content hash), input ages, limits.

Bad requests get a JSON error ``{"detail": "<what is wrong, naming the field>"}``: 400 for a body
that is not JSON (NaN/Infinity included) or malformed base64/PNG (naming series and frame); 413 for a body over
``max_body_bytes`` (checked from Content-Length before reading, and while reading) or more than
``max_series_per_request`` series; 422 for JSON of the wrong shape (frame count, image size,
channels, values outside 0-255, empty batch, bad horizon or ages; a PNG whose size, as shown after
its EXIF orientation, is not the model's). Nothing from a request is ever unpickled; PNG sizes are
checked from the header before decoding.

Batching: each series is one item of a ``@serve.batch`` queue, so series from many requests share
one forward pass (``max_batch_size`` series, waiting at most ``batch_wait_timeout_s``); series with
different horizons share a rollout that drops each series when its horizon is reached. The forward
pass runs in a worker thread, so the replica keeps parsing requests meanwhile.

Settings (:class:`ServeSettings`): deployment options (replicas or autoscaling, ``ray_actor_options``
``num_cpus``/``num_gpus``, ``max_ongoing_requests``) and the reconfigurable ``user_config``
(:class:`Limits`: batch size and wait, size limits, max horizon), either as builder args or, for
``serve run``/``serve deploy``, in the config file's ``deployments`` entry (see ``serve.yaml``).
"""

import asyncio
import base64
import binascii
import contextlib
import gc
import io
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve

from crnn import images
from crnn.inference import (ImageSizeError, check_image_size, default_input_ages, forecast_uint8, load_model,
                            pick_device, setup_torch)
from crnn.storage import json_safe

__all__ = [
    "Limits", "ServeSettings", "ActorOptions", "Autoscaling", "ForecastEngine", "RequestError",
    "parse_forecast_request", "render_forecasts", "encode_png", "decode_png", "build_app",
    "app_builder", "load_serve_config", "ForecastDeployment", "api", "DEPLOYMENT_NAME",
]

DEPLOYMENT_NAME = "CRNNForecaster"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # model channels -> crnn.images mode
# ASCII whitespace, removed from base64 before strict decoding: `base64` and MIME encoders wrap
# lines every 76 characters; anything else outside the base64 alphabet stays an error.
_B64_WHITESPACE = str.maketrans("", "", " \t\n\r\f\v")


# ============================================================================= settings
class Limits(BaseModel):
    """The deployment's ``user_config``: changeable on running replicas (``serve deploy``)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(64, ge=1, description="series per forward pass (@serve.batch)")
    batch_wait_timeout_s: float = Field(0.002, ge=0.0, description="longest wait to fill a batch")
    max_series_per_request: int = Field(256, ge=1, description="more series in one request -> 413")
    max_body_bytes: int = Field(16 * 2**20, ge=1024, description="larger request bodies -> 413")
    max_horizon: int = Field(10, ge=1, description="largest 'horizon' a request may ask for")


class ActorOptions(BaseModel):
    """``ray_actor_options`` of each replica."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(1.0, ge=0.0)
    num_gpus: float = Field(0.0, ge=0.0)
    memory: Optional[float] = Field(None, ge=0.0)
    runtime_env: Optional[dict[str, Any]] = None


class Autoscaling(BaseModel):
    """Serve ``autoscaling_config`` (fields left None take Serve's defaults)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    initial_replicas: Optional[int] = Field(None, ge=0)
    target_ongoing_requests: float = Field(32.0, gt=0.0)
    upscale_delay_s: Optional[float] = Field(None, ge=0.0)
    downscale_delay_s: Optional[float] = Field(None, ge=0.0)
    metrics_interval_s: Optional[float] = Field(None, gt=0.0)
    look_back_period_s: Optional[float] = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _check(self) -> "Autoscaling":
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"autoscaling_config: max_replicas={self.max_replicas} < min_replicas={self.min_replicas}")
        return self


class ServeSettings(BaseModel):
    """Everything that configures the app; the args of :func:`app_builder`.

    The model's own config (size, in_frames) comes from the model directory, never from here.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="model directory (local path or URI) or the published model location")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda iff num_gpus > 0")
    torch_threads: int = Field(0, ge=0, description="torch intra-op threads per replica; 0: ceil(num_cpus)")
    name: str = Field(DEPLOYMENT_NAME, description="deployment name (the 'name' in serve.yaml deployments)")
    num_replicas: Optional[Union[int, Literal["auto"]]] = Field(
        None, description="fixed replica count; None or 'auto': autoscale with autoscaling_config")
    autoscaling_config: Optional[Autoscaling] = Field(default_factory=Autoscaling)
    max_ongoing_requests: int = Field(256, ge=1, description="requests in flight per replica (>= max_batch_size)")
    ray_actor_options: ActorOptions = Field(default_factory=ActorOptions)
    user_config: Limits = Field(default_factory=Limits)
    background: Union[str, list[int]] = Field(
        "white", description="colour transparent PNG pixels are composited over: a name, '#rrggbb', "
                             "'R,G,B' or [R, G, B]; keep it the one the training data was ingested with "
                             "(jobs/ingest.py --background, default white)")

    @model_validator(mode="after")
    def _check(self) -> "ServeSettings":
        images.parse_color(self.background)  # ValueError naming the value
        if isinstance(self.num_replicas, int) and self.num_replicas < 1:
            raise ValueError(f"num_replicas={self.num_replicas}: expected >= 1 (or 'auto'/None to autoscale)")
        if self.max_ongoing_requests < self.user_config.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests={self.max_ongoing_requests} is smaller than user_config.max_batch_size="
                f"{self.user_config.max_batch_size}: a replica could never fill a batch")
        if self.device == "cuda" and self.ray_actor_options.num_gpus <= 0:
            raise ValueError("device='cuda' needs ray_actor_options.num_gpus > 0")
        return self

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        opts: dict[str, Any] = {
            "name": self.name,
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": self.ray_actor_options.model_dump(exclude_none=True),
            "user_config": self.user_config.model_dump(),
        }
        if isinstance(self.num_replicas, int):
            opts["num_replicas"] = self.num_replicas
        elif self.autoscaling_config is not None:
            opts["autoscaling_config"] = self.autoscaling_config.model_dump(exclude_none=True)
        else:
            opts["num_replicas"] = 1
        return opts

    def replica_args(self) -> dict[str, Any]:
        threads = self.torch_threads or max(1, math.ceil(self.ray_actor_options.num_cpus))
        device = self.device
        if device == "auto":
            device = "cuda" if self.ray_actor_options.num_gpus > 0 else "cpu"
        return {"model": self.model, "device": device, "torch_threads": threads,
                "background": list(images.parse_color(self.background))}


_DEPLOYMENT_KEYS = ("num_replicas", "autoscaling_config", "max_ongoing_requests", "ray_actor_options", "user_config")


def load_serve_config(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings args, http_options) from a Serve config file such as ``serve.yaml``.

    Takes the application whose ``import_path`` is this module's builder (else the first one): its
    ``args`` plus the deployment options of its ``deployments`` entry, so ``jobs/serve.py --config``
    and ``serve run`` read the same file the same way.
    """
    import yaml

    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    apps = doc.get("applications") if isinstance(doc, dict) else None
    if not apps:
        raise ValueError(f"{path}: no 'applications' list (expected a Serve config file)")
    app = next((a for a in apps if str(a.get("import_path", "")).startswith("crnn.serve:")), apps[0])
    args = dict(app.get("args") or {})
    deps = app.get("deployments") or []
    name = args.get("name", DEPLOYMENT_NAME)
    dep = next((d for d in deps if d.get("name") == name), deps[0] if len(deps) == 1 else None)
    if dep:
        args["name"] = dep.get("name", name)
        for key in _DEPLOYMENT_KEYS:
            if key in dep:
                args[key] = dep[key]
        if "num_replicas" in dep and "autoscaling_config" not in dep and dep["num_replicas"] != "auto":
            args["autoscaling_config"] = None
    return args, dict(doc.get("http_options") or {})


# ============================================================================= engine (no Ray)
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
        device = pick_device(device)
        setup_torch(device, torch_threads)
        model, cfg, meta = load_model(path, device, version=True)  # ModelError: the replica refuses to start
        return cls(model, cfg, meta, device, path, meta.pop("version"))

    def forecast(self, frames: np.ndarray, horizons: list[int]) -> list[np.ndarray]:
        """uint8 (B, in_frames, H, W, C) and one horizon per series -> B uint8 (h_i, H, W, C)."""
        return forecast_uint8(self.model, frames, self.in_frames, list(horizons), self.device)

    def warmup(self, batch: int = 2) -> None:
        x = np.zeros((batch, self.in_frames, self.height, self.width, self.channels), np.uint8)
        self.forecast(x, [1] * batch)

    def info(self) -> dict[str, Any]:
        from crnn.config import to_dict

        return json_safe({
            "model": self.source, "version": self.version, "epoch": self.meta.get("epoch"),
            "metrics": self.meta.get("metrics"), "config": to_dict(self.cfg),
            "in_frames": self.in_frames, "input_ages": self.input_ages,
            "image": {"height": self.height, "width": self.width, "channels": self.channels},
            "device": self.device, "torch_threads": torch.get_num_threads(),
        })




# ============================================================================= request parsing (no Ray)
class RequestError(Exception):
    """A bad request: HTTP ``status`` and a message naming the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class SeriesIn:
    frames: np.ndarray  # uint8 (in_frames, H, W, C)
    fmt: str  # "frames" | "png"
    ages: list[int]  # ages of the input frames


@dataclass
class ForecastIn:
    series: list[SeriesIn]
    horizon: int


@dataclass
class Spec:
    in_frames: int
    height: int
    width: int
    channels: int
    input_ages: list[int]
    background: tuple[int, int, int] = images.BACKGROUND  # uint8 RGB behind transparent PNG pixels

    @classmethod
    def of(cls, engine: ForecastEngine, background=images.BACKGROUND) -> "Spec":
        return cls(engine.in_frames, engine.height, engine.width, engine.channels, list(engine.input_ages),
                   images.parse_color(background))


_TOP_KEYS = {"series", "horizon", "ages"}
_SERIES_KEYS = {"frames", "png", "ages"}


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed (JSON has no NaN/Infinity; pixels are integers 0-255)")


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while building/dropping many small acyclic containers
    (a 64-series JSON body is ~130k lists): with a large heap (torch, Ray) its collections cost 10x
    the parse itself. Reference counting still frees everything."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def parse_forecast_request(body: bytes, spec: Spec, limits: Limits) -> ForecastIn:
    """Check and decode a ``POST /forecast`` body; raises :class:`RequestError` naming the problem."""
    with _gc_paused():
        return _parse_forecast_request(body, spec, limits)


def _parse_forecast_request(body: bytes, spec: Spec, limits: Limits) -> ForecastIn:
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, f"request body of {len(body)} bytes exceeds the limit of "
                                f"{limits.max_body_bytes} bytes (max_body_bytes)")
    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestError(400, "request body is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise RequestError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise RequestError(422, f"request body must be a JSON object with a 'series' list, got {type(doc).__name__}")
    extra = sorted(set(doc) - _TOP_KEYS)
    if extra:
        raise RequestError(422, f"unknown field(s) {extra}; expected 'series', 'horizon', 'ages'")
    if "series" not in doc:
        raise RequestError(422, "missing field 'series' (a list of series, each {'frames': [...]} or {'png': [...]})")
    series = doc["series"]
    if not isinstance(series, list):
        raise RequestError(422, f"'series' must be a list, got {type(series).__name__}")
    if not series:
        raise RequestError(422, "'series' is empty: send at least one series")
    if len(series) > limits.max_series_per_request:
        raise RequestError(413, f"{len(series)} series in one request; the limit is "
                                f"{limits.max_series_per_request} (max_series_per_request)")
    horizon = doc.get("horizon", 1)
    if horizon is None:
        horizon = 1
    if isinstance(horizon, bool) or not isinstance(horizon, int) or not 1 <= horizon <= limits.max_horizon:
        raise RequestError(422, f"'horizon' must be an integer from 1 to {limits.max_horizon} (max_horizon), "
                                f"got {horizon!r}")
    default_ages = spec.input_ages
    if doc.get("ages") is not None:
        default_ages = _parse_ages(doc["ages"], "ages", spec.in_frames)
    out = [_parse_series(s, i, spec, default_ages) for i, s in enumerate(series)]
    return ForecastIn(out, horizon)


def _parse_ages(ages: Any, where: str, n: int) -> list[int]:
    if not isinstance(ages, list) or len(ages) != n:
        got = f"{len(ages)} values" if isinstance(ages, list) else type(ages).__name__
        raise RequestError(422, f"{where}: expected a list of {n} ages (one per input frame), got {got}")
    if any(isinstance(a, bool) or not isinstance(a, int) for a in ages):
        raise RequestError(422, f"{where}: ages must be integers, got {ages!r}")
    steps = {b - a for a, b in zip(ages, ages[1:])}
    if any(s <= 0 for s in steps) or len(steps) > 1:
        raise RequestError(422, f"{where}: ages must be strictly ascending and evenly spaced, got {ages!r}")
    return list(ages)


def _parse_series(s: Any, i: int, spec: Spec, default_ages: list[int]) -> SeriesIn:
    where = f"series[{i}]"
    if not isinstance(s, dict):
        raise RequestError(422, f"{where}: expected an object {{'frames': [...]}} or {{'png': [...]}}, "
                                f"got {type(s).__name__}")
    extra = sorted(set(s) - _SERIES_KEYS)
    if extra:
        raise RequestError(422, f"{where}: unknown field(s) {extra}; expected 'frames' or 'png', and optional 'ages'")
    has_f, has_p = "frames" in s, "png" in s
    if has_f == has_p:
        raise RequestError(422, f"{where}: give exactly one of 'frames' (nested arrays) or 'png' (base64 PNG strings)")
    ages = default_ages if s.get("ages") is None else _parse_ages(s["ages"], f"{where}.ages", spec.in_frames)
    if has_f:
        return SeriesIn(_frames_from_arrays(s["frames"], f"{where}.frames", spec), "frames", ages)
    return SeriesIn(_frames_from_png(s["png"], f"{where}.png", spec), "png", ages)


def _check_count(obj: Any, where: str, spec: Spec, what: str) -> None:
    if not isinstance(obj, list):
        raise RequestError(422, f"{where}: expected a list of {spec.in_frames} {what}, got {type(obj).__name__}")
    if len(obj) != spec.in_frames:
        raise RequestError(422, f"{where}: expected {spec.in_frames} frames (the model's in_frames; oldest "
                                f"first), got {len(obj)}")


def _frames_from_arrays(obj: Any, where: str, spec: Spec) -> np.ndarray:
    _check_count(obj, where, spec, "images")
    want = f"{spec.height}x{spec.width}x{spec.channels} (HxWxC)"
    try:
        a = np.array(obj)
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise RequestError(422, f"{where}: images must be {want} nested arrays of integers 0-255 "
                                "(got ragged or non-numeric nesting)") from None
    if a.dtype.kind not in "iuf":
        raise RequestError(422, f"{where}: values must be integers 0-255 (found "
                                f"{'booleans' if a.dtype.kind == 'b' else 'non-numeric or oversized values'})")
    if a.ndim != 4:
        raise RequestError(422, f"{where}: each frame must be a {want} nested array; got frames of shape "
                                f"{'x'.join(map(str, a.shape[1:])) or 'scalar'}")
    if a.shape[1:] == (spec.channels, spec.height, spec.width) and spec.channels != spec.width:
        raise RequestError(422, f"{where}: frames look channels-first (CxHxW = {spec.channels}x{spec.height}x"
                                f"{spec.width}); send each image as HxWxC nested arrays")
    _check_size(a.shape[1], a.shape[2], a.shape[3], where, spec)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise RequestError(422, f"{where}: values must be finite integers 0-255 (found NaN or infinity)")
        if (a != np.round(a)).any():
            raise RequestError(422, f"{where}: values must be integers 0-255 (found fractional values)")
    lo, hi = a.min(), a.max()
    if lo < 0 or hi > 255:
        raise RequestError(422, f"{where}: values must be 0-255, found values from {lo:g} to {hi:g}")
    return a.astype(np.uint8)


def _check_size(h: int, w: int, c: int, where: str, spec: Spec) -> None:
    try:
        check_image_size((spec.height, spec.width, spec.channels), (h, w, c), where)
    except ImageSizeError as e:
        raise RequestError(422, str(e)) from None


def decode_png(s: Any, where: str, spec: Spec) -> np.ndarray:
    """One base64 PNG string -> uint8 (H, W, C) for the model of ``spec``, decoded by
    :func:`crnn.images.normalize` (the decoder ingest uses): any PNG colour type and bit depth,
    transparency over ``spec.background``, EXIF orientation applied. Never resized: the size as shown
    must be the model's, checked from the header before any pixel is decoded.

    ``s`` may be a data URL and may hold ASCII whitespace (line-wrapped base64). Raises
    :class:`RequestError` naming ``where`` (series and frame): 400 for malformed base64, a non-PNG
    or a corrupt PNG; 422 for a non-string, a wrong size or pixels with no 8-bit meaning.
    """
    if not isinstance(s, str):
        raise RequestError(422, f"{where}: expected a base64 PNG string, got {type(s).__name__}")
    if s.startswith("data:"):  # tolerate data URLs: data:image/png;base64,....
        s = s.partition(",")[2]
    try:
        raw = base64.b64decode(s.translate(_B64_WHITESPACE), validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(400, f"{where}: malformed base64 ({e})") from None
    if not raw.startswith(PNG_SIGNATURE):
        raise RequestError(400, f"{where}: not a PNG image (no PNG signature)")
    mode = _CHANNEL_MODES.get(spec.channels)
    if mode is None:
        raise RequestError(422, f"{where}: the model takes {spec.channels} channels; PNG input needs a 1-, 3- "
                                "or 4-channel model (send 'frames' instead)")
    want = f"{spec.height}x{spec.width}"
    try:
        im = images.open_image(raw, where, formats=("PNG",))
    except images.ImageError as e:
        if e.kind == "too_large":
            raise RequestError(422, f"{where}: PNG {e.reason}; the model takes {want} pixels (HxW)") from None
        raise RequestError(400, f"{where}: corrupt PNG ({e.reason})") from None
    with im:
        w, h = im.size  # from the header; nothing decoded yet
        if sorted((h, w)) != sorted((spec.height, spec.width)):
            raise RequestError(422, f"{where}: PNG is {h}x{w} pixels (HxW) but the model takes {want}")
        try:
            shown = images.oriented_size(im, where)
            if shown != (spec.height, spec.width):
                if shown == (h, w):  # not turned: no EXIF orientation, or one that keeps the size
                    raise RequestError(422, f"{where}: PNG is {h}x{w} pixels (HxW) but the model takes {want} "
                                            f"(height and width swapped)")
                raise RequestError(422, f"{where}: PNG is {shown[0]}x{shown[1]} pixels (HxW) as shown (stored "
                                        f"{h}x{w}, turned by its EXIF orientation) but the model takes {want}")
            a = np.asarray(images.normalize(im, where, mode=mode, background=spec.background), dtype=np.uint8)
        except images.ImageError as e:
            if e.kind == "unsupported":
                raise RequestError(422, f"{where}: PNG {e.reason}") from None
            raise RequestError(400, f"{where}: corrupt PNG ({e.reason})") from None
    return a[:, :, None] if a.ndim == 2 else a


def _frames_from_png(obj: Any, where: str, spec: Spec) -> np.ndarray:
    _check_count(obj, where, spec, "base64 PNG strings")
    return np.stack([decode_png(s, f"{where}[{j}]", spec) for j, s in enumerate(obj)])


def encode_png(frame: np.ndarray) -> str:
    """uint8 (H, W, C) -> base64 PNG string (C = 1, 3 or 4)."""
    from PIL import Image

    buf = io.BytesIO()
    img = frame[:, :, 0] if frame.shape[2] == 1 else frame
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render_forecasts(req: ForecastIn, outputs: list[np.ndarray], version: str) -> bytes:
    """The JSON response body: one forecast per series, in order, in the series' own format."""
    with _gc_paused():
        return _render_forecasts(req, outputs, version)


def _render_forecasts(req: ForecastIn, outputs: list[np.ndarray], version: str) -> bytes:
    forecasts = []
    for s, out in zip(req.series, outputs):
        step = s.ages[-1] - s.ages[-2] if len(s.ages) >= 2 else 5
        ages = [s.ages[-1] + step * (k + 1) for k in range(len(out))]
        if s.fmt == "frames":
            forecasts.append({"ages": ages, "frames": out.tolist()})
        else:
            forecasts.append({"ages": ages, "png": [encode_png(f) for f in out]})
    doc = {"forecasts": forecasts, "horizon": req.horizon, "model_version": version}
    return json.dumps(doc, separators=(",", ":")).encode()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes: by Content-Length up front, and
    by counting while streaming (chunked bodies, or a lying header)."""
    cl = request.headers.get("content-length")
    if cl is not None:
        try:
            n = int(cl)
        except ValueError:
            raise RequestError(400, f"invalid Content-Length header {cl!r}") from None
        if n > limit:
            raise RequestError(413, f"request body of {n} bytes exceeds the limit of {limit} bytes (max_body_bytes)")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestError(413, f"request body exceeds the limit of {limit} bytes (max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


# ============================================================================= OpenAPI documentation models
Pixel = Annotated[int, Field(ge=0, le=255)]
AgeList = Annotated[Optional[list[int]], Field(
    None, description="ages of the input frames, evenly spaced (default: the model's training ages, e.g. "
                      "[10, 15, 20, 25]); the forecast ages continue the spacing")]


class FramesSeries(BaseModel):
    """One series as nested arrays: ``in_frames`` images (4 for the paper's model), oldest first."""

    frames: list[list[list[list[Pixel]]]] = Field(
        description="T images, each H x W x C nested arrays of integers 0-255 (T = in_frames, e.g. 4; "
                    "H x W x C = 32 x 16 x 3 for the paper's model; see GET /model)")
    ages: AgeList


class PngSeries(BaseModel):
    """One series as base64-encoded PNG images, oldest first."""

    png: list[str] = Field(description="T base64 PNG strings, width x height = 16 x 32 for the paper's model "
                                       "(after EXIF orientation; never resized). Any colour type and bit depth: "
                                       "16-bit is scaled to 8, transparency composited over the server's "
                                       "background (default white). Line-wrapped base64 and a data: URL prefix "
                                       "are accepted")
    ages: AgeList


class ForecastRequest(BaseModel):
    """Body of POST /forecast."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"series": [{"png": ["iVBORw0KGgo...", "iVBORw0KGgo...", "iVBORw0KGgo...", "iVBORw0KGgo..."]}],
         "horizon": 3, "ages": [10, 15, 20, 25]}]})

    series: list[Union[FramesSeries, PngSeries]] = Field(
        min_length=1, description="the batch: one entry per subject (at most max_series_per_request)")
    horizon: int = Field(1, ge=1, description="future frames to forecast per series (at most max_horizon); "
                                              "beyond 1 the model's own forecasts are fed back (rollout)")
    ages: AgeList


class FramesForecast(BaseModel):
    ages: list[int] = Field(description="ages of the forecast frames")
    frames: list[list[list[list[Pixel]]]] = Field(description="horizon images, H x W x C integers 0-255")


class PngForecast(BaseModel):
    ages: list[int] = Field(description="ages of the forecast frames")
    png: list[str] = Field(description="horizon base64 PNG images")


class ForecastResponse(BaseModel):
    forecasts: list[Union[FramesForecast, PngForecast]] = Field(
        description="one per input series, in order, in the format that series used")
    horizon: int
    model_version: str


class ErrorResponse(BaseModel):
    detail: str = Field(description="what is wrong with the request, naming the field")


class _API(FastAPI):
    """FastAPI whose OpenAPI document also describes the hand-parsed /forecast request body."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = super().openapi()
            req = ForecastRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            comps = schema.setdefault("components", {}).setdefault("schemas", {})
            comps.update(req.pop("$defs", {}))
            comps["ForecastRequest"] = req
            self.openapi_schema = schema
        return self.openapi_schema


api = _API(
    title="CRNN pine forecaster",
    version="1",
    description="Forecast future images of a pine from its past images (Zhang & Li's CRNN). "
                "POST /forecast a batch of series as nested integer arrays or base64 PNGs; "
                "GET /model for the model's config, training metrics, version and the limits.",
)


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse({"detail": exc.message}, status_code=exc.status)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


api.add_exception_handler(RequestError, _request_error)
api.add_exception_handler(Exception, _internal_error)

_ERRORS = {
    400: {"model": ErrorResponse, "description": "not JSON (or NaN/Infinity), malformed base64 or PNG"},
    413: {"model": ErrorResponse, "description": "body larger than max_body_bytes, or more series than "
                                                 "max_series_per_request"},
    422: {"model": ErrorResponse, "description": "wrong shape: frame count, image size, channels, values "
                                                 "outside 0-255, empty batch, bad horizon or ages"},
}


# ============================================================================= the deployment
@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=256)
@serve.ingress(api)
class ForecastDeployment:
    """One replica: the model, the batch queue, the HTTP routes."""

    def __init__(self, model: str, device: str = "auto", torch_threads: int = 0,
                 background=images.BACKGROUND):
        self.engine = ForecastEngine.load(model, device, torch_threads)
        self.spec = Spec.of(self.engine, background)
        self.limits = Limits()
        self.stats = {"requests": 0, "series": 0, "batches": 0, "largest_batch": 0}
        # One thread runs the forward passes, so the event loop keeps parsing requests meanwhile.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crnn-forecast")
        self.engine.warmup()
        # The model, torch and Ray are long-lived: keep them out of every later GC pass.
        gc.collect()
        gc.freeze()

    def reconfigure(self, user_config: dict) -> None:
        limits = Limits.model_validate(user_config or {})
        self._batched.set_max_batch_size(limits.max_batch_size)
        self._batched.set_batch_wait_timeout_s(limits.batch_wait_timeout_s)
        self.limits = limits

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _batched(self, items: list[tuple[np.ndarray, int]]) -> list[np.ndarray]:
        self.stats["batches"] += 1
        self.stats["series"] += len(items)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(items))
        frames = np.stack([f for f, _ in items])
        horizons = [h for _, h in items]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.engine.forecast, frames, horizons)

    @api.get("/healthz", summary="Liveness: the model is loaded")
    def healthz(self) -> dict:
        return {"status": "ok", "model_version": self.engine.version}

    @api.get("/model", summary="The model: config, training metrics, version; limits; replica stats")
    def model_info(self) -> dict:
        return {**self.engine.info(), "limits": self.limits.model_dump(), "stats": dict(self.stats),
                "background": "#%02x%02x%02x" % tuple(self.spec.background)}

    @api.post(
        "/forecast",
        summary="Forecast the next frames of a batch of image series",
        response_model=ForecastResponse,
        responses=_ERRORS,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ForecastRequest"}}}}},
    )
    async def forecast(self, request: Request) -> Response:
        limits = self.limits
        body = await read_body(request, limits.max_body_bytes)
        req = parse_forecast_request(body, self.spec, limits)
        self.stats["requests"] += 1
        outs = await asyncio.gather(*(self._batched((s.frames, req.horizon)) for s in req.series))
        return Response(render_forecasts(req, outs, self.engine.version), media_type="application/json")


def build_app(settings: ServeSettings):
    """The Serve application for ``settings`` (``serve.run(build_app(s))``)."""
    return ForecastDeployment.options(**settings.deployment_options()).bind(**settings.replica_args())


def app_builder(args: dict):
    """``import_path: crnn.serve:app_builder`` for ``serve run``/``serve deploy``; ``args`` are
    :class:`ServeSettings` fields (at least ``model``)."""
    if isinstance(args, ServeSettings):
        return build_app(args)
    args = dict(args or {})
    if "model" not in args and os.environ.get("CRNN_MODEL"):
        args["model"] = os.environ["CRNN_MODEL"]
    return build_app(ServeSettings.model_validate(args))

"""Online forecasting with Ray Serve: a FastAPI ingress on CPUs, the model behind ``@serve.batch``.

    python jobs/serve.py --model runs/x/model                  # http://127.0.0.1:8000/docs
    PYTHONPATH=$PWD serve run serve.yaml                        # the same app from a Serve config

Modules: :mod:`~crnn.serve.settings` (settings on Ray's Serve schemas, ``serve.yaml``),
:mod:`~crnn.serve.codec` (JSON/PNG <-> uint8 arrays), :mod:`~crnn.serve.protocol` (the pydantic
request/response models that validate and document ``POST /forecast``), :mod:`~crnn.serve.model`
(the model deployment) and :mod:`~crnn.serve.app` (the ingress deployment and the app builder).

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
  characters as ``base64`` and MIME encoders write it). The response holds the next ``horizon``
  frames (default 1: age 30), forecast by autoregressive rollout (:func:`crnn.model.rollout`):
  beyond one step the model's own forecasts are fed back as inputs. ``ages`` (top level, or per
  series) gives the ages of the input frames, evenly spaced; the forecast ages continue that
  spacing. Default: the model's training ages (10, 15, 20, 25). ``target_ages`` (top level or per
  series; not with a ``horizon`` other than 1) asks for forecasts at those ages instead: any later
  ages for a time-aware model (``model.kind=timevp``, which also takes any number >= 2 of frames at
  any increasing real ages), whole steps of the input spacing for a grid model
  (:func:`crnn.timeaware.forecast_at`); each forecast is labelled with its ages. Ages a model
  cannot answer get 422 naming the series (:func:`crnn.timeaware.check_ages`). Unknown fields are
  refused (422): the request schema in ``/openapi.json`` is exactly what is accepted.
* ``GET /healthz`` -- ``{"status": "ok"}`` once the model is loaded.
* ``GET /model`` -- config, training metrics, epoch, version (content hash), input ages, limits;
  ``time`` (:meth:`crnn.timeaware.TimeDomain.as_dict`: the ages the model answers) and ``trust``
  (the model directory's ``trust.json``, or null).

Bad requests get a JSON error ``{"detail": "<what is wrong, naming the field>"}``: 400 for a body
that is not JSON (NaN/Infinity included) or malformed base64/PNG (naming series and frame); 413 for a
body over ``max_body_bytes`` (checked from Content-Length before reading, and while reading) or more
than ``max_series_per_request`` series; 415 for a Content-Type that is not JSON (a form, as ``curl -d``
sends without ``-H 'Content-Type: application/json'``; multipart; image/png; text), naming it and the
accepted ``application/json``/``application/*+json`` (no Content-Type at all is read as JSON); 422 for JSON of the wrong shape (an unknown field, frame
count, image size, channels, values outside 0-255, empty batch, bad horizon or ages; a PNG whose
size, as shown after its EXIF orientation, is not the model's). Nothing from a request is ever
unpickled; PNG sizes are checked from the header before decoding.

Composition: ``CRNNIngress`` replicas (CPU) parse and decode requests and encode responses;
``CRNNForecaster`` replicas (CPU or GPU) get uint8 arrays through a ``DeploymentHandle`` and queue
each series in a ``@serve.batch`` method, so series from many requests share one forward pass
(``max_batch_size`` series, waiting at most ``batch_wait_timeout_s``) and a GPU replica never waits
on JSON or PNG.

Settings (:class:`ServeSettings`): each deployment's options (replicas or autoscaling,
``ray_actor_options`` ``num_cpus``/``num_gpus``, ``max_ongoing_requests``) on Ray's own schemas, and
the reconfigurable ``user_config`` (:class:`Limits`: batch size and wait for the model deployment;
size limits, max horizon and max target ages for the ingress), either as builder args or, for ``serve run``/``serve
deploy``, in the config file's ``deployments`` entries (see ``serve.yaml``).
"""

from crnn.serve.app import ForecastIngress, api, app_builder, build_app, read_body
from crnn.serve.codec import RequestError, Spec, decode_png, encode_png, render_forecasts
from crnn.serve.model import ForecastEngine, ForecastModel
from crnn.serve.protocol import (JSON_TYPES, ForecastIn, ForecastRequest, ForecastResponse, SeriesIn, check_content_type,
                                 parse_forecast_request)
from crnn.serve.settings import (DEPLOYMENT_NAME, INGRESS_DEPLOYMENT, MODEL_DEPLOYMENT, ActorOptions, Autoscaling,
                                 BatchLimits, Limits, RequestLimits, ServeSettings, load_serve_config)

__all__ = [
    "ActorOptions", "Autoscaling", "BatchLimits", "DEPLOYMENT_NAME", "JSON_TYPES", "check_content_type", "ForecastEngine", "ForecastIn",
    "ForecastIngress", "ForecastModel", "ForecastRequest", "ForecastResponse", "INGRESS_DEPLOYMENT", "Limits",
    "MODEL_DEPLOYMENT", "RequestError", "RequestLimits", "SeriesIn", "ServeSettings", "Spec", "api",
    "app_builder", "build_app", "decode_png", "encode_png", "load_serve_config", "parse_forecast_request",
    "read_body", "render_forecasts",
]

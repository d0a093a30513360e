"""The Serve application: a FastAPI ingress deployment on CPUs in front of the model deployment.

``CRNNIngress`` (this module) reads each request, validates and decodes it with the request model
(:class:`crnn.serve.protocol.ForecastRequest`: JSON nested arrays or base64 PNG -> uint8 arrays),
sends the arrays through a ``DeploymentHandle`` to ``CRNNForecaster`` (:mod:`crnn.serve.model`:
``@serve.batch``, the forward pass, CPU or GPU) and encodes the forecasts. Scale the two
independently: ingress replicas for request parsing, model replicas for the forward pass.
"""

# No `from __future__ import annotations` here: Serve's class-based FastAPI view reads the routes'
# annotations as objects.
from typing import Any, Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from crnn import images
from crnn.serve.codec import RequestError, Spec, render_forecasts
from crnn.serve.model import ForecastModel
from crnn.serve.protocol import (ErrorResponse, ForecastRequest, ForecastResponse, check_content_type,
                                 parse_forecast_request)
from crnn.serve.settings import INGRESS_DEPLOYMENT, RequestLimits, ServeSettings, default_model_from_env


class _API(FastAPI):
    """FastAPI whose OpenAPI document also holds :class:`ForecastRequest` and the models it refers
    to. ``POST /forecast`` reads its body itself (to refuse an oversized body while it streams, and
    to tell 400/413/422 apart) and validates it with that same model, so FastAPI does not see the
    model as a body parameter: its schema is added here, the route refers to it."""

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
    415: {"model": ErrorResponse, "description": "a Content-Type that is not JSON (application/json or "
                                                 "application/*+json; a form, multipart, image/png, text)"},
    422: {"model": ErrorResponse, "description": "not the ForecastRequest schema (an unknown field included), "
                                                 "or the wrong shape for the model: frame count, image size, "
                                                 "channels, values outside 0-255, empty batch, bad horizon; "
                                                 "ages or target ages the model cannot answer (naming the series)"},
}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes: by Content-Length up front, and
    by counting while streaming (chunked bodies, or a lying header). 400 for a bad Content-Length."""
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


@serve.deployment(name=INGRESS_DEPLOYMENT, max_ongoing_requests=256, ray_actor_options={"num_cpus": 1})
@serve.ingress(api)
class ForecastIngress:
    """One ingress replica: HTTP routes, request decoding and response encoding (CPU only)."""

    def __init__(self, model: DeploymentHandle, background=images.BACKGROUND):
        self.model = model
        self.background = images.parse_color(background)
        self.limits = RequestLimits()
        self._spec: Optional[Spec] = None
        self._version = ""

    def reconfigure(self, user_config: dict) -> None:
        self.limits = RequestLimits.model_validate(user_config or {})

    async def spec(self) -> Spec:
        """What the model takes, asked of the model deployment once."""
        if self._spec is None:
            d = await self.model.describe.remote()
            self._version = d["version"]
            self._spec = Spec(d["in_frames"], d["height"], d["width"], d["channels"], d["input_ages"],
                              self.background, d.get("domain"))
        return self._spec

    @api.get("/healthz", summary="Liveness: the model is loaded")
    async def healthz(self) -> dict:
        await self.spec()
        return {"status": "ok", "model_version": self._version}

    @api.get("/model", summary="The model: config, training metrics, version; the ages it answers (time), how "
                               "far to trust it (trust); limits; replica stats")
    async def model_info(self) -> dict:
        info = await self.model.info.remote()
        return {**info, "limits": {**info["limits"], **self.limits.model_dump()},
                "background": "#%02x%02x%02x" % tuple(self.background)}

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
        check_content_type(request.headers.get("content-type"))  # 415 before the body is read
        body = await read_body(request, limits.max_body_bytes)
        req = parse_forecast_request(body, await self.spec(), limits)
        if req.at_ages:  # a time-aware model, or target ages asked for: ragged series, ages and targets
            outs = await self.model.forecast_at.remote([s.frames for s in req.series], [s.ages for s in req.series],
                                                      [s.target_ages for s in req.series])
        else:  # a grid model's horizon: one rollout, as before target ages existed
            frames = np.stack([s.frames for s in req.series])  # (n, in_frames, H, W, C) uint8
            outs = await self.model.forecast.remote(frames, [req.horizon] * len(req.series))
        return Response(render_forecasts(req, outs, self._version), media_type="application/json")


def build_app(settings: ServeSettings):
    """The Serve application for ``settings`` (``serve.run(build_app(s))``): the ingress bound to
    the model deployment."""
    args = settings.replica_args()
    background = args.pop("background")
    model = ForecastModel.options(**settings.deployment_options()).bind(**args)
    return ForecastIngress.options(**settings.ingress_options()).bind(model, background=background)


def app_builder(args: dict):
    """``import_path: crnn.serve:app_builder`` for ``serve run``/``serve deploy``; ``args`` are
    :class:`ServeSettings` fields (at least ``model``, else ``$CRNN_MODEL``). The config file's
    ``deployments`` entries are applied by Serve itself on top of these."""
    if isinstance(args, ServeSettings):
        return build_app(args)
    return build_app(ServeSettings.model_validate(default_model_from_env(dict(args or {}))))

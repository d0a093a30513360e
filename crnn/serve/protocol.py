"""The HTTP request and response of ``POST /forecast``: pydantic models that both validate requests
and document them in the OpenAPI schema, so what ``/openapi.json`` shows is what is accepted.

Every model forbids unknown fields (``extra="forbid"``, ``additionalProperties: false`` in the
schema). What depends on the served model (frame count, image size, channels, default ages, the ages
it answers) and on the limits (``max_horizon``, ``max_targets``) comes from the validation context
``{"spec": Spec, "limits": RequestLimits}``, given by :func:`parse_forecast_request`. With a
``spec`` in the context, validating turns ``frames`` and ``png`` into uint8 (T, H, W, C) arrays
(:mod:`crnn.serve.codec`) with one numpy pass rather than one pydantic check per pixel; without
one, only the schema's own checks run and the values stay JSON.

Ages (issue #14): ``ages`` (one per input frame, strictly increasing) and ``target_ages`` (the ages
to forecast, after the last input) are real numbers, given at the top level as defaults for every
series or per series (which overrides). After the schema's checks, :func:`parse_forecast_request`
resolves each series' ages and targets and checks them against the model with
:func:`crnn.timeaware.check_ages` (422 naming ``series[i]`` and the problem).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Optional, Union

import numpy as np
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag,
                      ValidationError, ValidationInfo, WrapValidator, field_validator)
from pydantic_core import PydanticCustomError

from crnn.serve.codec import RequestError, Spec, age_label, check_count, decode_png, frames_from_arrays, gc_paused
from crnn.serve.settings import RequestLimits
from crnn.timeaware import AgeError, TimeDomain, check_ages

_MALFORMED = "malformed"  # error type of base64/PNG that cannot be read: HTTP 400, not 422
_NAMED = "named"  # error type whose message names its field itself


def _ctx(info: ValidationInfo, key: str):
    return (info.context or {}).get(key)


def _as_error(e: RequestError) -> PydanticCustomError:
    return PydanticCustomError(_MALFORMED if e.status == 400 else "invalid_image", e.message)


def _frames(v: Any, handler, info: ValidationInfo):
    spec = _ctx(info, "spec")
    if spec is None:
        return handler(v)  # the schema's own checks: nested lists of integers 0-255
    try:
        return frames_from_arrays(v, None, spec, exact_bools=_ctx(info, "maybe_bools") is not False)
    except RequestError as e:
        raise _as_error(e) from None


def _png_count(v: Any, info: ValidationInfo):
    spec = _ctx(info, "spec")
    if spec is not None and isinstance(v, list):
        try:
            check_count(v, None, spec, "base64 PNG strings")
        except RequestError as e:
            raise _as_error(e) from None
    return v


def _png_frame(v: str, info: ValidationInfo):
    spec = _ctx(info, "spec")
    if spec is None:
        return v
    try:
        return decode_png(v, None, spec)
    except RequestError as e:
        raise _as_error(e) from None


def _png_stack(v: list, info: ValidationInfo):
    return np.stack(v) if _ctx(info, "spec") is not None else v


Pixel = Annotated[int, Field(ge=0, le=255)]
Frames = Annotated[list[list[list[list[Pixel]]]], WrapValidator(_frames)]
PngFrames = Annotated[list[Annotated[str, AfterValidator(_png_frame)]],
                      BeforeValidator(_png_count), AfterValidator(_png_stack)]
# An age: a JSON number, int or float (strict: no booleans, no strings), finite (1e400 is refused;
# NaN/Infinity are not JSON at all: 400). Its unit is the model's (GET /model: time.age_unit).
Age = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Ages = Annotated[Optional[list[Age]], Field(
    None, description="ages of the input frames, one per frame, strictly increasing, in the model's age unit "
                      "(GET /model: time). Default: the model's training ages (e.g. [10, 15, 20, 25]). A grid "
                      "model takes evenly spaced ages; a time-aware model any. Per series, overrides the "
                      "top-level value")]
TargetAges = Annotated[Optional[list[Age]], Field(
    None, min_length=1, description="ages to forecast, strictly increasing, after the last input age (at most "
                                    "max_targets). Default: 'horizon' steps after the last input. A grid model "
                                    "answers whole steps of its input spacing; a time-aware model any age in "
                                    "GET /model's time.accepted_ages. Per series, overrides the top-level value; "
                                    "not with a 'horizon' other than 1")]


class FramesSeries(BaseModel):
    """One series as nested arrays: ``in_frames`` images (4 for the paper's model), oldest first."""

    model_config = ConfigDict(extra="forbid")

    frames: Frames = Field(
        description="T images, each H x W x C nested arrays of integers 0-255 (T = in_frames, e.g. 4; "
                    "H x W x C = 32 x 16 x 3 for the paper's model; see GET /model)")
    ages: Ages
    target_ages: TargetAges


class PngSeries(BaseModel):
    """One series as base64-encoded PNG images, oldest first."""

    model_config = ConfigDict(extra="forbid")

    png: PngFrames = Field(
        description="T base64 PNG strings, width x height = 16 x 32 for the paper's model (after EXIF "
                    "orientation; never resized). Any colour type and bit depth: 16-bit is scaled to 8, "
                    "transparency composited over the server's background (default white). Line-wrapped "
                    "base64 and a data: URL prefix are accepted")
    ages: Ages
    target_ages: TargetAges


def _series_kind(v: Any) -> Optional[str]:
    if isinstance(v, dict) and ("frames" in v) != ("png" in v):
        return "FramesSeries" if "frames" in v else "PngSeries"
    return None  # -> the custom error below


Series = Annotated[
    Union[Annotated[FramesSeries, Tag("FramesSeries")], Annotated[PngSeries, Tag("PngSeries")]],
    Discriminator(_series_kind, custom_error_type="series_format", custom_error_message=(
        "expected an object with exactly one of 'frames' (nested arrays) or 'png' (base64 PNG strings)"))]


class ForecastRequest(BaseModel):
    """Body of POST /forecast."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"series": [{"png": ["iVBORw0KGgo...", "iVBORw0KGgo...", "iVBORw0KGgo...", "iVBORw0KGgo..."]}],
         "horizon": 3, "ages": [10, 15, 20, 25]},
        {"series": [{"png": ["iVBORw0KGgo...", "iVBORw0KGgo...", "iVBORw0KGgo...", "iVBORw0KGgo..."],
                     "ages": [7, 11, 12, 19]},
                    {"png": ["iVBORw0KGgo...", "iVBORw0KGgo..."], "ages": [3.5, 9], "target_ages": [12]}],
         "target_ages": [22.5, 40]}]})

    series: list[Series] = Field(
        min_length=1, description="the batch: one entry per subject (at most max_series_per_request)")
    horizon: Optional[int] = Field(1, ge=1, description="future frames to forecast per series (at most "
                                                        "max_horizon; null: 1), at the next 'horizon' steps "
                                                        "after the last input (a grid model: its input spacing, "
                                                        "rolled out; a time-aware model: GET /model's "
                                                        "time.step); not with target_ages unless 1")
    ages: Ages
    target_ages: TargetAges

    @field_validator("series", mode="before")
    @classmethod
    def _not_empty(cls, v: Any) -> Any:
        if v == []:
            raise PydanticCustomError(_NAMED, "'series' is empty: send at least one series")
        return v

    @field_validator("horizon", mode="wrap")
    @classmethod
    def _horizon(cls, v: Any, handler, info: ValidationInfo) -> int:
        if v is None:
            return 1
        limits = _ctx(info, "limits")
        top = limits.max_horizon if limits is not None else None
        if isinstance(v, bool) or not isinstance(v, int) or v < 1 or (top is not None and v > top):
            raise PydanticCustomError(_NAMED, f"'horizon' must be an integer from 1 to {top or 'max_horizon'} "
                                              f"(max_horizon), got {v!r}")
        return handler(v)


_FORECAST_AGES = "ages of the forecast frames (the series' target ages): an integer where the age is whole"


class FramesForecast(BaseModel):
    ages: list[Union[int, float]] = Field(description=_FORECAST_AGES)
    frames: list[list[list[list[Pixel]]]] = Field(description="one image per target age, H x W x C integers 0-255")


class PngForecast(BaseModel):
    ages: list[Union[int, float]] = Field(description=_FORECAST_AGES)
    png: list[str] = Field(description="one base64 PNG image per target age")


class ForecastResponse(BaseModel):
    """Body of a 200 answer to POST /forecast (written by :func:`crnn.serve.codec.render_forecasts`)."""

    forecasts: list[Union[FramesForecast, PngForecast]] = Field(
        description="one per input series, in order, in the format that series used")
    horizon: Optional[int] = Field(description="the request's horizon; null when target ages were asked for")
    model_version: str


class ErrorResponse(BaseModel):
    detail: str = Field(description="what is wrong with the request, naming the field")


# ----------------------------------------------------------------------------- decoded request
@dataclass
class SeriesIn:
    frames: np.ndarray  # uint8 (T, H, W, C): T = in_frames (grid model) or any >= 2 (time-aware)
    fmt: str  # "frames" | "png"
    ages: list[float]  # T ages of the input frames, strictly increasing
    target_ages: list[float]  # m ages to forecast, strictly increasing, after ages[-1]


@dataclass
class ForecastIn:
    """A checked request. ``at_ages``: forecast with :func:`crnn.timeaware.forecast_at` at each
    series' ``target_ages`` (a time-aware model, or target ages asked for); else the grid models'
    horizon rollout (``horizon`` steps; the target ages only label them)."""

    series: list[SeriesIn]
    horizon: Optional[int]
    at_ages: bool = False


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed (JSON has no NaN/Infinity; pixels are integers 0-255)")


#: Media types ``POST /forecast`` parses (its body is JSON; PNGs travel inside it as base64 strings):
#: ``application/json`` and any ``application/<x>+json`` (RFC 6839), with parameters such as charset.
JSON_TYPES = ("application/json", "application/*+json")


def check_content_type(value: Optional[str]) -> None:
    """Refuse (415) a ``Content-Type`` that is not JSON, before the body is read: a form
    (``application/x-www-form-urlencoded``: what ``curl -d`` sends unless told otherwise), a
    multipart upload, raw PNG bytes, text. The media type is compared without its parameters and
    case (``application/json; charset=utf-8``, ``Application/JSON`` are JSON). A request without the
    header is read as JSON, as before (clients that stream a body without naming it, and the JSON
    parser's own 400 for anything else). Raises :class:`RequestError` (415) naming the type received
    and :data:`JSON_TYPES`."""
    if value is None:
        return
    media = value.split(";", 1)[0].strip().lower()
    kind, _, sub = media.partition("/")
    if kind == "application" and (sub == "json" or (sub.endswith("+json") and len(sub) > len("+json"))):
        return
    hint = ""
    if media == "application/x-www-form-urlencoded":
        hint = " (curl -d sends that unless given -H 'Content-Type: application/json')"
    elif media == "image/png" or media.startswith("multipart/"):
        hint = " (send PNGs as base64 strings in the JSON body: {\"series\": [{\"png\": [...]}]})"
    raise RequestError(415, f"Content-Type {value.strip() or value!r} is not accepted{hint}; POST /forecast takes a JSON "
                            f"body: {' or '.join(JSON_TYPES)} (or no Content-Type)")


def parse_forecast_request(body: bytes, spec: Spec, limits: RequestLimits) -> ForecastIn:
    """Check and decode a ``POST /forecast`` body with :class:`ForecastRequest`.

    Raises :class:`RequestError` naming the problem: 400 for a body that is not JSON (NaN/Infinity
    included) or malformed base64/PNG; 413 for more than ``max_body_bytes`` bytes or
    ``max_series_per_request`` series (checked before any series is validated); 422 for anything
    else the model rejects (field, series and frame named, e.g. ``series[0].frames: ...``).
    """
    with gc_paused():
        if len(body) > limits.max_body_bytes:
            raise RequestError(413, f"request body of {len(body)} bytes exceeds the limit of "
                                    f"{limits.max_body_bytes} bytes (max_body_bytes)")
        # json.loads rather than pydantic's own JSON parser: a body that is not JSON is a 400, not a
        # 422, and NaN/Infinity (which pydantic's parser accepts) are refused.
        try:
            doc = json.loads(body, parse_constant=_reject_constant)
        except RecursionError:
            raise RequestError(400, "request body is not valid JSON: nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise RequestError(400, f"request body is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise RequestError(422, "request body must be a JSON object with a 'series' list, got "
                                    f"{type(doc).__name__}")
        n = len(doc["series"]) if isinstance(doc.get("series"), list) else 0
        if n > limits.max_series_per_request:
            raise RequestError(413, f"{n} series in one request; the limit is "
                                    f"{limits.max_series_per_request} (max_series_per_request)")
        try:
            # a JSON true/false among pixel integers becomes 1/0 in numpy's array; the exact (slow,
            # per value) look for booleans runs only when the body holds a true/false token at all
            maybe_bools = b"true" in body or b"false" in body
            req = ForecastRequest.model_validate(doc, context={"spec": spec, "limits": limits,
                                                              "maybe_bools": maybe_bools})
        except ValidationError as e:
            raise error_of(e) from None
        return resolve_ages(req, spec, limits)


def _round(v: float) -> float:
    return round(v, 9)  # horizon ages: 0.1 + 3 * 0.1 is 0.4, not 0.4000000000000001


def horizon_targets(domain: TimeDomain, ages: list[float], horizon: int) -> list[float]:
    """The target ages ``horizon`` means: ``last + k * step``, k = 1..horizon; ``step`` is the input
    spacing for a grid model (as before target ages existed) and ``domain.step`` for a time-aware
    one (so ``horizon`` 1 is :meth:`TimeDomain.default_targets`)."""
    step = domain.step if domain.time_aware or len(ages) < 2 else ages[1] - ages[0]
    return [_round(ages[-1] + step * k) for k in range(1, horizon + 1)]


def resolve_ages(req: ForecastRequest, spec: Spec, limits: RequestLimits) -> ForecastIn:
    """Each series' input ages (its own, else the top-level ``ages``, else the model's default ages)
    and target ages (its own, else the top-level ``target_ages``, else :func:`horizon_targets`),
    checked with :func:`crnn.timeaware.check_ages` and the limits. Raises :class:`RequestError` 422
    listing the bad series (``series[2]: ...``, the first few): a ``horizon`` other than 1 with
    target ages, ages the model cannot answer (frame and age counts, order, range, a grid model's
    grid), more than ``max_targets`` target ages, or a grid model's target more than ``max_horizon``
    steps ahead."""
    domain = spec.time
    horizon = req.horizon
    asked = req.target_ages is not None or any(s.target_ages is not None for s in req.series)
    if asked and horizon != 1:
        named = [f"series[{i}]" for i, s in enumerate(req.series) if s.target_ages is not None]
        where = "top-level 'target_ages'" if req.target_ages is not None else \
            f"'target_ages' of {', '.join(named[:_SHOWN])}{' and more' if len(named) > _SHOWN else ''}"
        raise RequestError(422, f"'horizon' is {horizon} and {where} is given: ask for target ages or a horizon, "
                                f"not both")
    errors, out = [], []
    for i, s in enumerate(req.series):
        frames, fmt = (s.frames, "frames") if isinstance(s, FramesSeries) else (s.png, "png")
        where = f"series[{i}]"
        ages = s.ages if s.ages is not None else req.ages
        if ages is None:
            ages = [float(a) for a in spec.input_ages]
            if not ages:
                errors.append(f"{where}: no 'ages': this model was trained on per-series ages and assumes none; "
                              f"give one age per frame (in the series or at the top level)")
                continue
            if len(ages) != len(frames):
                errors.append(f"{where}: {len(frames)} frames and no 'ages': give one age per frame (the default "
                              f"ages {[age_label(a) for a in ages]} are for {len(ages)} frames)")
                continue
        targets = s.target_ages if s.target_ages is not None else req.target_ages
        derived = targets is None and len(ages) >= 1
        if derived:
            targets = horizon_targets(domain, ages, horizon)
        try:
            ages, targets = check_ages(domain, ages, targets or [], where, num_frames=len(frames),
                                       max_steps=limits.max_horizon)
        except AgeError as e:
            hint = (f" (target ages {[age_label(t) for t in targets]}: {horizon} step(s) of {age_label(domain.step)} "
                    f"after the last input, from 'horizon'; send 'target_ages' to choose them)") \
                if derived and domain.time_aware else ""
            errors.append(str(e) + hint)
            continue
        if len(targets) > limits.max_targets:
            errors.append(f"{where}: {len(targets)} target ages; the limit is {limits.max_targets} (max_targets)")
            continue
        out.append(SeriesIn(frames, fmt, ages, targets))
    if errors:
        more = f"; and {len(errors) - _SHOWN} more series" if len(errors) > _SHOWN else ""
        raise RequestError(422, "; ".join(errors[:_SHOWN]) + more)
    return ForecastIn(out, None if asked else horizon, at_ages=asked or domain.time_aware)


_TAGS = {"FramesSeries": FramesSeries, "PngSeries": PngSeries}
_SHOWN = 5  # errors spelled out in one answer


def _path(loc) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def error_of(e: ValidationError) -> RequestError:
    """A :class:`ForecastRequest` ValidationError as one RequestError: the first few errors, each
    naming its field (``series[1].png[2]: ...``); unknown fields grouped with the allowed ones. 400
    when the first error is malformed base64/PNG, else 422."""
    parts, unknown = [], {}
    status = None
    for err in e.errors(include_url=False):
        loc = list(err["loc"])
        model = next((_TAGS[p] for p in loc if p in _TAGS), ForecastRequest)
        loc = [p for p in loc if p not in _TAGS]
        if status is None:
            status = 400 if err["type"] == _MALFORMED else 422
        if err["type"] == "extra_forbidden":
            key = _path(loc[:-1])
            if key not in unknown:
                parts.append((key, model))
                unknown[key] = []
            unknown[key].append(loc[-1])
            continue
        parts.append(err["msg"] if err["type"] == _NAMED else f"{_path(loc)}: {err['msg']}")
    lines = []
    for p in parts:
        if isinstance(p, tuple):
            key, model = p
            allowed = ", ".join(repr(f) for f in model.model_fields)
            p = f"{key + ': ' if key else ''}unknown field(s) {unknown[key]}; expected {allowed}"
        lines.append(p)
    more = f"; and {len(lines) - _SHOWN} more" if len(lines) > _SHOWN else ""
    return RequestError(status or 422, "; ".join(lines[:_SHOWN]) + more)

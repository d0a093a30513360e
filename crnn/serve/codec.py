"""Images in requests and responses: JSON nested arrays and base64 PNG <-> uint8 numpy arrays.

No Ray, no HTTP framework: the ingress deployment (:mod:`crnn.serve.app`) calls these through the
request model (:mod:`crnn.serve.protocol`). PNGs are decoded by :mod:`crnn.images`, the decoder
``jobs/ingest.py`` uses, so a file means the same pixels in training and serving.

Errors are :class:`RequestError` (HTTP ``status`` and a message). Functions taking ``where`` put it
in front of the message (``"series[0].png[3]: malformed base64 (...)"``); ``where=None`` leaves the
message bare, for the request model, which names the field from pydantic's error location.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gc
import io
import json
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from crnn import images
from crnn.inference import ImageSizeError, check_image_size
from crnn.timeaware import TimeDomain

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # model channels -> crnn.images mode
# ASCII whitespace, removed from base64 before strict decoding: `base64` and MIME encoders wrap
# lines every 76 characters; anything else outside the base64 alphabet stays an error.
_B64_WHITESPACE = str.maketrans("", "", " \t\n\r\f\v")


class RequestError(Exception):
    """A bad request: HTTP ``status`` (400, 413, 415 or 422) and a message naming the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _fail(status: int, where: Optional[str], message: str) -> RequestError:
    return RequestError(status, f"{where}: {message}" if where else message)


@dataclass
class Spec:
    """What the model takes: ``in_frames`` images of ``height`` x ``width`` x ``channels`` uint8,
    ``input_ages`` by default, the colour (uint8 RGB) behind transparent PNG pixels and the ages it
    answers (``domain``, :class:`crnn.timeaware.TimeDomain`; None: a grid model on ``input_ages``,
    as :attr:`time` builds it). A time-aware model takes any number of frames from
    ``domain.min_inputs`` (2) up; a grid model exactly ``in_frames``."""

    in_frames: int
    height: int
    width: int
    channels: int
    input_ages: list[int]
    background: tuple[int, int, int] = images.BACKGROUND
    domain: Optional[TimeDomain] = None

    @property
    def time(self) -> TimeDomain:
        """The model's :class:`TimeDomain`: ``domain``, or a grid model on ``input_ages`` (spacing
        5 when there is one age) when the spec has none (older ingress code, unit tests)."""
        if self.domain is not None:
            return self.domain
        ages = [float(a) for a in self.input_ages]
        step = ages[1] - ages[0] if len(ages) >= 2 else 5.0
        return TimeDomain(False, "years", (ages[0], ages[-1] + step), float("inf"), self.in_frames, self.in_frames,
                          self.in_frames, step, tuple(ages))


@contextlib.contextmanager
def gc_paused():
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


def check_count(obj: Any, where: Optional[str], spec: Spec, what: str) -> None:
    """RequestError 422 unless ``obj`` is a list of as many items as the model takes: exactly
    ``spec.in_frames`` (a grid model), or ``domain.min_inputs`` (2) or more (a time-aware model)."""
    if spec.time.time_aware:
        least = spec.time.min_inputs
        if not isinstance(obj, list):
            raise _fail(422, where, f"expected a list of {least} or more {what}, got {type(obj).__name__}")
        if len(obj) < least:
            raise _fail(422, where, f"expected at least {least} frames (oldest first; a time-aware model takes "
                                    f"any number from {least}), got {len(obj)}")
        return
    if not isinstance(obj, list):
        raise _fail(422, where, f"expected a list of {spec.in_frames} {what}, got {type(obj).__name__}")
    if len(obj) != spec.in_frames:
        raise _fail(422, where, f"expected {spec.in_frames} frames (the model's in_frames; oldest first), "
                                f"got {len(obj)}")


def _holds_bool(obj: Any) -> bool:
    """Whether nested lists hold a bool anywhere (numpy turns [True, 0] into integers)."""
    if isinstance(obj, bool):
        return True
    return isinstance(obj, list) and any(_holds_bool(v) for v in obj)


def frames_from_arrays(obj: Any, where: Optional[str], spec: Spec, exact_bools: bool = True) -> np.ndarray:
    """JSON nested arrays -> uint8 (T, H, W, C), T = in_frames (or any count a time-aware model takes,
    :func:`check_count`). RequestError 422 naming ``where`` for a wrong
    frame count, ragged or non-numeric nesting, a wrong image size, channels-first images, values
    that are not integers 0-255 (booleans, fractions, NaN included). ``exact_bools=False`` skips the
    per-value look for booleans mixed among integers (the caller knows there are none: Serve checks
    the request body for a true/false token first)."""
    check_count(obj, where, spec, "images")
    want = f"{spec.height}x{spec.width}x{spec.channels} (HxWxC)"
    try:
        a = np.array(obj)
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise _fail(422, where, f"images must be {want} nested arrays of integers 0-255 "
                                "(got ragged or non-numeric nesting)") from None
    if a.dtype.kind == "b" or (a.dtype.kind in "iu" and exact_bools and _holds_bool(obj)):
        raise _fail(422, where, "values must be integers 0-255 (found booleans)")
    if a.dtype.kind not in "iuf":
        raise _fail(422, where, "values must be integers 0-255 (found non-numeric or oversized values)")
    if a.ndim != 4:
        raise _fail(422, where, f"each frame must be a {want} nested array; got frames of shape "
                                f"{'x'.join(map(str, a.shape[1:])) or 'scalar'}")
    if a.shape[1:] == (spec.channels, spec.height, spec.width) and spec.channels != spec.width:
        raise _fail(422, where, f"frames look channels-first (CxHxW = {spec.channels}x{spec.height}x"
                                f"{spec.width}); send each image as HxWxC nested arrays")
    _check_size(a.shape[1], a.shape[2], a.shape[3], where, spec)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise _fail(422, where, "values must be finite integers 0-255 (found NaN or infinity)")
        if (a != np.round(a)).any():
            raise _fail(422, where, "values must be integers 0-255 (found fractional values)")
    lo, hi = a.min(), a.max()
    if lo < 0 or hi > 255:
        raise _fail(422, where, f"values must be 0-255, found values from {lo:g} to {hi:g}")
    return a.astype(np.uint8)


def _check_size(h: int, w: int, c: int, where: Optional[str], spec: Spec) -> None:
    try:
        check_image_size((spec.height, spec.width, spec.channels), (h, w, c), where or "")
    except ImageSizeError as e:
        raise RequestError(422, str(e).removeprefix(": ")) from None


def decode_png(s: Any, where: Optional[str], spec: Spec) -> np.ndarray:
    """One base64 PNG string -> uint8 (H, W, C) for the model of ``spec``, decoded by
    :func:`crnn.images.normalize` (the decoder ingest uses): any PNG colour type and bit depth,
    transparency over ``spec.background``, EXIF orientation applied. Never resized: the size as shown
    must be the model's, checked from the header before any pixel is decoded.

    ``s`` may be a data URL and may hold ASCII whitespace (line-wrapped base64). Raises
    :class:`RequestError` naming ``where`` (series and frame): 400 for malformed base64, a non-PNG
    or a corrupt PNG; 422 for a non-string, a wrong size or pixels with no 8-bit meaning.
    """
    if not isinstance(s, str):
        raise _fail(422, where, f"expected a base64 PNG string, got {type(s).__name__}")
    if s.startswith("data:"):  # tolerate data URLs: data:image/png;base64,....
        s = s.partition(",")[2]
    try:
        raw = base64.b64decode(s.translate(_B64_WHITESPACE), validate=True)
    except (binascii.Error, ValueError) as e:
        raise _fail(400, where, f"malformed base64 ({e})") from None
    if not raw.startswith(PNG_SIGNATURE):
        raise _fail(400, where, "not a PNG image (no PNG signature)")
    mode = _CHANNEL_MODES.get(spec.channels)
    if mode is None:
        raise _fail(422, where, f"the model takes {spec.channels} channels; PNG input needs a 1-, 3- "
                                "or 4-channel model (send 'frames' instead)")
    want = f"{spec.height}x{spec.width}"
    try:
        im = images.open_image(raw, where or "png", formats=("PNG",))
    except images.ImageError as e:
        if e.kind == "too_large":
            raise _fail(422, where, f"PNG {e.reason}; the model takes {want} pixels (HxW)") from None
        raise _fail(400, where, f"corrupt PNG ({e.reason})") from None
    with im:
        w, h = im.size  # from the header; nothing decoded yet
        if sorted((h, w)) != sorted((spec.height, spec.width)):
            raise _fail(422, where, f"PNG is {h}x{w} pixels (HxW) but the model takes {want}")
        try:
            shown = images.oriented_size(im, where or "png")
            if shown != (spec.height, spec.width):
                if shown == (h, w):  # not turned: no EXIF orientation, or one that keeps the size
                    raise _fail(422, where, f"PNG is {h}x{w} pixels (HxW) but the model takes {want} "
                                            "(height and width swapped)")
                raise _fail(422, where, f"PNG is {shown[0]}x{shown[1]} pixels (HxW) as shown (stored {h}x{w}, "
                                        f"turned by its EXIF orientation) but the model takes {want}")
            a = np.asarray(images.normalize(im, where or "png", mode=mode, background=spec.background),
                           dtype=np.uint8)
        except images.ImageError as e:
            if e.kind == "unsupported":
                raise _fail(422, where, f"PNG {e.reason}") from None
            raise _fail(400, where, f"corrupt PNG ({e.reason})") from None
    return a[:, :, None] if a.ndim == 2 else a


def encode_png(frame: np.ndarray) -> str:
    """uint8 (H, W, C) -> base64 PNG string (C = 1, 3 or 4)."""
    from PIL import Image

    buf = io.BytesIO()
    img = frame[:, :, 0] if frame.shape[2] == 1 else frame
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def age_label(v: float) -> int | float:
    """An age as the response writes it: an int when it is whole (``30``, as before fractional ages
    existed), else the float (``22.5``)."""
    v = float(v)
    return int(v) if v.is_integer() else v


def render_forecasts(req, outputs: list[np.ndarray], version: str) -> bytes:
    """The JSON response body (the ``ForecastResponse`` schema of :mod:`crnn.serve.protocol`): one
    forecast per series of ``req`` (a :class:`~crnn.serve.protocol.ForecastIn`), in order, in the
    series' own format, labelled with its target ages (:func:`age_label`); ``outputs[i]`` is uint8
    (m_i, H, W, C), m_i = the series' number of target ages. ``horizon`` is the request's, or null
    when target ages were asked for. Written with ``json.dumps`` rather than through the pydantic
    response model: validating ~400k pixel ints per 64-series response would cost more than the
    forward pass on a CPU."""
    with gc_paused():
        forecasts = []
        for s, out in zip(req.series, outputs):
            ages = [age_label(a) for a in s.target_ages]
            if len(ages) != len(out):
                raise ValueError(f"render_forecasts: {len(out)} frames for {len(ages)} target ages")
            if s.fmt == "frames":
                forecasts.append({"ages": ages, "frames": out.tolist()})
            else:
                forecasts.append({"ages": ages, "png": [encode_png(f) for f in out]})
        doc = {"forecasts": forecasts, "horizon": req.horizon, "model_version": version}
        return json.dumps(doc, separators=(",", ":")).encode()

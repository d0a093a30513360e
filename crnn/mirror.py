"""Left-right mirroring about a dataset's axis of symmetry (training augmentation, test-time augmentation).

A scene is mirror-symmetric in distribution when a series and its mirror image are equally likely.
The mirror that keeps a dataset's series *in* its distribution is about the scene's own axis, which
is not always the image centre: the pine simulator draws the trunk at the centre of pixel column
``W // 2`` (``crnn.pine``: "the trunk falls on one output pixel instead of straddling two"), so for
an even width ``torch.flip`` (about the image centre, between columns W/2 - 1 and W/2) would move
every mirrored trunk one column left -- a series no test tree looks like.

The axis is given in pixel-column coordinates (column ``c``'s centre is at ``c``): the mirror sends
column ``c`` to ``2 * axis - c``. It must be a multiple of 0.5 in [0, W - 1], so that columns map to
columns; columns whose partner falls outside the image (column 0 for the pines' ``axis = W // 2``
with W even) keep their own values.

Where a dataset's axis comes from (:func:`mirror_axis`): the card's ``mirror_axis`` field (written
by ``jobs/generate.py`` from the scene's simulator); cards written before it: ``W // 2`` for the pine
scene, the image centre ``(W - 1) / 2`` otherwise (the shapes scene, ingested photos).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch


def check_axis(width: int | None, axis: float, name: str = "mirror axis") -> float:
    """``axis`` as a float; ValueError naming it when it is not a multiple of 0.5 within the
    ``width`` columns [0, width - 1] (``width`` None: any image, so only >= 0 is checked)."""
    try:
        a = float(axis)
    except (TypeError, ValueError):
        a = float("nan")
    top = math.inf if width is None else width - 1
    if isinstance(axis, bool) or not (np.isfinite(a) and 0 <= a <= top and (2 * a).is_integer()):
        where = "(pixel-column coordinates)" if width is None else \
            f"in [0, {width - 1}] (pixel-column coordinates of a {width}-column image)"
        raise ValueError(f"{name} {axis!r}: expected a multiple of 0.5 {where}")
    return a


def _source(width: int, axis: float) -> np.ndarray:
    return int(2 * check_axis(width, axis)) - np.arange(width)


def mirror_index(width: int, axis: float) -> np.ndarray:
    """int64 (width,): column ``j`` of the mirrored image is column ``index[j]`` of the original,
    ``2 * axis - j`` where that is inside the image, else ``j`` itself. ValueError for a bad axis."""
    src = _source(width, axis)
    return np.where(paired_columns(width, axis), src, np.arange(width)).astype(np.int64)


def paired_columns(width: int, axis: float) -> np.ndarray:
    """bool (width,): the columns whose mirror partner ``2 * axis - j`` is inside the image (the
    axis column is its own partner). ValueError for a bad axis."""
    src = _source(width, axis)
    return (src >= 0) & (src < width)


def mirror(x, axis: float, dim: int = -1):
    """``x`` (a numpy array or torch tensor) mirrored along ``dim`` (the image's columns) about
    ``axis`` (module docstring); the same type, a copy. ValueError for a bad axis."""
    width = x.shape[dim]
    idx = mirror_index(width, axis)
    if isinstance(x, torch.Tensor):
        return x.index_select(dim, torch.as_tensor(idx, device=x.device))
    return np.take(x, idx, axis=dim)


def mirror_axis(card: dict[str, Any]) -> float:
    """A dataset's axis of left-right symmetry (module docstring) from its card (``dataset.json``).
    ValueError naming the card's field when it is not a valid axis for the card's width."""
    width = int(card["width"])
    if card.get("mirror_axis") is not None:
        return check_axis(width, card["mirror_axis"], "dataset card field mirror_axis")
    pine = card.get("scene", "pines" if str(card.get("source", "")).startswith("simulator pine") else None)
    return float(width // 2) if pine == "pines" else (width - 1) / 2


TTA_KINDS = ("none", "hflip")


class MirrorAxisWarning(UserWarning):
    """A model's training data and the dataset it forecasts are mirror-symmetric about different
    columns (:func:`tta_axis`). Its own category so that a job which checks its arguments up front
    (and warns there) can keep the second resolution, in the run itself, from saying it again."""


def check_tta(tta: str, where: str) -> None:
    """ValueError naming ``where`` unless ``tta`` is one of :data:`TTA_KINDS` (cheap: callers check
    it before reading any weight)."""
    if tta not in TTA_KINDS:
        raise ValueError(f"{where}: tta={tta!r}: expected one of {', '.join(TTA_KINDS)}")


class MirrorTTA(torch.nn.Module):
    """Mirror test-time augmentation around a forecaster: the mean of its forecast of the series and
    the mirror image of its forecast of the mirrored series, on the columns that have a mirror
    partner (the others keep the plain forecast). Frames (B, T, C, H, W) are the first argument;
    any others (a time-aware model's ages and masks) are passed as they are. Output: the model's.

    Valid only where the scene is mirror-symmetric in distribution about ``axis`` (module
    docstring); it costs a second forward pass. On the pines the best model's age-30 MSE falls by
    2-4 % (BENCHMARKS.md, "Why the best model is still far above the floor", parts 5 and 8).
    ValueError for a bad axis (at the first forward: the width comes with the frames)."""

    def __init__(self, model: torch.nn.Module, axis: float) -> None:
        super().__init__()
        self.model, self.axis = model, float(axis)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        plain = self.model(x, *args, **kwargs)
        back = mirror(self.model(mirror(x, self.axis), *args, **kwargs), self.axis)
        keep = torch.as_tensor(paired_columns(x.shape[-1], self.axis), device=plain.device)
        return torch.where(keep, 0.5 * (plain + back), plain)


def tta_axis(tta: str, axis: float | None, model_data: dict | None, card: dict[str, Any],
             where: str) -> float | None:
    """The axis mirror test-time augmentation uses on a dataset (None for ``tta="none"``): ``axis``
    when given, else the model's training data's (its checkpoint's ``data``), else the dataset's
    (:func:`mirror_axis` of its ``card``); a warning when the model's and the dataset's axes differ
    and none is given. ValueError naming ``where`` for an unknown ``tta``, an axis given without
    ``hflip``, or an axis outside the card's width (:func:`model_tta_axis`)."""
    trained = (model_data or {}).get("mirror_axis")
    if tta == "hflip" and axis is None:
        try:
            data_axis = mirror_axis(card)
        except ValueError as e:  # name the dataset, not only the card's field
            raise ValueError(f"{where}: {e}") from None
        if trained is None:
            axis = data_axis
        elif check_axis(None, trained, f"{where}: the model's recorded training-data mirror_axis") != data_axis:
            warnings.warn(f"{where}: the model's training data are mirror-symmetric about pixel column {trained}, "
                          f"this dataset about {data_axis}; test-time augmentation mirrors about {trained} "
                          f"(to choose: --mirror-axis, or Serve's mirror_axis)", MirrorAxisWarning, stacklevel=2)
    return model_tta_axis(tta, axis, model_data, int(card["width"]), where)


def model_tta_axis(tta: str, axis: float | None, model_data: dict | None, width: int | None,
                   where: str) -> float | None:
    """The axis a model directory's forecasts are mirrored about (None for ``tta="none"``): ``axis``
    when given, else its training data's (``model_data``, the checkpoint's ``data``), checked against
    the model's image ``width`` (None: a baseline, any width). ValueError naming ``where`` (the model
    directory) for another kind, a bad axis, or ``hflip`` without an axis (a model directory written
    before models kept their data's ``mirror_axis``: give one)."""
    check_tta(tta, where)
    if tta == "none":
        if axis is not None:
            raise ValueError(f"{where}: mirror axis {axis}: only used with tta hflip")
        return None
    chosen = axis if axis is not None else (model_data or {}).get("mirror_axis")
    name = f"{where}: mirror axis" if axis is not None else f"{where}: the model's recorded training-data mirror_axis"
    if chosen is None:
        raise ValueError(f"{where}: tta=hflip needs the axis to mirror about, and the model directory does not "
                         f"record its training data's mirror_axis (trained before it did, or without a data "
                         f"summary): give the mirror axis (--mirror-axis, or Serve's mirror_axis; pixel columns; the pines' trunk: width // 2)")
    return check_axis(width, chosen, name)


def tta_note(result: dict[str, Any]) -> str | None:
    """The line an evaluation table prints under its rows when ``result`` (an evaluation's dict, with
    ``tta`` and ``mirror_axis``) scored the model with test-time augmentation; None without."""
    if result.get("tta", "none") == "none":
        return None
    return (f"model: with mirror test-time augmentation ({result['tta']}, about pixel column "
            f"{result.get('mirror_axis')})")


def with_tta(model: torch.nn.Module, axis: float | None) -> torch.nn.Module:
    """``model`` itself (``axis`` None: no test-time augmentation) or wrapped in :class:`MirrorTTA`
    about ``axis``."""
    return model if axis is None else MirrorTTA(model, axis)

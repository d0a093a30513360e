"""Pictures a person looks at: contact sheets of series (the paper's Fig. 2 and Fig. 7) and curves."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

_LABEL_H = 14
_GAP = 4


def contact_sheet(rows: Sequence[np.ndarray], ages: Sequence[int], scale: int = 6,
                  row_labels: Sequence[str] | None = None, background=(255, 255, 255)) -> Image.Image:
    """Grid image: one row per series, one column per age, frames upscaled ``scale``× (nearest).

    ``rows``: each (T, H, W, C) uint8. Ages label the columns; ``row_labels`` label the rows.
    """
    if len(rows) == 0:
        raise ValueError("contact_sheet needs at least one series")
    t, h, w, _ = rows[0].shape
    if len(ages) != t:
        raise ValueError(f"{len(ages)} ages for {t} frames")
    cell_w, cell_h = w * scale, h * scale
    left = 70 if row_labels else 0
    width = left + t * (cell_w + _GAP) + _GAP
    height = _LABEL_H + len(rows) * (cell_h + _GAP) + _GAP
    sheet = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(sheet)
    for j, age in enumerate(ages):
        draw.text((left + _GAP + j * (cell_w + _GAP), 1), f"age {age}", fill=(0, 0, 0))
    for i, frames in enumerate(rows):
        if frames.shape != rows[0].shape:
            raise ValueError(f"series {i} has shape {frames.shape}, expected {rows[0].shape}")
        y = _LABEL_H + _GAP + i * (cell_h + _GAP)
        if row_labels:
            draw.text((2, y + cell_h // 2 - 6), str(row_labels[i])[:11], fill=(0, 0, 0))
        for j in range(t):
            img = Image.fromarray(np.asarray(frames[j], np.uint8)).resize((cell_w, cell_h), Image.NEAREST)
            sheet.paste(img, (left + _GAP + j * (cell_w + _GAP), y))
    return sheet


def save_preview(path: str, frames: np.ndarray, ages: Sequence[int], ids: Sequence[str] | None = None,
                 scale: int = 6) -> str:
    """Write a contact sheet of series ``frames`` (N, T, H, W, C) to ``path`` (PNG)."""
    contact_sheet(list(frames), ages, scale=scale, row_labels=ids).save(path)
    return path


def learning_curves(metrics_rows: list[dict], path: str, title: str = "") -> str:
    """Train/val loss per epoch (from metrics.csv rows) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    epochs = [int(r["epoch"]) for r in metrics_rows]
    for key in ("train_loss", "val_loss"):
        vals = [float(r[key]) for r in metrics_rows if r.get(key) not in (None, "")]
        if vals:
            ax.plot(epochs[: len(vals)], vals, marker="o", ms=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (pixels in [0,1])")
    ax.set_yscale("log")
    ax.set_title(title or "learning curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def comparison_sheet(kinds: dict[str, np.ndarray], ages: Sequence[int], series_ids: Sequence[str] | None = None,
                     scale: int = 6, title: str = "", background=(255, 255, 255)) -> Image.Image:
    """Real vs forecast frames, one block per series (the paper's Fig. 7).

    ``kinds``: ordered ``{row label: frames}``, each frames array uint8 (N, T, H, W, C) over the same
    N series and T ages, e.g. ``{"real": ..., "CRNN": ..., "persistence": ...}``. Each series gets a
    block headed by its id (``series_ids``), with one labelled row per kind; columns are the ages.
    """
    if not kinds:
        raise ValueError("comparison_sheet needs at least one kind of frames")
    arrays = {k: np.asarray(v) for k, v in kinds.items()}
    first = next(iter(arrays.values()))
    if first.ndim != 5 or len(first) == 0:
        raise ValueError(f"comparison_sheet: expected non-empty (N, T, H, W, C) frames, got shape {first.shape}")
    for k, v in arrays.items():
        if v.shape != first.shape:
            raise ValueError(f"comparison_sheet: {k!r} has shape {v.shape}, expected {first.shape}")
    n, t, h, w, _ = first.shape
    if len(ages) != t:
        raise ValueError(f"{len(ages)} ages for {t} frames")
    if series_ids is not None and len(series_ids) != n:
        raise ValueError(f"{len(series_ids)} series ids for {n} series")
    cell_w, cell_h = w * scale, h * scale
    left = 8 + 6 * max(len(str(k)) for k in arrays)  # default bitmap font: ~6 px per character
    top = (_LABEL_H if title else 0) + _LABEL_H
    block_h = _LABEL_H + len(arrays) * (cell_h + _GAP) + 2 * _GAP
    width = max(left + t * (cell_w + _GAP) + _GAP, 6 * len(title) + 8)
    height = top + n * block_h + _GAP
    sheet = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((2, 1), title, fill=(0, 0, 0))
    for j, age in enumerate(ages):
        draw.text((left + _GAP + j * (cell_w + _GAP), top - _LABEL_H + 1), f"age {age}", fill=(0, 0, 0))
    for i in range(n):
        y0 = top + i * block_h
        if i:
            draw.line([(0, y0), (width, y0)], fill=(180, 180, 180))
        name = str(series_ids[i]) if series_ids is not None else f"series {i}"
        draw.text((2, y0 + 2), name, fill=(90, 90, 90))
        for r, (label, frames) in enumerate(arrays.items()):
            y = y0 + _LABEL_H + _GAP + r * (cell_h + _GAP)
            draw.text((2, y + cell_h // 2 - 6), str(label), fill=(0, 0, 0))
            for j in range(t):
                img = Image.fromarray(np.asarray(frames[i, j], np.uint8)).resize((cell_w, cell_h), Image.NEAREST)
                sheet.paste(img, (left + _GAP + j * (cell_w + _GAP), y))
    return sheet


def metric_by_bins(panels: Sequence[tuple[str, Sequence[dict]]], names: Sequence[str], metric: str = "mse",
                   title: str = "") -> bytes:
    """PNG bytes: one panel per ``(x label, bins)``, ``metric`` (0-255 pixels) per bin on a log y axis,
    one line per forecaster in ``names`` (the time-aware evaluation's by-gap and by-spacing tables,
    :func:`crnn.timeeval.score_by_bins`: each bin ``{"label", "targets", "metrics": {name: {metric}}}``).
    Bins without targets, and values that are None or <= 0 (not drawable on log y), are not drawn."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), dpi=110, squeeze=False)
    for ax, (xlabel, bins) in zip(axes[0], panels):
        rows = [b for b in bins if b.get("targets")]
        x = np.arange(len(rows))
        for name in names:
            y = np.array([((b["metrics"].get(name) or {}).get(metric) or np.nan) for b in rows], float)
            y[y <= 0] = np.nan
            if np.isfinite(y).any():
                ax.plot(x, y, marker="o", ms=4, label=name)
        ax.set_xticks(x, [f"{b['label']}\nn={b['targets']}" for b in rows], fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric.upper()} (pixels 0-255)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()

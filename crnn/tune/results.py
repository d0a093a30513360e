"""The outputs of a search: one row per trial, results.csv, the learning-curve figures, and the
published best model.

    rows, histories = results_table(result_grid, base_cfg, runs_dir)   # best first
    write_results_csv(rows, out); plot_curves(rows, histories, out + "/curves")
    publish_model(rows[0]["model"], out + "/best", info, test_metrics)
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

import numpy as np

from crnn.config import Config, apply
from crnn.storage import copy_dir, exists, join, publish_dir, write_json, write_text
from crnn.tune.space import METRIC, PAPER_FACTORS


def results_table(grid, base: Config, runs: str) -> tuple[list[dict], dict[str, list[tuple[int, float]]]]:
    """One row per trial (best first) and each trial's (epoch, val_loss) history.

    ``status``: ``done`` (all epochs), ``stopped`` (by ASHA), ``error``, or ``unfinished``.
    """
    statuses = {t.trial_id: t.status for t in getattr(getattr(grid, "_experiment_analysis", None), "trials", [])}
    rows, histories = [], {}
    for res in grid:
        trial_id = (res.metrics or {}).get("trial_id") or os.path.basename(str(res.path).rstrip("/"))
        config = {k: v for k, v in (res.config or {}).items()}
        epochs_target = apply(base, config).train.epochs
        hist: list[tuple[int, float]] = []
        df = res.metrics_dataframe
        if df is not None and len(df) and "epoch" in df and METRIC in df:
            seen: dict[int, float] = {}
            for e, v in zip(df["epoch"], df[METRIC]):
                if e == e and v == v:  # not NaN
                    seen[int(e)] = float(v)  # a resumed epoch replaces the earlier report
            hist = sorted(seen.items())
        histories[trial_id] = hist
        vals = [v for _, v in hist]
        epochs_run = (hist[-1][0] + 1) if hist else 0
        tune_status = statuses.get(trial_id, "TERMINATED")
        if res.error is not None or tune_status == "ERROR":
            status = "error"
        elif tune_status != "TERMINATED":
            status = "unfinished"  # the search was interrupted; resume it
        elif epochs_run >= epochs_target:
            status = "done"
        else:
            status = "stopped"  # by ASHA
        run_dir = join(runs, trial_id)
        model = join(run_dir, "model")
        best_i = int(np.argmin(vals)) if vals else None
        rows.append({
            "trial_id": trial_id, "status": status, "epochs": epochs_run,
            "val_loss": vals[-1] if vals else math.nan,
            "best_val_loss": min(vals) if vals else math.nan,
            "best_epoch": hist[best_i][0] if best_i is not None else None,
            "train_loss": float((res.metrics or {}).get("train_loss", math.nan)),
            "time_s": float((res.metrics or {}).get("time_total_s", math.nan)),
            "config": config, "run_dir": run_dir,
            "model": model if status == "done" and exists(join(model, "model.pt")) else None,
            "error": _short_error(res.error),
        })
    # best first by the lowest val_loss reached (what model/ holds); stopped trials rank by the loss they
    # reached before ASHA stopped them; unfinished and failed trials last
    rows.sort(key=lambda r: (r["status"] == "error", r["status"] == "unfinished",
                             r["best_val_loss"] if math.isfinite(r["best_val_loss"]) else math.inf))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows, histories


def _short_error(err) -> str:
    if err is None:
        return ""
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(err).__name__)[:300]


def _fmt(v) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return "" if v is None else v


def write_results_csv(rows: list[dict], out: str) -> str:
    """``out/results.csv``: rank, trial, status, epochs, losses, time, each searched key, error."""
    keys = sorted({k for r in rows for k in r["config"]})
    cols = ["rank", "trial_id", "status", "epochs", "best_val_loss", "best_epoch", "val_loss", "train_loss",
            "time_s", *keys, "error"]
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        w.writerow([_fmt(r["config"].get(c)) if c in keys else _fmt(r.get(c)) for c in cols])
    path = join(out, "results.csv")
    write_text(path, buf.getvalue())
    return path


def _group_label(config: dict, keys: tuple[str, ...]) -> str:
    return " x ".join(str(config.get(k)) for k in keys)


def plot_curves(rows: list[dict], histories: dict[str, list[tuple[int, float]]], out_dir: str,
                keys: list[str] | None = None) -> list[str]:
    """PNG per paper comparison (val_loss per epoch, one colour per setting: thin lines for every
    trial, a thick one for the setting's best trial) for the factors that varied, plus ``all.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    factors = dict(PAPER_FACTORS)
    varied = [k for k in (keys or []) if len({json.dumps(r["config"].get(k)) for r in rows}) > 1]
    for k in varied:  # any other categorical key that varied gets its own figure too
        if not any(k in f for f in factors.values()) and \
                len({json.dumps(r["config"].get(k)) for r in rows}) <= 8:
            factors[k.split(".", 1)[1]] = (k,)
    for fname, fkeys in list(factors.items()) + [("all", ())]:
        if fkeys and not any(k in varied for k in fkeys):
            continue
        groups: dict[str, list[dict]] = {}
        for r in rows:
            if histories.get(r["trial_id"]):
                groups.setdefault(_group_label(r["config"], fkeys) if fkeys else r["trial_id"], []).append(r)
        if not groups:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.8), dpi=120)
        cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
        def order(label):  # numbers in numeric order (batch 8 before 16), then names
            vals = [groups[label][0]["config"].get(k) for k in fkeys] if fkeys else [label]
            return [(0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in vals]

        for i, (label, members) in enumerate(sorted(groups.items(), key=lambda kv: order(kv[0]))):
            color = cmap(i % cmap.N)
            best = min(members, key=lambda r: r["best_val_loss"] if math.isfinite(r["best_val_loss"]) else math.inf)
            for r in members:
                e, v = zip(*histories[r["trial_id"]])
                thick = r is best
                ax.plot([x + 1 for x in e], v, color=color, lw=2.0 if thick else 0.8, alpha=1.0 if thick else 0.35,
                        marker="o" if thick and len(e) < 12 else None, ms=3,
                        label=(f"{label}: best {best['best_val_loss']:.4g} (n={len(members)})"
                               if fkeys else f"{label} {r['status']}") if thick else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation MSE (pixels in [0,1])")
        ax.set_yscale("log")
        ax.set_title(f"val_loss by {' x '.join(k.split('.', 1)[1] for k in fkeys)}" if fkeys
                     else "val_loss of every trial (ASHA-stopped trials end early)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, f"{fname}.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def publish_model(model_dir: str, dest: str, info: dict, test_metrics: dict | None) -> str:
    """Copy a model directory (local path or URI; without ``optimizer.pt``) to ``dest`` with
    ``tune_result.json`` (and ``test_metrics.json``), published with :func:`crnn.storage.publish_dir`:
    readers see the old model or the whole new one (on object stores: ``model.pt`` is written last)."""

    def fill(staging: str) -> None:
        copy_dir(model_dir, staging, ignore=("optimizer.pt",))
        write_json(join(staging, "tune_result.json"), info, default=repr)
        if test_metrics is not None:
            write_json(join(staging, "test_metrics.json"), test_metrics, default=repr)

    return publish_dir(dest, fill, marker="model.pt")

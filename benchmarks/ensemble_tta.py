"""Do forecasters' errors average out? Ensembles and mirror test-time augmentation, side by side.

    python benchmarks/ensemble_tta.py --data data/pines runs/convlstm-40k/model runs/simvp-20k/model \
        --json runs/ensemble.json

For each grid model directory (those ``jobs/evaluate.py`` scores on a regular dataset) and the
dataset's test split (or ``--split``), the MSE per forecast age (0-255 pixels, the forecast rounded
to uint8 as delivered) of:

* the model alone (``crnn.inference.forecast_window``: the next-frame forecast of every input step);
* the model with mirror test-time augmentation (``crnn.mirror.MirrorTTA``, what ``jobs/evaluate.py
  --tta hflip`` scores): the mean of its forecast and the mirror image of its forecast of the
  mirrored series. The mirror is about pixel column ``--mirror-column`` (a multiple of 0.5; default
  the dataset's axis, ``crnn.mirror.mirror_axis``: W // 2 for the pines, where the simulator draws
  the trunk; column c <-> 2 * col - c); columns without a partner inside the image keep the plain
  forecast. Valid only where the scene is
  mirror-symmetric in distribution (pines: branch azimuths are uniform and the light does not come
  from one side); ``mirror_only`` (the mirrored forecast alone, un-mirrored) checks that: it should
  score like the model;
* the mean of all the models' forecasts (an ensemble), plain and with the augmentation, and
  ``error_correlation``: the correlation of two models' per-value errors (when it is near 1 an
  ensemble cannot help: the models make the same mistakes).

No Ray; the models and the dataset are checked (``crnn.evaluate.check_evaluate``) before any
forecast; ValueError (``ModelError``, ``ShardError``) names a bad one.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from crnn.evaluate import check_models_split  # noqa: E402
from crnn.inference import forecast_window, load_model  # noqa: E402
from crnn.mirror import MirrorTTA, check_axis, mirror, mirror_axis  # noqa: E402
from crnn.shards import read_card, read_numpy  # noqa: E402
from crnn.storage import write_json  # noqa: E402


def per_age_mse(pred: np.ndarray, frames: np.ndarray, in_frames: int) -> list[float]:
    """MSE per forecast step of float forecasts (N, K, C, H, W) in [0, 1] against ``frames`` (N, T,
    H, W, C) uint8: step t against frame t + 1, the forecast rounded to uint8 first."""
    q = np.clip(np.rint(pred.astype(np.float64) * 255.0), 0, 255).transpose(0, 1, 3, 4, 2)
    truth = frames[:, 1:in_frames + 1].astype(np.float64)
    return [float(((q[:, k] - truth[:, k]) ** 2).mean()) for k in range(in_frames)]


def measure(model_dirs: list[str], data: str, split: str | None = None, mirror_column: float | None = None) -> dict:
    """The comparison of the module docstring as a dict: {"ages"?, "series", "split", "models":
    {dir: {"plain", "mirror_tta", "mirror_only"}}, "ensemble": {"plain", "mirror_tta"} (two or more
    models), "error_correlation": {"a | b": r}}. Raises ValueError naming a bad model, dataset, split
    or mirror column before any forecast."""
    split = check_models_split(model_dirs, data, split)
    card = read_card(data)
    column = check_axis(int(card["width"]), mirror_axis(card) if mirror_column is None else mirror_column,
                        "mirror column")
    frames = read_numpy(data, split=split, columns=["frames"])["frames"]      # (N, T, H, W, C)
    loaded = {m: load_model(m)[:2] for m in model_dirs}
    ks = {m: cfg.data.in_frames for m, (_, cfg) in loaded.items()}
    if len(set(ks.values())) > 1:
        raise ValueError(f"the models see different numbers of input frames: {ks}")
    k = next(iter(ks.values()))
    flipped = mirror(frames, column, dim=3)
    res = {"data": data, "split": split, "series": len(frames), "mirror_column": column, "models": {}}
    plain, tta = {}, {}
    for m, (model, _) in loaded.items():
        p = forecast_window(model, frames, k)
        back = mirror(forecast_window(model, flipped, k), column, dim=4)    # (N, K, C, H, W)
        t = forecast_window(MirrorTTA(model, column), frames, k)
        plain[m], tta[m] = p, t
        res["models"][m] = {"plain": per_age_mse(p, frames, k), "mirror_tta": per_age_mse(t, frames, k),
                            "mirror_only": per_age_mse(back, frames, k)}
    if len(model_dirs) > 1:
        res["ensemble"] = {"plain": per_age_mse(np.mean(list(plain.values()), 0), frames, k),
                           "mirror_tta": per_age_mse(np.mean(list(tta.values()), 0), frames, k)}
        truth = frames[:, 1:k + 1].transpose(0, 1, 4, 2, 3).astype(np.float64) / 255.0
        res["error_correlation"] = {
            f"{a} | {b}": float(np.corrcoef((plain[a] - truth).ravel(), (plain[b] - truth).ravel())[0, 1])
            for a, b in itertools.combinations(model_dirs, 2)}
    return res


def format_report(res: dict) -> str:
    lines = [f"{res['data']} split {res['split']} ({res['series']} series), MSE per forecast step on 0-255 "
             f"pixels; mirror about column {res['mirror_column']}"]
    fmt = lambda v: " / ".join(f"{x:.2f}" for x in v)  # noqa: E731
    for m, r in res["models"].items():
        lines += [f"- {m}: {fmt(r['plain'])}", f"    with mirror TTA: {fmt(r['mirror_tta'])}",
                  f"    mirrored forecast alone: {fmt(r['mirror_only'])}"]
    if "ensemble" in res:
        lines += [f"- mean of the {len(res['models'])} models: {fmt(res['ensemble']['plain'])}",
                  f"    with mirror TTA: {fmt(res['ensemble']['mirror_tta'])}"]
        lines += [f"- error correlation {pair}: {r:.3f}" for pair, r in res["error_correlation"].items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model directories (runs/<name>/model)")
    p.add_argument("--data", required=True, help="a regular dataset (jobs/generate.py output)")
    p.add_argument("--split", default=None, help="split to score (default: the models' test split)")
    p.add_argument("--mirror-column", type=float, default=None, metavar="C",
                   help="mirror about this pixel column, a multiple of 0.5 (default: the dataset's axis, "
                   "crnn.mirror.mirror_axis: width // 2 for the pines' trunk)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")
    a = p.parse_args(argv)
    try:
        res = measure(a.models, a.data, a.split, a.mirror_column)
    except (ValueError, OSError) as e:                 # OSError: e.g. --data names a file
        p.error(str(e))
    print(format_report(res))
    if a.json:
        write_json(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())

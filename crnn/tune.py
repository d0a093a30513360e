"""Hyperparameter search with Ray Tune: the paper's comparisons (its Figs. 3-6), early-stopped by ASHA.

    cfg = load_config("quick", overrides={"data.path": "data/pines"})
    outcome = run_search(cfg, out="runs/tune", space="paper", searcher="random", num_samples=16)
    outcome["best"]["trial_id"], outcome["files"]["results"]       # runs/tune/results.csv, best/ ...

The search space is a dict of dotted config keys -> Tune domains, the same keys as ``crnn.config``
(``{"model.conv_activation": tune.choice([...]), "train.lr": tune.loguniform(1e-4, 3e-3)}``), so any
config field can be searched without plumbing. Spaces are named (:data:`SPACES`), read from YAML
(``train.lr: {loguniform: [1e-4, 3e-3]}``; a plain value, lists included, is a constant) or given as
a dict; every key and every value the space can produce is checked against the Config before Ray is
touched. Searchers (:func:`make_searcher`): ``grid`` (categorical keys as a grid), ``random`` (both
Tune's BasicVariantGenerator) and ``tpe`` (Optuna's Tree-structured Parzen Estimator through Ray's
OptunaSearch; ``optuna`` is another name for it).

Each trial is a Ray Train run: Tune runs :func:`crnn_trial` (the Train V2 driver pattern), which
builds the config (``apply(base, trial config)``) and calls :func:`crnn.train.fit` with Tune's
``TuneReportCallback``; per-epoch ``val_loss`` reaches Tune and Tune's ``ASHAScheduler`` stops poor
trials at rungs of 1, 2, 4, ... epochs done (``max_t`` = epochs), never on a trial's last epoch. The
Ray bugs met on the way are worked around in :mod:`crnn.raycompat` (ASHA's state across
``Tuner.restore``, placement groups of stopped trials). Trials request a tenth of a CPU;
their Train workers are placed by Ray Train, so the number of concurrent trials is derived from the
cluster (:func:`plan_resources`) such that trials, their workers and Ray Data's read tasks all fit.

The search directory ``out``::

    search.json      the search definition (base config, space, searcher, resources)
    ray/<name>/      the Tune experiment (``Tuner.restore`` resumes it: run the same call again)
    trials/<id>/     each trial's run directory, as written by ``fit`` (metrics.csv, model/, ...)
    results.csv      every trial: status, epochs, val losses, searched values (best first)
    best_config.yaml the best trial's full config (usable as ``jobs/train.py --config``)
    curves/*.png     val_loss per epoch grouped by each compared factor, and all trials
    best/            the best model directory (``--model`` for evaluate/predict/serve), with
                     test_metrics.json and tune_result.json; also copied to ``<models>/<name>/``
"""

from __future__ import annotations

import copy
import csv
import datetime
import json
import math
import os
import posixpath
import shutil
import tempfile
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import yaml

from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler

from crnn.config import Config, apply, from_dict, save as save_config, to_dict
from crnn.model import FAMILIES
from crnn.raycompat import ReleaseOrphanedPlacementGroups, SchedulerState, check_ray_version, settle_placement_groups

__all__ = [
    "SPACES", "PAPER_FACTORS", "SEARCHERS", "load_space", "parse_space", "describe_space", "validate_space",
    "prepare_space", "check_searcher", "make_searcher", "ResourcePlan", "plan_resources", "crnn_trial",
    "run_search", "results_table", "write_results_csv", "plot_curves", "publish_model",
]

METRIC, MODE = "val_loss", "min"
ASHA_TIME_ATTR = "epochs_done"  # epochs finished; absent from a trial's last report (see _TuneReport)

# ----------------------------------------------------------------------------- search spaces
# The paper's four comparisons (its Figs. 3-6): 3 x 2 x 2 x 2 x 4 = 96 grid points.
_PAPER_FACTORS: dict[str, Any] = {
    "model.conv_activation": {"choice": ["tanh", "relu", "selu"]},
    "model.lstm_activation": {"choice": ["tanh", "selu"]},
    "model.recurrent_activation": {"choice": ["tanh", "hard_sigmoid"]},
    "train.optimizer": {"choice": ["adam", "nadam"]},
    "train.batch_size": {"choice": [8, 16, 32, 64]},
}
#: Named spaces, written like the YAML files: ``{kind: args}`` is a Tune domain, anything else a constant.
SPACES: dict[str, dict[str, Any]] = {
    # What the paper varied plus learning rate, filters, LSTM units and dropout.
    # Epochs are ASHA's max_t (train.epochs of the preset: 95 for "paper").
    "paper": {
        **_PAPER_FACTORS,
        "train.lr": {"loguniform": [1e-4, 3e-3]},
        "model.conv_filters": {"choice": [[16, 32], [32, 64], [64, 128]]},
        "model.lstm_units": {"choice": [64, 128, 256, 384]},
        "model.dropout": {"quniform": [0.0, 0.5, 0.1]},
        "model.recurrent_dropout": {"quniform": [0.0, 0.5, 0.1]},
    },
    # Only the paper's four comparisons.
    "factors": dict(_PAPER_FACTORS),
    # Which forecaster family, and each family's main widths (a field of a family not picked is
    # carried along unused); start from the `simvp` preset's training recipe.
    "families": {
        "model.kind": {"choice": ["crnn", "convlstm", "simvp"]},
        "model.residual": True,
        "model.simvp.hid_s": {"choice": [16, 32, 64]},
        "model.simvp.hid_t": {"choice": [64, 128, 256]},
        "model.simvp.n_t": {"choice": [2, 4, 6]},
        "model.convlstm.hidden": {"choice": [[32, 32], [64, 64], [64, 64, 64]]},
        "train.lr": {"loguniform": [3e-4, 3e-3]},
    },
    # Tests and smoke tests of a cluster.
    "small": {
        "model.conv_activation": {"choice": ["tanh", "relu"]},
        "train.lr": {"loguniform": [1e-4, 3e-3]},
    },
}

#: The paper's comparisons, one curve figure each: name -> the config keys that make a group.
PAPER_FACTORS: dict[str, tuple[str, ...]] = {
    "conv_activation": ("model.conv_activation",),
    "lstm_x_recurrent_activation": ("model.lstm_activation", "model.recurrent_activation"),
    "optimizer": ("train.optimizer",),
    "batch_size": ("train.batch_size",),
}

_DOMAIN_KINDS = ("choice", "grid", "uniform", "quniform", "loguniform", "qloguniform", "randint",
                 "qrandint", "lograndint", "qlograndint")


def _domain(kind: str, args: Any, key: str):
    from ray import tune

    if kind in ("choice", "grid"):
        if not isinstance(args, (list, tuple)) or not args:
            raise ValueError(f"search space {key}: {kind} needs a non-empty list, got {args!r}")
        return tune.choice(list(args)) if kind == "choice" else tune.grid_search(list(args))
    if not isinstance(args, (list, tuple)) or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                                      for a in args):
        raise ValueError(f"search space {key}: {kind} needs a list of numbers, got {args!r}")
    fn = getattr(tune, kind)
    try:
        return fn(*args)
    except TypeError as e:
        raise ValueError(f"search space {key}: {kind}{tuple(args)}: {e}") from None


def parse_space(spec: dict[str, Any]) -> dict[str, Any]:
    """``{key: {kind: args} | constant | Tune domain}`` -> ``{key: Tune domain | grid_search | constant}``.

    Kinds: choice, grid, uniform, quniform, loguniform, qloguniform, randint (upper exclusive),
    qrandint, lograndint, qlograndint -- the ``ray.tune`` functions of the same names. Keys are
    dotted config keys; a nested ``{section: {field: ...}}`` mapping is flattened first.
    """
    from ray.tune.search.sample import Domain

    if not isinstance(spec, dict):
        raise ValueError(f"search space: expected a mapping of config keys, got {type(spec).__name__}")
    out: dict[str, Any] = {}
    for key, value in _flatten_space(spec).items():
        if isinstance(value, Domain) or _is_grid(value):
            out[key] = value
        elif isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _DOMAIN_KINDS:
            kind, args = next(iter(value.items()))
            out[key] = _domain(kind, args, key)
        elif isinstance(value, dict):
            raise ValueError(f"search space {key}: {value!r} is not one of {{kind: args}} with kind in "
                             f"{_DOMAIN_KINDS}")
        else:
            out[key] = value  # a constant (a list is a constant: e.g. model.conv_filters: [16, 32])
    if not out:
        raise ValueError("search space is empty")
    return out


def _flatten_space(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in spec.items():
        if "." not in k and isinstance(v, dict) and not (len(v) == 1 and next(iter(v)) in _DOMAIN_KINDS) \
                and "grid_search" not in v:
            for k2, v2 in v.items():
                out[f"{k}.{k2}"] = v2
        else:
            out[k] = v
    return out


def _is_grid(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"grid_search"}


def load_space(space: str | dict[str, Any]) -> dict[str, Any]:
    """A named space (:data:`SPACES`), a YAML file (``*.yaml``/``*.yml``) or a dict -> parsed space."""
    if isinstance(space, dict):
        return parse_space(space)
    if space in SPACES:
        return parse_space(copy.deepcopy(SPACES[space]))
    if os.path.exists(space):
        with open(space) as f:
            data = yaml.safe_load(f) or {}
        try:
            return parse_space(data)
        except ValueError as e:
            raise ValueError(f"{space}: {e}") from None
    raise ValueError(f"unknown search space {space!r}: use one of {sorted(SPACES)} or a YAML file")


def describe_space(space: dict[str, Any]) -> dict[str, Any]:
    """A JSON-able description of a parsed space (for search.json and people)."""
    from ray.tune.search.sample import Categorical, Domain, Float, Integer, LogUniform, Quantized

    out = {}
    for key, d in space.items():
        if _is_grid(d):
            out[key] = {"grid": d["grid_search"]}
        elif isinstance(d, Categorical):
            out[key] = {"choice": d.categories}
        elif isinstance(d, (Float, Integer)):
            s = d.get_sampler()
            q = s.q if isinstance(s, Quantized) else None
            base = s.get_sampler() if isinstance(s, Quantized) else s
            kind = ("log" if isinstance(base, LogUniform) else "") + ("uniform" if isinstance(d, Float) else "randint")
            out[key] = {("q" + kind) if q else kind: [d.lower, d.upper] + ([q] if q else [])}
        elif isinstance(d, Domain):
            out[key] = {"domain": repr(d)}
        else:
            out[key] = d
    return json.loads(json.dumps(out, default=repr))


def _candidate_values(d: Any) -> list[Any]:
    """Values a domain can produce that are worth checking against the config: all or the bounds."""
    from ray.tune.search.sample import Categorical, Domain, Float, Integer, Quantized

    if _is_grid(d):
        return list(d["grid_search"])
    if isinstance(d, Categorical):
        return list(d.categories)
    if isinstance(d, Float):  # the bounds and a random draw (catches a float range on an int field)
        return [d.lower, d.upper, _plain(d.sample())]
    if isinstance(d, Integer):
        s = d.get_sampler()
        return [d.lower, d.upper if isinstance(s, Quantized) else d.upper - 1, _plain(d.sample())]
    if isinstance(d, Domain):
        return [d.sample()]
    return [d]


def check_config(cfg: Config) -> None:
    """Everything about a config that fails only once training starts, checked now (ValueError)."""
    cfg.model.validate()
    if cfg.model.kind not in FAMILIES:
        raise ValueError(f"model.kind={cfg.model.kind!r} has no trainable parameters; nothing to tune")
    cfg.train.validate()


def validate_space(base: Config, space: dict[str, Any]) -> None:
    """Raise ValueError naming the key if a space key is not a config field or one of its values
    (each category, each grid value, the bounds of a range) makes an invalid config."""
    for key, d in space.items():
        for value in _candidate_values(d):
            try:
                check_config(apply(base, {key: value}))
            except (KeyError, TypeError, ValueError) as e:
                msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
                raise ValueError(f"search space {key}={value!r}: {msg}") from None


def prepare_space(space: dict[str, Any], searcher: str) -> dict[str, Any]:
    """The space as the searcher wants it: ``grid`` turns categorical keys into grid axes (ranges stay
    sampled, ``num_samples`` per grid point); model-based searchers take no grid (grid -> choice)."""
    from ray import tune
    from ray.tune.search.sample import Categorical

    out = {}
    for key, d in space.items():
        if searcher == "grid" and isinstance(d, Categorical):
            out[key] = tune.grid_search(list(d.categories))
        elif searcher not in ("grid", "random") and _is_grid(d):
            out[key] = tune.choice(list(d["grid_search"]))
        else:
            out[key] = d
    return out


def _max_epochs(base: Config, space: dict[str, Any]) -> int:
    if "train.epochs" in space:
        return int(max(_candidate_values(space["train.epochs"])))
    return base.train.epochs


# ----------------------------------------------------------------------------- searchers
#: ``--searcher`` values: ``grid`` and ``random`` are Tune's BasicVariantGenerator, ``tpe`` is Optuna's
#: Tree-structured Parzen Estimator through Ray's OptunaSearch; ``optuna`` is another name for ``tpe``.
SEARCHERS = ("grid", "random", "tpe", "optuna")


def check_searcher(kind: str) -> str:
    """The canonical name of searcher ``kind`` (``optuna`` -> ``tpe``); ValueError naming ``kind``
    and the choices for anything else (``hyperopt`` included: it is not offered)."""
    if kind not in SEARCHERS:
        raise ValueError(f"unknown searcher {kind!r}: choose from grid, random, tpe (optuna is another name "
                         f"for tpe)")
    return "tpe" if kind == "optuna" else kind


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def make_searcher(kind: str, seed: int = 0, max_concurrent: int | None = None):
    """The Tune search algorithm for ``kind`` (see :data:`SEARCHERS`), seeded with ``seed``.

    ``grid``/``random``: ``BasicVariantGenerator(random_state=seed)``, which limits concurrency to
    ``max_concurrent`` itself. ``tpe``: ``OptunaSearch`` with ``optuna.samplers.TPESampler(seed=seed)``
    (Optuna's defaults: its first 10 trials are random, so give it ``num_samples`` well above 10);
    its concurrency is limited by ``TuneConfig(max_concurrent_trials=...)``. Its state (the Optuna
    study) is saved with the experiment and restored by ``Tuner.restore``. ASHA-stopped trials
    count with their last ``val_loss``; failed ones as failed Optuna trials.
    """
    kind = check_searcher(kind)
    if kind in ("grid", "random"):
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent or 0)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed))


# ----------------------------------------------------------------------------- resources
@dataclass
class ResourcePlan:
    """How trials fit the cluster: what a trial (the Train driver) requests, what its Train workers
    take, and how many trials run at once."""

    trial: dict[str, float]          # requested by the Tune trial itself (it only drives TorchTrainer)
    cpus_per_trial: float            # the trial + its Train workers
    gpus_per_trial: float            # its Train workers
    data_cpus: float                 # kept free for Ray Data read tasks (1 CPU each)
    max_concurrent: int
    cluster: dict[str, float] = field(default_factory=dict)
    note: str = ""


def plan_resources(cfg: Config, cluster: dict[str, float] | None = None, trial_cpus: float = 0.1,
                   data_cpus: float = 1.0, max_concurrent: int | None = None) -> ResourcePlan:
    """Concurrent trials such that every trial's driver and Train workers fit, and ``data_cpus``
    stay free so Ray Data's read tasks (1 CPU each) can always run -- otherwise training workers
    would wait for data forever. On a 2-CPU machine with the default 1 worker x 0.5 CPU: one trial
    at a time. On GPUs: ``train.num_workers`` x GPU per worker per trial (``train.gpus_per_worker``
    when the config has it, else 1), e.g. 8 GPUs -> 8 concurrent 1-worker trials, or 16 with 0.5.

    ``cluster`` defaults to ``ray.cluster_resources()``. ``max_concurrent`` overrides the derived
    number (e.g. an autoscaling cluster that is still small); it is not checked against the cluster.
    """
    if cluster is None:
        import ray

        cluster = ray.cluster_resources()
    t = cfg.train
    if trial_cpus <= 0:
        raise ValueError("trial_cpus must be > 0: a Tune trial that drives a TorchTrainer needs some CPU")
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    cpus_per_trial = trial_cpus + t.num_workers * t.cpus_per_worker
    gpw = float(getattr(t, "gpus_per_worker", 1.0)) if t.use_gpu else 0.0
    gpus_per_trial = t.num_workers * gpw
    eps = 1e-6
    by_cpu = int(math.floor((cpus - data_cpus) / cpus_per_trial + eps)) if cpus_per_trial > 0 else 10**6
    by_gpu = int(math.floor(gpus / gpus_per_trial + eps)) if gpus_per_trial > 0 else 10**6
    derived = min(by_cpu, by_gpu)
    note = (f"{cpus:g} CPU / {gpus:g} GPU; per trial {cpus_per_trial:g} CPU ({trial_cpus:g} driver + "
            f"{t.num_workers} worker(s) x {t.cpus_per_worker:g}) and {gpus_per_trial:g} GPU; "
            f"{data_cpus:g} CPU kept for Ray Data -> {max(derived, 0)} concurrent")
    if max_concurrent:
        if max_concurrent > derived:
            warnings.warn(f"max_concurrent={max_concurrent} exceeds what the cluster holds now ({note})")
        n = int(max_concurrent)
        note += f"; overridden: {n}"
    else:
        if derived < 1:
            raise ValueError(
                f"a trial does not fit this cluster ({note}). Lower train.cpus_per_worker or "
                "train.num_workers, add resources, or set max_concurrent for an autoscaling cluster")
        n = derived
    return ResourcePlan(trial={"CPU": trial_cpus}, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                        data_cpus=data_cpus, max_concurrent=n, cluster=dict(cluster), note=note)


# ----------------------------------------------------------------------------- the trial
class _TuneReport(TuneReportCallback):
    """Tune's TuneReportCallback, plus ASHA's clock and two fixes for Train-in-Tune trials:

    * ``epochs_done`` (epochs finished, right after a resume too) is ASHA's ``time_attr``; the last
      epoch's report leaves it out, and ASHA skips a report without its ``time_attr`` (documented in
      ``AsyncHyperBandScheduler``), so a trial is never stopped on its last epoch: it is done anyway,
      and stopping it there would kill it before ``fit`` copies its best checkpoint to ``model/``;
    * non-finite losses go to Tune as +inf, so ASHA stops NaN trials.
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def after_report(self, run_context, metrics, checkpoint):
        row = dict(metrics[0])
        if row.get("best_replay"):  # the best epoch's checkpoint re-reported after the last epoch
            return
        for k in ("val_loss", "train_loss", "best_val_loss"):
            if k in row and not math.isfinite(float(row[k])):
                row[k] = math.inf
        epochs_done = int(row.get("epoch", -1)) + 1
        if epochs_done < self.epochs:
            row[ASHA_TIME_ATTR] = epochs_done
        super().after_report(run_context, [row, *metrics[1:]], checkpoint)


def crnn_trial(config: dict[str, Any], base: dict | None = None, runs: str = "", train_name: str = "train"):
    """One Tune trial: a Ray Train run of ``apply(base, config)`` in ``<runs>/<trial id>``.

    The driver pattern of Train V2: this function only builds the ``TorchTrainer`` (inside
    :func:`crnn.train.fit`); the training itself runs in Train workers. Metrics reach Tune per epoch.
    """
    from ray import tune

    from crnn.train import fit

    cfg = apply(from_dict(base), config)
    trial_id = tune.get_context().get_trial_id()
    out = posixpath.join(runs, trial_id) if "://" in runs else os.path.join(runs, trial_id)
    fit(cfg, out, name=train_name, callbacks=[_TuneReport(cfg.train.epochs)])


def _trial_dirname(trial) -> str:
    return trial.trial_id


# ----------------------------------------------------------------------------- the search
def _abs(path: str) -> str:
    return path.rstrip("/") if "://" in path else os.path.abspath(path)


def _join(root: str, *parts: str) -> str:
    return posixpath.join(root, *parts) if "://" in root else os.path.join(root, *parts)


def run_search(base: Config, out: str, space: str | dict[str, Any] = "paper", searcher: str = "random",
               num_samples: int | None = None, name: str = "tune", seed: int = 0, asha: bool = True,
               grace_period: int = 1, reduction_factor: float = 2, max_concurrent: int | None = None,
               trial_cpus: float = 0.1, data_cpus: float = 1.0, models: str | None = None,
               resume: bool = True, retry_errored: bool = False, evaluate: bool = True,
               tune_callbacks: list | None = None, verbose: int = 1) -> dict[str, Any]:
    """Run (or resume) a search; write results.csv, best_config.yaml, curves/ and best/ under ``out``.

    Needs a running Ray with the dashboard on (Train V2 inside Tune). ``out`` is local or a URI
    reachable from every node (``models`` too). If ``out/ray/<name>`` holds an experiment, it is
    resumed with ``Tuner.restore`` (finished and ASHA-stopped trials are kept; unfinished ones run
    again, in the same run directory, where Ray Train finds their last checkpoint) unless ``resume=False``, which then refuses to
    overwrite it. ``num_samples`` defaults to 1 for ``grid`` (one pass over the grid), else 8.
    Returns ``{"best": row, "rows": [...], "files": {...}, "plan": ..., "restored": bool}``.
    """
    import ray
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from crnn.runtime import check_shared_storage
    from crnn.shards import is_local

    if not ray.is_initialized():
        raise RuntimeError("run_search needs a running Ray (crnn.runtime.init_ray(include_dashboard=True))")
    check_ray_version()
    out = _abs(out)
    base = apply(base, {"data.path": _abs(base.data.path)})  # trials run with another working directory
    check_config(base)
    # on a multi-node cluster, trials run on other machines
    check_shared_storage({"data.path": base.data.path, "out": out, **({"models": models} if models else {})},
                         use_gpu=base.train.use_gpu)
    parsed = load_space(space)
    validate_space(base, parsed)
    searcher = check_searcher(searcher)
    num_samples = num_samples or (1 if searcher == "grid" else 8)
    max_t = _max_epochs(base, parsed)

    exp_path = _join(out, "ray", name)
    runs = _join(out, "trials")
    prepared = prepare_space(parsed, searcher)
    grid_points = math.prod(len(v["grid_search"]) for v in prepared.values() if _is_grid(v))
    definition = {"base": to_dict(base), "space": describe_space(parsed), "searcher": searcher,
                  "num_samples": num_samples, "expected_trials": num_samples * grid_points, "name": name,
                  "seed": seed, "metric": METRIC, "mode": MODE,
                  "asha": {"enabled": asha, "time_attr": ASHA_TIME_ATTR, "grace_period": grace_period,
                           "reduction_factor": reduction_factor, "max_t": max_t}}
    restored = resume and tune.Tuner.can_restore(exp_path)
    if not restored and _exists(exp_path):
        raise ValueError(f"{exp_path} holds a search already; resume it or choose another --out/--name")
    if restored:
        stored = _read_json(_join(out, "search.json"))
        if stored and stored.get("base") and stored["base"] != definition["base"]:
            warnings.warn(f"resuming {exp_path}: using the base config stored in search.json, not this one")
        base = from_dict(stored["base"]) if stored and stored.get("base") else base
        definition = {**definition, **(stored or {})}
    plan = plan_resources(base, trial_cpus=trial_cpus, data_cpus=data_cpus, max_concurrent=max_concurrent)
    definition["resources"] = asdict(plan)
    _write_text(_join(out, "search.json"), json.dumps(definition, indent=2, default=repr) + "\n")

    trainable = tune.with_resources(
        tune.with_parameters(crnn_trial, base=to_dict(base), runs=runs, train_name="train"), plan.trial)
    if restored:
        print(f"resuming the search in {exp_path}")
        try:
            tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=retry_errored)
        except (AttributeError, ImportError) as e:  # tuner.pkl names a class this crnn no longer has
            raise ValueError(f"{exp_path} was written by an older crnn and cannot be resumed by this one ({e}); "
                             f"finish it with that version, or start a new search (another --out or --name)") from None
    else:
        scheduler = (ASHAScheduler(time_attr=ASHA_TIME_ATTR, max_t=max_t, grace_period=min(grace_period, max_t),
                                   reduction_factor=reduction_factor)
                     if asha else FIFOScheduler())
        alg = make_searcher(searcher, seed=seed, max_concurrent=plan.max_concurrent)
        basic = searcher in ("grid", "random")  # BasicVariantGenerator limits concurrency itself
        workarounds = [ReleaseOrphanedPlacementGroups(), *([SchedulerState(scheduler)] if asha else [])]
        tuner = tune.Tuner(
            trainable,
            param_space=prepared,
            tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=alg, scheduler=scheduler,
                                        num_samples=num_samples,
                                        max_concurrent_trials=None if basic else plan.max_concurrent,
                                        trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(name=name, storage_path=_join(out, "ray"), verbose=verbose,
                                      callbacks=[*workarounds, *(tune_callbacks or [])]),
        )
    grid = tuner.fit()
    settle_placement_groups()

    rows, histories = results_table(grid, base, runs)
    interrupted = (any(r["status"] == "unfinished" for r in rows)
                   or len(rows) < int(definition.get("expected_trials") or 0))
    if interrupted:
        warnings.warn(f"the search was interrupted; run it again to resume ({exp_path})")
    files = {"results": write_results_csv(rows, out), "search": _join(out, "search.json")}
    if is_local(out):
        files["curves"] = plot_curves(rows, histories, os.path.join(out, "curves"), keys=list(parsed))
    best = next((r for r in rows if r["status"] == "done" and r.get("model")), None)
    if best is None:
        warnings.warn("no trial finished with a model; nothing published")
        return {"best": None, "rows": rows, "files": files, "plan": asdict(plan), "restored": restored,
                "interrupted": interrupted}
    best_cfg = apply(base, {k: v for k, v in best["config"].items()})
    cfg_path = _join(out, "best_config.yaml")
    save_config(best_cfg, cfg_path)
    files["best_config"] = cfg_path
    info = {"trial_id": best["trial_id"], "metric": METRIC, "mode": MODE, "val_loss": best["val_loss"],
            "best_val_loss": best["best_val_loss"], "best_epoch": best["best_epoch"], "epochs": best["epochs"],
            "config": best["config"], "searcher": definition["searcher"], "experiment": exp_path,
            "trial_dir": best["run_dir"], "num_trials": len(rows),
            "published_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    test_metrics = None
    if evaluate:
        from crnn.evaluate import evaluate as run_eval

        try:
            test_metrics = run_eval(best["model"], base.data.path)
        except (ValueError, FileNotFoundError) as e:
            warnings.warn(f"test evaluation of the best model failed: {e}")
            test_metrics = {"error": str(e)}
    files["best"] = publish_model(best["model"], _join(out, "best"), info, test_metrics)
    if models:
        files["models"] = publish_model(best["model"], _join(_abs(models), name), info, test_metrics)
    return {"best": best, "rows": rows, "files": files, "plan": asdict(plan), "restored": restored,
            "interrupted": interrupted, "test_metrics": test_metrics}


# ----------------------------------------------------------------------------- outputs
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
        run_dir = _join(runs, trial_id)
        model = _join(run_dir, "model")
        best_i = int(np.argmin(vals)) if vals else None
        rows.append({
            "trial_id": trial_id, "status": status, "epochs": epochs_run,
            "val_loss": vals[-1] if vals else math.nan,
            "best_val_loss": min(vals) if vals else math.nan,
            "best_epoch": hist[best_i][0] if best_i is not None else None,
            "train_loss": float((res.metrics or {}).get("train_loss", math.nan)),
            "time_s": float((res.metrics or {}).get("time_total_s", math.nan)),
            "config": config, "run_dir": run_dir,
            "model": model if status == "done" and _exists(_join(model, "model.pt")) else None,
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
    path = _join(out, "results.csv")
    _write_text(path, buf.getvalue())
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
    """Copy a model directory to ``dest`` with ``tune_result.json`` (and ``test_metrics.json``).

    Local ``dest``: assembled in a temporary sibling and renamed into place, so readers see the old
    or the new model, never half of one. URI ``dest``: uploaded file by file.
    """
    from crnn.shards import is_local, resolve

    parent = None
    if is_local(dest):
        dest = os.path.abspath(dest.removeprefix("file://"))
        parent = os.path.dirname(dest)
        os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".publish-", dir=parent)  # same filesystem: rename is atomic
    try:
        content = os.path.join(stage, "model")
        if is_local(model_dir):
            shutil.copytree(model_dir.removeprefix("file://"), content,
                            ignore=shutil.ignore_patterns("optimizer.pt"))
        else:
            import pyarrow.fs as pafs

            pafs.copy_files(model_dir, content)
        with open(os.path.join(content, "tune_result.json"), "w") as f:
            json.dump(info, f, indent=2, default=repr)
            f.write("\n")
        if test_metrics is not None:
            with open(os.path.join(content, "test_metrics.json"), "w") as f:
                json.dump(test_metrics, f, indent=2, allow_nan=False, default=repr)
                f.write("\n")
        if is_local(dest):
            if os.path.exists(dest):  # the previous model steps aside, then the new one steps in
                os.rename(dest, os.path.join(stage, "previous"))
            os.rename(content, dest)
        else:
            import pyarrow.fs as pafs

            fs, root = resolve(dest)
            if fs.get_file_info(root).type != pafs.FileType.NotFound:
                fs.delete_dir(root)
            pafs.copy_files(content, root, destination_filesystem=fs)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dest


# ----------------------------------------------------------------------------- small I/O helpers
def _exists(path: str) -> bool:
    from crnn.shards import resolve
    import pyarrow.fs as pafs

    fs, p = resolve(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def _write_bytes(path: str, data: bytes) -> None:
    """Write a file (local: atomically, via a temporary name; URI: one upload)."""
    from crnn.shards import resolve

    fs, p = resolve(path)
    fs.create_dir(posixpath.dirname(p), recursive=True)
    tmp = f"{p}.{uuid.uuid4().hex[:8]}.tmp" if "://" not in path else p
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    if tmp != p:
        fs.move(tmp, p)


def _write_text(path: str, text: str) -> None:
    _write_bytes(path, text.encode())


def _read_bytes(path: str) -> bytes:
    from crnn.shards import resolve

    fs, p = resolve(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def _read_json(path: str) -> dict | None:
    return json.loads(_read_bytes(path).decode()) if _exists(path) else None

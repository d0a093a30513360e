"""The search itself: searchers, resources, the trial (a Ray Train run) and the driver :func:`run_search`."""

from __future__ import annotations

import datetime
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler

from crnn.config import Config, apply, from_dict, save as save_config, to_dict
from crnn.raycompat import ReleaseOrphanedPlacementGroups, SchedulerState, check_ray_version, settle_placement_groups
from crnn.storage import absolute, exists, join, read_json, write_json
from crnn.train import with_absolute_paths
from crnn.tune.results import plot_curves, publish_model, results_table, write_results_csv
from crnn.tune.space import (METRIC, MODE, is_grid, max_epochs, check_config, describe_space, load_space,
                             prepare_space, validate_space)

ASHA_TIME_ATTR = "epochs_done"  # epochs finished; absent from a trial's last report (see _TuneReport)

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
    out = join(runs, trial_id)
    fit(cfg, out, name=train_name, callbacks=[_TuneReport(cfg.train.epochs)])


def _trial_dirname(trial) -> str:
    return trial.trial_id

# ----------------------------------------------------------------------------- the search
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
    again, in the same run directory, where Ray Train finds their last checkpoint; the searcher's and
    ASHA's state come back too) unless ``resume=False``, which then refuses to overwrite it.
    ``num_samples`` defaults to 1 for ``grid`` (one pass over the grid), else 8. ``grace_period``
    and ``max_t`` (the most epochs of any trial) are in epochs.
    Returns ``{"best": row, "rows": [...], "files": {...}, "plan": ..., "restored": bool,
    "interrupted": bool, "test_metrics": dict | None}`` (``best`` is None when no trial finished).

    Raises RuntimeError without a running Ray; ValueError naming the bad input for a config, space
    key or value, or searcher that cannot work, a trial that does not fit the cluster, an existing
    experiment with ``resume=False``, or one written by an older crnn.
    """
    import ray
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from crnn.runtime import check_shared_storage
    from crnn.storage import is_local

    if not ray.is_initialized():
        raise RuntimeError("run_search needs a running Ray (crnn.runtime.init_ray(include_dashboard=True))")
    check_ray_version()
    out = absolute(out)
    # trials run with another working directory
    base = with_absolute_paths(apply(base, {"data.path": absolute(base.data.path)}))
    check_config(base)
    # on a multi-node cluster, trials run on other machines
    check_shared_storage({"data.path": base.data.path, "out": out, "train.init_from": base.train.init_from,
                          **({"models": models} if models else {})},
                         use_gpu=base.train.use_gpu)
    parsed = load_space(space)
    validate_space(base, parsed)
    searcher = check_searcher(searcher)
    num_samples = num_samples or (1 if searcher == "grid" else 8)
    max_t = max_epochs(base, parsed)

    exp_path = join(out, "ray", name)
    runs = join(out, "trials")
    prepared = prepare_space(parsed, searcher)
    grid_points = math.prod(len(v["grid_search"]) for v in prepared.values() if is_grid(v))
    definition = {"base": to_dict(base), "space": describe_space(parsed), "searcher": searcher,
                  "num_samples": num_samples, "expected_trials": num_samples * grid_points, "name": name,
                  "seed": seed, "metric": METRIC, "mode": MODE,
                  "asha": {"enabled": asha, "time_attr": ASHA_TIME_ATTR, "grace_period": grace_period,
                           "reduction_factor": reduction_factor, "max_t": max_t}}
    # said before anything starts: a grid of the paper space is 1,152 points per sample
    print(f"search {name}: {definition['expected_trials']} trials ({searcher}: {num_samples} sample(s)"
          f"{f' x {grid_points} grid points' if grid_points > 1 else ''}), up to {max_t} epochs each", flush=True)
    restored = resume and tune.Tuner.can_restore(exp_path)
    if not restored and exists(exp_path):
        raise ValueError(f"{exp_path} holds a search already; resume it or choose another --out/--name")
    if restored:
        stored = read_json(join(out, "search.json"), default=None)
        if stored and stored.get("base") and stored["base"] != definition["base"]:
            warnings.warn(f"resuming {exp_path}: using the base config stored in search.json, not this one")
        base = from_dict(stored["base"]) if stored and stored.get("base") else base
        definition = {**definition, **(stored or {})}
    plan = plan_resources(base, trial_cpus=trial_cpus, data_cpus=data_cpus, max_concurrent=max_concurrent)
    definition["resources"] = asdict(plan)
    write_json(join(out, "search.json"), definition, default=repr)

    trainable = tune.with_resources(
        tune.with_parameters(crnn_trial, base=to_dict(base), runs=runs, train_name="train"), plan.trial)
    if restored:
        print(f"resuming the search in {exp_path}")
        try:
            tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=retry_errored)
        except (AttributeError, ImportError) as e:  # tuner.pkl names a class this crnn no longer has
            raise ValueError(f"{exp_path} was written by an older crnn and cannot be resumed by this one "
                             f"({e}); finish it with that version, or start a new search (another --out or "
                             f"--name)") from None
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
            run_config=tune.RunConfig(name=name, storage_path=join(out, "ray"), verbose=verbose,
                                      callbacks=[*workarounds, *(tune_callbacks or [])]),
        )
    grid = tuner.fit()
    settle_placement_groups()

    rows, histories = results_table(grid, base, runs)
    interrupted = (any(r["status"] == "unfinished" for r in rows)
                   or len(rows) < int(definition.get("expected_trials") or 0))
    if interrupted:
        warnings.warn(f"the search was interrupted; run it again to resume ({exp_path})")
    files = {"results": write_results_csv(rows, out), "search": join(out, "search.json")}
    if is_local(out):
        files["curves"] = plot_curves(rows, histories, os.path.join(out, "curves"), keys=list(parsed))
    best = next((r for r in rows if r["status"] == "done" and r.get("model")), None)
    if best is None:
        warnings.warn("no trial finished with a model; nothing published")
        return {"best": None, "rows": rows, "files": files, "plan": asdict(plan), "restored": restored,
                "interrupted": interrupted}
    best_cfg = apply(base, {k: v for k, v in best["config"].items()})
    cfg_path = join(out, "best_config.yaml")
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
    files["best"] = publish_model(best["model"], join(out, "best"), info, test_metrics)
    if models:
        files["models"] = publish_model(best["model"], join(absolute(models), name), info, test_metrics)
    return {"best": best, "rows": rows, "files": files, "plan": asdict(plan), "restored": restored,
            "interrupted": interrupted, "test_metrics": test_metrics}

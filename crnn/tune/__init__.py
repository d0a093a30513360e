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

Modules: :mod:`~crnn.tune.space` (spaces and their checks), :mod:`~crnn.tune.search` (searchers,
resources, the trial, :func:`run_search`), :mod:`~crnn.tune.results` (results.csv, curves, the
published model). This package re-exports their public names.
"""

from crnn.tune.results import plot_curves, publish_model, results_table, write_results_csv
from crnn.tune.search import (ASHA_TIME_ATTR, SEARCHERS, ResourcePlan, check_searcher, crnn_trial, make_searcher,
                              plan_resources, run_search)
from crnn.tune.space import (METRIC, MODE, PAPER_FACTORS, SPACES, check_config, check_space_data, describe_space,
                             load_space, parse_space, prepare_space, validate_space)

__all__ = [
    "SPACES", "PAPER_FACTORS", "METRIC", "MODE", "load_space", "parse_space", "describe_space", "check_config",
    "check_space_data", "validate_space", "prepare_space", "SEARCHERS", "check_searcher", "make_searcher", "ASHA_TIME_ATTR",
    "ResourcePlan", "plan_resources", "crnn_trial", "run_search", "results_table", "write_results_csv",
    "plot_curves", "publish_model",
]

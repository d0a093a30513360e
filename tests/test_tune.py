"""Ray Tune search (crnn/tune/, jobs/tune.py): spaces, searchers, resources, and one tiny real search.

The real search runs twice on a module-scoped Ray with the dashboard on (Train V2 inside Tune needs
it): first interrupted (SIGUSR1, as Tune handles Ctrl-C) right after its first trial finishes, then
resumed through the CLI. Two trials, 2 epochs each, one at a time on 2 CPUs; ASHA stops the second.
All of it once with the grid searcher and once with Optuna's TPE.
"""

import json
import math
import os
import signal

import numpy as np
import pytest
import yaml
from ray.tune import Callback

from tests.helpers import ROOT, free_port, tiny_config
from crnn.config import apply, load_config
from crnn.tune import (SEARCHERS, SPACES, check_searcher, load_space, make_searcher, plan_resources,
                       prepare_space, validate_space)


# ----------------------------------------------------------------------------- no Ray
def test_named_spaces_cover_the_paper_and_validate():
    cfg = load_config("paper")
    for name in SPACES:
        validate_space(cfg, load_space(name))
    paper = load_space("paper")
    assert paper["model.conv_activation"].categories == ["tanh", "relu", "selu"]
    assert paper["model.lstm_activation"].categories == ["tanh", "selu"]
    assert paper["model.recurrent_activation"].categories == ["tanh", "hard_sigmoid"]
    assert paper["train.optimizer"].categories == ["adam", "nadam"]
    assert paper["train.batch_size"].categories == [8, 16, 32, 64]
    for key in ("train.lr", "model.conv_filters", "model.lstm_units", "model.dropout"):
        assert key in paper
    grid = prepare_space(load_space("factors"), "grid")
    assert math.prod(len(v["grid_search"]) for v in grid.values()) == 96
    # the forecaster families: model.kind and each family's own fields, all valid from the paper's
    # config and from a family preset's
    from crnn.model import FAMILIES

    fam = load_space("families")
    assert fam["model.kind"].categories == list(FAMILIES)
    assert {"model.simvp.hid_t", "model.convlstm.hidden"} <= set(fam)
    assert fam["train.optimizer"].categories == ["adamw", "muon"]
    validate_space(load_config("simvp-fast"), fam)


def test_space_from_yaml_and_errors_name_the_key(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("train:\n  lr: {loguniform: [1.0e-4, 1.0e-2]}\n  batch_size: {grid: [8, 16]}\n"
                 "model.conv_filters: [8, 16]\n")
    space = load_space(str(f))
    assert space["model.conv_filters"] == [8, 16]  # a plain list is a constant, not a choice
    assert space["train.batch_size"] == {"grid_search": [8, 16]}
    validate_space(load_config("quick"), space)
    cfg = load_config("quick")
    for bad, match in [({"model.conv_actvation": {"choice": ["tanh"]}}, "model.conv_actvation"),
                       ({"model.conv_activation": {"choice": ["tanh", "gelu"]}}, "gelu"),
                       ({"train.optimizer": {"choice": ["adam", "sgdx"]}}, "sgdx"),
                       ({"train.batch_size": {"uniform": [8, 64]}}, "train.batch_size"),
                       ({"train.lr": {"bogus": [1, 2]}}, "train.lr")]:
        with pytest.raises(ValueError, match=match):
            validate_space(cfg, load_space(bad))


@pytest.mark.parametrize("key,domain", [
    ("data.path", {"choice": ["data/pines", "/nowhere/pines"]}),    # the leftover: never checked, ranked together
    ("data.path", "/nowhere/pines"),                                # a constant: checked against the base only
    ("data.val_split", "val"),                                      # even the base's own value
    ("data.val_split", {"choice": ["val", "test"]}),
    ("data.test_split", {"grid_search": ["test", "val"]}),
    ("data.max_val_series", {"randint": [16, 64]}),
])
def test_a_space_cannot_vary_the_series_trials_are_scored_on(key, domain):
    """Trials are ranked by validation loss and the best tested on the base config's splits: a space
    key choosing the dataset or those splits is refused before Ray, naming it; the training series
    (data.max_train_series, data.train_splits) stay searchable, but not onto those splits."""
    cfg = load_config("quick")
    with pytest.raises(ValueError, match=rf"search space {key}: .*one search per value"):
        validate_space(cfg, load_space({key: domain}))
    validate_space(cfg, load_space({"data.max_train_series": {"choice": [64, 0]}, "data.train_splits": ["train"]}))
    with pytest.raises(ValueError, match=r"search space data.train_splits=\['train', 'test'\]: .*data.test_split='test'"):
        validate_space(cfg, load_space({"data.train_splits": {"choice": [["train"], ["train", "test"]]}}))


def test_step_weights_in_a_space_are_checked_before_ray(tmp_path):
    """The review's inputs: step weights of the wrong length as a base override, a choice, a
    constant, or against a data.in_frames the space varies; any on an irregular dataset."""
    from crnn.tune import check_config, check_space_data

    cfg = load_config("quick")
    with pytest.raises(ValueError, match=r"train.step_weights=\[1.0, 1.0, 2.0\]: expected one weight per forecast step"):
        check_config(apply(cfg, {"train.step_weights": [1, 1, 2]}))
    for space, needle in (({"train.step_weights": {"choice": [[1, 1, 1, 1], [1, 1, 2]]}}, r"\[1, 1, 2\]"),
                          ({"train.step_weights": [1, 1, 2]}, "step_weights"),
                          ({"train.step_weights": {"choice": [[1, 1, 1, 2], [1, 1, 1, 1]]},
                            "data.in_frames": {"choice": [3, 4]}}, "combination .*data.in_frames=3")):
        with pytest.raises(ValueError, match=needle):
            validate_space(cfg, load_space(space))
    validate_space(cfg, load_space({"train.step_weights": {"choice": [[], [1, 1, 1, 2]]}}))
    f = tmp_path / "s.yaml"                              # YAML 1.1 reads 1e-4 as a string: taken as the number
    f.write_text("train.lr: {loguniform: [1e-4, 3e-3]}\n")
    validate_space(cfg, load_space(str(f)))
    irregular = {"layout": "irregular", "max_frames": 6}
    weights = load_space({"train.step_weights": {"choice": [[], [1, 1, 1, 2]]}})
    with pytest.raises(ValueError, match=r"train.step_weights=\[1, 1, 1, 2\]: .* an irregular dataset"):
        check_space_data(cfg, weights, irregular)
    check_space_data(cfg, weights, {"ages": [10, 15, 20, 25, 30]})                 # regular: fine
    check_space_data(cfg, load_space({"train.step_weights": {"choice": [[]]}}), irregular)
    card = {"ages": [10, 15, 20, 25, 30], "height": 32, "width": 16, "channels": 3, "scene": "pines",
            "splits": {"train": 8, "val": 2, "test": 2}}
    frames = load_space({"data.in_frames": {"choice": [3, 4, 5]}})
    with pytest.raises(ValueError, match=r"search space data.in_frames=5: .*in_frames\+1 = 6 needed"):
        check_space_data(apply(cfg, {"data.path": "/d/p"}), frames, card)
    check_space_data(cfg, load_space({"data.in_frames": {"choice": [3, 4]}}), card)


def test_space_combinations_that_break_the_config_are_named_before_any_trial(monkeypatch):
    """Values fine alone but not together (a family picked by model.kind with a field its cells
    refuse) are refused, naming the smallest breaking combination; unrelated keys stay out of it."""
    base = load_config("simvp-fast")
    with pytest.raises(ValueError, match=r"combination model\.kind='predrnn', model\.predrnn\.hidden=\[32, 64\]: "
                                         r".*equal channels"):
        validate_space(base, load_space({"model.kind": {"choice": ["simvp", "predrnn"]},
                                         "model.predrnn.hidden": {"choice": [[32, 32], [32, 64]]}}))
    # a triple: norm needs multiples of 4, checked only when the ConvLSTM is the family
    three = {"train.lr": {"loguniform": [1e-4, 1e-2]},
             "model.kind": {"choice": ["simvp", "convlstm"]},
             "model.convlstm.norm": {"grid": [False, True]},
             "model.convlstm.hidden": {"choice": [[32, 32], [30, 30]]}}
    with pytest.raises(ValueError) as e:
        validate_space(base, load_space(three))
    assert str(e.value).startswith("search space combination model.kind='convlstm', model.convlstm.norm=True, "
                                   "model.convlstm.hidden=[30, 30]: ")
    assert "multiple of 4" in str(e.value) and "train.lr" not in str(e.value)
    # the neighbours that work pass: the same keys without the breaking value
    validate_space(base, load_space({**three, "model.convlstm.hidden": {"choice": [[32, 32], [64, 64]]}}))
    validate_space(base, load_space({**three, "model.convlstm.norm": {"grid": [False]}}))
    # only keys checked together are combined: the network's with each other, training fields apart
    import crnn.tune.space as space_mod
    calls = []
    real = space_mod.check_config
    monkeypatch.setattr(space_mod, "check_config", lambda cfg, sources=None: (calls.append(1), real(cfg, sources)))
    validate_space(base, load_space({"model.kind": {"choice": ["simvp", "convlstm"]},
                                     "train.batch_size": {"grid": [8, 16]}, "train.optimizer": {"grid": ["adam", "adamw"]}}))
    assert len(calls) == 1 + 6          # the space's fixed values, each value alone; no pairs: the
    #                                     training fields are never checked against each other


def test_space_combinations_are_checked_on_the_spaces_fixed_values_and_not_crowded_out():
    """A value the space fixes is in every trial: the others are checked with it (a base with norm
    on, a space fixing norm off, widths of 30 pass); many training values neither hide a network
    combination nor slow the check down."""
    base = load_config("simvp-fast", overrides={"model.convlstm.norm": True})
    space = {"model.convlstm.norm": False, "model.kind": {"choice": ["simvp", "convlstm"]},
             "model.convlstm.hidden": {"choice": [[30, 30], [32, 32]]}}
    validate_space(base, load_space(space))
    validate_space(base, load_space({**space, "model.convlstm.norm": {"grid": [False]}}))
    with pytest.raises(ValueError, match=r"combination model\.kind='convlstm', model\.convlstm\.hidden=\[30, 30\]"):
        validate_space(base, load_space({**space, "model.convlstm.norm": True}))
    # fixed values that break only together are named together; a bad fixed value alone by itself
    with pytest.raises(ValueError, match=r"^search space combination model\.convlstm\.norm=True, model\.kind='convlstm', "
                                         r"model\.convlstm\.hidden=\[30, 30\]: "):
        validate_space(load_config("simvp-fast"), load_space(
            {"model.convlstm.norm": True, "model.kind": "convlstm", "model.convlstm.hidden": [30, 30]}))
    with pytest.raises(ValueError, match=r"^search space model\.kind='gru': "):
        validate_space(base, load_space({"model.kind": "gru", "train.lr": 1e-3}))
    crowded = {"train.seed": {"grid": list(range(150))}, "train.batch_size": {"grid": list(range(1, 151))},
               "model.kind": {"choice": ["simvp", "convlstm"]}, "model.convlstm.norm": {"grid": [False, True]},
               "model.convlstm.hidden": {"choice": [[32, 32], [30, 30]]}}
    with pytest.raises(ValueError, match="combination model.kind='convlstm', model.convlstm.norm=True"):
        validate_space(load_config("simvp-fast"), load_space(crowded))


def test_space_with_init_from_reads_the_model_once_and_keeps_its_network(tmp_path, monkeypatch):
    """A search that fine-tunes (train.init_from) may vary training fields, not the network; the
    starting model is read once for all candidates; a relative init_from in a space is refused
    (trials run in other working directories)."""
    import crnn.checkpoint
    import crnn.tune.space
    from crnn.checkpoint import save_model_dir
    from crnn.model import build_model

    src = str(tmp_path / "src")
    base = tiny_config("unused")
    save_model_dir(src, build_model(base.model), base, epoch=0, metrics={})
    base = apply(base, {"train.init_from": src})
    reads = []
    real = crnn.checkpoint.check_model_dir
    monkeypatch.setattr(crnn.checkpoint, "check_model_dir", lambda p: reads.append(p) or real(p))
    validate_space(base, load_space({"train.lr": {"loguniform": [1e-4, 1e-2]}, "train.batch_size": {"grid": [4, 8]}}))
    assert reads == [src]
    with pytest.raises(ValueError, match=r"search space model.lstm_units=32: train.init_from=.*model.lstm_units: "
                                         r"this run 32, that model 16"):
        validate_space(base, load_space({"model.lstm_units": {"choice": [16, 32]}}))
    with pytest.raises(ValueError, match="search space train.init_from='src': .*absolute path or a URI"):
        validate_space(base, load_space({"train.init_from": {"choice": [src, "src"]}}))
    # the starting model in the space and a network field beside it: each pair is checked
    plain = tiny_config("unused")
    with pytest.raises(ValueError, match=r"search space model.lstm_units=32: .*this run 32, that model 16"):
        validate_space(plain, load_space({"train.init_from": {"grid": [src]}, "model.lstm_units": {"grid": [16, 32]}}))
    validate_space(plain, load_space({"train.init_from": {"grid": [src]}, "model.dropout": {"grid": [0.0, 0.3]}}))
    # a missing starting model is named as train.init_from's
    with pytest.raises(ValueError, match=r"train.init_from: .*nowhere: no such model directory"):
        validate_space(plain, load_space({"train.init_from": {"grid": [str(tmp_path / "nowhere")]}}))


def test_resource_plan_two_cpus_and_gpu_cluster():
    cfg = load_config("quick")
    plan = plan_resources(cfg, {"CPU": 2})  # 0.1 driver + 0.5 worker per trial, 1 CPU kept for Ray Data
    assert plan.trial == {"CPU": 0.1} and plan.max_concurrent == 1
    assert plan_resources(apply(cfg, {"train.cpus_per_worker": 0.2}), {"CPU": 2}).max_concurrent == 3
    gpu = apply(cfg, {"train.use_gpu": True, "train.num_workers": 2})
    assert plan_resources(gpu, {"CPU": 64, "GPU": 8}).max_concurrent == 4  # 2 GPUs per trial
    with pytest.raises(ValueError, match="does not fit"):
        plan_resources(cfg, {"CPU": 1})
    with pytest.raises(ValueError, match="does not fit"):
        plan_resources(gpu, {"CPU": 64, "GPU": 1})


def test_tpe_is_optunas_and_concentrates_on_the_good_region(tmp_path):
    """--searcher tpe: Optuna's TPESampler behind Ray's OptunaSearch; after Optuna's 10 random start-up
    trials its suggestions move to the good region; saved and restored it continues the same sequence."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    def loss(c):
        return (math.log10(c["train.lr"]) + 2.5) ** 2 + (0.0 if c["model.conv_activation"] == "relu" else 1.0)

    space = {"train.lr": tune.loguniform(1e-5, 1e-1), "model.conv_activation": tune.choice(["tanh", "relu", "selu"])}
    s = make_searcher("tpe", seed=3)
    assert isinstance(s, OptunaSearch) and isinstance(s._sampler, optuna.samplers.TPESampler)
    assert s.set_search_properties("val_loss", "min", space)
    losses = []
    for i in range(30):
        c = s.suggest(str(i))
        assert 1e-5 <= c["train.lr"] <= 1e-1 and c["model.conv_activation"] in ("tanh", "relu", "selu")
        losses.append(loss(c))
        s.on_trial_complete(str(i), {"val_loss": losses[-1]})
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    s.save(str(tmp_path / "s.pkl"))
    s2 = make_searcher("tpe")
    s2.restore(str(tmp_path / "s.pkl"))
    assert s2.suggest("a") == s.suggest("a")


def test_searcher_choices():
    assert SEARCHERS == ("grid", "random", "tpe", "optuna")
    assert check_searcher("optuna") == "tpe" and check_searcher("grid") == "grid"
    for bad in ("hyperopt", "TPE", "bayes"):
        with pytest.raises(ValueError, match=f"unknown searcher '{bad}': choose from grid, random, tpe"):
            make_searcher(bad)


def test_last_epoch_report_carries_no_asha_clock(monkeypatch):
    """A trial's reports to Tune: epochs_done (ASHA's time_attr) on every epoch but the last, NaN as +inf,
    the replayed best epoch not at all; and ASHA, which skips a report without its time_attr, never
    stops a trial on its last epoch (with the clock on that report, it would)."""
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from crnn.tune.search import ASHA_TIME_ATTR, _TuneReport

    sent = []  # what would go to Tune (outside a Tune session: Tune's side replaced by a list)
    monkeypatch.setattr(TuneReportCallback, "__init__", lambda self: None)
    monkeypatch.setattr(TuneReportCallback, "after_report", lambda self, ctx, metrics, ckpt: sent.append(metrics[0]))
    report = _TuneReport(epochs=2)
    report.after_report(None, [{"epoch": 0, "val_loss": float("nan")}], None)
    report.after_report(None, [{"epoch": 1, "val_loss": 0.5}], None)
    report.after_report(None, [{"epoch": 1, "val_loss": 0.4, "best_replay": 1.0}], None)
    assert sent == [{"epoch": 0, "val_loss": math.inf, ASHA_TIME_ATTR: 1}, {"epoch": 1, "val_loss": 0.5}]

    from types import SimpleNamespace

    asha = ASHAScheduler(time_attr=ASHA_TIME_ATTR, metric="val_loss", mode="min", max_t=2, grace_period=1,
                         reduction_factor=2)
    good, poor = SimpleNamespace(trial_id="good"), SimpleNamespace(trial_id="poor")
    for t in (good, poor):
        asha.on_trial_add(None, t)
    assert asha.on_trial_result(None, good, {ASHA_TIME_ATTR: 1, "val_loss": 0.5}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, poor, {ASHA_TIME_ATTR: 1, "val_loss": 0.4}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, good, {"val_loss": 0.1}) == TrialScheduler.CONTINUE  # good's last epoch
    assert asha.on_trial_result(None, poor, {"val_loss": 9.0}) == TrialScheduler.CONTINUE  # poor's last epoch
    assert asha.on_trial_result(None, poor, {ASHA_TIME_ATTR: 2, "val_loss": 9.0}) == TrialScheduler.STOP


def test_cli_rejects_bad_space_before_starting_ray(tmp_path, capsys):
    job = _load_job()
    f = tmp_path / "bad.yaml"
    f.write_text("model.lstm_unitz: {choice: [8, 16]}\n")
    assert job.main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--space", str(f)]) == 2
    err = capsys.readouterr().err
    assert "model.lstm_unitz" in err and len(err.strip().splitlines()) == 1  # one line, status 2
    with pytest.raises(SystemExit) as e:  # argparse's choices
        job.main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--searcher", "hyperopt"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert all(w in err for w in ("--searcher", "'hyperopt'", "grid", "random", "tpe", "optuna")), err


# ----------------------------------------------------------------------------- a real search
def _load_job():
    from jobs import tune

    return tune


@pytest.fixture(scope="module")
def ray_dashboard():
    """A fresh local Ray with the dashboard on, for this module; the session's Ray comes back after.

    RAY_API_SERVER_ADDRESS points Ray Train's placement-group cleaner (State API) at *this* cluster:
    otherwise, with other Ray clusters on the machine, it may query another one.
    """
    import ray

    was_up = ray.is_initialized()
    ray.shutdown()
    port = free_port()
    saved = {k: os.environ.get(k) for k in ("RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE")}
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_port=port, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": ROOT}})
    try:
        yield ray
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if was_up:  # as conftest.ray_local started it
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": ROOT}})


class _InterruptAfterFirstTrial(Callback):
    """Tune callback: SIGUSR1 to this process (Tune saves the experiment and stops) once a trial ends."""

    def __init__(self, marker):
        self.marker = marker

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not os.path.exists(self.marker) and signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.fixture(scope="module")
def dataset(ray_dashboard, tmp_path_factory):
    """Like conftest's tiny_dataset (80 series: 66 train / 6 val / 8 test), made on this module's Ray."""
    from crnn.generate import generate

    out = str(tmp_path_factory.mktemp("data") / "pines")
    generate(out, num_series=80, seed=7, shard_size=32)
    return out


# The same search with each kind of searcher: Tune's grid, and Optuna's TPE (whose seed 10 draws the
# good learning rate first and the hopeless one second, as the grid does; the space's grid is its choice).
SEARCH_ARGS = {"grid": {}, "tpe": {"num_samples": 2, "seed": 10}}


@pytest.fixture(scope="module", params=sorted(SEARCH_ARGS))
def search(request, dataset, tmp_path_factory):
    """Interrupted after trial 1 finished, then resumed by `jobs/tune.py` with the same arguments."""
    from crnn.tune import run_search

    searcher, kw = request.param, SEARCH_ARGS[request.param]
    root = tmp_path_factory.mktemp(f"tune-{searcher}")
    out, models = str(root / "search"), str(root / "models")
    space = root / "space.yaml"
    space.write_text("train.lr: {grid: [3.0e-3, 1.0e-6]}\n")  # a good and a hopeless learning rate
    cfg = tiny_config(dataset)
    interrupt = _InterruptAfterFirstTrial(str(root / "interrupted"))
    first = run_search(cfg, out, space=str(space), searcher=searcher, tune_callbacks=[interrupt], verbose=0,
                       evaluate=False, **kw)
    done = [r for r in first["rows"] if r["status"] == "done"]
    assert first["interrupted"] and len(done) == 1, [(r["trial_id"], r["status"]) for r in first["rows"]]
    assert done[0]["config"] == {"train.lr": 3e-3}
    model_pt = os.path.join(done[0]["model"], "model.pt")
    before = os.stat(model_pt).st_mtime_ns

    args = ["--data", dataset, "--out", out, "--space", str(space), "--searcher", searcher, "--models", models,
            "--preset", "quick", "model.conv_filters=[4,8]", "model.lstm_units=16", "train.epochs=2",
            "train.batch_size=8"]
    args += [a for k, v in kw.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    rc = _load_job().main(args)
    assert rc == 0
    return {"out": out, "models": models, "first": first, "done_id": done[0]["trial_id"],
            "model_pt": model_pt, "mtime_before": before, "searcher": searcher}


def _rows(out):
    import csv

    with open(os.path.join(out, "results.csv")) as f:
        return list(csv.DictReader(f))


def test_search_resumed_without_redoing_finished_trials(search):
    assert os.stat(search["model_pt"]).st_mtime_ns == search["mtime_before"]  # trial 1 was not rerun
    rows = _rows(search["out"])
    assert len(rows) == 2 and all(r["status"] in ("done", "stopped") for r in rows)
    assert len(os.listdir(os.path.join(search["out"], "trials"))) == 2


def test_asha_stopped_the_hopeless_trial(search):
    rows = {r["train.lr"]: r for r in _rows(search["out"])}
    assert rows["0.003"]["status"] == "done" and rows["0.003"]["epochs"] == "2"
    assert rows["1e-06"]["status"] == "stopped" and rows["1e-06"]["epochs"] == "1"
    assert rows["0.003"]["rank"] == "1" and rows["0.003"]["trial_id"] == search["done_id"]


def test_outputs_curves_and_best_config(search):
    out = search["out"]
    assert os.path.getsize(os.path.join(out, "curves", "all.png")) > 0
    assert os.path.exists(os.path.join(out, "curves", "lr.png"))
    best_cfg = yaml.safe_load(open(os.path.join(out, "best_config.yaml")))
    assert best_cfg["train"]["lr"] == pytest.approx(3e-3) and best_cfg["model"]["conv_filters"] == [4, 8]
    definition = json.load(open(os.path.join(out, "search.json")))
    assert definition["resources"]["max_concurrent"] == 1 and definition["searcher"] == search["searcher"]


def test_published_best_model_loads_and_predicts(search, dataset):
    from crnn.inference import forecast_window, load_model
    from crnn.shards import read_numpy

    for d in (os.path.join(search["out"], "best"), os.path.join(search["models"], "tune")):
        files = set(os.listdir(d))
        assert {"model.pt", "config.yaml", "test_metrics.json", "tune_result.json"} <= files
        assert "optimizer.pt" not in files
        info = json.load(open(os.path.join(d, "tune_result.json")))
        assert info["trial_id"] == search["done_id"] and info["config"] == {"train.lr": 3e-3}
        tm = json.load(open(os.path.join(d, "test_metrics.json")))
        assert tm["split"] == "test" and tm["headline"]["model"]["mse"] > 0
    model, cfg, meta = load_model(os.path.join(search["out"], "best"))
    assert cfg.train.lr == pytest.approx(3e-3) and meta["epoch"] in (0, 1)
    frames = read_numpy(dataset, split="test")["frames"]
    pred = forecast_window(model, frames, cfg.data.in_frames)
    assert pred.shape == (len(frames), 4, 3, 32, 16) and np.isfinite(pred).all()


def test_search_of_an_older_crnn_is_refused_by_name(ray_dashboard, tmp_path, monkeypatch):
    """A search directory whose tuner.pkl names a class this crnn no longer has (the old crnn.tune._ASHA)."""
    import pickle

    import crnn.tune
    from crnn.tune import run_search

    class _ASHA:  # pickled under the old name, then gone
        pass

    _ASHA.__module__, _ASHA.__qualname__ = "crnn.tune", "_ASHA"
    monkeypatch.setattr(crnn.tune, "_ASHA", _ASHA, raising=False)
    data = pickle.dumps({"scheduler": _ASHA()})
    monkeypatch.delattr(crnn.tune, "_ASHA")
    exp = tmp_path / "search" / "ray" / "tune"
    exp.mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(data)
    with pytest.raises(ValueError, match=f"{exp} was written by an older crnn .*_ASHA"):
        run_search(tiny_config(str(tmp_path / "data")), str(tmp_path / "search"), space="small", evaluate=False)


@pytest.mark.parametrize("ssim, shown", [(0.97531, "SSIM 0.975"), (None, "SSIM n/a"), (float("nan"), "SSIM n/a")])
def test_tune_summary_prints_a_missing_ssim(capsys, ssim, shown):
    """The best trial's test SSIM is null for frames under SSIM's 11x11 window (crnn.metrics): the
    summary says n/a (it raised a TypeError after the whole search)."""
    from jobs.tune import print_summary

    row = {"rank": 1, "status": "TERMINATED", "epochs": 2, "best_val_loss": 0.01, "config": {"train.lr": 0.001}}
    print_summary({"rows": [row], "plan": {"note": "1 trial at a time"}, "files": {},
                   "best": {"trial_id": "t0", "best_val_loss": 0.01, "best_epoch": 1},
                   "test_metrics": {"headline_age": 30, "headline": {"model": {"mse": 12.5, "ssim": ssim}}}})
    out = capsys.readouterr().out
    assert f"best trial t0: val_loss 0.01000 at epoch 1; test MSE 12.50, {shown} at age 30" in out

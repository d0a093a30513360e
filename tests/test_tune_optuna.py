"""--searcher tpe in a real Tune run (Ray's OptunaSearch + optuna's TPESampler, on this module's local Ray):
suggestions stay inside the space, and an interrupted search resumes where the sampler left off.

The trainable is a one-report function (no Ray Train), so the module takes seconds, not minutes.
"""

import math
import os
import signal

import pytest
from ray import tune

from crnn.tune import load_space, make_searcher, prepare_space

SPACE = {"train.lr": {"loguniform": [1e-4, 1e-2]}, "model.conv_activation": {"choice": ["tanh", "relu", "selu"]},
         "model.dropout": {"quniform": [0.0, 0.5, 0.1]}, "model.conv_filters": {"choice": [[4, 8], [8, 16]]},
         "train.epochs": 3}


class _InterruptAfter(tune.Callback):
    """SIGUSR1 to this process once ``n`` trials ended: Tune saves the experiment and stops (as on Ctrl-C).
    Once only (``marker``): the restored run gets this callback back from tuner.pkl."""

    def __init__(self, n: int, marker: str):
        self.n, self.done, self.marker = n, 0, marker

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        if self.done == self.n and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGUSR1)


def test_tpe_suggests_inside_the_space_and_resumes(ray_local, tmp_path):
    def _loss(c: dict) -> float:  # defined here: Ray workers cannot import this test module
        return ((math.log10(c["train.lr"]) + 3) ** 2 + c["model.dropout"]
                + (0.0 if c["model.conv_activation"] == "relu" else 1.0) + 0.1 * c["model.conv_filters"][0])

    def objective(config):
        tune.report({"val_loss": _loss(config)})

    space = prepare_space(load_space(SPACE), "tpe")
    tuner = tune.Tuner(
        objective, param_space=space,
        tune_config=tune.TuneConfig(metric="val_loss", mode="min", search_alg=make_searcher("tpe", seed=5),
                                    num_samples=6, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="tpe", storage_path=str(tmp_path), verbose=0,
                                  callbacks=[_InterruptAfter(3, str(tmp_path / "interrupted"))]))
    first = tuner.fit()
    assert 3 <= len([r for r in first if r.metrics.get("val_loss") is not None]) < 6  # interrupted

    path = str(tmp_path / "tpe")
    assert tune.Tuner.can_restore(path)
    grid = tune.Tuner.restore(path, trainable=objective, resume_unfinished=True).fit()
    configs = [r.config for r in grid]
    assert len(configs) == 6 and not grid.errors
    for c in configs:  # inside the space, constants carried along
        assert 1e-4 <= c["train.lr"] <= 1e-2 and c["model.conv_activation"] in ("tanh", "relu", "selu")
        assert any(c["model.dropout"] == pytest.approx(q) for q in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5))
        assert c["model.conv_filters"] in ([4, 8], [8, 16]) and c["train.epochs"] == 3
    assert all(r.metrics["val_loss"] == pytest.approx(_loss(r.config)) for r in grid)

    # The same seed without the interruption: the resumed search ran the very same six configs, so the
    # sampler's state came back with Tuner.restore (a fresh sampler would have started over and repeated
    # the first ones). Compared as sets: Tune's trial ids are random and restored trials are re-queued.
    s = make_searcher("tpe", seed=5)
    s.set_search_properties("val_loss", "min", space)
    expected = []
    for i in range(6):
        c = s.suggest(str(i))
        expected.append({**c, "train.epochs": 3})
        s.on_trial_complete(str(i), {"val_loss": _loss(c)})

    def by_lr(cs):
        return sorted(cs, key=lambda c: c["train.lr"])

    assert by_lr(configs) == by_lr(expected)

"""Search spaces: dotted config keys -> Tune domains, the named spaces, and their checks against the config.

    space = load_space("paper")                 # or a YAML file, or a dict
    validate_space(cfg, space)                  # ValueError naming the key and value that breaks the config
    prepare_space(space, "grid")                # categorical keys as grid axes (or grids as choices for tpe)
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
from typing import Any

import numpy as np

from crnn.checkpoint import check_init_from, read_init_source
from crnn.config import Config, apply, check_training_fields, read_yaml
from crnn.model import FAMILIES

#: The objective every searcher and ASHA optimise: the validation loss reported after each epoch.
METRIC, MODE = "val_loss", "min"

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
        "model.kind": {"choice": list(FAMILIES)},
        "model.residual": True,
        "model.simvp.hid_s": {"choice": [16, 32, 64]},
        "model.simvp.hid_t": {"choice": [64, 128, 256]},
        "model.simvp.n_t": {"choice": [2, 4, 6]},
        "model.convlstm.hidden": {"choice": [[32, 32], [64, 64], [64, 64, 64]]},
        "model.predrnn.hidden": {"choice": [[32, 32], [64, 64], [64, 64, 64]]},
        "model.timevp.hid_t": {"choice": [64, 128, 256]},
        "train.lr": {"loguniform": [3e-4, 3e-3]},
        # Muon on the kernels learns far more per step than AdamW on the pines (BENCHMARKS.md, part 13)
        "train.optimizer": {"choice": ["adamw", "muon"]},
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


def _number(a: Any) -> Any:
    """``a`` as a float when it is a string that spells a finite number (``"1e-4"``), else as it is."""
    if isinstance(a, str):
        try:
            v = float(a)
        except ValueError:
            return a
        return v if math.isfinite(v) else a
    return a


def _domain(kind: str, args: Any, key: str):
    from ray import tune

    if kind in ("choice", "grid"):
        if not isinstance(args, (list, tuple)) or not args:
            raise ValueError(f"search space {key}: {kind} needs a non-empty list, got {args!r}")
        return tune.choice(list(args)) if kind == "choice" else tune.grid_search(list(args))
    if isinstance(args, (list, tuple)):  # YAML 1.1 reads 1e-4 (no dot) as a string: take it as the number
        args = [_number(a) for a in args]
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
        if isinstance(value, Domain) or is_grid(value):
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


def is_grid(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"grid_search"}


def load_space(space: str | dict[str, Any]) -> dict[str, Any]:
    """A named space (:data:`SPACES`), a YAML file (``*.yaml``/``*.yml``) or a dict -> parsed space."""
    if isinstance(space, dict):
        return parse_space(space)
    if space in SPACES:
        return parse_space(copy.deepcopy(SPACES[space]))
    from crnn.storage import exists  # a local path or a URI (file://, s3://, ...)

    if exists(space):
        data = read_yaml(space) or {}
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
        if is_grid(d):
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

    if is_grid(d):
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


def check_config(cfg: Config, sources: dict[str, Config] | None = None) -> None:
    """Everything about a config that fails only once training starts, checked now (ValueError).
    ``sources``: a memo of ``train.init_from`` directories already read (path -> their Config), so
    that checking many candidate configs reads each starting model once."""
    cfg.model.validate()
    if cfg.model.kind not in FAMILIES:
        raise ValueError(f"model.kind={cfg.model.kind!r} has no trainable parameters; nothing to tune")
    check_training_fields(cfg)
    path = cfg.train.init_from
    if path:
        source = (sources or {}).get(path)
        if source is None:
            source, _ = read_init_source(path)
            if sources is not None:
                sources[path] = source
        check_init_from(cfg, source)


def check_space_data(base: Config, space: dict[str, Any], card: dict[str, Any]) -> None:
    """The space's values that depend on the dataset, against its ``card``: every candidate of
    ``train.step_weights`` (an irregular dataset has no fixed forecast steps to weigh:
    ``crnn.train.check_data`` refuses any) and, on a regular dataset, of ``data.in_frames`` (the
    series must hold in_frames + 1 frames); and each starting model (the base's ``train.init_from``
    and the space's candidates): a time-aware one must have been trained on ages in the dataset's
    ``age_unit`` (:func:`crnn.timeaware.check_start_ages`). ValueError naming the key and value."""
    from crnn.irregular import is_irregular
    from crnn.timeaware import check_start_ages, is_time_aware
    from crnn.train import check_data

    starts = [base.train.init_from] if base.train.init_from else []
    if "train.init_from" in space:
        starts += [v for v in _candidate_values(space["train.init_from"]) if isinstance(v, str) and v]
    # a starting model fixes the kind (validate_space compared the networks): grid runs read ages in
    # no unit, so their starting models are not read again
    if is_time_aware(base) or "model.kind" in space:
        for start in dict.fromkeys(starts):  # each starting model read once
            source, payload = read_init_source(start)
            check_start_ages(start, source, payload.get("data"), card, base.data.path)

    if "train.step_weights" in space and is_irregular(card):
        for value in _candidate_values(space["train.step_weights"]):
            if value:
                raise ValueError(f"search space train.step_weights={value!r}: {base.data.path} is an irregular "
                                 f"dataset, which has no fixed forecast steps to weigh; drop the key")
    if "data.in_frames" in space and not is_irregular(card):
        for value in _candidate_values(space["data.in_frames"]):
            _named(lambda: check_data(apply(base, {"data.in_frames": value}), card),
                   f"search space data.in_frames={value!r}")


# config keys that choose the series a trial is scored on (validation, test): not searchable, as one
# search ranks its trials by one validation loss and tests its best on one test split
SCORING_DATA_KEYS = ("data.path", "data.val_split", "data.test_split", "data.max_val_series")


def validate_space(base: Config, space: dict[str, Any]) -> None:
    """Raise ValueError naming the key if a space key is not a config field, is one of
    :data:`SCORING_DATA_KEYS` (the dataset and splits trials are scored on: not searchable), or one of its values
    (each category, each grid value, the bounds of a range) makes an invalid config, or naming the
    keys and values of a combination that does (``_check_interactions``). Keys the space fixes (a
    constant, a one-value choice or grid) are part of every trial, so the other keys are checked on
    the base with them applied."""
    for key in space:
        if key in SCORING_DATA_KEYS:
            raise ValueError(f"search space {key}: a space may not set it (even to one value): trials are ranked "
                             f"by their validation loss and the best is tested, on the base config's dataset and "
                             f"splits, which every trial must share. Set it for the whole search (--data or an "
                             f"override {key}=...), one search per value")
    sources: dict[str, Config] = {}
    # a starting model fixes the network: every model.* candidate is checked against each one
    starts = list(_candidate_values(space["train.init_from"])) if "train.init_from" in space else []
    for value in starts:
        if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
            raise ValueError(f"search space train.init_from={value!r}: trials run in other working "
                             f"directories; give an absolute path or a URI")

    def check(cfg: Config, combo: dict[str, Any]) -> None:
        combos = [combo]
        if starts and "train.init_from" not in combo and any(k.startswith("model.") for k in combo):
            combos = [{**combo, "train.init_from": start} for start in starts]
        for c in combos:
            check_config(apply(cfg, c), sources)

    fixed = {k: v for k, d in space.items() if (v := _fixed_value(d)) is not _VARIES}
    try:
        check(base, fixed)
    except (KeyError, TypeError, ValueError):  # find the key, or the keys, to name
        for key, value in fixed.items():
            _named(lambda: check(base, {key: value}), f"search space {key}={value!r}")
        named = ", ".join(f"{k}={v!r}" for k, v in fixed.items())
        _named(lambda: check(base, fixed), f"search space combination {named}")
    fixed_base = apply(base, fixed)
    varying = {k: d for k, d in space.items() if k not in fixed}
    for key, d in varying.items():
        for value in _candidate_values(d):
            _named(lambda: check(fixed_base, {key: value}), f"search space {key}={value!r}")
    _check_interactions(fixed_base, varying, check)


#: Combinations checked by ``validate_space`` beyond single keys: all of up to this many keys while
#: their number stays under ``_MAX_COMBINATIONS`` (~1 ms each), else pairs only.
_INTERACTION_ORDER, _MAX_COMBINATIONS = 3, 20_000
_VARIES = object()


def _fixed_value(d: Any) -> Any:
    """The one value a space entry gives every trial (a constant, a one-value choice or grid), or
    ``_VARIES``."""
    from ray.tune.search.sample import Categorical, Domain

    if is_grid(d):
        values = list(d["grid_search"])
    elif isinstance(d, Categorical):
        values = list(d.categories)
    elif isinstance(d, Domain):
        return _VARIES
    else:
        return d
    return values[0] if len(values) == 1 else _VARIES


def _named(run, what: str) -> None:
    """Run a config check; re-raise its error as ValueError prefixed with ``what``."""
    try:
        run()
    except (KeyError, TypeError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise ValueError(f"{what}: {msg}") from None


def _check_interactions(base: Config, space: dict[str, Any], check) -> None:
    """Combinations of 2 (and, while affordable, 3) keys that break the config together although
    each value is fine alone (``model.kind=predrnn`` with ``model.predrnn.hidden=[32, 64]``; norm
    with a width that is not a multiple of 4 under a family that uses it): every candidate value of
    each key (``_candidate_values``). Only the network's keys (``model.*`` and ``train.init_from``)
    and ``train.step_weights`` with ``data.in_frames`` (one weight per forecast step) can break
    together: ``check_config`` compares no other two fields, so the others are not combined. Smaller combinations first, so the combination named
    is a smallest one. ``check(base, combo)`` raises for a bad combination; raises ValueError
    naming it."""
    keys = [k for k in space if k.startswith("model.") or k in ("train.init_from", "train.step_weights",
                                                                "data.in_frames")]
    values = {k: _candidate_values(space[k]) for k in keys}

    def count(order: int) -> int:
        return sum(int(np.prod([len(values[k]) for k in ks])) for ks in itertools.combinations(keys, order))

    top = 2
    while top < _INTERACTION_ORDER and sum(count(r) for r in range(2, top + 2)) <= _MAX_COMBINATIONS:
        top += 1
    for order in range(2, top + 1):
        for ks in itertools.combinations(keys, order):
            for vals in itertools.product(*(values[k] for k in ks)):
                combo = dict(zip(ks, vals))
                named = ", ".join(f"{k}={v!r}" for k, v in combo.items())
                _named(lambda: check(base, combo), f"search space combination {named}")


def prepare_space(space: dict[str, Any], searcher: str) -> dict[str, Any]:
    """The space as the searcher wants it: ``grid`` turns categorical keys into grid axes (ranges stay
    sampled, ``num_samples`` per grid point); model-based searchers take no grid (grid -> choice)."""
    from ray import tune
    from ray.tune.search.sample import Categorical

    out = {}
    for key, d in space.items():
        if searcher == "grid" and isinstance(d, Categorical):
            out[key] = tune.grid_search(list(d.categories))
        elif searcher not in ("grid", "random") and is_grid(d):
            out[key] = tune.choice(list(d["grid_search"]))
        else:
            out[key] = d
    return out


def max_epochs(base: Config, space: dict[str, Any]) -> int:
    if "train.epochs" in space:
        return int(max(_candidate_values(space["train.epochs"])))
    return base.train.epochs


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v

"""One typed, layered config: defaults in code -> preset -> YAML file -> ``section.field=value``.

    cfg = load_config(preset="quick", yaml_path="my.yaml", overrides=["train.lr=3e-4"])

Unknown keys and values of the wrong type are errors that name the key. The final config is saved
beside every run's outputs (``to_dict``/``save``) and travels inside checkpoints, so evaluate,
predict and serve rebuild the model from the checkpoint alone. Tune's search space is written with
the same dotted keys (``model.conv_activation``), so any field can be searched without plumbing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import typing
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import yaml

from crnn.model import ModelConfig


@dataclass
class DataConfig:
    path: str = "data/pines"            # dataset directory (local path or URI) with dataset.json
    train_splits: tuple[str, ...] = ("train",)  # splits trained on
    val_split: str = "val"              # split for per-epoch validation and best-checkpoint choice
    test_split: str = "test"            # split for the final evaluation (the paper's 384 series)
    in_frames: int = 4                  # frames seen (ages 10..25); targets are the next frames
    max_train_series: int = 0           # 0 = all; >0 caps the training set (quick runs)
    max_val_series: int = 0             # 0 = all


@dataclass
class TrainConfig:
    epochs: int = 95                    # the paper: 95
    batch_size: int = 16                # global batch (split over workers); the paper: 16
    lr: float = 1e-3                    # the paper: Adam's default 1e-3
    optimizer: str = "adam"             # adam | nadam | adamw | muon (Muon on kernels and matrices,
                                        # AdamW on the rest, one lr: crnn.optim.MuonAdamW)
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0          # linear warm-up (fraction of epochs allowed)
    schedule: str = "constant"          # constant | cosine (after warm-up)
    grad_clip: float = 0.0              # 0 = off
    loss: str = "mse"                   # mse | l1
    seed: int = 0
    num_workers: int = 1                # Ray Train workers (DDP)
    use_gpu: bool = False
    cpus_per_worker: float = 0.5        # fractional so Ray Data read tasks still get CPU
    gpus_per_worker: float = 1.0        # with use_gpu; a fraction packs several runs (Tune trials) per GPU
    precision: str = "fp32"             # fp32 | bf16 (autocast; GPU or CPU)
    compile: bool = False               # torch.compile the model
    compile_mode: str = "default"       # torch.compile mode: default | reduce-overhead (CUDA graphs) |
                                        # max-autotune | max-autotune-no-cudagraphs
    cache: str = "auto"                 # keep each worker's shard in device memory (uint8) after one
                                        # streamed pass: always | never | auto (when under 2 GiB)
    max_failures: int = 2               # worker failures survived by resuming from the checkpoint
    checkpoint_every: int = 5           # checkpoint every k epochs (0 = never) and when val improves,
    checkpoint_interval_s: float = 30.0  # but at most once per this many seconds (0 = no limit), and
                                        # always after the last epoch; an unwritten best epoch waits in
                                        # memory and is checkpointed after the last one
    log_every: int = 0                  # steps between progress prints (0 = per epoch only)
    torch_threads: int = 0              # intra-op CPU threads per worker (0 = Ray's default, its CPU share)
    augment: str = "none"               # none | hflip: mirror each training series left-right with
                                        # probability 1/2 (for scenes whose mirror image is as likely:
                                        # pines, shapes, most photos) about the data's axis of symmetry
                                        # (crnn.mirror: the card's mirror_axis; pines: the trunk column
                                        # W // 2); validation and test frames never
    step_weights: tuple[float, ...] = ()  # loss weight of each forecast step (data.in_frames of them,
                                        # the first forecasts from one frame, the last is the headline
                                        # age), normalised to mean 1; () = equal. Regular datasets only.
                                        # 1,1,1,2: -1.4 % age-30 MSE, +0.7 % age 15 (BENCHMARKS.md, "Why
                                        # the best model...", part 9); validation stays unweighted
    init_from: str = ""                 # a model directory (local or URI) whose weights start the run
                                        # (fine-tuning, a warm restart): same model.* config required;
                                        # fresh optimizer and schedule; "" = random initialisation

    CHOICES = {"optimizer": ("adam", "nadam", "adamw", "muon"), "schedule": ("constant", "cosine"),
               "loss": ("mse", "l1"), "precision": ("fp32", "bf16"), "cache": ("auto", "always", "never"),
               "compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
               "augment": ("none", "hflip")}

    def validate(self) -> None:
        """Raise ValueError naming the first field with a value outside its choices or range."""
        for name, choices in self.CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"train.{name}={getattr(self, name)!r}: expected one of {', '.join(choices)}")
        for name in ("epochs", "batch_size", "num_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)!r}: expected >= 1")
        if not self.lr > 0:
            raise ValueError(f"train.lr={self.lr!r}: expected > 0")
        for name in ("cpus_per_worker", "gpus_per_worker", "weight_decay", "warmup_epochs", "grad_clip",
                     "checkpoint_interval_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name}={getattr(self, name)!r}: expected >= 0")
        w = self.step_weights
        if w and not (all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                          for v in w) and any(v > 0 for v in w)):
            raise ValueError(f"train.step_weights={list(w)!r}: expected finite numbers >= 0, not all 0 "
                             f"(one per forecast step), or [] for equal weights")


def step_weights_factors(weights) -> list[float]:
    """``train.step_weights`` normalised to mean 1, in float64 and scaled by their largest first, so
    that weights far from 1 (1e39, 1e-320) give the same factors as their ratios do (float32 sums
    overflowed to inf or underflowed to 0 and the loss became NaN or 0). [] for equal weights."""
    w = [float(v) for v in weights]
    if not w:
        return []
    top = max(w)
    if not top > 0:
        raise ValueError(f"train.step_weights={list(weights)!r}: expected numbers >= 0, not all 0")
    w = [v / top for v in w]
    mean = math.fsum(w) / len(w)
    return [v / mean for v in w]


def check_training_fields(cfg: "Config") -> None:
    """The training section (:meth:`TrainConfig.validate`) and what it must agree with elsewhere:
    ``data.in_frames`` >= 1, one ``train.step_weights`` weight per forecast step, and three apart:
    ``data.train_splits``, ``data.val_split`` and ``data.test_split`` (the best checkpoint is chosen
    on validation series and the evaluation reports test series as unseen: training on either, or
    choosing on the test series, would score series the model was fitted to). ValueError naming the
    fields. (Whether the dataset is regular is checked against its card: ``crnn.train.check_data``.)"""
    cfg.train.validate()
    d = cfg.data
    for key, split, use in (("test_split", d.test_split, "the evaluation scores as unseen"),
                            ("val_split", d.val_split, "the best checkpoint is chosen on")):
        if split in d.train_splits:
            raise ValueError(f"data.train_splits={list(d.train_splits)!r} includes data.{key}={split!r}, the "
                             f"series {use}: the scores would be on series the model trained on. Train on "
                             f"other splits or score on another (data.train_splits, data.{key})")
    if d.val_split == d.test_split:
        raise ValueError(f"data.val_split and data.test_split are both {d.val_split!r}: the best checkpoint would be "
                         f"chosen on the series the evaluation reports as unseen. Give them different splits")
    if isinstance(cfg.data.in_frames, bool) or cfg.data.in_frames < 1:
        raise ValueError(f"data.in_frames={cfg.data.in_frames!r}: expected >= 1 (the frames a forecast sees)")
    w = cfg.train.step_weights
    if w and len(w) != cfg.data.in_frames:
        raise ValueError(f"train.step_weights={list(w)!r}: expected one weight per forecast step, "
                         f"data.in_frames={cfg.data.in_frames} of them, or [] for equal weights (regular "
                         f"datasets only)")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's recipe: MSE, Adam 1e-3, batch 16, 95 epochs, the 384-series test split.
    "paper": {},
    # Tiny and fast: tests, `make run`, a smoke test of a cluster.
    "quick": {
        "train.epochs": 2,
        "train.batch_size": 16,
        "data.max_train_series": 128,
        "data.max_val_series": 32,
        "model.lstm_units": 64,
        "model.conv_filters": [16, 32],
    },
    # `make run`: a small ConvLSTM (the best family on this CPU, README "Forecaster family"), 6 epochs
    # on up to 512 series; about a minute for the whole `make run` on a 2-core laptop CPU. Batch 4:
    # on a CPU a small batch costs little time and buys optimizer steps (age-30 MSE 95.8 vs 123.0 at
    # batch 16; BENCHMARKS.md, "Why the best model is still far above the floor", part 5). Muon: 6
    # epochs score 88.3 where AdamW's 8 scored 95.8, in about the same time (a Muon step costs ~1.4x
    # here; part 13).
    "demo": {
        "model.kind": "convlstm",
        "model.convlstm.hidden": [64, 64],
        "train.epochs": 6,
        "train.batch_size": 4,
        "train.lr": 3e-3,
        "train.optimizer": "muon",
        "train.warmup_epochs": 1,
        "train.schedule": "cosine",
        "train.grad_clip": 1.0,
        "data.max_train_series": 512,
        "data.max_val_series": 64,
    },
    # The paper's model, trained fast on a GPU: bf16, large batch, warm-up + cosine. Not a scaled-up
    # LR: at 3e-3 Adam pushed every hard-sigmoid gate into its flat region within 6 epochs (README,
    # Results); 1e-3 with 4 warm-up epochs keeps them alive (CPU, fp32), but whether 40 epochs at
    # batch 256 reach the paper recipe's quality is for the GPU run (benchmarks/recipes.py).
    "fast": {
        "train.precision": "bf16",
        "train.batch_size": 256,
        "train.lr": 1e-3,
        "train.warmup_epochs": 4,
        "train.schedule": "cosine",
        "train.epochs": 40,
        "train.grad_clip": 1.0,
    },
    # Beyond the paper: predict the change from the last frame, larger batch, warm-up + cosine.
    "strong": {
        "model.residual": True,
        "model.conv_activation": "relu",
        "model.recurrent_activation": "sigmoid",
        "model.dropout": 0.1,
        "model.recurrent_dropout": 0.0,
        "train.batch_size": 64,
        "train.lr": 2e-3,
        "train.optimizer": "adamw",
        "train.warmup_epochs": 2,
        "train.schedule": "cosine",
        "train.epochs": 60,
        "train.grad_clip": 1.0,
    },
}
# The forecaster families (crnn/models/): one recipe, AdamW + warm-up + cosine, batch 32.
_FAMILY_RECIPE = {
    "train.optimizer": "adamw",
    "train.lr": 1e-3,
    "train.batch_size": 32,
    "train.warmup_epochs": 1,
    "train.schedule": "cosine",
    "train.grad_clip": 1.0,
    "train.epochs": 30,
}
# SimVP with the gSTA translator (crnn/models/simvp.py), causal, residual.
PRESETS["simvp"] = {**_FAMILY_RECIPE, "model.kind": "simvp"}
PRESETS["simvp-fast"] = {**PRESETS["simvp"], "train.epochs": 10}
# TimeVP (crnn/models/timevp.py): SimVP conditioned on real-valued ages (issue #14); on a regular
# dataset it trains with today's pipeline, at the dataset's ages (its grid, model.timevp.grid_start /
# grid_step, is what model(x) alone assumes: ages 10, 15, ...).
PRESETS["timevp"] = {**_FAMILY_RECIPE, "model.kind": "timevp"}
PRESETS["timevp-fast"] = {**PRESETS["timevp"], "train.epochs": 10}
# ConvLSTM (crnn/models/convlstm.py), residual, 3 x 64 channels at half resolution.
PRESETS["convlstm"] = {**_FAMILY_RECIPE, "model.kind": "convlstm", "model.convlstm.hidden": [64, 64, 64],
                       "train.lr": 2e-3}
PRESETS["convlstm-fast"] = {**PRESETS["convlstm"], "train.epochs": 10}
# The ConvLSTM recipe for CPUs: batch 8 (a CPU trains nearly as many series/s at batch 8 as at 32,
# and 4x the optimizer steps learn far more per series: BENCHMARKS.md, "Why the best model is still
# far above the floor", part 5), bf16 (AVX512-BF16/AMX; else add train.precision=fp32), 10 epochs,
# and the normalised cells with skip connections (part 6: 7.7 % lower MSE at the same steps for ~8 %
# more time per step; the part-5 figures were measured without them: add model.convlstm.norm=false
# model.convlstm.skip=false to reproduce those).
PRESETS["convlstm-cpu"] = {**PRESETS["convlstm"], "train.batch_size": 8, "train.precision": "bf16",
                           "train.epochs": 10, "model.convlstm.norm": True, "model.convlstm.skip": True}
# The best model's recipe (BENCHMARKS.md, "Why the best model is still far above the floor", parts
# 10, 13, 14): `convlstm-cpu` with a fourth layer, twice the loss weight on the last forecast step and
# Muon on the kernels (14-16 % lower MSE than AdamW after the same steps, ~27 % more time per step),
# 3 epochs: made for tens of thousands of series (`jobs/generate.py --num-series 40000`: 44.8 at age
# 30). Then each cycle of fresh trees (`--seed 1`, `--seed 2`, ...) from its weights, `train.init_from=
# <model> train.lr=1e-3 train.warmup_epochs=0.5`, gains 1-4 %, later ~1 % (43.1 after one, 41.4 after four: part 15;
# 40.5 after a fifth on twice the trees, part 16; 39.9 after a sixth at lr 5e-4 and a quarter-epoch
# warm-up, part 17; 39.6 after a seventh at batch 16 and lr 7e-4, part 18: the shipped `models/pine-convlstm`).
PRESETS["convlstm-muon"] = {**PRESETS["convlstm-cpu"], "model.convlstm.hidden": [64, 64, 64, 64],
                            "train.step_weights": [1.0, 1.0, 1.0, 2.0], "train.optimizer": "muon",
                            "train.epochs": 3}
# PredRNN (crnn/models/predrnn.py): 3 x 64 ST-LSTM layers at half resolution, the ConvLSTM's recipe.
# It learns more per training step than the ConvLSTM on the pines (BENCHMARKS.md, "Why the best
# model is still far above the floor", part 6), for 2.2x the ConvLSTM's time per step.
PRESETS["predrnn"] = {**_FAMILY_RECIPE, "model.kind": "predrnn", "train.lr": 2e-3}
PRESETS["predrnn-fast"] = {**PRESETS["predrnn"], "train.epochs": 10}
PRESETS["predrnn-cpu"] = {**PRESETS["predrnn"], "train.batch_size": 8, "train.precision": "bf16",
                          "train.epochs": 10}
# Time to quality: the strong variant in bf16 for 10 epochs. On the 2-core CPU (AVX512-BF16: bf16 runs
# 2.1x fp32 there) it beats the paper recipe's test MSE in 1/24-1/26 of the paper recipe's training
# time (README, Results). On a CPU without bf16 units pass train.precision=fp32.
PRESETS["strong-fast"] = {**PRESETS["strong"], "train.precision": "bf16", "train.epochs": 10,
                          "train.warmup_epochs": 1}


def read_yaml(path: str) -> Any:
    """The YAML document at ``path`` (a local path or a URI), None when empty. A file that is not
    YAML is a ValueError naming the path and where the parser stopped (yaml.YAMLError is no
    ValueError: it escaped the jobs' usage errors as a traceback)."""
    from crnn.storage import read_text  # a local path or a URI (file://, s3://, ...)

    try:
        return yaml.safe_load(read_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None


def _yaml_item(text: str, key: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise TypeError(f"{key}: cannot read {text!r}") from None


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the dataclass field type ``tp``; errors name ``key``."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if value is None:  # key= (nothing): the empty list
            value = []
        elif isinstance(value, str) and "," in value:  # key=1,1,1,2 without brackets
            items = [v.strip() for v in value.split(",")]
            if not all(items):
                raise TypeError(f"{key}: an empty item in {value!r} (items separated by single commas)")
            value = items if item_tp is str else [_yaml_item(v, key) for v in items]  # names stay as typed
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(v, item_tp, key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise TypeError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                value = float(value)
            except ValueError:
                raise TypeError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer beyond a float's range
            raise TypeError(f"{key}: {value!r} is beyond a float's range") from None
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{key}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):  # a nested section (model.simvp): a mapping of its fields
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"{key}: expected a mapping of {key}.* fields, got {value!r}")
        return _set_fields(tp(), value, key)
    return value


def _set_fields(obj: Any, values: dict[str, Any], prefix: str) -> Any:
    """Set ``values`` (field -> value; nested sections as dicts) on the dataclass ``obj``; errors name
    the full dotted key."""
    types = _field_types(obj)
    for name, value in values.items():
        if name not in types:
            raise KeyError(f"unknown config key {prefix + '.' + name!r}; {prefix} has {sorted(types)}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):  # merge, keep other fields
            _set_fields(current, value, f"{prefix}.{name}")
        else:
            setattr(obj, name, _coerce(value, types[name], f"{prefix}.{name}"))
    return obj


def _field_types(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in fields(obj)}


def apply(cfg: Config, updates: dict[str, Any]) -> Config:
    """Return a copy of ``cfg`` with dotted-key updates (``{"train.lr": 1e-3}``) or nested dicts."""
    cfg = from_dict(to_dict(cfg))
    for key, value in _flatten(updates).items():
        section, _, name = key.partition(".")
        if not name or section not in {f.name for f in fields(cfg)}:
            raise KeyError(f"unknown config key {key!r}; sections are model, data, train")
        # nested sections: "model.simvp.hid_s" -> cfg.model.simvp, field hid_s
        *path, leaf = name.split(".")
        sub, prefix = getattr(cfg, section), section
        for part in path:
            nested = getattr(sub, part, None)
            if not dataclasses.is_dataclass(nested):
                raise KeyError(f"unknown config key {key!r}; {prefix} has {sorted(_field_types(sub))}")
            sub, prefix = nested, f"{prefix}.{part}"
        _set_fields(sub, {leaf: value}, prefix)
    return cfg


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and "." not in k and not prefix:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def flatten_leaves(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config dict flattened to its leaves at every depth: ``{"model": {"convlstm": {"norm": x}}}``
    -> ``{"model.convlstm.norm": x}`` (``_flatten`` stops at the sections)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _override_type(key: str) -> Any:
    """The declared type of the dotted config field ``key``, or None when it names no field."""
    obj: Any = Config()
    for part in key.split("."):
        if not dataclasses.is_dataclass(obj):
            return None
        types = _field_types(obj)
        if part not in types:
            return None
        tp, obj = types[part], getattr(obj, part)
    return tp


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.lr=3e-4", "model.conv_filters=[32,64]"]`` -> dict (values parsed as YAML). A string
    field keeps the text as typed when YAML would read something else (``train.init_from=`` is "",
    ``data.path=2026-11-30`` a path, not a date). A list field takes its items separated by commas,
    with or without brackets (``train.step_weights=1,1,1,2``); a quoted value is one item
    (``data.train_splits='a,b'`` is the one split "a,b")."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form section.field=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ValueError(f"override {item!r}: the value is not valid YAML "
                             f"({str(e).splitlines()[0]})") from None
        tp = _override_type(key.strip())
        if tp is str and not isinstance(value, str):
            value = raw.strip()
        elif (typing.get_origin(tp) is tuple and isinstance(value, str)
              and raw.strip()[:1] in ("'", '"')):  # a quoted value is one item, commas and all
            value = [value]
        out[key.strip()] = value
    return out


def load_config(preset: str | None = None, yaml_path: str | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> Config:
    cfg = Config()
    if preset:
        if preset not in PRESETS:
            raise KeyError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        cfg = apply(cfg, PRESETS[preset])
    if yaml_path:
        data = read_yaml(yaml_path) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{yaml_path}: expected a mapping of sections, got {type(data).__name__}")
        cfg = apply(cfg, data)
    if overrides:
        cfg = apply(cfg, parse_overrides(overrides) if isinstance(overrides, list) else overrides)
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    d = asdict(cfg)
    return json.loads(json.dumps(d))  # tuples -> lists, plain JSON types


def from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config from ``to_dict`` output (e.g. from a checkpoint); unknown keys are errors."""
    cfg = Config()
    for section in ("model", "data", "train"):
        _set_fields(getattr(cfg, section), d.get(section) or {}, section)
    return cfg


def save(cfg: Config, path: str) -> None:
    """Write ``cfg`` as YAML to a local path or a URI (``s3://...``), through :mod:`crnn.storage`."""
    from crnn.storage import write_text

    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def add_job_args(parser, out_help: str = "run directory (local path or URI)") -> None:
    """The arguments every config-driven job takes (train, tune); read back with ``from_job_args``."""
    parser.add_argument("--data", required=True, help="dataset directory (local path or URI) with dataset.json")
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--preset", default="quick", help=f"base config: {' | '.join(PRESETS)}")
    parser.add_argument("--config", help="YAML file with model/data/train sections")
    parser.add_argument("--workers", type=int, help="Ray Train workers (train.num_workers)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker (train.use_gpu)")
    parser.add_argument("--epochs", type=int, help="shortcut for train.epochs=N")
    from crnn.model import FAMILIES

    parser.add_argument("overrides", nargs="*", help=(
        "config overrides: section.field=value, anywhere on the line; the forecaster is model.kind="
        f"{'|'.join(FAMILIES)} (each family's fields under model.<kind>.*, e.g. model.simvp.hid_t=256)"))


def from_job_args(preset: str | None, yaml_path: str | None, overrides: list[str] | None, *,
                  data: str | None = None, workers: int | None = None, use_gpu: bool = False,
                  epochs: int | None = None) -> Config:
    """The config a job builds from its command line: preset, YAML, overrides, then its flags."""
    extra: dict[str, Any] = {}
    if data is not None:
        extra["data.path"] = data
    if workers is not None:
        extra["train.num_workers"] = workers
    if use_gpu:
        extra["train.use_gpu"] = True
    if epochs is not None:
        extra["train.epochs"] = epochs
    cfg = apply(load_config(preset, yaml_path, overrides), extra)
    cfg.model.validate()
    return cfg


# Errors a job reports as a usage error (exit status 2, one line) when its checks find them before
# Ray starts: bad arguments or config (KeyError, TypeError, ValueError), a bad dataset (ShardError),
# model directory (ModelError) or run directory (RunDirError) -- all ValueErrors -- a missing or
# existing path (OSError).
USAGE_ERRORS = (KeyError, TypeError, ValueError, OSError)


class JobArgumentParser(argparse.ArgumentParser):
    """The jobs' argument parser: its own errors (unknown flag, bad choice or type, missing required
    argument) are ONE line on stderr, ``prog: error: <message>``, exit status 2 -- like every other
    usage error the jobs report -- instead of argparse's usage block followed by the error."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())} (see --help)\n")


def parse_job_args(parser, argv=None):
    """``parser.parse_intermixed_args``: ``section.field=value`` overrides (positionals) may stand
    anywhere among the options (``--data D train.epochs=1 --out O train.seed=1``). A parser that is
    not a ``JobArgumentParser`` still reports its errors on one line. Every job calls it first, so it
    also sets how the job shows warnings (:func:`job_warnings`)."""
    if not isinstance(parser, JobArgumentParser):
        parser.error = JobArgumentParser.error.__get__(parser)
    job_warnings(parser.prog)
    return parser.parse_intermixed_args(argv)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_PYTHON_FORMATWARNING = warnings.formatwarning


def job_warnings(prog: str) -> None:
    """Show this package's own warnings (a ``UserWarning`` or subclass raised from a module of
    ``crnn/``: a leftover staging folder, a mirror axis, a Tune budget...) as ONE line on stderr,
    ``prog: warning: <message>``, like the jobs' usage errors -- not Python's ``<file>:<line>:
    UserWarning: <message>`` followed by the source line that raised it, which names our code
    instead of the user's problem. Every other warning (torch's, Ray's, a ``DeprecationWarning``)
    keeps Python's format, whose file and line are what its reader needs. Replaces
    ``warnings.formatwarning`` for the process (each call replaces the last; it is only a format:
    which warnings show is still up to the warning filters)."""
    def formatwarning(message, category, filename, lineno, line=None):
        try:
            ours = os.path.commonpath([os.path.abspath(filename), _PACKAGE_DIR]) == _PACKAGE_DIR
        except ValueError:  # another drive (Windows), or a pseudo-file name such as "<string>"
            ours = False
        if ours and issubclass(category, UserWarning):
            return f"{prog}: warning: {' '.join(str(message).split())}\n"
        return _PYTHON_FORMATWARNING(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning


def usage_error(prog: str, error: BaseException) -> int:
    """Print ``prog: error: <message>`` (one line) to stderr; returns 2, the usage-error status."""
    import sys

    msg = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    print(f"{prog}: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2

"""Model directories: the one on-disk format every job reads with ``--model PATH``.

A model directory (also the layout of every Ray Train checkpoint this project writes)::

    model.pt       {"format": "crnn-forecast-model", "version": 1, "config": Config dict,
                    "state_dict": ..., "epoch": int, "metrics": {...},
                    "data": {...} (optional: the training data's layout, age unit and age range,
                    crnn.timeaware.data_summary)}
    optimizer.pt   optimizer state and epoch, for resuming (absent in published models)
    config.yaml    the same config, for people

The checkpoint carries the config that built the model, so evaluate, predict and serve rebuild the
model from the directory alone. Paths may be local or URIs (``s3://...``); remote directories are
copied to a local temporary directory first (:func:`crnn.storage.local_copy`). Files are loaded
with ``weights_only=True``: nothing in a model directory can run code. Loading a model onto a
device for forecasting is :func:`crnn.inference.load_model`.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from typing import Any

import torch

from crnn.config import Config, flatten_leaves, from_dict, save as save_config, to_dict
from crnn.model import FAMILIES, build_model
from crnn.storage import local_copy

MODEL_FILE = "model.pt"
OPTIM_FILE = "optimizer.pt"
FORMAT = "crnn-forecast-model"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save_model_dir(directory: str, model: torch.nn.Module, cfg: Config, *, epoch: int,
                   metrics: dict[str, Any] | None = None, optimizer: torch.optim.Optimizer | None = None,
                   scheduler: Any = None, state_dict: dict[str, torch.Tensor] | None = None,
                   done: bool = False, data: dict[str, Any] | None = None) -> str:
    """Write a model directory: ``model.pt`` (weights -- ``model``'s, or ``state_dict`` when given --
    config, epoch, metrics), ``config.yaml`` and, with an ``optimizer``, ``optimizer.pt`` for resuming.
    ``done`` writes a training state without optimizer that tells a resumed run nothing is left.
    ``data``: the training data's summary (:func:`crnn.timeaware.data_summary`: layout, age unit and
    range), kept as the payload's optional ``data`` key -- what ages the model answers."""
    os.makedirs(directory, exist_ok=True)
    src = state_dict if state_dict is not None else unwrap(model).state_dict()
    state = {k: v.detach().cpu() for k, v in src.items()}
    torch.save({"format": FORMAT, "version": 1, "config": to_dict(cfg), "state_dict": state,
                "epoch": int(epoch), "metrics": dict(metrics or {}),
                **({"data": dict(data)} if data else {})},
               os.path.join(directory, MODEL_FILE))
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "epoch": int(epoch)}, os.path.join(directory, OPTIM_FILE))
    elif done:
        torch.save({"optimizer": None, "scheduler": None, "epoch": int(cfg.train.epochs) - 1, "done": True},
                   os.path.join(directory, OPTIM_FILE))
    save_config(cfg, os.path.join(directory, "config.yaml"))
    return directory


class ModelError(ValueError):
    """A model directory that cannot be used; the message names the path and what is wrong."""


# model.pt's keys and their types (the format's contract)
MODEL_KEYS = {"format": str, "version": int, "config": dict, "state_dict": dict, "epoch": int, "metrics": dict}


def _not_a(p: str, what: str, want: str = "") -> str:
    """Why the local path ``p`` is not the ``what`` expected (``want``: what to give instead)."""
    if os.path.islink(p) and not os.path.exists(p):
        return f"a broken symbolic link (to {os.readlink(p)!r}), not a {what}"
    if what == "model directory":
        if not os.path.exists(p):
            return "no such model directory"
        return f"a file, not a {what}; give {want}" if os.path.isfile(p) else f"not a {what}"
    if os.path.isdir(p):
        return f"a directory, not a {what}"
    return f"not a regular file, so not a {what}"


def read_model_file(path: str) -> dict[str, Any]:
    """The raw ``model.pt`` payload of a model directory (local or URI), checked key by key.

    Raises :class:`ModelError` naming the path for a missing directory or file, a file torch cannot
    read (truncated, an interrupted copy, not a PyTorch file, objects that ``weights_only`` refuses),
    another format, or missing / mistyped keys.
    """
    with contextlib.ExitStack() as stack:
        try:
            local = stack.enter_context(local_copy(path, ignore=(OPTIM_FILE,)))  # the weights only
        except (OSError, ValueError) as e:  # a URI that cannot be listed or copied
            raise ModelError(f"{path}: cannot read the model directory ({e})") from None
        if not os.path.isdir(local):
            raise ModelError(f"{path}: {_not_a(local, 'model directory', f'the directory holding {MODEL_FILE}')}")
        f = os.path.join(local, MODEL_FILE)
        if not os.path.isfile(f):
            if os.path.lexists(f):  # a directory, a broken link, a pipe...
                raise ModelError(f"{path}/{MODEL_FILE}: {_not_a(f, 'model file')}")
            raise ModelError(f"{path}: no {MODEL_FILE}; not a model directory")
        # torch reads its zip without checking the CRCs: damaged bytes in the weights load silently, and
        # damaged bytes in data.pkl fail unpickling as if the file held objects weights_only refuses
        bad = _failed_crc(f)
        if bad:
            raise ModelError(f"{path}/{MODEL_FILE}: corrupt model file, {bad} fails its CRC check (a damaged "
                             f"copy?)")
        try:
            payload = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # RuntimeError (zip), UnpicklingError (weights_only), EOFError, ...
            first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
            hint = ("it holds objects that weights_only loading refuses" if "weights only" in str(e).lower()
                    else "truncated (an interrupted copy?) or not a PyTorch file")
            raise ModelError(f"{path}/{MODEL_FILE}: unreadable model file, {hint} ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelError(f"{path}/{MODEL_FILE}: not a {FORMAT} file (format {got!r})")
    missing = [k for k in MODEL_KEYS if k not in payload]
    if missing:
        raise ModelError(f"{path}/{MODEL_FILE}: missing keys {missing}")
    for key, tp in MODEL_KEYS.items():
        if not isinstance(payload[key], tp) or (tp is int and isinstance(payload[key], bool)):
            raise ModelError(f"{path}/{MODEL_FILE}: {key!r} is a {type(payload[key]).__name__}, expected {tp.__name__}")
    if "data" in payload and not isinstance(payload["data"], dict):
        raise ModelError(f"{path}/{MODEL_FILE}: 'data' is a {type(payload['data']).__name__}, expected dict")
    if payload["version"] != 1:
        raise ModelError(f"{path}/{MODEL_FILE}: format version {payload['version']} is not 1 (a newer crnn-forecast?)")
    return payload


def _failed_crc(f: str) -> str | None:
    """The first member of the zip archive ``f`` (torch's file format) whose data does not match its
    CRC-32, or None (also for the legacy non-zip format). Reads the file once (~1 GB/s)."""
    if not zipfile.is_zipfile(f):
        return None
    try:
        with zipfile.ZipFile(f) as z:
            return z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"the archive ({type(e).__name__}: {e})"


def model_from_payload(payload: dict[str, Any], path: str) -> tuple[torch.nn.Module, Config]:
    """(model with the payload's weights, its Config); :class:`ModelError` naming ``path`` when the
    config does not build or the weights do not fit it."""
    try:
        cfg = from_dict(payload["config"])
        cfg.model.validate()
        model = build_model(cfg.model)
    except (KeyError, TypeError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise ModelError(f"{path}/{MODEL_FILE}: its config does not build a model ({msg})") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as e:
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()][:3]
        raise ModelError(f"{path}/{MODEL_FILE}: the weights do not fit its config ({'; '.join(lines) or e})") from None
    return model, cfg


def check_model_dir(path: str) -> tuple[Config, dict[str, Any]]:
    """Everything :func:`crnn.inference.load_model` checks, without keeping the model: (Config, payload)."""
    payload = read_model_file(path)
    _, cfg = model_from_payload(payload, path)
    return cfg, payload


def load_training_state(path: str) -> dict[str, Any] | None:
    """The ``optimizer.pt`` payload of a model directory (local or URI), or None when it has none."""
    with local_copy(path, ignore=(MODEL_FILE,)) as local:  # the optimizer state only
        f = os.path.join(local, OPTIM_FILE)
        if not os.path.exists(f):
            return None
        return torch.load(f, map_location="cpu", weights_only=True)


_FAMILY_SECTIONS = tuple(k for k in FAMILIES if k != "crnn")   # ModelConfig's per-family sections
_COMMON_FIELDS = ("kind", "height", "width", "channels")
# Regularisation rates: they change training, not the weights a network has (fine-tuning often
# lowers them), so a starting model may differ in them.
_REGULARISATION = ("dropout", "recurrent_dropout", "drop_path")


def _network_fields(cfg: Config) -> dict[str, Any]:
    """The dotted ``model.*`` fields that shape ``cfg``'s network: the image size, the kind, and the
    kind's own fields (its section; the top-level fields for the paper's CRNN), regularisation rates
    (dropout, drop path) aside."""
    flat = flatten_leaves({"model": to_dict(cfg)["model"]})
    kind = cfg.model.kind
    if kind in _FAMILY_SECTIONS:
        keep = lambda k: k.startswith(f"model.{kind}.") or k.split(".", 1)[1] in _COMMON_FIELDS  # noqa: E731
    else:
        keep = lambda k: k.split(".")[1] not in _FAMILY_SECTIONS  # noqa: E731
    return {k: v for k, v in flat.items() if keep(k) and k.rsplit(".", 1)[1] not in _REGULARISATION}


def model_differences(a: Config, b: Config) -> list[tuple[str, Any, Any]]:
    """(dotted field, a's value, b's value) for each ``model.*`` field that shapes the network on
    which two configs differ, sorted by name; only ``model.kind`` (and the image size) when the kinds
    differ. [] when both build the same network (other families' unused sections may differ)."""
    fa, fb = _network_fields(a), _network_fields(b)
    if a.model.kind != b.model.kind:
        fa = {k: v for k, v in fa.items() if k.split(".", 1)[1] in _COMMON_FIELDS}
        fb = {k: v for k, v in fb.items() if k.split(".", 1)[1] in _COMMON_FIELDS}
    return [(k, fa.get(k), fb.get(k)) for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)]


def read_init_source(path: str) -> tuple[Config, dict[str, Any]]:
    """(Config, payload) of the model directory ``train.init_from`` names, after every check of
    :func:`check_model_dir`; :class:`ModelError` starting "train.init_from:" otherwise, with a hint
    when ``path`` is a run directory whose ``model/`` holds the model."""
    try:
        return check_model_dir(path)
    except ModelError as e:
        from crnn.storage import exists, join

        hint = ""
        try:
            if exists(join(path, "model", MODEL_FILE)):
                hint = f" (a run directory? its model is {join(path, 'model')})"
        except (OSError, ValueError):
            pass
        raise ModelError(f"train.init_from: {e}{hint}") from None


def check_init_from(cfg: Config, source: Config | None = None,
                    data: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Check ``train.init_from`` (fine-tuning / a warm restart) before any training starts.

    Nothing to check when it is "". Otherwise it must name a model directory (local or URI) that
    loads (:func:`check_model_dir`; :class:`ModelError` naming ``train.init_from`` and the path
    otherwise) and whose network config equals ``cfg``'s (:func:`model_differences`: the weights are
    loaded as they are, so the network must be the same; ValueError listing the differing fields with
    both values). ``source``: that directory's Config when the caller has read it already (Tune
    checks many candidate configs against one). ``data``: the training dataset's card (or its
    :func:`crnn.timeaware.data_summary`), when the caller has it: a time-aware starting model must
    have been trained on ages in the same unit (:func:`crnn.timeaware.check_start_ages`, ValueError
    naming both; only checked when this call reads the model, ``source`` not given). Returns the
    starting model's state dict when this call read it (``source`` not given), so a caller that
    trains in this process loads it without a second read; None otherwise.
    """
    if not cfg.train.init_from:
        return None
    if source is None:
        return read_checked_init(cfg, data)[0]
    _check_same_network(cfg, source)
    return None


def read_checked_init(cfg: Config, data: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """:func:`check_init_from`'s checks from one read of the ``train.init_from`` directory (which
    must be set), returning ``(state dict, that model's data summary)`` (the checkpoint's ``data``; None
    for a model directory without one): :func:`crnn.loop.fit_plain` keeps the summary for a
    fine-tune given no ``data`` of its own, so the age unit and grid carry over."""
    path = cfg.train.init_from
    source, payload = read_init_source(path)
    _check_same_network(cfg, source)
    if data is not None:
        from crnn.timeaware import check_start_ages

        check_start_ages(path, source, payload.get("data"), data)  # in-memory data: no dataset path
    return payload["state_dict"], payload.get("data")


def _check_same_network(cfg: Config, source: Config) -> None:
    path = cfg.train.init_from
    diff = model_differences(cfg, source)
    if diff:
        shown = "; ".join(f"{k}: this run {va!r}, that model {vb!r}" for k, va, vb in diff[:4])
        more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
        raise ValueError(f"train.init_from={path!r}: that model's network differs from this run's: {shown}{more}. "
                         f"Give the same model.* settings (e.g. the preset it was trained with), or drop "
                         f"train.init_from to start from random weights")


def init_weights(model: torch.nn.Module, path: str) -> None:
    """Load the weights of the model directory ``path`` (``train.init_from``) into ``model`` (the
    bare module, before DDP/compile wraps it). :class:`ModelError` naming ``path`` if the file does
    not load or its weights do not fit; :func:`check_init_from` has compared the configs first."""
    try:
        payload = read_model_file(path)
    except ModelError as e:
        raise ModelError(f"train.init_from: {e}") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise ModelError(f"train.init_from={path!r}: its weights do not fit this run's model ({e})") from None

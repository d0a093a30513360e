"""crnn.inference: device choice, image-size check, uint8 conversion, window and rollout forecasts,
loading a model directory (ModelError for a damaged one)."""

import os

import numpy as np
import pytest
import torch

from crnn.checkpoint import MODEL_FILE, read_model_file, save_model_dir
from crnn.config import Config, DataConfig
from crnn.inference import (ImageSizeError, ModelError, check_image_size, default_input_ages, forecast_uint8,
                            forecast_window, image_size, load_model, model_version, pick_device, to_uint8)
from crnn.model import ModelConfig, build_model

T, H, W, C = 4, 32, 16, 3


def _cfg(kind="crnn") -> Config:
    return Config(model=ModelConfig(kind=kind, conv_filters=(4,), lstm_units=8), data=DataConfig(in_frames=T))


def _frames(n: int, t: int = T, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, t, H, W, C), dtype=np.uint8)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cfg = _cfg()
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("inference") / "model")
    save_model_dir(path, build_model(cfg.model), cfg, epoch=2, metrics={"val_loss": 0.5, "input_ages": [1, 2, 3, 4]})
    return path


# ----------------------------------------------------------------------------- device
def test_pick_device_defaults_and_refusals(monkeypatch):
    assert pick_device() == "cpu" and pick_device(None) == "cpu" and pick_device("auto", num_gpus=0) == "cpu"
    assert pick_device(torch.device("cpu")) == "cpu"
    for bad in ("gpu", "tpu", "cuda:x", "meta", ""):
        with pytest.raises(ValueError, match=f"device={bad!r}: expected cpu, cuda or cuda:N"):
            pick_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for asked in (("cuda",), ("cuda:0",), ("auto", 1)):
        with pytest.raises(ValueError, match=r"device='cuda(:0)?' requested but CUDA is not available here"):
            pick_device(*asked)


def test_pick_device_with_cuda(monkeypatch):
    """The CUDA branches without a GPU: torch.cuda's answers replaced (no tensor is made)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("auto", num_gpus=0.25) == "cuda"
    assert pick_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match=r"device='cuda:1': this machine has 1 CUDA device\(s\)"):
        pick_device("cuda:1")


# ----------------------------------------------------------------------------- image size
def test_size_check_names_both_sizes():
    check_image_size((32, 16, 3), (32, 16, 3), "data/pines")  # equal: nothing
    check_image_size(None, (99, 7, 1), "data/pines")  # a baseline takes any size
    with pytest.raises(ImageSizeError) as e:
        check_image_size((32, 16, 3), (64, 16, 3), "data/big", "model runs/m")
    assert str(e.value) == "data/big: images are 64x16x3 but model runs/m expects 32x16x3 (height x width x channels)"
    assert isinstance(e.value, ValueError)
    with pytest.raises(ImageSizeError, match=r"^x: images are 32x16x4 but the model expects 32x16x3 \(height x "
                                             r"width x channels\); set model.channels$"):
        check_image_size((32, 16, 3), np.array([32, 16, 4]), "x", hint="set model.channels")


def test_image_size_of_families_and_baselines():
    assert image_size(ModelConfig(kind="crnn", height=64, width=32)) == (64, 32, 3)
    assert image_size(ModelConfig(kind="convlstm")) == (32, 16, 3)
    assert image_size(ModelConfig(kind="persistence")) is None and image_size(ModelConfig(kind="linear")) is None


# ----------------------------------------------------------------------------- uint8
def test_to_uint8_rounds_clips_and_moves_channels_last():
    values = np.array([-0.5, 0.0, 0.002, 0.25, 0.5, 0.75, 0.999, 1.0, 1.5])
    want = np.array([0, 0, 1, 64, 128, 191, 255, 255, 255], np.uint8)  # rounded (0.51 -> 1), not truncated
    pred = np.broadcast_to(values[None, None, None, None, :], (1, 1, 1, 1, len(values)))  # (N, K, C, H, W)
    got = to_uint8(pred)
    assert got.dtype == np.uint8 and got.shape == (1, 1, 1, len(values), 1)
    np.testing.assert_array_equal(got[0, 0, 0, :, 0], want)
    chans = np.stack([np.full((2, 3), v) for v in (0.0, 0.5, 1.0)])[None, None]  # (1, 1, 3, 2, 3)
    out = to_uint8(chans)
    assert out.shape == (1, 1, 2, 3, 3) and (out[0, 0, :, :, 0] == 0).all() and (out[0, 0, :, :, 2] == 255).all()


# ----------------------------------------------------------------------------- forecasts
def test_rollout_shape_for_a_horizon_and_persistence_values():
    frames = _frames(3)
    pers = build_model(ModelConfig(kind="persistence")).eval()
    out = forecast_uint8(pers, frames, T, 5)
    assert out.shape == (3, 5, H, W, C) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.repeat(frames[:, -1:], 5, axis=1))  # repeats the last frame
    window = forecast_uint8(pers, frames, T, None)
    assert window.shape == (3, T, H, W, C)
    np.testing.assert_array_equal(window, frames)  # step t forecasts t + 1 as frame t


def test_per_series_horizons_equal_each_series_alone():
    torch.manual_seed(1)
    model = build_model(_cfg().model).eval()
    frames = _frames(3, seed=2)
    outs = forecast_uint8(model, frames, T, [2, 3, 1])
    assert [o.shape for o in outs] == [(2, H, W, C), (3, H, W, C), (1, H, W, C)]
    for i, h in enumerate([2, 3, 1]):
        alone = forecast_uint8(model, frames[i:i + 1], T, h)[0]
        assert np.abs(outs[i].astype(int) - alone).max() <= 1


def test_forecast_arguments_refused_with_their_value():
    pers = build_model(ModelConfig(kind="persistence"))
    with pytest.raises(ValueError, match=r"expected frames \(B, 4, H, W, C\), got \(2, 3, 32, 16, 3\)"):
        forecast_uint8(pers, _frames(2, t=3), T, 1)
    with pytest.raises(ValueError, match=r"one positive horizon per series, got \[0, 2\]"):
        forecast_uint8(pers, _frames(2), T, [0, 2])
    with pytest.raises(ValueError, match="in_frames=6"):
        forecast_window(pers, _frames(2), in_frames=6)
    with pytest.raises(ValueError, match="batch_size=0"):
        forecast_window(pers, _frames(2), batch_size=0)


# ----------------------------------------------------------------------------- loading
def test_load_model_eval_mode_meta_and_version(model_dir, tmp_path):
    model, cfg, meta = load_model(model_dir)
    assert not model.training and cfg.model.lstm_units == 8
    assert meta == {"epoch": 2, "metrics": {"val_loss": 0.5, "input_ages": [1, 2, 3, 4]}, "data": None, "tta": "none"}
    version = load_model(model_dir, version=True)[2]["version"]
    assert version == model_version(read_model_file(model_dir)) and len(version) == 12
    other = str(tmp_path / "other")
    torch.manual_seed(99)
    save_model_dir(other, build_model(cfg.model), cfg, epoch=2)
    assert load_model(other, version=True)[2]["version"] != version  # other weights, other version


def test_load_of_a_damaged_file_raises_model_error(model_dir, tmp_path):
    import shutil

    cut, flipped = str(tmp_path / "cut"), str(tmp_path / "flipped")
    shutil.copytree(model_dir, cut)
    shutil.copytree(model_dir, flipped)
    f = os.path.join(cut, MODEL_FILE)
    with open(f, "r+b") as fh:
        fh.truncate(os.path.getsize(f) // 2)
    with pytest.raises(ModelError, match=rf"^{cut}/{MODEL_FILE}: unreadable model file, truncated"):
        load_model(cut)
    f = os.path.join(flipped, MODEL_FILE)
    data = bytearray(open(f, "rb").read())
    weights_at = data.index(b"data/0") + 200  # inside the first tensor's bytes
    data[weights_at:weights_at + 16] = bytes(255 - b for b in data[weights_at:weights_at + 16])
    open(f, "wb").write(bytes(data))
    with pytest.raises(ModelError, match=rf"^{flipped}/{MODEL_FILE}: corrupt model file, .* fails its CRC check"):
        load_model(flipped)
    with pytest.raises(ModelError, match="no such model directory"):
        load_model(str(tmp_path / "none"))


def test_load_of_a_damaged_pickle_names_the_damage(model_dir, tmp_path):
    """Bytes damaged in the archive's data.pkl: torch's weights_only unpickler fails on them before any
    CRC is checked, and the error said the file 'holds objects that weights_only loading refuses' -- a
    pickle of code -- for what is a damaged copy."""
    import shutil

    d = str(tmp_path / "pkl")
    shutil.copytree(model_dir, d)
    f = os.path.join(d, MODEL_FILE)
    data = bytearray(open(f, "rb").read())
    at = data.index(b"data.pkl") + 40  # inside the pickle's bytes (stored, not compressed)
    data[at:at + 64] = bytes(64)
    open(f, "wb").write(bytes(data))
    with pytest.raises(ModelError, match=rf"^{d}/{MODEL_FILE}: corrupt model file, \S*data\.pkl fails its CRC check"):
        load_model(d)


def test_default_input_ages_from_metrics_else_the_papers(tmp_path):
    cfg = _cfg()
    assert default_input_ages(cfg, {"input_ages": [1, 2, 3, 4, 5]}) == [1, 2, 3, 4]
    assert default_input_ages(cfg, {"input_ages": [4, 3, 2, 1]}) == [10, 15, 20, 25]  # not ascending
    cfg.data.path = str(tmp_path / "no-dataset")
    assert default_input_ages(cfg) == [10, 15, 20, 25]

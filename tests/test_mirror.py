"""crnn.mirror: left-right mirroring about a dataset's axis of symmetry (train.augment=hflip).

The bug these guard: ``train.augment=hflip`` mirrored about the image centre, but the pine simulator
draws the trunk at the centre of column W // 2, so every mirrored pine had its trunk one column off
(a series no test tree looks like)."""

import numpy as np
import pytest
import torch

from crnn import pine, shapes
from crnn.loop import augment, fit_plain
from crnn.mirror import check_axis, mirror, mirror_axis, mirror_index, paired_columns
from crnn.shards import torch_frames
from crnn.timeaware import data_summary


def test_index_by_hand_about_a_column_and_about_the_centre():
    assert mirror_index(6, 3).tolist() == [0, 5, 4, 3, 2, 1]        # column 0 has no partner: kept
    assert paired_columns(6, 3).tolist() == [False] + [True] * 5
    assert mirror_index(6, 2.5).tolist() == [5, 4, 3, 2, 1, 0]      # the image centre: a plain flip
    assert mirror_index(5, 2).tolist() == [4, 3, 2, 1, 0]           # odd width: W // 2 is the centre
    assert mirror_index(6, 0).tolist() == [0, 1, 2, 3, 4, 5]        # only column 0 pairs (with itself)
    assert mirror_index(6, 1.5).tolist() == [3, 2, 1, 0, 4, 5]
    a = np.arange(24).reshape(2, 2, 6)
    for axis in (0, 1, 1.5, 2.5, 3, 4.5, 5):                        # an involution on the paired columns
        assert np.array_equal(mirror(mirror(a, axis), axis), a)


@pytest.mark.parametrize("axis", [2.3, -0.5, 6, 5.5, float("nan"), float("inf"), "left", None, True])
def test_a_bad_axis_is_named(axis):
    with pytest.raises(ValueError, match="mirror axis .*multiple of 0.5 in \\[0, 5\\]"):
        mirror_index(6, axis)


def test_numpy_and_torch_agree_on_any_dim():
    a = np.random.default_rng(0).integers(0, 255, (3, 4, 5, 16), dtype=np.uint8)
    for dim in (-1, 3):
        assert np.array_equal(mirror(torch.as_tensor(a), 8, dim).numpy(), mirror(a, 8, dim))
    assert np.array_equal(mirror(a, 2, dim=2), a[:, :, [4, 3, 2, 1, 0]])


def _asymmetry(mean: np.ndarray, axis: float) -> float:
    keep = paired_columns(mean.shape[1], axis)
    return float(np.abs(mean - mirror(mean, axis, dim=1))[:, keep].mean())


@pytest.mark.parametrize("height,width", [(32, 16), (32, 15), (64, 64)])
def test_pines_are_symmetric_about_their_trunk_column_not_the_image_centre(height, width):
    """The mean pine at age 25 is mirror-symmetric about column W // 2 (the scene's axis) and, for an
    even width, clearly not about the image centre; the trunk stays in its column under the mirror."""
    frames = np.stack([pine.simulate_series(pine.sample_params(s), s, ages=(25,), height=height, width=width)[0]
                       for s in range(24)]).astype(np.float64)        # (24, H, W, 3)
    axis = pine.mirror_axis(width)
    assert axis == width // 2
    mean = frames.mean(0)
    sym = _asymmetry(mean, axis)
    if width % 2 == 0:
        assert sym < 0.5 * _asymmetry(mean, (width - 1) / 2)
    trunk = np.argmin(frames[:, -1].sum(-1), axis=1)                 # darkest pixel of the bottom row
    assert (trunk == width // 2).all()
    mirrored = mirror(frames, axis, dim=2)
    assert (np.argmin(mirrored[:, -1].sum(-1), axis=1) == width // 2).all()


def test_mirror_axis_from_cards_old_and_new():
    assert mirror_axis({"width": 16, "scene": "pines", "mirror_axis": 8.0}) == 8.0
    assert mirror_axis({"width": 16, "scene": "pines"}) == 8.0                  # before the field
    assert mirror_axis({"width": 16, "source": "simulator pine-1"}) == 8.0      # before the scene
    assert mirror_axis({"width": 16, "scene": "shapes"}) == 7.5
    assert mirror_axis({"width": 16, "source": "ingest: photos/"}) == 7.5       # photos: the centre
    assert shapes.mirror_axis(16) == 7.5 and pine.mirror_axis(15) == 7.0
    with pytest.raises(ValueError, match="dataset card field mirror_axis 17"):
        mirror_axis({"width": 16, "mirror_axis": 17})
    assert check_axis(16, "8") == 8.0


def test_data_summary_keeps_the_axis_regular_and_irregular():
    regular = {"width": 16, "scene": "pines", "ages": [10, 15, 20, 25, 30]}
    assert data_summary(regular, 4)["mirror_axis"] == 8.0
    irregular = {"width": 15, "scene": "shapes", "layout": "irregular", "age_range": [1, 50]}
    assert data_summary(irregular, 4)["mirror_axis"] == 7.0


def _pine_frames(n: int, width: int = 16) -> np.ndarray:
    return np.stack([pine.simulate_series(pine.sample_params(s), s, ages=(10, 15, 20, 25, 30), width=width)
                     for s in range(n)])


def test_hflip_about_the_pines_axis_keeps_every_trunk_in_its_column():
    x = torch_frames(torch.as_tensor(_pine_frames(16)), "cpu")      # (16, 5, 3, 32, 16)
    torch.manual_seed(0)
    y = augment(x, "hflip", 8.0)
    flipped = [not torch.equal(y[i], x[i]) for i in range(16)]
    assert 0 < sum(flipped) < 16
    for i in range(16):
        assert torch.equal(y[i], x[i][..., mirror_index(16, 8)] if flipped[i] else x[i])
    trunk = y[:, -1, :, -1].sum(1).argmin(-1)                        # bottom row, last frame
    assert (trunk == 8).all()
    torch.manual_seed(0)                                             # the old flip moves mirrored trunks
    old = augment(x, "hflip")
    assert (old[:, -1, :, -1].sum(1).argmin(-1)[torch.tensor(flipped)] == 7).all()
    with pytest.raises(ValueError, match="mirror axis 16"):
        augment(x, "hflip", 16)


def test_fit_plain_mirrors_about_the_data_summarys_axis(monkeypatch):
    """fit_plain hands the training data's axis (its ``data`` summary) to every step, and keeps it in
    the model directory's data summary."""
    from crnn import loop
    from crnn.config import load_config

    seen = []
    real = loop.augment
    monkeypatch.setattr(loop, "augment", lambda x, kind, axis=None: seen.append(axis) or real(x, kind, axis))
    cfg = load_config("quick", overrides={"train.augment": "hflip", "train.epochs": 1, "train.batch_size": 4})
    summary = data_summary({"width": 16, "scene": "pines", "ages": [10, 15, 20, 25, 30]}, 4)
    fit_plain(cfg, _pine_frames(8), data=summary)
    assert seen and set(seen) == {8.0}
    seen.clear()
    fit_plain(cfg, _pine_frames(8))                                  # no summary: the image centre
    assert set(seen) == {None}


@pytest.mark.parametrize("axis", [16, 7.3, "middle"])
def test_training_refuses_a_card_with_a_bad_axis_before_anything_runs(axis):
    """check_data (called before Ray starts and before an old run directory is cleared) names the
    dataset and the card's bad mirror_axis."""
    from crnn.config import load_config
    from crnn.train import check_data

    cfg = load_config("quick", overrides={"data.path": "/data/x"})
    card = {"width": 16, "height": 32, "channels": 3, "ages": [10, 15, 20, 25, 30], "scene": "pines",
            "splits": {"train": 10, "val": 2, "test": 2}}
    assert check_data(cfg, card) == 10
    with pytest.raises(ValueError, match=f"/data/x: dataset card field mirror_axis {axis!r}"):
        check_data(cfg, {**card, "mirror_axis": axis})


def test_tta_axis_prefers_the_given_then_the_models_then_the_datasets_and_warns_on_a_mismatch():
    import warnings as w

    from crnn.mirror import tta_axis

    pines, shapes_card = {"width": 16, "scene": "pines"}, {"width": 16, "scene": "shapes"}
    assert tta_axis("none", None, {"mirror_axis": 8.0}, pines, "d") is None
    assert tta_axis("hflip", 3.5, {"mirror_axis": 8.0}, shapes_card, "d") == 3.5
    assert tta_axis("hflip", None, None, shapes_card, "d") == 7.5
    with w.catch_warnings():
        w.simplefilter("error")                                          # agreeing axes: no warning
        assert tta_axis("hflip", None, {"mirror_axis": 8.0}, pines, "d") == 8.0
    with pytest.warns(UserWarning, match="d: the model's training data .* column 8.0, this dataset about 7.5"):
        assert tta_axis("hflip", None, {"mirror_axis": 8.0}, shapes_card, "d") == 8.0


def test_an_axis_for_a_model_of_any_width_is_still_checked():
    from crnn.mirror import model_tta_axis

    assert model_tta_axis("hflip", 40.5, None, None, "m") == 40.5          # a baseline: any width
    for bad in (7.25, -1, "x"):
        with pytest.raises(ValueError, match=f"m: mirror axis {bad!r}"):
            model_tta_axis("hflip", bad, None, None, "m")


@pytest.mark.parametrize("recorded", ["abc", 16.0, 7.25, -1])
def test_a_bad_axis_recorded_in_the_model_is_named_as_the_models(recorded):
    """The review's inputs: a model directory whose data summary holds a bad mirror_axis (a string,
    beyond the image, not on a half column): named as the model's, not as if the user had given it."""
    from crnn.mirror import model_tta_axis, tta_axis

    pines = {"width": 16, "scene": "pines"}
    with pytest.raises(ValueError, match=f"d: the model's recorded training-data mirror_axis {recorded!r}"):
        tta_axis("hflip", None, {"mirror_axis": recorded}, pines, "d")
    with pytest.raises(ValueError, match=f"m: the model's recorded training-data mirror_axis {recorded!r}"):
        model_tta_axis("hflip", None, {"mirror_axis": recorded}, 16, "m")
    assert tta_axis("hflip", 8.0, {"mirror_axis": recorded}, pines, "d") == 8.0   # a given axis wins


def test_a_bad_axis_on_the_dataset_card_names_the_dataset():
    from crnn.mirror import tta_axis

    with pytest.raises(ValueError, match="data/x: dataset card field mirror_axis 99"):
        tta_axis("hflip", None, None, {"width": 16, "mirror_axis": 99}, "data/x")

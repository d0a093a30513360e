import os

import numpy as np
import pytest
from PIL import Image

from crnn import ingest as ing
from crnn.shards import ShardError, read_card, read_numpy


def _img(path, h, w, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    ages = (1, 2, 3)
    for k, name in enumerate(["plant-a", "plant-b", "pet-c"]):
        d = root / name
        d.mkdir(parents=True)
        for a in ages:  # different source sizes and name styles
            _img(d / (f"{a}.png" if k != 1 else f"age_{a:02d}.jpg"), 64 + 8 * k, 40, seed=10 * k + a)
    d = root / "missing-age"; d.mkdir()
    for a in (1, 3):
        _img(d / f"{a}.png", 32, 16, a)
    d = root / "broken-file"; d.mkdir()
    for a in ages:
        _img(d / f"{a}.png", 32, 16, a)
    (d / "2.png").write_bytes(b"not a png at all")
    d = root / "no-age-name"; d.mkdir()
    for a in ages:
        _img(d / f"{a}.png", 32, 16, a)
    _img(d / "cover.png", 32, 16, 9)
    return root


def test_collect_reports_each_broken_series_by_name(photos):
    rows, report = ing.collect(str(photos), height=32, width=16)
    assert report.ages == (1, 2, 3)
    assert sorted(report.ingested) == ["pet-c", "plant-a", "plant-b"]
    assert set(report.problems) == {"missing-age", "broken-file", "no-age-name"}
    assert "missing ages [2]" in report.problems["missing-age"]
    assert "2.png" in report.problems["broken-file"] and "unreadable" in report.problems["broken-file"]
    assert "cover.png" in report.problems["no-age-name"]
    for r in rows:
        assert r["frames"].shape == (3, 32, 16, 3) and r["frames"].dtype == np.uint8
    assert "missing-age" in report.summary()


def test_load_image_resizes_and_names_bad_file(tmp_path):
    _img(tmp_path / "x.png", 100, 30, 0)
    for fit in ("crop", "pad", "stretch"):
        assert ing.load_image(str(tmp_path / "x.png"), 32, 16, fit).shape == (32, 16, 3)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    with pytest.raises(ValueError, match="bad.png"):
        ing.load_image(str(tmp_path / "bad.png"), 32, 16)


def test_age_parsing():
    assert ing.age_of("10.png") == 10
    assert ing.age_of("age_025.jpg") == 25
    assert ing.age_of("img2-at-30.png") == 30
    assert ing.age_of("cover.png") is None


def test_ingest_round_trip_and_strict(ray_local, photos, tmp_path):
    out = str(tmp_path / "ds")
    with pytest.raises(ValueError, match="missing-age"):
        ing.ingest(str(photos), out, strict=True)
    assert not os.path.exists(out)  # strict: nothing written

    report = ing.ingest(str(photos), out, height=32, width=16)
    card = read_card(out)
    assert card["num_series"] == 3 and card["ages"] == [1, 2, 3]
    assert set(card["left_out"]) == {"missing-age", "broken-file", "no-age-name"}
    data = read_numpy(out)
    order = list(data["series_id"])
    assert sorted(order) == sorted(report.ingested)
    assert (data["seed"] == -1).all()
    for i, name in enumerate(order):
        files = sorted(os.listdir(photos / name), key=ing.age_of)
        want = np.stack([ing.load_image(str(photos / name / f), 32, 16) for f in files])
        np.testing.assert_array_equal(data["frames"][i], want)
    assert set(data["split"]) <= {"train", "val", "test"}


def test_ingest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ing.collect(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no series"):
        ing.collect(str(tmp_path / "empty"))
    with pytest.raises(ShardError, match="dataset.json"):
        read_card(str(tmp_path / "empty"))

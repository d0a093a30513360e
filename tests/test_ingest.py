import base64
import os
import shutil
import unicodedata

import numpy as np
import pytest
from PIL import Image

from crnn import images
from crnn import ingest as ing
from crnn.shardcheck import ShardError
from crnn.shards import read_card, read_numpy
from tests.image_utils import WHITE, bomb_png, cut_idat, mask_of, pil_bytes, variants

JUNK = {"Thumbs.db": b"\xd0\xcf\x11\xe0 thumbnail cache", "desktop.ini": b"[.ShellClassInfo]\r\n",
        ".DS_Store": b"\0\0\0\1Bud1", "notes-2024.txt": b"watered on day 12"}


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
    for fn, data in JUNK.items():  # Windows/macOS litter beside the frames of a good series
        (root / "plant-a" / fn).write_bytes(data)
    (root / "Thumbs.db").write_bytes(JUNK["Thumbs.db"])
    d = root / "bomb"; d.mkdir()  # issue #11 item 4: one frame's header claims 20000x20000 pixels
    for a in ages:
        _img(d / f"{a}.png", 32, 16, a)
    (d / "2.png").write_bytes(bomb_png(20000, 20000))
    return root


def test_collect_reports_each_broken_series_by_name(photos):
    rows, report = ing.collect(str(photos), height=32, width=16)
    assert report.ages == (1, 2, 3)
    assert sorted(report.ingested) == ["pet-c", "plant-a", "plant-b"]
    assert set(report.problems) == {"missing-age", "broken-file", "no-age-name", "bomb"}
    assert "missing ages [2]" in report.problems["missing-age"]
    assert "2.png" in report.problems["broken-file"] and "unreadable" in report.problems["broken-file"]
    assert "bomb/2.png: too large" in report.problems["bomb"] and "400000000 pixels" in report.problems["bomb"]
    assert report.ignored == ["Thumbs.db"] + [f"plant-a/{fn}" for fn in sorted(JUNK)]
    assert "ignored 5 file(s) that are not images: Thumbs.db, plant-a/.DS_Store" in report.summary()
    # a folder inside a series folder, or a hidden one at the top, is listed as a folder (a new user read
    # "1 file(s) that are not images" for a nested folder)
    (photos / "plant-a" / "old shots").mkdir()
    (photos / ".git").mkdir()
    _, report = ing.collect(str(photos), height=32, width=16)
    assert ".git/" in report.ignored and "plant-a/old shots/" in report.ignored and "Thumbs.db" in report.ignored
    assert "ignored 7 file(s) or folder(s) that are not images: .git/, Thumbs.db, plant-a/.DS_Store" in report.summary()
    assert "cover.png" in report.problems["no-age-name"]
    for r in rows:
        assert r["frames"].shape == (3, 32, 16, 3) and r["frames"].dtype == np.uint8
    assert "missing-age" in report.summary()


@pytest.mark.parametrize("rewrap", [True, False], ids=["whole-stream", "cut-stream"])
def test_png_whose_pixel_data_stops_early_leaves_its_series_out(tmp_path, rewrap):
    """A PNG whose IDAT data stops early before a proper IEND: Pillow filled the missing rows black
    and the series was ingested with a half-black frame."""
    d = tmp_path / "photos" / "short-frame"
    d.mkdir(parents=True)
    for a in (1, 2, 3):
        _img(d / f"{a}.png", 32, 16, a)
    (d / "2.png").write_bytes(cut_idat((d / "2.png").read_bytes(), 0.5, rewrap=rewrap))
    ok = tmp_path / "photos" / "whole"
    ok.mkdir()
    for a in (1, 2, 3):
        _img(ok / f"{a}.png", 32, 16, a)
    rows, report = ing.collect(str(tmp_path / "photos"), height=32, width=16)
    assert report.ingested == ["whole"] and set(report.problems) == {"short-frame"}
    assert f"{d / '2.png'}: unreadable: truncated pixel data" in report.problems["short-frame"]


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
    assert ing.age_of("cover.png") is None


AGES = {  # file name -> the age users mean (the rule: the number after "age", else the only number)
    "10.png": 10, "age_15.png": 15, "IMG_age20.jpg": 20, "Age-5.png": 5, "age 12.jpeg": 12, "AGE=7.tif": 7,
    "tree10.png": 10, "age10_v2.png": 10, "IMG_2041_age20.jpg": 20, "page3_age10.png": 10,
    "age10_age10.png": 10, "fern-01_age30.webp": 30,
    "16777216.png": 16777216, "age_16777216.png": 16777216, "IMG_1234.JPG": 1234,  # up to MAX_AGE = 2**24
    # digits of any script are digits (fullwidth from a Japanese keyboard, Arabic-Indic): kept, as documented
    "\uff11\uff10.png": 10, "age_\u0663.png": 3, "\u6728\uff11\uff15\u6b73.jpg": 15,
}
AMBIGUOUS = {  # the last number was taken: 10.5.png -> 5, age10_v2.png -> 2
    "10.5.png": "a decimal number '10.5'", "age10.5.png": "a decimal number '10.5'",
    "10,5.png": "a decimal number '10,5'", "img2-at-30.png": "several numbers [2, 30]",
    "10_v2.png": "several numbers [10, 2]", "age10_age15.png": "several ages marked [10, 15]",
    # a camera counter or a timestamp: over 2**24 no reader holds the age exactly
    "16777217.png": "16777217 is too large for an age (at most 16777216)",
    "age_99999999999.png": "99999999999 is too large for an age",
    "IMG_20240501123000.jpg": "20240501123000 is too large for an age",
}


@pytest.mark.parametrize("name", sorted(AGES))
def test_age_rule_takes_the_age_users_mean(name):
    assert ing.parse_age(name) == (AGES[name], None)
    assert ing.age_of(name) == AGES[name]


@pytest.mark.parametrize("name", sorted(AMBIGUOUS))
def test_ambiguous_age_is_not_guessed(name):
    age, why = ing.parse_age(name)
    assert age is None and AMBIGUOUS[name] in why
    assert ing.age_of(name) is None


def test_images_with_an_ambiguous_age_are_ignored_with_the_reason(tmp_path):
    """10.5.png was read as age 5 and 10_v2.png as age 2; now such images are ignored and listed with
    the reason; a series complete without them is ingested, one missing an age for it is left out."""
    root = tmp_path / "photos"
    for name in ("oak", "elm"):
        (root / name).mkdir(parents=True)
        for a in (10, 15, 20):
            _img(root / name / f"age_{a}.png", 32, 16, a)
    _img(root / "oak" / "10_v2.png", 32, 16, 0)       # a second take of age 10
    os.remove(root / "elm" / "age_15.png")
    _img(root / "elm" / "15.5.png", 32, 16, 0)        # the only picture of age 15
    rows, report = ing.collect(str(root), height=32, width=16, ages=(10, 15, 20))
    assert report.ingested == ["oak"]
    assert report.unclear == {"elm/15.5.png": "ambiguous age: a decimal number '15.5': ages are whole numbers",
                              "oak/10_v2.png": "ambiguous age: several numbers [10, 2] and no 'age' marker"}
    assert "missing ages [15]" in report.problems["elm"]
    summary = report.summary()
    assert "ignored 2 image(s) whose age is ambiguous" in summary and "oak/10_v2.png: ambiguous age" in summary


def test_too_few_ages_names_the_images_whose_age_was_not_guessed(tmp_path):
    """Photos named 10.jpg and 2024-05-01.jpg leave one age a series: the refusal said only "need at
    least 2 ages per series, got [10]"; it now names the images ignored as ambiguous. Without any
    ambiguous name the message stays as it was."""
    root = tmp_path / "photos"
    for name in ("oak", "elm"):
        (root / name).mkdir(parents=True)
        _img(root / name / "10.png", 32, 16, 10)
        _img(root / name / "2024-05-01.png", 32, 16, 20)
    with pytest.raises(ValueError, match=r"need at least 2 ages per series, got \[10\]; 2 image\(s\) were ignored "
                                         r"because their age is ambiguous, e.g. elm/2024-05-01.png \(ambiguous age"):
        ing.collect(str(root), height=32, width=16)
    for name in ("oak", "elm"):
        os.remove(root / name / "2024-05-01.png")
    with pytest.raises(ValueError, match=r"need at least 2 ages per series, got \[10\]$"):
        ing.collect(str(root), height=32, width=16)


def test_ages_too_large_for_the_shards_are_listed_not_ingested(tmp_path):
    """A series named 10.png, 99999999999.png crashed the regular ingest after every image was
    decoded (OverflowError in int32 ages: a traceback, not a report), and an irregular ingest of 1,
    16777216, 16777217 published ages [1, 16777216, 16777216] (float32) that its own readers refuse
    as not increasing. Ages over MAX_AGE are now listed as unclear like any ambiguous name."""
    root = tmp_path / "photos"
    for name, ages in (("oak", (1, 16777216, 16777217)), ("elm", (1, 99999999999)), ("ash", (1, 2))):
        (root / name).mkdir(parents=True)
        for a in ages:
            _img(root / name / f"{a}.png", 32, 16, 0)
    rows, report = ing.collect(str(root), irregular=True)
    assert sorted(report.ingested) == ["ash", "oak"]
    assert report.series_ages == {"ash": (1, 2), "oak": (1, 16777216)}
    assert set(report.unclear) == {"oak/16777217.png", "elm/99999999999.png"}
    assert "99999999999 is too large for an age" in report.unclear["elm/99999999999.png"]
    assert "only 1 age(s) [1]" in report.problems["elm"]
    rows, report = ing.collect(str(root))  # regular: the most common set, (1, 2), and no crash
    assert report.ingested == ["ash"] and report.ages == (1, 2)
    with pytest.raises(ValueError, match=r"ages must be whole numbers 0..16777216, got \[1, 99999999999\]"):
        ing.collect(str(root), ages=(1, 99999999999))


def _good_series(root, name, ages=(1, 2, 3)):
    (root / name).mkdir(parents=True)
    for a in ages:
        _img(root / name / f"{a}.png", 32, 16, a)


@pytest.mark.parametrize("irregular", [False, True])
@pytest.mark.parametrize("mistake", ["missing", "extra", "duplicate", "no-age", "one-age"])
def test_strict_refuses_what_the_names_show_before_decoding_any_image(tmp_path, monkeypatch, mistake, irregular):
    """--strict decoded every image of every series and only then refused a series whose file names
    were wrong: whatever the listing shows is refused before the first decode."""
    root = tmp_path / "photos"
    for name in ("a", "b", "c"):
        _good_series(root, name)
    bad = root / "bad"
    files = {"missing": ["1.png", "3.png"], "extra": ["1.png", "2.png", "3.png", "4.png"],
             "duplicate": ["1.png", "2.png", "age_2.png", "3.png"], "no-age": ["1.png", "2.png", "3.png", "cover.png"],
             "one-age": ["1.png"]}[mistake]
    if irregular and mistake in ("missing", "extra"):
        files = ["1.png"]  # irregular series keep their own ages: a too-short one is what names show
    bad.mkdir()
    for fn in files:
        _img(bad / fn, 32, 16, 0)
    decoded = []
    monkeypatch.setattr(ing, "load_image", lambda p, *a, **k: decoded.append(p))
    with pytest.raises(ValueError, match=r"strict ingest refused by the file names alone, before decoding any image"
                                         r" \(an unreadable image is found once these pass\), nothing written: 1 "
                                         r"series would be left out:\n  bad: ") as e:
        ing.collect(str(root), strict=True, irregular=irregular)
    assert decoded == [] and "  a: " not in str(e.value)
    rows, report = ing.collect(str(root), irregular=irregular)  # without strict: left out, the rest decoded
    assert set(report.problems) == {"bad"} and len(decoded) == 9


@pytest.mark.parametrize("bad", [1, 2, ing.MAX_LISTED, ing.MAX_LISTED + 5])
def test_every_bad_file_of_a_series_is_named(tmp_path, bad):
    """Only the first undecodable file of a series was reported: fixing it revealed the next one,
    run after run. Now every one is named with its reason (the first MAX_LISTED, then a count)."""
    root = tmp_path / "photos"
    ages = tuple(range(1, ing.MAX_LISTED + 8))
    _good_series(root, "fine", ages)
    _good_series(root, "rotten", ages)
    broken = [root / "rotten" / f"{a}.png" for a in ages[1:1 + bad]]
    for k, p in enumerate(broken):
        p.write_bytes(b"not a png" if k % 2 else bomb_png(20000, 20000))
    rows, report = ing.collect(str(root), height=8, width=4)
    assert report.ingested == ["fine"]
    why = report.problems["rotten"]
    assert why.startswith(f"{bad} unusable image(s): {broken[0]}: too large")
    listed = broken[:ing.MAX_LISTED]
    for k, p in enumerate(listed):
        assert f"{p}: {'unreadable' if k % 2 else 'too large'}" in why, p
    if bad > ing.MAX_LISTED:
        assert why.endswith(f"; and {bad - ing.MAX_LISTED} more") and f"{broken[ing.MAX_LISTED]}:" not in why
    else:
        assert "more" not in why
    assert why.count(": unreadable") + why.count(": too large") == len(listed)


def test_one_name_in_two_unicode_forms_is_one_series_name(tmp_path, monkeypatch):
    """Folders "Kiefer-\u00f6" composed (NFC) and decomposed (NFD) are the same text: alone, either
    form lands in the one split; side by side they would be two series of one name, so both are
    left out naming each other (and --strict refuses that before decoding)."""
    nfc, nfd = "Kiefer-\u00f6", "Kiefer-o\u0308"
    assert unicodedata.normalize("NFC", nfd) == nfc and nfc != nfd
    splits = {}
    for form in (nfc, nfd):
        root = tmp_path / f"alone-{len(form)}"
        _good_series(root, form)
        rows, report = ing.collect(str(root), height=8, width=4)
        assert report.ingested == [form] and not report.problems
        splits[form] = rows[0]["split"]
    assert splits[nfc] == splits[nfd]
    root = tmp_path / "both"
    for form in (nfc, nfd, "Kiefer-o"):
        _good_series(root, form)
    if len(os.listdir(root)) < 3:
        pytest.skip("this file system merges the two Unicode forms (one folder)")
    rows, report = ing.collect(str(root), height=8, width=4)
    assert report.ingested == ["Kiefer-o"] and set(report.problems) == {nfc, nfd}
    assert "the same name as folder(s) 'Kiefer-o\\u0308' in another Unicode form" in report.problems[nfc]
    assert "this one is 'Kiefer-\\xf6'" in report.problems[nfc]
    monkeypatch.setattr(ing, "load_image", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(ValueError, match="before decoding any image.*\n  Kiefer-"):
        ing.collect(str(root), strict=True)


def test_a_root_without_series_folders_is_refused_with_a_hint(tmp_path):
    flat = tmp_path / "fern-01"
    flat.mkdir()
    _img(flat / "10.png", 32, 16, 0)
    with pytest.raises(ValueError, match=r"fern-01: no series sub-folders found; it holds images itself: give the "
                                         r"folder above it"):
        ing.collect(str(flat))
    (tmp_path / "notes.txt").write_text("x")
    _img(flat / "15.png", 32, 16, 1)
    rows, report = ing.collect(str(tmp_path))  # the parent: one series
    assert report.ingested == ["fern-01"] and report.ages == (10, 15) and report.ignored == ["notes.txt"]


def test_ingest_round_trip_and_strict(ray_local, photos, tmp_path):
    out = str(tmp_path / "ds")
    with pytest.raises(ValueError, match="refused by the file names alone, before decoding any image") as e:
        ing.ingest(str(photos), out, strict=True)
    assert "missing-age" in str(e.value) and "no-age-name" in str(e.value)
    assert "bomb" not in str(e.value)  # not decoded: the listing was enough to refuse
    assert not os.path.exists(out)  # strict: nothing written
    names_ok = tmp_path / "names-ok"
    shutil.copytree(photos, names_ok)
    for name in ("missing-age", "no-age-name"):
        shutil.rmtree(names_ok / name)
    with pytest.raises(ValueError, match="strict ingest refused, nothing written") as e:
        ing.ingest(str(names_ok), out, strict=True)  # names all fine: the decoding's problems refuse
    assert "bomb: " in str(e.value) and "too large" in str(e.value) and "broken-file" in str(e.value)
    assert "would have ingested 3 series at ages [1, 2, 3]" in str(e.value)  # it read "ingested 3 series"
    assert "\ningested" not in str(e.value)
    assert not os.path.exists(out)

    report = ing.ingest(str(photos), out, height=32, width=16)
    card = read_card(out)
    assert card["num_series"] == 3 and card["ages"] == [1, 2, 3]
    assert set(card["left_out"]) == {"missing-age", "broken-file", "no-age-name", "bomb"}
    assert "too large" in card["left_out"]["bomb"] and "bomb/2.png" in card["left_out"]["bomb"]
    assert card["ignored"] == report.ignored and "plant-a/Thumbs.db" in card["ignored"]
    assert card["background"] == "#ffffff"
    data = read_numpy(out)
    order = list(data["series_id"])
    assert sorted(order) == sorted(report.ingested)
    assert (data["seed"] == -1).all()
    for i, name in enumerate(order):
        files = sorted(filter(images.is_image_file, os.listdir(photos / name)), key=ing.age_of)
        want = np.stack([ing.load_image(str(photos / name / f), 32, 16) for f in files])
        np.testing.assert_array_equal(data["frames"][i], want)
    assert set(data["split"]) <= {"train", "val", "test"}


def test_the_job_lists_the_folder_once(ray_local, tmp_path, monkeypatch, capsys):
    """jobs/ingest.py lists the folder before Ray (to refuse early) and gave only the path to
    ``ingest``, which listed it again; now the job's listing is what is ingested."""
    from jobs import ingest as ingest_job

    src = tmp_path / "photos"
    for name in ("fern-01", "fern-02"):
        (src / name).mkdir(parents=True)
        for age in (10, 15, 20):
            _img(src / name / f"{age}.png", 32, 16, age)
    calls = []
    real_scan = ing.scan
    monkeypatch.setattr(ing, "scan", lambda root: calls.append(root) or real_scan(root))
    out = tmp_path / "ds"
    assert ingest_job.main(["--src", str(src), "--out", str(out), "--height", "24", "--width", "12"]) == 0
    assert calls == [str(src)]
    card = read_card(str(out))
    assert card["num_series"] == 2 and card["ages"] == [10, 15, 20]
    # what to do next is printed: the size written and the series per split (a new user had to guess both)
    printed = capsys.readouterr().out
    assert ing.written_summary(card) in printed and "images: 24x12x3 (height x width x channels" in printed, printed
    # a listing handed in is what is planned: a series the listing lacks is not ingested
    listing = real_scan(str(src))
    del listing[0]["fern-02"]
    report = ing.ingest(str(src), str(tmp_path / "ds2"), listing=listing)
    assert report.ingested == ["fern-01"] and calls == [str(src)]


def test_the_written_summary_says_what_an_empty_split_means():
    card = {"height": 32, "width": 16, "channels": 3, "splits": {"train": 9, "val": 0, "test": 2}}
    assert ing.written_summary(card).splitlines() == [
        "images: 32x16x3 (height x width x channels; a model reads the size it was trained at: "
        "models/pine-convlstm reads 32x16x3)",
        "splits: train 9, val 0, test 2 (by a hash of each series' name: ~80/10/10 %)",
        "  no val series: training on this dataset keeps its last epoch (nothing to choose the best by)"]
    lines = ing.written_summary({**card, "splits": {"train": 5}}).splitlines()
    assert lines[1].startswith("splits: train 5, val 0, test 0 (") and len(lines) == 4
    assert lines[3] == "  no test series: score or forecast another split (jobs/evaluate.py / jobs/predict.py --split train)"
    assert len(ing.written_summary({**card, "splits": {"train": 8, "val": 1, "test": 1}}).splitlines()) == 2
    # an irregular dataset without val series is refused by training (crnn.train._check_lessons), not kept
    from crnn.irregular import LAYOUT

    lines = ing.written_summary({**card, "layout": LAYOUT}).splitlines()
    assert "keeps its last epoch" not in lines[2] and "refused" in lines[2], lines


def test_a_listing_of_another_folder_is_refused(tmp_path):
    """collect(root_b, listing=scan(root_a)) ingested root_a's photos under root_b's name."""
    for root in ("a", "b"):
        (tmp_path / root / "fern").mkdir(parents=True)
        for age in (10, 15):
            _img(tmp_path / root / "fern" / f"{age}.png", 32, 16, age)
    listing = ing.scan(str(tmp_path / "a"))
    with pytest.raises(ValueError, match=r"listing: .*a/fern/10\.png is not in .*b/fern: a listing of another folder"):
        ing.collect(str(tmp_path / "b"), listing=listing)
    rows, report = ing.collect(str(tmp_path / "a"), listing=listing)  # its own folder: fine
    assert report.ingested == ["fern"] and len(rows) == 1


def test_a_listing_of_the_same_folder_spelt_another_way_is_accepted(tmp_path, monkeypatch):
    """The guard compared path strings: scan('./photos') handed to collect('photos') was refused as
    "another folder". Its neighbours: a trailing slash, absolute for relative, a symbolic link."""
    (tmp_path / "photos" / "fern").mkdir(parents=True)
    for age in (10, 15):
        _img(tmp_path / "photos" / "fern" / f"{age}.png", 32, 16, age)
    os.symlink(tmp_path / "photos", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    spellings = ["photos", "./photos", "photos/", str(tmp_path / "photos"), "link", str(tmp_path / "link") + "/"]
    for scanned in spellings:
        listing = ing.scan(scanned)
        for given in spellings:
            rows, report = ing.collect(given, listing=listing)
            assert report.ingested == ["fern"] and len(rows) == 1, (scanned, given)
    (tmp_path / "other" / "fern").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"listing: photos/fern/10\.png is not in \./other/fern"):
        ing.collect("./other", listing=ing.scan("photos"))


def test_ingest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ing.collect(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no series"):
        ing.collect(str(tmp_path / "empty"))
    with pytest.raises(ShardError, match="dataset.json"):
        read_card(str(tmp_path / "empty"))


def _series(root, name, frames: dict):
    d = root / name
    d.mkdir(parents=True)
    for fn, data in frames.items():
        (d / fn).write_bytes(data)


def test_sixteen_bit_grey_series_is_mid_grey(tmp_path):
    """Issue #11 item 1: five 16-bit grey PNGs at 32896/65535 ingest as 128, not 255; at another
    size (resampled) too."""
    mid = pil_bytes(Image.fromarray(np.full((64, 40), 32896, np.uint16)))
    _series(tmp_path, "grey16", {f"{a}.png": mid for a in (10, 15, 20, 25, 30)})
    for h, w in ((64, 40), (32, 16)):
        rows, report = ing.collect(str(tmp_path), height=h, width=w)
        assert report.ingested == ["grey16"] and not report.problems
        assert rows[0]["frames"].shape == (5, h, w, 3) and (rows[0]["frames"] == 128).all()


def test_rgba_cutouts_over_the_background(tmp_path):
    """Issue #11 item 2: the transparent background of RGBA cut-outs (black RGB beneath) ingests as
    the background colour: white by default, or the one given; pad borders use it too."""
    f = np.random.default_rng(3).integers(0, 256, (32, 16, 3), dtype=np.uint8)
    m = mask_of(32, 16)
    rgba = np.dstack([np.where(m[:, :, None], 0, f), np.where(m, 0, 255).astype(np.uint8)])
    _series(tmp_path, "cut", {f"{a}.png": pil_bytes(Image.fromarray(rgba)) for a in (1, 2)})
    for bg in (WHITE, (236, 240, 244)):
        rows, _ = ing.collect(str(tmp_path), height=32, width=16, background=bg)
        fr = rows[0]["frames"]
        assert (fr[:, m] == bg).all() and (fr[:, ~m] == f[~m]).all()
    rows, _ = ing.collect(str(tmp_path), height=32, width=32, fit="pad", background="#0080ff")
    assert (rows[0]["frames"][:, :, :8] == (0, 128, 255)).all()  # letterbox borders
    with pytest.raises(ValueError, match="background colour 'sky'"):
        ing.collect(str(tmp_path), background="sky")
    with pytest.raises(ValueError, match="fit must be crop, pad or stretch, got 'zoom'"):
        ing.collect(str(tmp_path), fit="zoom")
    for bad in (0, -5, 2.5):
        with pytest.raises(ValueError, match=f"max_pixels must be a positive integer .*got {bad}"):
            ing.collect(str(tmp_path), max_pixels=bad)


def test_non_image_files_are_ignored_not_frames(tmp_path):
    """Issue #11 item 3: Thumbs.db beside 10.png .. 30.png no longer leaves the series out; hidden
    files (.DS_Store, AppleDouble ._10.png), desktop.ini, notes and sub-folders are listed as
    ignored; image extensions count in any case."""
    frame = pil_bytes(Image.fromarray(np.full((32, 16, 3), 90, np.uint8)))
    _series(tmp_path, "tree", {**{f"{a}.png": frame for a in (10, 20)}, "30.PNG": frame, "Thumbs.db": b"x"})
    _series(tmp_path, "mac", {**{f"{a}.jpg": frame for a in (10, 20, 30)}, "._10.jpg": b"\0\5\x16\7",
                              ".DS_Store": b"Bud1", "desktop.ini": b"[x]"})
    (tmp_path / "mac" / "old").mkdir()
    rows, report = ing.collect(str(tmp_path), height=32, width=16)
    assert sorted(report.ingested) == ["mac", "tree"] and not report.problems and report.ages == (10, 20, 30)
    assert report.ignored == ["mac/.DS_Store", "mac/._10.jpg", "mac/desktop.ini", "mac/old/", "tree/Thumbs.db"]
    assert all(r["frames"].shape == (3, 32, 16, 3) for r in rows)


def test_ingest_and_serve_decode_a_file_the_same(tmp_path):
    """Issue #11 item 5: one decoder, so ingest (at the model's size: no resampling) and Serve's
    decode_png give the same pixels for every variant; EXIF orientation 3 is turned 180 deg in both."""
    from crnn.serve import Spec, decode_png

    f = np.random.default_rng(5).integers(0, 256, (32, 16, 3), dtype=np.uint8)
    spec = Spec(4, 32, 16, 3, [10, 15, 20, 25])
    for label, (data, want) in variants(f).items():
        p = tmp_path / f"{label}.png"
        p.write_bytes(data)
        via_ingest = ing.load_image(str(p), 32, 16)
        via_serve = decode_png(base64.b64encode(data).decode(), f"series[0].png[{label}]", spec)
        np.testing.assert_array_equal(via_ingest, want, err_msg=label)
        np.testing.assert_array_equal(via_serve, want, err_msg=label)
    stored = np.asarray(Image.open(tmp_path / "exif3.png"))
    np.testing.assert_array_equal(ing.load_image(str(tmp_path / "exif3.png"), 32, 16), np.rot90(stored, 2))


def test_pixel_limit_per_series(tmp_path):
    """Issue #11 item 4, with a custom limit: the series over it is reported by name and reason, the
    one at it is ingested."""
    _series(tmp_path, "small", {f"{a}.png": pil_bytes(Image.fromarray(np.zeros((10, 10, 3), np.uint8)))
                                for a in (1, 2)})
    _series(tmp_path, "large", {f"{a}.png": pil_bytes(Image.fromarray(np.zeros((10, 11, 3), np.uint8)))
                                for a in (1, 2)})
    rows, report = ing.collect(str(tmp_path), height=8, width=8, max_pixels=100)
    assert report.ingested == ["small"] and list(report.problems) == ["large"]
    assert "large/1.png: too large: the header claims 11x10 (WxH) = 110 pixels, over the limit of 100" \
        in report.problems["large"]


def test_job_refuses_a_bad_background_before_starting_ray(tmp_path, capsys):
    from jobs import ingest as job

    assert job.main(["--src", str(tmp_path), "--out", str(tmp_path / "ds"), "--background", "nope"]) == 2
    assert "--background: background colour 'nope': not a colour" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "ds")


def test_folders_left_out_for_their_unicode_form_do_not_choose_the_ages(tmp_path):
    """Without --ages the most common set of ages was counted with the NFC/NFD twins still in: two
    twins at 1, 2 outvoted a good folder at 10, 15, 20, which was then left out ("no usable series")."""
    for name, ages in (("Kiefer-\u00f6", (1, 2)), ("Kiefer-o\u0308", (1, 2)), ("a", (10, 15, 20))):
        (tmp_path / name).mkdir()
        for a in ages:
            Image.new("RGB", (16, 32)).save(tmp_path / name / f"{a}.png")
    rows, report = ing.collect(str(tmp_path), threads=1)
    assert [r["series_id"] for r in rows] == ["a"] and report.ages == (10, 15, 20)
    assert sorted(report.problems) == sorted(["Kiefer-\u00f6", "Kiefer-o\u0308"])

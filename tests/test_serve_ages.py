"""Serve at any target ages (issue #14): a time-aware model (model.kind=timevp) served on this
module's own local Ray, called over HTTP: real-valued ages and target ages, ragged series in one
request, top-level defaults vs per-series values, 422s naming the bad series, GET /model's time and
trust sections. (The grid model's target ages: tests/test_serve.py.)"""

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from crnn.checkpoint import ModelError
from crnn.inference import load_model
from crnn.serve import Limits
from crnn.serve.model import read_trust
from crnn.timeaware import forecast_at, time_domain
from tests.image_utils import from_png_b64, png_b64
from tests.helpers import random_timevp_dir, serve_app

H, W, C = 32, 16, 3
LIMITS = Limits(max_batch_size=16, batch_wait_timeout_s=0.05, max_series_per_request=16,
                max_body_bytes=2_000_000, max_horizon=6, max_targets=4)
DATA = {"layout": "irregular", "age_unit": "years", "age_range": [1.0, 50.0]}
TRUST = {"unit": "years", "better_than_persistence": {"2x": 6.0, "1.2x": None}, "note": "test"}


def _frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, C), dtype=np.uint8)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny time-aware model with random weights (its untrained residual head would answer
    persistence, the same frame at every age), trained on ages 1..50 years, with a trust.json."""
    out = random_timevp_dir(str(tmp_path_factory.mktemp("serve-ages") / "model"), DATA)
    with open(f"{out}/trust.json", "w") as f:
        json.dump(TRUST, f)
    return out


@pytest.fixture(scope="module")
def local(model_dir):
    model, cfg, meta = load_model(model_dir)
    return model, time_domain(cfg, meta["data"], meta["metrics"])


def _direct(local, frames, ages, targets) -> np.ndarray:
    model, domain = local
    return forecast_at(model, domain, [frames], [ages], [targets])[0]


def _close(got, want, what=""):
    got = np.asarray(got, np.uint8)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert np.abs(got.astype(int) - want).max() <= 1 and (got == want).mean() > 0.99, what


@pytest.fixture(scope="module")
def url(ray_local, model_dir):
    with serve_app(model_dir, "crnn-ages-test", LIMITS) as u:
        yield u


def _post(url, body):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{url}/forecast", data=data, headers={"Content-Type": "application/json"}, timeout=60)


_png, _unpng = png_b64, from_png_b64  # (tests.image_utils)


# ----------------------------------------------------------------------------- no Ray
def test_an_engine_whose_trust_was_measured_with_another_tta_warns(tmp_path):
    """trust.json says which test-time augmentation it measured; an engine serving another says so
    (GET /model shows both), and one serving the same, or a trust.json from before the field, does not."""
    import warnings

    from crnn.serve.model import ForecastEngine

    out = random_timevp_dir(str(tmp_path / "m"), {**DATA, "mirror_axis": 8.0})
    (tmp_path / "m" / "trust.json").write_text(json.dumps({**TRUST, "tta": "hflip", "mirror_axis": 8.0}))
    with pytest.warns(UserWarning, match="trust.json was measured with test-time augmentation 'hflip', this "
                                         "replica serves 'none'"):
        ForecastEngine.load(out, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ForecastEngine.load(out, device="cpu", tta="hflip").info()["trust"]["tta"] == "hflip"
        (tmp_path / "m" / "trust.json").write_text(json.dumps(TRUST))          # no tta: measured plain
        ForecastEngine.load(out, device="cpu")


def test_read_trust(tmp_path):
    assert read_trust(str(tmp_path)) is None  # none written: GET /model says null
    (tmp_path / "trust.json").write_text("[1, 2]")
    with pytest.raises(ModelError, match="trust.json: expected a JSON object, got a JSON list"):
        read_trust(str(tmp_path))
    (tmp_path / "trust.json").write_text("{not json")
    with pytest.raises(ModelError, match="trust.json: not valid JSON"):
        read_trust(str(tmp_path))


# ----------------------------------------------------------------------------- over HTTP
def test_model_info_says_what_ages_it_answers_and_how_far_to_trust_it(url):
    info = requests.get(f"{url}/model", timeout=30).json()
    t = info["time"]
    assert t["time_aware"] is True and t["age_unit"] == "years" and t["age_range"] == [1.0, 50.0]
    assert t["min_inputs"] == 2 and t["max_inputs"] == 0 and t["step"] == 5.0
    assert t["accepted_ages"] == [1.0 - 12.25, 50.0 + 12.25]  # margin: a quarter of the range's width
    assert info["trust"] == TRUST
    assert info["limits"]["max_targets"] == 4


def test_ages_and_target_ages_over_http_equal_forecast_at(url, local):
    """The issue's example: inputs at ages 7, 11, 12, 19, forecasts at 22.5 and 40, labelled by those
    ages, as nested arrays and as PNGs, equal to forecast_at on the same model."""
    f = _frames(4, 1)
    want = _direct(local, f, [7, 11, 12, 19], [22.5, 40])
    assert (want[0] != want[1]).mean() > 0.05  # the model answers each age differently: order is visible
    r = _post(url, {"series": [{"frames": f.tolist(), "ages": [7, 11, 12, 19], "target_ages": [22.5, 40]},
                               {"png": [_png(x) for x in f], "ages": [7, 11, 12, 19], "target_ages": [22.5, 40]}]})
    assert r.status_code == 200, r.text[:500]
    doc = r.json()
    a, b = doc["forecasts"]
    assert a["ages"] == [22.5, 40] and b["ages"] == [22.5, 40] and doc["horizon"] is None
    assert isinstance(a["ages"][1], int)  # whole ages stay integers in the JSON
    _close(a["frames"], want, "frames")
    _close([_unpng(p) for p in b["png"]], want, "png")


def test_ragged_series_defaults_and_overrides(url, local):
    """Series of 2, 3 and 6 frames in one request; the top-level ages/target_ages apply where a
    series gives none, a series' own values override them."""
    f2, f3, f6 = _frames(2, 2), _frames(3, 3), _frames(6, 4)
    body = {"series": [
        {"frames": f2.tolist(), "ages": [3, 9.5]},                              # top-level targets
        {"frames": f3.tolist(), "ages": [5, 6, 8], "target_ages": [10]},       # its own targets
        {"frames": f6.tolist()},                                              # top-level ages and targets
        {"frames": f3.tolist(), "ages": [20, 21, 30], "target_ages": [31.25, 33, 45]},
    ], "ages": [10, 15, 20, 25, 30, 35], "target_ages": [36, 41.25]}
    r = _post(url, body)
    assert r.status_code == 200, r.text[:500]
    out = r.json()["forecasts"]
    expect = [(f2, [3, 9.5], [36, 41.25]), (f3, [5, 6, 8], [10]), (f6, [10, 15, 20, 25, 30, 35], [36, 41.25]),
              (f3, [20, 21, 30], [31.25, 33, 45])]
    for i, (frames, ages, targets) in enumerate(expect):
        assert out[i]["ages"] == targets, i
        _close(out[i]["frames"], _direct(local, frames, ages, targets), f"series[{i}]")


def test_horizon_and_default_targets_of_a_time_aware_model(url, local):
    """horizon h means last + k * step (the model's time.step, 5 years), k = 1..h; neither horizon
    nor target_ages: one step after the last input."""
    f = _frames(4, 5)
    r = _post(url, {"series": [{"frames": f.tolist(), "ages": [7, 11, 12, 19]}], "horizon": 3})
    assert r.status_code == 200, r.text[:500]
    o = r.json()
    assert o["forecasts"][0]["ages"] == [24, 29, 34] and o["horizon"] == 3
    _close(o["forecasts"][0]["frames"], _direct(local, f, [7, 11, 12, 19], [24, 29, 34]))
    r = _post(url, {"series": [{"frames": f.tolist(), "ages": [7, 11, 12, 19.5]}]})
    assert r.status_code == 200 and r.json()["forecasts"][0]["ages"] == [24.5], r.text[:500]
    _close(r.json()["forecasts"][0]["frames"], _direct(local, f, [7, 11, 12, 19.5], [24.5]))


BAD = [  # (series, top-level extras, the message after "series[i]")
    ({"frames": _frames(1, 0).tolist(), "ages": [3]}, {},
     ".frames: expected at least 2 frames"),
    ({"frames": _frames(3, 0).tolist(), "ages": [3, 2, 5]}, {},
     ": ages [3, 2, 5] are not strictly increasing"),
    ({"frames": _frames(3, 0).tolist(), "ages": [3, 4, 5], "target_ages": [5, 8]}, {},
     ": target age 5 is not after the last input age 5"),
    ({"frames": _frames(3, 0).tolist(), "ages": [3, 4, 5], "target_ages": [4.5]}, {},
     ": target age 4.5 is not after the last input age 5"),
    ({"frames": _frames(3, 0).tolist(), "ages": [3, 3.0000001, 5]}, {},   # distinct in float64 only
     ": ages [3, 3.0000001, 5] are not strictly increasing (oldest frame first; compared at float32"),
    ({"frames": _frames(3, 0).tolist(), "ages": [1, 2, 3], "target_ages": [3.000000001]}, {},
     ": target age 3.000000001 is not after the last input age 3; forecasts are of later ages (compared at "
     "float32"),
    ({"frames": _frames(3, 0).tolist(), "ages": [3, 4, 5], "target_ages": [30, 30.0000001]}, {},
     ": target_ages [30, 30.0000001] are not strictly increasing (compared at float32"),
    ({"frames": _frames(3, 0).tolist(), "ages": [3, 4, 5], "target_ages": [30, 25]}, {},
     ": target_ages [30, 25] are not strictly increasing"),
    ({"frames": _frames(3, 0).tolist(), "ages": [3, 4, 5], "target_ages": [80]}, {},
     ": age 80 is far outside the ages the model was trained on (1..50 years; accepted -11.25..62.25)"),
    ({"frames": _frames(3, 0).tolist(), "ages": [-20, 4, 5]}, {},
     ": age -20 is far outside the ages the model was trained on"),
    ({"frames": _frames(3, 0).tolist(), "ages": [3, 4]}, {},
     ": 3 frames but 2 ages [3, 4]; give one age per input frame"),
    ({"frames": _frames(3, 0).tolist()}, {},
     ": no 'ages': this model was trained on per-series ages and assumes none; give one age per frame"),
    ({"frames": _frames(4, 0).tolist()}, {},  # (4 frames: what the grid's default ages would have fitted)
     ": no 'ages': this model was trained on per-series ages and assumes none"),
    ({"frames": _frames(3, 0).tolist(), "ages": [30, 45, 55]}, {"horizon": 2},   # targets 60, 65: 65 too far
     ": age 65 is far outside the ages the model was trained on (1..50 years; accepted -11.25..62.25) (target "
     "ages [60, 65]: 2 step(s) of 5 after the last input, from 'horizon'; send 'target_ages' to choose them)"),
    ({"frames": _frames(3, 0).tolist(), "ages": [3, 4, 5], "target_ages": [6, 7, 8, 9, 10]}, {},
     ": 5 target ages; the limit is 4 (max_targets)"),
    ({"frames": _frames(3, 0).tolist(), "ages": [3, True, 5]}, {},
     ".ages[1]: Input should be a valid number"),
    ({"frames": _frames(3, 0).tolist(), "ages": [3, "4", 5]}, {},
     ".ages[1]: Input should be a valid number"),
    ({"frames": _frames(3, 0).tolist(), "ages": [3, 4, 5], "target_ages": []}, {},
     ".target_ages: List should have at least 1 item"),
    ({"frames": _frames(3, 0).tolist(), "ages": [3, 4, 5], "target_ages": [8]}, {"horizon": 2},
     None),  # horizon and target ages: named by the field, not the series (below)
]


@pytest.mark.parametrize("pos", [0, 1, 2])
def test_bad_ages_get_422_naming_the_series(url, pos):
    """Every request the model cannot answer gets a 422 naming the bad series, whether it is the
    first, middle or last of a batch, and not its good neighbours."""
    good = {"frames": _frames(4, 9).tolist(), "ages": [7, 11, 12, 19], "target_ages": [22.5]}
    plain = {k: v for k, v in good.items() if k != "target_ages"}
    for bad, extra, msg in BAD:
        # with a horizon, only the bad one may have targets (both in one series: the horizon case below)
        series = [plain, plain, plain] if "horizon" in extra else [good, good, good]
        series[pos] = bad
        r = _post(url, {"series": series, **extra})
        detail = r.json()["detail"]
        assert r.status_code == 422, (msg, r.status_code, r.text[:300])
        if msg is None:
            assert detail == f"'horizon' is 2 and 'target_ages' of series[{pos}] is given: ask for target ages " \
                             "or a horizon, not both", detail
            continue
        assert f"series[{pos}]{msg}" in detail, (msg, detail)
        assert all(f"series[{q}]" not in detail for q in range(3) if q != pos), detail
    # 1e400 is a JSON number too large for a float: infinity, refused by the schema
    body = json.dumps({"series": [good] * 3}).encode().replace(b"22.5", b"1e400", 1)
    r = _post(url, body)
    assert r.status_code == 422 and "series[0].target_ages[0]: Input should be a finite number" in r.json()["detail"]
    # top-level defaults that no series can take name every series they reach
    r = _post(url, {"series": [{"frames": _frames(2, 0).tolist()}] * 3, "ages": [3, 4], "target_ages": [2]})
    assert r.status_code == 422, r.text[:300]
    assert all(f"series[{q}]: target age 2 is not after the last input age 4" in r.json()["detail"] for q in range(3))
    r = _post(url, {"series": [good], "target_ages": [30], "horizon": 3})
    assert r.status_code == 422 and r.json()["detail"].startswith("'horizon' is 3 and top-level 'target_ages' is given")
    assert _post(url, {"series": [good], "target_ages": [30], "horizon": 1}).status_code == 200  # 1: the default


def test_concurrent_ragged_requests_share_forward_passes(url, local):
    n = 12
    cases = [(_frames(2 + i % 5, 20 + i), None, [30.0 + i / 4]) for i in range(n)]
    cases = [(f, [float(a) for a in np.cumsum(np.full(len(f), 1.5)) + i], t)
             for i, (f, _, t) in enumerate(cases)]

    def call(i):
        f, ages, targets = cases[i]
        r = _post(url, {"series": [{"frames": f.tolist(), "ages": ages, "target_ages": targets}]})
        assert r.status_code == 200, r.text[:300]
        return r.json()["forecasts"][0]

    before = requests.get(f"{url}/model", timeout=30).json()["stats"]
    with ThreadPoolExecutor(n) as pool:
        got = list(pool.map(call, range(n)))
    after = requests.get(f"{url}/model", timeout=30).json()["stats"]
    for i, (f, ages, targets) in enumerate(cases):
        assert got[i]["ages"] == targets
        _close(got[i]["frames"], _direct(local, f, ages, targets), f"client {i}")
    assert after["series"] - before["series"] == n and after["batches"] - before["batches"] < n

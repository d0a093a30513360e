"""crnn.serve: a real Serve app on the session's local Ray, called over HTTP on a free port."""

import base64
import io
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from crnn.inference import load_model, to_uint8
from crnn.model import rollout
from crnn.serve import (
    Limits, ServeSettings, check_content_type, load_serve_config, parse_forecast_request, RequestError, Spec,
)
from crnn.shards import torch_frames
from crnn.loop import fit_plain
from tests.helpers import ROOT, serve_app, tiny_config
from tests.image_utils import from_png_b64, png_b64, bomb_png, cut_idat, exif_png, mask_of, pil_bytes, variants

H, W, C, T = 32, 16, 3, 4
LIMITS = Limits(max_batch_size=8, batch_wait_timeout_s=0.02, max_series_per_request=16,
                max_body_bytes=600_000, max_horizon=6)


def _frames(n: int, seed: int, t: int = 5) -> np.ndarray:
    """(n, t, H, W, C) uint8: a block that grows upward over time, colour per series, plus noise."""
    rng = np.random.default_rng(seed)
    f = np.full((n, t, H, W, C), 230, np.uint8)
    for i in range(n):
        col = rng.integers(20, 200, 3)
        for k in range(t):
            f[i, k, H - 6 - 4 * k:, 4:12] = col
    return np.clip(f.astype(int) + rng.integers(-8, 9, f.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cfg = tiny_config("unused", **{"train.epochs": 1})
    out = str(tmp_path_factory.mktemp("serve") / "model")
    fit_plain(cfg, _frames(24, 0), out=out)
    return out


@pytest.fixture(scope="module")
def local_model(model_dir):
    model, cfg, _ = load_model(model_dir)
    return model


def _expected(model, frames: np.ndarray, horizon: int) -> np.ndarray:
    with torch.no_grad():
        return to_uint8(rollout(model, torch_frames(frames), horizon).numpy())


@pytest.fixture(scope="module")
def url(ray_local, model_dir):
    with serve_app(model_dir, "crnn-test", LIMITS) as u:
        yield u


_png, _unpng = png_b64, from_png_b64  # (tests.image_utils)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _wrap(s: str, width: int = 76, sep: str = "\n") -> str:
    """base64 as the `base64` command and MIME encoders write it: a line break every 76 characters."""
    return sep.join(s[i:i + width] for i in range(0, len(s), width)) + sep


def _post(url, body, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{url}/forecast", data=data, headers={"Content-Type": "application/json"}, timeout=60, **kw)


# ----------------------------------------------------------------------------- no Ray
def test_settings_and_serve_yaml(tmp_path):
    with pytest.raises(ValueError, match="max_ongoing_requests=8 is smaller than user_config.max_batch_size=64"):
        ServeSettings(model="m", max_ongoing_requests=8)
    with pytest.raises(ValueError, match="num_gpus"):
        ServeSettings(model="m", device="cuda")
    with pytest.raises(ValueError, match="unknown_key"):
        ServeSettings.model_validate({"model": "m", "user_config": {"unknown_key": 1}})
    args, http = load_serve_config(os.path.join(ROOT, "serve.yaml"))
    assert http["host"] == "127.0.0.1"
    s = ServeSettings.model_validate({**args, "model": "somewhere"})
    opts = s.deployment_options()
    assert opts["name"] == "CRNNForecaster" and opts["max_ongoing_requests"] >= opts["user_config"]["max_batch_size"]
    assert "autoscaling_config" in opts and opts["ray_actor_options"]["num_cpus"] == 1
    # device "auto" and torch_threads 0 are resolved in the model replica from the resources Ray gave
    # it (so serve.yaml's deployments overrides count); test_health_model_and_docs checks the result
    assert s.replica_args() == {"model": "somewhere", "device": "auto", "torch_threads": 0, "tta": "none",
                                "mirror_axis": None,
                                "background": [255, 255, 255]}  # white by default, as jobs/ingest.py
    ing = s.ingress_options()
    assert ing["name"] == "CRNNIngress" and ing["num_replicas"] == 1 and ing["ray_actor_options"]["num_cpus"] == 1
    assert ing["user_config"] == {"max_series_per_request": 256, "max_body_bytes": 16777216, "max_horizon": 10,
                                  "max_targets": 16}
    assert set(opts["user_config"]) == {"max_batch_size", "batch_wait_timeout_s"}
    with pytest.raises(ValueError, match="unknown ray_actor_options"):
        ServeSettings(model="m", ray_actor_options={"num_cpu": 1})
    with pytest.raises(ValueError, match="two names"):
        ServeSettings(model="m", ingress={"name": "CRNNForecaster"})
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(os.path.join(ROOT, "serve.yaml")).read().replace("name: CRNNIngress", "name: Other"))
    with pytest.raises(ValueError, match="unknown deployment 'Other'"):
        load_serve_config(str(bad))
    bad.write_text(open(os.path.join(ROOT, "serve.yaml")).read().replace("port: 8000", "port: http"))
    with pytest.raises(ValueError, match="port"):  # Ray's ServeDeploySchema checks the whole file
        load_serve_config(str(bad))
    assert ServeSettings(model="m", background="236,240,244").replica_args()["background"] == [236, 240, 244]
    with pytest.raises(ValueError, match="background colour 'nope'"):
        ServeSettings(model="m", background="nope")
    fixed = ServeSettings(model="m", num_replicas=2, ray_actor_options={"num_gpus": 0.5})
    assert fixed.deployment_options()["num_replicas"] == 2 and "autoscaling_config" not in fixed.deployment_options()
    assert fixed.deployment_options()["ray_actor_options"] == {"num_gpus": 0.5}


def test_parse_request_unit():
    spec = Spec(T, H, W, C, [10, 15, 20, 25])
    f = _frames(2, 1, T)
    req = parse_forecast_request(json.dumps({"series": [{"frames": f[0].tolist()},
                                                        {"png": [_png(x) for x in f[1]], "ages": [5, 10, 15, 20]}],
                                             "horizon": 2}).encode(), spec, LIMITS)
    assert req.horizon == 2 and [s.fmt for s in req.series] == ["frames", "png"]
    np.testing.assert_array_equal(req.series[0].frames, f[0])
    np.testing.assert_array_equal(req.series[1].frames, f[1])
    assert req.series[0].ages == [10, 15, 20, 25] and req.series[1].ages == [5, 10, 15, 20]
    with pytest.raises(RequestError, match="expected 4 frames"):
        parse_forecast_request(json.dumps({"series": [{"frames": f[0, :3].tolist()}]}).encode(), spec, LIMITS)


@pytest.mark.parametrize("rewrap", [True, False], ids=["whole-stream", "cut-stream"])
@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.99])
def test_png_whose_pixel_data_stops_early_is_a_400(rewrap, fraction):
    """A PNG frame whose IDAT data stops early before a proper IEND was forecast from a frame Pillow
    filled black; now a 400 naming the series and frame (the whole PNG next to it still decodes)."""
    spec = Spec(T, H, W, C, [10, 15, 20, 25])
    f = _frames(1, 2, T)[0]
    cut = cut_idat(pil_bytes(Image.fromarray(f[1])), fraction, rewrap=rewrap)
    body = json.dumps({"series": [{"png": [_png(x) for x in f]}, {"png": [_png(f[0]), _b64(cut), *map(_png, f[2:])]}]})
    with pytest.raises(RequestError, match=r"series\[1\]\.png\[1\]: corrupt PNG \(unreadable: truncated pixel data") as e:
        parse_forecast_request(body.encode(), spec, LIMITS)
    assert e.value.status == 400
    ok = parse_forecast_request(json.dumps({"series": [{"png": [_png(x) for x in f]}]}).encode(), spec, LIMITS)
    np.testing.assert_array_equal(ok.series[0].frames, f)


@pytest.mark.parametrize("ctype, ok", [
    (None, True), ("application/json", True), ("application/json; charset=utf-8", True), ("APPLICATION/JSON", True),
    ("application/problem+json", True), (" application/json ;charset=UTF-8", True),
    ("application/x-www-form-urlencoded", False), ("multipart/form-data; boundary=x", False), ("image/png", False),
    ("text/plain", False), ("text/json", False), ("application/jsonx", False), ("", False), ("json", False),
    ("application/+json", False), ("application/x+json", True), (" ", False), ("\t", False),
])
def test_content_type_is_json_or_415(ctype, ok):
    """The body was parsed as JSON whatever its Content-Type said (a form got 'not valid JSON')."""
    if ok:
        check_content_type(ctype)
        return
    with pytest.raises(RequestError, match=rf"Content-Type {re.escape(repr(ctype.strip() or ctype))} is not accepted.*application/json or "
                                           r"application/\*\+json \(or no Content-Type\)") as e:
        check_content_type(ctype)
    assert e.value.status == 415


@pytest.mark.parametrize("where", ["first", "middle", "last", "all"])
def test_booleans_among_pixel_integers_are_refused(where):
    """A JSON true/false among the pixel integers (numpy would read it as 1/0) is a 422 naming the
    series, wherever it stands; a valid series next to it does not hide it."""
    spec = Spec(T, H, W, C, [10, 15, 20, 25])
    good = _frames(1, 1, T)[0].tolist()
    bad = _frames(1, 1, T)[0].tolist()
    if where == "all":
        bad = [[[[True] * C for _ in range(W)] for _ in range(H)] for _ in range(T)]
    else:
        t, y = {"first": (0, 0), "middle": (T // 2, H // 2), "last": (T - 1, H - 1)}[where]
        bad[t][y][-1][-1] = where != "middle"  # True, or False in the middle
    body = json.dumps({"series": [{"frames": good}, {"frames": bad}]}).encode()
    with pytest.raises(RequestError, match=r"series\[1\].*integers 0-255 \(found booleans\)") as e:
        parse_forecast_request(body, spec, LIMITS)
    assert e.value.status == 422
    # integers only: no look per value needed, and the frames decode
    ok = parse_forecast_request(json.dumps({"series": [{"frames": good}]}).encode(), spec, LIMITS)
    np.testing.assert_array_equal(ok.series[0].frames, np.asarray(good, np.uint8))


# ----------------------------------------------------------------------------- over HTTP
def test_health_model_and_docs(url, model_dir):
    r = requests.get(f"{url}/healthz", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    info = requests.get(f"{url}/model", timeout=30).json()
    assert info["in_frames"] == T and info["image"] == {"height": H, "width": W, "channels": C}
    assert info["config"]["model"]["lstm_units"] == 16 and "train_loss" in info["metrics"]
    assert len(info["version"]) == 12 and info["input_ages"] == [10, 15, 20, 25]
    assert info["limits"]["max_batch_size"] == 8  # user_config reached the model replica
    assert info["limits"]["max_horizon"] == 6  # ... and the ingress replica
    assert info["device"] == "cpu" and info["torch_threads"] == 1  # from num_cpus=0.5, no GPU
    spec = requests.get(f"{url}/openapi.json", timeout=30).json()
    body = spec["paths"]["/forecast"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/ForecastRequest")
    schemas = spec["components"]["schemas"]
    assert {"ForecastRequest", "FramesSeries", "PngSeries", "ForecastResponse", "ErrorResponse"} <= set(schemas)
    assert requests.get(f"{url}/docs", timeout=30).status_code == 200


def test_openapi_request_schema_is_what_is_accepted(url):
    """The published request schema and the validation are one model: every field the schema shows
    is accepted (a request using all of them gets 200), a field it does not show gets 422 naming it."""
    doc = requests.get(f"{url}/openapi.json", timeout=30).json()
    schemas = doc["components"]["schemas"]
    req = schemas["ForecastRequest"]
    good = _frames(1, 7, T)[0]
    minimal = {"FramesSeries": {"frames": good.tolist()}, "PngSeries": {"png": [_png(x) for x in good]}}
    # a new field in the schema must be added here; horizon 1 (the default) is allowed with target_ages
    values = {"ages": [20, 25, 30, 35], "horizon": 1, "target_ages": [40, 45]}
    series_refs = [o["$ref"].rsplit("/", 1)[1] for o in req["properties"]["series"]["items"]["oneOf"]]
    assert sorted(series_refs) == sorted(minimal)
    top = {"series": [minimal["FramesSeries"]], **{k: values[k] for k in req["properties"] if k != "series"}}
    assert set(top) == set(req["properties"]) and req["additionalProperties"] is False
    r = _post(url, top)
    assert r.status_code == 200 and r.json()["forecasts"][0]["ages"] == [40, 45], r.text[:300]
    r = _post(url, {**top, "model": "other"})
    assert r.status_code == 422 and "unknown field(s) ['model']" in r.json()["detail"], r.text[:300]
    for name, series in minimal.items():
        props = schemas[name]["properties"]
        full = {**series, **{k: values[k] for k in props if k not in series}}
        assert set(full) == set(props) and schemas[name]["additionalProperties"] is False
        r = _post(url, {"series": [minimal["FramesSeries"], full]})
        assert r.status_code == 200 and r.json()["forecasts"][1]["ages"] == [40, 45], (name, r.text[:300])
        r = _post(url, {"series": [minimal["FramesSeries"], {**full, "colour": "red"}]})
        assert r.status_code == 422, (name, r.text[:300])
        assert "series[1]: unknown field(s) ['colour']" in r.json()["detail"], r.text[:300]


def test_forecast_frames_equals_model(url, local_model):
    f = _frames(3, 2, T)
    r = _post(url, {"series": [{"frames": x.tolist()} for x in f]})
    assert r.status_code == 200, r.text
    out = r.json()["forecasts"]
    assert len(out) == 3
    got = np.array([o["frames"] for o in out], np.uint8)
    assert got.shape == (3, 1, H, W, C) and all(o["ages"] == [30] for o in out)
    want = _expected(local_model, f, 1)
    assert np.abs(got.astype(int) - want).max() <= 1 and (got == want).mean() > 0.99


def test_forecast_png_horizon_rollout(url, local_model):
    f = _frames(2, 3, T)
    body = {"series": [{"png": [_png(x) for x in f[0]]},
                       {"png": [_png(x) for x in f[1]], "ages": [20, 25, 30, 35]}],
            "horizon": 3}
    r = _post(url, body)
    assert r.status_code == 200, r.text
    out = r.json()["forecasts"]
    assert out[0]["ages"] == [30, 35, 40] and out[1]["ages"] == [40, 45, 50]
    got = np.array([[_unpng(p) for p in o["png"]] for o in out])
    want = _expected(local_model, f, 3)
    assert got.shape == (2, 3, H, W, C)
    assert np.abs(got.astype(int) - want).max() <= 1 and (got == want).mean() > 0.99


def test_bad_inputs_get_4xx_and_replica_survives(url):
    good = _frames(1, 4, T)[0]
    gl = good.tolist()
    nan_body = json.dumps({"series": [{"frames": gl}]}).replace("230", "NaN", 1)
    cases = [
        (_frames(1, 4, 3)[0].tolist(), 422, "expected 4 frames"),
        (_frames(1, 4, 5)[0].tolist(), 422, "expected 4 frames"),
        (np.zeros((T, 16, 16, C), int).tolist(), 422,
         "series[0].frames: images are 16x16x3 but the model expects 32x16x3 (height x width x channels)"),
        (np.zeros((T, H, W, 4), int).tolist(), 422, "images are 32x16x4 but the model expects 32x16x3"),
        (np.zeros((T, H, W), int).tolist(), 422, "32x16x3"),
        (np.zeros((T, C, H, W), int).tolist(), 422, "channels-first"),
        ((good.astype(int) + 100).tolist(), 422, "0-255"),
        ((good.astype(int) - 300).tolist(), 422, "0-255"),
        ((good / 2.0).tolist(), 422, "fractional"),
        ([gl[0], gl[1], gl[2], gl[3][:-1]], 422, "ragged"),
        ([[["a"]]] * T, 422, "non-numeric"),
    ]
    for frames, status, msg in cases:
        r = _post(url, {"series": [{"frames": frames}]})
        assert r.status_code == status and msg in r.json()["detail"], (msg, r.status_code, r.text[:300])
    png_ok = [_png(x) for x in good]
    wrapped = _wrap(png_ok[2])
    small = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(small, format="PNG")
    raw_cases = [
        ({"series": [{"png": png_ok[:3] + ["%%%not base64%%%"]}]}, 400, "series[0].png[3]: malformed base64"),
        ({"series": [{"png": png_ok[:3] + [base64.b64encode(b"GIF89a....").decode()]}]}, 400, "not a PNG"),
        ({"series": [{"png": png_ok[:3] + [base64.b64encode(base64.b64decode(png_ok[3])[:40]).decode()]}]},
         400, "corrupt PNG"),
        ({"series": [{"png": png_ok}, {"png": png_ok[:2] + [wrapped[:80] + "*" + wrapped[80:], png_ok[3]]}]},
         400, "series[1].png[2]: malformed base64"),  # whitespace is accepted, other characters are not
        ({"series": [{"png": png_ok[:2] + [wrapped[:-3], png_ok[3]]}]}, 400, "series[0].png[2]: malformed base64"),
        ({"series": [{"png": png_ok[:3] + [_b64(bomb_png(20000, 20000))]}]}, 422,
         "series[0].png[3]: PNG too large to decode"),
        ({"series": [{"png": png_ok[:3] + [_b64(bomb_png(W, H))]}]}, 400, "series[0].png[3]: corrupt PNG"),
        ({"series": [{"png": png_ok[:3] + [_b64(exif_png(np.zeros((W, H, C), np.uint8), 6))]}]}, 422,
         "series[0].png[3]: PNG is 16x32 pixels (HxW) as shown (stored 32x16, turned by its EXIF orientation)"),
        ({"series": [{"png": png_ok[:3] + [base64.b64encode(small.getvalue()).decode()]}]}, 422, "8x8 pixels"),
        ({"series": [{"png": png_ok[:2]}]}, 422, "expected 4 frames"),
        ({"series": []}, 422, "'series' is empty"),
        ({"series": [{"frames": gl}], "horizon": 0}, 422, "'horizon' must be an integer from 1 to 6"),
        ({"series": [{"frames": gl}], "horizon": 7}, 422, "'horizon'"),
        ({"series": [{"frames": gl}], "horizon": "2"}, 422, "'horizon'"),
        ({"series": [{"frames": gl, "png": png_ok}]}, 422, "exactly one of"),
        ({"series": [{"frames": gl}], "ages": [10, 20, 25, 30]}, 422, "evenly spaced"),
        ({"serie": []}, 422, "unknown field(s) ['serie']"),
        ([1, 2, 3], 422, "JSON object"),
        ({"series": [{}] * 17}, 413, "17 series in one request; the limit is 16"),
        (b"this is not json", 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        (nan_body.encode(), 400, "NaN is not allowed"),
        (b"[" * 100_000, 400, "not valid JSON"),
    ]
    for body, status, msg in raw_cases:
        r = _post(url, body)
        assert r.status_code == status and msg in r.json()["detail"], (msg, r.status_code, r.text[:300])
    # a body that is not JSON by its Content-Type: 415 naming the type, before the body is read
    good_body = json.dumps({"series": [{"png": png_ok}]})
    r = requests.post(f"{url}/forecast", data={"a": "b"}, timeout=30)  # a form: what curl -d sends by default
    assert r.status_code == 415, r.text
    assert "Content-Type 'application/x-www-form-urlencoded' is not accepted (curl -d" in r.json()["detail"]
    r = requests.post(f"{url}/forecast", data=good_body, timeout=30,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})  # even a JSON body
    assert r.status_code == 415 and "application/json or application/*+json" in r.json()["detail"]
    r = requests.post(f"{url}/forecast", files={"f": ("10.png", base64.b64decode(png_ok[0]), "image/png")}, timeout=30)
    assert r.status_code == 415 and "Content-Type 'multipart/form-data; boundary=" in r.json()["detail"]
    for ctype in ("image/png", "text/plain", "application/xml"):
        r = requests.post(f"{url}/forecast", data=good_body, headers={"Content-Type": ctype}, timeout=30)
        assert r.status_code == 415 and f"Content-Type {ctype!r} is not accepted" in r.json()["detail"], r.text
    big = b"x" * 700_000  # over max_body_bytes: the type is refused first, the body never read
    r = requests.post(f"{url}/forecast", data=big, headers={"Content-Type": "text/plain"}, timeout=30)
    assert r.status_code == 415
    # JSON in any accepted spelling, or no Content-Type at all (as before): parsed
    for ctype in ("application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json", None):
        r = requests.post(f"{url}/forecast", data=good_body.encode(), timeout=60,
                          headers={"Content-Type": ctype} if ctype else {})
        assert r.status_code == 200, (ctype, r.text[:300])
    # the replica still answers correctly
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
    assert _post(url, {"series": [{"png": png_ok}]}).status_code == 200


def test_oversized_bodies_get_413(url):
    big = b'{"series": [' + b"0," * 400_000 + b"0]}"  # 800 kB > max_body_bytes=600000
    r = _post(url, big)
    assert r.status_code == 413 and "exceeds the limit of 600000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: chunked transfer, counted while streaming
        for _ in range(100):
            yield b" " * 10_000

    r = requests.post(f"{url}/forecast", data=chunks(), timeout=60)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200


def test_concurrent_clients_get_their_own_answers(url, local_model):
    n = 24
    f = _frames(n, 5, T)
    horizons = [1 + i % 3 for i in range(n)]

    def call(i):
        fmt = "png" if i % 2 else "frames"
        series = {"png": [_png(x) for x in f[i]]} if fmt == "png" else {"frames": f[i].tolist()}
        r = _post(url, {"series": [series], "horizon": horizons[i]})
        assert r.status_code == 200, r.text
        o = r.json()["forecasts"][0]
        return np.array([_unpng(p) for p in o["png"]]) if fmt == "png" else np.array(o["frames"], np.uint8)

    before = requests.get(f"{url}/model", timeout=30).json()["stats"]
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(call, range(n)))
    after = requests.get(f"{url}/model", timeout=30).json()["stats"]
    for i in range(n):
        want = _expected(local_model, f[i:i + 1], horizons[i])[0]
        assert got[i].shape == (horizons[i], H, W, C)
        assert np.abs(got[i].astype(int) - want).max() <= 1, i
    series, batches = after["series"] - before["series"], after["batches"] - before["batches"]
    assert series == n and batches < n  # series from different clients shared forward passes


def test_png_variants_mean_the_same_pixels_as_ingest(url, local_model):
    """Issue #11 items 1, 2, 5, 6 over HTTP: every PNG variant ingest accepts is accepted, decoded to
    the same pixels (16-bit scaled, cut-outs over white, EXIF orientation applied); each forecast
    equals the model's forecast of those pixels, and differs from the forecast of the pixels a
    wrong decoder would give (clipped 16-bit, black background, orientation ignored)."""
    base = _frames(1, 6, T)[0]
    per_frame = [variants(x) for x in base]
    labels = list(per_frame[0])
    series = [{"png": [_b64(v[label][0]) for v in per_frame]} for label in labels]
    truth = np.stack([np.stack([v[label][1] for v in per_frame]) for label in labels])
    mid = np.full((H, W), 32896, np.uint16)  # item 1: mid-grey 16-bit PNGs
    series.append({"png": [_b64(pil_bytes(Image.fromarray(mid)))] * T})
    truth = np.concatenate([truth, np.full((1, T, H, W, C), 128, np.uint8)])
    # item 6: line-wrapped base64 (LF, CRLF, inside a data: URL)
    series.append({"png": [_wrap(_png(x)) for x in base]})
    series.append({"png": ["data:image/png;base64," + _wrap(_png(x), sep="\r\n") for x in base]})
    truth = np.concatenate([truth, base[None], base[None]])
    got = []
    for lo in range(0, len(series), LIMITS.max_series_per_request):
        r = _post(url, {"series": series[lo:lo + LIMITS.max_series_per_request]})
        assert r.status_code == 200, r.text
        got += [[_unpng(p) for p in o["png"]] for o in r.json()["forecasts"]]
    got = np.array(got)
    want = _expected(local_model, truth, 1)
    names = labels + ["grey16-mid", "wrapped-lf", "wrapped-crlf"]
    for i, name in enumerate(names):
        assert np.abs(got[i].astype(int) - want[i]).max() <= 1, name

    # The comparison can tell a right decoding from a wrong one: the wrong pixels forecast otherwise.
    k = {n: i for i, n in enumerate(names)}
    wrong = {
        "grey16-mid": np.full((T, H, W, C), 255, np.uint8),  # clipped
        "rgba8-cutout": np.where(mask_of(H, W)[None, :, :, None], 0, base),  # black background
        "exif3": np.rot90(base, 2, axes=(1, 2)),  # as stored
    }
    for name, pixels in wrong.items():
        assert not np.array_equal(pixels, truth[k[name]]), name
        assert np.abs(_expected(local_model, np.ascontiguousarray(pixels[None]), 1)[0].astype(int) - want[k[name]]).max() > 1, name


def test_grid_model_target_ages(url, local_model):
    """Target ages on a grid model (issue #14): whole steps of the input spacing after the last input,
    answered by the rollout and labelled by those ages (floats where fractional); GET /model says
    it is a grid model and has no trust.json. Off-grid or too-far targets: 422 naming the series."""
    f = _frames(2, 8, T)
    r = _post(url, {"series": [{"frames": f[0].tolist(), "target_ages": [35, 40]},
                               {"png": [_png(x) for x in f[1]], "ages": [2.5, 5, 7.5, 10], "target_ages": [12.5, 17.5]}]})
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    out = doc["forecasts"]
    assert out[0]["ages"] == [35, 40] and out[1]["ages"] == [12.5, 17.5] and doc["horizon"] is None
    want = _expected(local_model, f, 3)  # steps 1, 2, 3 of the rollout
    got0 = np.array(out[0]["frames"], np.uint8)
    got1 = np.array([_unpng(p) for p in out[1]["png"]])
    assert np.abs(got0.astype(int) - want[0, 1:3]).max() <= 1 and (got0 == want[0, 1:3]).mean() > 0.99
    assert np.abs(got1.astype(int) - want[1, [0, 2]]).max() <= 1 and (got1 == want[1, [0, 2]]).mean() > 0.99
    good = {"frames": f[0].tolist()}
    for target, msg in [([37], "series[1]: ages [10, 15, 20, 25] -> [37] are off a grid model's grid"),
                        ([30, 60], "series[1]: target age 60 is 7 steps of 5 after the last input age 25; a grid "
                                   "model rolls out at most 6 steps (max_horizon)")]:
        r = _post(url, {"series": [good, {**good, "target_ages": target}, good]})
        assert r.status_code == 422 and msg in r.json()["detail"], (msg, r.text[:300])
        assert "series[0]" not in r.json()["detail"] and "series[2]" not in r.json()["detail"]
    info = requests.get(f"{url}/model", timeout=30).json()
    assert info["time"]["time_aware"] is False and info["time"]["max_inputs"] == T
    assert info["time"]["default_ages"] == [10, 15, 20, 25] and info["time"]["accepted_ages"] == [None, None]
    assert info["trust"] is None and info["limits"]["max_targets"] == 16

"""Bad input in, clear errors out (issue #11): model files checked key by key, and every job checking
its arguments, dataset, model directory and --out before Ray starts (one line, exit status 2).

No Ray here: every job is called in-process through ``main(argv)`` and must fail before ``init_ray``
(which these tests replace by a function that fails the test if it is reached)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from jobs import cluster as cluster_job, evaluate as evaluate_job, generate as generate_job, ingest as ingest_job, predict as predict_job
from jobs import run_all as run_all_job, serve as serve_job, train as train_job, tune as tune_job
from tests.helpers import ROOT, tiny_config
from crnn.checkpoint import MODEL_FILE, ModelError, check_model_dir, read_model_file, save_model_dir
from crnn.inference import MAX_HORIZON, load_model
from crnn.serve.settings import Limits
from crnn.config import save as save_config
from crnn.model import build_model


JOB_MODULES = {m.__name__.split(".")[-1]: m for m in (cluster_job, evaluate_job, generate_job, ingest_job,
                                                      predict_job, run_all_job, serve_job, train_job, tune_job)}


def _job(name: str):
    """The job ``jobs/<name>.py`` (``jobs`` is a package: imported, not loaded from a file)."""
    return JOB_MODULES[name]


class RayStarted(Exception):
    pass


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Reaching init_ray means the job did not check something first."""
    import crnn.runtime

    def refuse(*a, **k):
        raise RayStarted("init_ray was reached")

    monkeypatch.setattr(crnn.runtime, "init_ray", refuse)


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    cfg = tiny_config("unused")
    out = str(tmp_path_factory.mktemp("models") / "good")
    torch.manual_seed(0)
    save_model_dir(out, build_model(cfg.model), cfg, epoch=3, metrics={"val_loss": 0.5})
    return out


def _variant(good: str, tmp_path, name: str) -> str:
    d = str(tmp_path / name)
    shutil.copytree(good, d)
    return d


def _payload_variant(good, tmp_path, name, change) -> str:
    d = _variant(good, tmp_path, name)
    payload = torch.load(os.path.join(d, MODEL_FILE), weights_only=True)
    payload = change(payload)
    torch.save(payload, os.path.join(d, MODEL_FILE))
    return d


# ----------------------------------------------------------------------------- model files
def test_good_model_dir_loads(good_model):
    cfg, payload = check_model_dir(good_model)
    model, cfg2, meta = load_model(good_model)
    assert cfg == cfg2 and meta == {"epoch": 3, "metrics": {"val_loss": 0.5}, "data": None, "tta": "none"}
    assert set(payload["state_dict"]) == set(model.state_dict())


@pytest.mark.parametrize("fraction", [0.6, 0.05, 0.0])
def test_truncated_model_file_named(good_model, tmp_path, fraction):
    """An interrupted copy: the error names the file and says it is truncated (no bare torch error)."""
    d = _variant(good_model, tmp_path, "cut")
    f = os.path.join(d, MODEL_FILE)
    with open(f, "r+b") as fh:
        fh.truncate(int(os.path.getsize(f) * fraction))
    for load in (read_model_file, check_model_dir, load_model):
        with pytest.raises(ModelError, match=rf"{f}: unreadable model file, truncated"):
            load(d)


def _drop(key):
    def change(p):
        del p[key]
        return p
    return change


def _set(key, value):
    def change(p):
        p[key] = value
        return p
    return change


def _shrink_lstm(p):
    p["config"]["model"]["lstm_units"] = 8  # the weights are for 16
    return p


def _drop_weight(p):
    p["state_dict"].pop(sorted(p["state_dict"])[0])
    return p


BAD_PAYLOADS = {
    "not_a_dict": (lambda p: [1, 2, 3], "not a crnn-forecast-model file"),
    "other_format": (_set("format", "keras"), "not a crnn-forecast-model file (format 'keras')"),
    "no_state_dict": (_drop("state_dict"), "missing keys ['state_dict']"),
    "no_config": (_drop("config"), "missing keys ['config']"),
    "epoch_is_str": (_set("epoch", "3"), "'epoch' is a str, expected int"),
    "newer_version": (_set("version", 2), "format version 2"),
    "unknown_config_key": (lambda p: {**p, "config": {**p["config"], "model": {**p["config"]["model"], "wings": 2}}},
                           "config does not build a model (unknown config key 'model.wings'"),
    "bad_config_value": (lambda p: {**p, "config": {**p["config"], "model": {**p["config"]["model"], "lstm_units": "x"}}},
                         "config does not build a model (model.lstm_units: expected an integer"),
    "weights_of_other_shape": (_shrink_lstm, "weights do not fit its config (size mismatch"),
    "missing_weight": (_drop_weight, "weights do not fit its config (Missing key"),
}


@pytest.mark.parametrize("case", sorted(BAD_PAYLOADS))
def test_bad_model_payload_named(good_model, tmp_path, case):
    change, match = BAD_PAYLOADS[case]
    d = _payload_variant(good_model, tmp_path, case, change)
    with pytest.raises(ModelError) as e:
        load_model(d)
    assert str(e.value).startswith(f"{d}/{MODEL_FILE}: ") and match in str(e.value), str(e.value)


def test_missing_model_dir_and_file_named(tmp_path):
    with pytest.raises(ModelError, match=f"{tmp_path / 'none'}: no such model directory"):
        load_model(str(tmp_path / "none"))
    with pytest.raises(ModelError, match=f"{tmp_path}: no {MODEL_FILE}; not a model directory"):
        load_model(str(tmp_path))


def test_pickled_code_refused_and_named(good_model, tmp_path):
    d = _variant(good_model, tmp_path, "pickle")
    torch.save({"format": "crnn-forecast-model", "evil": np.random.default_rng(0)}, os.path.join(d, MODEL_FILE))
    with pytest.raises(ModelError, match=rf"{d}/{MODEL_FILE}: unreadable model file, it holds objects that weights_only"):
        read_model_file(d)


def test_serve_engine_refuses_a_cut_model(good_model, tmp_path):
    """What a Serve replica runs when it starts: it refuses with the named error."""
    from crnn.serve import ForecastEngine

    assert ForecastEngine.load(good_model, "cpu").version
    d = _variant(good_model, tmp_path, "cut")
    f = os.path.join(d, MODEL_FILE)
    with open(f, "r+b") as fh:
        fh.truncate(int(os.path.getsize(f) * 0.6))
    with pytest.raises(ModelError, match=rf"{f}: unreadable model file, truncated"):
        ForecastEngine.load(d, "cpu")
    d2 = _payload_variant(good_model, tmp_path, "shrunk", _shrink_lstm)
    with pytest.raises(ModelError, match="weights do not fit"):
        ForecastEngine.load(d2, "cpu")


# ----------------------------------------------------------------------------- jobs: checks before Ray
def _cut_model(good_model, tmp_path) -> str:
    d = _variant(good_model, tmp_path, "cutjob")
    f = os.path.join(d, MODEL_FILE)
    with open(f, "r+b") as fh:
        fh.truncate(int(os.path.getsize(f) * 0.6))
    return d


def _fails(capsys, job: str, argv: list[str], *needles: str) -> str:
    """The job exits 2 before Ray with one line on stderr that contains every needle."""
    rc = _job(job).main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], err  # (prog is pytest's argv[0] here)
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.mark.parametrize("job", ["train", "tune"])
def test_nonexistent_data_refused_before_ray(job, tmp_path, capsys):
    _fails(capsys, job, ["--data", str(tmp_path / "nonexistent"), "--out", str(tmp_path / "O")],
           str(tmp_path / "nonexistent"), "no dataset.json")
    assert not (tmp_path / "O").exists()


@pytest.mark.parametrize("job", ["train", "tune"])
def test_bad_config_refused_before_ray(job, tiny_dataset, tmp_path, capsys):
    _fails(capsys, job, ["--data", tiny_dataset, "--out", str(tmp_path / "O"), "model.wings=2"], "model.wings")
    _fails(capsys, job, ["--data", tiny_dataset, "--out", str(tmp_path / "O"), "train.lr=0"], "train.lr=0.0")
    _fails(capsys, job, ["--data", tiny_dataset, "--out", str(tmp_path / "O"), "model.height=64"],
           "32x16x3 but the model expects 64x16x3")
    _fails(capsys, job, ["--data", tiny_dataset, "--out", str(tmp_path / "O"), "data.train_splits=[nope]"],
           "data splits ['nope']")
    # training on the series scored as unseen: test trees leaked into training, or the best checkpoint
    # chosen on trained series (any order, alone, or the splits renamed onto each other)
    for splits, named in (("train,test", "data.test_split='test'"), ("test,train", "data.test_split='test'"),
                          ("[test]", "data.test_split='test'"), ("train,val", "data.val_split='val'")):
        _fails(capsys, job, ["--data", tiny_dataset, "--out", str(tmp_path / "O"), f"data.train_splits={splits}"],
               named, "series the model trained on")
    for split, named in (("data.test_split=train", "data.test_split='train'"), ("data.val_split=train", "data.val_split='train'")):
        _fails(capsys, job, ["--data", tiny_dataset, "--out", str(tmp_path / "O"), split], named,
               "score on another (data.train_splits, data." + named.split("=")[0][5:] + ")")
    for splits in (["data.val_split=test"], ["data.test_split=val"], ["data.train_splits=train,val", "data.val_split=test"]):
        _fails(capsys, job, ["--data", tiny_dataset, "--out", str(tmp_path / "O"), *splits],
               "data.val_split and data.test_split are both")


def test_broken_shard_refused_before_ray(tiny_dataset, tmp_path, capsys):
    from crnn.shards import list_shards

    data = str(tmp_path / "data")
    shutil.copytree(tiny_dataset, data)
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = list_shards(data)[1]
    t = pq.read_table(shard)
    t = t.set_column(t.schema.get_field_index("split"), "split", pa.array([0] * len(t)))
    pq.write_table(t, shard)
    _fails(capsys, "train", ["--data", data, "--out", str(tmp_path / "O")], os.path.basename(shard),
           "column 'split'")


def test_overrides_anywhere_on_the_command_line(tiny_dataset, tmp_path, monkeypatch, capsys):
    """``--data D train.epochs=1 --out O train.seed=1``: both overrides reach the config (the job
    gets as far as starting Ray, which this test stops)."""
    import crnn.rundir

    seen = {}
    real = crnn.rundir.check_run_dir

    def spy(out, cfg, overwrite=False):
        seen["cfg"], seen["out"] = cfg, out
        return real(out, cfg, overwrite)

    monkeypatch.setattr(crnn.rundir, "check_run_dir", spy)
    out = str(tmp_path / "O")
    with pytest.raises(RayStarted):
        _job("train").main(["--data", tiny_dataset, "train.epochs=1", "--out", out, "train.seed=1",
                            "--preset", "quick", "model.lstm_units=8"])
    cfg = seen["cfg"]
    assert (cfg.train.epochs, cfg.train.seed, cfg.model.lstm_units, seen["out"]) == (1, 1, 8, out)
    # a bad value in the last place is still an override (named), not an unrecognized argument
    _fails(capsys, "train", ["--data", tiny_dataset, "train.epochs=1", "--out", out, "train.seed=oops"],
           "train.seed: expected an integer, got 'oops'")


def test_run_all_overrides_anywhere(tmp_path, monkeypatch):
    import crnn.rundir

    seen = {}
    monkeypatch.setattr(crnn.rundir, "check_run_dir", lambda out, cfg, overwrite=False: seen.update(cfg=cfg))
    with pytest.raises(RayStarted):
        _job("run_all").main(["train.epochs=1", "--out", str(tmp_path / "R"), "train.seed=3", "--preset", "quick"])
    assert (seen["cfg"].train.epochs, seen["cfg"].train.seed) == (1, 3)


def test_train_refuses_another_config_in_out(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "O"
    out.mkdir()
    old = tiny_config(tiny_dataset)
    save_config(old, str(out / "config.yaml"))
    (out / "metrics.csv").write_text("epoch\n0\n")
    _fails(capsys, "train", ["--data", tiny_dataset, "--out", str(out), "--preset", "quick"],
           f"--out {out} holds a run of another configuration", "model.lstm_units: 16 -> 64",
           "model.conv_filters: [4, 8] -> [16, 32]", "--overwrite")
    assert sorted(os.listdir(out)) == ["config.yaml", "metrics.csv"]  # nothing touched


def test_train_refuses_a_foreign_directory_even_with_overwrite(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    for extra in ([], ["--overwrite"]):
        _fails(capsys, "train", ["--data", tiny_dataset, "--out", str(out), *extra], "has no config.yaml")
    assert (out / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("job", ["evaluate", "predict", "serve"])
def test_cut_model_refused_before_work(job, good_model, tiny_dataset, tmp_path, capsys):
    cut = _cut_model(good_model, tmp_path)
    argv = {"evaluate": ["--model", cut, "--data", tiny_dataset],
            "predict": ["--model", cut, "--data", tiny_dataset, "--out", str(tmp_path / "P")],
            "serve": ["--model", cut]}[job]
    _fails(capsys, job, argv, f"{cut}/{MODEL_FILE}: unreadable model file, truncated")
    assert not (tmp_path / "P").exists()


def test_predict_checks_everything_before_ray(good_model, tiny_dataset, tmp_path, capsys):
    def argv(*extra, data=tiny_dataset, out=str(tmp_path / "P")):
        return ["--model", good_model, "--data", data, "--out", out, *extra]

    _fails(capsys, "predict", argv(data=str(tmp_path / "missing")), str(tmp_path / "missing"), "no dataset.json")
    _fails(capsys, "predict", argv(out=tiny_dataset), f"{tiny_dataset} already exists")
    _fails(capsys, "predict", argv("--horizon", "0"), "horizon=0")
    for h in (MAX_HORIZON + 1, 1000):  # Serve's bound (the shared constant), before Ray
        _fails(capsys, "predict", argv("--horizon", str(h)), f"horizon={h} is over the limit of {MAX_HORIZON}")
    # the same bound for a grid model's --target-ages (whole steps of 5 after the last input, 25): not a
    # way around it (Serve refuses them too); 1000 rolled out 195 steps
    for t in (25 + 5 * (MAX_HORIZON + 1), 1000):
        _fails(capsys, "predict", argv("--target-ages", f"30,{t}"), f"target age {t} is {(t - 25) // 5} steps of 5 after "
               f"the last input age 25; a grid model rolls out at most {MAX_HORIZON} steps (crnn.inference.MAX_HORIZON")
    _fails(capsys, "predict", argv("--concurrency", "0"), "--concurrency must be >= 1")
    _fails(capsys, "predict", argv("--split", "nope"), "unknown split(s) ['nope']")
    with pytest.raises(RayStarted):  # good arguments get as far as Ray
        _job("predict").main(argv())
    with pytest.raises(RayStarted):  # the limit itself is allowed
        _job("predict").main(argv("--horizon", str(MAX_HORIZON)))
    with pytest.raises(RayStarted):
        _job("predict").main(argv("--target-ages", str(25 + 5 * MAX_HORIZON)))
    assert Limits().max_horizon == MAX_HORIZON  # one number: Serve's default is predict's bound


def test_evaluate_serve_generate_ingest_check_before_work(good_model, tiny_dataset, tmp_path, capsys):
    _fails(capsys, "evaluate", ["--model", str(tmp_path / "nomodel"), "--data", tiny_dataset],
           f"{tmp_path / 'nomodel'}: no such model directory")
    _fails(capsys, "evaluate", ["--model", good_model, "--data", str(tmp_path / "nodata")], "no dataset.json")
    _fails(capsys, "serve", ["--model", str(tmp_path / "nomodel")], "no such model directory")
    _fails(capsys, "generate", ["--out", tiny_dataset], f"{tiny_dataset} already exists")
    _fails(capsys, "generate", ["--out", str(tmp_path / "g"), "--num-series", "0"], "num_series must be >= 1")
    _fails(capsys, "ingest", ["--src", str(tmp_path / "nophotos"), "--out", str(tmp_path / "i")],
           f"--src {tmp_path / 'nophotos'}: no such folder")
    (tmp_path / "photos").mkdir()
    _fails(capsys, "ingest", ["--src", str(tmp_path / "photos"), "--out", tiny_dataset], "already exists")
    with pytest.raises(SystemExit) as e:  # argparse's own usage errors: status 2 as well
        _job("evaluate").main(["--model", good_model])
    assert e.value.code == 2


@pytest.mark.parametrize("job", ["ingest", "generate", "predict"])
def test_overwrite_never_deletes_what_is_not_a_dataset(job, good_model, tiny_dataset, tmp_path, capsys):
    """``--overwrite`` replaces a dataset, not whatever sits at ``--out``: the photo folder itself given
    as ``--out`` (``ingest --src photos --out photos --overwrite`` deleted the photos and notes) or
    a file is refused before Ray and left as it was."""
    photos = tmp_path / "photos"
    (photos / "fern").mkdir(parents=True)
    (photos / "fern" / "10.png").write_bytes(b"not really a png")
    (photos / "notes.txt").write_text("precious")
    lone = tmp_path / "lone.png"
    lone.write_bytes(b"precious")
    for out in (photos, lone):
        argv = {"ingest": ["--src", str(photos), "--out", str(out), "--overwrite"],
                "generate": ["--out", str(out), "--overwrite", "--num-series", "5"],
                "predict": ["--model", good_model, "--data", tiny_dataset, "--out", str(out), "--overwrite"]}[job]
        _fails(capsys, job, argv, str(out), "left alone")
    assert (photos / "notes.txt").read_text() == "precious" and (photos / "fern" / "10.png").exists()
    assert lone.read_bytes() == b"precious"


def test_overwrite_still_replaces_a_dataset_or_an_interrupted_one(tiny_dataset, tmp_path):
    from crnn.shards import check_out_free, list_shards

    assert check_out_free(tiny_dataset, overwrite=True) is True
    cut = tmp_path / "cut"  # shards written, card never (a write that died on an object store)
    cut.mkdir()
    shutil.copy(list_shards(tiny_dataset)[0], cut)
    assert check_out_free(str(cut), overwrite=True) is True
    (tmp_path / "empty").mkdir()
    assert check_out_free(str(tmp_path / "empty"), overwrite=True) is True


def test_damaged_weights_named_not_loaded(good_model, tmp_path, capsys):
    """Bytes damaged inside the weights (not truncated): torch reads its zip without checking CRCs and
    loaded the garbage silently; now a ModelError names the file, in every loader and job."""
    import zipfile

    d = _variant(good_model, tmp_path, "damaged")
    f = os.path.join(d, MODEL_FILE)
    with zipfile.ZipFile(f) as z:
        big = max(z.infolist(), key=lambda i: i.file_size)
    with open(f, "r+b") as fh:  # the member's data starts after its 30-byte local header, name and extra
        fh.seek(big.header_offset + 26)
        n, m = int.from_bytes(fh.read(2), "little"), int.from_bytes(fh.read(2), "little")
        fh.seek(big.header_offset + 30 + n + m + big.file_size // 2)
        chunk = fh.read(16)
        fh.seek(-16, 1)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    for load in (read_model_file, check_model_dir, load_model):
        with pytest.raises(ModelError, match=rf"{f}: corrupt model file, {big.filename} fails its CRC check"):
            load(d)
    _fails(capsys, "evaluate", ["--model", d, "--data", str(tmp_path)], f"{f}: corrupt model file")


def test_ingest_value_mistakes_are_one_line_before_ray(tmp_path, capsys):
    """--ages with one age or a repeated one reached Ray (and failed there, exit 1, or ingested every
    frame of age 10 twice); --ages/--background/--max-pixels values printed argparse's usage too."""
    (tmp_path / "photos").mkdir()
    argv = ["--src", str(tmp_path / "photos"), "--out", str(tmp_path / "ds")]
    _fails(capsys, "ingest", [*argv, "--ages", "10"], "--ages needs at least 2 different ages")
    _fails(capsys, "ingest", [*argv, "--ages", "10,10,15"], "--ages needs at least 2 different ages")
    _fails(capsys, "ingest", [*argv, "--ages", "10,x"], "--ages must be comma-separated integers")
    _fails(capsys, "ingest", [*argv, "--ages", "10,99999999999"], "--ages needs at least 2 different ages 0..16777216")
    _fails(capsys, "ingest", [*argv, "--background", "nope"], "--background: background colour 'nope'")
    _fails(capsys, "ingest", [*argv, "--max-pixels", "0"], "--max-pixels must be >= 1")
    assert not (tmp_path / "ds").exists()


def test_ingest_src_without_series_folders_is_one_line_before_ray(tmp_path, capsys):
    """--src pointing at one series' folder (photos/fern-01, its images directly inside) or at an
    empty folder started Ray (about 22 s here) and then failed with exit 1; now a usage error before
    Ray, which says to give the parent folder when --src holds images itself."""
    flat = tmp_path / "fern-01"
    flat.mkdir()
    for a in (10, 15):
        Image.new("RGB", (16, 32)).save(flat / f"{a}.png")
    (flat / ".hidden").mkdir()  # hidden folders are not series
    line = _fails(capsys, "ingest", ["--src", str(flat), "--out", str(tmp_path / "ds")],
                  f"--src {flat}: no series sub-folders found; it holds images itself: give the folder above it")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    line = _fails(capsys, "ingest", ["--src", str(tmp_path / "empty"), "--out", str(tmp_path / "ds")],
                  f"--src {tmp_path / 'empty'}: no series sub-folders found")
    assert "holds images" not in line
    assert not (tmp_path / "ds").exists()


def test_serve_and_tune_number_mistakes_are_one_line_before_ray(good_model, tiny_dataset, tmp_path, capsys):
    """serve --port 99999 and tune --num-samples 0 / --reduction-factor 1 reached Ray (tune then died
    of an AssertionError); serve's settings errors were pydantic's multi-line report."""
    _fails(capsys, "serve", ["--model", good_model, "--port", "99999"], "--port must be an integer 1-65535")
    _fails(capsys, "serve", ["--model", good_model, "--port", "0"], "--port must be an integer 1-65535")
    _fails(capsys, "serve", ["--model", good_model, "--num-replicas", "0"], "bad settings: ", "num_replicas=0")
    _fails(capsys, "serve", ["--model", good_model, "--num-gpus", "-1"], "bad settings: ",
           "greater than or equal to 0")
    if not torch.cuda.is_available():  # a replica asking for a GPU Ray here does not have waited forever
        for gpus in ("1", "0.5"):
            _fails(capsys, "serve", ["--model", good_model, "--num-gpus", gpus], f"ask for {gpus} GPU(s)",
                   "no CUDA device", "RAY_ADDRESS")
    base = ["--data", tiny_dataset, "--out", str(tmp_path / "T"), "--preset", "quick"]
    _fails(capsys, "tune", [*base, "--num-samples", "0"], "--num-samples must be >= 1, got 0")
    _fails(capsys, "tune", [*base, "--reduction-factor", "1"], "--reduction-factor must be > 1")
    _fails(capsys, "tune", [*base, "--grace-period", "0"], "--grace-period must be >= 1")
    _fails(capsys, "tune", [*base, "--max-concurrent", "0"], "--max-concurrent must be >= 1")


# ----------------------------------------------------------------------------- argparse's own errors
JOBS = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "jobs")) if f.endswith(".py") and not f.startswith("_"))
# per job: a command line that parses, and its own choice/type mistakes (flag, bad value, message)
PARSES = {"cluster": ["up"], "evaluate": ["--model", "M", "--data", "D"], "generate": ["--out", "O"],
          "ingest": ["--src", "S", "--out", "O"], "predict": ["--model", "M", "--data", "D", "--out", "O"],
          "run_all": [], "serve": ["--model", "M"], "train": ["--data", "D", "--out", "O"],
          "tune": ["--data", "D", "--out", "O"]}
VALUE_MISTAKES = {
    "cluster": [("--port", "x", "argument --port: invalid int value: 'x'")],
    "evaluate": [("--batch-size", "x", "argument --batch-size: invalid int value: 'x'")],
    "generate": [("--scene", "trees", "argument --scene: invalid choice: 'trees'"),
                 ("--num-series", "1.5", "argument --num-series: invalid int value: '1.5'")],
    "ingest": [("--fit", "cropp", "argument --fit: invalid choice: 'cropp'"),
               ("--max-pixels", "abc", "argument --max-pixels: invalid int value: 'abc'")],
    "predict": [("--inputs", "middle", "argument --inputs: invalid choice: 'middle'"),
                ("--num-gpus", "one", "argument --num-gpus: invalid float value: 'one'")],
    "run_all": [("--num-series", "many", "argument --num-series: invalid int value: 'many'")],
    "serve": [("--port", "http", "argument --port: invalid int value: 'http'")],
    "train": [("--epochs", "ten", "argument --epochs: invalid int value: 'ten'")],
    "tune": [("--num-samples", "x", "argument --num-samples: invalid int value: 'x'")],
}


def _argparse_fails(capsys, job: str, argv: list[str], *needles: str) -> str:
    with pytest.raises(SystemExit) as e:
        _job(job).main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0] and "usage:" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_every_job_is_covered():
    assert sorted(PARSES) == sorted(VALUE_MISTAKES) == sorted(JOB_MODULES) == JOBS


@pytest.mark.parametrize("job", JOBS)
def test_argparse_errors_are_one_line(job, capsys):
    """Unknown flags, bad choices, bad types and missing required arguments printed argparse's usage
    block and the error (5-6 lines); now one line ``prog: error: ...``, exit status 2, like every other
    usage error."""
    _argparse_fails(capsys, job, [*PARSES[job], "--no-such-flag"], "unrecognized arguments: --no-such-flag")
    for flag, value, message in VALUE_MISTAKES[job]:
        _argparse_fails(capsys, job, [*PARSES[job], flag, value], message)
    if job not in ("run_all", "serve"):  # the others have a required argument (cluster: up | down)
        _argparse_fails(capsys, job, [], "required")


def test_a_plain_parser_given_to_parse_job_args_reports_one_line(capsys):
    import argparse

    from crnn.config import parse_job_args

    p = argparse.ArgumentParser(prog="job")
    p.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as e:
        parse_job_args(p, ["--n", "x"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "job: error: argument --n: invalid int value: 'x' (see --help)\n"



@pytest.mark.parametrize("job", JOBS)
def test_every_job_shows_our_warnings_on_one_line(job, monkeypatch):
    """A warning the project raises (a killed publish's leftover, a mirror axis, a Tune budget) was
    printed as ``/…/crnn/storage.py:313: UserWarning: <message>`` followed by the ``warnings.warn(``
    source line: our file, not the user's problem. Every job now shows it as ``<prog>: warning:
    <message>`` (one line, like its usage errors); others keep Python's format."""
    import warnings

    from crnn import storage

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    python_format = warnings.formatwarning
    with pytest.raises(SystemExit) as e:  # --help parses and exits 0 after the job set its format
        _job(job).main([*PARSES[job], "--help"])
    assert e.value.code == 0
    assert warnings.formatwarning is not python_format, f"{job} did not set how its warnings show"
    shown = warnings.formatwarning("publishing X: left from\n  an interrupted publish", UserWarning, storage.__file__, 313)
    assert shown.endswith(": warning: publishing X: left from an interrupted publish\n"), shown
    assert shown.count("\n") == 1 and "UserWarning" not in shown and "storage.py" not in shown, shown


def test_job_warnings_keep_python_format_for_other_warnings(monkeypatch):
    import warnings

    from crnn import mirror, storage
    from crnn.config import job_warnings

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    python_format = warnings.formatwarning
    job_warnings("job")
    assert warnings.formatwarning("m", mirror.MirrorAxisWarning, mirror.__file__, 1) == "job: warning: m\n"
    for category, filename in [(UserWarning, torch.__file__), (UserWarning, "<string>"), (UserWarning, ROOT + "/jobs/x.py"),
                               (RuntimeWarning, storage.__file__), (DeprecationWarning, storage.__file__),
                               (UserWarning, ROOT + "/crnn_other/x.py")]:  # a sibling folder whose name starts alike
        assert warnings.formatwarning("m", category, filename, 7) == python_format("m", category, filename, 7), filename
    job_warnings("again")  # a second call replaces the first: no nesting of two formats
    assert warnings.formatwarning("m", UserWarning, storage.__file__, 1) == "again: warning: m\n"


def test_a_job_prints_a_leftover_publish_warning_as_one_line(tmp_path):
    """The real path, in a fresh interpreter: a job's parser, then a local publish beside a folder a
    killed publish left. stderr is that one line and nothing else."""
    import subprocess
    import sys

    dest = tmp_path / "out"
    (tmp_path / "out.staging-0badc0de").mkdir()
    code = ("import sys; from crnn.config import JobArgumentParser, parse_job_args; from crnn.storage import publish_dir;"
            "parse_job_args(JobArgumentParser(prog='somejob'), []);"
            "publish_dir(sys.argv[1], lambda d: open(d + '/card.json', 'w').write('{}'), marker='card.json')")
    r = subprocess.run([sys.executable, "-c", code, str(dest)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"somejob: warning: publishing {dest}: left from an interrupted (or a concurrent) "
                                     f"publish, not removed: {dest}.staging-0badc0de (a .staging- folder holds an "
                                     "unfinished new version, an .old- one the version it replaced; delete them once "
                                     "no publish runs)"], r.stderr
    assert (dest / "card.json").is_file()



def test_an_image_size_mismatch_says_how_to_make_the_dataset_again(good_model, tiny_dataset, tmp_path, capsys):
    """A new user's input: photos ingested at 48x64, then a fine-tune of the shipped 32x16 model. The
    error said "set model.height/width/channels", and doing so was refused next ("that model's
    network differs"): with train.init_from the network's size is fixed, so the error now says to make
    the dataset at the model's size (the ingest and generate flags), and so do evaluate and predict."""
    import dataclasses

    from crnn.checkpoint import check_model_dir
    from crnn.evaluate import check_evaluate
    from crnn.inference import ImageSizeError
    from crnn.predict import plan_predict
    from crnn.shards import validate
    from crnn.train import check_data

    photos = {**validate(tiny_dataset), "height": 48, "width": 64}  # the card of a 48x64 dataset
    remake = "make the dataset at 32x16 (jobs/ingest.py --height 32 --width 16; the simulator: jobs/generate.py"
    cfg = tiny_config(tiny_dataset)
    fine_tune = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from="models/pine-convlstm"))
    with pytest.raises(ImageSizeError) as e:
        check_data(fine_tune, photos)
    assert "images are 48x64x3 but the model expects 32x16x3" in str(e.value), e.value
    assert "train.init_from=models/pine-convlstm was trained at that size; a trained network reads one image size: "\
           + remake in str(e.value), e.value
    assert "set model.height" not in str(e.value)
    with pytest.raises(ImageSizeError, match="set model.height/width/channels to the images' size, or a trained"):
        check_data(cfg, photos)  # from scratch: either way
    # a model of another size than the dataset's: evaluate and predict say the same
    cfg64, _ = check_model_dir(good_model)
    cfg64 = dataclasses.replace(cfg64, model=dataclasses.replace(cfg64.model, height=64))
    model64 = str(tmp_path / "m64")
    save_model_dir(model64, build_model(cfg64.model), cfg64, epoch=0, metrics={"val_loss": 1.0})
    for check in (lambda: check_evaluate(model64, tiny_dataset),
                  lambda: plan_predict(model64, tiny_dataset, str(tmp_path / "fc"))):
        with pytest.raises(ImageSizeError) as e:
            check()
        assert "images are 32x16x3 but model" in str(e.value) and "expects 64x16x3" in str(e.value), e.value
        assert "make the dataset at 64x16 (jobs/ingest.py --height 64 --width 16" in str(e.value), e.value
    _fails(capsys, "evaluate", ["--model", model64, "--data", tiny_dataset], "jobs/ingest.py --height 64 --width 16")
    assert not (tmp_path / "fc").exists()



def test_an_evaluation_of_simulated_pines_keeps_the_papers_row(good_model, tiny_dataset, capsys):
    """The paper's Table 3 row stays beside the scores of the pine simulator's data (its kind of data);
    other data leave it out (tests/test_evaluate.py)."""
    assert _job("evaluate").main(["--model", good_model, "--data", tiny_dataset]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("paper (T3, age 30)") and "377.35" in line for line in out.splitlines()), out

def test_training_with_an_empty_validation_split_warns_before_ray(tiny_dataset):
    """A new user's input: 5 ingested series, none hashed to val. Training ran with val_loss NaN and
    printed "best checkpoint" without a word; now a warning says the last epoch is kept. A dataset
    with validation series warns nothing."""
    import warnings

    from crnn.shards import validate
    from crnn.train import check_data

    card = validate(tiny_dataset)
    cfg = tiny_config(tiny_dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_data(cfg, card)
    no_val = {**card, "splits": {"train": 5, "val": 0, "test": 0}}
    with pytest.warns(UserWarning, match=r"the validation split 'val' is empty \(series per split: \{'train': 5, "
                                         r"'val': 0, 'test': 0\}\): val_loss is NaN, so the model kept is the last "
                                         r"epoch's, not the best one's"):
        assert check_data(cfg, no_val) == 5
    # the job checks before Ray and fit() again after it (Ray's start resets the once-per-place
    # registry): the README block printed the warning twice; once per process and dataset now
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        check_data(cfg, no_val)
        check_data(cfg, {**card, "splits": {"train": 6, "val": 0, "test": 0}})  # another dataset: warned
    assert [str(w.message).count("'train': 6") for w in seen] == [1], [str(w.message) for w in seen]


def test_split_error_names_the_splits_to_choose_from():
    from crnn.shards import split_error

    counts = {"train": 9, "val": 0, "test": 2}
    assert str(split_error("d", "val", counts)) == ("d: split 'val' is empty (series per split: {'train': 9, 'val': 0, "
                                                    "'test': 2}); choose one that has series: --split train or "
                                                    "--split test")
    assert str(split_error("d", "tset", counts)).startswith("d: split 'tset' is unknown (")
    assert str(split_error("d", "test", {"train": 3, "val": 1, "test": 0}, "data.test_split=", ("train",))
               ).endswith("; choose one that has series: data.test_split=val")
    assert str(split_error("d", "test", {"train": 0, "test": 0})).endswith("(series per split: {'train': 0, 'test': 0})")
    assert str(split_error("d", "test", None)) == "d: split 'test' is unknown (series per split: {})"


def test_rates_in_job_summaries_are_not_rounded_to_zero():
    """"11 series ... in 24.5 s (0 series/s)": a small run's rate keeps two significant digits."""
    from crnn.runtime import per_second

    assert per_second(11, 24.5) == "0.45"
    assert per_second(8, 5.7) == "1.4"
    assert per_second(3847, 52.0) == "74"
    assert per_second(80000, 625.3) == "128"
    assert per_second(0, 3.0) == "0"
    assert per_second(5, 0.0) == "inf"
    assert per_second(0.03, 1.0) == "0.03" and per_second(1, 1e5) == "<0.01"  # no "1e-05"


# ----------------------------------------------------------------------------- more checks before work
def test_evaluate_device_and_split_checked_before_work(good_model, tiny_dataset, capsys):
    """--device gpu was a 13-line torch traceback (exit 1); --split tset failed (exit 1) only after the
    model was loaded and the data read. Both are one-line usage errors before any work now."""
    from crnn.evaluate import check_evaluate

    base = ["--model", good_model, "--data", tiny_dataset]
    for bad in ("gpu", "tpu", "cuda:x", "meta"):
        _fails(capsys, "evaluate", [*base, "--device", bad], f"device={bad!r}: expected cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        _fails(capsys, "evaluate", [*base, "--device", "cuda"], "CUDA is not available")
    for bad in ("tset", "TEST", "all"):
        _fails(capsys, "evaluate", [*base, "--split", bad], f"{tiny_dataset}: split {bad!r} is unknown", "'test': 8",
               "choose one that has series: --split train or --split val or --split test")
    _fails(capsys, "evaluate", [*base, "--batch-size", "0"], "--batch-size >= 1")
    assert check_evaluate(good_model, tiny_dataset) == "test"  # the model config's data.test_split
    assert check_evaluate(good_model, tiny_dataset, split="val", device="cpu") == "val"


def test_evaluate_refuses_an_empty_split_up_front(good_model, tiny_dataset, tmp_path):
    import json

    from crnn.evaluate import check_evaluate

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    card = json.loads((data / "dataset.json").read_text())
    card["splits"] = {"train": card["splits"]["train"] + card["splits"]["val"], "val": 0, "test": card["splits"]["test"]}
    (data / "dataset.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="split 'val' is empty") as e:
        check_evaluate(good_model, str(data), split="val")
    assert str(e.value).endswith("choose one that has series: --split train or --split test"), e.value


def test_train_evaluate_refuses_an_empty_test_split_before_ray(tiny_dataset, tmp_path, capsys):
    """The second review's input: ``jobs/train.py --evaluate`` on a dataset whose test split is empty
    trained, then failed with a traceback in the evaluation; now refused before Ray, naming the split.
    Its neighbours: data.test_split naming a split with series, and no --evaluate, reach Ray."""
    import json

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    card = json.loads((data / "dataset.json").read_text())
    card["splits"] = {"train": card["splits"]["train"] + card["splits"]["test"], "val": card["splits"]["val"], "test": 0}
    (data / "dataset.json").write_text(json.dumps(card))
    out = str(tmp_path / "O")
    base = ["--data", str(data), "--out", out, "--preset", "quick", "--evaluate"]
    line = _fails(capsys, "train", base, "--evaluate:", "split 'test' is empty")
    assert line.endswith("(series per split: {'train': %d, 'val': %d, 'test': 0}) (or drop --evaluate)"
                         % (card["splits"]["train"], card["splits"]["val"])), line  # train and val are taken
    # data.test_split=val names a split with series, but the one the best checkpoint is chosen on
    _fails(capsys, "train", [*base, "data.test_split=val"], "data.val_split and data.test_split are both 'val'")
    with pytest.raises(RayStarted):      # without --evaluate the empty test split is no obstacle
        _job("train").main(base[:-1])
    assert not os.path.exists(os.path.join(out, "eval"))


def test_tune_refuses_an_out_that_is_not_a_search_directory(tiny_dataset, tmp_path, capsys):
    """tune --out was not checked before Ray: a photo folder or a file as --out went to the search."""
    base = ["--data", tiny_dataset, "--preset", "quick"]
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "10.jpg").write_bytes(b"precious")
    lone = tmp_path / "notes.txt"
    lone.write_text("precious")
    _fails(capsys, "tune", [*base, "--out", str(photos)], f"--out {photos} is not empty and has no search.json")
    _fails(capsys, "tune", [*base, "--out", str(lone)], f"--out {lone} is a file, not a search directory")
    assert sorted(os.listdir(photos)) == ["10.jpg"] and lone.read_text() == "precious"
    search = tmp_path / "search"
    (search / "ray" / "tune").mkdir(parents=True)
    (search / "search.json").write_text("{}")
    _fails(capsys, "tune", [*base, "--out", str(search), "--no-resume"], "holds the search 'tune' already")
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new", search):  # these get as far as Ray
        with pytest.raises(RayStarted):
            _job("tune").main([*base, "--out", str(out)])
    with pytest.raises(RayStarted):  # another --name in the same search directory is a new search
        _job("tune").main([*base, "--out", str(search), "--no-resume", "--name", "other"])


@pytest.mark.parametrize("bad", ["0", "-2"])
def test_embedded_ray_cpus_must_be_positive(bad, good_model, tiny_dataset, tmp_path, capsys):
    """predict --ray-num-cpus 0 started Ray, which crashed; serve and generate took it as well."""
    _fails(capsys, "predict", ["--model", good_model, "--data", tiny_dataset, "--out", str(tmp_path / "P"),
                               "--ray-num-cpus", bad], f"--ray-num-cpus must be >= 1, got {bad}")
    _fails(capsys, "serve", ["--model", good_model, "--ray-num-cpus", bad], f"--ray-num-cpus must be >= 1, got {bad}")
    _fails(capsys, "generate", ["--out", str(tmp_path / "g"), "--num-cpus", bad], f"--num-cpus must be >= 1, got {bad}")
    assert not (tmp_path / "P").exists() and not (tmp_path / "g").exists()



# ----------------------------------------------------------------------------- serve and model messages
def _spec():
    from crnn.serve import Spec

    return Spec(in_frames=4, height=32, width=16, channels=3, input_ages=[10, 15, 20, 25])


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def test_serve_png_messages_say_what_is_wrong():
    """A truncated PNG was "corrupt PNG (unreadable EXIF: ...)"; a PNG of swapped size without EXIF was
    "turned by its EXIF orientation"."""
    from crnn.serve import RequestError, decode_png
    from tests.image_utils import exif_png, pil_bytes
    from PIL import Image

    frame = np.random.default_rng(0).integers(0, 256, (32, 16, 3), dtype=np.uint8)
    good = pil_bytes(Image.fromarray(frame))
    assert decode_png(_b64(good), "p", _spec()).shape == (32, 16, 3)
    for fraction in (0.5, 0.9):
        with pytest.raises(RequestError) as e:
            decode_png(_b64(good[:int(len(good) * fraction)]), "series[0].png[1]", _spec())
        assert e.value.status == 400 and "series[0].png[1]: corrupt PNG (unreadable: " in e.value.message
        assert "EXIF" not in e.value.message, e.value.message
    swapped = pil_bytes(Image.fromarray(frame.transpose(1, 0, 2).copy()))  # 16x32, no EXIF
    with pytest.raises(RequestError) as e:
        decode_png(_b64(swapped), "series[0].png[2]", _spec())
    assert e.value.status == 422 and "EXIF" not in e.value.message
    assert "series[0].png[2]: PNG is 16x32 pixels (HxW) but the model takes 32x16 (height and width swapped)" \
        in e.value.message
    with pytest.raises(RequestError) as e:  # turned by its EXIF orientation: still said so
        decode_png(_b64(exif_png(np.zeros((16, 32, 3), np.uint8), 6)), "series[0].png[3]", _spec())
    assert "as shown (stored 32x16, turned by its EXIF orientation)" in e.value.message


def test_model_file_that_is_not_a_file_says_what_it_is(good_model, tmp_path, capsys):
    """model.pt as a directory or a broken symbolic link was "no model.pt; not a model directory"."""
    as_dir = tmp_path / "as_dir"
    (as_dir / MODEL_FILE).mkdir(parents=True)
    broken = tmp_path / "broken"
    broken.mkdir()
    os.symlink(tmp_path / "elsewhere.pt", broken / MODEL_FILE)
    lone = tmp_path / "lone.pt"
    shutil.copy(os.path.join(good_model, MODEL_FILE), lone)
    dangling_dir = tmp_path / "dangling"
    os.symlink(tmp_path / "gone", dangling_dir)
    cases = {str(as_dir): f"{as_dir}/{MODEL_FILE}: a directory, not a model file",
             str(broken): f"{broken}/{MODEL_FILE}: a broken symbolic link (to '{tmp_path / 'elsewhere.pt'}')",
             str(lone): f"{lone}: a file, not a model directory; give the directory holding {MODEL_FILE}",
             str(dangling_dir): f"{dangling_dir}: a broken symbolic link (to '{tmp_path / 'gone'}')"}
    for d, msg in cases.items():
        with pytest.raises(ModelError) as e:
            load_model(d)
        assert str(e.value).startswith(msg), str(e.value)
        _fails(capsys, "serve", ["--model", d], msg)
    (tmp_path / "empty").mkdir()  # still: a directory without model.pt
    with pytest.raises(ModelError, match=f"{tmp_path / 'empty'}: no {MODEL_FILE}; not a model directory"):
        load_model(str(tmp_path / "empty"))


def test_run_all_refuses_a_time_aware_start_in_another_age_unit_before_ray(tmp_path, capsys):
    """The review's input: run_all simulates pines (ages in years); a time-aware starting model trained
    on months was refused only after Ray started and the data was generated, with a traceback. Now
    a usage error before Ray, and nothing is written."""
    from tests.helpers import random_timevp_dir

    months = random_timevp_dir(str(tmp_path / "m"), {"layout": "irregular", "age_unit": "months",
                                                     "age_range": [1.0, 30.0]})
    out = str(tmp_path / "ra")
    line = _fails(capsys, "run_all", ["--out", out, "--num-series", "30", "--preset", "timevp-fast",
                                      "model.timevp.hid_s=8", "model.timevp.hid_t=16", "model.timevp.n_t=2",
                                      f"train.init_from={months}"],
                  f"train.init_from={months!r}", "'months'", "'years'",
                  "run_all simulates pines whose ages are years: start from a time-aware model trained on years")
    assert "ingest" not in line  # the simulated data has no file names to rename
    assert not os.path.exists(out)


def test_ingest_refuses_a_blank_age_unit_before_ray(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    for blank in ("", " "):
        _fails(capsys, "ingest", ["--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--age-unit", blank],
               "--age-unit must name the unit")
    assert not os.path.exists(tmp_path / "o")


@pytest.mark.parametrize("job", ["train", "tune"])
def test_bad_init_from_refused_before_ray(job, good_model, tiny_dataset, tmp_path, capsys):
    """train.init_from (fine-tuning): a missing or broken model directory, or one whose network differs
    from the run's, is named before Ray starts, and --out stays untouched."""
    out = str(tmp_path / "O")
    base = ["--data", tiny_dataset, "--out", out, "--preset", "quick", "model.conv_filters=[4,8]",
            "model.lstm_units=16"]
    missing = str(tmp_path / "nowhere")
    _fails(capsys, job, [*base, f"train.init_from={missing}"], missing)
    _fails(capsys, job, [*base, f"train.init_from={_cut_model(good_model, tmp_path)}"], "truncated")
    # good_model has 4/8 filters and 16 LSTM units: another width or another family is refused
    _fails(capsys, job, [*base[:-1], "model.lstm_units=32", f"train.init_from={good_model}"],
           "train.init_from=", "model.lstm_units: this run 32, that model 16")
    _fails(capsys, job, ["--data", tiny_dataset, "--out", out, "--preset", "convlstm-fast",
                         f"train.init_from={good_model}"], "model.kind: this run 'convlstm', that model 'crnn'")
    assert not os.path.exists(out)


@pytest.mark.parametrize("job", ["train", "tune", "serve"])
def test_a_yaml_file_that_is_not_yaml_is_a_usage_error(job, good_model, tiny_dataset, tmp_path, capsys):
    """``--config``/``--space`` naming a file that does not parse as YAML (an unclosed list, a
    Markdown file) is one line naming the file and where it broke, exit 2 (was a yaml traceback,
    exit 1); a file that parses but is not a mapping stays refused as before."""
    flag = {"train": "--config", "tune": "--space", "serve": "--config"}[job]
    base = {"serve": ["--model", good_model]}.get(job, ["--data", tiny_dataset, "--out", str(tmp_path / "O")])
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  lr: [1, 2\n")
    _fails(capsys, job, [*base, flag, str(broken)], str(broken), "not valid YAML", "line 3")
    markdown = tmp_path / "notes.md"
    markdown.write_text("# Notes\n\nsee *this*: a list of things\n- one\n")
    _fails(capsys, job, [*base, flag, str(markdown)], str(markdown), "not valid YAML")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    _fails(capsys, job, [*base, flag, str(listing)], str(listing))
    assert not (tmp_path / "O").exists()


def test_evaluate_refuses_an_out_that_is_a_file_before_work(good_model, tiny_dataset, tmp_path, capsys,
                                                              monkeypatch):
    """``--out`` a file, or under one, is refused before the evaluation (it ran to the end, then
    died with pyarrow's FileExistsError traceback, exit 1); a new or existing folder is fine."""
    import crnn.evaluate

    lone = tmp_path / "notes.txt"
    lone.write_text("precious")
    _fails(capsys, "evaluate", ["--model", good_model, "--data", tiny_dataset, "--out", str(lone)],
           f"--out {lone} is a file, not a directory")
    _fails(capsys, "evaluate", ["--model", good_model, "--data", tiny_dataset, "--out", str(lone / "eval")],
           f"{lone} is a file, not a directory")
    assert lone.read_text() == "precious"
    reached = []

    def stop(*a, **k):
        reached.append(k.get("out"))
        raise ValueError("stopped here")

    monkeypatch.setattr(crnn.evaluate, "evaluate", stop)
    (tmp_path / "old").mkdir()
    for out in (str(tmp_path / "new" / "eval"), str(tmp_path / "old")):
        assert _job("evaluate").main(["--model", good_model, "--data", tiny_dataset, "--out", out]) == 1
    assert reached == [str(tmp_path / "new" / "eval"), str(tmp_path / "old")]


def test_predict_checks_preview_before_work(good_model, tiny_dataset, tmp_path, capsys):
    """``--preview`` is written after the forecasts are published: a path it cannot be written to
    (an extension Pillow does not write, a folder, a missing folder, a URI) is refused before Ray
    (it failed after the run, with the forecasts left at --out and exit 1); a good path passes."""
    out = tmp_path / "P"

    def argv(preview):
        return ["--model", good_model, "--data", tiny_dataset, "--out", str(out), "--preview", preview]

    _fails(capsys, "predict", argv(str(tmp_path / "sheet.md")), ".md is not an image format")
    _fails(capsys, "predict", argv(str(tmp_path / "sheet")), "no extension is not an image format")
    _fails(capsys, "predict", argv(str(tmp_path)), f"--preview {tmp_path} is a directory")
    _fails(capsys, "predict", argv(str(tmp_path / "nope" / "s.png")), f"no folder {tmp_path / 'nope'}")
    _fails(capsys, "predict", argv("s3://bucket/s.png"), "not a URI")
    assert not out.exists()
    for good in ("s.png", "s.PNG", "s.jpg"):
        with pytest.raises(RayStarted):
            _job("predict").main(argv(str(tmp_path / good)))


@pytest.mark.parametrize("job", ["train", "tune", "evaluate", "predict"])
def test_data_that_is_a_file_is_named_as_such(job, good_model, tiny_dataset, tmp_path, capsys):
    """``--data DIR/dataset.json`` (the card instead of its folder) says so (was pyarrow's "[Errno 20]
    Failed to open local file '.../dataset.json/dataset.json'"); a missing path keeps its message."""
    card = os.path.join(tiny_dataset, "dataset.json")
    model = [] if job in ("train", "tune") else ["--model", good_model]
    for data, needle in ((card, f"{card}: a file, not a dataset directory"),
                         (str(tmp_path / "missing"), "no dataset.json; not a dataset")):
        line = _fails(capsys, job, [*model, "--data", data, "--out", str(tmp_path / "O")], needle)
        assert "Errno" not in line
    assert not (tmp_path / "O").exists()


def test_ingest_strict_refuses_what_the_names_show_before_ray(tmp_path, capsys):
    """--strict started Ray and decoded every image before refusing a series whose file names were
    wrong; now exit 1 (the strict refusal) before Ray, naming the series; names that are fine, or no
    --strict, get as far as Ray."""
    src = tmp_path / "photos"
    for name, ages in (("ok", (10, 15, 20)), ("short", (10, 20))):
        (src / name).mkdir(parents=True)
        for a in ages:
            Image.new("RGB", (16, 32)).save(src / name / f"{a}.png")
    argv = ["--src", str(src), "--out", str(tmp_path / "ds")]
    assert _job("ingest").main([*argv, "--strict"]) == 1
    err = capsys.readouterr().err
    assert "strict ingest refused by the file names alone, before decoding any image" in err
    assert "short: missing ages [15]" in err and not (tmp_path / "ds").exists()
    with pytest.raises(RayStarted):
        _job("ingest").main(argv)  # not strict: the bad series is left out at ingest
    (src / "short" / "15.png").write_bytes(b"not decoded before Ray")
    with pytest.raises(RayStarted):
        _job("ingest").main([*argv, "--strict"])  # names fine: decoding happens after Ray starts

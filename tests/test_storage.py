"""crnn.storage: files, JSON, directory copies and atomic publishing on local paths, file:// and S3
(a local moto server, as in test_s3.py)."""

import glob
import math
import os
import warnings

import numpy as np
import pytest

from crnn import storage
from crnn.storage import (copy_dir, exists, json_safe, local_copy, publish_dir, read_bytes, read_json, read_text,
                          write_bytes, write_json, write_text)


@pytest.fixture(params=["path", "file-uri", "relative"])
def where(request, tmp_path, monkeypatch):
    """A function naming a location under a fresh directory in each of the local forms."""
    if request.param == "path":
        return lambda *parts: str(tmp_path.joinpath(*parts))
    if request.param == "file-uri":
        return lambda *parts: "file://" + str(tmp_path.joinpath(*parts))
    monkeypatch.chdir(tmp_path)
    return lambda *parts: os.path.join(*parts)


def _tree(root) -> dict[str, bytes]:
    """{relative path: content} of every file under the local directory ``root``."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def _leftovers(path: str) -> list[str]:
    return glob.glob(path + ".staging-*") + glob.glob(path + ".old-*") + glob.glob(path + "*.tmp")


# ----------------------------------------------------------------------------- files, local
def test_bytes_text_round_trip_and_parents_created(where, tmp_path):
    data = bytes(range(256)) * 3
    assert write_bytes(where("a", "b", "x.bin"), data) == where("a", "b", "x.bin")
    assert read_bytes(where("a", "b", "x.bin")) == data
    assert (tmp_path / "a" / "b" / "x.bin").read_bytes() == data  # every form means the same file
    write_text(where("t.txt"), "pine \u00e4ge 30\n")
    assert read_text(where("t.txt")) == "pine \u00e4ge 30\n"
    assert exists(where("t.txt")) and exists(where("a")) and not exists(where("nope"))


def test_json_round_trip_sanitises_numpy_and_non_finite(where, tmp_path):
    doc = {"mse": np.float32(1.5), "n": np.int64(7), "ok": np.bool_(True), "psnr": float("inf"),
           "snr_db": -math.inf, "bad": float("nan"), "per_age": {30: np.float64(2.25)},
           "ages": (10, 15), "frame": np.arange(3, dtype=np.uint8), "none": None}
    write_json(where("m.json"), doc)
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text and text.endswith("}\n")
    back = read_json(where("m.json"))
    assert back == {"mse": 1.5, "n": 7, "ok": True, "psnr": None, "snr_db": None, "bad": None,
                    "per_age": {"30": 2.25}, "ages": [10, 15], "frame": [0, 1, 2], "none": None}
    assert type(back["n"]) is int and type(back["ok"]) is bool
    assert json_safe(doc) == back  # the file holds exactly the sanitised value


def test_json_refuses_what_is_not_json_unless_default(tmp_path):
    class Domain:
        def __repr__(self):
            return "Domain(1, 2)"

    with pytest.raises(TypeError, match="a Domain .*Domain\\(1, 2\\).* is not a JSON value"):
        write_json(str(tmp_path / "x.json"), {"space": Domain()})
    assert not os.listdir(tmp_path)  # nothing written
    write_json(str(tmp_path / "x.json"), {"space": Domain()}, default=repr)
    assert read_json(str(tmp_path / "x.json")) == {"space": "Domain(1, 2)"}


def test_missing_and_malformed_files_are_named(where, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file.*nope.json"):
        read_bytes(where("nope.json"))
    assert read_json(where("nope.json"), default=None) is None
    assert read_json(where("nope.json"), default={}) == {}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_json(where("bad.json"))


def test_write_replaces_whole_file_and_a_failed_write_keeps_the_old_one(tmp_path):
    p = str(tmp_path / "f.json")
    write_json(p, {"v": 1})
    write_json(p, {"v": 2})
    assert read_json(p) == {"v": 2}
    with pytest.raises(TypeError):
        write_bytes(p, ["not", "bytes"])  # fails while writing the temporary file
    assert read_json(p) == {"v": 2}
    assert os.listdir(tmp_path) == ["f.json"]  # no temporary file left


def test_absolute_and_join():
    assert storage.absolute("s3://b/x/") == "s3://b/x"
    assert storage.absolute("rel") == os.path.join(os.getcwd(), "rel")
    assert storage.join("s3://b/x", "trials", "t1") == "s3://b/x/trials/t1"
    assert storage.join("/r", "a") == "/r/a"
    assert storage.is_local("/r") and storage.is_local("file:///r") and not storage.is_local("s3://b/r")


# ----------------------------------------------------------------------------- directories, local
def _make_src(root) -> dict[str, bytes]:
    files = {"model.pt": b"weights", "config.yaml": b"model: {}\n", "optimizer.pt": b"adam",
             os.path.join("sub", "deep", "x.bin"): b"\x00\x01"}
    for rel, data in files.items():
        os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
    return files


def test_copy_dir_whole_and_with_ignore(where, tmp_path):
    files = _make_src(tmp_path / "src")
    copy_dir(where("src"), where("all"))
    assert _tree(tmp_path / "all") == files
    copy_dir(str(tmp_path / "src"), where("some"), ignore=("optimizer.pt", "*.bin"))
    assert _tree(tmp_path / "some") == {"model.pt": b"weights", "config.yaml": b"model: {}\n"}
    os.makedirs(tmp_path / "empty")
    copy_dir(where("empty"), where("empty2"))
    assert os.path.isdir(tmp_path / "empty2") and not os.listdir(tmp_path / "empty2")


def test_copy_dir_refuses_a_missing_or_file_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory.*nope"):
        copy_dir(str(tmp_path / "nope"), str(tmp_path / "d"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory.*'.*/f'"):
        copy_dir(str(tmp_path / "f"), str(tmp_path / "d"))


def _fill(**files: str):
    """A ``fill`` for publish_dir writing ``files`` (name -> text) into its directory."""
    def fill(d):
        for name, text in files.items():
            write_text(storage.join(d, name), text)
    return fill


def test_publish_creates_and_replaces(where, tmp_path):
    dest = where("out", "model")
    assert publish_dir(dest, _fill(**{"model.pt": "v1", "stale.txt": "old"}), marker="model.pt") == dest
    assert _tree(tmp_path / "out" / "model") == {"model.pt": b"v1", "stale.txt": b"old"}
    publish_dir(dest, _fill(**{"model.pt": "v2"}), marker="model.pt")
    assert _tree(tmp_path / "out" / "model") == {"model.pt": b"v2"}  # replaced, not merged
    assert _leftovers(str(tmp_path / "out" / "model")) == []


def test_failed_publish_keeps_the_old_directory(tmp_path):
    dest = str(tmp_path / "model")
    publish_dir(dest, lambda d: write_text(os.path.join(d, "model.pt"), "v1"))

    def dies(d):
        write_text(os.path.join(d, "model.pt"), "half")
        raise KeyboardInterrupt  # a Ctrl-C half-way: BaseException, not only Exception

    with pytest.raises(KeyboardInterrupt):
        publish_dir(dest, dies)
    with pytest.raises(RuntimeError, match="publishing .*model: no model.pt was written"):
        publish_dir(dest, lambda d: write_text(os.path.join(d, "other"), "x"), marker="model.pt")
    assert _tree(dest) == {"model.pt": b"v1"}
    assert _leftovers(dest) == []


def test_publish_interrupted_between_renames_puts_the_old_directory_back(tmp_path, monkeypatch):
    dest = str(tmp_path / "model")
    publish_dir(dest, lambda d: write_text(os.path.join(d, "model.pt"), "v1"))
    real_rename, calls = os.rename, []

    def rename(src, dst):  # the old one steps aside, then moving the new one in fails
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("simulated failure of the second rename")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="simulated"):
        publish_dir(dest, lambda d: write_text(os.path.join(d, "model.pt"), "v2"))
    monkeypatch.undo()
    assert calls[0][1].startswith(dest + ".old-") and calls[1][0].startswith(dest + ".staging-")
    assert _tree(dest) == {"model.pt": b"v1"}
    assert _leftovers(dest) == []



@pytest.mark.parametrize("name,uri", [("model", False), ("model", True), ("model[1]", False), ("a*b?", False)])
def test_publish_names_what_a_killed_publish_left_and_keeps_it(tmp_path, name, uri):  # [*? are plain here
    """A process killed mid-publish runs no cleanup: its <dest>.staging-* (or .old-*) stays. The next
    publish warns naming each, publishes anyway and deletes nothing; siblings of other names are not named."""
    dest = str(tmp_path / name)
    publish_dir(dest, _fill(**{"model.pt": "v1"}))
    left = [dest + ".staging-dead0001", dest + ".old-dead0002"]
    for d in left:
        os.makedirs(d)
        write_text(os.path.join(d, "model.pt"), "kept")
    for other in (str(tmp_path / "other.staging-x"), dest + "2.staging-y", dest + "x.old-z"):
        os.makedirs(other)
    with pytest.warns(UserWarning, match="interrupted") as caught:
        publish_dir(("file://" if uri else "") + dest, _fill(**{"model.pt": "v2"}), marker="model.pt")
    (msg,) = [str(w.message) for w in caught if "interrupted" in str(w.message)]
    assert all(d in msg for d in left) and "other.staging" not in msg and "2.staging" not in msg and "x.old" not in msg
    assert _tree(dest) == {"model.pt": b"v2"}
    assert sorted(_leftovers(glob.escape(dest))) == sorted(left) and all(read_text(os.path.join(d, "model.pt")) == "kept" for d in left)


def test_publish_after_clean_publishes_warns_nothing(tmp_path):
    dest = str(tmp_path / "model")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        publish_dir(dest, _fill(**{"model.pt": "v1"}))
        with pytest.raises(KeyboardInterrupt):  # a failure the except clause sees cleans up after itself
            publish_dir(dest, lambda d: (_ for _ in ()).throw(KeyboardInterrupt()))
        publish_dir(dest, _fill(**{"model.pt": "v2"}))
    assert _tree(dest) == {"model.pt": b"v2"} and _leftovers(dest) == []

def test_local_copy_of_a_local_path_is_the_path(tmp_path):
    with local_copy("file://" + str(tmp_path)) as d:
        assert d == str(tmp_path)


# ----------------------------------------------------------------------------- S3 (moto server)
def _s3_tree(uri: str) -> dict[str, bytes]:
    import pyarrow.fs as pafs

    fs, root = storage.resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return {i.path[len(root) + 1:]: read_bytes(f"s3://{i.path}") for i in infos if i.type == pafs.FileType.File}


def test_s3_files_and_json(s3):
    _, bucket = s3
    write_bytes(f"{bucket}/files/a/x.bin", b"\x00abc")
    assert read_bytes(f"{bucket}/files/a/x.bin") == b"\x00abc"
    write_json(f"{bucket}/files/m.json", {"mse": np.float32(0.5), "psnr": math.inf})
    assert read_json(f"{bucket}/files/m.json") == {"mse": 0.5, "psnr": None}
    assert read_text(f"{bucket}/files/m.json").endswith("}\n")
    assert exists(f"{bucket}/files/m.json") and exists(f"{bucket}/files/a") and not exists(f"{bucket}/files/no")
    with pytest.raises(FileNotFoundError, match=f"no such file.*{bucket}/files/no.json"):
        read_bytes(f"{bucket}/files/no.json")
    assert read_json(f"{bucket}/files/no.json", default=None) is None


def test_s3_copy_dir_both_ways(s3, tmp_path):
    _, bucket = s3
    files = _make_src(tmp_path / "src")
    copy_dir(str(tmp_path / "src"), f"{bucket}/copy/m", ignore=("optimizer.pt",))
    want = {k.replace(os.sep, "/"): v for k, v in files.items() if k != "optimizer.pt"}
    assert _s3_tree(f"{bucket}/copy/m") == want
    with local_copy(f"{bucket}/copy/m") as d:
        assert {k.replace(os.sep, "/"): v for k, v in _tree(d).items()} == want
        kept = d
    assert not os.path.exists(kept)  # the temporary copy is gone
    with local_copy(f"{bucket}/copy/m", ignore=("model.pt",)) as d:  # only what the reader needs
        assert "model.pt" not in _tree(d) and set(_tree(d)) == {k.replace("/", os.sep) for k in want} - {"model.pt"}


def test_s3_publish_replaces_and_a_failed_one_keeps_the_old(s3):
    _, bucket = s3
    dest = f"{bucket}/pub/model"

    def version(v, extra=None):
        def fill(d):
            write_text(f"{d}/model.pt", v)
            write_text(f"{d}/sub/config.yaml", v)
            if extra:
                write_text(f"{d}/{extra}", v)
        return fill

    publish_dir(dest, version("v1", extra="stale.txt"), marker="model.pt")
    assert _s3_tree(dest) == {"model.pt": b"v1", "sub/config.yaml": b"v1", "stale.txt": b"v1"}
    publish_dir(dest, version("v2"), marker="model.pt")
    assert _s3_tree(dest) == {"model.pt": b"v2", "sub/config.yaml": b"v2"}

    def dies(d):
        version("v3")(d)
        raise RuntimeError("simulated failure after writing")

    with pytest.raises(RuntimeError, match="simulated"):
        publish_dir(dest, dies, marker="model.pt")
    assert _s3_tree(dest) == {"model.pt": b"v2", "sub/config.yaml": b"v2"}
    assert set(_s3_tree(f"{bucket}/pub")) == {"model/model.pt", "model/sub/config.yaml"}  # no staging left


def test_s3_publish_interrupted_while_copying_is_never_half_published(s3, monkeypatch):
    """The marker goes first out and last in: a copy that dies half-way leaves a directory without
    it (which readers refuse), and the complete new content stays under the staging prefix."""
    _, bucket = s3
    dest = f"{bucket}/halfway/ds"
    publish_dir(dest, _fill(**{"card.json": "old", "a": "old", "b": "old"}), marker="card.json")
    real_resolve, copied = storage.resolve, []

    class Dies:  # the destination filesystem, failing on its second copy
        def __init__(self, fs):
            self.fs = fs

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def copy_file(self, src, dst):
            if len(copied) == 1:
                raise OSError("connection lost")
            copied.append(dst.rsplit("/", 1)[1])
            self.fs.copy_file(src, dst)

    monkeypatch.setattr(storage, "resolve", lambda p: (lambda fs, r: (Dies(fs), r))(*real_resolve(p)))
    with pytest.raises(OSError, match="connection lost"):
        publish_dir(dest, _fill(**{"card.json": "new", "a": "new", "b": "new"}), marker="card.json")
    monkeypatch.undo()
    assert copied == ["a"]
    assert _s3_tree(dest) == {"a": b"new"}  # no card: not a published directory
    (staging,) = {k.split("/")[0] for k in _s3_tree(f"{bucket}/halfway") if ".staging-" in k}
    assert _s3_tree(f"{bucket}/halfway/{staging}") == {"card.json": b"new", "a": b"new", "b": b"new"}


def test_user_files_read_through_storage_accept_uris(tmp_path):
    """--config (train/evaluate/...), --space (tune) and the Serve config file are read through
    crnn.storage: a file:// URI works like a path, and a missing one is named."""
    from crnn.config import load_config
    from crnn.serve import load_serve_config
    from crnn.tune import load_space
    from tests.helpers import ROOT

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  epochs: 3\n")
    assert load_config("quick", yaml_path=f"file://{cfg_file}").train.epochs == 3
    with pytest.raises(FileNotFoundError, match="none.yaml"):
        load_config("quick", yaml_path=f"file://{tmp_path}/none.yaml")
    space_file = tmp_path / "s.yaml"
    space_file.write_text("train.lr: {loguniform: [0.0001, 0.003]}\n")
    assert list(load_space(f"file://{space_file}")) == ["train.lr"]
    serve_file = tmp_path / "serve.yaml"
    serve_file.write_text(open(os.path.join(ROOT, "serve.yaml")).read())
    assert load_serve_config(f"file://{serve_file}") == load_serve_config(os.path.join(ROOT, "serve.yaml"))


def test_location_spells_one_place_one_way(tmp_path, monkeypatch):
    from crnn.storage import location

    monkeypatch.chdir(tmp_path)
    r = str(tmp_path)
    for spelling in (f"{r}/x", f"{r}/x/", f"file://{r}/x", f"file://{r}/x/", f"{r}/./x", f"{r}/y/../x", "x", "./x/"):
        assert location(spelling) == f"{r}/x", spelling
    assert location("s3://bucket/runs/x/") == "s3://bucket/runs/x"            # a store: as given
    assert location("s3://bucket/runs/x") != location("s3://bucket/runs/y")
    assert location(f"/{r}/x") == f"{r}/x"                                     # a leading // is /


def test_inside_follows_symbolic_links_and_handles_the_root(tmp_path):
    from crnn.storage import inside

    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "elsewhere" / "sub").mkdir(parents=True)
    (tmp_path / "link-model").symlink_to(tmp_path / "run" / "model")
    (tmp_path / "link-run").symlink_to(tmp_path / "run")
    (tmp_path / "rd").mkdir()
    (tmp_path / "rd" / "linkA").symlink_to(tmp_path / "elsewhere" / "sub")
    run = str(tmp_path / "run")
    assert inside(str(tmp_path / "link-model"), run)                           # the source is a link
    assert inside(f"{run}/model", str(tmp_path / "link-run"))                 # --out is a link
    via = f"{tmp_path}/rd/linkA/../run/model"                # .. after a link: elsewhere/run (and rd/run as written)
    assert inside(via, str(tmp_path / "elsewhere" / "run")) and inside(via, str(tmp_path / "rd" / "run"))
    # a link inside the root to a model elsewhere: removed with the root (the second review's input)
    (tmp_path / "src" / "model").mkdir(parents=True)
    (tmp_path / "run" / "start").symlink_to(tmp_path / "src" / "model")
    assert inside(f"{run}/start", run) and not inside(str(tmp_path / "src" / "model"), run)
    assert inside(f"{tmp_path}/not-yet/model", f"{tmp_path}/not-yet")          # parts that do not exist yet
    assert inside("/anything", "/") and inside("/anything", "file:///")        # the root holds everything
    assert not inside(f"{tmp_path}/runs-other/model", run)                     # a sibling prefix is not inside
    assert inside("s3://b/run/model", "s3://b/run/") and not inside("s3://b/run2", "s3://b/run")

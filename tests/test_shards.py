"""The shard format contract (crnn.shards) and the Ray Data generation job (crnn.generate).

Splits and seeds, an exact round trip generate -> Parquet -> read_numpy / read_ray, determinism,
errors that name the bad file, and atomic publishing. Uses the session ``tiny_dataset`` (80 series,
seed 7, 32 per shard) wherever possible; anything that damages a dataset works on a copy. Every test
that touches Ray asks for ``ray_local`` (else Ray Data would start, or join, some other Ray).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crnn import pine
from crnn.generate import generate, generate_rows
from crnn.shardcheck import CARD_NAME, ShardError, check_shard_schema
from crnn.shards import (
    PAPER_TEST_SERIES, list_shards, publish, read_card, read_numpy, read_ray, series_seed, split_counts,
    same_name, split_for_id, split_for_index, torch_frames, validate,
)

TINY_N, TINY_SEED = 80, 7          # what conftest.tiny_dataset generates
SHAPE = (len(pine.DEFAULT_AGES), 32, 16, 3)


def _copy(src: str, tmp_path) -> str:
    """A private copy of a dataset (never damage the session fixture)."""
    dst = str(tmp_path / "pines")
    shutil.copytree(src, dst)
    return dst


def _by_id(data: dict) -> dict[str, int]:
    return {sid: i for i, sid in enumerate(data["series_id"])}


# ----------------------------------------------------------------------------- splits and seeds
def test_paper_split_has_384_test_series():
    counts = split_counts(3847)
    assert counts["test"] == PAPER_TEST_SERIES == 384
    assert sum(counts.values()) == 3847
    by_index = [split_for_index(i) for i in range(3847)]
    assert {s: by_index.count(s) for s in ("train", "val", "test")} == counts


def test_splits_stable_when_dataset_grows():
    small = [split_for_index(i) for i in range(3847)]
    big = [split_for_index(i) for i in range(5000)]
    assert big[:3847] == small
    assert split_counts(5000)["test"] == 384          # the test set does not grow with N
    assert "test" not in big[3847:]
    assert split_counts(5000)["val"] > split_counts(3847)["val"]
    with pytest.raises(ValueError):
        split_for_index(-1)


def test_split_for_id_stable_and_proportional():
    ids = [f"tree-{i}" for i in range(12)]
    # Pinned: a hash change would silently move ingested series between train and test.
    assert [split_for_id(s) for s in ids] == [
        "train", "train", "test", "test", "test", "train", "train", "train", "test", "train",
        "train", "train"]
    assert [split_for_id(s) for s in reversed(ids)] == [split_for_id(s) for s in ids][::-1]
    many = [split_for_id(f"x{i}") for i in range(10_000)]
    assert 800 < many.count("test") < 1200 and 800 < many.count("val") < 1200


@pytest.mark.parametrize("name", ["Kiefer-\u00f6", "\u00c5ngstr\u00f6m-7", "pin\u0303o-\u00e9t\u00e9", "\ud55c\uad6d-\uc18c\ub098\ubb34",
                                  "caf\u00e9-01", "\u1e9b\u0323-odd"])
def test_split_for_id_is_the_same_for_nfc_and_nfd_names(name):
    """A series folder named on Linux (NFC, composed) and the same folder read back from a macOS disk
    (NFD, decomposed) are one name and must land in one split: the raw bytes were hashed."""
    nfc, nfd = unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)
    assert nfc != nfd
    assert split_for_id(nfc) == split_for_id(nfd)
    assert same_name(nfd) == same_name(nfc) == nfc


def test_split_for_id_does_not_depend_on_the_unicode_form_across_many_names():
    names = [f"Kiefer-\u00f6-{i}" for i in range(200)] + [f"\u00e9pic\u00e9a-{i}" for i in range(200)]
    moved = [n for n in names if split_for_id(n) != split_for_id(unicodedata.normalize("NFD", n))]
    assert moved == []


def test_series_seed_deterministic_and_distinct():
    seeds = [series_seed(0, i) for i in range(5000)]
    assert seeds == [series_seed(0, i) for i in range(5000)]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**63 for s in seeds)
    assert not set(seeds) & {series_seed(1, i) for i in range(5000)}
    # Pinned: changing the derivation would change every generated dataset.
    assert series_seed(0, 0) == 6375474604893067239
    assert series_seed(7, 0) == 4474668370826950401


# ----------------------------------------------------------------------------- round trip
def test_round_trip_equals_generate_rows(tiny_dataset):
    data = read_numpy(tiny_dataset)
    assert len(data["series_id"]) == TINY_N
    pos = _by_id(data)
    rows = generate_rows(range(TINY_N), base_seed=TINY_SEED, ages=pine.DEFAULT_AGES, height=32, width=16)
    assert sorted(pos) == [r["series_id"] for r in rows]
    assert data["frames"].dtype == np.uint8 and data["frames"].shape == (TINY_N,) + SHAPE
    assert data["ages"].dtype == np.int32 and data["ages"].shape == (TINY_N, len(pine.DEFAULT_AGES))
    for idx, r in enumerate(rows):
        i = pos[r["series_id"]]
        np.testing.assert_array_equal(data["frames"][i], r["frames"])
        assert data["ages"][i].tolist() == list(pine.DEFAULT_AGES) == r["ages"]
        assert int(data["seed"][i]) == r["seed"] == series_seed(TINY_SEED, idx)
        assert data["split"][i] == r["split"] == split_for_index(idx)
        for name in pine.PARAM_NAMES:
            assert data[name][i] == r["params"][name], name
        assert (data["height"][i], data["width"][i], data["channels"][i]) == (32, 16, 3)


def test_shard_columns_have_contract_types(tiny_dataset):
    shards = list_shards(tiny_dataset)
    # 80 series, shard_size 32: shards of 32 consecutive series, the last one shorter.
    assert [pq.ParquetFile(s).metadata.num_rows for s in shards] == [32, 32, 16]
    assert [pq.read_table(s, columns=["series_id"])["series_id"][0].as_py() for s in shards] == [
        "pine-000000", "pine-000032", "pine-000064"]
    for shard in shards:
        schema = pq.read_schema(shard)
        assert schema.field("series_id").type == pa.string()
        assert schema.field("seed").type == pa.int64()
        assert schema.field("split").type == pa.string()
        for c in ("height", "width", "channels"):
            assert schema.field(c).type == pa.int32()
        for name in pine.PARAM_NAMES:
            assert schema.field(name).type == pa.float64(), name
        assert check_shard_schema(schema, shard) == SHAPE
        for c, elem in (("frames", pa.uint8()), ("ages", pa.int32())):
            t = schema.field(c).type
            storage = t.storage_type if isinstance(t, pa.ExtensionType) else t
            assert pa.types.is_large_list(storage) and storage.value_type == elem, (c, t)


def test_dataset_card(tiny_dataset):
    card = read_card(tiny_dataset)
    assert card["num_series"] == TINY_N
    assert card["splits"] == split_counts(TINY_N) == {"train": 68, "val": 4, "test": 8}
    assert card["generator_version"] == pine.GENERATOR_VERSION
    assert card["base_seed"] == TINY_SEED
    assert card["ages"] == list(pine.DEFAULT_AGES)
    assert (card["height"], card["width"], card["channels"]) == (32, 16, 3)
    assert card["mirror_axis"] == 8.0                                    # the trunk's column
    cols = card["columns"]
    for c in ("series_id", "seed", "split", "ages", "frames", *pine.PARAM_NAMES):
        assert c in cols, c
    assert cols["frames"].startswith("tensor uint8") and cols["seed"] == "int64"
    assert [p["name"] for p in card["params"]] == list(pine.PARAM_NAMES)
    for p, spec in zip(card["params"], pine.PARAMS):
        assert (p["low"], p["high"], p["default"]) == (spec.low, spec.high, spec.default)
    # Shard list: every file exists, row counts are the files' and sum to num_series.
    assert sum(s["rows"] for s in card["shards"]) == TINY_N
    on_disk = sorted(os.path.basename(f) for f in list_shards(tiny_dataset))
    assert sorted(s["file"] for s in card["shards"]) == on_disk
    for s in card["shards"]:
        assert pq.ParquetFile(os.path.join(tiny_dataset, s["file"])).metadata.num_rows == s["rows"]
    assert validate(tiny_dataset) == card


def test_read_numpy_split_and_columns(tiny_dataset):
    test = read_numpy(tiny_dataset, split="test", columns=["series_id", "frames"])
    assert set(test) == {"series_id", "frames"}
    assert sorted(test["series_id"]) == [f"pine-{i:06d}" for i in range(9, TINY_N, 10)]
    both = read_numpy(tiny_dataset, split=["val", "test"], columns=["split"])
    assert sorted(both["split"]) == ["test"] * 8 + ["val"] * 4


# ----------------------------------------------------------------------------- Ray Data reading
def test_read_ray_train_frames_match_read_numpy(ray_local, tiny_dataset):
    import torch

    card = read_card(tiny_dataset)
    ds = read_ray(tiny_dataset, split="train", columns=["frames"])
    batches = list(ds.iter_torch_batches(batch_size=16, collate_fn=lambda b: torch_frames(b["frames"])))
    x = torch.cat(batches)
    assert x.dtype == torch.float32 and x.shape == (card["splits"]["train"], 5, 3, 32, 16)
    assert all(b.dim() == 5 and b.shape[1:] == (5, 3, 32, 16) for b in batches)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.5
    # Same values as read_numpy (as a multiset of series: Ray may reorder blocks).
    got = (x.permute(0, 1, 3, 4, 2) * 255.0).round().to(torch.uint8).numpy()
    want = read_numpy(tiny_dataset, split="train", columns=["frames"])["frames"]
    assert sorted(f.tobytes() for f in got) == sorted(f.tobytes() for f in want)


def test_read_ray_by_id_matches_read_numpy(ray_local, tiny_dataset):
    rows = read_ray(tiny_dataset, split=["val", "test"], columns=["series_id", "frames"]).take_all()
    want = read_numpy(tiny_dataset, split=["val", "test"], columns=["series_id", "frames"])
    pos = _by_id(want)
    assert sorted(r["series_id"] for r in rows) == sorted(pos)
    for r in rows:
        assert set(r) == {"series_id", "frames"}
        np.testing.assert_array_equal(r["frames"], want["frames"][pos[r["series_id"]]])
    with pytest.raises(ValueError, match="unknown split"):
        read_ray(tiny_dataset, split="training")


# ----------------------------------------------------------------------------- determinism
def test_generation_deterministic(ray_local, tiny_dataset, tmp_path):
    a, b, c = (str(tmp_path / n) for n in ("a", "b", "c"))
    generate(a, num_series=10, seed=TINY_SEED, shard_size=4)
    generate(b, num_series=10, seed=TINY_SEED, shard_size=4)
    generate(c, num_series=10, seed=TINY_SEED + 1, shard_size=4)
    fa, fb, fc = (read_numpy(p, columns=["series_id", "frames"]) for p in (a, b, c))
    order = [np.argsort(f["series_id"]) for f in (fa, fb, fc)]
    frames_a, frames_b, frames_c = (f["frames"][o] for f, o in zip((fa, fb, fc), order))
    assert frames_a.tobytes() == frames_b.tobytes()
    # The whole published dataset is byte-identical: same shard names, same files, same card.
    files = sorted(os.listdir(a))
    assert files == sorted(os.listdir(b)) and CARD_NAME in files
    for name in files:
        with open(os.path.join(a, name), "rb") as fa_, open(os.path.join(b, name), "rb") as fb_:
            assert fa_.read() == fb_.read(), name
    assert frames_a.shape == frames_c.shape and (frames_a != frames_c).any(axis=(1, 2, 3, 4)).all()
    # Series do not depend on N or the sharding: the first 10 of the 80-series fixture are the same.
    tiny = read_numpy(tiny_dataset, columns=["series_id", "frames"])
    pos = _by_id(tiny)
    for sid, fr in zip(fa["series_id"][order[0]], frames_a):
        np.testing.assert_array_equal(tiny["frames"][pos[sid]], fr)


# ----------------------------------------------------------------------------- errors
@pytest.fixture
def broken_copy(ray_local, tiny_dataset, tmp_path):
    """A copy to damage; with the module's Ray up, as read_ray must never start or join another."""
    return _copy(tiny_dataset, tmp_path)


def _all_readers_fail(path: str, name: str, match: str = "") -> None:
    for read in (validate, read_numpy, lambda p: read_ray(p, split="train")):
        with pytest.raises(ShardError) as e:
            read(path)
        assert name in str(e.value), (read, str(e.value))
        assert match in str(e.value), (read, str(e.value))


def test_truncated_shard_named(broken_copy):
    shard = list_shards(broken_copy)[1]
    size = os.path.getsize(shard)
    with open(shard, "r+b") as f:
        f.truncate(size // 2)
    _all_readers_fail(broken_copy, os.path.basename(shard))


def test_garbage_parquet_named(broken_copy):
    bad = os.path.join(broken_copy, "shard-99999.parquet")
    with open(bad, "wb") as f:
        f.write(b"this is not a parquet file" * 40)
    _all_readers_fail(broken_copy, "shard-99999.parquet")


def test_foreign_schema_named(broken_copy):
    foreign = pa.table({"a": [1, 2], "b": ["x", "y"]})
    pq.write_table(foreign, os.path.join(broken_copy, "shard-00000-9.parquet"))
    _all_readers_fail(broken_copy, "shard-00000-9.parquet", "schema mismatch")


def test_frames_shape_mismatch_named(ray_local, broken_copy):
    from crnn.shards import rows_to_batch
    from ray.data.block import BlockAccessor

    # A real shard (the writer's own encoding) of 16x8 series dropped among the 32x16 ones.
    rows = generate_rows([0, 1], base_seed=1, ages=pine.DEFAULT_AGES, height=16, width=8)
    table = BlockAccessor.batch_to_block(rows_to_batch(rows, pine.PARAM_NAMES))
    pq.write_table(table, os.path.join(broken_copy, "shard-00099-0.parquet"))
    _all_readers_fail(broken_copy, "shard-00099-0.parquet", "frames shape")


def test_card_disagreeing_with_shards_named(broken_copy):
    card_path = os.path.join(broken_copy, CARD_NAME)
    with open(card_path) as f:
        card = json.load(f)
    card["height"] = 64
    with open(card_path, "w") as f:
        json.dump(card, f)
    _all_readers_fail(broken_copy, os.path.basename(list_shards(broken_copy)[0]), "frames shape")


def test_directory_without_card_refused(broken_copy, tmp_path):
    os.remove(os.path.join(broken_copy, CARD_NAME))
    _all_readers_fail(broken_copy, CARD_NAME)
    empty = tmp_path / "empty"
    empty.mkdir()
    _all_readers_fail(str(empty), CARD_NAME)
    with pytest.raises(ShardError, match="no such dataset"):
        list_shards(str(tmp_path / "missing"))


# ----------------------------------------------------------------------------- writer variants
def _storage(col: pa.ChunkedArray) -> pa.Array:
    arr = col.combine_chunks()
    return arr.storage if isinstance(arr, pa.ExtensionArray) else arr


def _retype(name: str, values: pa.Array):
    """A table transform replacing column ``name`` by ``values(old column)`` (a plain field: no
    tensor metadata), as another Parquet writer would have stored it."""
    def fn(table: pa.Table) -> pa.Table:
        new = values(table.column(name))
        return table.set_column(table.schema.get_field_index(name), pa.field(name, new.type), new)
    return fn


def _rewrite_shards(path: str, fn, which=(0,)) -> list[str]:
    """Rewrite some shards of ``path`` through ``fn(table)``; returns their paths."""
    shards = [list_shards(path)[i] for i in which]
    for shard in shards:
        pq.write_table(fn(pq.read_table(shard)), shard)
    return shards


def _plain_list(elem, nested=False):
    def values(col):
        rows = [np.asarray(v, dtype=np.int64).tolist() for v in _storage(col).to_pylist()]
        if nested:  # one list level per dimension
            rows = np.asarray(rows).reshape((len(rows),) + SHAPE).tolist()
            return pa.array(rows, pa.list_(pa.list_(pa.list_(pa.list_(elem)))))
        return pa.array(rows, pa.list_(elem))
    return values


VARIANTS = {
    # newer pyarrow writers: string_view / large_string for the string columns
    "split_string_view": _retype("split", lambda c: c.cast(pa.string_view())),
    "series_id_large_string": _retype("series_id", lambda c: c.cast(pa.large_string())),
    # a plain writer: integer tensors as list<int> without Ray's tensor type
    "ages_list_int32": _retype("ages", _plain_list(pa.int32())),
    "ages_list_int64": _retype("ages", _plain_list(pa.int64())),
    "ages_large_list_int16": _retype("ages", lambda c: _plain_list(pa.int16())(c).cast(pa.large_list(pa.int16()))),
    "ages_fixed_size_list": _retype("ages", lambda c: _plain_list(pa.int32())(c).cast(pa.list_(pa.int32(), 5))),
    "frames_nested_lists": _retype("frames", _plain_list(pa.uint8(), nested=True)),
    "frames_flat_list": _retype("frames", _plain_list(pa.uint8())),
    # other integer widths
    "seed_int32_height_int64": lambda t: _retype("height", lambda c: c.cast(pa.int64()))(
        _retype("seed", lambda c: c.cast(pa.int32()))(t)),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_writer_variants_read_like_the_contract(variant, broken_copy):
    """Shards in an accepted variant layout (two of three shards rewritten, so the dataset mixes
    layouts) read back, through every reader, with the contract's types and the original values."""
    fn = VARIANTS[variant]
    if variant.startswith("seed"):  # seeds of generated series need 63 bits: use small ones
        def fn(t, _fn=fn):
            t = t.set_column(t.schema.get_field_index("seed"), "seed", pa.array(range(len(t)), pa.int64()))
            return _fn(t)
    want = read_numpy(broken_copy, split="test")
    _rewrite_shards(broken_copy, fn, which=(0, 2))
    assert validate(broken_copy)["num_series"] == TINY_N
    got = read_numpy(broken_copy, split="test")
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        if k != "seed":
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    rows = read_ray(broken_copy, split=["val", "test"], columns=["series_id", "ages", "frames"]).take_all()
    ref = read_numpy(broken_copy, split=["val", "test"], columns=["series_id", "ages", "frames"])
    pos = _by_id(ref)
    assert sorted(r["series_id"] for r in rows) == sorted(pos) and len(rows) == 12
    for r in rows:
        assert set(r) == {"series_id", "ages", "frames"}
        assert r["frames"].dtype == np.uint8 and r["ages"].dtype == np.int32
        np.testing.assert_array_equal(r["frames"], ref["frames"][pos[r["series_id"]]])
        np.testing.assert_array_equal(r["ages"], ref["ages"][pos[r["series_id"]]])


BAD_COLUMNS = {
    "split": (_retype("split", lambda c: pa.array([1] * len(c), pa.int64())), "expected string"),
    "seed": (_retype("seed", lambda c: c.cast(pa.string())), "expected int64"),
    "height": (_retype("height", lambda c: c.cast(pa.float64())), "expected int32"),
    "ages": (_retype("ages", lambda c: pa.array([[1.5] * 5] * len(c), pa.list_(pa.float64()))), "tensor of int32"),
    "frames": (_retype("frames", lambda c: _plain_list(pa.int16())(c)), "expected uint8"),
    "ages ": (_retype("ages", lambda c: pa.array([[[10]] * 5] * len(c), pa.list_(pa.list_(pa.int32())))),
              "2-level list"),
}


@pytest.mark.parametrize("column", sorted(BAD_COLUMNS))
def test_wrong_column_type_named_with_file_and_column(column, broken_copy):
    fn, match = BAD_COLUMNS[column]
    (shard,) = _rewrite_shards(broken_copy, fn, which=(1,))
    _all_readers_fail(broken_copy, os.path.basename(shard), f"column {column.strip()!r}")
    _all_readers_fail(broken_copy, os.path.basename(shard), match)


def test_plain_list_of_wrong_length_named_on_read(broken_copy):
    """Row lengths of a plain list are only known on reading: the error names file and column."""
    (shard,) = _rewrite_shards(broken_copy, _retype("ages", lambda c: pa.array([[10, 15, 20, 25]] * len(c),
                                                                               pa.list_(pa.int32()))))
    validate(broken_copy)  # footers alone cannot tell
    with pytest.raises(ShardError, match=rf"{os.path.basename(shard)}: column 'ages': 4 values .* needs 5"):
        read_numpy(broken_copy)


def test_int_cast_that_overflows_is_named(broken_copy):
    (shard,) = _rewrite_shards(broken_copy, _retype("height", lambda c: pa.array([2**40] * len(c), pa.int64())))
    # the footer's statistics tell first; without them, the cast on read names it
    with pytest.raises(ShardError, match=rf"{os.path.basename(shard)}: column 'height' has values 1099511627776"):
        read_numpy(broken_copy)
    pq.write_table(pq.read_table(shard), shard, write_statistics=False)
    with pytest.raises(ShardError, match=rf"{os.path.basename(shard)}: column 'height' cannot be read as int32"):
        read_numpy(broken_copy)


# ----------------------------------------------------------------------------- atomic publish
def _leftovers(out: str) -> list[str]:
    return glob.glob(out + ".staging-*") + glob.glob(out + ".old-*")


def test_failed_publish_keeps_old_dataset(tiny_dataset, tmp_path):
    out = _copy(tiny_dataset, tmp_path)
    card = read_card(out)
    before = read_numpy(out, columns=["series_id", "frames"])
    listing = sorted(os.listdir(out))

    def half_written(d):  # writes one shard, then dies (e.g. a worker crash)
        shutil.copy(list_shards(tiny_dataset)[0], d)
        raise RuntimeError("simulated worker failure")

    def wrong_count(d):   # completes, but with fewer rows than the card promises
        shutil.copy(list_shards(tiny_dataset)[0], d)

    with pytest.raises(RuntimeError, match="simulated"):
        publish(half_written, out, card, overwrite=True)
    with pytest.raises(RuntimeError, match="expected 80"):
        publish(wrong_count, out, card, overwrite=True)
    assert _leftovers(out) == []
    assert sorted(os.listdir(out)) == listing
    assert validate(out) == card
    after = read_numpy(out, columns=["series_id", "frames"])
    assert list(after["series_id"]) == list(before["series_id"])
    assert after["frames"].tobytes() == before["frames"].tobytes()


def test_publish_overwrite_replaces_and_refuses_without_flag(tiny_dataset, tmp_path):
    out = _copy(tiny_dataset, tmp_path)
    card = read_card(out)
    with pytest.raises(FileExistsError) as e:
        publish(lambda d: None, out, card)
    assert out in str(e.value)
    first = list_shards(tiny_dataset)[0]
    rows = pq.ParquetFile(first).metadata.num_rows
    in_first = pq.read_table(first, columns=["split"]).column("split").to_pylist()
    small = {**card, "num_series": rows, "splits": {k: in_first.count(k) for k in ("train", "val", "test")}}
    publish(lambda d: shutil.copy(first, d), out, small, overwrite=True)
    assert read_card(out)["num_series"] == rows
    assert [os.path.basename(f) for f in list_shards(out)] == [os.path.basename(first)]
    assert _leftovers(out) == []


def test_generate_refuses_existing_without_overwrite(ray_local, tiny_dataset):
    with pytest.raises(FileExistsError, match="pines"):
        generate(tiny_dataset, num_series=2, seed=0)
    with pytest.raises(ValueError):
        generate(tiny_dataset + "-x", num_series=0)


def test_generate_job_writes_preview(ray_local, tmp_path, capsys):
    from PIL import Image

    from jobs import generate as job

    out, png = str(tmp_path / "job"), str(tmp_path / "preview.png")
    assert job.main(["--num-series", "4", "--seed", "3", "--shard-size", "2", "--out", out,
                     "--preview", png]) == 0
    assert "wrote 4 series" in capsys.readouterr().out
    assert read_card(out)["num_series"] == 4 and len(read_card(out)["shards"]) == 2
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 16 and im.height > 32


# ----------------------------------------------------------------------------- the card's shard list
def test_missing_stray_or_resized_shard_named(broken_copy, tiny_dataset, tmp_path):
    """The card lists every shard with its rows: an incomplete copy (a listed shard missing) read as a
    smaller dataset, and a stray copy of a shard was read twice; now every reader names the file."""
    shards = list_shards(broken_copy)
    os.remove(shards[1])
    _all_readers_fail(broken_copy, os.path.basename(shards[1]), "listed in dataset.json but missing")

    stray = _copy(tiny_dataset, tmp_path / "stray")
    shutil.copy(list_shards(stray)[0], os.path.join(stray, "shard-00000-0 (copy).parquet"))
    _all_readers_fail(stray, "shard-00000-0 (copy).parquet", "not listed in dataset.json")

    resized = _copy(tiny_dataset, tmp_path / "resized")
    first = list_shards(resized)[0]
    pq.write_table(pq.read_table(first).slice(0, 3), first)
    _all_readers_fail(resized, os.path.basename(first), "3 rows, but dataset.json lists")


def test_nulls_inside_plain_lists_named(broken_copy):
    """A plain-list ``ages`` with a null element was read as -2147483648 (null -> NaN -> int32)."""
    def with_null(col):
        rows = [np.asarray(v).tolist() for v in _storage(col).to_pylist()]
        rows[0][1] = None
        return pa.array(rows, pa.list_(pa.int32()))

    (shard,) = _rewrite_shards(broken_copy, _retype("ages", with_null))
    msg = f"{os.path.basename(shard)}: column 'ages' has 1 null values inside its lists"
    with pytest.raises(ShardError, match=msg):
        read_numpy(broken_copy)
    with pytest.raises(Exception, match=msg):  # raised in a Ray Data task, which wraps it
        read_ray(broken_copy, split=["train", "val", "test"]).take_all()


def test_card_that_is_not_an_object_named(broken_copy):
    with open(os.path.join(broken_copy, CARD_NAME), "w") as f:
        f.write("[]")
    _all_readers_fail(broken_copy, CARD_NAME, "not a dataset card")


# ----------------------------------------------------------------------------- values vs the card
# (no Ray here: validate, read_numpy, and the Ray Data path's per-shard function called directly)
@pytest.fixture
def plain_copy(tiny_dataset, tmp_path):
    return _copy(tiny_dataset, tmp_path)


def _ray_path_read(path: str, split=None):
    """What each Ray Data task of read_ray runs for shards in a variant layout (crnn.shards._read_shards)."""
    from crnn.shards import _read_shards
    from crnn.storage import resolve

    card = read_card(path)
    fs, _ = resolve(path)
    return _read_shards({"path": list_shards(path)}, fs=fs, frames_shape=SHAPE, splits=split,
                        columns=None, read_cols=["series_id"], card_ages=card["ages"])


def _set_values(name: str, change):
    """Replace column ``name`` by ``change(list of its values)`` (a plain field of the same type family)."""
    def fn(table: pa.Table) -> pa.Table:
        col = table.column(name)
        values = change(_storage(col).to_pylist())
        typ = pa.list_(pa.int32()) if name == "ages" else pa.string() if name == "split" else col.type
        new = pa.array(values, typ)
        return table.set_column(table.schema.get_field_index(name), pa.field(name, new.type), new)
    return fn


def _first(value):
    def change(values):
        return [value] + values[1:]
    return change


def _readers_fail(path, name, match, footer=True):
    """read_numpy and the Ray path's per-shard read name file and column; validate too when the
    footer's statistics can tell."""
    readers = [read_numpy, _ray_path_read] + ([validate] if footer else [])
    for read in readers:
        with pytest.raises(ShardError) as e:
            read(path)
        assert name in str(e.value) and match in str(e.value), (read, str(e.value))
    if not footer:
        validate(path)


@pytest.mark.parametrize("value,footer", [(None, True), ("TEST", True), ("", True), ("trainx", False)])
def test_split_value_outside_the_splits_named(value, footer, plain_copy):
    """A series whose split is null or not train/val/test was dropped silently by every split filter."""
    (shard,) = _rewrite_shards(plain_copy, _set_values("split", _first(value)), which=(1,))
    _readers_fail(plain_copy, os.path.basename(shard), "column 'split'", footer=footer)
    with pytest.raises(ShardError, match="column 'split'"):
        read_numpy(plain_copy, split="train")


def test_dictionary_encoded_split_is_read_as_strings(plain_copy):
    """pandas writes a ``category`` column dictionary-encoded: accepted (cast), like string_view."""
    want = read_numpy(plain_copy, split="val")
    _rewrite_shards(plain_copy, _retype("split", lambda c: c.combine_chunks().dictionary_encode()), which=(0, 2))
    assert pa.types.is_dictionary(pq.ParquetFile(list_shards(plain_copy)[0]).schema_arrow.field("split").type)
    validate(plain_copy)
    got = read_numpy(plain_copy, split="val")
    assert list(got["series_id"]) == list(want["series_id"]) and got["split"].tolist() == ["val"] * 4
    np.testing.assert_array_equal(got["frames"], want["frames"])
    assert sorted(_ray_path_read(plain_copy, split=["val"])["series_id"]) == sorted(want["series_id"])


@pytest.mark.parametrize("ages,footer", [([10, 15, 20, 25, 35], True), ([5, 15, 20, 25, 30], True),
                                         ([15, 10, 20, 25, 30], False), ([10, 15, 20, 25, 25], False)])
def test_ages_column_disagreeing_with_the_card_named(ages, footer, plain_copy):
    (shard,) = _rewrite_shards(plain_copy, _set_values("ages", _first(ages)), which=(2,))
    _readers_fail(plain_copy, os.path.basename(shard), "column 'ages'", footer=footer)
    if not footer:
        with pytest.raises(ShardError, match=rf"column 'ages' is \[{ages[0]}, .* in row 0 .* says the ages are"):
            read_numpy(plain_copy, columns=["frames"])  # checked even when ages are not asked for


@pytest.mark.parametrize("column,value", [("height", 64), ("width", 8), ("channels", 1), ("channels", None)])
def test_size_columns_disagreeing_with_the_frames_named(column, value, plain_copy):
    (shard,) = _rewrite_shards(plain_copy, _set_values(column, _first(value)), which=(0,))
    _readers_fail(plain_copy, os.path.basename(shard), f"column {column!r}")


CARD_MISTAKES = {
    "num_series_str": ("num_series", "300", "field 'num_series' is '300'; expected an integer"),
    "num_series_negative": ("num_series", -1, "field 'num_series' is -1"),
    "ages_str": ("ages", "10,15,20,25,30", "field 'ages' is '10,15,20,25,30'; expected a list of integer"),
    "ages_floats": ("ages", [10.0, 15, 20, 25, 30], "field 'ages'"),
    "ages_repeated": ("ages", [10, 15, 15, 25, 30], "an age appears twice"),
    "height_str": ("height", "32", "field 'height' is '32'; expected an integer >= 1"),
    "channels_bool": ("channels", True, "field 'channels' is True"),
    "splits_list": ("splits", ["train", "val"], "field 'splits' is ['train', 'val']"),
    "splits_str_count": ("splits", {"train": "68", "val": 4, "test": 8}, "field 'splits'"),
    "splits_unknown": ("splits", {"train": 68, "val": 4, "TEST": 8}, "unknown splits ['TEST']"),
    "splits_sum": ("splits", {"train": 60, "val": 4, "test": 8}, "counts 72 series"),
    "shards_not_list": ("shards", "shard-00000.parquet", "field 'shards' is not a list"),
    "shards_rows_sum": ("shards", [{"file": "a.parquet", "rows": 3}], "lists 3 rows but num_series is 80"),
    "params_names": ("params", [{"low": 1}], "field 'params'"),
}


@pytest.mark.parametrize("case", sorted(CARD_MISTAKES) + ["no_shards", "no_ages"])
def test_card_fields_type_checked_and_named(case, plain_copy):
    card_path = os.path.join(plain_copy, CARD_NAME)
    with open(card_path) as f:
        card = json.load(f)
    if case.startswith("no_"):
        field = case[3:]
        del card[field]
        match = f"field {field!r} is missing"
    else:
        field, value, match = CARD_MISTAKES[case]
        card[field] = value
    with open(card_path, "w") as f:
        json.dump(card, f)
    for read in (read_card, validate, read_numpy):
        with pytest.raises(ShardError) as e:
            read(plain_copy)
        assert str(e.value).startswith(f"{card_path}: ") and match in str(e.value), str(e.value)


def test_split_counts_disagreeing_with_the_card_named(plain_copy):
    card_path = os.path.join(plain_copy, CARD_NAME)
    with open(card_path) as f:
        card = json.load(f)
    card["splits"] = {"train": 67, "val": 5, "test": 8}  # the right total, the wrong split
    with open(card_path, "w") as f:
        json.dump(card, f)
    validate(plain_copy)  # footers cannot count
    with pytest.raises(ShardError, match=rf"{card_path}: field 'splits' says .* but the shards' column 'split' holds"):
        read_numpy(plain_copy, split="test")


# ----------------------------------------------------------------------------- real-valued ages
# A regular dataset whose card says "ages_dtype": "float32" (e.g. forecasts at fractional target
# ages, crnn.predict): card ages any finite strictly increasing numbers, the shards' ``ages`` float32
# equal to them within float32 precision. Written here by plain pyarrow (no Ray: unit tests); the
# Ray-written (tensor column) case is tests/test_predict.py's fractional target ages output.
FRAC_AGES = [0.1, 2.7, 22.5]  # 0.1 and 2.7 are not exact in float32: compared as the shards store them


def _plain_dataset(path: str, card_ages, shard_ages=None, *, ages_dtype="float32", ages_type=pa.float32(),
                   n: int = 6) -> str:
    """A regular dataset of ``n`` series of 1x2x1 frames at ``shard_ages`` (default the card's),
    ``ages`` a plain ``list<ages_type>`` column, in two shards, published with a card of
    ``card_ages``/``ages_dtype`` (crnn.shards.base_card)."""
    from crnn.shards import base_card

    shard_ages = card_ages if shard_ages is None else shard_ages
    t = len(card_ages)
    rows = np.asarray(shard_ages).tolist()
    rows = rows if isinstance(rows[0], list) else [rows] * n

    def write(d):
        for k, part in enumerate((range(0, n // 2), range(n // 2, n))):
            m = len(part)
            table = pa.table({
                "series_id": [f"s{i}" for i in part], "seed": pa.array(list(part), pa.int64()),
                "split": ["train" if i % 3 else "test" for i in part],
                "ages": pa.array([rows[i] for i in part], pa.list_(ages_type)),
                "frames": pa.array([[i % 250] * (t * 2) for i in part], pa.list_(pa.uint8())),
                "height": pa.array([1] * m, pa.int32()), "width": pa.array([2] * m, pa.int32()),
                "channels": pa.array([1] * m, pa.int32()),
            })
            # the frames' shape where a Ray tensor column keeps it: the plain flat list is readable
            meta = {b"ARROW:extension:metadata": json.dumps([t, 1, 2, 1]).encode()}
            table = table.set_column(4, pa.field("frames", table.schema.field("frames").type, metadata=meta),
                                     table.column("frames"))
            pq.write_table(table, os.path.join(d, f"shard-{k:05d}.parquet"))

    card = base_card(num_series=n, ages=card_ages, height=1, width=2, channels=1, ages_dtype=ages_dtype,
                     splits={"train": sum(1 for i in range(n) if i % 3), "val": 0,
                             "test": sum(1 for i in range(n) if not i % 3)}, source="test_shards real ages")
    publish(write, path, card)
    return path


def _shard_path_read(path: str):
    """The Ray Data path's per-shard read (crnn.shards._read_shards, as read_ray runs it for plain lists)."""
    from crnn.shardcheck import ages_dtype, card_ages
    from crnn.shards import _read_shards
    from crnn.storage import resolve

    card = read_card(path)
    fs, _ = resolve(path)
    return _read_shards({"path": list_shards(path)}, fs=fs, frames_shape=(len(card["ages"]), 1, 2, 1), splits=None,
                        columns=None, read_cols=None, card_ages=card_ages(card), ages_dtype=ages_dtype(card))


def test_float_ages_round_trip_exactly_as_float32(tmp_path):
    path = _plain_dataset(str(tmp_path / "frac"), FRAC_AGES)
    card = read_card(path)
    assert card["ages"] == FRAC_AGES and card["ages_dtype"] == "float32"
    assert card["columns"]["ages"] == "tensor float32 (T,)"
    assert validate(path)["ages"] == FRAC_AGES
    for data in (read_numpy(path), _shard_path_read(path)):
        assert data["ages"].dtype == np.float32 and data["ages"].shape == (6, 3)
        assert np.array_equal(data["ages"], np.tile(np.float32(FRAC_AGES), (6, 1)))  # exact, not approximately
        assert data["frames"].shape == (6, 3, 1, 2, 1) and data["frames"][4].max() == 4
    assert read_numpy(path, split="test", columns=["ages"])["ages"].shape == (2, 3)


def test_int_ages_stay_int32_without_ages_dtype(tmp_path):
    path = _plain_dataset(str(tmp_path / "int"), [10, 15, 20], ages_dtype="int32", ages_type=pa.int32())
    card = read_card(path)
    assert "ages_dtype" not in card and card["ages"] == [10, 15, 20] and card["columns"]["ages"] == "tensor int32 (T,)"
    got = read_numpy(path)["ages"]
    assert got.dtype == np.int32 and (got == [10, 15, 20]).all()


def test_float_card_accepts_integer_shards_cast_to_float32(tmp_path):
    """Documented choice: a float32 card over integer ages (whole card ages) is read, as float32."""
    path = _plain_dataset(str(tmp_path / "f-int"), [10.0, 15.0, 20.0], ages_type=pa.int32())
    validate(path)
    for data in (read_numpy(path), _shard_path_read(path)):
        assert data["ages"].dtype == np.float32 and (data["ages"] == [10.0, 15.0, 20.0]).all()


@pytest.mark.parametrize("case", ["int_card_float_shard", "float_card_int_shard_fractional", "one_row_differs",
                                  "row_off_by_float32_ulp", "nan_in_a_row"])
def test_ages_dtype_and_values_disagreeing_named(case, tmp_path):
    path = str(tmp_path / case)
    rows = np.tile(np.float32(FRAC_AGES), (6, 1))
    if case == "int_card_float_shard":  # whole ages on the card, floats in the shard: refused, not truncated
        _plain_dataset(path, [10, 15, 20], [10.0, 15.5, 20.0], ages_dtype="int32")
        match, readers = "column 'ages' has type list<", (validate, read_numpy)
    elif case == "float_card_int_shard_fractional":
        _plain_dataset(path, FRAC_AGES, [0, 3, 22], ages_type=pa.int32())
        match, readers = "column 'ages' has values 0..22", (validate, read_numpy)  # the footer tells
    else:
        r = 4
        if case == "one_row_differs":
            rows[r] = [0.1, 2.5, 22.5]
        elif case == "row_off_by_float32_ulp":
            rows[r, 1] = np.nextafter(rows[r, 1], np.float32(3))
        else:
            rows[r, 1] = np.nan
        _plain_dataset(path, FRAC_AGES, rows)
        match, readers = f"column 'ages' is [0.10000000149011612, {float(rows[r, 1])!r}", (read_numpy, _shard_path_read)
        if case != "nan_in_a_row":
            validate(path)  # within the card's range: only the values can tell
    shard = os.path.basename(list_shards(path)[1 if case not in ("int_card_float_shard",
                                                                 "float_card_int_shard_fractional") else 0])
    for read in readers:
        with pytest.raises(ShardError) as e:
            read(path)
        assert shard in str(e.value) and match in str(e.value), (read, str(e.value))
    if case == "int_card_float_shard":
        assert "float>; expected a tensor of int32" in str(e.value)
        assert '"ages_dtype": "float32"' in str(e.value)  # says how a card of fractional ages reads


FLOAT_CARD_MISTAKES = {
    "dtype_float16": ("float16", FRAC_AGES, "field 'ages_dtype' is 'float16'; expected one of ['float32', 'int32']"),
    "dtype_not_a_string": (32, FRAC_AGES, "field 'ages_dtype' is 32"),
    "nan": ("float32", [0.1, float("nan"), 22.5], "field 'ages' is [0.1, nan, 22.5]; every age must be a finite"),
    "inf": ("float32", [0.1, 2.7, float("inf")], "field 'ages' is [0.1, 2.7, inf]; every age must be a finite"),
    "beyond_float32": ("float32", [0.1, 2.7, 1e39], "field 'ages' is [0.1, 2.7, 1e+39]; every age must be a finite"),
    "repeated": ("float32", [0.1, 2.7, 2.7], "field 'ages' is [0.1, 2.7, 2.7]; expected strictly increasing"),
    "decreasing": ("float32", [0.1, 22.5, 2.7], "field 'ages' is [0.1, 22.5, 2.7]; expected strictly increasing"),
    "equal_as_float32": ("float32", [0.1, 1.00000001, 1.00000002], "expected strictly increasing ages (as float32"),
    "strings": ("float32", ["0.1", "2.7", "22.5"],
                "field 'ages' is ['0.1', '2.7', '22.5']; expected a list of numbers"),
    "empty": ("float32", [], "field 'ages' is []; expected a list of numbers"),
    "int_card_fractional": ("int32", FRAC_AGES, "expected a list of integer ages (fractional ages need"),
}


@pytest.mark.parametrize("case", sorted(FLOAT_CARD_MISTAKES))
def test_float_ages_card_fields_checked_and_named(case, tmp_path):
    path = _plain_dataset(str(tmp_path / "frac"), FRAC_AGES)
    card_path = os.path.join(path, CARD_NAME)
    with open(card_path) as f:
        card = json.load(f)
    card["ages_dtype"], card["ages"], match = FLOAT_CARD_MISTAKES[case]
    with open(card_path, "w") as f:
        json.dump(card, f)  # NaN/Infinity as JSON's usual extension: what json.loads reads back
    for read in (read_card, validate, read_numpy):
        with pytest.raises(ShardError) as e:
            read(path)
        assert str(e.value).startswith(f"{card_path}: ") and match in str(e.value), str(e.value)


def test_base_card_refuses_an_unknown_ages_dtype():
    from crnn.shards import base_card

    with pytest.raises(ValueError, match="ages_dtype='float64'"):
        base_card(num_series=1, ages=[1.5], height=1, width=1, splits={"train": 1}, source="x", ages_dtype="float64")

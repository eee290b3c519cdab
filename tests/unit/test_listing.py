"""Manifest shards: parallel listing by sub-prefix, sharded and S3 Inventory manifests, dedup."""

from __future__ import annotations

import bisect
import json
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from iqa_ray.errors import ConfigError
from iqa_ray.inputs import ids, prefixes, tables
from iqa_ray.inputs import shards as listing
from iqa_ray.inputs.config import InputConfig
from iqa_ray.schema import Col

NO_DONE = np.array([], dtype=np.int64)


def _tree(root: Path, n_dirs: int, per_dir: int, loose: int) -> list[str]:
    """Image files in sub-folders (two levels for half of them) plus loose top-level files."""
    uris = []
    for d in range(n_dirs):
        folder = root / f"d{d:02d}" / ("deep" if d % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_dir):
            (folder / f"{i:03d}.jpg").write_bytes(b"x")
            uris.append(f"file://{folder}/{i:03d}.jpg")
        (folder / "skip.txt").write_text("not an image")
    for i in range(loose):
        (root / f"top {i}.PNG").write_bytes(b"x")
        uris.append(f"file://{root}/top {i}.PNG")
    return sorted(uris)


def _read_shards(shards: listing.Shards) -> list[pa.Table]:
    return [pq.read_table(u.removeprefix("file://")) for u in shards.uris]


def _check_shards(shards: listing.Shards, expected: list[str]) -> None:
    """Every expected URI exactly once, each shard sorted by URI, counts and ids right."""
    tables = _read_shards(shards)
    got = [u for t in tables for u in t.column(Col.URI).to_pylist()]
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))
    for table, rows in zip(tables, shards.rows, strict=True):
        uris = table.column(Col.URI).to_pylist()
        assert uris == sorted(uris) and len(uris) == rows
        assert table.column(Col.IMAGE_ID).to_pylist() == [ids.image_id(u) for u in uris]
    assert shards.images == len(expected)


def test_prefix_units_explore_sub_prefixes(tmp_path: Path) -> None:
    expected = _tree(tmp_path, n_dirs=6, per_dir=3, loose=2)
    units = listing.plan_units(InputConfig(uri=str(tmp_path)), parallelism=4)
    kinds = [u.kind for u in units]
    # Six sub-prefixes in four-or-more groups listed by tasks; loose files listed by the driver.
    assert kinds.count("prefixes") >= 3 and kinds.count("uris") == 1
    cfg = InputConfig(uri=str(tmp_path))
    assert sorted(u for unit in units for u in listing.unit_uris(unit, cfg)) == expected
    # One wanted unit: the whole prefix in one recursive listing.
    assert listing.plan_units(cfg, parallelism=1) == [listing.Unit("prefixes", (f"file://{tmp_path}",))]


@pytest.mark.usefixtures("ray_local")
def test_parallel_listing_of_a_bucket(s3_bucket: tuple[str, dict], tmp_path: Path) -> None:
    import s3fs

    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    name = bucket.removeprefix("s3://")
    keys = [f"{name}/imgs/p{i % 5}/{'x/' if i % 3 else ''}{i:03d}.jpg" for i in range(40)]
    keys += [f"{name}/imgs/top.png", f"{name}/imgs/p1/notes.txt"]
    for key in keys:
        fs.pipe(key, b"x")
    expected = sorted(f"s3://{k}" for k in keys if not k.endswith(".txt"))
    cfg = InputConfig(uri=f"{bucket}/imgs", storage_options=options)
    units = listing.plan_units(cfg, parallelism=4)
    assert all(item.startswith("s3://") for unit in units for item in unit.items)
    shards = listing.build_shards(cfg, str(tmp_path / "m"), {}, NO_DONE, shard_rows=15,
                                  parallelism=4)
    _check_shards(shards, expected)
    assert sorted(listing.build_manifest(cfg).column(Col.URI).to_pylist()) == expected


@pytest.mark.usefixtures("ray_local")
def test_parallel_listing_into_several_shards(tmp_path: Path) -> None:
    expected = _tree(tmp_path / "images", n_dirs=6, per_dir=5, loose=3)
    cfg = InputConfig(uri=str(tmp_path / "images"))
    shards = listing.build_shards(cfg, str(tmp_path / "m"), {}, NO_DONE, shard_rows=10,
                                  parallelism=4)
    assert len(shards.uris) == 4  # ceil(33 / 10)
    _check_shards(shards, expected)
    assert shards.pending == shards.rows
    assert not (tmp_path / "m" / "_parts").exists()  # phase-1 parts are cleaned up
    # The shards agree with the in-process manifest (same ids, same URIs).
    assert sorted(listing.build_manifest(cfg).column(Col.URI).to_pylist()) == expected
    # Rebuilding replaces the old shards (no stale part files left behind).
    again = listing.build_shards(cfg, str(tmp_path / "m"), {}, NO_DONE, shard_rows=100,
                                  parallelism=4)
    assert len(again.uris) == 1
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["part-00000.parquet"]


@pytest.mark.usefixtures("ray_local")
def test_pending_counts_and_limit(tmp_path: Path) -> None:
    expected = _tree(tmp_path / "images", n_dirs=4, per_dir=5, loose=0)
    cfg = InputConfig(uri=str(tmp_path / "images"))
    done = np.array([ids.image_id(u) for u in expected[:7]] + [12345], dtype=np.int64)
    shards = listing.build_shards(cfg, str(tmp_path / "m"), {}, done, shard_rows=6, parallelism=4)
    assert shards.images == 20 and shards.pending_images == 13
    all_done = np.array([ids.image_id(u) for u in expected])
    nothing_left = listing.build_shards(cfg, str(tmp_path / "m"), {}, all_done, shard_rows=6,
                                        parallelism=4)
    assert nothing_left.images == 20 and nothing_left.pending_images == 0
    first = [u for t in _read_shards(shards) for u in t.column(Col.URI).to_pylist()][:9]
    limited = listing.build_shards(cfg.model_copy(update={"limit": 9}), str(tmp_path / "m"), {},
                                   NO_DONE, shard_rows=6, parallelism=4)
    assert limited.images == 9
    assert [u for t in _read_shards(limited) for u in t.column(Col.URI).to_pylist()] == first
    # The shards after the one reaching the limit are dropped, the last one kept is truncated.
    kept = int(np.searchsorted(np.cumsum(shards.rows), 9)) + 1
    assert len(list((tmp_path / "m").glob("part-*.parquet"))) == len(limited.uris) == kept


@pytest.mark.usefixtures("ray_local")
def test_sharded_manifest_folder_deduplicates_across_shards(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    uris = [f"s3://b/img/{i:04d}.jpg" for i in range(50)]
    pq.write_table(pa.table({"uri": uris[:30]}), folder / "a.parquet", row_group_size=7)
    pq.write_table(pa.table({"uri": [*uris[20:45], None, ""]}), folder / "b.parquet")
    pacsv.write_csv(pa.table({"uri": uris[40:] + uris[:3]}), folder / "c.csv")
    (folder / "README.txt").write_text("not a table")
    monkeypatch.setattr(tables, "_PARQUET_ROWS_PER_UNIT", 10)  # a.parquet -> several slices
    cfg = InputConfig(manifest=str(folder))
    units = listing.plan_units(cfg, parallelism=8)
    assert [u.items[0].rsplit("/", 1)[-1] for u in units].count("a.parquet") == 3
    shards = listing.build_shards(cfg, str(tmp_path / "m"), {}, NO_DONE, shard_rows=20,
                                  parallelism=8)
    _check_shards(shards, uris)
    # A glob picks a subset of the shards.
    glob_cfg = InputConfig(manifest=str(folder / "*.parquet"))
    assert sorted(listing.build_manifest(glob_cfg).column(Col.URI).to_pylist()) == uris[:45]


def _inventory(fs, bucket: str, fmt: str) -> tuple[str, list[str]]:
    """An S3 Inventory report in ``bucket``: manifest.json and two data files."""
    rows = [
        ("src", "photos/a 1.jpg", True, False),
        ("src", "photos/b.png", True, False),
        ("src", "photos/old.jpg", False, False),  # a non-current version
        ("src", "photos/gone.jpg", True, True),  # a delete marker
        ("src", "photos/notes.txt", True, False),
        ("src", "photos/ü/c.webp", True, False),
    ]
    data_keys = []
    for part, chunk in enumerate((rows[:3], rows[3:])):
        key = f"inv/src/cfg/data/part-{part}.{'parquet' if fmt == 'Parquet' else 'csv.gz'}"
        if fmt == "Parquet":
            table = pa.table({"bucket": [r[0] for r in chunk], "key": [r[1] for r in chunk],
                              "is_latest": [r[2] for r in chunk],
                              "is_delete_marker": [r[3] for r in chunk],
                              "size": [10] * len(chunk)})
            with fs.open(f"{bucket}/{key}", "wb") as handle:
                pq.write_table(table, handle)
        else:
            from urllib.parse import quote_plus

            lines = "".join(f'"{b}","{quote_plus(k, safe="/")}",'
                            f'"{str(lat).lower()}","{str(dm).lower()}","10"\n'
                            for b, k, lat, dm in chunk)
            with fs.open(f"{bucket}/{key}", "wb", compression="gzip") as handle:
                handle.write(lines.encode())
        data_keys.append(key)
    report = {"sourceBucket": "src", "destinationBucket": f"arn:aws:s3:::{bucket}",
              "fileFormat": fmt,
              "fileSchema": "Bucket, Key, IsLatest, IsDeleteMarker, Size",
              "files": [{"key": k, "size": 1, "MD5checksum": "0"} for k in data_keys]}
    fs.pipe(f"{bucket}/inv/src/cfg/2026-11-01T00-00Z/manifest.json", json.dumps(report).encode())
    expected = ["s3://src/photos/a 1.jpg", "s3://src/photos/b.png", "s3://src/photos/ü/c.webp"]
    return f"s3://{bucket}/inv/src/cfg/2026-11-01T00-00Z/manifest.json", expected


@pytest.mark.parametrize("fmt", ["Parquet", "CSV"])
def test_s3_inventory_manifest(s3_bucket: tuple[str, dict], fmt: str) -> None:
    import s3fs

    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    report, expected = _inventory(fs, bucket.removeprefix("s3://"), fmt)
    cfg = InputConfig(manifest=report, storage_options=options)
    table = listing.build_manifest(cfg)
    assert table.column(Col.URI).to_pylist() == expected
    assert table.column(Col.IMAGE_ID).to_pylist() == [ids.image_id(u) for u in expected]


def test_inventory_style_table_and_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "inv.parquet"
    pq.write_table(pa.table({"Bucket": ["b", "b"], "Key": ["x/1.jpg", "x/2.gif"]}), path)
    table = listing.build_manifest(InputConfig(manifest=str(path)))
    assert table.column(Col.URI).to_pylist() == ["s3://b/x/1.jpg", "s3://b/x/2.gif"]
    with pytest.raises(ConfigError, match="does not exist"):
        listing.build_manifest(InputConfig(manifest=str(tmp_path / "absent.parquet")))
    bad = tmp_path / "manifest.json"
    bad.write_text(json.dumps({"files": []}))
    with pytest.raises(ConfigError, match="not an S3 Inventory manifest"):
        listing.build_manifest(InputConfig(manifest=str(bad)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="names no Parquet or CSV"):
        listing.build_manifest(InputConfig(manifest=str(tmp_path / "empty")))


def test_unique_rows_drops_repeats_and_rejects_collisions() -> None:
    uris = ["s3://b/2.jpg", "s3://b/1.jpg", "s3://b/2.jpg"]
    table = pa.table({Col.IMAGE_ID: listing.ids_of(uris), Col.URI: uris},
                     schema=listing.MANIFEST_SCHEMA)
    assert listing.unique_rows(table).column(Col.URI).to_pylist() == ["s3://b/1.jpg", "s3://b/2.jpg"]
    clash = pa.table({Col.IMAGE_ID: pa.array([7, 7], pa.int64()), Col.URI: ["s3://b/x", "s3://b/y"]})
    with pytest.raises(ConfigError, match="hash to one image_id"):
        listing.unique_rows(clash)


def test_id_ranges_read_only_overlapping_row_groups(tmp_path: Path) -> None:
    ids = np.sort(np.random.default_rng(0).integers(0, 1 << 62, 1000)).astype(np.int64)
    table = pa.table({Col.IMAGE_ID: ids, Col.URI: [f"u{i}" for i in range(1000)]})
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=100)
    lo, hi = int(ids[250]), int(ids[420])
    got = listing._read_id_range(str(tmp_path / "p.parquet"), lo, hi, {})
    assert got.column(Col.IMAGE_ID).to_pylist() == ids[250:420].tolist()
    top = listing._read_id_range(str(tmp_path / "p.parquet"), int(ids[990]), 1 << 63, {})
    assert top.num_rows == 10


# --- key ranges of large flat S3 folders --------------------------------------------------------

ODD_NAMES = ["a.jpg", "a", "ab.jpg", "A.png", "~z.jpg", "é.jpg", "日本.png", "\x01ctl.jpg",
             " space.jpg", "zz/deep.jpg", "0" * 40 + ".jpg", "}.jpg", "\x7f.jpg"]


def _owner(ranges: list[prefixes.KeyRange], key: str) -> int:
    """The one range holding ``key`` (the ranges are checked to be contiguous and increasing)."""
    uppers = [r.upto for r in ranges[:-1]]
    index = bisect.bisect_left(uppers, key)
    r = ranges[index]
    assert (r.after is None or key > r.after) and (r.upto is None or key <= r.upto)
    return index


def test_split_range_partitions_any_keys() -> None:
    rng = np.random.default_rng(0)
    alphabet = [*"0123456789abcdefXYZ-_ ~/.", "é", "日", "\x02", "\x7f"]
    keys = ["p/" + "".join(rng.choice(alphabet, size=rng.integers(0, 6))) for _ in range(3000)]
    keys += ["p/" + name for name in ODD_NAMES] + ["p/"]
    ranges = [prefixes.KeyRange(None, None, "p/")]
    for _ in range(3):  # split three levels deep every range holding several keys
        crowded = {i for i, n in Counter(_owner(ranges, k) for k in keys).items() if n > 1}
        ranges = [piece for i, r in enumerate(ranges)
                  for piece in (prefixes.split_range(r) if i in crowded else [r])]
        assert ranges[0].after is None and ranges[-1].upto is None
        assert all(a.upto == b.after for a, b in pairwise(ranges))
        assert all(r.after is None or r.upto is None or r.after < r.upto for r in ranges)
    assert len(ranges) > 1000
    # Pieces follow the stem: keys starting "p/ab" share the piece ("p/ab", "p/ac"].
    piece = ranges[_owner(ranges, "p/ab.jpg")]
    assert (piece.after, piece.upto, piece.stem) == ("p/ab", "p/ac", "p/ab")
    assert _owner(ranges, "p/ab.jpg") == _owner(ranges, "p/abc")


def _flat_bucket(s3_bucket: tuple[str, dict], n: int) -> tuple[str, dict, list[str]]:
    import s3fs

    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    name = bucket.removeprefix("s3://")
    rng = np.random.default_rng(1)
    names = [f"{rng.bytes(4).hex()}.png" for _ in range(n)] + ODD_NAMES + ["notes.txt"]
    fs.pipe({f"{name}/flat/{k}": b"x" for k in names})
    fs.pipe(f"{name}/flat2/outside.jpg", b"x")  # a sibling folder sorting right after the prefix
    wanted = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
    expected = sorted(f"s3://{name}/flat/{k}" for k in names if k.lower().endswith(wanted))
    return f"{bucket}/flat", options, expected


def test_flat_bucket_prefix_is_cut_into_key_ranges(
    s3_bucket: tuple[str, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, options, expected = _flat_bucket(s3_bucket, 300)
    monkeypatch.setattr(prefixes, "_PAGE", 16)  # a level of more than 16 keys counts as large
    monkeypatch.setattr(prefixes, "_LOOSE_PER_UNIT", 40)
    cfg = InputConfig(uri=uri, storage_options=options)
    units = listing.plan_units(cfg, parallelism=8)
    # The driver holds ranges, not keys: every unit is a key range of the folder.
    assert len(units) > 8 and {u.kind for u in units} == {"keyrange"}
    assert all(u.items == (uri,) for u in units)
    bounds = [u.key_range for u in units]
    assert bounds[0][0] is None and bounds[-1][1] is None
    assert all(a[1] == b[0] for a, b in pairwise(bounds))
    got = [u for unit in units for u in listing.unit_uris(unit, cfg)]
    assert sorted(got) == expected and len(got) == len(set(got))
    # A single object as the input is still one image.
    one = InputConfig(uri=expected[0], storage_options=options)
    assert [u for unit in listing.plan_units(one, 8) for u in listing.unit_uris(unit, one)] == [
        expected[0]]
    # Units are balanced: none lists much more than a few pages.
    assert max(len(listing.unit_uris(u, cfg)) for u in units) <= 60


@pytest.mark.usefixtures("ray_local")
def test_flat_and_nested_bucket_shards(
    s3_bucket: tuple[str, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    uri, options, flat = _flat_bucket(s3_bucket, 120)
    monkeypatch.setattr(prefixes, "_PAGE", 16)
    fs = s3fs.S3FileSystem(**options)
    name = uri.removeprefix("s3://").split("/")[0]
    small = [f"{name}/small/{i}.jpg" for i in range(5)]
    fs.pipe({k: b"x" for k in small})
    # The bucket root: a small level (flat/, flat2/, small/) explored by folders; flat/ is
    # large and becomes key ranges, the files of the small ones are listed by the driver.
    cfg = InputConfig(uri=f"s3://{name}", storage_options=options)
    units = listing.plan_units(cfg, parallelism=4)
    assert {u.kind for u in units} == {"keyrange", "uris"}
    expected = sorted(flat + [f"s3://{name}/flat2/outside.jpg"] + [f"s3://{k}" for k in small])
    shards = listing.build_shards(cfg, str(tmp_path / "m"), {}, NO_DONE, shard_rows=50,
                                  parallelism=4)
    _check_shards(shards, expected)

"""Small test corpora in the formats large collections ship in, made in-process: WebDataset tar
shards (an image member plus ``.json`` and ``.txt`` per sample) and Parquet tables with the
encoded image in a column; and the ways they break (a corrupt member, a truncated shard)."""

from __future__ import annotations

import io as _io
import json
import tarfile
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from iqa_ray import io
from iqa_ray.devtools.samples import degrade, synthetic_scene

KEY = "__key__"  # the sample key in a sample dict; every other entry is extension -> bytes
_KINDS = ("clean", "blur", "noise", "jpeg")


def sample_records(n: int, seed: int = 0, size: tuple[int, int] = (96, 72),
                   prefix: str = "") -> list[dict[str, Any]]:
    """``n`` samples ``{__key__, jpg|png, json, txt}``: synthetic scenes, clean or degraded."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        kind = _KINDS[i % len(_KINDS)]
        img = degrade(synthetic_scene(rng, *size), kind, rng)
        ext = "png" if i % 5 == 0 else "jpg"
        buf = _io.BytesIO()
        img.save(buf, format="PNG" if ext == "png" else "JPEG", quality=92)
        key = f"{prefix}{i:06d}"
        meta = {"index": i, "kind": kind, "caption": f"a synthetic {kind} scene"}
        records.append({KEY: key, ext: buf.getvalue(), "json": json.dumps(meta).encode(),
                        "txt": meta["caption"].encode()})
    return records


def tar_bytes(samples: Sequence[dict[str, Any]]) -> bytes:
    """A tar of the samples' members (``<key>.<ext>``), in order, with fixed metadata so that
    equal samples give equal bytes."""
    buf = _io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for sample in samples:
            for ext, data in sample.items():
                if ext == KEY:
                    continue
                info = tarfile.TarInfo(f"{sample[KEY]}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, _io.BytesIO(data))
    return buf.getvalue()


def write_webdataset(dest: str, samples: Sequence[dict[str, Any]], per_shard: int,
                     storage_options: dict[str, Any] | None = None,
                     pattern: str = "shard-{:05d}.tar") -> list[str]:
    """Write the samples as consecutive shards of ``per_shard`` samples; returns shard URIs."""
    uris = []
    for index, start in enumerate(range(0, len(samples), per_shard)):
        uri = io.join(dest, pattern.format(index))
        io.write_bytes_atomic(uri, tar_bytes(samples[start : start + per_shard]), storage_options)
        uris.append(uri)
    return uris


def image_of(sample: dict[str, Any]) -> tuple[str, bytes]:
    """(extension, bytes) of a sample's image member."""
    for ext in ("jpg", "png", "jpeg", "webp"):
        if ext in sample:
            return ext, sample[ext]
    raise KeyError(f"sample {sample[KEY]!r} has no image member")


def parquet_table(samples: Sequence[dict[str, Any]],
                  layout: Literal["struct", "bytes"] = "struct") -> pa.Table:
    """Columns ``sample_id``, ``image`` (a Hugging Face ``{bytes, path}`` struct, or plain
    bytes), ``caption``."""
    images = [image_of(s) for s in samples]
    if layout == "struct":
        image = pa.array([{"bytes": data, "path": f"{s[KEY]}.{ext}"}
                          for s, (ext, data) in zip(samples, images, strict=True)],
                         pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    else:
        image = pa.array([data for _, data in images], pa.binary())
    captions = [s.get("txt", b"").decode() for s in samples]
    return pa.table({"sample_id": [str(s[KEY]) for s in samples], "image": image,
                     "caption": captions})


def write_parquet_tables(dest: str, samples: Sequence[dict[str, Any]], rows_per_file: int,
                         row_group_rows: int, storage_options: dict[str, Any] | None = None,
                         layout: Literal["struct", "bytes"] = "struct") -> list[str]:
    """Write the samples as Parquet files of ``rows_per_file`` rows in row groups of
    ``row_group_rows``; returns file URIs."""
    uris = []
    for index, start in enumerate(range(0, len(samples), rows_per_file)):
        table = parquet_table(samples[start : start + rows_per_file], layout)
        sink = _io.BytesIO()
        pq.write_table(table, sink, row_group_size=row_group_rows)
        uri = io.join(dest, f"part-{index:05d}.parquet")
        io.write_bytes_atomic(uri, sink.getvalue(), storage_options)
        uris.append(uri)
    return uris


def truncate_object(uri: str, keep: float, storage_options: dict[str, Any] | None = None) -> int:
    """Cut an object to ``keep`` of its bytes (a fraction), as an interrupted upload would;
    returns the new size."""
    data = io.read_bytes(uri, storage_options)
    size = int(len(data) * keep)
    io.write_bytes_atomic(uri, data[:size], storage_options)
    return size

"""Helpers shared by integration tests: corpora with bad files, configs, reading results."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from PIL import Image

from iqa_ray import io as iqa_io
from iqa_ray.devtools.samples import make_sample_images
from iqa_ray.scoring.config import RunConfig

BAD_FILES = {"zero.jpg": "empty_file", "truncated.jpg": "truncated", "text.jpg": "decode_failed"}


def make_corpus(folder: Path, n_good: int) -> dict[str, str | None]:
    """n_good valid images plus a zero-byte file, a truncated JPEG and text named .jpg.

    Returns file name -> expected error code (None for valid images).
    """
    paths = make_sample_images(folder, n_good)
    expected: dict[str, str | None] = {p.name: None for p in paths}
    (folder / "zero.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "text.jpg").write_text("this is not an image\n" * 20)
    (folder / "notes.txt").write_text("ignored: not an image extension")
    expected.update(BAD_FILES)
    return expected


def config(input_uri: str, output_uri: str, **overrides: Any) -> RunConfig:
    """A small-batch config for tests; ``overrides`` are merged into the top level."""
    data: dict[str, Any] = {
        "input": {"uri": input_uri},
        "output": {"uri": output_uri, "rows_per_file": 8},
        "model": {"backend": "fake", "batch_size": 4},
        "methods": [{"method": "qalign_levels"}, {"method": "qbench_binary"}],
        "stages": {
            "fetch": {"batch_size": 8, "max_actors": 1, "num_cpus": 0.5},
            "decode": {"batch_size": 4, "max_actors": 2, "num_cpus": 0.5},
            "score": {"batch_size": 4, "max_actors": 1, "num_cpus": 1},
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return RunConfig.from_dict(data)


def read_scores(run_uri: str, options: dict | None = None) -> pd.DataFrame:
    """All committed score rows of a run, as one DataFrame."""
    files = iqa_io.list_parquet(iqa_io.join(run_uri, "scores"), options)
    frames = [iqa_io.read_parquet(f, options).to_pandas() for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def files_in(run_uri: str, options: dict | None = None) -> list[str]:
    """Committed Parquet files of a run."""
    return iqa_io.list_parquet(iqa_io.join(run_uri, "scores"), options)


def assert_reconciled(df: pd.DataFrame, expected_names: set[str], methods: list[str]) -> None:
    """Exactly one row per (image, method): no duplicates, no gaps."""
    assert not df.duplicated(["image_id", "method"]).any(), "duplicate (image_id, method) rows"
    names = df["uri"].map(lambda u: u.rsplit("/", 1)[-1])
    assert set(names) == expected_names, f"missing: {expected_names - set(names)}"
    assert len(df) == len(expected_names) * len(methods)
    assert set(df["method"]) == set(methods)


def parquet_rows(path: str) -> int:
    """Row count of a local Parquet file."""
    return pq.ParquetFile(path).metadata.num_rows


def write_score_run(
    output_uri: str,
    run_id: str,
    rows: list[dict[str, Any]],
    options: dict | None = None,
    part: str = "part-0",
) -> str:
    """Write score rows straight into the run layout (file ``scores/<part>.parquet``); returns
    the run URI.

    Each row needs uri, method and score; image_id (from the uri), error columns (null),
    attempt (0) and size (8x8) are filled in when absent.
    """
    import pyarrow as pa

    from iqa_ray.inputs.ids import image_id
    from iqa_ray.scoring.outputs import long_schema

    defaults = {"error_code": None, "error_message": None, "attempt": 0, "width": 8, "height": 8}
    full = [{**defaults, "image_id": image_id(r["uri"]), **r} for r in rows]
    for row in full:
        row.setdefault("status", "error" if row["error_code"] else "ok")
    table = pa.Table.from_pandas(pd.DataFrame(full), schema=long_schema([]), preserve_index=False)
    run_uri = iqa_io.join(output_uri, "runs", run_id)
    iqa_io.write_parquet_atomic(iqa_io.join(run_uri, "scores", f"{part}.parquet"), table, options)
    return run_uri

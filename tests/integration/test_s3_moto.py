"""Bucket to bucket over a real S3 HTTP endpoint (moto on loopback) with the tiny LLaVA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from iqa_ray import io as iqa_io
from iqa_ray.backends import Prompt
from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.transformers.backend import TransformersBackend
from iqa_ray.scoring.pipeline import run
from tests.conftest import upload_folder
from tests.helpers import assert_reconciled, config, make_corpus, read_scores

METHODS = ["qalign_levels", "qbench_binary"]


@pytest.mark.usefixtures("ray_local")
def test_bucket_to_bucket_with_tiny_llava(
    tmp_path: Path, s3_bucket: tuple[str, dict], tiny_model_dir: Path
) -> None:
    bucket, options = s3_bucket
    expected = make_corpus(tmp_path / "images", 47)  # + zero-byte, truncated, text-as-jpg
    upload_folder(tmp_path / "images", f"{bucket}/corpus", options)
    cfg = config(
        f"{bucket}/corpus", f"{bucket}/scores",
        input={"uri": f"{bucket}/corpus", "storage_options": options},
        output={"uri": f"{bucket}/scores", "storage_options": options, "rows_per_file": 16},
        model={"backend": "transformers", "id": str(tiny_model_dir)}, image={"max_side": 64},
    )
    result = run(cfg)
    assert result.uri.startswith(f"{bucket}/scores/runs/")
    df = read_scores(result.uri, options)
    assert_reconciled(df, set(expected), METHODS)
    assert len(expected) == 50
    bad = df[df["error_code"].notna()]
    assert set(bad["uri"].str.rsplit("/", n=1).str[-1]) == {"zero.jpg", "truncated.jpg", "text.jpg"}
    assert df[df["error_code"].isna()]["score"].notna().all()
    # Done-ness is visible in the bucket: run.json with counts, then _SUCCESS.
    assert iqa_io.exists(iqa_io.join(result.uri, "_SUCCESS"), options)
    record = iqa_io.read_json(iqa_io.join(result.uri, "run.json"), options)
    assert record["summary"]["rows_expected"] == record["summary"]["rows_written"] == 100
    assert record["summary"]["rows_by_error_code"] == {
        "decode_failed": 2, "empty_file": 2, "ok": 94, "truncated": 2,
    }
    assert json.dumps(record["config"]["input"]["storage_options"]).count("endpoint_url") == 1
    assert record["smoke_model"] is True  # the tiny random model is flagged as meaningless


def test_model_loaded_from_bucket_prefix(
    tmp_path: Path, s3_bucket: tuple[str, dict], tiny_model_dir: Path
) -> None:
    bucket, options = s3_bucket
    upload_folder(tiny_model_dir, f"{bucket}/models/tiny", options)
    cache = tmp_path / "cache"
    remote = TransformersBackend(ModelConfig(
        id=f"{bucket}/models/tiny", storage_options=options, cache_dir=str(cache)))
    local = TransformersBackend(ModelConfig(id=str(tiny_model_dir)))
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    prompt = Prompt((image,), "How would you rate the quality of this image?",
                    "The quality of the image is", ("good", "poor"))
    np.testing.assert_array_equal(remote.next_token_logits([prompt])[0],
                                  local.next_token_logits([prompt])[0])
    copies = [p for p in cache.iterdir() if p.is_dir()]
    assert len(copies) == 1 and (copies[0] / ".completed").exists()
    # A second load on the same node reuses the cached copy (no second folder).
    TransformersBackend(ModelConfig(id=f"{bucket}/models/tiny", storage_options=options,
                                    cache_dir=str(cache)))
    assert [p for p in cache.iterdir() if p.is_dir()] == copies

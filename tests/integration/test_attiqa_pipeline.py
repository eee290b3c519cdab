"""ATTIQA end to end on local Ray: CLIP pseudo-labels through the pipeline (no LMM loaded),
pretraining on Ray Train with checkpoints and resume, fine-tuning to a bucket, and the attiqa
scorer through the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from iqa_ray import io as iqa_io
from iqa_ray.attiqa.data import load_attribute_labels
from iqa_ray.attiqa.train import run_training
from iqa_ray.attiqa.train_config import train_config_from_dict
from iqa_ray.backends.sources import local_model_path
from iqa_ray.devtools.tiny_attiqa import TINY_RESNET
from iqa_ray.errors import ConfigError
from iqa_ray.images import decode_image
from iqa_ray.methods.attiqa.backbone import prepare_pixels
from iqa_ray.methods.attiqa.prompts import ATTRIBUTES
from iqa_ray.scoring.pipeline import run
from tests.helpers import config, make_corpus, read_scores

pytestmark = pytest.mark.usefixtures("ray_local")


def _learnable_corpus(folder: Path, n: int = 64) -> pd.DataFrame:
    """Noisy grey images whose every attribute label is a monotone function of their level."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        level = i / (n - 1)
        pixels = np.clip(rng.normal(level * 255, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"im{i:02d}.png")
        rows.append({"uri": str(folder / f"im{i:02d}.png"), "key": f"im{i:02d}.png",
                     "level": level})
    return pd.DataFrame(rows)


def _train_config(tmp_path: Path, bucket: str, options: dict, **pretrain: object) -> dict:
    return {
        "backbone": TINY_RESNET, "image_size": 16, "batch_size": 16, "lr": 0.01,
        "shuffle_buffer": 0, "storage_options": options, "cache_dir": str(tmp_path / "cache"),
        "loader": {"batch_size": 16, "max_actors": 1, "num_cpus": 0.5},
        "pretrain": {"labels": {"uri": str(tmp_path / "labels.parquet")},
                     "output": str(tmp_path / "pretrained"), "run_name": "pre",
                     "checkpoint_uri": str(tmp_path / "checkpoints"), "checkpoint_every": 4,
                     **pretrain},
        # Fine-tuning keeps its checkpoints and its model in the bucket (Ray Train storage
        # through io.pyarrow_filesystem).
        "finetune": {"labels": {"uri": str(tmp_path / "mos.csv"),
                                "images_root": str(tmp_path / "images")},
                     "output": f"{bucket}/attiqa", "checkpoint_uri": f"{bucket}/checkpoints",
                     "max_steps": 4, "cache_images": True, "freeze_backbone": True},
    }


@pytest.mark.timeout(900)
def test_pretrain_resume_finetune_then_score_with_both_methods(
    tmp_path: Path, s3_bucket: tuple[str, dict], tiny_clip_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Propagated by Ray Train to its controller: a loaded 2-core machine may start workers
    # slowly, and a short poll interval makes each finished run return sooner.
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")  # one actor fewer per run
    bucket, options = s3_bucket
    corpus = _learnable_corpus(tmp_path / "images")
    labels = {"uri": corpus["uri"]} | {a: corpus["level"] for a in ATTRIBUTES}
    pq.write_table(pa.table(pd.DataFrame(labels)), tmp_path / "labels.parquet")
    mos = corpus.assign(mos=1 + 4 * corpus["level"])[["key", "mos"]]
    mos.to_csv(tmp_path / "mos.csv", index=False)

    # Pretraining: 8 steps (2 epochs of 64 images) on the ranking loss; the loss must fall.
    cfg = train_config_from_dict(_train_config(tmp_path, bucket, options, max_steps=8), "pretrain")
    first = run_training(cfg)
    assert first.step == 8 and first.starts == [0] and len(first.losses) == 8
    assert np.mean(first.losses[-3:]) < 0.5 * np.mean(first.losses[:3]), first.losses
    run_dir = tmp_path / "checkpoints" / "pre"
    checkpoints = sorted(p.name for p in run_dir.glob("checkpoint_*") if p.is_dir())
    assert len(checkpoints) == 2  # steps 4 and 8, both kept (keep_checkpoints=2)
    assert {p.name for p in (tmp_path / "pretrained").iterdir()} == {
        "config.json", "model.safetensors", "attiqa.json"}

    # Same run name, another training configuration: refused before any worker starts.
    with pytest.raises(ConfigError, match="different training configuration"):
        run_training(train_config_from_dict(
            _train_config(tmp_path, bucket, options, max_steps=12, margin=0.5), "pretrain"))

    # Same run name, more steps: Ray Train restores the last checkpoint and counting goes on.
    resumed = run_training(train_config_from_dict(
        _train_config(tmp_path, bucket, options, max_steps=12), "pretrain"))
    assert resumed.step == 12 and resumed.starts == [0, 8]
    assert resumed.losses[:8] == first.losses  # the history came back from the checkpoint
    assert np.mean(resumed.losses[8:]) < np.mean(first.losses[:3])  # the weights did too

    # Fine-tuning: quality head on MOS, from the exported pretrained model; checkpoints and
    # model in the bucket.
    tuned = run_training(train_config_from_dict(
        _train_config(tmp_path, bucket, options, max_steps=12), "finetune"))
    assert tuned.step == 4 and tuned.model_uri == f"{bucket}/attiqa"
    assert iqa_io.list_files(f"{bucket}/checkpoints", options, (".safetensors",))
    meta = iqa_io.read_json(f"{bucket}/attiqa/attiqa.json", options)
    assert meta["quality_trained"] and meta["history"]["pretrain"]["steps"] == 12
    assert meta["mos_mean"] == pytest.approx(1 + 4 * corpus["level"].mean())

    # One pipeline run with both methods over a corpus with broken files; the LMM of the
    # config cannot load, so the run only passes if it is never touched.
    expected = make_corpus(tmp_path / "corpus", 5)
    params = {"model": f"{bucket}/attiqa", "storage_options": options,
              "cache_dir": str(tmp_path / "cache")}
    result = run(config(
        str(tmp_path / "corpus"), str(tmp_path / "out"),
        model={"backend": "transformers", "id": str(tmp_path / "no-such-lmm")},
        methods=[{"method": "clip_attributes", "params": {"model": str(tiny_clip_dir)}},
                 {"method": "attiqa", "params": params}]))
    df = read_scores(result.uri)
    assert len(df) == 2 * len(expected)
    good = df[df["error_code"].isna()].sort_values(["method", "uri"])
    assert len(good) == 2 * 5 and df["error_code"].notna().sum() == 2 * (len(expected) - 5)
    clip = good[good["method"] == "clip_attributes"]
    values = clip[list(ATTRIBUTES)].to_numpy()
    assert values.dtype == np.float64 and np.all((values > 0) & (values < 1))
    np.testing.assert_allclose(clip["score"], values.mean(axis=1), rtol=1e-12)
    # The run folder is a pseudo-label table for the next pretraining (error rows excluded).
    labels = load_attribute_labels(result.uri, {}, "clip_attributes").to_pandas()
    merged = labels.merge(clip, on="uri", suffixes=("", "_run"))
    assert len(labels) == len(merged) == 5
    np.testing.assert_allclose(merged["sharpness"], merged["sharpness_run"], rtol=1e-6)
    # The attiqa rows hold the same numbers as a direct forward of the downloaded network.
    import torch

    from iqa_ray.methods.attiqa.network import load_network, quality_from_outputs

    scored = good[good["method"] == "attiqa"]
    net, meta = load_network(local_model_path(params["model"], options, params["cache_dir"]))
    images = [decode_image(iqa_io.read_bytes(u), max_pixels=10**8, min_side=8)
              for u in scored["uri"]]
    with torch.no_grad():
        attributes, quality = net(torch.from_numpy(prepare_pixels(images, meta["image_size"])))
    np.testing.assert_allclose(scored[list(ATTRIBUTES)], attributes.numpy(), rtol=1e-4, atol=1e-5)
    expected_score = quality_from_outputs(attributes.numpy(), quality.numpy(), meta)
    np.testing.assert_allclose(scored["score"], expected_score, rtol=1e-4, atol=1e-5)
    # run.json pins the weights it scored with: the digest of the bucket's model.safetensors.
    record = iqa_io.read_json(iqa_io.join(result.uri, "run.json"), None)
    weights = iqa_io.join(params["model"], "model.safetensors")
    assert record["data_digests"] == {"attiqa": iqa_io.sha256_file(weights, options)}

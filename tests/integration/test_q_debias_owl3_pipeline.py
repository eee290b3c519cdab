"""Q-Debias end to end through the Ray pipeline on an mPLUG-Owl3 folder (a tiny local checkpoint),
with the baseline alongside; scores equal the same backend and methods run directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from iqa_ray.backends.families.mplug_owl3.tiny import build_tiny_checkpoint
from iqa_ray.backends.transformers.backend import TransformersBackend
from iqa_ray.devtools.samples import make_sample_images
from iqa_ray.distortions import apply_distortion
from iqa_ray.images import load_image
from iqa_ray.methods import ImageBatch, MethodContext, get_method
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.pipeline import run
from tests.helpers import assert_reconciled, config, read_scores

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]
# The baseline reads the capitalised words: the reference processor drops its answer prefix, so
# the words are the first of the assistant turn (and the tiny tokenizer has no bare "good").
METHODS = [
    {"method": "q_debias"},
    {"method": "qbench_binary", "params": {"words": ["Good", "Poor"]}},
]


def direct_scores(cfg: RunConfig, files: dict[int, Path]) -> dict[tuple[int, str], float]:
    """Every method on the same backend in this process: decode and priors as the pipeline's
    decode stage makes them (same guards, resize and image-id seeds), one batch of all images."""
    backend = TransformersBackend(cfg.model)
    ctx = MethodContext(vlm_factory=lambda: backend, model=cfg.model, image=cfg.image)
    ids = sorted(files)
    query = [load_image(files[i].read_bytes(), cfg.image)[0] for i in ids]
    out: dict[tuple[int, str], float] = {}
    for spec in cfg.methods:
        method = get_method(spec.method)(spec.params)
        variants = {
            v.key: [apply_distortion(q, v.distortion, v.severity, seed_key=i)
                    for i, q in zip(ids, query, strict=True)]
            for v in method.variants()
        }
        method.setup(ctx)
        result = method.score_batch(ImageBatch(np.array(ids), query, variants), ctx)
        assert result.errors == [None] * len(ids)
        out.update({(i, spec.name): s for i, s in zip(ids, result.columns["score"], strict=True)})
    return out


def test_q_debias_on_mplug_owl3_end_to_end(tmp_path: Path) -> None:
    model_dir = build_tiny_checkpoint(tmp_path / "tiny_owl3")
    paths = make_sample_images(tmp_path / "images", 4)
    cfg = config(
        str(tmp_path / "images"), str(tmp_path / "out"), run_id="owl3",
        model={"backend": "transformers", "id": str(model_dir), "batch_size": 4},
        image={"max_side": 64}, methods=METHODS,
    )
    df = read_scores(run(cfg).uri)
    names = [m["method"] for m in METHODS]
    assert_reconciled(df, {p.name for p in paths}, names)
    assert df["error_code"].isna().all(), df["error_message"].dropna().tolist()
    assert df["score"].between(0.0, 1.0).all()
    debias = df[df["method"] == "q_debias"]
    assert all(len(v) == 4 for v in debias["p_yes"]) and all(len(v) == 4 for v in debias["p_good"])

    by_name = {p.name: p for p in paths}
    files = {int(r.image_id): by_name[r.uri.rsplit("/", 1)[-1]] for r in debias.itertuples()}
    want = direct_scores(cfg, files)
    got = {(int(r.image_id), r.method): float(r.score) for r in df.itertuples()}
    assert set(got) == set(want)
    for key, value in want.items():
        # Same prompts and weights; batches and thread counts differ (float rounding only).
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert len({round(v, 9) for (_, m), v in got.items() if m == "q_debias"}) > 1

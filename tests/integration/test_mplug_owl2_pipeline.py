"""An mPLUG-Owl2 folder through the Ray pipeline (``jobs/score.py``'s code path): a tiny model
saved with this package's ``save_pretrained``, and the reference fixture when present, with
``qalign_levels`` and ``compare2score`` (official anchor set from stand-in images). One row per
image and method; every score equals the one the backend computes directly; on the fixture,
also the reference's own numbers (expected.json)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.families.mplug_owl2.tiny import build_tiny_mplug_owl2
from iqa_ray.backends.transformers.backend import TransformersBackend
from iqa_ray.devtools.samples import make_sample_images
from iqa_ray.images import load_image
from iqa_ray.inputs.ids import image_id
from iqa_ray.methods.base import ImageBatch, MethodContext
from iqa_ray.methods.compare2score.official import ANCHOR_NAMES, write_official_anchor_set
from iqa_ray.methods.registry import get_method
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.pipeline import run
from tests.helpers import assert_reconciled, config, read_scores
from tests.unit.families.test_mplug_owl2_fixture import EXPECTED, FIXTURE

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]
METHODS = ["qalign_levels", "compare2score"]


def _tiny_case(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    model = build_tiny_mplug_owl2(tmp_path / "model", seed=5)
    make_sample_images(tmp_path / "images", 5, seed=2)
    anchors = tmp_path / "stand_ins"
    make_sample_images(anchors, 5, seed=9)
    for name, path in zip(ANCHOR_NAMES, sorted(anchors.iterdir()), strict=True):
        path.rename(anchors / f"{name}{path.suffix}")
    return model, anchors, {}


def _fixture_case(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    if not (FIXTURE / "expected.json").is_file():
        pytest.skip(f"reference fixture not found at {FIXTURE} (set IQA_RAY_SHARED_DIR)")
    (tmp_path / "images").mkdir()
    for name in EXPECTED["compare2score"]["images"]:
        shutil.copy(FIXTURE / "inputs" / name, tmp_path / "images" / name)
    # The reference's 100 Adam steps with its normal-CDF link (the model's score() method).
    return FIXTURE, FIXTURE / "inputs" / "anchors", {"solver": "reference_adam"}


def _config(tmp_path: Path, model: Path, c2s: dict[str, Any]) -> RunConfig:
    return config(
        str(tmp_path / "images"), str(tmp_path / "out"),
        model={"backend": "transformers", "id": str(model), "batch_size": 6},
        image={"max_side": None},
        methods=[{"method": "qalign_levels"},
                 {"method": "compare2score", "params": {"anchors": str(tmp_path / "anchors"),
                                                        **c2s}}],
    )


def _direct(cfg: RunConfig, uris: list[str]) -> dict[str, pd.Series]:
    """Each method's scores computed in-process by the backend on the pipeline's pixels."""
    backend = TransformersBackend(ModelConfig(id=cfg.model.id, batch_size=2))
    ctx = MethodContext(vlm_factory=lambda: backend, model=cfg.model, image=cfg.image)
    images = [load_image(Path(u.removeprefix("file://")).read_bytes(), cfg.image)[0]
              for u in uris]
    batch = ImageBatch(np.array([image_id(u) for u in uris], dtype=np.int64), images)
    out = {}
    for spec in cfg.methods:
        method = get_method(spec.method)(dict(spec.params))
        method.setup(ctx)
        out[spec.name] = pd.Series(method.score_batch(batch, ctx).columns["score"], index=uris)
    return out


@pytest.mark.parametrize("case", [_tiny_case, _fixture_case], ids=["tiny", "fixture"])
def test_mplug_owl2_folder_through_the_pipeline(tmp_path: Path, case: Any) -> None:
    model, stand_ins, c2s = case(tmp_path)
    write_official_anchor_set(stand_ins, str(tmp_path / "anchors"))
    cfg = _config(tmp_path, model, c2s)
    df = read_scores(run(cfg).uri)
    names = {p.name for p in (tmp_path / "images").iterdir()}
    assert_reconciled(df, names, METHODS)
    assert df["error_code"].isna().all()
    uris = sorted(df["uri"].unique())
    direct = _direct(cfg, uris)
    for method, tol in (("qalign_levels", 1e-5), ("compare2score", 1e-3)):
        got = df[df["method"] == method].set_index("uri")["score"].loc[uris]
        np.testing.assert_allclose(got.to_numpy(), direct[method].to_numpy(), atol=tol, rtol=0)
    if model != FIXTURE:
        return
    tol = EXPECTED["tolerances"]
    for uri in uris:
        name = uri.rsplit("/", 1)[-1]
        row = df[df["uri"] == uri].set_index("method")["score"]
        qalign = EXPECTED["qalign"]["images"][name]["qalign_scorer_prompt"]["score_1_5"]
        assert abs(row["qalign_levels"] - qalign) <= tol["probs_and_qalign_scores_abs"]
        c2s_score = EXPECTED["compare2score"]["images"][name]["score_model_method_normcdf"]
        assert abs(row["compare2score"] - c2s_score) <= tol["compare2score_final_score_abs"]

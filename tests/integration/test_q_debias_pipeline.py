"""Q-Debias through the whole pipeline on local Ray with the tiny LLaVA, baseline alongside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iqa_ray.devtools.samples import make_sample_images
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.pipeline import run
from tests.helpers import assert_reconciled, config, read_scores

pytestmark = pytest.mark.usefixtures("ray_local")
METHODS = ["q_debias", "qbench_binary"]
N_PRIORS = 4


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["image_id", "method"]).reset_index(drop=True)


def test_q_debias_with_baseline_end_to_end_and_rerun_identical(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    paths = make_sample_images(tmp_path / "images", 6)

    def cfg(run_id: str) -> RunConfig:
        return config(
            str(tmp_path / "images"), str(tmp_path / "out"), run_id=run_id,
            model={"backend": "transformers", "id": str(tiny_model_dir), "batch_size": 1},
            image={"max_side": 64},
            methods=[{"method": "q_debias"}, {"method": "qbench_binary"}],
            # One prompt per forward: batching invariance is the backend's test (to 1e-5);
            # here equality must be exact so that only the priors could make reruns differ.
        )

    first = _sorted(read_scores(run(cfg("first")).uri))
    assert_reconciled(first, {p.name for p in paths}, METHODS)
    assert first["error_code"].isna().all(), first["error_message"].dropna().tolist()
    assert first["score"].between(0.0, 1.0).all()

    debias = first[first["method"] == "q_debias"]
    rows = zip(debias["p_yes"], debias["p_good"], debias["score"], strict=True)
    for p_yes, p_good, score in rows:
        assert len(p_yes) == len(p_good) == N_PRIORS
        # The stored per-prior probabilities reproduce the stored score (paper weighting).
        w = np.exp(p_yes) / np.exp(p_yes).sum()
        assert score == pytest.approx(float(w @ np.asarray(p_good)), abs=1e-12)
    baseline = first[first["method"] == "qbench_binary"]
    assert baseline["p_yes"].isna().all() and baseline["word_logits"].notna().all()
    # Different images get different priors and probabilities (the columns are not constant).
    assert len({tuple(v) for v in debias["p_yes"]}) > 1

    # A new run id recomputes everything: priors are seeded from the image id, so bit-identical.
    second = _sorted(read_scores(run(cfg("second")).uri))
    assert first["image_id"].equals(second["image_id"])
    assert first["score"].equals(second["score"])
    for column in ("p_yes", "p_good"):
        assert [list(v) if v is not None else None for v in first[column]] == [
            list(v) if v is not None else None for v in second[column]
        ]

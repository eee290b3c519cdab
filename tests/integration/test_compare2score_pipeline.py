"""Compare2Score end to end on a tiny random LLaVA: build anchors on a Ray actor, then score."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from iqa_ray.devtools.samples import make_sample_images
from iqa_ray.errors import ConfigError
from iqa_ray.methods.compare2score.anchor_set import read_anchor_images, read_anchor_set
from iqa_ray.methods.compare2score.build import AnchorBuildSpec, build_anchors
from iqa_ray.methods.compare2score.maths import map_estimate
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.pipeline import run
from tests.conftest import REPO
from tests.helpers import assert_reconciled, config, read_scores

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]
METHODS = ["compare2score", "qbench_binary"]


def _config(tmp_path: Path, model_dir: Path, **extra: object) -> RunConfig:
    return config(
        str(tmp_path / "images"), str(tmp_path / "out"),
        model={"backend": "transformers", "id": str(model_dir), "batch_size": 10},
        image={"max_side": 48},
        methods=[{"method": "compare2score", "params": {"anchors": str(tmp_path / "anchors")}},
                 {"method": "qbench_binary"}],
        **extra,
    )


def _labelled_table(tmp_path: Path) -> Path:
    """Ten labelled images; MOS 0..90 puts two per interval, the second with the smaller std."""
    paths = make_sample_images(tmp_path / "labelled", 10, seed=7)
    table = pd.DataFrame({"uri": [str(p) for p in paths], "mos": [10.0 * k for k in range(10)],
                          "mos_std": [1.0 if k % 2 == 0 else 0.5 for k in range(10)]})
    table.to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path / "labels.csv"


def test_build_anchors_then_score_with_compare2score(tmp_path: Path, tiny_model_dir: Path) -> None:
    labels = _labelled_table(tmp_path)
    make_sample_images(tmp_path / "images", 5, seed=3)
    cfg = _config(tmp_path, tiny_model_dir)
    uri, built = build_anchors(cfg, AnchorBuildSpec(labels=str(labels)))
    assert uri == str(tmp_path / "anchors")
    sources = [Path(a.source_uri) for a in built.anchors]
    assert [s.name.split("_")[1] for s in sources] == ["00001", "00003", "00005", "00007", "00009"]
    stored = read_anchor_set(uri, None)
    np.testing.assert_array_equal(stored.matrix, built.matrix)
    assert stored.calibration.model_id == str(tiny_model_dir)
    assert read_anchor_images(uri, stored, None)[1] == sources[1].read_bytes()
    # Score a copy of anchor 1 too: its b against anchor n is the prompt [anchor n, anchor 1],
    # which the anchor job stored as comparisons[n, 1] (checks P_a's orientation end to end).
    shutil.copy(sources[1], tmp_path / "images" / f"copy{sources[1].suffix}")

    first = run(cfg)
    df = read_scores(first.uri)
    names = {p.name for p in (tmp_path / "images").iterdir()}
    assert_reconciled(df, names, METHODS)
    assert df["error_code"].isna().all()
    c2s = df[df["method"] == "compare2score"].sort_values("image_id").reset_index(drop=True)
    assert c2s["b"].map(len).eq(5).all() and c2s["converged"].eq(True).all()
    assert c2s["score"].between(0, 100).all()
    b = np.stack(c2s["b"].to_numpy())
    np.testing.assert_allclose(c2s["score"], map_estimate(stored.matrix, b).score, atol=1e-9)
    copy_b = np.asarray(c2s[c2s["uri"].str.contains("/copy.")]["b"].iloc[0])
    others = [0, 2, 3, 4]
    # T = 100 keeps b near 0.5 on a random model: the two orders differ by ~1e-6 to 1e-4, so
    # the tolerance is far tighter than that (float32 logits / 100 move b by ~1e-9).
    np.testing.assert_allclose(copy_b[others], stored.comparisons[others, 1], rtol=0, atol=1e-8)
    qbench = df[df["method"] == "qbench_binary"]
    assert qbench["b"].isna().all() and qbench["score"].between(0, 1).all()

    again = run(_config(tmp_path, tiny_model_dir, run_id="again"))
    redo = read_scores(again.uri).sort_values(["image_id", "method"]).reset_index(drop=True)
    before = df.sort_values(["image_id", "method"]).reset_index(drop=True)
    assert before["score"].equals(redo["score"]) and before["b"].equals(redo["b"])

    # The anchor set is rebuilt in place with other comparisons: resuming would mix P_a
    # matrices, so it is refused (the config, hence the fingerprint, did not change).
    record_path = Path(uri) / "anchors.json"
    record = json.loads(record_path.read_text())
    assert json.loads((Path(first.uri) / "run.json").read_text())["data_digests"]["compare2score"]
    record["comparisons"][0][1] = 0.25
    record["comparisons"][1][0] = 0.75
    record_path.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="changed since the run started"):
        run(cfg)


def test_build_anchors_job_script_without_labels(tmp_path: Path, tiny_model_dir: Path) -> None:
    make_sample_images(tmp_path / "images", 6, seed=4)
    cfg = _config(tmp_path, tiny_model_dir)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # A private local Ray, never someone else's; short, as Ray's socket paths must be.
    env["RAY_TMPDIR"] = ray_dir = tempfile.mkdtemp(prefix="iqa_", dir="/tmp")
    try:
        proc = subprocess.run(
            [sys.executable, str(REPO / "jobs" / "build_anchors.py"), "--config",
             str(tmp_path / "run.yaml"), "--alpha", "3", "--sample", "5", "--baseline",
             "qbench_binary", "--output", str(tmp_path / "unlabelled")],
            capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
        )
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    stored = read_anchor_set(str(tmp_path / "unlabelled"), None)
    assert printed["anchors"] == [a.source_uri for a in stored.anchors]
    assert stored.selection["rule"] == "baseline_quantiles" and stored.selection["scored"] == 5
    scores = [a.baseline_score for a in stored.anchors]
    assert scores == sorted(scores) and all(0 <= s <= 1 for s in scores)
    sources = {Path(a.source_uri.removeprefix("file://")).parent for a in stored.anchors}
    assert sources == {tmp_path / "images"}

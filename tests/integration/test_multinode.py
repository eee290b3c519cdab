"""Multi-node placement: GPU-stage actors only on the GPU node, CPU stages elsewhere, same scores."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from iqa_ray.pipeline import run
from tests.helpers import config, make_corpus, read_scores

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_gpu_stage_lands_on_gpu_node_and_results_match_single_node(tmp_path: Path) -> None:
    make_corpus(tmp_path / "images", 20)
    stages = {"fetch": {"batch_size": 4, "max_actors": 2, "num_cpus": 0.5},
              "decode": {"batch_size": 4, "min_actors": 2, "max_actors": 2, "num_cpus": 0.5},
              "score": {"batch_size": 4, "max_actors": 1, "num_cpus": 0, "num_gpus": 1}}
    multi = config(str(tmp_path / "images"), str(tmp_path / "multi"), stages=stages)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(multi.model_dump(mode="json")))
    temp = tempfile.mkdtemp(prefix="iqm_", dir="/tmp")
    try:
        done = subprocess.run([sys.executable, str(HERE / "multinode_run.py"), str(cfg_path), temp],
                              capture_output=True, text=True, timeout=420)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    report = json.loads(line.removeprefix("RESULT "))
    placement = report["placement"]
    assert placement["ScoreImages"] and set(placement["ScoreImages"]) == {"gpu"}
    assert "head" not in {n for nodes in placement.values() for n in nodes}
    assert set(placement["DecodeImages"]) <= {"cpu_a", "cpu_b", "gpu"}
    assert len(set(placement["FetchImages"]) | set(placement["DecodeImages"])) >= 2, placement

    # The same config on a single node (the session's local Ray, no GPU) gives identical rows.
    single = config(str(tmp_path / "images"), str(tmp_path / "single"))
    ref = read_scores(run(single).uri).sort_values(["image_id", "method"]).reset_index(drop=True)
    got = read_scores(report["uri"]).sort_values(["image_id", "method"]).reset_index(drop=True)
    assert len(got) == len(ref) == 23 * 2
    cols = ["image_id", "method", "score", "error_code"]
    assert got[cols].equals(ref[cols])

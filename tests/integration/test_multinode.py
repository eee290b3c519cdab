"""Multi-node placement: GPU-stage actors only on the GPU node, CPU stages elsewhere, same scores.
Then, on the same simulated cluster, the GPU node is removed mid-run (issue 7, reliability)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from iqa_ray.scoring.pipeline import run
from tests.faults.common import run_bounded
from tests.faults.process_faults import node_loss_config, node_loss_outcome
from tests.helpers import config, make_corpus, read_scores

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
@pytest.mark.timeout(480)
@pytest.mark.usefixtures("ray_local")
def test_gpu_stage_lands_on_gpu_node_and_results_match_single_node(tmp_path: Path) -> None:
    make_corpus(tmp_path / "images", 20)
    stages = {"fetch": {"batch_size": 4, "max_actors": 2, "num_cpus": 0.5},
              "decode": {"batch_size": 4, "min_actors": 2, "max_actors": 2, "num_cpus": 0.5},
              "score": {"batch_size": 4, "max_actors": 1, "num_cpus": 0, "num_gpus": 1}}
    multi = config(str(tmp_path / "images"), str(tmp_path / "multi"), stages=stages)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(multi.model_dump(mode="json")))
    loss_cfg, loss_uris = node_loss_config(tmp_path / "node_loss")
    loss_path = tmp_path / "node_loss.json"
    loss_path.write_text(json.dumps(loss_cfg.model_dump(mode="json")))
    temp = tempfile.mkdtemp(prefix="iqm_", dir="/tmp")
    try:
        rc, out, err = run_bounded([sys.executable, str(HERE / "multinode_run.py"), str(cfg_path),
                                    temp, str(loss_path)], timeout=420)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert rc == 0, err[-4000:]
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
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

    # Node loss: the node holding the score actor went away after a committed file; the run
    # went on (Ray restarted the actor on a replacement node) or a rerun resumed. Either way
    # one row per (image, method), nothing written twice, nothing lost.
    loss = node_loss_outcome(report["node_loss"], loss_uris)
    assert loss.detail["actor_on_removed_node"] and loss.detail["files_before_removal"] >= 1
    tally = loss.tally
    assert tally.rows_expected == tally.rows_current == 16 * 2, tally
    assert tally.duplicates == 0 and tally.missing == 0, tally

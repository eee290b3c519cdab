"""Run the pipeline on a simulated cluster and remove the worker node holding the score actor.

``node_loss(cfg, cluster, gpu_node)`` does it on a cluster someone else started (the multi-node
test's, tests/integration/multinode_run.py). One process can hold only one Ray, so
node_loss_scenario (the fault suite) runs this file in a subprocess on a cluster of its own:
    python tests/faults/node_loss_run.py <config.json> <temp_dir>
Prints one ``RESULT {json}`` line: the run folder, whether the first run completed despite the
loss (Ray restarted the actor on the replacement node) or a rerun with the same run id resumed.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import ray
from ray.cluster_utils import Cluster

from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.pipeline import run, run_paths

RUN_TIMEOUT_S = 120


def score_actor_nodes() -> set[str]:
    """Node ids of the live score-stage actors."""
    return {a["Address"]["NodeID"] for a in ray._private.state.actors().values()
            if "ScoreImages" in a["ActorClassName"] and a["State"] == "ALIVE"}


def first_run(cfg: RunConfig, cluster: Cluster, gpu_node: Any) -> tuple[dict[str, Any], bool]:
    """Start the run in a thread, remove the GPU node once it holds the score actor and a file
    is committed, add a replacement (as an autoscaler would) and wait; returns
    (report, completed)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = run(cfg)
        except Exception as exc:  # the run may die with the node: reported, then resumed
            outcome["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    scores = Path(run_paths(cfg).scores)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while thread.is_alive() and time.monotonic() < deadline and not (
        any(scores.glob("*.parquet")) and gpu_node.node_id in score_actor_nodes()
    ):
        time.sleep(0.2)
    removed_at = time.monotonic()
    report = {"files_before_removal": len(list(scores.glob("*.parquet"))),
              "actor_on_removed_node": gpu_node.node_id in score_actor_nodes()}
    cluster.remove_node(gpu_node)
    cluster.add_node(num_cpus=1, num_gpus=1)
    thread.join(timeout=RUN_TIMEOUT_S)
    report["seconds_after_removal"] = round(time.monotonic() - removed_at, 1)
    report["first_error"] = outcome.get("error") or ("hung" if thread.is_alive() else None)
    return report, "result" in outcome


def node_loss(cfg: RunConfig, cluster: Cluster, gpu_node: Any) -> dict[str, Any]:
    """Run ``cfg`` while removing ``gpu_node``, resume if the run died; return the report."""
    start = time.monotonic()
    report, completed = first_run(cfg, cluster, gpu_node)
    if report["first_error"] == "hung":
        raise RuntimeError(f"the run neither finished nor failed: {report}")
    if not completed:
        run(cfg)  # same run id: resume
    report.update(uri=run_paths(cfg).root, completed_first_try=completed,
                  seconds=round(time.monotonic() - start, 1))
    return report


def main() -> None:
    cfg = RunConfig.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 3, "include_dashboard": False, "temp_dir": sys.argv[2]})
    try:
        gpu = cluster.add_node(num_cpus=1, num_gpus=1)  # a logical GPU: the fake runs on CPU
        ray.init(address=cluster.address, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        print("RESULT " + json.dumps(node_loss(cfg, cluster, gpu)), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()

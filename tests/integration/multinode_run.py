"""Run the pipeline on a simulated multi-node cluster; print placement and output as JSON.

Used by test_multinode.py in a subprocess, because one test process can hold only one Ray.
    python tests/integration/multinode_run.py <config.json> <temp_dir> [<node_loss_config.json>]
With a third argument, a second run on the same cluster then loses the node holding its score
actor (tests/faults/node_loss_run.py); its report is the RESULT's ``node_loss``.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import ray
from ray.cluster_utils import Cluster

from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.pipeline import run
from tests.faults.node_loss_run import node_loss


def main() -> None:
    cfg = RunConfig.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "temp_dir": sys.argv[2]})
    try:
        cpu_a = cluster.add_node(num_cpus=2)
        cpu_b = cluster.add_node(num_cpus=2)
        gpu = cluster.add_node(num_cpus=1, num_gpus=1)  # a logical GPU: the code runs on CPU
        ray.init(address=cluster.address, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        result = run(cfg)
        placement: dict[str, list[str]] = defaultdict(list)
        for actor in ray._private.state.actors().values():
            name = actor["ActorClassName"]
            for stage in ("FetchImages", "DecodeImages", "ScoreImages"):
                if stage in name:
                    placement[stage].append(actor["Address"]["NodeID"])
        roles = {cpu_a.node_id: "cpu_a", cpu_b.node_id: "cpu_b", gpu.node_id: "gpu",
                 cluster.head_node.node_id: "head"}
        report = {
            "uri": result.uri,
            "placement": {k: sorted(roles.get(n, n) for n in v) for k, v in placement.items()},
        }
        if len(sys.argv) > 3:  # the same (warm) cluster: no second start-up to pay for
            loss_cfg = RunConfig.from_dict(json.loads(Path(sys.argv[3]).read_text()))
            report["node_loss"] = node_loss(loss_cfg, cluster, gpu)
        print("RESULT " + json.dumps(report))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()

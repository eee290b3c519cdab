"""Train ATTIQA on Ray Train: `python jobs/pretrain_attiqa.py --config <yaml> --stage pretrain`.

Then `--stage finetune` (example config: jobs/configs/attiqa_train.yaml).

pretrain: the five attribute heads learn the order of CLIP pseudo-labels (a `clip_attributes`
run folder); finetune: the quality head learns MOS. Rerunning with the same run name resumes
from the last checkpoint. On a cluster:
`ray job submit --working-dir . -- python jobs/pretrain_attiqa.py --config ... --stage pretrain`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout / job working dir

from iqa_ray.attiqa.train_config import TrainConfig, load_train_config
from iqa_ray.errors import ConfigError
from iqa_ray.logs import setup_logging


def train(cfg: TrainConfig, address: str | None) -> dict:
    """Connect to Ray (never a bare ray.init(): another cluster may run here); train a stage."""
    import ray

    from iqa_ray.attiqa.train import run_training

    address = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, include_dashboard=False if address == "local" else None)
    summary = dataclasses.asdict(run_training(cfg))
    summary["losses"] = summary["losses"][-10:]  # the full history is in the checkpoint
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML with pretrain:/finetune: blocks")
    parser.add_argument("--stage", choices=("pretrain", "finetune"), default="pretrain")
    parser.add_argument("--set", action="append", default=[], metavar="a.b=value",
                        help="override a config field, e.g. pretrain.max_steps=5000")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    args = parser.parse_args()
    try:  # a bad config, or a checkpoint of another configuration under this run name
        cfg = load_train_config(args.config, args.stage, args.set)
        setup_logging(cfg.resolved_run_name())
        print(json.dumps(train(cfg, args.address), indent=2))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

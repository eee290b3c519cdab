"""Build a Compare2Score anchor set: `python jobs/build_anchors.py --config C.yaml --labels L.csv`.

Without --labels, anchors are chosen by the quantiles of a baseline method's scores on a sample
of the config's input. The set is written to --output, or to the `anchors` URI of the config's
compare2score method. Runs on an embedded local Ray, or via `ray job submit`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout / job working dir

from iqa_ray.errors import ConfigError
from iqa_ray.logs import setup_logging
from iqa_ray.scoring.config import RunConfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML run configuration (model, storage)")
    parser.add_argument("--labels", help="CSV/Parquet with uri, mos[, mos_std] columns")
    parser.add_argument("--output", help="anchor set URI (default: the method's `anchors`)")
    parser.add_argument("--alpha", type=int, default=5, help="number of anchors")
    parser.add_argument("--sample", type=int, default=200, help="unlabelled: images to score")
    parser.add_argument("--baseline", default="qalign_levels", help="unlabelled: scoring method")
    parser.add_argument("--method", help="label of the compare2score method to calibrate")
    parser.add_argument("--set", action="append", default=[], metavar="a.b=value",
                        help="override a config field (repeatable)")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    args = parser.parse_args()
    try:
        from iqa_ray.methods.compare2score.build import AnchorBuildSpec, build_anchors

        cfg = RunConfig.from_yaml(args.config, args.set)
        spec = AnchorBuildSpec(output=args.output, labels=args.labels, alpha=args.alpha,
                               sample=args.sample, baseline=args.baseline, method=args.method)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging("anchors")
    import ray

    # Never a bare ray.init(): on a shared machine it would attach to someone else's cluster.
    address = args.address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, include_dashboard=False if address == "local" else None)
    try:
        uri, anchor_set = build_anchors(cfg, spec)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"uri": uri, "anchors": [a.source_uri for a in anchor_set.anchors],
                      "matrix": anchor_set.matrix.round(4).tolist()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

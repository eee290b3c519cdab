"""Build a Compare2Score anchor set: `python jobs/build_anchors.py --config C.yaml --labels L.csv`.

Without --labels, anchors are chosen by the quantiles of a baseline method's scores on a sample
of the config's input. The set is written to --output, or to the `anchors` URI of the config's
compare2score method. Runs on an embedded local Ray, or via `ray job submit`. With
`--official FOLDER` (anchor_0..anchor_4 exported from the reference's anchor dataset) it writes
the official set with the reference's hard-coded P_a: no model, no Ray, --config optional.
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
    parser.add_argument("--config", help="YAML run configuration (model, storage)")
    parser.add_argument("--official", metavar="FOLDER",
                        help="the reference's five anchors (anchor_0..anchor_4): official set")
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
    if args.official:
        return official(args)
    if not args.config:
        parser.error("--config is required (unless --official with --output)")
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


def official(args: argparse.Namespace) -> int:
    """The official anchor set from the user's copy of the reference's anchors (no model)."""
    from iqa_ray.methods.compare2score.build import AnchorBuildSpec, AnchorRun, comparison_setup
    from iqa_ray.methods.compare2score.official import write_official_anchor_set

    try:
        if args.config:
            cfg = RunConfig.from_yaml(args.config, args.set)
            spec = AnchorBuildSpec(output=args.output, method=args.method)
            _, output, options = comparison_setup(AnchorRun.of(cfg), spec)
        elif args.output:
            output, options = args.output, {}
        else:
            raise ConfigError("--official needs --output or a --config with a compare2score method")
        anchor_set = write_official_anchor_set(args.official, output, options)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"uri": output, "anchors": [a.source_uri for a in anchor_set.anchors],
                      "sha256": [a.sha256 for a in anchor_set.anchors],
                      "matrix": anchor_set.matrix.round(4).tolist()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

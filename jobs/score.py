"""Score a folder or bucket of images: `python jobs/score.py --config jobs/configs/demo.yaml`.

Runs on an embedded local Ray, or on a cluster via
`ray job submit --working-dir . -- python jobs/score.py --config ...`.

Exit status: 0 every image has its rows; 2 configuration error (nothing written); 3 some rows
failed for an infrastructure reason (`fetch_failed`, `model_error`), or a WebDataset shard or
Parquet table could not be read to its end (rerun with `--retry-errors`; set
`fail_on_infra_errors: false` to exit 0 instead); 1 the run itself failed (a rerun with the
same run id resumes). Counts by status, method and error code are in `<run>/run.json`.
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML run configuration")
    parser.add_argument("--list-models", action="store_true",
                        help="print the model catalogue (model.preset names) and exit")
    parser.add_argument("--run-id", help="run folder name (same id = resume)")
    parser.add_argument("--limit", type=int, help="score only the first N images")
    parser.add_argument("--retry-errors", action="store_true", help="recompute retryable errors")
    parser.add_argument("--set", action="append", default=[], metavar="a.b=value",
                        help="override a config field (repeatable)")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.list_models:
        from iqa_ray.backends.catalogue import catalogue_table

        print(catalogue_table())
        return 0
    if not args.config:
        print("error: --config is required (or --list-models)", file=sys.stderr)
        return 2
    overrides = list(args.set)
    if args.run_id:
        overrides.append(f"run_id={json.dumps(args.run_id)}")
    if args.limit:
        overrides.append(f"input.limit={args.limit}")
    if args.retry_errors:
        overrides.append("retry_errors=true")
    try:
        cfg = RunConfig.from_yaml(args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.resolved_run_id())
    import ray

    from iqa_ray.scoring.pipeline import run

    # Never a bare ray.init(): on a shared machine it would attach to someone else's cluster.
    address = args.address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, include_dashboard=False if address == "local" else None)
    try:
        result = run(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"run_id": result.run_id, "uri": result.uri, **result.summary}, indent=2))
    if cfg.fail_on_infra_errors and result.infra_failures:
        print(f"{result.infra_failures} rows (or shards / tables not read to their end) failed "
              "for infrastructure reasons: rerun with --retry-errors", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

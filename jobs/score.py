"""Score a folder or bucket of images: `python jobs/score.py --config jobs/configs/demo.yaml`.

Runs on an embedded local Ray, or on a cluster via
`ray job submit --working-dir . -- python jobs/score.py --config ...`.

Exit status: 0 every image has its rows; 2 configuration error or failed preflight (nothing
written); 3 some rows failed for an infrastructure reason (`fetch_failed`, `model_error`), or a
WebDataset shard or Parquet table could not be read to its end (rerun with `--retry-errors`;
set `fail_on_infra_errors: false` to exit 0 instead); 1 the run itself failed (run.json says
`failed` with the reason; a rerun with the same run id resumes). Counts by status, method and
error code are in `<run>/run.json`; the report is `<run>/report.html`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout / job working dir

from iqa_ray.api.driver import add_job_arguments
from iqa_ray.errors import ConfigError
from iqa_ray.scoring.config import RunConfig


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML run configuration")
    parser.add_argument("--list-models", action="store_true",
                        help="print the model catalogue (model.preset names) and exit")
    add_job_arguments(parser)  # --run-id, --limit, --retry-errors, --set, --address, --no-report
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.list_models:
        from iqa_ray.backends.catalogue import supported_checkpoints

        print(supported_checkpoints(markers=False))
        return 0
    if not args.config:
        print("error: --config is required (or --list-models)", file=sys.stderr)
        return 2
    from iqa_ray.api.driver import job_overrides, run_job

    overrides = job_overrides(args.set, args.run_id, args.limit, args.retry_errors)
    try:
        cfg = RunConfig.from_yaml(args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Preflight (seconds, before Ray starts), Ray, the run, the HTML report, the exit status.
    return run_job(cfg, args.address, report=not args.no_report).code


if __name__ == "__main__":
    sys.exit(main())

"""Keep the good images of scored runs: `python jobs/filter.py --config jobs/configs/filter.yaml`.

Writes <output>/filters/<name>/keep.parquet, reject.parquet (with the reason) and summary.json,
and copies kept images when `copy_to` is set (idempotent). `--dry-run` only prints how many
images each group would keep. No Ray: pandas on the driver, a thread pool for the copies.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout / job working dir

from iqa_ray.analysis.filter_job import FilterJobConfig, run_filter
from iqa_ray.errors import ConfigError
from iqa_ray.logs import setup_logging
from iqa_ray.settings import load_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML filter job (see jobs/configs/filter.yaml)")
    parser.add_argument("--output", help="the scoring output.uri (sets scores.output)")
    parser.add_argument("--run", action="append", default=[], help="run id (repeatable)")
    parser.add_argument("--name", help="output folder name under <output>/filters/")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="a.b=value",
        help="override a field, e.g. 'rule.top_k=3' (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print counts, write nothing")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    flags = {"scores.output": args.output, "scores.runs": args.run or None, "name": args.name}
    overrides = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    try:
        job = load_config(FilterJobConfig, args.config, [*overrides, *args.set])
        setup_logging(f"filter/{job.name}")
        outcome = run_filter(job, dry_run=args.dry_run)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(outcome.per_group.to_string(index=False))
    print(
        json.dumps(
            {"uri": outcome.uri, **outcome.summary, "per_group": None}, indent=2, default=str
        )
    )
    copy = outcome.summary["copy"] or {}
    return 3 if copy.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())

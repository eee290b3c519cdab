"""How good are the scores: `python jobs/evaluate.py --config jobs/configs/evaluate.yaml`.

Joins scored runs to human labels (CSV image path + mos, JSON img_path/gt_score, or image_id
keys) and writes <output>/evaluations/<name>/report.md, metrics.parquet, PNG plots (needs
`pip install 'iqa_ray[report]'`, or `plots: false`) and summary.json. No Ray: pandas on the driver.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout / job working dir

import pandas as pd

from iqa_ray.analysis.evaluate import EvaluateJobConfig, markdown_table, run_evaluation
from iqa_ray.analysis.scores import ALL_GROUP
from iqa_ray.analysis.splits import split_markdown
from iqa_ray.errors import ConfigError
from iqa_ray.logs import setup_logging
from iqa_ray.settings import load_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML evaluate job (see jobs/configs/evaluate.yaml)")
    parser.add_argument("--output", help="the scoring output.uri (sets scores.output)")
    parser.add_argument("--run", action="append", default=[], help="run id (repeatable)")
    parser.add_argument("--labels", help="label file (sets labels.uri)")
    parser.add_argument("--name", help="output folder name under <output>/evaluations/")
    parser.add_argument("--split", action="append", default=[],
                        help="test-split file of image keys (repeatable): adds the median over "
                        "splits (the papers' protocol)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="a.b=value",
        help="override a field, e.g. 'group_by=folder' (repeatable)",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    flags = {
        "scores.output": args.output,
        "scores.runs": args.run or None,
        "labels.uri": args.labels,
        "name": args.name,
        "splits": args.split or None,
    }
    overrides = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    try:
        job = load_config(EvaluateJobConfig, args.config, [*overrides, *args.set])
        setup_logging(f"evaluate/{job.name}")
        outcome = run_evaluation(job)
    except (ConfigError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(outcome.table[outcome.table["group"] == ALL_GROUP], with_group=False))
    if "split_medians" in outcome.summary:
        medians = pd.DataFrame(outcome.summary["split_medians"])
        print(f"\nMedian over {len(outcome.summary['splits'])} test splits:")
        print(split_markdown(medians))
    print(f"report: {outcome.uri}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

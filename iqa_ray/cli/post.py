"""After scoring: the filter and evaluate jobs' arguments and bodies (shared by ``iqa-ray
filter|evaluate`` and ``jobs/filter.py|evaluate.py``), ``report`` and ``models``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from iqa_ray.errors import ConfigError
from iqa_ray.logs import setup_logging
from iqa_ray.settings import load_config

Add = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


def _common(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--output", help="the scoring output.uri (sets scores.output)")
    parser.add_argument("--run", action="append", default=[], help="run id (repeatable)")
    parser.add_argument("--name", help=f"output folder name under <output>/{what}/")
    parser.add_argument("--set", action="append", default=[], metavar="a.b=value",
                        help="override a field, e.g. 'rule.top_k=3' (repeatable)")


def _overrides(args: argparse.Namespace, **extra: object) -> list[str]:
    flags = {"scores.output": args.output, "scores.runs": args.run or None, "name": args.name,
             **extra}
    return [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None] + list(args.set)


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """The filter job's arguments."""
    parser.add_argument("--config", help="YAML filter job (see jobs/configs/filter.yaml)")
    _common(parser, "filters")
    parser.add_argument("--dry-run", action="store_true", help="print counts, write nothing")


def run_filter_command(args: argparse.Namespace) -> int:
    """Filter runs: keep/reject tables, copies, report.html, summary.json; exit 3 when copies
    failed, 2 for a configuration error."""
    from iqa_ray.analysis.filter_job import FilterJobConfig, run_filter

    try:
        job = load_config(FilterJobConfig, args.config, _overrides(args))
        setup_logging(f"filter/{job.name}")
        outcome = run_filter(job, dry_run=args.dry_run)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(outcome.per_group.to_string(index=False))
    report = None if args.dry_run else f"{outcome.uri}/report.html"
    print(json.dumps({"uri": outcome.uri, "report": report, **outcome.summary,
                      "per_group": None}, indent=2, default=str))
    copy = outcome.summary["copy"] or {}
    return 3 if copy.get("failed") else 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """The evaluate job's arguments."""
    parser.add_argument("--config", help="YAML evaluate job (see jobs/configs/evaluate.yaml)")
    _common(parser, "evaluations")
    parser.add_argument("--labels", help="label file (sets labels.uri)")
    parser.add_argument("--split", action="append", default=[],
                        help="test-split file of image keys (repeatable): adds the median over "
                        "splits (the papers' protocol)")


def run_evaluate_command(args: argparse.Namespace) -> int:
    """Evaluate runs against labels: metrics, report.md, report.html, plots, summary.json."""
    from iqa_ray.analysis.evaluate import EvaluateJobConfig, markdown_table, run_evaluation
    from iqa_ray.analysis.scores import ALL_GROUP

    try:
        job = load_config(EvaluateJobConfig, args.config, _overrides(
            args, **{"labels.uri": args.labels, "splits": args.split or None}))
        setup_logging(f"evaluate/{job.name}")
        outcome = run_evaluation(job)
    except (ConfigError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(outcome.table[outcome.table["group"] == ALL_GROUP], with_group=False))
    if "split_medians" in outcome.summary:
        import pandas as pd

        from iqa_ray.analysis.splits import split_markdown

        medians = pd.DataFrame(outcome.summary["split_medians"])
        print(f"\nMedian over {len(outcome.summary['splits'])} test splits:")
        print(split_markdown(medians))
    print(f"report: {outcome.uri}/report.md\nreport: {outcome.uri}/report.html")
    return 0


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """``iqa-ray report``: (re)write a run's report.html."""
    parser.add_argument("--output", required=True, help="the scoring output.uri")
    parser.add_argument("--run", required=True, help="run id")


def run_report_command(args: argparse.Namespace) -> int:
    """Write ``<output>/runs/<run>/report.html`` from the committed rows."""
    from iqa_ray import io
    from iqa_ray.analysis.report_run import write_run_report

    run_uri = io.join(args.output, "runs", args.run)
    if not io.exists(io.join(run_uri, "run.json")):
        print(f"error: no run at {run_uri} (no run.json)", file=sys.stderr)
        return 2
    print(f"report: {write_run_report(run_uri)}")
    return 0


def run_models_command(args: argparse.Namespace) -> int:
    """Print the model catalogue (``model.preset`` names)."""
    from iqa_ray.backends.catalogue import supported_checkpoints

    print(supported_checkpoints(markers=False))
    return 0


def standalone(add: Add, run: Run, description: str, argv: Sequence[str] | None = None) -> int:
    """Run one command as its own program (the ``jobs/*.py`` entry points)."""
    parser = argparse.ArgumentParser(description=description)
    add(parser)
    return run(parser.parse_args(argv))

"""``iqa-ray score PATH... --method M --model X``: the scoring job from a shell, without a YAML
file (or with one: ``--config``), through the same driver as ``jobs/score.py``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from iqa_ray.api.driver import add_job_arguments
from iqa_ray.errors import ConfigError

DEFAULT_OUTPUT = "iqa_ray_output"
SHOW_ROWS = 20


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``score`` command's arguments."""
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="a folder or bucket prefix, or image files (default: the config's)")
    parser.add_argument("--method", action="append", metavar="NAME",
                        help="scoring method (repeatable; default: the config's, or "
                             "qalign_levels). `iqa-ray score --help` lists them")
    parser.add_argument("--model", help="hub id, local folder, bucket prefix, or 'smoke' "
                                        "(random weights: plumbing only)")
    parser.add_argument("--preset", help="a catalogue entry (`iqa-ray models`)")
    parser.add_argument("--output", help=f"output folder or prefix (default: ./{DEFAULT_OUTPUT}, "
                                         "or the config's)")
    parser.add_argument("--config", help="a YAML run configuration to start from")
    add_job_arguments(parser)
    parser.add_argument("--csv", help="also write the score table to this CSV file")


def _config(args: argparse.Namespace) -> Any:
    from iqa_ray.api.driver import job_overrides
    from iqa_ray.api.score import score_config, will_start_local_ray
    from iqa_ray.settings import read_yaml_mapping

    base = read_yaml_mapping(args.config) if args.config else {}
    inputs: Any = args.paths if len(args.paths) != 1 else args.paths[0]
    if not args.paths:
        section = base.get("input") or {}
        inputs = section.get("uri") or section.get("manifest")
        if inputs is None:
            raise ConfigError("give a PATH to score (or --config with input.uri)")
    output = args.output or (base.get("output") or {}).get("uri") or DEFAULT_OUTPUT
    overrides = job_overrides(args.set, None, args.limit, args.retry_errors)
    return score_config(inputs, args.method, args.model, preset=args.preset, output=output,
                        run_id=args.run_id, config=base, overrides=overrides,
                        local_stages=will_start_local_ray(args.address) and "stages" not in base)


def _print_table(outcome: Any, seconds: float, csv: str | None) -> None:
    from iqa_ray.analysis.scores import common_root
    from iqa_ray.api.score import read_run

    result = outcome.result
    summary = result.summary
    frame = read_run(result.uri)
    errors = ", ".join(f"{c}={n}" for c, n in summary["rows_by_error_code"].items() if c != "ok")
    status = summary["rows_by_status"]
    print(f"scored {summary['images']} images x {len(summary['methods'])} method(s) in "
          f"{seconds:.1f} s: {status['ok']} rows ok, {status['error']} error"
          + (f" ({errors})" if errors else ""))
    print(f"run:    {result.uri}")
    if outcome.report:
        print(f"report: {outcome.report}")
    shown = frame[["uri", "method", "score", "status"]].head(SHOW_ROWS).copy()
    root = common_root(frame["uri"])
    shown["uri"] = shown["uri"].str.slice(len(root) + 1 if root else 0)
    print("\n" + shown.to_string(index=False))
    if len(frame) > SHOW_ROWS:
        print(f"... first {SHOW_ROWS} of {len(frame)} rows; all of them: "
              f"pandas.read_parquet('{result.uri}/scores')")
    if csv:
        frame.to_csv(csv, index=False)
        print(f"csv:    {os.path.abspath(csv)}")


def run_score_command(args: argparse.Namespace) -> int:
    """Score, print a summary and the first rows; the job's exit status."""
    from iqa_ray.api.driver import EXIT_CONFIG, run_job

    try:
        cfg = _config(args)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    start = time.monotonic()
    outcome = run_job(cfg, args.address, report=not args.no_report, summary_json=False)
    if outcome.result is not None:
        _print_table(outcome, time.monotonic() - start, args.csv)
    return outcome.code

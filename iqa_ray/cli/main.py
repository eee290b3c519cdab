"""``iqa-ray``: score images, filter and evaluate scored runs, write reports, list models."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from iqa_ray._version import __version__
from iqa_ray.cli import post
from iqa_ray.cli.score import add_score_arguments, run_score_command

COMMANDS = {
    "score": ("score a folder, bucket prefix or image files", add_score_arguments,
              run_score_command),
    "filter": ("keep the good images of scored runs", post.add_filter_arguments,
               post.run_filter_command),
    "evaluate": ("compare scores with human labels (SRCC, PLCC, ...)",
                 post.add_evaluate_arguments, post.run_evaluate_command),
    "report": ("(re)write a run's report.html", post.add_report_arguments,
               post.run_report_command),
    "models": ("list the model catalogue (model.preset names)", lambda p: None,
               post.run_models_command),
}


def parser() -> argparse.ArgumentParser:
    """The ``iqa-ray`` parser with one sub-command per entry of :data:`COMMANDS`."""
    top = argparse.ArgumentParser(prog="iqa-ray", description=__doc__.splitlines()[0])
    top.add_argument("--version", action="version", version=f"iqa_ray {__version__}")
    subs = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add, run) in COMMANDS.items():
        sub = subs.add_parser(name, help=help_text, description=help_text)
        add(sub)
        sub.set_defaults(handler=run)  # not `run`: filter has --run
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``iqa-ray`` console script."""
    args = parser().parse_args(argv)
    return int(args.handler(args))

"""Demo: generate sample images and score them end to end on a local Ray (`make demo`).

--model takes a hub id (default, needs hub access), a local model folder, or `smoke`: a tiny
random-weight model built on the spot, whose scores mean nothing (plumbing only).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from iqa_ray.devtools.samples import make_sample_images
from iqa_ray.devtools.smoke import SMOKE_WARNING, build_tiny_llava

CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="hub id, local folder, or 'smoke'")
    parser.add_argument("--workdir", default="demo_output")
    parser.add_argument("--images", type=int, default=24)
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    make_sample_images(work / "images", args.images)
    config = yaml.safe_load(CONFIG.read_text())
    config["input"]["uri"] = str(work / "images")
    config["output"]["uri"] = str(work / "scores")
    if args.model == "smoke":
        banner = "!" * len(SMOKE_WARNING)
        print(f"{banner}\n{SMOKE_WARNING}\n{banner}", file=sys.stderr)
        model_dir = work / "smoke_model"
        if not (model_dir / "config.json").exists():
            build_tiny_llava(model_dir)
        config["model"]["id"] = str(model_dir)
    elif args.model:
        config["model"]["id"] = args.model
    path = work / "demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"config: {path}\nimages: {work / 'images'}\noutput: {work / 'scores'}", file=sys.stderr)
    # The CLI runs the job's driver (preflight, Ray, run, report) and prints a readable summary.
    command = [sys.executable, "-m", "iqa_ray.cli", "score", "--config", str(path)]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run(command, check=False, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())

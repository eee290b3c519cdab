"""Choose ATTIQA prompt pairs: `python jobs/select_prompts.py --model <clip> --out labels.yaml`.

Ranks candidate (positive, negative) pairs per attribute by their SRCC with known distortion
severities on a proxy set built from clean images (or generated scenes). With `--config` (a
labelling run config such as jobs/configs/attiqa_labels.yaml) it writes that config with the
chosen pairs and model, ready for jobs/score.py; without, a `methods:` snippet. On a cluster,
`--num-gpus 1` runs it as a GPU task.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout / job working dir

import yaml

from iqa_ray.attiqa.selection import SelectionRequest, load_candidates, run_selection


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="CLIP: hub id, local folder, bucket prefix")
    parser.add_argument("--images", help="folder or bucket prefix of clean images (default: "
                        "generated scenes)")
    parser.add_argument("--count", type=int, default=32, help="source images used")
    parser.add_argument("--candidates", help="YAML {attribute: [[positive, negative], ...]}")
    parser.add_argument("--top-k", type=int, default=1, help="pairs kept per attribute")
    parser.add_argument("--config", help="labelling run config to write the chosen pairs into")
    parser.add_argument("--out", required=True, help="where the YAML is written")
    parser.add_argument("--num-gpus", type=float, default=0, help=">0: run as a Ray GPU task")
    args = parser.parse_args()
    base = yaml.safe_load(Path(args.config).read_text()) if args.config else None
    request = SelectionRequest(model=args.model, images=args.images, count=args.count,
                               top_k=args.top_k, base_config=base)
    if args.candidates:
        request = dataclasses.replace(request, candidates=load_candidates(args.candidates))
    if args.num_gpus > 0:
        import ray

        address = os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, include_dashboard=False if address == "local" else None)
        snippet = ray.get(ray.remote(num_gpus=args.num_gpus)(run_selection).remote(request))
    else:
        snippet = run_selection(request)
    Path(args.out).write_text(snippet)
    print(snippet)
    return 0


if __name__ == "__main__":
    sys.exit(main())

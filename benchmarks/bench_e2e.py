"""End-to-end throughput of the scoring job on this machine: N generated images, folder to folder.

Runs the same images through the fake backend (pipeline overhead only) and the tiny random
LLaVA (real transformers forward passes), side by side on one local Ray, and prints a table.
On a CPU machine only the ratio and the pipeline overhead mean something; absolute model speed
needs a GPU and a real model.

    .venv/bin/python benchmarks/bench_e2e.py --images 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray

from iqa_ray.devtools.samples import make_sample_images
from iqa_ray.devtools.smoke import build_tiny_llava
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.pipeline import run


def one_run(images: Path, out: Path, model: dict, methods: list[str]) -> tuple[float, dict]:
    cfg = RunConfig.from_dict({
        "input": {"uri": str(images)},
        "output": {"uri": str(out), "rows_per_file": 1000},
        "model": {**model, "batch_size": 16},
        "image": {"max_side": 336},
        "methods": methods,
        "stages": {"fetch": {"batch_size": 32, "max_actors": 1, "num_cpus": 0.5},
                   "decode": {"batch_size": 16, "max_actors": 2, "num_cpus": 0.5},
                   "score": {"batch_size": 16, "max_actors": 1, "num_cpus": 1}},
    })
    start = time.perf_counter()
    result = run(cfg)
    return time.perf_counter() - start, result.summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="iqa_bench_"))
    make_sample_images(work / "images", args.images, size=(320, 240))
    tiny = build_tiny_llava(work / "tiny")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    methods = ["qalign_levels", "qbench_binary"]
    cases = [("fake", {"backend": "fake"}),
             ("tiny LLaVA (transformers)", {"backend": "transformers", "id": str(tiny)})]
    # Warm-up: the first dataset on a fresh Ray pays worker start-up and imports; run a few
    # images once so both measured rows start from the same warm cluster.
    make_sample_images(work / "warmup", 8, size=(320, 240))
    one_run(work / "warmup", work / "out_warmup", {"backend": "fake"}, methods)
    print(
        f"\n{args.images} images of 320x240, methods {methods}, 2 CPU cores, after a warm-up run\n"
    )
    print(
        "| backend | images | rows | seconds | images/s | rows/s |\n"
        "| --- | --- | --- | --- | --- | --- |"
    )
    for name, model in cases:
        seconds, summary = one_run(work / "images", work / f"out_{len(name)}", model, methods)
        rows = summary["rows_written"]
        print(f"| {name} | {summary['images']} | {rows} | {seconds:.1f} | "
              f"{summary['images'] / seconds:.2f} | {rows / seconds:.2f} |")
    ray.shutdown()


if __name__ == "__main__":
    main()

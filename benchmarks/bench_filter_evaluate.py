"""Benchmark the driver-side post-processing on a synthetic run: read, filter, evaluate.

Run: PYTHONPATH=. python benchmarks/bench_filter_evaluate.py [--images 1000000] [--methods 2]
[--n-boot 1000]
Writes a run of ``images x methods`` score rows (1% decode errors, 1000 folders) into a temporary
folder as 10 Parquet files, then prints seconds for each step: reading and joining the run
(``load_scores``), ``apply_filter`` with a threshold on every method plus top-10% per folder, and
``metrics_table`` (all images, ``--n-boot`` bootstrap resamples) per method. No plots, no copies.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from iqa_ray import io
from iqa_ray.analysis.evaluate import metrics_table
from iqa_ray.analysis.filter import FilterConfig, apply_filter
from iqa_ray.analysis.scores import ScoresConfig, load_scores
from iqa_ray.scoring.outputs import long_schema


def write_run(root: str, n: int, methods: int, seed: int) -> np.ndarray:
    """Write the synthetic run; returns the MOS of each image (index = image position)."""
    rng = np.random.default_rng(seed)
    mos = rng.uniform(1, 5, n)
    uris = np.array([f"{root}/images/f{i % 1000:04d}/{i}.jpg" for i in range(n)], dtype=object)
    bad = rng.random(n) < 0.01
    for part, idx in enumerate(np.array_split(np.arange(n), 10)):
        cols: dict[str, list] = {k: [] for k in long_schema([]).names}
        for m in range(methods):
            score = np.where(bad[idx], np.nan, mos[idx] + rng.normal(0, 0.5 + m, idx.size))
            cols["image_id"].append(idx)
            cols["uri"].append(uris[idx])
            cols["method"].append(np.full(idx.size, f"m{m}", dtype=object))
            cols["score"].append(score)
            cols["error_code"].append(np.where(bad[idx], "decode_failed", None))
            cols["error_message"].append(np.where(bad[idx], "bad", None))
            for name in ("attempt", "width", "height"):
                cols[name].append(np.zeros(idx.size, dtype=np.int32))
        arrays = {k: np.concatenate(v) for k, v in cols.items()}
        table = pa.table(arrays).cast(long_schema([]))
        io.write_parquet_atomic(f"{root}/out/runs/r/scores/part-{part}.parquet", table, None)
    return mos


def timed(label: str, fn: Callable[[], Any]) -> Any:
    """Run fn once; print wall and CPU seconds (CPU is the steadier number on a shared host)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label:<14}{wall:8.2f} s wall {cpu:8.2f} s cpu")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--methods", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        mos = write_run(root, args.images, args.methods, args.seed)
        wide = timed(
            "load_scores", lambda: load_scores(ScoresConfig(output=f"{root}/out", runs=["r"]))
        )
        rule = FilterConfig(
            conditions=[{"method": f"m{m}", "min": 2.0} for m in range(args.methods)],
            top_fraction=0.1,
            group_by="folder",
        )
        result = timed("apply_filter", lambda: apply_filter(wide, rule))
        print(f"{len(wide)} images, {len(result.keep)} kept")
        frame = wide.assign(mos=mos[wide["image_id"].to_numpy()])
        methods = [f"m{m}" for m in range(args.methods)]
        timed("metrics_table", lambda: metrics_table(frame, methods, None, args.n_boot, seed=0))


if __name__ == "__main__":
    main()

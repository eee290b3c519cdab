"""Memory of resume state: the driver reads committed score keys and computes the done set.

Writes synthetic committed score files (N images x 2 methods, files of 100k images) and, in a
fresh process per size, measures peak RSS growth of ``load_score_keys`` + ``done_ids``, then
extrapolates bytes per image to 100M images.

    .venv/bin/python benchmarks/bench_resume_state.py --images 1000000 3000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ["qalign_levels", "qbench_binary"]


def write_scores(folder: Path, n: int, per_file: int = 100_000) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, n, per_file):
        k = min(per_file, n - start)
        ids = rng.integers(0, 1 << 62, k, dtype=np.int64)
        codes = np.where(rng.random(k) < 0.01, "decode_failed", None)
        table = pa.table({
            "image_id": np.repeat(ids, len(METHODS)),
            "uri": [f"s3://bucket/corpus/{start + i:09d}.jpg" for i in range(k) for _ in METHODS],
            "method": METHODS * k,
            "score": rng.random(k * len(METHODS)),
            "error_code": pa.array(np.repeat(codes, len(METHODS)), pa.string()),
            "attempt": pa.array(np.zeros(k * len(METHODS)), pa.int32()),
        })
        pq.write_table(table, folder / f"part-{start // per_file:05d}.parquet")


def measure(folder: str) -> dict:
    """Child process: peak RSS before/after reading keys and computing the done set."""
    from iqa_ray.inputs import done as manifest

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    keys = manifest.load_score_keys(folder, None)
    done = manifest.done_ids(keys, METHODS, retry_errors=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rows": keys.num_rows, "done": len(done), "seconds": seconds,
            "peak_growth_mb": (peak - before) / 1024, "done_mb": done.nbytes / 2**20,
            "keys_mb": keys.nbytes / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    print("| images | score rows | seconds | keys table MB | done set MB "
          "| peak RSS growth MB | bytes/image |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    extrapolate = []
    with tempfile.TemporaryDirectory(prefix="bench_resume_") as tmp:
        for n in args.images:
            folder = Path(tmp) / str(n)
            write_scores(folder, n)
            out = subprocess.run([sys.executable, __file__, "--child", str(folder)], check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            per_image = r["peak_growth_mb"] * 2**20 / n
            extrapolate.append(per_image)
            print(f"| {n} | {r['rows']} | {r['seconds']:.1f} | {r['keys_mb']:.0f} "
                  f"| {r['done_mb']:.0f} | {r['peak_growth_mb']:.0f} | {per_image:.0f} |")
    print(f"\nextrapolated peak for 100M images x {len(METHODS)} methods: "
          f"{max(extrapolate) * 1e8 / 2**30:.1f} GiB (done set alone: {8e8 / 2**30:.2f} GiB)")


if __name__ == "__main__":
    main()

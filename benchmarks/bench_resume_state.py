"""Driver memory of resume state: the 0.2 done set built on the driver vs the resume state
computed by Ray tasks per id range (objects: manifest shards; corpora: done ids by source).

Writes synthetic committed score files (N images x 2 methods, files of 100k images, sorted by
id in row groups of ``SCORE_ROW_GROUP`` rows, as the job writes them) and id-ranged manifest
shards holding the same ids plus 5% not yet scored; then, in a fresh process per (size, path),
measures the driver's peak RSS growth while computing what is still to do:

- ``driver``: ``load_score_keys`` + ``done_ids`` on the driver (iqa_ray 0.2);
- ``tasks``: ``inputs.state.objects_state`` on a local Ray (writes the pending shards);
- ``corpus``: ``inputs.corpus_state.corpus_state`` for a corpus of shards of 1000 samples.

    .venv/bin/python benchmarks/bench_resume_state.py --images 1000000 10000000
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ["qalign_levels", "qbench_binary"]
PATHS = ("driver", "tasks", "corpus")
_PER_FILE = 100_000
_SHARD_ROWS = 200_000
_SAMPLES_PER_SHARD = 1000


def _source(ids: Any, sources: int) -> Any:
    """Synthetic shard URI of each id (about 1000 samples per shard)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    shard = pc.cast(pa.array(ids % sources), pa.string())
    return pc.binary_join_element_wise("s3://bucket/shards/", shard, ".tar", "")


def write_inputs(folder: Path, n: int) -> dict:
    """Score files and manifest shards for ``n`` scored images; returns the shard layout."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from iqa_ray.inputs.shards import ID_SPACE
    from iqa_ray.inputs.state import SCORE_ROW_GROUP

    rng = np.random.default_rng(0)
    total = n + n // 20
    ids = np.unique(rng.integers(0, 1 << 62, total, dtype=np.int64))
    scored = rng.permutation(ids)[:n]
    (folder / "scores").mkdir(parents=True)
    for start in range(0, n, _PER_FILE):
        part = np.sort(scored[start : start + _PER_FILE])
        k = len(part)
        codes = np.where(rng.random(k) < 0.01, "decode_failed", None)
        table = pa.table({
            "image_id": np.repeat(part, len(METHODS)),
            "method": METHODS * k,
            "score": rng.random(k * len(METHODS)),
            "error_code": pa.array(np.repeat(codes, len(METHODS)), pa.string()),
            "attempt": pa.array(np.zeros(k * len(METHODS)), pa.int32()),
            "source": _source(np.repeat(part, len(METHODS)), _sources(n)),
        })
        pq.write_table(table, folder / "scores" / f"part-{start // _PER_FILE:05d}.parquet",
                       row_group_size=SCORE_ROW_GROUP)
    shards = max(1, math.ceil(len(ids) / _SHARD_ROWS))
    bounds = [i * ID_SPACE // shards for i in range(shards + 1)]
    (folder / "manifest").mkdir()
    rows = []
    for i in range(shards):
        part = ids[(ids >= bounds[i]) & (ids < bounds[i + 1])]
        uris = pc.binary_join_element_wise("s3://bucket/corpus/", pc.cast(pa.array(part),
                                           pa.string()), ".jpg", "")
        table = pa.table({"image_id": part, "uri": uris}).sort_by("uri")
        pq.write_table(table, folder / "manifest" / f"part-{i:05d}.parquet", row_group_size=16384)
        rows.append(len(part))
    return {"bounds": bounds, "rows": rows, "images": len(ids), "sources": _sources(n)}


def measure(folder: str, path: str) -> dict:
    """Child process: peak RSS growth of the driver while computing the resume state."""
    from iqa_ray import io

    layout = json.loads((Path(folder) / "layout.json").read_text())
    files = io.list_parquet(f"{folder}/scores", None)
    if path != "driver":
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # Reset the peak (Linux: VmHWM back to the current RSS) so that the growth measured is
    # that of the computation, not of the imports and ray.init before it.
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    pending = _compute(folder, path, files, layout)
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    return {"seconds": seconds, "pending": pending, "peak_growth_mb": (peak - before) / 1024}


def _status_kb(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{name} not in /proc/self/status (Linux only)")


def _compute(folder: str, path: str, files: list[str], layout: dict) -> int:
    """Images still to do (corpus: units to read), by the chosen path."""
    from iqa_ray.inputs import done as done_set

    if path == "driver":
        keys = done_set.load_score_keys(f"{folder}/scores", None)
        done = done_set.done_ids(keys, METHODS, retry_errors=False)
        return layout["images"] - len(done)
    if path == "tasks":
        from iqa_ray.inputs.shards import Shards
        from iqa_ray.inputs.state import objects_state

        uris = tuple(f"{folder}/manifest/part-{i:05d}.parquet" for i in range(len(layout["rows"])))
        rows = tuple(layout["rows"])
        shards = Shards(uris, rows, rows, tuple(layout["bounds"]))
        return objects_state(shards, files, METHODS, False, {}, f"{folder}/pending").counts.pending
    from iqa_ray.inputs.corpora import CorpusUnit
    from iqa_ray.inputs.corpus_state import corpus_state

    sources = sorted(f"s3://bucket/shards/{s}.tar" for s in range(layout["sources"]))
    units = [CorpusUnit(s, 1 << 20, 0, 1 << 20) for s in sources]
    state = corpus_state(units, f"{folder}/index", files, METHODS, False, {}, f"{folder}/done",
                         _PER_FILE)
    return len(state.to_read)


def _sources(images: int) -> int:
    return max(1, images // _SAMPLES_PER_SHARD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    print("| images scored | path | seconds | driver peak RSS growth MB | bytes / image |")
    print("| ---: | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="bench_resume_") as tmp:
        for n in args.images:
            folder = Path(tmp) / str(n)
            layout = write_inputs(folder, n)
            (folder / "layout.json").write_text(json.dumps(layout))
            for path in args.paths:
                out = subprocess.run([sys.executable, __file__, "--child", str(folder), path],
                                     check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                per_image = r["peak_growth_mb"] * 2**20 / n
                print(f"| {n:,} | {path} | {r['seconds']:.1f} | {r['peak_growth_mb']:.0f} "
                      f"| {per_image:.1f} |", flush=True)


if __name__ == "__main__":
    main()

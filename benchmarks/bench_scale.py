"""Memory versus corpus size: the full pipeline (fake backend) over 10k, 30k, 100k tiny images.

Each size runs in a fresh process with its own local Ray; a sampler records the peak RSS of the
driver and of every Ray worker process (the largest single worker and the sum at the busiest
moment). Flat numbers across sizes mean the job streams.

    .venv/bin/python benchmarks/bench_scale.py --sizes 10000 30000 100000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_corpus(folder: Path, n: int) -> None:
    """n distinct 16x16 PNGs in sub-folders of 1000 (fast to write, distinct ids)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / f"{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"{i:07d}.png")


def rss_bytes(pid: int) -> int:
    """Resident set size of a process from /proc (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def descendants(root: int) -> list[int]:
    """PIDs of every process below ``root`` (from the parent links in /proc/*/stat)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parent[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        current = frontier.pop()
        kids = [pid for pid, ppid in parent.items() if ppid == current]
        found += kids
        frontier += kids
    return found


def child(images: str, out: str, temp: str) -> None:
    """One run in this process; prints a JSON line with timings and memory peaks."""
    import os

    import ray

    from iqa_ray.scoring.config import RunConfig
    from iqa_ray.scoring.pipeline import run

    me = os.getpid()
    peaks = {"driver": 0, "worker_max": 0, "workers_sum": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peaks["driver"] = max(peaks["driver"], rss_bytes(me))
            # The local Ray started by this process (GCS, raylet, workers) descends from it;
            # other clusters on the machine do not.
            rss = [r for r in (rss_bytes(pid) for pid in descendants(me)) if r]
            if rss:
                peaks["worker_max"] = max(peaks["worker_max"], max(rss))
                peaks["workers_sum"] = max(peaks["workers_sum"], sum(rss))
            time.sleep(0.5)

    ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=temp,
             log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    cfg = RunConfig.from_dict({
        "input": {"uri": images}, "output": {"uri": out, "rows_per_file": 50_000},
        "model": {"backend": "fake"}, "methods": ["qbench_binary"],
        "stages": {"fetch": {"batch_size": 256, "max_actors": 1, "num_cpus": 0.5},
                   "decode": {"batch_size": 256, "max_actors": 2, "num_cpus": 0.5},
                   "score": {"batch_size": 256, "max_actors": 1, "num_cpus": 1}},
    })
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    summary = run(cfg).summary
    seconds = time.perf_counter() - start
    stop.set()
    files = list(Path(out).rglob("part-*.parquet"))
    print("RESULT " + json.dumps({"seconds": seconds, "images": summary["images"],
                                  "missing": summary["images_missing"], "files": len(files),
                                  **peaks}))
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(tempfile.mkdtemp(prefix="iqa_scale_"))
    print("| images | seconds | images/s | files | driver peak RSS MB "
          "| largest worker MB | all workers MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in args.sizes:
        images = work / f"images_{n}"
        make_corpus(images, n)
        temp = tempfile.mkdtemp(prefix="iqs_", dir="/tmp")
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(images), str(work / f"out_{n}"), temp],
            capture_output=True, text=True,
        )
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"| {n} | failed: {done.stderr[-300:]!r} |")
            continue
        r = json.loads(line.removeprefix("RESULT "))
        mb = 1024 * 1024
        print(f"| {r['images']} | {r['seconds']:.0f} | {r['images'] / r['seconds']:.0f} "
              f"| {r['files']} | {r['driver'] / mb:.0f} | {r['worker_max'] / mb:.0f} "
              f"| {r['workers_sum'] / mb:.0f} |", flush=True)


if __name__ == "__main__":
    main()

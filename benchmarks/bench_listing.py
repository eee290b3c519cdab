"""Listing a bucket prefix: one sequential listing on the driver vs manifest shards by sub-prefix.

Starts a moto S3 server on 127.0.0.1, writes N empty ``.jpg`` keys under K sub-prefixes, then
times, side by side in one run, (a) one recursive ``find`` on the driver (the old path) and
(b) ``listing.build_shards`` (Ray tasks per group of sub-prefixes, then id-range merge tasks).

    .venv/bin/python benchmarks/bench_listing.py --objects 20000 --prefixes 64
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("moto server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--prefixes", type=int, default=64)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import numpy as np
    import ray
    import s3fs

    from iqa_ray import io, listing
    from iqa_ray.config import InputConfig

    proc, endpoint = start_moto()
    try:
        options = {"client_kwargs": {"endpoint_url": endpoint}, "skip_instance_cache": True}
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir("corpus")
        keys = [f"corpus/images/p{i % args.prefixes:04d}/{i:08d}.jpg" for i in range(args.objects)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: fs.pipe(k, b""), keys))
        cfg = InputConfig(uri="s3://corpus/images", storage_options=options)
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        rows = []
        with tempfile.TemporaryDirectory(prefix="bench_listing_") as tmp:
            for _ in range(args.repeats):
                start = time.perf_counter()
                flat = io.list_files(cfg.uri or "", options, cfg.extensions)
                rows.append(("driver: one recursive find", time.perf_counter() - start, len(flat), 1))
                start = time.perf_counter()
                shards = listing.build_shards(cfg, tmp, {}, np.array([], np.int64), shard_rows=5000,
                                              parallelism=args.parallelism)
                rows.append((f"build_shards (parallelism {args.parallelism})", time.perf_counter() - start,
                             shards.images, len(shards.uris)))
        ray.shutdown()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"{args.objects} keys under {args.prefixes} sub-prefixes, moto on loopback, "
          f"{os.cpu_count()} CPUs")
    print("| path | seconds | keys found | shards |")
    print("| --- | --- | --- | --- |")
    for name, seconds, n, shards in rows:
        print(f"| {name} | {seconds:.1f} | {n} | {shards} |")
    best = {name: min(r[1] for r in rows if r[0] == name) for name in dict.fromkeys(r[0] for r in rows)}
    (seq, par) = list(best.values())
    print(f"\nbest of {args.repeats}: sequential / sharded = {seq / par:.2f}x")


if __name__ == "__main__":
    main()

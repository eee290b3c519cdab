"""Listing a bucket prefix: one sequential listing on the driver vs manifest shards in parallel.

Starts a moto S3 server on 127.0.0.1, writes N empty ``.jpg`` keys under K sub-prefixes (or,
with ``--flat``, directly under the prefix with random hex names, as generative-model outputs
usually are), then times, side by side in one run, (a) one recursive ``find`` on the driver
(the old path) and (b) ``listing.build_shards`` (Ray tasks per group of sub-prefixes, or per
key range of a flat prefix, then id-range merge tasks).

    .venv/bin/python benchmarks/bench_listing.py --objects 20000 --prefixes 64
    .venv/bin/python benchmarks/bench_listing.py --objects 20000 --flat
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
    parser.add_argument("--flat", action="store_true",
                        help="keys directly under the prefix (random hex names)")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import numpy as np
    import ray
    import s3fs

    from iqa_ray import io
    from iqa_ray.inputs import shards as listing
    from iqa_ray.inputs.config import InputConfig

    proc, endpoint = start_moto()
    try:
        options = {"client_kwargs": {"endpoint_url": endpoint}, "skip_instance_cache": True}
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir("corpus")
        if args.flat:
            rng = np.random.default_rng(0)
            keys = [f"corpus/images/{rng.bytes(8).hex()}.jpg" for _ in range(args.objects)]
        else:
            keys = [f"corpus/images/p{i % args.prefixes:04d}/{i:08d}.jpg"
                    for i in range(args.objects)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: fs.pipe(k, b""), keys))
        cfg = InputConfig(uri="s3://corpus/images", storage_options=options)
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        rows = []
        with tempfile.TemporaryDirectory(prefix="bench_listing_") as tmp:
            for _ in range(args.repeats):
                start = time.perf_counter()
                flat = io.list_files(cfg.uri or "", options, cfg.extensions)
                elapsed = time.perf_counter() - start
                rows.append(("driver: one recursive find", elapsed, len(flat), 1, 1))
                start = time.perf_counter()
                units = len(listing.plan_units(cfg, args.parallelism))
                shards = listing.build_shards(cfg, tmp, {}, np.array([], np.int64), shard_rows=5000,
                                              parallelism=args.parallelism)
                rows.append((f"build_shards (parallelism {args.parallelism})",
                             time.perf_counter() - start, shards.images, units,
                             len(shards.uris)))
        ray.shutdown()
        chains = request_chains(cfg, args.parallelism, len(keys))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    layout = "directly under the prefix" if args.flat else f"under {args.prefixes} sub-prefixes"
    print(f"{args.objects} keys {layout}, moto on loopback, {os.cpu_count()} CPUs")
    print("| path | seconds | keys found | listing units | shards |")
    print("| --- | --- | --- | --- | --- |")
    for name, seconds, n, units, shards in rows:
        print(f"| {name} | {seconds:.1f} | {n} | {units} | {shards} |")
    best = {
        name: min(r[1] for r in rows if r[0] == name)
        for name in dict.fromkeys(r[0] for r in rows)
    }
    (seq, par) = list(best.values())
    print(f"\nbest of {args.repeats}: sequential / sharded = {seq / par:.2f}x")
    print("\nlist requests (the time on real S3 is about the longest chain x one request's "
          "latency; moto here pays per request for the whole bucket, so it favours fewer):")
    print("| path | requests | longest chain of dependent requests |\n| --- | --- | --- |")
    for name, total, chain in chains:
        print(f"| {name} | {total} | {chain} |")


def request_chains(cfg, parallelism: int, n_keys: int) -> list[tuple[str, int, int]]:
    """List requests of both paths: (path, total, longest dependent chain)."""
    import math

    from iqa_ray import io
    from iqa_ray.inputs import prefixes
    from iqa_ray.inputs import shards as listing

    driver_calls = []
    original = io.list_page

    def counting(*args, **kwargs):
        driver_calls.append(kwargs.get("delimiter") is not None)
        return original(*args, **kwargs)

    io.list_page = counting
    try:
        units = listing.plan_units(cfg, parallelism)
    finally:
        io.list_page = original
    def pages(unit: listing.Unit) -> int:  # a "prefixes" unit lists its prefixes one by one
        parts = [unit] if unit.kind == "keyrange" else [
            listing.Unit("prefixes", (item,)) for item in unit.items]
        return sum(max(1, math.ceil(len(listing.unit_uris(p, cfg)) / prefixes._PAGE))
                   for p in parts)

    per_unit = [pages(u) for u in units if u.kind in ("keyrange", "prefixes")]
    sequential = max(1, math.ceil(n_keys / prefixes._PAGE))
    # Folder levels are listed one after another; key-range probes run in a thread pool.
    level_calls = sum(driver_calls)
    probe_rounds = math.ceil((len(driver_calls) - level_calls) / prefixes._PROBE_THREADS)
    return [("driver: one recursive find", sequential, sequential),
            (f"build_shards (parallelism {parallelism})", len(driver_calls) + sum(per_unit),
             level_calls + probe_rounds + max(per_unit, default=0))]


if __name__ == "__main__":
    main()

"""Storage requests and throughput per input kind: the same N images as loose objects, as
WebDataset shards and as Parquet tables, scored side by side with the fake backend on moto.

Starts a moto S3 server on 127.0.0.1 with two counting proxies in front of it (the fault proxy
of ``tests/faults`` with no rules): every request the job makes to the input bucket goes
through one, every request to the output bucket through the other. Uploads the corpus three
ways (directly, uncounted), then runs the scoring job once per kind per round (kinds alternate
within a round; a small warm-up run first) and prints images/s and requests per image.

    .venv/bin/python benchmarks/bench_corpora.py --images 2000 --per-shard 200 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_listing import start_moto
from tests.faults.s3_proxy import S3FaultProxy

KINDS = ("objects", "webdataset", "parquet")


def upload(records: list[dict], direct: dict, per_shard: int) -> dict[str, str]:
    """The corpus three ways in bucket ``corpus``; returns kind -> input URI."""
    import s3fs

    from iqa_ray.devtools.corpora import KEY, image_of, write_parquet_tables, write_webdataset

    fs = s3fs.S3FileSystem(**direct)
    fs.mkdir("corpus")
    fs.mkdir("scores")

    def put(record: dict) -> None:
        ext, data = image_of(record)
        fs.pipe(f"corpus/loose/{record[KEY]}.{ext}", data)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, records))
    write_webdataset("s3://corpus/wds", records, per_shard, direct)
    write_parquet_tables("s3://corpus/pq", records, per_shard, max(1, per_shard // 4), direct)
    return {"objects": "s3://corpus/loose", "webdataset": "s3://corpus/wds",
            "parquet": "s3://corpus/pq"}


def one_run(kind: str, uri: str, run_id: str, inputs: dict, outputs: dict) -> tuple[float, dict]:
    from iqa_ray.scoring.config import RunConfig
    from iqa_ray.scoring.pipeline import run

    source = {"uri": uri, "storage_options": inputs}
    if kind != "objects":
        source["format"] = kind
    cfg = RunConfig.from_dict({
        "run_id": run_id, "input": source,
        "output": {"uri": "s3://scores/out", "storage_options": outputs, "rows_per_file": 1000},
        "model": {"backend": "fake", "batch_size": 32},
        "methods": ["qalign_levels", "qbench_binary"],
        "stages": {"fetch": {"batch_size": 32, "max_actors": 2, "num_cpus": 0.5},
                   "decode": {"batch_size": 32, "max_actors": 2, "num_cpus": 0.5},
                   "score": {"batch_size": 32, "max_actors": 1, "num_cpus": 0.5}},
    })
    start = time.perf_counter()
    result = run(cfg)
    return time.perf_counter() - start, result.summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--per-shard", type=int, default=200,
                        help="samples per WebDataset shard and rows per Parquet file")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 72), metavar=("W", "H"))
    args = parser.parse_args()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import ray

    from iqa_ray.devtools.corpora import sample_records

    proc, endpoint = start_moto()
    try:
        with S3FaultProxy(endpoint, max_requests=10**7, max_seconds=7200) as inp, \
                S3FaultProxy(endpoint, max_requests=10**7, max_seconds=7200) as out:
            options = {"skip_instance_cache": True}
            direct = {**options, "client_kwargs": {"endpoint_url": endpoint}}
            inputs = {**options, "client_kwargs": {"endpoint_url": inp.endpoint}}
            outputs = {**options, "client_kwargs": {"endpoint_url": out.endpoint}}
            records = sample_records(args.images, size=tuple(args.size))
            uris = upload(records, direct, args.per_shard)
            ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
            one_run("webdataset", uris["webdataset"], "warmup", direct, direct)
            rows = measure(args.repeats, uris, inputs, outputs, inp, out)
            ray.shutdown()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    report(rows, args)


def measure(repeats: int, uris: dict, inputs: dict, outputs: dict, inp: S3FaultProxy,
            out: S3FaultProxy) -> dict[str, dict]:
    """Best time per kind over the rounds, and the requests of its first run."""
    rows: dict[str, dict] = {}
    for round_ in range(repeats):
        for kind in KINDS:
            before, counts = (inp.total, out.total), dict(inp.counts)
            seconds, summary = one_run(kind, uris[kind], f"{kind}-{round_}", inputs, outputs)
            got = rows.setdefault(kind, {"seconds": seconds, "images": summary["images"],
                                         "in": inp.total - before[0],
                                         "out": out.total - before[1],
                                         "by": _by_request(inp.counts, counts)})
            got["seconds"] = min(got["seconds"], seconds)
    return rows


def _by_request(now: dict, before: dict) -> str:
    """Input requests of one run as GET / HEAD / LIST (a GET of no key is a listing)."""
    kinds = {"GET": 0, "HEAD": 0, "LIST": 0}
    for (method, key), n in now.items():
        name = "LIST" if method == "GET" and not key else method
        kinds[name] = kinds.get(name, 0) + n - before.get((method, key), 0)
    return " / ".join(str(kinds[k]) for k in ("GET", "HEAD", "LIST"))


def report(rows: dict[str, dict], args: argparse.Namespace) -> None:
    print(f"{args.images} images of {args.size[0]}x{args.size[1]}, {args.per_shard} per shard / "
          f"table, fake backend, moto on loopback, {os.cpu_count()} CPUs, best of "
          f"{args.repeats}\n")
    print("| input | images | seconds | images/s | input requests (GET / HEAD / LIST) "
          "| input requests / image | output requests / image | input requests vs objects |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = rows["objects"]["in"] / max(1, rows["objects"]["images"])
    for kind, r in rows.items():
        per = r["in"] / max(1, r["images"])
        print(f"| {kind} | {r['images']} | {r['seconds']:.1f} | {r['images'] / r['seconds']:.1f} "
              f"| {r['in']} ({r['by']}) | {per:.4f} | {r['out'] / max(1, r['images']):.4f} "
              f"| {base / per if per else float('inf'):.0f}x fewer |")


if __name__ == "__main__":
    main()

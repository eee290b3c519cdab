"""The reliability suite, once, from real runs: prints the README "Reliability" table.

Starts a moto S3 server on loopback and a private local Ray, then runs every scenario of
tests/faults with the fake backend (hostile inputs through S3 while the score actor kills itself
mid-batch once; storage faults through the fault proxy, then --retry-errors; the driver SIGKILLed
and the run resumed; a worker node removed from a simulated cluster) and reconciles each run's
rows: the same scenarios tests/integration/test_reliability.py asserts on.

    .venv/bin/python benchmarks/fault_suite.py [--skip-node-loss]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Set before Ray starts so its workers inherit them: test credentials, nothing leaves loopback.
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                  AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                  HF_HUB_OFFLINE="1")
os.environ.pop("AWS_PROFILE", None)

import ray

from tests.conftest import moto_server
from tests.faults.common import Outcome, markdown_table
from tests.faults.process_faults import driver_kill_scenario, node_loss_scenario
from tests.faults.storage_faults import (
    hostile_scenario,
    make_bucket,
    storage_fault_scenario,
)


def run_suite(work: Path, endpoint: str, node_loss: bool) -> list[Outcome]:
    """Every scenario, in order; prints a line per scenario as it finishes."""
    address = ray.get_runtime_context().gcs_address
    bucket = make_bucket(endpoint, "fault-suite")
    steps = [
        ("hostile", lambda d: hostile_scenario(endpoint, bucket, d)[0]),
        ("storage", lambda d: _storage(endpoint, bucket, d, address)),
        ("driver", lambda d: driver_kill_scenario(d, address)),
    ]
    if node_loss:
        steps.append(("node", node_loss_scenario))
    outcomes = []
    for name, step in steps:
        start = time.monotonic()
        outcome = step(work / name)
        print(f"{outcome.scenario}: {outcome.tally} in {time.monotonic() - start:.0f}s",
              file=sys.stderr)
        outcomes.append(outcome)
    return outcomes


def _storage(endpoint: str, bucket: str, workdir: Path, address: str) -> Outcome:
    got = storage_fault_scenario(endpoint, bucket, workdir, address)
    print(f"  exit status: faults {got.failing.returncode}, --retry-errors (infra errors "
          f"tolerated) {got.retried.returncode}; GETs per key: first job {got.gets_first}, "
          f"retry job {got.gets_retry}", file=sys.stderr)
    return got.outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-node-loss", action="store_true",
                        help="leave out the simulated-cluster scenario (the slowest)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="iqa_faults_", dir="/tmp"))
    ray_temp = tempfile.mkdtemp(prefix="iqf_", dir="/tmp")
    start = time.monotonic()
    try:
        with moto_server() as endpoint:
            ray.init(address="local", num_cpus=8, num_gpus=0, include_dashboard=False,
                     _temp_dir=ray_temp, log_to_driver=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
            try:
                outcomes = run_suite(work, endpoint, not args.skip_node_loss)
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ray_temp, ignore_errors=True)
    print(markdown_table(outcomes))
    total = sum(o.tally.rows_expected for o in outcomes)
    print(f"\n{len(outcomes)} scenarios, {total} rows expected, "
          f"{sum(o.tally.duplicates for o in outcomes)} duplicates, "
          f"{sum(o.tally.missing for o in outcomes)} missing, {time.monotonic() - start:.0f}s")


if __name__ == "__main__":
    main()

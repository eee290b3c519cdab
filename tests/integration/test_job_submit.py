"""`ray job submit` of jobs/score.py to a head node this test starts (loopback, private ports)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, free_port, wait_for_port
from tests.helpers import assert_reconciled, make_corpus, read_scores

RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture
def ray_head() -> Iterator[tuple[str, dict[str, str]]]:
    """`ray start --head --block` on 127.0.0.1 with every port private; stopped by PID."""
    temp = tempfile.mkdtemp(prefix="iqh_", dir="/tmp")
    gcs, dashboard = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    worker_base = 20000 + (os.getpid() % 200) * 100
    ports = {
        "--port": gcs, "--dashboard-port": dashboard, "--ray-client-server-port": free_port(),
        "--node-manager-port": free_port(), "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port(),
        "--min-worker-port": worker_base, "--max-worker-port": worker_base + 99,
    }
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=6",
           "--num-gpus=0", f"--temp-dir={temp}", "--disable-usage-stats"]
    cmd += [f"{flag}={port}" for flag, port in ports.items()]
    head = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_port(dashboard, timeout=90)
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        # `ray start --block` stops the processes it started when it is signalled; the group
        # kill is a backstop for this PID's own children only.
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)
        time.sleep(1)
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_scores_a_folder(tmp_path: Path, ray_head: tuple[str, dict]) -> None:
    address, env = ray_head
    expected = make_corpus(tmp_path / "images", 12)
    config = {
        "input": {"uri": str(tmp_path / "images")},
        "output": {"uri": str(tmp_path / "out"), "rows_per_file": 8},
        "model": {"backend": "fake"},
        "methods": ["qalign_levels", "qbench_binary"],
        "stages": {"fetch": {"max_actors": 1, "num_cpus": 0.5},
                   "decode": {"max_actors": 1, "num_cpus": 0.5},
                   "score": {"max_actors": 1, "num_cpus": 1}},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    submit = [RAY, "job", "submit", f"--address={address}", f"--working-dir={REPO}", "--",
              "python", "jobs/score.py", "--config", str(path), "--run-id", "submitted"]
    done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout.lower()
    df = read_scores(str(tmp_path / "out" / "runs" / "submitted"))
    assert_reconciled(df, set(expected), ["qalign_levels", "qbench_binary"])

    # A failing entrypoint (an unknown config key) makes `ray job submit` exit non-zero.
    path.write_text(yaml.safe_dump({**config, "typo_key": 1}))
    failed = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0
    assert "typo_key" in failed.stdout + failed.stderr

    # The README's relative paths resolve inside the uploaded working directory of a submitted
    # job: the preflight says so, with the fix, before the job starts any work.
    relative = {**config, "input": {"uri": "demo_output/images"},
                "output": {"uri": "demo_output/scores"}}
    path.write_text(yaml.safe_dump(relative))
    refused = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
    text = refused.stdout + refused.stderr
    assert refused.returncode != 0, text[-3000:]
    assert "input.uri 'demo_output/images' is a relative path" in text, text[-3000:]
    assert "ray job submit" in text and "absolute path" in text


def test_score_job_on_a_local_ray_whose_cpus_the_stages_fill(tmp_path: Path) -> None:
    # The stage actors reserve all but a quarter CPU of the machine: every other task of the
    # plan (reading the manifest shards, writing scores) must fit in what is left, or the job
    # waits for ever (it did when Ray Data's read tasks asked for a whole CPU).
    cpus = os.cpu_count() or 2
    expected = make_corpus(tmp_path / "images", 6)
    config = {
        "input": {"uri": str(tmp_path / "images")},
        "output": {"uri": str(tmp_path / "out"), "rows_per_file": 8},
        "model": {"backend": "fake"},
        "methods": ["qalign_levels"],
        "stages": {"fetch": {"max_actors": 1, "num_cpus": cpus - 0.75},
                   "decode": {"max_actors": 1, "num_cpus": 0.25},
                   "score": {"max_actors": 1, "num_cpus": 0.25}},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [
            sys.executable, "jobs/score.py", "--config", str(path),
            "--run-id", "busy", "--address", "local",
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    df = read_scores(str(tmp_path / "out" / "runs" / "busy"))
    assert_reconciled(df, set(expected), ["qalign_levels"])

"""Shared fixtures: a private local Ray, a moto S3 server on loopback, a tiny LLaVA on disk."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before Ray starts so that local workers inherit them: nothing may leave loopback.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.pop("AWS_PROFILE", None)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    """Block until something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def ray_tmp() -> Iterator[str]:
    """A short private temp dir for Ray (socket paths must stay under ~100 characters)."""
    path = tempfile.mkdtemp(prefix="iqr_", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_local(ray_tmp: str) -> Iterator[None]:
    """A private local Ray cluster for the session (never attaches to another cluster)."""
    import ray

    ray.init(
        address="local", num_cpus=8, num_gpus=0, include_dashboard=False,
        _temp_dir=ray_tmp, log_to_driver=False,
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield
    ray.shutdown()


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A real S3 HTTP endpoint (moto server) on 127.0.0.1, stopped by PID at the end."""
    port = free_port()
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The session's moto server (see ``moto_server``)."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(moto_endpoint: str, request: pytest.FixtureRequest) -> tuple[str, dict]:
    """A fresh bucket on the moto server: (s3://name, storage_options)."""
    import s3fs

    name = "b-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    options = {"client_kwargs": {"endpoint_url": moto_endpoint}, "skip_instance_cache": True}
    fs = s3fs.S3FileSystem(**options)
    if not fs.exists(name):
        fs.mkdir(name)
    return f"s3://{name}", options


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA saved to disk, loaded back by tests through from_pretrained."""
    from iqa_ray.devtools.smoke import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP (model + processor) saved to disk, for the ATTIQA tests."""
    from iqa_ray.devtools.tiny_attiqa import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def upload_folder(local: Path, bucket_uri: str, options: dict) -> None:
    """Copy a local folder's files into a bucket prefix."""
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{bucket_uri.removeprefix('s3://')}/{path.relative_to(local).as_posix()}")

"""Preflight: each problem a new user hits first is one message with its fix, exit 2, within
seconds, before Ray starts, and nothing is written (jobs/score.py as a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from iqa_ray.backends.checks import missing_files
from iqa_ray.devtools.samples import make_sample_images
from iqa_ray.io.probe import explain
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.preflight import submitted_job_problems
from tests.conftest import REPO, free_port

FAST_S = 90  # about 1-3 s each on an idle machine; the old failure mode took minutes


def _config(images: Path, out: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"input": {"uri": str(images)}, "output": {"uri": out},
                            "model": {"backend": "fake"}, "methods": ["qalign_levels"]}
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def _score(tmp_path: Path, config: dict[str, Any], env: dict[str, str] | None = None,
           drop: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess[str], float]:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    full = {k: v for k, v in os.environ.items() if k not in drop}
    full.update(env or {})
    full.pop("RAY_ADDRESS", None)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "jobs/score.py", "--config", str(path)], cwd=REPO,
                          env=full, capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - start


def _assert_refused(done: subprocess.CompletedProcess[str], seconds: float,
                    *needles: str) -> None:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "the run cannot start (nothing was written)" in done.stderr
    for needle in needles:
        assert needle in done.stderr, (needle, done.stderr[-2000:])
    assert "Started a local Ray" not in done.stderr  # refused before Ray started
    assert seconds < FAST_S


@pytest.fixture
def images(tmp_path: Path) -> Path:
    make_sample_images(tmp_path / "images", 3)
    return tmp_path / "images"


def test_offline_hub_id_fails_fast_and_points_to_the_smoke_model(
    tmp_path: Path, images: Path
) -> None:
    out = tmp_path / "out"
    config = _config(images, str(out), model={"backend": "transformers",
                                               "id": "some-org/not-cached-model"})
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}  # an empty hub cache
    done, seconds = _score(tmp_path, config, env)
    _assert_refused(done, seconds, "some-org/not-cached-model", "HF_HUB_OFFLINE=1",
                    "MODEL=smoke", "local folder")
    assert not out.exists()


def test_local_model_folder_missing_files_is_refused(tmp_path: Path, images: Path) -> None:
    model = tmp_path / "half_model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llava"}))
    out = tmp_path / "out"
    config = _config(images, str(out), model={"backend": "transformers", "id": str(model)})
    done, seconds = _score(tmp_path, config)
    _assert_refused(done, seconds, "incomplete", "weights", "tokenizer files",
                    "image processor config", "save_pretrained")
    assert not out.exists()


def test_unwritable_output_is_refused_and_nothing_is_left(tmp_path: Path, images: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # root ignores permissions; a file as parent never works
    done, seconds = _score(tmp_path, _config(images, str(blocker / "out")))
    _assert_refused(done, seconds, "output.uri", "cannot write to", "is a file, not a folder")
    assert blocker.read_text() == "not a folder"


def test_missing_and_empty_inputs_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done, seconds = _score(tmp_path, _config(tmp_path / "nowhere", str(out)))
    _assert_refused(done, seconds, "nowhere", "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    done, seconds = _score(tmp_path, _config(empty, str(out)))
    _assert_refused(done, seconds, "holds no files with an image extension", "input.extensions")
    assert not out.exists()


def test_s3_output_without_credentials_is_refused(
    tmp_path: Path, images: Path, s3_bucket: tuple[str, dict]
) -> None:
    import s3fs

    bucket, options = s3_bucket
    config = _config(images, f"{bucket}/out",
                     output={"storage_options": {"client_kwargs": options["client_kwargs"]}})
    no_keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    done, seconds = _score(tmp_path, config, env, drop=no_keys)
    _assert_refused(done, seconds, "no credentials found", "AWS_ACCESS_KEY_ID")
    assert "Traceback" not in done.stderr
    assert s3fs.S3FileSystem(**options).find(bucket.removeprefix("s3://")) == []


def test_s3_endpoint_unreachable_is_refused_in_seconds(tmp_path: Path, images: Path) -> None:
    dead = {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{free_port()}"}}
    config = _config(images, "s3://nobody/out", output={"storage_options": dead})
    done, seconds = _score(tmp_path, config)
    _assert_refused(done, seconds, "unreachable", "endpoint_url")


def test_relative_paths_in_a_submitted_job_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What Ray's job supervisor sets for a submitted entrypoint (see also test_job_submit.py).
    job_env = {"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(
        {"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}, "metadata": {}})}
    done, seconds = _score(tmp_path, _config(Path("demo_output/images"), "demo_output/scores"),
                           job_env)
    _assert_refused(done, seconds, "input.uri 'demo_output/images' is a relative path",
                    "output.uri 'demo_output/scores' is a relative path", "ray job submit",
                    "absolute path")
    # Outside a submitted job the same paths are fine (resolved against the current directory).
    cfg = RunConfig.from_dict(_config(Path("demo_output/images"), "demo_output/scores"))
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert submitted_job_problems(cfg) == []
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", job_env["RAY_JOB_CONFIG_JSON_ENV_VAR"])
    assert len(submitted_job_problems(cfg)) == 2


def test_missing_files_rules() -> None:
    def read(name: str) -> bytes:
        return json.dumps({"weight_map": {"a": "model-1.safetensors",
                                          "b": "model-2.safetensors"}}).encode()

    full = ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"]
    assert missing_files(full, read, "vlm") == []
    assert missing_files(["config.json", "model.safetensors"], read, "weights") == []
    sharded = ["config.json", "model.safetensors.index.json", "model-1.safetensors",
               "tokenizer.json", "processor_config.json"]
    assert missing_files(sharded, read, "vlm") == [
        "weight shards ['model-2.safetensors'] named in model.safetensors.index.json"]


@pytest.mark.parametrize(("error", "needle"), [
    (RuntimeError("NoCredentialsError: Unable to locate credentials"), "AWS_ACCESS_KEY_ID"),
    (OSError("Could not connect to the endpoint URL: http://x"), "endpoint_url"),
    (PermissionError("AccessDenied"), "access denied"),
])
def test_storage_errors_are_explained_with_a_fix(error: Exception, needle: str) -> None:
    assert needle in explain(error, "s3://b/p", "read")

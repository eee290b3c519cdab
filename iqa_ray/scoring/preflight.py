"""Preflight of a scoring run, on the driver before Ray starts (seconds, nothing written): the
paths make sense where the job runs, the input exists and holds images, every model resolves,
and the output is writable. Every problem is one message with its fix.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from iqa_ray import io
from iqa_ray.backends.checks import ModelSource, looks_local, source_problems
from iqa_ray.errors import ConfigError
from iqa_ray.io import probe
from iqa_ray.scoring.config import RunConfig

logger = logging.getLogger(__name__)
# Set by Ray's job supervisor in the environment of a submitted job's entrypoint.
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
_GLOB = ("*", "?", "[")


class PreflightError(ConfigError):
    """The run cannot start; ``problems`` holds one message (with its fix) per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = [f"  - {p}".replace(". Fix: ", ".\n    Fix: ") for p in self.problems]
        super().__init__("\n".join(["the run cannot start (nothing was written):", *lines]))


def preflight(cfg: RunConfig, *, check_output: bool = True) -> None:
    """Check everything a run needs before it starts.

    The output probe (write + delete) runs only when every other check passed, so a failed
    preflight writes nothing.

    Raises:
        PreflightError: one or more problems, each with its fix.
    """
    problems = submitted_job_problems(cfg)
    problems += input_problems(cfg)
    problems += model_problems(cfg)
    if not problems and check_output:
        problems += output_problems(cfg)
    if problems:
        raise PreflightError(problems)


def submitted_job() -> dict[str, Any] | None:
    """The runtime environment of the submitted Ray job this process is, else None."""
    raw = os.environ.get(JOB_ENV)
    if raw is None:
        return None
    try:
        return dict(json.loads(raw).get("runtime_env") or {})
    except (ValueError, AttributeError):
        return {}


def _local_relative(uri: str | None) -> bool:
    return bool(uri) and not io.is_remote(uri) and not os.path.isabs(uri.removeprefix("file://"))


def submitted_job_problems(cfg: RunConfig) -> list[str]:
    """Relative local paths in a submitted job resolve inside the job's working directory."""
    env = submitted_job()
    if env is None:
        return []
    paths = {"input.uri": cfg.input.uri, "input.manifest": cfg.input.manifest,
             "output.uri": cfg.output.uri}
    if looks_local(cfg.model.id) and os.path.exists(cfg.model.id):
        paths["model.id"] = cfg.model.id
    where = (f"the job's working directory {os.getcwd()}" + (
        " (the copy that --working-dir uploaded, deleted with the job)"
        if env.get("working_dir") else ""))
    return [
        f"{key} {value!r} is a relative path, and this is a job submitted with `ray job submit`: "
        f"it resolves inside {where}, not where you ran the command. Fix: give an absolute path "
        "that exists on the cluster's nodes, or a bucket URI (s3://bucket/prefix/)"
        for key, value in paths.items() if _local_relative(value)
    ]


def input_problems(cfg: RunConfig) -> list[str]:
    """The input exists, is readable, and (for a prefix) holds at least one wanted file."""
    inp = cfg.input
    opts = inp.storage_options
    if inp.manifest is not None:
        return _manifest_problems(inp.manifest, opts)
    uri = inp.uri or ""
    try:
        found = probe.info(uri, opts, "input.uri")
        if found.get("type") != "directory":
            if uri.lower().endswith(inp.wanted_suffixes):
                return []
            return [f"input.uri {uri} is a file without an image extension "
                    f"({', '.join(inp.extensions)}). Fix: give the folder, or set input.extensions"]
        has = probe.has_wanted_file(uri, opts, inp.wanted_suffixes)
    except probe.StorageProblem as exc:
        return [str(exc)]
    if has is False:
        # An empty input is an error, not an empty success: _SUCCESS over zero rows looks like
        # a finished run and hides a wrong path or extension filter.
        return [f"input.uri {uri} holds no files with an image extension "
                f"({', '.join(inp.extensions)}): nothing to score. Fix: check the path, or set "
                "input.extensions"]
    return []


def _manifest_problems(uri: str, opts: dict[str, Any]) -> list[str]:
    try:
        if any(c in uri for c in _GLOB):
            if probe.glob_count(uri, opts) == 0:
                return [f"input.manifest {uri}: the pattern matches no file. Fix: check it"]
            return []
        found = probe.info(uri, opts, "input.manifest")
        parquet = found.get("type") == "file" and uri.lower().endswith(".parquet")
        if parquet and io.parquet_metadata(uri, opts).num_rows == 0:
            return [f"input.manifest {uri} has no rows: nothing to score"]
    except probe.StorageProblem as exc:
        return [str(exc)]
    return []


def model_problems(cfg: RunConfig) -> list[str]:
    """The shared model (when a method uses it) and every method's own model resolve."""
    from iqa_ray.scoring.stages import run_methods

    methods = run_methods(cfg)
    problems: list[str] = []
    if cfg.model.backend != "fake" and any(m.uses_vlm for _, m in methods):
        problems += source_problems(ModelSource.of(cfg.model))
    for i, (label, method) in enumerate(methods):
        params = method.params
        model_id = getattr(params, "model", None)
        if method.uses_vlm or not isinstance(model_id, str):
            continue
        src = ModelSource(model_id, getattr(params, "revision", None),
                          getattr(params, "storage_options", None), kind="weights",
                          what=f"methods.{i}.params.model ({label})")
        problems += source_problems(src)
    return problems


def output_problems(cfg: RunConfig) -> list[str]:
    """The output location accepts a write (a probe object, deleted at once)."""
    try:
        probe.check_writable(cfg.output.uri, cfg.output.storage_options)
    except probe.StorageProblem as exc:
        return [f"output.uri: {exc}"]
    return []

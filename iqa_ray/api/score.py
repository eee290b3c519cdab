"""``iqa_ray.score``: score a folder, a bucket prefix or a list of images from Python and get a
DataFrame back, through the same preflight, Ray pipeline and bucket layout as the job."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from iqa_ray import io
from iqa_ray.api.driver import execute
from iqa_ray.schema import Col
from iqa_ray.scoring.config import RunConfig

SMOKE = "smoke"
# Stage resources when this call starts its own Ray on this machine: small enough for a 2-core
# laptop (resources never change scores; an explicit ``stages`` in ``config`` wins).
LOCAL_STAGES: dict[str, Any] = {
    "fetch": {"max_actors": 1, "num_cpus": 0.25},
    "decode": {"max_actors": 2, "num_cpus": 0.5},
    "score": {"max_actors": 1, "num_cpus": 1.0},
}
Inputs = str | Path | Sequence[str | Path]


def _uri(path: str | Path) -> str:
    text = str(path)
    return text if io.is_remote(text) else os.path.abspath(os.path.expanduser(
        text.removeprefix("file://")))


def manifest_path(uris: list[str]) -> str:
    """A manifest of ``uris`` in the temp folder, named by its content: the same list gives the
    same path, so the run's fingerprint (and a named run's resume) is stable across calls."""
    digest = hashlib.sha256("\n".join(uris).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "iqa_ray" / "manifests" / f"{digest}.parquet"
    if not path.exists():
        io.write_parquet_atomic(str(path), pa.table({Col.URI: pa.array(uris, pa.string())}), None)
    return str(path)


def input_section(inputs: Inputs) -> dict[str, Any]:
    """``input:`` for a folder or prefix (one string naming no single local file) or for a list
    of image files (a manifest)."""
    if isinstance(inputs, (str, Path)):
        uri = _uri(inputs)
        if io.is_remote(uri) or not os.path.isfile(uri):
            return {"uri": uri}
        inputs = [uri]
    # Local files as file:// URIs, as a folder listing names them: same image, same image_id.
    uris = [u if io.is_remote(u) else io.to_uri(*io.filesystem(u)) for u in map(_uri, inputs)]
    if not uris:
        raise ValueError("no images given")
    return {"manifest": manifest_path(uris)}


def smoke_model(cache: str | None = None) -> str:
    """The tiny random-weight smoke model, built once under the cache (scores mean nothing)."""
    from iqa_ray.devtools.smoke import build_tiny_llava, is_smoke_model

    folder = Path(cache or os.environ.get("IQA_RAY_CACHE") or
                  Path.home() / ".cache" / "iqa_ray") / "smoke-model"
    if not is_smoke_model(str(folder)):
        build_tiny_llava(folder)
    return str(folder)


def score_config(inputs: Inputs, method: str | Sequence[Any] | None = None,
                 model: str | None = None, *, preset: str | None = None, output: str,
                 run_id: str | None = None, config: dict[str, Any] | None = None,
                 local_stages: bool = False, overrides: Sequence[str] = ()) -> RunConfig:
    """The run configuration of a :func:`score` call or an ``iqa-ray score`` command.

    ``config`` is a config tree (as in a YAML file) that the other arguments override;
    ``model="smoke"`` builds and uses the smoke model; ``overrides`` are ``a.b=value`` strings.
    """
    from iqa_ray.settings import apply_overrides

    data: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v)
                            for k, v in (config or {}).items()}
    section = input_section(inputs)
    other = "uri" if "manifest" in section else "manifest"  # exactly one of the two
    data["input"] = {k: v for k, v in data.get("input", {}).items() if k != other} | section
    data["output"] = {**data.get("output", {}), "uri": _uri(output)}
    if method is not None:
        data["methods"] = [method] if isinstance(method, str) else list(method)
    model_cfg = dict(data.get("model", {}))
    if model is not None:
        model_cfg["id"] = smoke_model() if model == SMOKE else model
    if preset is not None:
        model_cfg["preset"] = preset
    data["model"] = model_cfg
    if run_id is not None:
        data["run_id"] = run_id
    if local_stages and "stages" not in data:
        data["stages"] = LOCAL_STAGES
    return RunConfig.from_dict(apply_overrides(data, list(overrides)), "iqa_ray.score")


def will_start_local_ray(address: str | None) -> bool:
    """True when scoring would start a new Ray in this process (no address, no cluster)."""
    import ray

    return not (address or os.environ.get("RAY_ADDRESS") or ray.is_initialized())


def read_run(run_uri: str, storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """A run's current rows (latest attempt per image and method), sorted by uri and method."""
    from iqa_ray.analysis.scores import read_run_scores

    frame = read_run_scores(run_uri, storage_options)
    return frame.sort_values([Col.URI, Col.METHOD], kind="stable", ignore_index=True)


def score(inputs: Inputs, method: str | Sequence[Any] = "qalign_levels",
          model: str | None = None, *, preset: str | None = None, output: str | None = None,
          run_id: str | None = None, address: str | None = None,
          config: dict[str, Any] | None = None, report: bool = False) -> pd.DataFrame:
    """Score images and return one row per (image, method).

    Args:
        inputs: a folder or bucket prefix, one image, or a list of image paths or URIs.
        method: a method name, or a list of names or ``{method, name, params}`` dicts.
        model: a hub id, a local folder, a bucket prefix, or ``"smoke"`` (random weights,
            plumbing only). Default: the config's (``llava-hf/llava-interleave-qwen-0.5b-hf``).
        preset: a catalogue entry (``iqa-ray models``) instead of ``model``.
        output: where the run folder goes (``<output>/runs/<run_id>/``); default a temporary
            folder removed after reading (then no report).
        run_id: name the run (the same name resumes it).
        address: a Ray cluster; default ``RAY_ADDRESS``, an already initialised Ray, else a
            local Ray started in this process (kept for later calls; ``ray.shutdown()`` ends it).
        config: any other configuration, as a YAML-like dict (e.g. ``{"image": {...}}``).
        report: also write ``report.html`` in the run folder (needs ``output``).

    Returns:
        The score table: ``image_id``, ``uri``, ``method``, ``score``, ``status``,
        ``error_code``, ``error_message``, ``attempt``, ``width``, ``height`` and each method's
        extra columns; ``attrs["run"]`` holds the run id, folder and summary.

    Raises:
        iqa_ray.errors.ConfigError: the configuration or the preflight failed (nothing written).
        RuntimeError: the run failed after starting (see ``run.json``).
    """
    if report and output is None:
        raise ValueError("report=True needs output=: the run folder must outlive the call")
    temporary = tempfile.mkdtemp(prefix="iqa_ray_") if output is None else None
    try:
        cfg = score_config(inputs, method, model, preset=preset, output=output or temporary or "",
                           run_id=run_id, config=config,
                           local_stages=will_start_local_ray(address))
        result, _ = execute(cfg, address, quiet=True, report=report)
        frame = read_run(result.uri, cfg.output.storage_options)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    frame.attrs["run"] = {"run_id": result.run_id, "uri": None if temporary else result.uri,
                          "summary": result.summary}
    return frame

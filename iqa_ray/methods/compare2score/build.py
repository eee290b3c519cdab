"""Build a Compare2Score anchor set: choose anchors, measure P_a with the model, write the set.

Anchors come from a labelled table (the paper's rule: per MOS interval, the smallest MOS std)
or, without labels, from the quantiles of a baseline method's scores on a sample of the run's
input. P_a comes from every ordered anchor pair run on one Ray actor that holds the backend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from iqa_ray import io
from iqa_ray.backends.config import ModelConfig
from iqa_ray.errors import ConfigError, RowError
from iqa_ray.images import ImageConfig, load_image
from iqa_ray.inputs.config import InputConfig
from iqa_ray.inputs.ids import image_id
from iqa_ray.inputs.shards import build_manifest
from iqa_ray.methods.base import ImageBatch, method_context
from iqa_ray.methods.compare2score.anchor_set import (
    Anchor,
    AnchorSet,
    Calibration,
    anchor_file,
    sha256_hex,
    write_anchor_set,
)
from iqa_ray.methods.compare2score.maths import anchor_matrix_from_pairs, soft_comparison
from iqa_ray.methods.compare2score.method import (
    Compare2ScoreParams,
    comparison_prompt,
    decode_anchors,
    prompt_layout,
)
from iqa_ray.methods.compare2score.selection import (
    empty_mos_intervals,
    select_anchors_by_mos,
    select_anchors_by_quantiles,
)
from iqa_ray.methods.registry import get_method
from iqa_ray.settings import StageResources, StrictModel

if TYPE_CHECKING:
    from ray.actor import ActorHandle

logger = logging.getLogger(__name__)


class AnchorBuildSpec(StrictModel):
    """What ``build_anchors`` does besides the run config (CLI arguments of the job)."""

    output: str | None = Field(None, description="Anchor set URI (default: the method's anchors).")
    labels: str | None = Field(None, description="CSV/Parquet with uri, mos[, mos_std] columns.")
    alpha: int = Field(5, ge=2, description="Number of anchors (paper: 5).")
    sample: int = Field(200, ge=2, description="Without labels: input images scored for quantiles.")
    baseline: str = Field("qalign_levels", description="Without labels: the method scoring them.")
    method: str | None = Field(None, description="Label of the compare2score method to calibrate.")


@dataclass(frozen=True)
class AnchorRun:
    """What building an anchor set takes from a run's configuration.

    Attributes:
        input: the run's input (sampled for baseline quantiles; anchor images read with its
            storage options).
        model: the model P_a is measured with.
        image: guards and downscale applied to anchors and candidates, as to query images.
        read_attempts: tries per object read.
        actor: resources of the worker that holds the model (the score stage's).
        methods: the run's methods as (method, label, params).
        output_storage_options: storage options of an explicit ``--output`` set.
    """

    input: InputConfig
    model: ModelConfig
    image: ImageConfig
    read_attempts: int
    actor: StageResources
    methods: tuple[tuple[str, str, dict[str, Any]], ...]
    output_storage_options: dict[str, Any]

    @classmethod
    def of(cls, run: Any) -> AnchorRun:
        """From a ``RunConfig`` (read by attribute: this layer does not import the scoring
        layer that defines it)."""
        return cls(run.input, run.model, run.image, run.retry.attempts, run.stages.score,
                   tuple((m.method, m.name, dict(m.params)) for m in run.methods),
                   dict(run.output.storage_options))


class AnchorWorker:
    """Ray actor holding the run's backend: baseline scores and anchor-pair comparisons."""

    def __init__(self, run: AnchorRun) -> None:
        self._run = run
        self._ctx = method_context(run.model, run.image)

    def baseline_scores(self, uris: list[str], method_name: str) -> list[float | None]:
        """Scores of the images at ``uris`` (None where reading, decoding or scoring failed)."""
        method = get_method(method_name)({})
        method.setup(self._ctx)
        scores: list[float | None] = [None] * len(uris)
        step = self._run.actor.batch_size
        for start in range(0, len(uris), step):
            chunk = [(start + i, self._load(u)) for i, u in enumerate(uris[start : start + step])]
            ok = [(i, image) for i, image in chunk if image is not None]
            if not ok:
                continue
            ids = np.array([image_id(uris[i]) for i, _ in ok], dtype=np.int64)
            result = method.score_batch(ImageBatch(ids, [image for _, image in ok]), self._ctx)
            for (i, _), score in zip(ok, result.columns["score"], strict=True):
                scores[i] = score
        return scores

    def comparisons(
        self, images: list[np.ndarray], keys: list[str], params: Compare2ScoreParams
    ) -> np.ndarray:
        """b for every ordered pair (row i first, column j second); NaN diagonal."""
        n = len(images)
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        layout = self.prompt_layout(params)
        prompts = [comparison_prompt(images[i], images[j], (keys[i], keys[j]), params, layout)
                   for i, j in pairs]
        self._ctx.vlm.check_words(prompts[:1])
        outputs = self._ctx.vlm.next_token_logits(prompts)
        logits = [o for o in outputs if isinstance(o, np.ndarray)]
        if len(logits) != len(outputs):  # P_a needs every pair: no partial matrix
            failed = next(o for o in outputs if isinstance(o, RowError))
            raise RuntimeError(f"{len(outputs) - len(logits)} anchor comparisons failed: {failed}")
        out = np.full((n, n), np.nan)
        b = soft_comparison(np.stack(logits), params.temperature)
        for (i, j), value in zip(pairs, b, strict=True):
            out[i, j] = value
        return out

    def prompt_layout(self, params: Compare2ScoreParams) -> str | None:
        """The comparison prompt's layout for the loaded model's family."""
        return prompt_layout(params, self._ctx.vlm.family)

    def _load(self, uri: str) -> np.ndarray | None:
        run = self._run
        try:
            data = io.read_bytes(uri, run.input.storage_options, attempts=run.read_attempts,
                                 max_bytes=run.image.max_bytes)
            return load_image(data, run.image)[0]
        except RowError as err:
            logger.warning("anchor candidate %s skipped: %s", uri, err)
            return None


def comparison_setup(
    run: AnchorRun, spec: AnchorBuildSpec
) -> tuple[Compare2ScoreParams, str, dict[str, Any]]:
    """The prompt to calibrate, the output URI and its storage options.

    Taken from the config's compare2score method (``spec.method`` or the first one), so that one
    config file builds the anchors and then scores with them; ``spec.output`` overrides the URI.
    """
    found = [params for method, label, params in run.methods if method == "compare2score"
             and (spec.method is None or label == spec.method)]
    if spec.method is not None and not found:
        raise ConfigError(f"no compare2score method labelled {spec.method!r} in the config")
    if found:
        params = Compare2ScoreParams.model_validate(found[0])
        return params, spec.output or params.anchors, params.anchor_storage_options
    if spec.output is None:
        raise ConfigError("give --output, or a compare2score method with `anchors` in the config")
    return Compare2ScoreParams(anchors=spec.output), spec.output, run.output_storage_options


def candidates_from_labels(
    uri: str, storage_options: dict[str, Any] | None, alpha: int
) -> tuple[list[Anchor], dict[str, Any]]:
    """Anchors (without file or digest yet) chosen from a labelled table by the paper's rule."""
    table = io.read_table_file(uri, storage_options)
    missing = {"uri", "mos"} - set(table.column_names)
    if missing:
        raise ConfigError(f"label table {uri!r} lacks columns {sorted(missing)}")
    uris = [str(u) for u in table.column("uri").to_pylist()]
    mos = np.asarray(table.column("mos").to_pylist(), dtype=np.float64)
    std = (np.asarray(table.column("mos_std").to_pylist(), dtype=np.float64)
           if "mos_std" in table.column_names else None)
    chosen = select_anchors_by_mos(mos, std, alpha)
    empty = empty_mos_intervals(mos, alpha).tolist()
    if empty:
        logger.warning("MOS intervals %s hold no image: filled with the nearest unused ones", empty)
    anchors = [Anchor(str(image_id(uris[k])), uris[k], "", "", float(mos[k]),
                      None if std is None or np.isnan(std[k]) else float(std[k])) for k in chosen]
    return anchors, {"rule": "mos_intervals", "labels": uri, "candidates": len(uris),
                     "empty_intervals": empty}


def candidates_from_baseline(
    run: AnchorRun, spec: AnchorBuildSpec, worker: ActorHandle
) -> tuple[list[Anchor], dict[str, Any]]:
    """Anchors at the quantiles of a baseline method's scores on a sample of the run's input."""
    table = build_manifest(run.input)
    # The smallest image ids: a stable pseudo-random sample (ids are URI hashes).
    order = np.argsort(table.column("image_id").to_numpy(), kind="stable")[: spec.sample]
    uris = [table.column("uri")[int(k)].as_py() for k in order]
    import ray

    scores: list[float | None] = ray.get(worker.baseline_scores.remote(uris, spec.baseline))
    usable = [k for k, s in enumerate(scores) if s is not None and np.isfinite(s)]
    values = np.array([scores[k] for k in usable], dtype=np.float64)
    chosen = select_anchors_by_quantiles(values, spec.alpha)
    if not get_method(spec.baseline).higher_is_better:
        chosen = chosen[::-1]  # anchors are stored worst first
    anchors = [Anchor(str(image_id(uris[usable[k]])), uris[usable[k]], "", "",
                      baseline_score=float(values[k])) for k in chosen]
    return anchors, {"rule": "baseline_quantiles", "baseline": spec.baseline,
                     "candidates": len(uris), "scored": len(usable)}


def build_anchors(run: Any, spec: AnchorBuildSpec) -> tuple[str, AnchorSet]:
    """Choose anchors, measure P_a on one Ray actor, and write the set; returns (uri, set).

    ``run``: a ``RunConfig`` or an :class:`AnchorRun`. ``ray.init`` is the caller's job. The
    actor takes the score stage's CPUs and GPUs.
    """
    import ray

    run = run if isinstance(run, AnchorRun) else AnchorRun.of(run)
    params, out_uri, out_options = comparison_setup(run, spec)
    if spec.labels is None:
        get_method(spec.baseline)  # an unknown name fails here, before a model is loaded
    actor: Any = ray.remote(num_cpus=run.actor.num_cpus, num_gpus=run.actor.num_gpus)(AnchorWorker)
    worker = actor.remote(run)
    try:
        if spec.labels is not None:
            chosen, selection = candidates_from_labels(spec.labels, run.input.storage_options,
                                                       spec.alpha)
        else:
            chosen, selection = candidates_from_baseline(run, spec, worker)
        data = [io.read_bytes(a.source_uri, run.input.storage_options) for a in chosen]
        anchors = tuple(
            replace(a, file=anchor_file(k, a.source_uri), sha256=sha256_hex(d))
            for k, (a, d) in enumerate(zip(chosen, data, strict=True))
        )
        images = decode_anchors(data, run.image)
        keys = [a.key for a in anchors]
        comparisons: np.ndarray = ray.get(worker.comparisons.remote(images, keys, params))
        layout: str | None = ray.get(worker.prompt_layout.remote(params))
    finally:
        ray.kill(worker)
    calibration = Calibration(run.model.id, run.model.revision, params.question,
                              params.answer_prefix, tuple(params.words), params.temperature,
                              layout)
    anchor_set = AnchorSet(anchors, anchor_matrix_from_pairs(comparisons), calibration,
                           {**selection, "alpha": spec.alpha}, comparisons)
    write_anchor_set(out_uri, anchor_set, data, out_options)
    logger.info("anchor set of %d anchors written to %s", len(anchors), out_uri)
    return out_uri, anchor_set

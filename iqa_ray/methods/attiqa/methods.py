"""The ``clip_attributes`` (CLIP pseudo-labels) and ``attiqa`` (trained network) scoring methods.

Neither uses the shared VLM (``uses_vlm = False``): the score stage never loads the LMM for a
run made of these methods only. Models load once per actor in ``setup`` and are kept with
``ctx.shared``, so two methods with the same model share one copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from iqa_ray.backends.config import ModelConfig
from iqa_ray.errors import ConfigError, RowError
from iqa_ray.methods.attiqa.prompts import (
    ATTRIBUTES,
    DEFAULT_PROMPTS,
    PromptPair,
    attribute_scores,
    check_prompt_table,
    flatten_pairs,
)
from iqa_ray.methods.base import (
    ImageBatch,
    MethodContext,
    MethodParams,
    MethodResult,
    ScoringMethod,
)
from iqa_ray.methods.registry import register_method
from iqa_ray.schema import ErrorCode
from iqa_ray.settings import check_storage_options

DEFAULT_CLIP_ID = "openai/clip-vit-base-patch32"
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
ScoreChoice = Literal["mean", "sharpness", "contrast", "brightness", "colorfulness", "noisiness"]
_ATTRIBUTE_COLUMNS: dict[str, pa.DataType] = {a: pa.float64() for a in ATTRIBUTES}
ScoreFn = Callable[[list[np.ndarray]], tuple[np.ndarray, np.ndarray]]


def score_isolated(fn: ScoreFn, images: list[np.ndarray]) -> MethodResult:
    """Run ``fn`` (images -> (score (N,), attributes (N, 5))) on the batch; if it raises, rerun
    image by image so only the failing rows get ``model_error``. Non-finite scores are
    ``unparsable`` rows."""
    n = len(images)
    columns: dict[str, list[Any]] = {c: [None] * n for c in ("score", *ATTRIBUTES)}
    errors: list[RowError | None] = [None] * n
    try:
        parts = [(list(range(n)), fn(images))] if n else []
    except Exception:
        parts = []
        for i in range(n):
            try:
                parts.append(([i], fn([images[i]])))
            except Exception as exc:  # the per-row boundary of a model forward
                errors[i] = RowError(ErrorCode.MODEL_ERROR, f"{type(exc).__name__}: {exc}")
    for rows, (score, attributes) in parts:
        for k, i in enumerate(rows):
            if not np.all(np.isfinite(attributes[k])) or not np.isfinite(score[k]):
                errors[i] = RowError(ErrorCode.UNPARSABLE, "non-finite score from the model")
                continue
            columns["score"][i] = float(score[k])
            for a, attribute in enumerate(ATTRIBUTES):
                columns[attribute][i] = float(attributes[k, a])
    return MethodResult(columns, errors)


class ClipAttributeParams(MethodParams):
    """CLIP model and the prompt pairs of each attribute."""

    model: str = Field(DEFAULT_CLIP_ID, description="CLIP: hub id, local folder or bucket prefix.")
    revision: str | None = Field(None, description="Hub revision (commit sha recommended).")
    dtype: Dtype = Field("auto", description="`auto`: bfloat16 on GPU, float32 on CPU.")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options.")
    cache_dir: str | None = Field(None, description="Node-local cache for bucket models.")
    prompts: dict[str, tuple[PromptPair, ...]] = Field(
        default_factory=lambda: dict(DEFAULT_PROMPTS),
        description="Attribute -> (positive, negative) pairs; several pairs are averaged.")
    logit_scale: float | None = Field(None, gt=0, description="None: the model's learned scale "
                                      "(100 for released CLIP checkpoints).")
    score: ScoreChoice = Field(
        "mean", description="`score` column: the mean of the five attributes, or one of them.")

    _check_options = field_validator("storage_options")(check_storage_options)
    _check_prompts = field_validator("prompts")(check_prompt_table)


@register_method("clip_attributes")
class ClipAttributes(ScoringMethod):
    """ATTIQA pseudo-labels: five CLIP antonym-prompt attribute scores per image (1 pass).

    Paper: Kwon et al., "ATTIQA", ACCV 2024, arXiv 2406.01020 (attribute scores as pseudo-labels);
    score form of CLIP-IQA, Wang et al., AAAI 2023, arXiv 2207.12396 (github.com/IceClear/
    CLIP-IQA): ``s_a = softmax(logit_scale * [cos(x, t+_a), cos(x, t-_a)])[0]``.
    Columns: ``sharpness``, ``contrast``, ``brightness``, ``colorfulness``, ``noisiness``
    (P(positive prompt); "noisiness" is P("Clean photo."), so higher = cleaner) and ``score``.
    Deviations: (1) with several pairs per attribute the pair probabilities are averaged;
    (2) ``score`` (mean of the five by default) is ours, the paper only uses the five;
    (3) images go through the CLIP processor's resize and centre crop, whereas CLIP-IQA feeds
    full-size images to a ResNet-50 CLIP without positional embeddings (transformers has no
    ResNet CLIP); (4) the default model is ViT-B/32, a choice, not the paper's.
    """

    Params = ClipAttributeParams
    score_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    extra_columns: ClassVar[dict[str, pa.DataType]] = _ATTRIBUTE_COLUMNS
    uses_vlm: ClassVar[bool] = False

    def setup(self, ctx: MethodContext) -> None:
        """Load CLIP once per actor (shared via ``ctx.shared``) and embed every prompt once."""
        from iqa_ray.methods.attiqa.clip import ClipAttributeModel

        p = self.params
        source = ModelConfig(id=p.model, revision=p.revision, storage_options=p.storage_options,
                             cache_dir=p.cache_dir)
        self.model = ctx.shared(("attiqa", "clip", p.model, p.revision, p.dtype),
                                lambda: ClipAttributeModel(source, p.dtype))
        self.pairs, self.groups = flatten_pairs(p.prompts)
        texts = [t for pair in self.pairs for t in (pair.positive, pair.negative)]
        self.model.text_embeddings(texts)

    def attribute_scores(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 5) attribute scores of RGB uint8 images, in ``ATTRIBUTES`` order."""
        probs = self.model.pair_probabilities(images, self.pairs, self.params.logit_scale)
        return attribute_scores(probs, self.groups)

    def _score(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        attributes = self.attribute_scores(images)
        if self.params.score == "mean":
            return attributes.mean(axis=1), attributes
        return attributes[:, ATTRIBUTES.index(self.params.score)], attributes

    def score_batch(self, batch: ImageBatch, ctx: MethodContext) -> MethodResult:
        """One CLIP image pass for the batch; text embeddings come from the actor's cache."""
        return score_isolated(self._score, list(batch.query))


class AttiqaParams(MethodParams):
    """Where the trained ATTIQA network lives."""

    model: str = Field(..., description="Folder or bucket prefix written by "
                       "jobs/pretrain_attiqa.py (config.json, model.safetensors, attiqa.json).")
    dtype: Dtype = Field("auto", description="`auto`: bfloat16 on GPU, float32 on CPU.")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options.")
    cache_dir: str | None = Field(None, description="Node-local cache for bucket models.")

    _check_options = field_validator("storage_options")(check_storage_options)


@register_method("attiqa")
class Attiqa(ScoringMethod):
    """ATTIQA scorer: one forward pass of the trained network per image, no LMM.

    Paper: Kwon et al., "ATTIQA", ACCV 2024, arXiv 2406.01020 (no public reference code).
    ``score`` = the fine-tuned quality head in MOS units (de-standardised); for a model that
    was only pretrained, the mean of the five attribute heads. Extra columns: the five
    attribute heads (unbounded; only their order is trained).
    Our choices where the paper or the spec leaves room (see ``iqa_ray.attiqa.train``):
    (1) backbone: any transformers vision model from a config or pretrained weights (the
    example config is a ResNet-50 shape); (2) heads: one linear or MLP head per attribute and a
    quality head, all on the pooled backbone features; (3) pretraining loss: margin ranking
    over every in-batch pair per attribute (margin 0.1, ties skipped), quality head frozen;
    (4) fine-tuning: L1 (or L2) on standardised MOS, attribute heads frozen, backbone trained
    unless ``freeze_backbone``; (5) input: shorter side resized to ``image_size`` and centre
    crop, ImageNet normalisation, one crop at test time; (6) the pretraining corpus is
    whatever the ``clip_attributes`` run labelled.
    """

    Params = AttiqaParams
    score_range: ClassVar[tuple[float, float]] = (float("-inf"), float("inf"))
    extra_columns: ClassVar[dict[str, pa.DataType]] = _ATTRIBUTE_COLUMNS
    uses_vlm: ClassVar[bool] = False

    def data_digest(self) -> str:
        """sha256 of the weights: a network retrained in place must not extend an older run."""
        from iqa_ray import io

        p = self.params
        try:
            return io.sha256_file(io.join(p.model, "model.safetensors"), p.storage_options)
        except FileNotFoundError as exc:
            raise ConfigError(f"attiqa model {p.model!r} has no model.safetensors: train it with "
                              "jobs/pretrain_attiqa.py") from exc

    def setup(self, ctx: MethodContext) -> None:
        """Load the network once per actor (shared via ``ctx.shared``)."""
        from iqa_ray.backends.sources import local_model_path
        from iqa_ray.methods.attiqa.network import device_and_dtype, load_network

        p = self.params

        def load() -> tuple[Any, dict[str, Any], str]:
            device, dtype = device_and_dtype(p.dtype)
            folder = local_model_path(p.model, p.storage_options, p.cache_dir)
            return (*load_network(folder, device, dtype), device)

        self.net, self.meta, self.device = ctx.shared(("attiqa", "net", p.model, p.dtype), load)

    def _score(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from iqa_ray.methods.attiqa.backbone import prepare_pixels
        from iqa_ray.methods.attiqa.network import quality_from_outputs

        pixels = torch.from_numpy(prepare_pixels(images, int(self.meta["image_size"])))
        with torch.inference_mode():
            attributes, quality = self.net(pixels.to(self.device))
        attributes_np = attributes.double().cpu().numpy()
        quality_np = quality.double().cpu().numpy()
        return quality_from_outputs(attributes_np, quality_np, self.meta), attributes_np

    def score_batch(self, batch: ImageBatch, ctx: MethodContext) -> MethodResult:
        """One network forward for the batch."""
        return score_isolated(self._score, list(batch.query))

"""Compare2Score: soft comparisons of each image against fixed anchors, then a MAP score 0..100."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from iqa_ray import io
from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.prompt import Prompt
from iqa_ray.errors import ConfigError, RowError
from iqa_ray.images import ImageConfig, load_image
from iqa_ray.methods.base import ImageBatch, MethodContext, MethodParams, VlmMethod
from iqa_ray.methods.compare2score.anchor_set import (
    RECORD_NAME,
    AnchorSet,
    Calibration,
    read_anchor_images,
    read_anchor_set,
    sha256_hex,
)
from iqa_ray.methods.compare2score.maths import (
    MapResult,
    map_estimate,
    map_estimate_reference_adam,
    soft_comparison,
)
from iqa_ray.methods.conventions import check_layout, resolve_layout
from iqa_ray.methods.registry import register_method
from iqa_ray.settings import canonical_json, check_storage_options

logger = logging.getLogger(__name__)

QUESTION = "Compared with the first image, what is your quality rating for second image?"
ANSWER_PREFIX = "The quality of the second image is"
WORDS = ("inferior", "worse", "similar", "better", "superior")


class ComparisonPromptSpec(Protocol):
    """What a comparison prompt needs (method params and a stored calibration both qualify)."""

    @property
    def question(self) -> str: ...

    @property
    def answer_prefix(self) -> str: ...

    @property
    def words(self) -> tuple[str, ...]: ...


class Compare2ScoreParams(MethodParams):
    """Anchor set, comparison prompt, temperature and MAP solver of Compare2Score."""

    anchors: str = Field(..., description="URI of the anchor set folder (jobs/build_anchors.py).")
    anchor_storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for the anchor set, without secrets."
    )
    question: str = Field(QUESTION, description="User turn shown after [anchor, image].")
    answer_prefix: str = Field(ANSWER_PREFIX, description="Pre-filled assistant text.")
    layout: str | None = Field(
        None,
        description="User turn with two `{image}` markers (anchor, image) and one `{question}`. "
        "Default: the model family's reference placement (mplug_owl2: Compare2Score's "
        "`{image} {image} {question} \\n`), else the backend's (images, then question); "
        "`images_first`: always the backend's. An explicit `question` keeps the placement.",
        exclude_if=lambda v: v is None,
    )
    words: tuple[str, str, str, str, str] = Field(
        WORDS, description="Comparison words, worst first (weights 0, .25, .5, .75, 1)."
    )
    temperature: float = Field(
        100.0, gt=0, allow_inf_nan=False, description="Softmax temperature (paper: 100)."
    )
    solver: Literal["newton", "reference_adam"] = Field(
        "newton", description="`newton`: converged MAP; `reference_adam`: the reference's 100 "
        "Adam steps (lr 0.1, seeded init)."
    )
    tol: float = Field(1e-10, gt=0, description="Convergence: max |dL/dq| below this.")
    max_iter: int = Field(100, ge=1, description="Newton steps at most.")
    link: Literal["probit", "logistic"] = Field(
        "probit", description="`probit`: Thurstone Case V (paper); `logistic`: reference code."
    )

    _check_options = field_validator("anchor_storage_options")(check_storage_options)

    @field_validator("layout")
    @classmethod
    def _two_images(cls, layout: str | None) -> str | None:
        return check_layout(layout, 2)


def comparison_prompt(
    first: np.ndarray,
    second: np.ndarray,
    keys: tuple[str, str],
    spec: ComparisonPromptSpec,
    layout: str | None = None,
) -> Prompt:
    """The prompt comparing ``second`` against ``first`` (shown in that order); ``layout``: the
    filled user turn (:func:`prompt_layout`), None for the backend's placement."""
    return Prompt(
        (first, second), spec.question, spec.answer_prefix, tuple(spec.words), keys, layout
    )


def prompt_layout(params: Compare2ScoreParams, family: str) -> str | None:
    """The comparison prompt's user-turn layout on a model family (see ``conventions``)."""
    return resolve_layout("compare2score", family, params.layout, params.question)


def solve(p_a: np.ndarray, b: np.ndarray, params: Compare2ScoreParams) -> MapResult:
    """MAP scores of a batch of soft-comparison vectors with the configured solver."""
    if params.solver == "reference_adam":
        return map_estimate_reference_adam(p_a, b, link=params.link, tol=params.tol)
    return map_estimate(p_a, b, tol=params.tol, max_iter=params.max_iter, link=params.link)


def calibration_mismatches(
    cal: Calibration,
    params: Compare2ScoreParams,
    model: ModelConfig | None,
    layout: str | None = None,
) -> list[str]:
    """How this run differs from the setting P_a was measured in (empty: the same);
    ``layout``: this run's resolved prompt layout."""
    ours: dict[str, Any] = {
        "question": params.question, "answer_prefix": params.answer_prefix,
        "words": tuple(params.words), "temperature": params.temperature, "layout": layout,
    }
    if model is not None:
        ours.update(model_id=model.id, model_revision=model.revision)
    return [f"{name}: anchors {getattr(cal, name)!r}, run {value!r}"
            for name, value in ours.items() if getattr(cal, name) != value]


def decode_anchors(images: Sequence[bytes], guard: ImageConfig | None) -> list[np.ndarray]:
    """Decode anchor images and resize them exactly like query images (``guard``: the run's
    image settings; None: default guards, no downscale)."""
    guard = guard if guard is not None else ImageConfig(max_side=None)
    out = []
    for k, data in enumerate(images):
        try:
            out.append(load_image(data, guard)[0])
        except RowError as err:
            raise ConfigError(f"anchor image {k} cannot be used: {err}") from err
    return out


@register_method("compare2score")
class Compare2Score(VlmMethod):
    """Compare2Score inference: alpha soft comparisons, one MAP solve per image, score 0..100.

    Paper: Zhu et al., "Adaptive Image Quality Assessment via Teaching Large Multimodal Model
    to Compare", arXiv 2405.19298 (NeurIPS 2024); reference: github.com/Q-Future/Compare2Score
    (``q_align/evaluate/scorer.py``). Per image: one pass per anchor n on [anchor n, image],
    b_n = softmax(logits(inferior..superior) / T) . [0, .25, .5, .75, 1], then the MAP
    qualities of the 6x6 comparison matrix [[P_a, 1 - b], [b, .5]] under Thurstone Case V with
    a standard normal prior; score = 100 (q_test - min q) / (max q - min q). Columns: ``b``
    (the alpha soft comparisons) and ``converged`` (the solver's gradient test).

    Deviations: (1) P_a is measured per (model, anchor set) by ``jobs/build_anchors.py`` (both
    orders averaged) instead of the reference's hard-coded matrix; a run whose model or prompt
    differs from the set's calibration logs a WARNING per actor. (2) The MAP is solved to
    convergence by float64 Newton by default; ``solver: reference_adam`` reproduces the
    reference's 100 Adam steps (CPU-generator init). (3) ``link: probit`` follows the paper;
    the reference code computes a logistic link (``link: logistic``). (4) The softmax is
    max-shifted (no overflow); all-equal q score 50 instead of NaN. (5) On an mPLUG-Owl2
    checkpoint the prompt is the reference's exactly (``layout`` from the family convention);
    on other models the backend's chat template places the two images before the question.
    Anchors are decoded and resized like queries (``image.max_side``). The official anchor set
    (``official.py``: the reference's five anchors and hard-coded P_a) reproduces the
    published setting when the user supplies those images.
    """

    Params = Compare2ScoreParams
    params: Compare2ScoreParams
    score_range: ClassVar[tuple[float, float]] = (0.0, 100.0)
    extra_columns: ClassVar[dict[str, pa.DataType]] = {
        "b": pa.list_(pa.float64()), "converged": pa.bool_(),
    }

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        self._anchor_set: AnchorSet | None = None
        self._anchor_images: list[np.ndarray] = []
        self._layout: str | None = None

    def data_digest(self) -> str:
        """sha256 of ``anchors.json``'s content: it holds P_a and every anchor image's sha256."""
        p = self.params
        record = io.read_json(io.join(p.anchors, RECORD_NAME), p.anchor_storage_options)
        return sha256_hex(canonical_json(record).encode())

    def setup(self, ctx: MethodContext) -> None:
        """Load the anchor set once per actor, warn on a calibration mismatch, check words."""
        p = self.params
        anchor_set = read_anchor_set(p.anchors, p.anchor_storage_options)
        raw = read_anchor_images(p.anchors, anchor_set, p.anchor_storage_options)
        model = ctx.model
        # Resized once to the model's input here, not in every batch's preprocessing.
        self._anchor_images = [ctx.vlm.prepare_image(im) for im in decode_anchors(raw, ctx.image)]
        self._anchor_set = anchor_set
        self._layout = prompt_layout(p, ctx.vlm.family)
        mismatches = calibration_mismatches(anchor_set.calibration, p, model, self._layout)
        if mismatches:
            logger.warning(
                "compare2score: anchor set %s was calibrated in another setting (%s); its P_a "
                "may not describe this model: rebuild it with jobs/build_anchors.py",
                p.anchors, "; ".join(mismatches),
            )
        super().setup(ctx)  # probe prompts now include the anchors: words checked on them

    def prompts(self, batch: ImageBatch, row: int) -> list[Prompt]:
        """One prompt per anchor: [anchor first, image second]; anchor keys are content hashes."""
        if self._anchor_set is None:
            raise RuntimeError("compare2score: setup(ctx) must run before prompts")
        key = str(int(batch.image_ids[row]))
        return [
            comparison_prompt(image, batch.query[row], (anchor.key, key), self.params,
                              self._layout)
            for anchor, image in zip(self._anchor_set.anchors, self._anchor_images, strict=True)
        ]

    def reduce(self, logits: list[np.ndarray]) -> dict[str, Sequence[Any]]:
        """b (B, alpha) from the soft comparisons, then one vectorised MAP solve for the batch."""
        if self._anchor_set is None:
            raise RuntimeError("compare2score: setup(ctx) must run before reduce")
        b = np.stack([soft_comparison(x, self.params.temperature) for x in logits], axis=1)
        result = solve(self._anchor_set.matrix, b, self.params)
        return {
            "score": result.score.tolist(),
            "b": b.tolist(),
            "converged": result.converged.tolist(),
        }

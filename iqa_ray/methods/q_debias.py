"""Q-Debias: training-free debiasing of an LMM's quality judgement with degraded priors.

Maths (pure, table-tested) first, then the parameter model, then the method wiring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from iqa_ray.backends.prompt import Prompt
from iqa_ray.distortions import get_distortion
from iqa_ray.errors import ConfigError
from iqa_ray.methods.base import ImageBatch, MethodContext, MethodParams, VariantSpec, VlmMethod
from iqa_ray.methods.registry import register_method
from iqa_ray.methods.rules import binary_probability, softmax
from iqa_ray.settings import StrictModel

SIMILARITY_QUESTION = "Do these two images describe the same object? Yes or no"
QUALITY_QUESTION = (
    "The visual quality of the first image is poor. How about the visual quality of the "
    "second image. Good or poor?"
)
Weighting = Literal["softmax_of_probabilities", "normalized"]


@dataclass(frozen=True)
class FamilyConventions:
    """How the reference script for a model family words the Q-Debias prompts (pure data).

    Attributes:
        layout: the user turn, with one ``{image}`` marker per image ([prior, query]) and
            ``{question}``; None: the backend places the images before the question its own way.
    """

    layout: str | None = None

    def user_turn(self, question: str) -> str | None:
        """``Prompt.layout`` for a question (None: the backend's default placement)."""
        return None if self.layout is None else self.layout.replace("{question}", question)


# By the backend's ``family`` (the checkpoint's model_type). Words and answers are the same for
# every family: the capitalised Yes/No and Good/Poor, and no answer prefix, because the
# reference's quality turn "The quality of the image is " is dropped by its processor (inference
# mode), so the words it reads are the first of the assistant turn.
FAMILY_CONVENTIONS: dict[str, FamilyConventions] = {
    # QDebias_mPLUG.py (github.com/BarryPan12138/Q-Debias @ b0698dc): "<|image|><|image|> <q>".
    "mplugowl3": FamilyConventions(layout="{image}{image} {question}"),
}
DEFAULT_CONVENTIONS = FamilyConventions()

# ---------------------------------------------------------------------------------- maths


def prior_probabilities(
    logits: Sequence[np.ndarray], temperature: float = 100.0
) -> tuple[np.ndarray, np.ndarray]:
    """Split a row's logits into p_yes and p_good per prior.

    Args:
        logits: 2N arrays of shape (B, 2), prompt order [similarity_1, quality_1, ...,
            similarity_N, quality_N]; columns are (positive word, negative word).
        temperature: softmax temperature of both binary choices (100 in the paper).

    Returns:
        ``(p_yes, p_good)``, each (B, N) float64: softmax([l_yes, l_no] / T)[0] and
        softmax([l_good, l_poor] / T)[0] for each prior, in prior order.
    """
    if len(logits) == 0 or len(logits) % 2:
        raise ValueError(f"expected 2N logit arrays (similarity, quality), got {len(logits)}")
    similarity = np.stack([np.asarray(x, np.float64) for x in logits[0::2]], axis=1)
    quality = np.stack([np.asarray(x, np.float64) for x in logits[1::2]], axis=1)
    return binary_probability(similarity, temperature), binary_probability(quality, temperature)


def prior_weights(
    p_yes: np.ndarray, weighting: Weighting = "softmax_of_probabilities"
) -> np.ndarray:
    """Weights of the priors from their similarity probabilities, along the last axis.

    ``softmax_of_probabilities`` (paper and reference): ``w = softmax(p_yes)``. The inputs are
    probabilities in [0, 1], so weights stay within a factor e of each other: a mild weighting.
    ``normalized`` (our option, a deviation): ``w = p_yes / sum(p_yes)``, so a prior the model
    judges to show another object contributes nothing; all p_yes = 0 gives uniform weights.
    """
    p = np.asarray(p_yes, dtype=np.float64)
    if weighting == "softmax_of_probabilities":
        return softmax(p, axis=-1)
    if weighting == "normalized":
        total = p.sum(axis=-1, keepdims=True)
        safe = np.where(total > 0, total, 1.0)
        return np.where(total > 0, p / safe, 1.0 / p.shape[-1])
    raise ValueError(f"unknown weighting {weighting!r}")


def debiased_quality(
    p_yes: np.ndarray, p_good: np.ndarray, weighting: Weighting = "softmax_of_probabilities"
) -> np.ndarray:
    """Q-Debias score ``q = sum_i w_i * p_good_i`` in [0, 1] (arrays of shape (..., N))."""
    weights = prior_weights(p_yes, weighting)
    return np.sum(weights * np.asarray(p_good, dtype=np.float64), axis=-1)


# ------------------------------------------------------------------------------ params


class PriorSpec(StrictModel):
    """One degraded prior: a registered distortion at a severity."""

    distortion: str = Field(..., description="Registered distortion name (see list_distortions()).")
    severity: int = Field(..., description="Severity, 1..the distortion's number of levels.")

    @model_validator(mode="after")
    def _registered(self) -> PriorSpec:
        # ConfigError (not ValueError): a did-you-mean hint or the valid severity range, raised
        # as is at config time, whether the params come from a RunConfig or directly.
        get_distortion(self.distortion).params(self.severity)
        return self


_PAPER_PRIORS = (
    PriorSpec(distortion="zoom_blur", severity=3),
    PriorSpec(distortion="spatter", severity=3),
    PriorSpec(distortion="saturate", severity=3),
    PriorSpec(distortion="fog", severity=4),
)


class QDebiasParams(MethodParams):
    """Priors, prompts, answer words, temperature and weighting of Q-Debias (defaults: paper)."""

    priors: tuple[PriorSpec, ...] = Field(
        _PAPER_PRIORS, description="Degraded priors, in the order of the p_yes/p_good columns."
    )
    similarity_question: str = Field(SIMILARITY_QUESTION, description="Same-object question.")
    similarity_words: tuple[str, str] = Field(("Yes", "No"), description="Positive, negative.")
    quality_question: str = Field(QUALITY_QUESTION, description="Conditional quality question.")
    quality_words: tuple[str, str] = Field(("Good", "Poor"), description="Positive, negative.")
    answer_prefix: str = Field(
        "", description="Pre-filled assistant text of the quality prompt (paper: none)."
    )
    temperature: float = Field(
        100.0,
        gt=0,
        description="Temperature of both binary softmaxes: 100 as in the paper and the spec "
        "(the reference script's softmax helper is unpublished; its fixture records T=1 and "
        "T=100, both reproduced).",
    )
    weighting: Weighting = Field(
        "softmax_of_probabilities",
        description="softmax_of_probabilities (paper) or normalized (w = p_yes / sum p_yes).",
    )

    @field_validator("priors")
    @classmethod
    def _distinct(cls, priors: tuple[PriorSpec, ...]) -> tuple[PriorSpec, ...]:
        if not priors:
            raise ConfigError("q_debias needs at least one prior")
        keys = [(p.distortion, p.severity) for p in priors]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"q_debias priors repeat a (distortion, severity): {keys}")
        return priors


# ------------------------------------------------------------------------------ method


@register_method("q_debias")
class QDebias(VlmMethod):
    """Q-Debias score: conditional quality against degraded priors, weighted by similarity.

    Paper: "Mitigating Perception Bias: A Training-Free Approach to Enhance LMM for Image
    Quality Assessment", arXiv 2411.12791. Reference implementation: the authors' evaluation
    script (mPLUG-Owl3-7B, one image at a time; priors from the ``imagecorruptions`` package).

    For each prior i (default, in column order: zoom_blur 3, spatter 3, saturate 3, fog 4) the
    model sees the pair [degraded prior first, query second] twice: the similarity question
    gives ``p_yes_i`` (Yes vs No) and the conditional quality question gives ``p_good_i`` (Good
    vs Poor), both binary softmaxes at T = 100. Score ``sum_i softmax(p_yes)_i * p_good_i`` in
    [0, 1], higher is better. Columns ``p_yes`` and ``p_good`` hold the N values in prior order.

    Cost: 2N model passes per image (8 by default), each with 2 images; the two passes of a
    pair differ only in the trailing question (a shared prefix a backend may reuse; the
    ``image_keys`` ``"<image_id>:<prior>"`` and ``"<image_id>"``, the same key the baselines
    give the query, let it reuse image encodings across prompts and methods).

    Answer words: the reference's quality turn carries "The quality of the image is ", which its
    processor drops, so it reads the capitalised first word of the assistant turn; here
    ``answer_prefix`` (quality prompt only; the similarity turn is always empty) defaults to "".
    Word ids come from the loaded tokenizer (the reference hard-codes its own): a template
    ending in whitespace (Qwen's ``"<|im_start|>assistant\\n"``, as mPLUG-Owl3) reads the bare
    ``"Good"``; one ending in a non-space (LLaVA-1.5's ``"ASSISTANT:"``) reads ``" Good"``, the
    space-led token the model emits first there.

    Conventions per model family (``FAMILY_CONVENTIONS``, keyed by the backend's ``family``):
    on mPLUG-Owl3 (``mplugowl3``, the paper's model) the user turn is the script's
    ``"<|image|><|image|> <question>"``; with the backend's default options (the checkpoint's
    crop pairing, assistant content dropped) the model input equals the reference script's,
    checked token for token on the tiny-mplug-owl3 fixture. Other families place the images
    as their chat template does.

    Temperature: the paper and the spec give T = 100 (the default). The script calls a
    ``softmax(a, b)`` helper that is not published, so its temperature is unknown; the fixture
    records ``q_pred`` at T = 1 and T = 100, and both reproduce through this method
    (``temperature: 1`` for the former).

    Baseline in the same pass: ``methods: [q_debias, qbench_binary]``; one model load serves
    both, and the baseline adds 1 pass per image on the query alone.

    Deviations:
        - Priors are made by ``iqa_ray.distortions`` (numpy/scipy/PIL re-implementation of
          the ImageNet-C definitions); outputs are truncated to uint8 like the reference. The
          spatter "water" mask is computed without OpenCV (see ``distortions._water_mask``);
          random priors are seeded from the image id, so reruns give identical priors.
        - Images are resized to ``model.max_image_side`` (when set) before the priors are made;
          the model's processor would resize them anyway (the reference distorts full size).
        - ``weighting: normalized`` is our option (w = p_yes / sum p_yes), off by default.
    """

    Params = QDebiasParams
    score_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    extra_columns: ClassVar[dict[str, pa.DataType]] = {
        "p_yes": pa.list_(pa.float64()),
        "p_good": pa.list_(pa.float64()),
    }
    params: QDebiasParams

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        self._priors = tuple(VariantSpec(p.distortion, p.severity) for p in self.params.priors)
        self._conventions = DEFAULT_CONVENTIONS

    def bind(self, batch: ImageBatch, ctx: MethodContext) -> None:
        """Follow the reference conventions of the loaded model's family (before prompts)."""
        family = str(getattr(ctx.vlm, "family", ""))
        self._conventions = FAMILY_CONVENTIONS.get(family, DEFAULT_CONVENTIONS)

    def variants(self) -> tuple[VariantSpec, ...]:
        """The priors, made per image by DecodeImages (seeded from the image id)."""
        return self._priors

    def prompts(self, batch: ImageBatch, row: int) -> list[Prompt]:
        """Per prior: similarity then conditional quality, on [prior, query]."""
        p, conv = self.params, self._conventions
        image_id = int(batch.image_ids[row])
        query = batch.query[row]
        similarity = conv.user_turn(p.similarity_question)
        quality = conv.user_turn(p.quality_question)
        out: list[Prompt] = []
        for variant in self._priors:
            images = (batch.variants[variant.key][row], query)
            keys = (f"{image_id}:{variant.key}", str(image_id))
            out.append(Prompt(images, p.similarity_question, "", p.similarity_words, keys,
                              similarity))
            out.append(Prompt(images, p.quality_question, p.answer_prefix, p.quality_words, keys,
                              quality))
        return out

    def reduce(self, logits: list[np.ndarray]) -> dict[str, Sequence[Any]]:
        """Score and per-prior probabilities from the 2N (B, 2) logit arrays."""
        p_yes, p_good = prior_probabilities(logits, self.params.temperature)
        score = debiased_quality(p_yes, p_good, self.params.weighting)
        return {"score": score.tolist(), "p_yes": p_yes.tolist(), "p_good": p_good.tolist()}

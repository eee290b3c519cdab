"""``ScoringMethod`` and ``VlmMethod`` base classes, and what a method sees in a score actor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa

from iqa_ray.backends import ModelConfig, Prompt, VlmBackend, load_backend
from iqa_ray.errors import RowError
from iqa_ray.images import ImageConfig
from iqa_ray.schema import ErrorCode
from iqa_ray.settings import StrictModel

T = TypeVar("T")


class MethodParams(StrictModel):
    """Base of every method's parameter model: unknown keys are errors."""


@dataclass(frozen=True)
class VariantSpec:
    """A derived image a method needs per input: a registered distortion at a severity."""

    distortion: str
    severity: int

    @property
    def key(self) -> str:
        """Stable name of the variant, e.g. ``zoom_blur_3``."""
        return f"{self.distortion}_{self.severity}"


@dataclass
class ImageBatch:
    """The decoded images of the rows a method scores (rows without a decode error only)."""

    image_ids: np.ndarray
    query: list[np.ndarray]
    variants: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.query)


@dataclass
class MethodContext:
    """What a method may use inside a score actor.

    Attributes:
        vlm_factory: builds the actor's one VLM backend (called on first use of ``vlm``).
        model: the run's model config (methods record its id, e.g. in a calibration); None
            outside a run (tests, tools).
        image: the run's image guards and downscale, for images a method reads itself
            (anchors); None: decode without downscaling.
    """

    vlm_factory: Callable[[], VlmBackend]
    model: ModelConfig | None = None
    image: ImageConfig | None = None
    _vlm: VlmBackend | None = None
    _shared: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    @property
    def vlm(self) -> VlmBackend:
        """The actor's one VLM, loaded on first use and shared by every method."""
        if self._vlm is None:
            self._vlm = self.vlm_factory()
        return self._vlm

    def shared(self, key: tuple[Any, ...], load: Callable[[], T]) -> T:
        """The object ``load()`` returns, made once per actor and kept under ``key``: two
        methods (or two labels of one method) that need the same model share one copy."""
        if key not in self._shared:
            self._shared[key] = load()
        return self._shared[key]


def method_context(model: ModelConfig, image: ImageConfig) -> MethodContext:
    """A score actor's context: the run's VLM (loaded lazily) and its model and image configs."""
    return MethodContext(vlm_factory=lambda: load_backend(model), model=model, image=image)


@dataclass
class MethodResult:
    """Per-row outputs of one method: ``score`` and extra columns, and per-row errors."""

    columns: dict[str, list[Any]]
    errors: list[RowError | None]


class ScoringMethod:
    """A scoring method: declares what it needs and turns a batch of images into scores.

    Subclasses set ``Params`` (a pydantic model), ``higher_is_better``, ``score_range``,
    ``extra_columns`` (name -> Arrow type), and implement ``score_batch``.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[MethodParams]] = MethodParams
    higher_is_better: ClassVar[bool] = True
    score_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    extra_columns: ClassVar[dict[str, pa.DataType]] = {}
    uses_vlm: ClassVar[bool] = True

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = self.Params.model_validate(params)

    def variants(self) -> tuple[VariantSpec, ...]:
        """Derived images this method needs for every input (none by default)."""
        return ()

    def data_digest(self) -> str | None:
        """Digest of external data the scores depend on (an anchor set, trained weights).

        Read on the driver and stored in run.json; resuming a run whose data changed in place
        is refused. None when the method depends on nothing but its config.
        """
        return None

    def setup(self, ctx: MethodContext) -> None:
        """Once per actor, before the first batch (load anchors, check words, ...)."""

    def score_batch(self, batch: ImageBatch, ctx: MethodContext) -> MethodResult:
        """Score every row of the batch."""
        raise NotImplementedError


class VlmMethod(ScoringMethod):
    """A method made of next-token prompts to the shared VLM, reduced to a score per image."""

    def prompts(self, batch: ImageBatch, row: int) -> list[Prompt]:
        """The prompts of one image (same count and words for every image)."""
        raise NotImplementedError

    def reduce(self, logits: list[np.ndarray]) -> dict[str, Sequence[Any]]:
        """Turn logits (one (B, n_words) array per prompt) into ``score`` and extra columns."""
        raise NotImplementedError

    def setup(self, ctx: MethodContext) -> None:
        """Resolve every word against the loaded tokenizer, failing the actor early if bad."""
        dummy = np.zeros((16, 16, 3), dtype=np.uint8)
        variants = {v.key: [dummy] for v in self.variants()}
        probe = ImageBatch(np.zeros(1, dtype=np.int64), [dummy], variants)
        self.bind(probe, ctx)
        ctx.vlm.check_words(self.prompts(probe, 0))

    def bind(self, batch: ImageBatch, ctx: MethodContext) -> None:
        """Hook for methods that add context images (anchors) before prompts are built."""

    def score_batch(self, batch: ImageBatch, ctx: MethodContext) -> MethodResult:
        """Run all prompts of all rows in one backend call, then reduce rows that succeeded."""
        self.bind(batch, ctx)
        per_row = [self.prompts(batch, i) for i in range(len(batch))]
        flat = [p for prompts in per_row for p in prompts]
        outputs = ctx.vlm.next_token_logits(flat) if flat else []
        n_prompts = len(per_row[0]) if per_row else 0
        errors: list[RowError | None] = [None] * len(batch)
        good: list[int] = []
        for i in range(len(batch)):
            row = outputs[i * n_prompts : (i + 1) * n_prompts]
            failed = next((o for o in row if isinstance(o, RowError)), None)
            errors[i] = failed
            if failed is None:
                good.append(i)
        columns = {c: [None] * len(batch) for c in ("score", *self.extra_columns)}
        if good:
            stacked = [
                np.stack([outputs[i * n_prompts + k] for i in good]) for k in range(n_prompts)
            ]
            reduced = self.reduce(stacked)
            for column, values in reduced.items():
                for i, value in zip(good, values, strict=True):
                    columns[column][i] = value
        for i in good:
            if columns["score"][i] is None or not np.isfinite(columns["score"][i]):
                errors[i] = RowError(ErrorCode.UNPARSABLE, "non-finite score from model logits")
                columns["score"][i] = None
        return MethodResult(columns, errors)

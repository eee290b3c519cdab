"""The ``model:`` config section: which vision-language model every method shares, how it is
loaded, and how its forward passes are batched."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from iqa_ray.settings import StrictModel, check_storage_options

DEFAULT_MODEL_ID = "llava-hf/llava-interleave-qwen-0.5b-hf"
Backend = Literal["transformers", "fake", "vllm"]


class ModelConfig(StrictModel):
    """The vision-language model every scoring method shares (loaded once per GPU actor)."""

    preset: str | None = Field(
        None,
        description="A catalogue entry (`python jobs/score.py --list-models`) filling `id` and "
        "`revision`; fields set explicitly win.",
    )
    id: str = Field(DEFAULT_MODEL_ID, description="Hub id, local directory, or bucket prefix.")
    revision: str | None = Field(None, description="Hub revision (commit sha recommended).")
    backend: Backend = Field(
        "transformers", description="`fake` is a deterministic stand-in for wiring tests only; "
        "`vllm` needs the `vllm` extra and a GPU (see README 'Performance')."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="`auto`: bfloat16 on GPU, float32 on CPU."
    )
    attn_implementation: str | None = Field(
        None, description="e.g. `sdpa` or `flash_attention_2`; default: transformers' choice."
    )
    prefix_sharing: bool = Field(
        True,
        description="Compute prompt prefixes shared by several prompts (and repeated images) "
        "once per batch; same logits within float rounding. Model types not verified for it "
        "run unshared (logged once).",
    )
    word_policy: Literal["single", "first"] = Field(
        "single",
        description="`single`: every word read must be one token (else error); `first`: read "
        "the first token of each word (Q-Align convention for multi-token words).",
    )
    batch_size: int = Field(8, ge=1, description="Requests per forward pass.")
    max_tokens_per_batch: int | None = Field(
        None,
        ge=1,
        description="Cap on padded tokens (rows x longest row, cached prefix included) per "
        "forward pass, on top of `batch_size`; None: rows only.",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options when `id` is a bucket prefix."
    )
    cache_dir: str | None = Field(
        None, description="Node-local cache for weights copied from a bucket."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Backend-specific options, validated by the backend: `vllm`: keyword "
        "arguments for `vllm.LLM` (e.g. {gpu_memory_utilization: 0.85}); `fake`: failure "
        "injection for tests (`iqa_ray.backends.fake.FakeOptions`); `transformers`: options of a "
        "native family (`iqa_ray.backends.family_options`, e.g. mPLUG-Owl3's `pair_cut_shapes`, "
        "`drop_last_assistant_content`); they change results and are in the run fingerprint.",
    )

    _check_options = field_validator("storage_options")(check_storage_options)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        from iqa_ray.backends.catalogue import get_preset

        preset = get_preset(str(data["preset"]))
        return {"id": preset.id, "revision": preset.revision, **data}

    @model_validator(mode="after")
    def _backend_options(self) -> ModelConfig:
        if self.backend == "fake":
            from iqa_ray.backends.fake import FakeOptions

            try:
                FakeOptions.model_validate(self.options)
            except ValidationError as exc:
                problems = "; ".join(
                    f"options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                    for e in exc.errors()
                )
                raise ValueError(f"fake backend {problems}") from None
        elif self.backend == "transformers" and self.options:
            from iqa_ray.backends.family_options import check_options

            check_options(self.options)  # per model_type again at load, when it is known
        return self

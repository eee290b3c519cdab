"""The model catalogue: named presets for published checkpoints, with what each is for, its
published accuracy (with the source) and what this project has verified about it.

``model.preset: <name>`` fills ``model.id`` and ``model.revision`` from the entry; either set
explicitly wins (``model.dtype: auto`` keeps picking bf16 on GPU, float32 on CPU).
``python jobs/score.py --list-models`` prints the table.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from iqa_ray.errors import ConfigError


@dataclass(frozen=True)
class PublishedScore:
    """One published accuracy figure: dataset, metric, value and where it is published."""

    dataset: str
    metric: str
    value: float
    source: str


@dataclass(frozen=True)
class ModelPreset:
    """A catalogue entry.

    Attributes:
        name: the preset name (``model.preset``).
        id: hub id of the checkpoint.
        revision: pinned hub revision (a commit sha), or None where none could be checked here.
        family: the checkpoint's ``model_type`` (how the backend loads and prompts it).
        dtype: the dtype the checkpoint is published in (documentation; ``model.dtype`` decides).
        methods: the methods it is meant for.
        published: published accuracy, with sources.
        verified: what this project checked (e.g. equivalence on a tiny reference model).
        not_verified: what it could not check (e.g. the real weights).
        summary: one line on what the checkpoint is.
    """

    name: str
    id: str
    revision: str | None
    family: str
    dtype: str
    methods: tuple[str, ...]
    summary: str
    published: tuple[PublishedScore, ...] = ()
    verified: str = ""
    not_verified: str = ""
    extra: dict[str, str] = field(default_factory=dict)


PRESETS: dict[str, ModelPreset] = {}


def register_preset(preset: ModelPreset) -> ModelPreset:
    """Add an entry (names are unique)."""
    if preset.name in PRESETS:
        raise ValueError(f"model preset {preset.name!r} registered twice")
    PRESETS[preset.name] = preset
    return preset


def get_preset(name: str) -> ModelPreset:
    """Look a preset up; unknown names raise ``ConfigError`` with a did-you-mean hint."""
    if name in PRESETS:
        return PRESETS[name]
    close = difflib.get_close_matches(name, PRESETS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown model preset {name!r}{hint} (known: {sorted(PRESETS)})")


def list_presets() -> list[ModelPreset]:
    """Every preset, in catalogue order."""
    return list(PRESETS.values())


def catalogue_table() -> str:
    """The catalogue as a Markdown table (``--list-models`` and the README)."""
    lines = ["| preset | checkpoint | family | methods | published | verified here |",
             "| --- | --- | --- | --- | --- | --- |"]
    for p in list_presets():
        published = "; ".join(f"{s.dataset} {s.metric} {s.value:g} ({s.source})"
                              for s in p.published) or "-"
        rev = f"@{p.revision[:10]}" if p.revision else " (revision not pinned)"
        lines.append(f"| `{p.name}` | `{p.id}`{rev} | {p.family} | {', '.join(p.methods)} | "
                     f"{published} | {p.verified or '-'} |")
    return "\n".join(lines)


register_preset(ModelPreset(
    name="default",
    id="llava-hf/llava-interleave-qwen-0.5b-hf",
    revision=None,
    family="llava",
    dtype="bfloat16",
    methods=("qalign_levels", "qbench_binary", "q_debias", "compare2score"),
    summary="LLaVA-Interleave Qwen 0.5B: a small generic VLM that runs on a laptop CPU; the "
    "project's default, not an IQA checkpoint.",
    verified="the LLaVA architecture through transformers on tiny random models (CPU, CUDA)",
    not_verified="accuracy of any method with it",
))


# Q-Debias (arXiv 2411.12791) Table 1, also on the authors' project page (github.com/
# BarryPan12138/Q-Debias, img/exp1.png @ 490e4e7): mPLUG-Owl3, raw scores, whole datasets.
_QDEBIAS = "Q-Debias arXiv 2411.12791 Table 1"
_QDEBIAS_ROWS = (  # dataset, Q-Bench baseline SRCC, PLCC, Q-Debias SRCC, PLCC
    ("LIVE Challenge", 0.721, 0.677, 0.794, 0.818),
    ("KonIQ-10k", 0.672, 0.573, 0.838, 0.863),
    ("AGIQA-3k", 0.596, 0.469, 0.717, 0.753),
    ("KADID-10k", 0.315, 0.267, 0.700, 0.753),
    ("SPAQ", 0.767, 0.650, 0.867, 0.826),
)
register_preset(ModelPreset(
    name="mplug-owl3-7b",
    id="mPLUG/mPLUG-Owl3-7B-240728",
    # The hub commit of 2024-08-27 that last changed the processor file; model.safetensors,
    # config.json and the tokenizer files are unchanged from the upload (a465221) to main, per
    # the hub's file listing. Whether it equals the authors' copy (a ModelScope path) is unknown.
    revision="8ca1d87e7292a53b6676fece91c31e8c36f644ae",
    family="mplugowl3",
    dtype="bfloat16",
    methods=("q_debias", "qbench_binary"),
    summary="mPLUG-Owl3 7B (SigLIP, Qwen2 with hyper attention), the LMM of Q-Debias; a native "
    "implementation (the published remote code needs transformers 4.x and is never run).",
    published=tuple(
        PublishedScore(dataset, f"{method} {metric}", value, _QDEBIAS)
        for dataset, *values in _QDEBIAS_ROWS
        for (method, metric), value in zip(
            (("qbench_binary", "SRCC"), ("qbench_binary", "PLCC"),
             ("q_debias", "SRCC"), ("q_debias", "PLCC")), values, strict=True)
    ),
    verified="the model, processor and Q-Debias prompts reproduce the reference code's logits "
    "on a tiny random model (tiny-mplug-owl3, float32 CPU, ~4e-6 vs 1e-4 allowed), through "
    "TransformersBackend, batched and one by one, and q_debias's q_pred at T=1 and T=100",
    not_verified="the real 8B weights and their accuracy (no published number was reproduced); "
    "the pinned revision against the authors' copy; bf16 / GPU / flash-attention numerics; the "
    "real tokenizer's handling of <|image|>; the Q-Bench baseline prompt the paper used "
    "(unpublished)",
    extra={"docs": "docs/q_debias_mplug_owl3.md"},
))

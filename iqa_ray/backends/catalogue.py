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

# The mPLUG-Owl2 checkpoints (native family ``iqa_ray.backends.families.mplug_owl2``).
_OWL2_VERIFIED = (
    "native mplug_owl2: pixels, vision/abstractor outputs, prompt ids, Q-Align level logits and "
    "scores and Compare2Score probabilities equal the reference code on its tiny random-weight "
    "fixture (float32 CPU, fixture tolerances); prefix sharing and the Ray pipeline tested on "
    "a tiny model"
)
_OWL2_NOT_VERIFIED = (
    "the real 7B weights (not reachable here): loading them, fp16/bf16 numerics, the hub "
    "repo's tokenizer files, and the published accuracy"
)
register_preset(ModelPreset(
    name="one-align",
    id="q-future/one-align",
    revision=None,  # no full commit sha found in public material
    family="mplug_owl2",
    dtype="float16",
    methods=("qalign_levels",),
    summary="OneAlign (Q-Align, ICML 2024): mPLUG-Owl2 tuned on IQA + IAA + VQA; qalign_levels "
    "uses Q-Align's scorer prompt on it.",
    published=(PublishedScore("KonIQ-10k", "SRCC", 0.941, "q-future/one-align model card, "
                              "arXiv 2312.17090"),
               PublishedScore("KonIQ-10k", "PLCC", 0.950, "q-future/one-align model card, "
                              "arXiv 2312.17090")),
    verified=_OWL2_VERIFIED,
    not_verified=_OWL2_NOT_VERIFIED,
))
register_preset(ModelPreset(
    name="compare2score",
    id="q-future/Compare2Score",
    # The newest commit on the repo's public commit history page ("Create readme.md").
    revision="48e5da014f67bb4ce6b4b372da5c4c99035106c4",
    family="mplug_owl2",
    dtype="float16",
    methods=("compare2score",),
    summary="Compare2Score (NeurIPS 2024): mPLUG-Owl2 tuned to compare two images; use with the "
    "official anchor set (jobs/build_anchors.py --official).",
    published=(PublishedScore("KonIQ-10k", "SRCC", 0.931, "arXiv 2405.19298"),
               PublishedScore("KonIQ-10k", "PLCC", 0.939, "arXiv 2405.19298")),
    verified=_OWL2_VERIFIED,
    not_verified=_OWL2_NOT_VERIFIED + "; the real anchor images",
))
register_preset(ModelPreset(
    name="deqa-score",
    id="zhiyuanyou/DeQA-Score-Mix3",
    revision=None,  # no full commit sha found in public material
    family="mplug_owl2",
    dtype="float16",
    methods=("qalign_levels",),
    summary="DeQA-Score (CVPR 2025): mPLUG-Owl2 tuned on score distributions (KonIQ, SPAQ, "
    "KADID); qalign_levels with the 1..5 weights is its scorer.",
    published=(PublishedScore("KonIQ-10k", "SRCC", 0.944, "DeQA-Score-LoRA-Mix3 model card "
                              "(the LoRA sibling; the README calls both similar)"),
               PublishedScore("KonIQ-10k", "PLCC", 0.956, "DeQA-Score-LoRA-Mix3 model card "
                              "(the LoRA sibling; the README calls both similar)")),
    verified=_OWL2_VERIFIED,
    not_verified=_OWL2_NOT_VERIFIED,
))

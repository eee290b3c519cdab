"""Prompt selection for ATTIQA: rank candidate prompt pairs on a labelled proxy set.

The proxy set is made with the project's distortion ladders: for every source image and ladder,
the clean image (level 0) and its distorted copies, whose attribute level moves monotonically
with severity (blur lowers sharpness, ``brightness`` raises brightness, ...). A pair's quality is
the mean, over (image, ladder) groups, of the SRCC between its score and the known level. Pairs
are ranked by |SRCC|; a pair with a negative SRCC is emitted swapped, so that the positive prompt
always goes up with the attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from iqa_ray import io
from iqa_ray.analysis.metrics import srcc
from iqa_ray.devtools.samples import synthetic_scene
from iqa_ray.distortions import apply_distortion
from iqa_ray.images import decode_image, resize_max_side
from iqa_ray.methods.attiqa.prompts import (
    ATTRIBUTES,
    CANDIDATE_PROMPTS,
    PromptPair,
    PromptTable,
    check_prompt_table,
)
from iqa_ray.settings import read_yaml_mapping

# images, pairs -> P(positive) of shape (len(images), len(pairs))
PairScorer = Callable[[list[np.ndarray], list[PromptPair]], np.ndarray]


@dataclass(frozen=True)
class Ladder:
    """A distortion whose severities move one attribute: ``direction`` +1 raises it, -1 lowers."""

    attribute: str
    distortion: str
    severities: tuple[int, ...]
    direction: int


_ALL = (1, 2, 3, 4, 5)
DEFAULT_LADDERS: tuple[Ladder, ...] = (
    Ladder("sharpness", "gaussian_blur", _ALL, -1),
    Ladder("sharpness", "defocus_blur", _ALL, -1),
    Ladder("contrast", "contrast", _ALL, -1),
    Ladder("brightness", "brightness", _ALL, +1),
    Ladder("brightness", "darken", _ALL, -1),
    Ladder("colorfulness", "desaturate", _ALL, -1),
    # ImageNet-C saturate severities 3..5 scale saturation by 2, 5 and 20 (1..2 desaturate).
    Ladder("colorfulness", "saturate", (3, 4, 5), +1),
    Ladder("noisiness", "gaussian_noise", _ALL, -1),  # "noisiness" scores P(clean)
    Ladder("noisiness", "shot_noise", _ALL, -1),
)


@dataclass
class ProxySet:
    """Images of one attribute with their group (image x ladder) and known attribute level."""

    images: list[np.ndarray]
    groups: np.ndarray  # int, one id per (source image, ladder)
    levels: np.ndarray  # float, direction * severity (0 for the clean image)
    ladders: list[str]  # distortion name of each row


@dataclass(frozen=True)
class PairRanking:
    """One candidate's proxy result; ``chosen`` is the pair oriented to a positive SRCC."""

    attribute: str
    candidate: PromptPair
    srcc: float  # mean over groups, sign as given (before orienting)
    per_ladder: dict[str, float]

    @property
    def chosen(self) -> PromptPair:
        """The candidate, swapped when its SRCC is negative."""
        return self.candidate if self.srcc >= 0 else self.candidate.swapped()


def build_proxy_set(sources: Sequence[np.ndarray], ladders: Sequence[Ladder],
                    attribute: str) -> ProxySet:
    """Clean and distorted copies of every source for the ladders of ``attribute``."""
    proxy = ProxySet([], np.zeros(0, int), np.zeros(0), [])
    groups: list[int] = []
    levels: list[float] = []
    group = -1
    for ladder in (lad for lad in ladders if lad.attribute == attribute):
        for k, source in enumerate(sources):
            group += 1
            proxy.images.append(source)
            groups.append(group)
            levels.append(0.0)
            for severity in ladder.severities:
                proxy.images.append(apply_distortion(source, ladder.distortion, severity,
                                                     seed_key=f"proxy-{k}"))
                groups.append(group)
                levels.append(float(ladder.direction * severity))
            proxy.ladders.extend([ladder.distortion] * (1 + len(ladder.severities)))
    proxy.groups, proxy.levels = np.asarray(groups), np.asarray(levels)
    return proxy


def group_srcc(scores: np.ndarray, proxy: ProxySet) -> np.ndarray:
    """SRCC of each group's scores against its levels; a constant group counts as 0."""
    out = np.zeros(int(proxy.groups.max()) + 1 if len(proxy.groups) else 0)
    for g in range(len(out)):
        rows = proxy.groups == g
        value = srcc(scores[rows], proxy.levels[rows])
        out[g] = 0.0 if np.isnan(value) else value
    return out


def rank_pairs(scores: np.ndarray, candidates: Sequence[PromptPair], proxy: ProxySet,
               attribute: str) -> list[PairRanking]:
    """Rank candidates (columns of ``scores``) by |mean group SRCC|, best first."""
    ladder_of_group = {int(g): proxy.ladders[i] for i, g in enumerate(proxy.groups)}
    rankings = []
    for p, pair in enumerate(candidates):
        per_group = group_srcc(scores[:, p], proxy)
        per_ladder = {name: float(np.mean([v for g, v in enumerate(per_group)
                                           if ladder_of_group[g] == name]))
                      for name in dict.fromkeys(proxy.ladders)}
        rankings.append(PairRanking(attribute, pair, float(per_group.mean()), per_ladder))
    return sorted(rankings, key=lambda r: -abs(r.srcc))


def select_prompts(scorer: PairScorer, sources: Sequence[np.ndarray], candidates: PromptTable,
                   ladders: Sequence[Ladder] = DEFAULT_LADDERS, top_k: int = 1
                   ) -> tuple[PromptTable, dict[str, list[PairRanking]]]:
    """Score every candidate on its attribute's proxy set; keep the ``top_k`` best per attribute.

    Returns:
        (chosen oriented pairs per attribute, full ranking per attribute).
    """
    chosen: PromptTable = {}
    report: dict[str, list[PairRanking]] = {}
    for attribute in ATTRIBUTES:
        proxy = build_proxy_set(sources, ladders, attribute)
        pairs = list(candidates[attribute])
        if not proxy.images:
            raise ValueError(f"no proxy ladder for attribute {attribute!r}")
        report[attribute] = rank_pairs(scorer(proxy.images, pairs), pairs, proxy, attribute)
        chosen[attribute] = tuple(r.chosen for r in report[attribute][:top_k])
    return chosen, report


def prompt_snippet(chosen: PromptTable, model: str, report: dict[str, list[PairRanking]],
                   base: dict[str, Any] | None = None) -> str:
    """YAML with the chosen pairs, the ranking as comments on top.

    Without ``base``: a ``methods:`` entry for ``clip_attributes`` to paste into a run config.
    With ``base`` (a run config as loaded from YAML): that whole config, every
    ``clip_attributes`` method of it switched to ``model`` and the chosen pairs, ready for
    ``jobs/score.py``.

    Raises:
        ValueError: ``base`` has no ``clip_attributes`` method.
    """
    lines = ["# Prompt pairs chosen by jobs/select_prompts.py (mean SRCC on the proxy ladders)."]
    for attribute in ATTRIBUTES:
        for r in report[attribute]:
            flag = " (swapped)" if r.srcc < 0 else ""
            lines.append(f"#   {attribute}: {r.candidate.positive!r} / "
                         f"{r.candidate.negative!r}: srcc {r.srcc:+.3f}{flag}")
    prompts = {a: [[p.positive, p.negative] for p in chosen[a]] for a in ATTRIBUTES}
    entry = {"method": "clip_attributes", "params": {"model": model, "prompts": prompts}}
    data = {"methods": [entry]} if base is None else with_prompts(base, entry)
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)  # pairs on one line
    return "\n".join(lines) + "\n" + body


def with_prompts(base: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` whose ``clip_attributes`` methods take the model and prompts of
    ``entry`` (their other parameters and labels are kept)."""
    methods = []
    for method in base.get("methods") or []:
        spec = {"method": method} if isinstance(method, str) else dict(method)
        if spec.get("method") == "clip_attributes":
            spec["params"] = {**(spec.get("params") or {}), **entry["params"]}
        methods.append(spec)
    if not any(m.get("method") == "clip_attributes" for m in methods):
        raise ValueError("the base config has no clip_attributes method to give the prompts to")
    return {**base, "methods": methods}


def generated_sources(n: int, seed: int = 0,
                      size: tuple[int, int] = (160, 120)) -> list[np.ndarray]:
    """``n`` synthetic scenes (gradients and shapes) as clean proxy sources."""
    rng = np.random.default_rng(seed)
    return [np.asarray(synthetic_scene(rng, *size), dtype=np.uint8) for _ in range(n)]


def load_sources(uri: str, storage_options: dict[str, Any], limit: int, max_side: int = 512
                 ) -> list[np.ndarray]:
    """The first ``limit`` images (sorted) under a folder or bucket prefix, decoded and resized.

    Use clean, good-quality photos: the ladders assume level 0 is the undistorted image.
    """
    exts = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
    uris = io.list_files(uri, storage_options, exts)[:limit]
    if not uris:
        raise ValueError(f"no images under {uri!r}")
    return [resize_max_side(decode_image(io.read_bytes(u, storage_options),
                                         max_pixels=100_000_000, min_side=8), max_side)
            for u in uris]


def load_candidates(path: str | Path) -> PromptTable:
    """Candidate pairs from YAML: ``{attribute: [[positive, negative], ...], ...}``."""
    data = read_yaml_mapping(path)
    table = {a: tuple(PromptPair.model_validate(p) for p in pairs) for a, pairs in data.items()}
    return check_prompt_table(table)


@dataclass(frozen=True)
class SelectionRequest:
    """One prompt-selection job: the CLIP model, the proxy sources and the candidates."""

    model: str  # CLIP hub id, local folder or bucket prefix
    images: str | None = None  # clean source images (folder or prefix); None: generated scenes
    count: int = 32  # sources used (first N of the listing, or N generated scenes)
    top_k: int = 1
    candidates: PromptTable = field(default_factory=lambda: dict(CANDIDATE_PROMPTS))
    storage_options: dict[str, Any] = field(default_factory=dict)
    base_config: dict[str, Any] | None = None  # a run config to write the pairs into


def run_selection(request: SelectionRequest) -> str:
    """Load CLIP, build the proxy sets, rank the candidates; return the YAML snippet."""
    from iqa_ray.methods.attiqa.clip import ClipAttributeModel
    from iqa_ray.scoring.config import ModelConfig

    model = ClipAttributeModel(ModelConfig(id=request.model,
                                           storage_options=request.storage_options))
    sources = (load_sources(request.images, request.storage_options, request.count)
               if request.images else generated_sources(request.count))
    chosen, report = select_prompts(model.pair_probabilities, sources, request.candidates,
                                    top_k=request.top_k)
    return prompt_snippet(chosen, request.model, report, request.base_config)

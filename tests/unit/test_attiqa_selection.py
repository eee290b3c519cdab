"""ATTIQA prompt selection: proxy ladders, ranking by SRCC, orientation, and the YAML snippet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from iqa_ray.attiqa.selection import (
    DEFAULT_LADDERS,
    build_proxy_set,
    generated_sources,
    prompt_snippet,
    select_prompts,
)
from iqa_ray.methods.attiqa.prompts import ATTRIBUTES, PromptPair
from iqa_ray.scoring.config import MethodSpec


def _gradient_energy(img: np.ndarray) -> float:
    x = img.astype(float).mean(axis=2)
    return float(np.abs(np.diff(x, axis=0)).mean() + np.abs(np.diff(x, axis=1)).mean())


# Hand-made measures that move with each attribute on the ladders (the "known answer").
MEASURES = {
    "sharpness": _gradient_energy,
    "contrast": lambda img: float(img.astype(float).std()),
    "brightness": lambda img: float(img.mean()),
    "colorfulness": lambda img: float((img.max(axis=2).astype(float) - img.min(axis=2)).mean()),
    "noisiness": lambda img: -_gradient_energy(img),
}


def _stub_scorer(images: list[np.ndarray], pairs: list[PromptPair]) -> np.ndarray:
    """A pair "<attribute> good" scores the measure, "<attribute> reversed" minus a noisy
    measure, "<attribute> noise" pure noise (seeded by the pixels, so reruns agree)."""
    out = np.zeros((len(images), len(pairs)))
    for i, img in enumerate(images):
        rng = np.random.default_rng(int(img.sum()) + 7 * i)
        for p, pair in enumerate(pairs):
            attribute, kind = pair.positive.split()
            measure = MEASURES[attribute](img)
            # 30 % relative noise: the reversed pair swaps some neighbouring severities.
            out[i, p] = {"good": measure, "reversed": -measure * (1 + rng.normal(0, 0.3)),
                         "noise": rng.normal()}[kind]
    return out


def _pairs(attribute: str, kinds: list[str]) -> tuple[PromptPair, ...]:
    return tuple(PromptPair(positive=f"{attribute} {k}", negative=f"not-{attribute} {k}")
                 for k in kinds)


def test_proxy_set_levels_follow_the_ladder_directions() -> None:
    sources = generated_sources(2, size=(32, 24))
    proxy = build_proxy_set(sources, DEFAULT_LADDERS, "brightness")
    # Two ladders (brightness up, darken down) x 2 sources x (clean + 5 severities).
    assert len(proxy.images) == 24 and proxy.groups.max() == 3
    darken = np.array(proxy.ladders) == "darken"
    assert proxy.levels[darken].max() == 0 and proxy.levels[~darken].min() == 0
    means = np.array([img.mean() for img in proxy.images])
    for g in range(4):
        rows = proxy.groups == g
        assert stats.spearmanr(means[rows], proxy.levels[rows])[0] > 0.9


def test_selection_picks_the_best_pair_and_orients_it() -> None:
    sources = generated_sources(4, size=(40, 30))
    candidates = {a: _pairs(a, ["noise", "reversed", "good"]) for a in ATTRIBUTES}
    chosen, report = select_prompts(_stub_scorer, sources, candidates, top_k=1)
    for attribute in ATTRIBUTES:
        assert chosen[attribute] == (candidates[attribute][2],), attribute
        ranked = [r.candidate.positive.split()[1] for r in report[attribute]]
        assert ranked[0] == "good" and ranked[-1] == "noise", (attribute, ranked)
        assert report[attribute][1].srcc < 0  # the reversed pair anti-correlates
    # Without the good pair the reversed one wins, emitted swapped.
    candidates = {a: _pairs(a, ["noise", "reversed"]) for a in ATTRIBUTES}
    chosen, report = select_prompts(_stub_scorer, sources, candidates, top_k=1)
    for attribute in ATTRIBUTES:
        assert chosen[attribute] == (candidates[attribute][1].swapped(),), attribute


def test_real_tiny_clip_selection_round_trips_into_a_config(tiny_clip_dir: Path) -> None:
    from iqa_ray.backends.config import ModelConfig
    from iqa_ray.methods.attiqa.clip import ClipAttributeModel

    model = ClipAttributeModel(ModelConfig(id=str(tiny_clip_dir)))
    sources = generated_sources(2, size=(40, 30))
    candidates = {a: (PromptPair(positive=f"Very {a}.", negative=f"Not {a}."),
                      PromptPair(positive=f"{a} photo.", negative=f"No {a} photo."))
                  for a in ATTRIBUTES}
    chosen, report = select_prompts(model.pair_probabilities, sources, candidates, top_k=2)
    for attribute in ATTRIBUTES:
        best = report[attribute][0]
        assert abs(best.srcc) >= abs(report[attribute][1].srcc)
        # Independent check of the reported SRCC: scipy on the same proxy set and pair.
        proxy = build_proxy_set(sources, DEFAULT_LADDERS, attribute)
        scores = model.pair_probabilities(proxy.images, [best.candidate])[:, 0]
        per_group = [np.nan_to_num(stats.spearmanr(scores[proxy.groups == g],
                                                   proxy.levels[proxy.groups == g])[0])
                     for g in range(proxy.groups.max() + 1)]
        np.testing.assert_allclose(best.srcc, np.mean(per_group), atol=1e-9)
        assert chosen[attribute][0] == (best.candidate if best.srcc >= 0
                                        else best.candidate.swapped())
    snippet = yaml.safe_load(prompt_snippet(chosen, str(tiny_clip_dir), report))
    spec = MethodSpec.model_validate(snippet["methods"][0])
    for attribute in ATTRIBUTES:
        got = tuple(PromptPair.model_validate(p) for p in spec.params["prompts"][attribute])
        assert got == chosen[attribute]


def test_chosen_pairs_are_written_into_a_labelling_config() -> None:
    from iqa_ray.scoring.config import RunConfig

    config = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "attiqa_labels.yaml"
    base = yaml.safe_load(config.read_text())
    base["methods"].append("qalign_levels")
    chosen = {a: (PromptPair(positive=f"{a} up.", negative=f"{a} down."),) for a in ATTRIBUTES}
    report = {a: [] for a in ATTRIBUTES}
    text = prompt_snippet(chosen, "/models/clip", report, base)
    cfg = RunConfig.from_dict(yaml.safe_load(text))  # a valid run config as written
    clip, baseline = cfg.methods
    assert clip.params["model"] == "/models/clip" and clip.params["score"] == "mean"
    assert clip.params["prompts"]["contrast"] == ({"positive": "contrast up.",
                                                   "negative": "contrast down."},)
    assert baseline.method == "qalign_levels" and cfg.input.uri == base["input"]["uri"]
    with pytest.raises(ValueError, match="no clip_attributes"):
        prompt_snippet(chosen, "m", report, {"methods": ["qalign_levels"]})

"""ATTIQA pseudo-labels: the CLIP-IQA maths, prompt bookkeeping, and the clip_attributes method
on a tiny random CLIP loaded through from_pretrained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iqa_ray.errors import ConfigError
from iqa_ray.methods import ImageBatch, MethodContext, get_method
from iqa_ray.methods.attiqa.prompts import (
    ATTRIBUTES,
    DEFAULT_PROMPTS,
    PromptPair,
    attribute_scores,
    flatten_pairs,
    pair_probabilities,
)
from iqa_ray.scoring.config import MethodSpec


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (20 + 5 * i, 36, 3), dtype=np.uint8) for i in range(n)]


def _ctx() -> MethodContext:
    def no_vlm() -> None:
        raise AssertionError("a CLIP method must not load the shared VLM")

    return MethodContext(vlm_factory=no_vlm)  # type: ignore[arg-type]


def _method(model_dir: Path, **params: object) -> object:
    spec = MethodSpec.model_validate({"method": "clip_attributes",
                                      "params": {"model": str(model_dir), **params}})
    method = get_method("clip_attributes")(spec.params)
    method.setup(_ctx())
    return method


def test_pair_probability_is_a_two_way_softmax() -> None:
    rng = np.random.default_rng(1)
    x, tp, tn = rng.normal(size=(4, 8)), rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    got = pair_probabilities(x, tp, tn, logit_scale=100.0)
    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T) / np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))

    logits = 100.0 * np.stack([cos(x, tp), cos(x, tn)], axis=-1)
    expected = np.exp(logits[..., 0]) / np.exp(logits).sum(axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    np.testing.assert_allclose(pair_probabilities(x, tn, tp, 100.0), 1.0 - got, atol=1e-12)
    # logit_scale 0 knows nothing: every pair is a coin toss.
    np.testing.assert_allclose(pair_probabilities(x, tp, tn, 0.0), 0.5)


def test_pairs_are_grouped_per_attribute_and_averaged() -> None:
    table = dict(DEFAULT_PROMPTS)
    table["contrast"] = (*table["contrast"], PromptPair(positive="Crisp.", negative="Flat."))
    pairs, groups = flatten_pairs(table)
    assert len(pairs) == 6 and [len(g) for g in groups] == [1, 2, 1, 1, 1]
    assert pairs[groups[1][1]].positive == "Crisp."
    probs = np.arange(12, dtype=float).reshape(2, 6) / 12
    scores = attribute_scores(probs, groups)
    assert scores.shape == (2, 5)
    np.testing.assert_allclose(scores[:, 1], probs[:, 1:3].mean(axis=1))
    np.testing.assert_allclose(scores[:, 4], probs[:, 5])


def test_prompt_config_is_validated() -> None:
    spec = MethodSpec.model_validate({"method": "clip_attributes", "params": {
        "prompts": {**{a: [["Good.", "Bad."]] for a in ATTRIBUTES}}}})
    assert list(spec.params["prompts"]["noisiness"]) == [{"positive": "Good.", "negative": "Bad."}]
    with pytest.raises((ConfigError, ValueError), match="missing"):
        MethodSpec.model_validate({"method": "clip_attributes",
                                   "params": {"prompts": {"sharpness": [["a", "b"]]}}})
    with pytest.raises((ConfigError, ValueError), match="2 items"):
        MethodSpec.model_validate({"method": "clip_attributes", "params": {
            "prompts": {**{a: [["a", "b"]] for a in ATTRIBUTES}, "sharpness": [["a"]]}}})


def test_clip_attributes_scores_and_text_cache(tiny_clip_dir: Path) -> None:
    method = _method(tiny_clip_dir)
    assert method.model.text_encode_calls == 1  # every prompt embedded once, in setup
    ctx = _ctx()
    results = [method.score_batch(ImageBatch(np.arange(n), _images(n, seed=n)), ctx)
               for n in (3, 5)]
    assert method.model.text_encode_calls == 1  # batches reuse the cached embeddings
    result = results[1]
    assert set(result.columns) == {"score", *ATTRIBUTES} and result.errors == [None] * 5
    attributes = np.array([result.columns[a] for a in ATTRIBUTES]).T
    assert attributes.shape == (5, 5) and np.all((attributes > 0) & (attributes < 1))
    assert np.ptp(attributes[:, 0]) > 0  # images differ, so do their scores
    np.testing.assert_allclose(result.columns["score"], attributes.mean(axis=1), rtol=1e-12)


def test_swapped_pairs_give_the_complement(tiny_clip_dir: Path) -> None:
    images = _images(4)
    batch = ImageBatch(np.arange(4), images)
    swapped = {a: [[p.negative, p.positive] for p in DEFAULT_PROMPTS[a]] for a in ATTRIBUTES}
    plain = _method(tiny_clip_dir).score_batch(batch, _ctx())
    flipped = _method(tiny_clip_dir, prompts=swapped, score="brightness").score_batch(batch, _ctx())
    for attribute in ATTRIBUTES:
        np.testing.assert_allclose(flipped.columns[attribute],
                                   1.0 - np.asarray(plain.columns[attribute]), atol=1e-6)
    assert flipped.columns["score"] == flipped.columns["brightness"]


def test_one_actor_loads_one_clip_for_two_methods(tiny_clip_dir: Path) -> None:
    ctx = _ctx()
    methods = []
    for score in ("mean", "sharpness"):
        spec = MethodSpec.model_validate({"method": "clip_attributes",
                                          "params": {"model": str(tiny_clip_dir), "score": score}})
        methods.append(get_method("clip_attributes")(spec.params))
        methods[-1].setup(ctx)
    assert methods[0].model is methods[1].model


def test_a_failing_image_fails_only_its_row() -> None:
    from iqa_ray.methods.attiqa.methods import score_isolated

    def forward(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if any(img.shape[0] == 13 for img in images):
            raise RuntimeError("cannot read this one")
        values = np.array([[img.mean() / 255] * 5 for img in images])
        values[[img.shape[0] == 11 for img in images]] = np.nan
        return values.mean(axis=1), values

    images = [np.full((10, 9, 3), v, np.uint8) for v in (51, 0, 0, 204)]
    images[1], images[2] = np.zeros((13, 9, 3), np.uint8), np.zeros((11, 9, 3), np.uint8)
    result = score_isolated(forward, images)
    codes = [e.code if e else None for e in result.errors]
    assert codes == [None, "model_error", "unparsable", None]
    assert result.columns["score"][1] is None and result.columns["noisiness"][2] is None
    assert result.columns["score"][0] == pytest.approx(0.2)
    assert result.columns["sharpness"][3] == pytest.approx(0.8)

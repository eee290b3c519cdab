"""Q-Debias: the maths (table-driven, hand-computed), params validation, prompts, word ids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.transformers.backend import TransformersBackend
from iqa_ray.errors import ConfigError
from iqa_ray.methods import ImageBatch, MethodContext, get_method
from iqa_ray.methods.q_debias import (
    QDebias,
    QDebiasParams,
    debiased_quality,
    prior_probabilities,
    prior_weights,
)
from iqa_ray.scoring.config import RunConfig

# The spec's strings and priors (methods.md section 1), written out here, not imported.
SPEC_SIMILARITY = "Do these two images describe the same object? Yes or no"
SPEC_QUALITY = (
    "The visual quality of the first image is poor. How about the visual quality of the second "
    "image. Good or poor?"
)
SPEC_PRIORS = [("zoom_blur", 3), ("spatter", 3), ("saturate", 3), ("fog", 4)]
E = math.e


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ------------------------------------------------------------------------------- maths

# (p_yes, p_good, weighting, expected score), expectations computed by hand.
SCORE_CASES = [
    # Equal similarities: the plain mean of p_good, under both weightings.
    ([0.3, 0.3, 0.3, 0.3], [0.1, 0.2, 0.6, 0.9], "softmax_of_probabilities", 0.45),
    ([0.8, 0.8, 0.8, 0.8], [0.1, 0.2, 0.6, 0.9], "normalized", 0.45),
    # One dominant similarity: softmax of probabilities only tilts by up to a factor e ...
    ([1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], "softmax_of_probabilities", E / (E + 3)),
    # ... while normalising by the sum gives the dominant prior all the weight.
    ([1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], "normalized", 1.0),
    # Fixed probabilities, hand-computed: w = exp(p_yes) / sum.
    ([0.5, 0.5, 1.0, 0.0], [0.2, 0.4, 0.8, 1.0], "softmax_of_probabilities",
     (math.exp(0.5) * 0.2 + math.exp(0.5) * 0.4 + E * 0.8 + 1.0 * 1.0)
     / (2 * math.exp(0.5) + E + 1)),
    ([0.5, 0.5, 1.0, 0.0], [0.2, 0.4, 0.8, 1.0], "normalized", (0.5 * 0.2 + 0.5 * 0.4 + 0.8) / 2.0),
    # No prior looks like the same object: normalized falls back to uniform weights.
    ([0.0, 0.0, 0.0, 0.0], [0.2, 0.4, 0.8, 1.0], "normalized", 0.6),
    # Two priors only (N is configurable).
    ([0.0, 1.0], [0.0, 1.0], "softmax_of_probabilities", E / (1 + E)),
]


@pytest.mark.parametrize(("p_yes", "p_good", "weighting", "expected"), SCORE_CASES)
def test_debiased_quality_table(
    p_yes: list[float], p_good: list[float], weighting: str, expected: float
) -> None:
    got = debiased_quality(np.array(p_yes), np.array(p_good), weighting)  # type: ignore[arg-type]
    assert got == pytest.approx(expected, abs=1e-12)
    weights = prior_weights(np.array(p_yes), weighting)  # type: ignore[arg-type]
    assert weights.sum() == pytest.approx(1.0, abs=1e-12) and (weights >= 0).all()


def test_batched_rows_are_independent_and_bounded() -> None:
    rng = np.random.default_rng(0)
    p_yes, p_good = rng.random((50, 4)), rng.random((50, 4))
    batched = debiased_quality(p_yes, p_good)
    single = [debiased_quality(p_yes[i], p_good[i]) for i in range(50)]
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-15)
    # A convex combination of p_good: inside [min, max] of each row, hence inside [0, 1].
    assert (batched >= p_good.min(axis=1) - 1e-12).all()
    assert (batched <= p_good.max(axis=1) + 1e-12).all()


@pytest.mark.parametrize(
    ("temperature", "expected"),
    [(100.0, _sigmoid(0.02)), (1.0, _sigmoid(2.0)), (0.01, 1.0), (1e6, 0.5)],
)
def test_temperature_of_the_binary_softmax(temperature: float, expected: float) -> None:
    # Logit gap 2 between the positive and the negative word, for both questions.
    logits = [np.array([[3.0, 1.0]]), np.array([[3.0, 1.0]])]
    p_yes, p_good = prior_probabilities(logits, temperature)
    assert p_yes.shape == p_good.shape == (1, 1)
    assert p_yes[0, 0] == pytest.approx(expected, abs=1e-6)
    assert p_good[0, 0] == pytest.approx(expected, abs=1e-6)


def test_reduce_reads_similarity_then_quality_per_prior() -> None:
    method = QDebias({})
    # Two images; prior i has similarity gap 100*i and quality gap -100*i (T = 100).
    logits: list[np.ndarray] = []
    for i in range(4):
        logits.append(np.array([[100.0 * i, 0.0], [0.0, 0.0]]))
        logits.append(np.array([[0.0, 100.0 * i], [5.0, 5.0]]))
    out = method.reduce(logits)
    np.testing.assert_allclose(out["p_yes"][0], [_sigmoid(i) for i in range(4)], atol=1e-12)
    np.testing.assert_allclose(out["p_good"][0], [_sigmoid(-i) for i in range(4)], atol=1e-12)
    np.testing.assert_allclose(out["p_yes"][1], [0.5] * 4, atol=1e-12)
    w = np.exp([_sigmoid(i) for i in range(4)])
    expected = float(np.dot(w / w.sum(), [_sigmoid(-i) for i in range(4)]))
    assert out["score"][0] == pytest.approx(expected, abs=1e-12)
    assert out["score"][1] == pytest.approx(0.5, abs=1e-12)


def test_odd_logit_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="2N"):
        prior_probabilities([np.zeros((1, 2))] * 3)


# ------------------------------------------------------------------------------ params


def test_defaults_are_paper_mode() -> None:
    p = QDebiasParams()
    assert [(v.distortion, v.severity) for v in p.priors] == SPEC_PRIORS
    assert p.similarity_question == SPEC_SIMILARITY and p.quality_question == SPEC_QUALITY
    assert p.similarity_words == ("Yes", "No") and p.quality_words == ("Good", "Poor")
    assert p.answer_prefix == "" and p.temperature == 100.0
    assert p.weighting == "softmax_of_probabilities"
    assert [(v.distortion, v.severity) for v in QDebias({}).variants()] == SPEC_PRIORS


@pytest.mark.parametrize(
    ("prior", "message"),
    [
        ({"distortion": "zoom_blurr", "severity": 3}, "did you mean 'zoom_blur'"),
        ({"distortion": "fog", "severity": 6}, r"fog.*1\.\.5"),
        ({"distortion": "fog", "severity": 0}, r"fog.*1\.\.5"),
    ],
)
def test_bad_priors_fail_at_config_time(prior: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QDebiasParams.model_validate({"priors": [prior]})
    data = {"input": {"uri": "/nowhere"}, "output": {"uri": "/nowhere"},
            "methods": [{"method": "q_debias", "params": {"priors": [prior]}}]}
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(data)


def test_repeated_or_missing_priors_and_unknown_weighting_are_rejected() -> None:
    with pytest.raises(ConfigError, match="repeat"):
        QDebiasParams.model_validate({"priors": [{"distortion": "fog", "severity": 4}] * 2})
    with pytest.raises(ConfigError, match="at least one"):
        QDebiasParams.model_validate({"priors": []})
    with pytest.raises(ConfigError, match="weighting"):
        RunConfig.from_dict({"input": {"uri": "/a"}, "output": {"uri": "/b"},
                             "methods": [{"method": "q_debias", "params": {"weighting": "max"}}]})


# ----------------------------------------------------------------------------- prompts


def _batch(method: QDebias, n: int) -> ImageBatch:
    rng = np.random.default_rng(1)
    query = [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8) for _ in range(n)]
    variants = {
        v.key: [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8) for _ in range(n)]
        for v in method.variants()
    }
    return ImageBatch(np.arange(100, 100 + n, dtype=np.int64), query, variants)


def test_prompts_show_the_degraded_prior_first_and_the_query_second() -> None:
    method = QDebias({})
    batch = _batch(method, 3)
    prompts = method.prompts(batch, 1)
    assert len(prompts) == 2 * len(SPEC_PRIORS)
    for i, (name, severity) in enumerate(SPEC_PRIORS):
        key = f"{name}_{severity}"
        similarity, quality = prompts[2 * i], prompts[2 * i + 1]
        for prompt in (similarity, quality):
            assert len(prompt.images) == 2
            assert prompt.images[0] is batch.variants[key][1]
            assert prompt.images[1] is batch.query[1]
            assert prompt.image_keys == (f"101:{key}", "101")
            assert prompt.answer_prefix == ""
        assert similarity.question == SPEC_SIMILARITY and similarity.words == ("Yes", "No")
        assert quality.question == SPEC_QUALITY and quality.words == ("Good", "Poor")


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> TransformersBackend:
    return TransformersBackend(ModelConfig(id=str(tiny_model_dir), batch_size=4))


def test_answer_words_are_what_the_model_emits_first_in_the_assistant_turn(
    backend: TransformersBackend,
) -> None:
    method = QDebias({})
    tok = backend.tokenizer
    for prompt in method.prompts(_batch(method, 1), 0)[:2]:
        text = backend.render(prompt)
        # LLaVA-1.5 style: the turn ends "ASSISTANT:" with no space, so the model's first
        # token is the space-led word (" Good"), not the bare one.
        assert text.endswith("ASSISTANT:")
        base = tok.encode(text, add_special_tokens=False)
        for word in prompt.words:
            following = tok.encode(f"{text} {word}", add_special_tokens=False)[len(base)]
            assert backend.word_id(text, word) == following
            assert tok.decode([following]) == f" {word}"


def test_score_batch_is_the_paper_formula_on_the_model_logits(backend: TransformersBackend) -> None:
    method = get_method("q_debias")({})
    batch = _batch(method, 2)  # type: ignore[arg-type]
    ctx = MethodContext(vlm_factory=lambda: backend)
    method.setup(ctx)
    result = method.score_batch(batch, ctx)
    assert result.errors == [None, None]
    for row in range(2):
        logits = backend.next_token_logits(method.prompts(batch, row))  # type: ignore[attr-defined]
        p_yes = [_sigmoid((a[0] - a[1]) / 100.0) for a in logits[0::2]]
        p_good = [_sigmoid((a[0] - a[1]) / 100.0) for a in logits[1::2]]
        w = np.exp(p_yes) / np.exp(p_yes).sum()
        np.testing.assert_allclose(result.columns["p_yes"][row], p_yes, atol=1e-9)
        np.testing.assert_allclose(result.columns["p_good"][row], p_good, atol=1e-9)
        assert result.columns["score"][row] == pytest.approx(float(w @ p_good), abs=1e-9)

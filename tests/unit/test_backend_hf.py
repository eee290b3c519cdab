"""The transformers backend on a tiny random LLaVA loaded from disk through the production code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iqa_ray.backends import Prompt
from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.transformers.backend import TransformersBackend
from iqa_ray.errors import ConfigError, RowError
from iqa_ray.methods import ImageBatch, MethodContext, get_method
from iqa_ray.methods.levels import ANSWER_PREFIX, QUESTION

WORDS = ("excellent", "good", "fair", "poor", "bad")


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> TransformersBackend:
    return TransformersBackend(ModelConfig(id=str(tiny_model_dir), batch_size=8))


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # Different sizes and aspect ratios: the processor resizes them all.
    return [rng.integers(0, 256, (24 + 7 * i, 40 + 3 * i, 3), dtype=np.uint8) for i in range(n)]


def _prompts(n: int) -> list[Prompt]:
    imgs = _images(n + 1)
    out = []
    for i in range(n):
        question = QUESTION + " Please answer briefly." * (i % 3)  # different lengths -> padding
        images = (imgs[i],) if i % 2 == 0 else (imgs[i], imgs[i + 1])
        out.append(Prompt(images, question, ANSWER_PREFIX, WORDS))
    return out


def test_loaded_through_auto_classes(backend: TransformersBackend) -> None:
    assert type(backend.model).__name__ == "LlavaForConditionalGeneration"
    assert backend.tokenizer.padding_side == "left"
    assert backend.device == "cpu"
    assert str(next(backend.model.parameters()).dtype) == "torch.float32"


def test_batch_equals_single(backend: TransformersBackend) -> None:
    prompts = _prompts(7)
    batched = backend.next_token_logits(prompts)
    backend.batch_size = 1
    try:
        single = backend.next_token_logits(prompts)
    finally:
        backend.batch_size = 8
    for b, s in zip(batched, single, strict=True):
        assert isinstance(b, np.ndarray) and isinstance(s, np.ndarray)
        assert b.shape == (len(WORDS),)
        np.testing.assert_allclose(b, s, atol=1e-5, rtol=0)
    # The rows really differ (the comparison above is not vacuous).
    assert np.abs(batched[0] - batched[1]).max() > 1e-6


def test_left_padding_matches_unpadded_forward(backend: TransformersBackend) -> None:
    import torch

    short, long = _prompts(3)[0], _prompts(3)[2]
    texts = [backend.render(short), backend.render(long)]
    enc = backend.processor(text=texts, images=[list(short.images), list(long.images)],
                            padding=True, return_tensors="pt")
    assert enc["attention_mask"][0, 0] == 0, "the shorter prompt must be padded on the left"
    single = backend.processor(text=[texts[0]], images=[list(short.images)], return_tensors="pt")
    with torch.inference_mode():
        ref = backend.model(**single).logits[0, -1]
    ids = [backend.word_id(texts[0], w) for w in WORDS]
    got = backend.next_token_logits([short, long])[0]
    np.testing.assert_allclose(got, ref[ids].double().numpy(), atol=1e-5)


def test_word_ids_resolved_from_tokenizer(backend: TransformersBackend) -> None:
    tok = backend.tokenizer
    text = backend.render(Prompt((), QUESTION, ANSWER_PREFIX, WORDS))
    assert text.endswith(ANSWER_PREFIX)
    # After "... is" the word follows a space.
    expected = tok.encode(" excellent", add_special_tokens=False)[0]
    assert backend.word_id(text, "excellent") == expected
    # At the start of a turn that ends in a newline, the bare word is read.
    expected = tok.encode("Good", add_special_tokens=False)[0]
    assert backend.word_id("ASSISTANT:\n", "Good") == expected
    assert backend.word_id("ASSISTANT:\n", "Good") != backend.word_id("is", "Good")


def test_multi_token_word_is_a_clear_error(tiny_model_dir: Path) -> None:
    strict = TransformersBackend(ModelConfig(id=str(tiny_model_dir)))
    prompt = Prompt((), QUESTION, ANSWER_PREFIX, ("zebracorn", "good"))
    with pytest.raises(ConfigError, match=r"zebracorn.*tokens"):
        strict.check_words([prompt])
    lenient = TransformersBackend(ModelConfig(id=str(tiny_model_dir), word_policy="first"))
    lenient.check_words([prompt])
    first = lenient.tokenizer.encode(" zebracorn", add_special_tokens=False)[0]
    assert lenient.word_id(lenient.render(prompt), "zebracorn") == first


def test_one_bad_prompt_fails_alone(backend: TransformersBackend) -> None:
    prompts = _prompts(3)
    bad = Prompt((np.zeros((0, 5, 3), dtype=np.uint8),), QUESTION, ANSWER_PREFIX, WORDS)
    out = backend.next_token_logits([prompts[0], bad, prompts[1]])
    assert isinstance(out[1], RowError) and out[1].code == "model_error"
    ref = backend.next_token_logits([prompts[0], prompts[1]])
    np.testing.assert_allclose(out[0], ref[0], atol=1e-5)
    np.testing.assert_allclose(out[2], ref[1], atol=1e-5)


def test_baseline_methods_on_real_model(backend: TransformersBackend) -> None:
    ctx = MethodContext(vlm_factory=lambda: backend)
    imgs = _images(5, seed=3)
    batch = ImageBatch(np.arange(5, dtype=np.int64), imgs)
    for name, (low, high) in {"qalign_levels": (1, 5), "qbench_binary": (0, 1)}.items():
        method = get_method(name)({})
        method.setup(ctx)
        first = method.score_batch(batch, ctx)
        again = method.score_batch(batch, ctx)
        assert all(e is None for e in first.errors)
        scores = np.array(first.columns["score"], dtype=float)
        assert np.all((scores >= low) & (scores <= high))
        np.testing.assert_array_equal(scores, np.array(again.columns["score"], dtype=float))
    probs = np.array(method_probs(backend, imgs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)


def method_probs(backend: TransformersBackend, imgs: list[np.ndarray]) -> list[list[float]]:
    ctx = MethodContext(vlm_factory=lambda: backend)
    method = get_method("qalign_levels")({})
    result = method.score_batch(ImageBatch(np.arange(len(imgs), dtype=np.int64), imgs), ctx)
    # The score is the expectation of the stored level probabilities.
    for probs, score in zip(result.columns["level_probs"], result.columns["score"], strict=True):
        assert score == pytest.approx(float(np.dot(probs, [5, 4, 3, 2, 1])), abs=1e-9)
    return result.columns["level_probs"]

"""mPLUG-Owl2 in the transformers backend on a tiny random model built with this package:
rendering, word ids and token estimates, and the prefix-sharing path (shared == unshared on
Q-Debias- and Compare2Score-shaped prompts, the first-call check, padding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.families.mplug_owl2 import conversation
from iqa_ray.backends.families.mplug_owl2.tiny import build_tiny_mplug_owl2
from iqa_ray.backends.prompt import Prompt
from iqa_ray.backends.transformers.backend import TransformersBackend
from iqa_ray.errors import ConfigError
from iqa_ray.methods.base import ImageBatch, MethodContext
from iqa_ray.methods.compare2score.method import Compare2Score
from iqa_ray.methods.compare2score.official import ANCHOR_NAMES, write_official_anchor_set
from iqa_ray.methods.q_debias import QDebias

TOL = 1e-4  # float32 logits, as the fixture's


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_mplug_owl2(tmp_path_factory.mktemp("owl2") / "model", seed=3)


@pytest.fixture(scope="module")
def backend(folder: Path) -> TransformersBackend:
    return TransformersBackend(ModelConfig(id=str(folder), batch_size=3))


def _images(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(40, 56), (56, 31), (48, 48), (23, 61), (64, 20)]
    return [rng.integers(0, 256, (*sizes[k % len(sizes)], 3), dtype=np.uint8) for k in range(n)]


def _q_debias_prompts(n: int) -> list[Prompt]:
    method = QDebias({})
    queries = _images(1, n)
    variants = {v.key: _images(10 + k, n) for k, v in enumerate(method.variants())}
    batch = ImageBatch(np.arange(n, dtype=np.int64), queries, variants)
    return [p for row in range(n) for p in method.prompts(batch, row)]


def _c2s_prompts(tmp_path: Path, backend: TransformersBackend, n: int) -> list[Prompt]:
    anchors = tmp_path / "stand_ins"
    anchors.mkdir()
    for name, image in zip(ANCHOR_NAMES, _images(7, 5), strict=True):
        Image.fromarray(image).save(anchors / f"{name}.png")
    write_official_anchor_set(anchors, str(tmp_path / "set"))
    method = Compare2Score({"anchors": str(tmp_path / "set")})
    method.setup(MethodContext(vlm_factory=lambda: backend))
    batch = ImageBatch(np.arange(n, dtype=np.int64), _images(2, n))
    return [p for row in range(n) for p in method.prompts(batch, row)]


def _gap(a: list, b: list) -> float:
    assert all(isinstance(x, np.ndarray) for x in [*a, *b])
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def test_render_follows_the_mplug_owl2_conversation() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    plain = Prompt((image, image), "Same object?", "", ("Yes",))
    assert conversation.render(plain) == "USER: <|image|><|image|>Same object? ASSISTANT:"
    laid = Prompt((image,), "Rate it.", "It is", ("good",), layout="Rate it.\n{image}\n")
    assert conversation.render(laid) == "USER: Rate it.\n<|image|>\nASSISTANT: It is"
    with pytest.raises(ValueError, match="may not contain"):
        conversation.render(Prompt((), "a <|image|> b", "", ("x",)))


def test_word_ids_and_token_estimates(backend: TransformersBackend, folder: Path) -> None:
    rt = backend.rt
    prompt = _q_debias_prompts(1)[1]
    text = backend.render(prompt)
    assert backend.word_id(text, "Good") == rt.tokenizer.encode("Good")[1]
    assert backend.word_id("anything", "Good") == backend.word_id(text, "Good")
    enc = rt.model_inputs([text], [list(prompt.images)])
    assert backend.estimate_tokens(prompt, text) == enc["input_ids"].shape[1]
    assert int((enc["input_ids"] == -200).sum()) == 2 * rt.processor.num_image_tokens
    with pytest.raises(ConfigError, match="word_policy"):
        backend.check_words([Prompt((), "q", "", ("excellentgood",))])
    loose = TransformersBackend(ModelConfig(id=str(folder), word_policy="first"))
    assert loose.word_id("", "excellentgood") == loose.word_id("", "excellent")


def test_shared_equals_unshared_on_q_debias_prompts(backend: TransformersBackend) -> None:
    prompts = _q_debias_prompts(3)
    runner = backend._shared
    assert runner is not None and backend.prefix_sharing
    plan = runner.plan(prompts)
    assert plan.shared_tokens < plan.unshared_tokens and plan.distinct_images == 3 + 12
    shared = runner._run_shared(prompts)
    unshared = backend.unshared_logits(prompts)
    assert _gap(shared, unshared) <= TOL


def test_shared_equals_unshared_on_compare2score_prompts(
    tmp_path: Path, backend: TransformersBackend
) -> None:
    prompts = _c2s_prompts(tmp_path, backend, 4)
    assert prompts[0].layout is not None and backend.render(prompts[0]).startswith(
        "USER: <|image|> <|image|> Compared with the first image"
    )
    runner = backend._shared
    assert runner is not None
    plan = runner.plan(prompts)
    assert max(g.prefix_len for g in plan.groups) > 0 and plan.distinct_images == 5 + 4
    assert _gap(runner._run_shared(prompts), backend.unshared_logits(prompts)) <= TOL


def test_first_call_check_passes_and_batches_match_one_by_one(folder: Path) -> None:
    fresh = TransformersBackend(ModelConfig(id=str(folder), batch_size=4))
    runner = fresh._shared
    assert runner is not None and runner.verified is None
    prompts = _q_debias_prompts(2)
    got = fresh.next_token_logits(prompts)
    assert runner.verified is True and runner.enabled
    assert fresh.stats.images_encoded == 2 + 8  # each distinct image once
    one_by_one = [fresh.unshared_logits([p])[0] for p in prompts]
    assert _gap(fresh.unshared_logits(prompts), one_by_one) <= TOL  # left padding
    assert _gap(got, one_by_one) <= TOL


def test_q_debias_scores_on_this_family(backend: TransformersBackend) -> None:
    method = QDebias({})
    ctx = MethodContext(vlm_factory=lambda: backend)
    method.setup(ctx)
    queries = _images(4, 2)
    variants = {v.key: _images(20 + k, 2) for k, v in enumerate(method.variants())}
    result = method.score_batch(ImageBatch(np.arange(2, dtype=np.int64), queries, variants), ctx)
    assert result.errors == [None, None]
    assert all(0.0 <= s <= 1.0 for s in result.columns["score"])
    assert all(len(p) == 4 for p in result.columns["p_good"])

"""The transformers backend across model families, each a tiny random model loaded from disk.

LLaVA runs everywhere. Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision and Idefics3 (SmolVLM) need
torchvision for their processors, which does not import beside the CPU torch wheel of the
project's development and CI machines: those cases are skipped there and run on a machine with
torchvision (a GPU box: ``python -m pytest tests/unit/test_backend_archs.py tests/gpu``).
On CUDA the backend runs these models on the GPU (float32 here; bf16 is covered in tests/gpu).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from iqa_ray.backends import Prompt
from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.transformers.backend import TransformersBackend
from iqa_ray.devtools.smoke import build_tiny_llava
from iqa_ray.methods import ImageBatch, MethodContext, get_method
from iqa_ray.methods.compare2score.method import ANSWER_PREFIX as C2S_PREFIX
from iqa_ray.methods.compare2score.method import QUESTION as C2S_QUESTION
from iqa_ray.methods.compare2score.method import WORDS as C2S_WORDS
from iqa_ray.methods.levels import ANSWER_PREFIX, QUESTION
from iqa_ray.methods.q_debias import QUALITY_QUESTION, SIMILARITY_QUESTION
from tests.archs.onevision_idefics import build_tiny_idefics3, build_tiny_llava_onevision
from tests.archs.qwen_vl import build_tiny_qwen2_5_vl, build_tiny_qwen2_vl

LEVEL_WORDS = ("excellent", "good", "fair", "poor", "bad")
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None

# name -> (builder, model class name, needs torchvision)
ARCHES: dict[str, tuple[Callable[..., Path], str, bool]] = {
    "llava": (build_tiny_llava, "LlavaForConditionalGeneration", False),
    "qwen2_vl": (build_tiny_qwen2_vl, "Qwen2VLForConditionalGeneration", True),
    "qwen2_5_vl": (build_tiny_qwen2_5_vl, "Qwen2_5_VLForConditionalGeneration", True),
    "llava_onevision": (
        build_tiny_llava_onevision, "LlavaOnevisionForConditionalGeneration", True),
    "idefics3": (build_tiny_idefics3, "Idefics3ForConditionalGeneration", True),
}


@pytest.fixture(scope="module", params=list(ARCHES))
def arch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    name = request.param
    build, class_name, needs_tv = ARCHES[name]
    if needs_tv and not HAS_TORCHVISION:
        pytest.skip(f"{name}: its processor needs torchvision (not importable here)")
    folder = build(tmp_path_factory.mktemp(name))
    backend = TransformersBackend(ModelConfig(id=str(folder), dtype="float32", batch_size=4))
    return name, class_name, backend


def _images(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # Sizes and aspect ratios vary: tiled and dynamic-resolution processors give each image
    # a different token count.
    return [rng.integers(0, 256, (24 + 9 * i, 40 + 5 * (i % 3), 3), dtype=np.uint8)
            for i in range(n)]


def _mixed_prompts() -> list[Prompt]:
    """One- and two-image prompts of every built-in method's shape, of different lengths."""
    imgs = _images(8, 0)
    return [
        Prompt((imgs[0],), QUESTION, ANSWER_PREFIX, LEVEL_WORDS),
        Prompt((imgs[1],), QUESTION, ANSWER_PREFIX, ("good", "poor")),
        Prompt((imgs[2], imgs[3]), SIMILARITY_QUESTION, "", ("Yes", "No")),
        Prompt((imgs[2], imgs[3]), QUALITY_QUESTION, "", ("Good", "Poor")),
        Prompt((imgs[4], imgs[5]), C2S_QUESTION, C2S_PREFIX, C2S_WORDS),
        Prompt((imgs[6],), QUESTION + " Answer in one word.", ANSWER_PREFIX, LEVEL_WORDS),
        Prompt((imgs[7], imgs[0]), C2S_QUESTION, C2S_PREFIX, C2S_WORDS),
    ]


def test_loads_through_the_auto_classes_and_resolves_every_word(arch: Any) -> None:
    name, class_name, backend = arch
    assert type(backend.model).__name__ == class_name
    assert backend.model.config.model_type == name
    assert backend.tokenizer.padding_side == "left"
    backend.check_words(_mixed_prompts())  # raises on a multi-token or shared-first-token word
    # Only verified model types take the shared-prefix path; the others run unshared.
    assert backend.prefix_sharing == (name == "llava")


def test_batched_logits_equal_one_by_one(arch: Any) -> None:
    _, _, backend = arch
    prompts = _mixed_prompts()
    batched = backend.next_token_logits(prompts)
    backend.batch_size = 1
    try:
        single = backend.next_token_logits(prompts)
    finally:
        backend.batch_size = 4
    # cuDNN convolutions may use TF32 on a GPU even in float32.
    tol = 1e-4 if backend.device == "cpu" else 2e-3
    for b, s, p in zip(batched, single, prompts, strict=True):
        assert isinstance(b, np.ndarray) and isinstance(s, np.ndarray), (b, s)
        assert b.shape == (len(p.words),) and np.isfinite(b).all()
        np.testing.assert_allclose(b, s, atol=tol, rtol=0)
    # Different images give different logits: the comparison is not vacuous.
    assert np.abs(batched[0] - batched[5]).max() > 10 * tol


def test_token_estimate_is_the_processor_length(arch: Any) -> None:
    """``max_tokens_per_batch`` plans with ``estimate_tokens``: it must match the real length."""
    _, _, backend = arch
    for prompt in _mixed_prompts():
        text = backend.render(prompt)
        enc = backend.processor(text=[text], images=[list(prompt.images)], return_tensors="pt")
        real = int(enc["attention_mask"].sum())
        assert backend.estimate_tokens(prompt, text) == real, (len(prompt.images), real)


def test_q_debias_and_levels_methods_score_through_the_model(arch: Any) -> None:
    _, _, backend = arch
    ctx = MethodContext(vlm_factory=lambda: backend)
    levels = get_method("qalign_levels")({})
    q_debias = get_method("q_debias")({})
    keys = [v.key for v in q_debias.variants()]
    images = _images(3 + 3 * len(keys), seed=7)
    batch = ImageBatch(np.arange(3, dtype=np.int64), images[:3],
                       {k: images[3 + 3 * j: 6 + 3 * j] for j, k in enumerate(keys)})
    for method in (levels, q_debias):
        method.setup(ctx)
        result = method.score_batch(batch, ctx)
        assert all(e is None for e in result.errors), result.errors
        scores = np.asarray(result.columns["score"], dtype=float)
        assert np.isfinite(scores).all() and len(scores) == 3

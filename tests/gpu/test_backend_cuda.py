"""The transformers backend on a CUDA device: bf16 by default, the shared path, OOM recovery.

Skipped where no CUDA device is visible (CI, the CPU development machines). Run on a GPU box:

    python -m pytest tests/gpu -q
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

from iqa_ray.backends import Prompt  # noqa: E402
from iqa_ray.backends.config import ModelConfig  # noqa: E402
from iqa_ray.backends.transformers.backend import TransformersBackend  # noqa: E402
from iqa_ray.methods.compare2score.method import ANSWER_PREFIX as C2S_PREFIX  # noqa: E402
from iqa_ray.methods.compare2score.method import QUESTION as C2S_QUESTION  # noqa: E402
from iqa_ray.methods.compare2score.method import WORDS as C2S_WORDS  # noqa: E402
from iqa_ray.methods.levels import ANSWER_PREFIX, QUESTION  # noqa: E402

LEVEL_WORDS = ("excellent", "good", "fair", "poor", "bad")


def _images(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (20 + 5 * i, 28 + 3 * i, 3), dtype=np.uint8) for i in range(n)]


def _prompts() -> list[Prompt]:
    imgs, anchors = _images(6, 0), _images(3, 1)
    levels = [Prompt((im,), QUESTION, ANSWER_PREFIX, LEVEL_WORDS) for im in imgs]
    c2s = [Prompt((a, im), C2S_QUESTION, C2S_PREFIX, C2S_WORDS, (f"a{k}", str(i)))
           for i, im in enumerate(imgs[:3]) for k, a in enumerate(anchors)]
    return levels + c2s


@pytest.fixture(scope="module")
def cpu_reference(tiny_model_dir: Path) -> list[np.ndarray]:
    """float32 logits computed on the CPU (the model moved there after loading)."""
    backend = TransformersBackend(ModelConfig(id=str(tiny_model_dir), dtype="float32"))
    backend.model.to("cpu")
    backend.device = "cpu"
    backend.prefix_sharing = False
    out = backend.next_token_logits(_prompts())
    assert all(isinstance(x, np.ndarray) for x in out)
    return out  # type: ignore[return-value]


def test_auto_dtype_is_bf16_on_cuda_and_close_to_float32_cpu(
    tiny_model_dir: Path, cpu_reference: list[np.ndarray]
) -> None:
    backend = TransformersBackend(ModelConfig(id=str(tiny_model_dir), batch_size=4))
    assert backend.device == "cuda"
    param = next(backend.model.parameters())
    assert param.device.type == "cuda" and param.dtype == torch.bfloat16
    out = backend.next_token_logits(_prompts())
    for got, ref in zip(out, cpu_reference, strict=True):
        assert isinstance(got, np.ndarray) and np.isfinite(got).all()
        # bf16 keeps ~3 significant digits; the tiny model's logits are O(0.1-1).
        np.testing.assert_allclose(got, ref, atol=0.05, rtol=0.05)
    # The distributions over the words agree too (what the methods consume).
    for got, ref in zip(out, cpu_reference, strict=True):
        p, q = np.exp(got - got.max()), np.exp(ref - ref.max())
        assert np.abs(p / p.sum() - q / q.sum()).max() < 0.02


def test_float32_on_cuda_equals_cpu_and_shared_equals_unshared(
    tiny_model_dir: Path, cpu_reference: list[np.ndarray]
) -> None:
    cfg = ModelConfig(id=str(tiny_model_dir), dtype="float32", batch_size=4)
    backend = TransformersBackend(cfg)
    assert backend.device == "cuda" and backend.prefix_sharing
    prompts = _prompts()
    shared = backend.next_token_logits(prompts)
    backend.prefix_sharing = False
    unshared = backend.next_token_logits(prompts)
    for s, u, ref in zip(shared, unshared, cpu_reference, strict=True):
        assert isinstance(s, np.ndarray) and isinstance(u, np.ndarray)
        np.testing.assert_allclose(u, ref, atol=1e-3, rtol=0)
        np.testing.assert_allclose(s, u, atol=1e-3, rtol=0)


def test_real_cuda_out_of_memory_is_halved_and_recovered(tiny_model_dir: Path) -> None:
    """Fill the device so the whole batch cannot fit but a few rows can: every row still gets
    its logits, through more than one forward call (the halving really happened)."""
    backend = TransformersBackend(ModelConfig(id=str(tiny_model_dir), batch_size=64))
    backend.prefix_sharing = False
    # ~330 tokens per row (the tiny model allows 512 positions).
    rows = [Prompt((im,), QUESTION * 30, ANSWER_PREFIX, LEVEL_WORDS) for im in _images(64, 3)]

    def peak(prompts: list[Prompt]) -> tuple[list, int]:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = backend.next_token_logits(prompts)
        return out, torch.cuda.max_memory_allocated() - base

    _, one = peak(rows[:1])
    expected, whole = peak(rows)
    assert whole > 8 * one, (whole, one)  # the batch's activations grow with its rows
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    leave = max(whole // 4, 4 * one)
    hog = torch.empty(max(free - leave, 0), dtype=torch.uint8, device="cuda")
    backend.stats.reset()
    try:
        out = backend.next_token_logits(rows)
    finally:
        del hog
        torch.cuda.empty_cache()
    errors = [x for x in out if not isinstance(x, np.ndarray)]
    assert not errors, errors[:3]
    assert backend.stats.forward_calls > 1, "the batch fit: no out-of-memory error was provoked"
    for got, ref in zip(out, expected, strict=True):
        np.testing.assert_allclose(got, ref, atol=0.05, rtol=0.05)

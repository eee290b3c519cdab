"""Shared-prefix inference equals the unshared forward; budgets and OOM halving hold.

Model tests use the tiny random LLaVA in float32 on CPU: the optimised path (prefix KV cache,
images encoded once, budgeted sub-batches) must give the unshared path's logits within 1e-4.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from iqa_ray.backends import Prompt
from iqa_ray.backends.batching import (
    ForwardStats,
    is_out_of_memory,
    plan_batches,
    prefetch_map,
    run_halving,
)
from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.transformers.backend import TransformersBackend
from iqa_ray.backends.transformers.prefix import (
    dedupe_images,
    group_by_prefix,
    token_keys,
    tokens_saved,
)
from iqa_ray.backends.transformers.runtime import sharing_support
from iqa_ray.errors import RowError
from iqa_ray.methods import ImageBatch, MethodContext, get_method
from iqa_ray.methods.compare2score.maths import map_estimate, soft_comparison
from iqa_ray.methods.compare2score.method import ANSWER_PREFIX as C2S_PREFIX
from iqa_ray.methods.compare2score.method import QUESTION as C2S_QUESTION
from iqa_ray.methods.compare2score.method import WORDS as C2S_WORDS
from iqa_ray.methods.levels import ANSWER_PREFIX, QUESTION
from iqa_ray.methods.q_debias import QUALITY_QUESTION, SIMILARITY_QUESTION

TOL = 1e-4
OFFICIAL_PA = np.array(
    [
        [0.5, 0.25912809, 3.3130276e-4, 1.6087297e-6, 1.1803027e-9],
        [0.74087191, 0.5, 0.24985345, 0.099954158, 1.8675303e-8],
        [0.99966872, 0.75014657, 0.5, 0.4996888, 0.24852838],
        [0.99999839, 0.90004587, 0.5003112, 0.5, 0.25400183],
        [1.0, 1.0, 0.75147164, 0.74599814, 0.5],
    ]
)


# ---------------------------------------------------------------- pure planning helpers


def test_groups_follow_the_longest_shared_prefix() -> None:
    header = list(range(100, 120))  # 20 tokens every prompt shares (a system prompt)
    pair_a, pair_b = header + [-1] * 30, header + [-2] * 30  # two different images
    seqs = [[*pair_a, 7, 8], [*pair_b, 7, 8], [*pair_a, 9], [*pair_b, 9, 9, 9], [5, 6]]
    groups = group_by_prefix(seqs, min_shared=8)
    members = sorted(tuple(sorted(g.members)) for g in groups)
    # The pairs share 50 tokens each, which beats one group sharing only the 20-token header.
    assert members == [(0, 2), (1, 3), (4,)]
    assert {g.prefix_len for g in groups if len(g.members) == 2} == {50}
    assert tokens_saved(groups) == 100
    # Identical prompts share all but the last token; short prefixes are not shared.
    same = group_by_prefix([[1] * 12, [1] * 12], min_shared=8)
    assert [(len(g.members), g.prefix_len) for g in same] == [(2, 11)]
    assert all(g.prefix_len == 0 for g in group_by_prefix([[1] * 5 + [2], [1] * 5 + [3]]))


def test_token_keys_tell_images_apart() -> None:
    image = 99
    a = token_keys([1, image, image, 2], image, [0, 1])
    b = token_keys([1, image, image, 2], image, [2, 3])
    assert a[0] == b[0] and a[1] != b[1] and a[3] == b[3] == 2
    with pytest.raises(ValueError, match="more image placeholders"):
        token_keys([image, image], image, [0])
    with pytest.raises(ValueError, match="fewer image placeholders"):
        token_keys([image], image, [0, 1])


def test_plan_batches_respects_rows_and_tokens() -> None:
    rng = np.random.default_rng(0)
    costs = sorted(rng.integers(1, 60, 40).tolist())
    plan = plan_batches(costs, max_rows=6, max_tokens=100)
    assert [i for batch in plan for i in batch] == list(range(40))
    for batch in plan:
        widest = max(costs[i] for i in batch)
        assert len(batch) <= 6 and (len(batch) * widest <= 100 or len(batch) == 1)
    assert plan_batches([500, 3], max_rows=8, max_tokens=100) == [[0], [1]]  # too long: alone
    assert plan_batches([3] * 5, max_rows=2, max_tokens=None) == [[0, 1], [2, 3], [4]]


def test_run_halving_retries_out_of_memory_in_halves() -> None:
    import torch

    sizes: list[int] = []
    freed: list[int] = []

    def run(items: list[int]) -> list[int]:
        sizes.append(len(items))
        if len(items) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return [x * 10 for x in items]

    out = run_halving(list(range(7)), run, is_out_of_memory, lambda items: freed.append(len(items)))
    assert out == [x * 10 for x in range(7)]
    assert sizes == [7, 3, 1, 2, 4, 2, 2] and freed == [7, 3, 4]
    with pytest.raises(torch.cuda.OutOfMemoryError):  # one item that does not fit: re-raised
        run_halving([1, 2, 3], lambda items: run([0, 0, 0]), is_out_of_memory)
    with pytest.raises(KeyError):  # other errors are not retried
        run_halving([1, 2], lambda items: {}["x"], is_out_of_memory)


def test_prefetch_map_keeps_order_and_errors() -> None:
    assert list(prefetch_map(lambda x: x * x, range(6), overlap=True)) == [0, 1, 4, 9, 16, 25]

    def boom(x: int) -> int:
        if x == 2:
            raise ValueError("bad item")
        return x

    got = prefetch_map(boom, range(4), overlap=True)
    assert [next(got), next(got)] == [0, 1]
    with pytest.raises(ValueError, match="bad item"):
        next(got)


def test_dedupe_images_by_key_checked_against_pixels() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    prompts = [
        Prompt((a, b), "q", "", ("x",), ("ka", "kb")),
        Prompt((a.copy(), b), "q", "", ("x",), ("ka", "kb")),  # same key, same pixels
        Prompt((b.copy(),), "q", "", ("x",), ("ka",)),  # key reused for other pixels
        Prompt((a.copy(),), "q", "", ("x",)),  # no key: content hash
    ]
    arrays, slots = dedupe_images(prompts)
    assert slots[0] == slots[1] == [0, 1]
    assert slots[2] != [0] and np.array_equal(arrays[slots[2][0]], b)
    assert np.array_equal(arrays[slots[3][0]], a)
    assert len(arrays) == 4  # a, b, b under a misused key, a by content


def test_unverified_model_types_fall_back() -> None:
    text = SimpleNamespace(layer_types=["full_attention"])
    processor = SimpleNamespace(image_token_id=5, replace_image_token=lambda *a, **k: "")

    def model(model_type: str, layers: list[str] | None = None) -> Any:
        txt = SimpleNamespace(layer_types=layers) if layers else text
        return SimpleNamespace(
            config=SimpleNamespace(model_type=model_type, get_text_config=lambda: txt)
        )

    assert sharing_support(model("llava"), processor) is None
    assert "qwen2_vl" in (sharing_support(model("qwen2_vl"), processor) or "")
    assert "sliding" in (sharing_support(model("llava", ["sliding_attention"]), processor) or "")


# ---------------------------------------------------------------- tiny LLaVA, both paths


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> TransformersBackend:
    b = TransformersBackend(ModelConfig(id=str(tiny_model_dir), batch_size=4))
    assert b.prefix_sharing, "the tiny LLaVA must take the shared path"
    return b


def _images(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (20 + 5 * i, 28 + 3 * i, 3), dtype=np.uint8) for i in range(n)]


def _q_debias_prompts(n_images: int, n_priors: int = 4, seed: int = 0) -> list[Prompt]:
    queries, priors = _images(n_images, seed), _images(n_images * n_priors, seed + 1)
    out = []
    for i, query in enumerate(queries):
        for k in range(n_priors):
            images, keys = (priors[i * n_priors + k], query), (f"{i}:{k}", str(i))
            out.append(Prompt(images, SIMILARITY_QUESTION, "", ("Yes", "No"), keys))
            out.append(Prompt(images, QUALITY_QUESTION, "", ("Good", "Poor"), keys))
    return out


def _c2s_prompts(n_images: int, seed: int = 5) -> list[Prompt]:
    anchors, tests = _images(5, seed), _images(n_images, seed + 1)
    return [
        Prompt((anchor, test), C2S_QUESTION, C2S_PREFIX, C2S_WORDS, (f"a{a}", str(i)))
        for i, test in enumerate(tests)
        for a, anchor in enumerate(anchors)
    ]


def _both(backend: TransformersBackend, prompts: list[Prompt]) -> tuple[list, list, dict, dict]:
    """(unshared logits, shared logits, unshared stats, shared stats) for the same prompts."""
    runs = []
    for sharing in (False, True):
        backend.prefix_sharing = sharing
        backend.stats.reset()
        runs.append((backend.next_token_logits(prompts), backend.stats.as_dict()))
    backend.prefix_sharing = True
    (naive, naive_stats), (shared, shared_stats) = runs
    for a, b in zip(naive, shared, strict=True):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
        np.testing.assert_allclose(b, a, atol=TOL, rtol=0)
    return naive, shared, naive_stats, shared_stats


def test_q_debias_shaped_prompts_equal_unshared(backend: TransformersBackend) -> None:
    prompts = _q_debias_prompts(3)
    naive, _, naive_stats, shared_stats = _both(backend, prompts)
    assert np.abs(naive[0] - naive[1]).max() > 1e-6  # rows differ: the check is not vacuous
    # Each pair's images and template run once; each image is encoded once.
    assert shared_stats["tokens"] < 0.8 * naive_stats["tokens"]
    assert naive_stats["images_encoded"] == 2 * len(prompts)
    assert shared_stats["images_encoded"] == 3 * (1 + 4)


def test_compare2score_shaped_prompts_equal_unshared_scores(backend: TransformersBackend) -> None:
    prompts = _c2s_prompts(4)
    naive, shared, naive_stats, shared_stats = _both(backend, prompts)
    assert shared_stats["tokens"] < naive_stats["tokens"]
    assert shared_stats["images_encoded"] == 5 + 4
    scores = [
        map_estimate(
            OFFICIAL_PA,
            np.stack(
                [soft_comparison(np.stack(out[i * 5 : (i + 1) * 5]), 100.0) for i in range(4)]
            ),
        ).score
        for out in (naive, shared)
    ]
    np.testing.assert_allclose(scores[1], scores[0], atol=1e-3)


def test_mixed_lengths_groups_and_budget(backend: TransformersBackend) -> None:
    single = [
        Prompt(
            (im,),
            QUESTION + " Answer briefly." * (i % 3),
            ANSWER_PREFIX,
            ("excellent", "good", "fair", "poor", "bad"),
        )
        for i, im in enumerate(_images(3, 9))
    ]
    prompts = _q_debias_prompts(1, n_priors=2, seed=3) + _c2s_prompts(2) + single
    prompts = prompts[::-1]  # grouping must not depend on the order prompts arrive in
    shapes: list[tuple[int, int]] = []
    original = backend.model.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        shapes.append(tuple(kwargs["attention_mask"].shape))
        return original(*args, **kwargs)

    backend.model.forward = spy
    backend.batch_size, backend.max_tokens_per_batch = 3, 200
    try:
        _both(backend, prompts)
    finally:
        backend.batch_size, backend.max_tokens_per_batch = 4, None
        del backend.model.forward
    longest = max(w for _, w in shapes)
    assert longest < 200, "every row fits the budget, so every batch must"
    assert all(rows <= 3 and (rows * width <= 200) for rows, width in shapes)
    assert any(rows > 1 for rows, _ in shapes)


def test_out_of_memory_halves_and_retries(backend: TransformersBackend) -> None:
    import torch

    prompts = _q_debias_prompts(1, n_priors=2, seed=7)
    backend.prefix_sharing = False
    reference = backend.next_token_logits(prompts)
    original, rows_seen = backend.model.forward, []

    def tight_memory(*args: Any, **kwargs: Any) -> Any:
        rows = int(kwargs["attention_mask"].shape[0])
        rows_seen.append(rows)
        if rows > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return original(*args, **kwargs)

    backend.model.forward = tight_memory
    try:
        for sharing in (False, True):
            backend.prefix_sharing = sharing
            got = backend.next_token_logits(prompts)
            for a, b in zip(reference, got, strict=True):
                np.testing.assert_allclose(b, a, atol=TOL, rtol=0)
    finally:
        del backend.model.forward
        backend.prefix_sharing = True
    assert 4 in rows_seen and 2 in rows_seen, "sub-batches of 4 must be halved to 2, then 1"


def test_q_debias_method_scores_equal_unshared(backend: TransformersBackend) -> None:
    method = get_method("q_debias")({})
    keys = [v.key for v in method.variants()]
    images = _images(2 + 2 * len(keys), seed=11)
    batch = ImageBatch(
        np.arange(2, dtype=np.int64),
        images[:2],
        {k: images[2 + 2 * j : 4 + 2 * j] for j, k in enumerate(keys)},
    )
    ctx = MethodContext(vlm_factory=lambda: backend)
    results = []
    for sharing in (False, True):
        backend.prefix_sharing = sharing
        results.append(method.score_batch(batch, ctx))
    backend.prefix_sharing = True
    assert all(e is None for r in results for e in r.errors)
    np.testing.assert_allclose(results[1].columns["score"], results[0].columns["score"], atol=TOL)
    np.testing.assert_allclose(results[1].columns["p_good"], results[0].columns["p_good"], atol=TOL)


def test_forward_stats_counters() -> None:
    stats = ForwardStats()
    stats.add(prompts=3, tokens=10)
    stats.add(tokens=5)
    assert stats.as_dict()["tokens"] == 15 and stats.prompts == 3
    stats.reset()
    assert not any(stats.as_dict().values())


# ---------------------------------------------------------------- vLLM helpers, benchmark


def test_vllm_requests_and_results_without_vllm() -> None:
    from iqa_ray.backends.vllm_backend import (
        VllmBackend,
        build_requests,
        collect,
        word_continuation,
    )

    assert word_continuation("ASSISTANT:", "Good") == "ASSISTANT: Good"
    assert word_continuation("is\n", "good") == "is\ngood"
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    prompts = [Prompt((image, image), "q", "", ("Yes", "No")), Prompt((), "q", "", ("a", "b", "c"))]
    requests, owners = build_requests(prompts, ["T:", "U:"])
    assert owners == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert requests[1]["prompt"] == "T: No" and len(requests[0]["multi_modal_data"]["image"]) == 2
    assert "multi_modal_data" not in requests[2]

    def out(last: int, logprob: float) -> Any:
        return SimpleNamespace(
            prompt_token_ids=[1, last],
            prompt_logprobs=[None, {last: SimpleNamespace(logprob=logprob)}],
        )

    outputs = [out(7, -1.0), out(8, -2.0), out(9, -0.5), out(3, -0.1), out(11, -3.0)]
    got = collect(outputs, owners, [[7, 8], [9, 10, 11]])
    np.testing.assert_array_equal(got[0], [-1.0, -2.0])
    assert isinstance(got[1], RowError), "a word that did not stay one token fails its prompt"
    with pytest.raises(ImportError, match=r"iqa_ray\[vllm\]"):
        VllmBackend(ModelConfig(backend="vllm"))


def test_benchmark_prints_both_paths(tiny_model_dir: Path) -> None:
    from benchmarks.bench_prefix_sharing import main

    lines = main(
        [
            "--arch",
            "tiny",
            "--model-dir",
            str(tiny_model_dir),
            "--images",
            "1",
            "--batch-images",
            "1",
            "--repeats",
            "1",
            "--side",
            "24",
        ]
    )
    rows = [
        line
        for line in lines
        if line.startswith("| q_debias") or line.startswith("| compare2score")
    ]
    assert len(rows) == 4 and {r.split("|")[2].strip() for r in rows} == {"naive", "optimised"}
    assert any(line.startswith("q_debias: optimised/naive speed") for line in lines)
    counted = main(
        [
            "--arch",
            "tiny",
            "--model-dir",
            str(tiny_model_dir),
            "--images",
            "2",
            "--batch-images",
            "2",
            "--side",
            "24",
            "--count-only",
        ]
    )
    ratios = [
        float(line.split("|")[-2].strip().rstrip("x"))
        for line in counted
        if line.startswith(("| q_debias", "| compare2score"))
    ]
    assert len(ratios) == 2 and all(r > 1.2 for r in ratios)


def test_expansion_mismatch_disables_sharing(backend: TransformersBackend, caplog: Any) -> None:
    prompts = _c2s_prompts(1)
    backend.prefix_sharing = False
    reference = backend.next_token_logits(prompts)
    backend.prefix_sharing = True
    runner, processor = backend._shared, backend.processor
    original = processor.get_text_with_replacements

    def skewed(texts: list[str], *replacements: list[str]) -> Any:
        expanded, offsets = original(texts, *replacements)
        if len(replacements) > 1:  # the processor's own call: left alone
            return expanded, offsets
        return [t + " extra" for t in expanded], offsets  # the shared path's call: skewed

    runner.encoder._checked = False
    runner.encoder._ids.clear()  # no remembered tokenization: the skewed one must run
    processor.get_text_with_replacements = skewed
    try:
        with caplog.at_level("INFO", logger="iqa_ray.backends.transformers.shared"):
            got = backend.next_token_logits(prompts)
    finally:
        del processor.get_text_with_replacements
        runner.enabled = True
    assert "disabled for this model" in caplog.text
    for a, b in zip(reference, got, strict=True):
        np.testing.assert_allclose(b, a, atol=TOL, rtol=0)


def test_first_call_checks_the_shared_path(tiny_model_dir: Path) -> None:
    fresh = TransformersBackend(ModelConfig(id=str(tiny_model_dir), batch_size=4))
    runner = fresh._shared
    assert runner is not None and runner.verified is None
    prompts = _c2s_prompts(3)
    fresh.next_token_logits(prompts)
    assert runner.verified is True and runner.enabled and fresh.prefix_sharing
    # The probe's passes are not counted: stats hold exactly one shared run of the prompts.
    assert fresh.stats.prompts == len(prompts)
    assert runner.verify(prompts) < 1e-4


def test_a_shared_path_that_disagrees_is_turned_off(tiny_model_dir: Path, caplog: Any) -> None:
    """A library version that drops the image features (transformers 5.17 ignored the
    ``mm_encoder_outputs`` argument an earlier version of this module passed) must cost speed,
    not correctness: the first call's check catches it and every call runs unshared."""
    fresh = TransformersBackend(ModelConfig(id=str(tiny_model_dir), batch_size=4))
    runner = fresh._shared
    assert runner is not None
    prompts = _q_debias_prompts(2)
    fresh.prefix_sharing = False
    reference = fresh.next_token_logits(prompts)
    fresh.prefix_sharing = True
    encode = runner.encoder.encode

    def without_images(batch: Any) -> Any:
        bank, encoded = encode(batch)
        return bank * 0, encoded  # the features never reach the language model

    runner.encoder.encode = without_images  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="iqa_ray.backends.transformers.shared"):
        got = fresh.next_token_logits(prompts)
        again = fresh.next_token_logits(prompts)
    assert runner.verified is False and not runner.enabled
    assert "prefix sharing disabled" in caplog.text
    for a, b, c in zip(reference, got, again, strict=True):
        np.testing.assert_allclose(b, a, atol=TOL, rtol=0)
        np.testing.assert_allclose(c, a, atol=TOL, rtol=0)
    # Not vacuous: the broken shared path itself gives other logits.
    broken = runner._run_shared(prompts)
    assert max(float(np.abs(a - b).max()) for a, b in zip(reference, broken, strict=True)) > 0.01

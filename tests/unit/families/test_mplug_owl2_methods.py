"""The methods on the reference fixture through the transformers backend (the path users take):
``qalign_levels`` and ``compare2score`` build the reference's prompts exactly, read the
reference's word ids, and reproduce its scores (expected.json) to the fixture's tolerances;
the official anchor set built from stand-in images gives the reference's Compare2Score score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.transformers.backend import TransformersBackend
from iqa_ray.errors import ConfigError
from iqa_ray.methods.base import ImageBatch, MethodContext
from iqa_ray.methods.compare2score.method import Compare2Score
from iqa_ray.methods.compare2score.official import write_official_anchor_set
from iqa_ray.methods.levels import QAlignLevels
from iqa_ray.methods.q_debias import QDebias
from tests.unit.families.test_mplug_owl2_fixture import EXPECTED, FIXTURE

pytestmark = pytest.mark.skipif(
    not (FIXTURE / "expected.json").is_file(),
    reason=f"reference fixture not found at {FIXTURE} (set IQA_RAY_SHARED_DIR)",
)
TOL = EXPECTED.get("tolerances", {})
QALIGN = EXPECTED.get("qalign", {})
C2S = EXPECTED.get("compare2score", {})
IMAGES = sorted(QALIGN.get("images", {}))


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    return TransformersBackend(ModelConfig(id=str(FIXTURE), batch_size=4))


def _image(relative: str) -> np.ndarray:
    return np.asarray(Image.open(FIXTURE / relative).convert("RGB"))


def _ctx(backend: TransformersBackend) -> MethodContext:
    return MethodContext(vlm_factory=lambda: backend)


def _batch(files: list[str]) -> ImageBatch:
    return ImageBatch(np.arange(len(files), dtype=np.int64), [_image(f) for f in files])


def test_backend_loads_the_native_family(backend: TransformersBackend) -> None:
    assert backend.family == "mplug_owl2" and backend.prefix_sharing
    assert type(backend.rt).__name__ == "MplugOwl2Runtime"


def test_qalign_levels_builds_the_reference_scorer_prompt(backend: TransformersBackend) -> None:
    method = QAlignLevels({})
    batch = _batch(["inputs/" + IMAGES[0]])
    method.setup(_ctx(backend))
    prompt = method.prompts(batch, 0)[0]
    text = backend.render(prompt)
    reference = QALIGN["prompts"]["qalign_scorer_prompt"]
    assert text == reference["text"]
    assert backend.rt.processor.tokenize_prompt(text) == reference["input_ids"]
    level_ids = EXPECTED["tokenizer"]["level_ids"]
    assert [backend.word_id(text, w) for w in prompt.words] == level_ids


@pytest.mark.parametrize(("scale", "key"), [("1-5", "score_1_5"), ("0-1", "score_0_1")])
def test_qalign_levels_reproduces_the_reference_scores(
    backend: TransformersBackend, scale: str, key: str
) -> None:
    method = QAlignLevels({"scale": scale})
    ctx = _ctx(backend)
    method.setup(ctx)
    result = method.score_batch(_batch(["inputs/" + f for f in IMAGES]), ctx)
    for row, name in enumerate(IMAGES):
        expected = QALIGN["images"][name]["qalign_scorer_prompt"]
        tol = TOL["probs_and_qalign_scores_abs"]
        assert abs(result.columns["score"][row] - expected[key]) <= tol, name
        np.testing.assert_allclose(result.columns["level_probs"][row], expected["level_probs"],
                                   atol=tol, rtol=0)


def test_an_explicit_layout_gives_the_template_prompt(backend: TransformersBackend) -> None:
    """``qalign_template_prompt`` (iqa_eval.py): the conv template's " ASSISTANT" separator."""
    method = QAlignLevels({"layout": "{question}\n{image}"})
    method.setup(_ctx(backend))
    text = backend.render(method.prompts(_batch(["inputs/" + IMAGES[0]]), 0)[0])
    reference = QALIGN["prompts"]["qalign_template_prompt"]
    assert text == reference["text"]
    assert backend.rt.processor.tokenize_prompt(text) == reference["input_ids"]


def _official_method(tmp_path: Path, backend: TransformersBackend, **params: Any) -> Compare2Score:
    write_official_anchor_set(FIXTURE / "inputs" / "anchors", str(tmp_path / "official"))
    method = Compare2Score({"anchors": str(tmp_path / "official"), **params})
    method.setup(_ctx(backend))
    return method


def test_compare2score_builds_the_reference_prompt(
    tmp_path: Path, backend: TransformersBackend
) -> None:
    method = _official_method(tmp_path, backend)
    prompts = method.prompts(_batch(["inputs/" + IMAGES[0]]), 0)
    assert len(prompts) == 5
    text = backend.render(prompts[0])
    assert text == C2S["prompt"]["text"]
    assert backend.rt.processor.tokenize_prompt(text) == C2S["prompt"]["input_ids"]
    compare_ids = EXPECTED["tokenizer"]["compare_ids"]
    assert [backend.word_id(text, w) for w in prompts[0].words] == compare_ids


def test_compare2score_pair_probability(tmp_path: Path, backend: TransformersBackend) -> None:
    method = _official_method(tmp_path, backend)
    pair = C2S["pair"]
    prompt = method.prompts(_batch([pair["test"]]), 0)[0]
    swapped = type(prompt)((_image(pair["anchor"]), prompt.images[1]), prompt.question,
                           prompt.answer_prefix, prompt.words, (), prompt.layout)
    (logits,) = backend.unshared_logits([swapped])
    np.testing.assert_allclose(logits, pair["logits"], atol=TOL["logits_abs"], rtol=0)
    weights = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    z = logits / 100
    prob = float(np.exp(z - z.max()) @ weights / np.exp(z - z.max()).sum())
    assert abs(prob - pair["prob"]) <= TOL["compare2score_prob_abs"]


@pytest.mark.parametrize(("link", "key"), [("probit", "score_model_method_normcdf"),
                                           ("logistic", "score_scorer_py_sigmoid")])
def test_official_anchor_set_reproduces_the_reference_score(
    tmp_path: Path, backend: TransformersBackend, link: str, key: str
) -> None:
    """Stand-in anchors + the hard-coded P_a + the reference's 100 Adam steps."""
    method = _official_method(tmp_path, backend, solver="reference_adam", link=link)
    names = sorted(C2S["images"])
    ctx = _ctx(backend)
    result = method.score_batch(_batch(["inputs/" + n for n in names]), ctx)
    for row, name in enumerate(names):
        expected = C2S["images"][name]
        np.testing.assert_allclose(result.columns["b"][row], expected["anchor_probs"],
                                   atol=TOL["compare2score_prob_abs"], rtol=0)
        assert abs(result.columns["score"][row] - expected[key]) <= TOL[
            "compare2score_final_score_abs"], name


def test_q_debias_needs_the_first_piece_policy_on_the_llama_tokenizer(
    backend: TransformersBackend,
) -> None:
    """'Poor' is two LLaMA pieces: refused under word_policy single, read as "▁Po" (the
    reference's input_ids[1]) under first."""
    with pytest.raises(ConfigError, match="word_policy"):
        QDebias({}).setup(_ctx(backend))
    loose = TransformersBackend(ModelConfig(id=str(FIXTURE), word_policy="first"))
    method = QDebias({})
    ctx = _ctx(loose)
    method.setup(ctx)
    assert loose.word_id("", "Poor") == loose.rt.tokenizer.encode("Poor")[1]
    query = _image("inputs/" + IMAGES[0])
    variants = {v.key: [query[::-1].copy()] for v in method.variants()}
    result = method.score_batch(ImageBatch(np.zeros(1, dtype=np.int64), [query], variants), ctx)
    assert result.errors == [None] and 0.0 <= result.columns["score"][0] <= 1.0

"""mPLUG-Owl3 through the transformers backend and the q_debias method, against tiny-mplug-owl3.

Everything goes through the path users take: ``TransformersBackend(ModelConfig(id=<folder>))``
(LoadedModel.load -> model_type -> the family's runtime), and the prompts come from the
``q_debias`` method itself; the fixture's ready-made priors are injected as the batch's variant
images in place of the method's own (which the distortion library makes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.prompt import Prompt
from iqa_ray.backends.transformers.backend import TransformersBackend
from iqa_ray.methods import ImageBatch, MethodContext
from iqa_ray.methods.q_debias import QDebias
from iqa_ray.methods.rules import binary_probability
from tests.unit.families.mplug_owl3_fixture import (
    absent_reason,
    expected,
    fixture_dir,
    image_array,
)

# The fixture's two priors per query stand in for two registered distortions (keys only: the
# images are the fixture's PNGs, injected below).
PRIOR_KEYS = {"blur": ("gaussian_blur", 2), "noise": ("gaussian_noise", 2)}


@pytest.fixture(scope="module")
def exp() -> dict[str, Any]:
    data = expected()
    if data is None:
        pytest.skip(absent_reason())
    return data


@pytest.fixture(scope="module")
def backend(exp: dict[str, Any]) -> TransformersBackend:
    return TransformersBackend(ModelConfig(id=str(fixture_dir()), batch_size=16))


def queries(exp: dict[str, Any]) -> list[str]:
    return sorted(exp["qdebias"])


def prior_kind(prior_file: str) -> str:
    """'blur' or 'noise' from a prior's file name (img_a_120x72_blur.png)."""
    return prior_file.rsplit(".", 1)[0].rsplit("_", 1)[1]


def make_method(temperature: float = 100.0) -> QDebias:
    priors = [{"distortion": d, "severity": s} for d, s in PRIOR_KEYS.values()]
    return QDebias({"priors": priors, "temperature": temperature})


def fixture_batch(exp: dict[str, Any]) -> ImageBatch:
    """The fixture's queries with their ready-made priors as the variant images."""
    names = queries(exp)
    variants: dict[str, list[np.ndarray]] = {}
    for kind, (distortion, severity) in PRIOR_KEYS.items():
        variants[f"{distortion}_{severity}"] = [
            image_array(f"inputs/{name.rsplit('.', 1)[0]}_{kind}.png") for name in names
        ]
    query = [image_array(f"inputs/{name}") for name in names]
    return ImageBatch(np.arange(len(names), dtype=np.int64), query, variants)


@pytest.fixture(scope="module")
def method_prompts(exp, backend) -> list[tuple[Prompt, dict[str, Any]]]:
    """Every prompt q_debias builds for the fixture batch, with the fixture case it must equal."""
    method = make_method()
    batch = fixture_batch(exp)
    method.bind(batch, MethodContext(vlm_factory=lambda: backend))
    by_key = {(tuple(c["images"]), c["kind"]): c for c in exp["cases"]}
    pairs = []
    for row, name in enumerate(queries(exp)):
        prompts = method.prompts(batch, row)
        for k, kind in enumerate(PRIOR_KEYS):
            prior = f"inputs/{name.rsplit('.', 1)[0]}_{kind}.png"
            for prompt, case_kind in zip(prompts[2 * k : 2 * k + 2], ("same_object", "quality"),
                                         strict=True):
                pairs.append((prompt, by_key[((prior, f"inputs/{name}"), case_kind)]))
    assert len(pairs) == len(exp["cases"])
    return pairs


@pytest.fixture(scope="module")
def batched_logits(backend, method_prompts) -> list[np.ndarray]:
    out = backend.next_token_logits([p for p, _ in method_prompts])
    assert all(isinstance(o, np.ndarray) for o in out), out
    return out


# ------------------------------------------------------------------------------- prompts


def test_loads_the_native_family_unshared(backend) -> None:
    assert backend.family == "mplugowl3"
    assert type(backend.rt).__name__ == "MplugOwl3Runtime"
    reason = backend.rt.sharing_support()
    assert reason and "hyper attention" in reason and "not verified" in reason
    assert backend.prefix_sharing is False


def test_method_prompts_render_the_reference_text_and_ids(backend, method_prompts) -> None:
    for prompt, case in method_prompts:
        text = backend.render(prompt)
        assert text == case["prompt_text_after_processor"], case["id"]
        assert [backend.word_id(text, w) for w in prompt.words] == case["logit_ids"], case["id"]
        assert backend.estimate_tokens(prompt, text) == case["num_tokens"], case["id"]


def test_script_messages_render_the_same_text(exp, backend) -> None:
    """The script's own messages, quality answer "The quality of the image is " included: the
    processor drops it by default, as the reference does."""
    for case in exp["cases"]:
        user, answer = (m["content"] for m in case["messages_as_passed"])
        images = tuple(image_array(f) for f in case["images"])
        prompt = Prompt(images, "", answer, ("Yes",), layout=user.replace("<|image|>", "{image}"))
        assert backend.render(prompt) == case["prompt_text_after_processor"], case["id"]


# ------------------------------------------------------------------------------- logits


def test_every_case_logits_and_probabilities(exp, method_prompts, batched_logits) -> None:
    tol, p_tol = exp["tolerances"]["logits_abs"], exp["tolerances"]["probabilities_abs"]
    worst = 0.0
    for (_, case), logits in zip(method_prompts, batched_logits, strict=True):
        np.testing.assert_allclose(logits, case["logits_at_ids"], atol=tol, rtol=0,
                                   err_msg=case["id"])
        worst = max(worst, float(np.abs(logits - case["logits_at_ids"]).max()))
        for temperature, key in ((1.0, "p_first_T1"), (100.0, "p_first_T100")):
            got = float(binary_probability(logits, temperature))
            assert abs(got - case[key]) <= p_tol, (case["id"], key, got, case[key])
    print(f"worst |logit - reference| over {len(batched_logits)} cases: {worst:.2e}")


def test_batched_equals_one_by_one(exp, backend, method_prompts, batched_logits) -> None:
    assert backend.batch_size == 16
    calls = backend.stats.forward_calls
    backend.batch_size = 1
    try:
        single = backend.next_token_logits([p for p, _ in method_prompts])
    finally:
        backend.batch_size = 16
    assert backend.stats.forward_calls - calls == len(method_prompts)
    tol = exp["tolerances"]["logits_abs"]
    for (_, case), one, many in zip(method_prompts, single, batched_logits, strict=True):
        np.testing.assert_allclose(many, one, atol=tol, rtol=0, err_msg=case["id"])


# ------------------------------------------------------------------------------- q_debias


@pytest.mark.parametrize(("temperature", "key"), [(100.0, "T100"), (1.0, "T1")])
def test_q_debias_reproduces_q_pred(exp, backend, temperature: float, key: str) -> None:
    """The method end to end on the backend (prompts, words, logits, reduce) with the fixture's
    priors: q_pred at the method's default T=100 and at T=1 (the script's unknown helper)."""
    method = make_method(temperature)
    ctx = MethodContext(vlm_factory=lambda: backend)
    method.setup(ctx)
    result = method.score_batch(fixture_batch(exp), ctx)
    assert result.errors == [None] * len(queries(exp))
    tol = exp["tolerances"]["q_pred_abs"]
    for row, name in enumerate(queries(exp)):
        ref = exp["qdebias"][name]
        assert abs(result.columns["score"][row] - ref[f"q_pred_{key}"]) <= tol, name
        order = [list(PRIOR_KEYS).index(prior_kind(v["prior"])) for v in ref["variants"]]
        for column, kind in (("p_yes", "same_object"), ("p_good", "quality")):
            want = [ref["variants"][i][kind][f"p_{key}"] for i in np.argsort(order)]
            np.testing.assert_allclose(result.columns[column][row], want, atol=tol, rtol=0)


def test_default_temperature_is_the_papers() -> None:
    assert QDebias({}).params.temperature == 100.0

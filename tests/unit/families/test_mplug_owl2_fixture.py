"""Native mPLUG-Owl2 against the reference fixture ``shared/models/tiny-mplug-owl2``: pixels,
vision / abstractor outputs, prompt ids, Q-Align scores, full logits, Compare2Score probabilities.
Every expected number is read from the fixture's ``expected.json`` and ``intermediate/``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from iqa_ray.backends.families.mplug_owl2.modeling import MplugOwl2ForCausalLM
from iqa_ray.backends.families.mplug_owl2.processing import MplugOwl2Processor, square_and_resize

REPO = Path(__file__).resolve().parents[3]


def _fixture_dir() -> Path:
    shared = os.environ.get("IQA_RAY_SHARED_DIR") or str(REPO.parent / "shared")
    return Path(shared) / "models" / "tiny-mplug-owl2"


FIXTURE = _fixture_dir()
pytestmark = pytest.mark.skipif(
    not (FIXTURE / "expected.json").is_file(),
    reason=f"reference fixture not found at {FIXTURE} (set IQA_RAY_SHARED_DIR)",
)
EXPECTED: dict[str, Any] = (
    json.loads((FIXTURE / "expected.json").read_text()) if FIXTURE.is_dir() else {}
)
TOL = EXPECTED.get("tolerances", {})
IMAGES = sorted(EXPECTED.get("qalign", {}).get("images", {}))
PROMPTS = sorted(EXPECTED.get("qalign", {}).get("prompts", {}))


@pytest.fixture(scope="module")
def proc() -> MplugOwl2Processor:
    return MplugOwl2Processor.from_pretrained(FIXTURE)


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request: pytest.FixtureRequest) -> MplugOwl2ForCausalLM:
    return MplugOwl2ForCausalLM.from_pretrained(
        FIXTURE, dtype=torch.float32, attn_implementation=request.param
    ).eval()


def _image(relative: str) -> np.ndarray:
    return np.asarray(Image.open(FIXTURE / relative).convert("RGB"))


def _forward(model: MplugOwl2ForCausalLM, inputs: dict) -> Any:
    with torch.no_grad():
        return model(**inputs)


def _close(actual: Any, expected: Any, tol: float) -> None:
    diff = np.abs(np.asarray(actual, dtype=np.float64) - np.asarray(expected, dtype=np.float64))
    assert diff.max() <= tol, f"max abs diff {diff.max():.3g} > {tol}"


def test_checkpoint_loads_every_key_and_keeps_stored_position_tables() -> None:
    model, info = MplugOwl2ForCausalLM.from_pretrained(
        FIXTURE, dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"] and model.dtype == torch.float32
    name = "model.visual_abstractor.encoder.layers.0.crossattention.attention.k_pos_embed"
    with safe_open(str(FIXTURE / "model.safetensors"), "pt") as f:
        stored = f.get_tensor(name)
    assert stored.dtype == torch.float16
    assert torch.equal(model.get_buffer(name), stored.float())


@pytest.mark.parametrize("name", IMAGES)
def test_resized_pixels_match(proc: MplugOwl2Processor, name: str) -> None:
    expected = EXPECTED["qalign"]["images"][name]
    image = _image(expected["file"])
    resized = square_and_resize(image, proc.image_settings)
    assert hashlib.sha256(resized.tobytes()).hexdigest() == expected["resized_uint8"][
        "sha256_hwc_rgb"
    ]
    intermediate = FIXTURE / "intermediate" / f"resized448_{name}"
    if intermediate.is_file():
        assert np.array_equal(resized, np.asarray(Image.open(intermediate).convert("RGB")))
    pixels = proc.preprocess_images([image]).double()
    stats = expected["pixel_values"]
    assert list(pixels.shape) == stats["shape"]
    tol = TOL["pixel_values_stats_abs"]
    for key in ("mean", "std", "abs_mean", "min", "max"):
        value = pixels.abs().mean() if key == "abs_mean" else getattr(pixels, key)()
        _close(float(value), stats[key], tol)
    _close(pixels.mean(dim=(0, 2, 3)).numpy(), stats["per_channel_mean"], tol)
    for index, values in stats["samples"].items():
        y, x = (int(v) for v in index.strip("[]").split(",")[2:])
        _close(pixels[0, :, y, x].numpy(), values, tol)


def test_vision_and_abstractor_intermediates(proc: MplugOwl2Processor, model) -> None:
    tol = TOL["intermediate_tensors_abs"]
    for name in IMAGES:
        expected = EXPECTED["qalign"]["images"][name]
        pixels = proc.preprocess_images([_image(expected["file"])])
        with torch.no_grad():
            vision = model.model.vision_model(pixels)
            features = model.get_image_features(pixels)
        for tensor, key in ((vision, "vision_last_hidden_state"), (features, "abstractor_output")):
            stats = expected[key]
            assert list(tensor.shape) == stats["shape"]
            for stat in ("mean", "std", "min", "max"):
                _close(float(getattr(tensor.double(), stat)()), stats[stat], tol)
        _close(features[0, 0, :8].numpy(), expected["abstractor_output"]["first8"], tol)
        _close(features[0, -1, :8].numpy(), expected["abstractor_output"]["eos_first8"], tol)
        vision_file = FIXTURE / "intermediate" / f"vision_last_hidden_state_{name[:-4]}.npy"
        if vision_file.is_file():
            _close(vision[0].numpy(), np.load(vision_file).reshape(vision[0].shape), tol)
            abstractor = np.load(FIXTURE / "intermediate" / f"abstractor_output_{name[:-4]}.npy")
            _close(features[0].numpy(), abstractor.reshape(features[0].shape), tol)


def test_prompt_and_word_ids(proc: MplugOwl2Processor) -> None:
    prompts = dict(EXPECTED["qalign"]["prompts"])
    prompts["compare2score"] = EXPECTED["compare2score"]["prompt"]
    for key, prompt in prompts.items():
        assert proc.tokenize_prompt(prompt["text"]) == prompt["input_ids"], key
    tokens = EXPECTED["tokenizer"]
    assert [proc.word_id(w) for w in tokens["level_words"]] == tokens["level_ids"]
    assert [proc.word_id(w) for w in tokens["compare_words"]] == tokens["compare_ids"]
    assert proc.num_image_tokens == EXPECTED["num_image_tokens_per_image"]


@pytest.mark.parametrize("name", IMAGES)
def test_qalign_level_logits_probs_and_scores(proc, model, name: str) -> None:
    expected = EXPECTED["qalign"]["images"][name]
    image = _image(expected["file"])
    weights = EXPECTED["qalign"]["score_weights"]
    level_ids = EXPECTED["tokenizer"]["level_ids"]
    for key in PROMPTS:
        case = expected[key]
        inputs = proc([EXPECTED["qalign"]["prompts"][key]["text"]], [[image]])
        assert inputs["input_ids"].shape[1] == case["num_llm_positions"]
        last = _forward(model, inputs).logits[0, -1].double()
        _close(last[level_ids].numpy(), case["level_logits"], TOL["logits_abs"])
        probs = torch.softmax(last[level_ids], dim=-1)
        _close(probs.numpy(), case["level_probs"], TOL["probs_and_qalign_scores_abs"])
        for score in ("score_0_1", "score_1_5"):
            value = float(probs @ torch.tensor(weights[score], dtype=torch.float64))
            _close(value, case[score], TOL["probs_and_qalign_scores_abs"])
        assert int(last.argmax()) == case["vocab_argmax"]["id"]
        _close(float(last.max()), case["vocab_argmax"]["logit"], TOL["logits_abs"])
        with torch.no_grad():
            hidden = model.model(**inputs).last_hidden_state[0, -1, :8]
        _close(hidden.numpy(), case["final_hidden_last_first8"], TOL["intermediate_tensors_abs"])


def test_full_last_logits(proc, model) -> None:
    qalign = EXPECTED["qalign"]
    name = Path(qalign["full_logits_file"]).name.removeprefix("last_logits_qalign_")
    image = _image(f"inputs/{name[:-4]}.png")
    inputs = proc([qalign["prompts"]["qalign_scorer_prompt"]["text"]], [[image]])
    last = _forward(model, inputs).logits[0, -1].numpy()
    _close(last, np.load(FIXTURE / qalign["full_logits_file"]), TOL["logits_abs"])
    pair = EXPECTED["compare2score"]["pair"]
    text = EXPECTED["compare2score"]["prompt"]["text"]
    inputs = proc([text], [[_image(pair["anchor"]), _image(pair["test"])]])
    assert inputs["input_ids"].shape[1] == pair["num_llm_positions"]
    last = _forward(model, inputs).logits[0, -1].numpy()
    _close(last, np.load(FIXTURE / pair["full_logits_file"]), TOL["logits_abs"])


def _comparison_prob(logits: torch.Tensor) -> float:
    weights = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    return float(torch.softmax(logits.float() / 100, dim=-1).double() @ weights)


def test_compare2score_pair_and_anchor_probabilities(proc, model) -> None:
    c2s = EXPECTED["compare2score"]
    text, ids = c2s["prompt"]["text"], EXPECTED["tokenizer"]["compare_ids"]
    pair = c2s["pair"]
    inputs = proc([text], [[_image(pair["anchor"]), _image(pair["test"])]])
    logits = _forward(model, inputs).logits[0, -1, ids]
    _close(logits.numpy(), pair["logits"], TOL["logits_abs"])
    _close(_comparison_prob(logits), pair["prob"], TOL["compare2score_prob_abs"])
    # All (anchor, test) pairs of all images in one left-padded batch, as a backend would run it.
    cases = [(a, name) for name in sorted(c2s["images"]) for a in c2s["anchors"]]
    rows = [[_image(a), _image(f"inputs/{name}")] for a, name in cases]
    out = _forward(model, proc([text] * len(cases), rows)).logits[:, -1, ids]
    for (anchor, name), row_logits in zip(cases, out, strict=True):
        expected = c2s["images"][name]
        k = c2s["anchors"].index(anchor)
        assert expected["pairs_with_anchors"][k]["anchor"] == anchor
        _close(row_logits.numpy(), expected["pairs_with_anchors"][k]["logits"], TOL["logits_abs"])
        prob = _comparison_prob(row_logits)
        _close(prob, expected["anchor_probs"][k], TOL["compare2score_prob_abs"])
        _close(prob, expected["pairs_with_anchors"][k]["prob"], TOL["compare2score_prob_abs"])


def test_mixed_prompt_batch_equals_the_reference(proc, model) -> None:
    """Q-Align (92 positions) and Compare2Score (166) rows left padded in one batch."""
    name = IMAGES[0]
    expected = EXPECTED["qalign"]["images"][name]
    pair = EXPECTED["compare2score"]["pair"]
    texts = [EXPECTED["qalign"]["prompts"][k]["text"] for k in PROMPTS]
    texts.append(EXPECTED["compare2score"]["prompt"]["text"])
    images = [[_image(expected["file"])]] * len(PROMPTS)
    images.append([_image(pair["anchor"]), _image(pair["test"])])
    last = _forward(model, proc(texts, images)).logits[:, -1]
    level_ids = EXPECTED["tokenizer"]["level_ids"]
    for row, key in enumerate(PROMPTS):
        _close(last[row, level_ids].numpy(), expected[key]["level_logits"], TOL["logits_abs"])
    compare = last[-1, EXPECTED["tokenizer"]["compare_ids"]]
    _close(compare.numpy(), pair["logits"], TOL["logits_abs"])

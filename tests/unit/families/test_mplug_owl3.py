"""Native mPLUG-Owl3 against the reference fixture tiny-mplug-owl3 (numbers from expected.json)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from iqa_ray.backends.families.mplug_owl3.modeling import MplugOwl3ForCausalLM  # noqa: E402
from iqa_ray.backends.families.mplug_owl3.processing import MplugOwl3Processor  # noqa: E402
from tests.unit.families.mplug_owl3_fixture import (  # noqa: E402
    expected,
    fixture_dir,
    open_image,
)


def _case_params() -> list[Any]:
    exp = expected()
    if exp is None:
        skip = pytest.mark.skip(reason=f"reference fixture absent: {fixture_dir()}")
        return [pytest.param(None, marks=skip)]
    return [pytest.param(i, id=case["id"]) for i, case in enumerate(exp["cases"])]


@pytest.fixture(scope="module")
def exp() -> dict[str, Any]:
    data = expected()
    if data is None:
        pytest.skip(f"reference fixture absent: {fixture_dir()} (set IQA_RAY_SHARED_DIR)")
    return data


@pytest.fixture(scope="module")
def loaded(exp: dict[str, Any]) -> tuple[MplugOwl3ForCausalLM, dict[str, Any]]:
    model, info = MplugOwl3ForCausalLM.from_pretrained(
        fixture_dir(), dtype=torch.float32, output_loading_info=True
    )
    return model.eval(), info


@pytest.fixture(scope="module")
def model(loaded: tuple[MplugOwl3ForCausalLM, dict[str, Any]]) -> MplugOwl3ForCausalLM:
    return loaded[0]


@pytest.fixture(scope="module")
def processor(exp: dict[str, Any]) -> MplugOwl3Processor:
    return MplugOwl3Processor.from_pretrained(fixture_dir())


def case_images(case: dict[str, Any]) -> list[Image.Image]:
    return [open_image(f) for f in case["images"]]


def assert_stats(tensor: torch.Tensor, stats: dict[str, Any], atol: float, what: str) -> None:
    """shape, mean, std, min, max at ``atol``; abs_sum (a sum of up to 1e7 terms) relatively."""
    values = tensor.detach().double()
    assert list(values.shape) == stats["shape"], what
    for key, got in (
        ("mean", values.mean()),
        ("std", values.std()),
        ("min", values.min()),
        ("max", values.max()),
    ):
        assert abs(float(got) - stats[key]) <= atol, f"{what} {key}: {float(got)} vs {stats[key]}"
    abs_sum = float(values.abs().sum())
    assert abs_sum == pytest.approx(stats["abs_sum"], rel=1e-6), f"{what} abs_sum"


def binary_p(logits: np.ndarray, temperature: float) -> float:
    """softmax([a, b] / T)[0] in float64."""
    a, b = np.asarray(logits, np.float64) / temperature
    return float(1.0 / (1.0 + np.exp(b - a)))


@pytest.fixture(scope="module")
def case_logits(
    exp: dict[str, Any], model: MplugOwl3ForCausalLM, processor: MplugOwl3Processor
) -> dict[str, torch.Tensor]:
    """Last-position float32 logits of every case, one prompt at a time."""
    out = {}
    for case in exp["cases"]:
        batch = processor.prepare(case["messages_as_passed"], case_images(case))
        with torch.no_grad():
            out[case["id"]] = model(**batch.model_inputs(), logits_to_keep=1).logits[0, -1]
    return out


# ------------------------------------------------------------------------------- loading


def test_loads_every_key_with_the_reference_names(loaded, exp) -> None:
    model, info = loaded
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert info["mismatched_keys"] == set()
    names = {name for name, _ in model.named_parameters()}
    assert "language_model.model.layers.0.self_attn.v_kv_proj.weight" in names
    assert "vision_model.head.probe" in names
    assert all(p.dtype == torch.float32 and not p.is_meta for p in model.parameters())
    assert all(not b.is_meta for b in model.buffers())
    assert not hasattr(model.config, "auto_map")
    layers = model.language_model.model.layers
    hyper = [i + 1 for i, layer in enumerate(layers) if layer.self_attn.is_hyper]
    assert hyper == model.config.hyper_layers


def test_auto_classes_load_the_reference_folder_natively(exp) -> None:
    from transformers import AutoModelForCausalLM

    from iqa_ray.backends.families.mplug_owl3.modeling import register_auto_classes

    register_auto_classes()
    model, info = AutoModelForCausalLM.from_pretrained(
        fixture_dir(), dtype=torch.float32, output_loading_info=True
    )
    assert isinstance(model, MplugOwl3ForCausalLM)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()


def test_weights_equal_the_stored_bf16_upcast(model) -> None:
    from safetensors import safe_open

    with safe_open(str(fixture_dir() / "model.safetensors"), "pt") as handle:
        for key in ("language_model.lm_head.weight", "vision_model.encoder.layers.2.mlp.fc1.bias"):
            stored = handle.get_tensor(key)
            assert stored.dtype == torch.bfloat16
            assert torch.equal(model.get_parameter(key), stored.float())


# ------------------------------------------------------------------------------- images


def test_crops_match_the_reference_per_image(exp, processor) -> None:
    for name, ref in exp["images"].items():
        crops = processor.crop(open_image(ref["file"]))
        assert crops.anchor_index == ref["selected_anchor_index"], name
        assert list(crops.grid) == ref["cut_shape_hw"], name
        assert crops.num_crops == ref["num_crops_including_global"], name
        assert list(crops.anchor_resized.size) == ref["anchor_resized_wh"], name
        assert list(crops.global_resized.size) == ref["global_resized_wh"], name
        anchor_hash = hashlib.sha256(np.asarray(crops.anchor_resized).tobytes()).hexdigest()
        global_hash = hashlib.sha256(np.asarray(crops.global_resized).tobytes()).hexdigest()
        assert anchor_hash == ref["anchor_resized_uint8_sha256"], name
        assert global_hash == ref["global_resized_uint8_sha256"], name
        pv, stats = crops.pixel_values, ref["pixel_values"]
        assert_stats(pv, stats, exp["tolerances"]["pixel_values_stats_abs"], name)
        np.testing.assert_allclose(
            pv[0, 0, 0, :8].numpy(), stats["first8_crop0_ch0_row0"], atol=1e-6
        )
        np.testing.assert_allclose(
            pv[-1, 2, 383, :8].numpy(), stats["first8_last_crop_ch2_row383"], atol=1e-6
        )


# ------------------------------------------------------------------------------- vision


def test_vision_checkpoint(exp, model, processor) -> None:
    ref = exp["vision_checkpoint"]
    tol = exp["tolerances"]["intermediate_tensors_abs"]
    pixels = processor.crop(open_image(f"inputs/{ref['image']}")).pixel_values
    tower = model.vision_model
    with torch.no_grad():
        embeddings = tower.embeddings(pixels)
        features = tower(pixels)
        last = tower.encoder.layers[-1](features, None)  # unused by the reference, checks loading
        projected = model.vision2text_model(features)
    assert_stats(embeddings, ref["vision_embeddings_output"], tol, "embeddings")
    assert_stats(features, ref["vision_hidden_states_minus2"], tol, "hidden_states[-2]")
    assert_stats(last, ref["vision_last_layer_output_unused"], tol, "last layer")
    assert_stats(projected, ref["projected_image_embeds"], tol, "projected")
    m2 = ref["vision_hidden_states_minus2"]
    np.testing.assert_allclose(features[0, 0, :8].numpy(), m2["first8_crop0_tok0"], atol=tol)
    np.testing.assert_allclose(
        features[-1, -1, :8].numpy(), m2["first8_lastcrop_lasttok"], atol=tol
    )
    files = ref["files"]
    np.testing.assert_allclose(
        features[0].numpy(), np.load(fixture_dir() / files["vision_hidden_states_minus2_crop0"]),
        atol=tol,
    )
    np.testing.assert_allclose(
        projected[0].numpy(), np.load(fixture_dir() / files["projected_image_embeds_crop0"]),
        atol=tol,
    )


# ------------------------------------------------------------------------------- cases


@pytest.mark.parametrize("index", _case_params())
def test_case_inputs(index, exp, processor) -> None:
    case = exp["cases"][index]
    batch = processor.prepare(case["messages_as_passed"], case_images(case))
    assert batch.texts[0] == case["prompt_text_after_processor"]
    assert batch.input_ids[0].tolist() == case["input_ids"]
    assert batch.attention_mask[0].tolist() == [1] * case["num_tokens"]
    assert batch.media_offset[0].tolist() == case["media_offset_col1"]
    assert batch.placeholder_starts[0] == case["media_token_start_positions"]
    assert len(batch.placeholder_starts[0]) == case["num_image_placeholders"]
    assert int(batch.num_crops[0]) == case["num_image_crops"]
    assert batch.crops_seen[0] == case["crops_seen_by_hyper_attention"]
    pixel_tol = exp["tolerances"]["pixel_values_stats_abs"]
    assert_stats(batch.pixel_values, case["pixel_values"], pixel_tol, "pixel_values")


@pytest.mark.parametrize("index", _case_params())
def test_case_logits_and_probabilities(index, exp, case_logits) -> None:
    case = exp["cases"][index]
    tol = exp["tolerances"]
    logits = case_logits[case["id"]]
    at_ids = logits[case["logit_ids"]].numpy()
    np.testing.assert_allclose(at_ids, case["logits_at_ids"], atol=tol["logits_abs"], rtol=0)
    assert abs(binary_p(at_ids, 1.0) - case["p_first_T1"]) <= tol["probabilities_abs"]
    assert abs(binary_p(at_ids, 100.0) - case["p_first_T100"]) <= tol["probabilities_abs"]
    assert_stats(logits, case["last_logits_stats"], tol["logits_abs"], "last logits")
    top = torch.topk(logits, 5)
    assert top.indices.tolist() == case["top5"]["ids"]
    np.testing.assert_allclose(top.values.numpy(), case["top5"]["logits"], atol=tol["logits_abs"])


def test_hidden_states_of_one_case(exp, model, processor) -> None:
    case = exp["cases"][0]
    captured: dict[str, torch.Tensor] = {}
    text = model.language_model.model
    hooks = [
        text.layers[0].register_forward_hook(lambda m, a, out: captured.update(layer0=out)),
        text.norm.register_forward_hook(lambda m, a, out: captured.update(final=out)),
    ]
    try:
        with torch.no_grad():
            model(**processor(case["messages_as_passed"], case_images(case)))
    finally:
        for hook in hooks:
            hook.remove()
    tol = exp["tolerances"]["intermediate_tensors_abs"]
    np.testing.assert_allclose(
        captured["layer0"][0, -1, :8].numpy(), case["hidden_after_layer0_last_first8"], atol=tol
    )
    np.testing.assert_allclose(
        captured["final"][0, -1, :8].numpy(), case["final_hidden_last_first8"], atol=tol
    )


def test_next_token_logits_helper(exp, model, processor) -> None:
    case = exp["cases"][1]
    words = [processor.word_id(w) for w in ("Good", "Poor")]
    assert words == case["logit_ids"]
    inputs = processor(case["messages_as_passed"], case_images(case))
    got = model.next_token_logits(words, **inputs)
    assert got.shape == (1, 2) and got.dtype == torch.float32
    tol = exp["tolerances"]["logits_abs"]
    np.testing.assert_allclose(got[0].numpy(), case["logits_at_ids"], atol=tol, rtol=0)


def test_full_logits_of_the_saved_case(exp, case_logits) -> None:
    ref = exp["full_logits_file"]
    full = np.load(fixture_dir() / ref["file"])
    ours = case_logits[ref["case"]].numpy()
    assert ours.shape == full.shape
    np.testing.assert_allclose(ours, full, atol=exp["tolerances"]["logits_abs"], rtol=0)


def test_qdebias_aggregation(exp, case_logits) -> None:
    by_key = {(tuple(case["images"]), case["kind"]): case for case in exp["cases"]}
    tol = exp["tolerances"]["q_pred_abs"]
    for query, ref in exp["qdebias"].items():
        for temperature, key in ((1.0, "T1"), (100.0, "T100")):
            yes, good = [], []
            for variant in ref["variants"]:
                pair = (f"inputs/{variant['prior']}", f"inputs/{query}")
                for kind, sink in (("same_object", yes), ("quality", good)):
                    case = by_key[(pair, kind)]
                    at_ids = case_logits[case["id"]][case["logit_ids"]].numpy()
                    sink.append(binary_p(at_ids, temperature))
            weights = np.exp(yes) / np.sum(np.exp(yes))
            np.testing.assert_allclose(weights, ref[f"yes_weights_{key}"], atol=tol)
            assert abs(float(weights @ np.asarray(good)) - ref[f"q_pred_{key}"]) <= tol, query


# ------------------------------------------------------------------------------- batching


def test_batched_left_padded_equals_one_by_one(exp, model, processor, case_logits) -> None:
    """All cases plus rows with other lengths and crop counts, in one left-padded batch."""
    prompts = [case["messages_as_passed"] for case in exp["cases"]]
    images = [case_images(case) for case in exp["cases"]]
    prompts += ["<|image|> Rate this image.", "No image at all."]
    images += [[open_image(exp["cases"][4]["images"][0])], []]
    batch = processor.prepare(prompts, images)
    assert len(set(batch.attention_mask.sum(1).tolist())) > 2
    assert len(set(batch.num_crops.tolist())) > 2
    with torch.no_grad():
        batched = model(**batch.model_inputs(), logits_to_keep=1).logits[:, -1]
    tol = exp["tolerances"]["logits_abs"]
    for row, case in enumerate(exp["cases"]):
        torch.testing.assert_close(batched[row], case_logits[case["id"]], atol=tol, rtol=0)
        np.testing.assert_allclose(
            batched[row, case["logit_ids"]].numpy(), case["logits_at_ids"], atol=tol, rtol=0
        )
    for row in range(len(exp["cases"]), len(prompts)):
        single = processor.prepare(prompts[row], images[row])
        with torch.no_grad():
            alone = model(**single.model_inputs(), logits_to_keep=1).logits[0, -1]
        torch.testing.assert_close(batched[row], alone, atol=tol, rtol=0)


def test_reference_pairing_ignores_the_second_global_view(exp, model, processor) -> None:
    """Quirk (a): crops past the placeholders (image 2's global view here) change nothing."""
    case = exp["cases"][0]
    batch = processor.prepare(case["messages_as_passed"], case_images(case))
    inputs = batch.model_inputs()
    seen = batch.crops_seen[0]
    assert seen < int(batch.num_crops[0])
    changed = dict(inputs)
    changed["pixel_values"] = inputs["pixel_values"].clone()
    changed["pixel_values"][seen:] = 0.0
    seen_changed = dict(inputs)
    seen_changed["pixel_values"] = inputs["pixel_values"].clone()
    seen_changed["pixel_values"][seen - 1] = 0.0
    with torch.no_grad():
        base = model(**inputs, logits_to_keep=1).logits
        same = model(**changed, logits_to_keep=1).logits
        differs = model(**seen_changed, logits_to_keep=1).logits
    assert torch.equal(base, same)
    assert (base - differs).abs().max() > 1e-3

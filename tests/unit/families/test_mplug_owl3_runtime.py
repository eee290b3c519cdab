"""mPLUG-Owl3 in the transformers backend without the reference fixture: prompt text, options
(validation, fingerprint, effect), token estimates, q_debias conventions, the catalogue entry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from iqa_ray.backends import catalogue  # noqa: E402
from iqa_ray.backends.config import ModelConfig  # noqa: E402
from iqa_ray.backends.families.mplug_owl3.processing import cut_prompt  # noqa: E402
from iqa_ray.backends.families.mplug_owl3.runtime import (  # noqa: E402
    answer_word,
    prompt_messages,
)
from iqa_ray.backends.families.mplug_owl3.tiny import build_tiny_checkpoint  # noqa: E402
from iqa_ray.backends.family_options import (  # noqa: E402
    MplugOwl3Options,
    check_options,
    options_for,
    result_options,
)
from iqa_ray.backends.prompt import Prompt  # noqa: E402
from iqa_ray.backends.transformers.backend import TransformersBackend  # noqa: E402
from iqa_ray.backends.transformers.checkpoint import NATIVE_FAMILIES  # noqa: E402
from iqa_ray.backends.transformers.runtime import LoadedModel  # noqa: E402
from iqa_ray.errors import ConfigError  # noqa: E402
from iqa_ray.methods import ImageBatch, MethodContext, get_method  # noqa: E402
from iqa_ray.methods.q_debias import QDebias  # noqa: E402
from iqa_ray.scoring.config import RunConfig  # noqa: E402

WIDE = np.random.default_rng(0).integers(0, 256, (30, 90, 3), dtype=np.uint8)  # 1x3 grid
TALL = np.random.default_rng(1).integers(0, 256, (100, 25, 3), dtype=np.uint8)  # 4x1 grid


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_owl3"))


def load(tiny_dir: Path, **options: object) -> TransformersBackend:
    return TransformersBackend(ModelConfig(id=str(tiny_dir), options=options))


def pair(question: str = "Same?", prefix: str = "", words: tuple[str, ...] = ("Yes", "No"),
         layout: str | None = None) -> Prompt:
    return Prompt((WIDE, TALL), question, prefix, words, layout=layout)


# ------------------------------------------------------------------------ pure functions


def test_prompt_messages_place_images_and_keep_the_answer() -> None:
    plain = prompt_messages(pair("Q?", "The answer is"), "<I>")
    assert plain == [{"role": "user", "content": "<I><I> Q?"},
                     {"role": "assistant", "content": "The answer is"}]
    laid = prompt_messages(pair(layout="{image} first, {image} second. Q?"), "<I>")
    assert laid[0]["content"] == "<I> first, <I> second. Q?"
    alone = prompt_messages(Prompt((), "Only text?", "", ("Yes",)), "<I>")
    assert alone[0]["content"] == "Only text?"


def test_answer_word_is_bare_after_whitespace_else_space_led() -> None:
    assert answer_word("<|im_start|>assistant\n", "Good") == "Good"
    assert answer_word("The quality of the image is ", "Good") == "Good"
    assert answer_word("The quality of the image is", "good") == " good"


# ------------------------------------------------------------------------------- options


def test_options_validate_at_config_and_load_time() -> None:
    check_options({"pair_cut_shapes": "per_image", "drop_last_assistant_content": False})
    with pytest.raises(ValueError, match="unknown transformers option"):
        check_options({"pair_cut_shape": "per_image"})
    with pytest.raises(ValueError, match="pair_cut_shapes"):
        check_options({"pair_cut_shapes": "fixed"})
    assert options_for("mplugowl3", {}) == MplugOwl3Options()
    assert options_for("llava", {}) is None
    with pytest.raises(ConfigError, match="do not apply to model_type 'llava'"):
        options_for("llava", {"pair_cut_shapes": "reference"})


def test_options_are_in_the_fingerprint_unless_default() -> None:
    def run(options: dict) -> RunConfig:
        return RunConfig.from_dict({"input": {"uri": "/in"}, "output": {"uri": "/out"},
                                    "model": {"id": "/m", "options": options}})

    plain = run({})
    assert "options" not in plain.result_fields()["model"]
    assert run({"pair_cut_shapes": "reference"}).fingerprint() == plain.fingerprint()
    fixed = run({"pair_cut_shapes": "per_image"})
    kept = run({"drop_last_assistant_content": False})
    assert len({plain.fingerprint(), fixed.fingerprint(), kept.fingerprint()}) == 3
    assert fixed.result_fields()["model"]["options"] == {"pair_cut_shapes": "per_image"}
    assert result_options({"drop_last_assistant_content": True}) == {}


def test_options_for_another_family_fail_at_load(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    cfg = ModelConfig(id=str(tmp_path), options={"pair_cut_shapes": "per_image"})
    with pytest.raises(ConfigError, match="do not apply"):
        LoadedModel.load(cfg)


# ------------------------------------------------------------------- the tiny checkpoint


def test_reference_pairing_and_its_fix_in_the_rendered_text(tiny_dir: Path) -> None:
    reference = load(tiny_dir).render(pair())
    fixed = load(tiny_dir, pair_cut_shapes="per_image").render(pair())
    marker = "<|image|>"
    assert cut_prompt(1, 3, marker) + cut_prompt(1, 1, marker) + " Same?" in reference
    assert cut_prompt(1, 3, marker) + cut_prompt(4, 1, marker) + " Same?" in fixed
    assert reference.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n")
    assert reference.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_options_reach_the_model(tiny_dir: Path) -> None:
    reference = load(tiny_dir)
    fixed = load(tiny_dir, pair_cut_shapes="per_image")
    prompt = pair()
    a, b = reference.next_token_logits([prompt])[0], fixed.next_token_logits([prompt])[0]
    assert np.isfinite(a).all() and np.isfinite(b).all()
    assert np.abs(a - b).max() > 1e-4  # image 2's own grid: other placeholders, other crops
    # Within one backend the text decides: rendering is deterministic, logits repeat exactly.
    np.testing.assert_array_equal(reference.next_token_logits([prompt])[0], a)


def test_answer_prefix_dropped_by_default_kept_on_request(tiny_dir: Path, caplog) -> None:
    prompt = pair("Rate it.", "The quality of the image is", ("good", "poor"))
    default = load(tiny_dir)
    with caplog.at_level("WARNING"):
        dropped = default.render(prompt)
    assert dropped.endswith("<|im_start|>assistant\n")
    assert "is dropped" in caplog.text
    kept_backend = load(tiny_dir, drop_last_assistant_content=False)
    kept = kept_backend.render(prompt)
    assert kept.endswith("<|im_start|>assistant\nThe quality of the image is")
    tok = kept_backend.tokenizer
    assert kept_backend.word_id(kept, "good") == tok.encode(" good", add_special_tokens=False)[0]
    assert default.word_id(dropped, "Good") == tok.encode("Good", add_special_tokens=False)[0]


def test_word_policy_applies_to_the_bare_word(tiny_dir: Path) -> None:
    backend = load(tiny_dir)
    text = backend.render(pair())
    bare_good = backend.tokenizer.encode("good", add_special_tokens=False)
    assert len(bare_good) > 1  # the tiny tokenizer has no bare "good": policy decides
    with pytest.raises(ConfigError, match="word_policy"):
        backend.word_id(text, "good")
    first = TransformersBackend(ModelConfig(id=str(tiny_dir), word_policy="first"))
    assert first.word_id(text, "good") == bare_good[0]


def test_token_estimates_are_exact_and_plan_batches(tiny_dir: Path) -> None:
    backend = TransformersBackend(
        ModelConfig(id=str(tiny_dir), batch_size=8, max_tokens_per_batch=400)
    )
    prompts = [pair(), Prompt((WIDE,), "Rate it.", "", ("Good", "Poor")), pair("Longer one?")]
    for prompt in prompts:
        text = backend.render(prompt)
        inputs = backend.rt.model_inputs([text], [list(prompt.images)])
        assert backend.estimate_tokens(prompt, text) == int(inputs["attention_mask"].sum())
    out = backend.next_token_logits(prompts)
    assert all(isinstance(o, np.ndarray) and o.shape == (2,) for o in out)
    assert backend.stats.padded_tokens <= 400 * backend.stats.forward_calls


def test_q_debias_follows_the_family_conventions(tiny_dir: Path) -> None:
    image = np.zeros((24, 24, 3), np.uint8)
    batch = ImageBatch(np.array([7]), [image], {})
    owl3 = QDebias({"priors": [{"distortion": "fog", "severity": 4}]})
    batch.variants = {v.key: [image] for v in owl3.variants()}
    owl3.bind(batch, MethodContext(vlm_factory=lambda: load(tiny_dir)))
    similarity, quality = owl3.prompts(batch, 0)
    assert similarity.layout == "{image}{image} " + owl3.params.similarity_question
    assert quality.layout == "{image}{image} " + owl3.params.quality_question
    assert (similarity.words, quality.words) == (("Yes", "No"), ("Good", "Poor"))
    assert similarity.answer_prefix == quality.answer_prefix == ""
    fake = QDebias({"priors": [{"distortion": "fog", "severity": 4}]})
    fake.bind(batch, MethodContext(vlm_factory=lambda: type("B", (), {"family": "llava"})()))
    assert all(p.layout is None for p in fake.prompts(batch, 0))


# ------------------------------------------------------------------------------ catalogue


def test_catalogue_entry() -> None:
    preset = catalogue.get_preset("mplug-owl3-7b")
    assert preset.id == "mPLUG/mPLUG-Owl3-7B-240728" and preset.family in NATIVE_FAMILIES
    assert preset.revision is not None and re.fullmatch(r"[0-9a-f]{40}", preset.revision)
    for method in preset.methods:
        get_method(method)
    datasets = {s.dataset for s in preset.published}
    assert "KonIQ-10k" in datasets and len(preset.published) == 4 * len(datasets)
    for dataset in datasets:  # the paper's claim: Q-Debias above its Q-Bench baseline
        row = {s.metric: s.value for s in preset.published if s.dataset == dataset}
        assert row["q_debias SRCC"] > row["qbench_binary SRCC"], dataset
    cfg = ModelConfig(preset="mplug-owl3-7b")
    assert (cfg.id, cfg.revision) == (preset.id, preset.revision)
    assert "docs" in preset.extra and (Path(__file__).parents[3] / preset.extra["docs"]).is_file()


def test_koniq_job_config_reproduces_the_paper_setup() -> None:
    path = Path(__file__).parents[3] / "jobs" / "configs" / "q_debias_owl3_koniq.yaml"
    cfg = RunConfig.from_yaml(path)
    preset = catalogue.get_preset("mplug-owl3-7b")
    assert (cfg.model.id, cfg.model.revision) == (preset.id, preset.revision)
    assert [m.method for m in cfg.methods] == ["q_debias", "qbench_binary"]
    debias = QDebias(cfg.methods[0].params)
    assert debias.params == QDebias({}).params  # the paper's values, written out
    # The options spelled out are the defaults: nothing extra in the fingerprint.
    assert "options" not in cfg.result_fields()["model"]
    assert cfg.image.max_side is None  # priors made at full size, as the script

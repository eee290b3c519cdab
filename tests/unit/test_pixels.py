"""The model's preprocessing split in two (geometry on the decode stage, normalisation on the
device): pixels equal the processor's own output for every family the backend supports, and
the scores with the split equal the scores without it."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.random_vlm import build_processor
from iqa_ray.backends import Prompt
from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.families.mplug_owl2.processing import ImageSettings
from iqa_ray.backends.families.mplug_owl2.processing import preprocess_images as owl2_pixels
from iqa_ray.backends.families.mplug_owl2.runtime import settings_plan
from iqa_ray.backends.transformers.backend import TransformersBackend
from iqa_ray.backends.transformers.pixels import load_pixel_plan, ready_pixels, standard_plan
from iqa_ray.backends.transformers.prefix import token_keys
from iqa_ray.methods.levels import ANSWER_PREFIX, QUESTION
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.stages import DecodeImages, model_geometry, run_methods

SHAPES = [(37, 53), (240, 320), (500, 120), (64, 64), (1, 9)]


def images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SHAPES]


@pytest.mark.parametrize("arch", ["cpu-small", "llava-1.5-7b", "llava-interleave-qwen-0.5b"])
def test_generic_plan_equals_the_processor(arch: str, tmp_path: Path) -> None:
    """CLIP (shortest edge + crop) and SigLIP (fixed size) processors of the LLaVA shapes."""
    processor = build_processor(arch, tmp_path)
    plan = standard_plan(processor.image_processor)
    assert plan is not None
    for image in images():
        shaped = plan.geometry(image)
        assert shaped.dtype == np.uint8 and shaped.shape[:2] == plan.size
        ref = processor.image_processor([image], return_tensors="pt")["pixel_values"]
        got = plan.normalize([shaped], "cpu", torch.float32)
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
        # The processor leaves an image it already shaped unchanged: exact, not approximate.
        again = processor.image_processor([shaped], return_tensors="pt")["pixel_values"]
        assert torch.equal(again, ref)


def test_owl2_plan_equals_the_reference_pixels() -> None:
    """mPLUG-Owl2: expand to square on the CLIP mean, resize, crop, then normalise."""
    settings = ImageSettings(size=56, crop_size=56)
    plan = settings_plan(settings)
    for image in images(1):
        ref = owl2_pixels([image], settings)
        shaped = plan.geometry(image)
        torch.testing.assert_close(plan.normalize([shaped], "cpu", torch.float32), ref,
                                   atol=1e-6, rtol=0)
        assert torch.equal(owl2_pixels([shaped], settings), ref)


def test_processors_that_tile_have_no_plan() -> None:
    """A processor with its own steps keeps its work in the score actor (no wrong split)."""
    from transformers.image_processing_backends import PilBackend

    class Tiling(PilBackend):
        def _preprocess(self, images, **kwargs):  # type: ignore[no-untyped-def]
            return super()._preprocess(images, **kwargs)

    assert standard_plan(Tiling()) is None
    assert standard_plan(object()) is None


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="torchvision does not import beside the CPU torch pin here")
def test_torchvision_processors_split_too(tmp_path: Path) -> None:
    from transformers import CLIPImageProcessor

    ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    plan = standard_plan(ip)
    assert plan is not None
    for image in images(2):
        ref = ip([image], return_tensors="pt")["pixel_values"]
        got = plan.normalize([plan.geometry(image)], "cpu", torch.float32)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_plan_for_the_decode_stage_from_a_model_folder(tiny_model_dir: Path) -> None:
    plan = load_pixel_plan(ModelConfig(id=str(tiny_model_dir)))
    backend_plan = TransformersBackend(ModelConfig(id=str(tiny_model_dir))).rt.pixel_plan
    assert plan is not None and backend_plan is not None
    image = images()[1]
    assert np.array_equal(plan.geometry(image), backend_plan.geometry(image))
    assert ready_pixels(plan, [image]) is None  # not yet shaped: the processor runs
    assert ready_pixels(plan, [plan.geometry(image)]) is not None


def test_owl3_has_no_plan(tmp_path: Path) -> None:
    """mPLUG-Owl3 cuts an image by its aspect ratio: its images reach the score actor whole."""
    from iqa_ray.backends.families.mplug_owl3.tiny import build_tiny_checkpoint

    folder = build_tiny_checkpoint(tmp_path / "owl3")
    assert load_pixel_plan(ModelConfig(id=str(folder))) is None


def _prompts(pictures: list[np.ndarray]) -> list[Prompt]:
    words = ("excellent", "good", "fair", "poor", "bad")
    return [Prompt((im,), QUESTION, ANSWER_PREFIX, words, (str(k),))
            for k, im in enumerate(pictures)]


@pytest.mark.parametrize("sharing", [True, False])
def test_scores_equal_with_and_without_the_split(tiny_model_dir: Path, sharing: bool) -> None:
    backend = TransformersBackend(ModelConfig(id=str(tiny_model_dir), batch_size=4))
    backend.prefix_sharing = sharing
    plan = backend.rt.pixel_plan
    assert plan is not None
    raw = images(3)
    whole = backend.next_token_logits(_prompts(raw))
    split = backend.next_token_logits(_prompts([plan.geometry(im) for im in raw]))
    for a, b in zip(whole, split, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)


def test_memo_gives_the_rendered_text_and_counts_host_work(tiny_model_dir: Path) -> None:
    backend = TransformersBackend(ModelConfig(id=str(tiny_model_dir), batch_size=4))
    prompts = _prompts(images(4))
    assert [backend.rt.text(p) for p in prompts] == [backend.rt.render(p) for p in prompts]
    backend.stats.reset()
    backend.next_token_logits(prompts)
    stats = backend.stats
    assert stats.cpu_s > stats.device_cpu_s > 0


def test_token_keys_marks_image_slots_in_order() -> None:
    assert token_keys([5, 9, 9, 7, 9], 9, [3, 4, 8]) == [5, -4, -5, 7, -9]
    assert token_keys([1, -200, 2], -200, [0]) == [1, -1, 2]  # a negative placeholder id
    with pytest.raises(ValueError, match="more image placeholders"):
        token_keys([9, 9], 9, [0])
    with pytest.raises(ValueError, match="fewer image placeholders"):
        token_keys([9], 9, [0, 1])


def _decode(cfg: RunConfig, pictures: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Run the decode stage on PNG-encoded pictures (no Ray: the stage is a plain class)."""
    encoded = []
    for picture in pictures:
        sink = io.BytesIO()
        Image.fromarray(picture).save(sink, format="PNG")
        encoded.append(sink.getvalue())
    n = len(pictures)
    batch = {"image_id": np.arange(n), "uri": np.array([f"x/{k}.png" for k in range(n)]),
             "bytes": np.array(encoded, dtype=object), "error_code": np.array([""] * n, object),
             "error_message": np.array([""] * n, object)}
    return DecodeImages(cfg)(batch)


def test_decode_stage_shapes_images_for_the_model(tiny_model_dir: Path) -> None:
    base = {"input": {"uri": "/in"}, "output": {"uri": "/out"},
            "model": {"id": str(tiny_model_dir)}, "methods": ["q_debias", "qbench_binary"]}
    pictures = images(5)[:3]
    on = _decode(RunConfig.from_dict(base), pictures)
    plan = load_pixel_plan(ModelConfig(id=str(tiny_model_dir)))
    assert plan is not None
    image_columns = [c for c in on if c == "image" or c.startswith("variant__")]
    assert len(image_columns) == 5  # the query and the four priors
    for column in image_columns:
        assert {tuple(im.shape[:2]) for im in on[column]} == {plan.size}
    assert list(on["height"]) == [h for h, _ in SHAPES[:3]]  # the original size is kept
    off = _decode(RunConfig.from_dict({**base, "stages": {"model_pixels_on_decode": False}}),
                  pictures)
    for column in image_columns:  # the same pixels as shaping the unshaped output
        for shaped, whole in zip(on[column], off[column], strict=True):
            assert np.array_equal(shaped, plan.geometry(whole))


def test_no_decode_shaping_where_another_method_reads_the_images(tiny_model_dir: Path) -> None:
    """clip_attributes reads the decoded images with its own processor: they stay whole; the
    fake backend has no processor at all."""
    base = {"input": {"uri": "/in"}, "output": {"uri": "/out"}}
    clip = RunConfig.from_dict({**base, "model": {"id": str(tiny_model_dir)},
                                "methods": ["qalign_levels", "clip_attributes"]})
    fake = RunConfig.from_dict({**base, "model": {"backend": "fake"}})
    for cfg in (clip, fake):
        assert model_geometry(cfg, run_methods(cfg)) is None

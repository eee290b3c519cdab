"""Per-family prompt conventions (methods layer): layout resolution and validation, the
``layout`` and ``scale`` params, and that default params keep their serialised form (run
fingerprints of existing runs do not change)."""

from __future__ import annotations

import numpy as np
import pytest

from iqa_ray.backends.fake import FakeBackend
from iqa_ray.methods.base import ImageBatch, MethodContext
from iqa_ray.methods.compare2score.method import Compare2ScoreParams
from iqa_ray.methods.conventions import FAMILY_LAYOUTS, IMAGES_FIRST, check_layout, resolve_layout
from iqa_ray.methods.levels import QUESTION, BinaryParams, LevelParams, QAlignLevels


def test_family_table_and_explicit_overrides() -> None:
    on_owl2 = resolve_layout("qalign_levels", "mplug_owl2", None, QUESTION)
    assert on_owl2 == f"{QUESTION}\n{{image}}\n"
    assert resolve_layout("qalign_levels", "llava", None, QUESTION) is None
    assert resolve_layout("qalign_levels", "mplug_owl2", IMAGES_FIRST, QUESTION) is None
    # An explicit question keeps the family's placement; an explicit layout wins over it.
    assert resolve_layout("qalign_levels", "mplug_owl2", None, "Rate it.") == "Rate it.\n{image}\n"
    assert resolve_layout("qalign_levels", "llava", "{image} {question}!", "Q") == "{image} Q!"
    c2s = resolve_layout("compare2score", "mplug_owl2", None, "Compare.")
    assert c2s == "{image} {image} Compare. \n"
    with pytest.raises(ValueError, match="may not contain"):
        resolve_layout("qalign_levels", "mplug_owl2", None, "see {image}")
    assert all(check_layout(v, 2 if k[0] == "compare2score" else 1) == v
               for k, v in FAMILY_LAYOUTS.items())


@pytest.mark.parametrize("layout", ["{image}", "{question} {image} {image}", "{question}"])
def test_one_image_layouts_with_the_wrong_markers_are_refused(layout: str) -> None:
    with pytest.raises(ValueError, match="marker"):
        LevelParams(layout=layout)


@pytest.mark.parametrize("layout", ["{image} {question}", "{image}{image}", "{question}{image}"])
def test_two_image_layouts_with_the_wrong_markers_are_refused(layout: str) -> None:
    with pytest.raises(ValueError, match="marker"):
        Compare2ScoreParams(anchors="a", layout=layout)
    assert Compare2ScoreParams(anchors="a", layout="{image}{image}{question}").layout


def test_scale_sets_the_weights_and_defaults_serialise_as_before() -> None:
    assert LevelParams(scale="0-1").weights == (1.0, 0.75, 0.5, 0.25, 0.0)
    assert LevelParams(scale="0-1", weights=(1, 0.75, 0.5, 0.25, 0)).scale == "0-1"
    with pytest.raises(ValueError, match="one or the other"):
        LevelParams(scale="0-1", weights=(5, 4, 3, 2, 1))
    for params in (LevelParams(), BinaryParams(), Compare2ScoreParams(anchors="a")):
        assert "layout" not in params.model_dump() and "scale" not in params.model_dump()
    assert LevelParams(scale="0-1").model_dump()["scale"] == "0-1"
    assert LevelParams(layout="{image}{question}").model_dump()["layout"] == "{image}{question}"


def test_the_method_places_the_image_by_the_backend_family() -> None:
    backend = FakeBackend()
    batch = ImageBatch(np.arange(1, dtype=np.int64), [np.zeros((4, 4, 3), np.uint8)])
    method = QAlignLevels({})
    method.bind(batch, MethodContext(vlm_factory=lambda: backend))
    assert method.prompts(batch, 0)[0].layout is None  # the fake family has no convention
    backend.family = "mplug_owl2"
    method.bind(batch, MethodContext(vlm_factory=lambda: backend))
    (prompt,) = method.prompts(batch, 0)
    assert prompt.layout == f"{QUESTION}\n{{image}}\n" and prompt.user_parts()[1] == 0

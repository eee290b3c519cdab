"""Compare2Score's official anchor set as a preset: the reference's five anchor images, named,
and its hard-coded P_a, turned into a valid anchor set without running any model.

The reference scorer (github.com/Q-Future/Compare2Score ``q_align/evaluate/scorer.py``) loads
the Hugging Face dataset ``VQA-CityU/Anchor_images`` and uses rows 0..4 of its ``train`` split,
in that order, against the P_a it hard-codes (``maths.OFFICIAL_ANCHOR_MATRIX``; row 0 is the
worst anchor, as this project stores anchors). The images are not redistributed here: a user
who has them exports row k as ``anchor_<k>.<ext>`` (original bytes, or a lossless PNG of the
decoded pixels) and runs ``jobs/build_anchors.py --official <folder>``.

No checksum of these images is published in the material available here, so none is checked:
the set records the sha256 of the files the user supplied (``anchors.json``), so a run's
provenance names the exact pixels. The dataset revision below is the dataset's "Upload dataset"
commit as shown on its public commit history.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from iqa_ray.backends.catalogue import get_preset
from iqa_ray.errors import ConfigError
from iqa_ray.inputs.ids import image_id
from iqa_ray.methods.compare2score.anchor_set import (
    Anchor,
    AnchorSet,
    Calibration,
    anchor_file,
    sha256_hex,
    write_anchor_set,
)
from iqa_ray.methods.compare2score.maths import OFFICIAL_ANCHOR_MATRIX
from iqa_ray.methods.compare2score.method import Compare2ScoreParams, prompt_layout

DATASET = "VQA-CityU/Anchor_images"
DATASET_REVISION = "60ba574874d01e2f1bee0e8afe8e2cb187ede13e"
DATASET_ROWS = (0, 1, 2, 3, 4)  # train split rows, worst anchor first (the reference's order)
ANCHOR_NAMES = tuple(f"anchor_{k}" for k in DATASET_ROWS)
CHECKSUMS: dict[str, str] = {}  # name -> sha256; none published (see the module docstring)
MODEL_PRESET = "compare2score"  # the checkpoint the hard-coded P_a belongs to
_EXTENSIONS = ("png", "jpg", "jpeg", "bmp", "webp", "tif", "tiff")


def find_official_images(folder: str | Path) -> list[Path]:
    """``anchor_0`` .. ``anchor_4`` in ``folder`` (any image extension), in anchor order.

    Raises:
        ConfigError: an anchor is missing or present under several extensions.
    """
    folder = Path(folder)
    found = []
    for name in ANCHOR_NAMES:
        matches = [p for p in folder.glob(f"{name}.*")
                   if re.fullmatch(rf"{name}\.({'|'.join(_EXTENSIONS)})", p.name, re.I)]
        if len(matches) != 1:
            what = "missing" if not matches else f"ambiguous ({sorted(p.name for p in matches)})"
            raise ConfigError(
                f"official anchor {name} is {what} in {folder}: export row "
                f"{name.rsplit('_', 1)[1]} of {DATASET} (train split) as {name}.png"
            )
        found.append(matches[0])
    return found


def official_calibration() -> Calibration:
    """The setting the hard-coded P_a belongs to: the Compare2Score checkpoint and prompt."""
    preset = get_preset(MODEL_PRESET)
    params = Compare2ScoreParams(anchors="official")
    return Calibration(preset.id, preset.revision, params.question, params.answer_prefix,
                       tuple(params.words), params.temperature,
                       prompt_layout(params, preset.family))


def official_anchor_set(folder: str | Path) -> tuple[AnchorSet, list[bytes]]:
    """The official anchor set of the images in ``folder`` and their bytes (not yet written).

    Raises:
        ConfigError: an image is missing, or its sha256 differs from a published checksum.
    """
    paths = find_official_images(folder)
    data = [p.read_bytes() for p in paths]
    anchors = []
    for k, (path, raw) in enumerate(zip(paths, data, strict=True)):
        digest = sha256_hex(raw)
        expected = CHECKSUMS.get(ANCHOR_NAMES[k])
        if expected is not None and expected != digest:
            raise ConfigError(f"{path} is not the official {ANCHOR_NAMES[k]} (sha256 differs)")
        uri = str(path.resolve())
        anchors.append(Anchor(str(image_id(uri)), uri, anchor_file(k, uri), digest))
    selection: dict[str, Any] = {
        "rule": "official", "dataset": DATASET, "revision": DATASET_REVISION, "split": "train",
        "rows": list(DATASET_ROWS), "checksums_published": bool(CHECKSUMS),
        "matrix": "Compare2Score scorer.py hard-coded anchor_matrix", "alpha": len(anchors),
    }  # fmt: skip
    return AnchorSet(tuple(anchors), OFFICIAL_ANCHOR_MATRIX.copy(), official_calibration(),
                     selection), data


def write_official_anchor_set(
    folder: str | Path, output: str, storage_options: dict[str, Any] | None = None
) -> AnchorSet:
    """Build the official anchor set from ``folder`` and write it to ``output``."""
    anchor_set, data = official_anchor_set(folder)
    write_anchor_set(output, anchor_set, data, storage_options)
    return anchor_set

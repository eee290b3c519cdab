"""Locating and reading the reference fixture tiny-mplug-owl3 (shared by the mPLUG-Owl3 tests)."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[3]


def fixture_dir() -> Path:
    """<shared>/models/tiny-mplug-owl3, shared = $IQA_RAY_SHARED_DIR or <repo>/../shared."""
    shared = Path(os.environ.get("IQA_RAY_SHARED_DIR", REPO.parent / "shared"))
    return shared / "models" / "tiny-mplug-owl3"


def absent_reason() -> str:
    """Why fixture tests skip when the fixture is not there."""
    return f"reference fixture absent: {fixture_dir()} (set IQA_RAY_SHARED_DIR)"


@cache
def expected() -> dict[str, Any] | None:
    """expected.json of the fixture, or None when the fixture is absent."""
    path = fixture_dir() / "expected.json"
    return json.loads(path.read_text()) if path.is_file() else None


def open_image(relative: str) -> Image.Image:
    """A fixture image (path relative to the fixture folder) as RGB."""
    with Image.open(fixture_dir() / relative) as image:
        return image.convert("RGB")


def image_array(relative: str) -> np.ndarray:
    """A fixture image as the HxWx3 uint8 array the backends take."""
    return np.asarray(open_image(relative))

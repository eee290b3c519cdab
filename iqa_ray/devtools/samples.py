"""Synthetic sample images for demos and tests: clean scenes and degraded copies of them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def synthetic_scene(rng: np.random.Generator, width: int = 96, height: int = 72) -> Image.Image:
    """A smooth gradient background with a few random shapes: texture and edges to degrade."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx / width, yy / height, 1 - xx / width], axis=-1) * rng.uniform(0.4, 1.0, 3)
    img = Image.fromarray((base * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        x1, y1 = x0 + int(rng.integers(6, width // 2)), y0 + int(rng.integers(6, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    return img


def degrade(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """One of a few obvious degradations (so even a real model's ranking is visible)."""
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=3))
    if kind == "noise":
        arr = np.asarray(img).astype(np.float64) + rng.normal(0, 40, (img.height, img.width, 3))
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=5)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


def make_sample_images(
    folder: str | Path, n: int, seed: int = 0, size: tuple[int, int] = (96, 72)
) -> list[Path]:
    """Write ``n`` JPEG/PNG images (clean, blurred, noisy, heavily compressed) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kinds = ("clean", "blur", "noise", "jpeg")
    paths = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        img = degrade(synthetic_scene(rng, *size), kind, rng)
        path = folder / f"img_{i:05d}_{kind}.{'png' if i % 5 == 0 else 'jpg'}"
        img.save(path, quality=92) if path.suffix == ".jpg" else img.save(path)
        paths.append(path)
    return paths

"""mPLUG-Owl3 crops: anchor choice (grid_squ_6, IoU rule), bicubic resizes, tiles plus global view.

Pure functions of PIL images; the only numerics are PIL's bicubic resize and a float32 scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# grid_squ_6 as (rows, cols); there is no (1, 1) anchor, so every image is cut into >= 3 tiles.
GRID_SQU_6: tuple[tuple[int, int], ...] = ((2, 2), (1, 3), (1, 4), (3, 1), (4, 1), (2, 3), (3, 2))


@dataclass(frozen=True)
class ImageCrops:
    """The crops of one image.

    Attributes:
        pixel_values: (rows * cols + 1, 3, S, S) float32 in [-1, 1]: tiles row-major, then global.
        grid: (rows, cols) of the selected anchor.
        anchor_index: index of the anchor in the anchor list.
        anchor_resized: the image resized to (cols * S, rows * S), uint8 RGB (for checks).
        global_resized: the image resized to (S, S), uint8 RGB.
    """

    pixel_values: torch.Tensor
    grid: tuple[int, int]
    anchor_index: int
    anchor_resized: Image.Image
    global_resized: Image.Image

    @property
    def num_crops(self) -> int:
        """Tiles plus the global view."""
        return int(self.pixel_values.shape[0])


def _iou(box_a: np.ndarray, box_b: np.ndarray) -> float:
    """IoU of two [x1, y1, x2, y2] boxes (continuous areas, no +1)."""
    width = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0])
    height = min(box_a[3], box_b[3]) - max(box_a[1], box_b[1])
    inter = max(width, 0.0) * max(height, 0.0)
    area_a = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1])
    area_b = (box_b[2] - box_b[0]) * (box_b[3] - box_b[1])
    return float(inter / (area_a + area_b - inter))


def select_anchor(
    width: int,
    height: int,
    anchors: Sequence[tuple[int, int]] = GRID_SQU_6,
    image_size: int = 384,
) -> int:
    """Index of the anchor grid for an image (DocOwl ``anchor_rank``).

    score = 100 * IoU(anchor, anchor reshaped to the image's aspect ratio at the same width)
    + IoU(anchor, the image box in pixels); the first best anchor wins ties.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        anchors: (rows, cols) grids.
        image_size: side of one tile.
    """
    image_box = np.array([0.0, 0.0, float(width), float(height)])
    best, best_score = 0, -np.inf
    for index, (rows, cols) in enumerate(anchors):
        anchor = np.array([0.0, 0.0, float(cols * image_size), float(rows * image_size)])
        shaped = anchor.copy()
        shaped[3] = height / width * anchor[2]
        score = 100.0 * _iou(anchor, shaped) + _iou(anchor, image_box)
        if score > best_score:
            best, best_score = index, score
    return best


def to_rgb_image(image: Image.Image | np.ndarray) -> Image.Image:
    """PIL RGB image from a PIL image (any mode) or an HxWx3 uint8 array."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 array, got {image.dtype} {image.shape}")
        return Image.fromarray(image, mode="RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def normalize(image: Image.Image) -> torch.Tensor:
    """uint8 RGB image -> (3, H, W) float32: x / 255, then (x - 0.5) / 0.5."""
    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    scaled = array.to(torch.float32).div(255)
    return scaled.sub(0.5).div(0.5)


def crop_image(
    image: Image.Image | np.ndarray,
    image_size: int = 384,
    anchors: Sequence[tuple[int, int]] = GRID_SQU_6,
) -> ImageCrops:
    """Cut one image as the reference does (cut enabled).

    Bicubic resize (PIL) to the anchor grid, normalise, tiles of ``image_size`` row-major; then
    a bicubic resize of the original to ``image_size`` square as the global view.
    """
    rgb = to_rgb_image(image)
    index = select_anchor(rgb.width, rgb.height, anchors, image_size)
    rows, cols = anchors[index]
    resized = rgb.resize((cols * image_size, rows * image_size), Image.BICUBIC)
    grid = normalize(resized)
    tiles = [
        grid[:, r * image_size : (r + 1) * image_size, c * image_size : (c + 1) * image_size]
        for r in range(rows)
        for c in range(cols)
    ]
    global_view = rgb.resize((image_size, image_size), Image.BICUBIC)
    tiles.append(normalize(global_view))
    return ImageCrops(
        pixel_values=torch.stack(tiles),
        grid=(rows, cols),
        anchor_index=index,
        anchor_resized=resized,
        global_resized=global_view,
    )

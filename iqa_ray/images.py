"""Pure image decoding and preparation: bytes -> upright RGB uint8 HxWx3, with guards, and the
``image:`` config section (guards and the CPU-side downscale)."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import Field

from iqa_ray.errors import RowError
from iqa_ray.schema import ErrorCode
from iqa_ray.settings import StrictModel

# Alpha and palette transparency are composited on white: scoring a transparent logo on black
# would judge an artefact of the conversion, not the image.
_BACKGROUND = (255, 255, 255)


class ImageConfig(StrictModel):
    """Decoding guards applied to every input image, and the CPU-side downscale."""

    max_pixels: int = Field(
        100_000_000, ge=1, description="Images declaring more pixels are rejected (bomb guard)."
    )
    min_side: int = Field(8, ge=1, description="Images with a smaller side are rejected.")
    max_bytes: int = Field(
        200 * 1024 * 1024, ge=1, description="Objects larger than this are rejected unread."
    )
    max_side: int | None = Field(
        1024,
        ge=16,
        description="Longest side images are downscaled to on CPU before priors and the model "
        "(the processor resizes again to its input size; keep this >= it). None: full size.",
    )


def load_image(data: bytes, cfg: ImageConfig) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``data`` with the guards of ``cfg`` and downscale it to ``cfg.max_side``.

    Returns:
        The image to score and the original (height, width).

    Raises:
        RowError: as :func:`decode_image`.
    """
    raw = decode_image(data, max_pixels=cfg.max_pixels, min_side=cfg.min_side)
    return resize_max_side(raw, cfg.max_side), (int(raw.shape[0]), int(raw.shape[1]))


def decode_image(data: bytes, *, max_pixels: int, min_side: int) -> np.ndarray:
    """Decode image bytes to an upright RGB uint8 array of shape (H, W, 3).

    The first frame of animations is used; EXIF orientation is applied; CMYK, 16-bit,
    grayscale, palette and alpha images are converted to 8-bit RGB.

    Raises:
        RowError: ``empty_file``, ``decode_failed``, ``truncated``, ``too_large``, ``too_small``.
    """
    if not data:
        raise RowError(ErrorCode.EMPTY_FILE, "zero-byte file")
    with warnings.catch_warnings():
        # We apply our own pixel guard before decoding; PIL's warning would be noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise RowError(ErrorCode.TOO_LARGE, str(exc)) from exc
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
            # PIL names the in-memory buffer with its address: cut it, messages are data.
            text = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))
            raise RowError(_failure_code(exc, data), f"not a readable image: {text}") from exc
        width, height = img.size
        if width * height > max_pixels:
            raise RowError(
                ErrorCode.TOO_LARGE, f"{width}x{height} exceeds max_pixels {max_pixels}"
            )
        try:
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img) or img
        except Image.DecompressionBombError as exc:
            raise RowError(ErrorCode.TOO_LARGE, str(exc)) from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise RowError(_failure_code(exc, data), f"{type(exc).__name__}: {exc}") from exc
    arr = to_rgb_array(img)
    if min(arr.shape[0], arr.shape[1]) < min_side:
        raise RowError(
            ErrorCode.TOO_SMALL, f"{arr.shape[1]}x{arr.shape[0]} has a side below {min_side}"
        )
    return arr


def _failure_code(exc: BaseException, data: bytes) -> ErrorCode:
    """``truncated`` when PIL says so or the file visibly ends early, else ``decode_failed``.

    PIL names truncation only when it is inside the pixel data; a file cut inside its headers
    reads as "cannot identify" or "cannot load", and a cut WebP as "could not create decoder".
    """
    if "truncated" in str(exc).lower() or _ends_early(data):
        return ErrorCode.TRUNCATED
    return ErrorCode.DECODE_FAILED


def _ends_early(data: bytes) -> bool:
    """Whether bytes with a known signature lack their format's end (asked after a failure only)."""
    if data.startswith(b"\xff\xd8"):  # JPEG: ends with the EOI marker
        return not data.rstrip(b"\x00").endswith(b"\xff\xd9")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):  # PNG: ends with an IEND chunk
        return b"IEND" not in data[-16:]
    if data.startswith((b"GIF87a", b"GIF89a")):  # GIF: ends with the ';' trailer
        return not data.endswith(b";")
    if data.startswith(b"RIFF") and len(data) >= 8:  # WebP: RIFF header states the size
        return len(data) < 8 + int.from_bytes(data[4:8], "little")
    return False


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode to RGB uint8, scaling high bit depths and compositing alpha."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit PNGs span 0..65535; 'I'/'F' images carry their own range.
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        gray = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if mode in ("RGBA", "LA", "PA") or img.mode == "RGBA":
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        img = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def resize_max_side(arr: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale so the longest side is at most ``max_side``; never upscale.

    Bicubic, antialiased.
    """
    height, width = arr.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return arr
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0))

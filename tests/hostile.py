"""Hostile image inputs, generated at test time (nothing binary is committed).

``make_hostile_corpus(folder)`` writes one file per hazard and returns file name -> the
``error_code`` a run must record for it (None: it must decode), under the default
``ImageConfig`` (``max_pixels`` 1e8, ``min_side`` 8). The builders are public so unit tests can
check the decoded pixels of each case.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GREEN = (0, 255, 0)
FRAME_COLORS = (RED, BLUE, GREEN)  # frame 0 is red
MARKER = 12  # side of the red square in the top-left corner of the EXIF test image
UNICODE_NAME = "café 图 with spaces.png"
_ORIENTATION_TAG = 0x0112


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    """Encode a PIL image in memory."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A random RGB uint8 image (compresses poorly, so truncation lands inside pixel data)."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def jpeg_bytes(arr: np.ndarray, quality: int = 95) -> bytes:
    """An RGB array as JPEG."""
    return encode(Image.fromarray(arr), "JPEG", quality=quality)


def png_bytes(arr: np.ndarray) -> bytes:
    """An array as PNG (mode chosen by PIL from the dtype and shape)."""
    return encode(Image.fromarray(arr), "PNG")


def cut(data: bytes, fraction: float = 0.5) -> bytes:
    """The first ``fraction`` of a file: a truncated download."""
    return data[: int(len(data) * fraction)]


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC-32 of type + payload."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny, well-formed PNG whose IHDR declares ``width x height`` 8-bit RGB pixels.

    Only one scanline of pixel data is present: a decoder that trusts the header and allocates
    before checking would need ``width * height * 3`` bytes (7.5 GB for the default).
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # RGB, no interlace
    idat = zlib.compress(b"\x00" + b"\x00" * (3 * min(width, 1024)))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def elongated_png(height: int = 10_000, width: int = 1) -> bytes:
    """A 1-pixel-wide strip: fine to decode, useless to score."""
    return png_bytes(np.full((height, width, 3), 128, dtype=np.uint8))


def cmyk_jpeg(size: int = 16) -> bytes:
    """A pure red image stored as a CMYK JPEG (C=0, M=255, Y=255, K=0)."""
    return encode(Image.new("CMYK", (size, size), (0, 255, 255, 0)), "JPEG", quality=95)


def gray16_png(values: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG (PIL mode ``I;16``) holding ``values`` (uint16, HxW)."""
    return encode(Image.fromarray(np.asarray(values, dtype=np.uint16)), "PNG")


def palette_png_with_transparency(size: int = 8) -> bytes:
    """A red palette PNG whose top-left pixel uses the transparent (blue) palette entry."""
    img = Image.new("P", (size, size), 0)
    img.putpalette([*RED, *BLUE] + [0] * (256 * 3 - 6))
    img.putpixel((0, 0), 1)
    return encode(img, "PNG", transparency=1)


def rgba_png(size: int = 8) -> bytes:
    """Opaque red with a fully transparent black top-left pixel."""
    img = Image.new("RGBA", (size, size), (*RED, 255))
    img.putpixel((0, 0), (0, 0, 0, 0))
    return encode(img, "PNG")


def gray_png(level: int = 77, size: int = 8) -> bytes:
    """A uniform grayscale (mode ``L``) PNG."""
    return encode(Image.new("L", (size, size), level), "PNG")


def la_png(level: int = 77, size: int = 8) -> bytes:
    """Grayscale with alpha (mode ``LA``), top-left pixel fully transparent."""
    img = Image.new("LA", (size, size), (level, 255))
    img.putpixel((0, 0), (0, 0))
    return encode(img, "PNG")


def animated(fmt: str, size: int = 16) -> bytes:
    """A three-frame animation (red, blue, green) as ``GIF`` or ``WEBP``."""
    frames = [Image.new("RGB", (size, size), color) for color in FRAME_COLORS]
    extra: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    return encode(
        frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0, **extra
    )


def exif_jpeg(orientation: int, height: int = 32, width: int = 64) -> bytes:
    """A black landscape JPEG with a red square in the stored top-left corner and an EXIF
    orientation tag (6: display rotated 90 degrees clockwise, 8: counter-clockwise)."""
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[:MARKER, :MARKER] = RED
    exif = Image.Exif()
    exif[_ORIENTATION_TAG] = orientation
    return encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())


def make_hostile_corpus(folder: Path) -> dict[str, str | None]:
    """Write every hazard into ``folder``; return file name -> expected error code or None.

    Expected codes hold for the default ``ImageConfig`` (max_pixels 1e8, min_side 8).
    A ``notes.txt`` is also written; listings must ignore it (not in the returned mapping).
    """
    folder.mkdir(parents=True, exist_ok=True)
    jpeg, png = jpeg_bytes(noise(48, 64)), png_bytes(noise(48, 64, seed=1))
    files: dict[str, tuple[bytes, str | None]] = {
        "ok.jpg": (jpeg, None),
        "ok.png": (png, None),
        "zero.jpg": (b"", "empty_file"),
        "truncated.jpg": (cut(jpeg), "truncated"),
        "truncated.png": (cut(png), "truncated"),
        "text.jpg": (b"this is not an image\n" * 20, "decode_failed"),
        "bomb.png": (bomb_png(), "too_large"),
        "elongated.png": (elongated_png(), "too_small"),
        "cmyk.jpg": (cmyk_jpeg(), None),
        "gray16.png": (gray16_png(np.full((16, 16), 40_000)), None),
        "palette_transparent.png": (palette_png_with_transparency(16), None),
        "rgba.png": (rgba_png(16), None),
        "gray.png": (gray_png(size=16), None),
        "la.png": (la_png(size=16), None),
        "animated.gif": (animated("GIF"), None),
        "animated.webp": (animated("WEBP"), None),
        "exif6.jpg": (exif_jpeg(6), None),
        "exif8.jpg": (exif_jpeg(8), None),
        UNICODE_NAME: (png_bytes(noise(16, 24, seed=2)), None),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("not an image: ignored by extension\n")
    return {name: code for name, (_, code) in files.items()}

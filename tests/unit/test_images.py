"""Decoding hostile and unusual inputs to upright RGB uint8, and resizing."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from iqa_ray import io as iqa_io
from iqa_ray.errors import RowError
from iqa_ray.images import decode_image, resize_max_side
from iqa_ray.schema import ErrorCode
from tests import hostile

LOOSE = {"max_pixels": 100_000_000, "min_side": 1}


def decode(data: bytes, **guards: int) -> np.ndarray:
    return decode_image(data, **{**LOOSE, **guards})


def error_code(data: bytes, **guards: int) -> ErrorCode:
    with pytest.raises(RowError) as info:
        decode(data, **guards)
    assert info.value.message  # every failure explains itself
    return info.value.code


def assert_rgb(arr: np.ndarray, height: int, width: int) -> None:
    assert arr.dtype == np.uint8
    assert arr.shape == (height, width, 3)
    assert arr.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_plain_images_decode(fmt: str) -> None:
    arr = hostile.noise(24, 40)
    data = hostile.jpeg_bytes(arr) if fmt == "JPEG" else hostile.png_bytes(arr)
    out = decode(data)
    assert_rgb(out, 24, 40)
    if fmt == "PNG":  # lossless
        np.testing.assert_array_equal(out, arr)


def test_zero_bytes_is_empty_file() -> None:
    assert error_code(b"") == ErrorCode.EMPTY_FILE


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_cut_files_are_truncated(fmt: str, fraction: float) -> None:
    # Cuts inside the headers (PIL: "cannot identify"/"cannot load") and inside the pixel
    # data (PIL: "image file is truncated") must both read as truncated.
    whole = hostile.encode(Image.fromarray(hostile.noise(48, 64)), fmt)
    assert error_code(hostile.cut(whole, fraction)) == ErrorCode.TRUNCATED


@pytest.mark.parametrize(
    "data",
    [b"this is not an image\n" * 20, b"\x00" * 500, b"GIF", b"<html><body>403</body></html>"],
    ids=["text", "zeros", "short-signature", "html"],
)
def test_non_images_are_decode_failed(data: bytes) -> None:
    assert error_code(data) == ErrorCode.DECODE_FAILED


def test_corrupt_png_with_intact_end_is_decode_failed() -> None:
    data = bytearray(hostile.png_bytes(hostile.noise(32, 32)))
    start = data.index(b"IDAT") + 4
    data[start : start + 200] = b"\xff" * 200  # garbage inside the zlib stream, IEND intact
    assert error_code(bytes(data)) == ErrorCode.DECODE_FAILED


def _refuse_load(self: Image.Image) -> None:
    raise AssertionError("pixel data must not be decoded for an oversized image")


@pytest.mark.parametrize(
    ("side", "max_pixels"),
    [(50_000, 100_000_000), (50_000, 10**12), (5_000, 1_000_000)],
    ids=["bomb-default-guard", "bomb-pil-guard", "over-config-guard"],
)
def test_declared_size_is_rejected_before_decoding(
    monkeypatch: pytest.MonkeyPatch, side: int, max_pixels: int
) -> None:
    data = hostile.bomb_png(side, side)
    assert len(data) < 10_000
    monkeypatch.setattr(ImageFile.ImageFile, "load", _refuse_load)
    start = time.perf_counter()
    assert error_code(data, max_pixels=max_pixels) == ErrorCode.TOO_LARGE
    assert time.perf_counter() - start < 1.0


def test_bomb_header_is_well_formed() -> None:
    # The fixture itself must be a PNG PIL accepts, or the test above proves nothing.
    img = Image.open(io.BytesIO(hostile.bomb_png(300, 200)))
    assert img.format == "PNG" and img.size == (300, 200)


def test_elongated_image_min_side() -> None:
    data = hostile.elongated_png(10_000, 1)
    assert error_code(data, min_side=8) == ErrorCode.TOO_SMALL
    assert_rgb(decode(data, min_side=1), 10_000, 1)


def test_cmyk_becomes_rgb() -> None:
    out = decode(hostile.cmyk_jpeg())
    assert_rgb(out, 16, 16)
    np.testing.assert_allclose(out[8, 8], hostile.RED, atol=6)


def test_16_bit_png_scales_to_8_bit() -> None:
    values = np.array([[65535, 32768, 0, 257]], dtype=np.uint16).repeat(4, axis=0)
    data = hostile.gray16_png(values)
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    out = decode(data)
    assert_rgb(out, 4, 4)
    expected = np.rint(values[0] / 65535 * 255).astype(np.uint8)  # 255, 128, 0, 1
    np.testing.assert_array_equal(out[0, :, 0], expected)
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [128, 128, 128]


@pytest.mark.parametrize(
    "data",
    [hostile.palette_png_with_transparency(), hostile.rgba_png()],
    ids=["palette-transparency", "rgba"],
)
def test_transparency_is_composited_on_white(data: bytes) -> None:
    out = decode(data)
    assert_rgb(out, 8, 8)
    assert out[0, 0].tolist() == [255, 255, 255]  # fully transparent -> background
    assert out[3, 3].tolist() == list(hostile.RED)  # opaque pixels keep their colour


def test_grayscale_and_gray_alpha() -> None:
    gray = decode(hostile.gray_png(77))
    assert_rgb(gray, 8, 8)
    assert (gray == 77).all()
    la = decode(hostile.la_png(77))
    assert la[0, 0].tolist() == [255, 255, 255]
    assert la[4, 4].tolist() == [77, 77, 77]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_uses_first_frame(fmt: str) -> None:
    data = hostile.animated(fmt)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    out = decode(data)
    assert_rgb(out, 16, 16)
    np.testing.assert_allclose(out[8, 8], hostile.FRAME_COLORS[0], atol=4)


def _red_corners(arr: np.ndarray, inset: int) -> list[str]:
    height, width = arr.shape[:2]
    corners = {
        "top-left": (inset, inset),
        "top-right": (inset, width - 1 - inset),
        "bottom-left": (height - 1 - inset, inset),
        "bottom-right": (height - 1 - inset, width - 1 - inset),
    }
    return [
        name for name, (y, x) in corners.items() if arr[y, x, 0] > 180 and arr[y, x, 1] < 80
    ]


@pytest.mark.parametrize(
    ("orientation", "corner"), [(6, "top-right"), (8, "bottom-left")]
)
def test_exif_orientation_is_applied(orientation: int, corner: str) -> None:
    # Stored 32x64 (landscape) with the marker top-left; rotated 90 degrees clockwise (6) the
    # marker lands top-right, counter-clockwise (8) bottom-left.
    stored = hostile.exif_jpeg(orientation, height=32, width=64)
    assert _red_corners(np.asarray(Image.open(io.BytesIO(stored))), 3) == [
        "top-left"
    ]
    out = decode(stored)
    assert_rgb(out, 64, 32)
    assert _red_corners(out, hostile.MARKER // 4) == [corner]


def test_unicode_and_spaces_in_names_list_and_read(tmp_path: Path) -> None:
    folder = tmp_path / "dossier é"
    folder.mkdir()
    data = hostile.png_bytes(hostile.noise(16, 24))
    (folder / hostile.UNICODE_NAME).write_bytes(data)
    (folder / "plain.jpg").write_bytes(hostile.jpeg_bytes(hostile.noise(16, 16)))
    uris = iqa_io.list_files(str(folder), None, (".png", ".jpg"))
    assert [u.rsplit("/", 1)[-1] for u in uris] == sorted(["plain.jpg", hostile.UNICODE_NAME])
    target = next(u for u in uris if u.endswith(hostile.UNICODE_NAME))
    assert iqa_io.read_bytes(target) == data
    np.testing.assert_array_equal(decode(iqa_io.read_bytes(target)), hostile.noise(16, 24))


def test_hostile_corpus_codes(tmp_path: Path) -> None:
    # The corpus promises codes under the default guards; hold it to them file by file.
    expected = hostile.make_hostile_corpus(tmp_path)
    assert (tmp_path / "notes.txt").exists() and "notes.txt" not in expected
    assert {None, "empty_file", "truncated", "decode_failed", "too_large", "too_small"} <= set(
        expected.values()
    )
    for name, code in expected.items():
        data = (tmp_path / name).read_bytes()
        if code is None:
            out = decode_image(data, max_pixels=100_000_000, min_side=8)
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3, name
        else:
            with pytest.raises(RowError) as info:
                decode_image(data, max_pixels=100_000_000, min_side=8)
            assert info.value.code == code, name


@pytest.mark.parametrize(
    ("shape", "max_side", "expected"),
    [
        ((100, 200), 50, (25, 50)),
        ((200, 100), 50, (50, 25)),
        ((301, 99), 100, (100, 33)),
        ((40, 60), 100, (40, 60)),  # never upscaled
        ((40, 60), None, (40, 60)),
        ((1000, 3), 10, (10, 1)),  # a side never rounds to zero
    ],
)
def test_resize_max_side(
    shape: tuple[int, int], max_side: int | None, expected: tuple[int, int]
) -> None:
    arr = hostile.noise(*shape)
    out = resize_max_side(arr, max_side)
    assert out.shape == (*expected, 3) and out.dtype == np.uint8
    if max_side is not None:
        assert max(out.shape[:2]) <= max_side
    if expected == shape:
        assert out is arr  # untouched, not a copy


def test_resize_keeps_aspect_ratio() -> None:
    out = resize_max_side(hostile.noise(480, 640), 224)
    assert out.shape[:2] == (168, 224)
    assert out.shape[1] / out.shape[0] == pytest.approx(640 / 480, rel=0.01)

"""Decoding of sensor_msgs/Image and CompressedImage payloads to RGB."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alpamayo_ros.planner.images import (
    ImageDecodeError,
    decode_compressed,
    decode_raw,
    encode_compressed,
    encode_raw,
)

COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16", "rgba16", "bgra16")
MONO_ENCODINGS = ("mono8", "mono16")
BAYER_ENCODINGS = ("bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8")


def _random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _smooth_rgb(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    channels = [rows * 255 // height, cols * 255 // width, (rows + cols) * 127 // (height + width)]
    return np.stack(channels, -1).astype(np.uint8)


# Hand-built payloads, independent of encode_raw.


def test_bgr8_swaps_channels() -> None:
    data = bytes([0, 0, 255, 255, 0, 0])  # one row: a red pixel, then a blue one (BGR order)
    rgb = decode_raw("bgr8", 1, 2, 6, data)
    np.testing.assert_array_equal(rgb, [[[255, 0, 0], [0, 0, 255]]])
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous


def test_rgba8_drops_alpha_and_handles_padded_step() -> None:
    # 2 rows x 1 px, step 6 (4 bytes of pixel + 2 bytes of padding per row).
    data = bytes([10, 20, 30, 99, 7, 7, 40, 50, 60, 99, 7, 7])
    np.testing.assert_array_equal(decode_raw("rgba8", 2, 1, 6, data), [[[10, 20, 30]], [[40, 50, 60]]])


def test_bgra8_with_padding() -> None:
    data = bytes([1, 2, 3, 0, 4, 5, 6, 0, 9, 9])  # 1 row, 2 px, step 10
    np.testing.assert_array_equal(decode_raw("BGRA8", 1, 2, 10, data), [[[3, 2, 1], [6, 5, 4]]])


def test_mono8_is_replicated() -> None:
    rgb = decode_raw("mono8", 2, 2, 3, bytes([5, 6, 0, 7, 8, 0]))
    np.testing.assert_array_equal(rgb[..., 0], [[5, 6], [7, 8]])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


@pytest.mark.parametrize("big_endian", [False, True])
def test_mono16_keeps_high_byte_in_either_byte_order(big_endian: bool) -> None:
    value = np.array([0xABCD, 0x0102], dtype=">u2" if big_endian else "<u2")
    rgb = decode_raw("mono16", 1, 2, 4, value.tobytes(), is_bigendian=big_endian)
    np.testing.assert_array_equal(rgb[0, :, 1], [0xAB, 0x01])


def test_bayer_rggb_pattern_orientation() -> None:
    mosaic = np.empty((8, 8), dtype=np.uint8)
    mosaic[0::2, 0::2], mosaic[0::2, 1::2], mosaic[1::2, 0::2], mosaic[1::2, 1::2] = 200, 100, 100, 30
    rgb = decode_raw("bayer_rggb8", 8, 8, 8, mosaic.tobytes())
    np.testing.assert_array_equal(rgb[2:6, 2:6], np.broadcast_to([200, 100, 30], (4, 4, 3)))


# Round trips through encode_raw.


@pytest.mark.parametrize("encoding", COLOR_ENCODINGS)
@pytest.mark.parametrize("padding", [0, 6])
def test_color_round_trip(encoding: str, padding: int) -> None:
    rgb = _random_rgb(5, 7)
    step, data = encode_raw(rgb, encoding, row_padding_bytes=padding)
    bytes_per_pixel = (4 if encoding[:4] in ("rgba", "bgra") else 3) * (2 if encoding.endswith("16") else 1)
    assert step == 7 * bytes_per_pixel + padding
    np.testing.assert_array_equal(decode_raw(encoding, 5, 7, step, data), rgb)


@pytest.mark.parametrize("encoding", MONO_ENCODINGS)
def test_mono_round_trip_of_grey(encoding: str) -> None:
    grey = np.repeat(_random_rgb(4, 6)[..., :1], 3, axis=2)
    step, data = encode_raw(grey, encoding, row_padding_bytes=2, is_bigendian=True)
    np.testing.assert_array_equal(decode_raw(encoding, 4, 6, step, data, is_bigendian=True), grey)


@pytest.mark.parametrize("encoding", BAYER_ENCODINGS)
def test_bayer_round_trip_of_uniform_color(encoding: str) -> None:
    rgb = np.broadcast_to(np.array([180, 90, 20], dtype=np.uint8), (10, 12, 3)).copy()
    step, data = encode_raw(rgb, encoding)
    decoded = decode_raw(encoding, 10, 12, step, data)
    np.testing.assert_array_equal(decoded[2:-2, 2:-2], rgb[2:-2, 2:-2])


def test_decoded_image_does_not_alias_the_payload() -> None:
    rgb = _random_rgb(3, 4)
    step, data = encode_raw(rgb, "rgb8")
    payload = bytearray(data)
    decoded = decode_raw("rgb8", 3, 4, step, memoryview(payload))
    payload[:] = bytes(len(payload))
    np.testing.assert_array_equal(decoded, rgb)


# Errors.


def test_unknown_encoding_is_named() -> None:
    with pytest.raises(ImageDecodeError, match="yuv422.*supported: rgb8"):
        decode_raw("yuv422", 2, 2, 4, bytes(8))


def test_truncated_data_reports_sizes() -> None:
    step, data = encode_raw(_random_rgb(4, 5), "rgb8")
    with pytest.raises(ImageDecodeError, match=r"rgb8 image 4x5 with step 15 needs 60 bytes, got 59"):
        decode_raw("rgb8", 4, 5, step, data[:-1])


def test_step_shorter_than_a_row_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match=r"step 8 < 9 bytes per row"):
        decode_raw("bgr8", 2, 3, 8, bytes(16))


def test_odd_step_for_16_bit_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="odd step 7"):
        decode_raw("mono16", 2, 3, 7, bytes(14))


def test_empty_size_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="non-positive size 0x3"):
        decode_raw("rgb8", 0, 3, 9, b"")


# Compressed.


def test_png_round_trip_is_exact() -> None:
    rgb = _random_rgb(9, 11)
    np.testing.assert_array_equal(decode_compressed("png", encode_compressed(rgb, "png")), rgb)


def test_jpeg_round_trip_is_close() -> None:
    rgb = _smooth_rgb(48, 64)
    decoded = decode_compressed("jpeg", encode_compressed(rgb, "jpeg", jpeg_quality=95))
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb).mean() < 2.0


@pytest.mark.parametrize(
    "fmt",
    ["jpeg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8", "png", "rgb8; png compressed bgr8"],
)
def test_compressed_colour_order_is_rgb(fmt: str) -> None:
    red = np.broadcast_to(np.array([250, 10, 10], dtype=np.uint8), (16, 16, 3)).copy()
    kind = "png" if "png" in fmt else "jpeg"
    decoded = decode_compressed(fmt, encode_compressed(red, kind))
    assert decoded[8, 8, 0] > 240 and decoded[8, 8, 2] < 20


def test_corrupt_jpeg_is_an_error() -> None:
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_compressed("jpeg", b"\xff\xd8" + b"not a jpeg at all" * 10)


def test_truncated_jpeg_is_an_error() -> None:
    data = encode_compressed(_random_rgb(32, 32), "jpeg")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_compressed("jpeg", data[: len(data) // 2])


def test_empty_payload_is_an_error() -> None:
    with pytest.raises(ImageDecodeError, match="empty png payload"):
        decode_compressed("png", b"")


@pytest.mark.parametrize("fmt", ["h264", "16UC1; compressedDepth png"])
def test_unsupported_compressed_formats(fmt: str) -> None:
    with pytest.raises(ImageDecodeError, match="format|compressed depth"):
        decode_compressed(fmt, encode_compressed(_random_rgb(4, 4), "png"))


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    padding_words=st.integers(0, 4),
    encoding=st.sampled_from(COLOR_ENCODINGS + MONO_ENCODINGS),
    big_endian=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(
    height: int, width: int, padding_words: int, encoding: str, big_endian: bool, seed: int
) -> None:
    rgb = _random_rgb(height, width, seed)
    if encoding.startswith("mono"):
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    step, data = encode_raw(rgb, encoding, row_padding_bytes=2 * padding_words, is_bigendian=big_endian)
    assert len(data) == step * height
    decoded = decode_raw(encoding, height, width, step, data, is_bigendian=big_endian)
    np.testing.assert_array_equal(decoded, rgb)

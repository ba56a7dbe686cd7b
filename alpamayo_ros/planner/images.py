"""Image decoding without cv_bridge: sensor_msgs/Image and sensor_msgs/CompressedImage payloads to RGB.

Every decoder returns a new, C-contiguous [H, W, 3] uint8 RGB array that shares no memory with the message,
so the message buffer may be reused by the middleware as soon as the function returns.

Raw encodings (sensor_msgs/image_encodings.hpp names): rgb8, bgr8, rgba8, bgra8, mono8, rgb16, bgr16, rgba16,
bgra16, mono16 and bayer_{rggb,bggr,gbrg,grbg}8. 16-bit channels are reduced to 8 bit by keeping the high byte
(value >> 8); alpha is dropped; mono is replicated to three channels.
"""

from __future__ import annotations

import array
from dataclasses import dataclass

import cv2
import numpy as np

BytesLike = bytes | bytearray | memoryview | array.array | np.ndarray


class ImageDecodeError(ValueError):
    """A payload that cannot be turned into an RGB image (unknown encoding, bad sizes, corrupt data)."""


@dataclass(frozen=True)
class _RawLayout:
    channels: int  # interleaved channels per pixel
    bytes_per_channel: int  # 1 or 2
    rgb_channels: tuple[int, int, int]  # which stored channel holds R, G, B
    bayer_code: int | None = None  # cv2 demosaicing code (standard pattern names, first row first)


_RAW_LAYOUTS: dict[str, _RawLayout] = {
    "rgb8": _RawLayout(3, 1, (0, 1, 2)),
    "bgr8": _RawLayout(3, 1, (2, 1, 0)),
    "rgba8": _RawLayout(4, 1, (0, 1, 2)),
    "bgra8": _RawLayout(4, 1, (2, 1, 0)),
    "mono8": _RawLayout(1, 1, (0, 0, 0)),
    "rgb16": _RawLayout(3, 2, (0, 1, 2)),
    "bgr16": _RawLayout(3, 2, (2, 1, 0)),
    "rgba16": _RawLayout(4, 2, (0, 1, 2)),
    "bgra16": _RawLayout(4, 2, (2, 1, 0)),
    "mono16": _RawLayout(1, 2, (0, 0, 0)),
    "bayer_rggb8": _RawLayout(1, 1, (0, 0, 0), cv2.COLOR_BayerRGGB2RGB),
    "bayer_bggr8": _RawLayout(1, 1, (0, 0, 0), cv2.COLOR_BayerBGGR2RGB),
    "bayer_gbrg8": _RawLayout(1, 1, (0, 0, 0), cv2.COLOR_BayerGBRG2RGB),
    "bayer_grbg8": _RawLayout(1, 1, (0, 0, 0), cv2.COLOR_BayerGRBG2RGB),
}

# Which RGB channel each cell of the 2x2 Bayer tile samples, row-major: e.g. rggb = R G / G B.
_BAYER_TILES: dict[str, tuple[int, int, int, int]] = {
    "bayer_rggb8": (0, 1, 1, 2),
    "bayer_bggr8": (2, 1, 1, 0),
    "bayer_gbrg8": (1, 2, 0, 1),
    "bayer_grbg8": (1, 0, 2, 1),
}

SUPPORTED_RAW_ENCODINGS: tuple[str, ...] = tuple(_RAW_LAYOUTS)
SUPPORTED_COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")


def _layout(encoding: str) -> _RawLayout:
    try:
        return _RAW_LAYOUTS[encoding.lower()]
    except KeyError:
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_RAW_ENCODINGS)}"
        ) from None


def decode_raw(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: BytesLike,
    is_bigendian: bool = False,
) -> np.ndarray:
    """Decode a sensor_msgs/Image payload to RGB.

    Args:
        encoding: the message's `encoding` (case-insensitive), one of SUPPORTED_RAW_ENCODINGS.
        height: rows.
        width: columns.
        step: bytes per row, >= width * bytes per pixel; any extra bytes at the end of a row are padding.
        data: the payload, exactly step * height bytes (sensor_msgs/Image defines its size so).
        is_bigendian: byte order of 16-bit encodings.

    Returns:
        [H, W, 3] uint8 RGB, a fresh array.

    Raises:
        ImageDecodeError: unknown encoding, non-positive sizes, a step shorter than one row, or a data length
            other than step * height.
    """
    layout = _layout(encoding)
    pixel_bytes = layout.channels * layout.bytes_per_channel
    row_bytes = width * pixel_bytes
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"{encoding} image has non-positive size {height}x{width} (HxW)")
    if step < row_bytes:
        raise ImageDecodeError(
            f"{encoding} image {height}x{width} has step {step} < {row_bytes} bytes per row "
            f"({width} px * {pixel_bytes} B)"
        )
    if layout.bytes_per_channel == 2 and step % 2:
        raise ImageDecodeError(f"{encoding} image {height}x{width} has odd step {step} for 16-bit channels")
    buffer = np.frombuffer(data, dtype=np.uint8)  # [N], a view; copied below
    if buffer.size != step * height:
        raise ImageDecodeError(
            f"{encoding} image {height}x{width} with step {step} needs {step * height} bytes, "
            f"got {buffer.size}"
        )
    rows = buffer.reshape(height, step)[:, :row_bytes]  # [H, W * pixel_bytes], padding dropped
    if layout.bytes_per_channel == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        values = (rows.view(dtype) >> 8).astype(np.uint8)  # [H, W * C], high byte; view needs even row stride
    else:
        values = rows
    pixels = values.reshape(height, width, layout.channels)  # [H, W, C]
    if layout.bayer_code is not None:
        try:
            return cv2.cvtColor(np.ascontiguousarray(pixels[:, :, 0]), layout.bayer_code)
        except cv2.error as error:
            raise ImageDecodeError(f"cannot demosaic {encoding} image {height}x{width}: {error}") from error
    return np.ascontiguousarray(pixels[:, :, list(layout.rgb_channels)])  # fancy indexing copies


def encode_raw(
    rgb: np.ndarray,
    encoding: str,
    *,
    row_padding_bytes: int = 0,
    is_bigendian: bool = False,
) -> tuple[int, bytes]:
    """Encode an RGB image as a sensor_msgs/Image payload (for tests and the simulator).

    mono encodings use OpenCV's RGB->gray weights; 16-bit encodings scale by 257 so decode_raw restores the
    8-bit values exactly; alpha is 255; bayer encodings sample one channel per pixel of the 2x2 tile.

    Args:
        rgb: [H, W, 3] uint8 RGB.
        encoding: one of SUPPORTED_RAW_ENCODINGS.
        row_padding_bytes: extra zero bytes at the end of each row (must keep 16-bit rows even).
        is_bigendian: byte order of 16-bit encodings.

    Returns:
        (step, data) with len(data) == step * H.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be [H, W, 3] uint8, got {rgb.shape} {rgb.dtype}")
    if row_padding_bytes < 0:
        raise ValueError(f"row_padding_bytes must be >= 0, got {row_padding_bytes}")
    layout = _layout(encoding)
    height, width, _ = rgb.shape
    key = encoding.lower()
    if key in _BAYER_TILES:
        tile = _BAYER_TILES[key]
        channels = np.empty((height, width), dtype=np.uint8)  # [H, W]
        for cell, channel in enumerate(tile):
            row, col = divmod(cell, 2)
            channels[row::2, col::2] = rgb[row::2, col::2, channel]
        stored = channels[:, :, None]  # [H, W, 1]
    elif layout.channels == 1:
        stored = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None]  # [H, W, 1]
    else:
        stored = np.empty((height, width, layout.channels), dtype=np.uint8)  # [H, W, C]
        stored[:, :, list(layout.rgb_channels)] = rgb
        if layout.channels == 4:
            stored[:, :, 3] = 255
    if layout.bytes_per_channel == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        stored = (stored.astype(np.uint16) * 257).astype(dtype)  # [H, W, C] 16-bit
        if row_padding_bytes % 2:
            raise ValueError(f"row_padding_bytes must be even for {encoding}, got {row_padding_bytes}")
    row = stored.reshape(height, -1).view(np.uint8)  # [H, W * pixel_bytes]
    padded = np.zeros((height, row.shape[1] + row_padding_bytes), dtype=np.uint8)
    padded[:, : row.shape[1]] = row
    return padded.shape[1], padded.tobytes()


def _compressed_kind(fmt: str) -> str:
    """'jpeg' or 'png' from a CompressedImage.format such as 'jpeg', 'rgb8; jpeg compressed bgr8', 'png'."""
    text = fmt.lower()
    if "compresseddepth" in text:
        raise ImageDecodeError(f"compressed depth images are not camera images (format {fmt!r})")
    if "jpeg" in text or "jpg" in text:
        return "jpeg"
    if "png" in text:
        return "png"
    raise ImageDecodeError(
        f"unsupported CompressedImage format {fmt!r}; supported: {', '.join(SUPPORTED_COMPRESSED_FORMATS)}"
    )


def decode_compressed(fmt: str, data: BytesLike) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage payload (JPEG or PNG) to RGB.

    The declared pre-compression encoding ('rgb8; jpeg compressed bgr8') needs no handling: the codec stores
    the colours correctly and cv2.imdecode returns BGR, which is swapped here. Grey and 16-bit PNGs become
    8-bit RGB.

    Args:
        fmt: the message's `format`.
        data: the compressed bytes.

    Returns:
        [H, W, 3] uint8 RGB.

    Raises:
        ImageDecodeError: unsupported format, empty, truncated or corrupt data.
    """
    kind = _compressed_kind(fmt)
    buffer = np.frombuffer(data, dtype=np.uint8)  # [N]
    if buffer.size == 0:
        raise ImageDecodeError(f"empty {kind} payload (format {fmt!r})")
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)  # [H, W, 3] or None
    except cv2.error as error:
        raise ImageDecodeError(f"cannot decode {buffer.size} byte {kind} payload: {error}") from error
    if bgr is None:
        raise ImageDecodeError(
            f"cannot decode {buffer.size} byte {kind} payload (format {fmt!r}): corrupt or truncated"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_compressed(rgb: np.ndarray, fmt: str, *, jpeg_quality: int = 90) -> bytes:
    """Encode an RGB image [H, W, 3] uint8 as JPEG or PNG bytes (for tests and the simulator).

    Args:
        rgb: [H, W, 3] uint8 RGB.
        fmt: 'jpeg' or 'png'.
        jpeg_quality: JPEG quality 1..100 (PNG is lossless).

    Returns:
        The compressed bytes, suitable for CompressedImage.data with format `fmt`.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be [H, W, 3] uint8, got {rgb.shape} {rgb.dtype}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    kind = _compressed_kind(fmt)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if kind == "jpeg":
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    else:
        ok, buffer = cv2.imencode(".png", bgr)
    if not ok:
        raise ImageDecodeError(f"OpenCV failed to encode a {rgb.shape} image as {kind}")
    return buffer.tobytes()

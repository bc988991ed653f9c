"""``sensor_msgs/CompressedImage`` -> numpy through OpenCV: camera images (jpeg, png) and depth images in
``compressed_depth_image_transport``'s png form.

Formats, as image_transport writes them in the ``format`` field:

* camera (``compressed`` transport): ``"jpeg"``, ``"png"``, or the long form ``"rgb8; jpeg compressed bgr8"``;
  only the codec name matters, OpenCV decodes to BGR (or grey) and the result is RGB uint8 [H, W, 3].
* depth (``compressedDepth`` transport): ``"16UC1; compressedDepth png"`` (or ``"16UC1; compressedDepth"``):
  a 12-byte configuration header (int32 format, float32 depthParam[2], unused for 16UC1) followed by a
  16-bit png of millimetres -> float32 metres [H, W], 0 where there is no measurement. The inverse-depth
  32FC1 variant and the rvl codec are refused with a ``MessageError`` naming the format.

Data that does not decode raises ``MessageError`` (field ``data``), so the pipeline counts it as malformed
like any other bad message.
"""

from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage

from robustseg_ros.conversions import MILLIMETRES_PER_METRE, MessageError, camera_image_to_rgb

#: Codec names accepted in a camera CompressedImage's format field.
IMAGE_CODECS = ("jpeg", "jpg", "png")
#: Bytes before the png of a compressedDepth message (compression format + two quantisation floats).
DEPTH_HEADER_BYTES = 12


def _bytes(msg: CompressedImage) -> np.ndarray:
    """A uint8 view over the message's data (a copy for a list)."""
    try:
        return np.frombuffer(msg.data, dtype=np.uint8)
    except (TypeError, ValueError):
        return np.asarray(msg.data, dtype=np.uint8).reshape(-1)


def _decode(buffer: np.ndarray, flags: int, what: str, *, topic: str | None) -> np.ndarray:
    """cv2.imdecode, or ``MessageError`` naming the topic and ``data`` when the bytes are not a decodable image."""
    try:
        image = cv2.imdecode(buffer, flags) if buffer.size else None
    except cv2.error as error:
        raise MessageError(f"{what} does not decode ({error.msg.strip()})", topic=topic, field="data") from error
    if image is None:
        raise MessageError(f"{what} does not decode ({buffer.size} bytes)", topic=topic, field="data")
    return image


def compressed_image_to_rgb(msg: CompressedImage, *, topic: str | None = None) -> np.ndarray:
    """A jpeg or png ``CompressedImage`` -> uint8 [H, W, 3] in RGB order (grey images repeated into 3 channels)."""
    codecs = [part for part in msg.format.replace(";", " ").lower().split() if part in IMAGE_CODECS]
    if not codecs or "compresseddepth" in msg.format.lower():
        raise MessageError(f"format '{msg.format}': expected a jpeg or png camera image", topic=topic, field="format")
    image = _decode(_bytes(msg), cv2.IMREAD_COLOR, f"{codecs[0]} image", topic=topic)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def camera_message_to_rgb(msg, *, topic: str | None = None) -> np.ndarray:
    """A camera message of either transport, raw ``Image`` or ``CompressedImage``, -> uint8 [H, W, 3] RGB."""
    if isinstance(msg, CompressedImage):
        return compressed_image_to_rgb(msg, topic=topic)
    return camera_image_to_rgb(msg, topic=topic)


def compressed_depth_to_metres(msg: CompressedImage, *, topic: str | None = None) -> np.ndarray:
    """A ``"16UC1; compressedDepth png"`` message -> float32 metres [H, W] (0: no measurement)."""
    encoding, _, compression = msg.format.partition(";")
    compression = compression.strip()
    if encoding.strip() != "16UC1" or compression not in ("compressedDepth png", "compressedDepth"):
        raise MessageError(f"format '{msg.format}': expected '16UC1; compressedDepth png' (millimetres); 32FC1 "
                           "inverse depth and rvl are not supported", topic=topic, field="format")
    buffer = _bytes(msg)
    if buffer.size <= DEPTH_HEADER_BYTES:
        raise MessageError(f"truncated: {buffer.size} bytes, a compressedDepth message has a {DEPTH_HEADER_BYTES}-byte "
                           "header and a png", topic=topic, field="data")
    millimetres = _decode(buffer[DEPTH_HEADER_BYTES:], cv2.IMREAD_UNCHANGED, "compressedDepth png", topic=topic)
    if millimetres.dtype != np.uint16 or millimetres.ndim != 2:
        raise MessageError(f"compressedDepth png holds {millimetres.dtype} with shape {millimetres.shape}, expected "
                           "one 16-bit channel", topic=topic, field="data")
    return millimetres.astype(np.float32) / np.float32(MILLIMETRES_PER_METRE)

"""Compressed camera (jpeg, png) and depth (compressedDepth png 16UC1) input: decoding and malformed data.

The compressedDepth messages are built here in the layout compressed_depth_image_transport documents and
writes (a 12-byte header: int32 format, float32 depthParam[2]; then a 16-bit png of millimetres, format
"16UC1; compressedDepth png"); no recording of the plugin itself is available in this environment.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import CompressedImage  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from test_pipeline import SIZE, RecordingLogger, drive_messages, make_tiny_checkpoint  # noqa: E402

from robustseg_core.inference import Segmenter  # noqa: E402
from robustseg_core.sim.drive import Drive, DriveConfig  # noqa: E402
from robustseg_ros.compressed import compressed_depth_to_metres, compressed_image_to_rgb  # noqa: E402
from robustseg_ros.conversions import MessageError, depth_image_to_metres, numpy_to_image  # noqa: E402
from robustseg_ros.params import PerceptionParams  # noqa: E402
from robustseg_ros.pipeline import PerceptionPipeline  # noqa: E402


def compressed(data: bytes, format_: str, header: Header | None = None) -> CompressedImage:
    return CompressedImage(header=header or Header(), format=format_, data=data)


def encoded_rgb(rgb: np.ndarray, extension: str) -> bytes:
    ok, buffer = cv2.imencode(extension, np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return buffer.tobytes()


def compressed_depth(millimetres: np.ndarray, header: Header | None = None) -> CompressedImage:
    """A compressed_depth_image_transport message: 12-byte header, then the 16-bit png."""
    ok, png = cv2.imencode(".png", millimetres)
    assert ok and millimetres.dtype == np.uint16
    return compressed(struct.pack("<iff", 0, 0.0, 0.0) + png.tobytes(), "16UC1; compressedDepth png", header)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (24, 40, 3), dtype=np.uint8)


def test_png_is_exact_and_jpeg_close_in_rgb_order(rgb):
    assert np.array_equal(compressed_image_to_rgb(compressed(encoded_rgb(rgb, ".png"), "png")), rgb)
    smooth = cv2.GaussianBlur(rgb, (9, 9), 3)
    for format_ in ("jpeg", "rgb8; jpeg compressed bgr8"):
        decoded = compressed_image_to_rgb(compressed(encoded_rgb(smooth, ".jpg"), format_))
        assert decoded.shape == rgb.shape and np.abs(decoded.astype(int) - smooth).mean() < 4


def test_corrupt_or_foreign_compressed_images_raise_message_errors(rgb):
    jpeg = encoded_rgb(rgb, ".jpg")
    with pytest.raises(MessageError, match=r"/cam: field 'data': jpeg image does not decode"):
        compressed_image_to_rgb(compressed(b"\xff\xd8" + bytes(200), "jpeg"), topic="/cam")
    with pytest.raises(MessageError, match="field 'format': format 'bmp'"):
        compressed_image_to_rgb(compressed(jpeg, "bmp"))
    with pytest.raises(MessageError, match="field 'data'"):
        compressed_image_to_rgb(compressed(b"", "png"))


def test_compressed_depth_png_gives_the_raw_16uc1_metres():
    millimetres = np.random.default_rng(1).integers(0, 20000, (24, 40), dtype=np.uint16)
    millimetres[0, :5] = 0  # no measurement
    raw = depth_image_to_metres(numpy_to_image(millimetres, "16UC1"))
    decoded = compressed_depth_to_metres(compressed_depth(millimetres))
    assert decoded.dtype == np.float32 and np.array_equal(decoded, raw) and (decoded[0, :5] == 0).all()
    message = compressed_depth(millimetres)
    message.format = "16UC1; compressedDepth"  # older publishers: png implied
    assert np.array_equal(compressed_depth_to_metres(message), raw)
    for format_ in ("32FC1; compressedDepth png", "16UC1; compressedDepth rvl"):
        with pytest.raises(MessageError, match=f"format '{format_}'"):
            compressed_depth_to_metres(compressed(bytes(message.data), format_))
    with pytest.raises(MessageError, match="truncated: 12 bytes"):
        compressed_depth_to_metres(compressed(bytes(message.data)[:12], message.format))
    with pytest.raises(MessageError, match="compressedDepth png does not decode"):
        compressed_depth_to_metres(compressed(bytes(message.data)[:40], message.format))


def test_the_pipeline_takes_compressed_inputs_and_counts_corrupt_ones_as_malformed(tmp_path):
    drive = Drive(5, DriveConfig(width=SIZE[0], height=SIZE[1]))
    frame = drive.frame(1)
    params = PerceptionParams({"camera.transport": "compressed", "depth.transport": "compressedDepth",
                               "sync.camera_wait_s": 0.0})
    assert params.topics()["camera"] == "camera/image/compressed"
    assert params.topics()["depth"] == "depth/image/compressedDepth"
    segmenter = Segmenter(make_tiny_checkpoint(tmp_path / "tiny.pt"), device="cpu")
    pipeline = PerceptionPipeline(params, segmenter, logger=RecordingLogger())
    messages = drive_messages(frame, frame.stamp, depth_encoding="16UC1")
    raw_depth = messages["depth"]
    messages["depth"] = compressed_depth(np.frombuffer(raw_depth.data, np.uint16).reshape(SIZE[1], SIZE[0]),
                                         raw_depth.header)
    messages["camera"] = compressed(encoded_rgb(frame.rgb, ".png"), "png", messages["camera"].header)
    now = frame.stamp + 0.01
    pipeline.on_camera_info(messages["camera_info"], now)
    assert pipeline.on_depth(messages["depth"], now) is None
    job = pipeline.on_camera(messages["camera"], now)
    assert job is not None and job.frame.present == ("rgb", "depth")
    assert np.array_equal(job.frame.payload("rgb").data, frame.rgb)
    assert np.array_equal(job.frame.payload("depth").data, depth_image_to_metres(raw_depth))
    output = pipeline.process(job)
    assert output.fed == ("rgb", "depth") and output.labels.shape == (SIZE[1], SIZE[0])

    corrupt = compressed(b"\x89PNG" + bytes(64), "png", messages["camera"].header)
    assert pipeline.on_camera(corrupt, now + 0.1) is None
    assert pipeline.health["rgb"].error_counts == {"data": 1}
    assert "malformed data" in pipeline.health.statuses(now + 0.1)["rgb"].message

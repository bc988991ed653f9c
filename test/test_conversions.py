"""sensor_msgs <-> numpy conversions: round trips, strides, endianness, zero-copy and malformed input."""

from __future__ import annotations

import array

import numpy as np
import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from robustseg_core.sensors.camera import CameraIntrinsics  # noqa: E402
from robustseg_core.sensors.events import EVENT_DTYPE  # noqa: E402
from robustseg_ros.conversions import (  # noqa: E402
    MessageError,
    camera_image_to_rgb,
    camera_info_to_intrinsics,
    depth_image_to_metres,
    events_to_pointcloud2,
    image_to_numpy,
    intrinsics_to_camera_info,
    numpy_to_image,
    numpy_to_pointcloud2,
    pointcloud2_to_events,
    pointcloud2_to_xyz,
    pointcloud2_to_xyzi,
    seconds_to_stamp,
    stamp_to_seconds,
)

RNG = np.random.default_rng(0)


def raw_image(pixels: np.ndarray, encoding: str, *, padding: int = 0, bigendian: bool = False) -> Image:
    """An Image built byte by byte (independent of numpy_to_image), rows padded with 0xAB bytes."""
    height, width = pixels.shape[:2]
    ordered = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = ordered.reshape(height, -1).view(np.uint8).reshape(height, -1)
    row_bytes = rows.shape[1]
    padded = np.full((height, row_bytes + padding), 0xAB, dtype=np.uint8)
    padded[:, :row_bytes] = rows
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=bigendian,
                step=row_bytes + padding)
    msg.data = array.array("B", padded.tobytes())
    return msg


def data_view(msg) -> np.ndarray:
    return np.frombuffer(msg.data, dtype=np.uint8)


# ------------------------------------------------------------------------------------ images

@pytest.mark.parametrize("encoding, dtype, channels", [
    ("rgb8", np.uint8, 3), ("bgr8", np.uint8, 3), ("rgba8", np.uint8, 4), ("bgra8", np.uint8, 4),
    ("mono8", np.uint8, 1), ("32FC1", np.float32, 1), ("16UC1", np.uint16, 1),
])
@pytest.mark.parametrize("padding", [0, 6])
def test_image_round_trip_every_encoding(encoding, dtype, channels, padding):
    shape = (5, 7) if channels == 1 else (5, 7, channels)
    if np.issubdtype(dtype, np.floating):
        pixels = RNG.standard_normal(shape).astype(dtype)
    else:
        pixels = RNG.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    msg = raw_image(pixels, encoding, padding=padding)
    decoded = image_to_numpy(msg)
    assert decoded.dtype == dtype and decoded.shape == shape
    np.testing.assert_array_equal(decoded, pixels)
    assert np.shares_memory(decoded, data_view(msg)), "little-endian images must be views over msg.data"

    rebuilt = numpy_to_image(decoded, encoding, Header(frame_id="cam"))
    assert rebuilt.step == 7 * channels * np.dtype(dtype).itemsize
    assert rebuilt.header.frame_id == "cam" and rebuilt.encoding == encoding
    np.testing.assert_array_equal(image_to_numpy(rebuilt), pixels)


@pytest.mark.parametrize("encoding, dtype", [("16UC1", np.uint16), ("32FC1", np.float32)])
def test_big_endian_images_are_swapped(encoding, dtype):
    pixels = (np.arange(12).reshape(3, 4) * 1000 + 1).astype(dtype)
    msg = raw_image(pixels, encoding, padding=4, bigendian=True)
    decoded = image_to_numpy(msg)
    assert decoded.dtype == np.dtype(dtype) and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, pixels)


def test_image_survives_serialization():
    pixels = RNG.integers(0, 255, size=(4, 6, 3), dtype=np.uint8)
    msg = deserialize_message(serialize_message(numpy_to_image(pixels, "rgb8")), Image)
    decoded = image_to_numpy(msg)
    np.testing.assert_array_equal(decoded, pixels)
    assert np.shares_memory(decoded, data_view(msg))


def test_camera_image_to_rgb_orders_channels():
    rgb = RNG.integers(0, 255, size=(3, 4, 3), dtype=np.uint8)
    alpha = np.full((3, 4, 1), 200, dtype=np.uint8)
    rgb_msg = raw_image(rgb, "rgb8", padding=2)
    as_rgb = camera_image_to_rgb(rgb_msg)
    np.testing.assert_array_equal(as_rgb, rgb)
    assert np.shares_memory(as_rgb, data_view(rgb_msg))
    rgba_msg = raw_image(np.concatenate([rgb, alpha], axis=2), "rgba8")
    np.testing.assert_array_equal(camera_image_to_rgb(rgba_msg), rgb)
    assert np.shares_memory(camera_image_to_rgb(rgba_msg), data_view(rgba_msg))
    np.testing.assert_array_equal(camera_image_to_rgb(raw_image(rgb[..., ::-1].copy(), "bgr8")), rgb)
    bgra = np.concatenate([rgb[..., ::-1], alpha], axis=2)
    bgr_result = camera_image_to_rgb(raw_image(bgra, "bgra8", padding=3))
    np.testing.assert_array_equal(bgr_result, rgb)
    assert bgr_result.flags.c_contiguous
    mono = rgb[..., 0].copy()
    np.testing.assert_array_equal(camera_image_to_rgb(raw_image(mono, "mono8")), np.stack([mono] * 3, axis=2))
    with pytest.raises(MessageError, match="expected a colour image"):
        camera_image_to_rgb(raw_image(np.zeros((2, 2), np.float32), "32FC1"), topic="/cam/image")


def test_depth_in_metres_and_invalid_values_are_zero():
    metres = np.array([[1.5, 0.0, np.nan], [np.inf, -2.0, 80.25]], dtype=np.float32)
    depth = depth_image_to_metres(raw_image(metres, "32FC1", padding=4))
    np.testing.assert_array_equal(depth, [[1.5, 0.0, 0.0], [0.0, 0.0, 80.25]])
    assert depth.dtype == np.float32

    millimetres = np.array([[0, 1500], [65535, 250]], dtype=np.uint16)
    depth = depth_image_to_metres(raw_image(millimetres, "16UC1", bigendian=True))
    np.testing.assert_allclose(depth, [[0.0, 1.5], [65.535, 0.25]], rtol=1e-6)
    assert depth.dtype == np.float32

    with pytest.raises(MessageError, match="expected a depth image.*'rgb8'"):
        depth_image_to_metres(raw_image(np.zeros((2, 2, 3), np.uint8), "rgb8"))


def test_image_errors_name_topic_field_and_problem():
    good = raw_image(np.zeros((4, 5, 3), np.uint8), "rgb8")

    unknown = raw_image(np.zeros((4, 5, 3), np.uint8), "yuv422")
    with pytest.raises(MessageError, match=r"^/cam: field 'encoding': unsupported encoding 'yuv422'"):
        image_to_numpy(unknown, topic="/cam")

    narrow = raw_image(np.zeros((4, 5, 3), np.uint8), "rgb8")
    narrow.step = 14
    with pytest.raises(MessageError, match=r"field .step.: step 14 is smaller than width 5 x 3 bytes per pixel \(rgb8\) = 15 bytes"):
        image_to_numpy(narrow)

    truncated = raw_image(np.zeros((4, 5, 3), np.uint8), "rgb8")
    truncated.data = array.array("B", bytes(good.data)[:-1])
    with pytest.raises(MessageError, match=r"field .data.: truncated: 59 bytes.*need 60"):
        image_to_numpy(truncated)

    empty = Image(height=0, width=5, encoding="rgb8", step=15)
    with pytest.raises(MessageError, match="empty image"):
        image_to_numpy(empty)

    error = pytest.raises(MessageError, image_to_numpy, narrow, topic="/t").value
    assert isinstance(error, ValueError) and error.topic == "/t" and error.field == "step"


def test_numpy_to_image_checks_shape_and_dtype():
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="needs dtype float32"):
        numpy_to_image(np.zeros((2, 2), np.float64), "32FC1")
    confidence = numpy_to_image(np.full((2, 3), 0.25, np.float32), "32FC1")
    assert confidence.step == 12 and not confidence.is_bigendian
    np.testing.assert_array_equal(image_to_numpy(confidence), np.full((2, 3), 0.25, np.float32))
    swapped = numpy_to_image(np.array([[1, 2]], dtype=">u2"), "16UC1")
    np.testing.assert_array_equal(image_to_numpy(swapped), [[1, 2]])


# ------------------------------------------------------------------------------------ clouds

def test_xyz_intensity_round_trip_and_zero_copy_read():
    points = RNG.standard_normal((50, 4)).astype(np.float32)
    msg = numpy_to_pointcloud2(points, Header(frame_id="lidar"))
    assert [f.name for f in msg.fields] == ["x", "y", "z", "intensity"]
    assert msg.point_step == 16 and msg.row_step == 800 and msg.height == 1 and msg.width == 50
    np.testing.assert_array_equal(pointcloud2_to_xyzi(msg), points)
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg), points[:, :3])

    no_intensity = numpy_to_pointcloud2(points[:, :3])
    xyzi = pointcloud2_to_xyzi(no_intensity)
    np.testing.assert_array_equal(xyzi[:, :3], points[:, :3])
    assert (xyzi[:, 3] == 0).all()


def test_cloud_with_extra_fields_padding_float64_and_big_endian():
    layout = np.dtype({
        "names": ["ring", "x", "y", "z", "intensity", "time"],
        "formats": [np.uint16, np.float64, np.float64, np.float64, np.uint8, np.float32],
        "offsets": [0, 8, 16, 24, 33, 36],
        "itemsize": 48,
    })
    cloud = np.zeros(20, dtype=layout)
    xyz = RNG.standard_normal((20, 3)) * 30
    cloud["x"], cloud["y"], cloud["z"] = xyz.T
    cloud["intensity"] = np.arange(20) * 10
    cloud["ring"] = 7
    for bigendian in (False, True):
        msg = numpy_to_pointcloud2(cloud, is_bigendian=bigendian)
        assert msg.point_step == 48 and msg.is_bigendian == bigendian
        result = pointcloud2_to_xyzi(msg, intensity_scale=1 / 255)
        assert result.dtype == np.float32 and result.shape == (20, 4)
        np.testing.assert_allclose(result[:, :3], xyz, rtol=1e-6)
        np.testing.assert_allclose(result[:, 3], np.arange(20) * 10 / 255, rtol=1e-6)


def test_organised_cloud_with_row_padding_and_non_finite_points():
    grid = np.zeros((3, 4), dtype=[("x", np.float32), ("y", np.float32), ("z", np.float32)])
    grid["x"] = np.arange(12).reshape(3, 4)
    grid["y"], grid["z"] = 1.0, 2.0
    grid["x"][1, 2] = np.nan
    grid["z"][2, 0] = np.inf
    msg = numpy_to_pointcloud2(grid)
    assert (msg.height, msg.width, msg.row_step) == (3, 4, 48)
    padded_rows = np.zeros((3, 48 + 8), dtype=np.uint8)
    padded_rows[:, :48] = np.frombuffer(msg.data, np.uint8).reshape(3, 48)
    msg.row_step = 56
    msg.data = array.array("B", padded_rows.tobytes()[:-8])
    result = pointcloud2_to_xyzi(msg)
    expected_x = [v for v in range(12) if v not in (6, 8)]
    np.testing.assert_array_equal(result[:, 0], expected_x)
    assert (result[:, 1] == 1).all() and (result[:, 3] == 0).all()


def test_empty_cloud_gives_empty_array():
    empty = PointCloud2()
    assert pointcloud2_to_xyzi(empty).shape == (0, 4)
    assert pointcloud2_to_xyzi(numpy_to_pointcloud2(np.zeros((0, 4), np.float32))).shape == (0, 4)
    assert pointcloud2_to_xyz(empty).shape == (0, 3)
    assert pointcloud2_to_events(empty).dtype == EVENT_DTYPE and len(pointcloud2_to_events(empty)) == 0


def test_cloud_errors():
    msg = numpy_to_pointcloud2(RNG.standard_normal((10, 4)).astype(np.float32))

    missing_x = numpy_to_pointcloud2(np.zeros(3, dtype=[("a", np.float32), ("y", np.float32), ("z", np.float32)]))
    with pytest.raises(MessageError, match=r"^/points: field 'fields': missing field\(s\) x; the cloud has a, y, z"):
        pointcloud2_to_xyzi(missing_x, topic="/points")

    truncated = numpy_to_pointcloud2(RNG.standard_normal((10, 4)).astype(np.float32))
    truncated.data = array.array("B", bytes(msg.data)[:100])
    with pytest.raises(MessageError, match=r"field 'data': truncated: 100 bytes.*need 160"):
        pointcloud2_to_xyzi(truncated)

    short_step = numpy_to_pointcloud2(RNG.standard_normal((10, 4)).astype(np.float32))
    short_step.point_step = 12
    with pytest.raises(MessageError, match=r"point_step 12 is smaller than field 'intensity'"):
        pointcloud2_to_xyzi(short_step)

    bad_type = numpy_to_pointcloud2(RNG.standard_normal((10, 4)).astype(np.float32))
    bad_type.fields[0].datatype = PointField.INT32
    with pytest.raises(MessageError, match=r"field 'x': datatype 5; x, y, z must be FLOAT32"):
        pointcloud2_to_xyzi(bad_type)
    bad_type.fields[0].datatype = 42
    with pytest.raises(MessageError, match=r"field 'x': datatype 42"):
        pointcloud2_to_xyzi(bad_type)
    bad_intensity = numpy_to_pointcloud2(RNG.standard_normal((10, 4)).astype(np.float32))
    bad_intensity.fields[3].datatype = 11
    with pytest.raises(MessageError, match=r"field 'intensity': unsupported PointField datatype 11"):
        pointcloud2_to_xyzi(bad_intensity)

    narrow_rows = numpy_to_pointcloud2(RNG.standard_normal((10, 4)).astype(np.float32))
    narrow_rows.row_step = 80
    with pytest.raises(MessageError, match="row_step 80 is smaller"):
        pointcloud2_to_xyzi(narrow_rows)


def test_hand_built_cloud_with_default_counts():
    fields = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32) for i, name in enumerate("xyz")]
    points = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    msg = PointCloud2(height=1, width=2, fields=fields, point_step=12, row_step=24,
                      data=array.array("B", points.tobytes()))
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg), points)


# ------------------------------------------------------------------------------------ events

def make_events(count: int) -> np.ndarray:
    events = np.zeros(count, dtype=EVENT_DTYPE)
    events["x"] = RNG.integers(0, 640, count)
    events["y"] = RNG.integers(0, 480, count)
    events["t"] = 1_700_000_000.0 + np.sort(RNG.random(count)) * 0.05
    events["polarity"] = RNG.choice([-1, 1], count)
    return events


@pytest.mark.parametrize("bigendian", [False, True])
def test_events_round_trip(bigendian):
    events = make_events(100)
    msg = events_to_pointcloud2(events, Header(frame_id="dvs"), is_bigendian=bigendian)
    assert [(f.name, f.datatype) for f in msg.fields] == [
        ("x", PointField.UINT16), ("y", PointField.UINT16), ("t", PointField.FLOAT64), ("polarity", PointField.INT8)]
    decoded = pointcloud2_to_events(msg)
    assert decoded.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(decoded, events)


def test_events_with_integer_nanosecond_t_and_other_layouts():
    layout = np.dtype({"names": ["t", "x", "y", "polarity"],
                       "formats": [np.uint32, np.float32, np.int32, np.uint8],
                       "offsets": [0, 4, 8, 13], "itemsize": 16})
    packet = np.zeros(4, dtype=layout)
    packet["t"] = [0, 1_000, 2_500_000, 4_000_000_000]
    packet["x"] = [1.0, 2.0, 70000.0, 3.5]
    packet["y"] = [10, 20, 30, 40]
    packet["polarity"] = [1, 0, 1, 1]
    header = Header(stamp=Time(sec=100, nanosec=500_000_000))
    events = pointcloud2_to_events(numpy_to_pointcloud2(packet, header, is_bigendian=True))
    np.testing.assert_array_equal(events["x"], [1, 2])
    np.testing.assert_array_equal(events["y"], [10, 20])
    np.testing.assert_allclose(events["t"], [100.5, 100.500001], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(events["polarity"], [1, -1])


def test_event_errors():
    float32_t = np.zeros(2, dtype=[("x", np.uint16), ("y", np.uint16), ("t", np.float32), ("polarity", np.int8)])
    with pytest.raises(MessageError, match="field 't': FLOAT32 cannot hold absolute seconds"):
        pointcloud2_to_events(numpy_to_pointcloud2(float32_t))
    no_polarity = np.zeros(2, dtype=[("x", np.uint16), ("y", np.uint16), ("t", np.float64)])
    with pytest.raises(MessageError, match=r"missing field\(s\) polarity"):
        pointcloud2_to_events(numpy_to_pointcloud2(no_polarity), topic="/events")


# ------------------------------------------------------------------------------------ camera info, time

def test_camera_info_round_trip_and_errors():
    intrinsics = CameraIntrinsics(640, 480, 500.0, 510.0, 319.5, 239.5)
    info = intrinsics_to_camera_info(intrinsics, Header(frame_id="cam_optical"))
    assert info.header.frame_id == "cam_optical" and list(info.d) == [0.0] * 5
    assert camera_info_to_intrinsics(info) == intrinsics

    info.d = [0.1, -0.2, 0.0, 0.0, 0.0]
    assert camera_info_to_intrinsics(info) == intrinsics, "distortion is ignored (rectified images)"

    binned = intrinsics_to_camera_info(intrinsics)
    binned.binning_x = binned.binning_y = 2
    assert camera_info_to_intrinsics(binned) == intrinsics.scaled(320, 240)

    uncalibrated = CameraInfo(width=640, height=480)
    with pytest.raises(MessageError, match=r"^/cam/info: field 'k': focal lengths must be positive"):
        camera_info_to_intrinsics(uncalibrated, topic="/cam/info")
    negative = intrinsics_to_camera_info(intrinsics)
    negative.k[4] = -1.0
    with pytest.raises(MessageError, match="fy=-1.0"):
        camera_info_to_intrinsics(negative)
    zero_size = intrinsics_to_camera_info(intrinsics)
    zero_size.width = 0
    with pytest.raises(MessageError, match="zero image size"):
        camera_info_to_intrinsics(zero_size)


def test_stamp_conversions():
    stamp = seconds_to_stamp(1_700_000_000.123456789)
    assert stamp.sec == 1_700_000_000 and abs(stamp.nanosec - 123_456_789) < 300
    assert stamp_to_seconds(Time(sec=12, nanosec=500_000_000)) == 12.5
    assert seconds_to_stamp(2.9999999999) == Time(sec=3, nanosec=0)
    negative = seconds_to_stamp(-0.25)
    assert (negative.sec, negative.nanosec) == (-1, 750_000_000)
    assert stamp_to_seconds(negative) == -0.25
    with pytest.raises(ValueError):
        seconds_to_stamp(float("nan"))

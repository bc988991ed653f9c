"""Sensor encoders against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robustseg_core.sensors import (
    EVENT_DTYPE,
    HHA_HEIGHT_RANGE_M,
    R_BODY_OPTICAL,
    CameraIntrinsics,
    decode_depth_png,
    depth_to_hha,
    encode_depth_png,
    events_to_frame,
    invert_transform,
    lidar_to_image,
    make_transform,
    project_points,
    rotation_y,
)

HEIGHT_LO, HEIGHT_HI = HHA_HEIGHT_RANGE_M


def decode_height(channel: np.ndarray) -> np.ndarray:
    return HEIGHT_LO + channel.astype(np.float64) / 255.0 * (HEIGHT_HI - HEIGHT_LO)


def decode_angle_deg(channel: np.ndarray) -> np.ndarray:
    return channel.astype(np.float64) * 180.0 / 255.0


# ----------------------------------------------------------------------------- camera


def test_intrinsics_from_fov_and_scaled():
    intrinsics = CameraIntrinsics.from_fov(640, 480, 90.0)
    assert intrinsics.fx == pytest.approx(320.0)
    assert (intrinsics.cx, intrinsics.cy) == (319.5, 239.5)
    half = intrinsics.scaled(320, 240)
    assert half.fx == pytest.approx(160.0) and half.cx == pytest.approx(159.5)
    assert half.hfov_deg == pytest.approx(90.0)
    np.testing.assert_allclose(intrinsics.matrix, [[320, 0, 319.5], [0, 320, 239.5], [0, 0, 1]])
    with pytest.raises(ValueError):
        CameraIntrinsics.from_fov(64, 64, 180.0)


def test_transform_helpers_round_trip():
    transform = make_transform(rotation_y(0.3), (1.0, -2.0, 0.5))
    np.testing.assert_allclose(transform @ invert_transform(transform), np.eye(4), atol=1e-12)
    with pytest.raises(ValueError, match="4x4"):
        invert_transform(np.eye(3))


# ----------------------------------------------------------------------------- HHA


def level_camera() -> np.ndarray:
    """R_world_cam of a level camera looking along world x."""
    return R_BODY_OPTICAL.copy()


def test_hha_fronto_parallel_plane():
    intrinsics = CameraIntrinsics.from_fov(33, 33, 90.0)
    depth = np.full((33, 33), 5.0, dtype=np.float32)
    hha = depth_to_hha(depth, intrinsics, level_camera(), camera_height_m=1.5)
    assert hha.dtype == np.uint8 and hha.shape == (33, 33, 3)
    assert np.all(hha[..., 0] == round(255 * 2.0 / 5.0))
    # Centre row is at the camera's height; the normal is horizontal (90 deg -> 128).
    assert decode_height(hha[16, 16, 1]) == pytest.approx(1.5, abs=0.05)
    assert np.all(hha[..., 2] == 128)
    # One row up is higher: y_cam = -z / fy.
    expected_top = 1.5 + 5.0 * 16 / intrinsics.fy
    assert decode_height(hha[0, 16, 1]) == pytest.approx(expected_top, abs=0.05)


def ground_depth(intrinsics: CameraIntrinsics, camera_height: float, pitch_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """Planar depth of the ground plane for a camera pitched down by ``pitch_rad``; 0 above the horizon."""
    R_world_cam = rotation_y(pitch_rad) @ R_BODY_OPTICAL
    rays = intrinsics.pixel_rays()  # optical frame, z = 1
    world_z = rays @ R_world_cam[2]
    with np.errstate(divide="ignore"):
        depth = np.where(world_z < -1e-6, camera_height / -world_z, 0.0)
    return depth.astype(np.float32), R_world_cam


@pytest.mark.parametrize("pitch_deg", [0.0, 7.0])
def test_hha_ground_plane_has_zero_height_and_vertical_normal(pitch_deg):
    intrinsics = CameraIntrinsics.from_fov(64, 64, 90.0)
    depth, R_world_cam = ground_depth(intrinsics, 1.6, math.radians(pitch_deg))
    hha = depth_to_hha(depth, intrinsics, R_world_cam, camera_height_m=1.6)
    valid = depth > 0
    assert not valid.all() and valid.sum() > 500
    # Keep well inside the ground (two rows away from the horizon's invalid pixels).
    inner = valid.copy()
    inner[:-2] &= valid[2:]
    inner[2:] &= valid[:-2]
    heights = decode_height(hha[..., 1][inner])
    assert np.abs(heights).max() < 0.06
    assert decode_angle_deg(hha[..., 2][inner]).max() < 1.5
    assert np.all(hha[~valid] == 0)
    far_row = int(np.flatnonzero(valid[:, 32])[0]) + 3
    assert hha[far_row, 32, 0] == round(255 * 2.0 / depth[far_row, 32])


def test_hha_side_wall_is_vertical():
    intrinsics = CameraIntrinsics.from_fov(64, 64, 90.0)
    # A wall 3 m to the right of a level camera: x_cam = 3 -> z = 3 * fx / (u - cx) for u > cx.
    u = np.arange(64) - intrinsics.cx
    depth = np.where(u > 0.5, 3.0 * intrinsics.fx / np.maximum(u, 1e-6), 0.0)
    depth = np.repeat(depth[None, :], 64, axis=0).astype(np.float32)
    hha = depth_to_hha(depth, intrinsics, level_camera(), camera_height_m=1.5)
    wall = hha[:, 40:63, 2]
    assert np.all(np.abs(decode_angle_deg(wall) - 90.0) < 1.0)


def test_hha_invalid_depth_is_zero_and_bad_inputs_raise():
    intrinsics = CameraIntrinsics.from_fov(8, 8, 90.0)
    depth = np.full((8, 8), 3.0, dtype=np.float32)
    depth[0, 0], depth[1, 1], depth[2, 2] = 0.0, np.nan, np.inf
    hha = depth_to_hha(depth, intrinsics, level_camera(), 1.5)
    assert np.all(hha[[0, 1, 2], [0, 1, 2]] == 0)
    with pytest.raises(ValueError, match="intrinsics"):
        depth_to_hha(np.ones((8, 9), np.float32), intrinsics, level_camera(), 1.5)
    with pytest.raises(ValueError, match="3x3"):
        depth_to_hha(depth, intrinsics, np.eye(4), 1.5)
    with pytest.raises(ValueError, match="metres"):
        depth_to_hha(np.ones((8, 8), np.uint16), intrinsics, level_camera(), 1.5)


# ----------------------------------------------------------------------------- depth PNG


def test_depth_png_codec_packs_carla_24_bit_in_rgb_order():
    step = 1000.0 / (256**3 - 1)
    depth = np.array([[step, 256 * step, 65536 * step, 0.0]], dtype=np.float64)
    encoded = encode_depth_png(depth)
    np.testing.assert_array_equal(encoded[0], [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])


def test_depth_png_codec_round_trip_and_invalid():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.1, 999.0, size=(16, 16)).astype(np.float32)
    depth[0, :3] = (0.0, np.nan, np.inf)
    decoded = decode_depth_png(encode_depth_png(depth))
    assert decoded.dtype == np.float32
    assert np.all(decoded[0, :3] == 0.0)
    quantum = 1000.0 / (256**3 - 1)
    np.testing.assert_allclose(decoded[1:], depth[1:], atol=quantum / 2 + 1e-4)  # + float32 rounding
    assert decode_depth_png(encode_depth_png(np.array([[5000.0]])))[0, 0] == pytest.approx(1000.0)
    with pytest.raises(ValueError):
        decode_depth_png(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        encode_depth_png(np.zeros((4, 4, 3)))


# ----------------------------------------------------------------------------- LiDAR


def lidar_rig(offset=(0.0, 0.0, 0.0)) -> tuple[CameraIntrinsics, np.ndarray]:
    """65x49 camera (cx = 32, cy = 24, fx = 32.5) looking along LiDAR x; LiDAR at ``offset`` (camera frame)."""
    intrinsics = CameraIntrinsics.from_fov(65, 49, 90.0)
    return intrinsics, make_transform(R_BODY_OPTICAL.T, offset)


def test_lidar_single_point_lands_on_expected_pixel():
    intrinsics, T_cam_lidar = lidar_rig()
    # 10 m ahead, 1 m left, 0.5 m up: camera (x, y, z) = (-1, -0.5, 10).
    image = lidar_to_image(np.array([[10.0, 1.0, 0.5, 0.5]]), intrinsics, T_cam_lidar, max_range_m=100.0)
    col = round(intrinsics.fx * -1.0 / 10.0 + intrinsics.cx)
    row = round(intrinsics.fy * -0.5 / 10.0 + intrinsics.cy)
    assert (row, col) == (22, 29)
    rng = math.sqrt(10.0**2 + 1.0 + 0.25)
    expected = [round(1 + 254 * (1 - rng / 100.0)), round(255 * 0.5), round(1 + 254 * (0.5 + 3.0) / 8.0)]
    np.testing.assert_array_equal(image[row, col], expected)
    assert np.count_nonzero(image.any(axis=2)) == 1


def test_lidar_nearest_point_wins_and_behind_is_dropped():
    intrinsics, T_cam_lidar = lidar_rig()
    points = np.array([[20.0, 0.0, 0.0, 0.9], [10.0, 0.0, 0.0, 0.2], [-5.0, 0.0, 0.0, 1.0]])
    image = lidar_to_image(points, intrinsics, T_cam_lidar)
    assert np.count_nonzero(image.any(axis=2)) == 1
    assert image[24, 32, 1] == round(0.2 * 255)
    assert image[24, 32, 0] == round(1 + 254 * 0.9)


def test_lidar_xyz_only_offset_mount_and_range_limit():
    # LiDAR 0.5 m above the camera (camera y is down).
    intrinsics, T_cam_lidar = lidar_rig(offset=(0.0, -0.5, 0.0))
    points = np.array([[10.0, 0.0, 0.5], [150.0, 0.0, 0.0]])
    image = lidar_to_image(points, intrinsics, T_cam_lidar, max_range_m=100.0)
    # (10, 0, 0.5) in the LiDAR frame -> camera (0, -1.0, 10) -> row 24 - 3.25 = 20.75 -> 21.
    assert np.count_nonzero(image.any(axis=2)) == 1
    assert image[21, 32, 1] == 0 and image[21, 32, 0] > 0
    _, v, z = project_points(points, intrinsics, T_cam_lidar)
    assert z[0] == pytest.approx(10.0) and v[0] == pytest.approx(24 - 32.5 * 0.1)


def test_lidar_bad_inputs_raise():
    intrinsics, T_cam_lidar = lidar_rig()
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        lidar_to_image(np.zeros((5, 2)), intrinsics, T_cam_lidar)
    with pytest.raises(ValueError, match="4x4"):
        lidar_to_image(np.zeros((5, 3)), intrinsics, np.eye(3))
    empty = lidar_to_image(np.zeros((0, 4)), intrinsics, T_cam_lidar)
    assert empty.shape == (49, 65, 3) and not empty.any()


# ----------------------------------------------------------------------------- events


def make_events(rows) -> np.ndarray:
    return np.array(rows, dtype=EVENT_DTYPE)


def test_events_counts_and_time_surface():
    events = make_events([
        (1, 0, 10.00, 1), (1, 0, 10.05, 1), (1, 0, 10.02, -1),   # pixel (x=1, y=0)
        (2, 1, 10.10, -1),                                        # last instant of the window
        (0, 1, 9.99, 1),                                          # before the window
        (5, 0, 10.05, 1),                                         # outside the sensor
    ])
    frame = events_to_frame(events, width=4, height=2, t_start=10.0, t_end=10.1, count_saturation=8)
    assert frame.shape == (2, 4, 3)
    np.testing.assert_array_equal(frame[0, 1], [round(2 * 255 / 8), round(255 / 8), round(1 + 254 * 0.5)])
    np.testing.assert_array_equal(frame[1, 2], [0, round(255 / 8), 255])
    assert not frame[1, 0].any()
    assert np.count_nonzero(frame.any(axis=2)) == 2


def test_events_saturate_and_bin_to_output_size():
    events = make_events([(3, 3, 0.5, 1)] * 20)
    frame = events_to_frame(events, 4, 4, 0.0, 1.0, count_saturation=8)
    assert frame[3, 3, 0] == 255
    upscaled = events_to_frame(events, 4, 4, 0.0, 1.0, output_size=(8, 8))
    assert upscaled.shape == (8, 8, 3) and upscaled[6, 6, 0] == 255 and np.count_nonzero(upscaled[..., 0]) == 1


def test_events_bad_inputs_raise():
    with pytest.raises(ValueError, match="fields"):
        events_to_frame(np.zeros((3, 4)), 4, 4, 0.0, 1.0)
    with pytest.raises(ValueError, match="t_end"):
        events_to_frame(make_events([]), 4, 4, 1.0, 0.0)
    assert not events_to_frame(make_events([]), 4, 4, 0.0, 1.0).any()

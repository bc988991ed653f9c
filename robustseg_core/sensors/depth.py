"""Depth encoders: HHA (the network's depth input) and CARLA/DELIVER's 24-bit raw-depth PNG.

``depth_m`` everywhere is planar depth in metres: the z coordinate of the surface point in the
camera optical frame (a ROS ``32FC1`` depth image), float32 [H, W]. Values that are 0, negative,
NaN or inf mean "no measurement".

HHA image (uint8 [H, W, 3], channel order as stored and fed to the network):

* channel 0, horizontal disparity: ``255 * clip(d0 / depth, 0, 1)`` with the reference distance
  ``d0 = HHA_DISPARITY_REFERENCE_M`` (2 m): surfaces at 2 m or closer are 255, 20 m is 25.5;
* channel 1, height above the ground plane: ``255 * (h - h_lo) / (h_hi - h_lo)`` clipped, with
  ``(h_lo, h_hi) = HHA_HEIGHT_RANGE_M`` = (-0.5 m, 15.5 m), i.e. 15.9 levels per metre, the
  ground (h = 0) at 8. The height is ``camera_height_m`` plus the world-z component of the
  back-projected point, using the gravity direction from ``R_world_cam``;
* channel 2, angle between the surface normal and "up": 0..180 degrees -> 0..255 (ground 0,
  walls ~128, ceilings 255). Normals are the cross product of the central differences of the
  back-projected point cloud along rows and columns (one-sided at image borders and next to
  invalid pixels), oriented towards the camera. A pixel without any valid neighbour gets 0.

Pixels with invalid depth have all three channels 0.

Raw-depth PNG (CARLA's depth camera, kept by DELIVER's ``depth/`` folder), uint8 [H, W, 3] in RGB
order: ``normalized = (R + 256 * G + 65536 * B) / (256**3 - 1)``, ``depth = 1000 m * normalized``,
so one step is 0.06 mm. Invalid depth encodes as 0 (decodes to 0 m); depth beyond 1000 m saturates.
"""

from __future__ import annotations

import numpy as np

from robustseg_core.sensors.camera import CameraIntrinsics, check_rotation

HHA_DISPARITY_REFERENCE_M = 2.0
HHA_HEIGHT_RANGE_M = (-0.5, 15.5)
DEPTH_PNG_MAX_M = 1000.0
_DEPTH_PNG_LEVELS = 256**3 - 1


def valid_depth_mask(depth_m: np.ndarray) -> np.ndarray:
    """True where ``depth_m`` is a finite positive measurement."""
    return np.isfinite(depth_m) & (depth_m > 0)


def back_project(depth_m: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Optical-frame points [H, W, 3] (metres, float32) of a planar depth image; invalid pixels give 0."""
    x, y, z, _ = _optical_coordinates(depth_m, intrinsics)
    return np.stack((x, y, z), axis=-1)


def _optical_coordinates(depth_m: np.ndarray, intrinsics: CameraIntrinsics
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, y, z [H, W] float32 of the back-projected pixels (0 where invalid) and the valid mask."""
    depth = _check_depth(depth_m, intrinsics)
    valid = valid_depth_mask(depth)
    z = np.where(valid, depth, 0.0).astype(np.float32)
    u = ((np.arange(intrinsics.width) - intrinsics.cx) / intrinsics.fx).astype(np.float32)[None, :]
    v = ((np.arange(intrinsics.height) - intrinsics.cy) / intrinsics.fy).astype(np.float32)[:, None]
    return z * u, z * v, z, valid


def depth_to_hha(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    R_world_cam: np.ndarray,
    camera_height_m: float,
    *,
    disparity_reference_m: float = HHA_DISPARITY_REFERENCE_M,
    height_range_m: tuple[float, float] = HHA_HEIGHT_RANGE_M,
) -> np.ndarray:
    """Planar depth [H, W] (metres) -> HHA image uint8 [H, W, 3] (see the module docstring).

    ``R_world_cam`` rotates optical-frame vectors into the z-up world frame; ``camera_height_m`` is
    the camera centre's height above the ground plane z = 0.
    """
    rotation = check_rotation(R_world_cam).astype(np.float32)
    if disparity_reference_m <= 0:
        raise ValueError(f"disparity_reference_m must be positive, got {disparity_reference_m}")
    height_lo, height_hi = height_range_m
    if not height_hi > height_lo:
        raise ValueError(f"height_range_m must be increasing, got {height_range_m}")
    x, y, z, valid = _optical_coordinates(depth_m, intrinsics)
    invalid = ~valid
    hha = np.empty(z.shape + (3,), dtype=np.uint8)
    # Each channel is computed in place in one float32 buffer, with the same operations (and so the same values)
    # as the plain expressions in the comments: fewer temporaries, fewer fresh pages per frame.
    channel = np.empty_like(z)

    # disparity = min(d0 / z, 1) * 255 (invalid pixels: d0 / inf = 0)
    np.divide(np.float32(disparity_reference_m), z, out=channel, where=valid)
    channel[invalid] = 0.0
    np.minimum(channel, 1.0, out=channel)
    channel *= np.float32(255.0)
    _store_channel(hha, 0, channel, invalid)

    # height = clip((h_cam + up . p - h_lo) * 255 / (h_hi - h_lo), 0, 255)
    up_x, up_y, up_z = rotation[2]  # world z of optical-frame vectors
    np.multiply(up_x, x, out=channel)
    channel += up_y * y
    channel += up_z * z
    np.add(np.float32(camera_height_m), channel, out=channel)
    channel -= np.float32(height_lo)
    channel *= np.float32(255.0 / (height_hi - height_lo))
    np.clip(channel, 0.0, 255.0, out=channel)
    _store_channel(hha, 1, channel, invalid)

    cols = _axis_derivatives((x, y, z), valid, axis=1)
    rows = _axis_derivatives((x, y, z), valid, axis=0)
    # normal = cols x rows, each component a * b - c * d
    normal_x, normal_y, normal_z = (cols[i] * rows[j] for i, j in ((1, 2), (2, 0), (0, 1)))
    normal_x -= cols[2] * rows[1]
    normal_y -= cols[0] * rows[2]
    normal_z -= cols[1] * rows[0]
    # Orient towards the camera: the normal must point against the viewing ray (n . p < 0).
    np.multiply(normal_x, x, out=channel)
    channel += normal_y * y
    channel += normal_z * z
    towards = np.where(channel > 0, np.float32(-1.0), np.float32(1.0))
    norm = np.multiply(normal_x, normal_x)
    norm += normal_y * normal_y
    norm += normal_z * normal_z
    np.sqrt(norm, out=norm)
    # angle = arccos(clip((up . n) * towards / |n|, -1, 1)) * 255 / pi, with cos 1 where |n| = 0
    np.multiply(up_x, normal_x, out=channel)
    channel += up_y * normal_y
    channel += up_z * normal_z
    channel *= towards
    has_normal = norm > 0
    norm[~has_normal] = 1.0
    channel /= norm
    channel[~has_normal] = 1.0
    np.clip(channel, -1.0, 1.0, out=channel)
    np.arccos(channel, out=channel)
    channel *= np.float32(255.0 / np.pi)
    _store_channel(hha, 2, channel, invalid)
    return hha


def _store_channel(hha: np.ndarray, index: int, values: np.ndarray, invalid: np.ndarray) -> None:
    """``hha[..., index] = rint(values)``, 0 where ``invalid`` (``values`` is overwritten)."""
    np.rint(values, out=values)
    values[invalid] = 0.0
    hha[..., index] = values


def _axis_derivatives(components: tuple[np.ndarray, ...], valid: np.ndarray, axis: int) -> list[np.ndarray]:
    """Derivatives of [H, W] arrays along ``axis``: central difference, one-sided where a neighbour
    is missing or invalid, 0 where both are."""
    if valid.shape[axis] < 2:
        return [np.zeros_like(c) for c in components]
    lower = (slice(None), slice(0, -1)) if axis == 1 else (slice(0, -1), slice(None))
    upper = (slice(None), slice(1, None)) if axis == 1 else (slice(1, None), slice(None))
    ok = (valid[upper] & valid[lower]).astype(np.float32)
    inverse = np.zeros(valid.shape, dtype=np.float32)
    inverse[lower] += ok
    inverse[upper] += ok
    np.maximum(inverse, 1.0, out=inverse)
    np.divide(1.0, inverse, out=inverse)
    step = np.empty_like(ok)
    derivatives = []
    for values in components:
        np.subtract(values[upper], values[lower], out=step)
        step *= ok
        derivative = np.zeros_like(values)
        derivative[lower] += step
        derivative[upper] += step
        derivative *= inverse
        derivatives.append(derivative)
    return derivatives


def encode_depth_png(depth_m: np.ndarray) -> np.ndarray:
    """Planar depth [H, W] (metres) -> CARLA 24-bit depth image uint8 [H, W, 3], RGB order.

    Invalid depth (0, negative, NaN, inf) encodes as 0; depth beyond 1000 m saturates at 1000 m.
    """
    depth = np.asarray(depth_m)
    if depth.ndim != 2:
        raise ValueError(f"depth_m must be [H, W], got shape {depth.shape}")
    depth = depth.astype(np.float64)
    valid = valid_depth_mask(depth)
    normalized = np.where(valid, np.minimum(depth, DEPTH_PNG_MAX_M), 0.0) / DEPTH_PNG_MAX_M
    code = np.rint(normalized * _DEPTH_PNG_LEVELS).astype(np.int64)
    encoded = np.empty(depth.shape + (3,), dtype=np.uint8)
    encoded[..., 0] = code & 0xFF
    encoded[..., 1] = (code >> 8) & 0xFF
    encoded[..., 2] = (code >> 16) & 0xFF
    return encoded


def decode_depth_png(rgb: np.ndarray) -> np.ndarray:
    """CARLA 24-bit depth image uint8 [H, W, 3 or 4] in RGB(A) order -> planar depth float32 [H, W] metres."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"expected a uint8 RGB(A) image [H, W, 3|4], got {rgb.dtype} {rgb.shape}")
    code = (rgb[..., 0].astype(np.int64) + (rgb[..., 1].astype(np.int64) << 8)
            + (rgb[..., 2].astype(np.int64) << 16))
    return (code * (DEPTH_PNG_MAX_M / _DEPTH_PNG_LEVELS)).astype(np.float32)


def _check_depth(depth_m: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    depth = np.asarray(depth_m)
    if depth.ndim != 2:
        raise ValueError(f"depth_m must be [H, W], got shape {depth.shape}")
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise ValueError(
            f"depth image is {depth.shape[1]}x{depth.shape[0]} but the intrinsics are for "
            f"{intrinsics.width}x{intrinsics.height}; rescale them with intrinsics.scaled()")
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth_m must be a float array in metres, got {depth.dtype}")
    return depth

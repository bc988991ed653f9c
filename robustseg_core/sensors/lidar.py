"""LiDAR scan -> the network's LiDAR image: points projected into the camera, one return per pixel.

Input: points [N, 3] (x, y, z) or [N, 4] (x, y, z, intensity) in metres in the LiDAR frame (x
forward, y left, z up), intensity in [0, 1] (values outside are clipped); ``T_cam_lidar`` (4x4)
maps LiDAR-frame points into the camera optical frame (x right, y down, z forward).

Projection: ``u = fx * x / z + cx`` rounded to the nearest pixel centre (see ``camera.py``). Only
points with camera depth ``z > min_depth_m`` (in front of the camera), landing inside the image,
with finite coordinates and with range ``0 < r <= max_range_m`` are kept. When several points
land on one pixel, the one nearest to the camera (smallest z) wins.

Output: uint8 [H, W, 3], sparse; pixels without a return are 0 in every channel:

* channel 0, range from the LiDAR origin: ``1 + 254 * (1 - r / max_range_m)`` (near = bright;
  255 at 0 m, 1 at ``max_range_m``), so every return is at least 1;
* channel 1, intensity: ``255 * clip(intensity, 0, 1)``; 0 for [N, 3] input;
* channel 2, height in the LiDAR frame: ``1 + 254 * (z - z_lo) / (z_hi - z_lo)`` clipped to 1..255
  with ``(z_lo, z_hi) = height_range_m`` (default -3 m .. +5 m around the sensor, 3.1 cm per
  level; with a roof LiDAR ~1.9 m up the road surface is ~35).
"""

from __future__ import annotations

import numpy as np

from robustseg_core.sensors.camera import CameraIntrinsics, check_transform

LIDAR_MAX_RANGE_M = 100.0
LIDAR_HEIGHT_RANGE_M = (-3.0, 5.0)
LIDAR_MIN_DEPTH_M = 0.1


def check_points(points: np.ndarray) -> np.ndarray:
    """Validate a point array [N, 3|4] and return it as float64."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] not in (3, 4):
        raise ValueError(f"points must be [N, 3] (x, y, z) or [N, 4] (x, y, z, intensity), got {points.shape}")
    if not (np.issubdtype(points.dtype, np.floating) or np.issubdtype(points.dtype, np.integer)):
        raise ValueError(f"points must be numeric, got {points.dtype}")
    return points.astype(np.float64, copy=False)


def project_points(
    points: np.ndarray, intrinsics: CameraIntrinsics, T_cam_lidar: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project LiDAR-frame points [N, 3|4] into the camera: (u [N], v [N], z [N]) float64.

    ``u``, ``v`` are continuous pixel coordinates, ``z`` the camera depth; points behind the
    camera (z <= 0) get u = v = NaN.
    """
    points = check_points(points)
    transform = check_transform(T_cam_lidar)
    xyz = points[:, :3] @ transform[:3, :3].T + transform[:3, 3]
    z = xyz[:, 2]
    in_front = z > 0
    safe_z = np.where(in_front, z, 1.0)
    u = np.where(in_front, intrinsics.fx * xyz[:, 0] / safe_z + intrinsics.cx, np.nan)
    v = np.where(in_front, intrinsics.fy * xyz[:, 1] / safe_z + intrinsics.cy, np.nan)
    return u, v, z


def lidar_to_image(
    points: np.ndarray,
    intrinsics: CameraIntrinsics,
    T_cam_lidar: np.ndarray,
    max_range_m: float = LIDAR_MAX_RANGE_M,
    *,
    height_range_m: tuple[float, float] = LIDAR_HEIGHT_RANGE_M,
    min_depth_m: float = LIDAR_MIN_DEPTH_M,
) -> np.ndarray:
    """LiDAR points [N, 3|4] (LiDAR frame, metres) -> sparse LiDAR image uint8 [H, W, 3] (module docstring)."""
    if max_range_m <= 0:
        raise ValueError(f"max_range_m must be positive, got {max_range_m}")
    z_lo, z_hi = height_range_m
    if not z_hi > z_lo:
        raise ValueError(f"height_range_m must be increasing, got {height_range_m}")
    points = check_points(points)
    width, height = intrinsics.width, intrinsics.height
    image = np.zeros((height, width, 3), dtype=np.uint8)
    if len(points) == 0:
        return image
    u, v, z = project_points(points, intrinsics, T_cam_lidar)
    col = np.floor(u + 0.5)
    row = np.floor(v + 0.5)
    with np.errstate(invalid="ignore"):
        in_image = (z > min_depth_m) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    # Ranges only of the points in the image; a non-finite coordinate gives a non-finite range, so the range test
    # also drops the points that are not finite.
    candidates = np.flatnonzero(in_image)
    xyz = points[candidates, :3]
    candidate_ranges = np.sqrt(np.einsum("ij,ij->i", xyz, xyz))
    with np.errstate(invalid="ignore"):
        in_range = (candidate_ranges > 0) & (candidate_ranges <= max_range_m)
    kept = candidates[in_range]
    if len(kept) == 0:
        return image
    pixel = (row[kept] * width + col[kept]).astype(np.int64)
    depth = z[kept]
    # Nearest point per pixel: sort by (pixel, depth) and keep the first of each pixel.
    order = np.lexsort((depth, pixel))
    pixel_sorted = pixel[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = pixel_sorted[1:] != pixel_sorted[:-1]
    winners = kept[order[first]]
    winner_pixels = pixel_sorted[first]
    ranges = candidate_ranges[in_range][order[first]]

    range_channel = 1.0 + 254.0 * (1.0 - ranges / max_range_m)
    if points.shape[1] == 4:
        intensity_channel = 255.0 * np.clip(np.nan_to_num(points[winners, 3]), 0.0, 1.0)
    else:
        intensity_channel = np.zeros(len(winners))
    height_channel = 1.0 + 254.0 * np.clip((points[winners, 2] - z_lo) / (z_hi - z_lo), 0.0, 1.0)
    flat = image.reshape(-1, 3)
    flat[winner_pixels, 0] = np.clip(np.rint(range_channel), 1, 255).astype(np.uint8)
    flat[winner_pixels, 1] = np.rint(intensity_channel).astype(np.uint8)
    flat[winner_pixels, 2] = np.rint(height_channel).astype(np.uint8)
    return image

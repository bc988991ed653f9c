"""Cheap per-message quality statistics of each sensor, on the arrays the encoders already take.

A sensor that keeps publishing can still lie: a blinded or dark camera, a depth sensor in rain, a
LiDAR shaken loose, an event camera flooded by flicker. These functions measure what such faults
change, vectorised and on a subsample (every ``stride``-th row and column of an image, at most
``max_points`` points of a cloud), so that all four together cost about a millisecond at 640 x 480.
They only measure; judging a value against the sensor's history and absolute bounds is the ROS
side's job (``robustseg_ros.degradation``). Every function returns ``{metric: float}``:

* ``camera_quality(rgb)``: ``saturated`` and ``black``, the fractions of pixels whose luma (BT.601,
  0..255) is at least ``SATURATED_LUMA`` or at most ``BLACK_LUMA``; ``contrast``, the standard
  deviation of the luma divided by 255; ``noise``, the luma's noise standard deviation in grey
  levels by Immerkaer's estimator (the mean absolute response of a 3 x 3 operator that cancels
  planes and first-order edges, times sqrt(pi / 2) / 6).
* ``depth_quality(depth_m)``: ``valid``, the fraction of pixels with a measurement (finite, > 0);
  ``roughness``, the fraction of horizontally adjacent valid pixel pairs whose depths differ by more
  than ``DEPTH_STEP_FRACTION`` of the nearer one (edges give a small steady share, noise a large one).
* ``lidar_quality(points)``: only returns count, that is finite points at a range > 0 (organised clouds
  mark "no return" with NaN or 0, 0, 0): ``points``, the number of returns; ``coverage``, the fraction of the
  ``LIDAR_CELLS`` (azimuth x elevation cells of the sensor frame, x forward, z up) holding a return;
  ``range_noise``, metres: the median absolute second difference of the range along the cloud's
  order, divided by sqrt(6) x 0.6745, which is the range noise sigma for returns stored in scan order
  (consecutive points are azimuth neighbours on one beam, as spinning-LiDAR drivers publish them).
* ``event_quality(count, period_s)``: ``rate``, events per second of a packet covering ``period_s``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

SATURATED_LUMA = 250
BLACK_LUMA = 10
DEPTH_STEP_FRACTION = 0.05
#: Azimuth sectors (360 deg) x elevation bands (-45..+45 deg) of the LiDAR coverage grid.
LIDAR_CELLS = (36, 18)
LIDAR_ELEVATION_RANGE_RAD = (-math.pi / 4, math.pi / 4)
#: At most this many points (evenly spaced in the cloud's order) enter the coverage estimate, and this many
#: second differences the noise estimate.
LIDAR_SAMPLE_POINTS = 8_192
LIDAR_NOISE_SAMPLES = 2_048
#: Immerkaer's operator: zero response to constant, linear and separable-quadratic luma.
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
#: Median absolute value of a second difference of white noise of sigma 1: sqrt(6) x Phi^-1(0.75).
_SECOND_DIFFERENCE_MAD = math.sqrt(6.0) * 0.6745


def _subsample(image: np.ndarray, stride: int) -> np.ndarray:
    """Every ``stride``-th row and column of an image, as a contiguous array (OpenCV's nearest-neighbour resize
    picks exactly those pixels, much faster than a strided numpy copy)."""
    if stride == 1:
        return np.ascontiguousarray(image)
    height, width = image.shape[:2]
    size = (-(-width // stride), -(-height // stride))
    if image.dtype == np.float64 or not image.flags.c_contiguous:
        return np.ascontiguousarray(image[::stride, ::stride])
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)


def camera_quality(rgb: np.ndarray, *, stride: int = 2) -> dict[str, float]:
    """Saturated and black fractions, contrast and noise (module docstring) of uint8 [H, W, 3] RGB or [H, W]
    grey, from every ``stride``-th row and column."""
    image = np.asarray(rgb)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"camera_quality needs uint8 [H, W, 3] or [H, W], got {image.dtype} {image.shape}")
    sample = _subsample(image, stride)
    luma = cv2.cvtColor(sample, cv2.COLOR_RGB2GRAY) if sample.ndim == 3 else sample
    pixels = luma.size
    histogram = cv2.calcHist([luma], [0], None, [256], [0, 256]).reshape(-1).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    mean = float(histogram @ levels) / pixels
    variance = max(float(histogram @ (levels * levels)) / pixels - mean * mean, 0.0)
    noise = 0.0
    if min(luma.shape) >= 3:
        response = cv2.filter2D(luma, cv2.CV_16S, _NOISE_KERNEL)[1:-1, 1:-1]
        noise = cv2.norm(response, cv2.NORM_L1) / response.size * math.sqrt(math.pi / 2.0) / 6.0
    return {
        "saturated": float(histogram[SATURATED_LUMA:].sum()) / pixels,
        "black": float(histogram[: BLACK_LUMA + 1].sum()) / pixels,
        "contrast": math.sqrt(variance) / 255.0,
        "noise": noise,
    }


def depth_quality(depth_m: np.ndarray, *, stride: int = 2) -> dict[str, float]:
    """Valid fraction and roughness (module docstring) of planar depth float32 [H, W] in metres (0, negative,
    NaN, inf: no measurement), from every ``stride``-th row and column."""
    depth = np.asarray(depth_m)
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth_quality needs float metres [H, W], got {depth.dtype} {depth.shape}")
    sample = _subsample(depth, stride)
    with np.errstate(invalid="ignore"):
        valid = (sample > 0) & (sample < np.inf)  # NaN compares False
        left, right = sample[:, :-1], sample[:, 1:]
        pairs = valid[:, :-1] & valid[:, 1:]
        pair_count = int(np.count_nonzero(pairs))
        step = np.abs(left - right) > np.float32(DEPTH_STEP_FRACTION) * np.minimum(left, right)
    roughness = int(np.count_nonzero(step & pairs)) / pair_count if pair_count else 0.0
    return {"valid": int(np.count_nonzero(valid)) / max(valid.size, 1), "roughness": roughness}


def lidar_quality(points: np.ndarray) -> dict[str, float]:
    """Point count, coverage and range noise (module docstring) of LiDAR points [N, 3|4] in the sensor frame
    (metres), in the order the driver published them. Only returns are measured: points with a non-finite
    coordinate or at the origin (range 0; organised clouds mark "no return" with NaN or 0, 0, 0) are left
    out before counting, the others keep their order."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"lidar_quality needs points [N, 3|4], got {points.shape}")
    xyz = points[:, :3]
    returns = np.isfinite(xyz).all(axis=1) & xyz.any(axis=1)  # finite and not the origin
    if not returns.all():
        points = points[returns]
    count = len(points)
    if count == 0:
        return {"points": 0.0, "coverage": 0.0, "range_noise": 0.0}
    sample = points[:: max(1, -(-count // LIDAR_SAMPLE_POINTS))]
    x, y, z = sample[:, 0], sample[:, 1], sample[:, 2]
    horizontal = np.hypot(x, y)
    sectors, bands = LIDAR_CELLS
    low, high = LIDAR_ELEVATION_RANGE_RAD
    sector = ((np.arctan2(y, x) + np.float32(math.pi)) * np.float32(sectors / (2 * math.pi))).astype(np.int64)
    band = ((np.arctan2(z, horizontal) - np.float32(low)) * np.float32(bands / (high - low))).astype(np.int64)
    inside = (band >= 0) & (band < bands)
    cells = np.minimum(sector[inside], sectors - 1) * bands + band[inside]
    coverage = np.count_nonzero(np.bincount(cells, minlength=sectors * bands)) / (sectors * bands)
    noise = 0.0
    if count >= 3:
        centre = np.arange(1, count - 1, max(1, -(-count // LIDAR_NOISE_SAMPLES)))
        previous, current, following = (_ranges(points, index) for index in (centre - 1, centre, centre + 1))
        noise = float(np.median(np.abs(following - 2.0 * current + previous))) / _SECOND_DIFFERENCE_MAD
    return {"points": float(count), "coverage": float(coverage), "range_noise": noise}


def _ranges(points: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Distance (m) from the sensor origin of the points [N, 3|4] at ``index``, gathered column by column."""
    x, y, z = (points[index, column].astype(np.float64) for column in range(3))
    return np.sqrt(x * x + y * y + z * z)


def event_quality(count: int, period_s: float) -> dict[str, float]:
    """Event rate (events/s) of a packet of ``count`` events covering ``period_s`` seconds."""
    if not period_s > 0:
        raise ValueError(f"period_s must be > 0, got {period_s}")
    return {"rate": count / period_s}

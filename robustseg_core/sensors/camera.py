"""Pinhole camera intrinsics, frame conventions, rotations (matrices and quaternions) and 4x4 rigid transforms.

Frame conventions (used by every sensor encoder and by the scene generator):

* camera optical frame: x right, y down, z forward (ROS ``*_optical_frame``, REP 103);
* world frame: x forward, y left, z up, ground plane z = 0 (REP 103);
* vehicle / LiDAR frame: x forward, y left, z up.

Pixel convention: pixel (u, v) = (column, row) has its centre at integer coordinates, so a camera
point (x, y, z) lands on ``u = fx * x / z + cx``, ``v = fy * y / z + cy`` and the image spans
``[-0.5, width - 0.5]`` (OpenCV / ROS ``CameraInfo`` convention).

Transforms are named ``T_target_source``: ``p_target = T_target_source @ p_source`` for homogeneous
points; rotations likewise ``R_target_source``. Quaternions are ``(x, y, z, w)`` as in ROS messages
(``geometry_msgs/Quaternion``, tf2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Rotation taking optical-frame vectors (x right, y down, z forward) into a body frame with
#: x forward, y left, z up: ``v_body = R_BODY_OPTICAL @ v_optical``.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels for an image of ``width`` x ``height`` pixels."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float) -> CameraIntrinsics:
        """Square-pixel camera with horizontal field of view ``hfov_deg`` and a centred principal point."""
        if not 0.0 < hfov_deg < 180.0:
            raise ValueError(f"hfov_deg must be in (0, 180), got {hfov_deg}")
        focal = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(int(width), int(height), focal, focal, (width - 1) / 2.0, (height - 1) / 2.0)

    def scaled(self, width: int, height: int) -> CameraIntrinsics:
        """The same camera resampled to ``width`` x ``height`` (pixel-centre convention kept)."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(
            int(width), int(height), self.fx * sx, self.fy * sy,
            (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
        )

    def for_image(self, width: int, height: int, aspect_tolerance: float = 0.01) -> CameraIntrinsics:
        """These intrinsics for an image of ``width`` x ``height``: themselves, or rescaled when the image is this
        camera's binned or resized (same aspect ratio within ``aspect_tolerance``, relative); ``ValueError``
        otherwise (a crop, or another camera)."""
        if (width, height) == (self.width, self.height):
            return self
        if abs(self.width * height / (self.height * width) - 1.0) > aspect_tolerance:
            raise ValueError(f"intrinsics of a {self.width}x{self.height} image do not fit a {width}x{height} image "
                             "(another aspect ratio: not a rescaled image of that camera)")
        return self.scaled(width, height)

    @property
    def matrix(self) -> np.ndarray:
        """3x3 camera matrix K (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def hfov_deg(self) -> float:
        """Horizontal field of view in degrees."""
        return math.degrees(2.0 * math.atan(self.width / (2.0 * self.fx)))

    def pixel_rays(self) -> np.ndarray:
        """Unnormalised optical-frame ray directions through every pixel centre, [H, W, 3] (z = 1)."""
        u = (np.arange(self.width, dtype=np.float64) - self.cx) / self.fx
        v = (np.arange(self.height, dtype=np.float64) - self.cy) / self.fy
        rays = np.ones((self.height, self.width, 3))
        rays[..., 0] = u[None, :]
        rays[..., 1] = v[:, None]
        return rays


def rotation_x(angle_rad: float) -> np.ndarray:
    """3x3 rotation about x by ``angle_rad`` (right-handed)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rotation_y(angle_rad: float) -> np.ndarray:
    """3x3 rotation about y by ``angle_rad`` (right-handed)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_z(angle_rad: float) -> np.ndarray:
    """3x3 rotation about z by ``angle_rad`` (right-handed)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_rpy(roll_rad: float, pitch_rad: float, yaw_rad: float) -> np.ndarray:
    """Body rotation from roll (x), pitch (y), yaw (z): ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``.

    In a z-up frame a positive pitch tilts the x (forward) axis down.
    """
    return rotation_z(yaw_rad) @ rotation_y(pitch_rad) @ rotation_x(roll_rad)


def quaternion_to_rotation(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """Quaternion (x, y, z, w; normalised here) -> 3x3 rotation matrix (float64).

    Raises ``ValueError`` for a quaternion of (near) zero or non-finite norm.
    """
    norm = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    if not norm > 1e-9 or not math.isfinite(norm):
        raise ValueError(f"quaternion ({qx}, {qy}, {qz}, {qw}) has no direction (norm {norm})")
    x, y, z, w = qx / norm, qy / norm, qz / norm, qw / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rotation_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """3x3 rotation matrix -> unit quaternion (x, y, z, w), the inverse of ``quaternion_to_rotation``
    up to the sign of the quaternion (branch on the largest diagonal term for accuracy)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    return x / norm, y / norm, z / norm, w / norm


def make_transform(rotation: np.ndarray, translation: np.ndarray | tuple[float, float, float]) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 rotation and a translation (metres)."""
    rotation = np.asarray(rotation, dtype=np.float64)
    if rotation.shape != (3, 3):
        raise ValueError(f"rotation must be 3x3, got {rotation.shape}")
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return transform


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform (rotation transposed, translation rotated back)."""
    transform = check_transform(transform)
    rotation_t = transform[:3, :3].T
    return make_transform(rotation_t, -rotation_t @ transform[:3, 3])


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to points [N, 3] (float64 result)."""
    transform = check_transform(transform)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be [N, 3], got {points.shape}")
    return points @ transform[:3, :3].T + transform[:3, 3]


def check_transform(transform: np.ndarray) -> np.ndarray:
    """Validate a 4x4 rigid transform and return it as float64."""
    transform = np.asarray(transform, dtype=np.float64)
    if transform.shape != (4, 4):
        raise ValueError(f"transform must be 4x4, got {transform.shape}")
    if not np.allclose(transform[3], (0.0, 0.0, 0.0, 1.0)):
        raise ValueError("transform's last row must be [0, 0, 0, 1]")
    if not np.allclose(transform[:3, :3] @ transform[:3, :3].T, np.eye(3), atol=1e-6):
        raise ValueError("transform's rotation block is not orthonormal")
    return transform


def check_rotation(rotation: np.ndarray) -> np.ndarray:
    """Validate a 3x3 rotation matrix and return it as float64."""
    rotation = np.asarray(rotation, dtype=np.float64)
    if rotation.shape != (3, 3):
        raise ValueError(f"rotation must be 3x3, got {rotation.shape}")
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6):
        raise ValueError("rotation matrix is not orthonormal")
    return rotation

"""Raw sensor data -> the network's 3-channel uint8 images (one code path for simulator, writer and node).

Inputs are real-world quantities (metres, seconds, points in the sensor frame); outputs are uint8
[H, W, 3] images that ``normalization.preprocess_stack`` turns into network input. Each module's
docstring documents its units, ranges and channel layout.
"""

from __future__ import annotations

from robustseg_core.sensors.camera import (
    R_BODY_OPTICAL,
    CameraIntrinsics,
    invert_transform,
    make_transform,
    quaternion_to_rotation,
    rotation_rpy,
    rotation_to_quaternion,
    rotation_x,
    rotation_y,
    rotation_z,
    transform_points,
)
from robustseg_core.sensors.depth import (
    HHA_DISPARITY_REFERENCE_M,
    HHA_HEIGHT_RANGE_M,
    back_project,
    decode_depth_png,
    depth_to_hha,
    encode_depth_png,
)
from robustseg_core.sensors.events import EVENT_COUNT_SATURATION, EVENT_DTYPE, empty_events, events_to_frame
from robustseg_core.sensors.lidar import LIDAR_HEIGHT_RANGE_M, LIDAR_MAX_RANGE_M, lidar_to_image, project_points

__all__ = [
    "EVENT_COUNT_SATURATION",
    "EVENT_DTYPE",
    "HHA_DISPARITY_REFERENCE_M",
    "HHA_HEIGHT_RANGE_M",
    "LIDAR_HEIGHT_RANGE_M",
    "LIDAR_MAX_RANGE_M",
    "R_BODY_OPTICAL",
    "CameraIntrinsics",
    "back_project",
    "decode_depth_png",
    "depth_to_hha",
    "empty_events",
    "encode_depth_png",
    "events_to_frame",
    "invert_transform",
    "lidar_to_image",
    "make_transform",
    "project_points",
    "quaternion_to_rotation",
    "rotation_rpy",
    "rotation_to_quaternion",
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "transform_points",
]

"""Encoding a frame's sensor payloads into the network's input images: which modalities are fed, and each one's
image.

Uses the one implementation of each sensor encoding in ``robustseg_core.sensors`` (the generator and the
data set use the same): ``depth_to_hha``, ``lidar_to_image`` and ``events_to_frame``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np

from robustseg_core.classes import MODALITIES
from robustseg_core.data.transforms import resize_nearest
from robustseg_core.sensors import depth_to_hha, events_to_frame, lidar_to_image
from robustseg_ros.frames import FrameJob, SensorPayload
from robustseg_ros.health import SensorState
from robustseg_ros.params import PerceptionParams

NO_CAMERA_INFO = "no CameraInfo received yet (needed for depth and LiDAR)"


class MissingGeometry(RuntimeError):
    """A modality cannot be encoded because the camera geometry (CameraInfo) is unknown."""


def encode_modality(modality: str, payload: SensorPayload, job: FrameJob, params: PerceptionParams) -> np.ndarray:
    """One modality of a frame as the network's uint8 [H, W, 3] image at the camera's resolution ``job.size``:
    the camera image as is; events accumulated over the frame's window (or an event image resized); depth
    as HHA and LiDAR projected, both with the frame's camera intrinsics. ``ValueError`` when the message
    holds nothing to encode (no event in the window, no LiDAR point in view), ``MissingGeometry`` when depth
    or LiDAR cannot be placed in the image."""
    height, width = job.size
    if modality == "rgb":
        return payload.data
    if modality == "event":
        if params["events.input_type"] == "image":
            return resize_nearest(payload.data, width, height)
        sensor_width, sensor_height = job.event_sensor_size or (width, height)
        if len(job.events) == 0:
            raise ValueError(f"no event in the window {job.event_window[0]:.3f}-{job.event_window[1]:.3f} s")
        frame = events_to_frame(job.events, sensor_width, sensor_height, *job.event_window)
        if not frame.any():
            raise ValueError(
                f"none of the {len(job.events)} events lies inside the {sensor_width}x{sensor_height} sensor and the "
                f"window {job.event_window[0]:.3f}-{job.event_window[1]:.3f} s (check events.sensor_width/height "
                "and that event times are in seconds of the message clock)")
        return resize_nearest(frame, width, height)
    if job.intrinsics is None:
        raise MissingGeometry(job.geometry_problem or NO_CAMERA_INFO)
    if modality == "depth":
        depth = payload.data
        depth = resize_nearest(depth, width, height)  # a size mismatch was counted when the frame was built
        return depth_to_hha(depth, job.intrinsics, params.R_world_cam, params["camera.height_m"])
    image = lidar_to_image(payload.data, job.intrinsics, payload.T_cam_lidar, params["lidar.max_range_m"])
    if len(payload.data) and not image.any():
        raise ValueError(f"none of the {len(payload.data)} LiDAR points projects into the camera image within "
                         f"{params['lidar.max_range_m']:g} m (check lidar.transform)")
    return image


def encode_frame(job: FrameJob, params: PerceptionParams, model_modalities: Sequence[str],
                 fuse_degraded: Collection[str] = (), on_error: Callable[[str, Exception], None] = lambda *_: None
                 ) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, str]]:
    """The frame's present modalities as the network's uint8 [H, W, 3] images at camera resolution, the reason
    for each absent modality, and notes on fed ones. A DEGRADED modality is left out unless in
    ``fuse_degraded``, or unless nothing else could be encoded (then it is fused, with a note). A modality that
    cannot be encoded is absent with "not encoded: ..." and passed to ``on_error(modality, error)``."""
    reasons = dict(job.frame.reasons)
    encoded: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    held_back: list[str] = []

    def encode_into(modality: str, payload: SensorPayload) -> None:
        try:
            encoded[modality] = encode_modality(modality, payload, job, params)
        except (ValueError, MissingGeometry) as error:
            reasons[modality] = f"not encoded: {error}"
            on_error(modality, error)

    for modality in MODALITIES:
        payload = job.frame.payload(modality)
        if payload is None:
            if modality not in model_modalities:
                reasons[modality] = "disabled: not an input of the model"
            continue
        status = job.statuses.get(modality)
        if status is not None and status.state is SensorState.DEGRADED:
            if modality not in fuse_degraded:
                reasons[modality] = f"{status.message} (not fused: not in health.fuse_degraded)"
                held_back.append(modality)
                continue
            notes[modality] = f"{status.message} (fused: in health.fuse_degraded)"
        encode_into(modality, payload)
    if not encoded:
        for modality in held_back:
            notes[modality] = f"{reasons.pop(modality).split(' (not fused')[0]} (fused: no other input left)"
            encode_into(modality, job.frame.payload(modality))
    return encoded, reasons, notes

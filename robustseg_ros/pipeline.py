"""The perception node's logic without rclpy.Node plumbing: messages in, frames and diagnostics out.

``PerceptionPipeline`` is fed ``(message, now)`` pairs, ``now`` being the node clock in seconds
(``node.get_clock()``, so ``use_sim_time`` replay behaves like a live run). It converts each
message (``robustseg_ros.conversions``), records the sensor's health (``robustseg_ros.health``),
caches it in the synchroniser (``robustseg_ros.sync``) and returns a ``FrameJob`` when a frame is
due: at once for a camera image, from ``on_timer`` when the camera is silent. ``process(job)``
encodes the frame's modalities with the ``robustseg_core.sensors`` encoders at the camera's
resolution and runs ``Segmenter.predict``. The live node and an offline bag evaluator drive the
same object in timestamp order, so they see the same frames.

A malformed message never raises: its ``MessageError`` is counted per kind in the sensor's health
(shown as WARN "malformed ..." for ``health.anomaly_hold_s``) and logged once per kind.

Sensors and the model modality each feeds (model order ``rgb, depth, event, lidar``):
``camera -> rgb``, ``depth -> depth``, ``events -> event``, ``lidar -> lidar``. Parameters are named
``<sensor>.<setting>`` (``PARAMETERS``); ``PerceptionParams`` holds their values.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from robustseg_core.classes import MODALITIES, colorize
from robustseg_core.models import MISSING_CONVENTIONS
from robustseg_core.sensors import (
    EVENT_DTYPE,
    R_BODY_OPTICAL,
    CameraIntrinsics,
    depth_to_hha,
    events_to_frame,
    lidar_to_image,
    make_transform,
    rotation_rpy,
)
from robustseg_core.sensors.camera import check_transform
from robustseg_ros.conversions import (
    MessageError,
    camera_image_to_rgb,
    camera_info_to_intrinsics,
    depth_image_to_metres,
    pointcloud2_to_events,
    pointcloud2_to_xyzi,
    seconds_to_stamp,
    stamp_to_seconds,
)
from robustseg_ros.health import (
    DIAGNOSTIC_ERROR,
    DIAGNOSTIC_OK,
    DIAGNOSTIC_STALE,
    DIAGNOSTIC_WARN,
    FUTURE_STAMP,
    ZERO_STAMP,
    HealthConfig,
    HealthMonitor,
    HealthStatus,
    SensorState,
    excluded_modalities,
    payload_digest,
)
from robustseg_ros.sync import FrameSynchronizer, ModalitySyncConfig, SyncedFrame

SENSORS: tuple[str, ...] = ("camera", "depth", "events", "lidar")
MODALITY_OF_SENSOR: dict[str, str] = {"camera": "rgb", "depth": "depth", "events": "event", "lidar": "lidar"}
SENSOR_OF_MODALITY: dict[str, str] = {modality: sensor for sensor, modality in MODALITY_OF_SENSOR.items()}
QOS_CHOICES: tuple[str, ...] = ("sensor_data", "reliable")
EVENT_INPUT_TYPES: tuple[str, ...] = ("packets", "image")
PACKAGED_CHECKPOINT = ("models", "robustseg_student.pt")
DIAGNOSTIC_PREFIX = "robustseg: "
#: A node clock that goes back by more than this (s) is a restarted replay: caches and health restart.
CLOCK_JUMP_BACK_S = 1.0
#: Recent frames kept for the latency and stage-time statistics on /diagnostics.
STATISTICS_WINDOW = 100
#: T_cam_lidar for a LiDAR at the camera's origin with REP 103 body axes (x forward, y left, z up):
#: translation (0, 0, 0) and the quaternion (x, y, z, w) rotating body axes into the optical frame.
CO_LOCATED_LIDAR_TRANSFORM = (0.0, 0.0, 0.0, 0.5, -0.5, 0.5, 0.5)

LidarExtrinsicLookup = Callable[[str, str, float], np.ndarray]


# --------------------------------------------------------------------------------------------
# parameters


@dataclass(frozen=True)
class ParameterSpec:
    """One ROS parameter of the node: dotted name, default (its type is the parameter's type), description."""

    name: str
    default: bool | int | float | str | tuple
    description: str


def _input_specs(sensor: str, topic: str, rate_hz: float, tolerance_s: float | None, what: str) -> list[ParameterSpec]:
    specs = [
        ParameterSpec(f"{sensor}.enabled", True, f"Subscribe to the {what} and feed it to the model."),
        ParameterSpec(f"{sensor}.topic", topic,
                      f"Topic of the {what} (relative names resolve in the node's namespace)."),
        ParameterSpec(f"{sensor}.qos", "sensor_data",
                      "Subscription QoS: sensor_data (best effort, keep last 5; accepts reliable and best-effort "
                      "publishers) or reliable (keep last 5; receives nothing from best-effort publishers)."),
        ParameterSpec(f"{sensor}.expected_rate_hz", rate_hz,
                      f"Nominal rate of the {what} (Hz): late / low-rate warnings are measured against it."),
    ]
    if tolerance_s is not None:
        specs.append(ParameterSpec(f"{sensor}.tolerance_s", tolerance_s,
                                   f"Largest |stamp difference| (s) between a {what} message and the frame it joins."))
    specs += [
        ParameterSpec(f"{sensor}.max_age_s", 0.5,
                      f"A {what} message older than this (s, node clock minus stamp) never joins a frame, and the "
                      "sensor is STALE when nothing arrived, or the newest stamp is, this old."),
        ParameterSpec(f"{sensor}.dead_after_s", 5.0, f"The {what} is DEAD (diagnostic ERROR) after this long (s) "
                                                     "without a message."),
    ]
    return specs


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("checkpoint", "", "RobustSeg checkpoint (.pt); empty: the student shipped in the package "
                                    "(robustseg_ros/models/robustseg_student.pt)."),
    ParameterSpec("device", "auto", "Torch device: auto (CUDA when available, else CPU), cpu, cuda or cuda:N."),
    ParameterSpec("fp16", True, "Half precision when the device is CUDA (ignored on CPU)."),
    ParameterSpec("short_side", 0, "Network input short side (px; both sides rounded up to multiples of 32); "
                                   "0: the checkpoint's data.eval_size."),
    ParameterSpec("missing_convention", "drop", "How absent modalities reach the model: drop (left out of the "
                                                "fusion) or zero (zero images, encoded and averaged in)."),
    ParameterSpec("warmup_iterations", 2, "Dummy all-modality frames run at start-up, before subscribing; 0: none."),
    ParameterSpec("warmup_width", 640, "Image width (px) of the warm-up frames (use the camera's)."),
    ParameterSpec("warmup_height", 480, "Image height (px) of the warm-up frames (use the camera's)."),
    *_input_specs("camera", "camera/image", 10.0, None, "camera image"),
    ParameterSpec("camera.info_topic", "camera/camera_info",
                  "CameraInfo of the camera image (intrinsics for depth and LiDAR, frame_id for timer frames); "
                  "same QoS as camera.qos."),
    ParameterSpec("camera.height_m", 1.6, "Height (m) of the camera's optical centre above the ground (HHA depth "
                                          "encoding)."),
    ParameterSpec("camera.roll_deg", 0.0, "Camera roll (deg) about the forward axis relative to level ground "
                                          "(HHA depth encoding)."),
    ParameterSpec("camera.pitch_deg", 0.0, "Camera pitch (deg) relative to level ground, positive looking down "
                                           "(HHA depth encoding)."),
    *_input_specs("depth", "depth/image", 10.0, 0.05, "depth image"),
    *_input_specs("events", "events/packets", 10.0, 0.05, "event stream"),
    ParameterSpec("events.input_type", "packets",
                  "packets: PointCloud2 event packets (x, y, t, polarity) accumulated over events.window_s; "
                  "image: an already-rendered event-frame Image (rgb8, bgr8, rgba8, bgra8, mono8)."),
    ParameterSpec("events.window_s", 0.1, "Event accumulation window (s) ending at the frame stamp (packets only)."),
    ParameterSpec("events.sensor_width", 0, "Event sensor width (px); 0: the camera's. Frames are resized to the "
                                            "camera's size by nearest neighbour."),
    ParameterSpec("events.sensor_height", 0, "Event sensor height (px); 0: the camera's."),
    *_input_specs("lidar", "lidar/points", 10.0, 0.06, "LiDAR point cloud"),
    ParameterSpec("lidar.intensity_field", "intensity", "PointCloud2 field read as intensity (0 when absent)."),
    ParameterSpec("lidar.intensity_scale", 1.0, "Factor bringing intensity into [0, 1] (e.g. 0.00392157 = 1/255 for "
                                                "a driver reporting 0..255)."),
    ParameterSpec("lidar.max_range_m", 100.0, "LiDAR range (m) mapped to the darkest range value; farther points "
                                              "are dropped (training used 100)."),
    ParameterSpec("lidar.transform", CO_LOCATED_LIDAR_TRANSFORM,
                  "T_cam_lidar, LiDAR frame -> camera optical frame: [x, y, z, qx, qy, qz, qw] (the LiDAR origin "
                  "in the optical frame, m, and a unit quaternion) or 16 values of a row-major 4x4 matrix. "
                  "Default: co-located sensors, LiDAR axes x forward, y left, z up."),
    ParameterSpec("lidar.use_tf", False, "Look T_cam_lidar up with tf2 (cloud frame_id -> camera frame) when tf2_ros "
                                         "is installed, instead of lidar.transform."),
    ParameterSpec("lidar.camera_frame", "", "Target frame of the tf2 lookup; empty: the CameraInfo's frame_id."),
    ParameterSpec("sync.cache_size", 8, "Messages cached per input for synchronisation."),
    ParameterSpec("sync.camera_wait_s", 0.05,
                  "Longest wait (s) of a camera image for the other sensors' messages stamped within their tolerance "
                  "of it, when such a message is due by their expected rate (messages of one instant arrive in any "
                  "order); it ends as soon as they are in. 0: segment at once."),
    ParameterSpec("health.check_period_s", 0.05, "Period (s) of the health check that also drives frames while the "
                                                 "camera is silent; a state change is on /diagnostics within it."),
    ParameterSpec("health.diagnostics_period_s", 1.0, "Period (s) of /diagnostics when no state changes."),
    ParameterSpec("health.warn_after_periods", 3.0, "WARN late when the last message is older than this many "
                                                    "expected periods."),
    ParameterSpec("health.rate_window_s", 2.0, "Window (s) over which the arrival rate is measured."),
    ParameterSpec("health.min_rate_fraction", 0.5, "WARN low rate below this fraction of expected_rate_hz."),
    ParameterSpec("health.frozen_warn_repeats", 3, "WARN frozen after this many identical payloads in a row."),
    ParameterSpec("health.frozen_stale_repeats", 10, "STALE frozen (no longer fused) after this many identical "
                                                     "payloads in a row."),
    ParameterSpec("health.future_tolerance_s", 0.2, "A stamp later than arrival + this (s) is a future-stamp anomaly; "
                                                    "such messages are not fused."),
    ParameterSpec("health.anomaly_hold_s", 2.0, "Stamp anomalies and malformed messages keep the sensor at WARN this "
                                                "long (s)."),
    ParameterSpec("output.overlay_alpha", 0.5, "Weight of the colour mask in ~/overlay (0..1)."),
    ParameterSpec("output.confidence_threshold", 0.0, "Pixels whose confidence is below this become 255 (unknown) "
                                                      "in ~/segmentation; 0: off."),
)
PARAMETER_DEFAULTS: dict[str, Any] = {spec.name: spec.default for spec in PARAMETERS}


def flatten_parameters(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A parameter file's nested ``ros__parameters`` mapping -> ``{dotted name: value}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_parameters(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def nest_parameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{dotted name: value}`` -> the nested mapping a parameter file holds (inverse of ``flatten_parameters``)."""
    nested: dict[str, Any] = {}
    for name, value in values.items():
        *sections, key = name.split(".")
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
        target[key] = value
    return nested


@dataclass(frozen=True)
class InputParams:
    """One sensor input: its topic, QoS and the sync and health settings derived from its parameters."""

    sensor: str
    modality: str
    enabled: bool
    topic: str
    qos: str
    sync: ModalitySyncConfig
    health: HealthConfig


class PerceptionParams:
    """Validated parameter values: ``params["lidar.max_range_m"]``, plus ``inputs`` and ``T_cam_lidar``.

    Build with ``PerceptionParams(values)``; names missing from ``values`` take their defaults, unknown
    names and invalid values raise ``ValueError`` naming the parameter.
    """

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        values = dict(values or {})
        unknown = sorted(set(values) - set(PARAMETER_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}")
        self.values: dict[str, Any] = {**PARAMETER_DEFAULTS, **values}
        self._validate()
        self.inputs: dict[str, InputParams] = {sensor: self._input(sensor) for sensor in SENSORS}
        self.T_cam_lidar = transform_from_parameter(self.values["lidar.transform"])
        self.R_world_cam = (rotation_rpy(math.radians(self["camera.roll_deg"]), math.radians(self["camera.pitch_deg"]),
                                         0.0) @ R_BODY_OPTICAL)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def _validate(self) -> None:
        choices = {f"{sensor}.qos": QOS_CHOICES for sensor in SENSORS}
        choices["events.input_type"] = EVENT_INPUT_TYPES
        choices["missing_convention"] = MISSING_CONVENTIONS
        for name, allowed in choices.items():
            if self.values[name] not in allowed:
                raise ValueError(f"parameter {name}: {self.values[name]!r} is not one of {', '.join(allowed)}")
        positive = ("events.window_s", "lidar.max_range_m", "health.check_period_s", "health.diagnostics_period_s",
                    "lidar.intensity_scale", "warmup_width", "warmup_height")
        for name in positive:
            if not self.values[name] > 0:
                raise ValueError(f"parameter {name}: must be > 0, got {self.values[name]}")
        non_negative = ("short_side", "warmup_iterations", "events.sensor_width", "events.sensor_height",
                        "sync.camera_wait_s")
        for name in non_negative:
            if self.values[name] < 0:
                raise ValueError(f"parameter {name}: must be >= 0, got {self.values[name]}")
        if (self.values["events.sensor_width"] == 0) != (self.values["events.sensor_height"] == 0):
            raise ValueError("parameters events.sensor_width and events.sensor_height: set both or neither")
        for name in ("output.overlay_alpha", "output.confidence_threshold"):
            if not 0.0 <= self.values[name] <= 1.0:
                raise ValueError(f"parameter {name}: must be in [0, 1], got {self.values[name]}")

    def _input(self, sensor: str) -> InputParams:
        value = self.values
        try:
            sync = ModalitySyncConfig(tolerance_s=value.get(f"{sensor}.tolerance_s", 0.0),
                                      max_age_s=value[f"{sensor}.max_age_s"], cache_size=value["sync.cache_size"],
                                      enabled=value[f"{sensor}.enabled"])
            health = HealthConfig(
                expected_rate_hz=value[f"{sensor}.expected_rate_hz"], max_age_s=value[f"{sensor}.max_age_s"],
                dead_after_s=value[f"{sensor}.dead_after_s"], warn_after_periods=value["health.warn_after_periods"],
                rate_window_s=value["health.rate_window_s"], min_rate_fraction=value["health.min_rate_fraction"],
                frozen_warn_repeats=value["health.frozen_warn_repeats"],
                frozen_stale_repeats=value["health.frozen_stale_repeats"],
                future_tolerance_s=value["health.future_tolerance_s"], anomaly_hold_s=value["health.anomaly_hold_s"])
        except ValueError as error:
            raise ValueError(f"parameters of {sensor} (or health.*): {error}") from error
        return InputParams(sensor, MODALITY_OF_SENSOR[sensor], bool(value[f"{sensor}.enabled"]),
                           value[f"{sensor}.topic"], value[f"{sensor}.qos"], sync, health)


def quaternion_to_rotation(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """Unit quaternion (x, y, z, w; normalised here) -> 3x3 rotation matrix."""
    norm = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    if not norm > 1e-9 or not math.isfinite(norm):
        raise ValueError(f"quaternion ({qx}, {qy}, {qz}, {qw}) has no direction (norm {norm})")
    x, y, z, w = qx / norm, qy / norm, qz / norm, qw / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def transform_from_parameter(values) -> np.ndarray:
    """``lidar.transform``: [x, y, z, qx, qy, qz, qw] or 16 row-major values -> 4x4 float64 transform."""
    values = [float(value) for value in values]
    if len(values) == 7:
        return make_transform(quaternion_to_rotation(*values[3:]), values[:3])
    if len(values) == 16:
        try:
            return check_transform(np.array(values).reshape(4, 4))
        except ValueError as error:
            raise ValueError(f"parameter lidar.transform: {error}") from error
    raise ValueError(f"parameter lidar.transform: expected 7 values [x, y, z, qx, qy, qz, qw] or 16 (row-major 4x4), "
                     f"got {len(values)}")


def resolve_checkpoint(checkpoint: str) -> Path:
    """The checkpoint file to load: ``checkpoint`` itself, or for "" the student shipped in the package.

    Raises ``FileNotFoundError`` with a message saying how to pass one.
    """
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; pass checkpoint:=/path/to/model.pt")
        return path
    packaged = Path(str(importlib.resources.files("robustseg_ros").joinpath(*PACKAGED_CHECKPOINT)))
    if not packaged.is_file():
        raise FileNotFoundError(
            f"no checkpoint given and the packaged student checkpoint {packaged} is not installed; pass one with "
            "checkpoint:=/path/to/model.pt (ros2 launch) or --ros-args -p checkpoint:=/path/to/model.pt")
    return packaged


# --------------------------------------------------------------------------------------------
# frames


@dataclass(frozen=True)
class SensorPayload:
    """A converted message as cached for synchronisation.

    ``header``: the message's header; ``data``: rgb uint8 [H, W, 3] (camera, event image), depth float32
    [H, W] metres, LiDAR points float32 [N, 4], or events ``EVENT_DTYPE`` [N]; ``T_cam_lidar``: the
    extrinsic valid for this cloud (LiDAR only); ``convert_ms``: conversion time.
    """

    header: Header
    data: np.ndarray
    convert_ms: float
    T_cam_lidar: np.ndarray | None = None


@dataclass(frozen=True)
class _PendingCameraFrame:
    """A camera image waiting for the other sensors: stamp (s), payload, node-clock deadline (s)."""

    stamp: float
    payload: SensorPayload
    deadline: float


@dataclass(frozen=True)
class FrameJob:
    """Everything ``process`` needs for one frame, snapshotted when the frame was built.

    ``header``: the outputs' header (the camera image's, or the frame stamp + camera frame_id);
    ``size``: output (height, width) px; ``intrinsics``: camera intrinsics at that size, None without
    CameraInfo; ``events``/``event_window``: the events of the window ending at the frame stamp (packets
    input); ``statuses``: sensor health when the frame was built.
    """

    frame: SyncedFrame
    header: Header
    size: tuple[int, int]
    intrinsics: CameraIntrinsics | None
    events: np.ndarray | None
    event_window: tuple[float, float]
    statuses: dict[str, HealthStatus]

    @property
    def newest_input_stamp(self) -> float:
        """Newest header stamp (s) among the messages that joined the frame."""
        return max(entry.stamp for entry in self.frame.entries.values() if entry is not None)


@dataclass
class FrameOutput:
    """One segmented frame at camera resolution.

    ``labels`` uint8 [H, W] (255 unknown), ``color`` / ``overlay`` uint8 [H, W, 3] RGB (None when not
    asked for), ``confidence`` float32 [H, W]; ``encoded``: the modality images given to the model;
    ``fed``: modalities that fed it; ``reasons``: why each other modality did not; ``timings_ms``: convert,
    encode, preprocess, infer, postprocess.
    """

    job: FrameJob
    labels: np.ndarray
    color: np.ndarray | None
    confidence: np.ndarray
    overlay: np.ndarray | None
    encoded: dict[str, np.ndarray]
    fed: tuple[str, ...]
    reasons: dict[str, str]
    timings_ms: dict[str, float]

    @property
    def header(self) -> Header:
        return self.job.header


class EventWindowBuffer:
    """Recent event packets, from which the events of a time window are cut (times in seconds)."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = float(keep_s)
        self._packets: deque[tuple[float, float, np.ndarray]] = deque()

    def add(self, events: np.ndarray) -> None:
        """Keep a packet (``EVENT_DTYPE`` [N]); packets older than ``keep_s`` before its newest event are pruned."""
        if len(events) == 0:
            return
        t = events["t"]
        self._packets.append((float(t.min()), float(t.max()), events))
        newest = max(t_max for _, t_max, _ in self._packets)
        while self._packets and self._packets[0][1] < newest - self.keep_s:
            self._packets.popleft()

    def window(self, t_start: float, t_end: float) -> np.ndarray:
        """Events of the packets overlapping [t_start, t_end] (``events_to_frame`` trims to the window)."""
        chosen = [events for t_min, t_max, events in self._packets if t_max >= t_start and t_min <= t_end]
        if not chosen:
            return np.zeros(0, dtype=EVENT_DTYPE)
        return chosen[0] if len(chosen) == 1 else np.concatenate(chosen)

    def clear(self) -> None:
        self._packets.clear()


class UnusableMessage(MessageError):
    """A well-formed message without usable content (an empty cloud, a depth image without valid pixels)."""

    def __init__(self, kind: str, problem: str, *, topic: str | None = None) -> None:
        super().__init__(f"{kind}: {problem}", topic=topic)
        self.kind = kind


def error_kind(error: MessageError, prefix: str = "") -> str:
    """Short kind of a conversion error for counting: the faulty field ("step", "data", "encoding"...) or
    the ``UnusableMessage`` kind ("empty cloud", "no valid depth")."""
    return prefix + (getattr(error, "kind", None) or error.field or "message")


@dataclass
class _Statistics:
    """What the pipeline did, for /diagnostics (guarded by the pipeline's lock)."""

    frames_processed: int = 0
    frames_dropped: int = 0
    frames_failed: int = 0
    frames_skipped: int = 0
    unsynchronised_messages: int = 0
    last_failure: str = ""
    last_failure_time: float = float("-inf")
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=STATISTICS_WINDOW))
    stage_ms: deque = field(default_factory=lambda: deque(maxlen=STATISTICS_WINDOW))


class PerceptionPipeline:
    """Sync, health, encoding and inference of the perception node, fed with messages and node-clock times.

    ``segmenter``: a ``robustseg_core.inference.Segmenter`` (or anything with ``predict``,
    ``modalities``, ``class_names`` and ``device``); ``logger``: anything with ``warning`` and ``info``
    (rclpy or logging loggers); ``lidar_extrinsic_lookup(lidar_frame, camera_frame, stamp_s)``: when set,
    returns T_cam_lidar (4x4) for a cloud or raises ``LookupError`` (the node sets it to a tf2 lookup);
    ``topic_names``: sensor (and "camera_info") -> resolved topic name for logs and diagnostics (default: the
    parameters).

    Threading: the ``on_*`` methods and ``diagnostics`` run on one thread (the executor's); ``process``
    may run on another (the inference worker).
    """

    def __init__(self, params: PerceptionParams, segmenter, *, logger=None,
                 lidar_extrinsic_lookup: LidarExtrinsicLookup | None = None,
                 topic_names: Mapping[str, str] | None = None) -> None:
        self.params = params
        self.topic_names = {sensor: params[f"{sensor}.topic"] for sensor in SENSORS}
        self.topic_names["camera_info"] = params["camera.info_topic"]
        self.topic_names.update(topic_names or {})
        self.segmenter = segmenter
        self.logger = logger or logging.getLogger("robustseg_ros.pipeline")
        self.lidar_extrinsic_lookup = lidar_extrinsic_lookup
        self.model_modalities = tuple(segmenter.modalities)
        self.active_sensors = tuple(sensor for sensor in SENSORS if self.sensor_active(sensor))
        if not self.active_sensors:
            raise ValueError(f"no enabled input feeds the model (its modalities: {', '.join(self.model_modalities)}); "
                             "enable at least one of camera, depth, events, lidar")
        configs = {MODALITY_OF_SENSOR[sensor]: params.inputs[sensor].sync for sensor in SENSORS}
        self.sync = FrameSynchronizer(MODALITIES, configs, pivot="rgb", timer_period_s=params["health.check_period_s"])
        for sensor in SENSORS:
            if sensor not in self.active_sensors:
                self.sync.set_enabled(MODALITY_OF_SENSOR[sensor], False)
        self.health = HealthMonitor({MODALITY_OF_SENSOR[sensor]: params.inputs[sensor].health
                                     for sensor in self.active_sensors})
        event_keep_s = (params["events.window_s"] + params["events.max_age_s"] + params["events.tolerance_s"])
        self.event_buffer = EventWindowBuffer(event_keep_s)
        self.camera_intrinsics: CameraIntrinsics | None = None
        self.camera_frame_id = ""
        self._camera_size: tuple[int, int] | None = None
        self._camera_info_key: tuple | None = None
        self._started = False
        self._last_now: float | None = None
        self._published_states: dict[str, SensorState] = {}
        self._logged_once: set[str] = set()
        self._lock = threading.Lock()
        self._stats = _Statistics()
        self._pending_camera: _PendingCameraFrame | None = None

    # ------------------------------------------------------------------ inputs

    def sensor_active(self, sensor: str) -> bool:
        """True when the sensor is enabled and its modality is an input of the model."""
        return self.params.inputs[sensor].enabled and MODALITY_OF_SENSOR[sensor] in self.model_modalities

    def on_camera(self, msg: Image, now: float) -> FrameJob | None:
        """A camera image (rgb8, bgr8, mono8, rgba8, bgra8): triggers a frame when usable."""
        topic = self.topic_names["camera"]
        return self._receive("rgb", msg, now, lambda: camera_image_to_rgb(msg, topic=topic), frozen_check=True)

    def on_camera_info(self, msg: CameraInfo, now: float) -> None:
        """The camera's CameraInfo: intrinsics for depth and LiDAR encoding, output size and frame_id for
        timer frames (used also when the camera image input is disabled)."""
        if not self._clock_running(now):
            return
        key = (msg.width, msg.height, tuple(msg.k), msg.binning_x, msg.binning_y, msg.roi.width, msg.roi.height,
               msg.header.frame_id)
        if key == self._camera_info_key:
            return
        try:
            self.camera_intrinsics = camera_info_to_intrinsics(msg, topic=self.topic_names["camera_info"])
        except MessageError as error:
            if "rgb" in self.health.modalities:
                self._record_error("rgb", error_kind(error, "camera_info "), str(error), now)
            else:
                self._log_once(f"camera_info {error_kind(error)}", f"camera_info: malformed message: {error}")
            return
        self.camera_frame_id = msg.header.frame_id
        self._camera_info_key = key

    def on_depth(self, msg: Image, now: float) -> FrameJob | None:
        """A depth image (32FC1 metres or 16UC1 millimetres, registered to the camera)."""
        topic = self.topic_names["depth"]

        def convert() -> np.ndarray:
            metres = depth_image_to_metres(msg, topic=topic)
            if not (metres > 0).any():
                raise UnusableMessage("no valid depth", "every pixel is 0, NaN, inf or negative", topic=topic)
            return metres

        return self._receive("depth", msg, now, convert, frozen_check=True)

    def on_lidar(self, msg: PointCloud2, now: float) -> FrameJob | None:
        """A LiDAR PointCloud2 (fields x, y, z; intensity optional)."""
        topic = self.topic_names["lidar"]

        def convert() -> np.ndarray:
            points = pointcloud2_to_xyzi(msg, intensity_field=self.params["lidar.intensity_field"],
                                         intensity_scale=self.params["lidar.intensity_scale"], topic=topic)
            if len(points) == 0:
                raise UnusableMessage("empty cloud", "no point with finite x, y, z", topic=topic)
            return points

        return self._receive("lidar", msg, now, convert, frozen_check=True, extrinsic=True)

    def on_events(self, msg: PointCloud2 | Image, now: float) -> FrameJob | None:
        """An event packet (PointCloud2 x, y, t, polarity) or a rendered event frame (Image), per events.input_type."""
        topic = self.topic_names["events"]
        if self.params["events.input_type"] == "image":
            return self._receive("event", msg, now, lambda: camera_image_to_rgb(msg, topic=topic))
        return self._receive("event", msg, now, lambda: pointcloud2_to_events(msg, topic=topic))

    def on_timer(self, now: float) -> FrameJob | None:
        """Periodic check: apply health exclusions; a frame from the other sensors while the camera is silent."""
        if not self._clock_running(now):
            return None
        job = self._release_camera_frame(now)
        if job is not None:
            return job
        statuses = self._apply_health(now)
        frame = self.sync.on_timer(now)
        return self._job(frame, statuses) if frame is not None else None

    def _receive(self, modality: str, msg, now: float, convert: Callable[[], np.ndarray], *,
                 frozen_check: bool = False, extrinsic: bool = False) -> FrameJob | None:
        """Convert, record health, cache; the frame a usable camera image triggers. ``frozen_check``: digest
        the payload to detect frozen streams (not for events: a static scene gives identical packets)."""
        if not self._clock_running(now) or SENSOR_OF_MODALITY[modality] not in self.active_sensors:
            return None
        start = time.perf_counter()
        try:
            data = convert()
        except MessageError as error:
            self._record_error(modality, error_kind(error), str(error), now)
            return None
        T_cam_lidar = None
        if extrinsic:
            try:
                T_cam_lidar = self._lidar_extrinsic(msg)
            except LookupError as error:
                self._record_error(modality, "no transform", str(error), now)
                return None
        convert_ms = (time.perf_counter() - start) * 1e3
        stamp = stamp_to_seconds(msg.header.stamp)
        digest = payload_digest(msg.data) if frozen_check else None
        anomalies = self.health.record_message(modality, stamp, now, digest)
        for kind in anomalies:
            if self.health[modality].should_log(kind):
                self.logger.warning(f"{SENSOR_OF_MODALITY[modality]}: {kind.replace('_', ' ')} "
                                    f"(stamp {stamp:.3f} s at {now:.3f} s); counted on /diagnostics, logged once")
        if ZERO_STAMP in anomalies or FUTURE_STAMP in anomalies:
            with self._lock:
                self._stats.unsynchronised_messages += 1
            return None
        if modality == "event" and self.params["events.input_type"] == "packets":
            self.event_buffer.add(data)
        if modality == "rgb":
            self._camera_size = data.shape[:2]
        payload = SensorPayload(msg.header, data, convert_ms, T_cam_lidar)
        if modality == self.sync.pivot:
            return self._on_camera_frame(_PendingCameraFrame(stamp, payload, now + self.params["sync.camera_wait_s"]),
                                         now)
        self.sync.add(modality, stamp, payload, now)
        return self._release_camera_frame(now)

    def _on_camera_frame(self, pending: _PendingCameraFrame, now: float) -> FrameJob | None:
        """A new camera image: it waits (up to ``sync.camera_wait_s``) for sensors whose message with about its
        stamp is due; an older camera image still waiting is segmented now, or dropped if the new one goes at once."""
        superseded, self._pending_camera = self._pending_camera, pending
        older_job = self._build_camera_frame(superseded, now) if superseded is not None else None
        job = self._release_camera_frame(now)
        if job is not None and older_job is not None:
            self.count_dropped()
        return job or older_job

    def _release_camera_frame(self, now: float) -> FrameJob | None:
        """The waiting camera image's frame once nothing it waits for is due any more or its wait is over."""
        pending = self._pending_camera
        if pending is None or (now < pending.deadline and self.awaited_sensors(pending.stamp, now)):
            return None
        self._pending_camera = None
        return self._build_camera_frame(pending, now)

    def _build_camera_frame(self, pending: _PendingCameraFrame, now: float) -> FrameJob | None:
        statuses = self._apply_health(now)
        frame = self.sync.add(self.sync.pivot, pending.stamp, pending.payload, now)
        return self._job(frame, statuses) if frame is not None else None

    def awaited_sensors(self, stamp: float, now: float) -> tuple[str, ...]:
        """Usable sensors whose next message, due by their expected rate, would be nearer ``stamp`` (s) than
        anything cached: a camera frame at ``stamp`` is worth waiting for them."""
        awaited = []
        for sensor in self.active_sensors:
            modality = MODALITY_OF_SENSOR[sensor]
            if modality == self.sync.pivot or not self.sync.usable(modality, now):
                continue
            latest = self.sync.caches[modality].latest()
            config = self.sync.configs[modality]
            if latest.stamp >= stamp - config.tolerance_s:
                continue
            if latest.stamp + self.params.inputs[sensor].health.period_s <= stamp + config.tolerance_s:
                awaited.append(sensor)
        return tuple(awaited)

    def _lidar_extrinsic(self, msg: PointCloud2) -> np.ndarray:
        if self.lidar_extrinsic_lookup is None:
            return self.params.T_cam_lidar
        camera_frame = self.params["lidar.camera_frame"] or self.camera_frame_id
        if not camera_frame:
            raise LookupError("no camera frame for the tf2 lookup yet (no CameraInfo and lidar.camera_frame empty)")
        return check_transform(self.lidar_extrinsic_lookup(msg.header.frame_id, camera_frame,
                                                           stamp_to_seconds(msg.header.stamp)))

    def _record_error(self, modality: str, kind: str, text: str, now: float) -> None:
        if self.health.record_error(modality, kind, text, now):
            self.logger.warning(f"{SENSOR_OF_MODALITY[modality]}: message dropped ({kind}): {text}; "
                                "counted on /diagnostics, logged once per kind")

    def _apply_health(self, now: float) -> dict[str, HealthStatus]:
        """Health of every monitored sensor; STALE and DEAD ones are excluded from frames."""
        statuses = self.health.statuses(now)
        excluded = excluded_modalities(statuses)
        for modality in statuses:
            self.sync.set_unhealthy(modality, excluded.get(modality))
        return statuses

    def _clock_running(self, now: float) -> bool:
        """False while ROS time is 0 (use_sim_time before /clock); restarts state when the clock jumps back."""
        if now <= 0:
            return False
        if not self._started:
            self.health.reset(now)
            self._started = True
        elif self._last_now is not None and now < self._last_now - CLOCK_JUMP_BACK_S:
            self.logger.warning(f"node clock jumped back from {self._last_now:.3f} s to {now:.3f} s "
                                "(replay restarted?): synchronisation and health restart")
            self.sync.reset()
            self.health.reset(now)
            self.event_buffer.clear()
            self._pending_camera = None
        self._last_now = now
        return True

    def _job(self, frame: SyncedFrame, statuses: dict[str, HealthStatus] | None) -> FrameJob | None:
        if statuses is None:
            statuses = self.health.statuses(frame.now)
        camera = frame.entries["rgb"]
        if camera is not None:
            header = Header(stamp=camera.payload.header.stamp, frame_id=camera.payload.header.frame_id)
            size = camera.payload.data.shape[:2]
        else:
            newest = next((entry for entry in frame.entries.values()
                           if entry is not None and entry.stamp == frame.stamp), None)
            stamp = newest.payload.header.stamp if newest is not None else seconds_to_stamp(frame.stamp)
            header = Header(stamp=stamp, frame_id=self.camera_frame_id)
            size = self._camera_size
            if self.camera_intrinsics is not None:
                size = (self.camera_intrinsics.height, self.camera_intrinsics.width)
        if size is None:
            with self._lock:
                self._stats.frames_skipped += 1
            self._log_once("no size", "a timer frame was skipped: no CameraInfo and no camera image received yet, "
                                      "so the output size is unknown")
            return None
        intrinsics = self.camera_intrinsics
        if intrinsics is not None and (intrinsics.height, intrinsics.width) != tuple(size):
            intrinsics = intrinsics.scaled(size[1], size[0])
        window = (frame.stamp - self.params["events.window_s"], frame.stamp)
        events = None
        if frame.entries["event"] is not None and self.params["events.input_type"] == "packets":
            events = self.event_buffer.window(*window)
        return FrameJob(frame, header, (int(size[0]), int(size[1])), intrinsics, events, window, statuses)

    def _log_once(self, key: str, text: str) -> None:
        if key not in self._logged_once:
            self._logged_once.add(key)
            self.logger.warning(text)

    # ------------------------------------------------------------------ processing

    def process(self, job: FrameJob, *, with_color: bool = True, with_overlay: bool = False) -> FrameOutput | None:
        """Encode and segment one frame, with the colour mask and the overlay when asked (the node asks only
        when they have subscribers); None when no modality could be encoded (counted)."""
        start = time.perf_counter()
        encoded, reasons = self.encode(job)
        encoded_at = time.perf_counter()
        if not encoded:
            with self._lock:
                self._stats.frames_skipped += 1
            return None
        images = {modality: encoded.get(modality) for modality in self.model_modalities}
        result = self.segmenter.predict(images, output_size=job.size)
        predicted_at = time.perf_counter()
        labels = result.labels
        threshold = self.params["output.confidence_threshold"]
        if threshold > 0:
            labels = np.where(result.confidence < threshold, np.uint8(255), labels).astype(np.uint8)
        color = colorize(labels) if with_color or with_overlay else None
        overlay = None
        if with_overlay:
            rgb = encoded.get("rgb")
            alpha = self.params["output.overlay_alpha"]
            overlay = (color if rgb is None
                       else cv2.addWeighted(color, alpha, np.ascontiguousarray(rgb), 1.0 - alpha, 0.0))
        done = time.perf_counter()
        segmenter_ms = result.timings_ms
        timings = {
            "convert": sum(entry.payload.convert_ms for entry in job.frame.entries.values() if entry is not None),
            "encode": (encoded_at - start) * 1e3,
            "preprocess": segmenter_ms.get("preprocess", 0.0),
            "infer": segmenter_ms.get("infer", 0.0),
            "postprocess": segmenter_ms.get("postprocess", 0.0) + (done - predicted_at) * 1e3,
        }
        fed = tuple(modality for modality in MODALITIES if modality in encoded)
        return FrameOutput(job, labels, color, result.confidence, overlay, encoded, fed, reasons, timings)

    def encode(self, job: FrameJob) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """The frame's present modalities as the network's uint8 [H, W, 3] images at camera resolution,
        and the reason for each absent modality."""
        reasons = dict(job.frame.reasons)
        encoded: dict[str, np.ndarray] = {}
        for modality in MODALITIES:
            payload = job.frame.payload(modality)
            if payload is None:
                if modality not in self.model_modalities:
                    reasons[modality] = "disabled: not an input of the model"
                continue
            try:
                encoded[modality] = self._encode_modality(modality, payload, job)
            except (ValueError, MissingGeometry) as error:
                reasons[modality] = f"not encoded: {error}"
                self._log_once(f"encode {modality}", f"{SENSOR_OF_MODALITY[modality]}: could not encode: {error}")
        return encoded, reasons

    def _encode_modality(self, modality: str, payload: SensorPayload, job: FrameJob) -> np.ndarray:
        height, width = job.size
        if modality == "rgb":
            return payload.data
        if modality == "event":
            if self.params["events.input_type"] == "image":
                return _resize_nearest(payload.data, width, height)
            sensor_width = self.params["events.sensor_width"] or width
            sensor_height = self.params["events.sensor_height"] or height
            frame = events_to_frame(job.events, sensor_width, sensor_height, *job.event_window)
            if len(job.events) and not frame.any():
                raise ValueError(
                    f"none of the {len(job.events)} events lies inside the {sensor_width}x{sensor_height} sensor and the "
                    f"window {job.event_window[0]:.3f}-{job.event_window[1]:.3f} s (check events.sensor_width/height "
                    "and that event times are in seconds of the message clock)")
            return _resize_nearest(frame, width, height)
        if job.intrinsics is None:
            raise MissingGeometry("no CameraInfo received yet (needed for depth and LiDAR)")
        if modality == "depth":
            depth = payload.data
            if depth.shape != (height, width):
                self._log_once("depth size", f"depth: image {depth.shape[1]}x{depth.shape[0]} resized to the "
                                             f"camera's {width}x{height} (nearest neighbour); it must be registered "
                                             "to the camera")
                depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
            return depth_to_hha(depth, job.intrinsics, self.params.R_world_cam, self.params["camera.height_m"])
        image = lidar_to_image(payload.data, job.intrinsics, payload.T_cam_lidar, self.params["lidar.max_range_m"])
        if len(payload.data) and not image.any():
            raise ValueError(f"none of the {len(payload.data)} LiDAR points projects into the camera image within "
                             f"{self.params['lidar.max_range_m']:g} m (check lidar.transform)")
        return image

    # ------------------------------------------------------------------ bookkeeping

    def count_dropped(self) -> None:
        """A pending frame was replaced by a newer one before the worker took it."""
        with self._lock:
            self._stats.frames_dropped += 1

    def count_failure(self, error: BaseException, now: float) -> None:
        """``process`` raised: counted and shown as the model's ERROR on /diagnostics for a while."""
        with self._lock:
            self._stats.frames_failed += 1
            self._stats.last_failure = f"{type(error).__name__}: {error}"
            self._stats.last_failure_time = now

    def record_published(self, output: FrameOutput, latency_ms: float, publish_ms: float) -> None:
        """Statistics of a published frame: end-to-end latency and stage times (ms)."""
        with self._lock:
            self._stats.frames_processed += 1
            self._stats.latencies_ms.append(latency_ms)
            self._stats.stage_ms.append({**output.timings_ms, "publish": publish_ms})

    def recent_frames(self) -> list[dict[str, float]]:
        """Stage times (ms) of the last published frames, oldest first, each with its end-to-end "latency"."""
        with self._lock:
            return [{**stages, "latency": latency}
                    for stages, latency in zip(self._stats.stage_ms, self._stats.latencies_ms)]

    # ------------------------------------------------------------------ status messages

    def sensor_status(self, output: FrameOutput) -> DiagnosticArray:
        """``~/sensor_status``: one status per sensor for this frame, with the frame's header.

        Level OK with message "fed" when the sensor fed the frame; otherwise WARN (disabled, nothing
        within tolerance, not encoded), STALE (stale, never received, unhealthy) or ERROR (dead), with
        the reason as message.
        """
        frame = output.job.frame
        statuses = []
        for modality in MODALITIES:
            sensor = SENSOR_OF_MODALITY[modality]
            values = {"modality": modality, "fed": str(modality in output.fed).lower()}
            entry = frame.entries[modality]
            if entry is not None:
                values["stamp_offset_ms"] = f"{(entry.stamp - frame.stamp) * 1e3:.1f}"
            health = output.job.statuses.get(modality)
            if health is not None:
                values["health"] = health.state.value
            if modality in output.fed:
                level, message = DIAGNOSTIC_OK, "fed"
            else:
                message = output.reasons.get(modality, "absent")
                level = _absence_level(message, health)
            statuses.append(_status(f"{DIAGNOSTIC_PREFIX}{sensor}", level, message, self.topic_names[sensor], values))
        return DiagnosticArray(header=Header(stamp=output.header.stamp, frame_id=output.header.frame_id),
                               status=statuses)

    def health_changed(self, now: float) -> bool:
        """True when some sensor's state differs from the last ``diagnostics`` message (publish it now)."""
        if not self._clock_running(now):
            return False
        states = {modality: status.state for modality, status in self.health.statuses(now).items()}
        return states != self._published_states

    def diagnostics(self, now: float) -> DiagnosticArray:
        """``/diagnostics``: one status per sensor ("robustseg: lidar" ...) and one for the model."""
        running = self._clock_running(now)
        statuses = []
        health = self.health.statuses(now) if running else {}
        self._published_states = {modality: status.state for modality, status in health.items()}
        for sensor in SENSORS:
            modality = MODALITY_OF_SENSOR[sensor]
            topic = self.topic_names[sensor]
            if sensor not in self.active_sensors:
                reason = "disabled" if not self.params.inputs[sensor].enabled else "disabled: not an input of the model"
                statuses.append(_status(f"{DIAGNOSTIC_PREFIX}{sensor}", DIAGNOSTIC_OK, reason, topic,
                                        {"modality": modality, "state": "DISABLED"}))
            elif modality in health:
                status = health[modality]
                statuses.append(_status(f"{DIAGNOSTIC_PREFIX}{sensor}", status.level, status.message, topic,
                                        {"modality": modality, **status.values}))
            else:
                statuses.append(_status(f"{DIAGNOSTIC_PREFIX}{sensor}", DIAGNOSTIC_STALE,
                                        "waiting for the node clock (use_sim_time without /clock?)", topic,
                                        {"modality": modality}))
        statuses.append(self._model_status(now))
        return DiagnosticArray(header=Header(stamp=seconds_to_stamp(max(now, 0.0))), status=statuses)

    def _model_status(self, now: float) -> DiagnosticStatus:
        with self._lock:
            stats = self._stats
            latencies = np.array(stats.latencies_ms, dtype=np.float64)
            stages = list(stats.stage_ms)
            values = {
                "device": str(self.segmenter.device),
                "fp16": str(bool(getattr(self.segmenter, "fp16", False))).lower(),
                "modalities": ",".join(self.model_modalities),
                "short_side_px": str(getattr(self.segmenter, "short_side", "")),
                "frames_processed": str(stats.frames_processed),
                "frames_dropped": str(stats.frames_dropped),
                "frames_failed": str(stats.frames_failed),
                "frames_skipped": str(stats.frames_skipped),
                "unsynchronised_messages": str(stats.unsynchronised_messages),
            }
            failure, failure_time = stats.last_failure, stats.last_failure_time
        counters = self.sync.counters
        values.update({"camera_frames": str(counters.pivot_frames), "timer_frames": str(counters.timer_frames),
                       "late_camera_frames_dropped": str(counters.late_pivots_dropped),
                       "stale_camera_frames_dropped": str(counters.stale_pivots_dropped)})
        if latencies.size:
            values.update({"latency_ms_mean": f"{latencies.mean():.1f}",
                           "latency_ms_p95": f"{np.percentile(latencies, 95):.1f}",
                           "latency_ms_max": f"{latencies.max():.1f}"})
            for stage in stages[0]:
                values[f"{stage}_ms_mean"] = f"{np.mean([timing[stage] for timing in stages]):.2f}"
        values.update(gpu_memory_values(self.segmenter.device))
        if now - failure_time <= self.params["health.anomaly_hold_s"]:
            level, message = DIAGNOSTIC_ERROR, f"processing failed: {failure}"
        elif not latencies.size:
            level, message = DIAGNOSTIC_WARN, "no frame processed yet"
        else:
            level = DIAGNOSTIC_OK
            message = f"{values['frames_processed']} frames, latency mean {values['latency_ms_mean']} ms"
        return _status(f"{DIAGNOSTIC_PREFIX}model", level, message, str(self.segmenter.device), values)


class MissingGeometry(RuntimeError):
    """A modality cannot be encoded because the camera geometry (CameraInfo) is unknown."""


def _resize_nearest(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_NEAREST)


def _absence_level(reason: str, health: HealthStatus | None) -> int:
    if health is not None and health.state is SensorState.DEAD:
        return DIAGNOSTIC_ERROR
    if reason.startswith(("stale", "never received", "unhealthy")):
        return DIAGNOSTIC_STALE
    return DIAGNOSTIC_WARN


def _status(name: str, level: int, message: str, hardware_id: str, values: Mapping[str, str]) -> DiagnosticStatus:
    return DiagnosticStatus(level=bytes([level]), name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=key, value=str(value)) for key, value in values.items()])


def gpu_memory_values(device) -> dict[str, str]:
    """Allocated and reserved CUDA memory (MiB) of ``device``; empty off CUDA."""
    if getattr(device, "type", "cpu") != "cuda":
        return {}
    import torch

    return {"gpu_memory_allocated_mib": f"{torch.cuda.memory_allocated(device) / 2**20:.1f}",
            "gpu_memory_reserved_mib": f"{torch.cuda.memory_reserved(device) / 2**20:.1f}"}

"""perception_node's parameters: the schema, validated values, parameter files, and the checkpoint they name.

One definition serves the node (which declares ``PARAMETERS``), the offline and live bag evaluation
(which read a ``--params-file`` and ``-p name:=value`` overrides) and ``record_synthetic`` (which
writes a complete parameter file for the rig it recorded).

Sensors and the model modality each feeds (model order ``rgb, depth, event, lidar``):
``camera -> rgb``, ``depth -> depth``, ``events -> event``, ``lidar -> lidar``. Parameters are named
``<sensor>.<setting>`` or ``<section>.<setting>``; ``PerceptionParams`` holds their validated values.
A parameter file nests them under ``/**/perception_node: ros__parameters:``.
"""

from __future__ import annotations

import difflib
import importlib.resources
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robustseg_core.deploy.backends import BACKENDS
from robustseg_core.errors import UsageError
from robustseg_core.fusion_policy import DEFAULT_MIN_GAIN, FUSION_POLICIES
from robustseg_core.inference import CONVENTION_CHOICES, Segmenter
from robustseg_core.yaml_file import read_yaml
from robustseg_core.sensors import R_BODY_OPTICAL, make_transform, quaternion_to_rotation, rotation_rpy
from robustseg_core.sensors.camera import check_transform
from robustseg_ros.degradation import QUALITY_RULES, DegradationConfig, DegradationJudge
from robustseg_ros.health import HealthConfig
from robustseg_ros.sync import ModalitySyncConfig

NODE_NAME = "perception_node"
SENSORS: tuple[str, ...] = ("camera", "depth", "events", "lidar")
MODALITY_OF_SENSOR: dict[str, str] = {"camera": "rgb", "depth": "depth", "events": "event", "lidar": "lidar"}
SENSOR_OF_MODALITY: dict[str, str] = {modality: sensor for sensor, modality in MODALITY_OF_SENSOR.items()}
QOS_CHOICES: tuple[str, ...] = ("sensor_data", "reliable")
#: Image transports per sensor and the suffix each adds to the topic (image_transport's convention).
TRANSPORT_SUFFIXES: dict[str, dict[str, str]] = {"camera": {"raw": "", "compressed": "/compressed"},
                                                 "depth": {"raw": "", "compressedDepth": "/compressedDepth"}}
EVENT_INPUT_TYPES: tuple[str, ...] = ("packets", "image")
PACKAGED_CHECKPOINT = ("models", "robustseg_student.pt")
#: T_cam_lidar for a LiDAR at the camera's origin with REP 103 body axes (x forward, y left, z up):
#: translation (0, 0, 0) and the quaternion (x, y, z, w) rotating body axes into the optical frame.
CO_LOCATED_LIDAR_TRANSFORM = (0.0, 0.0, 0.0, 0.5, -0.5, 0.5, 0.5)
#: Top-level keys of a parameter file that address this node (the first is the one written).
PARAMS_FILE_NODE_KEYS = (f"/**/{NODE_NAME}", NODE_NAME, f"/{NODE_NAME}", "/**")


class ParameterError(UsageError, ValueError):
    """An unknown parameter, an invalid value or an unusable parameter file; the message names it."""


@dataclass(frozen=True)
class ParameterSpec:
    """One ROS parameter of the node: dotted name, default (its type is the parameter's type), description, and
    when it may change: ``live`` while the node runs, ``startup`` never after the node has started (read once,
    in its constructor); the others while it is unconfigured (each configure reads them)."""

    name: str
    default: bool | int | float | str | tuple
    description: str
    live: bool = False
    startup: bool = False


def _input_specs(sensor: str, topic: str, rate_hz: float, tolerance_s: float | None, what: str) -> list[ParameterSpec]:
    specs = [
        ParameterSpec(f"{sensor}.enabled", True, f"Subscribe to the {what} and feed it to the model (live).",
                      live=True),
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
    ParameterSpec("autostart", True, "Configure and activate at start-up; false: wait unconfigured for lifecycle "
                                     "transitions (ros2 lifecycle set /perception_node configure, then activate).",
                  startup=True),
    ParameterSpec("checkpoint", "", "RobustSeg checkpoint (.pt); empty: the student shipped in the package "
                                    "(robustseg_ros/models/robustseg_student.pt), unless onnx_file is set."),
    ParameterSpec("backend", "torch", "Inference backend: torch, onnxruntime, openvino or tensorrt (each but torch "
                                      "runs an ONNX model and needs its setup.py extra: onnx, openvino, tensorrt)."),
    ParameterSpec("onnx_file", "", "ONNX model (export_onnx) for the backends other than torch; empty: the checkpoint "
                                   "is exported and checked once, into ~/.cache/robustseg_ros. With a checkpoint "
                                   "too, both must agree on classes, modality order and normalisation."),
    ParameterSpec("strict_parameters", False,
                  "Refuse to start when a parameter file or -p override names a parameter this node does not have "
                  "(perception.launch.py sets it true); false: log a warning naming them and start.", startup=True),
    ParameterSpec("device", "auto", "Device: auto (CUDA when available to the backend, else CPU; openvino: "
                                    "CPU), cpu, cuda or cuda:N."),
    ParameterSpec("fp16", True, "Reduced precision where the backend supports it: fp16 on CUDA (torch, tensorrt), "
                                "bf16 with openvino on CPUs that have it; ignored otherwise."),
    ParameterSpec("short_side", 0, "Network input short side (px; both sides rounded up to multiples of 32); "
                                   "0: the checkpoint's data.eval_size."),
    ParameterSpec("missing_convention", "auto", "How absent modalities reach the model: auto (as the model was "
                                                "trained, from its metadata), drop (left out of the fusion) or zero "
                                                "(zero images, encoded and averaged in) (live).", live=True),
    ParameterSpec("fusion_policy", "all", "Which fresh, usable inputs are fused: all (as the paper), or validated "
                                          "(the subset the model scored best with on its validation split, when it "
                                          "beats all of them by more than fusion_min_gain; the others are reported "
                                          "as left out, level OK on ~/sensor_status) (live).", live=True),
    ParameterSpec("fusion_min_gain", DEFAULT_MIN_GAIN,
                  "mIoU points (validation) a subset must gain over all fresh inputs before fusion_policy validated "
                  "leaves the rest out; >= 0 (live).", live=True),
    ParameterSpec("warmup_iterations", 2, "Dummy all-modality frames run at start-up, before subscribing; 0: none."),
    ParameterSpec("warmup_width", 640, "Image width (px) of the warm-up frames (use the camera's)."),
    ParameterSpec("warmup_height", 480, "Image height (px) of the warm-up frames (use the camera's)."),
    *_input_specs("camera", "camera/image", 10.0, None, "camera image"),
    ParameterSpec("camera.transport", "raw", "raw: sensor_msgs/Image on camera.topic; compressed: "
                                             "sensor_msgs/CompressedImage (jpeg, png) on camera.topic + \"/compressed\"."),
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
    ParameterSpec("depth.transport", "raw", "raw: sensor_msgs/Image on depth.topic; compressedDepth: "
                                            "sensor_msgs/CompressedImage (16UC1 png, compressed_depth_image_transport) "
                                            "on depth.topic + \"/compressedDepth\"."),
    *_input_specs("events", "events/packets", 10.0, 0.05, "event stream"),
    ParameterSpec("events.input_type", "packets",
                  "packets: PointCloud2 event packets (x, y, t, polarity) accumulated over events.window_s; "
                  "image: an already-rendered event-frame Image (rgb8, bgr8, rgba8, bgra8, mono8)."),
    ParameterSpec("events.window_s", 0.1, "Event accumulation window (s) ending at the frame stamp (packets only)."),
    ParameterSpec("events.sensor_width", 0, "Event sensor width (px); 0: the camera's. Frames are resized to the "
                                            "camera's size by nearest neighbour."),
    ParameterSpec("events.sensor_height", 0, "Event sensor height (px); 0: the camera's."),
    ParameterSpec("events.max_buffered_events", 2_000_000,
                  "Hard bound of the event buffer (events; 13 bytes each): past it the oldest packets are dropped, "
                  "and a larger packet is subsampled uniformly (counted on /diagnostics)."),
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
    ParameterSpec("lidar.frame_id", "", "Frame of the clouds that lidar.transform maps to the camera: a cloud in "
                                        "another frame is refused (counted as 'frame_id' on /diagnostics) rather "
                                        "than misprojected. Empty: not checked. Not used with lidar.use_tf."),
    ParameterSpec("lidar.use_tf", False, "Look T_cam_lidar up with tf2 (cloud frame_id -> camera frame) when tf2_ros "
                                         "is installed (offline bag evaluation: in the bag's /tf_static), instead of "
                                         "lidar.transform."),
    ParameterSpec("lidar.camera_frame", "", "Target frame of the tf2 lookup; empty: the CameraInfo's frame_id."),
    ParameterSpec("lidar.max_points", 300_000,
                  "Point budget: a cloud with more points is subsampled uniformly to this many (counted on "
                  "/diagnostics), so no single cloud delays a frame."),
    ParameterSpec("sync.cache_size", 8, "Messages cached per input for synchronisation, at least; younger ones "
                                      "(max_age_s + tolerance_s) are all kept, up to 2048."),
    ParameterSpec("sync.camera_wait_s", 0.05,
                  "Longest wait (s) of a camera image for the other sensors' messages stamped within their tolerance "
                  "of it, when such a message is due by their expected rate (messages of one instant arrive in any "
                  "order); it ends as soon as they are in. 0: segment at once."),
    ParameterSpec("health.check_period_s", 0.05, "Period (s) of the health check that also drives frames while the "
                                                 "camera is silent; a state change is on /diagnostics within it."),
    ParameterSpec("health.diagnostics_period_s", 1.0, "Period (s) of /diagnostics when no state changes.",
                  startup=True),
    ParameterSpec("health.warn_after_periods", 3.0, "WARN late when the last message is older than this many "
                                                    "expected periods (live).", live=True),
    ParameterSpec("health.rate_window_s", 2.0, "Window (s) over which the arrival rate is measured (live).",
                  live=True),
    ParameterSpec("health.min_rate_fraction", 0.5, "WARN low rate below this fraction of expected_rate_hz (live).",
                  live=True),
    ParameterSpec("health.frozen_warn_repeats", 3, "WARN frozen after this many identical payloads in a row (live).",
                  live=True),
    ParameterSpec("health.frozen_stale_repeats", 10, "STALE frozen (no longer fused) after this many identical "
                                                     "payloads in a row (live).", live=True),
    ParameterSpec("health.future_tolerance_s", 0.2, "A stamp later than arrival + this (s) is a future-stamp anomaly; "
                                                    "such messages are not fused (live).", live=True),
    ParameterSpec("health.anomaly_hold_s", 2.0, "Stamp anomalies, malformed messages and input limits keep the "
                                                "sensor at WARN this long (s); the model is WARN when no frame was "
                                                "published for this long (live).", live=True),
    ParameterSpec("health.quality_checks", True,
                  "Measure every message's content quality (exposure, contrast, noise, holes, coverage, event rate) "
                  "and report a sensor whose content is poor as DEGRADED (diagnostic WARN) (live).", live=True),
    ParameterSpec("health.fuse_degraded", "lidar",
                  "Sensors still fused while DEGRADED, comma-separated (camera, depth, events, lidar; empty: none); "
                  "the others are left out of the frame, unless nothing else is left. Default lidar, measured "
                  "(docs/results.md): a jittered LiDAR still helps, a blinded camera or a flooded event sensor does "
                  "not (live).", live=True),
    ParameterSpec("health.degraded_after_messages", 2,
                  "DEGRADED after this many consecutive messages of poor quality (live).", live=True),
    ParameterSpec("health.degraded_clear_s", 0.5,
                  "DEGRADED ends after this long (s) without a message of poor quality (judged more leniently "
                  "than on entry, so the state does not flicker), or 1.5 times this long without one that is poor by "
                  "the entry test (live).", live=True),
    ParameterSpec("health.quality_history_s", 10.0,
                  "Window (s) of a sensor's own sound messages that its quality is compared with; a change that "
                  "lasts longer becomes the new normal unless an absolute bound holds (live).", live=True),
    ParameterSpec("output.overlay_alpha", 0.5, "Weight of the colour mask in ~/overlay (0..1) (live).",
                  live=True),
    ParameterSpec("output.confidence_threshold", 0.0, "Pixels whose confidence is below this become 255 (unknown) "
                                                      "in ~/segmentation; 0: off (live).", live=True),
)
PARAMETER_DEFAULTS: dict[str, Any] = {spec.name: spec.default for spec in PARAMETERS}
#: Parameters that may change while the node runs (``ros2 param set``); the others are read-only.
LIVE_PARAMETERS: frozenset[str] = frozenset(spec.name for spec in PARAMETERS if spec.live)
#: Read once when the node starts, never by a configure: they change only with a restart.
STARTUP_PARAMETERS: frozenset[str] = frozenset(spec.name for spec in PARAMETERS if spec.startup)


# --------------------------------------------------------------------------------------------
# validated values


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


def topic_name_problem(name: str) -> str:
    """Why ``name`` is not a valid ROS 2 topic name (relative, absolute or private ``~/``), or "" when it is:
    tokens of letters, digits and underscores, not starting with a digit, separated by single slashes
    (substitutions ``{node}`` and ``{ns}`` allowed)."""
    if not name:
        return "empty"
    body = name[2:] if name.startswith("~/") else name[1:] if name.startswith("/") else name
    if not body:
        return "no name after the prefix"
    tokens = body.split("/")
    if "" in tokens:
        return "empty token (a trailing or doubled slash)"
    for token in tokens:
        plain = token[1:-1] if token.startswith("{") and token.endswith("}") else token
        if not plain or not all(character.isascii() and (character.isalnum() or character == "_")
                                for character in plain):
            return f"token {token!r}: only letters, digits and underscores"
        if plain[0].isdigit():
            return f"token {token!r} starts with a digit"
    return ""


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a floating-point number", str: "a string"}


def type_problem(value: Any, default: Any) -> str:
    """Why ``value`` cannot be a parameter whose default is ``default``, or "": the type rules of the node's
    declared (typed) ROS parameters, so a value the offline tools accept is one the node accepts too."""
    if isinstance(default, tuple):
        if isinstance(value, Sequence) and not isinstance(value, str) and all(
                isinstance(item, float) for item in value):
            return ""
        return f"must be a list of floating-point numbers (write 1.0, not 1), got {value!r}"
    expected = type(default)
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return ""
    hint = " (write 1.0, not 1)" if expected is float and isinstance(value, int) and not isinstance(value, bool) else ""
    return f"must be {_TYPE_NAMES[expected]}{hint}, got {value!r} ({type(value).__name__})"


class PerceptionParams:
    """Validated parameter values: ``params["lidar.max_range_m"]``, plus ``inputs``, ``degradation``,
    ``fused_degraded`` (the modalities fused while DEGRADED), ``T_cam_lidar`` and ``R_world_cam``.

    Build with ``PerceptionParams(values)``; names missing from ``values`` take their defaults, unknown
    names and invalid values raise ``ParameterError`` (a ``ValueError``) naming the parameter.
    """

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        values = dict(values or {})
        unknown = sorted(set(values) - set(PARAMETER_DEFAULTS))
        if unknown:
            raise ParameterError(f"unknown parameter(s) {describe_unknown(unknown)}")
        self.values: dict[str, Any] = {**PARAMETER_DEFAULTS, **values}
        self._validate()
        self.inputs: dict[str, InputParams] = {sensor: self._input(sensor) for sensor in SENSORS}
        self.fused_degraded = frozenset(MODALITY_OF_SENSOR[sensor] for sensor in sensor_list(
            self["health.fuse_degraded"], "health.fuse_degraded"))
        try:
            self.degradation = DegradationConfig(enter_after=self["health.degraded_after_messages"],
                                                 clear_s=self["health.degraded_clear_s"],
                                                 history_s=self["health.quality_history_s"])
        except ValueError as error:
            raise ParameterError(f"parameters health.degraded_after_messages, health.degraded_clear_s, "
                                 f"health.quality_history_s: {error}") from error
        self.T_cam_lidar = transform_from_parameter(self.values["lidar.transform"])
        self.R_world_cam = (rotation_rpy(math.radians(self["camera.roll_deg"]), math.radians(self["camera.pitch_deg"]),
                                         0.0) @ R_BODY_OPTICAL)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def with_changes(self, changes: Mapping[str, Any], configured: bool = True) -> PerceptionParams:
        """These values with ``changes`` applied, validated as a whole; ``ValueError`` naming a parameter that is
        not live while the node is ``configured`` (it may change only while unconfigured), or the problem with
        the new values."""
        at_startup = sorted(set(changes) & STARTUP_PARAMETERS)
        if at_startup:
            raise ValueError(f"parameter(s) {', '.join(at_startup)} are read when the node starts: set them in the "
                             "parameter file or with -p name:=value and restart")
        read_only = sorted(set(changes) - LIVE_PARAMETERS) if configured else []
        if read_only:
            raise ValueError(f"parameter(s) {', '.join(read_only)} are read-only while the node is configured: set "
                             "them in the parameter file or with -p name:=value and restart, or (managed node) "
                             "cleanup, set them, then configure")
        return PerceptionParams({**self.values, **changes})

    def quality_judge(self, sensor: str, current: DegradationJudge | None = None) -> DegradationJudge | None:
        """The content-quality judge of ``sensor`` under these values: None when ``health.quality_checks`` is off
        or the sensor's input has no quality rules (events as frames); else ``current`` (its history kept) or a
        new judge, with the ``health.degraded_*`` and ``health.quality_history_s`` settings."""
        if not self["health.quality_checks"] or (sensor == "events" and self["events.input_type"] != "packets"):
            return None
        if current is None:
            return DegradationJudge(QUALITY_RULES[sensor], self.degradation)
        current.config = self.degradation
        return current

    def topics(self, resolve: Callable[[str], str] = str) -> dict[str, str]:
        """Topic of every sensor input and of ``"camera_info"``, each passed through ``resolve`` (the node's
        ``resolve_topic_name``, ``absolute_topic``, or by default as written). A compressed camera or depth
        transport adds its suffix (``camera/image/compressed``)."""
        topics = {sensor: resolve(self[f"{sensor}.topic"] + TRANSPORT_SUFFIXES.get(sensor, {}).get(
            self.values.get(f"{sensor}.transport", "raw"), "")) for sensor in SENSORS}
        topics["camera_info"] = resolve(self["camera.info_topic"])
        return topics

    def _validate(self) -> None:
        for name, value in self.values.items():
            problem = type_problem(value, PARAMETER_DEFAULTS[name])
            if problem:
                raise ParameterError(f"parameter {name}: {problem}")
            if isinstance(value, float) and math.isnan(value):
                raise ParameterError(f"parameter {name}: must be a number, got nan")
        for name in [f"{sensor}.topic" for sensor in SENSORS] + ["camera.info_topic"]:
            problem = topic_name_problem(self.values[name])
            if problem:
                raise ParameterError(f"parameter {name}: {self.values[name]!r} is not a ROS topic name: {problem}")
        if not 0 < self.values["camera.height_m"] < math.inf:
            raise ParameterError(f"parameter camera.height_m: must be a finite height > 0 m, got "
                                 f"{self.values['camera.height_m']}")
        for name in ("camera.roll_deg", "camera.pitch_deg"):
            if not -180.0 <= self.values[name] <= 180.0:
                raise ParameterError(f"parameter {name}: must be an angle in [-180, 180] deg, got {self.values[name]}")
        choices = {f"{sensor}.qos": QOS_CHOICES for sensor in SENSORS}
        choices["events.input_type"] = EVENT_INPUT_TYPES
        choices["missing_convention"] = CONVENTION_CHOICES
        choices["fusion_policy"] = FUSION_POLICIES
        choices["backend"] = BACKENDS
        choices.update({f"{sensor}.transport": tuple(suffixes) for sensor, suffixes in TRANSPORT_SUFFIXES.items()})
        for name, allowed in choices.items():
            if self.values[name] not in allowed:
                raise ParameterError(f"parameter {name}: {self.values[name]!r} is not one of {', '.join(allowed)}")
        positive = ("events.window_s", "lidar.max_range_m", "health.check_period_s", "health.diagnostics_period_s",
                    "lidar.intensity_scale", "warmup_width", "warmup_height")
        for name in positive:
            if not self.values[name] > 0:
                raise ParameterError(f"parameter {name}: must be > 0, got {self.values[name]}")
        non_negative = ("short_side", "warmup_iterations", "events.sensor_width", "events.sensor_height",
                        "sync.camera_wait_s", "fusion_min_gain")
        at_least_one = ("events.max_buffered_events", "lidar.max_points")
        for name in at_least_one:
            if self.values[name] < 1:
                raise ParameterError(f"parameter {name}: must be >= 1, got {self.values[name]}")
        for name in non_negative:
            if self.values[name] < 0:
                raise ParameterError(f"parameter {name}: must be >= 0, got {self.values[name]}")
        if (self.values["events.sensor_width"] == 0) != (self.values["events.sensor_height"] == 0):
            raise ParameterError("parameters events.sensor_width and events.sensor_height: set both or neither")
        for name in ("output.overlay_alpha", "output.confidence_threshold"):
            if not 0.0 <= self.values[name] <= 1.0:
                raise ParameterError(f"parameter {name}: must be in [0, 1], got {self.values[name]}")

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
            raise ParameterError(f"parameters of {sensor} (or health.*): {error}") from error
        return InputParams(sensor, MODALITY_OF_SENSOR[sensor], bool(value[f"{sensor}.enabled"]),
                           value[f"{sensor}.topic"], value[f"{sensor}.qos"], sync, health)


def describe_unknown(names: Iterable[str]) -> str:
    """Unknown parameter names, each with the known name it most likely misspells:
    ``"camera.topik (did you mean camera.topic?)"``."""
    described = []
    for name in names:
        close = difflib.get_close_matches(name, PARAMETER_DEFAULTS, n=1)
        described.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return ", ".join(described)


def sensor_list(text: str, name: str) -> tuple[str, ...]:
    """A comma-separated list of sensor names (``SENSORS``; spaces and empty items ignored) -> the names;
    ``ValueError`` naming the parameter ``name`` and the unknown ones."""
    sensors = tuple(item.strip() for item in str(text).split(",") if item.strip())
    unknown = [sensor for sensor in sensors if sensor not in SENSORS]
    if unknown:
        raise ParameterError(f"parameter {name}: unknown sensor(s) {', '.join(unknown)}; expected a comma-separated list "
                         f"of {', '.join(SENSORS)} (or empty)")
    return sensors


def transform_from_parameter(values) -> np.ndarray:
    """``lidar.transform``: [x, y, z, qx, qy, qz, qw] or 16 row-major values -> 4x4 float64 transform."""
    try:
        values = [float(value) for value in values]
        if len(values) == 7:
            return make_transform(quaternion_to_rotation(*values[3:]), values[:3])
        if len(values) == 16:
            return check_transform(np.array(values).reshape(4, 4))
    except (TypeError, ValueError) as error:
        raise ParameterError(f"parameter lidar.transform: {error}") from error
    raise ParameterError(f"parameter lidar.transform: expected 7 values [x, y, z, qx, qy, qz, qw] or 16 (row-major 4x4), "
                     f"got {len(values)}")


def absolute_topic(name: str, namespace: str = "/") -> str:
    """A topic name as a node in ``namespace`` resolves it: an absolute name as it is, a relative one under the
    namespace (the root namespace by default: a leading "/" added)."""
    return name if name.startswith("/") else f"{namespace.rstrip('/')}/{name}"


# --------------------------------------------------------------------------------------------
# parameter files


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


def load_params_document(path: str | Path) -> dict:
    """A ROS 2 parameter file as a mapping of node names; ``ParameterError`` naming the file when it is
    missing, unreadable, not YAML or not a mapping."""
    document = read_yaml(path, ParameterError, "params file") or {}
    if not isinstance(document, dict):
        raise ParameterError(f"params file {path}: expected a mapping of node names, got {type(document).__name__}")
    return document


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Dotted parameter values of perception_node from a ROS 2 parameter file (``config/perception.yaml``
    layout; lists become tuples, as ``PerceptionParams`` holds them). ``ParameterError`` naming the file when
    it is unusable (``load_params_document``) or has no ``ros__parameters`` section for this node."""
    document = load_params_document(path)
    key = next((key for key in PARAMS_FILE_NODE_KEYS if key in document), None)
    if key is None and len(document) == 1:  # the one node of the file, under the name it was launched with
        key = next(iter(document))
    section = document.get(key)
    if not isinstance(section, dict) or "ros__parameters" not in section:
        raise ParameterError(f"params file {path}: no {NODE_NAME} ros__parameters section (keys: {list(document)})")
    values = {name: tuple(value) if isinstance(value, list) else value
              for name, value in flatten_parameters(section["ros__parameters"]).items()}
    unknown = sorted(set(values) - set(PARAMETER_DEFAULTS))
    if unknown:
        raise ParameterError(f"params file {path}, section {key}: unknown parameter(s) {describe_unknown(unknown)}")
    return values


def params_file_text(overrides: Mapping[str, Any], comment: str) -> str:
    """A complete parameter file: every parameter at its default, then ``overrides``, under
    ``/**/perception_node: ros__parameters:`` (the form ``--params-file`` and ``ros2 launch`` accept), after
    the ``comment`` line(s)."""
    values = {spec.name: list(spec.default) if isinstance(spec.default, tuple) else spec.default for spec in PARAMETERS}
    values.update(overrides)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    document = {PARAMS_FILE_NODE_KEYS[0]: {"ros__parameters": nest_parameters(values)}}
    return header + yaml.safe_dump(document, sort_keys=False)


def parse_override(text: str) -> tuple[str, Any]:
    """``name:=value`` -> (name, value), the value parsed as YAML like ``--ros-args -p`` (lists become tuples)."""
    name, separator, value = text.partition(":=")
    if not separator or not name:
        raise ParameterError(f"parameter override {text!r}: expected name:=value")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise ParameterError(f"parameter override {text!r}: the value is not valid YAML") from error
    return name, tuple(parsed) if isinstance(parsed, list) else parsed


# --------------------------------------------------------------------------------------------
# the checkpoint


def resolve_checkpoint(checkpoint: str) -> Path:
    """The checkpoint file to load: ``checkpoint`` itself, or for "" the student shipped in the package.

    Raises ``FileNotFoundError`` with a message saying how to pass one.
    """
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if path.is_dir():
            raise FileNotFoundError(f"checkpoint {str(path)!r} is a folder, not a checkpoint file (a .pt file such "
                                    "as a run's best.pt)")
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; pass an existing .pt file "
                                    "(checkpoint:=/path/to/model.pt, or evaluate_bag --checkpoint)")
        return path
    packaged = Path(str(importlib.resources.files("robustseg_ros").joinpath(*PACKAGED_CHECKPOINT)))
    if not packaged.is_file():
        raise FileNotFoundError(
            f"no checkpoint given and the packaged student checkpoint {packaged} is not installed; pass one with "
            "checkpoint:=/path/to/model.pt (ros2 launch) or --ros-args -p checkpoint:=/path/to/model.pt")
    return packaged


def load_segmenter(params: PerceptionParams) -> tuple[Path, Segmenter]:
    """The model the parameters name and a ``Segmenter`` running it with their backend, device, precision, short
    side, missing-modality convention and fusion policy (the node and the offline evaluation build it alike);
    returns the model file (the ONNX file when one is given) and the segmenter. An ``onnx_file`` without a
    ``checkpoint`` runs on its own metadata; with one, the two must agree."""
    onnx_file = Path(params["onnx_file"]).expanduser() if params["onnx_file"] else None
    if params["backend"] == "torch" and onnx_file is not None:
        raise ParameterError("parameter onnx_file is set but backend is torch; set backend to onnxruntime, openvino "
                             "or tensorrt to run it")
    checkpoint = None if onnx_file is not None and not params["checkpoint"] else resolve_checkpoint(params["checkpoint"])
    segmenter = Segmenter(checkpoint, device=params["device"], fp16=None if params["fp16"] else False,
                          short_side=params["short_side"] or None, convention=params["missing_convention"],
                          backend=params["backend"], onnx_file=onnx_file, fusion=params["fusion_policy"],
                          fusion_min_gain=params["fusion_min_gain"])
    return onnx_file or checkpoint, segmenter

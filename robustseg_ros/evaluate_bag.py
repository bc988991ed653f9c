"""``evaluate_bag``: run the perception pipeline over a rosbag2 bag and report accuracy, health and timing.

The bag is read in bag-timestamp order and fed in-process to ``PerceptionPipeline``, the object
``perception_node`` wraps, with the node clock set to each message's bag time (ns -> s) and
``on_timer`` called every ``health.check_period_s`` of bag time, as the node's timer would under
``use_sim_time``. Every frame the pipeline emits is processed at once (offline nothing is dropped
for lack of time), so two runs over one bag give the same frames, predictions and metrics; only
the ``timing`` section (wall-clock processing time) varies.

Parameters: the node's defaults < ``--params-file`` (config/perception.yaml layout) < the rig
parameters recorded in the bag's fault timeline (``record_synthetic``) < ``-p name:=value``.
Sensor topics are the node's parameters (relative names get a leading "/").

Ground truth: a mono8 label image topic (``--labels-topic``; class ids, 255 ignore) matched to
output frames by header stamp. Without it the report has everything but accuracy. Fault windows
come from the ``/robustseg/fault_timeline`` topic or the ``fault_timeline.json`` in the bag folder.

Live mode (``--mode live``): the bag is replayed over DDS with ``/clock`` into a perception node on
sim time (running elsewhere, or in this process with ``--spawn-node``), and the node's outputs and
``/diagnostics`` are recorded and scored the same way; not repeatable (DDS, CPU load).

Outputs in ``--output``: ``metrics.json`` (fields in docs/bags.md), ``report.md``,
``miou_over_time.png``, ``latency_histogram.png``, ``samples.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from robustseg_core.atomic import write_text_atomic
from robustseg_core.classes import CLASS_NAMES, IGNORE_INDEX, MODALITIES, colorize
from robustseg_core.evaluation.metrics import ConfusionMatrix
from robustseg_core.inference import Segmenter
from robustseg_ros.bag_io import BagError, BagReader
from robustseg_ros.conversions import MessageError, camera_image_to_rgb, image_to_numpy
from robustseg_ros.health import SensorState
from robustseg_ros.pipeline import (
    MODALITY_OF_SENSOR,
    PARAMETER_DEFAULTS,
    SENSORS,
    FrameJob,
    PerceptionParams,
    PerceptionPipeline,
    flatten_parameters,
    resolve_checkpoint,
)
from robustseg_ros.record_synthetic import DEFAULT_TOPICS, TIMELINE_FILE, Fault, faults_from_record

NODE_KEYS = ("/**/perception_node", "perception_node", "/perception_node", "/**")
MODALITY_LETTERS = {"rgb": "R", "depth": "D", "event": "E", "lidar": "L"}
NOMINAL = "nominal"
LATENCY_PERCENTILES = (50, 90, 95, 99)
STALE_SEVERITY = SensorState.STALE.severity
DIAGNOSTIC_STATES = {0: SensorState.OK, 1: SensorState.WARN, 2: SensorState.DEAD, 3: SensorState.STALE}
TIMING_LABELS = {"processing": "processing time per frame (ms)", "latency": "end-to-end latency per frame (ms)"}


def modality_code(fed: tuple[str, ...]) -> str:
    """"RDEL" style code of the modalities that fed a frame, in model order; "-" for none."""
    return "".join(MODALITY_LETTERS[modality] for modality in MODALITIES if modality in fed) or "-"


def load_params_file(path: str | Path) -> dict:
    """Dotted parameter values of perception_node from a ROS 2 params YAML (``config/perception.yaml``)."""
    document = yaml.safe_load(Path(path).read_text()) or {}
    section = next((document[key] for key in NODE_KEYS if key in document), None)
    if section is None and len(document) == 1:
        section = next(iter(document.values()))
    if not isinstance(section, dict) or "ros__parameters" not in section:
        raise ValueError(f"params file {path}: no perception_node ros__parameters section (keys: {list(document)})")
    return {name: tuple(value) if isinstance(value, list) else value
            for name, value in flatten_parameters(section["ros__parameters"]).items()}


def parse_override(text: str) -> tuple[str, object]:
    """``name:=value`` (value parsed as YAML, like ``--ros-args -p``)."""
    name, separator, value = text.partition(":=")
    if not separator or not name:
        raise ValueError(f"parameter override {text!r}: expected name:=value")
    parsed = yaml.safe_load(value)
    return name, tuple(parsed) if isinstance(parsed, list) else parsed


def absolute_topic(name: str) -> str:
    return name if name.startswith("/") else "/" + name


# --------------------------------------------------------------------------------------------
# bookkeeping


@dataclass
class FrameRecord:
    """One output frame: header stamp (s), trigger ("camera" or "timer"), modality code, accuracy when scored."""

    stamp_s: float
    source: str
    fed: str
    windows: list[str]
    reasons: dict[str, str]
    miou: float | None = None
    pixel_accuracy: float | None = None


@dataclass
class Sample:
    """A frame kept for the sample grid: header stamp (ns), camera RGB (or None), prediction, confidence, ground
    truth (filled when its label arrives)."""

    stamp_ns: int
    title: str
    rgb: np.ndarray | None
    prediction: np.ndarray
    confidence: np.ndarray
    label: np.ndarray | None = None


@dataclass
class Accumulator:
    """Confusion matrices overall, per fault window and per modality code."""

    num_classes: int
    overall: ConfusionMatrix = field(init=False)
    by_window: dict[str, ConfusionMatrix] = field(default_factory=dict)
    by_modalities: dict[str, ConfusionMatrix] = field(default_factory=dict)
    frames_by_window: dict[str, int] = field(default_factory=dict)
    frames_by_modalities: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.overall = ConfusionMatrix(self.num_classes)

    def add(self, matrix: ConfusionMatrix, windows: list[str], code: str) -> None:
        self.overall.matrix += matrix.matrix
        for name in windows:
            self.by_window.setdefault(name, ConfusionMatrix(self.num_classes)).matrix += matrix.matrix
            self.frames_by_window[name] = self.frames_by_window.get(name, 0) + 1
        self.by_modalities.setdefault(code, ConfusionMatrix(self.num_classes)).matrix += matrix.matrix
        self.frames_by_modalities[code] = self.frames_by_modalities.get(code, 0) + 1


def _stamp_key(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _summary(matrix: ConfusionMatrix, class_names: tuple[str, ...], frames: int | None = None) -> dict:
    summary = matrix.summary()
    result = {"miou": round(summary["miou"], 4), "miou_present": round(summary["miou_present"], 4),
              "pixel_accuracy": round(summary["pixel_accuracy"], 4)}
    if frames is not None:
        result["frames"] = frames
    else:
        result["per_class_iou"] = {name: None if value is None else round(value, 4)
                                   for name, value in zip(class_names, summary["per_class_iou"])}
    return result


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    array = np.asarray(values, dtype=np.float64)
    result = {"count": int(array.size), "mean": round(float(array.mean()), 3), "max": round(float(array.max()), 3)}
    result.update({f"p{q}": round(float(np.percentile(array, q)), 3) for q in LATENCY_PERCENTILES})
    return result


# --------------------------------------------------------------------------------------------
# the evaluation


class Evaluation:
    """Everything collected for the report, whoever produces the frames (offline pipeline or live node).

    Times are bag seconds (the node clock). ``timing_measure`` names what ``frame_ms`` holds: the
    pipeline's processing time per frame (offline) or the node's end-to-end latency (live).
    """

    timing_measure = "processing"

    def __init__(self, bag_path: Path, params: PerceptionParams, class_names: tuple[str, ...], *,
                 labels_topic: str, faults: list[Fault], sample_count: int) -> None:
        self.bag_path = bag_path
        self.params = params
        self.class_names = tuple(class_names)
        self.labels_topic = labels_topic
        self.faults = faults
        self.sample_count = sample_count
        self.topics = input_topics(params)
        self.frames: list[FrameRecord] = []
        self.frame_ms: list[float] = []
        self.accuracy = Accumulator(len(self.class_names))
        self.samples: list[Sample] = []
        self._sampled_windows: set[str] = set()
        self._pending_outputs: dict[int, tuple[int, np.ndarray]] = {}
        self._labels: dict[int, np.ndarray] = {}
        self.message_times: dict[str, list[float]] = {sensor: [] for sensor in SENSORS}
        self.message_counts: dict[str, int] = {}
        self.transitions: list[dict] = []
        self._states: dict[str, SensorState] = {}
        self.failures: list[str] = []
        self.unknown_pixel_fraction: list[float] = []
        self.end_s = 0.0

    def note_message(self, topic: str, now: float) -> None:
        """Count a bag message; remember when each sensor's messages came (for the STALE delays)."""
        self.message_counts[topic] = self.message_counts.get(topic, 0) + 1
        for sensor in SENSORS:
            if self.topics[sensor] == topic:
                self.message_times[sensor].append(now)

    def note_state(self, now: float, modality: str, state: SensorState, message: str) -> None:
        """A sensor's health at ``now`` (s); kept when it changed."""
        if self._states.get(modality) is not state:
            self._states[modality] = state
            self.transitions.append({"time_s": round(now, 6), "modality": modality, "state": state.value,
                                     "message": message})

    def add_frame(self, stamp_ns: int, source: str, fed: tuple[str, ...], reasons: dict[str, str],
                  frame_ms: float | None,
                  labels: np.ndarray, confidence: np.ndarray | None, rgb: np.ndarray | None) -> None:
        """One output frame: header stamp (ns), trigger ("camera" / "timer"), modalities fed, why the others were
        not, its time (ms; None when measured elsewhere), class ids uint8 [H, W], confidence float32 [H, W] and
        the camera RGB (or None)."""
        stamp_s = stamp_ns * 1e-9
        windows = [fault.name for fault in self.faults if fault.covers(stamp_s)] or [NOMINAL]
        record = FrameRecord(round(stamp_s, 9), source, modality_code(fed), windows, dict(sorted(reasons.items())))
        self.frames.append(record)
        if frame_ms is not None:
            self.frame_ms.append(frame_ms)
        self._maybe_sample(record, stamp_ns, labels, confidence, rgb)
        if self.labels_topic:
            self._pending_outputs[stamp_ns] = (len(self.frames) - 1, labels)
            self._match(stamp_ns)

    def _maybe_sample(self, record: FrameRecord, stamp_ns: int, labels: np.ndarray, confidence: np.ndarray | None,
                      rgb: np.ndarray | None) -> None:
        if len(self.samples) >= self.sample_count:
            return
        for name in record.windows:
            fault = next((fault for fault in self.faults if fault.name == name), None)
            if name in self._sampled_windows or (fault is not None
                                                 and record.stamp_s < (fault.start_s + fault.end_s) / 2):
                continue
            self._sampled_windows.add(name)
            self.samples.append(Sample(stamp_ns, f"{record.stamp_s:.2f} s, fed {record.fed}\n{name}",
                                       None if rgb is None else rgb.copy(), labels.copy(),
                                       np.zeros(labels.shape, np.float32) if confidence is None else confidence.copy(),
                                       self._labels.get(stamp_ns)))
            return

    def add_label(self, message) -> None:
        """A ground-truth label image (mono8 class ids), matched to the frame of the same stamp."""
        try:
            labels = image_to_numpy(message, topic=self.labels_topic)
        except MessageError as error:
            self.failures.append(f"ground truth: {error}")
            return
        if labels.ndim == 3:
            labels = labels[:, :, 0]
        key = _stamp_key(message.header)
        self._labels[key] = labels
        for sample in self.samples:
            if sample.label is None and sample.stamp_ns == key:
                sample.label = labels
        self._match(key)
        horizon = key - 10 * 1_000_000_000
        for old in [stamp for stamp in self._labels if stamp < horizon]:
            del self._labels[old]

    def _match(self, key: int) -> None:
        if key not in self._labels or key not in self._pending_outputs:
            return
        index, prediction = self._pending_outputs.pop(key)
        label = self._labels.pop(key)
        if label.shape != prediction.shape:
            label = cv2.resize(label, prediction.shape[::-1], interpolation=cv2.INTER_NEAREST)
        unknown = prediction == IGNORE_INDEX
        self.unknown_pixel_fraction.append(float(unknown.mean()))
        out_of_range = (label >= len(self.class_names)) & (label != IGNORE_INDEX)
        if out_of_range.any() and "ground truth: class ids" not in " ".join(self.failures):
            self.failures.append(f"ground truth: class ids {sorted(set(label[out_of_range].tolist()))} are not below "
                                 f"{len(self.class_names)}; those pixels are ignored")
        label = np.where(unknown | out_of_range, IGNORE_INDEX, label)
        matrix = ConfusionMatrix(len(self.class_names))
        matrix.update(torch.from_numpy(prediction.astype(np.int64)), torch.from_numpy(label.astype(np.int64)))
        record = self.frames[index]
        summary = matrix.summary()
        record.miou, record.pixel_accuracy = round(summary["miou_present"], 4), round(summary["pixel_accuracy"], 4)
        self.accuracy.add(matrix, record.windows, record.fed)

    # ------------------------------------------------------------------ results

    def fault_results(self) -> list[dict]:
        """Per fault: the sensor's last message before it (drop) or first frozen message (freeze), when the
        pipeline called the sensor STALE and the delay (s), the worst state in the window and recovery."""
        results = []
        for fault in self.faults:
            modality = MODALITY_OF_SENSOR[fault.sensor]
            times = self.message_times.get(fault.sensor, [])
            horizon = fault.end_s + self.params[f"{fault.sensor}.dead_after_s"]
            if fault.kind == "drop":
                before = [t for t in times if t < fault.start_s]
                reference = before[-1] if before else None
            elif fault.kind == "freeze":
                inside = [t for t in times if t >= fault.start_s]
                reference = inside[0] if inside else None
            else:
                reference = None
            history = [item for item in self.transitions if item["modality"] == modality]
            state_at_start = next((item["state"] for item in reversed(history) if item["time_s"] <= fault.start_s),
                                  None)
            in_window = [item["state"] for item in history if fault.start_s < item["time_s"] < fault.end_s]
            states = [state for state in [state_at_start, *in_window] if state is not None]
            worst = max(states, key=lambda state: SensorState(state).severity) if states else None
            stale_at = next((item["time_s"] for item in history if fault.start_s <= item["time_s"] <= horizon
                             and SensorState(item["state"]).severity >= STALE_SEVERITY), None)
            recovered_at = next((item["time_s"] for item in history if item["time_s"] >= fault.end_s
                                 and SensorState(item["state"]).severity < STALE_SEVERITY), None)
            results.append({
                "name": fault.name, "kind": fault.kind, "sensor": fault.sensor, "start_s": fault.start_s,
                "end_s": fault.end_s, "reference_message_s": None if reference is None else round(reference, 6),
                "stale_at_s": stale_at,
                "stale_delay_s": (round(stale_at - reference, 6)
                                  if stale_at is not None and reference is not None else None),
                "worst_state": worst, "recovered_at_s": recovered_at if stale_at is not None else None,
            })
        return results

    def model_counters(self) -> dict:
        """The node's frame counters (frames_dropped, camera_frames...), from its /diagnostics model status."""
        return {}

    def results(self) -> dict:
        has_truth = self.accuracy.overall.matrix.sum().item() > 0
        camera_period_ms = 1e3 / self.params["camera.expected_rate_hz"]
        counters = self.model_counters()
        camera_messages = self.message_counts.get(self.topics["camera"], 0)
        frames = {
            "total": len(self.frames),
            "camera": sum(frame.source == "camera" for frame in self.frames),
            "timer": sum(frame.source == "timer" for frame in self.frames),
            "camera_messages": camera_messages,
            "camera_messages_without_frame": max(camera_messages - sum(frame.source == "camera"
                                                                       for frame in self.frames), 0),
            "scored": sum(frame.miou is not None for frame in self.frames),
            "unmatched_outputs": len(self._pending_outputs) if self.labels_topic else None,
            "failed": len(self.failures),
            **{f"pipeline_{key}": value for key, value in counters.items()},
        }
        result = {
            "bag": str(self.bag_path),
            "ground_truth_topic": self.labels_topic or None,
            "topics": self.topics,
            "message_counts": dict(sorted(self.message_counts.items())),
            "frames": frames,
            "accuracy": _summary(self.accuracy.overall, self.class_names) if has_truth else None,
            "accuracy_by_window": ({name: _summary(matrix, self.class_names, self.accuracy.frames_by_window[name])
                                    for name, matrix in sorted(self.accuracy.by_window.items())}
                                   if has_truth else None),
            "accuracy_by_modalities": ({code: _summary(matrix, self.class_names,
                                                       self.accuracy.frames_by_modalities[code])
                                        for code, matrix in sorted(self.accuracy.by_modalities.items())}
                                       if has_truth else None),
            "frames_by_modalities": _count(frame.fed for frame in self.frames),
            "unknown_pixel_fraction": (round(float(np.mean(self.unknown_pixel_fraction)), 6)
                                       if self.unknown_pixel_fraction else None),
            "faults": self.fault_results(),
            "state_transitions": self.transitions,
            "per_frame": [{"stamp_s": frame.stamp_s, "source": frame.source, "fed": frame.fed,
                           "windows": frame.windows, "miou": frame.miou, "pixel_accuracy": frame.pixel_accuracy,
                           "absent": frame.reasons} for frame in self.frames],
            "failures": self.failures,
            "timing": {
                "measure": self.timing_measure,
                "frame_ms": _percentiles(self.frame_ms),
                "late_threshold_ms": round(camera_period_ms, 3),
                "late_frames": sum(value > camera_period_ms for value in self.frame_ms),
                "per_frame_ms": [round(value, 3) for value in self.frame_ms],
            },
        }
        return result


class OfflineEvaluation(Evaluation):
    """Drives one ``PerceptionPipeline`` over a bag in timestamp order (node clock = bag time)."""

    def __init__(self, bag_path: Path, params: PerceptionParams, segmenter, **kwargs) -> None:
        super().__init__(bag_path, params, segmenter.class_names, **kwargs)
        self.pipeline = PerceptionPipeline(params, segmenter, logger=logging.getLogger("evaluate_bag"))

    @property
    def active_sensors(self) -> tuple[str, ...]:
        return self.pipeline.active_sensors

    def run(self, bag: BagReader) -> None:
        pipeline = self.pipeline
        handlers = {self.topics[sensor]: handler for sensor, handler in (
            ("camera", pipeline.on_camera), ("depth", pipeline.on_depth), ("lidar", pipeline.on_lidar),
            ("events", pipeline.on_events)) if sensor in pipeline.active_sensors}
        wanted = [*handlers, self.topics["camera_info"]] + ([self.labels_topic] if self.labels_topic else [])
        period_ns = int(round(self.params["health.check_period_s"] * 1e9))
        next_timer_ns = None
        last_ns = 0
        for topic, timestamp_ns, message in bag.messages(wanted):
            if next_timer_ns is None:
                next_timer_ns = timestamp_ns + period_ns
            while next_timer_ns <= timestamp_ns:
                self._on_timer(next_timer_ns)
                next_timer_ns += period_ns
            now = timestamp_ns * 1e-9
            last_ns = timestamp_ns
            self.note_message(topic, now)
            if topic == self.labels_topic:
                self.add_label(message)
            elif topic == self.topics["camera_info"]:
                pipeline.on_camera_info(message, now)
            else:
                self._process(handlers[topic](message, now), now)
        if next_timer_ns is None:
            raise BagError(f"bag {self.bag_path}: no messages on {', '.join(wanted)}")
        flush_until_ns = last_ns + int(round((self.params["sync.camera_wait_s"] + 2 * self.params[
            "health.check_period_s"]) * 1e9))
        while next_timer_ns <= flush_until_ns:
            self._on_timer(next_timer_ns)
            next_timer_ns += period_ns
        self.end_s = flush_until_ns * 1e-9

    def _on_timer(self, timestamp_ns: int) -> None:
        now = timestamp_ns * 1e-9
        self._process(self.pipeline.on_timer(now), now)
        for modality, status in self.pipeline.health.statuses(now).items():
            self.note_state(now, modality, status.state, status.message)

    def _process(self, job: FrameJob | None, now: float) -> None:
        if job is None:
            return
        start = time.perf_counter()
        try:
            output = self.pipeline.process(job, with_color=False)
        except Exception as error:  # like the node: one bad frame is counted, the run goes on
            self.pipeline.count_failure(error, now)
            self.failures.append(f"{type(error).__name__}: {error}")
            return
        processing_ms = (time.perf_counter() - start) * 1e3
        if output is None:
            return
        self.pipeline.record_published(output, processing_ms, 0.0)
        self.add_frame(_stamp_key(output.header), "camera" if job.frame.entries["rgb"] is not None else "timer",
                       output.fed, output.reasons, processing_ms, output.labels, output.confidence,
                       output.encoded.get("rgb"))

    def model_counters(self) -> dict:
        """Frame counters from the pipeline's /diagnostics model status (dropped, skipped, failed...)."""
        return counters_from_diagnostics(self.pipeline.diagnostics(self.end_s))


def counters_from_diagnostics(diagnostics) -> dict:
    """Frame counters (frames_dropped, camera_frames...) of the "robustseg: model" status; {} if absent."""
    model = next((status for status in diagnostics.status if status.name.endswith("model")), None)
    values = {} if model is None else {item.key: item.value for item in model.values}
    keys = ("frames_dropped", "frames_skipped", "frames_failed", "camera_frames", "timer_frames",
            "late_camera_frames_dropped", "stale_camera_frames_dropped", "unsynchronised_messages")
    return {key: int(values[key]) for key in keys if key in values}


class LiveEvaluation(Evaluation):
    """Replays the bag over DDS with ``/clock`` into a perception node on sim time and records what it publishes.

    ``node_name``: the node's fully qualified name (its outputs are ``<node_name>/segmentation`` ...).
    Frames are the node's ``~/segmentation`` messages joined by stamp with ``~/confidence`` and
    ``~/sensor_status``; sensor health comes from ``/diagnostics`` (stamped with the node clock = bag
    time); ``frame_ms`` holds the node's ``~/latency_ms``.
    """

    timing_measure = "latency"
    CAMERA_IMAGES_KEPT = 100
    #: Seconds to wait, once the camera is matched, for the node's other subscriptions.
    SUBSCRIPTION_GRACE_S = 5.0
    #: Seconds after the publishers see every subscriber, for the subscribers to match the publishers too.
    MATCH_SETTLE_S = 0.3

    def __init__(self, bag_path: Path, params: PerceptionParams, class_names: tuple[str, ...], *, context,
                 node_name: str, **kwargs) -> None:
        super().__init__(bag_path, params, class_names, **kwargs)
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float32

        self.context = context
        self.node = Node("bag_evaluator", context=context)
        self._lock = threading.Lock()
        self._partial: dict[int, dict] = {}
        self._camera_rgb: dict[int, np.ndarray] = {}
        self._camera_stamps: set[int] = set()
        self._model_diagnostics = None
        prefix = absolute_topic(node_name).rstrip("/")
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for name, message_type in (("segmentation", Image), ("confidence", Image), ("sensor_status", DiagnosticArray)):
            self.node.create_subscription(message_type, f"{prefix}/{name}",
                                          lambda msg, kind=name: self._on_output(kind, msg), qos)
        self.node.create_subscription(Float32, f"{prefix}/latency_ms", self._on_latency, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos)

    def observe(self, topic: str, timestamp_ns: int, message) -> None:
        """Every bag message as the player reads it: counts, ground truth, camera images for the samples."""
        with self._lock:
            self.note_message(topic, timestamp_ns * 1e-9)
            self.end_s = max(self.end_s, timestamp_ns * 1e-9)
            if topic == self.labels_topic:
                self.add_label(message)
            elif topic == self.topics["camera"]:
                key = _stamp_key(message.header)
                self._camera_stamps.add(key)
                try:
                    self._camera_rgb[key] = camera_image_to_rgb(message, topic=topic)
                except MessageError:
                    return
                while len(self._camera_rgb) > self.CAMERA_IMAGES_KEPT:
                    del self._camera_rgb[next(iter(self._camera_rgb))]

    def _on_output(self, kind: str, message) -> None:
        with self._lock:
            key = _stamp_key(message.header)
            part = self._partial.setdefault(key, {})
            part[kind] = message
            if len(part) == 3:
                self._finish(key)

    def _finish(self, key: int) -> None:
        part = self._partial.pop(key)
        if "segmentation" not in part or "sensor_status" not in part:
            return
        try:
            labels = image_to_numpy(part["segmentation"])
            confidence = image_to_numpy(part["confidence"]) if "confidence" in part else None
        except MessageError as error:
            self.failures.append(f"node output: {error}")
            return
        fed, reasons = [], {}
        for status in part["sensor_status"].status:
            modality = next((item.value for item in status.values if item.key == "modality"), None)
            if modality is None:
                continue
            if status.message == "fed":
                fed.append(modality)
            else:
                reasons[modality] = status.message
        self.add_frame(key, "camera" if key in self._camera_stamps else "timer", tuple(fed), reasons, None, labels,
                       confidence, self._camera_rgb.get(key))

    def _on_latency(self, message) -> None:
        with self._lock:
            self.frame_ms.append(float(message.data))

    def _on_diagnostics(self, message) -> None:
        now = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
        with self._lock:
            for status in message.status:
                if status.name.endswith("model"):
                    self._model_diagnostics = message
                    continue
                values = {item.key: item.value for item in status.values}
                modality, level = values.get("modality"), status.level[0] if status.level else 0
                if modality is None or values.get("state") == "DISABLED" or level not in DIAGNOSTIC_STATES:
                    continue
                self.note_state(now, modality, DIAGNOSTIC_STATES[level], status.message)

    def run(self, *, rate: float, wait_for_node_s: float, settle_s: float, spin_also=()) -> None:
        """Wait for the node to subscribe, replay the whole bag, then wait ``settle_s`` (s) for its last outputs.
        ``spin_also``: nodes of this context to spin with the recorder (an in-process perception node)."""
        from rclpy.executors import SingleThreadedExecutor

        from robustseg_ros.replay_bag import BagPlayer

        executor = SingleThreadedExecutor(context=self.context)
        for node in (self.node, *spin_also):
            executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        player = BagPlayer(self.bag_path, context=self.context, rate=rate, clock=True, observer=self.observe)
        try:
            self._wait_for_subscriptions(player, wait_for_node_s)
            player.play()
            time.sleep(settle_s)
        finally:
            player.close()
            executor.shutdown()
            spinner.join(5.0)
        with self._lock:
            for key in sorted(self._partial):
                self._finish(key)

    def _wait_for_subscriptions(self, player, wait_for_node_s: float) -> None:
        """Wait until the node subscribes to the camera (error after ``wait_for_node_s``), then until it also
        subscribes to /clock and every other enabled input (a note on stderr names those still unmatched
        after ``SUBSCRIPTION_GRACE_S``: a node that does not use a sensor never subscribes to it)."""
        camera_topic = self.topics["camera"]
        wanted = {camera_topic, self.topics["camera_info"]}
        wanted.update(self.topics[sensor] for sensor in SENSORS if self.params[f"{sensor}.enabled"])
        publishers = {topic: player.publishers[topic] for topic in wanted if topic in player.publishers}
        if player.clock_publisher is not None:
            publishers["/clock"] = player.clock_publisher

        def unmatched() -> list[str]:
            return sorted(topic for topic, publisher in publishers.items() if publisher.get_subscription_count() == 0)

        deadline = time.monotonic() + wait_for_node_s
        while camera_topic in unmatched():
            if time.monotonic() > deadline:
                raise BagError(f"bag {self.bag_path}: no node subscribed to {camera_topic} within "
                               f"{wait_for_node_s} s; start perception_node with -p use_sim_time:=true on this "
                               "ROS_DOMAIN_ID (or pass --spawn-node)")
            time.sleep(0.05)
        deadline = time.monotonic() + self.SUBSCRIPTION_GRACE_S
        while unmatched() and time.monotonic() < deadline:
            time.sleep(0.05)
        if unmatched():
            print(f"evaluate_bag: no subscriber on {', '.join(unmatched())} after {self.SUBSCRIPTION_GRACE_S} s "
                  "(an input the node's model does not use); replaying anyway", file=sys.stderr)
        time.sleep(self.MATCH_SETTLE_S)

    def model_counters(self) -> dict:
        return {} if self._model_diagnostics is None else counters_from_diagnostics(self._model_diagnostics)

    def close(self) -> None:
        self.node.destroy_node()


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------------------------
# report


def write_plots(evaluation: OfflineEvaluation, result: dict, output: Path, start_s: float) -> dict[str, str]:
    """miou_over_time.png, latency_histogram.png and samples.png in ``output``; returns name -> file name."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    files = {}
    figure, axis = plt.subplots(figsize=(12, 3.5))
    colors = plt.get_cmap("tab10")
    for index, fault in enumerate(evaluation.faults):
        axis.axvspan(fault.start_s - start_s, fault.end_s - start_s, color=colors(index % 10), alpha=0.2,
                     label=fault.name)
    times = [frame.stamp_s - start_s for frame in evaluation.frames]
    if result["accuracy"] is not None:
        scored = [(t, frame.miou) for t, frame in zip(times, evaluation.frames) if frame.miou is not None]
        axis.plot([t for t, _ in scored], [value for _, value in scored], "k.-", label="frame mIoU (present classes)")
        axis.set_ylabel("mIoU (%)")
    else:
        axis.step(times, [len(frame.fed.strip("-")) for frame in evaluation.frames], "k-", where="post",
                  label="modalities fed")
        axis.set_ylabel("modalities fed")
    axis.set_xlabel("bag time (s)")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axis.set_title("mIoU over time" if result["accuracy"] is not None else "modalities fed over time")
    figure.tight_layout()
    figure.savefig(output / "miou_over_time.png", dpi=100)
    plt.close(figure)
    files["miou_over_time"] = "miou_over_time.png"

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(result["timing"]["per_frame_ms"] or [0.0], bins=30, color="tab:blue")
    axis.axvline(result["timing"]["late_threshold_ms"], color="tab:red", linestyle="--", label="camera period")
    axis.set_xlabel(TIMING_LABELS[result["timing"]["measure"]])
    axis.set_ylabel("frames")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(output / "latency_histogram.png", dpi=100)
    plt.close(figure)
    files["latency_histogram"] = "latency_histogram.png"

    if evaluation.samples:
        rows = len(evaluation.samples)
        figure, axes = plt.subplots(rows, 4, figsize=(10, 2.6 * rows), squeeze=False)
        for row, sample in enumerate(evaluation.samples):
            blank = np.zeros((*sample.prediction.shape, 3), np.uint8)
            panels = (("RGB", sample.rgb if sample.rgb is not None else blank),
                      ("label", colorize(sample.label) if sample.label is not None else blank),
                      ("prediction", colorize(sample.prediction)), ("confidence", sample.confidence))
            for column, (name, image) in enumerate(panels):
                axes[row][column].imshow(image, vmin=0.0, vmax=1.0, cmap="viridis" if image.ndim == 2 else None)
                axes[row][column].set_axis_off()
                axes[row][column].set_title(f"{name}: {sample.title}" if column == 0 else name, fontsize=7, loc="left")
        figure.tight_layout()
        figure.savefig(output / "samples.png", dpi=100)
        plt.close(figure)
        files["samples"] = "samples.png"
    return files


def report_markdown(result: dict, files: dict[str, str]) -> str:
    lines = [f"# Bag evaluation: `{result['bag']}`", "",
             f"Checkpoint `{result['checkpoint']}` on `{result['device']}`; ground truth: "
             f"`{result['ground_truth_topic'] or 'none (no accuracy)'}`.", ""]
    frames = result["frames"]
    lines += ["## Frames", "", "| frames | camera | timer | scored | camera messages | without frame | "
              "dropped | skipped | failed |", "|---|---|---|---|---|---|---|---|---|",
              f"| {frames['total']} | {frames['camera']} | {frames['timer']} | {frames['scored']} | "
              f"{frames['camera_messages']} | {frames['camera_messages_without_frame']} | "
              f"{frames.get('pipeline_frames_dropped', 0)} | {frames.get('pipeline_frames_skipped', 0)} | "
              f"{frames['failed']} |", ""]
    if result["accuracy"] is not None:
        accuracy = result["accuracy"]
        lines += ["## Accuracy", "", f"mIoU {accuracy['miou']:.2f} % (all 25 classes), "
                  f"{accuracy['miou_present']:.2f} % (classes present), pixel accuracy "
                  f"{accuracy['pixel_accuracy']:.2f} %.", "",
                  "| window | frames | mIoU present (%) | pixel acc. (%) |", "|---|---|---|---|"]
        lines += [f"| {name} | {value['frames']} | {value['miou_present']:.2f} | {value['pixel_accuracy']:.2f} |"
                  for name, value in result["accuracy_by_window"].items()]
        lines += ["", "| modalities fed | frames | mIoU present (%) | pixel acc. (%) |", "|---|---|---|---|"]
        lines += [f"| {code} | {value['frames']} | {value['miou_present']:.2f} | {value['pixel_accuracy']:.2f} |"
                  for code, value in result["accuracy_by_modalities"].items()]
        lines.append("")
    else:
        lines += ["## Modalities fed", "", "| modalities | frames |", "|---|---|"]
        lines += [f"| {code} | {count} |" for code, count in result["frames_by_modalities"].items()]
        lines.append("")
    if result["faults"]:
        lines += ["## Faults", "", "| fault | reference message (s) | STALE at (s) | delay (s) | worst state | "
                  "recovered at (s) |", "|---|---|---|---|---|---|"]
        for fault in result["faults"]:
            lines.append(f"| {fault['name']} | {_text(fault['reference_message_s'])} | {_text(fault['stale_at_s'])} | "
                         f"{_text(fault['stale_delay_s'])} | {fault['worst_state'] or '-'} | "
                         f"{_text(fault['recovered_at_s'])} |")
        lines.append("")
    timing = result["timing"]["frame_ms"]
    if timing["count"]:
        lines += [f"## {TIMING_LABELS[result['timing']['measure']].capitalize()}", "",
                  "| mean | p50 | p90 | p95 | p99 | max | late frames |",
                  "|---|---|---|---|---|---|---|",
                  f"| {timing['mean']} | {timing['p50']} | {timing['p90']} | {timing['p95']} | {timing['p99']} | "
                  f"{timing['max']} | {result['timing']['late_frames']} (> {result['timing']['late_threshold_ms']} "
                  "ms) |", ""]
    captions = {"miou_over_time": "Accuracy over time (fault windows shaded)",
                "latency_histogram": TIMING_LABELS[result["timing"]["measure"]].capitalize(),
                "samples": "Sample frames"}
    for key, name in files.items():
        lines += [f"### {captions[key]}", "", f"![{captions[key]}]({name})", ""]
    return "\n".join(lines)


def _text(value) -> str:
    return "-" if value is None else f"{value:.3f}"


# --------------------------------------------------------------------------------------------
# command line


def read_fault_record(bag: BagReader, timeline_topic: str) -> dict:
    """The fault timeline record from ``timeline_topic`` or the bag folder's ``fault_timeline.json``; {} if none."""
    if timeline_topic and timeline_topic in bag.topics:
        for _, _, message in bag.messages([timeline_topic]):
            return json.loads(message.data)
    sidecar = bag.path / TIMELINE_FILE if bag.path.is_dir() else bag.path.with_name(TIMELINE_FILE)
    if sidecar.is_file():
        return json.loads(sidecar.read_text())
    return {}


def resolve_parameters(args, record: dict) -> PerceptionParams:
    values = dict(PARAMETER_DEFAULTS)
    if args.params_file:
        values.update(load_params_file(args.params_file))
    if not args.ignore_rig:
        values.update({name: tuple(value) if isinstance(value, list) else value
                       for name, value in record.get("rig_parameters", {}).items()})
    for text in args.param:
        name, value = parse_override(text)
        values[name] = value
    if args.checkpoint:
        values["checkpoint"] = args.checkpoint
    if args.device:
        values["device"] = args.device
    return PerceptionParams(values)


def input_topics(params: PerceptionParams) -> dict[str, str]:
    """Absolute topic of every sensor input and of ``camera_info``, as the node resolves them."""
    topics = {sensor: absolute_topic(params[f"{sensor}.topic"]) for sensor in SENSORS}
    topics["camera_info"] = absolute_topic(params["camera.info_topic"])
    return topics


def check_sensor_topics(bag: BagReader, topics: dict[str, str], sensors: list[str]) -> None:
    """``BagError`` naming the sensor topics (and CameraInfo) absent from the bag, with the parameters to fix it."""
    sensors = [*sensors, "camera_info"]
    try:
        bag.require([topics[sensor] for sensor in sensors], what="sensor")
    except BagError as error:
        absent = [sensor for sensor in sensors if topics[sensor] not in bag.topics]
        hints = [f"-p {sensor}.topic:=/name or -p {sensor}.enabled:=false" if sensor != "camera_info"
                 else "-p camera.info_topic:=/name" for sensor in absent]
        raise BagError(f"{error}. Point the node at the bag's topics or disable the sensor: "
                       f"{'; '.join(hints)}") from error


def load_segmenter(params: PerceptionParams) -> tuple[Path, Segmenter]:
    """The checkpoint path and a ``Segmenter`` built from the node's parameters, as the node builds it."""
    checkpoint = resolve_checkpoint(params["checkpoint"])
    torch.manual_seed(0)
    return checkpoint, Segmenter(checkpoint, device=params["device"], fp16=None if params["fp16"] else False,
                                 short_side=params["short_side"] or None, convention=params["missing_convention"])


def run_live(args, bag_path: Path, params: PerceptionParams, **kwargs) -> tuple[LiveEvaluation, dict]:
    """Live mode: replay into a node (spawned in-process with ``--spawn-node``) and record its outputs."""
    import rclpy
    from rclpy.parameter import Parameter

    context = rclpy.Context()
    context.init(args=["evaluate_bag", *args.ros_args])
    node = None
    try:
        if args.spawn_node:
            from robustseg_ros.perception_node import PerceptionNode

            overrides = [Parameter("use_sim_time", value=True)]
            overrides += [Parameter(name, value=value) for name, value in params.values.items()
                          if value != PARAMETER_DEFAULTS[name]]
            node = PerceptionNode(context=context, parameter_overrides=overrides)
            class_names, node_name = node.segmenter.class_names, node.get_fully_qualified_name()
            extra = {"checkpoint": str(resolve_checkpoint(params["checkpoint"])), "device": str(node.segmenter.device)}
        else:
            class_names, node_name = CLASS_NAMES, args.node_name
            extra = {"checkpoint": "(the running node's)", "device": "(the running node's)"}
        evaluation = LiveEvaluation(bag_path, params, class_names, context=context, node_name=node_name, **kwargs)
        try:
            evaluation.run(rate=args.rate, wait_for_node_s=args.wait_for_node, settle_s=args.settle,
                           spin_also=[node] if node is not None else [])
        finally:
            evaluation.close()
    finally:
        if node is not None:
            node.destroy_node()
        context.try_shutdown()
    return evaluation, {**extra, "node": node_name, "rate": args.rate}


def evaluate(args) -> dict:
    """Evaluate ``args.bag`` (offline, or live with ``--mode live``); writes the JSON, report and plots and
    returns the JSON dict."""
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    bag_path = Path(args.bag)
    output = Path(args.output) if args.output else bag_path.with_name(bag_path.name + "_evaluation")
    with BagReader(bag_path) as bag:
        record = read_fault_record(bag, args.timeline_topic)
        params = resolve_parameters(args, record)
        options = {"faults": faults_from_record(record), "sample_count": args.samples,
                   "labels_topic": args.labels_topic if args.labels_topic in bag.topics else ""}
        if args.labels_topic and not options["labels_topic"] and args.labels_topic != DEFAULT_TOPICS["labels"]:
            bag.require([args.labels_topic], what="ground-truth")
        start_s, storage = bag.start_ns * 1e-9, bag.storage
        if args.mode == "offline":
            checkpoint, segmenter = load_segmenter(params)
            evaluation = OfflineEvaluation(bag_path, params, segmenter, **options)
            check_sensor_topics(bag, evaluation.topics, list(evaluation.pipeline.active_sensors))
            evaluation.run(bag)
            extra = {"checkpoint": str(checkpoint), "device": str(segmenter.device)}
        else:
            check_sensor_topics(bag, input_topics(params), [sensor for sensor in SENSORS if params[f"{sensor}.enabled"]])
    if args.mode == "live":
        evaluation, extra = run_live(args, bag_path, params, **options)
    result = evaluation.results()
    result.update({**extra, "mode": args.mode, "storage": storage, "bag_start_s": round(start_s, 9),
                   "faults_source": record.get("generator", "none")})
    output.mkdir(parents=True, exist_ok=True)
    files = write_plots(evaluation, result, output, start_s) if not args.no_plots else {}
    result["report_files"] = {"json": "metrics.json", "markdown": "report.md", **files}
    write_text_atomic(output / "report.md", report_markdown(result, files))
    write_text_atomic(output / "metrics.json", json.dumps(result, indent=1, sort_keys=True, allow_nan=False) + "\n")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate_bag", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("bag", help="rosbag2 folder (or a single .mcap / .db3 file)")
    parser.add_argument("--output", "-o", default="", help="output folder; default <bag>_evaluation next to the bag")
    parser.add_argument("--checkpoint", default="", help="checkpoint (.pt); default the params' / packaged one")
    parser.add_argument("--device", default="", help="cpu, cuda, cuda:N or auto; default the params' (auto)")
    parser.add_argument("--params-file", default="", help="perception_node params YAML (config/perception.yaml)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="node parameter override, repeatable (e.g. -p lidar.topic:=/velodyne_points)")
    parser.add_argument("--labels-topic", default=DEFAULT_TOPICS["labels"],
                        help="ground-truth mono8 label topic; '' for none")
    parser.add_argument("--timeline-topic", default=DEFAULT_TOPICS["fault_timeline"],
                        help="fault timeline topic (std_msgs/String JSON)")
    parser.add_argument("--ignore-rig", action="store_true",
                        help="do not apply the rig parameters recorded in the bag's fault timeline")
    parser.add_argument("--samples", type=int, default=6, help="sample frames in samples.png (one per window)")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="CPU threads for torch (torch.set_num_threads); 0: torch's default")
    parser.add_argument("--mode", choices=("offline", "live"), default="offline",
                        help="offline: the pipeline in-process, deterministic; live: replay over DDS with /clock into "
                             "a perception node on sim time and record its outputs")
    parser.add_argument("--spawn-node", action="store_true",
                        help="live: run perception_node in this process (use_sim_time, the resolved parameters)")
    parser.add_argument("--node-name", default="/perception_node",
                        help="live: fully qualified name of the running node (its outputs are <name>/segmentation...)")
    parser.add_argument("--rate", type=float, default=1.0, help="live: replay speed factor")
    parser.add_argument("--wait-for-node", type=float, default=30.0,
                        help="live: seconds to wait for the node to subscribe to the camera topic")
    parser.add_argument("--settle", type=float, default=2.0, help="live: seconds to wait for outputs after the replay")
    parser.add_argument("--no-plots", action="store_true", help="JSON and Markdown only")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console script ``evaluate_bag``; 0 on success, 1 (message on stderr) when the bag or settings are unusable."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown and unknown[0] != "--ros-args":
        build_parser().error(f"unrecognized arguments: {' '.join(unknown)}")
    args.ros_args = unknown
    try:
        result = evaluate(args)
    except (BagError, FileNotFoundError, ValueError) as error:
        print(f"evaluate_bag: {error}", file=sys.stderr)
        return 1
    accuracy = result["accuracy"]
    summary = f"mIoU {accuracy['miou']:.2f} %" if accuracy else "no ground truth"
    print(f"evaluate_bag: {result['frames']['total']} frames, {summary}; report in "
          f"{Path(args.output) if args.output else Path(args.bag).with_name(Path(args.bag).name + '_evaluation')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a bag evaluation collects and the metrics it reports, whoever produced the frames (the offline
pipeline, ``offline.OfflineEvaluation``, or a live node, ``live.LiveEvaluation``).

``Evaluation`` takes the output frames (header stamp, the modalities that fed them, class ids,
confidence), the ground-truth label images (matched to frames by header stamp), every bag message's
time and the sensors' health transitions, and turns them into the ``metrics.json`` dict
(``results()``, fields in docs/bags.md): accuracy overall, per fault window and per set of modalities
fed (confusion matrices, mIoU as in ``robustseg_core.evaluation``), the fault timeline analysis (how
long each faulty sensor took to be declared STALE, or DEGRADED, and when it recovered; the accuracy in
each window as configured, with and without fusing the DEGRADED sensor), false alarms (DEGRADED outside every fault
window of a sensor) and timing percentiles. Times are bag seconds (the node clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sensor_msgs.msg import Image

from robustseg_core.classes import IGNORE_INDEX, combination_name, list_difference
from robustseg_core.data.transforms import resize_nearest
from robustseg_core.evaluation.metrics import ConfusionMatrix
from robustseg_ros.bagtools.bag_io import BagError
from robustseg_ros.bagtools.faults import QUALITY_FAULT_KINDS, Fault
from robustseg_ros.conversions import (
    MessageError,
    image_to_numpy,
    nanoseconds_to_seconds,
    seconds_to_nanoseconds,
    stamp_to_nanoseconds,
)
from robustseg_ros.health import SensorState
from robustseg_ros.params import MODALITY_OF_SENSOR, SENSORS, PerceptionParams, absolute_topic

#: The window name of frames outside every fault window.
NOMINAL = "nominal"
LATENCY_PERCENTILES = (50, 90, 95, 99)
STALE_SEVERITY = SensorState.STALE.severity
DEGRADED_SEVERITY = SensorState.DEGRADED.severity
#: A sensor's messages up to this long (s) after one of its faults ends are not nominal: the target for clearing.
CLEAR_ALLOWANCE_S = 1.0
#: The choices for DEGRADED sensors the report compares: as ``health.fuse_degraded`` says, all fused, none fused.
POLICIES = ("configured", "fused", "not_fused")
#: Ground-truth images are kept this long (bag seconds) waiting for the frame of their stamp.
LABELS_KEPT_S = 10.0
#: Ground-truth encodings accepted -> the one ``image_to_numpy`` reads them as (8UC1 is mono8 and mono16 is
#: 16UC1 by another name). Values are class ids, 255 ignore; 16-bit labels must hold no value above 255.
LABEL_ENCODINGS = {"mono8": "mono8", "8UC1": "mono8", "mono16": "16UC1", "16UC1": "16UC1"}


def modality_code(fed: tuple[str, ...]) -> str:
    """"RDEL" style code of the modalities that fed a frame, in model order; "-" for none."""
    return combination_name(fed) or "-"


@dataclass
class FrameRecord:
    """One output frame: header stamp (s), trigger ("camera" or "timer"), modality code, accuracy when scored."""

    stamp_s: float
    source: str
    fed: str
    windows: list[str]
    reasons: dict[str, str]
    agreement: dict[str, float] = field(default_factory=dict)
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

    by_policy: dict[str, dict[str, ConfusionMatrix]] = field(default_factory=dict)
    frames_by_policy_scope: dict[str, int] = field(default_factory=dict)

    def add_policies(self, matrices: dict[str, ConfusionMatrix], windows: list[str], degraded: bool) -> None:
        """A frame's confusion matrix under each of ``POLICIES``, for the whole drive ("all"), for the frames with a
        DEGRADED sensor ("degraded", when ``degraded``) and for its windows."""
        for name in ("all", *(("degraded",) if degraded else ()), *windows):
            self.frames_by_policy_scope[name] = self.frames_by_policy_scope.get(name, 0) + 1
            table = self.by_policy.setdefault(name, {})
            for policy in POLICIES:
                table.setdefault(policy, ConfusionMatrix(self.num_classes)).matrix += matrices[policy].matrix

    def add(self, matrix: ConfusionMatrix, windows: list[str], code: str) -> None:
        self.overall.matrix += matrix.matrix
        for name in windows:
            self.by_window.setdefault(name, ConfusionMatrix(self.num_classes)).matrix += matrix.matrix
            self.frames_by_window[name] = self.frames_by_window.get(name, 0) + 1
        self.by_modalities.setdefault(code, ConfusionMatrix(self.num_classes)).matrix += matrix.matrix
        self.frames_by_modalities[code] = self.frames_by_modalities.get(code, 0) + 1


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


class Evaluation:
    """Everything collected for the report, whoever produces the frames (offline pipeline or live node).

    Times are bag seconds (the node clock). ``timing_measure`` names what ``frame_ms`` holds: the
    pipeline's processing time per frame (offline) or the node's end-to-end latency (live).

    The model's ``class_names`` must be the ground truth's: ``bag_classes`` (the class list a recorded drive
    stores in its timeline record) that differ in count or order are refused at once (``BagError``), and
    ground-truth ids past the model's classes set ``label_error`` (the caller refuses the results). A label
    image that holds no class ids (``LABEL_ENCODINGS``) is refused at once; one of another aspect ratio than
    the frames is refused at once, or (``refuse_at_once`` False) kept in ``label_error``.
    """

    timing_measure = "processing"
    #: Whether frames with a DEGRADED sensor are segmented under every one of ``POLICIES`` (offline only).
    compares_policies = False
    #: Whether a label that does not fit its frame raises ``BagError`` at once; False where frames are scored in
    #: callbacks that must not raise (live): the first such problem goes to ``label_error`` instead.
    refuse_at_once = True

    def __init__(self, bag_path: Path, params: PerceptionParams, class_names: tuple[str, ...], *,
                 labels_topic: str, faults: list[Fault], sample_count: int,
                 bag_classes: list[str] | None = None) -> None:
        if labels_topic and bag_classes is not None:
            difference = list_difference(class_names, bag_classes, ("checkpoint", "bag's ground truth"))
            if difference:
                raise BagError(f"bag {bag_path}: its ground truth does not match the checkpoint: {difference}")
        self.label_error: str | None = None
        self.bag_path = bag_path
        self.params = params
        self.class_names = tuple(class_names)
        self.labels_topic = labels_topic
        self.faults = faults
        self.sample_count = sample_count
        self.topics = params.topics(absolute_topic)
        self.frames: list[FrameRecord] = []
        self.frame_ms: list[float] = []
        self.accuracy = Accumulator(len(self.class_names))
        self.samples: list[Sample] = []
        self._sampled_windows: set[str] = set()
        #: Frames waiting for their label, per header stamp (ns): two frames of one stamp are both kept.
        self._pending_outputs: dict[int, list[tuple[int, np.ndarray, dict[str, np.ndarray] | None]]] = {}
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
                  labels: np.ndarray, confidence: np.ndarray | None, rgb: np.ndarray | None,
                  policy_labels: dict[str, np.ndarray] | None = None, agreement: dict[str, float] | None = None
                  ) -> None:
        """One output frame: header stamp (ns), trigger ("camera" / "timer"), modalities fed, why the others were
        not, its time (ms; None when measured elsewhere), class ids uint8 [H, W], confidence float32 [H, W], the
        camera RGB (or None), and, when a DEGRADED sensor was present, the class ids under each of ``POLICIES``
        (None: both are ``labels``), and the fed modalities' feature agreement with the fusion."""
        stamp_s = nanoseconds_to_seconds(stamp_ns)
        windows = [fault.name for fault in self.faults if fault.covers(stamp_s)] or [NOMINAL]
        record = FrameRecord(round(stamp_s, 9), source, modality_code(fed), windows, dict(sorted(reasons.items())),
                             {modality: round(value, 4) for modality, value in (agreement or {}).items()})
        self.frames.append(record)
        if frame_ms is not None:
            self.frame_ms.append(frame_ms)
        self._maybe_sample(record, stamp_ns, labels, confidence, rgb)
        if self.labels_topic:
            self._pending_outputs.setdefault(stamp_ns, []).append((len(self.frames) - 1, labels, policy_labels))
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
        """A ground-truth label image (class ids, one of ``LABEL_ENCODINGS``), matched to the frame of the same
        stamp. ``BagError`` naming the topic for another encoding (colour or float labels hold no class ids) or
        16-bit values above 255; a malformed message is counted in ``failures``."""
        key = stamp_to_nanoseconds(message.header.stamp)
        read_as = LABEL_ENCODINGS.get(message.encoding)
        if read_as is None:
            raise BagError(f"bag {self.bag_path}: ground truth {self.labels_topic} has encoding '{message.encoding}'; "
                           f"expected class ids ({', '.join(LABEL_ENCODINGS)}; 255 ignore): convert colour labels "
                           "to class ids")
        if read_as != message.encoding:
            message = Image(header=message.header, height=message.height, width=message.width, encoding=read_as,
                            is_bigendian=message.is_bigendian, step=message.step, data=message.data)
        try:
            labels = image_to_numpy(message, topic=self.labels_topic)
        except MessageError as error:
            self.failures.append(f"ground truth: {error}")
            return
        if labels.dtype != np.uint8:
            if labels.max() > IGNORE_INDEX:
                raise BagError(f"bag {self.bag_path}: ground truth {self.labels_topic} at stamp {key} ns holds 16-bit "
                               f"values up to {int(labels.max())}; class ids must be 0..254 (255 ignore)")
            labels = labels.astype(np.uint8)
        self._labels[key] = labels
        for sample in self.samples:
            if sample.label is None and sample.stamp_ns == key:
                sample.label = labels
        self._match(key)
        horizon = key - seconds_to_nanoseconds(LABELS_KEPT_S)
        for old in [stamp for stamp in self._labels if stamp < horizon]:
            del self._labels[old]

    def _match(self, key: int) -> None:
        """Score every frame waiting with stamp ``key`` once its label is in (the label is then let go: a frame of
        that stamp coming later stays unmatched, counted in ``unmatched_outputs``)."""
        if key not in self._labels or key not in self._pending_outputs:
            return
        label = self._labels.pop(key)
        for index, prediction, policy_labels in self._pending_outputs.pop(key):
            self._score(key, index, prediction, policy_labels, label)

    def _score(self, key: int, index: int, prediction: np.ndarray, policy_labels: dict[str, np.ndarray] | None,
               label: np.ndarray) -> None:
        """Frame ``index``'s class ids (and those under each of ``POLICIES``) against its ``label``, brought to the
        frame's size when it is of the same aspect ratio (to a pixel); another aspect ratio is refused."""
        (label_h, label_w), (frame_h, frame_w) = label.shape, prediction.shape
        if abs(label_w * frame_h - frame_w * label_h) > max(frame_h, label_h):
            problem = (f"ground truth {self.labels_topic} at stamp {key} ns is {label_w}x{label_h} pixels, the frame "
                       f"{frame_w}x{frame_h}: another aspect ratio, so the labels cannot be aligned with the camera")
            if self.refuse_at_once:
                raise BagError(f"bag {self.bag_path}: {problem}")
            self.label_error = self.label_error or problem
            return
        label = resize_nearest(label, frame_w, frame_h)
        unknown = prediction == IGNORE_INDEX
        self.unknown_pixel_fraction.append(float(unknown.mean()))
        out_of_range = (label >= len(self.class_names)) & (label != IGNORE_INDEX)
        if out_of_range.any() and self.label_error is None:
            self.label_error = (f"ground truth at stamp {key} ns has class ids "
                                f"{sorted(set(label[out_of_range].tolist()))[:5]}, but the checkpoint has "
                                f"{len(self.class_names)} classes: labels and checkpoint do not match")
        matrix = self._confusion(prediction, label, out_of_range)
        record = self.frames[index]
        summary = matrix.summary()
        record.miou, record.pixel_accuracy = round(summary["miou_present"], 4), round(summary["pixel_accuracy"], 4)
        self.accuracy.add(matrix, record.windows, record.fed)
        policies = {policy: matrix for policy in POLICIES}
        if policy_labels is not None:
            policies = {policy: self._confusion(labels, label, out_of_range) for policy, labels in policy_labels.items()}
        self.accuracy.add_policies(policies, record.windows, degraded=policy_labels is not None)

    def _confusion(self, prediction: np.ndarray, label: np.ndarray, out_of_range: np.ndarray) -> ConfusionMatrix:
        """The confusion matrix of class ids against ground truth, leaving out unknown (255) predictions and
        out-of-range labels."""
        label = np.where((prediction == IGNORE_INDEX) | out_of_range, IGNORE_INDEX, label)
        matrix = ConfusionMatrix(len(self.class_names))
        matrix.update(torch.from_numpy(prediction.astype(np.int64)), torch.from_numpy(label.astype(np.int64)))
        return matrix

    # ------------------------------------------------------------------ results

    def fault_results(self) -> list[dict]:
        """Per fault: the sensor's last message before it (drop) or first frozen message (freeze), when the
        pipeline called the sensor STALE and the delay (s), the worst state in the window and recovery; for the
        faults of ``QUALITY_FAULT_KINDS`` also when it was called DEGRADED (and the delay from the onset), when
        that cleared after the end (and the delay), the sensor's last message in the bag (``observed_until_s``: a
        clear later than that cannot be seen) and the window's accuracy under each of ``POLICIES``."""
        results = []
        for fault in self.faults:
            sensor = fault.target
            modality = MODALITY_OF_SENSOR[sensor]
            times = self.message_times.get(sensor, [])
            horizon = fault.end_s + self.params[f"{sensor}.dead_after_s"]
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
                "name": fault.name, "kind": fault.kind, "sensor": sensor, "start_s": fault.start_s,
                "end_s": fault.end_s, "reference_message_s": None if reference is None else round(reference, 6),
                "stale_at_s": stale_at,
                "stale_delay_s": (round(stale_at - reference, 6)
                                  if stale_at is not None and reference is not None else None),
                "worst_state": worst, "recovered_at_s": recovered_at if stale_at is not None else None,
            })
            if fault.kind in QUALITY_FAULT_KINDS:  # a call after the sensor's next fault began is that fault's
                next_onset = min((other.start_s for other in self.faults
                                  if other.target == sensor and other.start_s > fault.start_s), default=horizon)
                results[-1].update(self._degradation_result(fault, history, min(horizon, next_onset)))
                results[-1]["observed_until_s"] = times[-1] if times else None
        return results

    def _degradation_result(self, fault: Fault, history: list[dict], horizon: float) -> dict:
        """When ``fault``'s sensor was first DEGRADED (or worse) from its onset (the onset itself if it already was,
        say from an earlier fault still clearing; else before ``horizon``, s), and from its end on when it was
        below DEGRADED again; the delays (s) and the window's accuracy under each of ``POLICIES``."""
        at_onset = _state_at(history, fault.start_s)
        degraded_at = (fault.start_s if at_onset is not None and at_onset.severity >= DEGRADED_SEVERITY else
                       next((item["time_s"] for item in history if fault.start_s <= item["time_s"] < horizon
                             and SensorState(item["state"]).severity >= DEGRADED_SEVERITY), None))
        cleared_at = None
        if degraded_at is not None:
            at_end = _state_at(history, fault.end_s)
            cleared_at = (fault.end_s if at_end is None or at_end.severity < DEGRADED_SEVERITY else
                          next((item["time_s"] for item in history if item["time_s"] > fault.end_s
                                and SensorState(item["state"]).severity < DEGRADED_SEVERITY), None))
        policies = self.accuracy.by_policy.get(fault.name) if self.compares_policies else None
        return {
            "degraded_at_s": degraded_at,
            "degraded_delay_s": None if degraded_at is None else round(degraded_at - fault.start_s, 6),
            "cleared_at_s": cleared_at,
            "clear_delay_s": None if cleared_at is None else round(cleared_at - fault.end_s, 6),
            "accuracy_by_policy": (None if policies is None else
                                   {policy: _summary(matrix, self.class_names,
                                                     self.accuracy.frames_by_window.get(fault.name, 0))
                                    for policy, matrix in policies.items()}),
        }

    def agreement_by_window(self) -> dict:
        """Per window (fault name or ``NOMINAL``) and modality, the mean feature agreement over the frames it was
        measured on."""
        values: dict[str, dict[str, list[float]]] = {}
        for frame in self.frames:
            for window in frame.windows:
                for modality, value in frame.agreement.items():
                    values.setdefault(window, {}).setdefault(modality, []).append(value)
        return {window: {modality: round(float(np.mean(items)), 4) for modality, items in sorted(table.items())}
                for window, table in sorted(values.items())}

    def false_alarm_results(self) -> dict:
        """Per sensor: its nominal messages (none of its faults active, nor ended less than ``CLEAR_ALLOWANCE_S``
        before) and how many arrived while it was DEGRADED (or worse, but not STALE or DEAD from a drop or
        freeze: those are about timing, not content)."""
        results = {}
        for sensor in SENSORS:
            modality = MODALITY_OF_SENSOR[sensor]
            faults = [fault for fault in self.faults if fault.target == sensor]
            history = [item for item in self.transitions if item["modality"] == modality]
            nominal = [t for t in self.message_times.get(sensor, [])
                       if not any(fault.start_s <= t < fault.end_s + CLEAR_ALLOWANCE_S for fault in faults)]
            if not history or not nominal:
                continue
            degraded = [t for t in nominal if _state_at(history, t) is SensorState.DEGRADED]
            results[sensor] = {"nominal_messages": len(nominal), "degraded": len(degraded),
                               "fraction": round(len(degraded) / len(nominal), 6),
                               "first_at_s": [round(t, 6) for t in degraded[:5]]}
        return results

    def model_counters(self) -> dict:
        """The node's frame counters (frames_dropped, camera_frames...), from its /diagnostics model status
        (``diagnostics.counters_from_diagnostics``); {} in this base class."""
        return {}

    def results(self) -> dict:
        """The ``metrics.json`` content (docs/bags.md) of everything collected so far."""
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
            "unmatched_outputs": (sum(len(items) for items in self._pending_outputs.values())
                                  if self.labels_topic else None),
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
            "false_alarms": self.false_alarm_results(),
            "feature_agreement_by_window": self.agreement_by_window(),
            "accuracy_by_policy": ({scope: {policy: _summary(matrix, self.class_names,
                                                             self.accuracy.frames_by_policy_scope[key])
                                            for policy, matrix in self.accuracy.by_policy[key].items()}
                                    for scope, key in (("whole_drive", "all"), ("frames_with_a_degraded_sensor",
                                                                                "degraded"))
                                    if key in self.accuracy.by_policy}
                                   if has_truth and self.compares_policies else None),
            "state_transitions": self.transitions,
            "per_frame": [{"stamp_s": frame.stamp_s, "source": frame.source, "fed": frame.fed,
                           "windows": frame.windows, "miou": frame.miou, "pixel_accuracy": frame.pixel_accuracy,
                           "absent": frame.reasons, "agreement": frame.agreement} for frame in self.frames],
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


def _state_at(history: list[dict], time_s: float) -> SensorState | None:
    """The state of a modality at ``time_s`` from its transitions (the last at or before it); None before any."""
    state = None
    for item in history:
        if item["time_s"] > time_s:
            break
        state = SensorState(item["state"])
    return state


def _count(values) -> dict[str, int]:
    """How often each value occurs, sorted by value."""
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))

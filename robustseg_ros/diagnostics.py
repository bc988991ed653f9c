"""What the perception node reports about itself: ``/diagnostics``, ``~/sensor_status`` and the frame
statistics behind the model's status (docs/perception_node.md lists every key).

Statuses are named ``"robustseg: <sensor>"`` (camera, depth, events, lidar) and ``"robustseg: model"``, or
``"robustseg /robot1/camera_node: ..."`` for a node of another name or namespace (``status_prefix``); levels
are ``diagnostic_msgs/DiagnosticStatus`` levels (``robustseg_ros.health``). Building them needs no rclpy node:
``PerceptionPipeline`` calls these builders, the node publishes the result, and the bag evaluation reads the
model's counters back with ``counters_from_diagnostics``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from robustseg_core.classes import MODALITIES
from robustseg_core.fusion_policy import LEFT_OUT
from robustseg_ros.frames import FrameOutput
from robustseg_ros.health import (
    DIAGNOSTIC_ERROR,
    DIAGNOSTIC_OK,
    DIAGNOSTIC_STALE,
    DIAGNOSTIC_WARN,
    HealthStatus,
    SensorState,
)
from robustseg_ros.params import MODALITY_OF_SENSOR, NODE_NAME, SENSOR_OF_MODALITY, SENSORS
from robustseg_ros.sync import SyncCounters

DIAGNOSTIC_PREFIX = "robustseg: "


def status_prefix(node_name: str) -> str:
    """The start of the /diagnostics status names of the node ``node_name`` (fully qualified): ``"robustseg: "``
    for ``/perception_node``, ``"robustseg <node_name>: "`` for any other, so that the statuses of nodes in
    two namespaces (one per camera) do not share names."""
    return DIAGNOSTIC_PREFIX if node_name == f"/{NODE_NAME}" else f"robustseg {node_name}: "


#: Recent frames kept for the latency and stage-time statistics on /diagnostics.
STATISTICS_WINDOW = 100
#: Integer counters of the model status that the bag evaluation reports.
MODEL_COUNTERS = ("frames_dropped", "frames_skipped", "frames_failed", "camera_frames", "timer_frames",
                  "late_camera_frames_dropped", "stale_camera_frames_dropped", "unsynchronised_messages")


class FrameStatistics:
    """What the pipeline did with its frames, for the model status (thread-safe: the executor thread
    counts messages, the inference worker counts frames).

    Counters: frames processed (published), dropped (a pending frame replaced before the worker took it),
    failed (``process`` raised), skipped (nothing to encode, or no output size yet), and messages not
    synchronised (zero or future stamps); the last failure and its node-clock time (s); end-to-end
    latency and stage times (ms) of the last ``STATISTICS_WINDOW`` published frames.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames_processed = self.frames_dropped = self.frames_failed = self.frames_skipped = 0
        self.unsynchronised_messages = 0
        self.last_failure = ""
        self.last_failure_time = float("-inf")
        self.last_published_at = float("-inf")  # node-clock time (s) of the last published frame
        self._latencies_ms: deque[float] = deque(maxlen=STATISTICS_WINDOW)
        self._stage_ms: deque[dict[str, float]] = deque(maxlen=STATISTICS_WINDOW)

    def count_dropped(self) -> None:
        """A pending frame was replaced by a newer one before the worker took it, or built before the clock
        jumped back (a restarted replay)."""
        with self._lock:
            self.frames_dropped += 1

    def count_skipped(self) -> None:
        """A frame was not segmented: no modality could be encoded, or no output size is known yet."""
        with self._lock:
            self.frames_skipped += 1

    def count_unsynchronised(self) -> None:
        """A message with a zero or future stamp was kept out of synchronisation."""
        with self._lock:
            self.unsynchronised_messages += 1

    def count_failure(self, error: BaseException, now: float) -> None:
        """``process`` raised at node-clock time ``now`` (s): counted, and the model status is ERROR for a while."""
        with self._lock:
            self.frames_failed += 1
            self.last_failure = f"{type(error).__name__}: {error}"
            self.last_failure_time = now

    def record_published(self, output: FrameOutput, latency_ms: float, publish_ms: float, now: float) -> None:
        """Statistics of a frame published at ``now`` (node clock, s): end-to-end latency and stage times (ms)."""
        with self._lock:
            self.frames_processed += 1
            self.last_published_at = now
            self._latencies_ms.append(latency_ms)
            self._stage_ms.append({**output.timings_ms, "publish": publish_ms})

    def recent_frames(self) -> list[dict[str, float]]:
        """Stage times (ms) of the last published frames, oldest first, each with its end-to-end "latency"."""
        with self._lock:
            return [{**stages, "latency": latency} for stages, latency in zip(self._stage_ms, self._latencies_ms)]

    def model_status(self, now: float, segmenter, sync_counters: SyncCounters,
                     failure_hold_s: float) -> DiagnosticStatus:
        """``"robustseg: model"``: ERROR for ``failure_hold_s`` after a failure, WARN before the first frame and
        when none was published for ``failure_hold_s`` (s), else OK; values: device, precision, modalities,
        counters, latency and stage means, GPU memory."""
        with self._lock:
            latencies = np.array(self._latencies_ms, dtype=np.float64)
            stages = list(self._stage_ms)
            values = {
                "device": str(segmenter.device),
                "backend": getattr(getattr(segmenter, "backend", None), "name", "torch"),
                "precision": getattr(getattr(segmenter, "backend", None), "precision", "fp32"),
                "fp16": str(bool(getattr(segmenter, "fp16", False))).lower(),
                "modalities": ",".join(segmenter.modalities),
                "short_side_px": str(getattr(segmenter, "short_side", "")),
                "frames_processed": str(self.frames_processed),
                "frames_dropped": str(self.frames_dropped),
                "frames_failed": str(self.frames_failed),
                "frames_skipped": str(self.frames_skipped),
                "unsynchronised_messages": str(self.unsynchronised_messages),
            }
            failure, failure_time, published_at = self.last_failure, self.last_failure_time, self.last_published_at
        values.update({"camera_frames": str(sync_counters.pivot_frames),
                       "timer_frames": str(sync_counters.timer_frames),
                       "late_camera_frames_dropped": str(sync_counters.late_pivots_dropped),
                       "stale_camera_frames_dropped": str(sync_counters.stale_pivots_dropped)})
        if latencies.size:
            values.update({"latency_ms_mean": f"{latencies.mean():.1f}",
                           "latency_ms_p95": f"{np.percentile(latencies, 95):.1f}",
                           "latency_ms_max": f"{latencies.max():.1f}"})
            for stage in stages[0]:
                values[f"{stage}_ms_mean"] = f"{np.mean([timing[stage] for timing in stages]):.2f}"
        values.update(gpu_memory_values(segmenter.device))
        if 0 <= now - failure_time <= failure_hold_s:  # a failure after ``now``: the clock jumped back (a bag loop)
            level, message = DIAGNOSTIC_ERROR, f"processing failed: {failure}"
        elif not latencies.size:
            level, message = DIAGNOSTIC_WARN, "no frame processed yet"
        elif now - published_at > failure_hold_s:  # every sensor gone, or none fused: the outputs stopped
            level, message = DIAGNOSTIC_WARN, (f"no frame segmented for {now - published_at:.1f} s "
                                               f"({values['frames_processed']} before)")
        else:
            level = DIAGNOSTIC_OK
            message = f"{values['frames_processed']} frames, latency mean {values['latency_ms_mean']} ms"
        return _status(f"{DIAGNOSTIC_PREFIX}model", level, message, str(segmenter.device), values)


def sensor_status_array(output: FrameOutput, topic_names: Mapping[str, str]) -> DiagnosticArray:
    """``~/sensor_status``: one status per sensor for this frame, with the frame's header.

    Level OK with message "fed" when the sensor fed the frame, WARN with "fed; <note>" when it fed it while
    DEGRADED; OK with the reason when the validated fusion policy left a healthy sensor out; otherwise WARN
    (disabled, nothing within tolerance, not encoded, DEGRADED and not fused),
    STALE (stale, never received, unhealthy) or ERROR (dead), with the reason as message. The value
    ``fed`` says whether it fed the frame, ``feature_agreement`` (fed modalities) how much its deepest features
    agree with the fused ones. ``topic_names``: sensor -> topic, the hardware id.
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
        if modality in output.agreement:
            values["feature_agreement"] = f"{output.agreement[modality]:.3f}"
        if modality in output.fed and modality in output.notes:
            level, message = DIAGNOSTIC_WARN, f"fed; {output.notes[modality]}"
        elif modality in output.fed:
            level, message = DIAGNOSTIC_OK, "fed"
        else:
            message = output.reasons.get(modality, "absent")
            level = _absence_level(message, health)
            message += f"; {output.notes[modality]}" if modality in output.notes else ""  # DEGRADED, then left out
        statuses.append(_status(f"{DIAGNOSTIC_PREFIX}{sensor}", level, message, topic_names[sensor], values))
    return DiagnosticArray(header=Header(stamp=output.header.stamp, frame_id=output.header.frame_id), status=statuses)


def sensor_health_statuses(health: Mapping[str, HealthStatus], enabled: Mapping[str, bool],
                           active_sensors: Iterable[str], topic_names: Mapping[str, str],
                           extra_values: Mapping[str, Mapping[str, str]] | None = None) -> list[DiagnosticStatus]:
    """The sensors' part of ``/diagnostics``, one status per sensor in ``SENSORS`` order.

    ``health``: modality -> status, empty while the node clock has not started; ``enabled``: sensor ->
    its ``<sensor>.enabled`` parameter; ``active_sensors``: the enabled sensors the model uses;
    ``extra_values``: modality -> more key/values (the event buffer's size).
    """
    extra_values = extra_values or {}
    active = set(active_sensors)
    statuses = []
    for sensor in SENSORS:
        modality = MODALITY_OF_SENSOR[sensor]
        name, topic = f"{DIAGNOSTIC_PREFIX}{sensor}", topic_names[sensor]
        if sensor not in active:
            reason = "disabled" if not enabled[sensor] else "disabled: not an input of the model"
            statuses.append(_status(name, DIAGNOSTIC_OK, reason, topic, {"modality": modality, "state": "DISABLED"}))
        elif modality in health:
            status = health[modality]
            statuses.append(_status(name, status.level, status.message, topic,
                                    {"modality": modality, **status.values, **extra_values.get(modality, {})}))
        else:
            statuses.append(_status(name, DIAGNOSTIC_STALE, "waiting for the node clock (use_sim_time without /clock?)",
                                    topic, {"modality": modality}))
    return statuses


def lifecycle_status(state: str, node_name: str, values: Mapping[str, str]) -> DiagnosticStatus:
    """``"robustseg: lifecycle"``: the managed node's state (OK while active; WARN otherwise: it is not segmenting),
    with ``values`` such as the last refused transition."""
    level = DIAGNOSTIC_OK if state == "active" else DIAGNOSTIC_WARN
    return _status(f"{DIAGNOSTIC_PREFIX}lifecycle", level, state, node_name, {"state": state, **values})


def counters_from_diagnostics(diagnostics: DiagnosticArray) -> dict[str, int]:
    """The ``MODEL_COUNTERS`` of the ``"robustseg: model"`` status of a /diagnostics message; {} if absent."""
    model = next((status for status in diagnostics.status if status.name.endswith("model")), None)
    values = {} if model is None else {item.key: item.value for item in model.values}
    return {key: int(values[key]) for key in MODEL_COUNTERS if key in values}


def gpu_memory_values(device) -> dict[str, str]:
    """Allocated and reserved CUDA memory (MiB) of ``device``; empty off CUDA."""
    if getattr(device, "type", "cpu") != "cuda":
        return {}
    import torch

    return {"gpu_memory_allocated_mib": f"{torch.cuda.memory_allocated(device) / 2**20:.1f}",
            "gpu_memory_reserved_mib": f"{torch.cuda.memory_reserved(device) / 2**20:.1f}"}


def _absence_level(reason: str, health: HealthStatus | None) -> int:
    if health is not None and health.state is SensorState.DEAD:
        return DIAGNOSTIC_ERROR
    if reason.startswith(("stale", "never received", "unhealthy")):
        return DIAGNOSTIC_STALE
    if reason.startswith(LEFT_OUT) and (health is None or health.state is SensorState.OK):
        return DIAGNOSTIC_OK  # healthy, and the model does better without it
    return DIAGNOSTIC_WARN


def _status(name: str, level: int, message: str, hardware_id: str, values: Mapping[str, str]) -> DiagnosticStatus:
    return DiagnosticStatus(level=bytes([level]), name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=key, value=str(value)) for key, value in values.items()])

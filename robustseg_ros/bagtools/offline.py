"""The offline bag evaluation: one ``PerceptionPipeline`` driven over a bag in timestamp order, in-process.

The node clock is each message's bag time (ns -> s) and ``on_timer`` runs every
``health.check_period_s`` of bag time, as the node's timer would under ``use_sim_time``. Every frame
the pipeline emits is processed at once (offline nothing is dropped for lack of time), so two runs
over one bag give the same frames, predictions and metrics; only the processing times vary. A frame
with a DEGRADED sensor is also segmented with every DEGRADED sensor fused and with none fused (when
that differs from ``health.fuse_degraded``), so the report compares the three on the same frames. Each
sensor's state is noted after each of its messages, so false alarms are counted per message.

LiDAR extrinsic: with ``lidar.use_tf`` T_cam_lidar comes from the bag's ``/tf_static`` (read with the rosbags
type store, chains of static transforms composed); a bag without it is refused (``/tf`` is not read). Without
``lidar.use_tf`` it is ``lidar.transform``; a warning on stderr says so when the bag has ``/tf_static`` and
``lidar.transform`` is the default (co-located sensors).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
from std_msgs.msg import Float32, String

from robustseg_core.classes import MODALITIES
from robustseg_core.errors import cause
from robustseg_ros.bagtools.bag_io import TF_STATIC_TOPIC, TYPESTORE, BagError, BagReader
from robustseg_ros.bagtools.recorder import DEFAULT_NODE, DIAGNOSTICS_TOPIC, BagRecorder
from robustseg_ros.bagtools.scoring import Evaluation
from robustseg_ros.conversions import nanoseconds_to_seconds, seconds_to_nanoseconds, stamp_to_nanoseconds
from robustseg_ros.diagnostics import counters_from_diagnostics
from robustseg_ros.frames import FrameJob, FrameOutput
from robustseg_ros.health import SensorState
from robustseg_ros.outputs import image_messages
from robustseg_ros.params import (
    CO_LOCATED_LIDAR_TRANSFORM, MODALITY_OF_SENSOR, PerceptionParams, transform_from_parameter,
)
from robustseg_ros.pipeline import PerceptionPipeline


class StaticTransforms:
    """The static transforms of a bag's ``/tf_static`` (``tf2_msgs/msg/TFMessage``, deserialized with the rosbags
    type store: rclpy may lack tf2_msgs), as a ``lidar_extrinsic_lookup`` for ``PerceptionPipeline``: called with
    (source frame, target frame, stamp s), it returns the 4x4 transform taking points from the source frame into
    the target frame (metres), composed along the tree of transforms; ``LookupError`` when the two frames are
    not connected. A later transform of a child frame replaces an earlier one, as in tf2."""

    def __init__(self, bag: BagReader, topic: str = TF_STATIC_TOPIC) -> None:
        #: child frame -> (parent frame, T_parent_child)
        self.edges: dict[str, tuple[str, np.ndarray]] = {}
        for _, timestamp_ns, data in bag.messages([topic], raw=True):
            try:
                message = TYPESTORE.deserialize_cdr(data, bag.topics[topic])
                for stamped in message.transforms:
                    translation, rotation = stamped.transform.translation, stamped.transform.rotation
                    self.edges[stamped.child_frame_id] = (stamped.header.frame_id, transform_from_parameter(
                        [translation.x, translation.y, translation.z, rotation.x, rotation.y, rotation.z, rotation.w]))
            except Exception as error:  # a damaged message or a zero quaternion
                raise BagError(f"bag {bag.path}: {topic} message at {timestamp_ns} ns cannot be read as static "
                               f"transforms ({cause(error)})") from error
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def __call__(self, source: str, target: str, stamp_s: float = 0.0) -> np.ndarray:
        if (source, target) not in self._cache:
            self._cache[(source, target)] = self._compose(source, target)
        return self._cache[(source, target)]

    def _compose(self, source: str, target: str) -> np.ndarray:
        """Breadth-first from ``target`` over the transforms (both directions) until ``source``."""
        neighbours: dict[str, list[tuple[str, np.ndarray]]] = {}
        for child, (parent, transform) in self.edges.items():
            neighbours.setdefault(parent, []).append((child, transform))
            neighbours.setdefault(child, []).append((parent, np.linalg.inv(transform)))
        known = {target: np.eye(4)}  # frame -> T_target_frame
        queue = deque([target])
        while queue:
            frame = queue.popleft()
            for other, transform in neighbours.get(frame, ()):
                if other not in known:
                    known[other] = known[frame] @ transform
                    queue.append(other)
        if source not in known:
            frames = ", ".join(sorted(neighbours)) or "none"
            raise LookupError(f"no static transform {target} <- {source} in {TF_STATIC_TOPIC} (its frames: {frames})")
        return known[source]


def lidar_extrinsic_lookup(bag: BagReader, params: PerceptionParams) -> StaticTransforms | None:
    """The LiDAR extrinsic lookup of an offline run: with ``lidar.use_tf`` the bag's static transforms
    (``BagError`` when it has no ``/tf_static``), else None (``lidar.transform``), with a warning on stderr when
    the bag has ``/tf_static`` and ``lidar.transform`` is the default, co-located sensors."""
    has_tf_static = TF_STATIC_TOPIC in bag.topics
    if params["lidar.use_tf"]:
        if not has_tf_static:
            raise BagError(f"bag {bag.path}: lidar.use_tf is true but the bag has no {TF_STATIC_TOPIC}; offline, "
                           f"T_cam_lidar is looked up only in {TF_STATIC_TOPIC}: set -p lidar.use_tf:=false and "
                           "-p lidar.transform:=[x, y, z, qx, qy, qz, qw]")
        return StaticTransforms(bag)
    if has_tf_static and np.allclose(params.T_cam_lidar, transform_from_parameter(CO_LOCATED_LIDAR_TRANSFORM)):
        print(f"evaluate_bag: warning: bag {bag.path} has {TF_STATIC_TOPIC}, but lidar.use_tf is false and "
              "lidar.transform is the default: the LiDAR is assumed co-located with the camera (set -p "
              "lidar.use_tf:=true to use the bag's transforms, or -p lidar.transform)", file=sys.stderr)
    return None


class OfflineEvaluation(Evaluation):
    """Drives one ``PerceptionPipeline`` over a bag in timestamp order (node clock = bag time); ``frame_ms``
    holds the pipeline's processing time per frame."""

    compares_policies = True

    def __init__(self, bag_path: Path, params: PerceptionParams, segmenter, *, recorder: BagRecorder | None = None,
                 **kwargs) -> None:
        super().__init__(bag_path, params, segmenter.class_names, **kwargs)
        self.pipeline = PerceptionPipeline(params, segmenter, logger=logging.getLogger("evaluate_bag"))
        self.recorder = recorder
        self._next_diagnostics_ns = 0

    def run(self, bag: BagReader) -> None:
        """Feed every message of the sensor, CameraInfo and ground-truth topics, then run the timer past
        the last message until the pipeline has released its last frame. The LiDAR extrinsic is
        ``lidar_extrinsic_lookup``'s."""
        pipeline = self.pipeline
        if "lidar" in pipeline.active_sensors:
            pipeline.lidar_extrinsic_lookup = lidar_extrinsic_lookup(bag, self.params)
        handlers = {self.topics[sensor]: handler for sensor, handler in (
            ("camera", pipeline.on_camera), ("depth", pipeline.on_depth), ("lidar", pipeline.on_lidar),
            ("events", pipeline.on_events)) if sensor in pipeline.active_sensors}
        modalities = {self.topics[sensor]: MODALITY_OF_SENSOR[sensor] for sensor in pipeline.active_sensors}
        camera_info = [self.topics["camera_info"]] if self.topics["camera_info"] in bag.topics else []
        wanted = [*handlers, *camera_info] + ([self.labels_topic] if self.labels_topic else [])
        period_ns = seconds_to_nanoseconds(self.params["health.check_period_s"])
        self._record(f"{DEFAULT_NODE}/class_names", bag.start_ns, String(data="\n".join(self.class_names)))
        next_timer_ns = None
        last_ns = 0
        for topic, timestamp_ns, message in bag.messages(wanted):
            if next_timer_ns is None:
                next_timer_ns = timestamp_ns + period_ns
            while next_timer_ns <= timestamp_ns:
                self._on_timer(next_timer_ns)
                next_timer_ns += period_ns
            now = nanoseconds_to_seconds(timestamp_ns)
            last_ns = timestamp_ns
            self.note_message(topic, now)
            self._record(topic, timestamp_ns, message)
            if topic == self.labels_topic:
                self.add_label(message)
            elif topic == self.topics["camera_info"]:
                pipeline.on_camera_info(message, now)
            else:
                job = handlers[topic](message, now)
                modality = modalities[topic]
                status = pipeline.health[modality].status(now)
                self.note_state(now, modality, status.state, status.message)
                self._process(job, now)
        if next_timer_ns is None:
            raise BagError(f"bag {self.bag_path}: no messages on {', '.join(wanted)}")
        flush_until_ns = last_ns + seconds_to_nanoseconds(self.params["sync.camera_wait_s"]
                                                          + 2 * self.params["health.check_period_s"])
        while next_timer_ns <= flush_until_ns:
            self._on_timer(next_timer_ns)
            next_timer_ns += period_ns
        self.end_s = nanoseconds_to_seconds(flush_until_ns)

    def _on_timer(self, timestamp_ns: int) -> None:
        now = nanoseconds_to_seconds(timestamp_ns)
        self._process(self.pipeline.on_timer(now), now)
        for modality, status in self.pipeline.health.statuses(now).items():
            self.note_state(now, modality, status.state, status.message)
        if self.recorder is not None and (timestamp_ns >= self._next_diagnostics_ns or self.pipeline.health_changed(now)):
            self._record(DIAGNOSTICS_TOPIC, timestamp_ns, self.pipeline.diagnostics(now))
            self._next_diagnostics_ns = timestamp_ns + seconds_to_nanoseconds(self.params["health.diagnostics_period_s"])

    def _record(self, topic: str, timestamp_ns: int, message) -> None:
        if self.recorder is not None:
            self.recorder.write(topic, timestamp_ns, message)

    def _process(self, job: FrameJob | None, now: float) -> None:
        if job is None:
            return
        start = time.perf_counter()
        recording = self.recorder is not None
        try:
            output = self.pipeline.process(job, with_color=recording, with_overlay=recording)
            processing_ms = (time.perf_counter() - start) * 1e3
            policy_labels, agreement = self._policy_labels(job, output)
        except Exception as error:  # like the node: one bad frame is counted, the run goes on
            self.pipeline.statistics.count_failure(error, now)
            self.failures.append(f"{type(error).__name__}: {error}")
            return
        if output is None:
            return
        self.pipeline.statistics.record_published(output, processing_ms, 0.0, now)
        if recording:
            now_ns = seconds_to_nanoseconds(now)
            for name, message in image_messages(output).items():
                self._record(f"{DEFAULT_NODE}/{name}", now_ns, message)
            self._record(f"{DEFAULT_NODE}/latency_ms", now_ns, Float32(data=float(processing_ms)))
            self._record(f"{DEFAULT_NODE}/sensor_status", now_ns, self.pipeline.sensor_status(output))
        source = "camera" if job.frame.entries["rgb"] is not None else "timer"
        self.add_frame(stamp_to_nanoseconds(output.header.stamp), source, output.fed, output.reasons, processing_ms,
                       output.labels, output.confidence, output.encoded.get("rgb"), policy_labels, agreement)

    def _policy_labels(self, job: FrameJob, output: FrameOutput | None
                       ) -> tuple[dict[str, np.ndarray] | None, dict[str, float]]:
        """When a DEGRADED sensor's message is in the frame: its class ids under each of ``POLICIES`` (as
        configured, every DEGRADED sensor fused, none fused; those that differ from the configured choice are
        run too, untimed), else None; and the feature agreement with every present sensor fused (so a DEGRADED
        one's is known too)."""
        degraded = {modality for modality, status in job.statuses.items()
                    if status.state is SensorState.DEGRADED and job.frame.entries.get(modality) is not None}
        if output is None or not degraded:
            return None, {} if output is None else output.agreement
        outputs = {"configured": output}
        for policy, choice in (("fused", frozenset(MODALITIES)), ("not_fused", frozenset())):
            same = degraded & choice == degraded & self.params.fused_degraded
            outputs[policy] = output if same else (self.pipeline.process(job, with_color=False, with_confidence=False,
                                                                         fuse_degraded=choice) or output)
        return {policy: result.labels for policy, result in outputs.items()}, outputs["fused"].agreement

    def model_counters(self) -> dict:
        """Frame counters from the pipeline's /diagnostics model status (dropped, skipped, failed...)."""
        return counters_from_diagnostics(self.pipeline.diagnostics(self.end_s))

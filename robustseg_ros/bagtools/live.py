"""The live bag evaluation: replay a bag over DDS with ``/clock`` into a perception node on sim time and
score what it publishes (``evaluate_bag --mode live``).

The node runs elsewhere (``node_name``), or in this process with ``spawn_node``. Frames are the node's
``~/segmentation`` messages joined by stamp with ``~/confidence`` and ``~/sensor_status``; sensor
health comes from ``/diagnostics`` (stamped with the node clock = bag time); frame times are the
node's ``~/latency_ms``. Not repeatable: DDS and the CPU load decide which frames the node drops.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Float32

from robustseg_core.classes import CLASS_NAMES
from robustseg_ros.bagtools.bag_io import BagError
from robustseg_ros.bagtools.player import BagPlayer
from robustseg_ros.bagtools.recorder import BagRecorder, output_topics, subscribe_outputs
from robustseg_ros.bagtools.scoring import Evaluation
from robustseg_ros.compressed import camera_message_to_rgb
from robustseg_ros.conversions import (
    MessageError,
    image_to_numpy,
    nanoseconds_to_seconds,
    stamp_to_nanoseconds,
    stamp_to_seconds,
)
from robustseg_ros.diagnostics import counters_from_diagnostics, status_prefix
from robustseg_ros.health import SensorState
from robustseg_ros.node import PerceptionNode
from robustseg_ros.params import PARAMETER_DEFAULTS, SENSORS, PerceptionParams, absolute_topic, resolve_checkpoint


class LiveEvaluation(Evaluation):
    """Replays the bag over DDS with ``/clock`` into a perception node on sim time and records what it publishes.

    ``node_name``: the node's fully qualified name (its outputs are ``<node_name>/segmentation`` ...).
    Frames are the node's ``~/segmentation`` messages joined by stamp with ``~/confidence`` and
    ``~/sensor_status``; sensor health comes from ``/diagnostics`` (stamped with the node clock = bag
    time); ``frame_ms`` holds the node's ``~/latency_ms``.
    """

    timing_measure = "latency"
    refuse_at_once = False  # frames are scored in subscription callbacks
    CAMERA_IMAGES_KEPT = 100
    #: Seconds to wait, once the camera is matched, for the node's other subscriptions.
    SUBSCRIPTION_GRACE_S = 5.0
    #: Seconds after the publishers see every subscriber, for the subscribers to match the publishers too.
    MATCH_SETTLE_S = 0.3

    def __init__(self, bag_path: Path, params: PerceptionParams, class_names: tuple[str, ...], *, context,
                 node_name: str, recorder: BagRecorder | None = None, **kwargs) -> None:
        super().__init__(bag_path, params, class_names, **kwargs)
        self.context = context
        self.recorder = recorder
        # On the replay's /clock, so that recorded outputs are stamped on the bag's time line.
        self.node = Node("bag_evaluator", context=context, parameter_overrides=[Parameter("use_sim_time", value=True)])
        if recorder is not None:
            subscribe_outputs(self.node, recorder, output_topics(node_name))
        self._lock = threading.Lock()
        #: Outputs waiting for the rest of their frame, per header stamp (ns): one dict (kind -> message) per
        #: frame, so two frames of one stamp are both kept.
        self._partial: dict[int, list[dict]] = {}
        self._camera_rgb: dict[int, np.ndarray] = {}
        self._camera_stamps: set[int] = set()
        self._model_diagnostics = None
        prefix = absolute_topic(node_name).rstrip("/")
        self._status_prefix = status_prefix(prefix)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for name, message_type in (("segmentation", Image), ("confidence", Image), ("sensor_status", DiagnosticArray)):
            self.node.create_subscription(message_type, f"{prefix}/{name}",
                                          lambda msg, kind=name: self._on_output(kind, msg), qos)
        self.node.create_subscription(Float32, f"{prefix}/latency_ms", self._on_latency, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos)

    def observe(self, topic: str, timestamp_ns: int, message) -> None:
        """Every bag message as the player reads it: counts, ground truth, camera images for the samples."""
        if self.recorder is not None:
            self.recorder.write(topic, timestamp_ns, message)
        with self._lock:
            self.note_message(topic, nanoseconds_to_seconds(timestamp_ns))
            self.end_s = max(self.end_s, nanoseconds_to_seconds(timestamp_ns))
            if topic == self.labels_topic:
                self.add_label(message)
            elif topic == self.topics["camera"]:
                key = stamp_to_nanoseconds(message.header.stamp)
                self._camera_stamps.add(key)
                try:
                    self._camera_rgb[key] = camera_message_to_rgb(message, topic=topic)
                except MessageError:  # the node counts it; the sample grid goes without this image
                    return
                while len(self._camera_rgb) > self.CAMERA_IMAGES_KEPT:
                    del self._camera_rgb[next(iter(self._camera_rgb))]

    def _on_output(self, kind: str, message) -> None:
        with self._lock:
            key = stamp_to_nanoseconds(message.header.stamp)
            parts = self._partial.setdefault(key, [])
            part = next((part for part in parts if kind not in part), None)
            if part is None:  # a second frame of this stamp
                part = {}
                parts.append(part)
            part[kind] = message
            if len(part) == 3:
                parts.remove(part)
                if not parts:
                    del self._partial[key]
                self._finish(key, part)

    def _finish(self, key: int, part: dict) -> None:
        missing = [kind for kind in ("segmentation", "sensor_status") if kind not in part]
        if missing:  # lost on the way (DDS) or the node stopped in between: counted, not silently dropped
            self.failures.append(f"node output at stamp {key} ns: {' and '.join(missing)} never arrived "
                                 f"(got {', '.join(sorted(part))})")
            return
        try:
            labels = image_to_numpy(part["segmentation"])
            confidence = image_to_numpy(part["confidence"]) if "confidence" in part else None
        except MessageError as error:
            self.failures.append(f"node output: {error}")
            return
        fed, reasons, agreement = [], {}, {}
        for status in part["sensor_status"].status:
            values = {item.key: item.value for item in status.values}
            modality = values.get("modality")
            if modality is None:
                continue
            if values.get("fed") == "true":
                fed.append(modality)
            else:
                reasons[modality] = status.message
            if "feature_agreement" in values:
                agreement[modality] = float(values["feature_agreement"])
        self.add_frame(key, "camera" if key in self._camera_stamps else "timer", tuple(fed), reasons, None, labels,
                       confidence, self._camera_rgb.get(key), agreement=agreement)

    def _on_latency(self, message) -> None:
        with self._lock:
            self.frame_ms.append(float(message.data))

    def _on_diagnostics(self, message) -> None:
        now = stamp_to_seconds(message.header.stamp)
        with self._lock:
            for status in message.status:
                if not status.name.startswith(self._status_prefix):  # another node's, or another package's
                    continue
                if status.name.endswith("model"):
                    self._model_diagnostics = message
                    continue
                values = {item.key: item.value for item in status.values}
                modality = values.get("modality")
                if modality is None or values.get("state") == "DISABLED":
                    continue
                try:
                    state = (SensorState(values["state"]) if values.get("state") in SensorState.__members__
                             else SensorState.from_level(status.level[0] if status.level else 0))
                except ValueError:
                    continue
                self.note_state(now, modality, state, status.message)

    def run(self, *, rate: float, wait_for_node_s: float, settle_s: float, spin_also=(), skip_damaged: bool = False) -> None:
        """Wait for the node to subscribe, replay the whole bag, then wait ``settle_s`` (s) for its last outputs.
        ``spin_also``: nodes of this context to spin with the recorder (an in-process perception node);
        ``skip_damaged``: replay without the messages of damaged chunks (``BagReader``)."""
        executor = SingleThreadedExecutor(context=self.context)
        for node in (self.node, *spin_also):
            executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        player = BagPlayer(self.bag_path, context=self.context, rate=rate, clock=True, observer=self.observe,
                           skip_damaged=skip_damaged)
        try:
            self._wait_for_subscriptions(player, wait_for_node_s)
            player.play()
            time.sleep(settle_s)
        finally:
            player.close()
            executor.shutdown()
            spinner.join(5.0)
        self.finish_partial_frames()

    def finish_partial_frames(self) -> None:
        """Score the frames still waiting for an output once the replay is over; one lacking its segmentation or
        sensor_status is counted in ``failures``, naming its stamp."""
        with self._lock:
            for key in sorted(self._partial):
                for part in self._partial.pop(key):
                    self._finish(key, part)

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
        """Frame counters of the node's last /diagnostics model status ({} before the first)."""
        return {} if self._model_diagnostics is None else counters_from_diagnostics(self._model_diagnostics)

    def close(self) -> None:
        """Destroy the recorder's node."""
        self.node.destroy_node()


def run_live(bag_path: Path, params: PerceptionParams, *, ros_args: list[str], spawn_node: bool, node_name: str,
             rate: float, wait_for_node_s: float, settle_s: float, skip_damaged: bool = False,
             recorder: BagRecorder | None = None, **options) -> tuple[LiveEvaluation, dict]:
    """Replay into a node (``spawn_node``: one started in this process with ``params`` and sim time; else the
    running node ``node_name``) and score its outputs; ``recorder``: also write the replayed inputs and the
    node's outputs into its bag. ``ros_args``: rclpy arguments of the context; ``skip_damaged``: replay a bag
    with damaged chunks without them; ``options``: ``Evaluation``'s keyword arguments. Returns the evaluation
    and the report's run fields."""
    context = rclpy.Context()
    context.init(args=["evaluate_bag", *ros_args])
    node = None
    try:
        if spawn_node:
            overrides = [Parameter("use_sim_time", value=True)]
            overrides += [Parameter(name, value=value) for name, value in params.values.items()
                          if value != PARAMETER_DEFAULTS[name]]
            node = PerceptionNode(context=context, parameter_overrides=overrides)
            class_names, node_name = node.segmenter.class_names, node.get_fully_qualified_name()
            extra = {"checkpoint": str(resolve_checkpoint(params["checkpoint"])), "device": str(node.segmenter.device)}
        else:
            class_names = CLASS_NAMES
            extra = {"checkpoint": "(the running node's)", "device": "(the running node's)"}
        evaluation = LiveEvaluation(bag_path, params, class_names, context=context, node_name=node_name,
                                    recorder=recorder, **options)
        try:
            evaluation.run(rate=rate, wait_for_node_s=wait_for_node_s, settle_s=settle_s,
                           spin_also=[node] if node is not None else [], skip_damaged=skip_damaged)
        finally:
            evaluation.close()
    finally:
        if node is not None:
            node.destroy_node()
        context.try_shutdown()
    return evaluation, {**extra, "node": node_name, "rate": rate}

"""``PerceptionNode``: the thin rclpy adapter around ``PerceptionPipeline`` (see docs/perception_node.md).

It declares the parameters of ``params.PARAMETERS`` (typed, described, read-only), subscribes
to each enabled input with its own topic and QoS, hands every message to the pipeline with the node
clock's time, and runs one inference worker thread fed through a one-frame slot: a newer frame
replaces a pending one (counted as dropped), so latency never grows with a queue. Outputs nobody
subscribes to (colour mask, overlay, confidence) are not computed. A timer checks
health, drives frames while the camera is silent, and publishes /diagnostics at once when a sensor
changes state. All times come from ``self.get_clock()``, so ``use_sim_time`` works.

The console script ``perception_node`` (``robustseg_ros.perception_node``) runs it until shutdown.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Float32, String

from robustseg_ros.conversions import nanoseconds_to_seconds, numpy_to_image, seconds_to_nanoseconds
from robustseg_ros.frames import FrameJob, FrameOutput
from robustseg_ros.params import (
    NODE_NAME,
    PARAMETERS,
    ParameterSpec,
    PerceptionParams,
    load_segmenter,
    transform_from_parameter,
)
from robustseg_ros.pipeline import PerceptionPipeline

try:
    from vision_msgs.msg import LabelInfo, VisionClass
except ImportError:  # vision_msgs is optional (not installable from the package index)
    LabelInfo = VisionClass = None

OUTPUT_QOS = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
DIAGNOSTICS_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
RELIABLE_INPUT_QOS = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
WORKER_STOP_TIMEOUT_S = 5.0
FAILURE_LOG_THROTTLE_S = 5.0
#: glibc mallopt options (malloc.h): never give freed heap memory back, and never serve a block with its own mmap.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (no trimming, no per-block mmap), as real-time ROS 2
    nodes do: every frame allocates and frees the same large buffers (images, point arrays, tensors), and
    without this each of them comes back as fresh pages whose first touch faults (on a VM several
    milliseconds per frame). The process's memory then stays at its peak instead of breathing. Process-wide;
    returns False where malloc is not glibc's."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, -1)) and bool(mallopt(M_MMAP_MAX, 0))


def parameter_type(default) -> int:
    """rcl_interfaces ParameterType of a ``ParameterSpec`` default."""
    if isinstance(default, bool):
        return ParameterType.PARAMETER_BOOL
    if isinstance(default, int):
        return ParameterType.PARAMETER_INTEGER
    if isinstance(default, float):
        return ParameterType.PARAMETER_DOUBLE
    if isinstance(default, str):
        return ParameterType.PARAMETER_STRING
    if isinstance(default, tuple) and all(isinstance(value, float) for value in default):
        return ParameterType.PARAMETER_DOUBLE_ARRAY
    raise TypeError(f"no ROS parameter type for default {default!r}")


def declare_parameter_spec(node: Node, spec: ParameterSpec):
    """Declare one read-only, typed, described parameter; returns its value."""
    descriptor = ParameterDescriptor(name=spec.name, type=parameter_type(spec.default), description=spec.description,
                                     read_only=True)
    default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
    return node.declare_parameter(spec.name, default, descriptor).value


def declare_perception_parameters(node: Node) -> dict:
    """Declare every parameter of ``params.PARAMETERS`` on ``node``; returns name -> value."""
    return {spec.name: declare_parameter_spec(node, spec) for spec in PARAMETERS}


def subscription_qos(name: str) -> QoSProfile:
    """"sensor_data" (best effort, keep last 5) or "reliable" (keep last 5)."""
    return qos_profile_sensor_data if name == "sensor_data" else RELIABLE_INPUT_QOS


class PerceptionNode(Node):
    """Multimodal segmentation node; ``node_kwargs`` go to ``rclpy.node.Node`` (context, parameter_overrides...)."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        if not keep_freed_memory():
            self.get_logger().info("malloc is not glibc's: freed memory is given back between frames")
        self._pending: FrameJob | None = None
        self._stopping = False
        self._slot = threading.Condition()
        self._worker: threading.Thread | None = None
        self.params = PerceptionParams(declare_perception_parameters(self))
        checkpoint, self.segmenter = load_segmenter(self.params)
        self.get_logger().info(f"loaded {checkpoint} on {self.segmenter.device} (fp16 {self.segmenter.fp16}, "
                               f"modalities {', '.join(self.segmenter.modalities)}, short side "
                               f"{self.segmenter.short_side} px)")
        self._warm_up()
        self.pipeline = PerceptionPipeline(
            self.params, self.segmenter, logger=self.get_logger(),
            lidar_extrinsic_lookup=self._tf_lookup() if self.params["lidar.use_tf"] else None,
            topic_names=self.params.topics(self.resolve_topic_name))
        self._create_publishers()
        self._publish_class_names()
        self._create_subscriptions()
        self._worker = threading.Thread(target=self._work, name="robustseg_inference", daemon=True)
        self._worker.start()
        self.create_timer(self.params["health.check_period_s"], self._on_check)
        self.create_timer(self.params["health.diagnostics_period_s"], self._publish_diagnostics)

    # ------------------------------------------------------------------ set-up

    def _warm_up(self) -> None:
        iterations = self.params["warmup_iterations"]
        if iterations == 0:
            return
        start = time.perf_counter()
        self.segmenter.warmup(self.params["warmup_height"], self.params["warmup_width"], iterations)
        self.get_logger().info(f"warm-up: {iterations} frames of {self.params['warmup_width']}x"
                               f"{self.params['warmup_height']} in {time.perf_counter() - start:.2f} s")

    def _tf_lookup(self):
        try:
            import tf2_ros
        except ImportError:
            self.get_logger().warning("lidar.use_tf is true but tf2_ros is not installed: using lidar.transform")
            return None
        self._tf_buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)

        def lookup(lidar_frame: str, camera_frame: str, stamp_s: float):
            """T_cam_lidar from tf2 at the cloud's stamp (a static mount's transform holds at any stamp; a
            moving one's must be in the buffer, else the cloud counts as a "no transform" error)."""
            try:
                stamped = self._tf_buffer.lookup_transform(camera_frame, lidar_frame,
                                                           Time(nanoseconds=seconds_to_nanoseconds(stamp_s)))
            except tf2_ros.TransformException as error:
                raise LookupError(f"no tf2 transform {camera_frame} <- {lidar_frame}: {error}") from error
            translation, rotation = stamped.transform.translation, stamped.transform.rotation
            return transform_from_parameter([translation.x, translation.y, translation.z,
                                             rotation.x, rotation.y, rotation.z, rotation.w])

        return lookup

    def _create_publishers(self) -> None:
        self._segmentation_pub = self.create_publisher(Image, "~/segmentation", OUTPUT_QOS)
        self._color_pub = self.create_publisher(Image, "~/segmentation_color", OUTPUT_QOS)
        self._confidence_pub = self.create_publisher(Image, "~/confidence", OUTPUT_QOS)
        self._overlay_pub = self.create_publisher(Image, "~/overlay", OUTPUT_QOS)
        self._latency_pub = self.create_publisher(Float32, "~/latency_ms", OUTPUT_QOS)
        self._sensor_status_pub = self.create_publisher(DiagnosticArray, "~/sensor_status", OUTPUT_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self._class_names_pub = self.create_publisher(String, "~/class_names", LATCHED_QOS)
        self._label_info_pub = (self.create_publisher(LabelInfo, "~/label_info", LATCHED_QOS)
                                if LabelInfo is not None else None)

    def _publish_class_names(self) -> None:
        names = self.segmenter.class_names
        self._class_names_pub.publish(String(data="\n".join(names)))
        if self._label_info_pub is not None:
            label_info = LabelInfo(class_map=[VisionClass(class_id=index, class_name=name)
                                              for index, name in enumerate(names)],
                                   threshold=float(self.params["output.confidence_threshold"]))
            label_info.header.stamp = self.get_clock().now().to_msg()
            self._label_info_pub.publish(label_info)

    def _create_subscriptions(self) -> None:
        pipeline = self.pipeline
        event_type = Image if self.params["events.input_type"] == "image" else PointCloud2
        # The camera last: of messages ready together, the executor serves earlier subscriptions first.
        handlers = {"depth": (Image, pipeline.on_depth), "events": (event_type, pipeline.on_events),
                    "lidar": (PointCloud2, pipeline.on_lidar), "camera": (Image, pipeline.on_camera)}
        # CameraInfo always: intrinsics, output size and frame_id, even while the camera image is disabled.
        self.create_subscription(CameraInfo, self.params["camera.info_topic"],
                                 lambda msg: pipeline.on_camera_info(msg, self._now()),
                                 subscription_qos(self.params["camera.qos"]))
        for sensor, (message_type, handler) in handlers.items():
            if sensor not in pipeline.active_sensors:
                if self.params[f"{sensor}.enabled"]:
                    self.get_logger().warning(f"{sensor} is enabled but the model has no "
                                              f"'{pipeline.params.inputs[sensor].modality}' input: not subscribed")
                continue
            self.create_subscription(message_type, self.params[f"{sensor}.topic"],
                                     lambda msg, handle=handler: self._on_message(handle, msg),
                                     subscription_qos(self.params[f"{sensor}.qos"]))
        self.get_logger().info(f"inputs: {', '.join(pipeline.active_sensors)}")

    # ------------------------------------------------------------------ callbacks (executor thread)

    def _now(self) -> float:
        return nanoseconds_to_seconds(self.get_clock().now().nanoseconds)

    def _on_message(self, handler, msg) -> None:
        job = handler(msg, self._now())
        if job is not None:
            self._submit(job)

    def _on_check(self) -> None:
        now = self._now()
        job = self.pipeline.on_timer(now)
        if job is not None:
            self._submit(job)
        if self.pipeline.health_changed(now):
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        self._diagnostics_pub.publish(self.pipeline.diagnostics(self._now()))

    def _submit(self, job: FrameJob) -> None:
        """Put ``job`` in the one-frame slot; a job still waiting there is dropped (counted)."""
        with self._slot:
            if self._pending is not None:
                self.pipeline.statistics.count_dropped()
            self._pending = job
            self._slot.notify()

    # ------------------------------------------------------------------ inference worker

    def _take(self) -> FrameJob | None:
        with self._slot:
            while self._pending is None and not self._stopping:
                self._slot.wait()
            job, self._pending = self._pending, None
            return None if self._stopping else job

    def _work(self) -> None:
        while (job := self._take()) is not None:
            try:
                output = self.pipeline.process(job, with_color=self._color_pub.get_subscription_count() > 0,
                                               with_overlay=self._overlay_pub.get_subscription_count() > 0,
                                               with_confidence=self._confidence_pub.get_subscription_count() > 0)
                if output is not None:
                    self._publish(output)
            except Exception as error:  # the worker must survive any single frame
                self.pipeline.statistics.count_failure(error, self._now())
                self.get_logger().error(f"frame failed: {type(error).__name__}: {error}",
                                        throttle_duration_sec=FAILURE_LOG_THROTTLE_S)

    def _publish(self, output: FrameOutput) -> None:
        start = time.perf_counter()
        header = output.header
        self._segmentation_pub.publish(numpy_to_image(output.labels, "mono8", header))
        if output.color is not None:
            self._color_pub.publish(numpy_to_image(output.color, "rgb8", header))
        if output.confidence is not None:
            self._confidence_pub.publish(numpy_to_image(output.confidence, "32FC1", header))
        if output.overlay is not None:
            self._overlay_pub.publish(numpy_to_image(output.overlay, "rgb8", header))
        latency_ms = (self._now() - output.job.newest_input_stamp) * 1e3
        self._latency_pub.publish(Float32(data=float(latency_ms)))
        self._sensor_status_pub.publish(self.pipeline.sensor_status(output))
        self.pipeline.statistics.record_published(output, latency_ms, (time.perf_counter() - start) * 1e3)

    def destroy_node(self) -> None:
        """Stop the worker thread, then destroy the node."""
        with self._slot:
            self._stopping = True
            self._slot.notify_all()
        if self._worker is not None and self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(WORKER_STOP_TIMEOUT_S)
        super().destroy_node()

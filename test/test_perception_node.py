"""perception_node over real rclpy + DDS: outputs, stale and silent sensors, frozen, out-of-order and malformed inputs.

Each test runs the node in-process on its own rclpy context and ROS_DOMAIN_ID (discovery limited to
localhost), with a publisher node streaming generated Drive frames at 10 Hz and subscribers
recording every output.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import Float32, String  # noqa: E402
from test_pipeline import CAMERA_FRAME, SIZE, drive_messages, drive_parameters, make_tiny_checkpoint  # noqa: E402

from robustseg_core.classes import CLASS_NAMES  # noqa: E402
from robustseg_core.sim.drive import Drive, DriveConfig  # noqa: E402
from robustseg_ros.conversions import numpy_to_image, numpy_to_pointcloud2, seconds_to_stamp  # noqa: E402
from robustseg_ros.node import PerceptionNode  # noqa: E402

RATE_HZ = 10.0
MAX_AGE_S = 0.3
CHECK_PERIOD_S = 0.05
DDS_SLACK_S = 0.25
OK, WARN, ERROR, STALE = (bytes([level]) for level in (0, 1, 2, 3))
SENSOR_TOPICS = {"camera": "camera/image", "camera_info": "camera/camera_info", "depth": "depth/image",
                 "lidar": "lidar/points", "events": "events/packets"}
SENSOR_TYPES = {"camera": Image, "camera_info": CameraInfo, "depth": Image, "lidar": PointCloud2, "events": PointCloud2}
PUBLISH_ORDER = ("depth", "lidar", "events", "camera_info", "camera")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def drive_and_frames():
    drive = Drive(5, DriveConfig(width=SIZE[0], height=SIZE[1]))
    return drive, [drive.frame(index) for index in range(1, 9)]


@pytest.fixture
def context(ros_domain):
    """A fresh rclpy context on a domain of its own, discovery limited to this machine."""
    ros_context = rclpy.Context()
    ros_context.init(domain_id=ros_domain)
    yield ros_context
    ros_context.try_shutdown()


def status_by_name(array: DiagnosticArray) -> dict:
    return {status.name: status for status in array.status}


def values_of(status) -> dict:
    return {value.key: value.value for value in status.values}


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


class Harness:
    """The node under test, a sensor publisher streaming Drive frames, and recorders of every output."""

    def __init__(self, context, checkpoint: str, drive_and_frames, **overrides) -> None:
        drive, self.frames = drive_and_frames
        values = {**drive_parameters(drive), "checkpoint": checkpoint, "device": "cpu", "warmup_iterations": 1,
                  "warmup_width": SIZE[0], "warmup_height": SIZE[1], "camera.max_age_s": MAX_AGE_S,
                  "lidar.max_age_s": MAX_AGE_S, "health.check_period_s": CHECK_PERIOD_S,
                  "health.diagnostics_period_s": 0.5, **overrides}
        self.node = PerceptionNode(context=context, parameter_overrides=[Parameter(name, value=value)
                                                                         for name, value in values.items()])
        self.io = Node("sensors_and_recorders", context=context)
        self.publishers = {sensor: self.io.create_publisher(SENSOR_TYPES[sensor], topic, qos_profile_sensor_data)
                           for sensor, topic in SENSOR_TOPICS.items()}
        self.received: dict[str, list] = {}
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for name, message_type in (("segmentation", Image), ("segmentation_color", Image), ("confidence", Image),
                                   ("latency_ms", Float32), ("sensor_status", DiagnosticArray)):
            self.record(message_type, f"/perception_node/{name}", name, reliable)
        self.record(DiagnosticArray, "/diagnostics", "diagnostics", reliable)
        self.camera_headers: dict[tuple[int, int], object] = {}
        self.published_stamps: dict[str, list] = {sensor: [] for sensor in SENSOR_TOPICS}
        self.last_published: dict[str, float] = {}
        self.streaming = set(PUBLISH_ORDER)
        self.mutate: Callable[[dict], None] | None = None
        self._stop = threading.Event()
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.io)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()
        self._stream = threading.Thread(target=self._publish_loop, daemon=True)

    def record(self, message_type, topic: str, name: str, qos) -> None:
        store = self.received.setdefault(name, [])
        self.io.create_subscription(message_type, topic, lambda msg: store.append((time.time(), msg)), qos)

    def start(self) -> Harness:
        self._stream.start()
        return self

    def publish(self, sensor: str, msg) -> None:
        self.publishers[sensor].publish(msg)
        self.published_stamps[sensor].append((msg.header.stamp.sec, msg.header.stamp.nanosec))
        self.last_published[sensor] = time.time()

    def _publish_loop(self) -> None:
        for index in itertools.count():
            if self._stop.wait(1.0 / RATE_HZ if index else 0.0):
                return
            stamp = self.node.get_clock().now().nanoseconds * 1e-9
            messages = drive_messages(self.frames[index % len(self.frames)], stamp)
            if self.mutate is not None:
                self.mutate(messages)
            self.camera_headers[(messages["camera"].header.stamp.sec, messages["camera"].header.stamp.nanosec)] = (
                messages["camera"].header)
            for sensor in PUBLISH_ORDER:
                if sensor in self.streaming:
                    self.publish(sensor, messages[sensor])

    def count(self, name: str) -> int:
        return len(self.received[name])

    def latest(self, name: str):
        return self.received[name][-1][1]

    def diagnostics_where(self, condition) -> list:
        return [(at, msg) for at, msg in list(self.received["diagnostics"]) if condition(status_by_name(msg))]

    def close(self) -> None:
        self._stop.set()
        if self._stream.is_alive():
            self._stream.join()
        self.executor.shutdown()
        self._spin.join(5.0)
        self.node.destroy_node()
        self.io.destroy_node()


@pytest.fixture
def harness(context, checkpoint, drive_and_frames, request):
    overrides = getattr(request, "param", {})
    running = Harness(context, checkpoint, drive_and_frames, **overrides)
    yield running
    running.close()


def test_outputs_have_the_camera_header_and_the_expected_encodings(harness):
    harness.start()
    wait_for(lambda: harness.count("segmentation") >= 5 and harness.count("sensor_status") >= 5, 10.0,
             "five segmented frames")
    width, height = SIZE
    for name, encoding, step in (("segmentation", "mono8", width), ("segmentation_color", "rgb8", 3 * width),
                                 ("confidence", "32FC1", 4 * width)):
        for _, msg in list(harness.received[name]):
            camera_header = harness.camera_headers[(msg.header.stamp.sec, msg.header.stamp.nanosec)]
            assert msg.header == camera_header and msg.header.frame_id == CAMERA_FRAME
            assert (msg.encoding, msg.width, msg.height, msg.step) == (encoding, width, height, step)
    labels = np.frombuffer(harness.latest("segmentation").data, np.uint8)
    assert labels.max() < len(CLASS_NAMES)
    confidence = np.frombuffer(harness.latest("confidence").data, np.float32)
    assert 0.0 < confidence.min() <= confidence.max() <= 1.0

    statuses = [status_by_name(msg) for _, msg in list(harness.received["sensor_status"])]
    assert any(all(status.level == OK and status.message == "fed" for status in frame.values())
               for frame in statuses), "some frame was fed by all four sensors"
    assert len(statuses[0]) == 4
    latencies = [msg.data for _, msg in list(harness.received["latency_ms"])]
    assert all(0.0 < latency < 2000.0 for latency in latencies)

    overlays, names = [], []
    harness.io.create_subscription(Image, "/perception_node/overlay", overlays.append,
                                   QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    harness.io.create_subscription(String, "/perception_node/class_names", names.append, latched)
    wait_for(lambda: overlays and names, 5.0, "an overlay once subscribed, and the latched class names")
    assert overlays[0].encoding == "rgb8" and (overlays[0].width, overlays[0].height) == SIZE
    assert names[0].data.split("\n") == list(CLASS_NAMES)

    wait_for(lambda: harness.diagnostics_where(lambda status: status["robustseg: model"].level == OK), 5.0,
             "the model OK on /diagnostics")
    diagnostics = status_by_name(harness.diagnostics_where(lambda s: s["robustseg: model"].level == OK)[-1][1])
    assert {"robustseg: camera", "robustseg: depth", "robustseg: events", "robustseg: lidar"} <= set(diagnostics)
    model = values_of(diagnostics["robustseg: model"])
    assert model["device"] == "cpu" and int(model["frames_processed"]) >= 1 and "infer_ms_mean" in model


def test_stale_lidar_and_silent_camera_keep_frames_coming(harness):
    harness.start()
    wait_for(lambda: harness.count("segmentation") >= 3, 10.0, "three segmented frames")
    harness.streaming.discard("lidar")
    wait_for(lambda: "lidar" in harness.last_published, 1.0, "a LiDAR message")
    stopped_at = harness.last_published["lidar"]

    def lidar_stale_since_stopped() -> list:  # not the "never received" STALE of a /diagnostics sent at start-up
        return [(at, msg) for at, msg in harness.diagnostics_where(lambda s: s["robustseg: lidar"].level == STALE)
                if at > stopped_at]

    wait_for(lidar_stale_since_stopped, 3.0, "LiDAR STALE on /diagnostics")
    stale_at, stale = lidar_stale_since_stopped()[0]
    assert stale_at - stopped_at <= MAX_AGE_S + CHECK_PERIOD_S + DDS_SLACK_S
    assert status_by_name(stale)["robustseg: lidar"].message.startswith("stale: last message")

    frames_at_stale = harness.count("sensor_status")
    wait_for(lambda: harness.count("sensor_status") >= frames_at_stale + 3, 3.0, "frames without the LiDAR")
    lidar = status_by_name(harness.latest("sensor_status"))["robustseg: lidar"]
    assert lidar.level == STALE and lidar.message.startswith("stale") and values_of(lidar)["fed"] == "false"

    harness.streaming -= {"camera", "camera_info"}
    camera_stopped_at = harness.last_published["camera"]

    def timer_frames():
        return [msg for at, msg in list(harness.received["segmentation"]) if at > camera_stopped_at + MAX_AGE_S + 0.1]

    wait_for(lambda: len(timer_frames()) >= 3, 4.0, "timer-driven frames while the camera is silent")
    depth_stamps = set(harness.published_stamps["depth"])
    for msg in timer_frames():
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) in depth_stamps
        assert msg.header.frame_id == CAMERA_FRAME, "frame_id of the last CameraInfo"
    camera = status_by_name(harness.latest("sensor_status"))["robustseg: camera"]
    assert camera.level == STALE and camera.message.startswith("stale")


@pytest.mark.parametrize("harness", [{"health.frozen_warn_repeats": 2, "health.frozen_stale_repeats": 4}],
                         indirect=True)
def test_frozen_out_of_order_and_malformed_inputs_are_reported_and_survived(harness):
    frozen = {}

    def freeze_depth(messages):
        frozen.setdefault("data", messages["depth"].data)
        messages["depth"].data = frozen["data"]

    harness.mutate = freeze_depth
    harness.start()
    wait_for(lambda: harness.diagnostics_where(lambda s: "frozen" in s["robustseg: depth"].message
                                               and s["robustseg: depth"].level == STALE), 5.0, "frozen depth STALE")
    wait_for(lambda: harness.count("sensor_status") > 0 and status_by_name(harness.latest("sensor_status"))[
        "robustseg: depth"].message == "unhealthy: frozen", 3.0, "frames without the frozen depth")

    now = harness.node.get_clock().now().nanoseconds * 1e-9
    good = drive_messages(harness.frames[0], now - 1.0)
    harness.publish("lidar", good["lidar"])  # a second older than the stream: out of order
    wrong_step = drive_messages(harness.frames[0], now)["camera"]
    wrong_step.step = 7
    unknown_encoding = drive_messages(harness.frames[0], now)["camera"]
    unknown_encoding.encoding = "nv12"
    truncated = drive_messages(harness.frames[0], now)["depth"]
    truncated.data = truncated.data[:100]
    nan_depth = numpy_to_image(np.full((SIZE[1], SIZE[0]), np.nan, np.float32), "32FC1", good["depth"].header)
    nan_depth.header.stamp = seconds_to_stamp(now)
    empty_cloud = numpy_to_pointcloud2(np.zeros((0, 4), np.float32), good["lidar"].header)
    for sensor, msg in (("camera", wrong_step), ("camera", unknown_encoding), ("depth", truncated),
                        ("depth", nan_depth), ("lidar", empty_cloud)):
        harness.publish(sensor, msg)
    frames_before = harness.count("segmentation")

    def reported(statuses) -> bool:
        camera, depth, lidar = (values_of(statuses[f"robustseg: {name}"]) for name in ("camera", "depth", "lidar"))
        return (camera.get("malformed.step") == "1" and camera.get("malformed.encoding") == "1"
                and depth.get("malformed.data") == "1" and depth.get("malformed.no valid depth") == "1"
                and lidar.get("malformed.empty cloud") == "1" and lidar.get("backwards_stamps") == "1")

    wait_for(lambda: harness.diagnostics_where(reported), 3.0, "malformed and out-of-order messages on /diagnostics")
    lidar = status_by_name(harness.diagnostics_where(reported)[0][1])["robustseg: lidar"]
    assert "stamp went backwards" in lidar.message and "malformed empty cloud" in lidar.message
    wait_for(lambda: harness.count("segmentation") >= frames_before + 3, 3.0, "frames after the bad messages")
    assert harness.node.pipeline.health["rgb"].error_counts == {"step": 1, "encoding": 1}


def test_a_camera_info_latched_before_the_node_started_is_received(context, checkpoint, drive_and_frames):
    """A static CameraInfo publisher sends once, transient local: a volatile subscription never got it, so depth
    and LiDAR were never fused."""
    _, frames = drive_and_frames
    latched = Node("latched_camera_info", context=context)
    publisher = latched.create_publisher(CameraInfo, SENSOR_TOPICS["camera_info"], QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    publisher.publish(drive_messages(frames[0])["camera_info"])
    harness = Harness(context, checkpoint, drive_and_frames)  # started after the only CameraInfo, streams nothing
    try:
        wait_for(lambda: harness.node.pipeline.camera_intrinsics is not None, 10.0, "the latched CameraInfo")
        assert harness.node.pipeline.camera_frame_id == CAMERA_FRAME
    finally:
        harness.close()
        latched.destroy_node()

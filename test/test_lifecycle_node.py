"""perception_node as a managed node, its live parameters and compressed camera input, over real rclpy + DDS.

Transitions and parameter changes go through the node's ROS services (``~/change_state``,
``~/set_parameters``), as ``ros2 lifecycle set`` and ``ros2 param set`` send them.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMessage  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402
from test_compressed import compressed, encoded_rgb  # noqa: E402
from test_perception_node import (  # noqa: E402
    Harness,
    checkpoint,  # noqa: F401  (fixture)
    context,  # noqa: F401  (fixture)
    drive_and_frames,  # noqa: F401  (fixture)
    status_by_name,
    values_of,
    wait_for,
)

NODE = "/perception_node"


def call(harness: Harness, service_type, name: str, request, timeout_s: float = 10.0):
    client = harness.io.create_client(service_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout_s), f"no service {name}"
        future = client.call_async(request)
        wait_for(future.done, timeout_s, f"the answer of {name}")
        return future.result()
    finally:
        harness.io.destroy_client(client)


def transition(harness: Harness, label: str = "", transition_id: int = 0) -> bool:
    """``ros2 lifecycle set`` (by label), or a lifecycle manager (by id)."""
    request = ChangeState.Request(transition=Transition(label=label, id=transition_id))
    return call(harness, ChangeState, f"{NODE}/change_state", request).success


def set_parameter(harness: Harness, name: str, value):
    """``ros2 param set``: one parameter through the node's set_parameters service; returns the result."""
    message = ParameterMessage(name=name, value=Parameter(name, value=value).get_parameter_value())
    [result] = call(harness, SetParameters, f"{NODE}/set_parameters", SetParameters.Request(parameters=[message])).results
    return result


def lifecycle_values(harness: Harness) -> dict:
    arrays = [msg for _, msg in list(harness.received["diagnostics"]) if "robustseg: lifecycle" in status_by_name(msg)]
    return values_of(status_by_name(arrays[-1])["robustseg: lifecycle"]) if arrays else {}


@pytest.fixture
def managed(context, checkpoint, drive_and_frames):  # noqa: F811
    running = Harness(context, checkpoint, drive_and_frames, autostart=False)
    yield running
    running.close()


def test_lifecycle_transitions_load_subscribe_publish_and_free(managed):
    node = managed.node
    assert node.lifecycle_state == "unconfigured" and node.segmenter is None
    managed.start()
    wait_for(lambda: lifecycle_values(managed).get("state") == "unconfigured", 5.0, "unconfigured on /diagnostics")

    assert not transition(managed, "activate"), "activate is not a transition of an unconfigured node"
    assert node.lifecycle_state == "unconfigured" and node.segmenter is None
    wait_for(lambda: "'activate' is not allowed in state 'unconfigured' (allowed: configure, shutdown)"
             in lifecycle_values(managed).get("last_refused_transition", ""), 5.0, "the refusal on /diagnostics")

    assert not transition(managed, transition_id=Transition.TRANSITION_ACTIVATE), "by id, as nav2's manager sends it"
    wait_for(lambda: "'activate' (id 3) is not allowed in state 'unconfigured'"
             in lifecycle_values(managed).get("last_refused_transition", ""), 5.0, "the refusal by id, named")

    assert transition(managed, "configure")
    assert node.lifecycle_state == "inactive" and node.segmenter is not None
    time.sleep(0.5)
    assert managed.count("segmentation") == 0, "an inactive node publishes nothing"

    assert transition(managed, "activate")
    wait_for(lambda: managed.count("segmentation") >= 2, 10.0, "frames once active")
    wait_for(lambda: lifecycle_values(managed).get("state") == "active", 5.0, "active on /diagnostics")

    assert transition(managed, "deactivate")
    assert managed.publishers["camera"].get_subscription_count() == 0, "inactive: unsubscribed"
    frames = managed.count("segmentation")
    time.sleep(0.5)
    assert managed.count("segmentation") == frames

    assert transition(managed, "activate"), "activated again: sensors start afresh and frames resume"
    wait_for(lambda: managed.count("segmentation") >= frames + 2, 10.0, "frames once active again")
    assert transition(managed, "deactivate")

    assert transition(managed, "cleanup")
    assert node.lifecycle_state == "unconfigured" and node.segmenter is None and node.pipeline is None

    assert set_parameter(managed, "short_side", 96).successful, "not live, but the node is unconfigured"
    assert transition(managed, "configure")
    assert node.segmenter.short_side == 96, "the next configure reads it"
    refused = set_parameter(managed, "short_side", 64)
    assert not refused.successful and "short_side are read-only while the node is configured" in refused.reason
    assert transition(managed, "cleanup")
    refused = set_parameter(managed, "health.diagnostics_period_s", 0.5)
    assert not refused.successful and "are read when the node starts" in refused.reason
    assert transition(managed, "shutdown")
    assert node.lifecycle_state == "finalized" and node.finished


def test_a_failing_configure_leaves_the_node_unconfigured(context, drive_and_frames, tmp_path):  # noqa: F811
    harness = Harness(context, str(tmp_path / "gone.pt"), drive_and_frames, autostart=False)
    try:
        assert not transition(harness, "configure")
        assert harness.node.lifecycle_state == "unconfigured"
        assert "gone.pt" in str(harness.node._configure_error)
    finally:
        harness.close()


def test_live_parameters_apply_at_once_and_invalid_values_are_refused_with_the_reason(context, checkpoint,  # noqa: F811
                                                                                      drive_and_frames):  # noqa: F811
    harness = Harness(context, checkpoint, drive_and_frames).start()
    try:
        wait_for(lambda: harness.count("segmentation") >= 2, 10.0, "frames")
        assert set_parameter(harness, "output.confidence_threshold", 1.0).successful
        received = harness.count("segmentation")
        wait_for(lambda: harness.count("segmentation") >= received + 2, 5.0, "frames after the change")
        labels = np.frombuffer(harness.latest("segmentation").data, np.uint8)
        assert (labels == 255).all(), "every pixel below confidence 1.0 is unknown"

        refused = set_parameter(harness, "output.overlay_alpha", 1.5)
        assert not refused.successful and "output.overlay_alpha: must be in [0, 1], got 1.5" in refused.reason
        refused = set_parameter(harness, "health.frozen_warn_repeats", 20)
        assert not refused.successful and "frozen_warn_repeats <= frozen_stale_repeats" in refused.reason
        refused = set_parameter(harness, "missing_convention", "average")
        assert not refused.successful and "'average' is not one of auto, drop, zero" in refused.reason
        refused = set_parameter(harness, "device", "cuda")
        assert not refused.successful and "read-only while the node is configured" in refused.reason
        refused = set_parameter(harness, "output.overlay_alpha", 1)
        assert not refused.successful and refused.reason == ("parameter output.overlay_alpha: expected a double, "
                                                             "got the integer 1 (write 1.0)")
        refused = set_parameter(harness, "lidar.max_age_s", "abc")
        assert not refused.successful and refused.reason == ("parameter lidar.max_age_s: expected a double, got the "
                                                             "string 'abc'")
        assert harness.node.params["output.overlay_alpha"] == 0.5
        assert harness.node.get_parameter("lidar.max_age_s").type_ == Parameter.Type.DOUBLE

        assert harness.node.segmenter.convention == "drop", "auto: the convention the model was trained with"
        assert set_parameter(harness, "missing_convention", "zero").successful
        assert harness.node.segmenter.convention == "zero"
        assert set_parameter(harness, "lidar.enabled", False).successful
        wait_for(lambda: harness.publishers["lidar"].get_subscription_count() == 0, 5.0, "the LiDAR unsubscribed")
        # frames built before the change (one in progress, one waiting) may still come with the LiDAR fed
        wait_for(lambda: status_by_name(harness.latest("sensor_status"))["robustseg: lidar"].message == "disabled",
                 10.0, "a frame without the LiDAR")
        assert values_of(status_by_name(harness.latest("sensor_status"))["robustseg: lidar"])["fed"] == "false"
        for sensor in ("camera", "depth"):
            assert set_parameter(harness, f"{sensor}.enabled", False).successful
        assert "no enabled input would feed the model" in set_parameter(harness, "events.enabled", False).reason
        assert set_parameter(harness, "lidar.enabled", True).successful
        wait_for(lambda: harness.publishers["lidar"].get_subscription_count() == 1, 5.0, "the LiDAR subscribed again")
    finally:
        harness.close()


def test_compressed_camera_input_is_segmented_and_corrupt_frames_are_counted(context, checkpoint,  # noqa: F811
                                                                             drive_and_frames):  # noqa: F811
    harness = Harness(context, checkpoint, drive_and_frames, **{"camera.transport": "compressed"})
    try:
        harness.publishers["camera"] = harness.io.create_publisher(CompressedImage, "camera/image/compressed",
                                                                   qos_profile_sensor_data)
        corrupt = {"left": 2}

        def compress(messages):
            image = messages["camera"]
            pixels = np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 3)
            data = encoded_rgb(pixels, ".jpg") if not corrupt["left"] else b"\xff\xd8\xff" + bytes(100)
            corrupt["left"] = max(0, corrupt["left"] - 1)
            messages["camera"] = compressed(data, "jpeg", image.header)

        harness.mutate = compress
        harness.start()
        # the first two images are corrupt, and frames driven by the timer may come before a sound one
        wait_for(lambda: any(status_by_name(msg)["robustseg: camera"].message == "fed"
                             for _, msg in list(harness.received["sensor_status"])), 15.0,
                 "a frame fed by the compressed camera")
        wait_for(lambda: harness.diagnostics_where(
            lambda s: values_of(s["robustseg: camera"]).get("malformed.data") == "2"), 5.0, "2 corrupt images counted")
    finally:
        harness.close()


def test_the_onnxruntime_backend_runs_in_the_node(context, checkpoint, drive_and_frames, tmp_path,  # noqa: F811
                                                  monkeypatch):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'robustseg_ros[onnx]'")
    monkeypatch.setenv("ROBUSTSEG_CACHE_DIR", str(tmp_path))  # the checkpoint is exported here at configure
    harness = Harness(context, checkpoint, drive_and_frames, backend="onnxruntime").start()
    try:
        assert harness.node.segmenter.backend.name == "onnxruntime" and list(tmp_path.glob("tiny-*.onnx"))
        wait_for(lambda: harness.count("segmentation") >= 2, 10.0, "frames from the onnxruntime backend")
        wait_for(lambda: harness.diagnostics_where(
            lambda s: values_of(s["robustseg: model"]).get("backend") == "onnxruntime"
            and int(values_of(s["robustseg: model"]).get("frames_processed", 0)) > 0), 5.0, "the backend on /diagnostics")
    finally:
        harness.close()


def test_a_signal_while_the_node_starts_stops_the_warm_up_and_leaves_it_inactive(context, checkpoint):  # noqa: F811
    """SIGTERM during a long warm-up waited for it to end, and the node then activated and subscribed."""
    from robustseg_ros.node import PerceptionNode

    asked = []

    def interrupted() -> bool:
        asked.append(True)
        return len(asked) > 2  # the signal came during the second warm-up frame: the third does not start

    overrides = {"checkpoint": checkpoint, "device": "cpu", "warmup_iterations": 100, "warmup_width": 64,
                 "warmup_height": 48}
    node = PerceptionNode(interrupted=interrupted, context=context,
                          parameter_overrides=[Parameter(name, value=value) for name, value in overrides.items()])
    try:
        assert node.lifecycle_state == "inactive", "configured, never activated: nothing subscribed"
        assert len(asked) == 4, "two warm-up frames, the check that stopped it, the one before activating"
    finally:
        node.destroy_node()


def test_a_node_in_a_namespace_names_its_diagnostics_after_itself(context, checkpoint):  # noqa: F811
    """Two nodes (one per camera, each in its namespace) published identical status names on /diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from robustseg_ros.node import PerceptionNode

    node = PerceptionNode(namespace="/robot1", context=context,
                          parameter_overrides=[Parameter(name, value=value) for name, value in (
                              ("checkpoint", checkpoint), ("device", "cpu"), ("warmup_iterations", 0))])
    listener = Node("diagnostics_listener", context=context)
    received = []
    listener.create_subscription(DiagnosticArray, "/diagnostics", received.append, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 10.0
        while not any(len(message.status) > 1 for message in received) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        names = {status.name for message in received for status in message.status}
        assert {"robustseg /robot1/perception_node: model", "robustseg /robot1/perception_node: camera",
                "robustseg /robot1/perception_node: lifecycle"} <= names, names
    finally:
        executor.shutdown()
        node.destroy_node()
        listener.destroy_node()

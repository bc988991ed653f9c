"""Recording for Foxglove and RViz: evaluate_bag --record-outputs and record_outputs write the inputs and every
output into an MCAP bag that holds what config/foxglove_layout.json shows."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("rosbags")

from test_bags import checkpoint, evaluate, record  # noqa: E402, F401  (fixture)
from test_perception_node import Harness, context, drive_and_frames, wait_for  # noqa: E402, F401  (fixtures)

from robustseg_ros.bagtools import record_outputs  # noqa: E402
from robustseg_ros.bagtools.bag_io import BagReader  # noqa: E402
from robustseg_ros.params import PARAMETER_DEFAULTS, PerceptionParams  # noqa: E402

LAYOUT = Path(__file__).resolve().parents[1] / "config" / "foxglove_layout.json"
NODE_OUTPUTS = {"segmentation": "sensor_msgs/msg/Image", "segmentation_color": "sensor_msgs/msg/Image",
                "confidence": "sensor_msgs/msg/Image", "overlay": "sensor_msgs/msg/Image",
                "latency_ms": "std_msgs/msg/Float32", "sensor_status": "diagnostic_msgs/msg/DiagnosticArray",
                "class_names": "std_msgs/msg/String"}
INPUTS = {"/camera/image": "sensor_msgs/msg/Image", "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
          "/depth/image": "sensor_msgs/msg/Image", "/lidar/points": "sensor_msgs/msg/PointCloud2",
          "/events/packets": "sensor_msgs/msg/PointCloud2"}


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "drive"
    record(path)
    return path


def recorded(path: Path) -> tuple[dict, dict]:
    """Topic -> type and topic -> message count of a recorded bag (checked to be MCAP)."""
    with BagReader(path) as bag:
        assert bag.storage == "mcap" and list(path.glob("*.mcap"))
        counts: dict[str, int] = {}
        for topic, _, _ in bag.messages(raw=True):
            counts[topic] = counts.get(topic, 0) + 1
        return bag.topics, counts


def layout_topics() -> set[str]:
    """Every topic the Foxglove layout reads (image topics, diagnostics, the topics of message paths)."""
    layout = json.loads(LAYOUT.read_text())
    topics = set()
    for config in layout["configById"].values():
        topics.update(value for key, value in _items(config) if key in ("imageTopic", "topicToRender"))
        topics.update(re.match(r"(/[\w/]+)", value).group(1) for key, value in _items(config) if key == "value")
    return topics


def _items(tree):
    if isinstance(tree, dict):
        for key, value in tree.items():
            if isinstance(value, str):
                yield key, value
            yield from _items(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _items(value)


def test_offline_evaluation_records_inputs_and_every_output_for_foxglove(bag, checkpoint, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "outputs"
    # a failed evaluation leaves no bag at OUT (only its part in OUT.partial), so the rerun is not refused
    assert evaluate(bag, tmp_path / "eval", checkpoint, "--record-outputs", str(out), "-p", "lidar.topic:=/nowhere") == 1
    assert not out.exists() and (tmp_path / "outputs.partial").is_dir()
    assert "recording is incomplete" in capsys.readouterr().err
    assert evaluate(bag, tmp_path / "eval", checkpoint, "--no-plots", "--record-outputs", str(out)) == 0
    assert "evaluate_bag: recorded" in capsys.readouterr().out
    types, counts = recorded(out)
    for name, message_type in NODE_OUTPUTS.items():
        assert types[f"/perception_node/{name}"] == message_type, name
    assert types["/diagnostics"] == "diagnostic_msgs/msg/DiagnosticArray"
    assert {topic: types[topic] for topic in INPUTS} == INPUTS and counts["/ground_truth/labels"] > 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    frames = metrics["frames"]["total"]
    for name in ("segmentation", "segmentation_color", "confidence", "overlay", "latency_ms", "sensor_status"):
        assert counts[f"/perception_node/{name}"] == frames, name
    assert counts["/perception_node/class_names"] == 1 and counts["/diagnostics"] >= 3
    assert metrics["recording"]["messages"] == counts
    assert layout_topics() <= set(types), f"the layout shows topics the bag lacks: {layout_topics() - set(types)}"
    assert not (tmp_path / "outputs.partial").exists(), "replaced, then renamed to OUT"
    assert evaluate(bag, tmp_path / "eval2", checkpoint, "--no-plots", "--record-outputs", str(out)) == 1
    assert "already exists" in capsys.readouterr().err


def test_record_outputs_records_a_running_node_until_sigint(context, checkpoint, drive_and_frames, tmp_path,  # noqa: F811
                                                           capsys):
    harness = Harness(context, checkpoint, drive_and_frames).start()
    try:
        wait_for(lambda: harness.count("segmentation") >= 2, 10.0, "the node's frames")
        out = tmp_path / "running"
        interrupt = threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGINT))
        interrupt.start()
        try:
            assert record_outputs.cli([str(out)]) == 0
        finally:
            interrupt.cancel()
    finally:
        harness.close()
    printed = capsys.readouterr().out
    assert "record_outputs: wrote" in printed
    types, counts = recorded(out)
    assert {topic: types[topic] for topic in INPUTS} == INPUTS
    assert counts["/perception_node/segmentation"] >= 3 and counts["/camera/image"] >= 3
    assert counts["/perception_node/class_names"] == 1 and counts["/diagnostics"] >= 1
    assert "/perception_node/overlay" in types, "recording subscribes to the overlay, so the node computes it"


def test_a_second_recorder_for_one_bag_is_refused_and_a_failed_recording_is_not_finished(tmp_path, ros_domain,
                                                                                        monkeypatch, capsys):
    from std_msgs.msg import String

    from robustseg_ros.bagtools.bag_io import BagError
    from robustseg_ros.bagtools.recorder import BagRecorder

    out = tmp_path / "outputs"
    first = BagRecorder(out)
    first.write("/note", 1, String(data="first"))
    with pytest.raises(BagError, match=f"bag {out}: another recording into it is running .*pid {os.getpid()}"):
        BagRecorder(out)
    first.write("/note", 2, String(data="still recording"))
    first.close()
    assert recorded(out)[1] == {"/note": 2}, "the first recording was left alone"
    assert sorted(path.name for path in out.glob("*.mcap")) == ["outputs.mcap"], "named after the bag, not a stage"
    assert [path.name for path in tmp_path.iterdir()] == ["outputs"], "no lock or partial left behind"

    def no_space(*_args, **_kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "failed.partial"))

    monkeypatch.setattr(record_outputs, "subscribe_outputs", no_space)
    assert record_outputs.cli([str(tmp_path / "failed"), "--duration", "0.1"]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not (tmp_path / "failed").exists() and (tmp_path / "failed.partial").is_dir()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["failed.partial", "outputs"]


def test_messages_before_the_first_clock_take_the_time_of_the_next_one(tmp_path, monkeypatch, capsys):
    """A recorder on sim time wrote what came before /clock at 0: a replay then waited 100 s before the drive."""
    from std_msgs.msg import String

    from robustseg_ros.bagtools import recorder as recorder_module
    from robustseg_ros.bagtools.recorder import BagRecorder

    recorder = BagRecorder(tmp_path / "sim_time")
    recorder.write("/perception_node/class_names", 0, String(data="road"))
    recorder.write("/diagnostics_note", 0, String(data="before /clock"))
    recorder.write("/note", 100_000_000_000, String(data="first with a time"))
    recorder.close()
    with BagReader(tmp_path / "sim_time") as bag:
        assert {timestamp for _, timestamp, _ in bag.messages(raw=True)} == {100_000_000_000}
        assert bag.message_counts == {"/perception_node/class_names": 1, "/diagnostics_note": 1, "/note": 1}

    monkeypatch.setattr(recorder_module, "HOLD_AT_ZERO_S", -1.0)  # no /clock ever: not held without bound
    recorder = BagRecorder(tmp_path / "no_clock")
    for index in range(3):
        recorder.write("/note", 0, String(data=str(index)))
    assert not recorder._held, "written at 0 once the wait is over"
    recorder.close()
    assert "no time after -1 s (use_sim_time without /clock?)" in capsys.readouterr().err


def test_the_inputs_of_a_namespaced_node_are_recorded_in_its_namespace():
    params = PerceptionParams({**PARAMETER_DEFAULTS, "lidar.topic": "/velodyne_points"})
    topics, inputs = record_outputs.recorded_topics(params, "/robot1/perception_node", True)
    assert {"/robot1/camera/image", "/robot1/camera/camera_info", "/velodyne_points"} <= inputs
    assert "/robot1/perception_node/segmentation" in topics and "/camera/image" not in topics


def test_arguments_after_ros_args_go_to_rclpy_not_to_the_command(tmp_path, ros_domain, capsys):
    """``--ros-args -p use_sim_time:=true`` was taken for record_outputs' own -p (an unknown node parameter)."""
    assert record_outputs.cli([str(tmp_path / "sim_time"), "--duration", "0.2", "--ros-args", "-p",
                               "use_sim_time:=true", "-r", "__ns:=/robot1"]) == 0
    assert (tmp_path / "sim_time").is_dir() and "error" not in capsys.readouterr().err


@pytest.mark.parametrize("name", ["bad name", "/robot//perception", "/perception/", "~/perception", ""])
def test_record_outputs_refuses_a_node_name_that_is_not_one(name, tmp_path, capsys):
    """A mistyped --node is one line naming it (exit 2) before any bag or partial is created."""
    with pytest.raises(SystemExit) as stopped:
        record_outputs.main([str(tmp_path / "out"), "--node", name, "--duration", "0.1"])
    assert stopped.value.code == 2
    assert f"argument --node: {name!r} is not a node name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


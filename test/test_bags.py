"""rosbag2 recording and offline evaluation: record_synthetic -> evaluate_bag, storage plugins, bag errors."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("rosbags")

from test_pipeline import make_tiny_checkpoint  # noqa: E402

from robustseg_ros.bagtools import evaluate_bag, record_synthetic  # noqa: E402
from robustseg_ros.bagtools.bag_io import BagError, BagReader, BagWriter  # noqa: E402
from robustseg_ros.bagtools.faults import TIMELINE_FILE, default_faults, faults_from_record  # noqa: E402

SEED = 4
DURATION_S = 3.0
START_S = 100.0
SIZE = ("64", "48")


def record(path, *extra) -> None:
    assert record_synthetic.cli([str(path), "--seed", str(SEED), "--duration", str(DURATION_S), "--width", SIZE[0],
                                  "--height", SIZE[1], "--start-time", str(START_S), *extra]) == 0


def evaluate(bag, output, checkpoint, *extra) -> int:
    return evaluate_bag.cli([str(bag), "--output", str(output), "--checkpoint", checkpoint, "--device", "cpu",
                              "--torch-threads", "1", *extra])


def without_timing(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key != "timing"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("bags")
    record(folder / "drive_mcap")
    record(folder / "drive_sqlite3", "--storage", "sqlite3")
    return {"mcap": folder / "drive_mcap", "sqlite3": folder / "drive_sqlite3"}


@pytest.fixture(scope="module")
def evaluations(bags, checkpoint, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("evaluations")
    results = {}
    for name, bag, extra in (("first", bags["mcap"], ()), ("second", bags["mcap"], ("--no-plots",)),
                             ("sqlite3", bags["sqlite3"], ("--no-plots",))):
        assert evaluate(bag, folder / name, checkpoint, *extra) == 0
        results[name] = json.loads((folder / name / "metrics.json").read_text())
    results["folder"] = folder
    return results


def test_offline_evaluation_is_repeatable_and_reports_faults(evaluations):
    first, second = evaluations["first"], evaluations["second"]
    assert without_timing(first) | {"report_files": None} == without_timing(second) | {"report_files": None}
    frames = first["frames"]
    assert frames["total"] == frames["camera_messages"] == 30
    assert frames["scored"] == 30 and frames["unmatched_outputs"] == 0
    assert first["accuracy"]["miou"] >= 0.0 and len(first["accuracy"]["per_class_iou"]) == 25
    assert "nominal" in first["accuracy_by_window"]
    assert {"RDEL", "RDE"} <= set(first["accuracy_by_modalities"])
    drop_window = next(fault["name"] for fault in first["faults"] if fault["kind"] == "drop")
    assert all("L" not in frame["fed"] for frame in first["per_frame"] if drop_window in frame["windows"])
    overexposure = next(fault for fault in first["faults"] if fault["kind"] == "overexposure")
    assert overexposure["worst_state"] == "DEGRADED" and overexposure["degraded_delay_s"] <= 0.3
    drop = next(fault for fault in first["faults"] if fault["kind"] == "drop")
    assert drop["sensor"] == "lidar" and drop["worst_state"] == "STALE"
    # max_age_s after the last scan's header stamp (RECEIVE_DELAY_S before its bag time), within one check period
    earliest = 0.5 - record_synthetic.RECEIVE_DELAY_S["lidar"]
    assert earliest - 1e-6 <= drop["stale_delay_s"] <= earliest + 0.05 + 1e-6
    assert first["timing"]["measure"] == "processing" and first["timing"]["frame_ms"]["count"] == 30
    report = evaluations["folder"] / "first"
    for name in ("report.md", "miou_over_time.png", "latency_histogram.png", "samples.png"):
        assert (report / name).stat().st_size > 0
    assert "![Sample frames](samples.png)" in (report / "report.md").read_text()


def test_sensors_that_lie_are_degraded_in_time_without_false_alarms(checkpoint, tmp_path):
    """Content faults placed with --fault after a nominal lead: each flagged DEGRADED within 0.3 s of its onset and
    cleared within 1 s of its end, no false alarm, and the window's mIoU with and without fusing the sensor."""
    bag = tmp_path / "lying"
    record(bag, "--duration", "5.0", "--faults", "none", "--fault", "underexposure:camera:1.0:1.6",
           "--fault", "jitter:lidar:2.0:2.6", "--fault", "noise:depth:2.5:3.0",
           "--fault", "flood:events:3.5:4.0")  # event rules wait for 3 s of history
    assert evaluate(bag, tmp_path / "evaluation", checkpoint, "--no-plots") == 0
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    faults = {fault["kind"]: fault for fault in metrics["faults"]}
    assert set(faults) == {"underexposure", "flood", "jitter", "noise"}
    for fault in faults.values():
        assert fault["worst_state"] == "DEGRADED", fault["name"]
        assert 0.0 <= fault["degraded_delay_s"] <= 0.3 and 0.0 <= fault["clear_delay_s"] <= 1.0, fault["name"]
        policies = fault["accuracy_by_policy"]
        assert set(policies) == {"configured", "fused", "not_fused"} and policies["fused"]["frames"] >= 5
    assert faults["underexposure"]["accuracy_by_policy"]["fused"] != faults["underexposure"]["accuracy_by_policy"][
        "not_fused"], "the two choices were both run"
    assert {sensor: value["degraded"] for sensor, value in metrics["false_alarms"].items()} == {
        "camera": 0, "depth": 0, "events": 0, "lidar": 0}
    assert set(metrics["accuracy_by_policy"]) == {"whole_drive", "frames_with_a_degraded_sensor"}
    assert set(metrics["accuracy_by_policy"]["whole_drive"]) == {"configured", "fused", "not_fused"}
    jitter = faults["jitter"]["accuracy_by_policy"]
    assert jitter["configured"] == jitter["fused"], "LiDAR is fused while DEGRADED by default"
    camera = faults["underexposure"]["accuracy_by_policy"]
    assert camera["configured"] == camera["not_fused"], "the camera is not"
    report = (tmp_path / "evaluation" / "report.md").read_text()
    assert "## Degraded sensors" in report and "## False alarms" in report


def test_mcap_and_sqlite3_bags_hold_the_same_messages(bags, evaluations):
    with BagReader(bags["mcap"]) as mcap, BagReader(bags["sqlite3"]) as sqlite3:
        assert (mcap.storage, sqlite3.storage) == ("mcap", "sqlite3")
        assert mcap.topics == sqlite3.topics
        readable = [topic for topic in mcap.topics if topic != "/tf_static"]
        mcap_messages = list(mcap.messages(readable))  # rclpy's CDR padding bytes vary: compare messages
        assert mcap_messages == list(sqlite3.messages(readable))
    stamps = [timestamp for _, timestamp, _ in mcap_messages]
    assert stamps == sorted(stamps)
    ignore = {"bag", "storage", "report_files", "timing", "bag_integrity"}
    assert ({key: value for key, value in evaluations["sqlite3"].items() if key not in ignore}
            == {key: value for key, value in evaluations["second"].items() if key not in ignore})
    assert evaluations["second"]["bag_integrity"]["checked_chunks"] > 0  # every chunk's CRC checked


def test_fault_timeline_round_trips(bags, tmp_path):
    with BagReader(bags["mcap"]) as bag:
        (_, _, message), = bag.messages(["/robustseg/fault_timeline"])
    stored = json.loads(message.data)
    assert stored == json.loads((bags["mcap"] / TIMELINE_FILE).read_text())
    assert faults_from_record(stored) == default_faults(START_S, DURATION_S)
    assert len(stored["rig_parameters"]["lidar.transform"]) == 16
    custom = tmp_path / "faults.json"
    custom.write_text(json.dumps([{"kind": "freeze", "sensor": "lidar", "start_offset_s": 0.2, "end_offset_s": 0.5},
                                  {"kind": "noise", "sensor": "events", "start_offset_s": 0.1, "end_offset_s": 0.3}]))
    assert record_synthetic.cli([str(tmp_path / "custom"), "--duration", "0.6", "--width", "32", "--height", "32",
                                  "--faults", str(custom)]) == 0
    faults = faults_from_record(json.loads((tmp_path / "custom" / TIMELINE_FILE).read_text()))
    assert [(fault.kind, fault.target, fault.start_s, fault.end_s) for fault in faults] == [
        ("freeze", "lidar", 100.2, 100.5), ("noise", "events", 100.1, 100.3)]
    with BagReader(tmp_path / "custom") as bag:
        clouds = [msg for _, _, msg in bag.messages(["/lidar/points"])]
    frozen = [bytes(cloud.data) for cloud in clouds if 100.2 <= cloud.header.stamp.sec + cloud.header.stamp.nanosec
              * 1e-9 < 100.5 - 1e-9]
    assert len(frozen) == 3 and len(set(frozen)) == 1
    assert record_synthetic.cli([str(tmp_path / "custom"), "--duration", "0.2"]) == 1  # never overwrites


def test_a_malformed_fault_timeline_or_seed_is_named(tmp_path, capsys):
    """A hand-written fault_timeline.json (docs/bags.md gives its fields) that does not parse: one line naming it."""
    from std_msgs.msg import String

    from robustseg_ros.bagtools.faults import read_fault_record

    path = tmp_path / "bag"
    with BagWriter(path) as writer:
        writer.add_topic("/note", String)
        writer.write("/note", 1, String(data="x"))
    for text, problem in (("{not json", "Expecting property name"), ("[]", "expected a JSON object, got list"),
                          ('{"faults": [{"kind": "drop", "sensor": "lidar"}]}', "a fault lacks 'start_s'"),
                          ('{"faults": [{"kind": "drop", "sensor": "radar", "start_s": 1, "end_s": 2}]}',
                           "fault sensor 'radar'")):
        (path / TIMELINE_FILE).write_text(text)
        with BagReader(path) as bag, pytest.raises(BagError, match=f"fault timeline .*{TIMELINE_FILE}.*{problem}"):
            read_fault_record(bag, "/robustseg/fault_timeline")
    with pytest.raises(SystemExit) as exit_info:  # argparse's exit, status 2
        record_synthetic.cli([str(tmp_path / "negative"), "--seed", "-1"])
    assert exit_info.value.code == 2
    assert "argument --seed: expected an integer >= 0, got -1" in capsys.readouterr().err


def test_missing_path_and_corrupt_or_truncated_bags_are_named(bags, checkpoint, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert evaluate(missing, tmp_path / "out", checkpoint) == 1
    assert f"bag {missing}: no such file or folder" in capsys.readouterr().err

    truncated = tmp_path / "truncated"
    shutil.copytree(bags["mcap"], truncated)
    storage_file = next(truncated.glob("*.mcap"))
    storage_file.write_bytes(storage_file.read_bytes()[: storage_file.stat().st_size // 2])
    assert evaluate(truncated, tmp_path / "out", checkpoint) == 1
    error = capsys.readouterr().err
    assert f"bag {truncated}" in error and "corrupt or truncated" in error

    garbage = tmp_path / "garbage"
    shutil.copytree(bags["sqlite3"], garbage)
    next(garbage.glob("*.db3")).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BagError, match=f"bag {garbage}: .*corrupt or truncated"):
        with BagReader(garbage) as bag:
            list(bag.messages(raw=True))


def test_missing_topics_and_unknown_types_are_named(bags, checkpoint, tmp_path, capsys):
    assert evaluate(bags["mcap"], tmp_path / "out", checkpoint, "-p", "lidar.topic:=/velodyne_points") == 1
    error = capsys.readouterr().err
    assert "sensor topic(s) /velodyne_points not found" in error
    assert "/camera/image (sensor_msgs/msg/Image)" in error and "lidar.enabled:=false" in error

    assert evaluate(bags["mcap"], tmp_path / "out", checkpoint, "--labels-topic", "/my/labels") == 1
    assert "ground-truth topic(s) /my/labels not found" in capsys.readouterr().err

    # a topic of another message type than the parameters configure: named with the parameter, before any frame
    assert evaluate(bags["mcap"], tmp_path / "out", checkpoint, "-p", "events.input_type:=image",
                    "-p", "lidar.topic:=/camera/image", "--labels-topic", "/camera/camera_info") == 1
    error = capsys.readouterr().err
    assert "/events/packets holds sensor_msgs/msg/PointCloud2, not sensor_msgs/msg/Image (set by events.input_type)" in error
    assert "/camera/image holds sensor_msgs/msg/Image, not sensor_msgs/msg/PointCloud2" in error
    assert "/camera/camera_info holds sensor_msgs/msg/CameraInfo, not sensor_msgs/msg/Image (--labels-topic" in error
    assert "Traceback" not in error

    # CameraInfo is needed only by depth and LiDAR: a camera-and-events bag without it is evaluated
    assert evaluate(bags["mcap"], tmp_path / "out", checkpoint, "-p", "camera.info_topic:=/no/info") == 1
    assert "/no/info not found" in capsys.readouterr().err
    assert evaluate(bags["mcap"], tmp_path / "out", checkpoint, "-p", "camera.info_topic:=/no/info",
                    "-p", "depth.enabled:=false", "-p", "lidar.enabled:=false", "--no-plots") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["frames"]["total"] > 0 and metrics["accuracy"] is not None

    unknown_bag = tmp_path / "unknown"
    with BagWriter(unknown_bag) as writer:  # tf2_msgs is not among the rclpy wheels installed here
        writer.add_topic("/tf_static", "tf2_msgs/msg/TFMessage")
        writer.write_raw("/tf_static", 1, record_synthetic.tf_static_cdr(np.eye(4), 1.0))
    with BagReader(unknown_bag) as bag:
        with pytest.raises(BagError, match=r"unknown message type\(s\) on /tf_static \(tf2_msgs/msg/TFMessage\)"):
            list(bag.messages(["/tf_static"]))
        assert len(list(bag.messages(["/tf_static"], raw=True))) == 1


def test_bag_without_ground_truth_reports_everything_but_accuracy(bags, checkpoint, tmp_path):
    assert evaluate(bags["mcap"], tmp_path / "out", checkpoint, "--labels-topic", "", "-p", "depth.enabled:=false",
                    "--no-plots") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["accuracy"] is None and metrics["ground_truth_topic"] is None
    assert metrics["frames"]["total"] == 30 and {"REL", "RE"} <= set(metrics["frames_by_modalities"])
    assert not any("D" in code for code in metrics["frames_by_modalities"]), "depth disabled"
    assert "## Modalities fed" in (tmp_path / "out" / "report.md").read_text()


def test_live_replay_into_the_node_publishes_segmentation_for_the_replayed_frames(bags, checkpoint, ros_domain):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from robustseg_ros.bagtools.faults import Fault
    from robustseg_ros.bagtools.player import BagPlayer
    from robustseg_ros.node import PerceptionNode

    context = rclpy.Context()
    context.init(domain_id=ros_domain)
    rig = json.loads((bags["mcap"] / TIMELINE_FILE).read_text())["rig_parameters"]
    values = {**{name: tuple(value) if isinstance(value, list) else value for name, value in rig.items()},
              "use_sim_time": True, "checkpoint": checkpoint, "device": "cpu", "warmup_iterations": 0}
    node = PerceptionNode(context=context, parameter_overrides=[Parameter(name, value=value)
                                                                for name, value in values.items()])
    recorder = Node("recorder", context=context)
    segmentations = []
    recorder.create_subscription(Image, "/perception_node/segmentation", segmentations.append,
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(recorder)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    # half speed: the node keeps only the newest frame, and a loaded CI machine must not decide the count
    player = BagPlayer(bags["mcap"], context=context, clock=True, delay_s=1.0, rate=0.5,
                       faults=[Fault("drop", "/depth/image", 1.0, 1.5)])
    try:
        published = player.play()
        deadline = time.monotonic() + 5.0
        while len(segmentations) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        player.close()
        executor.shutdown()
        spinner.join(5.0)
        node.destroy_node()
        recorder.destroy_node()
        context.try_shutdown()
    assert player.published["/camera/image"] == 30 and player.published["/depth/image"] == 25
    assert "/tf_static" not in player.publishers and published > 150
    camera_stamps = {(100 + index // 10, (index % 10) * 100_000_000) for index in range(1, 31)}
    output_stamps = [(msg.header.stamp.sec, msg.header.stamp.nanosec) for msg in segmentations]
    assert len(output_stamps) >= 20 and set(output_stamps) <= camera_stamps
    assert all((msg.width, msg.height, msg.encoding) == (64, 48, "mono8") for msg in segmentations)


def test_live_evaluation_records_the_node_outputs(bags, checkpoint, tmp_path, ros_domain, capsys):
    # half speed: the node keeps only the newest frame, and a loaded CI machine must not decide the count
    assert evaluate(bags["mcap"], tmp_path / "live", checkpoint, "--mode", "live", "--spawn-node", "--settle", "1.0",
                    "--rate", "0.5", "-p", "warmup_iterations:=0", "--record-outputs", str(tmp_path / "recording")) == 0
    assert "no subscriber" not in capsys.readouterr().err  # every input matched before the replay
    metrics = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert metrics["mode"] == "live" and metrics["node"] == "/perception_node"
    assert 20 <= metrics["frames"]["total"] <= 31 and metrics["frames"]["scored"] >= 20
    assert metrics["accuracy"] is not None and "RDE" in metrics["accuracy_by_modalities"]
    drop = next(fault for fault in metrics["faults"] if fault["kind"] == "drop")
    assert drop["worst_state"] == "STALE" and 0.4 <= drop["stale_delay_s"] <= 0.8
    assert metrics["timing"]["measure"] == "latency" and metrics["timing"]["frame_ms"]["count"] >= 20
    assert (tmp_path / "live" / "samples.png").is_file()
    recorded = metrics["recording"]["messages"]  # the replayed inputs and the node's outputs, in an MCAP bag
    assert recorded["/camera/image"] == 30 and recorded["/perception_node/segmentation"] >= 20
    assert recorded["/perception_node/overlay"] >= 20 and recorded["/diagnostics"] >= 2
    with BagReader(tmp_path / "recording") as recording:
        assert recording.storage == "mcap" and recording.topics["/perception_node/latency_ms"] == "std_msgs/msg/Float32"


# ---------------------------------------------------------------------------- reviewed bugs: small bags, seconds


def rewrite_bag(source, target, change) -> None:
    """Copy ``source`` into a new MCAP bag ``target``; ``change(topic, msgtype, message)`` returns the (msgtype,
    message) to write instead for the topics rclpy can read (``/tf_static`` is copied as it is)."""
    from rclpy.serialization import deserialize_message

    from robustseg_ros.bagtools.bag_io import message_class

    with BagReader(source) as bag, BagWriter(target) as writer:
        declared = set()
        for topic, timestamp, data in bag.messages(raw=True):
            msgtype = bag.topics[topic]
            if topic != "/tf_static":
                msgtype, message = change(topic, msgtype, deserialize_message(data, message_class(msgtype)))
            if topic not in declared:
                writer.add_topic(topic, msgtype)
                declared.add(topic)
            if topic == "/tf_static":
                writer.write_raw(topic, timestamp, data)
            else:
                writer.write(topic, timestamp, message)


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    """A 0.3 s drive (3 frames), no fault, and a copy of it with /tf_static left out (raw reading)."""
    folder = tmp_path_factory.mktemp("small")
    record(folder / "drive", "--duration", "0.3", "--faults", "none")
    with BagReader(folder / "drive") as bag, BagWriter(folder / "no_tf") as writer:
        for topic, msgtype in bag.topics.items():
            if topic != "/tf_static":
                writer.add_topic(topic, msgtype)
        for topic, timestamp, data in bag.messages([t for t in bag.topics if t != "/tf_static"], raw=True):
            writer.write_raw(topic, timestamp, data)
    return folder


@pytest.fixture(scope="module")
def small_metrics(small_bag, checkpoint, tmp_path_factory) -> dict:
    """The small drive evaluated with its rig parameters (--no-plots)."""
    output = tmp_path_factory.mktemp("small_eval")
    assert evaluate(small_bag / "drive", output, checkpoint, "--no-plots") == 0
    return json.loads((output / "metrics.json").read_text())


def comparable(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in ("timing", "bag", "report_files")}


def test_offline_lidar_use_tf_reads_the_bags_tf_static(small_bag, small_metrics, checkpoint, tmp_path, capsys):
    """lidar.use_tf offline: T_cam_lidar from the bag's /tf_static (so a wrong lidar.transform does not matter);
    the default transform next to /tf_static is warned about; use_tf on a bag without /tf_static is refused."""
    identity = "lidar.transform:=[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]"
    assert evaluate(small_bag / "drive", tmp_path / "tf", checkpoint, "--no-plots", "-p", "lidar.use_tf:=true",
                    "-p", identity) == 0
    assert comparable(json.loads((tmp_path / "tf" / "metrics.json").read_text())) == comparable(small_metrics)
    assert "co-located" not in capsys.readouterr().err

    co_located = "lidar.transform:=[0.0, 0.0, 0.0, 0.5, -0.5, 0.5, 0.5]"
    assert evaluate(small_bag / "drive", tmp_path / "default", checkpoint, "--no-plots", "-p", co_located) == 0
    assert "lidar.use_tf is false and lidar.transform is the default: the LiDAR is assumed co-located" in \
        capsys.readouterr().err
    wrong = json.loads((tmp_path / "default" / "metrics.json").read_text())
    assert wrong["per_frame"] != small_metrics["per_frame"], "the transform matters on this drive"

    assert evaluate(small_bag / "no_tf", tmp_path / "no_tf", checkpoint, "-p", "lidar.use_tf:=true") == 1
    error = capsys.readouterr().err
    assert f"bag {small_bag / 'no_tf'}: lidar.use_tf is true but the bag has no /tf_static" in error
    assert "Traceback" not in error


def test_ground_truth_of_another_encoding_or_aspect_ratio_is_refused(small_bag, small_metrics, checkpoint, tmp_path,
                                                                    capsys):
    """Labels must be class ids (mono8, 8UC1; mono16 / 16UC1 with values <= 255) at the camera's aspect ratio:
    colour labels, 16-bit values past 255 and other aspect ratios stop the run naming the topic."""
    from robustseg_core.classes import colorize
    from robustseg_ros.conversions import image_to_numpy, numpy_to_image

    def labels_as(encoding, convert=lambda labels: labels):
        def change(topic, msgtype, message):
            if topic == "/ground_truth/labels":
                values = convert(image_to_numpy(message))
                message = numpy_to_image(values, "16UC1" if values.dtype == np.uint16 else encoding, message.header)
                message.encoding = encoding
            return msgtype, message
        return change

    rewrite_bag(small_bag / "drive", tmp_path / "mono16", labels_as("mono16", lambda labels: labels.astype(np.uint16)))
    assert evaluate(tmp_path / "mono16", tmp_path / "out", checkpoint, "--no-plots") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert comparable(metrics) == comparable(small_metrics) and metrics["frames"]["scored"] == 3

    for name, change, problem in (
            ("rgb8", labels_as("rgb8", colorize), "has encoding 'rgb8'; expected class ids (mono8, 8UC1, mono16, "
                                                  "16UC1; 255 ignore)"),
            ("wide", labels_as("16UC1", lambda labels: labels.astype(np.uint16) + 256),
             "holds 16-bit values up to"),
            ("square", labels_as("mono8", lambda labels: np.ascontiguousarray(labels[:, :48])),
             "is 48x48 pixels, the frame 64x48: another aspect ratio")):
        rewrite_bag(small_bag / "drive", tmp_path / name, change)
        assert evaluate(tmp_path / name, tmp_path / "out", checkpoint, "--no-plots") == 1, name
        error = capsys.readouterr().err
        assert f"bag {tmp_path / name}: ground truth /ground_truth/labels " in error and problem in error, error
        assert "Traceback" not in error


def test_a_sensor_topic_of_an_uninstalled_other_type_names_both_types(small_bag, checkpoint, tmp_path, capsys):
    assert evaluate(small_bag / "drive", tmp_path / "out", checkpoint, "-p", "events.topic:=/tf_static") == 1
    error = capsys.readouterr().err
    assert ("/tf_static holds tf2_msgs/msg/TFMessage, not sensor_msgs/msg/PointCloud2 (set by events.input_type)"
            in error), error
    assert "not installed" not in error


def test_evaluating_the_current_folder_and_a_rerun_without_plots(small_bag, checkpoint, monkeypatch):
    """``evaluate_bag .`` reports next to the folder; a rerun with --no-plots leaves no plot of the first run."""
    monkeypatch.chdir(small_bag / "drive")
    report = small_bag / "drive_evaluation"
    assert evaluate_bag.cli([".", "--checkpoint", checkpoint, "--device", "cpu", "--torch-threads", "1"]) == 0
    plots = {"miou_over_time.png", "latency_histogram.png", "samples.png"}
    assert plots <= {path.name for path in report.iterdir()}
    assert evaluate_bag.cli([".", "--checkpoint", checkpoint, "--device", "cpu", "--torch-threads", "1",
                             "--no-plots"]) == 0
    assert {path.name for path in report.iterdir()} == {"metrics.json", "report.md"}
    assert "png" not in (report / "report.md").read_text()


def write_notes(path, storage: str = "mcap", count: int = 3, size: int = 10) -> None:
    """A bag of ``count`` std_msgs/String messages of ``size`` characters on /note, 1 ms apart."""
    from std_msgs.msg import String

    with BagWriter(path, storage) as writer:
        writer.add_topic("/note", String)
        for index in range(count):
            writer.write("/note", 1_000_000 * (index + 1), String(data=str(index) * size))


def test_the_files_checked_are_those_metadata_lists(tmp_path):
    """A stray file in the folder is not the bag's; a file compressed as a whole is noted as unchecked (and the
    storage named from metadata.yaml); a listed file that is missing is named."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
    from std_msgs.msg import String

    from robustseg_ros.bagtools.bag_io import TYPESTORE

    bag = tmp_path / "bag"
    write_notes(bag)
    (bag / "bag_0_old.mcap").write_bytes(b"leftover of an earlier recording")
    (bag / "bag_1.db3").write_bytes(b"")
    with BagReader(bag) as reader:
        assert reader.storage == "mcap" and len(list(reader.messages())) == 3 and not reader.notes

    compressed = tmp_path / "compressed"
    writer = Writer(compressed, version=9, storage_plugin=StoragePlugin.SQLITE3)
    writer.set_compression(CompressionMode.FILE, CompressionFormat.ZSTD)
    with writer:
        connection = writer.add_connection("/note", "std_msgs/msg/String", typestore=TYPESTORE)
        writer.write(connection, 1, serialize_message(String(data="x")))
    assert [path.name for path in compressed.iterdir() if path.name != "metadata.yaml"] == ["compressed.db3.zstd"]
    with BagReader(compressed) as reader:
        assert reader.storage == "sqlite3" and len(list(reader.messages())) == 1
        assert reader.notes == [f"bag {compressed}: compressed.db3.zstd compressed as a whole (file compression); "
                                "integrity not checked"]

    (bag / "bag.mcap").rename(bag / "moved.mcap")
    with pytest.raises(BagError, match=f"bag {bag}: .*bag.mcap: listed in metadata.yaml but not in the bag folder"):
        BagReader(bag).open()


def test_damaged_chunks_of_an_mcap_file_without_chunk_index_cannot_be_skipped(tmp_path):
    from robustseg_ros.bagtools.integrity import FOOTER, MAGIC, _footer, _scanned_chunks

    bag = tmp_path / "bag"
    write_notes(bag, count=4, size=600_000)  # past rosbags' 1 MB chunks: more than one chunk
    storage = bag / "bag.mcap"
    data = storage.read_bytes()
    with open(storage, "rb") as handle:
        summary_start, _ = _footer(handle, len(data))
    footer = FOOTER.pack(0x02, FOOTER.size - 9, 0, 0, 0)  # no summary: readers scan the data section
    storage.write_bytes(data[:summary_start] + footer + MAGIC)
    with open(storage, "rb") as handle:
        chunks = _scanned_chunks(handle, storage.stat().st_size)
    assert len(chunks) >= 2
    with BagReader(bag) as reader:
        assert len(list(reader.messages())) == 4

    offset, length, _, _ = chunks[0]
    damaged = bytearray(storage.read_bytes())
    damaged[offset + length - 100] ^= 0xFF
    storage.write_bytes(bytes(damaged))
    with pytest.raises(BagError, match="fails its CRC check; 1 damaged chunk"):
        BagReader(bag).open()
    with pytest.raises(BagError, match=f"bag {bag}: chunk 0 at byte offset {offset} of bag.mcap .* bag.mcap has "
                                       "no chunk index .*; damaged chunks cannot be skipped"):
        BagReader(bag, skip_damaged=True).open()


def test_live_scoring_takes_compressed_camera_images_and_two_frames_of_one_stamp(ros_domain, tmp_path):
    """A CompressedImage camera (camera.transport:=compressed) is decoded for the samples (a broken one is the
    node's to count, not a crash); two outputs of one stamp are both kept and scored, live and offline alike."""
    import cv2
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    from robustseg_core.classes import CLASS_NAMES
    from robustseg_ros.bagtools.live import LiveEvaluation
    from robustseg_ros.bagtools.scoring import Evaluation
    from robustseg_ros.conversions import nanoseconds_to_stamp, numpy_to_image
    from robustseg_ros.params import PerceptionParams

    params = PerceptionParams({"camera.transport": "compressed"})
    stamp = 100_000_000_000
    header = Header(stamp=nanoseconds_to_stamp(stamp), frame_id="camera_optical")
    labels = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64) % 25
    label_message = numpy_to_image(labels, "mono8", header)
    rgb = np.dstack([labels * 10] * 3).astype(np.uint8)
    jpeg = CompressedImage(header=header, format="jpeg", data=cv2.imencode(".jpg", rgb)[1].tobytes())
    broken = CompressedImage(header=Header(stamp=nanoseconds_to_stamp(stamp + 1)), format="jpeg", data=b"no jpeg")
    options = {"labels_topic": "/ground_truth/labels", "faults": [], "sample_count": 0}

    offline = Evaluation(tmp_path, params, CLASS_NAMES, **options)
    for source in ("camera", "timer"):
        offline.add_frame(stamp, source, ("rgb",), {}, 1.0, labels, None, None)
    offline.add_label(label_message)
    assert {key: offline.results()["frames"][key] for key in ("total", "scored", "unmatched_outputs")} == {
        "total": 2, "scored": 2, "unmatched_outputs": 0}

    context = rclpy.Context()
    context.init(domain_id=ros_domain)
    try:
        live = LiveEvaluation(tmp_path, params, CLASS_NAMES, context=context, node_name="/perception_node", **options)
        try:
            live.observe("/camera/image/compressed", stamp, jpeg)
            live.observe("/camera/image/compressed", stamp + 1, broken)
            assert set(live._camera_rgb) == {stamp} and live._camera_rgb[stamp].shape == (48, 64, 3)
            status = DiagnosticArray(header=header, status=[DiagnosticStatus(name="rgb", values=[
                KeyValue(key="modality", value="rgb"), KeyValue(key="fed", value="true")])])
            for _ in range(2):  # the node published two frames of one stamp before the label came
                live._on_output("segmentation", numpy_to_image(labels, "mono8", header))
                live._on_output("confidence", numpy_to_image(np.ones((48, 64), np.float32), "32FC1", header))
                live._on_output("sensor_status", status)
            live.observe("/ground_truth/labels", stamp + 6_000_000, label_message)
            frames = live.results()["frames"]
        finally:
            live.close()
    finally:
        context.try_shutdown()
    assert (frames["total"], frames["scored"], frames["camera_messages"], frames["unmatched_outputs"]) == (2, 2, 2, 0)


def test_replay_leaves_out_the_bags_clock_keeps_every_latched_message_and_checks_remaps(ros_domain, tmp_path,
                                                                                        capsys):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import String

    from robustseg_ros.bagtools import replay_bag
    from robustseg_ros.bagtools.player import BagPlayer
    from robustseg_ros.conversions import nanoseconds_to_stamp

    bag = tmp_path / "bag"
    timeline = "/robustseg/fault_timeline"  # latched, like /tf_static
    with BagWriter(bag) as writer:
        writer.add_topic("/clock", Clock)
        writer.add_topic(timeline, String)
        for index in range(3):
            writer.write("/clock", 1_000_000 * index, Clock(clock=nanoseconds_to_stamp(7_000_000_000)))
            writer.write(timeline, 1_000_000 * index + 1, String(data=f"record {index}"))

    assert replay_bag.cli([str(bag), "--remap", "/typo:=/x", f"{timeline}:=/y"]) == 1
    assert f"bag {bag}: remapped (--remap) topic(s) /typo not found" in capsys.readouterr().err

    context = rclpy.Context()
    context.init(domain_id=ros_domain)
    player = BagPlayer(bag, context=context, clock=True, clock_hz=0.0, rate=10.0)
    listener = Node("late_subscriber", context=context)
    received = []
    try:
        assert "/clock" not in player.publishers
        assert f"note: bag {bag}: its /clock topic is not replayed" in capsys.readouterr().err
        assert player.play() == 3 and player.published == {timeline: 3}
        listener.create_subscription(String, timeline, lambda message: received.append(message.data), QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(listener)
        executor.add_node(player.node)
        deadline = time.monotonic() + 10.0
        while len(received) < 3 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        executor.shutdown()
    finally:
        listener.destroy_node()
        player.close()
        context.try_shutdown()
    assert received == ["record 0", "record 1", "record 2"], "a late subscriber gets every latched message"


def test_static_transforms_compose_along_the_tree(tmp_path):
    """camera and LiDAR both mounted on base_link: T_cam_lidar = inv(T_base_cam) @ T_base_lidar."""
    from robustseg_ros.bagtools.bag_io import TYPESTORE
    from robustseg_ros.bagtools.offline import StaticTransforms
    from robustseg_ros.params import transform_from_parameter

    types = TYPESTORE.types
    poses = {"camera_optical": [0.1, 0.0, 1.2, 0.5, -0.5, 0.5, -0.5],
             "lidar": [0.0, 0.2, 1.6, 0.0, 0.0, 0.3826834, 0.9238795]}

    def stamped(child, pose):
        return types["geometry_msgs/msg/TransformStamped"](
            header=types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                                frame_id="base_link"),
            child_frame_id=child, transform=types["geometry_msgs/msg/Transform"](
                translation=types["geometry_msgs/msg/Vector3"](x=pose[0], y=pose[1], z=pose[2]),
                rotation=types["geometry_msgs/msg/Quaternion"](x=pose[3], y=pose[4], z=pose[5], w=pose[6])))

    message = types["tf2_msgs/msg/TFMessage"](transforms=[stamped(child, pose) for child, pose in poses.items()])
    with BagWriter(tmp_path / "bag") as writer:
        writer.add_topic("/tf_static", "tf2_msgs/msg/TFMessage")
        writer.write_raw("/tf_static", 1, bytes(TYPESTORE.serialize_cdr(message, "tf2_msgs/msg/TFMessage")))
    with BagReader(tmp_path / "bag") as bag:
        lookup = StaticTransforms(bag)
    expected = (np.linalg.inv(transform_from_parameter(poses["camera_optical"]))
                @ transform_from_parameter(poses["lidar"]))
    np.testing.assert_allclose(lookup("lidar", "camera_optical", 5.0), expected, atol=1e-9)
    np.testing.assert_allclose(lookup("camera_optical", "lidar", 5.0), np.linalg.inv(expected), atol=1e-9)
    with pytest.raises(LookupError, match="no static transform camera_optical <- velodyne in /tf_static"):
        lookup("velodyne", "camera_optical", 5.0)

"""rosbag2 recording and offline evaluation: record_synthetic -> evaluate_bag, storage plugins, bag errors."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("rosbags")

from test_pipeline import make_tiny_checkpoint  # noqa: E402

from robustseg_ros.bagtools import evaluate_bag, record_synthetic  # noqa: E402
from robustseg_ros.bagtools.bag_io import BagError, BagReader, BagWriter  # noqa: E402
from robustseg_ros.bagtools.faults import TIMELINE_FILE, default_faults, faults_from_record, sensor_fault  # noqa: E402
from robustseg_ros.bagtools.player import BagPlayer  # noqa: E402
from robustseg_ros.bagtools.scoring import Evaluation  # noqa: E402
from robustseg_ros.health import SensorState  # noqa: E402
from robustseg_ros.params import PerceptionParams  # noqa: E402

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


def test_an_evaluation_cut_short_leaves_the_previous_run_as_it_was(evaluations, bags, checkpoint, tmp_path,
                                                                    monkeypatch, capsys):
    """Ctrl-C while the plots are drawn (the longest step after the evaluation): the folder still holds the
    earlier run only, no new plot next to its old metrics.json."""
    folder = tmp_path / "report"
    shutil.copytree(evaluations["folder"] / "first", folder)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_bag, "draw_plots", interrupted)
    assert evaluate(bags["sqlite3"], folder, checkpoint) == 130
    assert "evaluate_bag: interrupted" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_sensors_that_lie_are_degraded_in_time_without_false_alarms(checkpoint, tmp_path):
    """Content faults placed with --fault after a nominal lead: each flagged DEGRADED within 0.3 s of its onset and
    cleared within 1 s of its end, no false alarm, and the window's mIoU with and without fusing the sensor. A fault
    that lasts to the end of the bag is reported as not cleared by the sensor's last message, not as late."""
    bag = tmp_path / "lying"
    record(bag, "--duration", "5.0", "--faults", "none", "--fault", "underexposure:camera:1.0:1.6",
           "--fault", "jitter:lidar:2.0:2.6", "--fault", "noise:depth:2.5:3.0",
           "--fault", "flood:events:3.5:4.0",  # event rules wait for 3 s of history
           "--fault", "overexposure:camera:4.5:5.0")
    assert evaluate(bag, tmp_path / "evaluation", checkpoint, "--no-plots") == 0
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    faults = {fault["kind"]: fault for fault in metrics["faults"]}
    assert set(faults) == {"underexposure", "flood", "jitter", "noise", "overexposure"}
    at_the_end = faults.pop("overexposure")
    assert at_the_end["degraded_delay_s"] <= 0.3 and at_the_end["clear_delay_s"] is None
    assert at_the_end["observed_until_s"] == pytest.approx(at_the_end["end_s"], abs=0.1), "its last message"
    assert "| not by the sensor's last message (+" in (tmp_path / "evaluation" / "report.md").read_text()
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


def test_a_fault_that_begins_while_its_sensor_is_still_degraded_is_called_at_its_onset(tmp_path):
    """Camera over-exposed 0.5-1.0 s, DEGRADED until 1.405 s; night 1.1-1.4 s begins while it still is; an
    under-exposure at 2.5 s is called at 2.605 s. The night window is DEGRADED at its onset (delay 0), not at the
    under-exposure's call after it ended."""
    faults = [sensor_fault("overexposure", "camera", 100.5, 101.0), sensor_fault("night", "camera", 101.1, 101.4),
              sensor_fault("underexposure", "camera", 102.5, 102.8)]
    evaluation = Evaluation(tmp_path, PerceptionParams(), ("a", "b"), labels_topic="", faults=faults, sample_count=0)
    for now, state in ((100.0, SensorState.OK), (100.605, SensorState.DEGRADED), (101.405, SensorState.OK),
                       (102.605, SensorState.DEGRADED), (103.3, SensorState.OK)):
        evaluation.note_state(now, "rgb", state, state.value)
    over, night, under = evaluation.fault_results()
    assert (over["degraded_at_s"], over["cleared_at_s"]) == (100.605, 101.405)
    assert (night["degraded_at_s"], night["degraded_delay_s"], night["cleared_at_s"]) == (101.1, 0.0, 101.405)
    assert (under["degraded_at_s"], under["cleared_at_s"]) == (102.605, 103.3)

    evaluation.transitions = [item for item in evaluation.transitions if item["time_s"] != 100.605]  # missed
    assert evaluation.fault_results()[0]["degraded_at_s"] is None, "not the next fault's call"


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
    assert record_synthetic.cli([str(tmp_path / "custom"), "--duration", "0.63", "--width", "32", "--height", "32",
                                  "--faults", str(custom)]) == 0
    custom_record = json.loads((tmp_path / "custom" / TIMELINE_FILE).read_text())
    assert (custom_record["frames"], custom_record["duration_s"]) == (6, 0.6)  # what was rendered: whole frames
    faults = faults_from_record(custom_record)
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
                           "fault sensor 'radar'"),
                          ('{"classes": "Building"}', "\"classes\" is 'Building', expected a list of class names"),
                          ('{"rig_parameters": []}', "\"rig_parameters\" is not an object")):
        (path / TIMELINE_FILE).write_text(text)
        with BagReader(path) as bag, pytest.raises(BagError, match=f"fault timeline .*{TIMELINE_FILE}.*{problem}"):
            read_fault_record(bag, "/robustseg/fault_timeline")
    with pytest.raises(SystemExit) as exit_info:  # argparse's exit, status 2
        record_synthetic.cli([str(tmp_path / "negative"), "--seed", "-1"])
    assert exit_info.value.code == 2
    assert "argument --seed: expected an integer >= 0, got -1" in capsys.readouterr().err
    assert record_synthetic.cli([str(tmp_path / "early"), "--fault", "drop:events:-1:0.5"]) == 2
    assert "fault drop:events at -1..0.5 s starts before the drive" in capsys.readouterr().err


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

    disabled = [argument for sensor in ("camera", "depth", "events", "lidar")
                for argument in ("-p", f"{sensor}.enabled:=false")]
    assert evaluate(bags["mcap"], tmp_path / "out", checkpoint, *disabled) == 2, "a usage error, not a crash"
    error = capsys.readouterr().err
    assert "no enabled input would feed the model" in error and "Traceback" not in error

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


def rewritten(bag, out, change) -> Path:
    """A copy of ``bag`` with every message passed through ``change(topic, timestamp_ns, message)`` ->
    (timestamp_ns, message); /tf_static (of a type not installed here) is copied as it is, first."""
    with BagReader(bag) as reader, BagWriter(out) as writer:
        for topic, msgtype in reader.topics.items():
            writer.add_topic(topic, msgtype)
        for topic, timestamp_ns, data in reader.messages(["/tf_static"], raw=True):
            writer.write_raw(topic, timestamp_ns, data)
        for topic, timestamp_ns, message in reader.messages(set(reader.topics) - {"/tf_static"}):
            writer.write(topic, *change(topic, timestamp_ns, message))
    return out


def test_what_would_silently_give_no_result_is_named(bags, checkpoint, tmp_path, capsys):
    """Found by an outside review: each of these ran to the end with exit 0 and no word, or lost the run."""
    report = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        evaluate(bags["mcap"], report, checkpoint, "--spawn-node")
    assert exit_info.value.code == 2 and "--spawn-node: runs a node for --mode live" in capsys.readouterr().err
    assert evaluate(bags["mcap"], report, checkpoint, "--record-outputs", str(report)) == 2
    assert f"--record-outputs {report}: is the report folder (--output)" in capsys.readouterr().err
    assert not report.exists()

    def labels_1_ms_late(topic, timestamp_ns, message):
        if topic == "/ground_truth/labels":
            message.header.stamp.nanosec = (message.header.stamp.nanosec + 1_000_000) % 1_000_000_000
        return timestamp_ns, message

    late = rewritten(bags["mcap"], tmp_path / "late_labels", labels_1_ms_late)
    assert evaluate(late, report, checkpoint, "--no-plots") == 0
    error = capsys.readouterr().err
    assert "warning: none of the 30 frames has a ground-truth label of its header stamp, though /ground_truth/labels " \
           "holds 30 labels" in error

    def recorded_on_another_clock(topic, timestamp_ns, message):
        return timestamp_ns + 1000 * 10**9, message

    shifted = rewritten(bags["mcap"], tmp_path / "shifted", recorded_on_another_clock)
    assert evaluate(shifted, tmp_path / "shifted_out", checkpoint, "--no-plots") == 1
    error = capsys.readouterr().err
    assert "no frame was segmented from its 30 camera messages; the sensors' last states: depth, lidar, events, " \
           "camera STALE (stale: last message 1000.00 s old > max age 0.50 s (messages still arrive: clock offset " \
           "or delay))" in error
    assert (tmp_path / "shifted_out" / "metrics.json").is_file(), "the report is there to read"

    def bad_rig(topic, timestamp_ns, message):
        if topic == "/robustseg/fault_timeline":
            record = json.loads(message.data)
            record["rig_parameters"]["lidar.transform"] = [1, 2, 3]
            message.data = json.dumps(record)
        return timestamp_ns, message

    odd_rig = rewritten(bags["mcap"], tmp_path / "odd_rig", bad_rig)
    assert evaluate(odd_rig, report, checkpoint, "--no-plots") == 1
    error = capsys.readouterr().err
    assert f"bag {odd_rig}: the rig_parameters of its fault timeline" in error and "--ignore-rig" in error
    assert evaluate(odd_rig, report, checkpoint, "--no-plots", "--ignore-rig") == 0

    unindexed = tmp_path / "unindexed"
    shutil.copytree(bags["mcap"], unindexed)
    (unindexed / "metadata.yaml").unlink()
    assert evaluate(unindexed, report, checkpoint) == 1
    storage_file = next(unindexed.glob("*.mcap"))
    assert f"bag {unindexed}: a folder without metadata.yaml (a recording cut short leaves it so: pass its file " \
           f"({storage_file}) instead)" in capsys.readouterr().err
    assert evaluate(storage_file, report, checkpoint, "--no-plots") == 0

    empty = tmp_path / "empty"
    with BagWriter(empty) as writer:
        writer.add_topic("/camera/image", "sensor_msgs/msg/Image")
    with pytest.raises(BagError, match=f"^bag {empty}: holds no message; nothing to play$"):
        BagPlayer(empty)


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

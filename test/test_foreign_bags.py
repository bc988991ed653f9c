"""Bags that our recorder did not write: foreign encodings, /tf_static, /clock, unindexed or split files, compressed
cameras and repeated stamps; small bags, seconds each."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("rosbags")

from test_bags import evaluate, record  # noqa: E402
from test_pipeline import make_tiny_checkpoint  # noqa: E402

from robustseg_ros.bagtools import evaluate_bag  # noqa: E402
from robustseg_ros.bagtools.bag_io import BagError, BagReader, BagWriter  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


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
            lost = Header(stamp=nanoseconds_to_stamp(stamp + 7))  # its sensor_status never arrives
            live._on_output("segmentation", numpy_to_image(labels, "mono8", lost))
            live.finish_partial_frames()
            frames, failures = live.results()["frames"], live.failures
        finally:
            live.close()
    finally:
        context.try_shutdown()
    assert (frames["total"], frames["scored"], frames["camera_messages"], frames["unmatched_outputs"]) == (2, 2, 2, 0)
    assert frames["failed"] == 1 and f"stamp {stamp + 7} ns: sensor_status never arrived" in failures[0], failures


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
        writer.add_topic("/camera/image-raw", String)  # legal in ROS 1, not in ROS 2: skipped with a warning
        writer.write("/camera/image-raw", 0, String(data="never published"))
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
        assert "/clock" not in player.publishers and "/camera/image-raw" not in player.publishers
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

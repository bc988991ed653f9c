"""PerceptionPipeline without DDS: training/serving parity, absent-modality reasons, malformed messages."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("rclpy")

from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from robustseg_core.data import DeliverDataset, EvalTransform  # noqa: E402
from robustseg_core.inference import Segmenter  # noqa: E402
from robustseg_core.models import build_segmentor  # noqa: E402
from robustseg_core.models.checkpoint import checkpoint_meta, save_checkpoint  # noqa: E402
from robustseg_core.sensors import R_BODY_OPTICAL, quaternion_to_rotation  # noqa: E402
from robustseg_core.sim.drive import Drive, DriveConfig, encode_frame  # noqa: E402
from robustseg_core.sim.writer import SceneJob, write_dataset  # noqa: E402
from robustseg_ros.bagtools.record_synthetic import rig_parameters as drive_parameters  # noqa: E402
from robustseg_ros.conversions import (  # noqa: E402
    events_to_pointcloud2,
    intrinsics_to_camera_info,
    numpy_to_image,
    numpy_to_pointcloud2,
    seconds_to_stamp,
)
from robustseg_ros.params import (  # noqa: E402
    CO_LOCATED_LIDAR_TRANSFORM,
    PARAMETERS,
    ParameterError,
    PerceptionParams,
    resolve_checkpoint,
    transform_from_parameter,
)
from robustseg_ros.pipeline import PerceptionPipeline  # noqa: E402

SEED = 11
SIZE = (64, 48)  # width, height
CAMERA_FRAME = "camera_optical"
LATENCY_S = 0.01
OK, WARN, ERROR, STALE = (bytes([level]) for level in (0, 1, 2, 3))


# ------------------------------------------------------------------ helpers shared with the DDS test and the bench


def make_tiny_checkpoint(path) -> str:
    """A randomly initialised ``mit_cpu`` student (embed 32, eval size 64) saved as a robustseg checkpoint."""
    torch.manual_seed(0)
    model = build_segmentor("mit_cpu", embed_dim=32)
    save_checkpoint(path, {"model": model.state_dict(), "architecture": model.architecture,
                           "meta": checkpoint_meta({"data": {"eval_size": 64}})})
    return str(path)


def drive_messages(frame, stamp: float | None = None, *, camera_encoding: str = "rgb8",
                   depth_encoding: str = "32FC1") -> dict:
    """A ``Frame`` as sensor messages stamped ``stamp`` (default the frame's): camera, camera_info, depth, lidar,
    events. Event times move with the stamp."""
    offset = 0.0 if stamp is None else stamp - frame.stamp
    stamp = frame.stamp if stamp is None else stamp

    def header(frame_id: str) -> Header:
        return Header(stamp=seconds_to_stamp(stamp), frame_id=frame_id)

    pixels = {"rgb8": frame.rgb, "bgr8": frame.rgb[:, :, ::-1]}[camera_encoding]
    if depth_encoding == "32FC1":
        depth = numpy_to_image(frame.depth.astype(np.float32), "32FC1", header(CAMERA_FRAME))
    else:  # millimetres; beyond 65.535 m 16UC1 has no value: 0 (no measurement)
        millimetres = np.rint(frame.depth * 1000.0)
        millimetres = np.where(millimetres <= np.iinfo(np.uint16).max, millimetres, 0).astype(np.uint16)
        depth = numpy_to_image(millimetres, "16UC1", header(CAMERA_FRAME))
    events = frame.events.copy()
    events["t"] += offset
    return {
        "camera": numpy_to_image(np.ascontiguousarray(pixels), camera_encoding, header(CAMERA_FRAME)),
        "camera_info": intrinsics_to_camera_info(frame.intrinsics, header(CAMERA_FRAME)),
        "depth": depth,
        "lidar": numpy_to_pointcloud2(frame.lidar_points, header("lidar")),
        "events": events_to_pointcloud2(events, header("event_camera")),
    }


def feed(pipeline: PerceptionPipeline, messages: dict, now: float, sensors=("depth", "lidar", "events", "camera")):
    """Feed CameraInfo and then ``sensors`` in order; returns the job the last message made (or None)."""
    pipeline.on_camera_info(messages["camera_info"], now)
    handlers = {"camera": pipeline.on_camera, "depth": pipeline.on_depth, "lidar": pipeline.on_lidar,
                "events": pipeline.on_events}
    job = None
    for sensor in sensors:
        job = handlers[sensor](messages[sensor], now)
    return job


class RecordingLogger:
    """Collects warnings like an rclpy logger."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, text: str) -> None:
        self.warnings.append(text)

    def info(self, text: str) -> None:
        pass


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def segmenter(checkpoint) -> Segmenter:
    return Segmenter(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def drive() -> Drive:
    return Drive(SEED, DriveConfig(width=SIZE[0], height=SIZE[1]))


@pytest.fixture(scope="module")
def frame(drive):
    return drive.frame(5)  # stamp 0.5 s, event window (0.4, 0.5): exact in binary and in a ROS stamp


def spy_on_prepare(segmenter: Segmenter, monkeypatch) -> list:
    """Record every (images, tensor) that ``Segmenter.prepare`` receives and returns."""
    calls = []
    original = segmenter.prepare

    def recording_prepare(images, height, width):
        tensor, present = original(images, height, width)
        calls.append({"images": dict(images), "tensor": tensor, "present": present})
        return tensor, present

    monkeypatch.setattr(segmenter, "prepare", recording_prepare)
    return calls


# ------------------------------------------------------------------ parity with the data set path


@pytest.mark.parametrize("failure, camera_encoding", [(None, "rgb8"), ("eventlowres", "bgr8")])
def test_network_input_equals_the_data_set_path(tmp_path, segmenter, monkeypatch, failure, camera_encoding):
    """Messages of a generated frame -> pipeline gives the network exactly what DeliverDataset + EvalTransform give."""
    config = DriveConfig(width=SIZE[0], height=SIZE[1])
    name = "SIM_0000" + (f"_{failure}" if failure else "")
    job = SceneJob("val", name, SEED, "sun", failure, frames=6)
    write_dataset(str(tmp_path), [job], config, seed=SEED)
    dataset = DeliverDataset(tmp_path, "val")
    index = next(i for i, sample in enumerate(dataset.samples) if sample.name.endswith("000005"))
    item = dataset.load(index)
    expected = EvalTransform(segmenter.short_side)(item)

    drive = Drive(SEED, replace(config, condition="sun", failure=failure))
    frame = drive.frame(5)
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)
    calls = spy_on_prepare(segmenter, monkeypatch)
    frame_job = feed(pipeline, drive_messages(frame, camera_encoding=camera_encoding), frame.stamp + LATENCY_S)
    output = pipeline.process(frame_job)

    assert output.fed == ("rgb", "depth", "event", "lidar") and output.reasons == {}
    dataset_images = dict(zip(segmenter.modalities, item["images"]))
    for modality, image in output.encoded.items():
        assert np.array_equal(image, dataset_images[modality]), modality
    stored = encode_frame(frame)
    assert np.array_equal(output.encoded["depth"], stored["hha"]), "32FC1 metres -> the same HHA as the writer"
    tensor = calls[-1]["tensor"]
    assert torch.equal(tensor[0], expected["images"]) and calls[-1]["present"].all()
    assert output.labels.shape == (SIZE[1], SIZE[0]) and output.labels.dtype == np.uint8
    assert output.confidence.dtype == np.float32 and output.color.shape == (SIZE[1], SIZE[0], 3)
    assert set(output.timings_ms) == {"convert", "quality", "encode", "preprocess", "infer", "postprocess"}


def test_rendered_event_frames_are_fed_as_they_are(segmenter, drive, frame):
    pipeline = PerceptionPipeline(PerceptionParams({**drive_parameters(drive), "events.input_type": "image"}),
                                  segmenter)
    messages = drive_messages(frame)
    event_image = encode_frame(frame)["event"]
    messages["events"] = numpy_to_image(event_image[:, :, ::-1].copy(), "bgr8", messages["camera"].header)
    job = feed(pipeline, messages, frame.stamp + LATENCY_S)
    assert np.array_equal(pipeline.encode(job)[0]["event"], event_image)


def test_event_packets_stamped_at_their_first_event_join_the_frame_they_cover(segmenter, drive, frame):
    """event_camera_msgs' convention: header.stamp at the packet's start, t integer nanoseconds after it. The
    packet (0.4..0.5 s) is matched to frames by its newest event, not its stamp 0.1 s before the camera's."""
    messages = drive_messages(frame)
    t_start = frame.event_window[0]
    offsets = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<u4"), ("polarity", "i1")])
    packet = np.empty(len(frame.events), dtype=offsets)
    for name in ("x", "y", "polarity"):
        packet[name] = frame.events[name]
    packet["t"] = np.rint((frame.events["t"] - t_start) * 1e9)
    messages["events"] = numpy_to_pointcloud2(packet, Header(stamp=seconds_to_stamp(t_start), frame_id="events"))
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)
    encoded, reasons, _ = pipeline.encode(feed(pipeline, messages, frame.stamp + LATENCY_S))
    assert "event" in encoded and "event" not in reasons, reasons
    reference = encode_frame(frame)["event"].astype(int)
    assert np.abs(encoded["event"].astype(int) - reference).max() <= 1, "the same events as the data set's"


def test_events_sent_before_the_first_image_of_a_new_camera_size_feed_it(segmenter, drive, frame):
    """With events.sensor_width/height 0 the event sensor has the camera's size: a packet that comes just before
    the first image of a new camera resolution is checked against the new size, not dropped as off the sensor."""
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)
    assert pipeline.params["events.sensor_width"] == 0
    feed(pipeline, drive_messages(frame), frame.stamp + LATENCY_S)
    width, height = 2 * SIZE[0], 2 * SIZE[1]
    events = frame.events.copy()
    events["x"] *= 2
    events["y"] *= 2
    doubled = replace(frame, rgb=frame.rgb.repeat(2, 0).repeat(2, 1), depth=frame.depth.repeat(2, 0).repeat(2, 1),
                      events=events, intrinsics=frame.intrinsics.scaled(width, height))
    stamp = frame.stamp + 0.1
    job = feed(pipeline, drive_messages(doubled, stamp), stamp + LATENCY_S,
               sensors=("events", "depth", "lidar", "camera"))
    encoded, reasons, _ = pipeline.encode(job)
    assert job.size == (height, width) and "event" in encoded, reasons
    assert pipeline.health["event"].error_counts == {}, "no event counted as off the sensor"


def test_16UC1_depth_is_millimetre_quantised_so_hha_is_close_not_equal(segmenter, drive, frame):
    """16UC1 rounds depth to 1 mm and cannot carry more than 65.535 m, so parity is shown with 32FC1; within
    its range, disparity and height move by at most one level and the normal angle rarely (at depth edges)."""
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)
    job = feed(pipeline, drive_messages(frame, depth_encoding="16UC1"), frame.stamp + LATENCY_S)
    hha = pipeline.encode(job)[0]["depth"]
    reference = encode_frame(frame)["hha"]
    in_range = (frame.depth > 0) & (frame.depth < 65.0)
    difference = np.abs(hha.astype(int) - reference.astype(int))[in_range]
    assert difference[:, :2].max() <= 1 and difference[:, 2].mean() < 1.0


# ------------------------------------------------------------------ absent modalities


def test_absent_modalities_are_reported_with_reasons(segmenter, drive, frame):
    params = PerceptionParams({**drive_parameters(drive), "depth.enabled": False, "lidar.max_age_s": 0.3})
    pipeline = PerceptionPipeline(params, segmenter)
    stamp = 100.0
    pipeline.on_lidar(drive_messages(frame, stamp)["lidar"], stamp + LATENCY_S)
    later = stamp + 0.5
    job = feed(pipeline, drive_messages(frame, later), later + LATENCY_S, sensors=("camera",))
    output = pipeline.process(job)
    assert output.fed == ("rgb",)
    assert output.reasons["depth"] == "disabled"
    assert output.reasons["event"] == "never received"
    assert output.reasons["lidar"].startswith("stale: last message 0.51 s old > max age 0.30 s")
    status = {item.name: item for item in pipeline.sensor_status(output).status}
    assert status["robustseg: camera"].level == OK and status["robustseg: camera"].message == "fed"
    assert status["robustseg: depth"].level == WARN and status["robustseg: depth"].message == "disabled"
    assert status["robustseg: events"].level == STALE and status["robustseg: lidar"].level == STALE
    assert pipeline.sensor_status(output).header.stamp == drive_messages(frame, later)["camera"].header.stamp

    later += 0.1
    job = feed(pipeline, drive_messages(frame, later), later + LATENCY_S, sensors=("events", "camera"))
    assert pipeline.process(job).fed == ("rgb", "event")


def test_the_validated_fusion_policy_leaves_a_healthy_sensor_out_and_says_why(tmp_path, drive, frame):
    """A student whose validation scores say events lower the mIoU beside the other three: with fusion_policy
    validated the frame is fused without them, ~/sensor_status says so at level OK, and the policy switches live."""
    torch.manual_seed(0)
    model = build_segmentor("mit_cpu", embed_dim=32)
    scores = {f"miou_{name}": 10.0 * sum(letter in name for letter in "RDL") - 2.0 * ("E" in name and len(name) > 1)
              for name in ("R", "D", "E", "L", "RD", "RE", "RL", "DE", "DL", "EL", "RDE", "RDL", "REL", "DEL", "RDEL")}
    path = tmp_path / "student.pt"
    save_checkpoint(path, {"model": model.state_dict(), "architecture": model.architecture,
                           "meta": checkpoint_meta({"data": {"eval_size": 64}}, scores=scores)})
    params = PerceptionParams({**drive_parameters(drive), "fusion_policy": "validated"})
    pipeline = PerceptionPipeline(params, Segmenter(path, device="cpu"))  # takes the parameters' policy
    output = pipeline.process(feed(pipeline, drive_messages(frame), frame.stamp + LATENCY_S))
    assert output.fed == ("rgb", "depth", "lidar") and "event" in output.encoded
    assert output.reasons == {"event": "left out by the validated fusion policy: RDL scored 30.00 % mIoU on "
                                       "validation, RDEL 28.00 %"}
    status = {item.name: item for item in pipeline.sensor_status(output).status}
    assert status["robustseg: events"].level == OK and status["robustseg: events"].message == output.reasons["event"]
    assert {value.key: value.value for value in status["robustseg: events"].values}["fed"] == "false"

    pipeline.apply_live_params(pipeline.params.with_changes({"fusion_policy": "all"}, configured=True), 1.0)
    stamp = frame.stamp + 0.1
    output = pipeline.process(feed(pipeline, drive_messages(frame, stamp), stamp + LATENCY_S))
    assert output.fed == ("rgb", "depth", "event", "lidar") and output.reasons == {}


def test_a_fusion_policy_the_model_cannot_serve_is_refused_with_nothing_changed(segmenter, drive):
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)
    with pytest.raises(ValueError, match="carries none for R, D, E, L, RD"):
        pipeline.apply_live_params(pipeline.params.with_changes({"fusion_policy": "validated"}, configured=True), 1.0)
    assert pipeline.params["fusion_policy"] == "all" and segmenter.fusion == ("all", 0.5)
    with pytest.raises(ValueError, match="fusion_min_gain: must be >= 0"):
        pipeline.params.with_changes({"fusion_min_gain": -0.5})


def test_a_sensor_that_arrives_but_never_joins_a_frame_is_warn_on_diagnostics(segmenter, drive, frame):
    """Depth stamped 0.25 s behind the camera (a clock offset within max age) is never within tolerance of a
    frame: once that lasts longer than its max age /diagnostics says so, not only ~/sensor_status; it clears
    once depth joins again."""
    params = PerceptionParams({**drive_parameters(drive), "sync.camera_wait_s": 0.0})
    pipeline = PerceptionPipeline(params, segmenter)
    stamp = 100.0
    for step in range(8):
        now = stamp + LATENCY_S
        moving = drive.frame(5 + step)  # content changes: not frozen
        pipeline.on_depth(drive_messages(moving, stamp - 0.25)["depth"], now)
        output = pipeline.process(feed(pipeline, drive_messages(moving, stamp), now, sensors=("lidar", "events", "camera")))
        assert "depth" not in output.fed and output.reasons["depth"].startswith("no message within 0.05 s")
        stamp += 0.1
    depth = {item.name: item for item in pipeline.diagnostics(now).status}["robustseg: depth"]
    assert depth.level == WARN and depth.message == ("not fused for 0.70 s: no message within 0.05 s of the frame "
                                                     "stamp (nearest 0.25 s away)")
    output = pipeline.process(feed(pipeline, drive_messages(drive.frame(11), stamp), stamp + LATENCY_S))
    assert "depth" in output.fed
    depth = {item.name: item for item in pipeline.diagnostics(stamp + LATENCY_S).status}["robustseg: depth"]
    assert depth.level == OK

    for step in range(12):  # depth misses frames again, then stops: STALE says why, not an old "not fused"
        stamp += 0.1
        if step < 6:
            pipeline.on_depth(drive_messages(drive.frame(12 + step), stamp - 0.08)["depth"], stamp + LATENCY_S)
        pipeline.process(feed(pipeline, drive_messages(drive.frame(12 + step), stamp), stamp + LATENCY_S,
                              sensors=("lidar", "events", "camera")))
    depth = {item.name: item for item in pipeline.diagnostics(stamp + LATENCY_S).status}["robustseg: depth"]
    assert depth.level == STALE and depth.message.startswith("stale: last message") and "not fused" not in \
        depth.message, depth.message


def test_inputs_that_encode_to_nothing_are_reported_not_fed(segmenter, drive, frame):
    """A LiDAR extrinsic that puts every point behind the camera, or events outside the sensor, are not fed as
    empty images: the frame says why."""
    behind = list(drive_parameters(drive)["lidar.transform"])
    behind[11] -= 1000.0  # every point 1 km behind the camera
    params = PerceptionParams({**drive_parameters(drive), "lidar.transform": behind, "events.sensor_width": 1,
                               "events.sensor_height": 1})
    pipeline = PerceptionPipeline(params, segmenter)
    stamp = 100.0
    output = pipeline.process(feed(pipeline, drive_messages(frame, stamp), stamp + LATENCY_S))
    assert "lidar" not in output.fed and "event" not in output.fed
    assert output.reasons["lidar"].startswith("not encoded: none of the") and "check lidar.transform" in output.reasons["lidar"]
    assert output.reasons["event"] == "not encoded: no event in the window 99.900-100.000 s"
    outside = int(((frame.events["x"] >= 1) | (frame.events["y"] >= 1)).sum())
    assert pipeline.health["event"].error_counts == {"event x/y": outside}, "events off the sensor are counted"
    events = {item.name: item for item in pipeline.diagnostics(stamp + LATENCY_S).status}["robustseg: events"]
    assert events.level == WARN and f"malformed event x/y ({outside} so far)" in events.message


def test_camera_waits_briefly_for_sensors_of_the_same_instant(segmenter, drive, frame):
    """A camera image that arrives before the depth/LiDAR/events of its instant waits for them (not for a
    sensor whose next message is not due), and at most sync.camera_wait_s."""
    params = PerceptionParams({**drive_parameters(drive), "sync.camera_wait_s": 0.05})
    pipeline = PerceptionPipeline(params, segmenter)
    stamp = 60.0
    assert feed(pipeline, drive_messages(frame, stamp), stamp + LATENCY_S) is not None
    later = stamp + 0.1
    messages = drive_messages(frame, later)
    assert feed(pipeline, messages, later + 0.01, sensors=("camera",)) is None, "depth, LiDAR, events are due"
    assert pipeline.awaited_sensors(later, later + 0.01) == ("depth", "events", "lidar")
    assert pipeline.on_depth(messages["depth"], later + 0.02) is None
    assert pipeline.on_events(messages["events"], later + 0.02) is None
    job = pipeline.on_lidar(messages["lidar"], later + 0.03)
    assert job is not None and job.frame.present == ("rgb", "depth", "event", "lidar")

    latest = later + 0.1
    messages = drive_messages(frame, latest)
    assert feed(pipeline, messages, latest + 0.01, sensors=("depth", "camera")) is None
    assert pipeline.on_timer(latest + 0.03) is None, "still within the wait"
    job = pipeline.on_timer(latest + 0.07)
    assert job is not None and job.frame.trigger == "pivot" and job.frame.present == ("rgb", "depth")
    assert job.header.stamp == messages["camera"].header.stamp

    no_wait = PerceptionPipeline(PerceptionParams({**drive_parameters(drive), "sync.camera_wait_s": 0.0}), segmenter)
    feed(no_wait, drive_messages(frame, stamp), stamp + LATENCY_S)
    assert feed(no_wait, drive_messages(frame, later), later + 0.01, sensors=("camera",)).frame.present == ("rgb",)


def test_timer_frames_when_the_camera_is_silent(segmenter, drive, frame):
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)
    stamp = 50.0
    assert feed(pipeline, drive_messages(frame, stamp), stamp + LATENCY_S) is not None
    assert pipeline.on_timer(stamp + 0.1) is None, "the camera is still fresh"
    later = stamp + 1.0
    messages = drive_messages(frame, later)
    feed(pipeline, messages, later + LATENCY_S, sensors=("depth", "lidar", "events"))
    job = pipeline.on_timer(later + 0.05)
    assert job is not None and job.frame.trigger == "timer"
    assert job.header.stamp == messages["lidar"].header.stamp and job.header.frame_id == CAMERA_FRAME
    output = pipeline.process(job, with_overlay=True)
    assert output.fed == ("depth", "event", "lidar") and output.reasons["rgb"].startswith("stale")
    assert output.labels.shape == (SIZE[1], SIZE[0]) and np.array_equal(output.overlay, output.color)
    assert pipeline.on_timer(later + 0.1) is None, "no new data, no new frame"


def test_camera_image_disabled_still_uses_camera_info(segmenter, drive, frame):
    pipeline = PerceptionPipeline(PerceptionParams({**drive_parameters(drive), "camera.enabled": False}), segmenter)
    stamp = 70.0
    assert feed(pipeline, drive_messages(frame, stamp), stamp + LATENCY_S) is None, "the camera image is ignored"
    job = pipeline.on_timer(stamp + 0.05)
    output = pipeline.process(job)
    assert output.fed == ("depth", "event", "lidar") and output.reasons["rgb"] == "disabled"
    assert job.header.frame_id == CAMERA_FRAME and output.labels.shape == (SIZE[1], SIZE[0])
    diagnostics = {item.name: item for item in pipeline.diagnostics(stamp + 0.05).status}
    assert diagnostics["robustseg: camera"].message == "disabled" and diagnostics["robustseg: camera"].level == OK


def test_frozen_sensor_is_excluded(segmenter, drive, frame):
    params = PerceptionParams({**drive_parameters(drive), "health.frozen_warn_repeats": 2,
                               "health.frozen_stale_repeats": 3})
    pipeline = PerceptionPipeline(params, segmenter)
    frozen_depth = drive_messages(frame)["depth"]
    job = None
    for index in range(5):
        stamp = 10.0 + index * 0.1
        messages = drive_messages(drive.frame(6 + index), stamp)
        frozen_depth.header.stamp = messages["depth"].header.stamp
        messages["depth"] = frozen_depth
        job = feed(pipeline, messages, stamp + LATENCY_S)
    assert job.frame.reasons["depth"] == "unhealthy: frozen"
    diagnostics = {item.name: item for item in pipeline.diagnostics(10.45).status}
    assert diagnostics["robustseg: depth"].level == STALE and "frozen" in diagnostics["robustseg: depth"].message


# ------------------------------------------------------------------ malformed messages


def test_malformed_messages_are_counted_logged_once_and_survived(segmenter, drive, frame):
    logger = RecordingLogger()
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter, logger=logger)
    now = 20.0
    good = drive_messages(frame, now)

    wrong_step = drive_messages(frame, now)["camera"]
    wrong_step.step = 10
    unknown_encoding = drive_messages(frame, now)["camera"]
    unknown_encoding.encoding = "yuv422"
    truncated = drive_messages(frame, now)["depth"]
    truncated.data = truncated.data[: len(truncated.data) // 2]
    nan_depth = numpy_to_image(np.full((SIZE[1], SIZE[0]), np.nan, np.float32), "32FC1", good["depth"].header)
    empty_cloud = numpy_to_pointcloud2(np.zeros((0, 4), np.float32), good["lidar"].header)
    no_xyz = PointCloud2(header=good["lidar"].header, height=1, width=3, point_step=4, row_step=12)
    bad_info = drive_messages(frame, now)["camera_info"]
    bad_info.k = [0.0] * 9

    for _ in range(2):
        assert pipeline.on_camera(wrong_step, now) is None
        assert pipeline.on_camera(unknown_encoding, now) is None
        assert pipeline.on_depth(truncated, now) is None
        assert pipeline.on_depth(nan_depth, now) is None
        assert pipeline.on_lidar(empty_cloud, now) is None
        assert pipeline.on_lidar(no_xyz, now) is None
        pipeline.on_camera_info(bad_info, now)

    assert pipeline.health["rgb"].error_counts == {"step": 2, "encoding": 2, "camera_info k": 2}
    assert pipeline.health["depth"].error_counts == {"data": 2, "no valid depth": 2}
    assert pipeline.health["lidar"].error_counts == {"empty cloud": 2, "fields": 2}
    assert len(logger.warnings) == 7, "each kind is logged once"
    diagnostics = {item.name: item for item in pipeline.diagnostics(now).status}
    lidar_values = {value.key: value.value for value in diagnostics["robustseg: lidar"].values}
    assert lidar_values["malformed.empty cloud"] == "2" and "malformed empty cloud" in diagnostics[
        "robustseg: lidar"].message

    job = feed(pipeline, good, now + LATENCY_S)
    assert pipeline.process(job).fed == ("rgb", "depth", "event", "lidar"), "good messages still work"


def test_a_failed_tf_lookup_counts_the_cloud_as_no_transform(segmenter, drive, frame):
    def lookup(lidar_frame, camera_frame, stamp_s):
        raise LookupError(f"no tf2 transform {camera_frame} <- {lidar_frame}")

    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter, lidar_extrinsic_lookup=lookup)
    job = feed(pipeline, drive_messages(frame, 60.0), 60.01)
    assert pipeline.health["lidar"].error_counts == {"no transform": 1}
    assert "lidar" not in pipeline.process(job).fed


def test_a_cloud_in_another_frame_than_lidar_frame_id_is_refused_not_misprojected(segmenter, drive, frame):
    logger = RecordingLogger()
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter, logger=logger)
    messages = drive_messages(frame, 60.0)
    messages["lidar"].header.frame_id = "rear_lidar"
    job = feed(pipeline, messages, 60.01)
    assert pipeline.health["lidar"].error_counts == {"frame_id": 1}
    assert "lidar" not in pipeline.process(job).fed
    assert any("'rear_lidar', but lidar.transform maps lidar.frame_id 'lidar'" in text for text in logger.warnings)
    job = feed(pipeline, drive_messages(frame, 60.1), 60.11)
    assert "lidar" in pipeline.process(job).fed, "clouds in the configured frame are fused"
    unchecked = PerceptionPipeline(PerceptionParams({**drive_parameters(drive), "lidar.frame_id": ""}), segmenter)
    assert "lidar" in unchecked.process(feed(unchecked, messages, 60.01)).fed, "empty lidar.frame_id: any frame"


def test_zero_future_and_backwards_stamps(segmenter, drive, frame):
    logger = RecordingLogger()
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter, logger=logger)
    now = 30.0
    assert feed(pipeline, drive_messages(frame, now), now + LATENCY_S) is not None
    assert pipeline.on_camera(drive_messages(frame, now + 5.0)["camera"], now + 0.1) is None, "future: not fused"
    assert pipeline.on_lidar(drive_messages(frame, now - 0.05)["lidar"], now + 0.1) is None
    assert pipeline.health["rgb"].anomaly_counts["future_stamp"] == 1
    assert pipeline.health["lidar"].anomaly_counts["backwards_stamp"] == 1
    job = feed(pipeline, drive_messages(frame, now + 0.1), now + 0.11)
    assert job is not None, "a future stamp does not block later frames"
    lidar = {item.name: item for item in pipeline.diagnostics(now + 0.12).status}["robustseg: lidar"]
    assert lidar.level == WARN and "stamp went backwards" in lidar.message
    assert any("backwards stamp" in text for text in logger.warnings)


def test_unaligned_depth_is_logged_once_and_still_used(segmenter, drive, frame):
    """A depth image in another frame than the camera's (a driver's unaligned depth) is named in one warning."""
    logger = RecordingLogger()
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter, logger=logger)
    for index, now in enumerate((40.0, 40.1)):
        messages = drive_messages(frame, now)
        messages["depth"].header.frame_id = "depth_optical"
        job = feed(pipeline, messages, now + LATENCY_S)
        assert job is not None and "depth" in pipeline.process(job).fed, index
    warnings = [text for text in logger.warnings if "depth_optical" in text]
    assert len(warnings) == 1 and CAMERA_FRAME in warnings[0]


def test_a_restarted_pipeline_forgets_what_it_saw_before(segmenter, drive, frame):
    """A node deactivated for longer than dead_after_s and activated again: its sensors start afresh (not DEAD)."""
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)
    assert feed(pipeline, drive_messages(frame, 50.0), 50.01) is not None
    pipeline.restart(80.0)
    statuses = pipeline.health.statuses(80.05)
    assert all(status.conditions == ("never_received",) for status in statuses.values()), statuses
    assert feed(pipeline, drive_messages(frame, 80.1), 80.11) is not None


def test_clock_not_started_and_clock_jump_back(segmenter, drive, frame):
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)
    assert feed(pipeline, drive_messages(frame, 5.0), 0.0) is None, "ROS time 0: sim time without /clock"
    assert pipeline.health["rgb"].messages_received == 0
    assert feed(pipeline, drive_messages(frame, 40.0), 40.01) is not None
    assert feed(pipeline, drive_messages(frame, 10.0), 10.01) is not None, "replay restarted: state reset"
    assert pipeline.health["rgb"].messages_received == 1


def test_a_looped_replay_drops_what_was_sent_before_the_clock_jumped_back(segmenter, drive, frame):
    """The last messages of a loop arrived after /clock went back: they were counted as stamps in the future for
    2 s, and a frame built before the jump was published after it with a latency of -10 s."""
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)
    before_the_jump = feed(pipeline, drive_messages(frame, 109.9), 109.91)
    assert before_the_jump is not None
    assert feed(pipeline, drive_messages(frame, 100.0), 100.01) is not None, "the replay looped"
    assert pipeline.process(before_the_jump) is None and pipeline.statistics.frames_dropped == 1
    assert feed(pipeline, drive_messages(frame, 110.0), 100.02) is None, "the old loop's last frame"
    assert not any(count for health in pipeline.health.sensors.values() for count in health.anomaly_counts.values()), \
        "no future stamp counted"
    assert pipeline.process(feed(pipeline, drive_messages(frame, 100.1), 100.11)) is not None
    assert feed(pipeline, drive_messages(frame, 110.3), 100.12) is None
    assert pipeline.health["rgb"].anomaly_counts["future_stamp"] == 1, "past the old loop's end: a future stamp"
    assert feed(pipeline, drive_messages(frame, 100.7), 100.13) is None
    assert pipeline.health["rgb"].anomaly_counts["future_stamp"] == 2, "0.5 s ahead in the new loop: a future stamp"


def test_a_failure_before_the_clock_jumped_back_does_not_hold_the_model_in_error(segmenter, drive, frame):
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)
    pipeline.statistics.count_failure(RuntimeError("boom"), 40.0)
    model = [status for status in pipeline.diagnostics(40.5).status if status.name == "robustseg: model"][0]
    assert "processing failed: RuntimeError: boom" in model.message
    model = [status for status in pipeline.diagnostics(10.0).status if status.name == "robustseg: model"][0]
    assert "processing failed" not in model.message, "the bag looped: that failure is in this clock's future"


def test_the_model_status_warns_when_the_outputs_stop(segmenter, drive, frame):
    """Frames were segmented, then every sensor went quiet: the model is not OK with no output for 2 s."""
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)
    stamp = 100.0
    output = pipeline.process(feed(pipeline, drive_messages(frame, stamp), stamp + LATENCY_S))
    pipeline.statistics.record_published(output, latency_ms=12.0, publish_ms=1.0, now=stamp + 0.02)

    def model(now: float):
        return [status for status in pipeline.diagnostics(now).status if status.name == "robustseg: model"][0]

    assert model(stamp + 1.0).level == OK
    assert model(stamp + 3.0).level == WARN and model(stamp + 3.0).message == "no frame segmented for 3.0 s (1 before)"


# ------------------------------------------------------------------ parameters


def test_parameters_defaults_validation_and_extrinsics():
    params = PerceptionParams()
    assert set(params.values) == {spec.name for spec in PARAMETERS}
    assert all(spec.description for spec in PARAMETERS)
    assert np.allclose(quaternion_to_rotation(*CO_LOCATED_LIDAR_TRANSFORM[3:]), R_BODY_OPTICAL.T)
    assert params.inputs["lidar"].sync.tolerance_s == 0.06 and params.inputs["camera"].health.max_age_s == 0.5
    matrix = transform_from_parameter([1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0])
    assert np.array_equal(matrix[:3, 3], [1.0, 2.0, 3.0]) and np.array_equal(matrix[:3, :3], np.eye(3))
    with pytest.raises(ValueError, match="unknown parameter"):
        PerceptionParams({"camera.topics": "x"})
    with pytest.raises(ValueError, match="lidar.qos"):
        PerceptionParams({"lidar.qos": "best"})
    with pytest.raises(ValueError, match="lidar.transform: expected 7 values"):
        PerceptionParams({"lidar.transform": (0.0, 0.0, 0.0)})
    with pytest.raises(ValueError, match="not orthonormal"):
        PerceptionParams({"lidar.transform": tuple(float(v) for v in range(16))[:12] + (0.0, 0.0, 0.0, 1.0)})
    with pytest.raises(ValueError, match="max_age_s"):
        PerceptionParams({"depth.max_age_s": 9.0, "depth.dead_after_s": 1.0})


def test_missing_checkpoint_says_how_to_pass_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint:="):
        resolve_checkpoint(str(tmp_path / "missing.pt"))
    try:
        packaged = resolve_checkpoint("")
    except FileNotFoundError as error:
        assert "robustseg_student.pt" in str(error) and "checkpoint:=" in str(error)
    else:
        assert packaged.name == "robustseg_student.pt"


@pytest.mark.parametrize("name, value, message", [
    ("warmup_width", 0, "warmup_width: must be > 0"),
    ("output.confidence_threshold", 1.5, r"output.confidence_threshold: must be in \[0, 1\]"),
    ("camera.qos", "fast", "camera.qos: 'fast' is not one of"),
    ("lidar.max_points", 0, "lidar.max_points: must be >= 1"),
    ("health.degraded_after_messages", 0, "health.degraded_after_messages"),
    ("lidar.topic", "lidar points", "lidar.topic: 'lidar points' is not a ROS topic name: token 'lidar points'"),
    ("lidar.topic", "lidar/points/", "lidar.topic: 'lidar/points/' is not a ROS topic name: empty token"),
    ("camera.info_topic", "", "camera.info_topic: '' is not a ROS topic name: empty"),
    ("camera.height_m", float("nan"), "camera.height_m: must be a number, got nan"),
    ("camera.height_m", -2.0, "camera.height_m: must be a finite height > 0 m"),
    ("camera.pitch_deg", float("inf"), r"camera.pitch_deg: must be an angle in \[-180, 180\] deg"),
    ("sync.camera_wait_s", float("nan"), "sync.camera_wait_s: must be a number, got nan"),
    ("health.degraded_clear_s", float("inf"), "health.degraded_clear_s.*need finite clear_s >= 0"),
])
def test_bad_parameters_are_named(name, value, message):
    with pytest.raises(ParameterError, match=message):  # a one-line error of the console script, not a traceback
        PerceptionParams({name: value})

"""What a hostile or broken sensor can send, through the pipeline: late messages, a stopped sensor's first STALE,
event packets with impossible times or pixels, a CameraInfo of another size, a huge cloud; each counted on
/diagnostics, logged once, and never fed as if it contributed."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from test_pipeline import (  # noqa: E402
    LATENCY_S,
    SIZE,
    RecordingLogger,
    drive_messages,
    drive_parameters,
    feed,
    make_tiny_checkpoint,
)

from robustseg_core.inference import Segmenter  # noqa: E402
from robustseg_core.sensors import EVENT_DTYPE  # noqa: E402
from robustseg_core.sim.drive import Drive, DriveConfig  # noqa: E402
from robustseg_ros.conversions import (  # noqa: E402
    events_to_pointcloud2,
    intrinsics_to_camera_info,
    numpy_to_pointcloud2,
    seconds_to_stamp,
)
from robustseg_ros.event_buffer import EventWindowBuffer  # noqa: E402
from robustseg_ros.params import PerceptionParams  # noqa: E402
from robustseg_ros.pipeline import PerceptionPipeline  # noqa: E402

OK, WARN, ERROR, STALE = (bytes([level]) for level in (0, 1, 2, 3))


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> Segmenter:
    return Segmenter(make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt"), device="cpu")


@pytest.fixture(scope="module")
def drive() -> Drive:
    return Drive(11, DriveConfig(width=SIZE[0], height=SIZE[1]))


@pytest.fixture(scope="module")
def frames(drive) -> list:
    return [drive.frame(index) for index in range(1, 7)]


def diagnostics_of(pipeline: PerceptionPipeline, now: float) -> dict:
    return {item.name: item for item in pipeline.diagnostics(now).status}


def values_of(status) -> dict:
    return {item.key: item.value for item in status.values}


def stream(pipeline: PerceptionPipeline, frames: list, start: float, count: int, sensors=("depth", "lidar", "events",
                                                                                             "camera"), mutate=None):
    """``count`` frame sets at 10 Hz from ``start`` (with the timer ticks between); the outputs of the frames."""
    outputs = []
    for index in range(count):
        stamp = start + index * 0.1
        messages = drive_messages(frames[index % len(frames)], stamp)
        if mutate is not None:
            mutate(messages, index)
        job = feed(pipeline, messages, stamp + LATENCY_S, sensors=sensors)
        if job is not None:
            outputs.append(pipeline.process(job))
        for tick in (0.05,):
            timer_job = pipeline.on_timer(stamp + tick)
            if timer_job is not None:
                outputs.append(pipeline.process(timer_job))
    return outputs


def test_a_late_depth_message_is_a_warning_not_stale_and_the_fresh_one_still_feeds(segmenter, drive, frames):
    """Bug a: one depth message stamped 1 s in the past made depth STALE and dropped it from the next frame."""
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)
    stream(pipeline, frames, 40.0, 5)
    fresh = drive_messages(frames[5], 40.5)
    feed(pipeline, fresh, 40.5 + LATENCY_S, sensors=("depth", "lidar", "events"))
    assert pipeline.on_depth(drive_messages(frames[0], 39.5)["depth"], 40.5 + LATENCY_S) is None
    depth = diagnostics_of(pipeline, 40.52)["robustseg: depth"]
    assert depth.level == WARN and "stamp went backwards" in depth.message and "stale" not in depth.message
    job = pipeline.on_camera(fresh["camera"], 40.5 + LATENCY_S)
    assert "depth" in pipeline.process(job).fed, "the fresh depth message cached before the late one joins"


def test_a_sensor_that_stopped_is_stale_without_blaming_the_clock(segmenter, drive, frames):
    """Bug b: the first STALE of a sensor that simply stopped said "messages still arrive: clock offset or delay"."""
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)
    stream(pipeline, frames, 50.0, 5)
    last_lidar = 50.4 + LATENCY_S
    stale = None
    for tick in np.arange(50.45, 51.5, 0.05):
        stream_stamp = round(float(tick), 3)
        pipeline.on_timer(stream_stamp)
        lidar = diagnostics_of(pipeline, stream_stamp)["robustseg: lidar"]
        if lidar.level == STALE:
            stale = (stream_stamp, lidar.message)
            break
    assert stale is not None and stale[0] - last_lidar <= 0.5 + 0.05
    assert stale[1].startswith("stale: last message") and "still arrive" not in stale[1]


def hostile_packet(stamp: float, t: float, count: int = 50) -> object:
    events = np.zeros(count, dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["polarity"] = 3, 4, t, 1
    return events_to_pointcloud2(events, drive_messages_header(stamp))


def drive_messages_header(stamp: float):
    from std_msgs.msg import Header

    return Header(stamp=seconds_to_stamp(stamp), frame_id="event_camera")


def test_event_packets_from_the_future_are_counted_and_never_stop_pruning(segmenter, drive, frames):
    """Bug c: one packet with t an hour ahead (or nanoseconds in a FLOAT64 field) stopped pruning: every later
    packet was kept, the bad one was neither counted nor logged, and frames were fed an empty event image."""
    logger = RecordingLogger()
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter, logger=logger)
    stream(pipeline, frames, 60.0, 3)

    def inject(messages, index):
        stamp = 60.3 + index * 0.1
        pipeline.on_events(hostile_packet(stamp, stamp + 3600.0), stamp + 0.002)  # an hour ahead
        pipeline.on_events(hostile_packet(stamp, stamp * 1e9), stamp + 0.003)  # nanoseconds as seconds

    outputs = stream(pipeline, frames, 60.3, 12, mutate=inject)
    assert pipeline.health["event"].error_counts == {"event time": 12 * 2 * 50}
    assert sum("event time" in text for text in logger.warnings) == 1, "logged once"
    packet = len(drive_messages(frames[0], 0.0)["events"].data) // EVENT_DTYPE.itemsize
    keep_s = pipeline.event_keep_s
    assert pipeline.event_buffer.events <= (keep_s / 0.1 + 2) * packet * 1.5, "still pruned to the window"
    assert all("event" in output.fed for output in outputs if output.job.frame.entries["rgb"] is not None)
    events = diagnostics_of(pipeline, 61.5)["robustseg: events"]
    values = values_of(events)
    assert events.level == WARN and "malformed event time (1200 so far)" in events.message
    assert int(values["buffered_events"]) == pipeline.event_buffer.events
    assert int(values["buffered_bytes"]) == pipeline.event_buffer.events * EVENT_DTYPE.itemsize


def test_an_event_packet_with_nothing_usable_is_not_reported_as_fed(segmenter, drive, frames):
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)

    def only_hostile(messages, index):
        stamp = messages["camera"].header.stamp.sec + messages["camera"].header.stamp.nanosec * 1e-9
        messages["events"] = hostile_packet(stamp, stamp + 3600.0)

    outputs = stream(pipeline, frames, 70.0, 3, mutate=only_hostile)
    assert all("event" not in output.fed for output in outputs)
    assert outputs[-1].reasons["event"].startswith("not encoded: no event in the window")


def test_events_outside_the_sensor_are_counted(segmenter, drive, frames):
    """Bug f: events with x or y outside the sensor were logged but not counted on /diagnostics."""
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter)
    stream(pipeline, frames, 80.0, 2)
    off_sensor = np.zeros(7, dtype=EVENT_DTYPE)
    off_sensor["x"], off_sensor["y"], off_sensor["t"], off_sensor["polarity"] = SIZE[0] + 5, 2, 80.15, 1
    pipeline.on_events(events_to_pointcloud2(off_sensor, drive_messages_header(80.2)), 80.21)
    stream(pipeline, frames, 80.2, 1, sensors=("depth", "lidar", "camera"))  # a frame whose window holds them
    events = diagnostics_of(pipeline, 80.22)["robustseg: events"]
    assert values_of(events)["malformed.event x/y"] == "7"
    assert f"malformed event x/y (7 so far): 7 events outside the {SIZE[0]}x{SIZE[1]} sensor" in events.message


def test_event_buffer_has_a_hard_bound_in_events_and_bytes():
    buffer = EventWindowBuffer(keep_s=10.0, max_events=1000)
    packet = np.zeros(400, dtype=EVENT_DTYPE)
    dropped = []
    for index in range(5):
        packet = packet.copy()
        packet["t"] = index * 0.1
        dropped.append(buffer.add(packet))
    assert buffer.events <= 1000 and buffer.bytes == buffer.events * EVENT_DTYPE.itemsize
    assert dropped == [0, 0, 400, 400, 400], "the oldest packets go"
    huge = np.zeros(5000, dtype=EVENT_DTYPE)
    huge["t"] = 1.0
    assert buffer.add(huge) == 4000 + 800, "subsampled to 1000 (every 5th), and the 800 older events go"
    assert buffer.events == 1000 and len(buffer.window(0.9, 1.1, (64, 64)).events) == 1000


def test_event_buffer_counts_events_off_the_sensor_once_in_the_first_cut():
    buffer = EventWindowBuffer(keep_s=10.0, max_events=1000)
    packet = np.zeros(10, dtype=EVENT_DTYPE)
    packet["t"] = 1.0
    packet["x"][:3] = 100
    buffer.add(packet)
    first = buffer.window(0.9, 1.1, (64, 64))
    assert len(first.events) == 7 and first.outside_sensor == 3 and buffer.events == 7
    again = buffer.window(0.95, 1.05, (64, 64))
    assert len(again.events) == 7 and again.outside_sensor == 0, "a frame overlapping the packet again counts nothing"


def test_a_camera_info_of_another_size_is_counted_and_rescaled_only_when_the_aspect_matches(segmenter, drive, frames):
    """Bug d: a CameraInfo whose width and height differ from the image's was rescaled silently."""
    logger = RecordingLogger()
    pipeline = PerceptionPipeline(PerceptionParams(drive_parameters(drive)), segmenter, logger=logger)
    doubled = frames[0].intrinsics.scaled(SIZE[0] * 2, SIZE[1] * 2)

    def binned(messages, index):
        messages["camera_info"] = intrinsics_to_camera_info(doubled, messages["camera_info"].header)

    outputs = stream(pipeline, frames, 90.0, 2, mutate=binned)
    assert outputs[-1].fed == ("rgb", "depth", "event", "lidar"), "same aspect ratio: rescaled"
    camera = diagnostics_of(pipeline, 90.15)["robustseg: camera"]
    assert camera.level == WARN and f"CameraInfo is {SIZE[0] * 2}x{SIZE[1] * 2} but the camera image" in camera.message
    assert values_of(camera)["malformed.camera_info size"] == "2"
    assert sum("camera_info size" in text for text in logger.warnings) == 1

    wide = frames[0].intrinsics.scaled(SIZE[0] * 2, SIZE[1])

    def cropped(messages, index):
        messages["camera_info"] = intrinsics_to_camera_info(wide, messages["camera_info"].header)

    outputs = stream(pipeline, frames, 90.2, 1, mutate=cropped)
    assert outputs[-1].fed == ("rgb", "event")
    assert "another aspect ratio" in outputs[-1].reasons["depth"] and "another aspect ratio" in outputs[-1].reasons[
        "lidar"]


def test_a_huge_cloud_is_subsampled_to_the_point_budget_and_counted(segmenter, drive, frames):
    """Bug e: a 2-million-point PointCloud2 stalled every output for over a second."""
    pipeline = PerceptionPipeline(PerceptionParams({**drive_parameters(drive), "lidar.max_points": 100_000}),
                                  segmenter)
    stream(pipeline, frames, 95.0, 2)
    base = frames[0].lidar_points
    huge = np.tile(base, (2_000_000 // len(base) + 1, 1))[:2_000_000]
    cloud = numpy_to_pointcloud2(huge, drive_messages_header(95.2))
    cloud.header.frame_id = "lidar"
    pipeline.on_lidar(cloud, 95.2 + LATENCY_S)
    payload = pipeline.sync.caches["lidar"].latest().payload
    assert 50_000 < len(payload.data) <= 100_000, "uniformly subsampled to the budget"
    lidar = diagnostics_of(pipeline, 95.22)["robustseg: lidar"]
    assert values_of(lidar)["limited.point budget"] == "1"
    assert "limited point budget (1 so far): a cloud of 2000000 points was subsampled uniformly" in lidar.message
    outputs = stream(pipeline, frames, 95.2, 1, sensors=("depth", "events", "camera"))
    assert "lidar" in outputs[-1].fed

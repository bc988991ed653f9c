"""FrameSynchronizer: pivot frames, nearest-within-tolerance, staleness, timer fallback, no duplicates."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from robustseg_ros.sync import FrameSynchronizer, ModalityCache, ModalitySyncConfig, SyncedFrame

MODALITIES = ("rgb", "depth", "event", "lidar")


def make_sync(**overrides) -> FrameSynchronizer:
    configs = {
        "rgb": ModalitySyncConfig(tolerance_s=0.01, max_age_s=0.3),
        "depth": ModalitySyncConfig(tolerance_s=0.02, max_age_s=0.3),
        "event": ModalitySyncConfig(tolerance_s=0.02, max_age_s=0.3),
        "lidar": ModalitySyncConfig(tolerance_s=0.06, max_age_s=0.5),
    }
    configs.update(overrides)
    return FrameSynchronizer(MODALITIES, configs, pivot="rgb", timer_period_s=0.1)


def test_module_is_ros_free():
    source = Path(__file__).resolve().parents[1] / "robustseg_ros" / "sync.py"
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source.read_text()))
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert not imported & {"rclpy", "sensor_msgs", "std_msgs", "builtin_interfaces", "diagnostic_msgs"}


def test_cache_orders_by_stamp_and_bounds_length():
    cache = ModalityCache(capacity=3)
    for stamp in (1.0, 3.0, 2.0, 4.0):
        cache.add(stamp, f"m{stamp}", received_at=stamp + 0.01)
    assert len(cache) == 3 and cache.latest().stamp == 4.0
    assert cache.nearest(1.0, 0.5) is None, "the oldest stamp was evicted"
    assert cache.nearest(2.4, 0.5).stamp == 2.0
    assert cache.nearest(2.5, 0.5).stamp == 2.0, "ties go to the earlier message"
    assert cache.nearest(2.6, 0.5).stamp == 3.0
    assert cache.nearest(5.0, 0.5) is None
    cache.add(3.0, "replacement", received_at=9.0)
    assert cache.nearest(3.0, 0.0).payload == "replacement" and len(cache) == 3


def test_pivot_triggers_frame_with_nearest_within_tolerance():
    sync = make_sync()
    assert sync.add("depth", 0.985, "depth-a", received_at=0.99) is None
    assert sync.add("depth", 1.005, "depth-b", received_at=1.01) is None
    assert sync.add("lidar", 0.95, "lidar-a", received_at=0.97) is None
    assert sync.add("event", 0.90, "event-old", received_at=0.91) is None
    frame = sync.add("rgb", 1.0, "image", received_at=1.02)
    assert isinstance(frame, SyncedFrame) and frame.trigger == "pivot"
    assert frame.stamp == 1.0 and frame.now == 1.02
    assert frame.payload("rgb") == "image"
    assert frame.payload("depth") == "depth-b"
    assert frame.payload("lidar") == "lidar-a"
    assert frame.presence == (True, True, False, True)
    assert frame.present == ("rgb", "depth", "lidar")
    assert frame.reasons == {"event": "no message within 0.02 s of the frame stamp (nearest 0.10 s away)"}


def test_never_received_and_disabled_reasons():
    sync = make_sync(lidar=ModalitySyncConfig(enabled=False))
    sync.add("lidar", 1.0, "scan", received_at=1.0)
    frame = sync.add("rgb", 1.0, "image", received_at=1.01)
    assert frame.reasons == {"depth": "never received", "event": "never received", "lidar": "disabled"}
    sync.set_enabled("lidar", True)
    assert sync.add("rgb", 1.03, "image", received_at=1.04).payload("lidar") == "scan"


def test_stopped_modality_becomes_absent_after_max_age_with_reason():
    sync = make_sync()
    frames = []
    last_depth_stamp = None
    for i in range(30):
        t = i / 30
        if i < 12:
            sync.add("depth", t, f"depth{i}", received_at=t + 0.005)
            last_depth_stamp = t
        frames.append(sync.add("rgb", t, f"image{i}", received_at=t + 0.01))
    for frame in frames:
        gap = frame.stamp - last_depth_stamp
        if gap <= 0.02:
            assert frame.entries["depth"] is not None
        elif frame.now - last_depth_stamp <= 0.3:
            assert frame.reasons["depth"].startswith("no message within 0.02 s of the frame stamp")
        else:
            assert frame.reasons["depth"] == (
                f"stale: last message {frame.now - last_depth_stamp:.2f} s old > max age 0.30 s")
    assert frames[-1].reasons["depth"] == "stale: last message 0.61 s old > max age 0.30 s"
    assert all(frame.entries["rgb"] is not None for frame in frames)


def test_camera_stops_timer_frames_continue_with_others():
    sync = make_sync()
    t = 0.0
    for i in range(10):
        t = i / 30
        sync.add("depth", t, f"depth{i}", received_at=t + 0.005)
        sync.add("lidar", t, f"lidar{i}", received_at=t + 0.005)
        assert sync.add("rgb", t, f"image{i}", received_at=t + 0.01) is not None
        assert sync.on_timer(t + 0.012) is None, "no timer frames while the camera is healthy"
    last_camera_stamp = t
    timer_frames = []
    for i in range(10, 40):
        t = i / 30
        sync.add("depth", t, f"depth{i}", received_at=t + 0.005)
        sync.add("lidar", t, f"lidar{i}", received_at=t + 0.005)
        if i % 3 == 0:
            frame = sync.on_timer(t + 0.006)
            if frame is not None:
                timer_frames.append(frame)
    assert timer_frames, "frames continue without the camera"
    assert all(frame.trigger == "timer" for frame in timer_frames)
    assert timer_frames[0].now - last_camera_stamp > 0.3
    for frame in timer_frames:
        assert frame.presence == (False, True, False, True)
        assert frame.payload("depth") == frame.payload("lidar").replace("lidar", "depth")
        assert frame.reasons["rgb"].startswith("stale: last message")
        assert frame.reasons["event"] == "never received"
    stamps = [frame.stamp for frame in timer_frames]
    assert stamps == sorted(set(stamps)), "timer frames move forward and never repeat"
    assert sync.counters.timer_frames == len(timer_frames) and sync.counters.pivot_frames == 10

    returning = sync.add("rgb", 40 / 30, "image40", received_at=40 / 30 + 0.01)
    assert returning is not None and returning.trigger == "pivot"
    assert sync.on_timer(40 / 30 + 0.05) is None


def test_a_late_starting_camera_behind_the_lidar_is_not_shut_out():
    """Camera stamps 20 ms behind the LiDAR's and 70 ms of camera latency: timer frames run until the camera
    starts, then the camera makes the frames (before, each image was dropped as older than the last timer
    frame, forever)."""
    sync = make_sync(rgb=ModalitySyncConfig(tolerance_s=0.01, max_age_s=0.3))
    frames = []
    for i in range(60):
        t = i / 10
        sync.add("lidar", t + 0.02, f"lidar{i}", received_at=t + 0.025)
        frame = sync.on_timer(t + 0.03)  # the timer fires between the LiDAR's message and the camera's
        frames += [frame] if frame is not None else []
        if i >= 20:  # the camera starts 2 s late
            frame = sync.add("rgb", t, f"image{i}", received_at=t + 0.07)
            frames += [frame] if frame is not None else []
    triggers = [frame.trigger for frame in frames]
    assert triggers[:21] == ["timer"] * 21 and "timer" not in triggers[21:]
    assert triggers.count("pivot") == 39 and sync.counters.late_pivots_dropped == 1
    stamps = [frame.stamp for frame in frames]
    assert stamps == sorted(set(stamps)), "frame stamps move forward and never repeat"


def test_a_1khz_event_stream_joins_a_camera_frame_70_ms_late():
    """The default 8-message cache holds 8 ms of a 1 kHz stream; the caches keep max age + tolerance instead."""
    sync = make_sync(event=ModalitySyncConfig(tolerance_s=0.05, max_age_s=0.5, cache_size=8))
    for step in range(1000):
        t = step / 1000
        sync.add("event", t, f"packet{step}", received_at=t + 0.001)
    frame = sync.add("rgb", 0.93, "image", received_at=1.0)  # the image of 70 ms ago arrives now
    assert frame is not None and frame.payload("event") == "packet930"
    assert len(sync.caches["event"]) == 551  # 0.55 s of packets, not the whole second


def test_timer_needs_new_data_and_fresh_data():
    sync = make_sync()
    assert sync.on_timer(0.0) is None, "nothing received: no frame"
    sync.add("depth", 1.0, "d", received_at=1.0)
    frame = sync.on_timer(1.05)
    assert frame is not None and frame.stamp == 1.0 and frame.reasons["rgb"] == "never received"
    assert sync.on_timer(1.15) is None, "the same data never makes two frames"
    assert sync.on_timer(5.0) is None, "stale data makes no frame"


def test_out_of_order_arrival():
    sync = make_sync()
    sync.add("depth", 1.02, "depth-late-stamp", received_at=1.0)
    sync.add("depth", 0.998, "depth-early-stamp", received_at=1.03)
    frame = sync.add("rgb", 1.0, "image", received_at=1.04)
    assert frame.payload("depth") == "depth-early-stamp"

    assert sync.add("rgb", 1.1, "image-new", received_at=1.11) is not None
    assert sync.add("rgb", 1.05, "image-late", received_at=1.12) is None, "an older pivot than the last frame"
    assert sync.counters.late_pivots_dropped == 1
    assert sync.add("rgb", 1.1, "image-duplicate", received_at=1.13) is None
    assert sync.counters.pivot_frames == 2


def test_stale_pivot_is_dropped_and_unhealthy_modalities_excluded():
    sync = make_sync()
    assert sync.add("rgb", 1.0, "old image", received_at=2.0) is None
    assert sync.counters.stale_pivots_dropped == 1

    sync.add("depth", 3.0, "frozen depth", received_at=3.0)
    sync.set_unhealthy("depth", "frozen")
    frame = sync.add("rgb", 3.0, "image", received_at=3.01)
    assert frame.reasons["depth"] == "unhealthy: frozen" and frame.entries["depth"] is None
    sync.set_unhealthy("depth", None)
    assert sync.add("rgb", 3.005, "image", received_at=3.02).payload("depth") == "frozen depth"

    sync.set_unhealthy("rgb", "frozen")
    assert sync.add("rgb", 3.04, "frozen image", received_at=3.05) is None, "an unhealthy pivot drives no frame"
    sync.add("depth", 3.4, "depth", received_at=3.4)
    frame = sync.on_timer(3.41)
    assert frame.trigger == "timer" and frame.reasons["rgb"] == "unhealthy: frozen", "also stale, but frozen says why"


def test_a_sensor_whose_messages_are_all_unusable_is_reported_as_unusable_not_as_silent():
    """The health monitor sees the unusable messages the cache never holds: "unhealthy: unusable" wins over the
    cache's "never received" or "stale", which would say the sensor stopped; age conditions keep the cache's
    text, which has the numbers."""
    sync = make_sync()
    sync.set_unhealthy("lidar", "unusable")
    frame = sync.add("rgb", 1.0, "image", received_at=1.01)
    assert frame.reasons["lidar"] == "unhealthy: unusable"
    sync.add("depth", 1.0, "depth", received_at=1.0)
    sync.set_unhealthy("depth", "unusable")  # it worked, then its messages became unusable
    frame = sync.add("rgb", 5.0, "image", received_at=5.01)
    assert frame.reasons["depth"] == "unhealthy: unusable"
    sync.set_unhealthy("depth", "stale")
    assert sync.add("rgb", 5.1, "image", received_at=5.11).reasons["depth"].startswith("stale: last message 4.11 s")


def test_deterministic_replay():
    def run() -> list[tuple]:
        sync = make_sync()
        out = []
        for i in range(60):
            t = i / 30
            if i % 2 == 0:
                sync.add("lidar", t - 0.004, i, received_at=t)
            if not 20 <= i < 40:
                frame = sync.add("rgb", t, i, received_at=t + 0.01)
                out.append(frame and (frame.stamp, frame.presence, tuple(sorted(frame.reasons.items()))))
            frame = sync.on_timer(t + 0.02)
            out.append(frame and (frame.stamp, frame.presence, tuple(sorted(frame.reasons.items()))))
        return out

    assert run() == run()


def test_configuration_errors():
    with pytest.raises(ValueError, match="pivot 'camera'"):
        FrameSynchronizer(MODALITIES, pivot="camera")
    with pytest.raises(ValueError, match="unknown modalities"):
        FrameSynchronizer(MODALITIES, {"radar": ModalitySyncConfig()})
    with pytest.raises(ValueError, match="max_age_s"):
        ModalitySyncConfig(max_age_s=0)
    with pytest.raises(KeyError, match="unknown modality 'radar'"):
        make_sync().add("radar", 0.0, None, received_at=0.0)

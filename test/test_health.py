"""SensorHealth / HealthMonitor: state ladder, rate, frozen data, stamp anomalies, malformed messages."""

from __future__ import annotations

import array
import ast
from pathlib import Path

import numpy as np
import pytest

from robustseg_ros.health import (
    HealthConfig,
    HealthMonitor,
    SensorHealth,
    SensorState,
    excluded_modalities,
    payload_digest,
)

CONFIG = HealthConfig(expected_rate_hz=10.0, warn_after_periods=3.0, max_age_s=0.5, dead_after_s=2.0,
                      rate_window_s=1.0, min_rate_fraction=0.5, frozen_warn_repeats=3,
                      frozen_stale_repeats=6, future_tolerance_s=0.1, anomaly_hold_s=1.0)


def feed(health: SensorHealth, start: float, stop: float, rate_hz: float, digest=None, latency: float = 0.01):
    """Messages every 1/rate_hz s over [start, stop); distinct digests unless one is given."""
    count = int(round((stop - start) * rate_hz))
    for i in range(count):
        stamp = start + i / rate_hz
        health.record_message(stamp, stamp + latency, digest if digest is not None else f"{stamp}".encode())
    return start + (count - 1) / rate_hz + latency


def test_module_is_ros_free():
    source = Path(__file__).resolve().parents[1] / "robustseg_ros" / "health.py"
    tree = ast.parse(source.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"rclpy", "sensor_msgs", "std_msgs", "builtin_interfaces", "diagnostic_msgs", "time"}


def test_levels_follow_diagnostic_msgs():
    assert [state.name for state in SensorState] == ["OK", "WARN", "DEGRADED", "STALE", "DEAD"]
    assert [state.level for state in SensorState] == [0, 1, 1, 3, 2]
    assert [state.severity for state in SensorState] == [0, 1, 2, 3, 4]
    assert SensorState.from_level(1) is SensorState.WARN


def test_ok_warn_stale_dead_as_time_passes_then_recovery():
    health = SensorHealth(CONFIG, started_at=0.0)
    assert health.status(0.5).state is SensorState.STALE
    assert health.status(0.5).message == "never received (0.50 s since start)"
    dead = health.status(2.5)
    assert dead.state is SensorState.DEAD and dead.level == 2
    assert dead.message == "dead: never received (2.50 s since start)"

    last = feed(health, 3.0, 5.0, 10.0)
    ok = health.status(last + 0.05)
    assert ok.state is SensorState.OK and ok.level == 0 and ok.message == "OK" and ok.usable
    assert ok.values["rate_hz"] == "10.00" and ok.values["expected_rate_hz"] == "10.00"
    assert ok.values["messages"] == "20" and ok.values["age_s"] == "0.050"
    assert ok.values["latency_s"] == "0.010"

    late = health.status(last + 0.35)
    assert late.state is SensorState.WARN and late.conditions == ("late",)
    assert late.message == "late: last message 0.35 s old (expected every 0.10 s)"
    stale = health.status(last + 0.84)
    assert stale.state is SensorState.STALE and stale.level == 3 and not stale.usable
    assert stale.message == "stale: last message 0.85 s old > max age 0.50 s"
    dead = health.status(last + 2.5)
    assert dead.state is SensorState.DEAD and dead.level == 2
    assert dead.message == "dead: no message for 2.50 s (> 2.00 s)"
    assert dead.level_byte == b"\x02"

    back = feed(health, last + 3.0, last + 3.5, 10.0)
    assert health.status(back + 0.01).state is SensorState.OK


def test_rate_measurement_and_low_rate_warning():
    health = SensorHealth(CONFIG, started_at=0.0)
    last = feed(health, 0.0, 2.0, 10.0)
    assert health.measured_rate(last) == pytest.approx(10.0)
    last = feed(health, 2.0, 4.0, 4.0)
    assert health.measured_rate(last) == pytest.approx(4.0)
    status = health.status(last + 0.01)
    assert status.state is SensorState.WARN and status.conditions == ("low_rate",)
    assert status.message == "low rate: 4.00 Hz < 5.00 Hz (50% of 10.00 Hz)"
    assert status.values["rate_hz"] == "4.00"
    last = feed(health, 4.0, 5.5, 10.0)
    assert health.status(last + 0.01).state is SensorState.OK
    assert SensorHealth(CONFIG).measured_rate(1.0) is None


def test_frozen_payloads_warn_then_stale_and_recover():
    health = SensorHealth(CONFIG, started_at=0.0)
    frame = np.zeros((48, 64, 3), dtype=np.uint8)
    frozen_digest = payload_digest(frame)
    t = 0.0
    states = []
    for i in range(8):
        t = 1.0 + i * 0.1
        health.record_message(t, t + 0.01, frozen_digest)
        states.append(health.status(t + 0.02).state)
    assert states == [SensorState.OK] * 2 + [SensorState.WARN] * 3 + [SensorState.STALE] * 3
    status = health.status(t + 0.02)
    assert status.conditions == ("frozen",) and status.message == "frozen: last 8 messages identical"
    assert status.values["identical_in_a_row"] == "8"

    moved = frame.copy()
    moved[20:30, 30:40] = 255
    health.record_message(t + 0.1, t + 0.11, payload_digest(moved))
    assert health.status(t + 0.12).state is SensorState.OK

    health.record_message(t + 0.2, t + 0.21, None)
    assert health.status(t + 0.22).values["identical_in_a_row"] == "1", "no digest leaves the count alone"


def test_payload_digest_is_small_and_sensitive():
    data = np.random.default_rng(0).integers(0, 255, size=1_000_000, dtype=np.uint8)
    as_array = array.array("B", data.tobytes())
    assert payload_digest(as_array) == payload_digest(data.tobytes()) == payload_digest(memoryview(as_array))
    noisy = data.copy()
    noisy += np.random.default_rng(1).integers(0, 2, size=noisy.size, dtype=np.uint8)
    assert payload_digest(noisy.tobytes()) != payload_digest(data.tobytes())
    assert payload_digest(data.tobytes()) != payload_digest(data[:-1].tobytes())
    assert len(payload_digest(b"")) == 16
    image = data[:30000].reshape(100, 100, 3)
    assert payload_digest(image[:, ::2]) == payload_digest(np.ascontiguousarray(image[:, ::2]))
    assert payload_digest(image[:, ::2]) != payload_digest(image[:, 1::2])


def test_stamp_anomalies_counted_reported_and_logged_once():
    health = SensorHealth(CONFIG, started_at=0.0)
    assert health.record_message(1.0, 1.01, b"a") == ()
    assert health.record_message(0.0, 1.1, b"b") == ("zero_stamp",)
    assert health.record_message(1.5, 1.2, b"c") == ("future_stamp",)
    assert health.record_message(1.25, 1.3, b"d") == (), "a glitched future stamp does not make good ones 'backwards'"
    assert health.record_message(1.2, 1.35, b"x") == ("backwards_stamp",)
    assert health.record_message(1.25, 1.4, b"e") == ("repeated_stamp",), "the newest stamp stays 1.25 s"
    assert health.record_message(1.45, 1.5, b"f") == ()
    assert health.anomaly_counts == {"zero_stamp": 1, "future_stamp": 1, "backwards_stamp": 1, "repeated_stamp": 1}

    status = health.status(1.55)
    assert status.state is SensorState.WARN
    assert set(status.conditions) == {"zero_stamp", "future_stamp", "backwards_stamp", "repeated_stamp"}
    assert "stamp went backwards (1 so far; last: stamp 1.200 s received at 1.350 s)" in status.message
    assert "stamp in the future (> 0.10 s ahead)" in status.message
    assert status.values["zero_stamps"] == "1" and status.values["backwards_stamps"] == "1"

    assert health.should_log("backwards_stamp") is True
    assert health.should_log("backwards_stamp") is False

    last = feed(health, 2.5, 3.5, 10.0)
    later = health.status(last + 0.01)
    assert later.state is SensorState.OK, "anomalies stop warning after anomaly_hold_s"
    assert later.values["future_stamps"] == "1", "counts stay"


def test_malformed_messages_counted_per_kind_and_logged_once():
    health = SensorHealth(CONFIG, started_at=0.0)
    assert health.record_error("bad_step", "step 10 < 12", now=0.1) is True
    assert health.record_error("bad_step", "step 11 < 12", now=0.2) is False
    assert health.record_error("unknown_encoding", "yuv422", now=0.3) is True
    assert health.error_counts == {"bad_step": 2, "unknown_encoding": 1}
    status = health.status(0.35)
    assert status.state is SensorState.STALE, "only malformed messages: nothing valid received yet"
    assert "malformed bad_step (2 so far): step 11 < 12" in status.message
    assert status.values["malformed"] == "3" and status.values["malformed.bad_step"] == "2"

    last = feed(health, 0.4, 0.8, 10.0)
    assert health.status(last + 0.01).state is SensorState.WARN
    assert health.status(last + 0.01).conditions == ("malformed", "malformed")
    last = feed(health, 0.8, 2.0, 10.0)
    assert health.status(last + 0.01).state is SensorState.OK


def test_a_sensor_that_publishes_only_unusable_messages_is_stale_not_dead():
    """A covered depth camera (every image without valid depth) keeps publishing: STALE "unusable", never DEAD,
    and one usable message clears it; when the messages stop too, the sensor is dead as usual."""
    health = SensorHealth(CONFIG, started_at=0.0)
    for i in range(30):  # 3 s at 10 Hz, longer than dead_after_s
        now = 0.1 * i
        health.record_error("no valid depth", "every pixel is 0", now)
        health.record_unusable(now)
    status = health.status(2.95)
    assert status.state is SensorState.STALE and not status.usable and status.conditions[0] == "unusable"
    assert status.message.startswith("unusable: messages arrive, but none usable since start (30 in a row malformed)")
    assert "malformed no valid depth (30 so far)" in status.message

    last = feed(health, 3.0, 3.5, 10.0)
    assert health.status(last + 0.01).state is SensorState.WARN, "usable again; the malformed ones still held"
    for i in range(10):
        health.record_error("no valid depth", "every pixel is 0", last + 0.1 * (i + 1))
        health.record_unusable(last + 0.1 * (i + 1))
    assert health.status(last + 1.05).message.startswith("unusable: messages arrive, but none usable for 1.05 s")
    gap = health.status(last + 1.6)  # a pause in the unusable messages is not death either
    assert gap.state is SensorState.STALE and gap.message.startswith(
        "unusable: the last message came 0.60 s ago, but none usable for 1.60 s"), gap.message
    silent = health.status(last + 1.0 + CONFIG.dead_after_s + 0.1)
    assert silent.state is SensorState.DEAD and silent.message.startswith(
        f"dead: no message for {CONFIG.dead_after_s + 0.1:.2f} s"), "then silent"


def test_unusable_messages_since_start_then_a_pause_is_not_dead():
    """A blocked LiDAR (all-NaN clouds) since start, longer than dead_after_s, that skips 0.6 s: still STALE
    "unusable", not DEAD "never received" (its driver publishes)."""
    health = SensorHealth(CONFIG, started_at=0.0)
    for i in range(70):
        health.record_unusable(0.1 * i)
    status = health.status(6.9 + 0.6)
    assert status.state is SensorState.STALE and status.conditions[0] == "unusable", status.message
    assert status.message.startswith("unusable: the last message came 0.60 s ago, but none usable since start")


def test_monitor_and_exclusions():
    monitor = HealthMonitor({"rgb": CONFIG, "depth": CONFIG, "lidar": HealthConfig(expected_rate_hz=10.0)},
                            started_at=0.0)
    assert monitor.modalities == ("rgb", "depth", "lidar")
    for i in range(10):
        t = 1.0 + i * 0.1
        monitor.record_message("rgb", t, t + 0.01, f"{i}".encode())
        monitor.record_message("depth", t, t + 0.01, b"same")
    statuses = monitor.statuses(1.95)
    assert statuses["rgb"].state is SensorState.OK
    assert statuses["depth"].state is SensorState.STALE and statuses["depth"].conditions[0] == "frozen"
    assert statuses["lidar"].state is SensorState.STALE
    assert excluded_modalities(statuses) == {"depth": "frozen", "lidar": "never_received"}
    assert monitor.record_error("lidar", "truncated", "59 < 60 bytes", now=2.0) is True
    assert monitor["lidar"].error_counts == {"truncated": 1}

    monitor.reset(now=0.0)
    assert monitor["rgb"].messages_received == 0 and monitor["rgb"].started_at == 0.0


def test_config_validation():
    with pytest.raises(ValueError, match="max_age_s <= dead_after_s"):
        HealthConfig(max_age_s=3.0, dead_after_s=1.0)
    with pytest.raises(ValueError, match="expected_rate_hz"):
        HealthConfig(expected_rate_hz=0.0)
    with pytest.raises(ValueError, match="frozen_warn_repeats"):
        HealthConfig(frozen_warn_repeats=5, frozen_stale_repeats=4)


def test_lagging_stamps_are_stale_like_the_synchroniser_sees_them():
    """Messages arrive at rate but their stamps are 0.8 s old: the fusion cannot use them, so not OK."""
    from robustseg_ros.sync import FrameSynchronizer, ModalitySyncConfig

    health = SensorHealth(CONFIG, started_at=0.0)
    sync = FrameSynchronizer(("rgb", "lidar"), {"rgb": ModalitySyncConfig(0.01, 0.5), "lidar": ModalitySyncConfig(1.0, 0.5)},
                             pivot="rgb", timer_period_s=0.1)
    for step in range(10):
        now = 1.0 + step / 10
        health.record_message(now - 0.8, now, f"{step}".encode())
        sync.add("lidar", now - 0.8, step, now)
    status = health.status(1.95)
    assert status.state is SensorState.STALE and status.conditions == ("stale",)
    assert status.message == ("stale: last message 0.85 s old > max age 0.50 s "
                              "(messages still arrive: clock offset or delay)")
    frame = sync.add("rgb", 1.95, "image", 1.95)
    assert frame.entries["lidar"] is None and frame.reasons["lidar"].startswith("stale")

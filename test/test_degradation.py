"""Sensors that keep publishing but lie: quality statistics, their judgement (DEGRADED with hysteresis, own history,
absolute bounds), and what the pipeline reports and fuses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robustseg_core.sensors.quality import camera_quality, depth_quality, event_quality, lidar_quality
from robustseg_ros.degradation import (
    MIN_HISTORY,
    QUALITY_RULES,
    RELAXED_HOLD_FACTOR,
    DegradationConfig,
    DegradationJudge,
    QualityRule,
)

RNG = np.random.default_rng(0)


def textured(height: int = 96, width: int = 128) -> np.ndarray:
    """A mid-grey RGB scene with smooth gradients and a few edges (uint8)."""
    rows, cols = np.mgrid[0:height, 0:width]
    grey = 70 + 0.6 * cols + 40 * ((rows // 24 + cols // 32) % 2)
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


# ------------------------------------------------------------------ quality statistics


def test_camera_statistics_see_exposure_contrast_and_noise():
    scene = textured()
    nominal = camera_quality(scene)
    assert nominal["saturated"] == 0.0 and nominal["black"] == 0.0 and nominal["contrast"] > 0.1
    blinded = camera_quality(np.clip(scene.astype(int) * 3 + 60, 0, 255).astype(np.uint8))
    assert blinded["saturated"] > 0.9
    dark = camera_quality((scene * 0.04).astype(np.uint8))
    assert dark["black"] > 0.9 and dark["contrast"] < nominal["contrast"] / 10
    flat = np.full((96, 128, 3), 128.0)
    noisy = np.clip(flat + RNG.normal(0.0, 10.0, flat.shape), 0, 255).astype(np.uint8)
    luma_sigma = 10.0 * math.sqrt(0.299**2 + 0.587**2 + 0.114**2)  # independent noise per channel
    assert camera_quality(noisy)["noise"] == pytest.approx(luma_sigma, rel=0.2)
    assert camera_quality(noisy)["noise"] > 3 * nominal["noise"]
    assert set(camera_quality(scene[:, :, 0])) == set(nominal), "grey images too"
    with pytest.raises(ValueError, match="uint8"):
        camera_quality(scene.astype(np.float32))


def test_depth_statistics_see_holes_and_noise():
    rows = np.arange(96, dtype=np.float32)[:, None]
    depth = np.repeat(5.0 + rows * 0.1, 128, axis=1).astype(np.float32)
    depth[:20] = 0.0  # sky
    nominal = depth_quality(depth)
    assert nominal["valid"] == pytest.approx(76 / 96, abs=0.02) and nominal["roughness"] < 0.01
    noisy = depth * (1.0 + RNG.normal(0.0, 0.3, depth.shape)).astype(np.float32)
    assert depth_quality(noisy)["roughness"] > 0.5
    holes = np.where(RNG.random(depth.shape) < 0.5, np.nan, depth).astype(np.float32)
    assert depth_quality(holes)["valid"] < nominal["valid"] * 0.6


def ring_scan(range_m: float, points_per_ring: int, elevations_deg: np.ndarray, intensity: float) -> np.ndarray:
    """A spinning LiDAR's scan of a cylinder wall at ``range_m``: float32 [rings x points, 4] in scan order."""
    azimuth = np.linspace(-math.pi, math.pi, points_per_ring, endpoint=False)
    rings = [np.stack((range_m * np.cos(azimuth) * math.cos(el), range_m * np.sin(azimuth) * math.cos(el),
                       np.full_like(azimuth, range_m * math.sin(el)), np.full_like(azimuth, intensity)), axis=1)
             for el in np.radians(elevations_deg)]
    return np.concatenate(rings).astype(np.float32)


def test_lidar_quality_measures_only_returns_of_an_organised_cloud():
    """Organised clouds mark "no return" with NaN or 0, 0, 0: those points are neither counted nor measured."""
    scan = ring_scan(12.0, 1800, np.linspace(-25, 5, 8), 0.3)
    expected = lidar_quality(scan)
    organised = np.repeat(scan, 3, axis=0)
    organised[1::3, :3] = np.nan  # no return as NaN
    organised[2::3] = 0.0  # no return as the origin
    organised[2::3, 3] = 0.5
    measured = lidar_quality(organised)
    assert measured == pytest.approx(expected) and measured["points"] == len(scan)
    assert np.isfinite(measured["range_noise"]) and measured["range_noise"] < 0.01
    inf_only = np.full((5, 3), np.inf, np.float32)
    assert lidar_quality(inf_only) == {"points": 0.0, "coverage": 0.0, "range_noise": 0.0}


def test_lidar_statistics_measure_range_noise_in_scan_order_and_coverage():
    scan = ring_scan(10.0, 2000, np.linspace(-30, 10, 16), 0.5)
    nominal = lidar_quality(scan)
    assert nominal["points"] == len(scan) and nominal["range_noise"] < 0.01 and nominal["coverage"] > 0.2
    jittered = scan.copy()
    direction = jittered[:, :3] / np.linalg.norm(jittered[:, :3], axis=1, keepdims=True)
    jittered[:, :3] += direction * RNG.normal(0.0, 0.2, (len(scan), 1)).astype(np.float32)
    assert lidar_quality(jittered)["range_noise"] == pytest.approx(0.2, rel=0.15)
    front = scan[scan[:, 0] > 0]
    assert lidar_quality(front)["coverage"] == pytest.approx(nominal["coverage"] / 2, rel=0.1)
    assert lidar_quality(np.zeros((0, 4), np.float32)) == {"points": 0.0, "coverage": 0.0, "range_noise": 0.0}
    assert event_quality(500, 0.1) == {"rate": 5000.0}


# ------------------------------------------------------------------ the judgement


def judge_camera(config=None) -> DegradationJudge:
    return DegradationJudge(QUALITY_RULES["camera"], config or DegradationConfig(enter_after=2, clear_s=0.5,
                                                                                 history_s=10.0))


def feed(judge: DegradationJudge, values: dict, start: float, count: int, period: float = 0.1):
    """``count`` messages of ``values`` from ``start``; the judgement after each."""
    return [judge.record(values, start + index * period) for index in range(count)]


DAY = {"saturated": 0.01, "black": 0.01, "contrast": 0.12, "noise": 6.0}
DARK = {"saturated": 0.0, "black": 0.3, "contrast": 0.02, "noise": 3.0}


def test_a_camera_that_goes_dark_in_daylight_is_degraded_then_clears_without_flicker():
    judge = judge_camera()
    assert not any(state.degraded for state in feed(judge, DAY, 0.0, MIN_HISTORY + 5))
    onset = feed(judge, DARK, 1.0, 4)
    assert [state.degraded for state in onset] == [False, True, True, True], "after 2 messages: 0.1 s"
    assert onset[1].since == pytest.approx(1.1) and "contrast 0.02 < " in onset[1].reasons[0]
    assert "washed out or dark" in onset[1].reasons[0] and "(its recent level 0.12)" in onset[1].reasons[0]
    assert onset[1].baseline["contrast"] == pytest.approx(0.12), "the dark messages never enter the baseline"
    # Half-way back: the relaxed test (ratio sqrt(2.5)) still holds it, so the state does not flicker.
    halfway = {**DAY, "contrast": 0.07}
    assert all(state.degraded for state in feed(judge, halfway, 1.4, 2))
    back = feed(judge, DAY, 1.6, 8)
    assert [state.degraded for state in back] == [True] * 4 + [False] * 4, "clear 0.5 s after the last bad one (1.5 s)"


def test_hysteresis_holds_the_fault_not_the_sensor():
    # An event flood that ends while the scene calms down (the rate falls to a third of its 5th percentile:
    # inside the relaxed starved bound, outside the strict one) clears 0.5 s after the flood; a real
    # starvation later is still called at once.
    judge = DegradationJudge(QUALITY_RULES["events"])
    busy = [{"rate": 1e5 * (1.0 + 0.5 * (index % 3))} for index in range(40)]
    assert not any(judge.record(values, 0.1 * index).degraded for index, values in enumerate(busy))
    flood = feed(judge, {"rate": 8e5}, 4.0, 8)
    assert flood[-1].degraded and flood[-1].reasons[0].startswith("flooded")
    calm = feed(judge, {"rate": 3e4}, 4.8, 20)
    assert [state.degraded for state in calm] == [True] * 4 + [False] * 16, "cleared 0.5 s after the last flooded one"
    starved = feed(judge, {"rate": 300.0}, 6.8, 3)
    assert starved[-1].degraded and starved[-1].reasons[0].startswith("starved")
    # A level that stays between the strict and the relaxed bound is held for RELAXED_HOLD_FACTOR x clear_s
    # (0.75 s) after the last strict break (1.3 s here: held through 2.0 s), then it is sound: it is not hovering
    # at the bound.
    camera = judge_camera()
    feed(camera, DAY, 0.0, MIN_HISTORY + 5)
    assert feed(camera, DARK, 1.0, 4)[-1].degraded
    between = feed(camera, {**DAY, "contrast": 0.07}, 1.5, 20)
    assert RELAXED_HOLD_FACTOR * 0.5 == 0.75
    assert [state.degraded for state in between] == [True] * 6 + [False] * 14, "held through 2.0 s"
    assert camera.baseline(3.4)["contrast"] < 0.1, "the new level enters the baseline (median of 0.12s and 0.07s)"


def test_night_from_the_start_is_not_a_fault_but_absolute_bounds_always_hold():
    judge = judge_camera()
    night = {"saturated": 0.0, "black": 0.4, "contrast": 0.03, "noise": 16.0}
    assert not any(state.degraded for state in feed(judge, night, 0.0, 30)), "its own history is dark"
    blinded = feed(judge, {**night, "saturated": 0.8}, 3.0, 2)
    assert blinded[-1].degraded and blinded[-1].reasons[0].startswith("over-exposed: saturated fraction 0.8 > 0.5")


def test_a_lasting_change_becomes_the_new_normal_after_the_history_window():
    judge = judge_camera(DegradationConfig(enter_after=2, clear_s=0.5, history_s=2.0))
    feed(judge, DAY, 0.0, 20)
    tunnel = feed(judge, DARK, 2.0, 40)
    assert tunnel[2].degraded, "a sudden change is a fault"
    assert not tunnel[-1].degraded, "after history_s without a sound message the relative rules fall silent"
    assert tunnel[-1].baseline.get("contrast") == pytest.approx(0.02), "the dark level is the baseline now"


def test_fuse_degraded_names_sensors():
    pytest.importorskip("rclpy")
    from robustseg_ros.params import PerceptionParams

    assert PerceptionParams().fused_degraded == {"lidar"}
    assert PerceptionParams({"health.fuse_degraded": ""}).fused_degraded == frozenset()
    assert PerceptionParams({"health.fuse_degraded": "camera, events"}).fused_degraded == {"rgb", "event"}
    with pytest.raises(ValueError, match="health.fuse_degraded: unknown sensor"):
        PerceptionParams({"health.fuse_degraded": "radar"})


def test_clear_s_zero_means_no_hysteresis_not_no_judgement():
    judge = judge_camera(DegradationConfig(enter_after=1, clear_s=0.0, history_s=10.0))
    feed(judge, DAY, 0.0, MIN_HISTORY + 5)
    assert all(state.degraded for state in feed(judge, DARK, 1.0, 3))
    assert not feed(judge, DAY, 1.3, 1)[0].degraded, "the first sound message ends it"


def test_rules_and_config_are_validated():
    with pytest.raises(ValueError, match="worse"):
        QualityRule("x", "x", "bad", "sideways")
    with pytest.raises(ValueError, match="ratio"):
        QualityRule("x", "x", "bad", "high", ratio=0.5)
    with pytest.raises(ValueError, match="enter_after"):
        DegradationConfig(enter_after=0)
    rule = QualityRule("rate", "rate", "starved", "low", ratio=5.0, quantile=0.05)
    assert rule.baseline_name == "rate_p05" and rule.check(10.0, 100.0, relaxed=False).startswith("starved")
    assert rule.check(30.0, 100.0, relaxed=False) is None and rule.check(30.0, 100.0, relaxed=True) is not None


# ------------------------------------------------------------------ through the pipeline


@pytest.fixture(scope="module")
def pipeline_parts(tmp_path_factory):
    pytest.importorskip("rclpy")
    from test_pipeline import SIZE, drive_parameters, make_tiny_checkpoint

    from robustseg_core.inference import Segmenter
    from robustseg_core.sim.drive import Drive, DriveConfig

    segmenter = Segmenter(make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt"), device="cpu")
    drive = Drive(11, DriveConfig(width=SIZE[0], height=SIZE[1]))
    return segmenter, drive, drive_parameters(drive), [drive.frame(index) for index in range(1, 19)]


def darkened(messages: dict) -> dict:
    """The camera image under the under-exposure fault of ``record_synthetic``."""
    from robustseg_ros.bagtools.faults import sensor_fault
    from robustseg_ros.bagtools.record_synthetic import FaultInjector
    from robustseg_ros.conversions import image_to_numpy, numpy_to_image

    fault = sensor_fault("underexposure", "camera", 0.0, 1e9)
    injector = FaultInjector([fault], seed=0)
    rgb = injector.camera(image_to_numpy(messages["camera"]), [fault], injector.rng("camera", 0))
    return {**messages, "camera": numpy_to_image(rgb, "rgb8", messages["camera"].header)}


@pytest.mark.parametrize("fuse_degraded", ["lidar", "camera, lidar"])
def test_an_under_exposed_camera_is_degraded_reported_and_left_out_or_fused(pipeline_parts, fuse_degraded):
    from test_pipeline import LATENCY_S, drive_messages, feed

    from robustseg_ros.params import PerceptionParams
    from robustseg_ros.pipeline import PerceptionPipeline

    segmenter, drive, rig, frames = pipeline_parts
    pipeline = PerceptionPipeline(PerceptionParams({**rig, "health.fuse_degraded": fuse_degraded}), segmenter)
    outputs, states = [], []
    for index, frame in enumerate(frames):
        stamp = 20.0 + index * 0.1
        messages = drive_messages(frame, stamp)
        if 8 <= index < 11:  # 0.3 s under-exposed, after 0.8 s of nominal frames (the baseline)
            messages = darkened(messages)
        job = feed(pipeline, messages, stamp + LATENCY_S)
        outputs.append(pipeline.process(job))
        states.append(pipeline.health["rgb"].status(stamp + LATENCY_S).state.value)
        if index == 9:
            diagnostics = pipeline.diagnostics(stamp + LATENCY_S)
    assert states[:9] == ["OK"] * 9 and states[9:11] == ["DEGRADED"] * 2, "DEGRADED at the second dark image"
    assert states[11:15] == ["DEGRADED"] * 4 and states[15:] == ["OK"] * 3, "cleared 0.5 s after the last dark one"

    camera = {item.name: item for item in diagnostics.status}["robustseg: camera"]
    values = {item.key: item.value for item in camera.values}
    assert camera.level == bytes([1]) and camera.message.startswith("degraded: under-exposed: black fraction ")
    assert "; washed out or dark: contrast 0.0" in camera.message
    assert values["state"] == "DEGRADED" and float(values["quality.contrast"]) < 0.05
    assert float(values["quality_baseline.contrast"]) > 0.05 and values["degraded_since_s"] == f"{20.9 + LATENCY_S:.3f}"

    during = outputs[9]
    status = {item.name: item for item in pipeline.sensor_status(during).status}["robustseg: camera"]
    status_values = {item.key: item.value for item in status.values}
    assert status.level == bytes([1]) and status_values["health"] == "DEGRADED"
    if "camera" in fuse_degraded:
        assert "rgb" in during.fed and status.message.startswith("fed; degraded: under-exposed")
        assert status.message.endswith("(fused: in health.fuse_degraded)")
        assert status_values["fed"] == "true"
    else:
        assert "rgb" not in during.fed and during.fed == ("depth", "event", "lidar")
        assert status.message.endswith("(not fused: not in health.fuse_degraded)")
        assert status_values["fed"] == "false"
    assert outputs[-1].fed == ("rgb", "depth", "event", "lidar")


def test_a_degraded_sensor_is_fused_when_nothing_else_is_left(pipeline_parts):
    from test_pipeline import LATENCY_S, drive_messages, feed

    from robustseg_ros.params import PerceptionParams
    from robustseg_ros.pipeline import PerceptionPipeline

    segmenter, drive, rig, frames = pipeline_parts
    only_camera = {**rig, "depth.enabled": False, "lidar.enabled": False, "events.enabled": False}
    pipeline = PerceptionPipeline(PerceptionParams(only_camera), segmenter)
    for index, frame in enumerate(frames[:10]):
        stamp = 30.0 + index * 0.1
        messages = drive_messages(frame, stamp)
        output = pipeline.process(feed(pipeline, darkened(messages) if index >= 7 else messages, stamp + LATENCY_S,
                                       sensors=("camera",)))
    assert output.fed == ("rgb",) and output.notes["rgb"].endswith("(fused: no other input left)")


def test_quality_settings_change_while_the_node_runs(pipeline_parts):
    from test_pipeline import LATENCY_S, drive_messages, feed

    from robustseg_ros.params import PerceptionParams
    from robustseg_ros.pipeline import PerceptionPipeline

    segmenter, drive, rig, frames = pipeline_parts
    pipeline = PerceptionPipeline(PerceptionParams(rig), segmenter)
    camera = pipeline.health.sensors["rgb"]

    def step(index: int, dark: bool):
        stamp = 40.0 + index * 0.1
        messages = drive_messages(frames[index % len(frames)], stamp)
        output = pipeline.process(feed(pipeline, darkened(messages) if dark else messages, stamp + LATENCY_S))
        return output, pipeline.health["rgb"].status(stamp + LATENCY_S).state.value

    def change(now: float, **values):
        pipeline.apply_live_params(pipeline.params.with_changes(
            {f"health.{name}": value for name, value in values.items()}), now)

    for index in range(9):
        step(index, dark=False)
    step(9, dark=True)
    output, state = step(10, dark=True)
    assert state == "DEGRADED" and "rgb" not in output.fed

    judge = camera.judge
    change(41.05, fuse_degraded="camera, lidar", degraded_clear_s=2.0)
    output, state = step(11, dark=True)
    assert state == "DEGRADED" and "rgb" in output.fed, "fused at once once health.fuse_degraded names it"
    assert camera.judge is judge, "the same judge: its history is kept"
    states = [step(index, dark=False)[1] for index in range(12, 20)]
    assert states == ["DEGRADED"] * 8, "0.8 s after the last dark image: cleared under 0.5 s, not under 2.0 s"

    change(41.95, quality_checks=False)
    output, state = step(20, dark=True)
    assert state == "OK" and camera.judge is None and "rgb" in output.fed

    change(42.05, quality_checks=True)
    assert camera.judge is not None and not camera.judge.degraded, "a fresh judge: no history, no verdict yet"
    pipeline.apply_live_params(pipeline.params.with_changes({"camera.enabled": False}), 42.06)
    pipeline.apply_live_params(pipeline.params.with_changes({"camera.enabled": True}), 42.07)
    assert pipeline.health.sensors["rgb"].judge is not None, "a sensor switched back on is judged again"

    with pytest.raises(ValueError, match="health.degraded_after_messages"):
        change(42.1, degraded_after_messages=0)

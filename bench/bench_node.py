"""perception_node end to end against the bare model forward at 640x480, and the delay to STALE.

One run, real rclpy + DDS (localhost, a domain of its own), a generated Drive scene:

1. Latency. A node with relaxed sensor ages (so every frame fuses all four sensors) receives one frame
   set at a time (depth, LiDAR, events, CameraInfo, camera, stamped with the node clock); the next set
   goes out after the previous frame's ~/latency_ms arrives, so nothing queues. End to end = newest
   input stamp -> outputs published (the node's ~/latency_ms), broken down into convert, quality
   (measuring and judging each message's content), encode, preprocess, infer, postprocess, publish.
   Only ~/latency_ms and /diagnostics have subscribers, so the node computes no colour mask, overlay
   or confidence map. The bare model forward is the backend's forward
   (``segmenter.backend.run(images, present)``) on the same frame's network input, timed alone after the
   node is idle.
2. STALE delay. A node with the default health settings receives all sensors at 10 Hz; the LiDAR
   stops; the delay is from its last message to the /diagnostics array that shows it STALE.

    .venv/bin/python bench/bench_node.py                                   # mit_b0, embed 256, CPU
    .venv/bin/python bench/bench_node.py --preset mit_cpu --embed-dim 256 --width 256 --height 256
                                                                           # the shipped student's size
    .venv/bin/python bench/bench_node.py --preset mit_cpu --embed-dim 32   # the tiny test model
    .venv/bin/python bench/bench_node.py --backend onnxruntime              # another inference backend

``bench/bench_backends.py`` runs the latency part for each installed backend side by side.

Targets: end to end <= 1.15 x the forward inside the node at 256 x 256 and <= 1.05 x at 640 x 480
(``--target`` overrides); STALE within lidar.max_age_s + health.check_period_s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Float32, Header

from robustseg_core.models import build_segmentor
from robustseg_core.models.checkpoint import checkpoint_meta, save_checkpoint
from robustseg_core.sim.drive import Drive, DriveConfig, encode_frame
from robustseg_ros.conversions import (
    intrinsics_to_camera_info,
    numpy_to_image,
    numpy_to_pointcloud2,
    seconds_to_stamp,
)
from robustseg_ros.node import PerceptionNode
from robustseg_ros.params import PARAMETER_DEFAULTS

RELATIVE_EVENT_DTYPE = np.dtype([("x", np.uint16), ("y", np.uint16), ("t", np.int32), ("polarity", np.int8)])
TOPICS = {"depth": ("depth/image", Image), "lidar": ("lidar/points", PointCloud2),
          "events": ("events/packets", PointCloud2), "camera_info": ("camera/camera_info", CameraInfo),
          "camera": ("camera/image", Image)}
STAGES = ("convert", "quality", "encode", "preprocess", "infer", "postprocess", "publish")
#: Tries per frame set, and how long (s) each waits for the frame's ~/latency_ms.
FRAME_ATTEMPTS, FRAME_WAIT_S = 3, 40.0
#: End to end / forward inside the node, by camera pixel count (the issue's targets).
TARGETS = {256 * 256: 1.15, 640 * 480: 1.05}
RELAXED_HEALTH = {f"{sensor}.{name}": value for sensor in ("camera", "depth", "events", "lidar")
                  for name, value in (("max_age_s", 5.0), ("dead_after_s", 10.0), ("expected_rate_hz", 1.0))}


def frame_messages(frame) -> dict:
    """One Drive frame as the node's input messages, built once and restamped at each publish: event times
    are integer nanoseconds after ``header.stamp``, so they move with it."""
    events = np.empty(len(frame.events), dtype=RELATIVE_EVENT_DTYPE)
    for name in ("x", "y", "polarity"):
        events[name] = frame.events[name]
    events["t"] = np.rint((frame.events["t"] - frame.stamp) * 1e9)
    return {
        "depth": numpy_to_image(frame.depth.astype(np.float32), "32FC1", Header(frame_id="camera_optical")),
        "lidar": numpy_to_pointcloud2(frame.lidar_points, Header(frame_id="lidar")),
        "events": numpy_to_pointcloud2(events, Header(frame_id="camera_optical")),
        "camera_info": intrinsics_to_camera_info(frame.intrinsics, Header(frame_id="camera_optical")),
        "camera": numpy_to_image(frame.rgb, "rgb8", Header(frame_id="camera_optical")),
    }


class Rig:
    """A perception node plus a sensor publisher and output recorders on one executor thread."""

    def __init__(self, context, parameters: dict) -> None:
        self.node = PerceptionNode(context=context, parameter_overrides=[Parameter(name, value=value)
                                                                         for name, value in parameters.items()])
        self.io = Node("bench_io", context=context)
        self.publishers = {name: self.io.create_publisher(kind, topic, qos_profile_sensor_data)
                           for name, (topic, kind) in TOPICS.items()}
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.latencies: list[float] = []
        self.diagnostics: list[tuple[float, DiagnosticArray]] = []
        self.io.create_subscription(Float32, "/perception_node/latency_ms", lambda m: self.latencies.append(m.data),
                                    reliable)
        self.io.create_subscription(DiagnosticArray, "/diagnostics",
                                    lambda m: self.diagnostics.append((time.time(), m)), reliable)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.io)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()
        self.last_published: dict[str, float] = {}

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def publish(self, messages: dict, sensors=tuple(TOPICS)) -> None:
        """Stamp ``messages`` with the node clock now and publish those of ``sensors``, the camera last."""
        stamp = seconds_to_stamp(self.now())
        for name in TOPICS:
            if name in sensors:
                messages[name].header.stamp = stamp
                self.publishers[name].publish(messages[name])
                self.last_published[name] = time.time()

    def close(self) -> None:
        self.executor.shutdown()
        self.spinner.join(5.0)
        self.node.destroy_node()
        self.io.destroy_node()


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s} s")
        time.sleep(0.002)


def measure_latency(context, base: dict, message_sets: list[dict], frames,
                    count: int) -> tuple[list[dict], list[float], dict]:
    """Per-frame stage times and latency (ms), the bare forward (ms) timed right after each frame while the node
    is idle (this machine's speed drifts, so the two are measured side by side), and the model's /diagnostics."""
    rig = Rig(context, {**base, **RELAXED_HEALTH})
    try:
        wait_until(lambda: all(publisher.get_subscription_count() for publisher in rig.publishers.values()), 60.0,
                   "node subscribed to every input")
        time.sleep(0.5)  # the subscriptions' side of discovery
        forward = []
        for index in range(count):
            received = len(rig.latencies)
            for attempt in range(FRAME_ATTEMPTS):  # a best-effort message can be lost on a loaded machine
                rig.publish(message_sets[index % len(message_sets)])
                try:
                    wait_until(lambda: len(rig.latencies) > received, FRAME_WAIT_S, "frame")
                    break
                except TimeoutError:
                    if attempt == FRAME_ATTEMPTS - 1:
                        raise
            time.sleep(0.05)
            forward.append(bare_forward_ms(rig.node.segmenter, frames[index % len(frames)]))

        def model_values() -> dict:
            last = rig.diagnostics[-1][1] if rig.diagnostics else DiagnosticArray()
            return {value.key: value.value for status in last.status if status.name == "robustseg: model"
                    for value in status.values}

        wait_until(lambda: int(model_values().get("frames_processed", 0)) >= count, 5.0, "/diagnostics of all frames")
        return rig.node.pipeline.statistics.recent_frames(), forward, model_values()
    finally:
        rig.close()


def bare_forward_ms(segmenter, frame) -> float:
    """One ``segmenter.backend.run(images, present)`` call (ms) on the frame's network input, nothing else."""
    encoded = encode_frame(frame)
    images = {"rgb": encoded["rgb"], "depth": encoded["hha"], "event": encoded["event"], "lidar": encoded["lidar"]}
    tensor, present = segmenter.prepare(images, *frame.rgb.shape[:2])
    start = time.perf_counter()
    segmenter.backend.run(tensor, present)
    return (time.perf_counter() - start) * 1e3


def drive_rig(width: int, height: int) -> tuple[list, list[dict], dict]:
    """Three generated drive frames at ``width`` x ``height``, their messages, and the node parameters of the
    drive's rig (camera size, pose, LiDAR extrinsic)."""
    drive = Drive(3, DriveConfig(width=width, height=height))
    frames = [drive.frame(index) for index in range(1, 4)]
    style = drive.scene.style
    rig = {"warmup_width": width, "warmup_height": height, "camera.height_m": float(drive.camera_height_m),
           "camera.roll_deg": float(style.camera_roll_deg), "camera.pitch_deg": float(style.camera_pitch_deg),
           "lidar.transform": [float(value) for value in drive.T_cam_lidar.reshape(-1)]}
    return frames, [frame_messages(frame) for frame in frames], rig


def ros_context() -> rclpy.Context:
    """A context on a domain of this process's own, discovery limited to this machine."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    context = rclpy.Context()
    context.init(domain_id=1 + (os.getpid() * 7) % 100)
    return context


def measure_stale_delay(context, base: dict, message_sets: list[dict], stream_s: float) -> tuple[float, float]:
    """Seconds from the LiDAR's last message to LiDAR STALE on /diagnostics, and the bound it must meet."""
    rig = Rig(context, base)
    stop = threading.Event()
    sensors = set(TOPICS)

    def stream() -> None:
        index = 0
        while not stop.wait(0.1):
            rig.publish(message_sets[index % len(message_sets)], tuple(sensors))
            index += 1

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        time.sleep(stream_s)
        sensors.discard("lidar")
        time.sleep(0.15)
        stopped_at = rig.last_published["lidar"]

        def lidar_stale() -> list:
            return [at for at, array in list(rig.diagnostics) if at > stopped_at and any(
                status.name == "robustseg: lidar" and status.level == bytes([3]) for status in array.status)]

        wait_until(lidar_stale, 10.0, "LiDAR STALE on /diagnostics")
        delay = lidar_stale()[0] - stopped_at
    finally:
        stop.set()
        streamer.join()
        rig.close()
    return delay, PARAMETER_DEFAULTS["lidar.max_age_s"] + PARAMETER_DEFAULTS["health.check_period_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mit_b0")
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--short-side", type=int, default=0, help="network short side; 0: the image's (native)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="torch", help="torch, onnxruntime, openvino or tensorrt")
    parser.add_argument("--stream-s", type=float, default=3.0, help="10 Hz streaming before the LiDAR stops")
    parser.add_argument("--target", type=float, default=0.0,
                        help="end to end / in-node forward target; 0: 1.15 at 256x256, 1.05 at 640x480 (or larger)")
    args = parser.parse_args()
    target = args.target or (TARGETS[256 * 256] if args.width * args.height <= 256 * 256 else TARGETS[640 * 480])

    short_side = args.short_side or min(args.width, args.height)
    work = Path(tempfile.mkdtemp(prefix="bench_node_"))
    torch.manual_seed(0)
    model = build_segmentor(args.preset, embed_dim=args.embed_dim)
    checkpoint = work / "model.pt"
    save_checkpoint(checkpoint, {"model": model.state_dict(), "architecture": model.architecture,
                                 "meta": checkpoint_meta({"data": {"eval_size": short_side}})})
    os.environ["ROBUSTSEG_CACHE_DIR"] = str(work)  # an ONNX backend's export of the random model
    frames, messages, rig = drive_rig(args.width, args.height)
    base = {**rig, "checkpoint": str(checkpoint), "device": args.device, "backend": args.backend}
    context = ros_context()
    try:
        records, forward, model_values = measure_latency(context, base, messages, frames, args.frames)
        stale_delay, stale_bound = measure_stale_delay(context, base, messages, args.stream_s)
    finally:
        context.try_shutdown()

    measured, forward = (records[1:], forward[1:]) if len(records) > 2 else (records, forward)
    print(f"model: {args.preset} embed_dim {args.embed_dim} (random weights), {args.width}x{args.height} camera, "
          f"network input short side {short_side} px, backend {model_values.get('backend')} "
          f"({model_values.get('precision')}), device {model_values.get('device')}, fp16 "
          f"{model_values.get('fp16')}, torch threads {torch.get_num_threads()}, {len(measured)} frames "
          "(first dropped)")
    print(f"frames processed {model_values.get('frames_processed')}, dropped {model_values.get('frames_dropped')}")
    print(f"{'stage':<14}{'median ms':>10}{'mean ms':>10}")
    for stage in STAGES:
        values = [record[stage] for record in measured]
        print(f"{stage:<14}{statistics.median(values):>10.1f}{statistics.mean(values):>10.1f}")
    end_to_end = [record["latency"] for record in measured]
    print(f"{'end to end':<14}{statistics.median(end_to_end):>10.1f}{statistics.mean(end_to_end):>10.1f}")
    print(f"{'bare forward':<14}{statistics.median(forward):>10.1f}{statistics.mean(forward):>10.1f}")
    ratio = statistics.median(end_to_end) / statistics.median(forward)
    pairs = statistics.median(latency / bare for latency, bare in zip(end_to_end, forward))
    in_node = statistics.median(record["latency"] / record["infer"] for record in measured)
    overhead = statistics.median(record["latency"] - record["infer"] for record in measured)
    print(f"end to end / bare forward: {ratio:.3f} (ratio of medians), {pairs:.3f} (median of per-frame ratios)")
    print(f"end to end / the same frame's forward inside the node (median): {in_node:.3f}  (target <= {target:.2f}: "
          f"{'met' if in_node <= target else 'MISSED'}); everything but the forward: {overhead:.1f} ms")
    print(f"LiDAR last message -> STALE on /diagnostics: {stale_delay:.3f} s  (bound max_age + check period = "
          f"{stale_bound:.3f} s: {'met' if stale_delay <= stale_bound else 'MISSED'})")


if __name__ == "__main__":
    main()

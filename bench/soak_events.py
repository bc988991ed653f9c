"""perception_node's memory over a long run with hostile event packets mixed into a normal sensor stream.

One process, real rclpy + DDS (localhost, a domain of its own): a perception node (the tiny test model
unless ``--checkpoint``) and a publisher streaming a generated drive at 10 Hz: camera, CameraInfo,
depth, LiDAR and event packets. Every ``--hostile-every``-th frame set also carries, on the event topic,
one of: a packet with ``t`` an hour ahead, one with nanoseconds stored as FLOAT64 seconds, one whose
events lie outside the sensor, and a flood packet of ``--flood-events`` events. Before the fixes of
issue 11 the first kind alone stopped the event buffer from pruning.

The process's resident memory (VmRSS) is sampled every ``--sample-s`` seconds for ``--duration-s`` after
``--warmup-s``;
the run passes when every sample is within +-5 % of the first. The node's own counters (malformed
events, buffered events) come from its last /diagnostics.

    .venv/bin/python bench/soak_events.py --duration-s 600        # the 10-minute run of docs/results.md
"""

from __future__ import annotations

import argparse
import os
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
from std_msgs.msg import Header

from bench_node import TOPICS, frame_messages  # the sensor messages of a drive frame, restamped at each publish

from robustseg_core.models import build_segmentor
from robustseg_core.models.checkpoint import checkpoint_meta, save_checkpoint
from robustseg_core.sensors import EVENT_DTYPE
from robustseg_core.sim.drive import Drive, DriveConfig
from robustseg_ros.bagtools.record_synthetic import rig_parameters
from robustseg_ros.conversions import events_to_pointcloud2, seconds_to_stamp
from robustseg_ros.node import PerceptionNode

HOSTILE_KINDS = ("hour ahead", "nanoseconds as seconds", "outside the sensor", "flood")
TOLERANCE = 0.05


def resident_mib() -> float:
    """This process's resident set size (MiB), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def hostile_events(kind: str, stamp: float, size: tuple[int, int], flood_events: int,
                   rng: np.random.Generator) -> np.ndarray:
    """One hostile packet's events (``EVENT_DTYPE``) stamped at ``stamp`` s for a ``size`` (width, height) sensor."""
    count = flood_events if kind == "flood" else 20_000
    events = np.zeros(count, dtype=EVENT_DTYPE)
    events["x"] = rng.integers(0, size[0], count)
    events["y"] = rng.integers(0, size[1], count)
    events["polarity"] = rng.choice(np.array([-1, 1], dtype=np.int8), count)
    events["t"] = np.sort(rng.uniform(stamp - 0.1, stamp, count))
    if kind == "hour ahead":
        events["t"] += 3600.0
    elif kind == "nanoseconds as seconds":
        events["t"] *= 1e9
    elif kind == "outside the sensor":
        events["x"] += size[0]
    return events


class Soak:
    """The node, a 10 Hz sensor stream with hostile packets, and a /diagnostics recorder on one executor thread."""

    def __init__(self, context, parameters: dict, frames: list, size: tuple[int, int], hostile_every: int,
                 flood_events: int) -> None:
        self.node = PerceptionNode(context=context, parameter_overrides=[Parameter(name, value=value)
                                                                         for name, value in parameters.items()])
        self.io = Node("soak_io", context=context)
        self.publishers = {name: self.io.create_publisher(kind, topic, qos_profile_sensor_data)
                           for name, (topic, kind) in TOPICS.items()}
        self.last_diagnostics: DiagnosticArray | None = None
        self.io.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics,
                                    QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.messages = [frame_messages(frame) for frame in frames]
        self.size, self.hostile_every, self.flood_events = size, hostile_every, flood_events
        self.sent = {kind: 0 for kind in HOSTILE_KINDS}
        self.rng = np.random.default_rng(0)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.io)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self.executor.spin, daemon=True),
                         threading.Thread(target=self._stream, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        self.last_diagnostics = message

    def _stream(self) -> None:
        index = 0
        while not self._stop.wait(0.1):
            stamp_s = self.node.get_clock().now().nanoseconds * 1e-9
            messages = self.messages[index % len(self.messages)]
            for name in TOPICS:
                messages[name].header.stamp = seconds_to_stamp(stamp_s)
                self.publishers[name].publish(messages[name])
            if index % self.hostile_every == self.hostile_every - 1:
                kind = HOSTILE_KINDS[(index // self.hostile_every) % len(HOSTILE_KINDS)]
                events = hostile_events(kind, stamp_s, self.size, self.flood_events, self.rng)
                header = Header(stamp=seconds_to_stamp(stamp_s), frame_id="event_camera")
                self.publishers["events"].publish(events_to_pointcloud2(events, header))
                self.sent[kind] += 1
            index += 1

    def event_values(self) -> dict[str, str]:
        """The key/values of the events status of the last /diagnostics."""
        if self.last_diagnostics is None:
            return {}
        status = next((item for item in self.last_diagnostics.status if item.name == "robustseg: events"), None)
        return {} if status is None else {value.key: value.value for value in status.values}

    def close(self) -> None:
        self._stop.set()
        self._threads[1].join()
        self.executor.shutdown()
        self._threads[0].join(5.0)
        self.node.destroy_node()
        self.io.destroy_node()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=600.0, help="seconds of memory samples after the warm-up")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="seconds before the first memory sample")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=128, help="camera width and height (px)")
    parser.add_argument("--hostile-every", type=int, default=5, help="a hostile packet every this many frame sets")
    parser.add_argument("--flood-events", type=int, default=500_000, help="events in a flood packet")
    parser.add_argument("--checkpoint", default="", help="default: a random tiny model (mit_cpu, embed 32)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    checkpoint = args.checkpoint
    if not checkpoint:
        torch.manual_seed(0)
        model = build_segmentor("mit_cpu", embed_dim=32)
        checkpoint = str(Path(tempfile.mkdtemp(prefix="soak_")) / "tiny.pt")
        save_checkpoint(checkpoint, {"model": model.state_dict(), "architecture": model.architecture,
                                     "meta": checkpoint_meta({"data": {"eval_size": args.size}})})
    drive = Drive(3, DriveConfig(width=args.size, height=args.size))
    frames = [drive.frame(index) for index in range(1, 6)]
    parameters = {**rig_parameters(drive), "checkpoint": checkpoint, "device": "cpu",
                  "warmup_width": args.size, "warmup_height": args.size}
    parameters["lidar.transform"] = list(parameters["lidar.transform"])

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    context = rclpy.Context()
    context.init(domain_id=1 + (os.getpid() * 11) % 100)
    samples: list[tuple[float, float]] = []
    try:
        soak = Soak(context, parameters, frames, (args.size, args.size), args.hostile_every, args.flood_events)
        try:
            start = time.monotonic()
            time.sleep(args.warmup_s)
            while time.monotonic() - start < args.warmup_s + args.duration_s:
                samples.append((time.monotonic() - start, resident_mib()))
                print(f"{samples[-1][0]:7.1f} s  RSS {samples[-1][1]:8.1f} MiB  buffered events "
                      f"{soak.event_values().get('buffered_events', '?')}", flush=True)
                time.sleep(args.sample_s)
            values = soak.event_values()
            frames_processed = soak.node.pipeline.statistics.frames_processed
            sent = dict(soak.sent)
        finally:
            soak.close()
    finally:
        context.try_shutdown()

    reference = samples[0][1]
    deviation = max(abs(rss - reference) / reference for _, rss in samples)
    print(f"hostile packets sent: {sent}; frames processed: {frames_processed}")
    print("events status: " + ", ".join(f"{key} {value}" for key, value in sorted(values.items())
                                        if key.startswith(("malformed", "limited", "buffered"))))
    print(f"RSS over {samples[-1][0] - samples[0][0]:.0f} s: first {reference:.1f} MiB, min "
          f"{min(rss for _, rss in samples):.1f}, max {max(rss for _, rss in samples):.1f}, largest deviation "
          f"{deviation:.1%} (target +-{TOLERANCE:.0%}: {'met' if deviation <= TOLERANCE else 'MISSED'})")


if __name__ == "__main__":
    main()

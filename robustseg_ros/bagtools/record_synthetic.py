"""``record_synthetic``: a generated drive with a scripted fault timeline, written as a rosbag2 bag.

One temporally coherent ``robustseg_core.sim.drive.Drive`` is rendered for ``--duration`` seconds at
its frame rate and written with the topics ``perception_node`` subscribes to by default:

* camera ``sensor_msgs/Image`` (rgb8) and ``CameraInfo``; depth ``Image`` (32FC1, metres);
* LiDAR ``PointCloud2`` (x, y, z, intensity; LiDAR frame); events ``PointCloud2`` (x, y, t, polarity);
* ground truth ``Image`` (mono8 class ids, 255 ignore) on ``/ground_truth/labels``;
* ``/tf_static`` (``tf2_msgs/TFMessage``, camera optical frame -> LiDAR frame), serialized with the
  rosbags type store because ``tf2_msgs`` is not among the rclpy wheels; the same extrinsic is in
  the fault timeline record (``rig_parameters["lidar.transform"]``);
* ``/robustseg/fault_timeline`` (``std_msgs/String``, JSON) once at the start, also written as
  ``fault_timeline.json`` inside the bag folder;
* ``perception_params.yaml`` inside the bag folder: a complete perception_node parameter file for the
  recorded rig.

Faults (``robustseg_ros.bagtools.faults``): ``drop`` (no messages), ``freeze`` (the first payload of the
window repeated with advancing stamps), ``noise`` (heavy noise), ``night``, ``overexposure`` and
``underexposure`` (camera), ``jitter`` (LiDAR pose error and point noise), ``flood`` (flicker: every
event pixel fires) and ``starvation`` (2 % of the events left). The bag is deterministic per seed: same arguments, same messages. Header stamps are
``--start-time`` plus the drive time; bag timestamps add a small per-sensor transport delay
(``RECEIVE_DELAY_S``).

Run: ``record_synthetic /tmp/drive_bag --duration 10 --width 128 --height 128 [--storage sqlite3]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header, String

from robustseg_core.atomic import write_text_atomic
from robustseg_core.classes import CLASS_NAMES, CONDITIONS
from robustseg_core.cli import console_script, non_negative_int, positive_float
from robustseg_core.errors import UsageError
from robustseg_core.output_folder import LOCK_NAME, FolderLock
from robustseg_core.sensors import rotation_to_quaternion
from robustseg_core.sim.drive import Drive, DriveConfig
from robustseg_core.sim.sensors_sim import jitter_points
from robustseg_ros.bagtools.bag_io import (
    FAULT_TIMELINE_TOPIC,
    GROUND_TRUTH_TOPIC,
    TF_STATIC_TOPIC,
    TYPESTORE,
    BagError,
    BagWriter,
)
from robustseg_ros.bagtools.faults import (
    FAULT_KINDS,
    FAULT_SENSORS,
    TIMELINE_FILE,
    TIMELINE_FORMAT,
    Fault,
    MessageFaults,
    load_faults,
    parse_sensor_fault,
    timeline_entries,
)
from robustseg_ros.conversions import (
    events_to_pointcloud2,
    intrinsics_to_camera_info,
    numpy_to_image,
    numpy_to_pointcloud2,
    seconds_to_nanoseconds,
    seconds_to_stamp,
)
from robustseg_ros.params import PerceptionParams, absolute_topic, params_file_text, topic_name_problem

#: A complete perception_node parameter file for the recorded rig, written next to the bag's data.
PARAMS_FILE = "perception_params.yaml"
CAMERA_FRAME, LIDAR_FRAME, EVENT_FRAME = "camera_optical", "lidar", "event_camera"
#: Bag timestamp minus header stamp (s) per topic: the order in which one instant's messages arrive.
RECEIVE_DELAY_S = {"camera_info": 0.001, "depth": 0.002, "lidar": 0.003, "events": 0.004, "camera": 0.005,
                   "labels": 0.006}
#: What is written on which topic by default: the node's default inputs, ground truth, timeline, tf.
DEFAULT_TOPICS = {
    **PerceptionParams().topics(absolute_topic),
    "labels": GROUND_TRUTH_TOPIC,
    "fault_timeline": FAULT_TIMELINE_TOPIC,
    "tf_static": TF_STATIC_TOPIC,
}


def rig_parameters(drive: Drive) -> dict:
    """perception_node parameters describing the drive's rig (HHA camera pose, T_cam_lidar and the LiDAR frame
    it maps, event sensor size)."""
    style = drive.scene.style
    values = {
        "camera.height_m": float(drive.camera_height_m),
        "camera.roll_deg": float(style.camera_roll_deg),
        "camera.pitch_deg": float(style.camera_pitch_deg),
        "lidar.transform": [float(value) for value in drive.T_cam_lidar.reshape(-1)],
        "lidar.frame_id": LIDAR_FRAME,
    }
    if drive.event_size != (drive.config.width, drive.config.height):
        values["events.sensor_width"], values["events.sensor_height"] = (int(size) for size in drive.event_size)
    return values


def tf_static_cdr(T_cam_lidar: np.ndarray, stamp_s: float) -> bytes:
    """``tf2_msgs/TFMessage`` CDR bytes with one transform camera optical frame -> LiDAR frame."""
    types = TYPESTORE.types
    stamp = seconds_to_stamp(stamp_s)
    qx, qy, qz, qw = rotation_to_quaternion(T_cam_lidar[:3, :3])
    tx, ty, tz = (float(value) for value in T_cam_lidar[:3, 3])
    transform = types["geometry_msgs/msg/TransformStamped"](
        header=types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=stamp.sec,
                                                                                      nanosec=stamp.nanosec),
                                            frame_id=CAMERA_FRAME),
        child_frame_id=LIDAR_FRAME,
        transform=types["geometry_msgs/msg/Transform"](
            translation=types["geometry_msgs/msg/Vector3"](x=tx, y=ty, z=tz),
            rotation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw)))
    message = types["tf2_msgs/msg/TFMessage"](transforms=[transform])
    return bytes(TYPESTORE.serialize_cdr(message, "tf2_msgs/msg/TFMessage"))


#: Under-exposure: linear light scaled by this (-5 EV), then read noise of this sigma (linear, 0..1).
UNDEREXPOSURE_GAIN, UNDEREXPOSURE_READ_NOISE = 0.03, 0.002
#: Flood: events per sensor pixel per frame, alternating polarity (a flickering light over the whole view).
FLOOD_EVENTS_PER_PIXEL = 4
#: Starvation: the fraction of events left (a bias set too high, a covered lens).
STARVATION_KEPT = 0.02
SRGB_GAMMA = 2.2


class FaultInjector:
    """Renders the timeline's data faults (noise, night, over- and under-exposure, jitter, flood, starvation) into
    one sensor's data per frame; ``messages`` applies its drop and freeze faults to the finished messages."""

    def __init__(self, faults: list[Fault], seed: int) -> None:
        self.faults = faults
        self.seed = seed
        self.messages = MessageFaults(faults)

    def active(self, sensor: str, stamp_s: float) -> list[Fault]:
        """The faults on ``sensor`` whose window covers the header stamp ``stamp_s`` (s)."""
        return [fault for fault in self.faults if fault.target == sensor and fault.covers(stamp_s)]

    def rng(self, sensor: str, index: int) -> np.random.Generator:
        """The noise source of ``sensor`` at frame ``index`` (deterministic per seed)."""
        return np.random.default_rng([self.seed, FAULT_SENSORS.index(sensor), index])

    def camera(self, rgb: np.ndarray, faults: list[Fault], rng: np.random.Generator) -> np.ndarray:
        """The camera image under its night, over-exposure and noise faults."""
        image = rgb.astype(np.float32)
        for fault in faults:
            if fault.kind == "night":
                image = image * 0.12 + rng.normal(0.0, 4.0, image.shape)
            elif fault.kind == "overexposure":
                image = image * 3.0 + 60.0
            elif fault.kind == "underexposure":
                linear = np.clip(image / 255.0, 0.0, 1.0) ** SRGB_GAMMA * UNDEREXPOSURE_GAIN
                linear = linear + rng.normal(0.0, UNDEREXPOSURE_READ_NOISE, image.shape)
                image = np.clip(linear, 0.0, 1.0) ** (1.0 / SRGB_GAMMA) * 255.0
            elif fault.kind == "noise":
                image = image + rng.normal(0.0, 60.0, image.shape)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _noisy_depth(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = depth * (1.0 + rng.normal(0.0, 0.3, depth.shape)) + rng.normal(0.0, 2.0, depth.shape)
    return np.where(rng.random(depth.shape) < 0.2, 0.0, np.maximum(noisy, 0.0)).astype(np.float32)


def _noisy_lidar(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = points.copy()
    noisy[:, :3] += rng.normal(0.0, 1.5, (len(points), 3)).astype(np.float32)
    noisy[:, 3] = rng.random(len(points)).astype(np.float32)
    return noisy


def _faulty_events(events: np.ndarray, kind: str, window: tuple[float, float], size: tuple[int, int],
                   rng: np.random.Generator) -> np.ndarray:
    """``events`` under a noise (5x random events, at least one per pixel), flood (``FLOOD_EVENTS_PER_PIXEL`` per
    pixel, alternating polarity, spread over the window) or starvation (``STARVATION_KEPT`` left) fault."""
    if kind == "starvation":
        return events[rng.random(len(events)) < STARVATION_KEPT]
    width, height = size
    if kind == "flood":
        count = FLOOD_EVENTS_PER_PIXEL * width * height
        pixel = np.arange(count) % (width * height)
        extra = np.zeros(count, dtype=events.dtype)
        extra["x"], extra["y"] = pixel % width, pixel // width
        phase = np.arange(count) // (width * height)
        extra["t"] = window[0] + (window[1] - window[0]) * (phase + rng.random(count)) / FLOOD_EVENTS_PER_PIXEL
        extra["polarity"] = np.where(phase % 2 == 0, 1, -1)
    else:
        count = max(5 * len(events), width * height)
        extra = np.zeros(count, dtype=events.dtype)
        extra["x"] = rng.integers(0, width, count)
        extra["y"] = rng.integers(0, height, count)
        extra["t"] = rng.uniform(window[0], window[1], count)
        extra["polarity"] = rng.choice(np.array([-1, 1], dtype=np.int8), count)
    merged = np.concatenate([events, extra])
    return merged[np.argsort(merged["t"], kind="stable")]


def timeline_record(args, drive: Drive, faults: list[Fault], topics: dict, frame_count: int) -> dict:
    """The JSON record stored on the timeline topic and as ``fault_timeline.json``."""
    return {
        "format": TIMELINE_FORMAT,
        "generator": "robustseg_ros.record_synthetic",  # unchanged since the first recorded bags: a format value
        "seed": args.seed,
        "width": args.width,
        "height": args.height,
        "condition": args.condition,
        "frame_rate_hz": drive.config.frame_rate,
        "start_time_s": args.start_time,
        "duration_s": frame_count / drive.config.frame_rate,  # rendered: whole frames, not the requested --duration
        "frames": frame_count,
        "classes": list(CLASS_NAMES),  # of the ground truth's class ids
        "topics": topics,
        "frame_ids": {"camera": CAMERA_FRAME, "lidar": LIDAR_FRAME, "events": EVENT_FRAME},
        "T_cam_lidar": drive.T_cam_lidar.tolist(),
        "tf_static": f"{topics['tf_static']} (tf2_msgs/msg/TFMessage, {CAMERA_FRAME} -> {LIDAR_FRAME})",
        "rig_parameters": rig_parameters(drive),
        "faults": timeline_entries(faults, args.start_time),
    }


def check_faults_within_drive(faults: list[Fault], start_s: float, length_s: float) -> None:
    """``ValueError`` naming a fault that starts before the drive or after its last frame (it would never happen,
    or in part); a note on stderr for one that lasts past it (the recovery after it cannot be measured)."""
    for fault in faults:
        offsets = f"{fault.start_s - start_s:g}..{fault.end_s - start_s:g} s"
        if fault.start_s < start_s:
            raise ValueError(f"fault {fault.kind}:{fault.target} at {offsets} starts before the drive (offsets are "
                             "seconds from the drive's start, >= 0)")
        if fault.start_s - start_s >= length_s:
            raise ValueError(f"fault {fault.kind}:{fault.target} at {offsets} starts after the drive's end "
                             f"({length_s:g} s, --duration); it would never happen")
        if fault.end_s - start_s > length_s:
            print(f"record_synthetic: note: fault {fault.kind}:{fault.target} at {offsets} lasts past the drive's "
                  f"end ({length_s:g} s): its recovery is not in the bag", file=sys.stderr)


def check_topics(topics: dict[str, str]) -> None:
    """``UsageError`` naming a ``--*-topic`` that is not a ROS 2 topic name or that another one also uses (a bag
    holds one message type per topic)."""
    used: dict[str, str] = {}
    for key, topic in topics.items():
        option = f"--{key.replace('_', '-')}-topic"
        problem = topic_name_problem(topic)
        if problem:
            raise UsageError(f"{option} {topic!r}: not a ROS topic name: {problem}")
        if absolute_topic(topic) in used:
            raise UsageError(f"{option} {topic!r}: {used[absolute_topic(topic)]} uses it too; each input needs its "
                             "own topic")
        used[absolute_topic(topic)] = option


def record(args) -> dict:
    """Render and write the bag; returns the timeline record."""
    topics = {key: getattr(args, f"{key}_topic") for key in DEFAULT_TOPICS}
    drive = Drive(args.seed, DriveConfig(width=args.width, height=args.height, condition=args.condition))
    frame_count = max(1, int(round(args.duration * drive.config.frame_rate)))
    length_s = frame_count / drive.config.frame_rate  # the drive rendered: whole frames
    faults = load_faults(args.faults, args.start_time, length_s)
    faults += [parse_sensor_fault(text, args.start_time) for text in args.fault]
    check_faults_within_drive(faults, args.start_time, length_s)
    record_ = timeline_record(args, drive, faults, topics, frame_count)
    output = Path(args.output)
    if output.exists():
        raise BagError(f"bag {output}: already exists; choose another output path or remove it")
    staging = output.with_name(f".{output.name}.partial")
    lock = FolderLock(staging)  # a second run for the same bag stops here; a dead run's files are replaced
    lock.acquire()
    for leftover in staging.iterdir():
        if leftover.name != LOCK_NAME:
            shutil.rmtree(leftover)
    partial = staging / output.name
    injector = FaultInjector(faults, args.seed)
    start_ns = seconds_to_nanoseconds(args.start_time)
    try:
        with BagWriter(partial, args.storage) as bag:
            for key, msgtype in (("camera", Image), ("camera_info", CameraInfo), ("depth", Image),
                                 ("lidar", PointCloud2), ("events", PointCloud2), ("labels", Image),
                                 ("fault_timeline", String)):
                bag.add_topic(topics[key], msgtype)
            bag.add_topic(topics["tf_static"], "tf2_msgs/msg/TFMessage")
            bag.write(topics["fault_timeline"], start_ns, String(data=json.dumps(record_, sort_keys=True)))
            bag.write_raw(topics["tf_static"], start_ns, tf_static_cdr(drive.T_cam_lidar, args.start_time))
            for index in range(1, frame_count + 1):
                _write_frame(bag, drive, index, args.start_time, topics, injector)
        write_text_atomic(partial / TIMELINE_FILE, json.dumps(record_, indent=2, sort_keys=True) + "\n")
        write_text_atomic(partial / PARAMS_FILE, params_file_text(
            record_["rig_parameters"], "perception_node parameters for the rig this bag was recorded with "
                                       "(record_synthetic)."))
        if output.exists():
            raise BagError(f"bag {output}: written by another run meanwhile; this one is discarded")
        partial.rename(output)
    finally:
        lock.release()
        shutil.rmtree(staging, ignore_errors=True)
    return record_


def _write_frame(bag: BagWriter, drive: Drive, index: int, start_s: float, topics: dict,
                 injector: FaultInjector) -> None:
    frame = drive.frame(index)
    stamp_s = start_s + frame.stamp
    header = {frame_id: Header(stamp=seconds_to_stamp(stamp_s), frame_id=frame_id)
              for frame_id in (CAMERA_FRAME, LIDAR_FRAME, EVENT_FRAME)}
    messages = {"camera_info": intrinsics_to_camera_info(frame.intrinsics, header[CAMERA_FRAME]),
                "labels": numpy_to_image(frame.labels, "mono8", header[CAMERA_FRAME])}
    faults = {sensor: injector.active(sensor, stamp_s) for sensor in FAULT_SENSORS}
    rgb = frame.rgb
    if faults["camera"]:
        rgb = injector.camera(rgb, faults["camera"], injector.rng("camera", index))
    depth, points, events = frame.depth.astype(np.float32), frame.lidar_points, frame.events.copy()
    events["t"] += start_s
    if any(fault.kind == "noise" for fault in faults["depth"]):
        depth = _noisy_depth(depth, injector.rng("depth", index))
    for fault in faults["lidar"]:
        if fault.kind == "noise":
            points = _noisy_lidar(points, injector.rng("lidar", index))
        elif fault.kind == "jitter":
            points = jitter_points(points, injector.rng("lidar", index))
    window = (frame.event_window[0] + start_s, frame.event_window[1] + start_s)
    for fault in faults["events"]:
        if fault.kind in ("noise", "flood", "starvation"):
            events = _faulty_events(events, fault.kind, window, drive.event_size, injector.rng("events", index))
    messages["camera"] = numpy_to_image(np.ascontiguousarray(rgb), "rgb8", header[CAMERA_FRAME])
    messages["depth"] = numpy_to_image(depth, "32FC1", header[CAMERA_FRAME])
    messages["lidar"] = numpy_to_pointcloud2(points, header[LIDAR_FRAME])
    messages["events"] = events_to_pointcloud2(events, header[EVENT_FRAME])
    for sensor in FAULT_SENSORS:
        message = injector.messages.apply(sensor, stamp_s, messages.pop(sensor))
        if message is not None:
            messages[sensor] = message
    for key in sorted(messages, key=RECEIVE_DELAY_S.__getitem__):
        bag.write(topics[key], seconds_to_nanoseconds(stamp_s + RECEIVE_DELAY_S[key]), messages[key])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="record_synthetic", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("output", help="bag folder to create (must not exist)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="drive seed (scene, weather, noise, faults)")
    parser.add_argument("--duration", type=positive_float, default=10.0, help="seconds of drive")
    parser.add_argument("--width", type=int, default=128, help="camera width (px)")
    parser.add_argument("--height", type=int, default=128, help="camera height (px)")
    parser.add_argument("--condition", choices=CONDITIONS, default="sun", help="weather / light of the drive")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage plugin")
    parser.add_argument("--faults", default="default",
                        help="default (camera overexposure, night and underexposure, LiDAR drop and jitter, event "
                             "flood and starvation, depth freeze and noise), none, or a JSON file: [{kind, sensor, "
                             "start_offset_s, end_offset_s}], kinds " + ", ".join(FAULT_KINDS))
    parser.add_argument("--fault", action="append", default=[], metavar="KIND:SENSOR:START:END",
                        help="one more fault, repeatable: START, END in seconds from the drive start (e.g. "
                             "flood:events:2:3)")
    parser.add_argument("--start-time", type=positive_float, default=100.0,
                        help="header stamp (s) of the drive's time 0; bag time starts here")
    for key, topic in DEFAULT_TOPICS.items():
        parser.add_argument(f"--{key.replace('_', '-')}-topic", dest=f"{key}_topic", default=topic,
                            help=f"topic of the {key.replace('_', ' ')}")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Record the bag; returns its timeline record."""
    args = build_parser().parse_args(argv)
    check_topics({key: getattr(args, f"{key}_topic") for key in DEFAULT_TOPICS})
    try:
        record_ = record(args)
    except ValueError as error:  # a --faults file or fault window that does not parse
        raise UsageError(str(error)) from error
    print(f"record_synthetic: wrote {args.output} ({args.storage}, {record_['frames']} frames, "
          f"{len(record_['faults'])} faults)")
    return record_


cli = console_script(main, "record_synthetic")


if __name__ == "__main__":
    sys.exit(cli())

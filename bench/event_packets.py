"""Per event packet of a recorded drive: its event count, next to how much the camera image changed.

For telling a quiet scene from a starved or flooded event camera by eye: each packet's bag time (s) and
event count, and the fraction of camera pixels whose log luma ``log(1 + Y)`` (BT.601, 0..255) changed by
more than ``--threshold`` between the two latest camera images before it (a scene that changes more should
give more events). ``--summary`` prints, instead of the rows, the spread (95th / 5th percentile) of both
over the packets outside ``--exclude`` windows (start:end, bag seconds; e.g. the scripted faults).

    .venv/bin/python bench/event_packets.py DRIVE --from 104.5 --to 108.5
    .venv/bin/python bench/event_packets.py DRIVE --summary --exclude 103.5:104.3 106.0:106.8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from robustseg_ros.bagtools.bag_io import BagError, BagReader
from robustseg_ros.conversions import camera_image_to_rgb, pointcloud2_to_events


def packets(bag_path: Path, camera_topic: str, event_topic: str, threshold: float
            ) -> list[tuple[float, int, float | None]]:
    """(bag time s, event count, camera change fraction or None before two camera images) per event packet."""
    rows, previous, change = [], None, None
    with BagReader(bag_path) as bag:
        for topic, stamp_ns, msg in bag.messages([camera_topic, event_topic]):
            if topic == camera_topic:
                luma = np.log1p(cv2.cvtColor(camera_image_to_rgb(msg, topic=topic), cv2.COLOR_RGB2GRAY)
                                .astype(np.float32))
                if previous is not None and previous.shape == luma.shape:
                    change = float(np.mean(np.abs(luma - previous) > threshold))
                previous = luma
            else:
                rows.append((stamp_ns / 1e9, len(pointcloud2_to_events(msg, topic=topic)), change))
    return rows


def spread(values: np.ndarray) -> float:
    """95th over 5th percentile of the positive values (inf when the 5th is 0)."""
    values = values[values > 0]
    low = np.percentile(values, 5) if len(values) else 0.0
    return float(np.percentile(values, 95) / low) if low > 0 else float("inf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bag", type=Path, help="rosbag2 folder or file (record_synthetic's topics)")
    parser.add_argument("--camera-topic", default="/camera/image", help="sensor_msgs/Image topic")
    parser.add_argument("--event-topic", default="/events/packets", help="event packets (PointCloud2) topic")
    parser.add_argument("--threshold", type=float, default=0.15, help="log-luma change counted as a change")
    parser.add_argument("--from", dest="start", type=float, default=float("-inf"), help="first bag time (s)")
    parser.add_argument("--to", dest="end", type=float, default=float("inf"), help="last bag time (s)")
    parser.add_argument("--summary", action="store_true", help="print the spreads instead of the rows")
    parser.add_argument("--exclude", nargs="*", default=[], metavar="START:END",
                        help="windows (bag s) left out of the summary")
    args = parser.parse_args(argv)
    try:
        windows = [tuple(float(value) for value in item.split(":")) for item in args.exclude]
    except ValueError:
        parser.error(f"--exclude takes START:END in seconds, got {args.exclude}")
    try:
        rows = [row for row in packets(args.bag, args.camera_topic, args.event_topic, args.threshold)
                if args.start <= row[0] <= args.end]
    except BagError as error:
        print(f"event_packets: {error}", file=sys.stderr)
        return 1
    if args.summary:
        kept = [row for row in rows if row[2] is not None
                and not any(start <= row[0] < end for start, end in windows)]
        counts = np.array([row[1] for row in kept], dtype=float)
        changes = np.array([row[2] for row in kept], dtype=float)
        print(f"{args.bag}: {len(kept)} packets; spread (p95 / p5) of the event count {spread(counts):.1f}, "
              f"of the camera change {spread(changes):.1f}")
        return 0
    for time_s, count, change in rows:
        print(f"{time_s:.2f} s  {count:7d} events  camera change {'-' if change is None else f'{change:.3f}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

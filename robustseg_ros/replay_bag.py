"""``replay_bag``: publish a rosbag2 bag over DDS with its original timing, for machines without ``ros2 bag play``.

Messages go out in bag-timestamp order, each at ``(bag time - start) / rate`` seconds after the
start (wall clock). Options: ``--rate``, ``--start-offset`` and ``--duration`` (bag seconds),
``--loop``, ``--topics`` / ``--exclude-topics``, ``--remap old:=new``, and ``--clock``: publish
``/clock`` (bag time) before every message and at ``--clock-hz`` in between, for nodes run with
``use_sim_time:=true``. Fault injection, with windows in seconds from the bag's start:
``--drop TOPIC:START:END`` (no messages) and ``--freeze TOPIC:START:END`` (the window's first
message repeated with the stamps of the messages it replaces).

Publishers are reliable, keep last 10 (REP-2003: SensorDataQoS subscribers accept them);
transient-local for ``/tf_static``, the fault timeline and topics recorded as latched. Topics whose
message type rclpy cannot import here are skipped with a warning (``/tf_static`` without tf2_msgs).

On a full ROS install ``ros2 bag play BAG --clock`` does the same (docs/bags.md).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from robustseg_ros.bag_io import NANOSECONDS_PER_SECOND, BagError, BagReader, message_class
from robustseg_ros.conversions import seconds_to_stamp

LATCHED_BY_NAME = ("/tf_static", "/robustseg/fault_timeline")
PUBLISH_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass(frozen=True)
class FaultWindow:
    """``kind`` ("drop" or "freeze") on ``topic`` for bag times in [start_s, end_s) seconds after the bag start."""

    kind: str
    topic: str
    start_s: float
    end_s: float

    @classmethod
    def parse(cls, kind: str, text: str) -> FaultWindow:
        topic, separator, window = text.rpartition(":")
        topic, separator2, start = topic.rpartition(":")
        try:
            if not (separator and separator2 and topic):
                raise ValueError
            fault = cls(kind, topic, float(start), float(window))
        except ValueError:
            raise ValueError(f"--{kind} {text!r}: expected TOPIC:START:END (seconds from the bag start)") from None
        if not fault.end_s > fault.start_s:
            raise ValueError(f"--{kind} {text!r}: END must be after START")
        return fault


class FaultFilter:
    """Applies drop and freeze windows to messages (times in seconds after the bag start)."""

    def __init__(self, faults: list[FaultWindow]) -> None:
        self.faults = faults
        self._frozen: dict[FaultWindow, object] = {}

    def reset(self) -> None:
        self._frozen.clear()

    def apply(self, topic: str, offset_s: float, message):
        """The message to publish, or None to drop it."""
        for fault in self.faults:
            if fault.topic != topic or not fault.start_s <= offset_s < fault.end_s:
                continue
            if fault.kind == "drop":
                return None
            first = self._frozen.setdefault(fault, message)
            if first is message or not hasattr(message, "header"):
                return first
            frozen = type(first)()
            for slot in first.get_fields_and_field_types():
                setattr(frozen, slot, getattr(first, slot))
            frozen.header = message.header
            return frozen
        return message


class BagPlayer:
    """Publishes a bag from a node of its own; ``play()`` blocks until done or ``stop()``.

    ``remap``: bag topic -> published topic. ``rate``: playback speed factor. ``clock_hz``: /clock rate
    between messages (0: only before each message); ``clock``: publish /clock at all. ``observer(topic,
    timestamp_ns, message)``: called with every message read, before fault injection and publishing.
    """

    def __init__(self, bag_path, *, context=None, rate: float = 1.0, start_offset_s: float = 0.0,
                 duration_s: float | None = None, loop: bool = False, clock: bool = False, clock_hz: float = 40.0,
                 topics: list[str] | None = None, exclude_topics: list[str] | None = None,
                 remap: dict[str, str] | None = None, faults: list[FaultWindow] | None = None,
                 delay_s: float = 0.0, observer: Callable[[str, int, object], None] | None = None,
                 logger=None) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.bag = BagReader(bag_path)
        self.bag.open()
        present = self.bag.topics
        self.filter = FaultFilter(list(faults or []))
        try:
            self.bag.require([topic for topic in (topics or []) + [fault.topic for fault in self.filter.faults]],
                             what="requested", check_types=False)
        except BagError:
            self.bag.close()
            raise
        self.rate, self.loop, self.clock, self.delay_s = rate, loop, clock, delay_s
        self.observer = observer
        self.clock_period_s = 1.0 / clock_hz if clock_hz > 0 else None
        self.start_ns = self.bag.start_ns + int(round(start_offset_s * NANOSECONDS_PER_SECOND))
        self.stop_ns = (None if duration_s is None
                        else self.start_ns + int(round(duration_s * NANOSECONDS_PER_SECOND)))
        self.node = Node("bag_player", context=context)
        self.logger = logger or self.node.get_logger()
        self.remap = dict(remap or {})
        self._stop = threading.Event()
        self.published: dict[str, int] = {}
        selected = [topic for topic in (topics or present) if topic not in set(exclude_topics or [])]
        latched = self.bag.latched_topics | set(LATCHED_BY_NAME)
        self.publishers = {}
        for topic in selected:
            try:
                message_type = message_class(present[topic])
            except LookupError as error:
                self.logger.warning(f"{topic}: skipped, {error}")
                continue
            self.publishers[topic] = self.node.create_publisher(
                message_type, self.remap.get(topic, topic), LATCHED_QOS if topic in latched else PUBLISH_QOS)
        self.clock_publisher = self.node.create_publisher(Clock, "/clock", PUBLISH_QOS) if clock else None

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.bag.close()
        self.node.destroy_node()

    def _messages(self) -> Iterator[tuple[str, int, object]]:
        for topic, timestamp_ns, message in self.bag.messages(sorted(self.publishers)):
            if timestamp_ns < self.start_ns:
                continue
            if self.stop_ns is not None and timestamp_ns >= self.stop_ns:
                return
            yield topic, timestamp_ns, message

    def _publish_clock(self, bag_ns: int) -> None:
        if self.clock_publisher is not None:
            self.clock_publisher.publish(Clock(clock=seconds_to_stamp(bag_ns / NANOSECONDS_PER_SECOND)))

    def _wait_until(self, wall_start: float, bag_ns: int) -> bool:
        """Sleep until the wall time of ``bag_ns``, publishing /clock meanwhile; False when stopped."""
        target = wall_start + (bag_ns - self.start_ns) / NANOSECONDS_PER_SECOND / self.rate
        while True:
            remaining = target - time.monotonic()
            if remaining <= 0:
                return not self._stop.is_set()
            step = remaining if self.clock_period_s is None else min(remaining, self.clock_period_s)
            if self._stop.wait(step):
                return False
            if self.clock_publisher is not None and self.clock_period_s is not None:
                elapsed_bag_s = (time.monotonic() - wall_start) * self.rate
                self._publish_clock(self.start_ns + int(min(elapsed_bag_s * NANOSECONDS_PER_SECOND,
                                                            bag_ns - self.start_ns)))

    def play(self) -> int:
        """Publish the bag (repeatedly with ``loop``); returns the number of messages published."""
        if self.delay_s > 0 and self._stop.wait(self.delay_s):
            return 0
        count = 0
        while not self._stop.is_set():
            wall_start = time.monotonic()
            self.filter.reset()
            for topic, timestamp_ns, message in self._messages():
                if not self._wait_until(wall_start, timestamp_ns):
                    return count
                if self.observer is not None:
                    self.observer(topic, timestamp_ns, message)
                outgoing = self.filter.apply(topic, (timestamp_ns - self.bag.start_ns) / NANOSECONDS_PER_SECOND,
                                             message)
                if outgoing is None:
                    continue
                self._publish_clock(timestamp_ns)
                self.publishers[topic].publish(outgoing)
                self.published[topic] = self.published.get(topic, 0) + 1
                count += 1
            if not self.loop:
                break
        return count


def parse_remap(items: list[str]) -> dict[str, str]:
    remap = {}
    for item in items:
        old, separator, new = item.partition(":=")
        if not separator or not old or not new:
            raise ValueError(f"--remap {item!r}: expected /old:=/new")
        remap[old] = new
    return remap


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replay_bag", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("bag", help="rosbag2 folder (or a single .mcap / .db3 file)")
    parser.add_argument("-r", "--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--start-offset", type=float, default=0.0, help="skip this many bag seconds")
    parser.add_argument("--duration", type=float, default=None, help="play this many bag seconds")
    parser.add_argument("-l", "--loop", action="store_true", help="play again from the start when done")
    parser.add_argument("-d", "--delay", type=float, default=0.5,
                        help="wait (s) after creating the publishers, so that subscribers discover them")
    parser.add_argument("--clock", action="store_true", help="publish /clock with the bag time (use_sim_time)")
    parser.add_argument("--clock-hz", type=float, default=40.0, help="/clock rate between messages (with --clock)")
    parser.add_argument("--topics", nargs="+", default=None, help="only these topics")
    parser.add_argument("--exclude-topics", nargs="+", default=[], help="not these topics")
    parser.add_argument("--remap", nargs="+", default=[], metavar="OLD:=NEW", help="publish OLD as NEW")
    parser.add_argument("--drop", action="append", default=[], metavar="TOPIC:START:END",
                        help="publish nothing on TOPIC from START to END (s after the bag start); repeatable")
    parser.add_argument("--freeze", action="append", default=[], metavar="TOPIC:START:END",
                        help="repeat TOPIC's first message of the window, with fresh stamps; repeatable")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console script ``replay_bag``; 0 when played (or interrupted), 1 when the bag or options are unusable."""
    args, ros_args = build_parser().parse_known_args(argv)
    try:
        faults = ([FaultWindow.parse("drop", text) for text in args.drop]
                  + [FaultWindow.parse("freeze", text) for text in args.freeze])
        remap = parse_remap(args.remap)
    except ValueError as error:
        print(f"replay_bag: {error}", file=sys.stderr)
        return 1
    rclpy.init(args=["replay_bag", *ros_args])
    player = None
    try:
        player = BagPlayer(args.bag, rate=args.rate, start_offset_s=args.start_offset, duration_s=args.duration,
                           loop=args.loop, clock=args.clock, clock_hz=args.clock_hz, topics=args.topics,
                           exclude_topics=args.exclude_topics, remap=remap, faults=faults, delay_s=args.delay)
        count = player.play()
        print(f"replay_bag: published {count} messages from {args.bag}")
    except (BagError, ValueError) as error:
        print(f"replay_bag: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        if player is not None:
            player.close()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

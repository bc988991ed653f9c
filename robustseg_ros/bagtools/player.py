"""``BagPlayer``: publish a rosbag2 bag over DDS with its original timing (what ``replay_bag`` runs and
``evaluate_bag --mode live`` replays into the node).

Messages go out in bag-timestamp order, each at ``(bag time - start) / rate`` seconds after the start
(wall clock); with ``clock``, ``/clock`` (bag time) goes out before every message and at ``clock_hz``
in between, for nodes run with ``use_sim_time:=true``. Drop and freeze faults (``faults.MessageFaults``,
windows in seconds after the bag's start) are applied on the way out.

Publishers are reliable, keep last 10 (REP-2003: SensorDataQoS subscribers accept them);
transient-local for ``/tf_static``, the fault timeline and topics recorded as latched, keeping as many
messages as the bag holds on the topic, so a late subscriber gets every one of them. Topics whose
message type rclpy cannot import here, or whose name is not a ROS 2 topic name (``/camera/image-raw``: remap
it), are skipped with a warning (``/tf_static`` without tf2_msgs). With
``clock``, the bag's own ``/clock`` topic is not replayed (the player's clock replaces it; a note says so).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from robustseg_core.errors import UsageError
from robustseg_ros.bagtools.bag_io import FAULT_TIMELINE_TOPIC, TF_STATIC_TOPIC, BagError, BagReader, message_class
from robustseg_ros.bagtools.faults import Fault, MessageFaults
from robustseg_ros.conversions import nanoseconds_to_seconds, nanoseconds_to_stamp, seconds_to_nanoseconds
from robustseg_ros.params import topic_name_problem

LATCHED_BY_NAME = (TF_STATIC_TOPIC, FAULT_TIMELINE_TOPIC)
CLOCK_TOPIC = "/clock"
PUBLISH_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


#: Most messages a latched topic keeps for late subscribers (every /tf_static message of a bag, but not a whole
#: large latched topic in publisher memory).
MAX_LATCHED_DEPTH = 100


def latched_qos(depth: int) -> QoSProfile:
    """Reliable, transient-local, keeping the last ``depth`` messages (1 to ``MAX_LATCHED_DEPTH``) for late
    subscribers."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=min(max(1, depth), MAX_LATCHED_DEPTH),
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


class BagPlayer:
    """Publishes a bag from a node of its own; ``play()`` blocks until done or ``stop()``.

    ``remap``: bag topic -> published topic (each must be in the bag). ``rate``: playback speed factor.
    ``start_offset_s`` and ``duration_s``: the part of the bag to play (bag seconds). ``clock_hz``: /clock rate
    between messages (0: only before each message); ``clock``: publish /clock at all (the bag's own /clock is
    then left out, with a note on stderr). ``faults``: drop and freeze windows on topics. ``delay_s``: wait
    before the first message, for subscribers to discover the publishers.
    ``observer(topic, timestamp_ns, message)``: called with every message read, before fault injection and
    publishing. ``skip_damaged``: play a bag with damaged chunks without their messages (``BagReader``).
    """

    def __init__(self, bag_path, *, context=None, rate: float = 1.0, start_offset_s: float = 0.0,
                 duration_s: float | None = None, loop: bool = False, clock: bool = False, clock_hz: float = 40.0,
                 topics: list[str] | None = None, exclude_topics: list[str] | None = None,
                 remap: dict[str, str] | None = None, faults: list[Fault] | None = None,
                 delay_s: float = 0.0, observer: Callable[[str, int, object], None] | None = None,
                 logger=None, skip_damaged: bool = False) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.bag = BagReader(bag_path, skip_damaged=skip_damaged)
        self.bag.open()
        present = self.bag.topics
        self.message_faults = MessageFaults(list(faults or []))
        try:
            fault_topics = [fault.target for fault in self.message_faults.faults]
            self.bag.require([*(topics or []), *fault_topics], what="requested", check_types=False)
            self.bag.require(list(remap or {}), what="remapped (--remap)", check_types=False)
        except BagError:
            self.bag.close()
            raise
        self.rate, self.loop, self.clock, self.delay_s = rate, loop, clock, delay_s
        self.observer = observer
        self.clock_period_s = 1.0 / clock_hz if clock_hz > 0 else None
        if self.bag.end_ns < self.bag.start_ns:  # rosbags' times of a bag without messages
            self.bag.close()
            raise BagError(f"bag {bag_path}: holds no message; nothing to play")
        self.start_ns = self.bag.start_ns + seconds_to_nanoseconds(start_offset_s)
        if self.start_ns > self.bag.end_ns:
            length_s = (self.bag.end_ns - self.bag.start_ns) / 1e9
            self.bag.close()
            raise BagError(f"bag {bag_path}: start offset {start_offset_s} s is past its end (it is {length_s:.3f} s "
                           "long); nothing to play")
        self.stop_ns = None if duration_s is None else self.start_ns + seconds_to_nanoseconds(duration_s)
        self.node = Node("bag_player", context=context)
        self.logger = logger or self.node.get_logger()
        self.remap = dict(remap or {})
        self._stop = threading.Event()
        self.published: dict[str, int] = {}
        selected = [topic for topic in (topics or present) if topic not in set(exclude_topics or [])]
        if clock and CLOCK_TOPIC in selected and self.remap.get(CLOCK_TOPIC, CLOCK_TOPIC) == CLOCK_TOPIC:
            selected.remove(CLOCK_TOPIC)
            print(f"note: bag {bag_path}: its {CLOCK_TOPIC} topic is not replayed; the player publishes {CLOCK_TOPIC} "
                  "(bag time)", file=sys.stderr)
        latched = self.bag.latched_topics | set(LATCHED_BY_NAME)
        counts = self.bag.message_counts
        self.publishers = {}
        sources: dict[str, str] = {}  # published name -> the bag topic published there first
        for topic in selected:
            name = self.remap.get(topic, topic)
            problem = topic_name_problem(name)
            try:
                if problem:
                    raise LookupError(f"{name!r} is not a ROS 2 topic name ({problem}); --remap it to one")
                message_type = message_class(present[topic])
            except LookupError as error:
                self.logger.warning(f"{topic}: skipped, {error}")
                continue
            other = sources.setdefault(name, topic)
            if present[other] != present[topic]:
                self.close()
                raise UsageError(f"--remap: {topic} ({present[topic]}) would be published on {name}, which {other} "
                                 f"({present[other]}) uses too; choose another name")
            qos = latched_qos(counts.get(topic, 1)) if topic in latched else PUBLISH_QOS
            self.publishers[topic] = self.node.create_publisher(message_type, name, qos)
        self.clock_publisher = self.node.create_publisher(Clock, CLOCK_TOPIC, PUBLISH_QOS) if clock else None

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
            self.clock_publisher.publish(Clock(clock=nanoseconds_to_stamp(bag_ns)))

    def _wait_until(self, wall_start: float, bag_ns: int) -> bool:
        """Sleep until the wall time of ``bag_ns``, publishing /clock meanwhile; False when stopped."""
        target = wall_start + nanoseconds_to_seconds(bag_ns - self.start_ns) / self.rate
        while True:
            remaining = target - time.monotonic()
            if remaining <= 0:
                return not self._stop.is_set()
            step = remaining if self.clock_period_s is None else min(remaining, self.clock_period_s)
            if self._stop.wait(step):
                return False
            if self.clock_publisher is not None and self.clock_period_s is not None:
                elapsed_bag_s = (time.monotonic() - wall_start) * self.rate
                self._publish_clock(self.start_ns + min(seconds_to_nanoseconds(elapsed_bag_s),
                                                        bag_ns - self.start_ns))

    def play(self) -> int:
        """Publish the bag (repeatedly with ``loop``); returns the number of messages published."""
        if self.delay_s > 0 and self._stop.wait(self.delay_s):
            return 0
        count = 0
        while not self._stop.is_set():
            wall_start = time.monotonic()
            self.message_faults.reset()
            for topic, timestamp_ns, message in self._messages():
                if not self._wait_until(wall_start, timestamp_ns):
                    return count
                if self.observer is not None:
                    self.observer(topic, timestamp_ns, message)
                offset_s = nanoseconds_to_seconds(timestamp_ns - self.bag.start_ns)
                outgoing = self.message_faults.apply(topic, offset_s, message)
                if outgoing is None:
                    continue
                self._publish_clock(timestamp_ns)
                self.publishers[topic].publish(outgoing)
                self.published[topic] = self.published.get(topic, 0) + 1
                count += 1
            if not self.loop:
                break
        return count

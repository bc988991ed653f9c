"""Recording a perception run for Foxglove and RViz: the inputs and every output of the node in one MCAP bag.

``BagRecorder`` writes rclpy messages into a new rosbag2 MCAP bag (``rosbags`` writer, through
``bag_io.BagWriter``), declaring each topic on its first message; it is thread-safe, so DDS callbacks and
an evaluation loop can share it. ``subscribe_outputs`` records a node's outputs (``~/segmentation`` ...,
``~/class_names``, ``/diagnostics``) and any other topics as they arrive, stamped with the recording
node's clock (sim time during a replay). The offline evaluation writes the same topics with bag time.

``config/foxglove_layout.json`` shows the overlay, the confidence, sensor health and latency of such a bag
(docs/bags.md, "Recording for Foxglove and RViz").
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from std_msgs.msg import String

from robustseg_core.output_folder import FolderLock, FolderLocked
from robustseg_ros.bagtools.bag_io import BagError, BagWriter
from robustseg_ros.outputs import OUTPUT_TOPICS
from robustseg_ros.params import NODE_NAME, absolute_topic

#: The node name outputs are recorded under when no node runs (offline evaluation).
DEFAULT_NODE = f"/{NODE_NAME}"
DIAGNOSTICS_TOPIC = "/diagnostics"
#: Wall time (s) messages at time 0 are held for a time of their own (the first /clock of a replay).
HOLD_AT_ZERO_S = 2.0
OUTPUT_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def output_topics(node_name: str = DEFAULT_NODE) -> dict[str, type]:
    """Every output of the node ``node_name`` (fully qualified topic -> message type), /diagnostics included."""
    prefix = absolute_topic(node_name).rstrip("/")
    topics = {f"{prefix}/{name}": kind for name, kind in OUTPUT_TOPICS.items()}
    topics[f"{prefix}/class_names"] = String
    topics[DIAGNOSTICS_TOPIC] = DiagnosticArray
    return topics


class BagRecorder:
    """A new MCAP bag at ``path`` (refused when it exists) taking rclpy messages from any thread.

    While it records it holds a ``FolderLock`` on ``.<name>.partial.lock`` next to ``path`` (the bag folder
    itself must not exist before rosbags writes it), so a second recorder for ``path`` is refused (``BagError``
    naming the running one) instead of deleting this one's bag, and writes the bag inside that folder under
    ``path``'s name (its storage file is ``<name>.mcap``). ``close()`` moves it to ``path``, so a bag at ``path``
    is always a finished recording; ``close(complete=False)`` (the run that fed it failed) finishes the bag but
    moves it to ``<path>.partial`` to look at. The next recorder for ``path`` replaces such a leftover.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"bag {self.path}: already exists; choose another output path or remove it")
        self.partial_path = self.path.with_name(self.path.name + ".partial")
        self._folder_lock = FolderLock(self.path.with_name(f".{self.path.name}.partial.lock"))
        try:
            self._folder_lock.acquire()
        except FolderLocked as error:
            raise BagError(f"bag {self.path}: another recording into it is running ({error})") from error
        self.staging_path = self._folder_lock.folder / self.path.name
        try:
            for leftover in (self.partial_path, self.staging_path):
                if leftover.exists():
                    shutil.rmtree(leftover)
                    print(f"removed {leftover}, the unfinished recording of an earlier run", file=sys.stderr)
            self._writer = BagWriter(self.staging_path, "mcap")
            self._writer.__enter__()
        except BaseException:
            self._release_lock()
            raise
        self._lock = threading.Lock()
        self._declared: set[str] = set()
        self.counts: Counter[str] = Counter()
        self._held: list[tuple[str, object]] = []  # messages at time 0, waiting for a time
        self._held_since = 0.0  # time.monotonic() of the first of them
        self._holding = True
        self._closed = False

    def write(self, topic: str, timestamp_ns: int, message) -> None:
        """Write ``message`` on ``topic`` at ``timestamp_ns`` (the bag's time line); ignored once closed. A
        message at time 0 (a recorder on sim time before the first /clock) is held and written at the time of
        the next one that has a time, so the bag's time line does not start 0 s in; after ``HOLD_AT_ZERO_S`` of
        wall time without one (no /clock at all), held messages and later ones are written at 0."""
        with self._lock:
            if self._closed:
                return
            if timestamp_ns == 0 and self._holding:
                self._held.append((topic, message))
                if len(self._held) == 1:
                    self._held_since = time.monotonic()
                elif time.monotonic() - self._held_since > HOLD_AT_ZERO_S:
                    print(f"bag {self.path}: no time after {HOLD_AT_ZERO_S:g} s (use_sim_time without /clock?): "
                          "messages are written at time 0", file=sys.stderr)
                    self._holding = False
                    self._write_held(0)
                return
            self._write_held(timestamp_ns)
            self._write(topic, timestamp_ns, message)

    def _write(self, topic: str, timestamp_ns: int, message) -> None:
        if topic not in self._declared:
            self._writer.add_topic(topic, type(message))
            self._declared.add(topic)
        self._writer.write(topic, timestamp_ns, message)
        self.counts[topic] += 1

    def _write_held(self, timestamp_ns: int) -> None:
        for topic, message in self._held:
            self._write(topic, timestamp_ns, message)
        self._held.clear()

    def close(self, complete: bool = True) -> None:
        """Finish the bag (its index and metadata.yaml) and, when ``complete``, move it to ``path``; later
        writes are ignored."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._write_held(0)
                self._writer.__exit__(None, None, None)
                if complete and self.path.exists():
                    self.staging_path.rename(self.partial_path)
                    raise BagError(f"bag {self.path}: written by another run meanwhile; this recording is kept "
                                   f"as {self.partial_path}")
                self.staging_path.rename(self.path if complete else self.partial_path)
                if not complete:
                    print(f"the recording is incomplete; kept as {self.partial_path}", file=sys.stderr)
            finally:
                self._release_lock()

    def _release_lock(self) -> None:
        """Release the lock and remove its folder (left alone when another recorder has taken it meanwhile)."""
        self._folder_lock.release()
        with contextlib.suppress(OSError):
            self._folder_lock.folder.rmdir()

    def summary(self) -> str:
        return f"{sum(self.counts.values())} messages on {len(self.counts)} topics in {self.path}"


def subscribe_outputs(node: Node, recorder: BagRecorder, topics: Mapping[str, type], *,
                      best_effort: frozenset[str] = frozenset()) -> list:
    """Record every message of ``topics`` (topic -> type) that ``node`` receives, at ``node``'s clock time;
    ``best_effort`` topics (sensor inputs) are subscribed with the sensor-data QoS, class names latched, the
    others reliable. Returns the subscriptions."""
    subscriptions = []
    for topic, kind in topics.items():
        if topic in best_effort:
            qos = qos_profile_sensor_data
        else:
            qos = LATCHED_QOS if topic.endswith("/class_names") else OUTPUT_QOS

        def record(message, topic=topic) -> None:
            recorder.write(topic, node.get_clock().now().nanoseconds, message)

        subscriptions.append(node.create_subscription(kind, topic, record, qos))
    return subscriptions

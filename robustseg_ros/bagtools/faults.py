"""Sensor faults in time windows: one definition for recording them into a drive, injecting them while
replaying a bag, and scoring the perception pipeline against them.

A ``Fault`` is a ``kind`` applied to a ``target`` for times in [start_s, end_s):

* in a drive's fault timeline (``record_synthetic`` writes it, ``evaluate_bag`` reads it) the target
  is a sensor of ``FAULT_SENSORS`` and the times are header stamps (s);
* in ``replay_bag --drop/--freeze TOPIC:START:END`` the target is a topic and the times are seconds
  after the bag's start.

Kinds (``FAULT_KINDS``): ``drop`` (no messages) and ``freeze`` (the window's first message repeated
with the headers of the messages it replaces) act on messages (``MessageFaults``); the others are
rendered into the data by ``record_synthetic``: ``noise`` (any sensor), ``night``, ``overexposure``
and ``underexposure`` (camera), ``jitter`` (LiDAR), ``flood`` and ``starvation`` (events). Those are
sensors that keep publishing but lie (``QUALITY_FAULT_KINDS``): the node should call them DEGRADED.

The timeline record (format ``TIMELINE_FORMAT``) is JSON: on ``bag_io.FAULT_TIMELINE_TOPIC`` once at
the start of the bag and in ``TIMELINE_FILE`` inside the bag folder (fields in docs/bags.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from robustseg_ros.bagtools.bag_io import BagError, BagReader

TIMELINE_FORMAT = "robustseg_fault_timeline/1"
TIMELINE_FILE = "fault_timeline.json"
FAULT_KINDS = ("drop", "freeze", "noise", "night", "overexposure", "underexposure", "jitter", "flood", "starvation")
#: The kinds that act on whole messages (the ones ``replay_bag`` injects).
MESSAGE_FAULT_KINDS = ("drop", "freeze")
#: The kinds whose messages keep coming with bad content: the sensor should be DEGRADED, not STALE.
QUALITY_FAULT_KINDS = tuple(kind for kind in FAULT_KINDS if kind not in MESSAGE_FAULT_KINDS)
#: Kinds that apply to one sensor only.
SENSOR_OF_FAULT_KIND = {"night": "camera", "overexposure": "camera", "underexposure": "camera", "jitter": "lidar",
                        "flood": "events", "starvation": "events"}
FAULT_SENSORS = ("camera", "depth", "lidar", "events")
#: The default timeline as fractions of the duration: (kind, sensor, start, end). Each sensor has at least a
#: tenth of the drive of nominal data between its faults; faults of different sensors may overlap.
DEFAULT_TIMELINE = (
    ("overexposure", "camera", 0.05, 0.15),
    ("night", "camera", 0.20, 0.30),
    ("drop", "lidar", 0.35, 0.55),
    ("flood", "events", 0.35, 0.43),
    ("underexposure", "camera", 0.45, 0.53),
    ("freeze", "depth", 0.60, 0.80),
    ("starvation", "events", 0.60, 0.68),
    ("jitter", "lidar", 0.70, 0.78),
    ("noise", "depth", 0.85, 0.95),
)


@dataclass(frozen=True)
class Fault:
    """``kind`` on ``target`` (a sensor or a topic, module docstring) for times in [start_s, end_s) (s)."""

    kind: str
    target: str
    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r}: expected one of {', '.join(FAULT_KINDS)}")
        if not self.end_s > self.start_s:
            raise ValueError(f"fault {self.kind} {self.target}: end {self.end_s} s must be after start "
                             f"{self.start_s} s")

    @property
    def name(self) -> str:
        """``"drop lidar 103.50-105.50s"``: how reports name the fault."""
        return f"{self.kind} {self.target} {self.start_s:.2f}-{self.end_s:.2f}s"

    def covers(self, time_s: float) -> bool:
        """True when ``time_s`` (on the fault's clock) lies in [start_s, end_s)."""
        return self.start_s <= time_s < self.end_s


# --------------------------------------------------------------------------------------------
# a drive's timeline: faults on sensors, at header stamps


def sensor_fault(kind: str, sensor: str, start_s: float, end_s: float) -> Fault:
    """A fault of a drive's timeline; ``ValueError`` for an unknown sensor or a kind another sensor's only."""
    if sensor not in FAULT_SENSORS:
        raise ValueError(f"fault sensor {sensor!r}: expected one of {', '.join(FAULT_SENSORS)}")
    if SENSOR_OF_FAULT_KIND.get(kind, sensor) != sensor:
        raise ValueError(f"fault {kind} applies to the {SENSOR_OF_FAULT_KIND[kind]} only, not {sensor}")
    return Fault(kind, sensor, start_s, end_s)


def default_faults(start_s: float, duration_s: float) -> list[Fault]:
    """``DEFAULT_TIMELINE`` for a drive of ``duration_s`` seconds whose header stamps start at ``start_s``."""
    return [sensor_fault(kind, sensor, round(start_s + begin * duration_s, 6), round(start_s + end * duration_s, 6))
            for kind, sensor, begin, end in DEFAULT_TIMELINE]


def load_faults(spec: str, start_s: float, duration_s: float) -> list[Fault]:
    """``default``, ``none`` or a JSON file: a list of {kind, sensor, start_offset_s, end_offset_s} (seconds
    from the start of the drive)."""
    if spec == "default":
        return default_faults(start_s, duration_s)
    if spec == "none":
        return []
    try:
        items = json.loads(Path(spec).read_text())
        return [sensor_fault(item["kind"], item["sensor"], start_s + float(item["start_offset_s"]),
                             start_s + float(item["end_offset_s"])) for item in items]
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"faults file {spec}: expected a JSON list of {{kind, sensor, start_offset_s, "
                         f"end_offset_s}} ({type(error).__name__}: {error})") from error


def parse_sensor_fault(text: str, start_s: float) -> Fault:
    """``KIND:SENSOR:START:END`` of ``record_synthetic --fault`` (START, END: seconds from the drive start, whose
    header stamp is ``start_s``) -> a timeline fault."""
    parts = text.split(":")
    try:
        if len(parts) != 4:
            raise ValueError
        begin, end = float(parts[2]), float(parts[3])
    except ValueError:
        raise ValueError(f"--fault {text!r}: expected KIND:SENSOR:START:END (seconds from the drive start), "
                         f"e.g. underexposure:camera:2.0:3.0") from None
    return sensor_fault(parts[0], parts[1], start_s + begin, start_s + end)


def timeline_entries(faults: list[Fault], start_s: float) -> list[dict]:
    """The ``faults`` entries of a timeline record: kind, sensor, start_s and end_s (header stamps), their
    offsets from the drive's start ``start_s`` and the fault's name."""
    return [{"kind": fault.kind, "sensor": fault.target, "start_s": fault.start_s, "end_s": fault.end_s,
             "start_offset_s": round(fault.start_s - start_s, 6), "end_offset_s": round(fault.end_s - start_s, 6),
             "name": fault.name} for fault in faults]


def faults_from_record(record: dict) -> list[Fault]:
    """The faults of a timeline record (the JSON of the fault timeline topic)."""
    return [sensor_fault(item["kind"], item["sensor"], float(item["start_s"]), float(item["end_s"]))
            for item in record.get("faults", [])]


def read_fault_record(bag: BagReader, timeline_topic: str) -> dict:
    """The timeline record from ``timeline_topic`` or the bag folder's ``TIMELINE_FILE``; {} if neither.
    ``BagError`` naming the source when it is not a JSON object whose faults parse (a hand-written file)."""
    source, text = None, ""
    if timeline_topic and timeline_topic in bag.topics:
        for _, _, message in bag.messages([timeline_topic]):
            source, text = f"topic {timeline_topic}", message.data
            break
    sidecar = bag.path / TIMELINE_FILE if bag.path.is_dir() else bag.path.with_name(TIMELINE_FILE)
    if source is None and sidecar.is_file():
        source, text = str(sidecar), sidecar.read_text()
    if source is None:
        return {}
    try:
        record = json.loads(text)
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        classes = record.get("classes", [])
        if not (isinstance(classes, list) and all(isinstance(name, str) for name in classes)):
            raise ValueError(f"\"classes\" is {classes!r}, expected a list of class names")
        if not isinstance(record.get("rig_parameters", {}), dict):
            raise ValueError("\"rig_parameters\" is not an object of parameter name -> value")
        faults_from_record(record)
    except (ValueError, TypeError, KeyError) as error:
        problem = f"a fault lacks {error}" if isinstance(error, KeyError) else str(error)
        raise BagError(f"bag {bag.path}: fault timeline ({source}): {problem}") from None
    return record


# --------------------------------------------------------------------------------------------
# faults on messages


def parse_topic_fault(kind: str, text: str) -> Fault:
    """``TOPIC:START:END`` (seconds after the bag start) of ``replay_bag --drop`` / ``--freeze`` -> a fault."""
    if kind not in MESSAGE_FAULT_KINDS:
        raise ValueError(f"--{kind}: only {', '.join(MESSAGE_FAULT_KINDS)} act on replayed messages")
    rest, separator, end = text.rpartition(":")
    topic, separator2, start = rest.rpartition(":")
    try:
        if not (separator and separator2 and topic):
            raise ValueError
        start_s, end_s = float(start), float(end)
    except ValueError:
        raise ValueError(f"--{kind} {text!r}: expected TOPIC:START:END (seconds from the bag start)") from None
    if not end_s > start_s:
        raise ValueError(f"--{kind} {text!r}: END must be after START")
    return Fault(kind, topic, start_s, end_s)


def frozen_copy(message, header):
    """A copy of the rclpy ``message`` with every field shared except ``header``: identical payload, new stamp."""
    frozen = type(message)()
    for slot in message.get_fields_and_field_types():
        setattr(frozen, slot, getattr(message, slot))
    frozen.header = header
    return frozen


class MessageFaults:
    """Applies the ``drop`` and ``freeze`` faults of a list to a stream of messages (other kinds are ignored).

    ``apply(target, time_s, message)`` returns the message to send, or None to drop it: a drop window
    covering ``time_s`` wins; in a freeze window the window's first message comes back under the
    current message's header. ``reset()`` forgets the frozen messages (a replay starting over).
    """

    def __init__(self, faults: list[Fault]) -> None:
        self.faults = [fault for fault in faults if fault.kind in MESSAGE_FAULT_KINDS]
        self._first: dict[Fault, object] = {}

    def reset(self) -> None:
        self._first.clear()

    def apply(self, target: str, time_s: float, message):
        active = [fault for fault in self.faults if fault.target == target and fault.covers(time_s)]
        if any(fault.kind == "drop" for fault in active):
            return None
        freeze = next((fault for fault in active if fault.kind == "freeze"), None)
        if freeze is None:
            return message
        first = self._first.setdefault(freeze, message)
        if first is message or not hasattr(message, "header"):
            return first
        return frozen_copy(first, message.header)

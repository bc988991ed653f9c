"""rosbag2 files (MCAP or sqlite3) read and written as rclpy messages through the ``rosbags`` library.

``BagReader`` opens a bag and reports what is wrong with it in one ``BagError`` that names the bag:
a missing path, a corrupt or truncated file, a damaged chunk (its CRC, checked on opening by
``integrity.verify_bag``, names the file, chunk and byte offset; ``skip_damaged`` reads the other chunks
instead), required topics that are absent (listing the topics present) or message types that this
Python environment cannot import. ``messages`` yields ``(topic, timestamp_ns, message)`` in
bag-timestamp order, the message deserialized by rclpy.

``BagWriter`` writes rclpy messages (serialized by rclpy) to a new bag, with chunk and summary CRCs in
MCAP files; ``write_raw`` takes CDR bytes for types rclpy cannot import here (``/tf_static`` serialized
with the rosbags type store).

The topics a recorded drive carries besides the sensor inputs (ground truth, fault timeline,
``/tf_static``) are named here once, for the tools that write, replay and evaluate such bags.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from robustseg_core.errors import UserError, cause
from robustseg_ros.bagtools.integrity import IntegrityReport, bag_files, bag_storage, stamp_mcap_crcs, verify_bag

#: Message definitions written into new bags; the rclpy wheels here are ROS 2 Kilted.
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
STORAGE_PLUGINS: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
BAG_VERSION = 9
#: Ground-truth class ids of a recorded drive (``sensor_msgs/Image`` mono8, 255 ignore).
GROUND_TRUTH_TOPIC = "/ground_truth/labels"
#: The fault timeline record of a recorded drive (``std_msgs/String``, JSON, once at the start; latched).
FAULT_TIMELINE_TOPIC = "/robustseg/fault_timeline"
#: Static transforms (``tf2_msgs/TFMessage``; latched).
TF_STATIC_TOPIC = "/tf_static"


class BagError(UserError, RuntimeError):
    """A bag cannot be used; the message names the bag and the problem."""


def message_class(msgtype: str) -> type:
    """rclpy class of a type name such as ``sensor_msgs/msg/Image``; ``LookupError`` when not importable."""
    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise LookupError(f"{msgtype!r} is not a message type name (package/msg/Name)")
    try:
        module = importlib.import_module(f"{parts[0]}.msg")
        return getattr(module, parts[2])
    except (ImportError, AttributeError) as error:
        raise LookupError(f"message type {msgtype} is not installed in this Python environment ({error})") from error


def message_type_name(message_class_: type) -> str:
    """``sensor_msgs/msg/Image`` for ``sensor_msgs.msg.Image``."""
    package = message_class_.__module__.split(".")[0]
    return f"{package}/msg/{message_class_.__name__}"


class BagReader:
    """A rosbag2 bag opened for reading (context manager).

    ``path``: the bag folder (with metadata.yaml) or a single ``.mcap`` / ``.db3`` file. Opening
    checks the bag's integrity (``integrity``: the report, with ``notes`` for the user) and that it can be
    read; ``require`` checks topics and their types. ``skip_damaged``: leave out the messages of damaged
    MCAP chunks (counted in ``notes``) instead of refusing the bag.
    """

    def __init__(self, path: str | Path, skip_damaged: bool = False) -> None:
        self.path = Path(path)
        self.skip_damaged = skip_damaged
        self.integrity: IntegrityReport | None = None
        self.notes: list[str] = []
        self._reader: Reader | None = None

    def __enter__(self) -> BagReader:
        self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def open(self) -> None:
        if not self.path.exists():
            raise BagError(f"bag {self.path}: no such file or folder")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            files = sorted(path.name for path in self.path.glob("*") if path.suffix in (".mcap", ".db3"))
            hint = (f"a recording cut short leaves it so: pass its file ({self.path / files[0]}) instead"
                    if files else "no .mcap or .db3 file in it either")
            raise BagError(f"bag {self.path}: a folder without metadata.yaml ({hint})")
        report = self._verify()
        try:
            reader = Reader(self.path)
            reader.open()
        except Exception as error:  # rosbags raises ReaderError, KeyError, ValueError... on damaged bags
            raise BagError(f"bag {self.path}: cannot be opened: corrupt or truncated, or not a rosbag2 bag "
                           f"({cause(error)})") from error
        self._reader = reader
        if report.damaged:
            self._leave_out_chunks(report)

    def _verify(self) -> IntegrityReport:
        """Check the bag's CRCs; ``BagError`` naming the first damage unless only chunks are damaged and
        ``skip_damaged`` is set."""
        try:
            report = verify_bag(self.path)
        except OSError as error:
            raise BagError(f"bag {self.path}: cannot be read ({error.strerror or error})") from error
        if report.problems:
            more = f" (and {len(report.problems) - 1} more problems)" if len(report.problems) > 1 else ""
            raise BagError(f"bag {self.path}: cannot be opened: corrupt or truncated: {report.problems[0]}{more}")
        if report.damaged and not self.skip_damaged:
            raise BagError(f"bag {self.path}: {report.damaged[0].describe()}; {len(report.damaged)} damaged "
                           "chunk(s) in all. Skip them with --skip-damaged-chunks to read the rest")
        unindexed = [chunk for chunk in report.damaged if chunk.file in report.unindexed_files]
        if unindexed:
            raise BagError(f"bag {self.path}: {unindexed[0].describe()}; {unindexed[0].file.name} has no chunk index "
                           "(no MCAP summary); damaged chunks cannot be skipped")
        if report.damaged:
            self.notes.append(f"bag {self.path}: skipping {len(report.damaged)} damaged chunk(s) of "
                              f"{len(report.damaged) + report.checked_chunks + report.unchecked_chunks}: "
                              + "; ".join(chunk.describe() for chunk in report.damaged[:3]))
        if report.unchecked_chunks:
            self.notes.append(f"bag {self.path}: {report.unchecked_chunks} chunk(s) carry no CRC (written without "
                              "checksums); their integrity cannot be checked")
        if report.unchecked_files:
            self.notes.append(f"bag {self.path}: {', '.join(file.name for file in report.unchecked_files)} "
                              "compressed as a whole (file compression); integrity not checked")
        self.integrity = report
        return report

    def _leave_out_chunks(self, report: IntegrityReport) -> None:
        """Drop the damaged chunks from the chunk lists rosbags reads messages from (rosbags has no public
        way to skip chunks: its MCAP readers keep the summary's chunk index in ``chunks``). A file left with
        no chunk yields no message (with an empty index rosbags would scan the whole file, damage included);
        a bag left with none is a ``BagError``."""
        if not report.checked_chunks and not report.unchecked_chunks:
            raise BagError(f"bag {self.path}: every one of its {len(report.damaged)} chunk(s) is damaged; "
                           "no message can be read")
        storage = self.reader.storage
        for mcap in getattr(storage, "storages", [storage]):
            damaged = {chunk.offset for chunk in report.damaged if chunk.file.name == Path(mcap.path).name}
            if damaged and not hasattr(mcap, "chunks"):
                raise BagError(f"bag {self.path}: this rosbags version cannot skip damaged chunks")
            if damaged:
                mcap.chunks = [chunk for chunk in mcap.chunks if chunk.chunk_start_offset not in damaged]
                if not mcap.chunks:
                    mcap.messages = _no_messages

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            raise BagError(f"bag {self.path}: not open")
        return self._reader

    @property
    def topics(self) -> dict[str, str]:
        """Topic name -> message type name of every topic in the bag."""
        return {connection.topic: connection.msgtype for connection in self.reader.connections}

    @property
    def message_counts(self) -> dict[str, int]:
        """Topic name -> number of messages metadata.yaml (or the MCAP summary) counts on it."""
        counts: dict[str, int] = {}
        for connection in self.reader.connections:
            counts[connection.topic] = counts.get(connection.topic, 0) + connection.msgcount
        return counts

    @property
    def latched_topics(self) -> set[str]:
        """Topics recorded from a transient-local (latched) publisher, such as ``/tf_static``."""
        return {connection.topic for connection in self.reader.connections
                if any(profile.durability.name == "TRANSIENT_LOCAL"
                       for profile in getattr(connection.ext, "offered_qos_profiles", None) or ())}

    @property
    def storage(self) -> str:
        """"mcap" or "sqlite3" (metadata.yaml's ``storage_identifier``, or a single file's suffix)."""
        return bag_storage(self.path)

    @property
    def start_ns(self) -> int:
        return self.reader.start_time

    @property
    def end_ns(self) -> int:
        return self.reader.end_time

    def require(self, topics: Iterable[str], *, what: str = "required", check_types: bool = True) -> None:
        """``BagError`` naming the ``topics`` absent from the bag (and listing those present), or (with
        ``check_types``) naming the ones whose message type cannot be imported here."""
        topics = list(topics)
        present = self.topics
        missing = [topic for topic in topics if topic not in present]
        if missing:
            listing = ", ".join(f"{topic} ({msgtype})" for topic, msgtype in sorted(present.items())) or "none"
            raise BagError(f"bag {self.path}: {what} topic(s) {', '.join(missing)} not found; "
                           f"topics in the bag: {listing}")
        unknown = []
        for topic in topics if check_types else ():
            try:
                message_class(present[topic])
            except LookupError:
                unknown.append(f"{topic} ({present[topic]})")
        if unknown:
            raise BagError(f"bag {self.path}: unknown message type(s) on {', '.join(unknown)}: not installed in this "
                           "Python environment")

    def messages(self, topics: Iterable[str] | None = None, *, raw: bool = False) -> Iterator[tuple[str, int, object]]:
        """``(topic, timestamp_ns, message)`` of ``topics`` (default all) in bag-timestamp order.

        ``raw``: yield the CDR bytes instead of rclpy messages. Types are checked before the first
        message; a damaged message raises ``BagError`` naming the topic and the timestamp.
        """
        wanted = set(self.topics) if topics is None else set(topics)
        self.require(sorted(wanted), what="requested", check_types=not raw)
        connections = [connection for connection in self.reader.connections if connection.topic in wanted]
        classes = {} if raw else {connection.msgtype: message_class(connection.msgtype) for connection in connections}
        if not connections:
            return
        iterator = self.reader.messages(connections=connections)
        while True:
            try:
                connection, timestamp_ns, data = next(iterator)
            except StopIteration:
                return
            except Exception as error:  # a truncated file fails while reading its chunks
                raise BagError(f"bag {self.path}: cannot be read past some point: corrupt or truncated "
                               f"({cause(error)})") from error
            if raw:
                yield connection.topic, timestamp_ns, bytes(data)
                continue
            try:
                message = deserialize_message(bytes(data), classes[connection.msgtype])
            except Exception as error:
                raise BagError(f"bag {self.path}: message on {connection.topic} at {timestamp_ns} ns cannot be "
                               f"deserialized as {connection.msgtype} ({cause(error)})") from error
            yield connection.topic, timestamp_ns, message


def _no_messages(*_args, **_kwargs):
    """The messages of a storage file whose every chunk is damaged: none."""
    return iter(())


class BagWriter:
    """A new rosbag2 bag (context manager); ``storage`` is "mcap" or "sqlite3". Refuses an existing path."""

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        if storage not in STORAGE_PLUGINS:
            raise ValueError(f"storage {storage!r}: expected one of {', '.join(STORAGE_PLUGINS)}")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"bag {self.path}: already exists; choose another output path or remove it")
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGE_PLUGINS[storage])
        self._connections: dict[str, object] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        self._writer.close()
        for file in bag_files(self.path):
            if file.suffix == ".mcap":
                stamp_mcap_crcs(file)

    def add_topic(self, topic: str, msgtype: str | type) -> None:
        """Declare ``topic`` with a type name (``sensor_msgs/msg/Image``) or an rclpy message class."""
        name = msgtype if isinstance(msgtype, str) else message_type_name(msgtype)
        self._connections[topic] = self._writer.add_connection(topic, name, typestore=TYPESTORE)

    def write(self, topic: str, timestamp_ns: int, message) -> None:
        """Write an rclpy message received at ``timestamp_ns`` (the bag's time line)."""
        self.write_raw(topic, timestamp_ns, serialize_message(message))

    def write_raw(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        """Write CDR bytes on a declared topic."""
        self._writer.write(self._connections[topic], int(timestamp_ns), data)

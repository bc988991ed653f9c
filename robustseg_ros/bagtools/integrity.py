"""Bag integrity: MCAP chunk and summary CRCs, sqlite3 ``PRAGMA integrity_check``; CRCs for new MCAP bags.

An MCAP file (``<magic><header><data section>[<summary>]<footer><magic>``) keeps its messages in chunk
records, each carrying the CRC-32 of its uncompressed records, and an optional CRC-32 of its summary
section (the chunk index readers trust) in the footer. :func:`verify_bag` checks every chunk the summary
indexes (or, without a summary or a chunk index in it, every chunk in the data section, and notes the file
as unindexed) and the summary itself, without deserializing a message, and returns what it found: damaged
chunks with their file, index, byte offset and time range, and problems outside any chunk. The files
checked are the ones metadata.yaml lists (``relative_file_paths``), not whatever the folder holds; a file
compressed as a whole (``*.mcap.zstd``, ``*.db3.zstd``) is not checked, and reported as such. A CRC of
zero means "not computed": such chunks are counted as unchecked. ``rosbags`` writes zeros, so
:func:`stamp_mcap_crcs` fills them in after ``BagWriter`` closes a bag. A sqlite3 bag is checked with
``PRAGMA integrity_check``, which finds damage to the database's structure (pages, b-trees, indexes) but
not to message bytes: sqlite keeps no checksum of row contents.
"""

from __future__ import annotations

import sqlite3
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import BinaryIO, Iterator

import yaml

from robustseg_core.errors import cause

MAGIC = b"\x89MCAP0\r\n"
OP_CHUNK, OP_CHUNK_INDEX, OP_DATA_END = 0x06, 0x08, 0x0F
RECORD_HEADER = struct.Struct("<BQ")  # opcode, content length
FOOTER = struct.Struct("<BQQQI")  # opcode, length, summary_start, summary_offset_start, summary_crc
CHUNK_HEADER = struct.Struct("<QQQI")  # message start and end time, uncompressed size, uncompressed CRC
CHUNK_INDEX_HEAD = struct.Struct("<QQQQ")  # message start and end time, chunk start offset, chunk length
#: Byte offset of a chunk record's uncompressed CRC from the record's start (opcode and length, three u64).
CHUNK_CRC_OFFSET = RECORD_HEADER.size + 24
METADATA_FILE = "metadata.yaml"
#: Storage file suffix -> rosbag2 storage plugin.
STORAGE_OF_SUFFIX = {".mcap": "mcap", ".db3": "sqlite3"}


@dataclass(frozen=True)
class DamagedChunk:
    """A chunk whose bytes do not match its CRC (or cannot be parsed): file, index in the file, byte offset of
    its record and the bag time range (ns) of its messages."""

    file: Path
    index: int
    offset: int
    start_ns: int
    end_ns: int
    reason: str

    def describe(self) -> str:
        return (f"chunk {self.index} at byte offset {self.offset} of {self.file.name} (messages {self.start_ns} .. "
                f"{self.end_ns} ns) {self.reason}")


@dataclass
class IntegrityReport:
    """What :func:`verify_bag` found: chunks checked and without CRC, damaged chunks, other problems, MCAP files
    without a chunk index (their chunks found by scanning: readers cannot skip one) and files not checked
    (compressed as a whole)."""

    checked_chunks: int = 0
    unchecked_chunks: int = 0
    damaged: list[DamagedChunk] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unindexed_files: list[Path] = field(default_factory=list)
    unchecked_files: list[Path] = field(default_factory=list)


def bag_metadata(path: Path) -> dict:
    """The ``rosbag2_bagfile_information`` of a bag folder's metadata.yaml; {} for a single storage file or a
    folder without metadata.yaml (not a rosbag2 bag: the reader says so); ``ValueError`` naming the file when
    it cannot be read or parsed."""
    metadata = path / METADATA_FILE
    if not path.is_dir() or not metadata.is_file():
        return {}
    try:
        document = yaml.safe_load(metadata.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{METADATA_FILE}: cannot be read ({cause(error)})") from error
    information = document.get("rosbag2_bagfile_information") if isinstance(document, dict) else None
    if not isinstance(information, dict):
        raise ValueError(f"{METADATA_FILE}: no rosbag2_bagfile_information mapping")
    return information


def bag_files(path: Path) -> list[Path]:
    """The storage files of a bag: those metadata.yaml lists (``relative_file_paths``, in its order; compressed
    ones keep their ``.zstd`` suffix), or the file itself; ``ValueError`` when metadata.yaml cannot be read."""
    if not path.is_dir():
        return [path]
    return [path / PurePath(str(name)).name for name in bag_metadata(path).get("relative_file_paths") or ()]


def bag_storage(path: Path) -> str:
    """"mcap" or "sqlite3": metadata.yaml's ``storage_identifier``, or the suffix of a single file ("" when
    neither tells)."""
    if path.is_dir():
        try:
            return str(bag_metadata(path).get("storage_identifier", ""))
        except ValueError:
            return ""
    return STORAGE_OF_SUFFIX.get(path.suffix, "")


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if not compression:
        return data
    from rosbags.rosbag2.storage_mcap import DECOMPRESSORS  # the decompressors the reader itself uses

    if compression not in DECOMPRESSORS:
        raise ValueError(f"unsupported compression {compression!r}")
    return DECOMPRESSORS[compression](data, size)


def _footer(handle: BinaryIO, size: int) -> tuple[int, int]:
    """(summary_start, summary_crc) of an MCAP file; ``ValueError`` when the file does not end like one."""
    if size < len(MAGIC) * 2 + FOOTER.size:
        raise ValueError("too short for an MCAP file (truncated?)")
    handle.seek(0)
    if handle.read(len(MAGIC)) != MAGIC:
        raise ValueError("does not start with the MCAP magic")
    handle.seek(size - len(MAGIC) - FOOTER.size)
    footer = handle.read(FOOTER.size + len(MAGIC))
    if footer[FOOTER.size:] != MAGIC or footer[0] != 0x02:
        raise ValueError("does not end with an MCAP footer and magic (truncated or overwritten?)")
    _, _, summary_start, _, summary_crc = FOOTER.unpack(footer[:FOOTER.size])
    if summary_start and not len(MAGIC) <= summary_start <= size - len(MAGIC) - FOOTER.size:
        raise ValueError(f"footer points to a summary at byte {summary_start}, outside the file")
    return summary_start, summary_crc


def _records(data: bytes, base: int) -> Iterator[tuple[int, int, bytes]]:
    """(opcode, absolute offset, content) of the records in ``data`` (which starts at file offset ``base``)."""
    position = 0
    while position < len(data):
        if position + RECORD_HEADER.size > len(data):
            raise ValueError(f"record at byte offset {base + position} is cut off")
        opcode, length = RECORD_HEADER.unpack_from(data, position)
        start = position + RECORD_HEADER.size
        if start + length > len(data):
            raise ValueError(f"record at byte offset {base + position} claims {length} bytes, past its section")
        yield opcode, base + position, data[start:start + length]
        position = start + length


def _indexed_chunks(handle: BinaryIO, size: int, summary_start: int) -> list[tuple[int, int, int, int]]:
    """(offset, length, start_ns, end_ns) of every chunk in the summary's chunk index ([] without one)."""
    locations = []
    if summary_start:
        handle.seek(summary_start)
        summary = handle.read(size - len(MAGIC) - FOOTER.size - summary_start)
        for opcode, _, content in _records(summary, summary_start):
            if opcode == OP_CHUNK_INDEX:
                start_ns, end_ns, offset, length = CHUNK_INDEX_HEAD.unpack_from(content)
                locations.append((offset, length, start_ns, end_ns))
    return locations


def _scanned_chunks(handle: BinaryIO, size: int) -> list[tuple[int, int, int, int]]:
    """(offset, length, start_ns, end_ns) of every chunk record in the data section, found by scanning it."""
    locations = []
    handle.seek(len(MAGIC))
    data = handle.read(size - len(MAGIC) * 2 - FOOTER.size)
    for opcode, offset, content in _records(data, len(MAGIC)):
        if opcode == OP_CHUNK:
            start_ns, end_ns = CHUNK_HEADER.unpack_from(content)[:2]
            locations.append((offset, RECORD_HEADER.size + len(content), start_ns, end_ns))
    return locations


def _chunk_locations(handle: BinaryIO, size: int, summary_start: int) -> list[tuple[int, int, int, int]]:
    """(offset, length, start_ns, end_ns) of every chunk: from the summary's chunk index, else (no summary, or one
    without a chunk index) by scanning."""
    return _indexed_chunks(handle, size, summary_start) or _scanned_chunks(handle, size)


def _chunk_crcs(content: bytes) -> tuple[int, int]:
    """(stored CRC, CRC of the uncompressed records) of a chunk record's content."""
    _, _, uncompressed_size, stored = CHUNK_HEADER.unpack_from(content)
    position = CHUNK_HEADER.size
    (name_length,) = struct.unpack_from("<I", content, position)
    compression = content[position + 4:position + 4 + name_length].decode()
    position += 4 + name_length
    (records_length,) = struct.unpack_from("<Q", content, position)
    records = content[position + 8:position + 8 + records_length]
    if len(records) != records_length:
        raise ValueError("its records are cut off")
    raw = _decompress(records, compression, uncompressed_size)
    if len(raw) != uncompressed_size:
        raise ValueError(f"it decompresses to {len(raw)} bytes, not {uncompressed_size}")
    return stored, zlib.crc32(raw)


def _read_chunk(handle: BinaryIO, offset: int, length: int) -> bytes:
    """A chunk record's content; ``ValueError`` when no chunk record of that length starts at ``offset``."""
    handle.seek(offset)
    record = handle.read(length)
    if len(record) != length or length < RECORD_HEADER.size + CHUNK_HEADER.size:
        raise ValueError("lies past the end of the file")
    opcode, content_length = RECORD_HEADER.unpack_from(record)
    if opcode != OP_CHUNK or content_length != length - RECORD_HEADER.size:
        raise ValueError("has an overwritten record header")
    return record[RECORD_HEADER.size:]


def verify_mcap(path: Path, report: IntegrityReport) -> None:
    """Check one MCAP file's summary CRC and chunk CRCs into ``report``."""
    with open(path, "rb") as handle:
        size = path.stat().st_size
        try:
            summary_start, summary_crc = _footer(handle, size)
            if summary_start and summary_crc:
                handle.seek(summary_start)
                covered = handle.read(size - len(MAGIC) - 4 - summary_start)
                if zlib.crc32(covered) != summary_crc:
                    raise ValueError(f"its summary section (the chunk index, bytes {summary_start} .. "
                                     f"{size - len(MAGIC) - FOOTER.size}) fails its CRC check")
            chunks = _indexed_chunks(handle, size, summary_start)
            indexed = bool(chunks)
            chunks = chunks or _scanned_chunks(handle, size)
        except (ValueError, struct.error) as error:
            report.problems.append(f"{path.name}: {error}")
            return
        if chunks and not indexed:
            report.unindexed_files.append(path)
        for index, (offset, length, start_ns, end_ns) in enumerate(chunks):
            try:
                stored, computed = _chunk_crcs(_read_chunk(handle, offset, length))
            except (ValueError, struct.error, UnicodeDecodeError) as error:
                report.damaged.append(DamagedChunk(path, index, offset, start_ns, end_ns, str(error)))
                continue
            if stored == 0:
                report.unchecked_chunks += 1
            elif stored != computed:
                report.damaged.append(DamagedChunk(path, index, offset, start_ns, end_ns, "fails its CRC check"))
            else:
                report.checked_chunks += 1


def verify_sqlite(path: Path, report: IntegrityReport) -> None:
    """``PRAGMA integrity_check`` of one sqlite3 storage file into ``report`` (opened read-only)."""
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as connection:
            rows = [row[0] for row in connection.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as error:
        rows = [str(error)]
    if rows != ["ok"]:
        lines = [line for row in rows for line in str(row).splitlines() if not line.startswith("***")]
        more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
        report.problems.append(f"{path.name}: sqlite3 integrity check failed: {'; '.join(lines[:3])}{more}")


def verify_bag(path: str | Path) -> IntegrityReport:
    """Check every storage file of the bag at ``path`` (those metadata.yaml lists): a listed file that is
    missing or a metadata.yaml that cannot be read is a problem; a file compressed as a whole is listed in
    ``unchecked_files``."""
    report = IntegrityReport()
    try:
        files = bag_files(Path(path))
    except ValueError as error:
        report.problems.append(str(error))
        return report
    for file in files:
        if file.suffix not in STORAGE_OF_SUFFIX and file.is_file():
            report.unchecked_files.append(file)
        elif not file.is_file():
            report.problems.append(f"{file.name}: listed in {METADATA_FILE} but not in the bag folder")
        else:
            (verify_sqlite if file.suffix == ".db3" else verify_mcap)(file, report)
    return report


def stamp_mcap_crcs(path: Path) -> None:
    """Write the chunk CRCs and the summary CRC into an MCAP file that was written without them."""
    with open(path, "r+b") as handle:
        size = path.stat().st_size
        summary_start, _ = _footer(handle, size)
        for offset, length, _, _ in _chunk_locations(handle, size, summary_start):
            _, computed = _chunk_crcs(_read_chunk(handle, offset, length))
            handle.seek(offset + CHUNK_CRC_OFFSET)
            handle.write(struct.pack("<I", computed))
        if summary_start:
            handle.seek(summary_start)
            covered = handle.read(size - len(MAGIC) - 4 - summary_start)
            handle.seek(size - len(MAGIC) - 4)
            handle.write(struct.pack("<I", zlib.crc32(covered)))

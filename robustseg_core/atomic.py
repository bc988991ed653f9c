"""Atomic file writes: a temporary file in the target's folder, fsync, then rename over the target.

A crash or an error mid-write leaves the previous file (or none) in place, never a truncated one,
and no temporary file behind; a process killed mid-write (SIGKILL, power loss) leaves its temporary
file, which :func:`remove_stale_temporaries` deletes on the next start. Written files are readable by
everyone (0644), like a plain ``open``. A write that fails (no space, read-only folder, file size limit)
raises ``OSError`` naming the target file.

Tests kill a real writer mid-write with ``ROBUSTSEG_TEST_KILL_IN_WRITE=<file name>:<n>``: the ``n``-th
atomic write of a file of that name in the process truncates its temporary file to half and sends
itself SIGKILL before the rename.
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, NoReturn

FILE_MODE = 0o644
TEMPORARY_PREFIX, TEMPORARY_SUFFIX = ".", ".tmp"
#: ``.<target name>.<8 random characters from mkstemp>.tmp``
TEMPORARY_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
KILL_HOOK_ENVIRONMENT = "ROBUSTSEG_TEST_KILL_IN_WRITE"
_writes_by_name: Counter = Counter()


def _raise_naming(error: OSError, path: Path) -> NoReturn:
    """Raise ``error``, as an ``OSError`` naming ``path`` when it names no file (a failed ``write`` or
    ``fsync``) or only the temporary file."""
    if error.filename is not None and not TEMPORARY_NAME.match(Path(str(error.filename)).name):
        raise error
    raise OSError(error.errno, error.strerror or str(error), str(path)) from error


def _kill_hook(path: Path, temp_name: str) -> None:
    """The test hook of the module docstring (no effect unless its environment variable is set)."""
    spec = os.environ.get(KILL_HOOK_ENVIRONMENT)
    if not spec:
        return
    name, _, count = spec.rpartition(":")
    if path.name != name:
        return
    _writes_by_name[name] += 1
    if _writes_by_name[name] == int(count):
        os.truncate(temp_name, os.path.getsize(temp_name) // 2)
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing; on a clean exit it replaces ``path``."""
    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f"{TEMPORARY_PREFIX}{path.name}.", suffix=TEMPORARY_SUFFIX,
                                             dir=path.parent)
    except OSError as error:
        _raise_naming(error, path)
    try:
        with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as file:
            yield file
            file.flush()
            _kill_hook(path, temp_name)
            os.fsync(file.fileno())
        os.chmod(temp_name, FILE_MODE)
        os.replace(temp_name, path)
    except BaseException as error:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        if isinstance(error, OSError):
            _raise_naming(error, path)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as file:
        file.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as file:
        file.write(text)


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in ``folder`` (and, with ``recursive``,
    its sub-folders); returns them. Call it only while no other process writes there (hold the folder's lock)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(f"{TEMPORARY_PREFIX}*{TEMPORARY_SUFFIX}") if recursive else \
        folder.glob(f"{TEMPORARY_PREFIX}*{TEMPORARY_SUFFIX}")
    removed = []
    for candidate in candidates:
        if TEMPORARY_NAME.match(candidate.name) and candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return sorted(removed)

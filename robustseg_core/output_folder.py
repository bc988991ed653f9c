"""An output folder a command owns while it runs: checked writable at the start, locked against a second run.

``FolderLock`` holds ``<folder>/.lock`` with an exclusive ``flock`` for the life of the process and writes
into it who holds it (PID, host, start time, command). A second process asking for the same folder gets
``FolderLocked`` naming the holder. The kernel releases a ``flock`` when its process dies, however it dies,
so a lock file left by a dead process is taken over (with a note on stderr); one written on another host
is not (``flock`` may not reach across hosts on network file systems): the error says to delete it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from .errors import UsageError, UserError

LOCK_NAME = ".lock"


class FolderLocked(UserError):
    """Another run holds the output folder; the message names it (PID, host, since, command)."""


class NotWritable(UserError):
    """The output folder cannot be written (read-only, no permission, no space); the message names it."""


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (with its parents) and write and delete a probe file in it; ``NotWritable`` naming
    the folder and the reason when that fails. Returns the folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotWritable(f"output folder {folder} is a file, not a folder; choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write_probe.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise NotWritable(f"output folder {folder} is not writable: {error.strerror or error}") from error
    return folder


def check_not_an_input(option: str, output: str | os.PathLike | None, inputs, what: str) -> None:
    """``UsageError`` when ``output`` (the path of ``option``; None or "": not written) is one of ``inputs``
    (paths): writing it would destroy ``what`` it is read from."""
    if output and Path(output).resolve() in {Path(path).resolve() for path in inputs}:
        raise UsageError(f"{option} {output}: is {what}; write it elsewhere")


def check_free_space(folder: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """``NotWritable`` when the file system of ``folder`` has less than ``needed_bytes`` free for ``what``."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise NotWritable(f"output folder {folder} has {free / 1e6:.1f} MB free; writing {what} takes about "
                          f"{needed_bytes / 1e6:.1f} MB")


def _describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["started"])) if "started" in holder else "?"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {since} "
            f"({holder.get('command', 'unknown command')})")


class FolderLock:
    """The exclusive lock of one output folder (context manager): ``acquire()``, ``release()``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._handle: int | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def _read_holder(self, handle: int) -> dict:
        try:
            return json.loads(os.pread(handle, 65536, 0).decode() or "{}")
        except (ValueError, UnicodeDecodeError):
            return {}

    def acquire(self) -> None:
        """Take the lock, or raise ``FolderLocked`` naming its live holder."""
        check_writable(self.folder)
        while True:
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = self._read_holder(handle)
                os.close(handle)
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise FolderLocked(f"{self.folder} is in use by {_describe(holder)}; wait for that run to end or "
                                   f"choose another output folder") from None
            try:  # the holder before us may have deleted the file after we opened it: lock the file on disk
                same_file = os.path.samestat(os.fstat(handle), os.stat(self.path))
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(handle)
        holder = self._read_holder(handle)
        if holder.get("host") not in (None, socket.gethostname()):
            fcntl.flock(handle, fcntl.LOCK_UN)
            os.close(handle)
            raise FolderLocked(f"{self.folder} is locked by {_describe(holder)} (another host, whose process this "
                               f"host cannot see); delete {self.path} if no run is active there")
        if holder:
            print(f"note: {self.folder}: taking over the lock of {_describe(holder)}, which is no longer running",
                  file=sys.stderr, flush=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": " ".join(sys.argv)}
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(record).encode(), 0)
        os.fsync(handle)
        self._handle = handle

    def release(self) -> None:
        """Delete the lock file and release the lock (no effect when not held)."""
        if self._handle is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        os.close(self._handle)
        self._handle = None

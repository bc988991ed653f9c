"""The errors a user can cause and fix: each console script reports them as one line, no traceback.

Every project error derives from ``UserError``: ``ConfigError``, ``CheckpointError``, ``DatasetError``,
``BagError``, ``TrainingDiverged``, ``RunFolderLocked``... ``exit_status`` is the console script's exit
status: 2 for usage and configuration errors (``UsageError``), 1 for the others, 130 for an interrupted
run. The message names the input and the problem; ``robustseg_core.cli`` prints it.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path


class UserError(Exception):
    """An error in the user's input or environment (a file, a folder, a checkpoint, a bag); exit status 1."""

    exit_status = 1


class UsageError(UserError):
    """Invalid arguments, options, parameters or configuration; exit status 2 (as argparse uses)."""

    exit_status = 2


class Interrupted(UserError):
    """The user stopped the command (Ctrl-C); exit status 130 (128 + SIGINT), as a shell reports it."""

    exit_status = 130


def cause(error: BaseException, limit: int = 160) -> str:
    """``"<type>: <first line of the message>"`` of a library's exception, cut to ``limit`` characters, for the
    parenthesis of a one-line message (some libraries explain themselves over many lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def torch_load_failure(path: Path, error: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, for the parenthesis of a one-line message: in the
    user's terms rather than torch's advice to retry with an unsafe load."""
    if not zipfile.is_zipfile(path):
        return "not the zip archive torch.save writes, or cut short"
    unpickler_detail = str(error).partition("WeightsUnpickler error:")[2].strip()
    if unpickler_detail:
        return f"holds Python objects a weights-only load refuses: {unpickler_detail.splitlines()[0]}"
    return cause(error)


def archive_damage(path: Path) -> str | None:
    """What is damaged in the zip archive ``torch.save`` wrote at ``path``: the first member whose bytes do not
    match their CRC-32 (a bit flip on disk, an interrupted copy), which ``torch.load`` does not check and would
    load as wrong weights. Members recorded with a CRC of 0 (``torch.serialization.set_crc32_options(False)``
    writes no checksums) cannot be checked and pass. None when intact, or when not such an archive
    (``torch.load`` then says why)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.CRC == 0:
                    continue
                try:
                    with archive.open(info) as member:
                        while member.read(1 << 20):
                            pass
                except zipfile.BadZipFile:  # zipfile compares the CRC-32 when the member is read to its end
                    return f"{info.filename} does not match its CRC-32 checksum: damaged on disk or in a copy"
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error):
        return None
    return None

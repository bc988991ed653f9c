"""Scalar logging to CSV files (always) and TensorBoard (when the tensorboard package is installed)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Mapping

from ..atomic import write_text_atomic


class ScalarLogger:
    """Appends rows of scalars to ``<dir>/<stream>.csv``; mirrors them to TensorBoard if available
    (one run per stream, ``<dir>/tensorboard/<stream>``, tags ``<stream>/<key>``).

    The columns of a stream start as its first row's (or the existing file's header when a resumed run
    appends); a later row with a new column widens the header (the file is rewritten atomically, earlier
    rows blank in that column), a missing one is blank. Columns come and go legitimately: per-term
    gradient norms appear only every ``grad_norm_every`` steps, which a resumed run may change, and a
    run continued in a fresh folder may first log a step without them.

    ``first_steps`` (stream -> step) is where this run starts each stream: rows of an existing file at
    or after that step, which an interrupted run wrote before its last checkpoint was made, are dropped
    when the stream is first written (and TensorBoard purges its events from that step), so each step is
    logged once however often the run was interrupted and resumed.
    """

    def __init__(self, directory: str | os.PathLike, tensorboard: bool = True,
                 first_steps: Mapping[str, int] | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.first_steps = dict(first_steps or {})
        self.columns: dict[str, list[str]] = {}
        self.writers: dict[str, object] = {}
        self.summary_writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                pass
            else:
                self.summary_writer = SummaryWriter

    @staticmethod
    def _complete_rows(path: Path) -> tuple[str, list[str], list[dict]]:
        """``(text, header, rows)`` of a CSV file without a partial last line (a process killed mid-row)."""
        text = path.read_text(encoding="utf-8")
        reader = csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1], newline=""))
        return text, list(reader.fieldnames or ()), list(reader)

    @staticmethod
    def _rewrite(path: Path, columns: list[str], rows: list[dict]) -> None:
        rewritten = io.StringIO()
        writer = csv.DictWriter(rewritten, fieldnames=columns, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(path, rewritten.getvalue())

    def _open_stream(self, stream: str, path: Path, row: Mapping) -> None:
        """Set the stream's columns, dropping rows at or after its first step from an existing file."""
        first = self.first_steps.get(stream)
        if path.exists() and path.stat().st_size > 0:
            text, columns, rows = self._complete_rows(path)
            columns = columns or list(row)
            kept = [r for r in rows if first is None or int(r["step"]) < first]
            if not text.endswith("\n") or first is not None:
                self._rewrite(path, columns, kept)
            self.columns[stream] = columns
        else:
            self.columns[stream] = list(row)
            with open(path, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(self.columns[stream])
        if self.summary_writer is not None:
            self.writers[stream] = self.summary_writer(str(self.directory / "tensorboard" / stream), purge_step=first)

    def log(self, stream: str, step: int, values: Mapping[str, float]) -> None:
        """Write one row ``{"step": step, **values}`` to ``stream``."""
        row = {"step": step, **{key: float(value) for key, value in values.items()}}
        path = self.directory / f"{stream}.csv"
        if stream not in self.columns:
            self._open_stream(stream, path, row)
        new_columns = [key for key in row if key not in self.columns[stream]]
        if new_columns:
            self.columns[stream] += new_columns
            self._rewrite(path, self.columns[stream], self._complete_rows(path)[2])
        with open(path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=self.columns[stream]).writerow(row)
        writer = self.writers.get(stream)
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(f"{stream}/{key}", float(value), step)

    def flush(self) -> None:
        """Write TensorBoard's buffered events to disk (it buffers up to two minutes); the CSV rows are written
        at once. Called before each ``last.pt``, since a resume never logs the steps before it again."""
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()

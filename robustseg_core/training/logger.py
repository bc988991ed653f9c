"""Scalar logging to CSV files (always) and TensorBoard (when the tensorboard package is installed)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Mapping


class ScalarLogger:
    """Appends rows of scalars to ``<dir>/<stream>.csv``; mirrors them to TensorBoard if available.

    The columns of a stream are fixed by its first row (or by the existing file's header when a
    resumed run appends); a later row with an unknown column is an error, a missing one is blank.
    """

    def __init__(self, directory: str | os.PathLike, tensorboard: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.columns: dict[str, list[str]] = {}
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.writer = None
            else:
                self.writer = SummaryWriter(str(self.directory / "tensorboard"))

    def log(self, stream: str, step: int, values: Mapping[str, float]) -> None:
        """Write one row ``{"step": step, **values}`` to ``stream``."""
        row = {"step": step, **{key: float(value) for key, value in values.items()}}
        path = self.directory / f"{stream}.csv"
        if stream not in self.columns:
            if path.exists() and path.stat().st_size > 0:
                with open(path, newline="", encoding="utf-8") as handle:
                    self.columns[stream] = next(csv.reader(handle))
            else:
                self.columns[stream] = list(row)
                with open(path, "w", newline="", encoding="utf-8") as handle:
                    csv.writer(handle).writerow(self.columns[stream])
        unknown = set(row) - set(self.columns[stream])
        if unknown:
            raise ValueError(f"{path}: unknown columns {sorted(unknown)}; the file has {self.columns[stream]}")
        with open(path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=self.columns[stream]).writerow(row)
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{stream}/{key}", float(value), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

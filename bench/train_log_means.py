"""Mean of every logged column of training runs' ``train.csv`` over a step range: the loss terms and their
gradient norms late in training, side by side for several runs; with ``--log val.csv``, the validation
scores (mIoU %, one row per epoch, ``step`` is the epoch) over an epoch range instead.

    python bench/train_log_means.py --steps 480 959 runs/budget_faithful/S_seed0 runs/budget_continued/S_seed0
    python bench/train_log_means.py --log val.csv --steps 310 319 runs/long320/SPCR_seed1

Rows are the logged steps (every ``train.log_every``-th) with ``first <= step <= last``; empty cells (a term
the recipe does not have) are left out of the mean.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path


def column_means(log_csv: Path, first: int, last: int) -> tuple[int, dict[str, float]]:
    """(number of rows in the range, mean of each column but step and epoch)."""
    if not log_csv.is_file():
        raise SystemExit(f"train_log_means: error: {log_csv}: no such file (a run folder holds train.csv and val.csv)")
    with open(log_csv, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if first <= int(row["step"]) <= last]
    columns = [name for name in (rows[0] if rows else {}) if name not in ("step", "epoch")]
    return len(rows), {name: statistics.mean(float(row[name]) for row in rows if row[name])
                       for name in columns if any(row[name] for row in rows)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs=2, metavar=("FIRST", "LAST"), required=True)
    parser.add_argument("--log", default="train.csv", choices=("train.csv", "val.csv"),
                        help="the run's log to average (default: %(default)s)")
    parser.add_argument("runs", type=Path, nargs="+", help="run folders (with the log)")
    args = parser.parse_args(argv)
    for run in args.runs:
        count, means = column_means(run / args.log, *args.steps)
        print(f"{run} (steps {args.steps[0]}-{args.steps[1]}, {count} rows): "
              + ", ".join(f"{name} {value:.2f}" for name, value in means.items()))


if __name__ == "__main__":
    sys.exit(main())

"""Each student against its own teacher on the test split: RDEL and the mean of the 15 combinations (drop
convention), fusing every present modality and, where the evaluation has it, with the validated fusion
policy; the gaps beside issue 10's targets (RDEL within 1.5 points of the teacher, mean of 15 at least 8
above it) and mean ± std over the pairs (of the students' scores and of the gaps).

    python bench/teacher_gap.py \\
        --pair runs/long80/teacher_seed0/eval_test.json runs/long240_bn/SPCR_seed0/eval_test.json \\
        --pair runs/long80/teacher_seed1/eval_test.json runs/long240_bn/SPCR_seed1/eval_test.json

Inputs are ``evaluate --json`` results of the test split; the student's holds the policy's results when it
was evaluated with ``--fusion-policy validated``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

RDEL_TARGET = -1.5  # student RDEL minus teacher RDEL, at least
MEAN_TARGET = 8.0  # student mean of 15 minus teacher mean of 15, at least


def headline(result: dict, policy: bool) -> tuple[float, float] | None:
    """(RDEL, mean of 15) in mIoU %, fusing all present modalities or (``policy``) as the validated policy
    fused them; None when the evaluation has no policy results."""
    if policy:
        if "fusion_policy" not in result:
            return None
        drop = result["fusion_policy"]["results"]["drop"]
    else:
        drop = result["results"]["drop"]
    return drop["combinations"]["RDEL"]["miou"], drop["mean_miou"]


def load(path: Path) -> dict:
    """An ``evaluate --json`` result of the test split; exits with one line naming the file otherwise."""
    try:
        result = json.loads(path.read_text())
        split = result["split"]
        headline(result, policy=False)
    except (OSError, ValueError, KeyError, TypeError) as error:
        sys.exit(f"teacher_gap: error: {path}: not an evaluate --json result ({type(error).__name__}: {error})")
    if split != "test":
        sys.exit(f"teacher_gap: error: {path}: evaluates the {split!r} split, not 'test'")
    return result


def spread(values: list[float], signed: bool = True) -> str:
    """Mean ± sample std (the mean alone for one value), with its sign when ``signed`` (a gap)."""
    mean = f"{statistics.mean(values):+.2f}" if signed else f"{statistics.mean(values):.2f}"
    return mean if len(values) == 1 else f"{mean} ± {statistics.stdev(values):.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", nargs=2, type=Path, action="append", required=True, metavar=("TEACHER", "STUDENT"),
                        help="evaluate --json results of a teacher and of a student distilled from it")
    args = parser.parse_args(argv)
    pairs = [(load(teacher), student, load(student)) for teacher, student in args.pair]
    print("| student | teacher RDEL / mean | fusion | student RDEL / mean | RDEL gap (≥ −1.5) | mean gap (≥ +8) |")
    print("|---|---|---|---|---:|---:|")
    gaps: dict[str, list[tuple[float, float]]] = {"all": [], "validated": []}
    scores: dict[str, list[tuple[float, float]]] = {"all": [], "validated": []}
    for teacher, student_path, student in pairs:
        teacher_rdel, teacher_mean = headline(teacher, policy=False)
        for fusion in gaps:
            measured = headline(student, policy=fusion == "validated")
            if measured is None:
                continue
            rdel_gap, mean_gap = measured[0] - teacher_rdel, measured[1] - teacher_mean
            gaps[fusion].append((rdel_gap, mean_gap))
            scores[fusion].append(measured)
            marks = ["met" if rdel_gap >= RDEL_TARGET else "not met", "met" if mean_gap >= MEAN_TARGET else "not met"]
            print(f"| {student_path} | {teacher_rdel:.2f} / {teacher_mean:.2f} | {fusion} | {measured[0]:.2f} / "
                  f"{measured[1]:.2f} | {rdel_gap:+.2f} ({marks[0]}) | {mean_gap:+.2f} ({marks[1]}) |")
    for fusion, measured_gaps in gaps.items():
        if measured_gaps:
            rdel, mean = (spread([score[i] for score in scores[fusion]], signed=False) for i in (0, 1))
            print(f"| mean over {len(measured_gaps)} | | {fusion} | {rdel} / {mean} | "
                  f"{spread([gap[0] for gap in measured_gaps])} | {spread([gap[1] for gap in measured_gaps])} |")


if __name__ == "__main__":
    main()

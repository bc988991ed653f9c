"""bench/teacher_gap.py: the gap figures of docs/results.md, student against its own teacher, from evaluation JSONs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def evaluation(path: Path, rdel: float, mean: float, policy: tuple[float, float] | None = None, split: str = "test"):
    drop = {"combinations": {"RDEL": {"miou": rdel}}, "mean_miou": mean}
    result = {"split": split, "results": {"drop": drop}}
    if policy is not None:
        result["fusion_policy"] = {"policy": "validated", "min_gain": 0.5, "results": {"drop": {
            "combinations": {"RDEL": {"miou": policy[0]}}, "mean_miou": policy[1]}}}
    path.write_text(json.dumps(result))
    return path


def teacher_gap(*pairs: tuple[Path, Path]) -> subprocess.CompletedProcess:
    argv = [item for pair in pairs for item in ("--pair", str(pair[0]), str(pair[1]))]
    return subprocess.run([sys.executable, str(ROOT / "bench" / "teacher_gap.py"), *argv], text=True,
                          capture_output=True, timeout=60, check=False)


def test_gaps_per_pair_with_and_without_the_policy_and_their_mean(tmp_path):
    teachers = [evaluation(tmp_path / f"teacher{seed}.json", 38.0, 21.0) for seed in (0, 1)]
    students = [evaluation(tmp_path / "student0.json", 36.0, 29.5, policy=(37.0, 29.0)),
                evaluation(tmp_path / "student1.json", 35.0, 28.5)]
    done = teacher_gap(*zip(teachers, students))
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()
    assert "| all | 36.00 / 29.50 | -2.00 (not met) | +8.50 (met) |" in rows[2]
    assert "| validated | 37.00 / 29.00 | -1.00 (met) | +8.00 (met) |" in rows[3]
    assert "| all | 35.00 / 28.50 | -3.00 (not met) | +7.50 (not met) |" in rows[4]
    assert rows[5] == "| mean over 2 | | all | 35.50 ± 0.71 / 29.00 ± 0.71 | -2.50 ± 0.71 | +8.00 ± 0.71 |"
    assert rows[6] == "| mean over 1 | | validated | 37.00 / 29.00 | -1.00 | +8.00 |"


def test_a_result_of_another_split_or_not_a_result_is_named(tmp_path):
    teacher = evaluation(tmp_path / "teacher.json", 38.0, 21.0)
    validation = evaluation(tmp_path / "val.json", 36.0, 29.0, split="val")
    done = teacher_gap((teacher, validation))
    assert done.returncode != 0 and f"{validation}: evaluates the 'val' split, not 'test'" in done.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    done = teacher_gap((teacher, broken))
    assert done.returncode != 0 and f"{broken}: not an evaluate --json result" in done.stderr

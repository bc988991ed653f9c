"""The ablation driver: trains, evaluates, aggregates, and skips finished runs when re-run."""

from __future__ import annotations

import re
import shutil

import pytest

from robustseg_core.errors import UsageError
from robustseg_core.models.checkpoint import load_checkpoint, save_checkpoint
from robustseg_core.training.ablation import main as ablation

TINY = ["data.crop_size=64", "data.eval_size=64", "data.batch_size=2", "data.eval_batch_size=4", "data.workers=0",
        "model.embed_dim=32", "train.epochs=1", "train.device=cpu", "train.tensorboard=false",
        "train.grad_norm_every=0", "distill.rrm_samples=2"]


def test_ablation_runs_skips_and_tabulates(mini_dataset, tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--data-root", str(mini_dataset), "--seeds", "0", "1", "--methods", "teacher", "S",
            "--set", *TINY]
    results = ablation(argv)
    assert [len(runs) for runs in results.values()] == [2, 2]
    table = (tmp_path / "ablation.md").read_text()
    assert "| teacher | 2 |" in table and "| S | 2 |" in table and "±" in table
    assert (tmp_path / "S_seed1" / "eval_test.json").exists()
    capsys.readouterr()
    again = ablation(argv)
    assert "epoch 0" not in capsys.readouterr().out  # nothing retrained
    assert again == results

    # a longer budget for a run that was interrupted (here: before its evaluation) resumes only when allowed
    (tmp_path / "S_seed1" / "eval_test.json").unlink()
    longer = ["--out", str(tmp_path), "--data-root", str(mini_dataset), "--seeds", "1", "--methods", "S",
              "--set", *TINY, "train.epochs=2"]
    with pytest.raises(ValueError, match=r"train\.epochs: 1 -> 2.*--allow-config-change"):
        ablation(longer)
    capsys.readouterr()
    ablation([*longer, "--allow-config-change"])
    assert "changed config: train.epochs: 1 -> 2" in capsys.readouterr().out
    assert len((tmp_path / "S_seed1" / "epochs.csv").read_text().splitlines()) == 3, "header + epochs 0 and 1"


def test_parallel_ablation_trains_students_after_their_teacher(mini_dataset, tmp_path):
    argv = ["--out", str(tmp_path), "--data-root", str(mini_dataset), "--seeds", "0", "--methods", "teacher", "S",
            "--jobs", "2", "--set", *TINY, "--student-set", "train.epochs=1"]
    results = ablation(argv)
    assert [len(runs) for runs in results.values()] == [1, 1]
    assert "student S" in (tmp_path / "S_seed0.log").read_text()
    assert (tmp_path / "teacher_seed0" / "best.pt").stat().st_mtime < (tmp_path / "S_seed0" / "best.pt").stat().st_mtime

    variant = ablation(["--out", str(tmp_path / "variant"), "--teachers", str(tmp_path), "--data-root", str(mini_dataset),
                        "--seeds", "0", "--methods", "teacher", "S", "--set", *TINY, "--student-set",
                        "distill.kl_weight=0"])
    assert not (tmp_path / "variant" / "teacher_seed0" / "best.pt").exists(), "the earlier run's teacher is reused"
    assert variant["teacher"] == results["teacher"], "the teacher row is that teacher, evaluated"
    assert variant["S"][0] != results["S"][0]

    # a teacher whose last.pt has not trained all its epochs teaches no student
    unfinished = tmp_path / "unfinished" / "teacher_seed0"
    unfinished.mkdir(parents=True)
    last = load_checkpoint(tmp_path / "teacher_seed0" / "last.pt")
    last["meta"]["config"]["train"]["epochs"] = 3
    save_checkpoint(unfinished / "last.pt", last)
    shutil.copy(tmp_path / "teacher_seed0" / "best.pt", unfinished / "best.pt")
    with pytest.raises(UsageError, match=r"teacher .*teacher_seed0/best.pt is not finished \(1 of 3 epochs"):
        ablation(["--out", str(tmp_path / "variant2"), "--teachers", str(unfinished.parent), "--data-root",
                  str(mini_dataset), "--seeds", "0", "--methods", "S", "--set", *TINY])
    assert not (tmp_path / "variant2" / "S_seed0").exists()


@pytest.mark.parametrize("option, override, message", [
    ("--student-set", "distill.no_such_key=1", "--student-set: unknown key distill.no_such_key"),
    ("--set", "trian.epochs=2", "--set: unknown section 'trian'"),
    ("--teacher-set", "distill.kl_weight=1", "--teacher-set: unknown section 'distill'"),
    ("--set", "train.epochs=many", "--set: train.epochs must be a number"),
    ("--set", "train.seed=5", "--set train.seed: the ablation sets it for each run; use --seeds"),
    ("--student-set", "data.root=/elsewhere", "--student-set data.root: the ablation sets it for each run; use --data-root"),
])
def test_overrides_are_checked_before_any_run(mini_dataset, tmp_path, option, override, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        ablation(["--out", str(tmp_path / "out"), "--data-root", str(mini_dataset), "--seeds", "0", option, override])
    assert not (tmp_path / "out").exists()


def test_parallel_ablation_names_the_failed_run_and_its_log(mini_dataset, tmp_path):
    argv = ["--out", str(tmp_path), "--data-root", str(mini_dataset), "--seeds", "3", "--methods", "S",
            "--jobs", "2", "--set", *TINY]
    with pytest.raises(RuntimeError, match=r"ablation run S seed 3 failed .*S_seed3\.log"):
        ablation(argv)
    assert "teacher_seed3" in (tmp_path / "S_seed3.log").read_text()

    # a run that finished before another failed leaves its result, but no summary of an unfinished ablation
    with pytest.raises(RuntimeError, match=r"ablation run S seed 3 failed"):
        ablation(["--out", str(tmp_path), "--data-root", str(mini_dataset), "--seeds", "3", "--methods", "teacher", "S",
                  "--jobs", "2", "--set", *TINY, "--student-set", "distill.kl_temperature=0"])
    assert (tmp_path / "teacher_seed3" / "eval_test.json").exists()
    assert not (tmp_path / "ablation.json").exists() and not (tmp_path / "ablation.md").exists()


def test_paired_differences_are_per_seed_against_s():
    from robustseg_core.training.ablation import paired_differences

    def run(rdel, mean):
        combos = {"RDEL": {"miou": rdel}, "EL": {"miou": 1.0}}
        return {"results": {"drop": {"combinations": combos, "mean_miou": mean}}, "robustness": {"EMM": {"mean": 2.0}}}

    results = {"S": [run(30.0, 20.0), run(32.0, 21.0)], "SPCR": [run(31.0, 22.5), run(31.5, 21.5)]}
    text = paired_differences(results, [0, 1])
    assert "| SPCR − S | +0.25 ± 1.06 (+1.00, -0.50) | +1.50 ± 1.41 (+2.50, +0.50) |" in text
    assert "SR − S" not in text and paired_differences({"teacher": []}, [0]) == ""

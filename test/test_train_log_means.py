"""bench/train_log_means.py averages a run's training or validation log over a step (epoch) range."""

import pytest
from bench_scripts import load_bench_script

train_log_means = load_bench_script("train_log_means")


def test_validation_scores_are_averaged_over_the_epoch_range(tmp_path, capsys):
    run = tmp_path / "SPCR_seed1"
    run.mkdir()
    (run / "val.csv").write_text("step,miou_RDEL,score\n8,30.0,27.0\n9,32.0,28.0\n10,34.0,29.5\n")
    train_log_means.main(["--log", "val.csv", "--steps", "9", "10", str(run)])
    assert capsys.readouterr().out.strip() == f"{run} (steps 9-10, 2 rows): miou_RDEL 33.00, score 28.75"


def test_a_missing_log_is_named(tmp_path):
    with pytest.raises(SystemExit, match=r"SPCR_seed1/val.csv: no such file"):
        train_log_means.main(["--log", "val.csv", "--steps", "0", "1", str(tmp_path / "SPCR_seed1")])

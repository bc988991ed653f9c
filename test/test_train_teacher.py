"""Real training steps of the teacher: a short run, resume, divergence and DDP with two CPU processes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustseg_core.models.checkpoint import load_checkpoint
from robustseg_core.training import engine
from robustseg_core.training.engine import TrainingDiverged, check_finite
from robustseg_core.training.train_teacher import main as train_teacher


def tiny_overrides(root: Path, output: Path, epochs: int) -> list[str]:
    return [
        f"data.root={root}", "data.crop_size=64", "data.eval_size=64", "data.batch_size=2", "data.eval_batch_size=4",
        "data.workers=0", "model.preset=mit_cpu", "model.embed_dim=32", "optim.lr=1e-3", "optim.warmup_epochs=1",
        f"train.epochs={epochs}", f"train.output_dir={output}", "train.log_every=1", "train.device=cpu",
        "train.tensorboard=false",
    ]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_short_run_writes_checkpoints_logs_and_resumes_identically(mini_dataset, tmp_path, monkeypatch):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    best = train_teacher(["--set", *tiny_overrides(mini_dataset, straight, 3)])
    assert 0.0 <= best["miou_RDEL"] <= 100.0 and best["score"] == best["miou_RDEL"]
    assert {"last.pt", "best.pt", "config.yaml", "train.csv", "val.csv"} <= {p.name for p in straight.iterdir()}
    assert [row["step"] for row in read_rows(straight / "val.csv")] == ["0", "1", "2"]
    assert {"loss", "lr", "epoch"} <= set(read_rows(straight / "train.csv")[0])

    calls = []

    def crash_in_third_validation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash during epoch 2")
        return real_validate(*args, **kwargs)

    real_validate = engine.validate
    monkeypatch.setattr(engine, "validate", crash_in_third_validation)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(["--set", *tiny_overrides(mini_dataset, interrupted, 3)])
    assert load_checkpoint(interrupted / "last.pt")["epoch"] == 1
    train_teacher(["--set", *tiny_overrides(mini_dataset, interrupted, 3), "--resume", "auto"])
    assert [row["step"] for row in read_rows(interrupted / "val.csv")] == ["0", "1", "2"]
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(interrupted / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["meta"]["classes"][6] == "Road" and a["meta"]["config"]["model"]["preset"] == "mit_cpu"


def test_non_finite_loss_names_step_term_and_checkpoint(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"x")
    with pytest.raises(TrainingDiverged, match=r"step 7: loss term 'ohem_ce' is nan; last good checkpoint: .*last.pt"):
        check_finite({"ohem_ce": torch.tensor(float("nan"))}, 7, tmp_path / "last.pt")


def test_ddp_with_two_cpu_processes(mini_dataset, tmp_path):
    output = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "robustseg_core.training.train_teacher", "--set", *tiny_overrides(mini_dataset, output, 1),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cpu x2" in result.stdout and "1 steps/epoch" in result.stdout  # 6 frames / (2 per batch x 2 ranks)
    checkpoint = load_checkpoint(output / "last.pt")
    assert checkpoint["epoch"] == 0 and not any(k.startswith("module.") for k in checkpoint["model"])

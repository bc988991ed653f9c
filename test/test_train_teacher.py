"""Real training steps of the teacher: a short run; kills at any instant, Ctrl-C and resume ending with the
weights of an uninterrupted run; divergence; DDP with two CPU processes."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from robustseg_core.atomic import KILL_HOOK_ENVIRONMENT
from robustseg_core.losses import OhemCrossEntropy
from robustseg_core.models.checkpoint import load_checkpoint
from robustseg_core.training.config import load_config
from robustseg_core.training.distributed import setup_distributed
from robustseg_core.training.engine import TrainingDiverged, check_finite, fit
from robustseg_core.training.train_teacher import DEFAULTS, build_model, teacher_step
from robustseg_core.training.train_teacher import cli as train_teacher_cli
from robustseg_core.training.train_teacher import main as train_teacher

TEACHER = "robustseg_core.training.train_teacher"


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


def logged_steps(path: Path) -> list[int]:
    return [int(row["step"]) for row in read_rows(path)] if path.exists() else []


def wait_until(condition, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (state T in /proc/<pid>/stat)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "T"


def temporaries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(".tmp"))


def test_kills_at_any_instant_and_resumes_end_with_the_uninterrupted_weights(mini_dataset, tmp_path, commands, capsys):
    straight, run = tmp_path / "straight", tmp_path / "killed"
    best = train_teacher(["--set", *tiny_overrides(mini_dataset, straight, 3)])
    assert 0.0 <= best["miou_RDEL"] <= 100.0 and best["score"] == best["miou_RDEL"]
    assert {"last.pt", "best.pt", "config.yaml", "train.csv", "val.csv"} <= {p.name for p in straight.iterdir()}
    scores = [float(row["score"]) for row in read_rows(straight / "val.csv")]
    assert len(scores) == 3 and scores[1] > scores[0], "the kills below expect epoch 1 to set a new best"
    args = ["--set", *tiny_overrides(mini_dataset, run, 3)]
    resume = [*args, "--resume", "auto"]

    # 1. SIGKILL during epoch 0's steps: nothing saved yet
    pid = commands.start(TEACHER, args)
    wait_until(lambda: logged_steps(run / "train.csv"))
    os.kill(pid, signal.SIGKILL)
    assert commands.result().status == -signal.SIGKILL and not (run / "last.pt").exists()

    # 2. killed while writing epoch 1's best.pt, after its last.pt; the dead run's lock is taken over
    killed = commands.run(TEACHER, resume, env={KILL_HOOK_ENVIRONMENT: "best.pt:2"})
    assert killed.status == -signal.SIGKILL and f"taking over the lock of pid {pid}" in killed.stderr
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and load_checkpoint(run / "best.pt")["epoch"] == 0
    assert temporaries(run) and temporaries(run)[0].startswith(".best.pt.")

    # 3. the resume restores epoch 1's best.pt from last.pt, then is killed while writing epoch 2's last.pt
    killed = commands.run(TEACHER, resume, env={KILL_HOOK_ENVIRONMENT: "last.pt:1"})
    assert killed.status == -signal.SIGKILL and "restored" in killed.stdout and "removed" in killed.stderr
    assert load_checkpoint(run / "best.pt")["epoch"] == 1 and load_checkpoint(run / "last.pt")["epoch"] == 1

    # 4. Ctrl-C during epoch 2's steps: exit 130, one line with the resume command; a second run is refused
    # (it drops the rows 6..8 run 3 logged, logs step 6 again and stops itself there, holding the folder's lock)
    pid = commands.start(TEACHER, resume, stop_after_train_step=6)
    wait_until(lambda: stopped(pid))
    assert logged_steps(run / "train.csv") == list(range(7))
    capsys.readouterr()
    assert train_teacher_cli(resume) == 1
    assert f"train_teacher: error: {run} is in use by pid {pid}" in capsys.readouterr().err
    os.kill(pid, signal.SIGINT)  # pending while stopped: it arrives before step 7, whatever the load
    os.kill(pid, signal.SIGCONT)
    interrupted = commands.result()
    assert interrupted.status == 130 and "Traceback" not in interrupted.stderr
    assert interrupted.stderr.splitlines()[-1] == (
        f"train_teacher: interrupted: training stopped in epoch 2; {run / 'last.pt'} holds epoch 1 (nothing partial "
        f"was written); resume with: train_teacher {' '.join(args)} --resume auto")
    assert not temporaries(run)

    # 5. the last resume finishes: the weights, the best checkpoint and the logs of the uninterrupted run
    assert commands.run(TEACHER, resume).status == 0
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(straight / name), load_checkpoint(run / name)
        assert a["epoch"] == b["epoch"] and a["meta"]["scores"] == b["meta"]["scores"], name
        for key, tensor in a["model"].items():
            assert torch.equal(tensor, b["model"][key]), (name, key)
    assert logged_steps(run / "train.csv") == logged_steps(straight / "train.csv") == list(range(9))
    assert logged_steps(run / "val.csv") == logged_steps(run / "epochs.csv") == [0, 1, 2]
    assert not temporaries(run) and not (run / ".lock").exists()


def test_ctrl_c_before_the_first_epoch_prints_the_command_to_run_again(mini_dataset, tmp_path, monkeypatch, capsys):
    from robustseg_core.training import engine

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "resume_checkpoint", interrupted)  # Ctrl-C while a resumed run loads
    assert train_teacher_cli(["--set", *tiny_overrides(mini_dataset, tmp_path, 1)]) == 130
    error = capsys.readouterr().err
    assert "training stopped before its first epoch began; nothing partial was written" in error
    assert "run it again with: train_teacher --set" in error and "--resume auto" in error


def test_non_finite_loss_names_step_term_and_a_finite_checkpoint(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"x")  # not loadable: not a good checkpoint
    with pytest.raises(TrainingDiverged, match=r"step 7: loss term 'ohem_ce' is nan; last good checkpoint: none"):
        check_finite({"ohem_ce": torch.tensor(float("nan"))}, 7, tmp_path / "last.pt")


def test_a_nan_gradient_with_a_finite_loss_stops_before_the_step(mini_dataset, tmp_path):
    """The last step of epoch 1 (step 5) has a finite loss whose gradient is NaN: the message names the step, the
    term and last.pt of epoch 0, whose weights are finite; no epoch-1 checkpoint is written."""
    config = load_config(DEFAULTS, overrides=tiny_overrides(mini_dataset, tmp_path, 3))
    ctx = setup_distributed("cpu")
    model = build_model(config)
    teacher = teacher_step(OhemCrossEntropy(0.7))
    calls = []

    def step(model, batch):
        terms = teacher(model, batch)
        calls.append(1)
        weight = model.head.classifier.weight  # calls 6 and 7: step 5 and its diagnostic recomputation
        weight = weight if len(calls) in (6, 7) else weight.detach()
        terms["probe"] = torch.sqrt((weight * 0).abs().sum())  # value 0, gradient 0 * inf = NaN
        terms["loss"] = terms["loss"] + terms["probe"]
        return terms

    with pytest.raises(TrainingDiverged) as error:
        fit(config, ctx, model, step)
    assert str(error.value).startswith("step 5: the gradient of loss term(s) 'probe' is not finite (first at "
                                       "parameter head.classifier.weight)")
    assert str(error.value).endswith(f"the step was not applied; last good checkpoint: {tmp_path / 'last.pt'}")
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 0 and all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())


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

"""Real student training steps: every recipe, resume, bad teachers and bad weights, DDP."""

from __future__ import annotations

import csv
import shlex
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from robustseg_core.errors import UsageError
from robustseg_core.models import build_segmentor
from robustseg_core.models.checkpoint import CheckpointError, checkpoint_meta, load_checkpoint, save_checkpoint
from robustseg_core.training.config import ConfigError
from robustseg_core.training.train_student import main as train_student

from test_train_teacher import tiny_overrides


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    model = build_segmentor("mit_cpu", embed_dim=32)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, {"model": model.state_dict(), "architecture": model.architecture,
                           "meta": checkpoint_meta({"data": {"eval_size": 64}})})
    return path


def student_overrides(root, output, teacher, recipe="SPCR", epochs=1):
    return [*tiny_overrides(root, output, epochs), f"teacher.checkpoint={teacher}", f"student.recipe={recipe}",
            "train.val_combinations=[RDEL, EL]", "distill.rrm_samples=2"]


@pytest.mark.parametrize("recipe, terms", [("S", {"kl"}), ("SR", {"kl", "rrm"}), ("SPC", {"kl", "hpdm"}),
                                           ("SPCR", {"kl", "hpdm", "rrm"})])
def test_each_recipe_trains_and_logs_its_terms_and_gradient_norms(mini_dataset, tmp_path, teacher, recipe, terms):
    best = train_student(["--set", *student_overrides(mini_dataset, tmp_path, teacher, recipe)])
    assert {"miou_RDEL", "miou_EL", "score"} <= set(best)
    with open(tmp_path / "train.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    logged = {k for k in row if k in {"kl", "hpdm", "rrm"}}
    assert logged == terms
    assert all(float(row[f"grad_norm_{t}"]) > 0 for t in terms | {"ohem_ce"})
    assert float(row["loss"]) == pytest.approx(sum(float(row[t]) for t in terms | {"ohem_ce"}), rel=1e-4)


def test_resume_with_more_epochs_keeps_learning(mini_dataset, tmp_path, teacher):
    train_student(["--set", *student_overrides(mini_dataset, tmp_path, teacher, "SPC", epochs=1)])
    before = load_checkpoint(tmp_path / "last.pt")["model"]
    more = ["--set", *student_overrides(mini_dataset, tmp_path, teacher, "SPC", epochs=2), "--resume", "auto"]
    with pytest.raises(ConfigError, match=r"train.epochs: 1 -> 2.*pass --allow-config-change"):
        train_student(more)
    train_student([*more, "--allow-config-change"])
    after = load_checkpoint(tmp_path / "last.pt")
    assert after["epoch"] == 1
    # the command that made it, as a train_student command line, whoever called it (the ablation runs it in-process)
    assert after["meta"]["command"] == shlex.join(["train_student", *more, "--allow-config-change"])
    with open(tmp_path / "train.csv", newline="") as handle:
        second_epoch = [row for row in csv.DictReader(handle) if float(row["epoch"]) == 1]
    assert second_epoch and all(float(row["lr"]) > 0 for row in second_epoch)  # the schedule follows the new length
    assert any(not torch.equal(before[name], tensor) for name, tensor in after["model"].items())
    with pytest.raises(CheckpointError, match="not resumable"):
        train_student(["--set", *student_overrides(mini_dataset, tmp_path, teacher, "SPC", epochs=3),
                       "--resume", str(tmp_path / "best.pt")])


def test_a_run_moved_with_its_teacher_and_data_resumes_but_not_with_other_inputs(mini_dataset, tmp_path, teacher):
    moved, other = tmp_path / "moved" / "teacher.pt", tmp_path / "other" / "teacher.pt"
    moved.parent.mkdir(), other.parent.mkdir()
    moved.write_bytes(teacher.read_bytes())
    moved_data = tmp_path / "data"
    shutil.copytree(mini_dataset, moved_data)
    torch.manual_seed(1)
    model = build_segmentor("mit_cpu", embed_dim=32)
    save_checkpoint(other, {"model": model.state_dict(), "architecture": model.architecture,
                            "meta": checkpoint_meta({"data": {"eval_size": 64}})})
    run = tmp_path / "run"

    def resume(data, teacher_path, epochs):
        train_student(["--set", *student_overrides(data, run, teacher_path, "SPC", epochs=epochs), "--resume", "auto",
                       "--allow-config-change"])

    train_student(["--set", *student_overrides(mini_dataset, run, teacher, "SPC", epochs=1)])
    with pytest.raises(ConfigError, match="cannot resume with teacher.checkpoint changed"):
        resume(mini_dataset, other, 2)
    resume(moved_data, moved, 2)
    assert load_checkpoint(run / "last.pt")["epoch"] == 1

    meta_path = moved_data / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "seed": meta["seed"] + 1}))  # made again differently, same path
    with pytest.raises(ConfigError, match=r"cannot resume with data.root changed \(data.root: '.*data \(sha256"):
        resume(moved_data, moved, 3)
    meta_path.write_text(json.dumps({**meta, "version": "9.9", "indexed": "today"}, indent=1))
    resume(moved_data, moved, 3)  # made again alike: another version, time and layout of the same file
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    moved.write_bytes(other.read_bytes())  # the teacher replaced in place (say, trained further)
    with pytest.raises(ConfigError, match=r"cannot resume with teacher.checkpoint changed \(teacher.checkpoint: "
                                          r"'.*moved/teacher.pt \(sha256 [0-9a-f]{12}\)' -> '.*moved/teacher.pt \(sha256"):
        resume(moved_data, moved, 4)


@pytest.mark.parametrize("override, message", [
    ("distill.hpdm_weight=-1", "distill.hpdm_weight must be a finite number in [0, inf)"),
    ("distill.kl_weight=.nan", "distill.kl_weight must be a finite number in [0, inf)"),
    ("student.recipe=SPX", "student.recipe 'SPX'"),
    ("teacher.checkpoint=null", "teacher.checkpoint is not set"),
])
def test_bad_student_configs(mini_dataset, tmp_path, teacher, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        train_student(["--set", *student_overrides(mini_dataset, tmp_path, teacher), override])


def test_teacher_mismatches_are_named(mini_dataset, tmp_path, teacher):
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint file not found"):
        train_student(["--set", *student_overrides(mini_dataset, tmp_path, tmp_path / "missing.pt")])
    model = build_segmentor("mit_cpu", embed_dim=32, modalities=("rgb", "lidar", "event", "depth"))
    reordered = tmp_path / "reordered.pt"
    save_checkpoint(reordered, {"model": model.state_dict(), "architecture": model.architecture,
                                "meta": checkpoint_meta(modalities=model.modalities)})
    with pytest.raises(CheckpointError, match="modality 1 is 'lidar' in the teacher and 'depth' in the student"):
        train_student(["--set", *student_overrides(mini_dataset, tmp_path, reordered)])
    state = load_checkpoint(teacher)
    state["meta"]["classes"] = ["road", "not road"] + state["meta"]["classes"][2:]
    other_classes = tmp_path / "classes.pt"
    save_checkpoint(other_classes, state)
    with pytest.raises(CheckpointError, match="class 0 is 'road' in the teacher and 'Building' in the student"):
        train_student(["--set", *student_overrides(mini_dataset, tmp_path, other_classes)])
    with pytest.raises(CheckpointError, match="encoder must match the teacher's"):
        train_student(["--set", *student_overrides(mini_dataset, tmp_path, teacher), "model.preset=mit_b0"])
    assert not (tmp_path / "last.pt").exists()


def test_checkpoints_of_another_stage_or_data_set_are_refused(mini_dataset, tmp_path, teacher):
    """Found by an outside review: each of these ran to the end with exit 0 and a wrong result."""
    from robustseg_core.training.average import average_checkpoints
    from robustseg_core.training.export import export_checkpoint
    from robustseg_core.training.recalibrate_bn import recalibrate
    from robustseg_core.training.train_teacher import main as train_teacher

    run = tmp_path / "student"
    train_student(["--set", *student_overrides(mini_dataset, run, teacher, "S")])
    with pytest.raises(CheckpointError, match=r"student/best.pt: a student checkpoint \(made by train_student\), not "
                                              r"a teacher's: teacher.checkpoint must be the stage-1 teacher"):
        train_student(["--set", *student_overrides(mini_dataset, tmp_path / "second", run / "best.pt")])
    with pytest.raises(CheckpointError, match=r"student/last.pt: a student checkpoint \(made by train_student\), not "
                                              r"a teacher's: a run continues with the command that started it"):
        train_teacher(["--set", *tiny_overrides(mini_dataset, tmp_path / "as_teacher", 2), "--resume",
                       str(run / "last.pt")])

    other_data = tmp_path / "other_data"
    shutil.copytree(mini_dataset, other_data)
    meta = json.loads((other_data / "meta.json").read_text())
    (other_data / "meta.json").write_text(json.dumps({**meta, "seed": meta["seed"] + 1}))
    with pytest.raises(UsageError, match=f"--data-root {other_data}: not the data set .*student/best.pt was "
                                         "trained on"):
        recalibrate(run / "best.pt", other_data, tmp_path / "recalibrated.pt", workers=0)
    recalibrate(run / "best.pt", other_data, tmp_path / "recalibrated.pt", workers=0, other_data=True)
    other_run = load_checkpoint(run / "best.pt")
    other_run["meta"]["input_sha256"] = {**other_run["meta"]["input_sha256"], "data.root": "0" * 64}
    save_checkpoint(tmp_path / "other_run.pt", other_run)
    with pytest.raises(CheckpointError, match=r"other_run.pt: not a checkpoint of the run of .* \(data set '0000"):
        average_checkpoints([run / "best.pt", tmp_path / "other_run.pt"], tmp_path / "mean.pt")

    pretrained = load_checkpoint(teacher)
    pretrained["meta"]["config"] = {"pretrain": {"modalities": ["rgb"]}}
    save_checkpoint(tmp_path / "pretrain.pt", pretrained)
    with pytest.raises(CheckpointError, match="pretrain.pt: an encoder pretraining checkpoint"):
        export_checkpoint(tmp_path / "pretrain.pt", tmp_path / "deployable.pt")
    with pytest.raises(ConfigError, match=f"train.output_dir {mini_dataset}/run: inside the data set data.root"):
        train_teacher(["--set", *tiny_overrides(mini_dataset, mini_dataset / "run", 1)])


def test_student_ddp_with_two_cpu_processes(mini_dataset, tmp_path, teacher):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "robustseg_core.training.train_student", "--set",
               *student_overrides(mini_dataset, tmp_path, teacher)]
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cpu x2" in result.stdout and load_checkpoint(tmp_path / "last.pt")["epoch"] == 0

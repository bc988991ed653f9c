"""Every console script under faults and bad input, each case a real process (test/forked_commands.py):
an expected error is one line ``<command>: error: <what and where>`` with exit status 2 (usage, config,
parameters) or 1 (files, data, checkpoints, bags), never a traceback; a case that succeeds with something
to say (a resume, a skipped chunk, nothing to do) says it. ``--debug`` and ``ROBUSTSEG_DEBUG=1`` bring
the traceback back.

Cases that need a read-only or a tiny file system mount a tmpfs (root only) and are skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

pytest.importorskip("rclpy")

from test_pipeline import make_tiny_checkpoint  # noqa: E402
from test_train_teacher import tiny_overrides  # noqa: E402

import robustseg_core  # noqa: E402
from robustseg_core.classes import CLASS_NAMES  # noqa: E402
from robustseg_core.models import build_segmentor  # noqa: E402
from robustseg_core.models.checkpoint import checkpoint_meta, load_checkpoint, save_checkpoint  # noqa: E402
from robustseg_core.output_folder import FolderLock  # noqa: E402
from robustseg_ros.bagtools.integrity import CHUNK_CRC_OFFSET, MAGIC, _chunk_locations, _footer  # noqa: E402

GENERATE, TEACHER, STUDENT = ("robustseg_core.sim.generate", "robustseg_core.training.train_teacher",
                              "robustseg_core.training.train_student")
PRETRAIN, EVALUATE, EXPORT = ("robustseg_core.training.pretrain_encoder", "robustseg_core.evaluation.evaluate",
                              "robustseg_core.training.export")
NODE, RECORD, REPLAY, EVALUATE_BAG = ("robustseg_ros.perception_node", "robustseg_ros.bagtools.record_synthetic",
                                      "robustseg_ros.bagtools.replay_bag", "robustseg_ros.bagtools.evaluate_bag")
PROG = {GENERATE: "generate_dataset", TEACHER: "train_teacher", STUDENT: "train_student", PRETRAIN: "pretrain_encoder",
        EVALUATE: "evaluate", EXPORT: "export_checkpoint", NODE: "perception_node", RECORD: "record_synthetic",
        REPLAY: "replay_bag", EVALUATE_BAG: "evaluate_bag"}
TINY_DATA = ["--size", "64", "--seed", "0", "--train-scenes", "3", "--val-scenes", "2", "--test-scenes", "1",
             "--frames-per-scene", "2", "--quiet"]  # the arguments of the session's mini_dataset (conftest)


@dataclass(frozen=True)
class Case:
    """``module`` run with ``argv`` (``{name}`` filled from the fixtures) ends with ``status``; ``expect`` is
    in its error line (or, for status 0, in its ``stream``)."""

    name: str
    module: str
    argv: list[str]
    status: int
    expect: str
    env: dict = field(default_factory=dict)
    stream: str = "stderr"


def teacher_set(**changes) -> list[str]:
    """train_teacher arguments of the tiny run at {run}, with ``section__key=value`` changes."""
    overrides = [item for item in tiny_overrides(Path("{data}"), Path("{run}"), 1)
                 if item.partition("=")[0] not in {key.replace("__", ".") for key in changes}]
    return ["--set", *overrides, *(f"{key.replace('__', '.')}={value}" for key, value in changes.items())]


CASES = [
    # generate_dataset
    Case("generate: same arguments again", GENERATE, ["--out", "{data_copy}", *TINY_DATA], 0,
         "already holds this data set; nothing to write"),
    Case("generate: another size into a data set", GENERATE, ["--out", "{data_copy}", *TINY_DATA, "--size", "32"], 2,
         "made with other arguments (width 64 -> 32; height 64 -> 32); pass --overwrite"),
    Case("generate: infinite frame rate", GENERATE, ["--out", "{tmp}/g_inf", *TINY_DATA, "--frame-rate", "inf"], 2,
         "--frame-rate must be in [1, 1000] Hz, got inf"),
    Case("generate: a frame rate of one frame a day", GENERATE,
         ["--out", "{tmp}/g_slow", *TINY_DATA, "--frame-rate", "1e-5"], 2, "--frame-rate must be in [1, 1000] Hz"),
    Case("generate: a folder with other files", GENERATE, ["--out", "{foreign}", *TINY_DATA], 2,
         "is not empty and holds no data set of generate_dataset (notes.txt)"),
    Case("generate: --overwrite over other files", GENERATE, ["--out", "{foreign}", *TINY_DATA, "--overwrite"], 2,
         "--overwrite clears only what generate_dataset writes, but {foreign} also holds notes.txt"),
    Case("generate: unfinished run of other arguments", GENERATE, ["--out", "{data_partial}", *TINY_DATA, "--seed", "5"],
         2, "holds an unfinished run with other arguments (seed 0 -> 5"),
    Case("generate: folder in use", GENERATE, ["--out", "{locked}", *TINY_DATA], 1, "{locked} is in use by pid"),
    Case("generate: read-only folder", GENERATE, ["--out", "{ro}/data", *TINY_DATA], 1,
         "output folder {ro}/data is not writable: Read-only file system"),
    Case("generate: zero size", GENERATE, ["--out", "{tmp}/x", "--size", "0"], 2, "expected an integer >= 1, got 0"),
    Case("generate: --index of an indexed folder", GENERATE, ["--index", "{data_copy}"], 1, "already has meta.json"),
    Case("generate: --index of a folder without images", GENERATE, ["--index", "{foreign}"], 1,
         "no img/<condition>/<split>/<scene>/*_rgb_front.png files to index"),
    # train_teacher
    Case("train: missing config", TEACHER, ["--config", "{tmp}/missing.yaml"], 2,
         "config {tmp}/missing.yaml: cannot be read (No such file or directory)"),
    Case("train: config not YAML", TEACHER, ["--config", "{bad_yaml}"], 2, "config {bad_yaml}: not valid YAML"),
    Case("train: unknown key", TEACHER, teacher_set(train__epochs_=3), 2, "unknown key train.epochs_"),
    Case("train: zero epochs", TEACHER, teacher_set(train__epochs=0), 2, "train.epochs must be >= 1, got 0"),
    Case("train: unknown preset", TEACHER, teacher_set(model__preset="mit_b7"), 2, "model.preset 'mit_b7'"),
    Case("train: unknown device", TEACHER, teacher_set(train__device="tpu"), 2, "device 'tpu': not a device name"),
    Case("train: missing data set", TEACHER, teacher_set(data__root="{tmp}/nowhere", train__output_dir="{tmp}/r1"), 1,
         "{tmp}/nowhere: no such data set folder"),
    Case("train: unfinished data set", TEACHER, teacher_set(data__root="{data_partial}", train__output_dir="{tmp}/r2"),
         1, "an unfinished generate_dataset run"),
    Case("train: data set without meta.json", TEACHER,
         teacher_set(data__root="{data_nometa}", train__output_dir="{tmp}/r3"), 1, "generate_dataset --index"),
    Case("train: data set of other classes", TEACHER,
         teacher_set(data__root="{data_reordered}", train__output_dir="{tmp}/r7"), 1,
         "the data set's classes do not match the model's: class 0 is 'Fence' in the data set and 'Building'"),
    Case("evaluate: data set of other classes", EVALUATE,
         ["--checkpoint", "{checkpoint}", "--data-root", "{data_reordered}", "--workers", "0"], 1,
         "class 0 is 'Building' in the checkpoint and 'Fence' in the data set"),
    Case("train: batch larger than the data", TEACHER, teacher_set(data__batch_size=64, train__output_dir="{tmp}/r4"),
         1, "6 samples, fewer than one global batch"),
    Case("train: missing pretrained encoder", TEACHER,
         teacher_set(model__pretrained="{tmp}/missing.pth", train__output_dir="{tmp}/r5"), 1,
         "pretrained encoder not found: {tmp}/missing.pth"),
    Case("train: damaged pretrained encoder", TEACHER,
         teacher_set(model__pretrained="{not_checkpoint}", train__output_dir="{tmp}/r6"), 1,
         "cannot read pretrained encoder {not_checkpoint}"),
    Case("train: read-only output", TEACHER, teacher_set(train__output_dir="{ro}/run"), 1,
         "output folder {ro}/run is not writable: Read-only file system"),
    Case("train: output too small for the checkpoints", TEACHER, teacher_set(train__output_dir="{small}/run"), 1,
         "MB free; writing best.pt and last.pt takes about"),
    Case("train: output in use", TEACHER, teacher_set(train__output_dir="{locked}"), 1, "{locked} is in use by pid"),
    Case("train: fresh start over a run", TEACHER, teacher_set(), 2,
         "{run} already holds a run ({run}/last.pt); continue it with --resume auto"),
    Case("train: resume a missing checkpoint", TEACHER, [*teacher_set(), "--resume", "{tmp}/none.pt"], 1,
         "{tmp}/none.pt: checkpoint file not found"),
    Case("train: resume a best.pt", TEACHER, [*teacher_set(), "--resume", "{run}/best.pt"], 1,
         "{run}/best.pt: not resumable (no optimizer, scheduler, scaler, best); resume from last.pt"),
    Case("train: resume a damaged checkpoint", TEACHER, [*teacher_set(), "--resume", "{truncated_checkpoint}"], 1,
         "{truncated_checkpoint}: corrupted or not a robustseg checkpoint (not the zip archive torch.save writes, "
         "or cut short)"),
    Case("train: resume with another learning rate", TEACHER, [*teacher_set(optim__lr=0.01), "--resume", "auto"], 2,
         "cannot resume with optim.lr changed (optim.lr: 0.001 -> 0.01): that changes what is trained"),
    Case("train: resume with more epochs, no flag", TEACHER, [*teacher_set(train__epochs=2), "--resume", "auto"], 2,
         "the config differs from the run's: train.epochs: 1 -> 2. These keys may change on resume: pass "
         "--allow-config-change"),
    Case("train: resume with more epochs and the flag", TEACHER,
         [*teacher_set(train__epochs=2, train__output_dir="{run_copy}"), "--resume", "auto", "--allow-config-change"],
         0, "with a changed config: train.epochs: 1 -> 2", stream="stdout"),
    Case("train: an empty value", TEACHER, teacher_set(train__epochs=""), 2,
         "command line: train.epochs is empty (null); give it a value (default 200)"),
    Case("train: a checkpoint as the config", TEACHER, ["--config", "{checkpoint}"], 2,
         "config {checkpoint}: not a text file"),
    Case("train: OHEM threshold out of range", TEACHER, teacher_set(loss__ohem_thresh=1.5), 2,
         "loss.ohem_thresh must be a finite number in (0, 1), got 1.5"),
    Case("train: a number as the pretrained encoder", TEACHER, teacher_set(model__pretrained=5), 2,
         "model.pretrained must be a string (a path) or null, got 5"),
    Case("train: a folder as the pretrained encoder", TEACHER,
         teacher_set(model__pretrained="{tmp}", train__output_dir="{tmp}/r8"), 1,
         "pretrained encoder {tmp}: a folder, not an encoder file"),
    Case("train: resume a folder", TEACHER, [*teacher_set(), "--resume", "{run}"], 1,
         "{run}: a folder, not a checkpoint file"),
    Case("train: resume another run into a run", TEACHER, [*teacher_set(), "--resume", "{run_copy}/last.pt"], 2,
         "{run} already holds a run ({run}/last.pt): resuming {run_copy}/last.pt there would overwrite it"),
    Case("train: --debug shows the traceback", TEACHER, [*teacher_set(train__epochs=0), "--debug"], 1,
         "Traceback"),
    Case("train: ROBUSTSEG_DEBUG shows the traceback", TEACHER, teacher_set(train__epochs=0), 1, "Traceback",
         env={"ROBUSTSEG_DEBUG": "1"}),
    # train_student, pretrain_encoder
    Case("student: no teacher", STUDENT, teacher_set(train__output_dir="{tmp}/s1"), 2, "teacher.checkpoint is not set"),
    Case("student: missing teacher", STUDENT,
         [*teacher_set(train__output_dir="{tmp}/s2"), "teacher.checkpoint={tmp}/none.pt"], 1,
         "{tmp}/none.pt: checkpoint file not found"),
    Case("student: teacher of other classes", STUDENT,
         [*teacher_set(train__output_dir="{tmp}/s3"), "teacher.checkpoint={checkpoint_19}"], 1,
         "the teacher does not fit the student: the teacher has 19 classes, the student 25"),
    Case("student: teacher of another class order", STUDENT,
         [*teacher_set(train__output_dir="{tmp}/s4"), "teacher.checkpoint={checkpoint_reordered}"], 1,
         "class 0 is 'Fence' in the teacher and 'Building' in the student (another class order)"),
    Case("student: unknown recipe", STUDENT,
         [*teacher_set(train__output_dir="{tmp}/s5"), "teacher.checkpoint={checkpoint}", "student.recipe=SPX"], 2,
         "student.recipe 'SPX'"),
    Case("student: zero temperature", STUDENT,
         [*teacher_set(train__output_dir="{tmp}/s6"), "teacher.checkpoint={checkpoint}", "distill.kl_temperature=0"],
         2, "distill.kl_temperature must be a finite number in (0, inf), got 0.0"),
    Case("student: modality-count weights of words", STUDENT,
         [*teacher_set(train__output_dir="{tmp}/s7"), "teacher.checkpoint={checkpoint}",
          "student.k_probabilities=[a, b, c, d]"], 2, "student.k_probabilities must be a list of numbers"),
    Case("student: two modality-count weights", STUDENT,
         [*teacher_set(train__output_dir="{tmp}/s8"), "teacher.checkpoint={checkpoint}",
          "student.k_probabilities=[1, 2]"], 2, "student.k_probabilities must hold one weight for each k = 1..4"),
    Case("pretrain: unknown inputs", PRETRAIN, [*teacher_set(train__output_dir="{tmp}/p1"), "pretrain.inputs=all"], 2,
         "pretrain.inputs 'all'"),
    Case("pretrain: encoder_out is a folder", PRETRAIN,
         [*teacher_set(train__output_dir="{tmp}/p2"), "pretrain.encoder_out={tmp}"], 2,
         "pretrain.encoder_out {tmp}: is a folder; give the file to write"),
    # evaluate
    Case("evaluate: missing checkpoint", EVALUATE, ["--checkpoint", "{tmp}/none.pt", "--data-root", "{data}"], 1,
         "{tmp}/none.pt: checkpoint file not found"),
    Case("evaluate: damaged checkpoint", EVALUATE, ["--checkpoint", "{truncated_checkpoint}", "--data-root", "{data}"],
         1, "corrupted or not a robustseg checkpoint"),
    Case("evaluate: 19-class checkpoint on 25-class data", EVALUATE,
         ["--checkpoint", "{checkpoint_19}", "--data-root", "{data}", "--workers", "0"], 1,
         "does not fit the data set {data}: the checkpoint has 19 classes, the data set 25"),
    Case("evaluate: checkpoint of another class order", EVALUATE,
         ["--checkpoint", "{checkpoint_reordered}", "--data-root", "{data}", "--workers", "0"], 1,
         "class 0 is 'Fence' in the checkpoint and 'Building' in the data set"),
    Case("evaluate: checkpoint of another normalisation", EVALUATE,
         ["--checkpoint", "{checkpoint_normalisation}", "--data-root", "{data}"], 1,
         "modality 'rgb' was trained with normalisation (mean, std)"),
    Case("evaluate: class count of the metadata and network differ", EVALUATE,
         ["--checkpoint", "{checkpoint_inconsistent}", "--data-root", "{data}"], 1,
         "names 24 classes but the network predicts 25"),
    Case("evaluate: unfinished data set", EVALUATE, ["--checkpoint", "{checkpoint}", "--data-root", "{data_partial}"],
         1, "an unfinished generate_dataset run"),
    Case("evaluate: no combination", EVALUATE, ["--checkpoint", "{checkpoint}", "--data-root", "{data}", "--combinations"],
         2, "argument --combinations: expected at least one argument"),
    Case("evaluate: unknown condition", EVALUATE,
         ["--checkpoint", "{checkpoint}", "--data-root", "{data}", "--conditions", "snow"], 2, "unknown condition"),
    Case("evaluate: zero batch size", EVALUATE,
         ["--checkpoint", "{checkpoint}", "--data-root", "{data}", "--batch-size", "0"], 2,
         "expected an integer >= 1, got 0"),
    Case("evaluate: infinite fusion gain", EVALUATE,
         ["--checkpoint", "{checkpoint}", "--data-root", "{data}", "--fusion-min-gain", "inf"], 2,
         "argument --fusion-min-gain: expected a finite number >= 0, got inf"),
    Case("evaluate: read-only JSON output", EVALUATE,
         ["--checkpoint", "{checkpoint}", "--data-root", "{data}", "--json", "{ro}/eval.json"], 1,
         "output folder {ro} is not writable: Read-only file system"),
    Case("evaluate: JSON over the checkpoint", EVALUATE,
         ["--checkpoint", "{checkpoint}", "--data-root", "{data}", "--json", "{checkpoint}"], 2,
         "--json {checkpoint}: is the checkpoint evaluated; write it elsewhere"),
    # export_checkpoint
    Case("export: missing checkpoint", EXPORT, ["--checkpoint", "{tmp}/none.pt", "--out", "{tmp}/e.pt"], 1,
         "checkpoint file not found"),
    Case("export: scores not JSON", EXPORT,
         ["--checkpoint", "{checkpoint}", "--out", "{tmp}/e.pt", "--scores", "{bad_yaml}"], 2,
         "not a readable evaluate --json result"),
    Case("export: read-only output", EXPORT, ["--checkpoint", "{checkpoint}", "--out", "{ro}/e.pt"], 1,
         "{ro}/e.pt: Read-only file system"),
    Case("export: output over its input", EXPORT, ["--checkpoint", "{checkpoint}", "--out", "{checkpoint}"], 2,
         "--out {checkpoint}: is the checkpoint exported; write it elsewhere"),
    Case("export: scores of another checkpoint", EXPORT,
         ["--checkpoint", "{checkpoint}", "--out", "{tmp}/e.pt", "--scores", "{other_scores}"], 2,
         "evaluates teacher/best.pt, not --checkpoint {checkpoint}"),
    # record_synthetic
    Case("record: existing output", RECORD, ["{bag}", "--duration", "0.2"], 1, "bag {bag}: already exists"),
    Case("record: zero duration", RECORD, ["{tmp}/b1", "--duration", "0"], 2,
         "argument --duration: expected a finite number > 0, got 0"),
    Case("record: nan duration", RECORD, ["{tmp}/b1", "--duration", "nan"], 2,
         "argument --duration: expected a finite number > 0, got nan"),
    Case("record: one topic for two inputs", RECORD, ["{tmp}/b4", "--camera-topic", "/x", "--depth-topic", "/x"], 2,
         "--depth-topic '/x': --camera-topic uses it too"),
    Case("record: not a topic name", RECORD, ["{tmp}/b5", "--camera-topic", "bad topic"], 2,
         "--camera-topic 'bad topic': not a ROS topic name: token 'bad topic'"),
    Case("record: missing faults file", RECORD, ["{tmp}/b2", "--faults", "{tmp}/none.json"], 1,
         "{tmp}/none.json: No such file or directory"),
    Case("record: faults file of another shape", RECORD, ["{tmp}/b3", "--faults", "{bad_faults}"], 2,
         "faults file {bad_faults}: expected a JSON list"),
    Case("record: read-only output", RECORD, ["{ro}/bag", "--duration", "0.2"], 1, "Read-only file system"),
    # replay_bag
    Case("replay: missing bag", REPLAY, ["{tmp}/nowhere"], 1, "bag {tmp}/nowhere: no such file or folder"),
    Case("replay: damaged chunk", REPLAY, ["{bag_chunk}"], 1,
         "bag {bag_chunk}: chunk 0 at byte offset "),
    Case("replay: damaged index", REPLAY, ["{bag_summary}"], 1, "its summary section (the chunk index"),
    Case("replay: truncated bag", REPLAY, ["{bag_truncated}"], 1, "corrupt or truncated"),
    Case("replay: bad --remap", REPLAY, ["{bag}", "--remap", "/camera/image"], 2, "expected /old:=/new"),
    Case("replay: --remap to no topic name", REPLAY, ["{bag}", "--remap", "/camera/image:=bad_name!"], 2,
         "'bad_name!' is not a ROS topic name"),
    Case("replay: --remap onto a topic of another type", REPLAY, ["{bag}", "--remap", "/camera/image:=/lidar/points"],
         2, "uses too; choose another name"),
    Case("replay: bad --drop", REPLAY, ["{bag}", "--drop", "/camera/image:2:1"], 2, "END must be after START"),
    Case("replay: zero rate", REPLAY, ["{bag}", "--rate", "0"], 2, "argument -r/--rate: expected a finite number > 0"),
    Case("replay: start past the end", REPLAY, ["{bag}", "--start-offset", "999"], 1,
         "bag {bag}: start offset 999.0 s is past its end"),
    # evaluate_bag
    Case("evaluate_bag: damaged chunk", EVALUATE_BAG, ["{bag_chunk}", "--checkpoint", "{checkpoint}"], 1,
         "fails its CRC check; 1 damaged chunk(s) in all. Skip them with --skip-damaged-chunks"),
    Case("evaluate_bag: damaged chunk skipped", EVALUATE_BAG,
         ["{bag_chunk}", "--checkpoint", "{checkpoint}", "--skip-damaged-chunks", "--no-plots", "-o", "{tmp}/eb1"], 0,
         "skipping 1 damaged chunk(s) of 2"),
    Case("evaluate_bag: every chunk damaged", EVALUATE_BAG,
         ["{bag_all_chunks}", "--checkpoint", "{checkpoint}", "--skip-damaged-chunks", "--no-plots", "-o", "{tmp}/eb3"],
         1, "bag {bag_all_chunks}: every one of its 2 chunk(s) is damaged; no message can be read"),
    Case("evaluate_bag: bag without CRCs", EVALUATE_BAG,
         ["{bag_nocrc}", "--checkpoint", "{checkpoint}", "--no-plots", "-o", "{tmp}/eb2"], 0,
         "2 chunk(s) carry no CRC (written without checksums); their integrity cannot be checked"),
    Case("evaluate_bag: damaged sqlite3 bag", EVALUATE_BAG, ["{bag_sqlite_damaged}", "--checkpoint", "{checkpoint}"],
         1, "sqlite3 integrity check failed"),
    Case("evaluate_bag: 19-class checkpoint", EVALUATE_BAG, ["{bag}", "--checkpoint", "{checkpoint_19}"], 1,
         "its ground truth does not match the checkpoint: the checkpoint has 19 classes, the bag's ground truth 25"),
    Case("evaluate_bag: missing params file", EVALUATE_BAG,
         ["{bag}", "--checkpoint", "{checkpoint}", "--params-file", "{tmp}/none.yaml"], 2,
         "params file {tmp}/none.yaml: cannot be read (No such file or directory)"),
    Case("evaluate_bag: params file not YAML", EVALUATE_BAG,
         ["{bag}", "--checkpoint", "{checkpoint}", "--params-file", "{bad_yaml}"], 2, "not valid YAML"),
    Case("evaluate_bag: unknown parameter", EVALUATE_BAG,
         ["{bag}", "--checkpoint", "{checkpoint}", "-p", "camera.topik:=/cam"], 2,
         "unknown parameter(s) camera.topik (did you mean camera.topic?)"),
    Case("evaluate_bag: parameter of the wrong type", EVALUATE_BAG,
         ["{bag}", "--checkpoint", "{checkpoint}", "-p", "warmup_iterations:=abc"], 2,
         "parameter warmup_iterations: must be an integer, got 'abc' (str)"),
    Case("evaluate_bag: an integer for a float parameter", EVALUATE_BAG,
         ["{bag}", "--checkpoint", "{checkpoint}", "-p", "lidar.max_age_s:=1"], 2,
         "parameter lidar.max_age_s: must be a floating-point number (write 1.0, not 1)"),
    Case("evaluate_bag: live at rate 0", EVALUATE_BAG, ["{bag}", "--mode", "live", "--rate", "0"], 2,
         "argument --rate: expected a finite number > 0, got 0"),
    Case("evaluate_bag: a folder as the checkpoint", EVALUATE_BAG, ["{bag}", "--checkpoint", "{tmp}"], 1,
         "is a folder, not a checkpoint file"),
    Case("evaluate_bag: a file as the output", EVALUATE_BAG,
         ["{bag}", "--checkpoint", "{checkpoint}", "-o", "{bad_yaml}"], 1, "is a file, not a folder"),
    Case("evaluate_bag: read-only output", EVALUATE_BAG, ["{bag}", "--checkpoint", "{checkpoint}", "-o", "{ro}/out"],
         1, "output folder {ro}/out is not writable"),
    # perception_node
    Case("node: missing params file", NODE, ["--ros-args", "--params-file", "{tmp}/none.yaml"], 2,
         "params file {tmp}/none.yaml: cannot be read"),
    Case("node: params file not YAML", NODE, ["--ros-args", "--params-file", "{bad_yaml}"], 2, "not valid YAML"),
    Case("node: unknown parameter, strict", NODE,
         ["--ros-args", "-p", "camera.topik:=/cam", "-p", "strict_parameters:=true"], 2,
         "unknown parameter(s) camera.topik (did you mean camera.topic?); refused because strict_parameters is true"),
    Case("node: value of the wrong type", NODE, ["--ros-args", "-p", "warmup_iterations:=many"], 2,
         "warmup_iterations"),
    Case("node: a parameter before --ros-args", NODE, ["-p", "checkpoint:=model.pt"], 2,
         "unrecognized arguments: -p checkpoint:=model.pt"),
    Case("evaluate_bag: -p before --ros-args is a node parameter", EVALUATE_BAG,
         ["{bag}", "--checkpoint", "{checkpoint}", "-p", "use_sim_time:=true"], 2, "unknown parameter(s) use_sim_time"),
    Case("node: missing checkpoint", NODE,
         ["--ros-args", "-p", "checkpoint:={tmp}/none.pt", "-p", "warmup_iterations:=0"], 1,
         "checkpoint '{tmp}/none.pt' does not exist; pass an existing .pt file (checkpoint:=/path/to/model.pt"),
]


def mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0


def flip_bytes(path: Path, offset: int, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    data[offset:offset + count] = bytes(255 - value for value in data[offset:offset + count])
    path.write_bytes(bytes(data))


def copy_bag(bag: Path, name: str) -> tuple[Path, Path]:
    """A copy of ``bag`` called ``name`` (folder and storage file renamed) and its storage file."""
    target = bag.with_name(name)
    shutil.copytree(bag, target)
    storage = next(target.glob("*.mcap")) if list(target.glob("*.mcap")) else next(target.glob("*.db3"))
    renamed = storage.with_name(name + storage.suffix)
    storage.rename(renamed)
    metadata = target / "metadata.yaml"
    metadata.write_text(metadata.read_text().replace(storage.name, renamed.name))
    return target, renamed


def save_variant(source: Path, path: Path, edit) -> str:
    state = load_checkpoint(source)
    edit(state)
    save_checkpoint(path, state)
    return str(path)


@pytest.fixture(scope="module")
def world(mini_dataset, tmp_path_factory, commands, ros_domain_module):
    """Paths the cases name: data sets, checkpoints, a finished run, bags (intact and damaged), bad files, a
    locked folder and, where mounting is allowed, a read-only and a 4 MB file system."""
    tmp = tmp_path_factory.mktemp("faults")
    paths = {"tmp": tmp, "data": mini_dataset}
    for name in ("data_copy", "data_partial", "data_nometa", "data_reordered"):
        shutil.copytree(mini_dataset, tmp / name)
        paths[name] = tmp / name
    meta = json.loads((tmp / "data_reordered" / "meta.json").read_text())
    meta["classes"] = [CLASS_NAMES[1], CLASS_NAMES[0], *CLASS_NAMES[2:]]  # labelled in another class order
    (tmp / "data_reordered" / "meta.json").write_text(json.dumps(meta))
    (tmp / "data_partial" / ".partial").mkdir()  # an unfinished run: its plan, no meta.json yet
    (tmp / "data_partial" / ".partial" / "plan.json").write_text(json.dumps(
        {"version": robustseg_core.__version__, "seed": 0, "scenes": [],
         "drive_config": json.loads((mini_dataset / "meta.json").read_text())["drive_config"]}))
    (tmp / "data_partial" / "meta.json").unlink()
    (tmp / "data_nometa" / "meta.json").unlink()
    paths["foreign"] = tmp / "foreign"
    paths["foreign"].mkdir()
    (paths["foreign"] / "notes.txt").write_text("mine\n")
    paths["bad_yaml"] = tmp / "bad.yaml"
    paths["bad_yaml"].write_text("a: [1, 2\nb: {\n")
    paths["other_scores"] = tmp / "other_scores.json"  # evaluate --json of another checkpoint
    paths["other_scores"].write_text(json.dumps({"checkpoint": "teacher/best.pt", "checkpoint_sha256": "0" * 64,
                                                 "split": "test", "data_root": "data", "frames": 1, "eval_size": 32,
                                                 "results": {}}))
    paths["bad_faults"] = tmp / "faults.json"
    paths["bad_faults"].write_text('{"kind": "drop"}')
    paths["not_checkpoint"] = tmp / "notes.pth"
    paths["not_checkpoint"].write_text("not weights\n")

    checkpoint = Path(make_tiny_checkpoint(tmp / "tiny.pt"))
    paths["checkpoint"] = checkpoint
    paths["truncated_checkpoint"] = tmp / "truncated.pt"
    paths["truncated_checkpoint"].write_bytes(checkpoint.read_bytes()[:5000])
    swapped = [CLASS_NAMES[1], CLASS_NAMES[0], *CLASS_NAMES[2:]]
    paths["checkpoint_reordered"] = save_variant(checkpoint, tmp / "reordered.pt",
                                                 lambda state: state["meta"].update(classes=swapped))
    paths["checkpoint_normalisation"] = save_variant(
        checkpoint, tmp / "normalisation.pt", lambda state: state["meta"]["normalization"].update(rgb=[[0.5] * 3] * 2))
    paths["checkpoint_inconsistent"] = save_variant(checkpoint, tmp / "inconsistent.pt",
                                                    lambda state: state["meta"].update(classes=list(CLASS_NAMES[:24])))
    torch.manual_seed(0)
    model = build_segmentor("mit_cpu", embed_dim=32, num_classes=19)
    meta = checkpoint_meta({"data": {"eval_size": 64}})
    meta["classes"] = list(CLASS_NAMES[:19])
    paths["checkpoint_19"] = tmp / "classes19.pt"
    save_checkpoint(paths["checkpoint_19"], {"model": model.state_dict(), "architecture": model.architecture,
                                             "meta": meta})

    paths["run"], paths["run_copy"] = tmp / "run", tmp / "run_copy"
    argv = [item.format(data=mini_dataset, run=paths["run"]) for item in teacher_set()]
    assert commands.run(TEACHER, argv).status == 0
    shutil.copytree(paths["run"], paths["run_copy"])

    env = {"ROS_DOMAIN_ID": str(ros_domain_module), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    paths["bag"] = tmp / "bag"
    for bag, storage in ((paths["bag"], "mcap"), (tmp / "bag_sqlite", "sqlite3")):
        assert commands.run(RECORD, [bag, "--duration", "0.6", "--width", "32", "--height", "32", "--storage",
                                     storage], env=env).status == 0
    paths["bag_chunk"], storage = copy_bag(paths["bag"], "bag_chunk")
    flip_bytes(storage, 43 + 200)  # inside the first chunk's records
    paths["bag_all_chunks"], storage = copy_bag(paths["bag"], "bag_all_chunks")
    with open(storage, "rb") as handle:
        size = storage.stat().st_size
        chunk_offsets = [offset for offset, _, _, _ in _chunk_locations(handle, size, _footer(handle, size)[0])]
    for offset in chunk_offsets:
        flip_bytes(storage, offset + 200)  # inside each chunk's records
    paths["bag_summary"], storage = copy_bag(paths["bag"], "bag_summary")
    with open(storage, "rb") as handle:
        summary_start, _ = _footer(handle, storage.stat().st_size)
    flip_bytes(storage, summary_start + 40, 4)
    paths["bag_truncated"], storage = copy_bag(paths["bag"], "bag_truncated")
    storage.write_bytes(storage.read_bytes()[: storage.stat().st_size // 2])
    paths["bag_nocrc"], storage = copy_bag(paths["bag"], "bag_nocrc")
    with open(storage, "r+b") as handle:  # as rosbags writes it: no CRCs at all
        size = storage.stat().st_size
        for offset, _, _, _ in _chunk_locations(handle, size, _footer(handle, size)[0]):
            handle.seek(offset + CHUNK_CRC_OFFSET)
            handle.write(struct.pack("<I", 0))
        handle.seek(size - len(MAGIC) - 4)
        handle.write(struct.pack("<I", 0))
    paths["bag_sqlite_damaged"], storage = copy_bag(tmp / "bag_sqlite", "bag_sqlite_damaged")
    flip_bytes(storage, storage.stat().st_size // 2, 4096)

    mounts = []
    for name, options in (("ro", "size=1m,ro"), ("small", "size=4m")):
        if mount_tmpfs(tmp / name, options):
            paths[name] = tmp / name
            mounts.append(tmp / name)
    lock = FolderLock(tmp / "locked")
    lock.acquire()
    paths["locked"] = tmp / "locked"
    yield {name: str(path) for name, path in paths.items()}, env
    lock.release()
    for mount in mounts:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_fault_case(case: Case, world, commands):
    paths, ros_env = world
    needed = {name for item in case.argv for name in paths | {"ro": 0, "small": 0} if "{" + name + "}" in item}
    missing = {"ro", "small"} & needed - set(paths)
    if missing:
        pytest.skip(f"mounting a tmpfs is not permitted here (needed: {', '.join(sorted(missing))})")
    argv = [item.format(**paths) for item in case.argv]
    expect = case.expect.format(**paths)
    env = {**ros_env, **case.env} if case.module.startswith("robustseg_ros") else case.env
    result = commands.run(case.module, argv, env=env)
    prog = PROG[case.module]
    assert result.status == case.status, result.stderr[-3000:]
    if expect == "Traceback":
        assert "Traceback" in result.stderr
        return
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if case.status == 0:
        assert expect in getattr(result, case.stream), getattr(result, case.stream)
        return
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"{prog}: error: ") and expect in last, result.stderr[-3000:]
    assert sum(line.startswith(f"{prog}: error:") for line in result.stderr.splitlines()) == 1


def test_a_write_that_fails_names_the_file_and_keeps_the_previous_checkpoint(world, commands):
    """A file size limit (RLIMIT_FSIZE) below a checkpoint's size makes epoch 1's last.pt fail mid-write: the
    error names it, and epoch 0's last.pt stays intact with no temporary file beside it."""
    paths, _ = world
    run = Path(paths["tmp"]) / "run_limited"
    shutil.copytree(paths["run"], run)
    argv = [item.format(data=paths["data"], run=run) for item in teacher_set(train__epochs=2)]
    limit = (run / "last.pt").stat().st_size // 2
    result = commands.run(TEACHER, [*argv, "--resume", "auto", "--allow-config-change"], file_size_limit=limit)
    assert result.status == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"train_teacher: error: {run / 'last.pt'}: File too large"
    assert load_checkpoint(run / "last.pt")["epoch"] == 0
    assert not [path.name for path in run.iterdir() if path.name.endswith(".tmp")]


def test_ctrl_c_ends_a_replay_without_a_traceback(world, commands):
    """rclpy's own SIGINT handler used to shut the context down under a publish: "Failed to publish" and a
    traceback instead of a replay that simply ends."""
    paths, ros_env = world
    pid = commands.start(REPLAY, [paths["bag"], "--loop", "--delay", "0"], env=ros_env)
    time.sleep(2.0)  # looping a 0.6 s bag: publishing when the signal comes
    os.kill(pid, signal.SIGINT)
    result = commands.result()
    assert result.status == 0 and "Traceback" not in result.stderr and "error" not in result.stderr, result.stderr

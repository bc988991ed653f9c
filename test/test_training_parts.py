"""Config, OHEM loss, optimiser groups, schedule, checkpoints and logs: the parts both stages share."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from robustseg_core.cli import error_line
from robustseg_core.dataset_meta import DatasetError
from robustseg_core.losses import OhemCrossEntropy
from robustseg_core.models import build_segmentor
from robustseg_core.models.checkpoint import (
    CheckpointError, build_model_from_checkpoint, checkpoint_meta, load_checkpoint, save_checkpoint,
)
from robustseg_core.training.config import ConfigError, load_config
from robustseg_core.training.distributed import DistributedContext
from robustseg_core.training.engine import (
    TRAINING_DEFAULTS, build_loaders, check_training_config, seed_everything, set_epoch,
)
from robustseg_core.training.logger import ScalarLogger
from robustseg_core.training.optim import WarmupPolyLR, build_optimizer
from robustseg_core.errors import UsageError
from robustseg_core.training.run_folder import check_resumed_schedule, ensure_best_checkpoint, resume_checkpoint
from robustseg_core.training.train_teacher import DEFAULTS, get_args_parser


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\nmodel:\n  preset: mit_cpu\n")
    config = load_config(DEFAULTS, path, ["train.epochs=5", "optim.lr=1e-3", "data.conditions=[sun, fog]"])
    assert config["train"]["epochs"] == 5 and config["model"]["preset"] == "mit_cpu"
    assert config["optim"]["lr"] == pytest.approx(1e-3) and config["data"]["conditions"] == ["sun", "fog"]
    assert DEFAULTS["train"]["epochs"] == 200  # defaults untouched


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  epoch: 3\n", "unknown key train.epoch"),
        ("trainer:\n  epochs: 3\n", "unknown section 'trainer'"),
        ("train:\n  epochs: many\n", "train.epochs must be a number"),
        ("train: [1, 2]\n", "must be a mapping"),
        ("train:\n  epochs: 3\n  epochs: 30\n", "found duplicate key 'epochs'"),
    ],
)
def test_config_errors_name_the_key_and_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(DEFAULTS, path)
    assert "bad.yaml" in str(info.value)


def test_config_override_errors():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(DEFAULTS, None, ["epochs=3"])
    with pytest.raises(ConfigError, match="command line: unknown key optim.learning_rate"):
        load_config(DEFAULTS, None, ["optim.learning_rate=3"])


def test_repeated_set_options_all_apply():
    """``--set a=1 --set b=2`` (as the docs write overrides, one per option) keeps both, not only the last."""
    args = get_args_parser().parse_args(["--set", "train.output_dir=/tmp/wanted", "--set", "train.epochs=1",
                                         "optim.lr=1"])
    assert args.set == ["train.output_dir=/tmp/wanted", "train.epochs=1", "optim.lr=1"]


@pytest.mark.parametrize("override, message", [
    ("model.embed_dim=0", "model.embed_dim must be >= 1, got 0"),
    ("train.seed=-1", "train.seed must be >= 0"),
    ("train.seed=18446744073709551616", r"train.seed must be < 2\*\*32"),
])
def test_settings_that_only_fail_inside_torch_are_named_before_training(override, message):
    with pytest.raises(ConfigError, match=message):
        check_training_config(load_config(DEFAULTS, None, [override]))


def test_an_error_in_a_data_loader_worker_is_one_line_with_the_original_message():
    """torch re-raises a worker's DatasetError with the worker's whole traceback as its message."""

    class Damaged(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index):
            raise DatasetError("data/train/rgb/000001.png: missing or not a readable image")

    with pytest.raises(DatasetError) as info:
        list(torch.utils.data.DataLoader(Damaged(), num_workers=1))
    assert "Original Traceback" in str(info.value)
    assert error_line("evaluate", info.value) == ("evaluate: error: data/train/rgb/000001.png: missing or not a "
                                                  "readable image")


def reference_ohem(logits, labels, thresh=0.7):
    """Straight from the description: pixels above -ln(thresh), else the top valid/16."""
    losses = F.cross_entropy(logits, labels, ignore_index=255, reduction="none").flatten()
    n_min = int((labels != 255).sum()) // 16
    hard = [v for v in losses.tolist() if v > -math.log(thresh)]
    if len(hard) < n_min:
        hard = sorted(losses.tolist(), reverse=True)[:n_min]
    return sum(hard) / len(hard)


@pytest.mark.parametrize("scale", [0.1, 10.0])
def test_ohem_matches_reference(scale):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 8, 8, generator=generator) * scale
    labels = torch.randint(0, 5, (2, 8, 8), generator=generator)
    labels[0, :2] = 255
    assert float(OhemCrossEntropy()(logits, labels)) == pytest.approx(reference_ohem(logits, labels), rel=1e-5)


def test_ohem_with_only_ignored_pixels_is_zero_not_nan():
    loss = OhemCrossEntropy()(torch.randn(1, 3, 4, 4, requires_grad=True), torch.full((1, 4, 4), 255))
    assert float(loss.detach()) == 0.0
    loss.backward()


def test_no_weight_decay_on_one_dimensional_parameters():
    model = build_segmentor("mit_cpu", embed_dim=32)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.01)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.01 and all(p.ndim >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_poly_schedule():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = WarmupPolyLR(optimizer, total_steps=20, warmup_steps=10, warmup_ratio=0.1, power=0.9)
    rates = []
    for _ in range(20):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.1) and rates[5] == pytest.approx(0.55)
    assert rates[10] == pytest.approx(1.0) and rates[15] == pytest.approx(0.5**0.9)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))


def _checkpoint(model):
    return {"model": model.state_dict(), "architecture": model.architecture, "meta": checkpoint_meta({"x": 1})}


def test_checkpoint_round_trip(tmp_path):
    model = build_segmentor("mit_cpu", embed_dim=32).eval()
    save_checkpoint(tmp_path / "m.pt", _checkpoint(model))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind
    loaded, checkpoint = build_model_from_checkpoint(tmp_path / "m.pt")
    assert checkpoint["meta"]["modalities"] == ["rgb", "depth", "event", "lidar"]
    images, present = torch.randn(1, 4, 3, 64, 64), torch.ones(1, 4, dtype=torch.bool)
    with torch.inference_mode():
        assert torch.equal(model(images, present), loaded.eval()(images, present))


def test_checkpoint_of_another_architecture_is_named(tmp_path):
    model = build_segmentor("mit_cpu", embed_dim=32)
    state = _checkpoint(model)
    state["architecture"] = {**state["architecture"], "embed_dim": 64}
    save_checkpoint(tmp_path / "other.pt", state)
    with pytest.raises(CheckpointError, match=r"other.pt: weights do not fit the model \(mit_cpu\): \d+ shape "
                                              r"mismatches: head\.\S+: file \(32, .*\.\.\. \(\d+ more\)$") as error:
        build_model_from_checkpoint(tmp_path / "other.pt")
    assert len(str(error.value)) < 600, "the first keys, not thousands of characters"
    from robustseg_core.models.checkpoint import load_model_state
    with pytest.raises(CheckpointError, match="another architecture: embed_dim: checkpoint has 64, model has 32"):
        load_model_state(model, state, "other.pt")


def test_checkpoint_trained_with_another_input_normalisation_is_refused(tmp_path):
    model = build_segmentor("mit_cpu", embed_dim=32)
    state = _checkpoint(model)
    state["meta"]["normalization"]["depth"] = [[0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]
    save_checkpoint(tmp_path / "renormalised.pt", state)
    with pytest.raises(CheckpointError, match=r"renormalised.pt: modality 'depth' was trained with normalisation "
                                              r"\(mean, std\) \[\[0.5, 0.5, 0.5\], \[0.25"):
        build_model_from_checkpoint(tmp_path / "renormalised.pt")


def test_corrupted_and_missing_checkpoints(tmp_path):
    model = build_segmentor("mit_cpu", embed_dim=32)
    save_checkpoint(tmp_path / "good.pt", _checkpoint(model))
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt: corrupted"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="nothing.pt: checkpoint file not found"):
        load_checkpoint(tmp_path / "nothing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a robustseg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_export_keeps_weights_and_metadata_and_drops_training_state(tmp_path):
    from robustseg_core.training.export import export_checkpoint, headline_scores

    model = build_segmentor("mit_cpu", embed_dim=32).eval()
    state = {**_checkpoint(model), "optimizer": {"state": {}}, "epoch": 4}
    save_checkpoint(tmp_path / "best.pt", state)
    evaluation = {"split": "test", "data_root": "d", "frames": 3, "eval_size": 64, "results": {
        "drop": {"mean_miou": 12.5, "combinations": {"RDEL": {"miou": 20.0}}}}}
    export_checkpoint(tmp_path / "best.pt", tmp_path / "shipped.pt", headline_scores(evaluation), "note")
    shipped = load_checkpoint(tmp_path / "shipped.pt")
    assert "optimizer" not in shipped and shipped["epoch"] == 4
    assert shipped["meta"]["evaluation"]["drop_miou"] == {"RDEL": 20.0} and shipped["meta"]["modalities"][3] == "lidar"
    assert "trained_command" in shipped["meta"]
    loaded, _ = build_model_from_checkpoint(tmp_path / "shipped.pt")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])


def test_export_of_a_checkpoint_without_metadata_writes_empty_metadata(tmp_path):
    from robustseg_core.training.export import export_checkpoint

    model = build_segmentor("mit_cpu", embed_dim=32).eval()
    save_checkpoint(tmp_path / "bare.pt", {"model": model.state_dict(), "architecture": model.architecture})
    export_checkpoint(tmp_path / "bare.pt", tmp_path / "shipped.pt")
    assert load_checkpoint(tmp_path / "shipped.pt")["meta"]["source_checkpoint"] == str(tmp_path / "bare.pt")


def test_only_if_better_keeps_the_shipped_checkpoint_unless_both_headline_figures_improve(tmp_path, capsys):
    import itertools
    import json

    from robustseg_core.training.export import main as export

    model = build_segmentor("mit_cpu", embed_dim=32).eval()
    save_checkpoint(tmp_path / "best.pt", {**_checkpoint(model), "epoch": 4})

    every = ["".join(c) for k in range(1, 5) for c in itertools.combinations("RDEL", k)]

    def scores(rdel, mean, split="test", combinations=every):
        path = tmp_path / f"eval_{rdel}_{mean}_{split}_{len(combinations)}.json"
        path.write_text(json.dumps({"checkpoint": str(tmp_path / "best.pt"), "split": split, "data_root": "d",
                                    "frames": 3, "eval_size": 64, "results": {
            "drop": {"mean_miou": mean, "combinations": {name: {"miou": rdel if name == "RDEL" else 10.0}
                                                         for name in combinations}}}}))
        return ["--checkpoint", str(tmp_path / "best.pt"), "--out", str(tmp_path / "shipped.pt"), "--only-if-better",
                "--scores", str(path)]

    def shipped_figures():
        evaluation = load_checkpoint(tmp_path / "shipped.pt")["meta"]["evaluation"]
        return evaluation["drop_miou"]["RDEL"], evaluation["drop_mean_miou"]

    export(scores(27.6, 20.5))  # nothing shipped yet: written
    for worse in ((30.0, 20.0), (25.0, 22.0), (27.6, 20.5)):
        export(scores(*worse))
        assert shipped_figures() == (27.6, 20.5)
        assert "is not better (RDEL" in capsys.readouterr().out
    export(scores(33.0, 26.0, split="val"))
    assert shipped_figures() == (27.6, 20.5) and "not comparable" in capsys.readouterr().out
    zero_only = tmp_path / "zero_only.json"
    zero_only.write_text(json.dumps({"checkpoint": str(tmp_path / "best.pt"), "split": "test", "data_root": "d",
                                     "frames": 3, "eval_size": 64, "results": {
        "zero": {"mean_miou": 30.0, "combinations": {"RDEL": {"miou": 40.0}}}}}))
    export([*scores(33.0, 26.0)[:-1], str(zero_only)])
    assert shipped_figures() == (27.6, 20.5) and "not comparable" in capsys.readouterr().out
    export(scores(33.0, 26.0, combinations=["R", "RDEL"]))  # evaluate --combinations R RDEL: a mean of two
    assert shipped_figures() == (27.6, 20.5) and "cover 2 of the 15 modality combinations" in capsys.readouterr().out
    export(scores(33.0, 26.0))
    assert shipped_figures() == (33.0, 26.0)


def test_a_resume_that_would_not_continue_the_schedule_is_refused():
    saved = {"epoch": 11, "steps_per_epoch": 80}
    check_resumed_schedule(saved, Path("last.pt"), steps_per_epoch=80, epochs=12)  # a finished run: nothing to do
    check_resumed_schedule({"epoch": 11}, Path("last.pt"), steps_per_epoch=40, epochs=24)  # an older checkpoint
    with pytest.raises(ConfigError, match=r"last\.pt: the run made 80 steps per epoch and would now make 40"):
        check_resumed_schedule(saved, Path("last.pt"), steps_per_epoch=40, epochs=24)
    with pytest.raises(ConfigError, match=r"trained 12 epochs, more than train\.epochs=10"):
        check_resumed_schedule(saved, Path("last.pt"), steps_per_epoch=80, epochs=10)


def test_a_run_continued_in_a_new_folder_brings_its_best_checkpoint(tmp_path, capsys):
    """``--resume old/last.pt`` into a new output folder: best.pt comes from beside the resumed checkpoint
    (or from it, when its own epoch is the best), so the new folder always has one to evaluate."""
    model = build_segmentor("mit_cpu", embed_dim=32)
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    save_checkpoint(old / "best.pt", {**_checkpoint(model), "epoch": 9})
    last = {**_checkpoint(model), "epoch": 11, "best": {"score": 18.5, "epoch": 9}}
    ensure_best_checkpoint(new / "best.pt", last, old / "last.pt")
    assert load_checkpoint(new / "best.pt")["epoch"] == 9
    assert "copied" in capsys.readouterr().out
    ensure_best_checkpoint(new / "own.pt", {**last, "best": {"score": 19.0, "epoch": 11}}, old / "last.pt")
    assert load_checkpoint(new / "own.pt")["epoch"] == 11
    (old / "best.pt").unlink()
    ensure_best_checkpoint(new / "lost.pt", last, old / "last.pt")
    assert not (new / "lost.pt").exists() and "weights are not kept anywhere else" in capsys.readouterr().err


def test_a_folder_whose_continuation_stopped_before_its_first_epoch_is_not_started_afresh(tmp_path):
    """A run continued into a new folder and stopped in its first epoch leaves best.pt (from the resumed run) and no
    last.pt: ``--resume auto`` or a fresh start there would overwrite it and retrain the resumed run's epochs."""
    model = build_segmentor("mit_cpu", embed_dim=32)
    save_checkpoint(tmp_path / "best.pt", {**_checkpoint(model), "epoch": 9})
    for resume in ("auto", None):
        with pytest.raises(UsageError, match=r"holds a best\.pt but no last\.pt .* --resume <that checkpoint>"):
            resume_checkpoint(tmp_path, resume, {}, False, torch.device("cpu"))


def test_a_column_first_seen_after_a_resume_widens_the_log(tmp_path):
    """A run continued in a fresh folder (or resumed with a new ``grad_norm_every``) first logs a step without the
    per-term gradient norms; the next step that has them widens the header instead of stopping the run."""
    first = ScalarLogger(tmp_path, tensorboard=False, first_steps={"train": 960})
    first.log("train", 960, {"loss": 2.0, "grad_norm_total": 4.0})
    first.log("train", 1000, {"loss": 1.5, "grad_norm_total": 3.0, "grad_norm_kl": 0.5})
    first.close()
    resumed = ScalarLogger(tmp_path, tensorboard=False, first_steps={"train": 1020})
    resumed.log("train", 1020, {"loss": 1.0, "grad_norm_total": 2.0, "grad_norm_ce": 0.25})
    resumed.close()
    with open(tmp_path / "train.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["step", "loss", "grad_norm_total", "grad_norm_kl", "grad_norm_ce"]
    assert [(r["step"], r["grad_norm_kl"], r["grad_norm_ce"]) for r in rows] == [
        ("960", "", ""), ("1000", "0.5", ""), ("1020", "", "0.25")]


def test_logs_hold_each_step_once_after_a_resume(tmp_path):
    """A resumed run drops the rows (and TensorBoard events) the interrupted run logged past its last checkpoint,
    and a row cut off by a kill."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = ScalarLogger(tmp_path, tensorboard=True, first_steps={"train": 0})
    for step in range(6):
        first.log("train", step, {"loss": float(step)})
    first.close()
    with open(tmp_path / "train.csv", "a") as handle:
        handle.write("6,0.")  # a kill mid-row
    resumed = ScalarLogger(tmp_path, tensorboard=True, first_steps={"train": 4})  # last.pt ends at step 4
    for step in range(4, 8):
        resumed.log("train", step, {"loss": 10.0 + step})
    resumed.close()
    with open(tmp_path / "train.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["step"]), float(r["loss"])) for r in rows] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0),
                                                                (5, 15.0), (6, 16.0), (7, 17.0)]
    events = EventAccumulator(str(tmp_path / "tensorboard" / "train"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(s, float(s) if s < 4 else 10.0 + s)
                                                                        for s in range(8)]


def test_cached_frames_in_worker_processes_augment_a_resumed_epoch_as_an_uninterrupted_one(mini_dataset):
    """``data.cache`` with ``data.workers > 0``: epoch 1's augmented batch does not depend on whether epoch 0 ran
    in the same process (workers kept across epochs would continue their random streams)."""
    data = {**TRAINING_DEFAULTS["data"], "root": mini_dataset, "crop_size": 64, "eval_size": 64, "batch_size": 2,
            "workers": 1, "cache": True}
    ctx = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))

    def first_batch(loader, epoch: int) -> torch.Tensor:
        set_epoch(loader, epoch, seed=0)
        seed_everything(1000 * epoch)  # as the training loop does
        return next(iter(loader))["images"]

    uninterrupted, _ = build_loaders(data, ctx, seed=0)
    assert len(uninterrupted.dataset._cache) == len(uninterrupted.dataset), "decoded once, before the workers start"
    first_batch(uninterrupted, 0)
    resumed, _ = build_loaders(data, ctx, seed=0)
    assert torch.equal(first_batch(resumed, 1), first_batch(uninterrupted, 1))


def test_average_checkpoints_is_the_weighted_mean_and_names_what_does_not_fit(tmp_path, capsys):
    from robustseg_core.training.average import cli as average

    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = build_segmentor("mit_cpu", embed_dim=32).eval()
        model.head.fuse[1].running_mean.normal_()
        save_checkpoint(tmp_path / f"e{seed}.pt", {**_checkpoint(model), "epoch": 10 * seed, "optimizer": {}})
        paths.append(str(tmp_path / f"e{seed}.pt"))
    assert average([*paths, "--out", str(tmp_path / "avg.pt"), "--weights", "1", "1", "2"]) == 0
    assert "the mean of 3 checkpoints (epochs 0, 10, 20)" in capsys.readouterr().out
    inputs = [load_checkpoint(path)["model"] for path in paths]
    averaged, state = build_model_from_checkpoint(tmp_path / "avg.pt")  # evaluate and the node read it
    for key in ("head.fuse.1.running_mean", "head.classifier.weight", "encoder.block1.0.attn.q.weight"):
        assert torch.allclose(averaged.state_dict()[key], (inputs[0][key] + inputs[1][key] + 2 * inputs[2][key]) / 4)
    assert torch.equal(averaged.state_dict()["head.fuse.1.num_batches_tracked"],
                       inputs[2]["head.fuse.1.num_batches_tracked"])
    assert "optimizer" not in state and state["epoch"] == 20
    assert [entry["epoch"] for entry in state["meta"]["averaged_from"]] == [0, 10, 20]
    assert state["meta"]["command"].startswith("average_checkpoints ")

    other = build_segmentor("mit_cpu", embed_dim=64)
    save_checkpoint(tmp_path / "wide.pt", _checkpoint(other))
    for name, config in (("student.pt", {"train": {"seed": 0}, "student": {"recipe": "SPCR"}}),
                         ("seed1.pt", {"train": {"seed": 1}}), ("seed0.pt", {"train": {"seed": 0}}),
                         ("pretrain.pt", {"train": {"seed": 0}, "pretrain": {"inputs": "single"}})):
        save_checkpoint(tmp_path / name, {**_checkpoint(model), "meta": checkpoint_meta(config)})
    bad = ["--out", str(tmp_path / "bad.pt")]
    for argv, status, message in (
            ([paths[0], str(tmp_path / "wide.pt"), *bad], 1, "wide.pt: another architecture than"),
            ([str(tmp_path / "seed0.pt"), str(tmp_path / "student.pt"), *bad], 1,
             "student.pt: not a checkpoint of the run of"),
            ([str(tmp_path / "seed0.pt"), str(tmp_path / "student.pt"), *bad], 1,
             "stage 'student', not 'teacher'; student.recipe 'SPCR', not None"),
            ([str(tmp_path / "seed0.pt"), str(tmp_path / "seed1.pt"), *bad], 1, "train.seed 1, not 0"),
            ([str(tmp_path / "seed0.pt"), str(tmp_path / "pretrain.pt"), *bad], 1,
             "stage 'pretrain_encoder', not 'teacher'"),
            ([paths[0], *bad], 2, "give at least two checkpoints"),
            ([*paths[:2], "--weights", "1", *bad], 2, "--weights: 1 weight(s) for 2 checkpoints"),
            ([*paths[:2], "--out", paths[0]], 2, "is one of the inputs")):
        assert average(argv) == status
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad.pt").exists()


"""Encoder pretraining: the wide randomisation, the pretraining run and its encoder file, the shipped
encoder, and the errors a wrong encoder file gets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robustseg_core.models import SHIPPED_ENCODERS, build_segmentor, save_encoder
from robustseg_core.models.mit import build_mit
from robustseg_core.sim.drive import Drive, DriveConfig
from robustseg_core.sim.generate import plan_scenes
from robustseg_core.models.checkpoint import load_checkpoint
from robustseg_core.training.pretrain_encoder import main as pretrain_encoder

from test_train_teacher import tiny_overrides

SHIPPED_ENCODER_LIMIT_BYTES = 5 * 1024 * 1024


def test_wide_randomisation_changes_the_look_but_not_the_benchmark():
    config = DriveConfig(width=48, height=32)
    default = Drive(11, config).frame(0)
    benchmark = Drive(11, DriveConfig(width=48, height=32, randomization="benchmark")).frame(0)
    wide = Drive(11, DriveConfig(width=48, height=32, randomization="wide"))
    assert np.array_equal(default.rgb, benchmark.rgb) and np.array_equal(default.labels, benchmark.labels)
    assert not np.array_equal(default.rgb, wide.frame(0).rgb)
    assert wide.intrinsics.hfov_deg != pytest.approx(config.hfov_deg)  # intrinsics drawn per scene
    with pytest.raises(ValueError, match="randomization 'narrow'"):
        DriveConfig(randomization="narrow")


def test_pretraining_scenes_never_occur_in_the_benchmark():
    """The committed commands (Makefile: benchmark-data, pretrain-data) plan disjoint scene seeds."""
    benchmark = plan_scenes(0, {"train": 80, "val": 20, "test": 20}, 8)
    pretraining = plan_scenes(1000, {"train": 500, "val": 24}, 6)
    assert not {job.seed for job in benchmark} & {job.seed for job in pretraining}


def test_pretraining_writes_a_strictly_loadable_encoder_and_resumes(mini_dataset, tmp_path):
    output = tmp_path / "pretrain"
    overrides = [*tiny_overrides(mini_dataset, output, 2), "data.cache=true", "pretrain.inputs=single"]
    pretrain_encoder(["--set", *overrides])
    encoder_file = output / "encoder.pth"
    stored = torch.load(encoder_file, weights_only=True)
    meta = stored["meta"]
    assert meta["preset"] == "mit_cpu" and meta["inputs"] == "single"
    assert meta["data"]["seed"] == 0 and meta["budget"]["epochs"] == 2 and meta["budget"]["steps"] > 0
    assert meta["train_seconds"] > 0 and meta["command"]
    assert set(stored["state_dict"]) == set(build_mit("mit_cpu").state_dict())  # official MiT key names
    model = build_segmentor("mit_cpu", embed_dim=32, pretrained=encoder_file)
    best = load_checkpoint(output / "best.pt")
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, best["model"][f"encoder.{key}"]), key
    # A finished run resumed with a longer budget continues from its last epoch.
    overrides[overrides.index("train.epochs=2")] = "train.epochs=3"
    pretrain_encoder(["--set", *overrides, "--resume", "auto", "--allow-config-change"])
    assert load_checkpoint(output / "last.pt")["epoch"] == 2


def test_wrong_encoder_files_are_refused_naming_the_problem(tmp_path):
    encoder = build_mit("mit_cpu")
    other_preset = tmp_path / "b0.pth"
    save_encoder(other_preset, build_mit("mit_b0"), {"preset": "mit_b0"})
    with pytest.raises(ValueError, match="for preset 'mit_b0', the model is 'mit_cpu'"):
        build_segmentor("mit_cpu", pretrained=other_preset)
    extra = tmp_path / "extra.pth"
    state = dict(encoder.state_dict())
    state["block1.0.attn.extra"] = torch.zeros(1)
    del state["norm4.bias"]
    state["patch_embed1.proj.weight"] = torch.zeros(1, 3, 7, 7)
    torch.save({"state_dict": state, "meta": {}}, extra)
    with pytest.raises(ValueError) as error:
        build_segmentor("mit_cpu", pretrained=extra)
    message = str(error.value)
    assert "norm4.bias" in message and "block1.0.attn.extra" in message and "patch_embed1.proj.weight" in message
    with pytest.raises(FileNotFoundError, match="sim:mit_cpu"):
        build_segmentor("mit_cpu", pretrained=tmp_path / "absent.pth")


def test_shipped_encoder_loads_strictly_and_says_how_it_was_made():
    path = SHIPPED_ENCODERS["sim:mit_cpu"]
    assert path.stat().st_size <= SHIPPED_ENCODER_LIMIT_BYTES
    model = build_segmentor("mit_cpu", embed_dim=256, pretrained="sim:mit_cpu")
    meta = torch.load(path, weights_only=True)["meta"]
    assert meta["preset"] == "mit_cpu" and "pretrain_encoder" in meta["command"]
    assert meta["data"]["randomization"] == "wide" and meta["data"]["seed"] != 0
    assert meta["budget"]["steps"] > 0 and meta["train_seconds"] > 0
    assert model.encoder.patch_embed1.proj.weight.abs().sum() > 0
    assert Path(path).parent.name == "weights"


def test_shipped_training_configs_follow_the_paper_initialisation():
    """Teacher and student start from pretrained encoder weights; no shipped config starts the student
    from the teacher (init_from_teacher is a documented departure)."""
    import yaml

    root = Path(__file__).resolve().parent.parent / "config"
    for name in ("teacher_cpu.yaml", "student_cpu.yaml"):
        config = yaml.safe_load((root / name).read_text())
        assert config["model"]["pretrained"] == "sim:mit_cpu", name
    for name in ("student.yaml", "student_cpu.yaml"):
        config = yaml.safe_load((root / name).read_text())
        assert config["student"].get("init_from_teacher", False) is False, name

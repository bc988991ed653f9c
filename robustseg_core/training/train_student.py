"""Stage 2: train the robust student from a frozen teacher (docs/method.md, "Stage 2: the student").

Each step drops modalities per sample (k uniform in 1..M, then a uniform subset of size k), runs the
frozen teacher on the complete input and the student on what is left, and minimises

    L = OHEM-CE + w_kl * KL(teacher || student logits) + w_hpdm * HPDM + w_rrm * RRM

with the terms switched on by the recipe of the paper's ablation: ``S`` (CE + KL), ``SR`` (+ RRM),
``SPC`` (+ HPDM), ``SPCR`` (+ HPDM + RRM)::

    train_student --config config/student.yaml --set teacher.checkpoint=runs/teacher/best.pt
    torchrun --nproc_per_node=2 -m robustseg_core.training.train_student --config config/student.yaml
    ros2 run robustseg_ros train_student --config ...

The feature losses (HPDM, RRM) distil only the modalities the student really observed: under the
zero-fill convention the zero images are encoded and fused, but their features are not pulled
towards the teacher's features of the real images.

Everything else (DDP, AMP, resume, atomic checkpoints, logs of every term and its gradient norm)
comes from :func:`robustseg_core.training.engine.fit`.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

from ..classes import CLASS_NAMES, MODALITIES, list_difference
from ..cli import console_script
from ..evaluation import COMBINATIONS
from ..losses import OhemCrossEntropy, hpdm_loss, logit_kl, rrm_loss
from ..losses.rrm import RRM_NORMALIZATIONS
from ..models import MISSING_CONVENTIONS
from ..models.checkpoint import CheckpointError, build_model_from_checkpoint, checkpoint_classes, load_model_state
from .config import ConfigError, load_config
from .distributed import cleanup_distributed, setup_distributed
from .engine import TRAINING_DEFAULTS, check_intervals, check_training_config, fit, seed_everything
from .modality_dropout import apply_modality_dropout, validated_k_probabilities
from .run_folder import check_stage
from .train_teacher import build_model, fit_options, get_args_parser

#: Which distillation terms each recipe of the ablation uses (CE is always on).
RECIPES: dict[str, tuple[str, ...]] = {
    "S": ("kl",),
    "SR": ("kl", "rrm"),
    "SPC": ("kl", "hpdm"),
    "SPCR": ("kl", "hpdm", "rrm"),
}

#: RRM perturbed elements per block on CPU, where it bounds the temporaries to a few MB each (GPUs take
#: a stage at once).
RRM_CPU_BLOCK_ELEMENTS = 2**20

PROG = "train_student"
DEFAULTS = copy.deepcopy(TRAINING_DEFAULTS)
DEFAULTS["train"].update(output_dir="runs/student", val_combinations=list(COMBINATIONS))
DEFAULTS.update({
    "loss": {"ohem_thresh": 0.7},
    "teacher": {"checkpoint": None},
    "student": {"recipe": "SPCR", "convention": "drop", "k_probabilities": None, "init_from_teacher": False},
    "distill": {
        "kl_weight": 50.0,
        "kl_temperature": 1.0,
        "hpdm_weight": 100.0,
        "hpdm_pairing": "random",
        "hpdm_temperature": 1.0,
        "hpdm_reference_scaling": False,
        "rrm_weight": 12.0,
        "rrm_lambda": 1.0,
        "rrm_normalize": "size",
        "rrm_samples": 10,
    },
})


def check_student_config(config: dict) -> None:
    """Reject unknown recipes and conventions, and loss weights that are negative or not numbers."""
    student, distill = config["student"], config["distill"]
    if student["recipe"] not in RECIPES:
        raise ConfigError(f"student.recipe {student['recipe']!r}: expected one of {sorted(RECIPES)}")
    if student["convention"] not in MISSING_CONVENTIONS:
        raise ConfigError(f"student.convention {student['convention']!r}: expected one of {MISSING_CONVENTIONS}")
    if distill["hpdm_pairing"] not in ("random", "identity"):
        raise ConfigError(f"distill.hpdm_pairing {distill['hpdm_pairing']!r}: expected 'random' or 'identity'")
    check_intervals(config, {**{f"distill.{key}": "[0, inf)" for key in ("kl_weight", "hpdm_weight", "rrm_weight",
                                                                        "rrm_lambda")},
                             "distill.kl_temperature": "(0, inf)", "distill.hpdm_temperature": "(0, inf)"})
    if distill["rrm_normalize"] not in RRM_NORMALIZATIONS:
        raise ConfigError(f"distill.rrm_normalize {distill['rrm_normalize']!r}: expected one of {RRM_NORMALIZATIONS}")
    if distill["rrm_samples"] < 1:
        raise ConfigError(f"distill.rrm_samples must be >= 1, got {distill['rrm_samples']}")
    weights = student["k_probabilities"]
    if weights is not None and not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
        raise ConfigError(f"student.k_probabilities must be a list of numbers, got {weights!r}")
    try:
        validated_k_probabilities(weights, len(MODALITIES))
    except ValueError as error:
        raise ConfigError(f"student.{error}") from None
    if config["teacher"]["checkpoint"] is None:
        raise ConfigError("teacher.checkpoint is not set: the student needs a trained teacher (train_teacher)")


def load_teacher(path: str, student: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The frozen teacher, checked to predict the student's classes from the same modality order."""
    teacher, checkpoint = build_model_from_checkpoint(path, device)
    check_stage(checkpoint, Path(path), "teacher", "teacher.checkpoint must be the stage-1 teacher (train_teacher)")
    difference = list_difference(checkpoint_classes(checkpoint, path), CLASS_NAMES, ("teacher", "student"))
    difference = difference or list_difference(teacher.modalities, student.modalities, ("teacher", "student"),
                                               "modality")
    if difference:
        raise CheckpointError(f"{path}: the teacher does not fit the student: {difference}")
    teacher.to(device).eval().requires_grad_(False)
    return teacher


def student_step(teacher: torch.nn.Module, config: dict):
    """Step function: per-sample modality dropout, frozen teacher, the recipe's loss terms."""
    student_cfg, distill = config["student"], config["distill"]
    terms_on = RECIPES[student_cfg["recipe"]]
    criterion = OhemCrossEntropy(config["loss"]["ohem_thresh"])

    def step(model: torch.nn.Module, batch: dict) -> dict:
        images, labels = batch["images"], batch["label"]
        student_images, present, observed = apply_modality_dropout(
            images, student_cfg["convention"], k_probabilities=student_cfg["k_probabilities"]
        )
        with torch.no_grad():
            target = teacher(images, torch.ones_like(present), return_features=True)
        output = model(student_images, present, return_features=True)
        terms = {"ohem_ce": criterion(output.logits, labels)}
        if "kl" in terms_on:
            terms["kl"] = distill["kl_weight"] * logit_kl(output.logits.float(), target.logits.float(), distill["kl_temperature"])
        if "hpdm" in terms_on:
            hpdm, _ = hpdm_loss(
                [f.float() for f in output.features], [f.float() for f in target.features], labels, observed,
                pairing=distill["hpdm_pairing"], temperature=distill["hpdm_temperature"],
                reference_scaling=distill["hpdm_reference_scaling"],
            )
            terms["hpdm"] = distill["hpdm_weight"] * hpdm
        if "rrm" in terms_on:
            rrm, _ = rrm_loss(
                [f.float() for f in output.features], [f.float() for f in target.features], observed,
                lam=distill["rrm_lambda"], n_samples=distill["rrm_samples"], normalize=distill["rrm_normalize"],
                max_block_elements=RRM_CPU_BLOCK_ELEMENTS if images.device.type == "cpu" else None,
            )
            terms["rrm"] = distill["rrm_weight"] * rrm
        terms["loss"] = sum(terms.values())
        return terms

    return step


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser("Train the RobustSeg student from a frozen teacher (stage 2).", PROG,
                           "config/student.yaml").parse_args(argv)
    config = load_config(DEFAULTS, args.config, args.set)
    check_training_config(config)
    check_student_config(config)
    ctx = setup_distributed(config["train"]["device"])
    try:
        seed_everything(config["train"]["seed"] + ctx.rank)
        student = build_model(config).to(ctx.device)
        teacher_path = config["teacher"]["checkpoint"]
        teacher = load_teacher(teacher_path, student, ctx.device)
        if config["student"]["init_from_teacher"]:
            load_model_state(student, {"model": teacher.state_dict(), "architecture": teacher.architecture}, teacher_path)
        recipe = config["student"]["recipe"]
        if {"hpdm", "rrm"} & set(RECIPES[recipe]) and teacher.architecture["preset"] != student.architecture["preset"]:
            raise CheckpointError(
                f"{teacher_path}: recipe {recipe} distils encoder features, so the student's encoder must match the "
                f"teacher's: teacher {teacher.architecture['preset']}, student {student.architecture['preset']}"
            )
        return fit(config, ctx, student, student_step(teacher, config), description=f"student {recipe}",
                   **fit_options(args, PROG, argv))
    finally:
        cleanup_distributed()


cli = console_script(main, PROG)


if __name__ == "__main__":
    sys.exit(cli())

"""Stage 1: train the multimodal teacher on complete inputs with OHEM cross-entropy (docs/method.md, "Stage 1").

Single process::

    train_teacher --config config/teacher.yaml --set data.root=data/sim train.epochs=20

Several processes (DDP; gloo on CPU, nccl on GPUs)::

    torchrun --nproc_per_node=2 -m robustseg_core.training.train_teacher --config config/teacher.yaml

``--resume auto`` continues from ``<output_dir>/last.pt`` when it exists.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys

import torch

from ..cli import console_script
from ..losses import OhemCrossEntropy
from ..models import build_segmentor
from .config import load_config
from .distributed import cleanup_distributed, setup_distributed
from .engine import TRAINING_DEFAULTS, check_training_config, fit, seed_everything
from .run_folder import resume_command

PROG = "train_teacher"
DEFAULTS = {**copy.deepcopy(TRAINING_DEFAULTS), "loss": {"ohem_thresh": 0.7}}


def get_args_parser(description: str = "Train the RobustSeg multimodal teacher (stage 1).",
                    prog: str = "train_teacher", config: str = "config/teacher.yaml") -> argparse.ArgumentParser:
    """The training command line; ``config``: the example config that shows every key."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help=f"YAML config; see {config} for every key")
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="SECTION.KEY=VALUE",
                        help="config overrides, repeatable")
    parser.add_argument("--resume", help="checkpoint to resume from, or 'auto' for <output_dir>/last.pt if present")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="resume although the config changed in keys safe to change (train.epochs, "
                             "train.eval_every, train.log_every, train.grad_norm_every, train.tensorboard); "
                             "changes to other keys are always refused")
    return parser


def fit_options(args: argparse.Namespace, prog: str, argv: list[str] | None) -> dict:
    """The keyword arguments of ``fit`` that come from the command line: resume, its config check, the
    command that resumes this run (printed on Ctrl-C) and the one that ran (kept in the checkpoints)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return {"resume": args.resume, "allow_config_change": args.allow_config_change,
            "command": resume_command(prog, argv), "command_line": shlex.join([prog, *argv])}


def build_model(config: dict) -> torch.nn.Module:
    """The segmentor that ``config["model"]`` describes."""
    model = config["model"]
    return build_segmentor(model["preset"], embed_dim=model["embed_dim"], drop_path_rate=model["drop_path_rate"],
                           pretrained=model["pretrained"])


def teacher_step(criterion: torch.nn.Module):
    """Step function: all modalities present, OHEM cross-entropy."""

    def step(model: torch.nn.Module, batch: dict) -> dict:
        images = batch["images"]
        present = torch.ones(images.shape[:2], dtype=torch.bool, device=images.device)
        loss = criterion(model(images, present), batch["label"])
        return {"loss": loss, "ohem_ce": loss}

    return step


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    config = load_config(DEFAULTS, args.config, args.set)
    check_training_config(config)
    ctx = setup_distributed(config["train"]["device"])
    try:
        seed_everything(config["train"]["seed"] + ctx.rank)
        model = build_model(config).to(ctx.device)
        step = teacher_step(OhemCrossEntropy(config["loss"]["ohem_thresh"]))
        return fit(config, ctx, model, step, description="teacher", **fit_options(args, PROG, argv))
    finally:
        cleanup_distributed()


cli = console_script(main, PROG)


if __name__ == "__main__":
    sys.exit(cli())

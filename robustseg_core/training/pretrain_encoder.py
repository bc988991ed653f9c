"""Pretrain the shared MiT encoder on generated scenes: the CPU stand-in for ImageNet MiT weights.

The paper starts the teacher and the student from ImageNet MiT weights (arXiv 2505.12861, §4;
docs/method.md, "Initialisation"). None can be downloaded here, so this command trains the encoder
on data the benchmark never uses: scenes from another seed with every look drawn more widely
(``generate_dataset --seed 1000 --randomization wide``; ``make pretrain-data``). The objective is
segmentation from a single modality with a throwaway SegFormer head:

* ``pretrain.inputs: single``: each sample shows the network one of its modalities, drawn uniformly,
  so the one shared encoder learns to describe RGB, HHA depth, events and LiDAR each on its own;
* ``pretrain.inputs: rgb``: RGB only, as ImageNet is RGB.

docs/results.md ("Pretrained encoder") compares the two by what they do for the teacher and the
student. The encoder is written in the official MiT key layout with its metadata, so
``model.pretrained`` loads it exactly as it loads ``mit_b0.pth``::

    pretrain_encoder --config config/pretrain_cpu.yaml --set data.root=data/pretrain128
    pretrain_encoder --config config/pretrain_cpu.yaml --resume auto   # after an interruption

Checkpoints, resume and logs are the training engine's (:func:`robustseg_core.training.engine.fit`);
``<output_dir>/encoder.pth`` is written from ``best.pt`` when training ends.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

from ..classes import MODALITIES
from ..cli import console_script
from ..losses import OhemCrossEntropy
from ..models import save_encoder
from ..models.checkpoint import build_model_from_checkpoint
from ..output_folder import check_writable
from .config import ConfigError, load_config
from .distributed import cleanup_distributed, setup_distributed
from .engine import TRAINING_DEFAULTS, check_training_config, fit, seed_everything
from .train_teacher import build_model, fit_options, get_args_parser

#: What the encoder sees per sample (one modality drawn uniformly, or RGB only) -> the modality
#: combinations validated by default (``train.val_combinations: null``), i.e. what it is trained for.
PRETRAIN_INPUTS: dict[str, list[str]] = {"single": ["R", "D", "E", "L"], "rgb": ["R"]}

PROG = "pretrain_encoder"
DEFAULTS = copy.deepcopy(TRAINING_DEFAULTS)
DEFAULTS["train"].update(output_dir="runs/pretrain", val_combinations=None)
DEFAULTS.update({"loss": {"ohem_thresh": 0.7}, "pretrain": {"inputs": "single", "encoder_out": None}})


def single_modality_present(batch_size: int, inputs: str, device: torch.device) -> torch.Tensor:
    """Presence mask [B, M] with exactly one modality per sample: drawn uniformly ("single"), or RGB."""
    if inputs == "rgb":
        choice = torch.full((batch_size,), MODALITIES.index("rgb"), device=device)
    else:
        choice = torch.randint(len(MODALITIES), (batch_size,), device=device)
    return torch.nn.functional.one_hot(choice, len(MODALITIES)).bool()


def pretrain_step(criterion: torch.nn.Module, inputs: str):
    """Step function: one modality per sample, OHEM cross-entropy through the throwaway head."""

    def step(model: torch.nn.Module, batch: dict) -> dict:
        images = batch["images"]
        present = single_modality_present(images.shape[0], inputs, images.device)
        loss = criterion(model(images, present), batch["label"])
        return {"loss": loss, "ohem_ce": loss}

    return step


def data_description(root: str) -> dict:
    """What the encoder was trained on: the data set's root, seed, randomisation and scene count."""
    meta_path = Path(root) / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return {"root": str(root)}
    return {
        "root": str(root),
        "seed": meta.get("seed"),
        "randomization": (meta.get("drive_config") or {}).get("randomization", "benchmark"),
        "size": [meta.get("width"), meta.get("height")],
        "scenes": {split: len(scenes) for split, scenes in meta.get("splits", {}).items()},
        "scene_seeds": {split: [scene.get("seed") for scene in scenes]  # None for an indexed data set (DELIVER)
                        for split, scenes in meta.get("splits", {}).items()},
    }


def encoder_path(config: dict) -> Path:
    """Where the pretrained encoder goes: ``pretrain.encoder_out``, by default ``<output_dir>/encoder.pth``."""
    return Path(config["pretrain"]["encoder_out"] or Path(config["train"]["output_dir"]) / "encoder.pth")


def check_encoder_path(config: dict) -> None:
    """``ConfigError`` (or ``NotWritable``) before training when the encoder could not be written after it."""
    out = encoder_path(config)
    if out.is_dir():
        raise ConfigError(f"pretrain.encoder_out {out}: is a folder; give the file to write "
                          f"(e.g. {out / 'encoder.pth'})")
    check_writable(out.parent)


def export_encoder(config: dict, best: dict) -> Path:
    """Write the encoder of ``<output_dir>/best.pt`` with its provenance to ``pretrain.encoder_out``."""
    output_dir = Path(config["train"]["output_dir"])
    model, checkpoint = build_model_from_checkpoint(output_dir / "best.pt")
    out = encoder_path(config)
    train_cfg, data_cfg = config["train"], config["data"]
    meta = {
        "preset": model.architecture["preset"],
        "objective": f"single-modality segmentation ({config['pretrain']['inputs']}), OHEM CE, throwaway head "
                     f"{model.architecture['embed_dim']}",
        "inputs": config["pretrain"]["inputs"],
        "command": " ".join(sys.argv),
        "data": data_description(data_cfg["root"]),
        "budget": {"epochs": train_cfg["epochs"], "steps": best.get("steps"), "batch_size": data_cfg["batch_size"],
                   "crop_size": data_cfg["crop_size"], "lr": config["optim"]["lr"]},
        "train_seconds": best.get("train_seconds"),
        "best_epoch": checkpoint.get("epoch"),
        "val_miou": {k: v for k, v in best.items() if k.startswith("miou_") and not k.startswith("miou_present")},
        "torch_version": str(torch.__version__),
    }
    save_encoder(out, model.encoder, meta)
    return out


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser("Pretrain the shared MiT encoder on generated scenes (ImageNet stand-in).",
                           PROG, "config/pretrain_cpu.yaml").parse_args(argv)
    config = load_config(DEFAULTS, args.config, args.set)
    inputs = config["pretrain"]["inputs"]
    if inputs not in PRETRAIN_INPUTS:
        raise ConfigError(f"pretrain.inputs {inputs!r}: expected one of {tuple(PRETRAIN_INPUTS)}")
    if config["train"]["val_combinations"] is None:
        config["train"]["val_combinations"] = PRETRAIN_INPUTS[inputs]
    check_training_config(config)
    check_encoder_path(config)  # before the epochs, not after them
    ctx = setup_distributed(config["train"]["device"])
    try:
        seed_everything(config["train"]["seed"] + ctx.rank)
        model = build_model(config).to(ctx.device)
        step = pretrain_step(OhemCrossEntropy(config["loss"]["ohem_thresh"]), inputs)
        best = fit(config, ctx, model, step, description=f"encoder pretraining ({inputs})",
                   **fit_options(args, PROG, argv))
        if ctx.is_main:
            out = export_encoder(config, best)
            print(f"pretrained encoder written to {out}")
        return best
    finally:
        cleanup_distributed()


cli = console_script(main, PROG)


if __name__ == "__main__":
    sys.exit(cli())

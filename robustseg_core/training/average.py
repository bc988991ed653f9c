"""``average_checkpoints``: one model whose weights are the mean of several checkpoints of one run.

Averaging the weights of points along one training trajectory (stochastic weight averaging, Izmailov et
al. 2018) lands nearer the centre of the flat region those points sit in than any single one. It suits
the ends of warm-restarted schedules, where the learning rate has decayed to zero several times along
one path (``make long-spcr-200``: epochs 120, 160 and 200 of one SPCR)::

    average_checkpoints runs/long120/SPCR_seed0/last.pt runs/long160/SPCR_seed0/last.pt \\
        runs/long200/SPCR_seed0/last.pt --out runs/swa/SPCR_seed0/best.pt

Every floating-point tensor of the state dict is the (optionally ``--weights``-weighted) mean of the
inputs', computed in float64 and stored in the input dtype; integer tensors (BatchNorm's
``num_batches_tracked``) come from the last input. BatchNorm running statistics are averaged like the
weights, not recomputed over the training data: the only BatchNorm of the segmentor is the head's fuse
layer. The inputs must be checkpoints of one run: one architecture with the same keys and shapes, and the
same stage, training seed and student recipe (:func:`run_identity`; a teacher is not averaged with its
student, nor one seed's run with another's, whose weights lie in other basins). The output is
a checkpoint that ``evaluate``, ``export_checkpoint`` and the node read like ``best.pt``, with the
metadata (config, classes, modalities, normalisation) of the last input, its own command line as
``command`` and ``averaged_from`` naming each input by path, SHA-256, epoch, weight and the command that
trained it. Optimiser state is dropped: an average is not resumed.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import torch

from ..cli import console_script, positive_float
from ..errors import UsageError
from ..models.checkpoint import (
    CheckpointError,
    architecture_differences,
    build_model_from_checkpoint,
    file_sha256,
    save_checkpoint,
)
from ..output_folder import check_not_an_input
from .run_folder import recorded_input_digests, run_stage


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float],
                        names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The weighted mean of ``states`` (``weights`` sum to 1), key by key; ``CheckpointError`` naming the
    input (``names``) and the keys when the key sets or a shape differ."""
    reference = states[0]
    for state, name in zip(states[1:], names[1:]):
        missing, extra = sorted(set(reference) - set(state)), sorted(set(state) - set(reference))
        if missing or extra:
            raise CheckpointError(f"{name}: other weights than {names[0]}: missing {missing[:5]}, extra {extra[:5]}")
        shapes = [key for key in reference if state[key].shape != reference[key].shape]
        if shapes:
            raise CheckpointError(f"{name}: shapes differ from {names[0]} at {shapes[:5]}")
    averaged = {}
    for key, tensor in reference.items():
        if tensor.is_floating_point():
            total = sum(weight * state[key].double() for state, weight in zip(states, weights))
            averaged[key] = total.to(tensor.dtype)
        else:
            averaged[key] = states[-1][key].clone()
    return averaged


def run_identity(checkpoint: dict) -> dict[str, object]:
    """What the checkpoints of one training run share: the stage (``run_stage``), ``train.seed``,
    ``student.recipe`` and the data set's digest (of its ``meta.json``); None when not recorded (a ``best.pt``
    of an older version records no digest: its data set is not compared)."""
    config = (checkpoint.get("meta") or {}).get("config") or {}
    return {"stage": run_stage(config), "train.seed": (config.get("train") or {}).get("seed"),
            "student.recipe": (config.get("student") or {}).get("recipe"),
            "data set": recorded_input_digests(checkpoint).get("data.root")}


def average_checkpoints(paths: Sequence[Path], out: Path, weights: Sequence[float] | None = None,
                        command: str = "") -> dict:
    """Write the average of the checkpoints at ``paths`` to ``out`` (see the module docstring; ``command``: the
    command line stored as the one that made it); returns what was written."""
    if len(paths) < 2:
        raise UsageError("give at least two checkpoints to average")
    weights = list(weights) if weights else [1.0] * len(paths)
    if len(weights) != len(paths):
        raise UsageError(f"--weights: {len(weights)} weight(s) for {len(paths)} checkpoints")
    total = math.fsum(weights)
    weights = [weight / total for weight in weights]
    models, checkpoints = zip(*(build_model_from_checkpoint(path) for path in paths))
    for path, model in zip(paths[1:], models[1:]):
        differences = architecture_differences(model.architecture, models[0].architecture)
        if differences:
            raise CheckpointError(f"{path}: another architecture than {paths[0]}: " + "; ".join(differences))
    identities = [run_identity(checkpoint) for checkpoint in checkpoints]
    for path, identity in zip(paths[1:], identities[1:]):
        differences = [f"{key} {identity[key]!r}, not {identities[0][key]!r}" for key in identity
                       if identity[key] != identities[0][key]
                       and not (key == "data set" and None in (identity[key], identities[0][key]))]
        if differences:
            raise CheckpointError(f"{path}: not a checkpoint of the run of {paths[0]} ({'; '.join(differences)}); "
                                  "average points of one training run")
    states = [model.state_dict() for model in models]
    averaged = average_state_dicts(states, weights, [str(path) for path in paths])
    meta = dict(checkpoints[-1].get("meta") or {})
    meta["command"] = command
    meta["averaged_from"] = [
        {"path": str(path), "sha256": file_sha256(path), "epoch": checkpoint.get("epoch", -1), "weight": weight,
         "command": (checkpoint.get("meta") or {}).get("command", "")}
        for path, checkpoint, weight in zip(paths, checkpoints, weights)]
    result = {"model": averaged, "architecture": models[-1].architecture, "meta": meta,
              "epoch": checkpoints[-1].get("epoch", -1)}
    models[-1].load_state_dict(averaged, strict=True)  # the average fits the architecture it claims
    save_checkpoint(out, result)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="average_checkpoints",
                                     description="Average the weights of several checkpoints of one run.")
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoints of one architecture (best.pt, last.pt)")
    parser.add_argument("--out", type=Path, required=True, help="the averaged checkpoint (written atomically)")
    parser.add_argument("--weights", nargs="+", type=positive_float,
                        help="one weight per checkpoint (default: equal); normalised to sum to 1")
    args = parser.parse_args(argv)
    check_not_an_input("--out", args.out, args.checkpoints, "one of the inputs")
    command = "average_checkpoints " + " ".join(sys.argv[1:] if argv is None else argv)
    result = average_checkpoints(args.checkpoints, args.out, args.weights, command)
    epochs = ", ".join(str(entry["epoch"]) for entry in result["meta"]["averaged_from"])
    print(f"wrote {args.out}: the mean of {len(args.checkpoints)} checkpoints (epochs {epochs})")
    return result


cli = console_script(main, "average_checkpoints")


if __name__ == "__main__":
    sys.exit(cli())

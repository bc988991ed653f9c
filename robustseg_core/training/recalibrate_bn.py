"""``recalibrate_bn``: the head's BatchNorm statistics of a trained model, recomputed for complete inputs.

    recalibrate_bn --checkpoint runs/long200/SPCR_seed0/best.pt --data-root data/sim128 \\
        --out runs/long200_bn/SPCR_seed0/best.pt

Why. The segmentor has one BatchNorm, in the head's fuse layer, and it normalises the fused features
with running statistics (an exponential moving average, momentum 0.1) gathered during training. A
student trained with random modality dropout gathers them over fusions of 1, 2, 3 and 4 modalities
mixed together, on augmented crops in train mode; a mean over four modalities' features has other
statistics (less variance) than one modality's. At deployment the complete set is what a healthy
robot sees, and the running statistics fit none of the combinations exactly (the command prints how
far they are off; docs/results.md, "Recalibrated BatchNorm statistics", has the figures).

What. With the weights frozen and the model in eval mode, one pass over ``--split`` (the training
frames by default) at the evaluation transform, with the modalities of ``--combination`` (all four by
default) present, gives the exact mean and (population) variance over every pixel of the BatchNorm's
input, per channel, in float64. They replace the running statistics; nothing else changes. The
validation scores stored in the checkpoint (``meta.scores``, which ``fusion_policy: validated`` reads) are
measured again on the validation split, for all 15 combinations (``score`` stays the mean over the
combinations the run validated on, RDEL alone for a teacher), and ``meta.recalibrated_from`` names
the input (path, SHA-256, epoch, the command that trained it, its validation scores). This is the
"precise BatchNorm" idea (population statistics after training instead of the moving average), a step
the paper does not have: docs/method.md lists it with the other departures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..classes import MODALITIES
from ..cli import console_script, non_negative_int, positive_int
from ..data import DeliverDataset, EvalTransform, collate
from ..errors import UsageError
from ..fusion_policy import validation_miou
from ..evaluation.anymodal import COMBINATIONS, FULL_COMBINATION, combination_mask
from ..models.checkpoint import CheckpointError, build_model_from_checkpoint, file_sha256, resolve_device, save_checkpoint
from ..output_folder import check_not_an_input, check_writable
from .distributed import DistributedContext
from .engine import validate
from .run_folder import input_file_digests, recorded_input_digests


def head_batchnorm(model: nn.Module) -> nn.BatchNorm2d:
    """The segmentor's only BatchNorm (the head's fuse layer); ``CheckpointError`` when the model has another
    count (with several, each would see inputs normalised by the old statistics of those before it)."""
    layers = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if len(layers) != 1:
        raise CheckpointError(f"recalibrate_bn handles a model with one BatchNorm layer; this one has {len(layers)}")
    return layers[0]


@torch.inference_mode()
def input_statistics(model: nn.Module, loader: DataLoader, device: torch.device,
                     combination: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel mean and population variance (float64 [C]) of the head BatchNorm's input over every pixel of
    every frame of ``loader`` with the modalities of ``combination`` present, and the number of frames."""
    layer = head_batchnorm(model)
    sums: list[torch.Tensor] = []

    def accumulate(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        features = inputs[0].double()
        pixels = features.shape[0] * features.shape[2] * features.shape[3]
        moments = torch.stack([features.sum(dim=(0, 2, 3)), features.square().sum(dim=(0, 2, 3))])
        sums.append(torch.cat([moments.flatten(), moments.new_tensor([pixels])]))

    hook = layer.register_forward_pre_hook(accumulate)
    model.eval()
    frames = 0
    mask = combination_mask(combination).to(device)
    try:
        for batch in loader:
            images = batch["images"].to(device)
            present = mask.expand(images.shape[0], -1)
            model.decode_features(model.encode_all(images), present, images.shape[-2:])
            frames += images.shape[0]
    finally:
        hook.remove()
    if not sums:
        raise UsageError("no frame to recalibrate on: the split is empty")
    total = torch.stack(sums).sum(dim=0)
    channels = layer.num_features
    pixels = total[-1]
    mean = total[:channels] / pixels
    variance = (total[channels:2 * channels] / pixels - mean.square()).clamp_min(0.0)
    return mean, variance, frames


def recalibrate(checkpoint: Path, data_root: Path, out: Path, *, split: str = "train",
                combination: str = FULL_COMBINATION, batch_size: int = 8, workers: int = 2, device: str = "auto",
                command: str = "", other_data: bool = False) -> dict:
    """Write ``checkpoint`` with its head BatchNorm statistics recomputed (module docstring) to ``out``; returns
    what was written."""
    device = resolve_device(device)
    model, state = build_model_from_checkpoint(checkpoint, device)
    model.to(device)
    if tuple(model.modalities) != MODALITIES:
        raise CheckpointError(f"{checkpoint}: recalibrate_bn uses the combinations of {', '.join(MODALITIES)}; this "
                              f"model takes {', '.join(model.modalities)}")
    meta = dict(state.get("meta") or {})
    trained_on = recorded_input_digests(state).get("data.root")
    found = input_file_digests({"data": {"root": str(data_root)}}).get("data.root")
    if trained_on and found and found != trained_on and not other_data:
        raise UsageError(f"--data-root {data_root}: not the data set {checkpoint} was trained on (its meta.json has "
                         f"sha256 {found[:12]}, the run's {trained_on[:12]}); its scores before and after would come "
                         "from two data sets. To adapt the statistics to new data on purpose, pass --other-data")
    eval_size = (meta.get("config") or {}).get("data", {}).get("eval_size")
    if not eval_size:
        raise CheckpointError(f"{checkpoint}: no data.eval_size in its config")

    def loader(name: str) -> DataLoader:
        transform = EvalTransform(eval_size, model.modalities)
        dataset = DeliverDataset(data_root, name, modalities=model.modalities, transform=transform)
        return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate)

    mean, variance, frames = input_statistics(model, loader(split), device, combination)
    layer = head_batchnorm(model)
    running_mean, running_var = layer.running_mean.double(), layer.running_var.double()
    shift = {"variance_ratio": float((variance / running_var).mean()),
             "mean_shift_in_std": float(((mean - running_mean).abs() / running_var.sqrt()).mean())}
    layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
    layer.running_var.copy_(variance.to(layer.running_var.dtype))
    context = DistributedContext(rank=0, world_size=1, local_rank=0, device=device)
    scores = validate(model, loader("val"), context, COMBINATIONS)
    validated_on = list(validation_miou(meta.get("scores"))) or list(COMBINATIONS)
    scores["score"] = sum(scores[f"miou_{name}"] for name in validated_on) / len(validated_on)
    meta["recalibrated_from"] = {
        "path": str(checkpoint), "sha256": file_sha256(checkpoint), "epoch": state.get("epoch", -1),
        "command": meta.get("command", ""), "scores": meta.get("scores", {}),
        "statistics": {"split": split, "combination": combination, "frames": frames, "eval_size": eval_size, **shift}}
    meta["command"], meta["scores"] = command, scores
    result = {"model": model.state_dict(), "architecture": model.architecture, "meta": meta,
              "epoch": state.get("epoch", -1)}
    save_checkpoint(out, result)
    return result


def mean_of_combinations(scores: dict) -> str:
    """The mean validation mIoU over the 15 combinations of stored ``scores``, as text; "not measured" when some
    are missing (a teacher validates the complete set only)."""
    miou = validation_miou(scores)
    if set(miou) != set(COMBINATIONS):
        return "not measured"
    return f"{sum(miou[name] for name in COMBINATIONS) / len(COMBINATIONS):.2f}"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recalibrate_bn", description=(
        "Recompute the head BatchNorm's statistics of a trained model over complete inputs (eval mode, training "
        "frames) and store them with fresh validation scores."))
    parser.add_argument("--checkpoint", type=Path, required=True, help="trained checkpoint (best.pt)")
    parser.add_argument("--data-root", type=Path, required=True, help="DELIVER-layout data set it was trained on")
    parser.add_argument("--out", type=Path, required=True, help="the recalibrated checkpoint (written atomically)")
    parser.add_argument("--split", default="train", choices=("train", "val"),
                        help="frames the statistics come from (default: train)")
    parser.add_argument("--combination", default=FULL_COMBINATION, choices=COMBINATIONS, metavar="COMBINATION",
                        help=f"modalities present while gathering the statistics (default: {FULL_COMBINATION})")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--workers", type=non_negative_int, default=2)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--other-data", action="store_true",
                        help="recompute them on a data set the model was not trained on (adapting it to new data)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    check_not_an_input("--out", args.out, [args.checkpoint], "the input checkpoint")
    check_writable(args.out.parent)
    command = "recalibrate_bn " + " ".join(sys.argv[1:] if argv is None else argv)
    result = recalibrate(args.checkpoint, args.data_root, args.out, split=args.split,
                         combination=args.combination, batch_size=args.batch_size, workers=args.workers,
                         device=args.device, command=command, other_data=args.other_data)
    before = result["meta"]["recalibrated_from"]["scores"]
    after = result["meta"]["scores"]
    statistics = result["meta"]["recalibrated_from"]["statistics"]
    print(f"wrote {args.out}: head BatchNorm statistics over {statistics['frames']} {args.split} frames with "
          f"{args.combination}: variance / running variance {statistics['variance_ratio']:.3f} and |mean - running "
          f"mean| {statistics['mean_shift_in_std']:.3f} running std, channel means; "
          f"val {FULL_COMBINATION} {before.get('miou_' + FULL_COMBINATION, float('nan')):.2f} -> "
          f"{after['miou_' + FULL_COMBINATION]:.2f}, mean of 15 {mean_of_combinations(before)} -> "
          f"{mean_of_combinations(after)}")
    return result


cli = console_script(main, "recalibrate_bn")


if __name__ == "__main__":
    sys.exit(cli())

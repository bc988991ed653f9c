"""``evaluate``: mIoU of a checkpoint on a DELIVER-layout split under all modality combinations.

    evaluate --checkpoint runs/teacher/best.pt --data-root data/sim --split val \\
        --conventions drop zero --json results/teacher.json --markdown results/teacher.md

Writes JSON (every metric, per-class IoU, per combination and convention) and a Markdown table,
both atomically, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from torch.utils.data import DataLoader

from ..atomic import write_text_atomic
from ..classes import CLASS_NAMES, MODALITIES, list_difference
from ..cli import console_script, non_negative_float, non_negative_int, positive_int
from ..data import DeliverDataset, EvalTransform, collate
from ..models import MISSING_CONVENTIONS
from ..errors import UsageError
from ..models.checkpoint import (
    CheckpointError, build_model_from_checkpoint, checkpoint_classes, file_sha256, resolve_device,
)
from ..output_folder import check_not_an_input, check_writable
from ..deploy.metadata import ModelMetadata
from ..fusion_policy import DEFAULT_MIN_GAIN, FUSION_POLICIES, FusionPolicyError, check_fusion_policy, fusion_table
from .anymodal import (COMBINATIONS, FULL_COMBINATION, evaluate_combinations, fusion_policy_table, markdown_table,
                       summarize, summarize_fusion_policy)
from .robustness import evaluate_robustness, robustness_markdown


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate", description="Evaluate a checkpoint under all 15 modality combinations.")
    parser.add_argument("--checkpoint", required=True, help="robustseg checkpoint (.pt)")
    parser.add_argument("--data-root", required=True, help="DELIVER-layout data set root")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--conditions", nargs="+", help="weather folders to keep (default: all)")
    parser.add_argument("--cases", nargs="+", help="failure cases to keep, 'none' for clean frames (default: all)")
    parser.add_argument("--combinations", nargs="+", default=list(COMBINATIONS), choices=COMBINATIONS,
                        metavar="COMBINATION", help="e.g. R RD RDEL (default: all 15)")
    parser.add_argument("--conventions", nargs="+", default=["drop", "zero"], choices=MISSING_CONVENTIONS)
    parser.add_argument("--eval-size", type=positive_int,
                        help="short side at evaluation (default: the checkpoint's data.eval_size)")
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--workers", type=non_negative_int, default=2)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--fusion-policy", default="all", choices=FUSION_POLICIES,
                        help="also report each combination as the node's fusion_policy would fuse it: validated = the "
                             "subset the checkpoint scored best with on validation (needs all 15 combinations)")
    parser.add_argument("--fusion-min-gain", type=non_negative_float, default=DEFAULT_MIN_GAIN,
                        help="validation mIoU points a subset must gain before the validated policy uses it")
    parser.add_argument("--robustness", action="store_true", help="also run the EMM, RMM and NM protocols")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the RMM and NM noise")
    parser.add_argument("--json", type=Path, help="write all metrics here")
    parser.add_argument("--markdown", type=Path, help="write the Markdown tables here")
    return parser


def per_class_table(summary: dict, convention: str, combination: str) -> str:
    """Markdown table of per-class IoU for one combination."""
    ious = summary[convention]["combinations"][combination]["per_class_iou"]
    rows = [f"| {name} | {'absent' if iou is None else f'{iou:.2f}'} |" for name, iou in zip(CLASS_NAMES, ious)]
    return "\n".join(["| class | IoU |", "|---|---:|", *rows])


def report_markdown(summary: dict, title: str) -> str:
    """The combination tables in both mIoU conventions and the per-class table of the full combination."""
    first = next(iter(summary))
    parts = [
        f"## {title}",
        "mIoU (%) per modality combination, DELIVER convention (absent classes count 0, mean over 25):",
        markdown_table(summary, "miou"),
        "mIoU (%) over the classes present in label or prediction:",
        markdown_table(summary, "miou_present"),
    ]
    if FULL_COMBINATION in summary[first]["combinations"]:
        parts += [f"Per-class IoU (%), {FULL_COMBINATION}, {first} convention:", per_class_table(summary, first, FULL_COMBINATION)]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    for option, output in (("--json", args.json), ("--markdown", args.markdown)):
        check_not_an_input(option, output, [args.checkpoint], "the checkpoint evaluated")
        if output is not None:
            check_writable(output.parent)  # before the evaluation, not after it
    device = resolve_device(args.device)
    model, checkpoint = build_model_from_checkpoint(args.checkpoint, device)
    chosen = None
    if args.fusion_policy == "validated":
        if set(args.combinations) != set(COMBINATIONS):
            raise UsageError("--fusion-policy validated needs all 15 combinations: drop --combinations")
        validation = ModelMetadata.from_checkpoint(checkpoint, args.checkpoint).validation_miou
        try:
            check_fusion_policy(args.fusion_policy, args.fusion_min_gain, model.modalities, validation, args.checkpoint)
        except FusionPolicyError as error:
            raise UsageError(str(error)) from None
        chosen = fusion_table(model.modalities, validation, args.fusion_min_gain)
    model.to(device).eval()
    if tuple(model.modalities) != MODALITIES:
        raise CheckpointError(f"{args.checkpoint}: evaluate measures the combinations of {', '.join(MODALITIES)} in "
                              f"that order; this model takes {', '.join(model.modalities)}")
    eval_size = args.eval_size or checkpoint.get("meta", {}).get("config", {}).get("data", {}).get("eval_size")
    if not eval_size:
        raise UsageError(f"{args.checkpoint}: no data.eval_size in its config; pass --eval-size")
    dataset = DeliverDataset(args.data_root, args.split, modalities=model.modalities, conditions=args.conditions,
                             cases=args.cases, transform=EvalTransform(eval_size, model.modalities))
    difference = list_difference(checkpoint_classes(checkpoint, args.checkpoint), dataset.classes,
                                 ("checkpoint", "data set"))
    if difference:
        raise CheckpointError(f"{args.checkpoint} does not fit the data set {args.data_root}: {difference}")
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)
    matrices = evaluate_combinations(model, loader, device, args.combinations, args.conventions)
    summary = summarize(matrices)
    title = f"{args.checkpoint} on {args.data_root} {args.split} ({len(dataset)} frames, short side {eval_size})"
    markdown = report_markdown(summary, title)
    result = {"checkpoint": str(args.checkpoint), "checkpoint_sha256": file_sha256(args.checkpoint),
              "data_root": str(args.data_root), "split": args.split,
              "frames": len(dataset), "eval_size": eval_size, "classes": list(CLASS_NAMES), "results": summary}
    if chosen is not None:
        result["fusion_policy"] = {"policy": args.fusion_policy, "min_gain": args.fusion_min_gain,
                                   "results": summarize_fusion_policy(summary, chosen)}
        markdown += (f"\nWith the validated fusion policy (min gain {args.fusion_min_gain:g} mIoU points), mIoU (%) per "
                     "combination given, the combination fused in brackets where it differs:\n\n"
                     + fusion_policy_table(result["fusion_policy"]["results"]) + "\n")
    if args.robustness:
        result["robustness"] = evaluate_robustness(model, loader, device, seed=args.seed, zero_fill=matrices.get("zero"))
        markdown += "\nRobustness protocols (mIoU %, DELIVER convention):\n\n" + robustness_markdown(result["robustness"]) + "\n"
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    if args.markdown:
        write_text_atomic(args.markdown, markdown)
    print(markdown)
    return result


cli = console_script(main, "evaluate")


if __name__ == "__main__":
    sys.exit(cli())

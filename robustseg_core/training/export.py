"""``export_checkpoint``: a deployable checkpoint from a training checkpoint.

Keeps the weights and the plain metadata (architecture, classes, modality order, normalisation, the
training config and command), drops optimiser and scheduler state, and embeds evaluation scores
from an ``evaluate --json`` file::

    export_checkpoint --checkpoint runs/student_cpu/best.pt --scores runs/student_cpu/eval_test.json \\
        --out robustseg_ros/models/robustseg_student.pt

The result loads with ``torch.load(..., weights_only=True)`` like every robustseg checkpoint. With
``--only-if-better`` an existing ``--out`` is replaced only by a checkpoint that scores higher on the same
test split in both headline figures (RDEL and the mean of the 15 combinations, drop convention).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import console_script
from ..errors import UsageError
from ..models.checkpoint import (CheckpointError, build_model_from_checkpoint, file_sha256, load_checkpoint,
                                 save_checkpoint)
from ..output_folder import check_not_an_input
from .run_folder import run_stage


def export_checkpoint(checkpoint: Path, out: Path, scores: dict | None = None, note: str = "") -> dict:
    """Write the deployable form of ``checkpoint`` to ``out``; returns what was written."""
    model, state = build_model_from_checkpoint(checkpoint)
    meta = dict(state.get("meta") or {})
    if run_stage(meta.get("config") or {}) == "pretrain_encoder":
        raise CheckpointError(f"{checkpoint}: an encoder pretraining checkpoint (pretrain_encoder), whose head only "
                              "served the pretraining; export a teacher or a student")
    meta["trained_command"] = meta.pop("command", "")
    meta["source_checkpoint"] = str(checkpoint)
    meta["evaluation"] = scores or {}
    meta["note"] = note
    exported = {"model": model.state_dict(), "architecture": model.architecture, "meta": meta, "epoch": state.get("epoch", -1)}
    save_checkpoint(out, exported)
    return exported


def headline_scores(evaluation: dict) -> dict:
    """The numbers worth carrying inside a checkpoint from an ``evaluate --json`` result."""
    results = evaluation["results"]
    scores = {
        "split": evaluation["split"],
        "data_root": evaluation["data_root"],
        "frames": evaluation["frames"],
        "eval_size": evaluation["eval_size"],
    }
    for convention, summary in results.items():
        scores[f"{convention}_mean_miou"] = summary["mean_miou"]
        scores[f"{convention}_miou"] = {name: value["miou"] for name, value in summary["combinations"].items()}
    robustness = evaluation.get("robustness")
    if robustness:
        scores["EMM"] = {k: v for k, v in robustness["EMM"].items() if k != "combinations"}
        scores["RMM"] = {r: {k: v for k, v in value.items() if k != "combinations"} for r, value in robustness["RMM"].items()}
        scores["NM"] = robustness["NM"]
    return scores


def not_better_reason(scores: dict, current: dict) -> str:
    """Why ``scores`` does not beat ``current`` (the evaluation embedded in the checkpoint it would replace);
    empty when it is better on the same split and data set in RDEL and in the mean of the 15 combinations."""
    where = ("split", "data_root", "eval_size")
    if any(scores.get(key) != current.get(key) for key in where):
        return (f"scored on {'/'.join(str(scores.get(k)) for k in where)}, the current one on "
                f"{'/'.join(str(current.get(k)) for k in where)}: not comparable")
    for whose, candidate in (("the new scores", scores), ("the current ones", current)):
        combinations = candidate.get("drop_miou") or {}
        every = 2 ** max(map(len, combinations), default=0) - 1
        if len(combinations) != every:
            return (f"{whose} cover {len(combinations)} of the {every} modality combinations (evaluate without "
                    "--combinations): their mean is not the mean of all, not comparable")
    try:
        new = (scores["drop_miou"]["RDEL"], scores["drop_mean_miou"])
        old = (current["drop_miou"]["RDEL"], current["drop_mean_miou"])
    except KeyError:
        return "one of the two has no drop-convention RDEL and mean of 15: not comparable"
    if new[0] > old[0] and new[1] > old[1]:
        return ""
    return f"RDEL {new[0]:.2f} / mean of 15 {new[1]:.2f} against the current {old[0]:.2f} / {old[1]:.2f}"


def check_evaluated(evaluation: dict, checkpoint: Path, scores_path: Path) -> None:
    """``UsageError`` when the ``evaluate --json`` result read from ``scores_path`` is of another checkpoint than
    ``checkpoint``: by content (its ``checkpoint_sha256``), or by path for results written before it was stored."""
    recorded = evaluation.get("checkpoint_sha256")
    same = (recorded == file_sha256(checkpoint) if recorded is not None
            else Path(evaluation.get("checkpoint", "")).resolve() == checkpoint.resolve())
    if not same:
        raise UsageError(f"--scores {scores_path}: evaluates {evaluation.get('checkpoint')}, not --checkpoint "
                         f"{checkpoint} (another file{' or content' if recorded else ''}); evaluate this checkpoint")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="export_checkpoint", description="Export a deployable checkpoint (weights + metadata).")
    parser.add_argument("--checkpoint", type=Path, required=True, help="training checkpoint (best.pt or last.pt)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scores", type=Path, help="evaluate --json output whose headline numbers are embedded")
    parser.add_argument("--note", default="", help="free text stored in the metadata")
    parser.add_argument("--only-if-better", action="store_true",
                        help="keep an existing --out unless these --scores beat the ones it carries (RDEL and mean of 15)")
    args = parser.parse_args(argv)
    check_not_an_input("--out", args.out, [args.checkpoint], "the checkpoint exported")
    scores = None
    if args.scores:
        try:
            evaluation = json.loads(args.scores.read_text())
            scores = headline_scores(evaluation)
        except (OSError, ValueError, KeyError) as error:
            raise UsageError(f"{args.scores}: not a readable evaluate --json result ({error})") from error
        check_evaluated(evaluation, args.checkpoint, args.scores)
    if args.only_if_better and args.out.exists():
        if scores is None:
            raise UsageError("--only-if-better needs --scores (the evaluation to compare)")
        current = (load_checkpoint(args.out).get("meta") or {}).get("evaluation") or {}
        reason = not_better_reason(scores, current) if current else ""
        if reason:
            print(f"kept {args.out}: {args.checkpoint} is not better ({reason})")
            return load_checkpoint(args.out)
    exported = export_checkpoint(args.checkpoint, args.out, scores, args.note)
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.1f} MB): {exported['architecture']}")
    return exported


cli = console_script(main, "export_checkpoint")


if __name__ == "__main__":
    sys.exit(cli())

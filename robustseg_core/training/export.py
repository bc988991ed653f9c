"""``export_checkpoint``: a deployable checkpoint from a training checkpoint.

Keeps the weights and the plain metadata (architecture, classes, modality order, normalisation, the
training config and command), drops optimiser and scheduler state, and embeds evaluation scores
from an ``evaluate --json`` file::

    export_checkpoint --checkpoint runs/student_cpu/best.pt --scores runs/student_cpu/eval_test.json \\
        --out robustseg_ros/models/robustseg_student.pt

The result loads with ``torch.load(..., weights_only=True)`` like every robustseg checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import console_script
from ..errors import UsageError
from ..models.checkpoint import build_model_from_checkpoint, save_checkpoint


def export_checkpoint(checkpoint: Path, out: Path, scores: dict | None = None, note: str = "") -> dict:
    """Write the deployable form of ``checkpoint`` to ``out``; returns what was written."""
    model, state = build_model_from_checkpoint(checkpoint)
    meta = dict(state["meta"])
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="export_checkpoint", description="Export a deployable checkpoint (weights + metadata).")
    parser.add_argument("--checkpoint", type=Path, required=True, help="training checkpoint (best.pt or last.pt)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scores", type=Path, help="evaluate --json output whose headline numbers are embedded")
    parser.add_argument("--note", default="", help="free text stored in the metadata")
    args = parser.parse_args(argv)
    scores = None
    if args.scores:
        try:
            scores = headline_scores(json.loads(args.scores.read_text()))
        except (OSError, ValueError, KeyError) as error:
            raise UsageError(f"{args.scores}: not a readable evaluate --json result ({error})") from error
    exported = export_checkpoint(args.checkpoint, args.out, scores, args.note)
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.1f} MB): {exported['architecture']}")
    return exported


cli = console_script(main, "export_checkpoint")


if __name__ == "__main__":
    sys.exit(cli())

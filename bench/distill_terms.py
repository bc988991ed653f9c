"""Why do HPDM and RRM help (or not)? Their sizes for trained students against their floors.

On a few batches of a split, with the same per-sample modality dropout for every model, prints the
unweighted logit KL, HPDM with random and with identity pairing, and size-normalised RRM (lam 1)
of each student against the teacher, and the same terms for the "perfect" student whose features
equal the teacher's for every observed modality. That row is the floor no student can go below
with these pairings and this noise: what is left above it is all the term can teach. It is also
where a student that starts from the teacher's weights starts: the shared encoder sees every
modality on its own, so its per-modality features are the teacher's until training moves them.

Run: ``.venv/bin/python bench/distill_terms.py --teacher runs/ablation/teacher_seed0/best.pt \\
    --student S=runs/ablation/S_seed0/best.pt --student SPCR=runs/ablation/SPCR_seed0/best.pt``
"""

from __future__ import annotations

import argparse
import itertools
import statistics

import torch
from torch.utils.data import DataLoader

from robustseg_core.data import DeliverDataset, EvalTransform, collate
from robustseg_core.losses import hpdm_loss, logit_kl, rrm_loss
from robustseg_core.models.checkpoint import build_model_from_checkpoint
from robustseg_core.training.modality_dropout import apply_modality_dropout

TERMS = ("logit KL", "HPDM random", "HPDM identity", "RRM size-normalised", "feature RMS / teacher's")


def distillation_terms(student_output, teacher_output, labels, observed, seed: int) -> dict[str, float]:
    """Unweighted stage-2 terms of one batch (random pairing and RRM noise drawn from ``seed``) and the
    student's feature scale relative to the teacher's (root mean square over the observed modalities,
    mean over stages)."""
    student_features, teacher_features = student_output.features, teacher_output.features
    return {
        "logit KL": float(logit_kl(student_output.logits, teacher_output.logits)),
        "HPDM random": float(hpdm_loss(student_features, teacher_features, labels, observed,
                                       generator=torch.Generator().manual_seed(seed))[0]),
        "HPDM identity": float(hpdm_loss(student_features, teacher_features, labels, observed, pairing="identity")[0]),
        "RRM size-normalised": float(rrm_loss(student_features, teacher_features, observed, lam=1.0, normalize="size",
                                              generator=torch.Generator().manual_seed(seed))[0]),
        "feature RMS / teacher's": statistics.mean(
            float(student[observed].square().mean().sqrt() / teacher[observed].square().mean().sqrt())
            for student, teacher in zip(student_features, teacher_features)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="teacher checkpoint")
    parser.add_argument("--student", action="append", default=[], metavar="NAME=CHECKPOINT", help="repeatable")
    parser.add_argument("--data-root", default="data/sim128")
    parser.add_argument("--split", default="val")
    parser.add_argument("--size", type=int, default=128, help="eval size (short side, px)")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    students = {}
    for item in args.student:
        name, separator, path = item.partition("=")
        if not separator or not name or not path:
            parser.error(f"--student {item!r}: expected NAME=CHECKPOINT")
        students[name] = build_model_from_checkpoint(path)[0].eval()
    teacher = build_model_from_checkpoint(args.teacher)[0].eval()
    dataset = DeliverDataset(args.data_root, args.split, transform=EvalTransform(args.size))
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, collate_fn=collate)
    rows: dict[str, dict[str, list[float]]] = {name: {t: [] for t in TERMS} for name in ["teacher features", *students]}
    with torch.no_grad():
        for index, batch in enumerate(itertools.islice(loader, args.batches)):
            images, labels = batch["images"], batch["label"]
            student_images, present, observed = apply_modality_dropout(
                images, "drop", torch.Generator().manual_seed(index))
            target = teacher(images, torch.ones_like(present), return_features=True)
            outputs = {"teacher features": target}
            outputs.update({name: model(student_images, present, return_features=True) for name, model in students.items()})
            for name, output in outputs.items():
                for term, value in distillation_terms(output, target, labels, observed, seed=index).items():
                    rows[name][term].append(value)
    print(f"{args.split} split of {args.data_root}, {args.batches} batches of {args.batch_size}, per-sample dropout; "
          "unweighted terms (mean over batches)")
    print("| student | " + " | ".join(TERMS) + " |")
    print("|---|" + "---:|" * len(TERMS))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{statistics.mean(values[t]):.4g}" for t in TERMS) + " |")


if __name__ == "__main__":
    main()

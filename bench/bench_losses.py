"""Student step time of S against SPCR, the vectorised HPDM + RRM against per-sample loops, and the
size of every stage-2 loss term, in one run.

Student step: a full training step (frozen teacher forward, student forward, the recipe's losses,
backward, AdamW step) of ``--preset`` at ``--step-crop`` px, batch 8, same inputs for both recipes,
whose steps alternate so that load changes on the machine hit both alike.

Realistic student setting: batch 8, MiT-B0 stage shapes for a 256x256 crop
(C = 32, 64, 160, 256 at 64, 32, 16, 8 pixels), M = 4 modalities with per-sample random dropout,
25 classes. Times are forward + backward, median of a few repeats, on the CPU threads set below.

Run: ``.venv/bin/python bench/bench_losses.py [--repeats 5] [--step-repeats 15] [--threads 2]
[--preset mit_cpu --embed-dim 256 --step-crop 128] [--device cuda]``
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from robustseg_core.classes import NUM_CLASSES
from robustseg_core.losses import hpdm_loss, logit_kl, rrm_loss
from robustseg_core.models import build_segmentor
from robustseg_core.models.checkpoint import resolve_device
from robustseg_core.training.optim import build_optimizer
from robustseg_core.training.modality_dropout import sample_modality_dropout
from robustseg_core.training.train_student import DEFAULTS as STUDENT_DEFAULTS
from robustseg_core.training.train_student import RRM_CPU_BLOCK_ELEMENTS, student_step

BATCH = 8
MODALITIES = 4
CROP = 256
STAGE_CHANNELS = (32, 64, 160, 256)
STAGE_STRIDES = (4, 8, 16, 32)
RRM_LAMBDA = 1e-5
RRM_SAMPLES = 10


def structured_inputs(seed: int) -> dict:
    """Labels made of class rectangles; teacher features = per-class embedding + noise; student =
    teacher + 0.5 noise; logits with the same class structure."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (BATCH, 1, 1), generator=generator).expand(BATCH, CROP, CROP).clone()
    for _ in range(12):
        top, left = torch.randint(0, CROP - 64, (2,), generator=generator).tolist()
        height, width = torch.randint(16, 64, (2,), generator=generator).tolist()
        region_class = torch.randint(0, NUM_CLASSES, (BATCH, 1, 1), generator=generator)
        labels[:, top:top + height, left:left + width] = region_class
    teacher_features, student_features = [], []
    for channels, stride in zip(STAGE_CHANNELS, STAGE_STRIDES):
        size = CROP // stride
        small = F.interpolate(labels[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
        embedding = torch.randn(MODALITIES, NUM_CLASSES, channels, generator=generator)
        structure = embedding[:, small].permute(1, 0, 4, 2, 3)  # [B, M, C, h, w]
        teacher = structure + 0.5 * torch.randn(structure.shape, generator=generator)
        teacher_features.append(teacher)
        student_features.append(teacher + 0.5 * torch.randn(structure.shape, generator=generator))
    one_hot = F.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float()
    teacher_logits = 4.0 * one_hot + torch.randn(one_hot.shape, generator=generator)
    student_logits = teacher_logits + torch.randn(one_hot.shape, generator=generator)
    present = sample_modality_dropout(BATCH, MODALITIES, generator)
    return {
        "labels": labels, "teacher": teacher_features, "student": student_features,
        "teacher_logits": teacher_logits, "student_logits": student_logits, "present": present,
    }


def looped_hpdm(student_features, teacher_features, labels, present, teacher_index, reference_scaling=False):
    """Released-code structure: loops over samples, stages, present modalities and classes."""
    total = torch.zeros(())
    for sample in range(present.shape[0]):
        for student_stage, teacher_stage in zip(student_features, teacher_features):
            size = student_stage.shape[-2:]
            small = F.interpolate(labels[sample][None, None].float(), size=size, mode="nearest")[0, 0].long()
            for modality in present[sample].nonzero()[:, 0].tolist():
                partner_feature = teacher_stage[sample, int(teacher_index[sample, modality])].detach()
                student_prototypes = looped_prototypes(student_stage[sample, modality], small, reference_scaling)
                teacher_prototypes = looped_prototypes(partner_feature, small, reference_scaling)
                log_student = torch.log_softmax(student_prototypes, dim=0)
                log_teacher = torch.log_softmax(teacher_prototypes, dim=0)
                term = (log_teacher.exp() * (log_teacher - log_student)).mean()
                total = total + term.clamp(min=0)
    return total / present.shape[0]


def looped_prototypes(feature, small_labels, reference_scaling):
    prototypes = feature.new_zeros(NUM_CLASSES, feature.shape[0])
    for class_id in range(NUM_CLASSES):
        mask = small_labels == class_id
        count = int(mask.sum())
        if count:
            mean = feature[:, mask].mean(dim=1)
            prototypes[class_id] = mean / count if reference_scaling else mean
    return prototypes


def looped_rrm(student_features, teacher_features, present, teacher_index, generator):
    """Released-code structure, same per-item math as ``rrm_loss``: one perturbation and one
    double backward per (sample, stage, present modality)."""
    total = torch.zeros(())
    for sample in range(present.shape[0]):
        for student_stage, teacher_stage in zip(student_features, teacher_features):
            for modality in present[sample].nonzero()[:, 0].tolist():
                student_rows = looped_perturb(student_stage[sample, modality], generator)
                teacher_rows = looped_perturb(
                    teacher_stage[sample, int(teacher_index[sample, modality])].detach(), generator
                ).requires_grad_()
                log_student = torch.log_softmax(student_rows, dim=1)
                teacher_probs = torch.softmax(teacher_rows, dim=1)
                loss = (teacher_probs * (teacher_probs.log() - log_student)).mean()
                grads = torch.autograd.grad(loss, [log_student, teacher_probs], create_graph=True)
                fisher = [grad.square().sum(dim=1).mean() / loss.clamp(min=1e-12) for grad in grads]
                total = total + RRM_LAMBDA * torch.sqrt(fisher[0] ** -2 + fisher[1] ** -2)
    return total / present.shape[0]


def looped_perturb(feature, generator):
    """[C, H, W] -> [S*C, H, W], S adjacent noisy copies per channel, noise std = per-pixel row std."""
    channels = feature.shape[0]
    centred = feature - feature.mean(dim=0, keepdim=True)
    row_std = (centred.square().sum(dim=0, keepdim=True) * RRM_SAMPLES / (RRM_SAMPLES * channels - 1)).sqrt()
    noise = torch.randn((channels, RRM_SAMPLES) + tuple(feature.shape[1:]), generator=generator)
    return (feature[:, None] + noise * row_std).flatten(0, 1)


def timed(function, repeats: int) -> float:
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each loss timing")
    parser.add_argument("--step-repeats", type=int, default=15, help="alternating S/SPCR step pairs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="mit_cpu", help="student and teacher encoder for the step timing")
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--step-crop", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.step_repeats < 2 or args.repeats < 1:
        parser.error("--step-repeats must be >= 2 (quartiles of the pair ratios) and --repeats >= 1")
    torch.set_num_threads(args.threads)
    print_step_times(args)
    inputs = structured_inputs(seed=0)
    present, labels, teacher = inputs["present"], inputs["labels"], inputs["teacher"]
    identity = torch.arange(MODALITIES).expand(BATCH, MODALITIES)

    def student():
        return [stage.clone().requires_grad_() for stage in inputs["student"]]

    def vectorised_step(max_block_elements=None):
        features = student()
        hpdm, _ = hpdm_loss(features, teacher, labels, present, pairing="identity")
        rrm, _ = rrm_loss(features, teacher, present, lam=RRM_LAMBDA, generator=torch.Generator().manual_seed(0),
                          max_block_elements=max_block_elements)
        (hpdm + rrm).backward()

    def looped_step():
        features = student()
        hpdm = looped_hpdm(features, teacher, labels, present, identity)
        rrm = looped_rrm(features, teacher, present, identity, torch.Generator().manual_seed(0))
        (hpdm + rrm).backward()

    def hpdm_only(looped):
        features = student()
        hpdm = (looped_hpdm(features, teacher, labels, present, identity) if looped
                else hpdm_loss(features, teacher, labels, present, pairing="identity")[0])
        hpdm.backward()

    print(f"batch {BATCH}, M {MODALITIES}, crop {CROP}, stages C={STAGE_CHANNELS} h=w="
          f"{tuple(CROP // s for s in STAGE_STRIDES)}, present per sample {present.sum(dim=1).tolist()}, "
          f"{args.threads} threads, median of {args.repeats}, forward+backward")
    vectorised_step()  # warm-up
    looped = timed(looped_step, args.repeats)
    vectorised = timed(vectorised_step, args.repeats)
    blocked = timed(lambda: vectorised_step(RRM_CPU_BLOCK_ELEMENTS), args.repeats)
    print(f"HPDM + RRM: per-sample loops {looped:.3f} s")
    print(f"            vectorised, one batch per stage  {vectorised:.3f} s  speed-up {looped / vectorised:.2f}x")
    block_power = RRM_CPU_BLOCK_ELEMENTS.bit_length() - 1
    print(f"            vectorised, blocks of <= 2^{block_power}    {blocked:.3f} s  speed-up {looped / blocked:.2f}x")
    hpdm_looped = timed(lambda: hpdm_only(True), args.repeats)
    hpdm_vectorised = timed(lambda: hpdm_only(False), args.repeats)
    print(f"HPDM alone: per-sample loops {hpdm_looped:.3f} s, vectorised {hpdm_vectorised:.3f} s, "
          f"speed-up {hpdm_looped / hpdm_vectorised:.2f}x")

    print_term_sizes(inputs)


def print_step_times(args: argparse.Namespace) -> None:
    """Median full training-step time of the S and SPCR recipes on identical inputs, and their ratio.

    The two recipes' steps alternate and share the random state of each repeat (same dropout masks),
    so machine-load drift affects both alike.
    """
    device = resolve_device(args.device)
    torch.manual_seed(0)
    teacher = build_segmentor(args.preset, embed_dim=args.embed_dim).to(device).eval().requires_grad_(False)
    batch = {
        "images": torch.randn(BATCH, MODALITIES, 3, args.step_crop, args.step_crop, device=device),
        "label": torch.randint(0, NUM_CLASSES, (BATCH, args.step_crop, args.step_crop), device=device),
    }
    recipes = ("S", "SPCR")
    train_steps = {recipe: recipe_train_step(recipe, teacher, args, device) for recipe in recipes}
    durations = {recipe: [] for recipe in recipes}
    for repeat in range(args.step_repeats + 1):  # repeat 0 warms up
        for recipe in recipes:
            torch.manual_seed(repeat)
            start = time.perf_counter()
            train_steps[recipe](batch)
            if repeat:
                durations[recipe].append(time.perf_counter() - start)
    times = {recipe: statistics.median(values) for recipe, values in durations.items()}
    pair_ratios = [spcr / s for spcr, s in zip(durations["SPCR"], durations["S"])]
    low, middle, high = statistics.quantiles(pair_ratios, n=4)
    print(f"student step ({args.preset}, head {args.embed_dim}, batch {BATCH}, {args.step_crop} px, {device}, "
          f"{args.step_repeats} alternating pairs): S {times['S']:.3f} s, SPCR {times['SPCR']:.3f} s (medians), "
          f"SPCR / S = {times['SPCR'] / times['S']:.2f} (target <= 1.5); "
          f"per pair median {middle:.2f}, quartiles {low:.2f}-{high:.2f}")


def recipe_train_step(recipe: str, teacher: torch.nn.Module, args: argparse.Namespace, device: torch.device):
    """A fresh student of ``recipe`` and its AdamW; returns step(batch): zero grad, loss, backward, update."""
    config = copy.deepcopy(STUDENT_DEFAULTS)
    config["student"]["recipe"] = recipe
    student = build_segmentor(args.preset, embed_dim=args.embed_dim).to(device).train()
    optimizer = build_optimizer(student, lr=1e-4)
    step = student_step(teacher, config)

    def train_step(batch: dict) -> None:
        optimizer.zero_grad(set_to_none=True)
        step(student, batch)["loss"].backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return train_step


def print_term_sizes(inputs: dict) -> None:
    """Every loss term (unweighted, and times its released weight) on the structured inputs."""
    present, labels, teacher, student = inputs["present"], inputs["labels"], inputs["teacher"], inputs["student"]
    items = int(present.sum())

    def rrm(normalize):
        return rrm_loss(student, teacher, present, lam=RRM_LAMBDA, normalize=normalize,
                        generator=torch.Generator().manual_seed(0), max_block_elements=RRM_CPU_BLOCK_ELEMENTS)

    with torch.no_grad():
        kl = float(logit_kl(inputs["student_logits"], inputs["teacher_logits"]))
        hpdm_mean, hpdm_mean_details = hpdm_loss(student, teacher, labels, present, pairing="identity")
        hpdm_reference, hpdm_reference_details = hpdm_loss(student, teacher, labels, present, pairing="identity",
                                                           reference_scaling=True)
        hpdm_random, _ = hpdm_loss(student, teacher, labels, present, generator=torch.Generator().manual_seed(0))
        rrm_raw, rrm_raw_details = rrm("none")
        rrm_size, rrm_size_details = rrm("size")

    def stages(values):
        return "[" + ", ".join(f"{float(value):.3g}" for value in values) + "]"

    def row(name, value, weight=None, per_stage=None):
        weighted = f"   x{weight:<4g}= {weight * value:.4g}" if weight is not None else ""
        stage_text = f"   per stage {stages(per_stage)}" if per_stage is not None else ""
        print(f"  {name:<42}{value:<11.4g}{weighted}{stage_text}")

    print("term sizes on class-structured random features (student = teacher + 0.5 noise), "
          f"{items} present items:")
    row("logit KL (mean over B*K*H*W)", kl, 50)
    row("HPDM mean prototypes, identity", float(hpdm_mean), 100, hpdm_mean_details["per_stage"])
    row("HPDM mean prototypes, random pairing", float(hpdm_random), 100)
    row("HPDM reference scaling (sum f / N_c^2)", float(hpdm_reference), 100, hpdm_reference_details["per_stage"])
    row("RRM raw, lam 1e-5", float(rrm_raw.detach()), 12, rrm_raw_details["per_stage"])
    row("RRM size-normalised, lam 1e-5", float(rrm_size.detach()), 12, rrm_size_details["per_stage"])
    mean_over_items = BATCH / (RRM_LAMBDA * items)
    raw_r, normalised_r = (details["per_stage"] * mean_over_items for details in (rrm_raw_details, rrm_size_details))
    print(f"  RRM raw R per item (no lam), per stage          {stages(raw_r)}")
    print(f"  RRM size-normalised R per item, per stage       {stages(normalised_r)}")
    print(f"  RRM perturbed feature KL L per item, per stage  {stages(rrm_size_details['feature_kl'])}")

if __name__ == "__main__":
    main()

"""Any-modal evaluation: mIoU of one model under every combination of available modalities.

The 15 non-empty subsets of (R, D, E, L) are named by their letters in DELIVER's modality order
(``R, D, E, L, RD, RE, RL, DE, DL, EL, RDE, RDL, REL, DEL, RDEL``). Two conventions for the
missing modalities (docs/method.md, "Evaluation"):

* ``drop``: missing modalities are left out of the masked-mean fusion (RobustSeg's any-modal table);
* ``zero``: missing modalities are replaced by zero images after normalisation and still encoded and
  averaged in (the EMM robustness benchmark).

Each batch is encoded once per modality; every combination then only re-runs fusion and the head.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from ..classes import MODALITIES, MODALITY_LETTERS, NUM_CLASSES, combination_name
from ..models import MISSING_CONVENTIONS
from .metrics import ConfusionMatrix

COMBINATIONS: tuple[str, ...] = tuple(
    combination_name(subset)
    for size in range(1, len(MODALITIES) + 1)
    for subset in itertools.combinations(MODALITIES, size)
)
FULL_COMBINATION = COMBINATIONS[-1]


def combination_mask(name: str) -> torch.Tensor:
    """Bool [M] of the modalities in a combination name such as ``"RDL"``."""
    if name not in COMBINATIONS:
        raise ValueError(f"unknown modality combination {name!r}; expected one of {COMBINATIONS}")
    return torch.tensor([letter in name for letter in MODALITY_LETTERS])


@torch.inference_mode()
def evaluate_combinations(
    model: nn.Module,
    loader: Iterable[dict],
    device: torch.device,
    combinations: Sequence[str] = COMBINATIONS,
    conventions: Sequence[str] = ("drop",),
    num_classes: int = NUM_CLASSES,
) -> dict[str, dict[str, ConfusionMatrix]]:
    """Confusion matrices ``{convention: {combination: ConfusionMatrix}}`` over ``loader``.

    ``loader`` yields batches ``{"images": [B, M, 3, H, W], "label": [B, H, W]}`` with all M
    modalities of ``model`` in its modality order.
    """
    for convention in conventions:
        if convention not in MISSING_CONVENTIONS:
            raise ValueError(f"unknown missing-modality convention {convention!r}; expected {MISSING_CONVENTIONS}")
    masks = {name: combination_mask(name).to(device) for name in combinations}
    matrices = {c: {name: ConfusionMatrix(num_classes, device) for name in combinations} for c in conventions}
    was_training = model.training
    model.eval()
    zero_features_by_size: dict[tuple[int, int], list[torch.Tensor]] = {}
    for batch in loader:
        images = batch["images"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        size = tuple(images.shape[-2:])
        features = model.encode_all(images)
        if "zero" in conventions and size not in zero_features_by_size:
            zero_image = images.new_zeros((1, 1, 3) + size)
            zero_features_by_size[size] = model.encode_all(zero_image)
        for name, mask in masks.items():
            for convention in conventions:
                if convention == "drop":
                    present = mask.expand(images.shape[0], -1)
                    logits = model.decode_features(features, present, size)
                else:
                    keep = mask[None, :, None, None, None]
                    filled = [torch.where(keep, real, zero) for real, zero in zip(features, zero_features_by_size[size])]
                    logits = model.decode_features(filled, torch.ones_like(mask).expand(images.shape[0], -1), size)
                matrices[convention][name].update(logits.argmax(dim=1), labels)
    model.train(was_training)
    return matrices


def summarize(matrices: dict[str, dict[str, ConfusionMatrix]]) -> dict:
    """Metrics per convention and combination, plus the mean over the evaluated combinations."""
    summary = {}
    for convention, by_combination in matrices.items():
        results = {name: matrix.summary() for name, matrix in by_combination.items()}
        summary[convention] = {
            "combinations": results,
            "mean_miou": sum(r["miou"] for r in results.values()) / len(results),
            "mean_miou_present": sum(r["miou_present"] for r in results.values()) / len(results),
        }
    return summary


def markdown_table(summary: dict, metric: str = "miou") -> str:
    """One row per convention, one column per combination plus the mean, values in percent."""
    conventions = list(summary)
    names = list(summary[conventions[0]]["combinations"])
    header = "| convention | " + " | ".join(names) + " | mean |"
    rule = "|---|" + "---:|" * (len(names) + 1)
    rows = [
        f"| {convention} | "
        + " | ".join(f"{summary[convention]['combinations'][n][metric]:.2f}" for n in names)
        + f" | {summary[convention]['mean_' + metric]:.2f} |"
        for convention in conventions
    ]
    return "\n".join([header, rule, *rows])


def summarize_fusion_policy(summary: dict, table: Mapping[str, tuple]) -> dict:
    """Per convention, what each of ``COMBINATIONS`` scores when only what the validated policy keeps of it is
    fused (``table``: ``fusion_policy.fusion_table``): ``{"combinations": {name: {"fused": fused name, "miou":
    ...}}, "mean_miou": ...}``, read off ``summarize``'s results (which must hold all 15 combinations)."""
    policy = {}
    for convention, results in summary.items():
        fused_names = {name: combination_name(table[name][0]) for name in COMBINATIONS}
        combinations = {name: {"fused": fused, "miou": results["combinations"][fused]["miou"]}
                        for name, fused in fused_names.items()}
        policy[convention] = {"combinations": combinations,
                              "mean_miou": sum(entry["miou"] for entry in combinations.values()) / len(combinations)}
    return policy


def fusion_policy_table(policy: dict) -> str:
    """``summarize_fusion_policy``'s result as a Markdown table: one row per convention, one column per given
    combination, with the fused one in brackets where the policy left something out."""
    first = next(iter(policy.values()))["combinations"]
    header = "| convention | " + " | ".join(first) + " | mean |"
    rule = "|---|" + "---:|" * (len(first) + 1)
    rows = [f"| {convention} | " + " | ".join(
        f"{entry['miou']:.2f}" + ("" if entry["fused"] == name else f" ({entry['fused']})")
        for name, entry in result["combinations"].items()) + f" | {result['mean_miou']:.2f} |"
        for convention, result in policy.items()]
    return "\n".join([header, rule, *rows])

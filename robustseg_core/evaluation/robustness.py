"""Robustness protocols of the multimodal segmentation robustness benchmark (docs/method.md, "Evaluation").

* EMM (entire-missing modality): the 15 combinations under the zero-fill convention; reported as the
  plain mean and as expectations E(p) = sum_c w_c mIoU_c / sum_c w_c with w_c = p^k (1 - p)^(M - k),
  k = number of missing modalities, for p in {0.2, 0.1, 0.05}.
* RMM (random-missing modality): for each combination, every "missing" modality keeps its slot but a
  random fraction r of its tensor elements (per element and channel, after normalisation) is set to 0;
  r in {0.25, 0.5, 0.75}; reported as the mean over the 15 combinations and E(p) as above.
* NM (noisy modality): all modalities present; salt-and-pepper noise of density d on every modality
  (half of the chosen elements set to that modality tensor's max, half to its min, positions drawn
  over the whole [B, 3, H, W] tensor), then Gaussian noise of std sigma on RGB, depth and LiDAR (not
  events). Levels: low (0.05, 0.1), mid (0.1, 0.2), high (0.2, 0.5).

All randomness comes from one seeded generator, so a protocol run is repeatable.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from ..classes import MODALITIES, NUM_CLASSES
from .anymodal import COMBINATIONS, combination_mask, evaluate_combinations
from .metrics import ConfusionMatrix

EXPECTATION_PROBABILITIES: tuple[float, ...] = (0.2, 0.1, 0.05)
RMM_RATIOS: tuple[float, ...] = (0.25, 0.5, 0.75)
NM_LEVELS: dict[str, tuple[float, float]] = {"low": (0.05, 0.1), "mid": (0.1, 0.2), "high": (0.2, 0.5)}
#: Modalities that get Gaussian noise in NM (events only get salt and pepper).
GAUSSIAN_NOISE_MODALITIES = ("rgb", "depth", "lidar")


def expected_miou(per_combination: dict[str, float], p: float) -> float:
    """E(p): mIoU weighted by the probability p^k (1-p)^(M-k) of each combination's k missing modalities."""
    total = weight_sum = 0.0
    for name, miou in per_combination.items():
        missing = len(MODALITIES) - int(combination_mask(name).sum())
        weight = p**missing * (1 - p) ** (len(MODALITIES) - missing)
        total += weight * miou
        weight_sum += weight
    return total / weight_sum


def summarize_protocol(per_combination: dict[str, float]) -> dict:
    """Mean over the combinations and the expectations E(p) for the benchmark's p values."""
    return {
        "mean": sum(per_combination.values()) / len(per_combination),
        **{f"E({p})": expected_miou(per_combination, p) for p in EXPECTATION_PROBABILITIES},
        "combinations": per_combination,
    }


def random_element_mask(images: torch.Tensor, missing: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """RMM input: in the ``missing`` modalities (bool [M]) zero a random ``ratio`` of the elements."""
    drop = torch.rand(images.shape, generator=generator, device=images.device) < ratio
    drop &= missing[None, :, None, None, None]
    return images.masked_fill(drop, 0.0)


def noisy_modalities(images: torch.Tensor, density: float, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """NM input: salt and pepper of ``density`` on every modality, then Gaussian ``sigma`` on R, D, L.

    ``images``: [B, M, C, H, W]. Pepper and salt are each frame's own minimum and maximum of that modality
    (as the reference's batch-of-one evaluation), so a frame's noise does not depend on the batch size.
    """
    noisy = images.clone()
    for index, modality in enumerate(MODALITIES):
        tensor = noisy[:, index]
        low = tensor.amin(dim=(1, 2, 3), keepdim=True).expand_as(tensor)
        high = tensor.amax(dim=(1, 2, 3), keepdim=True).expand_as(tensor)
        draw = torch.rand(tensor.shape, generator=generator, device=tensor.device)
        pepper = draw < density / 2
        salt = (draw >= density / 2) & (draw < density)
        tensor[pepper] = low[pepper]
        tensor[salt] = high[salt]
        if modality in GAUSSIAN_NOISE_MODALITIES:
            tensor += sigma * torch.randn(tensor.shape, generator=generator, device=tensor.device)
    return noisy


@torch.inference_mode()
def evaluate_robustness(
    model: nn.Module,
    loader: Iterable[dict],
    device: torch.device,
    rmm_ratios: Sequence[float] = RMM_RATIOS,
    nm_levels: Sequence[str] = tuple(NM_LEVELS),
    seed: int = 0,
    num_classes: int = NUM_CLASSES,
    zero_fill: Mapping[str, ConfusionMatrix] | None = None,
) -> dict:
    """EMM, RMM and NM results (mIoU in DELIVER's convention) of ``model`` over ``loader``.

    ``zero_fill``: the confusion matrices of the 15 combinations under the zero-fill convention when the
    caller already has them (``evaluate``'s main pass), so EMM does not run them a second time.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    if zero_fill is not None and set(zero_fill) >= set(COMBINATIONS):
        emm = {name: zero_fill[name] for name in COMBINATIONS}
    else:
        emm = evaluate_combinations(model, loader, device, COMBINATIONS, ["zero"], num_classes)["zero"]
    rmm = {r: {name: ConfusionMatrix(num_classes, device) for name in COMBINATIONS} for r in rmm_ratios}
    nm = {level: ConfusionMatrix(num_classes, device) for level in nm_levels}
    for batch in loader:
        images = batch["images"].to(device)
        labels = batch["label"].to(device)
        present = torch.ones(images.shape[:2], dtype=torch.bool, device=device)
        for ratio, matrices in rmm.items():
            for name, matrix in matrices.items():
                missing = ~combination_mask(name).to(device)
                logits = model(random_element_mask(images, missing, ratio, generator), present)
                matrix.update(logits.argmax(1), labels)
        for level, matrix in nm.items():
            density, sigma = NM_LEVELS[level]
            matrix.update(model(noisy_modalities(images, density, sigma, generator), present).argmax(1), labels)
    model.train(was_training)
    return {
        "EMM": summarize_protocol({name: m.summary()["miou"] for name, m in emm.items()}),
        "RMM": {f"r={r}": summarize_protocol({name: m.summary()["miou"] for name, m in matrices.items()})
                for r, matrices in rmm.items()},
        "NM": {level: matrix.summary()["miou"] for level, matrix in nm.items()},
    }


def robustness_markdown(results: dict) -> str:
    """Tables of EMM and RMM (mean and E(p)) and NM per level, mIoU in percent."""
    columns = ["mean", *[f"E({p})" for p in EXPECTATION_PROBABILITIES]]
    protocols = {"EMM": results["EMM"], **{f"RMM {name}": value for name, value in results["RMM"].items()}}
    rows = [
        f"| {name} | " + " | ".join(f"{value[column]:.2f}" for column in columns) + " |"
        for name, value in protocols.items()
    ]
    nm = " | ".join(f"{level} {value:.2f}" for level, value in results["NM"].items())
    return "\n".join([
        "| protocol | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns), *rows, "", f"NM (all modalities noisy): {nm}",
    ])

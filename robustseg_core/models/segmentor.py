"""Multimodal segmentor: one MiT encoder shared by all modalities, masked-mean fusion per stage,
SegFormer head (backbone / head / segmentor split as in mmsegmentation).

Each modality is a 3-channel image normalised by the data pipeline. Every present
(sample, modality) image is encoded independently; the decoder sees, per stage, the mean of the
present modalities' features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..classes import MODALITIES, NUM_CLASSES
from .head import SegFormerHead
from .mit import build_mit

#: Ways to feed modalities that are not available: "drop" leaves them out of the mean,
#: "zero" encodes all-zero images in their place and averages them in.
MISSING_CONVENTIONS: tuple[str, ...] = ("drop", "zero")


@dataclass
class SegmentorOutput:
    """Result of ``MultimodalSegmentor.forward_features``.

    logits: [B, K, H, W] at the input size.
    features: 4 stages of per-modality encoder features [B, M, C_i, h_i, w_i]; absent entries are 0.
    fused: 4 stages of fused features [B, C_i, h_i, w_i] (masked mean over present modalities).
    """

    logits: Tensor
    features: list[Tensor]
    fused: list[Tensor]


def apply_missing_convention(
    images: Tensor, keep: Tensor, convention: str
) -> tuple[Tensor, Tensor]:
    """Turn the available-modality mask ``keep`` [B, M] (bool) into model inputs.

    ``"drop"``: returns ``(images, keep)`` unchanged; absent modalities contribute nothing.
    ``"zero"``: returns images [B, M, 3, H, W] with the non-kept modalities set to 0.0 (zero after
    normalisation, i.e. mean grey for RGB) and an all-True presence mask, so the zero images are
    encoded and averaged in.
    """
    if convention not in MISSING_CONVENTIONS:
        raise ValueError(
            f"unknown missing-modality convention {convention!r}; "
            f"expected one of {MISSING_CONVENTIONS}"
        )
    if keep.dtype != torch.bool:
        raise ValueError(f"keep must be a bool tensor, got dtype {keep.dtype}")
    if images.ndim != 5 or keep.shape != images.shape[:2]:
        raise ValueError(
            f"keep must have shape [B, M] = {tuple(images.shape[:2])} of images [B, M, 3, H, W], "
            f"got keep {tuple(keep.shape)} for images {tuple(images.shape)}"
        )
    if convention == "drop":
        return images, keep
    zeroed = images.masked_fill(~keep[:, :, None, None, None], 0.0)
    return zeroed, torch.ones_like(keep)


class MultimodalSegmentor(nn.Module):
    """Shared-encoder multimodal SegFormer.

    Args:
        preset: MiT encoder preset name (see ``MIT_PRESETS``).
        num_classes: number of classes K.
        embed_dim: decoder width (768 as in RobustSeg, 256 for real time).
        modalities: modality names in tensor order (index m of the M axis).
        drop_path_rate: encoder stochastic depth, linear over blocks up to this value.
    """

    def __init__(
        self,
        preset: str = "mit_b0",
        num_classes: int = NUM_CLASSES,
        embed_dim: int = 768,
        modalities: Sequence[str] = MODALITIES,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if len(modalities) == 0:
            raise ValueError("modalities must name at least one modality")
        self.preset = preset
        self.modalities = tuple(modalities)
        self.drop_path_rate = drop_path_rate
        self.encoder = build_mit(preset, drop_path_rate=drop_path_rate)
        self.head = SegFormerHead(self.encoder.embed_dims, num_classes, embed_dim=embed_dim)

    @property
    def architecture(self) -> dict:
        """Plain dict describing the architecture, to store in checkpoints and compare on load."""
        return {
            "preset": self.preset,
            "num_classes": self.head.num_classes,
            "embed_dim": self.head.embed_dim,
            "num_modalities": len(self.modalities),
            "modalities": list(self.modalities),
            "drop_path_rate": self.drop_path_rate,
        }

    def forward(self, images: Tensor, present: Tensor, return_features: bool = False) -> Tensor | SegmentorOutput:
        """images [B, M, 3, H, W] float, present [B, M] bool -> logits [B, K, H, W].

        ``return_features=True`` returns ``forward_features``'s output instead (the form DDP needs,
        since it wraps ``forward`` only).
        """
        if return_features:
            return self.forward_features(images, present)
        self._validate_inputs(images, present)
        fused = [_masked_mean(stage, present) for stage in self.encoder(images[present])]
        return self.decode(fused, images.shape[-2:])

    def forward_with_agreement(self, images: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        """``forward``'s logits [B, K, H, W], and how much each modality agrees with the fusion: agreement
        [B, M], the mean over positions of the cosine similarity between a present modality's last-stage
        features and the fused ones (NaN where absent). A modality that sees something else than the others
        (a blinded camera, a flooded event sensor) agrees less. Costs one dot product at 1/32 resolution."""
        self._validate_inputs(images, present)
        stages = self.encoder(images[present])
        fused = [_masked_mean(stage, present) for stage in stages]
        cosine = F.cosine_similarity(stages[-1], fused[-1][present.nonzero()[:, 0]], dim=1).flatten(1).mean(1)
        agreement = torch.full(present.shape, float("nan"), dtype=cosine.dtype, device=cosine.device)
        agreement[present] = cosine
        return self.decode(fused, images.shape[-2:]), agreement

    def forward_features(self, images: Tensor, present: Tensor) -> SegmentorOutput:
        """Like ``forward``, also returning per-modality and fused features of the 4 stages."""
        self._validate_inputs(images, present)
        features, fused = [], []
        for stage in self.encoder(images[present]):
            per_modality = stage.new_zeros(present.shape + stage.shape[1:])
            per_modality[present] = stage
            features.append(per_modality)
            fused.append(_masked_mean(stage, present))
        logits = self.decode(fused, images.shape[-2:])
        return SegmentorOutput(logits=logits, features=features, fused=fused)

    def encode_all(self, images: Tensor) -> list[Tensor]:
        """Per-modality features of every slot: images [B, M, 3, H, W] -> 4 x [B, M, C_i, h_i, w_i]."""
        batch, num_modalities = images.shape[:2]
        stages = self.encoder(images.flatten(0, 1))
        return [stage.unflatten(0, (batch, num_modalities)) for stage in stages]

    def decode_features(self, features: list[Tensor], present: Tensor, output_size: Sequence[int]) -> Tensor:
        """Logits [B, K, H, W] from per-modality features (4 x [B, M, C, h, w]) fused over ``present`` [B, M].

        Lets one encoding of all modalities serve every modality combination: only the fusion and
        the head run again.
        """
        fused = [_masked_mean(stage[present], present) for stage in features]
        return self.decode(fused, output_size)

    def decode(self, fused: list[Tensor], output_size: Sequence[int]) -> Tensor:
        """Fused features (4 x [B, C_i, h_i, w_i]) -> logits [B, K, H, W] at ``output_size`` (H, W)."""
        logits = self.head(fused)
        return F.interpolate(logits, size=tuple(output_size), mode="bilinear", align_corners=False)

    def _validate_inputs(self, images: Tensor, present: Tensor) -> None:
        num_modalities = len(self.modalities)
        if not isinstance(images, Tensor) or images.ndim != 5:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor [B, M, 3, H, W], got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"images must be a float tensor, got dtype {images.dtype}")
        if images.shape[1] != num_modalities:
            raise ValueError(
                f"images has M={images.shape[1]} modalities, expected {num_modalities} "
                f"{self.modalities}"
            )
        if images.shape[2] != 3:
            raise ValueError(f"images must have 3 channels per modality, got {images.shape[2]}")
        if not isinstance(present, Tensor) or present.dtype != torch.bool:
            kind = present.dtype if isinstance(present, Tensor) else type(present).__name__
            raise ValueError(f"present must be a bool tensor [B, M], got {kind}")
        if present.shape != images.shape[:2]:
            raise ValueError(
                f"present must have shape [B, M] = {tuple(images.shape[:2])}, "
                f"got {tuple(present.shape)}"
            )
        empty_samples = (~present.any(dim=1)).nonzero()[:, 0].tolist()
        if empty_samples:
            raise ValueError(f"present has no modality for sample(s) {empty_samples}")


def _masked_mean(present_features: Tensor, present: Tensor) -> Tensor:
    """The masked-mean fusion of every forward path (``forward``, ``forward_features``, ``decode_features``).

    ``present_features`` [P, C, h, w] are the features of the present (sample, modality) pairs in
    row-major order of ``present`` [B, M] bool (``features[present]``); returns fused [B, C, h, w],
    each sample's mean over its present modalities.
    """
    counts = present.sum(dim=1)
    summed = present_features.new_zeros(counts.shape + present_features.shape[1:])
    summed = summed.index_add(0, present.nonzero()[:, 0], present_features)
    return summed / counts.to(present_features.dtype)[:, None, None, None]

"""Models: MiT encoder, SegFormer head and the shared-encoder multimodal segmentor."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..classes import MODALITIES, NUM_CLASSES
from .head import SegFormerHead
from .mit import (
    MIT_PRESETS,
    MiTConfig,
    MixVisionTransformer,
    build_mit,
)
from .pretrained import SHIPPED_ENCODERS, load_pretrained_encoder, save_encoder
from .segmentor import (
    MISSING_CONVENTIONS,
    MultimodalSegmentor,
    SegmentorOutput,
    apply_missing_convention,
)

#: Names of the encoder presets ``build_segmentor`` accepts.
MODEL_PRESETS: tuple[str, ...] = tuple(MIT_PRESETS)


def build_segmentor(
    preset: str = "mit_b0",
    num_classes: int = NUM_CLASSES,
    embed_dim: int = 768,
    modalities: Sequence[str] = MODALITIES,
    drop_path_rate: float = 0.1,
    pretrained: str | Path | None = None,
) -> MultimodalSegmentor:
    """Build a ``MultimodalSegmentor``; ``pretrained`` optionally names encoder weights loaded strictly
    into the encoder: a local official MiT ImageNet file, a ``pretrain_encoder`` output, or a shipped
    encoder (``sim:mit_cpu``; see :mod:`robustseg_core.models.pretrained`)."""
    if preset not in MODEL_PRESETS:
        known = ", ".join(MODEL_PRESETS)
        raise ValueError(f"unknown model preset {preset!r}; known presets: {known}")
    model = MultimodalSegmentor(
        preset=preset,
        num_classes=num_classes,
        embed_dim=embed_dim,
        modalities=modalities,
        drop_path_rate=drop_path_rate,
    )
    if pretrained is not None:
        load_pretrained_encoder(model.encoder, pretrained, preset)
    return model


__all__ = [
    "MISSING_CONVENTIONS",
    "MIT_PRESETS",
    "MODEL_PRESETS",
    "MiTConfig",
    "MixVisionTransformer",
    "MultimodalSegmentor",
    "SegFormerHead",
    "SegmentorOutput",
    "apply_missing_convention",
    "build_mit",
    "build_segmentor",
    "SHIPPED_ENCODERS",
    "load_pretrained_encoder",
    "save_encoder",
]

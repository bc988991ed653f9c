"""SegFormer all-MLP decode head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SegFormerHead(nn.Module):
    """All-MLP decoder: per-stage linear projection to ``embed_dim``, upsampling to stride 4,
    concatenation (order c4, c3, c2, c1), 1x1 fuse conv + BatchNorm + ReLU, Dropout2d and a
    1x1 classifier conv.

    Args:
        in_channels: channels C_i of the four encoder stages (strides 4, 8, 16, 32).
        num_classes: number of output classes K.
        embed_dim: decoder width E (768 in RobustSeg, 256 for real time).
        dropout: Dropout2d probability before the classifier.

    Input: 4 maps [B, C_i, h_i, w_i]; output logits [B, K, h_1, w_1] at stride 4.
    """

    def __init__(
        self,
        in_channels: tuple[int, ...],
        num_classes: int,
        embed_dim: int = 768,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.projections = nn.ModuleList(nn.Linear(channels, embed_dim) for channels in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(len(in_channels) * embed_dim, embed_dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, kernel_size=1)
        nn.init.normal_(self.classifier.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: list[Tensor]) -> Tensor:
        if len(features) != len(self.projections):
            raise ValueError(f"expected {len(self.projections)} feature maps, got {len(features)}")
        output_size = features[0].shape[2:]
        upsampled = []
        for feature, projection in zip(features, self.projections):
            projected = projection(feature.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            if projected.shape[2:] != output_size:
                projected = F.interpolate(
                    projected, size=output_size, mode="bilinear", align_corners=False
                )
            upsampled.append(projected)
        fused = self.fuse(torch.cat(upsampled[::-1], dim=1))
        return self.classifier(self.dropout(fused))

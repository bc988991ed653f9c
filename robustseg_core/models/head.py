"""SegFormer all-MLP decode head."""

from __future__ import annotations

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

    The parameters are SegFormer's (``projections.i`` = P_i, b_i; ``fuse.0`` = W, whose column block for
    stage i is W_i). The forward pass computes the same function in a cheaper order: the fuse conv
    of the concatenation is the sum over stages of W_i applied to stage i's upsampled projection, and
    as both the projection and W_i act on channels only and bilinear upsampling U_i on pixels only
    (and keeps constants),

        W [U_4(P_4 F_4 + b_4); ...; U_1(P_1 F_1 + b_1)] = sum_i U_i((W_i P_i) F_i + W_i b_i).

    So each stage is mapped by one C_i -> E matrix at its own resolution and only E-channel maps are
    upsampled and summed: the E x 4E fuse conv at stride 4 (most of the head's cost) is gone, and
    the result equals the concatenating form up to float rounding.
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
        # Column blocks of the fuse weight [E, 4E] are in concatenation order c4, c3, c2, c1.
        fuse_blocks = self.fuse[0].weight.flatten(1).split(self.embed_dim, dim=1)[::-1]
        fused = None
        for feature, projection, block in zip(features, self.projections, fuse_blocks):
            weight = block @ projection.weight                      # [E, C_i]
            mapped = F.conv2d(feature, weight[:, :, None, None], block @ projection.bias)
            if mapped.shape[2:] != output_size:
                mapped = F.interpolate(mapped, size=output_size, mode="bilinear", align_corners=False)
            fused = mapped if fused is None else fused + mapped
        fused = self.fuse[2](self.fuse[1](fused))                  # BatchNorm, ReLU
        return self.classifier(self.dropout(fused))

"""Mix Transformer (MiT) encoder of SegFormer, laid out like a timm model file.

Order: building blocks (overlapping patch embedding, efficient self-attention with spatial
reduction, Mix-FFN, transformer block with stochastic depth), the ``MixVisionTransformer``
model, and the presets table with its one builder.

Parameter and buffer names equal the official SegFormer ImageNet release (``mit_b0.pth`` ...),
so an official checkpoint loads with ``strict=True`` once its ``head.*`` classifier is dropped
(:mod:`robustseg_core.models.pretrained`).
LayerNorm epsilons also follow that release: 1e-6 for the block norms (``norm1``/``norm2``)
and the stage-end norms (``norm{i}``); PyTorch's default 1e-5 for the patch-embedding norm and
the spatial-reduction norm of the attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BLOCK_NORM_EPS = 1e-6
#: Strides of the four output feature maps relative to the input image.
STAGE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: strided conv + LayerNorm.

    [N, C_in, H, W] -> tokens [N, h*w, C_out] and the token grid size (h, w).
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            in_channels, embed_dim, kernel_size=patch_size, stride=stride, padding=patch_size // 2
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        height, width = x.shape[2:]
        tokens = x.flatten(2).transpose(1, 2)
        return self.norm(tokens), height, width


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a spatially reduced token grid.

    With ``sr_ratio > 1`` the key/value grid is shrunk by a ``sr_ratio x sr_ratio`` strided conv
    followed by LayerNorm, reducing the cost from O(N^2) to O(N^2 / sr_ratio^2).
    Tokens [N, h*w, C] -> [N, h*w, C].
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        batch, num_tokens, dim = x.shape
        head_dim = dim // self.num_heads
        query = self.q(x).reshape(batch, num_tokens, self.num_heads, head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            grid = x.transpose(1, 2).reshape(batch, dim, height, width)
            context = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        else:
            context = x
        key_value = self.kv(context).reshape(batch, -1, 2, self.num_heads, head_dim)
        key, value = key_value.permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.proj(attended.transpose(1, 2).reshape(batch, num_tokens, dim))


class DepthwiseConv(nn.Module):
    """Depthwise 3x3 conv applied to a token sequence laid out on its (h, w) grid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        batch, _, dim = x.shape
        grid = x.transpose(1, 2).reshape(batch, dim, height, width)
        return self.dwconv(grid).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """Mix-FFN: Linear -> depthwise 3x3 conv -> GELU -> Linear. Tokens [N, h*w, C] -> same."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DepthwiseConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), height, width)))


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a whole residual branch per sample with probability
    ``drop_prob`` and rescale the kept ones by 1 / (1 - drop_prob). Identity in eval mode."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        keep_mask = x.new_empty(mask_shape).bernoulli_(keep_prob)
        return x * keep_mask / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class MixTransformerBlock(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(MixFFN(LN(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, qkv_bias=qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), height, width))
        return x + self.drop_path(self.mlp(self.norm2(x), height, width))


class MixVisionTransformer(nn.Module):
    """Hierarchical MiT encoder.

    Input [N, in_channels, H, W]; output a list of 4 feature maps
    [N, C_i, ceil(H / s_i), ceil(W / s_i)] with C_i = ``embed_dims[i]`` and s_i = 4, 8, 16, 32
    (patch embeddings: 7x7 stride 4 pad 3, then 3x3 stride 2 pad 1).
    """

    def __init__(
        self,
        embed_dims: tuple[int, ...] = (32, 64, 160, 256),
        depths: tuple[int, ...] = (2, 2, 2, 2),
        num_heads: tuple[int, ...] = (1, 2, 5, 8),
        sr_ratios: tuple[int, ...] = (8, 4, 2, 1),
        mlp_ratio: float = 4.0,
        in_channels: int = 3,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        settings = (embed_dims, depths, num_heads, sr_ratios)
        if any(len(setting) != len(STAGE_STRIDES) for setting in settings):
            raise ValueError(
                "embed_dims, depths, num_heads and sr_ratios need one entry per stage (4)"
            )
        self.embed_dims = tuple(embed_dims)
        self.depths = tuple(depths)
        self.drop_path_rate = drop_path_rate
        block_drop_paths = torch.linspace(0.0, drop_path_rate, sum(depths)).tolist()
        first_block = 0
        stage_in_channels = in_channels
        for stage, (dim, depth, heads, sr_ratio) in enumerate(zip(*settings), start=1):
            patch_size, stride = (7, 4) if stage == 1 else (3, 2)
            self.add_module(
                f"patch_embed{stage}", OverlapPatchEmbed(stage_in_channels, dim, patch_size, stride)
            )
            blocks = nn.ModuleList(
                MixTransformerBlock(
                    dim,
                    heads,
                    sr_ratio,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path=block_drop_paths[first_block + index],
                )
                for index in range(depth)
            )
            self.add_module(f"block{stage}", blocks)
            self.add_module(f"norm{stage}", nn.LayerNorm(dim, eps=BLOCK_NORM_EPS))
            first_block += depth
            stage_in_channels = dim
        self.apply(_init_segformer_weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in range(1, len(STAGE_STRIDES) + 1):
            tokens, height, width = getattr(self, f"patch_embed{stage}")(x)
            for block in getattr(self, f"block{stage}"):
                tokens = block(tokens, height, width)
            tokens = getattr(self, f"norm{stage}")(tokens)
            x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)
            features.append(x)
        return features


def _init_segformer_weights(module: nn.Module) -> None:
    """SegFormer init: Linear trunc-normal(0.02) with zero bias; LayerNorm ones/zeros;
    Conv2d normal(0, sqrt(2 / fan_out)) with fan_out = k_h * k_w * out_channels / groups."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        kernel_h, kernel_w = module.kernel_size
        fan_out = kernel_h * kernel_w * module.out_channels // module.groups
        nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@dataclass(frozen=True)
class MiTConfig:
    """Architecture of one MiT size: per-stage widths, block counts, heads and reduction ratios."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: float = 4.0


#: The MiT sizes ``build_mit`` builds (encoder parameters: B0 3,319,392; B1 13,151,424; B2 24,196,288;
#: cpu 423,648; ``bench/model_sizes.py``).
MIT_PRESETS: dict[str, MiTConfig] = {
    "mit_b0": MiTConfig((32, 64, 160, 256), depths=(2, 2, 2, 2), num_heads=(1, 2, 5, 8)),
    "mit_b1": MiTConfig((64, 128, 320, 512), depths=(2, 2, 2, 2), num_heads=(1, 2, 5, 8)),
    "mit_b2": MiTConfig((64, 128, 320, 512), depths=(3, 4, 6, 3), num_heads=(1, 2, 5, 8)),
    # Small preset for 2-core CPU training at 128-256 px (dims 16..128, one block per stage); no
    # official weights exist for it.
    "mit_cpu": MiTConfig((16, 32, 64, 128), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4)),
}


def build_mit(preset: str, drop_path_rate: float = 0.1) -> MixVisionTransformer:
    """MiT encoder of the named preset (see ``MIT_PRESETS``), randomly initialised."""
    if preset not in MIT_PRESETS:
        raise ValueError(f"unknown MiT preset {preset!r}; known presets: {', '.join(MIT_PRESETS)}")
    config = MIT_PRESETS[preset]
    return MixVisionTransformer(
        embed_dims=config.embed_dims,
        depths=config.depths,
        num_heads=config.num_heads,
        sr_ratios=config.sr_ratios,
        mlp_ratio=config.mlp_ratio,
        drop_path_rate=drop_path_rate,
    )

"""LGViT: the lightweight gated vision transformer image encoder (paper section 1; v2: CE-Encoder).

Isotropic at 1/16 resolution: a 16x16 patch embedding, a channel-interactive stage of MBConv
blocks, token-interactive gated linear-attention blocks, and SAM's neck to 256 channels. Any input
whose height and width are multiples of the patch size works; RoPE tables are built for the actual
token grid and cached per grid size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import StochasticDepth

from .common import LayerNorm2d, check_images
from .linear_attention import GatedLinearAttention, rope_2d_rotations


class ConvBN(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, groups: int = 1) -> None:
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(
                    in_ch, out_ch, kernel_size, padding=kernel_size // 2, groups=groups, bias=False
                ),
                bn=nn.BatchNorm2d(out_ch),
            )
        )


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project; GELU after the residual add."""

    def __init__(self, dim: int, expand_ratio: float = 2.0) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.expand = ConvBN(dim, hidden, 1)
        self.depthwise = ConvBN(hidden, hidden, 3, groups=hidden)
        self.project = ConvBN(hidden, dim, 1)
        # Zero-initialised last BN: each block starts as GELU(identity), which eases early training.
        nn.init.zeros_(self.project.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.expand(x))
        y = F.gelu(self.depthwise(y))
        return F.gelu(x + self.project(y))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class GatedAttentionBlock(nn.Module):
    """Pre-norm block: ``x + proj(LinAttn(LN x) * SiLU(gate(LN x)))``, then ``x + MLP(LN x)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GatedLinearAttention(dim, num_heads)
        self.gate = nn.Linear(dim, dim)  # post-filter: keeps or suppresses each token's attention output
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int], rotations: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.drop_path(self.proj(self.attn(y, grid_size, rotations) * F.silu(self.gate(y))))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class LGViT(nn.Module):
    """LGViT encoder with neck: (B, in_chans, H, W) -> (B, out_chans, H/16, W/16).

    Args:
        embed_dim: token width C (24 / 48 / 96 / 192 for the t / s / b / l sizes).
        num_heads: heads of each attention stage; ``depths`` gives the blocks per stage.
        num_mbconv: MBConv blocks of the channel-interactive stage.
        mlp_ratio: hidden width of the transformer MLP and expansion of MBConv, relative to C.
        drop_path_rate: stochastic depth rises linearly from 0 to this over all blocks (the
            MBConv blocks get none).
        out_chans: channels of the neck output (256, as SAM's image embedding).
    """

    def __init__(
        self,
        in_chans: int = 3,
        embed_dim: int = 96,
        patch_size: int = 16,
        num_mbconv: int = 2,
        depths: Sequence[int] = (2, 6, 2),
        num_heads: Sequence[int] = (6, 12, 24),
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.1,
        out_chans: int = 256,
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} differ in length")
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.out_chans = out_chans
        self.rope_base = rope_base
        self.grad_checkpointing = False
        self._rope_cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}

        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.conv_blocks = nn.ModuleList(MBConv(embed_dim, mlp_ratio) for _ in range(num_mbconv))
        drop_rates = torch.linspace(0, drop_path_rate, num_mbconv + sum(depths))[num_mbconv:].tolist()
        heads_per_block = [h for h, d in zip(num_heads, depths, strict=True) for _ in range(d)]
        self.blocks = nn.ModuleList(
            GatedAttentionBlock(embed_dim, h, mlp_ratio, p)
            for h, p in zip(heads_per_block, drop_rates, strict=True)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(_init_weights)  # touches Linear/LayerNorm only, so MBConv's zero BN stays

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute attention blocks and the neck in backward instead of storing their activations.

        MBConv blocks are not recomputed: re-running their BatchNorm would update its running
        statistics twice per step.
        """
        self.grad_checkpointing = enable

    def rope_rotations(self, grid_size: tuple[int, int], device: torch.device) -> torch.Tensor:
        if torch.compiler.is_exporting():  # the graph computes them; a cache would be export state
            return rope_2d_rotations(grid_size, self.embed_dim, base=self.rope_base, device=device)
        key = (*grid_size, device)
        if key not in self._rope_cache:
            self._rope_cache[key] = rope_2d_rotations(
                grid_size, self.embed_dim, base=self.rope_base, device=device
            )
        return self._rope_cache[key]

    def _run(self, module: nn.Module, *args: object) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def forward_intermediates(
        self, x: torch.Tensor, indices: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Neck output plus the token maps (B, C, h, w) after the attention blocks in ``indices``."""
        check_images(x, self.in_chans, self.patch_size)
        x = self.patch_embed(x)
        grid_size = (x.shape[-2], x.shape[-1])
        for block in self.conv_blocks:
            x = block(x)
        rotations = self.rope_rotations(grid_size, x.device)
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        wanted = set(range(len(self.blocks)) if indices is None else indices)
        intermediates = []
        for i, block in enumerate(self.blocks):
            tokens = self._run(block, tokens, grid_size, rotations)
            if i in wanted:
                intermediates.append(tokens.transpose(1, 2).unflatten(-1, grid_size))
        features = tokens.transpose(1, 2).unflatten(-1, grid_size)
        return self._run(self.neck, features), intermediates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_intermediates(x, indices=())[0]


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

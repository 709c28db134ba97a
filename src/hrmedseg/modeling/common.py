"""Small building blocks shared by the encoder, the prompt encoder and the decoder."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def check_images(images: torch.Tensor, in_chans: int, multiple: int) -> None:
    """Refuse anything but (B, in_chans, H, W) with H and W multiples of ``multiple``."""
    if images.ndim != 4 or images.shape[1] != in_chans:
        raise ValueError(f"expected images of shape (B, {in_chans}, H, W), got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(
            f"image height and width must be multiples of {multiple}, got {h}x{w}; "
            "resize or pad the input first"
        )


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map.

    Parameter names (``weight``, ``bias``) match SAM's, so SAM weights load unchanged. It calls
    ``F.layer_norm`` on a channels-last view rather than spelling out mean/var, which keeps one
    saved tensor for backward instead of several full-size intermediates.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (SAM's hypernetwork / IoU-head MLP).

    Stored as ``layers.{i}`` so SAM decoder keys map onto it.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier positional encoding of normalised (x, y) coordinates, as in SAM.

    A fixed Gaussian matrix G (2 x F) maps a coordinate c in [0, 1]^2 to
    ``[sin(2*pi*(2c-1) G), cos(2*pi*(2c-1) G)]`` of 2F channels. The matrix is a persistent buffer
    named like SAM's, so a SAM checkpoint's encoding is reproduced exactly.
    """

    def __init__(self, num_pos_feats: int = 128, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        gaussian = self.positional_encoding_gaussian_matrix
        projected = (2 * coords.to(gaussian.dtype) - 1) @ gaussian * (2 * math.pi)
        return torch.cat([projected.sin(), projected.cos()], dim=-1)

    def forward(self, grid_size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an (h, w) grid of cells; returns (2F, h, w)."""
        h, w = grid_size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        return self._encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Encode pixel coordinates (..., 2) as (x, y) in an image of size (H, W); returns (..., 2F)."""
        h, w = image_size
        scale = coords.new_tensor([w, h], dtype=torch.float32)
        return self._encode(coords.float() / scale)

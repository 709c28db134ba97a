"""Prompt encoder for points, boxes and low-resolution masks, compatible with SAM's weights.

Parameter and buffer names follow SAM's ``prompt_encoder.*`` keys, so the prompt encoder of an
official SAM checkpoint loads unchanged. Unlike SAM's, the image size and the image embedding's
grid are given per call (SAM fixes both at construction), so prompts work for any input height
and width.

Coordinate convention: pixels of the model input, (x, y) order, boxes as XYXY. A pixel's centre
is at +0.5, as in SAM.

Optionally (``box_regions``, a departure from SAM), a box also enters as a dense map: the region it
covers, drawn on the mask-prompt grid and embedded by convolutions like a mask prompt's, then added
to the dense embedding. SAM's box is two corner tokens only, so every image position must learn
from attention whether it lies between them; trained from scratch on few images, the decoder then
masks every object that looks like the boxed one. The map tells each position directly.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import LayerNorm2d, PositionEmbeddingRandom

# Index into ``point_embeddings`` for each kind of sparse prompt.
NEGATIVE_POINT, POSITIVE_POINT, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = range(4)


class PromptEncoder(nn.Module):
    """Encodes prompts into sparse tokens (B, T, D) and a dense map (B, D, h, w).

    Args:
        embed_dim: token width D (256 for SAM).
        mask_in_chans: hidden channels of the mask-downscaling convolutions (``ModelConfig``'s
            default is SAM's).
        box_regions: also embed each box's region as a dense map (module docstring).
    """

    def __init__(self, embed_dim: int, mask_in_chans: int, box_regions: bool = False) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = _downscaling(embed_dim, mask_in_chans)
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self.box_downscaling = _downscaling(embed_dim, mask_in_chans) if box_regions else None
        if self.box_downscaling is not None:
            # Zero at the start: with SAM's prompt-encoder weights loaded, the model starts as SAM's.
            nn.init.zeros_(self.box_downscaling[-1].weight)
            nn.init.zeros_(self.box_downscaling[-1].bias)

    def get_dense_pe(self, grid_size: tuple[int, int]) -> torch.Tensor:
        """Positional encoding of the image-embedding grid, (1, D, h, w)."""
        return self.pe_layer(grid_size).unsqueeze(0)

    def embed_points(
        self, coords: torch.Tensor, labels: torch.Tensor, image_size: tuple[int, int], pad: bool
    ) -> torch.Tensor:
        """coords (B, N, 2) as (x, y) pixels, labels (B, N) with 1 = foreground, 0 = background,
        -1 = padding. ``pad`` appends one padding point (SAM does so when no box is given)."""
        if pad:
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        return self.embed_labelled_points(coords, labels, image_size)

    def embed_boxes(self, boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """boxes (B, 4) as XYXY pixels -> two corner tokens per box, (B, 2, D)."""
        corners = boxes.reshape(-1, 2, 2)
        labels = torch.tensor([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], device=boxes.device).expand(len(corners), 2)
        return self.embed_labelled_points(corners, labels, image_size)

    def embed_labelled_points(
        self, coords: torch.Tensor, labels: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """Every sparse prompt as labelled points, SAM's ONNX convention: coords (B, N, 2) as
        (x, y) pixels with labels (B, N): -1 padding, 0 background, 1 foreground, 2 and 3 a box's
        top-left and bottom-right corner. A padding point gets no positional encoding."""
        embedding = self.pe_layer.forward_with_coords(coords + 0.5, image_size)
        labels = labels[..., None]
        embedding = torch.where(labels == -1, torch.zeros_like(embedding), embedding)
        embedding = embedding + (labels == -1) * self.not_a_point_embed.weight
        for label in (NEGATIVE_POINT, POSITIVE_POINT, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT):
            embedding = embedding + (labels == label) * self.point_embeddings[label].weight
        return embedding

    def embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        return self.mask_downscaling(masks)

    def embed_box_regions(
        self,
        top_left: torch.Tensor,
        bottom_right: torch.Tensor,
        image_size: tuple[int, int],
        grid_size: tuple[int, int],
        present: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Dense embedding (B, D, h, w) of the regions of boxes given by their corners (B, 2) as
        (x, y) pixels (inclusive indices); ``present`` (B,) 0/1 zeroes the sets without a box.

        The region is drawn on the mask-prompt grid (4h, 4w): a cell is inside when it overlaps
        the box's pixels, so even a box smaller than a cell marks one.
        """
        rows, cols = grid_size[0] * 4, grid_size[1] * 4
        cell_h, cell_w = image_size[0] / rows, image_size[1] / cols
        y = torch.arange(rows, device=top_left.device, dtype=top_left.dtype) * cell_h
        x = torch.arange(cols, device=top_left.device, dtype=top_left.dtype) * cell_w
        inside_y = (y[None] + cell_h > top_left[:, 1:2]) & (y[None] < bottom_right[:, 1:2] + 1)  # (B, 4h)
        inside_x = (x[None] + cell_w > top_left[:, 0:1]) & (x[None] < bottom_right[:, 0:1] + 1)  # (B, 4w)
        region = (inside_y[:, :, None] & inside_x[:, None, :]).to(top_left.dtype).unsqueeze(1)
        embedding = self.box_downscaling(region)
        return embedding if present is None else embedding * present.reshape(-1, 1, 1, 1)

    def forward(
        self,
        image_size: tuple[int, int],
        grid_size: tuple[int, int],
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        batch_size: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed any combination of prompts for a model input of ``image_size`` (H, W) whose image
        embedding is a ``grid_size`` (h, w) grid.

        Args:
            points: coordinates (B, N, 2) and labels (B, N).
            boxes: (B, 4) XYXY.
            masks: (B, 1, 4h, 4w) mask logits, e.g. a previous low-resolution prediction.
            batch_size: used only when no prompt is given.
        Returns:
            sparse (B, T, D) tokens, T = N (+1 pad) + 2 per box; dense (B, D, h, w).
        """
        grid_size = tuple(grid_size)
        for prompt in (points[0] if points is not None else None, boxes, masks):
            if prompt is not None:
                batch_size = prompt.shape[0]
                break
        device = self.no_mask_embed.weight.device
        sparse = torch.empty(batch_size, 0, self.embed_dim, device=device)
        if points is not None:
            coords, labels = points
            sparse = torch.cat(
                [sparse, self.embed_points(coords, labels, image_size, pad=boxes is None)], dim=1
            )
        if boxes is not None:
            sparse = torch.cat([sparse, self.embed_boxes(boxes, image_size)], dim=1)
        if masks is not None:
            expected = (grid_size[0] * 4, grid_size[1] * 4)
            if tuple(masks.shape[-2:]) != expected or masks.ndim != 4 or masks.shape[1] != 1:
                raise ValueError(
                    f"mask prompt must be (B, 1, {expected[0]}, {expected[1]}) for a {image_size[0]}x"
                    f"{image_size[1]} input, got {tuple(masks.shape)}"
                )
            dense = self.embed_masks(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch_size, -1, *grid_size)
        if boxes is not None and self.box_downscaling is not None:
            dense = dense + self.embed_box_regions(boxes[:, :2], boxes[:, 2:], image_size, grid_size)
        return sparse, dense


def _downscaling(embed_dim: int, hidden: int) -> nn.Sequential:
    """A (B, 1, 4h, 4w) map -> (B, embed_dim, h, w), SAM's mask-prompt convolutions."""
    return nn.Sequential(
        nn.Conv2d(1, hidden // 4, kernel_size=2, stride=2),
        LayerNorm2d(hidden // 4),
        nn.GELU(),
        nn.Conv2d(hidden // 4, hidden, kernel_size=2, stride=2),
        LayerNorm2d(hidden),
        nn.GELU(),
        nn.Conv2d(hidden, embed_dim, kernel_size=1),
    )

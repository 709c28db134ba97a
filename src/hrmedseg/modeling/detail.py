"""The detail path: what lets a model draw structures finer than its 1/16 tokens.

The paper's model sees the image only through one stride-16 patch embedding and predicts logits on
the 1/4 grid, so nothing narrower than about 4 input pixels (a vessel, a cell border) can be drawn.
The detail path adds, as selectable components:

- ``early_convs``: a shallow convolutional stem (two stride-2 3×3 convolutions, to 1/2 and 1/4,
  optionally followed by residual blocks at 1/4) whose 1/4 map the encoder patchifies (4×4,
  stride 4) instead of the raw image (Xiao et al. 2021, "Early convolutions help transformers see
  better");
- ``skips``: the stem's 1/4 map added to the decoder's upscaled mask features before the mask
  product, as U-Net skips and SAM-HQ's early-feature fusion do;
- ``full_res_head``: the fused 1/4 features upsampled to 1/2 with the stem's 1/2 map added, a 3×3
  convolution, and a mask product with four weights per output pixel (one per position of a 2×2
  block, re-arranged by pixel shuffle), giving a residual at the input resolution that is added
  to the bilinearly upsampled 1/4 logits;
- ``feature_norm``: the fused 1/4 mask features normalised over each image (a GroupNorm of one
  group) before the mask product, and a learned logit offset per mask. Without it the features'
  mean is larger than their variation across the image (their last layers are GELUs, and the
  skip adds the stem's GELU outputs), so every change of a hypernetwork output that sharpens the
  mask also shifts all logits at once; on retinal vessels the predicted foreground then swings
  between none and nearly all of the image from one epoch to the next while the vessels are
  already ranked above the background (docs/benchmarks.md). Normalised, the hypernetwork draws
  the pattern and one parameter sets the level.

Every component that needs the stem builds it; the stem sees every input pixel, so logits at the
input resolution come from features computed at 1/2 resolution from full-resolution pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .common import LayerNorm2d
from .config import HALF_RES_BLOCKS
from .ecm_decoder import ECMDecoder, mask_product


class ConvGELU(nn.Sequential):
    """3×3 convolution, LayerNorm2d, GELU.

    A channel LayerNorm rather than BatchNorm: it keeps no running statistics, so recomputing the
    layer in backward (below) changes nothing, and a batch of one large window trains as well as
    a batch of many.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            LayerNorm2d(out_ch),
            nn.GELU(),
        )


class ConvReLU(nn.Sequential):
    """3×3 convolution with bias, ReLU: the cheap block for 1/2 resolution.

    At 1/2 resolution a channel LayerNorm permutes a map as large as the image and the exact
    GELU's backward evaluates erf and exp per element; together they were most of the detail
    path's extra step time (docs/benchmarks.md).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1), nn.ReLU())


# Each block of HALF_RES_BLOCKS: its 3×3 layer and its activation (the head applies it alone).
_HALF_RES = {"ln_gelu": (ConvGELU, F.gelu), "relu": (ConvReLU, F.relu)}


def half_res_layer(kind: str, in_ch: int, out_ch: int, *, stride: int = 1) -> nn.Sequential:
    """A 3×3 block of ``kind`` (one of HALF_RES_BLOCKS) for a layer at 1/2 resolution."""
    if kind not in HALF_RES_BLOCKS:
        raise ValueError(f"the 1/2-resolution block must be one of {HALF_RES_BLOCKS}, got {kind!r}")
    return _HALF_RES[kind][0](in_ch, out_ch, stride)


class ResidualConvBlock(nn.Module):
    """(B, C, h, w) -> (B, C, h, w): x + LN(conv(GELU(LN(conv(x))))), then GELU; a ResNet basic
    block with channel LayerNorms (:class:`ConvGELU` says why not BatchNorm)."""

    def __init__(self, chans: int) -> None:
        super().__init__()
        self.conv_gelu = ConvGELU(chans, chans)
        self.conv = nn.Conv2d(chans, chans, 3, padding=1, bias=False)
        self.norm = LayerNorm2d(chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + self.norm(self.conv(self.conv_gelu(x))))


def recomputed(module: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
    """Run ``module`` (a layer or a function of layers); in training, recompute it in backward
    instead of storing its activations.

    Used for the layers at 1/2 and 1/4 resolution: they cost a few per cent of the model's
    FLOPs, but each map they would store at 1/2 resolution is as large as all the 1/16
    encoder's activations of one block.
    """
    if torch.is_grad_enabled():
        return checkpoint(module, *inputs, use_reentrant=False)
    return module(*inputs)


class DetailStem(nn.Module):
    """(B, in_chans, H, W) -> feature maps at 1/2 (B, chans[0], H/2, W/2) and 1/4 (B, chans[1], H/4, W/4).

    The stem is recomputed in backward (:func:`recomputed`): only its outputs are kept, which the
    encoder and the decoder read.

    Args:
        in_chans: image channels.
        chans: widths at 1/2 and 1/4.
        half_res_block: the block of the 1/2-resolution layer (HALF_RES_BLOCKS).
        quarter_res_blocks: residual blocks (:class:`ResidualConvBlock`) after the stride-2 layer
            to 1/4; recomputed with it, so they add compute, not stored activations.
    """

    def __init__(
        self,
        in_chans: int = 3,
        chans: Sequence[int] = (16, 32),
        half_res_block: str = "ln_gelu",
        quarter_res_blocks: int = 0,
    ) -> None:
        super().__init__()
        if len(chans) != 2:
            raise ValueError(f"the detail stem takes two widths (1/2 and 1/4), got {tuple(chans)}")
        self.half_res = half_res_layer(half_res_block, in_chans, chans[0], stride=2)
        self.quarter_res = ConvGELU(chans[0], chans[1], stride=2)
        # Absent when empty, so that the keys of stems without blocks stay as they were.
        self.quarter_blocks = (
            nn.Sequential(*(ResidualConvBlock(chans[1]) for _ in range(quarter_res_blocks)))
            if quarter_res_blocks
            else None
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = recomputed(self.half_res, images)
        return half, recomputed(self._quarter, half)

    def _quarter(self, half: torch.Tensor) -> torch.Tensor:
        quarter = self.quarter_res(half)
        return quarter if self.quarter_blocks is None else self.quarter_blocks(quarter)


class StemEncoder(nn.Module):
    """The image-embedding half of a model whose encoder patchifies the detail stem's 1/4 map
    (``early_convs``): images (B, C_in, H, W) -> embeddings (B, D, H/p, W/p), p the model's patch
    size. Distillation trains it in place of the encoder alone.

    It holds the model's own stem and encoder, not copies, under the model's names, so its state
    dict keys are the model's ``detail_stem.*`` and ``image_encoder.*``.

    Args:
        detail_stem: the model's stem.
        image_encoder: the model's encoder, which reads the stem's 1/4 map.
    """

    def __init__(self, detail_stem: DetailStem, image_encoder: nn.Module) -> None:
        super().__init__()
        self.detail_stem = detail_stem
        self.image_encoder = image_encoder

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the encoder's blocks in backward; the stem always is (:func:`recomputed`)."""
        self.image_encoder.set_grad_checkpointing(enable)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, quarter = self.detail_stem(images)
        return self.image_encoder(quarter)


def embedding_encoder(model: nn.Module) -> nn.Module:
    """The modules of ``model.config.encoder_parts``, which map images (B, C_in, H, W) to the
    image embedding (B, D, H/p, W/p): what distillation trains and ``--init-encoder`` loads. That
    is the encoder (LGViT + neck), or, where the encoder reads the detail stem's 1/4 map, a
    :class:`StemEncoder` of the stem and the encoder; either way the model's own modules."""
    if model.config.encoder_parts == ("image_encoder",):
        return model.image_encoder
    return StemEncoder(model.detail_stem, model.image_encoder)


class DetailDecoder(ECMDecoder):
    """The ECM-Decoder with the stem's skips and a full-resolution head (module docstring).

    Keys of the ECM-Decoder's own parts are unchanged, so its weights load into this decoder.

    Args:
        skip_chans: widths of the stem's 1/2 and 1/4 maps.
        skips: add the 1/4 map to the upscaled mask features.
        full_res_head: predict a residual at the input resolution from a 1/2-resolution map.
        feature_norm: normalise the fused mask features per image and add a learned logit
            offset per mask (module docstring).
        head_dim: width of the 1/2-resolution map of the head.
        half_res_block: the block of the head's 1/2-resolution layer (HALF_RES_BLOCKS).
        band_rows: rows at 1/4 resolution per band of the head in training
            (:meth:`_full_res_residual`); it bounds the head's memory, not its result.
        **ecm_kwargs: the ECM-Decoder's arguments.
    """

    def __init__(
        self,
        *,
        skip_chans: Sequence[int],
        skips: bool = True,
        full_res_head: bool = True,
        feature_norm: bool = False,
        head_dim: int = 16,
        half_res_block: str = "ln_gelu",
        band_rows: int = 64,
        **ecm_kwargs,
    ) -> None:
        super().__init__(**ecm_kwargs)
        mask_dim = self.output_hypernetworks_mlps[0].layers[-1].out_features
        self.head_dim = head_dim
        self.skip_quarter = nn.Conv2d(skip_chans[1], mask_dim, 1) if skips else None
        if feature_norm:
            self.feature_norm = nn.GroupNorm(1, mask_dim)
            self.logit_offset = nn.Parameter(torch.zeros(self.num_mask_tokens, 1, 1))
        else:
            self.feature_norm = self.logit_offset = None
        if full_res_head:
            self.head_up = nn.ConvTranspose2d(mask_dim, head_dim, kernel_size=2, stride=2)
            self.skip_half = nn.Conv2d(skip_chans[0], head_dim, 1)
            self.head_conv = half_res_layer(half_res_block, head_dim, head_dim)
            self.head_activation = _HALF_RES[half_res_block][1]
            # Four weights per output pixel from each token's hypernetwork output; zero at the start,
            # so training begins from the 1/4 path's logits and the residual grows from there.
            self.head_weights = nn.Linear(mask_dim, 4 * head_dim)
            nn.init.zeros_(self.head_weights.weight)
            nn.init.zeros_(self.head_weights.bias)
        else:
            self.head_up = None
        self.band_rows = band_rows

    def forward_detail(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        skip_features: tuple[torch.Tensor, torch.Tensor],
        output_size: tuple[int, int],
        sparse_prompt_embeddings: torch.Tensor | None = None,
        dense_prompt_embeddings: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode with the detail path.

        Args:
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings: as
                :meth:`ECMDecoder.forward`, with an (h, w) embedding grid.
            skip_features: the stem's maps (B, c0, 8h, 8w) and (B, c1, 4h, 4w).
            output_size: (H, W) = (16h, 16w), the input resolution.
        Returns:
            logits (B, M, H, W), predicted IoUs (B, M) and the 1/4-resolution logits
            (B, M, 4h, 4w) (for deep supervision and mask prompts).
        """
        hyper_in, features, iou_pred = self.decode(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        half, quarter = skip_features
        if self.skip_quarter is not None:
            features = features + self.skip_quarter(quarter)
        if self.feature_norm is not None:
            features = self.feature_norm(features)
        low_res = mask_product(hyper_in, features)
        if self.logit_offset is not None:
            low_res = low_res + self.logit_offset
        logits = F.interpolate(low_res, size=output_size, mode="bilinear", align_corners=False)
        if self.head_up is None:
            return logits, iou_pred, low_res
        # (B, 4M, head_dim): four weights per token, one per position of a 2×2 output block.
        weights = self.head_weights(hyper_in).unflatten(-1, (4, self.head_dim)).flatten(1, 2)
        return logits + self._full_res_residual(features, half, weights), iou_pred, low_res

    def _full_res_residual(
        self, features: torch.Tensor, half: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """(B, D/8, H/4, W/4) mask features, (B, c0, H/2, W/2) stem map, (B, 4M, head_dim) weights
        -> (B, M, H, W): each 1/2-resolution position gives the logits of its 2×2 output pixels.

        In training the head runs in bands of ``band_rows`` rows at 1/4 resolution, each
        recomputed in backward on its own, so the head's 1/2-resolution activations are never
        all alive at once. Each band reads one more row on either side, which the 3×3
        convolution needs; the result is the same as one pass over the whole map.
        """
        rows = features.shape[-2]
        if not torch.is_grad_enabled() or rows <= self.band_rows:
            return recomputed(self._residual, features, half, weights)
        bands = []
        for start in range(0, rows, self.band_rows):
            stop = min(start + self.band_rows, rows)
            lo, hi = max(start - 1, 0), min(stop + 1, rows)
            band = recomputed(self._residual, features[:, :, lo:hi], half[:, :, 2 * lo : 2 * hi], weights)
            bands.append(band[:, :, 4 * (start - lo) : 4 * (stop - lo)])
        return torch.cat(bands, dim=2)

    def _residual(self, features: torch.Tensor, half: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        fine = self.head_activation(self.head_up(features) + self.skip_half(half))
        fine = self.head_conv(fine)  # (B, head_dim, H/2, W/2)
        return F.pixel_shuffle(mask_product(weights, fine), 2)

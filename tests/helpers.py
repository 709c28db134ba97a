"""Helpers shared by the test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import csv
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hrmedseg
from hrmedseg import ModelConfig
from hrmedseg.modeling import AutomaticSegmentationModel, HRMedSegSAM

# One block of each kind in every stage and the decoder: every operator is still exported, and an
# ONNX export's time grows with the number of blocks (tens of seconds for the full hrmedseg_t).
SHALLOW = {"depths": (1, 1, 1), "decoder_depth": 1, "num_mbconv": 1}


class SimulatedCrash(Exception):
    """Stands for a run killed between two epochs in the resume tests."""


def run_until_crash(run: Callable[..., Any], *args: Any, after_epoch: int = 1, **kwargs: Any) -> None:
    """Call ``run(*args, on_epoch_end=..., **kwargs)`` and stop it at the end of ``after_epoch``,
    after that epoch's checkpoint is written, as a crash there would."""

    def crash(epoch: int, row: dict[str, float]) -> None:
        if epoch == after_epoch:
            raise SimulatedCrash

    with pytest.raises(SimulatedCrash):
        run(*args, on_epoch_end=crash, **kwargs)


class ThresholdModel(AutomaticSegmentationModel):
    """Pointwise: the logit of a pixel is its intensity (in [0, 1]) minus 0.5; no normalisation."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__(ModelConfig(name="threshold", arch="threshold", img_size=size, patch_size=1,
                                     pixel_mean=(0.0, 0.0, 0.0), pixel_std=(1.0, 1.0, 1.0)))  # fmt: skip

    def forward(self, images, return_quality=False):
        logits = images.mean(1, keepdim=True) - 0.5
        return (logits, None) if return_quality else logits


# --- Backward-pass comparisons (fp32 vs fp64, CPU vs CUDA, bf16 vs fp32) --------------------------

PROMPTS = ("boxes", "points", "boxes+points+mask")


def zero_init_unfrozen(model: nn.Module, seed: int = 0) -> nn.Module:
    """MBConv's last BatchNorm starts at weight 0, and the detail path's full-resolution head and
    the box-region prompt at a zero output: each stops gradients into a part of the model by
    design. Weight 1 for the former and small random weights for the latter let every parameter's
    gradient be compared, and make their output part of every prediction."""
    gen = torch.Generator().manual_seed(seed)
    for name, module in model.named_modules():
        if name.endswith("project.bn"):
            nn.init.ones_(module.weight)
        if name.endswith("head_weights") or name == "prompt_encoder.box_downscaling.6":
            with torch.no_grad():
                module.weight.copy_(0.5 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.5 * torch.randn(module.bias.shape, generator=gen))
    return model


def gradient_model(name: str, img_size: int, seed: int = 0, **options: Any) -> nn.Module:
    """A model whose every parameter gets a gradient: no drop path (random), no zero-init block."""
    torch.manual_seed(seed)
    model = hrmedseg.create_model(name, img_size=img_size, drop_path_rate=0.0, **options)
    return zero_init_unfrozen(model)


def gradient_batch(batch: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Images, a disc per image as target, and per-image prompts (one box, one foreground and one
    background point, a mask prompt) in pixels of the input."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=gen)
    centres = size * (0.3 + 0.4 * torch.rand(batch, 2, generator=gen))  # (x, y)
    radius = size / 5
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    dist2 = (xs - centres[:, 0, None, None]) ** 2 + (ys - centres[:, 1, None, None]) ** 2
    target = (dist2 < radius**2).float().unsqueeze(1)  # (B, 1, H, W)
    boxes = torch.cat([centres - radius, centres + radius], dim=1).clamp(0, size - 1)
    points = torch.stack([centres, (centres + 1.5 * radius).clamp(0, size - 1)], dim=1)  # (B, 2, 2)
    labels = torch.tensor([[1, 0]]).expand(batch, -1)
    mask_prompt = 4 * torch.randn(batch, 1, size // 4, size // 4, generator=gen)
    return {"images": images, "target": target, "boxes": boxes, "points": points, "labels": labels,
            "mask_prompt": mask_prompt}  # fmt: skip


def _dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probs = logits.sigmoid()
    return bce + 1 - (2 * (probs * target).sum() + 1) / (probs.sum() + target.sum() + 1)


def model_loss(model: nn.Module, batch: dict[str, torch.Tensor], prompts: str = "boxes") -> torch.Tensor:
    """A training-like loss (BCE + Dice of the masks, plus the IoU head's output) in the
    parameters' dtype, so an fp64 model is evaluated in fp64 end to end."""
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    b = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in batch.items()}
    if isinstance(model, HRMedSegSAM):
        kinds = prompts.split("+")
        out = model(
            b["images"],
            point_coords=b["points"] if "points" in kinds else None,
            point_labels=b["labels"] if "points" in kinds else None,
            boxes=b["boxes"] if "boxes" in kinds else None,
            mask_inputs=b["mask_prompt"] if "mask" in kinds else None,
        )
        logits, quality = out["masks"], out["iou_predictions"]
    else:
        logits, quality = model(b["images"], return_quality=True)
    target = b["target"].expand_as(logits)
    return _dice_bce(logits.to(dtype), target) + quality.to(dtype).square().mean()


def parameter_gradients(model: nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradient of ``loss`` for every parameter it reaches, as float64 on the CPU. Only prompt
    embeddings the prompts do not use may be missing."""
    model.zero_grad(set_to_none=True)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert all(n.startswith("prompt_encoder.") for n in missing), f"no gradient for {missing}"
    return {n: p.grad.detach().double().cpu() for n, p in model.named_parameters() if p.grad is not None}


@dataclass
class GradientComparison:
    """Per-tensor relative errors ``||g - g_ref|| / ||g_ref||`` of gradients against a reference.

    A tensor counts as negligible when its reference gradient is below ``1e-6`` of the whole
    gradient's norm (e.g. attention key biases, whose gradient is zero in exact arithmetic)."""

    errors: dict[str, float]
    negligible: set[str]

    @classmethod
    def of(cls, grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> GradientComparison:
        assert grads.keys() == reference.keys(), f"different tensors: {grads.keys() ^ reference.keys()}"
        total = torch.cat([g.flatten() for g in reference.values()]).norm()
        errors, negligible = {}, set()
        for name, ref in reference.items():
            norm = ref.norm()
            errors[name] = ((grads[name] - ref).norm() / norm.clamp_min(1e-300)).item()
            if norm <= 1e-6 * total:
                negligible.add(name)
        return cls(errors, negligible)

    @property
    def median(self) -> float:
        return statistics.median(self.errors.values())

    def worst(self, count: int = 5) -> list[tuple[str, float]]:
        relevant = [(n, e) for n, e in self.errors.items() if n not in self.negligible]
        return sorted(relevant, key=lambda item: -item[1])[:count]

    def assert_agree(self, median_below: float = 1e-3, each_below: float = 1e-2) -> None:
        worst = self.worst()
        assert self.median < median_below, f"median relative error {self.median:.2e}; worst {worst}"
        assert worst[0][1] < each_below, f"gradients disagree: {worst}"


def cosine_similarity(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Cosine similarity of two whole gradients (all tensors concatenated)."""
    flat_a, flat_b = (torch.cat([g[n].flatten() for n in sorted(a)]) for g in (a, b))
    return F.cosine_similarity(flat_a, flat_b, dim=0).item()


def scores_of_model_and_of_its_masks(
    checkpoint: Path, images: Path, data: Path, output: Path, *, evaluate_options: tuple[str, ...] = ()
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """``predict`` the ``images`` folder with ``checkpoint``, then the metrics.csv rows of
    ``evaluate --checkpoint`` and of ``evaluate --predictions`` on ``data``: two routes to one
    score, which must agree row for row."""
    from hrmedseg.cli import main as cli_main

    assert cli_main(["predict", "--checkpoint", str(checkpoint), "--input", str(images),
                     "--output", str(output / "masks"), "--quiet"]) == 0  # fmt: skip
    argv = ["evaluate", "--data", str(data), "--quiet", *evaluate_options]
    assert cli_main([*argv, "--checkpoint", str(checkpoint), "--output", str(output / "model")]) == 0
    assert cli_main([*argv, "--predictions", str(output / "masks"), "--output", str(output / "files")]) == 0

    def rows(folder: str) -> list[dict[str, str]]:
        with (output / folder / "metrics.csv").open() as f:
            return list(csv.DictReader(f))

    return rows("model"), rows("files")

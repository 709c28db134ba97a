"""Export trained models to ONNX, for deployment without PyTorch.

- :class:`~hrmedseg.HRMedSeg`: one graph, ``images`` (B, C, H, W) -> ``logits`` (B, K, H, W), at the
  model's ``img_size``, with a dynamic batch.
- :class:`~hrmedseg.HRMedSegSAM`: two graphs, as SAM ships them. ``<stem>_encoder.onnx``: ``images``
  (B, C, H, W) -> ``image_embeddings`` (B, D, h, w). ``<stem>_decoder.onnx``: ``image_embeddings``
  (1, D, h, w), ``point_coords`` (B, N, 2) and ``point_labels`` (B, N) in SAM's ONNX convention
  (see :meth:`PromptEncoder.embed_labelled_points`; boxes are two labelled corners), ``mask_input``
  (B, 1, 4h, 4w) and ``has_mask_input`` (1,) -> ``masks`` (B, M, H, W) logits and
  ``iou_predictions`` (B, M); the batch B of prompt sets and the number N of points are dynamic.
  Output 0 is the single-mask output, 1..M-1 the multimask outputs. With the detail path
  (:class:`~hrmedseg.HRMedSegSAMDetail`) the encoder also outputs the stem's maps ``detail_half``
  (B, c0, H/2, W/2) and ``detail_quarter`` (B, c1, H/4, W/4), and the decoder takes them (batch 1)
  after the prompts.

Coordinates are pixels of the model input (after resizing to ``img_size``), (x, y) order. Every
graph is float32, the linear attention included; each file's metadata holds the graph's role
(``hrmedseg_graph``) and the :class:`~hrmedseg.ModelConfig` (``hrmedseg_config``, JSON), which the
ONNX predictor reads. Needs ``onnx`` and ``onnxscript`` (``pip install 'hrmedseg[onnx]'``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_write
from ..errors import MissingDependencyError
from ..modeling import HRMedSeg, HRMedSegSAM
from ..modeling.prompt_encoder import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT
from ..output import ensure_output_file
from .onnx_segmenter import CONFIG_KEY, GRAPH_KEY, SAM_DECODER, SAM_ENCODER, SEGMENTATION

OPSET = 18


class SamImageEncoder(nn.Module):
    """A promptable model's :meth:`~HRMedSegSAM.embed` as a module with one output per tensor."""

    def __init__(self, model: HRMedSegSAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.embed(images).values())


class SamPromptDecoder(nn.Module):
    """HRMedSegSAM's prompt encoder and decoder as one module with SAM's ONNX inputs; a model with
    the detail path also takes the stem's maps of the image (``detail_half``, ``detail_quarter``)."""

    def __init__(self, model: HRMedSegSAM) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.image_size = model.config.img_size
        self.full_resolution_masks = model.full_resolution_masks

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        detail_half: torch.Tensor | None = None,
        detail_quarter: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        grid_size = tuple(image_embeddings.shape[-2:])
        sparse = self.prompt_encoder.embed_labelled_points(point_coords, point_labels, self.image_size)
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = has_mask_input * self.prompt_encoder.embed_masks(mask_input) + (1 - has_mask_input) * no_mask
        if self.prompt_encoder.box_downscaling is not None:  # the box's region, from its corner points
            labels = (BOX_TOP_LEFT, BOX_BOTTOM_RIGHT)
            corners = [(point_labels == label).to(point_coords.dtype) for label in labels]
            top_left, bottom_right = ((point_coords * c[..., None]).sum(1) for c in corners)
            dense = dense + self.prompt_encoder.embed_box_regions(
                top_left, bottom_right, self.image_size, grid_size, present=corners[0].amax(1)
            )
        image_pe = self.prompt_encoder.get_dense_pe(grid_size)
        if self.full_resolution_masks:
            masks, iou, _ = self.mask_decoder.forward_detail(
                image_embeddings, image_pe, (detail_half, detail_quarter), self.image_size,
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            )  # fmt: skip
            return masks, iou
        low_res, iou = self.mask_decoder(image_embeddings, image_pe, sparse, dense)
        masks = nn.functional.interpolate(low_res, size=self.image_size, mode="bilinear", align_corners=False)
        return masks, iou


def export_onnx(model: HRMedSeg | HRMedSegSAM, output: str | os.PathLike, opset: int = OPSET) -> list[Path]:
    """Write ``model`` as ONNX to ``output`` (HRMedSeg) or to ``<stem>_encoder.onnx`` and
    ``<stem>_decoder.onnx`` beside it (HRMedSegSAM); returns the files written."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise MissingDependencyError(
            "ONNX export needs onnx and onnxscript: pip install 'hrmedseg[onnx]'"
        ) from None
    output = ensure_output_file(output)  # before the export, which takes a while
    model = model.float().eval()
    config = model.config
    images = torch.zeros(2, config.in_chans, *config.img_size)
    batch = torch.export.Dim("batch", min=1)
    if isinstance(model, HRMedSegSAM):
        grid = config.grid_size
        with torch.no_grad():
            embedding = model.embed(images[:1])  # the image's tensors, each (1, ...), and their names
        extra = [name for name in embedding if name != "image_embeddings"]  # a detail stem's maps
        prompts = (
            embedding["image_embeddings"],
            torch.zeros(2, 3, 2),
            torch.tensor([[1, 2, 3], [0, 1, -1]], dtype=torch.float32),
            torch.zeros(2, 1, 4 * grid[0], 4 * grid[1]),
            torch.zeros(1),
            *(embedding[name] for name in extra),
        )
        decoder_inputs = [
            "image_embeddings",
            "point_coords",
            "point_labels",
            "mask_input",
            "has_mask_input",
            *extra,
        ]
        points = torch.export.Dim("points", min=1)
        prompt_shapes = ({0: batch, 1: points}, {0: batch, 1: points}, {0: batch}, None)
        graphs = [
            (SamImageEncoder(model).eval(), (images,), ["images"], list(embedding),
             ({0: batch},), SAM_ENCODER, output.with_name(f"{output.stem}_encoder.onnx")),
            (SamPromptDecoder(model).eval(), prompts, decoder_inputs, ["masks", "iou_predictions"],
             (None, *prompt_shapes, *[None] * len(extra)), SAM_DECODER,
             output.with_name(f"{output.stem}_decoder.onnx")),
        ]  # fmt: skip
    elif isinstance(model, HRMedSeg):
        graphs = [(model, (images,), ["images"], ["logits"], ({0: batch},), SEGMENTATION, output)]
    else:
        raise TypeError(f"export_onnx takes HRMedSeg or HRMedSegSAM, got {type(model).__name__}")
    written = []
    for module, inputs, input_names, output_names, dynamic_shapes, role, path in graphs:
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad(), warnings.catch_warnings():
            # Naming the same Dim on several inputs is how they share a size; torch says so.
            warnings.filterwarnings("ignore", message=".*shares the same shape constraints")
            program = torch.onnx.export(
                module, inputs, input_names=input_names, output_names=output_names,
                dynamic_shapes=dynamic_shapes, opset_version=opset, dynamo=True, verbose=False,
            )  # fmt: skip
        graph = program.model_proto
        onnx.helper.set_model_props(graph, {GRAPH_KEY: role, CONFIG_KEY: json.dumps(config.to_dict())})
        atomic_write(path, lambda tmp, graph=graph: onnx.save(graph, tmp))
        written.append(path)
    return written

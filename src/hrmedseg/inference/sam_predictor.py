"""SAM-style promptable prediction with HRMedSegSAM, in the original image's coordinates.

Usage mirrors ``segment_anything.SamPredictor``: ``set_image`` computes the image embedding once;
``predict`` then answers any number of prompts from it. Prompts are pixels of the ORIGINAL image,
(x, y) order, boxes XYXY; masks come back at the original size.

The image is resized to the model's ``img_size`` (both axes, as in training), so a prompt at
(x, y) maps to (x * W_in / W, y * H_in / H) in the model input; the prompt encoder then adds the
half-pixel shift to pixel centres, as SAM does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import load_model
from ..data.io import as_float_rgb, read_image
from ..data.transforms import image_to_tensor, normalize
from ..errors import ConfigError
from ..modeling import PromptableSegmentationModel
from ..runtime import resolve_device

ImageInput = np.ndarray | str | Path


class Predictor:
    """Prompted segmentation of one image at a time with a promptable model (HRMedSegSAM).

    Args:
        model: a :class:`~hrmedseg.modeling.PromptableSegmentationModel`.
        device: "auto" (CUDA when there is one), "cpu", "cuda" or "cuda:N".

    Example:
        >>> predictor = Predictor.from_checkpoint("sam_run/best.safetensors")
        >>> predictor.set_image(image)                         # (H, W, 3) uint8, any size
        >>> masks, scores, low_res = predictor.predict(box=np.array([40, 60, 200, 220]))
        >>> masks.shape                                        # (3, H, W) boolean
    """

    def __init__(self, model: PromptableSegmentationModel, device: str | torch.device = "auto") -> None:
        if not isinstance(model, PromptableSegmentationModel):
            raise ConfigError(
                "Predictor needs a promptable model (a PromptableSegmentationModel such as HRMedSegSAM), "
                f"got {type(model).__name__}"
            )
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.input_size: tuple[int, int] = tuple(model.config.img_size)
        self.reset_image()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> Predictor:
        return cls(load_model(path), device)

    def reset_image(self) -> None:
        self.embedding: dict[str, torch.Tensor] | None = None
        self.original_size: tuple[int, int] | None = None

    def _preprocess(self, image: ImageInput) -> tuple[torch.Tensor, tuple[int, int]]:
        array = read_image(image) if isinstance(image, str | Path) else as_float_rgb(image)
        config = self.model.config
        tensor = normalize(image_to_tensor(array, self.input_size), config.pixel_mean, config.pixel_std)
        return tensor, array.shape[:2]

    @torch.no_grad()
    def set_image(self, image: ImageInput) -> None:
        """Compute the embedding of an image: a path, or an (H, W[, 3|4]) uint8 / [0, 1] float array."""
        tensor, self.original_size = self._preprocess(image)
        self.embedding = self.model.embed(tensor[None].to(self.device))

    def get_image_embedding(self) -> torch.Tensor:
        """The current embedding (1, D, h, w): D = 256 and (h, w) = ``model.config.grid_size``.
        (A model with a detail path keeps the stem's maps beside it; ``predict`` uses both.)"""
        self._require_image()
        return self.embedding["image_embeddings"]

    def _require_image(self) -> None:
        if self.embedding is None:
            raise RuntimeError("call set_image(image) before predicting")

    def to_input_coords(
        self, coords: np.ndarray, original_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Original-image (x, y) pixel coordinates (..., 2) -> model-input coordinates; the
        original size is the current image's unless given."""
        if original_size is None:
            self._require_image()
            original_size = self.original_size
        (h, w), (h_in, w_in) = original_size, self.input_size
        scale = np.array([w_in / w, h_in / h], dtype=np.float64)
        return torch.as_tensor(
            np.asarray(coords, dtype=np.float64) * scale, dtype=torch.float32, device=self.device
        )

    @torch.no_grad()
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt set, or for several boxes at once.

        Args:
            point_coords: (N, 2) (x, y) pixels of the original image; point_labels: (N,) with
                1 = foreground, 0 = background.
            box: (4,) XYXY in original pixels, or (B, 4) for B boxes decoded in one batch (then
                points, if given, are shared by every box).
            mask_input: (1, H_in/4, W_in/4) low-res logits from a previous call (or (B, 1, ...)).
            multimask_output: three candidate masks instead of one.
            return_logits: return logits instead of boolean masks.
        Returns:
            masks (C, H, W) at the original size (with several boxes: (B, C, H, W)), IoU
            predictions (C,) or (B, C), and low-res logits (C, H_in/4, W_in/4) or (B, C, ...).
        """
        self._require_image()
        boxes = None if box is None else np.asarray(box, dtype=np.float64).reshape(-1, 4)
        batch = 1 if boxes is None else len(boxes)
        points = labels = None
        if point_coords is not None:
            if point_labels is None or len(point_labels) != len(point_coords):
                raise ValueError("point_labels must give one label per point in point_coords")
            points = self.to_input_coords(point_coords).reshape(1, -1, 2).expand(batch, -1, -1)
            labels = (
                torch.as_tensor(np.asarray(point_labels), device=self.device).reshape(1, -1).expand(batch, -1)
            )
        box_tensor = None if boxes is None else self.to_input_coords(boxes.reshape(-1, 2, 2)).reshape(-1, 4)
        masks_in = None
        if mask_input is not None:
            masks_in = torch.as_tensor(mask_input, dtype=torch.float32, device=self.device)
            masks_in = masks_in.reshape(-1, 1, *masks_in.shape[-2:]).expand(batch, -1, -1, -1)
        out = self.model.decode(
            **self.embedding, image_size=self.input_size, point_coords=points, point_labels=labels,
            boxes=box_tensor, mask_inputs=masks_in, multimask_output=multimask_output,
        )  # fmt: skip
        logits = self._at_size(out, slice(None), self.original_size)
        masks = logits if return_logits else logits > 0
        results = (
            masks.cpu().numpy(),
            out["iou_predictions"].cpu().numpy(),
            out["low_res_logits"].cpu().numpy(),
        )
        single = box is None or np.asarray(box).ndim == 1
        return tuple(r[0] for r in results) if single else results

    @torch.no_grad()
    def predict_batch(
        self,
        images: Sequence[ImageInput],
        *,
        boxes: Sequence[np.ndarray | None] | None = None,
        point_coords: Sequence[np.ndarray | None] | None = None,
        point_labels: Sequence[np.ndarray | None] | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        batch_size: int = 4,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Prompted masks for several images: encoder passes in batches of ``batch_size`` images,
        then one decoder pass over every prompt set of the batch. The current image (set_image)
        is left as it was.

        Args:
            images: paths or arrays, each of any size.
            boxes: per image, None or (B_i, 4) XYXY boxes in that image's pixels; each box is one
                prompt set.
            point_coords, point_labels: per image, None or (N_i, 2) points and (N_i,) labels,
                shared by that image's boxes (or one prompt set of their own when it has none).
        Returns:
            Per image: masks (P_i, C, H_i, W_i), IoU predictions (P_i, C) and low-res logits
            (P_i, C, H_in/4, W_in/4), with P_i = max(1, B_i) prompt sets.
        """
        n = len(images)
        boxes, point_coords, point_labels = (
            list(x) if x is not None else [None] * n for x in (boxes, point_coords, point_labels)
        )
        if not len(boxes) == len(point_coords) == len(point_labels) == n:
            raise ValueError(f"give boxes / points for each of the {n} images (None where there are none)")
        results: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for start in range(0, n, batch_size):
            chunk = range(start, min(start + batch_size, n))
            prepared = [self._preprocess(images[i]) for i in chunk]
            embedding = self.model.embed(torch.stack([t for t, _ in prepared]).to(self.device))
            sizes = [size for _, size in prepared]
            owner, box_rows, point_rows, label_rows = [], [], [], []
            for j, i in enumerate(chunk):
                image_boxes = None if boxes[i] is None else np.asarray(boxes[i], np.float64).reshape(-1, 4)
                sets = 1 if image_boxes is None else len(image_boxes)
                if point_coords[i] is not None:
                    if point_labels[i] is None or len(point_labels[i]) != len(point_coords[i]):
                        raise ValueError(f"image {i}: point_labels must give one label per point")
                    pts = self.to_input_coords(np.asarray(point_coords[i]).reshape(-1, 2), sizes[j])
                    point_rows += [pts] * sets
                    label_rows += [torch.as_tensor(np.asarray(point_labels[i]), device=self.device)] * sets
                else:
                    point_rows += [torch.zeros(0, 2, device=self.device)] * sets
                    label_rows += [torch.zeros(0, dtype=torch.long, device=self.device)] * sets
                if image_boxes is not None:
                    box_rows.append(
                        self.to_input_coords(image_boxes.reshape(-1, 2, 2), sizes[j]).reshape(-1, 4)
                    )
                elif any(b is not None for b in (boxes[k] for k in chunk)):
                    raise ValueError("within a batch, give boxes for every image or for none")
                owner += [j] * sets
            points = labels = None
            longest = max(len(p) for p in point_rows)
            if longest:  # pad to a common count with SAM's 'not a point' label, -1
                points = torch.stack([F.pad(p, (0, 0, 0, longest - len(p))) for p in point_rows])
                labels = torch.stack([F.pad(lab, (0, longest - len(lab)), value=-1) for lab in label_rows])
            box_tensor = torch.cat(box_rows) if box_rows else None
            if points is None and box_tensor is None:
                raise ValueError("every image needs a prompt: boxes and/or points")
            index = torch.as_tensor(owner, device=self.device)
            out = self.model.decode(
                **{name: tensor[index] for name, tensor in embedding.items()}, image_size=self.input_size,
                point_coords=points, point_labels=labels, boxes=box_tensor, multimask_output=multimask_output,
            )  # fmt: skip
            for j in range(len(chunk)):
                rows = index == j
                logits = self._at_size(out, rows, sizes[j])
                masks = logits if return_logits else logits > 0
                results.append(
                    (
                        masks.cpu().numpy(),
                        out["iou_predictions"][rows].cpu().numpy(),
                        out["low_res_logits"][rows].cpu().numpy(),
                    )
                )
        return results

    def _at_size(
        self, out: dict[str, torch.Tensor], rows: slice | torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        """The logits of ``rows`` of a decoding, resized to an image's original ``size``: the
        full-resolution masks of a model with a detail path, otherwise the low-res logits (one
        resize, not two)."""
        source = out["masks"] if self.model.full_resolution_masks else out["low_res_logits"]
        return F.interpolate(source[rows], size=size, mode="bilinear", align_corners=False)

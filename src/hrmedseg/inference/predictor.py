"""SAM-style promptable prediction with HRMedSegSAM, in the original image's coordinates.

Usage mirrors ``segment_anything.SamPredictor``: ``set_image`` computes the image embedding once;
``predict`` then answers any number of prompts from it. Prompts are pixels of the ORIGINAL image,
(x, y) order, boxes XYXY; masks come back at the original size.

The image is resized to the model's ``img_size`` (both axes, as in training), so a prompt at
(x, y) maps to (x * W_in / W, y * H_in / H) in the model input; the prompt encoder then adds the
half-pixel shift to pixel centres, as SAM does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import load_model
from ..data.io import as_float_rgb, read_image
from ..data.transforms import image_to_tensor, normalize
from ..modeling import HRMedSegSAM
from ..runtime import resolve_device


class Predictor:
    """Prompted segmentation of one image at a time with a :class:`HRMedSegSAM` model.

    Example:
        >>> predictor = Predictor.from_checkpoint("sam_run/best.safetensors")
        >>> predictor.set_image(image)                         # (H, W, 3) uint8, any size
        >>> masks, scores, low_res = predictor.predict(box=np.array([40, 60, 200, 220]))
        >>> masks.shape                                        # (3, H, W) boolean
    """

    def __init__(self, model: HRMedSegSAM, device: str | torch.device = "auto") -> None:
        if not isinstance(model, HRMedSegSAM):
            raise ValueError(f"Predictor needs an HRMedSegSAM model, got {type(model).__name__}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.input_size: tuple[int, int] = tuple(model.config.img_size)
        self.reset_image()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> Predictor:
        return cls(load_model(path), device)

    def reset_image(self) -> None:
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None

    @torch.no_grad()
    def set_image(self, image: np.ndarray | str | Path) -> None:
        """Compute the embedding of an image: a path, or an (H, W[, 3|4]) uint8 / [0, 1] float array."""
        array = read_image(image) if isinstance(image, str | Path) else as_float_rgb(image)
        self.original_size = array.shape[:2]
        config = self.model.config
        tensor = normalize(image_to_tensor(array, self.input_size), config.pixel_mean, config.pixel_std)
        self.features = self.model.image_encoder(tensor[None].to(self.device))

    def get_image_embedding(self) -> torch.Tensor:
        """The current embedding (1, 256, H_in/16, W_in/16)."""
        self._require_image()
        return self.features

    def _require_image(self) -> None:
        if self.features is None:
            raise RuntimeError("call set_image(image) before predicting")

    def to_input_coords(self, coords: np.ndarray) -> torch.Tensor:
        """Original-image (x, y) pixel coordinates (..., 2) -> model-input coordinates."""
        self._require_image()
        (h, w), (h_in, w_in) = self.original_size, self.input_size
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
            self.features, self.input_size, points, labels, box_tensor, masks_in, multimask_output
        )
        logits = F.interpolate(
            out["low_res_logits"], size=self.original_size, mode="bilinear", align_corners=False
        )
        masks = logits if return_logits else logits > 0
        results = (
            masks.cpu().numpy(),
            out["iou_predictions"].cpu().numpy(),
            out["low_res_logits"].cpu().numpy(),
        )
        single = box is None or np.asarray(box).ndim == 1
        return tuple(r[0] for r in results) if single else results

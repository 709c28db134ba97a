"""The model contract (modeling/base.py) and the patch size stated once in ModelConfig."""

import numpy as np
import pytest
import torch
from torch import nn

import hrmedseg
from hrmedseg import (
    HRMedSeg,
    HRMedSegSAM,
    ModelConfig,
    Segmenter,
    build_model,
    create_model,
    load_model,
    save_model,
)
from hrmedseg.modeling import AutomaticSegmentationModel, SegmentationModel


class ConstantThresholdModel(AutomaticSegmentationModel):
    """A model outside the registry that meets the contract: logit = mean intensity - 0.5."""

    def __init__(self) -> None:
        super().__init__(ModelConfig(name="mean_threshold", arch="mean_threshold", img_size=32, patch_size=1))
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images, return_quality=False):
        logits = self.scale * (images.mean(1, keepdim=True) - 0.5)
        return (logits, None) if return_quality else logits


def test_create_model_returns_the_typed_classes():
    automatic, promptable = create_model("hrmedseg_t"), create_model("hrmedseg_sam_t")
    assert type(automatic) is HRMedSeg and isinstance(automatic, AutomaticSegmentationModel)
    assert type(promptable) is HRMedSegSAM and isinstance(promptable, SegmentationModel)
    assert not isinstance(promptable, AutomaticSegmentationModel)
    assert automatic.num_classes == automatic.config.num_classes == 1


def test_segmenter_takes_any_automatic_model_and_refuses_others():
    model = ConstantThresholdModel()
    image = np.zeros((50, 70, 3), dtype=np.float32)
    image[:, 35:] = 1.0  # right half bright
    mask = Segmenter(model, device="cpu").predict(image)
    assert mask.shape == (50, 70)
    assert mask[:, :30].sum() == 0 and mask[:, 40:].all()
    with pytest.raises(ValueError, match="promptable HRMedSegSAM models are used through hrmedseg.Predictor"):
        Segmenter(create_model("hrmedseg_sam_t"), device="cpu")
    with pytest.raises(ValueError, match="needs an automatic HRMedSeg model, got Conv2d"):
        Segmenter(nn.Conv2d(3, 1, 1), device="cpu")


def test_save_model_names_a_model_outside_the_contract(tmp_path):
    with pytest.raises(ValueError, match="save_model needs an hrmedseg model .* got Conv2d"):
        save_model(nn.Conv2d(3, 1, 1), tmp_path / "m.safetensors")


def test_unknown_architecture_and_inconsistent_parts_are_refused():
    with pytest.raises(ValueError, match="unknown arch 'mean_threshold'"):
        build_model(ConstantThresholdModel().config)
    model = create_model("hrmedseg_t", num_classes=2)
    config = hrmedseg.get_model_config("hrmedseg_t", num_classes=3)
    with pytest.raises(ValueError, match="decoder has 2 mask tokens, the config 3 classes"):
        HRMedSeg(model.image_encoder, model.mask_decoder, config)


def test_patch_size_sets_the_grid_of_encoder_prompts_and_masks(tmp_path):
    model = create_model("hrmedseg_sam_t", img_size=64, patch_size=8).eval()
    assert model.config.grid_size == (8, 8)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert model.image_encoder(images).shape == (1, 256, 8, 8)
        out = model(images, boxes=torch.tensor([[8.0, 8.0, 40.0, 48.0]]))
        assert out["masks"].shape == (1, 3, 64, 64) and out["low_res_logits"].shape == (1, 3, 32, 32)
        # The previous low-resolution mask is a valid mask prompt on the same grid.
        again = model(
            images, boxes=torch.tensor([[8.0, 8.0, 40.0, 48.0]]), mask_inputs=out["low_res_logits"][:, :1]
        )
        assert again["masks"].shape == (1, 3, 64, 64)
    path = save_model(model, tmp_path / "patch8.safetensors")
    assert load_model(path).config.patch_size == 8
    with pytest.raises(ValueError, match=r"multiples of 8 \(the patch size\), got 68"):
        create_model("hrmedseg_t", img_size=68, patch_size=8)


class RegisteredThresholdModel(ConstantThresholdModel):
    """The same model with its architecture registered: it can be saved and loaded by name."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        if config is not None:
            self.config = config


@hrmedseg.register_architecture("registered_threshold")
def build_registered_threshold(config: ModelConfig) -> RegisteredThresholdModel:
    return RegisteredThresholdModel(config)


def test_a_registered_architecture_is_built_saved_and_loaded_like_the_built_in_ones(tmp_path):
    config = ModelConfig(name="registered_threshold", arch="registered_threshold", img_size=32, patch_size=1)
    model = build_model(config)
    assert type(model) is RegisteredThresholdModel and model.config == config
    with torch.no_grad():
        model.scale.fill_(3.0)
    loaded = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert type(loaded) is RegisteredThresholdModel and loaded.scale.item() == 3.0
    assert not hrmedseg.is_promptable(config)
    with pytest.raises(ValueError, match="architecture 'registered_threshold' is registered already"):
        hrmedseg.register_architecture("registered_threshold")(build_registered_threshold)


def test_promptable_models_meet_the_promptable_contract():
    sam = create_model("hrmedseg_sam_t", img_size=64).eval()  # no drop path: two passes must agree
    assert isinstance(sam, hrmedseg.PromptableSegmentationModel) and hrmedseg.is_promptable(sam.config)
    assert not hrmedseg.is_promptable(create_model("hrmedseg_detail_t").config)
    with torch.no_grad():
        images = torch.randn(1, 3, 64, 64)
        direct = sam(images, boxes=torch.tensor([[4.0, 4.0, 40.0, 50.0]]), multimask_output=False)
        embeddings = sam.image_encoder(images)
        decoded = sam.decode(
            embeddings, (64, 64), boxes=torch.tensor([[4.0, 4.0, 40.0, 50.0]]), multimask_output=False
        )
    torch.testing.assert_close(direct["masks"], decoded["masks"])
    with pytest.raises(ValueError, match="Predictor needs a promptable model"):
        hrmedseg.Predictor(create_model("hrmedseg_t"))

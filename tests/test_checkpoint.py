"""Model files round-trip; foreign and mismatching weights load or fail with named keys."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from segment_anything.modeling import PromptEncoder as SamPromptEncoder

import hrmedseg
from hrmedseg import (
    CheckpointError,
    CheckpointMismatchError,
    create_model,
    load_model,
    load_sam_prompt_encoder,
    save_model,
)
from hrmedseg.checkpoint import load_state_dict_checked, read_model_config
from hrmedseg.cli import main as cli_main


@pytest.mark.parametrize(
    "name,options",
    [
        ("hrmedseg_t", {"num_classes": 4, "img_size": (512, 768), "pool_sizes": ()}),
        ("hrmedseg_sam_t", {"img_size": 256}),
        ("hrmedseg_sam_t", {"img_size": 256, "box_region_prompt": True}),
    ],
)
def test_save_load_round_trip_is_exact(tmp_path, name, options):
    model = create_model(name, **options)
    model.train()
    model(torch.randn(2, 3, 64, 64))  # move BatchNorm running statistics off their defaults
    model.eval()
    path = save_model(model, tmp_path / "model.safetensors")

    restored = load_model(path)
    assert restored.config == model.config
    assert not restored.training
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        a, b = model(x), restored(x)
    a, b = (a["masks"], b["masks"]) if isinstance(a, dict) else (a, b)
    assert torch.equal(a, b)
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_mismatching_weights_name_the_keys_and_shapes(tmp_path):
    binary = create_model("hrmedseg_t", num_classes=1)
    four_class = create_model("hrmedseg_t", num_classes=4)
    with pytest.raises(CheckpointMismatchError) as err:
        load_state_dict_checked(four_class, binary.state_dict(), source="binary.safetensors")
    message = str(err.value)
    assert "binary.safetensors" in message
    assert "mask_tokens.weight: file (1, 256) vs model (4, 256)" in message
    assert "missing (18)" in message and "output_hypernetworks_mlps.1.layers.0.weight" in message


def test_loading_a_file_that_is_not_a_model_file_says_so(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not an hrmedseg model file"):
        load_model(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        read_model_config(garbage)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_model(tmp_path / "missing.safetensors")


@pytest.fixture
def sam_checkpoint(tmp_path):
    """A tiny file in the official SAM checkpoint layout: a flat state dict with SAM's key names
    and shapes (here: SAM's own prompt encoder with random weights, plus one image-encoder key)."""
    sam = SamPromptEncoder(
        embed_dim=256, image_embedding_size=(12, 20), input_image_size=(192, 320), mask_in_chans=16
    )
    with torch.no_grad():
        for p in sam.parameters():
            p.normal_()
    state = {f"prompt_encoder.{k}": v for k, v in sam.state_dict().items()}
    state["image_encoder.patch_embed.proj.weight"] = torch.zeros(8, 3, 16, 16)
    path = tmp_path / "sam_vit_tiny.pth"
    torch.save(state, path)
    return sam.eval(), path


@pytest.mark.parametrize("box_regions", [False, True], ids=["sam", "box_regions"])
def test_sam_prompt_encoder_weights_load_and_reproduce_sam(sam_checkpoint, box_regions):
    # With box regions the model starts as SAM: that path's output is zero until trained.
    sam, path = sam_checkpoint
    model = create_model("hrmedseg_sam_t", box_region_prompt=box_regions)
    load_sam_prompt_encoder(model.prompt_encoder, path)
    ours = model.prompt_encoder.eval()

    image_size, grid = (192, 320), (12, 20)
    points = (torch.tensor([[[10.0, 20.0], [300.0, 150.0], [0.0, 191.0]]]), torch.tensor([[1, 0, -1]]))
    boxes = torch.tensor([[15.0, 30.0, 250.0, 180.0]])
    masks = torch.randn(1, 1, 48, 80)
    with torch.no_grad():
        for kwargs in (
            {"points": points},
            {"boxes": boxes},
            {"points": points, "boxes": boxes},
            {"masks": masks},
            {"points": points, "boxes": boxes, "masks": masks},
        ):
            sparse_sam, dense_sam = sam(kwargs.get("points"), kwargs.get("boxes"), kwargs.get("masks"))
            sparse, dense = ours(
                image_size, grid, kwargs.get("points"), kwargs.get("boxes"), kwargs.get("masks")
            )
            torch.testing.assert_close(sparse, sparse_sam, msg=lambda m, k=kwargs: f"{sorted(k)}: {m}")
            torch.testing.assert_close(dense, dense_sam)
        torch.testing.assert_close(ours.get_dense_pe(grid), sam.get_dense_pe())


def test_sam_checkpoint_without_prompt_encoder_is_rejected(tmp_path):
    path = tmp_path / "not_sam.pth"
    torch.save({"image_encoder.x": torch.zeros(1)}, path)
    with pytest.raises(CheckpointMismatchError, match="no 'prompt_encoder.\\*' keys"):
        load_sam_prompt_encoder(create_model("hrmedseg_sam_t").prompt_encoder, path)


def test_the_public_names_carry_a_model_from_creation_to_masks(tmp_path):
    # Only names exported at the package's top level and by its subpackages.
    from hrmedseg.evaluation import evaluate
    from hrmedseg.training import TrainConfig, train

    assert callable(train) and callable(evaluate) and TrainConfig(data="d", output="o").epochs > 0
    assert "hrmedseg_t" in hrmedseg.list_models()
    model = hrmedseg.create_model("hrmedseg_t", img_size=64).eval()
    loaded = hrmedseg.load_model(hrmedseg.save_model(model, tmp_path / "m.safetensors"))
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    masks = [hrmedseg.Segmenter(m, device="cpu").predict(image) for m in (model, loaded)]
    assert masks[0].shape == (50, 70)
    np.testing.assert_array_equal(masks[0], masks[1])


def test_a_newer_model_file_format_is_refused_naming_both_versions(tmp_path):
    path = hrmedseg.save_model(hrmedseg.create_model("hrmedseg_t", img_size=64), tmp_path / "m.safetensors")
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        metadata = {**f.metadata(), "format_version": "2"}
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ValueError, match="format version 2; this hrmedseg reads version 1 and earlier"):
        hrmedseg.load_model(path)


def test_broken_model_files_are_refused_by_name(tmp_path, capsys):
    good = save_model(create_model("hrmedseg_t", img_size=32), tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as f:
        metadata = f.metadata()
    weights = load_file(str(good))

    def variant(name, config=None, tensors=None, raw_config=None):
        values = {**json.loads(metadata["config"]), **(config or {})}
        path = tmp_path / f"{name}.safetensors"
        save_file({**weights, **(tensors or {})}, str(path),
                  metadata={**metadata, "config": raw_config or json.dumps(values)})  # fmt: skip
        return path

    nan = weights["mask_decoder.iou_token.weight"].clone()
    nan[0, 0] = float("nan")
    broken = {
        variant("zero_std", {"pixel_std": [0.229, 0.0, 0.225]}): "pixel_std must be above 0",
        variant("nan_mean", {"pixel_mean": [0.5, float("nan"), 0.5]}): "pixel_mean must be 3 finite numbers",
        variant("nan_weights", tensors={"mask_decoder.iou_token.weight": nan}):
            "non-finite weights \\(NaN or infinite\\) in 1 tensor\\(s\\): mask_decoder.iou_token.weight",
        variant("not_json", raw_config="{not json"): "its model config is not JSON",
    }  # fmt: skip
    for path, message in broken.items():
        with pytest.raises(CheckpointError, match=message) as info:
            load_model(path)
        assert str(path) in str(info.value)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "a.png")
    zero_std = tmp_path / "zero_std.safetensors"
    argv = [
        "predict",
        "--checkpoint",
        str(zero_std),
        "--input",
        str(images),
        "--output",
        str(tmp_path / "out"),
    ]
    assert cli_main([*argv, "--quiet"]) == 2
    assert "pixel_std must be above 0" in capsys.readouterr().err

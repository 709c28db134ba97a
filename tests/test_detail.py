"""hrmedseg_detail: the detail path (modeling/detail.py) and its place in the rest of the package."""

import base64
import dataclasses
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SHALLOW, scores_of_model_and_of_its_masks, zero_init_unfrozen
from PIL import Image

import hrmedseg
from hrmedseg import ModelConfig, Segmenter, create_model, load_model, save_model
from hrmedseg.cli import main as cli_main
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.errors import ConfigError
from hrmedseg.inference.tiling import Tiling
from hrmedseg.losses import SegmentationLoss
from hrmedseg.modeling.hrmedseg_detail import HRMedSegDetail
from hrmedseg.training.objectives import AutomaticObjective


def detail_model(size=64, seed=0, **options):
    """A tiny detail model whose full-resolution head already contributes (it starts at zero)."""
    torch.manual_seed(seed)
    return zero_init_unfrozen(create_model("hrmedseg_detail_t", img_size=size, **options), seed).eval()


def test_registered_sizes_and_the_paper_models_unchanged():
    assert hrmedseg.list_models("hrmedseg_detail_?") == [f"hrmedseg_detail_{s}" for s in "blst"]
    model = create_model("hrmedseg_detail_b")
    assert type(model) is HRMedSegDetail and model.config.detail == ("early_convs", "skips", "full_res_head")
    # Within 1 % of hrmedseg_b's parameters: the early convolutions replace the 16×16 patch embedding.
    assert abs(hrmedseg.count_parameters(model) / 3_371_857 - 1) < 0.01
    # The deep-stem family differs by two residual blocks at 1/4 resolution and normalised mask
    # features (1.1 % more weights, 65 of them the norm's and the logit offset).
    deep = create_model("hrmedseg_detail_deepstem_b")
    shallow = {"name": model.config.name, "detail_stem_blocks": 0, "detail": model.config.detail}
    assert dataclasses.replace(deep.config, **shallow) == model.config
    assert deep.config.detail == (*model.config.detail, "feature_norm")
    assert len(deep.detail_stem.quarter_blocks) == 2 and hrmedseg.count_parameters(deep) == 3_397_410
    # The paper-faithful models keep their classes and checkpoint keys.
    paper = create_model("hrmedseg_b")
    assert type(paper) is hrmedseg.HRMedSeg and paper.config.detail == ()
    assert not any(k.startswith("detail_stem") or "head_" in k for k in paper.state_dict())


def test_a_model_file_written_before_the_detail_fields_existed_loads():
    old = {k: v for k, v in create_model("hrmedseg_t").config.to_dict().items()
           if k not in ("detail", "detail_chans", "detail_head_dim", "deep_supervision",
                        "detail_half_res_block", "detail_stem_blocks")}  # fmt: skip
    assert ModelConfig.from_dict(old) == create_model("hrmedseg_t").config


def test_a_detail_model_file_written_before_the_half_res_block_existed_keeps_its_block(tmp_path):
    """Files saved before the option keep LayerNorm and GELU at 1/2 resolution, whatever the
    registered models use now: their weights were trained with that block."""
    model = create_model("hrmedseg_detail_t", img_size=64, detail_half_res_block="ln_gelu")
    config = {k: v for k, v in model.config.to_dict().items() if k != "detail_half_res_block"}
    assert ModelConfig.from_dict(config).detail_half_res_block == "ln_gelu"
    loaded = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert type(loaded.detail_stem.half_res[1]).__name__ == "LayerNorm2d"


def test_a_deep_stem_model_file_saved_without_feature_norm_loads_as_it_was_trained(tmp_path):
    """The registered family gained ``feature_norm``; a file saved before builds from its own
    config, so its weights load into the modules they were trained in, and it predicts the same."""
    before = ("early_convs", "skips", "full_res_head")
    model = create_model("hrmedseg_detail_deepstem_t", img_size=64, detail=before).eval()
    loaded = load_model(save_model(model, tmp_path / "m.safetensors")).eval()
    assert loaded.config.detail == before and loaded.mask_decoder.feature_norm is None
    assert loaded.state_dict().keys() == model.state_dict().keys()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))


def test_the_relu_block_has_no_norm_at_half_resolution():
    model = create_model("hrmedseg_detail_t", img_size=64, detail_half_res_block="relu")
    half_res = ("detail_stem.half_res", "mask_decoder.head_conv")
    names = [n for n, _ in model.named_parameters() if n.startswith(half_res)]
    assert sorted(names) == ["detail_stem.half_res.0.bias", "detail_stem.half_res.0.weight",
                             "mask_decoder.head_conv.0.bias", "mask_decoder.head_conv.0.weight"]  # fmt: skip
    assert type(model.detail_stem.quarter_res[1]).__name__ == "LayerNorm2d"  # 1/4 resolution keeps its norm


def test_stem_blocks_are_residual_at_quarter_resolution_and_absent_by_default():
    plain = create_model("hrmedseg_detail_t", img_size=64)
    assert plain.detail_stem.quarter_blocks is None
    assert not any("quarter_blocks" in k for k in plain.state_dict())  # registered models' keys unchanged
    model = detail_model(detail_stem_blocks=2)
    names = {k for k in model.state_dict() if k.startswith("detail_stem.quarter_blocks")}
    assert {"detail_stem.quarter_blocks.1.conv.weight", "detail_stem.quarter_blocks.1.norm.weight"} <= names
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        quarter_res = model.detail_stem.quarter_res(model.detail_stem.half_res(images))
        block = model.detail_stem.quarter_blocks[0]
        expected = F.gelu(quarter_res + block.norm(block.conv(block.conv_gelu(quarter_res))))
        torch.testing.assert_close(model.detail_stem.quarter_blocks[:1](quarter_res), expected)
        half, quarter = model.detail_stem(images)
        torch.testing.assert_close(quarter, model.detail_stem.quarter_blocks(quarter_res))
        assert quarter.shape == (2, 32, 16, 16) and half.shape == (2, 16, 32, 32)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"detail": ("sharpen",)}, r"unknown detail components \['sharpen'\]"),
        ({"detail": ()}, "need at least one detail component"),
        ({"detail_chans": (16,)}, "two positive widths"),
        ({"deep_supervision": -1.0}, "deep_supervision must be >= 0"),
        ({"detail_half_res_block": "bn"}, r"detail_half_res_block must be one of \['ln_gelu', 'relu'\]"),
        ({"detail_stem_blocks": -1}, "detail_stem_blocks must be >= 0, got -1"),
        ({"patch_size": 2, "img_size": 64}, "multiple of 4"),
    ],
)
def test_bad_detail_configs_are_refused_by_name(options, message):
    with pytest.raises(ConfigError, match=message):
        create_model("hrmedseg_detail_t", **options)


def test_other_architectures_refuse_detail_components():
    with pytest.raises(ConfigError, match="other models none"):
        create_model("hrmedseg_t", detail=("skips",))


@pytest.mark.parametrize(
    "detail",
    [("early_convs",), ("skips",), ("full_res_head",), ("skips", "full_res_head"), ("skips", "feature_norm")],
)
@pytest.mark.parametrize("num_classes", [1, 3])
def test_every_component_set_gives_logits_at_the_input_resolution(detail, num_classes):
    model = detail_model(num_classes=num_classes, detail=detail)
    images = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        logits, quality, low_res = model(images, return_quality=True, return_low_res=True)
        assert torch.equal(model(images), logits)
    assert logits.shape == (2, num_classes, 96, 160) and quality.shape == (2, num_classes)
    assert low_res.shape == (2, num_classes, 24, 40)
    upsampled = F.interpolate(low_res, size=(96, 160), mode="bilinear", align_corners=False)
    # Only the full-resolution head adds anything to the upsampled 1/4 logits.
    assert torch.allclose(logits, upsampled, atol=1e-6) != ("full_res_head" in detail)


def test_feature_norm_normalises_the_mask_features_per_image_and_adds_one_offset_per_mask():
    # The 1/4 logits against an explicit fp64 evaluation: each image's fused features (upscaled
    # plus skip) standardised over all channels and positions, the GroupNorm's affine, the
    # hypernetwork product, and the offset. A shift of the features' level moves no logit.
    model = detail_model(num_classes=2, detail=("early_convs", "skips", "feature_norm")).double()
    norm, offset = model.mask_decoder.feature_norm, torch.tensor([-1.5, 0.7], dtype=torch.float64)
    with torch.no_grad():
        norm.weight.normal_(1, 0.2), norm.bias.normal_(0, 0.2)
        model.mask_decoder.logit_offset.copy_(offset.view(2, 1, 1))
    images = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        _, _, low_res = model(images, return_quality=True, return_low_res=True)
        half, quarter = model.detail_stem(images)
        embeddings = model.image_encoder(quarter)
        image_pe = model.pe_layer(embeddings.shape[-2:]).unsqueeze(0)
        hyper_in, features, _ = model.mask_decoder.decode(embeddings, image_pe)
        fused = features + model.mask_decoder.skip_quarter(quarter)
        mean = fused.mean((1, 2, 3), keepdim=True)
        var = fused.var((1, 2, 3), unbiased=False, keepdim=True)
        normed = (fused - mean) / torch.sqrt(var + norm.eps)
        normed = normed * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
        expected = torch.einsum("bmc,bchw->bmhw", hyper_in, normed) + offset.view(1, 2, 1, 1)
        torch.testing.assert_close(low_res, expected, rtol=1e-9, atol=1e-9)

        model.mask_decoder.skip_quarter.bias += 3.0
        _, _, shifted = model(images, return_quality=True, return_low_res=True)
        torch.testing.assert_close(shifted, low_res, rtol=1e-9, atol=1e-9)


def test_the_head_sets_pixels_within_one_quarter_cell_independently():
    """Bilinear upsampling of 1/4-resolution logits varies linearly inside each cell; the head's
    residual gives each pixel of a 2×2 block its own weights, so one pixel can differ from its
    neighbours as a one-pixel-wide vessel needs."""
    model = detail_model()
    with torch.no_grad():
        logits, _, low_res = model(torch.randn(1, 3, 64, 64), return_quality=True, return_low_res=True)
    residual = logits - F.interpolate(low_res, size=(64, 64), mode="bilinear", align_corners=False)
    blocks = residual[0, 0].unfold(0, 2, 2).unfold(1, 2, 2)  # (32, 32, 2, 2)
    assert blocks.std((-2, -1)).mean() > 0.05 * residual.abs().mean()


@pytest.mark.parametrize(
    "band_rows,half_res_block", [(1, "ln_gelu"), (3, "ln_gelu"), (64, "ln_gelu"), (3, "relu")]
)
def test_the_banded_head_in_training_equals_one_pass_in_values_and_gradients(band_rows, half_res_block):
    """Training runs the head in bands of rows (to bound its memory); fp64 logits and every
    parameter's gradient must match one pass over the whole map, including a last short band."""
    # A 7×7 grid: 28 rows at 1/4, bands of 3 leave 1.
    model = detail_model(size=112, detail_half_res_block=half_res_block).double()
    images = torch.randn(2, 3, 112, 112, dtype=torch.float64)

    def logits_and_grads(rows):
        model.mask_decoder.band_rows = rows
        model.zero_grad()
        logits = model(images)
        (logits * torch.linspace(-1, 1, logits.numel(), dtype=torch.float64).view_as(logits)).sum().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    banded, banded_grads = logits_and_grads(band_rows)
    whole, whole_grads = logits_and_grads(10_000)
    torch.testing.assert_close(banded, whole, rtol=1e-10, atol=1e-10)
    assert banded_grads.keys() == whole_grads.keys() and any("head_conv" in n for n in whole_grads)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(banded_grads[name], grad, rtol=1e-9, atol=1e-10, msg=name)


def test_the_detail_model_learns_one_pixel_lines_that_the_quarter_grid_cannot_draw():
    """Images with 1-px bright vertical lines, the lines as target. A perfect 1/4-grid model
    (the truth averaged onto the grid, upsampled bilinearly, thresholded) scores Dice 0 here;
    the detail model, trained for a few dozen steps, draws them."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 64, 64, generator=gen) * 0.1
    masks = torch.zeros(8, 64, 64, dtype=torch.long)
    for i in range(8):
        columns = torch.randperm(64, generator=gen)[:6]
        masks[i, :, columns] = 1
    images = images + 2.0 * masks.unsqueeze(1).float()
    ceiling = F.interpolate(F.avg_pool2d(masks.unsqueeze(1).float(), 4), size=(64, 64), mode="bilinear") > 0.5
    assert ceiling.sum() == 0  # the quarter grid cannot represent them at all

    model = create_model("hrmedseg_detail_t", img_size=64, drop_path_rate=0.0).train()
    objective = AutomaticObjective(model, SegmentationLoss(1), quality_weight=0.0, amp_dtype=None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss, _ = objective(images, masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = model.eval()(images)[:, 0] > 0
    dice = 2 * (predicted & (masks > 0)).sum() / (predicted.sum() + masks.sum())
    assert dice > 0.8, dice


def test_deep_supervision_adds_the_weighted_loss_of_the_quarter_logits():
    model = detail_model(num_classes=3).train()
    model.config = dataclasses.replace(model.config, deep_supervision=0.4)
    images = torch.randn(2, 3, 64, 64)
    masks = torch.randint(0, 3, (2, 64, 64))
    loss_fn = SegmentationLoss(3)
    torch.manual_seed(1)
    loss, logits = AutomaticObjective(model, loss_fn, quality_weight=0.0, amp_dtype=None)(images, masks)
    torch.manual_seed(1)
    full, _, low_res = model(images, return_quality=True, return_low_res=True)
    torch.testing.assert_close(full, logits)
    expected = loss_fn(full, masks) + 0.4 * loss_fn(low_res, masks[:, 2::4, 2::4])
    torch.testing.assert_close(loss, expected)


def test_save_load_round_trip_and_onnx_parity(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from hrmedseg.deployment.export_onnx import export_onnx

    model = detail_model((64, 96), num_classes=2, **SHALLOW)
    restored = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert type(restored) is HRMedSegDetail and restored.config == model.config
    images = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        reference = model(images)
        assert torch.equal(restored(images), reference)
    (path,) = export_onnx(model, tmp_path / "m.onnx")
    graph = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = graph.run(None, {"images": images.numpy()})
    assert np.abs(logits - reference.numpy()).max() < 1e-4


def test_tiled_ensembles_serve_and_scored_predictions(tmp_path, capsys):
    """A native-scale detail model tiles by default; two of them ensemble; predict's masks score
    as the model itself does; the page serves the same mask."""
    from fastapi.testclient import TestClient

    from hrmedseg.serve.app import create_app

    data = make_synthetic_dataset(tmp_path / "data", num_images=6, size_range=(70, 130))
    files = [
        save_model(detail_model(seed=s, input_scale="native"), tmp_path / f"m{s}.safetensors") for s in (0, 1)
    ]
    image = np.asarray(Image.open(next((data / "images").iterdir())).convert("RGB"))
    members = [load_model(f) for f in files]
    tiled = Segmenter(members[0], "cpu")
    assert tiled.tiling is not None
    np.testing.assert_array_equal(
        tiled.predict(image), Segmenter(members[0], "cpu", tiling=Tiling()).predict(image)
    )
    (ensemble,) = Segmenter(members, "cpu").iter_probabilities([image])
    singles = [next(Segmenter(m, "cpu").iter_probabilities([image])).astype(np.float64) for m in members]
    mean_logit = np.mean([np.log(p) - np.log1p(-p) for p in singles], axis=0)
    np.testing.assert_allclose(ensemble, 1 / (1 + np.exp(-mean_logit)), atol=2e-5)

    by_model, by_files = scores_of_model_and_of_its_masks(
        files[0], data / "images", data, tmp_path, evaluate_options=("--split", "all")
    )
    capsys.readouterr()
    assert by_files == by_model and len(by_model) == 6
    assert json.loads((tmp_path / "files" / "summary.json").read_text())["failures"] == []

    client = TestClient(create_app(members[0], "cpu"))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    (served,) = client.post("/api/image", content=buffer.getvalue()).json()["masks"]
    served = np.asarray(Image.open(io.BytesIO(base64.b64decode(served))))
    np.testing.assert_array_equal(served > 0, tiled.predict(image) > 0)


def test_the_models_command_lists_the_detail_models_in_aligned_columns(capsys):
    assert cli_main(["models", "hrmedseg_*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == hrmedseg.list_models("hrmedseg_*")
    assert len({line.index("%") for line in lines[1:]}) == 1  # one column, whatever the name's length

"""hrmedseg_sam_detail: the promptable model with the detail path, from its config to the page."""

import dataclasses
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from helpers import SHALLOW, zero_init_unfrozen
from PIL import Image

from hrmedseg import HRMedSegSAMDetail, Predictor, create_model, get_model_config, load_model, save_model
from hrmedseg.cli import main as cli_main
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.data.transforms import image_to_tensor, normalize
from hrmedseg.errors import ConfigError
from hrmedseg.losses import SegmentationLoss
from hrmedseg.serve.app import create_app
from hrmedseg.training.config import TrainConfig
from hrmedseg.training.engine import train


def sam_detail_model(size=64, seed=0, **options):
    """A tiny model whose full-resolution head and box-region prompt already contribute (both
    start at zero)."""
    torch.manual_seed(seed)
    return zero_init_unfrozen(create_model("hrmedseg_sam_detail_t", img_size=size, **options), seed).eval()


def test_the_registered_model_is_the_region_model_with_the_detail_path():
    detail, region = get_model_config("hrmedseg_sam_detail_b"), get_model_config("hrmedseg_sam_region_b")
    automatic = get_model_config("hrmedseg_detail_b")
    assert detail.box_region_prompt and detail.deep_supervision == 0.0
    path = ("detail", "detail_chans", "detail_head_dim", "detail_half_res_block", "detail_stem_blocks")
    assert {f: getattr(detail, f) for f in path} == {f: getattr(automatic, f) for f in path}
    unchanged = dataclasses.replace(
        detail, name=region.name, arch=region.arch, **{f: getattr(region, f) for f in path}
    )
    assert unchanged == region
    assert type(create_model("hrmedseg_sam_detail_t")) is HRMedSegSAMDetail


@pytest.mark.parametrize(
    "options, message",
    [
        ({"detail": ()}, "need at least one detail component"),
        ({"deep_supervision": 0.4}, "deep_supervision must be >= 0 and only set for hrmedseg_detail"),
        ({"num_classes": 2}, "class-agnostic"),
    ],
)
def test_configs_it_cannot_run_are_refused_by_name(options, message):
    with pytest.raises(ConfigError, match=message):
        create_model("hrmedseg_sam_detail_t", **options)


def test_the_embedding_carries_the_stem_maps_and_the_head_starts_from_the_quarter_logits():
    torch.manual_seed(0)
    model = create_model("hrmedseg_sam_detail_t", img_size=(64, 96)).eval()
    images = torch.randn(2, 3, 64, 96)
    boxes = torch.tensor([[4.0, 4.0, 40.0, 50.0], [10.0, 0.0, 90.0, 30.0]])
    with torch.no_grad():
        embedding = model.embed(images)
        assert {k: tuple(v.shape) for k, v in embedding.items()} == {
            "image_embeddings": (2, 256, 4, 6),
            "detail_half": (2, 16, 32, 48),
            "detail_quarter": (2, 32, 16, 24),
        }
        out = model.decode(**embedding, image_size=(64, 96), boxes=boxes)
        # The head's weights start at zero: training begins from the upsampled 1/4 logits.
        upsampled = F.interpolate(out["low_res_logits"], size=(64, 96), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out["masks"], upsampled)
        zero_init_unfrozen(model)
        out = model.decode(**embedding, image_size=(64, 96), boxes=boxes)
    assert (out["masks"] - upsampled).abs().amax() > 0.1


def test_a_box_prompted_model_learns_one_pixel_lines_that_the_quarter_grid_cannot_draw():
    """Images with 1-px bright vertical lines, a box around the whole image as the prompt, the
    lines as the target. A perfect 1/4-grid model scores Dice 0 here (the grid cannot hold them);
    the detail model, trained for a few dozen steps, draws them."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 64, 64, generator=gen) * 0.1
    masks = torch.zeros(8, 64, 64, dtype=torch.long)
    for i in range(8):
        masks[i, :, torch.randperm(64, generator=gen)[:6]] = 1
    images = images + 2.0 * masks.unsqueeze(1).float()
    ceiling = F.interpolate(F.avg_pool2d(masks.unsqueeze(1).float(), 4), size=(64, 64), mode="bilinear") > 0.5
    assert ceiling.sum() == 0
    boxes = torch.tensor([[0.0, 0.0, 63.0, 63.0]]).expand(8, -1)

    torch.manual_seed(0)
    model = create_model("hrmedseg_sam_detail_t", img_size=64, drop_path_rate=0.0, **SHALLOW).train()
    loss_fn = SegmentationLoss(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = loss_fn(model(images, boxes=boxes, multimask_output=False)["masks"], masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = model.eval()(images, boxes=boxes, multimask_output=False)["masks"][:, 0] > 0
    dice = 2 * (predicted & (masks > 0)).sum() / (predicted.sum() + masks.sum())
    assert dice > 0.8, dice


def test_the_predictor_returns_the_full_resolution_masks():
    model = sam_detail_model()
    predictor = Predictor(model, device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)  # the input size
    predictor.set_image(image)
    box = np.array([8.0, 10.0, 50.0, 60.0])
    logits, scores, low_res = predictor.predict(box=box, return_logits=True)
    tensor = normalize(
        image_to_tensor(image / 255.0, (64, 64)), model.config.pixel_mean, model.config.pixel_std
    )
    with torch.no_grad():
        expected = model(tensor[None].float(), boxes=torch.as_tensor(box[None], dtype=torch.float32))
    np.testing.assert_allclose(logits, expected["masks"][0].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scores, expected["iou_predictions"][0].numpy(), rtol=1e-4, atol=1e-5)
    upsampled = F.interpolate(torch.from_numpy(low_res)[None], size=(64, 64), mode="bilinear")[0].numpy()
    assert np.abs(logits - upsampled).max() > 0.1  # not the 1/4 logits stretched
    # Several images in one batch equal one at a time, and a larger image gets its own size.
    other = np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    batched = predictor.predict_batch([image, other], boxes=[box[None], box[None]], return_logits=True)
    np.testing.assert_allclose(batched[0][0][0], logits, rtol=1e-4, atol=1e-4)
    predictor.set_image(other)
    np.testing.assert_allclose(batched[1][0][0], predictor.predict(box=box, return_logits=True)[0], atol=1e-4)


def test_it_trains_with_prompts_saves_loads_evaluates_and_serves(tmp_path, capsys):
    data = make_synthetic_dataset(tmp_path / "data", num_images=12, size_range=(60, 90))
    config = TrainConfig(
        data=str(data), output=str(tmp_path / "run"), model="hrmedseg_sam_detail_t", img_size=64, epochs=2,
        batch_size=4, num_workers=0, prompts={"other_objects": True},
    )  # fmt: skip
    result = train(config, progress=False)
    model = load_model(result["best"])
    assert type(model) is HRMedSegSAMDetail and model.config.name == "hrmedseg_sam_detail_t"
    restored = load_model(save_model(model, tmp_path / "again.safetensors"))
    images = torch.randn(1, 3, 64, 64)
    boxes = torch.tensor([[5.0, 5.0, 40.0, 50.0]])
    with torch.no_grad():
        assert torch.equal(restored(images, boxes=boxes)["masks"], model(images, boxes=boxes)["masks"])

    argv = ["evaluate", "--checkpoint", str(result["best"]), "--data", str(data), "--prompts", "box",
            "--output", str(tmp_path / "eval"), "--device", "cpu"]  # fmt: skip
    assert cli_main(argv) == 0
    capsys.readouterr()
    assert (tmp_path / "eval" / "summary.json").exists()

    client = TestClient(create_app(model, "cpu"))
    image = (np.random.default_rng(2).random((70, 50, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    opened = client.post("/api/image", content=buffer.getvalue(), headers={"x-filename": "a.png"}).json()
    answer = client.post("/api/decode", json={"session": opened["session"], "box": [5, 5, 40, 60]})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["masks"]) == 3

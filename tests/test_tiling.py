"""Sliding-window prediction: MONAI's numbers, windows that cover the image, detail kept at the
image's own resolution, and the command-line flags."""

import numpy as np
import pytest
import torch
from helpers import ThresholdModel
from monai.inferers import sliding_window_inference
from PIL import Image
from torch import nn

import hrmedseg
from hrmedseg import Segmenter
from hrmedseg.cli import main as cli_main
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.inference.segmenter import sliding_window_logits
from hrmedseg.inference.tiling import Tiling, blend_weights, window_starts

CPU = torch.device("cpu")


class BatchRecorder(nn.Module):
    """A small convolutional network that records the batch size of every call."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 2, 5, padding=2), nn.Tanh(), nn.Conv2d(2, 2, 3, padding=1))
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(len(x))
        return self.net(x)


@pytest.mark.parametrize("size", [(100, 150), (64, 64), (40, 90), (129, 65)])
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_blended_logits_equal_monais_sliding_window_inference(size, blend, overlap):
    model = BatchRecorder()
    image = torch.randn(3, *size, generator=torch.Generator().manual_seed(1))
    ours = sliding_window_logits(
        model, image, (64, 64), tiling=Tiling(overlap, blend), batch_size=3, device=CPU
    )
    with torch.no_grad():
        reference = sliding_window_inference(
            image[None], (64, 64), 3, model.net, overlap=overlap, mode=blend
        )[0]
    assert ours.shape == (2, *size)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
    assert max(model.batches) <= 3  # never more than one batch of windows at a time


def test_window_starts_cover_the_axis_and_end_at_its_edge():
    assert window_starts(64, 64, 0.25) == [0]
    assert window_starts(100, 64, 0.25) == [0, 36]  # step 48; the last window is moved back
    assert window_starts(200, 64, 0.5) == [0, 32, 64, 96, 128, 136]
    for length in range(64, 300, 7):
        starts = window_starts(length, 64, 0.25)
        assert starts[-1] == length - 64 and all(
            0 <= b - a <= 48 for a, b in zip(starts, starts[1:], strict=False)
        )


def test_blend_weights_peak_at_the_centre_and_keep_a_floor():
    for blend in ("gaussian", "linear"):
        weights = blend_weights((33, 21), Tiling(blend=blend))
        assert weights[16, 10] == weights.max() and weights.min() >= 1e-3
    linear = blend_weights((5, 1), Tiling(blend="linear"))[:, 0]
    np.testing.assert_allclose(linear, [1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3], rtol=1e-6)  # a tent
    np.testing.assert_array_equal(blend_weights((4, 4), Tiling(blend="constant")), np.ones((4, 4)))
    with pytest.raises(ValueError, match="overlap must be in"):
        Tiling(overlap=1.0)


@pytest.mark.parametrize("blend", ["gaussian", "linear", "constant"])
def test_tiling_keeps_the_detail_that_resizing_loses(blend):
    """A pointwise model tiled over a large image gives exactly its per-pixel answer (blending
    identical values), so a one-pixel line survives; resized to the model size, it vanishes."""
    image = np.zeros((150, 230, 3), dtype=np.float32)
    image[:, 101] = 1.0  # a bright vertical line one pixel wide
    image[40:60, 10:30] = 0.8
    truth = (image.mean(2) > 0.5).astype(np.uint8)
    tiled = Segmenter(ThresholdModel((32, 32)), CPU, batch_size=2, tiling=Tiling(0.25, blend)).predict(image)
    np.testing.assert_array_equal(tiled, truth)
    resized = Segmenter(ThresholdModel((32, 32)), CPU).predict(image)
    assert resized.shape == truth.shape and resized[:, 101].sum() == 0


def test_cli_predict_and_evaluate_tile_large_images(tmp_path, capsys):
    data = make_synthetic_dataset(tmp_path / "data", num_images=6, size_range=(90, 140))
    model = hrmedseg.save_model(hrmedseg.create_model("hrmedseg_t", img_size=64), tmp_path / "m.safetensors")
    predict = ["predict", "--checkpoint", str(model), "--input", str(data / "images"), "--quiet"]
    assert cli_main([*predict, "--output", str(tmp_path / "tiled"), "--tile", "--overlap", "0.5",
                     "--blend", "linear", "--probabilities"]) == 0  # fmt: skip
    for path in sorted((data / "images").iterdir()):
        with Image.open(path) as img:
            assert np.load(tmp_path / "tiled" / f"{path.stem}_prob.npy").shape == (1, img.height, img.width)
    evaluate = ["evaluate", "--checkpoint", str(model), "--data", str(data), "--split", "all", "--quiet"]
    assert cli_main([*evaluate, "--output", str(tmp_path / "ev"), "--tile"]) == 0
    capsys.readouterr()

    sam = hrmedseg.save_model(
        hrmedseg.create_model("hrmedseg_sam_t", img_size=64), tmp_path / "sam.safetensors"
    )
    out = str(tmp_path / "o")
    for argv, message in (
        ([*predict, "--output", out, "--overlap", "0.5"], "--overlap and --blend set up --tile"),
        (["predict", "--onnx", str(tmp_path / "m.onnx"), "--input", str(data), "--output", out,
          "--prompts", str(data)], "prompts need an HRMedSegSAM checkpoint; an ONNX graph runs"),
        ([*evaluate[:2], str(sam), *evaluate[3:], "--output", str(tmp_path / "e2"), "--tile",
          "--overlap", "0.5"], "--overlap and --blend are for automatic models"),
        ([*predict, "--output", out, "--tile", "--overlap", "1.5"], "overlap must be in [0, 1)"),
        ([*predict, "--output", out, "--zoom", "2"], "--zoom is for HRMedSegSAM models decoding in windows"),
        (["predict", "--onnx", str(tmp_path / "m.onnx"), "--input", str(data), "--output", out,
          "--zoom", "2"],
         "decoding in windows; this is an ONNX graph"),
        ([*evaluate[:2], str(sam), *evaluate[3:], "--output", str(tmp_path / "e3"), "--zoom", "2"],
         "zoomed windows need a prompt window"),
        ([*evaluate[:2], str(sam), *evaluate[3:], "--output", str(tmp_path / "e4"), "--tile", "--zoom", "3"],
         "the largest zoom must be a power of two (1, 2, 4, ...), got 3"),
    ):  # fmt: skip
        assert cli_main(argv) == 2
        assert message in capsys.readouterr().err
    zoomed = [*evaluate[:2], str(sam), *evaluate[3:], "--output", str(tmp_path / "e5"), "--tile"]
    assert cli_main([*zoomed, "--zoom", "4"]) == 0
    assert "small objects' windows enlarged up to 4x" in (tmp_path / "e5" / "summary.md").read_text()

"""Training at the images' own resolution (``input_scale: native``): random windows, tiled
validation, and prediction that tiles by default."""

import numpy as np
import pytest
import torch

import hrmedseg
from hrmedseg.cli import main as cli_main
from hrmedseg.data import find_dataset
from hrmedseg.data.dataset import SegmentationDataset, random_window
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.errors import ConfigError
from hrmedseg.evaluation.evaluate import evaluate
from hrmedseg.inference.options import SegmenterOptions
from hrmedseg.inference.tiling import Tiling
from hrmedseg.training.config import TrainConfig, load_config
from hrmedseg.training.engine import train

FILL = (0.25, 0.5, 0.75)


def numbered_image(height: int, width: int) -> torch.Tensor:
    """A (3, H, W) image whose every pixel is unique, so a window's position can be read off it."""
    return torch.arange(3 * height * width, dtype=torch.float32).view(3, height, width)


def test_a_window_is_a_crop_of_the_image_at_its_own_resolution():
    image, mask = numbered_image(50, 70), torch.zeros(50, 70, dtype=torch.long)
    positions = set()
    for seed in range(40):
        torch.manual_seed(seed)
        window, window_mask = random_window(image, mask, (32, 24), fill=FILL, foreground=0.0)
        assert window.shape == (3, 32, 24) and window_mask.shape == (32, 24)
        top, left = divmod(int(window[0, 0, 0]), 70)
        assert torch.equal(window, image[:, top : top + 32, left : left + 24])
        positions.add((top, left))
    assert len(positions) > 30  # anywhere, not a fixed crop
    assert max(t for t, _ in positions) <= 50 - 32 and max(x for _, x in positions) <= 70 - 24


def test_a_smaller_image_is_padded_with_the_fill_and_background():
    image, mask = numbered_image(20, 30), torch.ones(20, 30, dtype=torch.long)
    window, window_mask = random_window(image, mask, (32, 32), fill=FILL, foreground=0.5)
    # 12 rows (6 above, 6 below) and 2 columns (1 each side) of padding; the image in the middle
    assert torch.equal(window[:, 6:26, 1:31], image)
    assert torch.equal(window_mask[6:26, 1:31], mask)
    assert window_mask.sum() == mask.sum()
    for channel, value in enumerate(FILL):
        assert (window[channel, :6] == value).all() and (window[channel, :, 0] == value).all()


def test_foreground_windows_contain_the_foreground():
    image = torch.zeros(3, 200, 200)
    mask = torch.zeros(200, 200, dtype=torch.long)
    mask[190, 3] = 1  # one foreground pixel near a corner: a uniform window would rarely hold it
    hits = {True: 0, False: 0}
    for seed in range(60):
        torch.manual_seed(seed)
        hits[True] += int(random_window(image, mask, (32, 32), fill=FILL, foreground=1.0)[1].sum())
        torch.manual_seed(seed)
        hits[False] += int(random_window(image, mask, (32, 32), fill=FILL, foreground=0.0)[1].sum())
    assert hits[True] == 60
    assert hits[False] < 10


@pytest.fixture(scope="module")
def mixed_sizes(tmp_path_factory):
    """Images from 40 to 150 pixels a side: smaller and larger than the 64-pixel model."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("mixed"), num_images=15, size_range=(40, 150))


def test_dataset_windows_are_seeded_per_epoch_and_whole_images_keep_their_size(mixed_sizes):
    samples = list(find_dataset(mixed_sizes).samples.values())
    stats = {"pixel_mean": (0.5,) * 3, "pixel_std": (0.25,) * 3}
    windows = SegmentationDataset(
        samples, (64, 64), num_classes=1, **stats, sampling="window", foreground=0.33
    )
    large = next(i for i, s in enumerate(samples) if min(hrmedseg.data.read_image(s.image).shape[:2]) > 80)
    first = windows[large]
    assert first["image"].shape == (3, 64, 64) and first["mask"].shape == (64, 64)
    assert torch.equal(windows[large]["image"], first["image"])  # the same (seed, epoch, index)
    windows.set_epoch(1)
    assert not torch.equal(windows[large]["image"], first["image"])

    whole = SegmentationDataset(samples, (64, 64), num_classes=1, **stats, sampling="whole")
    for index, sample in enumerate(samples[:4]):
        height, width = hrmedseg.data.read_image(sample.image).shape[:2]
        assert whole[index]["image"].shape == (3, height, width)
    with pytest.raises(ValueError, match="not augmented"):
        SegmentationDataset(
            samples,
            (64, 64),
            num_classes=1,
            **stats,
            augmentation=hrmedseg.data.AugmentConfig(),
            sampling="whole",
        )


def test_native_training_validates_tiled_and_its_model_predicts_tiled(tmp_path, mixed_sizes):
    config = TrainConfig(
        data=str(mixed_sizes), output=str(tmp_path / "run"), model="hrmedseg_t", img_size=64,
        input_scale="native", epochs=2, batch_size=4, lr=3e-3, num_workers=0,
    )  # fmt: skip
    result = train(config, progress=False)
    model = hrmedseg.load_model(result["best"])
    assert model.config.input_scale == "native"

    # Validation Dice is what tiled evaluation of the best weights gives on the val split.
    summary = evaluate(
        result["best"],
        mixed_sizes,
        tmp_path / "eval",
        split="val",
        options=SegmenterOptions(device="cpu"),
        progress=False,
    )
    assert summary["tiling"]["overlap"] == Tiling().overlap
    assert result["best_dice"] == pytest.approx(summary["mean"]["dice"]["mean"], abs=1e-4)

    segmenter = hrmedseg.Segmenter(model, device="cpu")
    assert segmenter.tiling == Tiling() and segmenter.images_per_batch == 1  # tiled: one image at a time
    image = np.random.default_rng(0).random((90, 130, 3)).astype(np.float32)
    explicit = hrmedseg.Segmenter(model, device="cpu", tiling=Tiling())
    assert np.array_equal(segmenter.predict(image), explicit.predict(image))
    wider = hrmedseg.Segmenter(model, device="cpu", tiling=Tiling(overlap=0.5))
    assert wider.tiling.overlap == 0.5  # an explicit tiling is kept


def test_input_scale_is_checked_and_reaches_the_config_from_the_command_line(tmp_path, mixed_sizes):
    with pytest.raises(ConfigError, match="input_scale must be one of"):
        hrmedseg.create_model("hrmedseg_t", img_size=64, input_scale="cropped")
    with pytest.raises(ConfigError, match="foreground_windows must be in"):
        TrainConfig(foreground_windows=1.5)

    run = tmp_path / "run"
    argv = ["train", "--data", str(mixed_sizes), "--output", str(run), "--model", "hrmedseg_t",
            "--img-size", "64", "--epochs", "1", "--batch-size", "4", "--num-workers", "0",
            "--input-scale", "native", "--quiet"]  # fmt: skip
    assert cli_main(argv) == 0
    assert load_config(run / "config.yaml").input_scale == "native"
    assert hrmedseg.load_model(run / "best.safetensors").config.input_scale == "native"


def test_command_line_input_scales_are_the_model_configs(capsys):
    """The command line spells the choices out (it parses before importing PyTorch)."""
    from hrmedseg.modeling.config import INPUT_SCALES

    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    assert "--input-scale {" + ",".join(INPUT_SCALES) + "}" in capsys.readouterr().out

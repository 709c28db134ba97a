"""Dataset folders: both layouts, splits, preprocessing, and every bad-input error."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import hrmedseg
from hrmedseg.data import (
    DataError,
    SegmentationDataset,
    check_samples,
    find_dataset,
    make_split,
    read_image,
    read_mask,
)
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.data.transforms import AugmentConfig

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _write(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_folder_layout_with_split(tmp_path):
    root = make_synthetic_dataset(tmp_path / "d", num_images=10)
    index = find_dataset(root)
    assert index.layout == "folder"
    assert len(index.samples) == 10
    assert sorted(sum(index.split.values(), [])) == sorted(index.samples)


def test_authors_layout(tmp_path):
    root = tmp_path / "isic"
    for i in range(4):
        _write(root / "image_1024" / f"ISIC_{i}.png", np.full((32, 48, 3), 100, np.uint8))
        _write(root / "mask_1024" / f"ISIC_{i}.png", np.zeros((32, 48), np.uint8))
    (root / "isic_data_split.json").write_text(
        json.dumps({"train": ["ISIC_0.png", "ISIC_1.png"], "valid": ["ISIC_2.png"], "test": ["ISIC_3.png"]})
    )
    index = find_dataset(root)
    assert index.layout == "authors"
    assert index.split == {"train": ["ISIC_0", "ISIC_1"], "val": ["ISIC_2"], "test": ["ISIC_3"]}


def test_image_formats_and_bit_depths(tmp_path):
    grey16 = (np.arange(12 * 10).reshape(12, 10) * 100).astype(np.uint16)
    _write(tmp_path / "g16.png", grey16)
    rgba = np.zeros((12, 10, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 7
    _write(tmp_path / "rgba.png", rgba)
    _write(tmp_path / "grey.bmp", np.full((12, 10), 51, np.uint8))
    _write(tmp_path / "rgb.jpg", np.full((12, 10, 3), 200, np.uint8))
    Image.fromarray(grey16).save(tmp_path / "g16.tif")

    g16 = read_image(tmp_path / "g16.png")
    assert g16.shape == (12, 10, 3) and g16.min() == 0.0 and g16.max() == 1.0
    np.testing.assert_allclose(read_image(tmp_path / "g16.tif"), g16)
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png")[0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(read_image(tmp_path / "grey.bmp")[0, 0], [0.2, 0.2, 0.2])
    assert abs(read_image(tmp_path / "rgb.jpg")[0, 0, 0] - 200 / 255) < 0.02

    palette = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette.save(tmp_path / "index.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "index.png"), [[0, 1], [2, 1]])


def test_generated_split_is_deterministic_and_complete():
    stems = [f"c{i}" for i in range(23)]
    a, b = make_split(stems, seed=3), make_split(list(reversed(stems)), seed=3)
    assert a == b
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(stems)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (16, 2, 5)
    assert make_split(stems, seed=4) != a


def _pair(root, stem, image, mask):
    _write(root / "images" / f"{stem}.png", image)
    _write(root / "masks" / f"{stem}.png", mask)


def test_every_bad_input_is_reported_by_file(tmp_path):
    root = tmp_path / "bad"
    img = np.zeros((20, 30, 3), np.uint8)
    _pair(root, "good", img, np.zeros((20, 30), np.uint8))
    _pair(root, "wrong_size", img, np.zeros((21, 30), np.uint8))
    _pair(root, "bad_values", img, np.full((20, 30), 5, np.uint8))
    _pair(root, "truncated", img, np.zeros((20, 30), np.uint8))
    data = (root / "images" / "truncated.png").read_bytes()
    (root / "images" / "truncated.png").write_bytes(data[: len(data) // 2])
    index = find_dataset(root)
    with pytest.raises(DataError) as err:
        check_samples(list(index.samples.values()), num_classes=3)
    message = str(err.value)
    assert "3 problem(s)" in message
    assert "wrong_size.png: mask is 30x21 but its image is 30x20" in message
    assert "bad_values.png: mask values [5] outside 0..2 (num_classes=3)" in message
    assert "truncated.png: unreadable or truncated image" in message
    assert "good.png" not in message
    check_samples([index.samples["bad_values"]], num_classes=1)  # binary: any non-zero is foreground


def test_unmatched_files_and_bad_splits_are_named(tmp_path):
    root = tmp_path / "d"
    img, mask = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)
    _pair(root, "a", img, mask)
    _write(root / "images" / "lonely.png", img)
    _write(root / "masks" / "orphan.png", mask)
    with pytest.raises(DataError) as err:
        find_dataset(root)
    assert "lonely.png: no mask with stem 'lonely'" in str(err.value)
    assert "orphan.png: no image with stem 'orphan'" in str(err.value)

    (root / "images" / "lonely.png").unlink()
    (root / "masks" / "orphan.png").unlink()
    (root / "split.json").write_text(json.dumps({"train": ["a", "ghost"], "val": []}))
    with pytest.raises(DataError, match="1 stem\\(s\\) with no image: ghost"):
        find_dataset(root)
    _pair(root, "b", img, mask)
    bad_splits = {
        json.dumps(
            {"train": ["a", "b"], "test": ["b"]}
        ): "1 case\\(s\\) in more than one split: b \\(train and test\\)",
        json.dumps({"train": "ab", "test": []}): "split\\(s\\) \\['train'\\] must each be a list of stems",
    }
    for text, message in bad_splits.items():
        (root / "split.json").write_text(text)
        with pytest.raises(DataError, match=message):
            find_dataset(root)
    (root / "split.json").write_bytes(b'{"train": ["\xff"]}')  # not UTF-8
    with pytest.raises(DataError, match="split.json: unreadable JSON"):
        find_dataset(root)
    with pytest.raises(DataError, match="expected images/ and masks/"):
        find_dataset(tmp_path)


def test_dataset_items_are_preprocessed_and_binarised(tmp_path):
    root = make_synthetic_dataset(tmp_path / "d", num_images=3)
    index = find_dataset(root)
    samples = list(index.samples.values())
    dataset = SegmentationDataset(samples, (64, 96), num_classes=1, pixel_mean=MEAN, pixel_std=STD)
    item = dataset[0]
    assert item["image"].shape == (3, 64, 96) and item["mask"].shape == (64, 96)
    assert set(item["mask"].unique().tolist()) <= {0, 1}
    raw = torch.from_numpy(read_image(samples[0].image)).permute(2, 0, 1)
    expected = torch.nn.functional.interpolate(raw[None], (64, 96), mode="bilinear", antialias=True)[0]
    torch.testing.assert_close(item["image"], (expected.clamp(0, 1) - 0.5) / 0.25, atol=1e-5, rtol=1e-5)


def test_augmentation_is_joint_and_reproducible_per_epoch(tmp_path):
    root = make_synthetic_dataset(tmp_path / "d", num_images=2)
    samples = list(find_dataset(root).samples.values())
    aug = AugmentConfig(hflip=1.0, crop_scale=(1.0, 1.0), brightness=0.0, contrast=0.0)
    plain = SegmentationDataset(samples, (64, 64), num_classes=1, pixel_mean=MEAN, pixel_std=STD)[0]
    flipped = SegmentationDataset(
        samples, (64, 64), num_classes=1, pixel_mean=MEAN, pixel_std=STD, augmentation=aug
    )[0]
    torch.testing.assert_close(flipped["image"], plain["image"].flip(-1))
    torch.testing.assert_close(flipped["mask"], plain["mask"].flip(-1))

    random_aug = AugmentConfig(rot90=1.0, crop_scale=(0.5, 1.0), brightness=0.3)
    ds = SegmentationDataset(
        samples, (64, 64), num_classes=1, pixel_mean=MEAN, pixel_std=STD, augmentation=random_aug, seed=7
    )
    first = ds[1]
    torch.manual_seed(123)  # the global RNG must not matter
    torch.testing.assert_close(ds[1]["image"], first["image"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["image"], first["image"])


def test_jpeg_masks_are_binary_without_their_compression_noise(tmp_path):
    """A JPEG mask has noise around every edge (values 1-15 outside, 240-254 inside): read as
    "any non-zero" a drawn disc would gain a halo (Dice 0.96 against itself); halfway it is exact.
    As index masks they are refused: compression changes the indices."""
    yy, xx = np.mgrid[:96, :128]
    disc = (yy - 50) ** 2 + (xx - 60) ** 2 < 30**2
    for name, values, mode in (
        ("grey", disc * 255, "L"),
        ("bright", disc * 200, "L"),
        ("rgb", disc * 255, "RGB"),
    ):
        array = values.astype(np.uint8)
        if mode == "RGB":
            array = np.repeat(array[..., None], 3, axis=2)
        path = tmp_path / "masks" / f"{name}.jpg"
        _write(path, array)
        raw = np.asarray(Image.open(path))
        if name == "grey":
            assert (raw[~disc] > 0).sum() > 100  # the halo "any non-zero" would keep
        np.testing.assert_array_equal(read_mask(path), disc)
        _write(tmp_path / "images" / f"{name}.png", np.zeros((96, 128, 3), np.uint8))
    _write(tmp_path / "masks" / "empty.jpeg", np.zeros((96, 128), np.uint8))
    _write(tmp_path / "images" / "empty.png", np.zeros((96, 128, 3), np.uint8))
    assert not read_mask(tmp_path / "masks" / "empty.jpeg").any()
    samples = list(find_dataset(tmp_path).samples.values())
    check_samples(samples, num_classes=1)
    with pytest.raises(DataError) as err:
        check_samples(samples, num_classes=3)
    assert "4 problem(s)" in str(err.value)
    assert "grey.jpg: a JPEG mask cannot hold class indices (compression changes them; num_classes=3)" in str(
        err.value
    )


def test_exif_orientation_lays_out_pixels_as_viewers_show_them(tmp_path):
    # Stored 30 wide and 20 high, bright on the left; orientation 6 shows it turned 90 degrees
    # clockwise, 20 wide and 30 high, bright at the top.
    stored = np.zeros((20, 30), np.uint8)
    stored[:, :10] = 200
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "turned.png", exif=exif)
    Image.fromarray(stored).save(tmp_path / "mask.png", exif=exif)

    expected = np.rot90(stored, k=-1)  # clockwise
    image = hrmedseg.data.read_image(tmp_path / "turned.png")
    assert image.shape == (30, 20, 3) and hrmedseg.data.io.image_size(tmp_path / "turned.png") == (30, 20)
    np.testing.assert_array_equal(image[..., 0], expected / np.float32(255))
    np.testing.assert_array_equal(hrmedseg.data.read_mask(tmp_path / "mask.png"), expected)


def test_float_images_are_rescaled_by_their_range_and_must_be_finite(tmp_path):
    values = np.array([[100.0, 550.0], [1000.0, 325.0]], np.float32)
    Image.fromarray(values).save(tmp_path / "counts.tif")
    image = hrmedseg.data.read_image(tmp_path / "counts.tif")
    np.testing.assert_allclose(image[..., 0], (values - 100) / 900, rtol=1e-6)

    values[0, 1] = np.nan
    Image.fromarray(values).save(tmp_path / "nan.tif")
    with pytest.raises(hrmedseg.errors.DataError, match=r"nan\.tif: 1 pixel value\(s\) are NaN or infinite"):
        hrmedseg.data.read_image(tmp_path / "nan.tif")
    with pytest.raises(hrmedseg.errors.DataError, match="image: 1 pixel value"):
        hrmedseg.data.io.as_float_rgb(values)


def test_float_masks_hold_indices_or_are_soft_binary(tmp_path):
    Image.fromarray(np.array([[0.0, 1.0], [2.0, 0.0]], np.float32)).save(tmp_path / "index.tif")
    np.testing.assert_array_equal(hrmedseg.data.read_mask(tmp_path / "index.tif"), [[0, 1], [2, 0]])
    Image.fromarray(np.array([[0.0, 0.8], [0.3, 0.5]], np.float32)).save(tmp_path / "soft.tif")
    np.testing.assert_array_equal(hrmedseg.data.read_mask(tmp_path / "soft.tif"), [[0, 1], [0, 1]])

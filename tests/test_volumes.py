"""NIfTI volumes: slice-by-slice prediction on the scan's grid, windowing, 3-D metrics against
MONAI, and bad volumes named by file."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import ThresholdModel
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_surface_dice,
)

import hrmedseg
from hrmedseg import Segmenter
from hrmedseg.cli import main as cli_main
from hrmedseg.data.volumes import read_volume, to_unit_range
from hrmedseg.evaluation.metrics import case_metrics
from hrmedseg.inference.volumes import segment_volume
from hrmedseg.training.config import TrainConfig

SHAPE, SPACING = (40, 48, 6), (0.8, 0.7, 2.5)


def oblique_affine() -> np.ndarray:
    """Voxel spacing SPACING, axes flipped and rotated: a scan that is not in RAS order."""
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.array(SPACING)
    affine[:3, 3] = [12.0, -30.0, 55.0]
    return affine


def write_volume(path, data, affine=None, dtype=np.int16):
    image = nib.Nifti1Image(np.asarray(data).astype(dtype), oblique_affine() if affine is None else affine)
    image.header.set_qform(image.affine, code=1)
    image.header.set_sform(image.affine, code=2)
    nib.save(image, str(path))
    return path


def ct_like(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A volume in Hounsfield-like units (-1000 .. 1000) with a bright ellipsoid, and its mask."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    inside = ((x - 18) / 10) ** 2 + ((y - 25) / 14) ** 2 + ((z - 3) / 3) ** 2 < 1
    volume = np.where(inside, 300, -800) + rng.normal(0, 20, SHAPE)
    return volume, inside.astype(np.uint8)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_slices_along_any_axis_with_a_ct_window(tmp_path, axis):
    volume, _ = ct_like()
    path = write_volume(tmp_path / "ct.nii.gz", volume)
    loaded = read_volume(path)
    assert loaded.spacing == pytest.approx(SPACING)
    slice_shape = tuple(np.delete(np.array(SHAPE), axis))
    segmenter = Segmenter(ThresholdModel(slice_shape), "cpu")
    mask = segment_volume(segmenter, loaded, axis=axis, window=(40.0, 400.0))  # soft tissue: -160 .. 240 HU
    np.testing.assert_array_equal(mask, loaded.data > 40)
    minmax = segment_volume(segmenter, loaded, axis=axis)
    unit = (loaded.data - loaded.data.min()) / (loaded.data.max() - loaded.data.min())
    np.testing.assert_array_equal(minmax, unit > 0.5)


def test_windows_that_are_not_a_finite_level_and_a_positive_width_are_refused(tmp_path, capsys):
    volume, _ = ct_like()
    (tmp_path / "in").mkdir()
    write_volume(tmp_path / "in" / "case_a.nii.gz", volume)
    model = hrmedseg.save_model(hrmedseg.create_model("hrmedseg_t", img_size=32), tmp_path / "m.safetensors")
    for window in (["nan", "400"], ["40", "-400"], ["40", "0"], ["40", "inf"]):
        argv = ["predict", "--checkpoint", str(model), "--input", str(tmp_path / "in"), "--quiet",
                "--output", str(tmp_path / "out"), "--window", *window]  # fmt: skip
        assert cli_main(argv) == 2
        assert "--window needs a finite LEVEL and a finite WIDTH above 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything ran
    with pytest.raises(ValueError, match="volume_window needs a finite LEVEL"):
        TrainConfig(data="d", output="o", volume_window=[float("nan"), 400.0])
    with pytest.raises(ValueError, match="volume_window must be two numbers"):
        TrainConfig(data="d", output="o", volume_window=[40.0])
    with pytest.raises(ValueError, match="the intensity window needs"):
        to_unit_range(np.zeros(3), (0.0, -1.0))


def test_predict_writes_a_mask_on_the_scans_grid(tmp_path):
    volume, _ = ct_like()
    (tmp_path / "in").mkdir()
    write_volume(tmp_path / "in" / "case_a.nii.gz", volume)
    model = hrmedseg.save_model(hrmedseg.create_model("hrmedseg_t", img_size=32), tmp_path / "m.safetensors")
    argv = ["predict", "--checkpoint", str(model), "--input", str(tmp_path / "in"), "--quiet",
            "--output", str(tmp_path / "out"), "--axis", "-1", "--window", "40", "400"]  # fmt: skip
    assert cli_main(argv) == 0
    source = nib.load(str(tmp_path / "in" / "case_a.nii.gz"))
    written = nib.load(str(tmp_path / "out" / "case_a_mask.nii.gz"))
    assert written.shape == SHAPE and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, source.affine)
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(source.affine) == ("A", "L", "I")
    assert int(written.header["qform_code"]) == 1 and int(written.header["sform_code"]) == 2
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1}


def test_3d_metrics_match_monai_in_millimetres():
    rng = np.random.default_rng(3)
    _, truth = ct_like()
    pred = np.roll(truth, 2, axis=0) | (rng.random(SHAPE) > 0.995)
    (row,) = case_metrics(pred.astype(np.uint8), truth, 1, spacing=SPACING)

    def one_hot(mask):
        return torch.from_numpy(np.stack([1 - mask, mask]).astype(np.float32))[None]

    p, t = one_hot(pred.astype(np.uint8)), one_hot(truth)
    assert row["dice"] == pytest.approx(compute_dice(p, t, include_background=False).item(), rel=1e-6)
    hd95 = compute_hausdorff_distance(p, t, percentile=95, spacing=SPACING).item()
    asd = compute_average_surface_distance(p, t, symmetric=True, spacing=SPACING).item()
    assert row["hd95_mm"] == pytest.approx(hd95, rel=1e-5)
    assert row["asd_mm"] == pytest.approx(asd, rel=1e-5)
    nsd = compute_surface_dice(p, t, [2.0], spacing=SPACING).item()
    assert row["nsd_mm"] == pytest.approx(nsd, rel=1e-6)


def test_evaluate_scores_volumes_in_3d_and_names_bad_ones(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for case in ("good_1", "good_2"):
        volume, mask = ct_like(seed=len(case))
        write_volume(data / "images" / f"{case}.nii.gz", volume)
        write_volume(data / "masks" / f"{case}.nii.gz", mask, dtype=np.uint8)
    volume, mask = ct_like()
    write_volume(data / "images" / "four_d.nii.gz", np.stack([volume, volume], -1))
    write_volume(data / "masks" / "four_d.nii.gz", mask, dtype=np.uint8)
    write_volume(data / "images" / "other_shape.nii.gz", volume)
    write_volume(data / "masks" / "other_shape.nii.gz", mask[:, :, :4], dtype=np.uint8)
    write_volume(data / "images" / "not_finite.nii.gz", np.where(mask, np.nan, volume), dtype=np.float32)
    write_volume(data / "masks" / "not_finite.nii.gz", mask, dtype=np.uint8)
    cases = ["good_1", "good_2", "four_d", "other_shape", "not_finite"]
    (data / "split.json").write_text(json.dumps({"test": cases}))
    model = hrmedseg.save_model(hrmedseg.create_model("hrmedseg_t", img_size=32), tmp_path / "m.safetensors")
    argv = ["evaluate", "--checkpoint", str(model), "--data", str(data), "--output", str(tmp_path / "ev")]
    assert cli_main(argv) == 1  # the good volumes are scored, the others named
    err = capsys.readouterr().err
    assert "four_d.nii.gz: a 4-D volume of shape (40, 48, 6, 2); a 3-D volume is expected" in err
    assert "other_shape.nii.gz: mask shape (40, 48, 4) differs from its image's (40, 48, 6)" in err
    assert "not_finite.nii.gz: " in err and "non-finite intensities" in err
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["cases"] == 2 and len(summary["failures"]) == 3
    assert {"dice", "hd95", "nsd", "hd95_mm", "asd_mm", "nsd_mm"} <= set(summary["mean"])
    rows = (tmp_path / "ev" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("case,class,shape,dice") and rows[1].startswith("good_1,1,40x48x6,")

    predict = ["predict", "--checkpoint", str(model), "--input", str(data / "images" / "four_d.nii.gz"),
               "--output", str(tmp_path / "p"), "--quiet"]  # fmt: skip
    assert cli_main(predict) == 2
    assert "a 4-D volume" in capsys.readouterr().err


def volume_dataset(root, cases=("ct_1", "ct_2", "ct_3", "ct_4")):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for seed, case in enumerate(cases):
        volume, mask = ct_like(seed)
        write_volume(root / "images" / f"{case}.nii.gz", volume)
        write_volume(root / "masks" / f"{case}.nii.gz", mask, dtype=np.uint8)
    (root / "split.json").write_text(
        json.dumps({"train": list(cases[:2]), "val": [cases[2]], "test": [cases[3]]})
    )
    return root


def test_training_on_volumes_uses_their_slices_split_by_volume(tmp_path):
    from hrmedseg.training.config import TrainConfig
    from hrmedseg.training.engine import train

    data = volume_dataset(tmp_path / "data")
    config = TrainConfig(
        data=str(data), output=str(tmp_path / "run"), model="hrmedseg_t", img_size=32, epochs=1, batch_size=4,
        num_workers=0, volume_window=[40.0, 400.0], empty_slice_share=0.5,
    )  # fmt: skip
    train(config, progress=False)
    slices = tmp_path / "run" / "slices"
    split = json.loads((slices / "split.json").read_text())
    for name, cases in (("train", ["ct_1", "ct_2"]), ("val", ["ct_3"]), ("test", ["ct_4"])):
        assert {stem.rsplit("_s", 1)[0] for stem in split[name]} == set(cases)  # whole volumes per split
    # Every slice with foreground (the ellipsoid spans z = 1..5 of 6) plus empty ones at half that count.
    _, mask = ct_like(0)
    foreground = int(mask.any((0, 1)).sum())
    kept = [s for s in split["train"] if s.startswith("ct_1_")]
    assert len(kept) == foreground + min(mask.shape[2] - foreground, round(0.5 * foreground))
    manifest = json.loads((slices / "slices.json").read_text())
    assert manifest["recipe"]["window"] == [40.0, 400.0] and manifest["volumes"] == 4
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_predicted_mask_volumes_score_as_the_model_that_wrote_them(tmp_path, capsys):
    data = volume_dataset(tmp_path / "data")
    torch.manual_seed(0)
    model = hrmedseg.save_model(hrmedseg.create_model("hrmedseg_t", img_size=32), tmp_path / "m.safetensors")
    window = ["--window", "40", "400"]
    assert cli_main(["predict", "--checkpoint", str(model), "--input", str(data / "images"),
                     "--output", str(tmp_path / "pred"), "--quiet", *window]) == 0  # fmt: skip
    argv = ["evaluate", "--data", str(data), "--split", "all", "--quiet"]
    assert cli_main([*argv, "--checkpoint", str(model), "--output", str(tmp_path / "model"), *window]) == 0
    assert (
        cli_main([*argv, "--predictions", str(tmp_path / "pred"), "--output", str(tmp_path / "files")]) == 0
    )
    capsys.readouterr()
    model_rows, file_rows = ((tmp_path / f / "metrics.csv").read_text() for f in ("model", "files"))
    assert file_rows == model_rows and len(file_rows.splitlines()) == 5  # a header and four volumes
    assert "nsd_mm" in file_rows.splitlines()[0]

    (tmp_path / "pred" / "ct_1_mask.nii.gz").rename(tmp_path / "pred" / "ct_1.nii.gz")  # the other name
    (tmp_path / "pred" / "ct_2_mask.nii.gz").unlink()
    assert cli_main([*argv, "--predictions", str(tmp_path / "pred"), "--output", str(tmp_path / "x")]) == 1
    assert "no prediction for case 'ct_2' (ct_2_mask.nii.gz or ct_2.nii.gz)" in capsys.readouterr().err
    summary = json.loads((tmp_path / "x" / "summary.json").read_text())
    assert summary["cases"] == 3 and summary["num_classes"] == 1


def test_an_empty_volume_sorted_first_is_named_and_the_others_are_segmented(tmp_path, capsys):
    volume, _ = ct_like()
    (tmp_path / "in").mkdir()
    write_volume(tmp_path / "in" / "a_empty.nii.gz", np.zeros((0, 48, 6)))
    write_volume(tmp_path / "in" / "b_case.nii.gz", volume)
    model = hrmedseg.save_model(hrmedseg.create_model("hrmedseg_t", img_size=32), tmp_path / "m.safetensors")
    argv = ["predict", "--checkpoint", str(model), "--input", str(tmp_path / "in"), "--quiet",
            "--output", str(tmp_path / "out")]  # fmt: skip
    assert cli_main(argv) == 1  # done, with a failure named
    assert (tmp_path / "out" / "b_case_mask.nii.gz").is_file()
    assert "a_empty.nii.gz: an empty volume" in capsys.readouterr().err

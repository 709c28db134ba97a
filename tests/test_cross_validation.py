"""Cross-validation folds: a partition of the train and val cases that keeps the test cases and a
scan's slices together, the training run's split, and scoring a fold on its own split file."""

import json

import pytest

from hrmedseg.cli import main as cli_main
from hrmedseg.data.splits import cross_validation_split
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.data.volume_slices import slice_case, slice_stem
from hrmedseg.errors import ConfigError, DataError
from hrmedseg.training.config import TrainConfig

SPLIT = {"train": [f"t{i:02d}" for i in range(17)], "val": ["v0", "v1", "v2"], "test": ["x0", "x1"]}


def test_folds_partition_the_train_and_val_cases_and_keep_the_test():
    folds = [cross_validation_split(SPLIT, 5, k, seed=3) for k in range(5)]
    pool = sorted(SPLIT["train"] + SPLIT["val"])
    held = [f["val"] for f in folds]
    assert sorted(s for part in held for s in part) == pool  # each case validates exactly once
    assert [len(part) for part in held] == [4, 4, 4, 4, 4]
    for f in folds:
        assert sorted(f["train"] + f["val"]) == pool and not set(f["train"]) & set(f["val"])
        assert f["test"] == SPLIT["test"]
    assert folds[2] == cross_validation_split(SPLIT, 5, 2, seed=3)  # the seed fixes the partition
    assert cross_validation_split(SPLIT, 5, 2, seed=4) != folds[2]


def test_a_scans_slices_stay_in_one_fold():
    cases = [f"ct{i}" for i in range(6)]
    slices = {"train": [slice_stem(c, k) for c in cases for k in range(3)], "val": []}
    assert slice_case(slice_stem("ct_10_s", 7)) == "ct_10_s"
    for fold in range(3):
        held = cross_validation_split(slices, 3, fold, seed=0, group=slice_case)["val"]
        assert len(held) == 6 and len({slice_case(s) for s in held}) == 2


@pytest.mark.parametrize("folds, fold", [(1, 0), (3, 3), (3, -1)])
def test_impossible_folds_are_refused(folds, fold):
    with pytest.raises(ConfigError, match="cross-validation needs folds >= 2"):
        TrainConfig(data="d", output="o", folds=folds, fold=fold)
    with pytest.raises(DataError, match="cross-validation needs folds >= 2"):
        cross_validation_split(SPLIT, folds, fold, seed=0)
    with pytest.raises(DataError, match="30 folds need at least 30 cases to validate on; there are 20"):
        cross_validation_split(SPLIT, 30, 0, seed=0)


def test_a_fold_trains_on_its_split_and_is_scored_on_its_split_file(tmp_path, capsys):
    data = make_synthetic_dataset(tmp_path / "data", num_images=12, size_range=(40, 60))
    given = json.loads((data / "split.json").read_text())
    run = tmp_path / "fold1"
    argv = ["train", "--data", str(data), "--output", str(run), "--model", "hrmedseg_t", "--img-size", "32",
            "--epochs", "1", "--batch-size", "4", "--num-workers", "0", "--quiet",
            "--folds", "3", "--fold", "1"]  # fmt: skip
    assert cli_main(argv) == 0
    stored = json.loads((run / "split.json").read_text())
    assert stored == cross_validation_split(given, 3, 1, seed=0)
    assert stored["val"] != given["val"] and stored["test"] == given["test"]

    ev = ["evaluate", "--checkpoint", str(run / "best.safetensors"), "--data", str(data), "--split", "val",
          "--split-file", str(run / "split.json"), "--output", str(tmp_path / "ev"), "--quiet"]  # fmt: skip
    assert cli_main(ev) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["cases"] == len(stored["val"]) and summary["split_file"] == str(run / "split.json")
    assert (
        cli_main([*ev[:-3], "--split-file", str(tmp_path / "nope.json"), "--output", str(tmp_path / "x")])
        == 2
    )
    assert "nope.json: split file not found" in capsys.readouterr().err
    assert cli_main([*argv[:-4], "--fold", "2", "--output", str(tmp_path / "f2")]) == 2
    assert "got fold 2 of 0" in capsys.readouterr().err

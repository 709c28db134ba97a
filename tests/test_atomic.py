"""Every file the package writes goes through one atomic write: a writer that fails half-way (a
full disk, a kill) leaves the previous file whole and no temporary file behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SHALLOW
from PIL import Image

import hrmedseg
from hrmedseg import atomic
from hrmedseg.cli import main as cli_main
from hrmedseg.data.synthetic import make_synthetic_dataset


def test_a_failed_write_keeps_the_previous_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "report.json"
    atomic.write_text(target, "good")

    def fill_half_then_fail(tmp: str) -> None:
        Path(tmp).write_text("trunc")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic.atomic_write(target, fill_half_then_fail)
    assert target.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_nifti_keeps_its_suffix_while_it_is_written(tmp_path):
    names = []
    atomic.atomic_write(tmp_path / "m_mask.nii.gz", lambda tmp: names.append(tmp) or Path(tmp).touch(),
                        keep_suffixes=True)  # fmt: skip
    assert names[0].endswith(".tmp.nii.gz") and (tmp_path / "m_mask.nii.gz").is_file()


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("atomic")
    data = make_synthetic_dataset(root / "data", num_images=6, size_range=(40, 60))
    model = hrmedseg.save_model(hrmedseg.create_model("hrmedseg_t", img_size=32), root / "m.safetensors")
    return model, data


def test_predict_and_evaluate_write_every_file_atomically(model_and_data, tmp_path, monkeypatch):
    """Each output file is the target of a rename from a temporary file: none is written in place."""
    model, data = model_and_data
    renamed = []
    replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda src, dst: renamed.append(Path(dst)) or replace(src, dst))
    predict = ["predict", "--checkpoint", str(model), "--input", str(data / "images"), "--quiet",
               "--output", str(tmp_path / "pred"), "--probabilities", "--overlays"]  # fmt: skip
    evaluate = ["evaluate", "--checkpoint", str(model), "--data", str(data), "--split", "all", "--quiet",
                "--output", str(tmp_path / "eval"), "--overlays"]  # fmt: skip
    assert cli_main(predict) == 0 and cli_main(evaluate) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 6 * 3 + 6 + 3
    assert sorted(written) == sorted(set(renamed))


def test_a_full_disk_while_predicting_keeps_the_previous_masks(model_and_data, tmp_path, monkeypatch, capsys):
    model, data = model_and_data
    argv = ["predict", "--checkpoint", str(model), "--input", str(data / "images"), "--quiet",
            "--output", str(tmp_path), "--probabilities"]  # fmt: skip
    assert cli_main(argv) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full_disk(file, array, *args, **kwargs):
        file.write(b"\x93NUMPY")  # a few bytes of the header, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    capsys.readouterr()
    assert cli_main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "_prob.npy: could not be written (No space left on device)" in message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    np.load(next(tmp_path.glob("*_prob.npy")))  # still whole


def test_export_replaces_a_model_only_when_the_new_one_is_whole(tmp_path, monkeypatch, capsys):
    onnx = pytest.importorskip("onnx")
    shallow = hrmedseg.create_model("hrmedseg_t", img_size=32, **SHALLOW)  # a quicker export
    model = hrmedseg.save_model(shallow, tmp_path / "m.safetensors")
    target = tmp_path / "model.onnx"
    graphs, export = [], torch.onnx.export

    def export_once(*args, **kwargs):  # the second export writes the first's graph: only writing is tested
        if not graphs:
            graphs.append(export(*args, **kwargs))
        return graphs[0]

    monkeypatch.setattr(torch.onnx, "export", export_once)
    assert cli_main(["export", "--checkpoint", str(model), "--output", str(target), "--quiet"]) == 0
    good = target.read_bytes()

    def full_disk(graph, path, *args, **kwargs):
        Path(path).write_bytes(b"\x08\x07")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save", full_disk)
    capsys.readouterr()
    assert cli_main(["export", "--checkpoint", str(model), "--output", str(target), "--quiet"]) == 2
    assert f"{target}: could not be written (No space left on device)" in capsys.readouterr().err
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "model.onnx"]


def test_image_files_are_written_as_png_whatever_the_temporary_name(tmp_path):
    hrmedseg.data.write_mask(tmp_path / "m.png", np.array([[0, 1], [2, 300]]))
    with Image.open(tmp_path / "m.png") as img:
        assert img.format == "PNG" and np.asarray(img).max() == 300


def test_a_folder_where_an_output_file_goes_is_a_failure_and_the_rest_is_written(
    model_and_data, tmp_path, capsys
):
    model, data = model_and_data
    images = sorted((data / "images").iterdir())
    (tmp_path / f"{images[1].stem}.png").mkdir()  # a folder named like the second image's mask
    argv = ["predict", "--checkpoint", str(model), "--input", str(data / "images"), "--quiet",
            "--output", str(tmp_path)]  # fmt: skip
    assert cli_main(argv) == 1  # done, with the failure named
    assert all((tmp_path / f"{p.stem}.png").is_file() for p in images if p != images[1])
    failures = (tmp_path / "failures.txt").read_text()
    assert (
        f"{images[1].stem}.png: something that is not a file (a folder?) is where this output goes"
        in failures
    )
    assert "is where this output goes" in capsys.readouterr().err

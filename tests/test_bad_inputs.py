"""The bad-input corpus: each case builds its fault in a temporary folder, runs the command line
and checks the exit status and the message. Adding a case is adding one line to CASES.

Exit status 2 with one line on stderr naming the path and the problem for anything the user must
fix; 1 when predict or evaluate processed every usable input and some could not be used.
CASES is grouped by family. Faults that need more than one command line are tests below it (a
full disk while training). Other families are tested next to their code:

- image modes, value ranges, float TIFFs, EXIF orientation, overlapping splits: test_data.py;
- prompt files and coordinates, for the CLI and the server alike: test_prompted_inference.py,
  test_serve.py;
- NIfTI volumes (zero-size, --window values): test_volumes.py;
- a full disk or a folder where an output file goes: test_atomic.py;
- model files and their metadata: test_checkpoint.py, test_onnx.py;
- non-finite losses and gradients in training: test_guards.py.
"""

import errno
import json
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

import hrmedseg
from hrmedseg import errors
from hrmedseg.cli import main as cli_main
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.distillation.cache import CacheMismatchError
from hrmedseg.inference import files as prediction_files
from hrmedseg.training.config import TrainConfig
from hrmedseg.training.guards import TrainingDivergedError

TRAIN = ["train", "--model", "hrmedseg_t", "--img-size", "64", "--batch-size", "4", "--epochs", "1",
         "--num-workers", "0", "--quiet"]  # fmt: skip


class Corpus:
    """Everything the cases share: a small dataset, a model file and a training state."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = make_synthetic_dataset(root / "data", num_images=12, size_range=(60, 80))
        self.model = hrmedseg.save_model(
            hrmedseg.create_model("hrmedseg_t", img_size=64), root / "m.safetensors"
        )
        self.state = root / "run" / "last.pt"
        self.state.parent.mkdir()
        torch.save({"epoch": 1}, self.state)

    def copy_data(self, tmp: Path) -> Path:
        return Path(shutil.copytree(self.data, tmp / "data"))

    def images(self, tmp: Path, count: int = 5) -> Path:
        folder = tmp / "images"
        folder.mkdir()
        for path in sorted((self.data / "images").iterdir())[:count]:
            shutil.copy(path, folder)
        return folder

    def a_file(self, tmp: Path) -> Path:
        (tmp / "taken").write_text("not a folder")
        return tmp / "taken"


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height but holds no pixels: an oversized image without
    the memory to build one."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def with_fault(c: Corpus, tmp: Path, stem: str, fault: Callable[[Path], None], kind="images") -> Path:
    data = c.copy_data(tmp)
    fault(data / kind / f"{stem}.png")
    return data


def evaluate_args(c, data, tmp):
    return ["evaluate", "--checkpoint", str(c.model), "--data", str(data), "--split", "all",
            "--output", str(tmp / "ev"), "--quiet"]  # fmt: skip


def predict_args(c, inputs, output):
    return [
        "predict",
        "--checkpoint",
        str(c.model),
        "--input",
        str(inputs),
        "--output",
        str(output),
        "--quiet",
    ]


def mixed_folder(c, tmp):
    folder = c.images(tmp, 5)
    shutil.copy(folder / sorted(p.name for p in folder.iterdir())[0], folder / "broken.png")
    truncate(folder / "broken.png")
    (folder / "notes.png").write_text("this is text")
    return folder


def huge_in_training_data(c, tmp):
    data = c.copy_data(tmp)
    png_header_only(data / "images" / "case_000.png", 20000, 20000)
    return data


CASES = {
    # id: (argv builder (corpus, tmp) -> argv, exit status, text in stderr)
    # Output paths: a file, a folder or an input where an output goes
    "train output is a file": (
        lambda c, t: [*TRAIN, "--data", str(c.data), "--output", str(c.a_file(t))], 2, "exists and is not a folder"),
    "evaluate output is a file": (
        lambda c, t: [*evaluate_args(c, c.data, t)[:-3], "--output", str(c.a_file(t))], 2, "exists and is not a folder"),
    "predict output is a file": (
        lambda c, t: predict_args(c, c.images(t), c.a_file(t)), 2, "exists and is not a folder"),
    "train output under a file": (
        lambda c, t: [*TRAIN, "--data", str(c.data), "--output", str(c.a_file(t) / "run")], 2,
        "cannot create the output folder"),
    "predict output is the input folder": (
        lambda c, t: predict_args(c, (f := c.images(t)), f), 2, "the output folder is the input folder"),
    "predict output is an input file's folder": (
        lambda c, t: predict_args(c, next((f := c.images(t, 1)).iterdir()), f), 2,
        "the output folder is the input folder"),
    "predict output under a file": (
        lambda c, t: predict_args(c, c.images(t), c.a_file(t) / "out"), 2, "cannot create the output folder"),
    "evaluate output under a file": (
        lambda c, t: [*evaluate_args(c, c.data, t)[:-3], "--output", str(c.a_file(t) / "ev")], 2,
        "cannot create the output folder"),
    "inspect output is a folder": (
        lambda c, t: ["inspect", "--data", str(c.data), "--output", str(t)], 2, "is a folder; give a file name"),
    "export output is a folder": (
        lambda c, t: ["export", "--checkpoint", str(c.model), "--output", str(t)], 2, "is a folder; give a file name"),
    "export output under a file": (
        lambda c, t: ["export", "--checkpoint", str(c.model), "--output", str(c.a_file(t) / "m.onnx")], 2,
        "cannot create its folder"),
    "demo output is a file": (
        lambda c, t: ["demo", "--output", str(c.a_file(t)), "--quiet"], 2, "exists and is not a folder"),
    # Images too large to decode
    "huge image in training data": (
        lambda c, t: [*TRAIN, "--data", str(huge_in_training_data(c, t)), "--output", str(t / "run")], 2,
        "case_000.png: 20000x20000 is 400 megapixels, above the limit of 64"),
    "huge image to predict": (
        lambda c, t: predict_args(c, png_header_only(t / "big.png", 20000, 20000), t / "out"), 2,
        "big.png: 20000x20000 is 400 megapixels"),
    "huge image to evaluate": (
        lambda c, t: evaluate_args(c, huge_in_training_data(c, t), t), 1, "case_000.png: 20000x20000"),
    "image above a lowered pixel limit": (
        lambda c, t: [*predict_args(c, c.images(t, 1), t / "out"), "--max-pixels", "100"], 2,
        "above the limit of 0.0001 (--max-pixels)"),
    # Bad data: unreadable, missing, mismatched or non-finite files
    "predict folder with bad files": (
        lambda c, t: predict_args(c, mixed_folder(c, t), t / "out"), 1, "2 input(s) could not be used"),
    "evaluate with a truncated image": (
        lambda c, t: evaluate_args(c, with_fault(c, t, "case_003", truncate), t), 1,
        "case_003.png: unreadable or truncated image"),
    "missing dataset folder": (
        lambda c, t: [*TRAIN, "--data", str(t / "nowhere"), "--output", str(t / "r")], 2, "dataset folder not found"),
    "image without mask": (
        lambda c, t: [*TRAIN, "--data", str(with_fault(c, t, "case_001", Path.unlink, "masks")),
                      "--output", str(t / "r")], 2, "case_001"),
    "mask of another size": (
        lambda c, t: [*TRAIN, "--data", str(with_fault(
            c, t, "case_002", lambda p: Image.new("L", (5, 5)).save(p), "masks")), "--output", str(t / "r")], 2,
        "mask is 5x5 but its image is"),
    "truncated training image": (
        lambda c, t: [*TRAIN, "--data", str(with_fault(c, t, "case_004", truncate)), "--output", str(t / "r")],
        2, "case_004.png: unreadable or truncated image"),
    "empty validation split": (
        lambda c, t: [*TRAIN, "--data", str(empty_val_split(c, t)), "--output", str(t / "r")], 2,
        "the 'val' split is empty"),
    "broken symbolic link among the images": (
        lambda c, t: ["inspect", "--data", str(with_fault(c, t, "case_005", broken_link))], 2,
        "case_005.png: a broken symbolic link (to "),
    "NaN pixel in a training image": (
        lambda c, t: [*TRAIN, "--data", str(with_fault(c, t, "case_006", nan_pixel_tiff)), "--output", str(t / "r")],
        2, "case_006.tif: 1 pixel value(s) are NaN or infinite"),
    # JSON and YAML files we read: split, spacing, meta, config
    "spacing.json of the wrong shape": (
        lambda c, t: ["inspect", "--data", str(with_file(c, t, "spacing.json", "[0.5, 0.5]"))], 2,
        'spacing.json: expected {"<stem>": spacing, ...}, got a JSON list'),
    "spacing that is not a number": (
        lambda c, t: ["inspect", "--data", str(with_file(c, t, "spacing.json", '{"case_000": "fine"}'))], 2,
        "spacing.json: case_000: a spacing must be a positive number or [row, col] of them, got 'fine'"),
    "meta.json without items": (
        lambda c, t: ["inspect", "--data", str(with_file(c, t, "meta.json", '{"items": [1, 2]}'))], 2,
        'meta.json: expected {"items": {"<stem>": {...}}}'),
    "resume with a damaged config.yaml": (
        lambda c, t: ["train", "--resume", "--output", str(damaged_run(c, t, "config.yaml", "model: [x\n : :"))], 2,
        "config.yaml: unreadable config (while parsing"),
    "resume with a config.yaml that is a list": (
        lambda c, t: ["train", "--resume", "--output", str(damaged_run(c, t, "config.yaml", "- a\n- b\n"))], 2,
        "config.yaml: a config must be a mapping of option: value"),
    "config with a word for a number": (
        lambda c, t: train_with_config(c, t, "epochs: ten\n"), 2,
        "cfg.yaml: epochs: expected int, got 'ten'"),
    "config with a list for a number": (
        lambda c, t: train_with_config(c, t, "lr: [0.1]\n"), 2, "cfg.yaml: lr: expected float, got [0.1]"),
    "config with a word in its augment section": (
        lambda c, t: train_with_config(c, t, "augment: {hflip: often}\n"), 2,
        "cfg.yaml: augment: hflip: expected float, got 'often'"),
    "config with a bad model option": (
        lambda c, t: train_with_config(c, t, "model_options: {depths: [2, two]}\n"), 2,
        "cfg.yaml: model_options: depths: expected tuple[int, ...], got [2, 'two']"),
    "config with a bad prompts option": (
        lambda c, t: train_with_config(c, t, "prompts: {other_objects: perhaps}\n"), 2,
        "cfg.yaml: prompts: other_objects: expected bool, got 'perhaps'"),
    "resume with damaged resume changes": (
        lambda c, t: ["train", "--resume", "--output", str(damaged_run(c, t, "resume_changes.yaml", "[1, 2]"))], 2,
        "resume_changes.yaml: damaged"),
    # Model files and training state
    "training state to evaluate": (
        lambda c, t: [*evaluate_args(c, c.data, t)[:2], str(c.state), *evaluate_args(c, c.data, t)[3:]], 2,
        "is training state (torch.save, for --resume), not a model file"),
    "training state as --init-encoder": (
        lambda c, t: [*TRAIN, "--data", str(c.data), "--output", str(t / "r"), "--init-encoder", str(c.state)], 2,
        "is training state"),
    "resume of a folder that holds no run": (
        lambda c, t: ["train", "--resume", "--output", str(t)], 2, "holds no run"),
    "resume of a run without its config": (
        lambda c, t: ["train", "--resume", "--output", str(c.state.parent)], 2, "holds no run (no config.yaml)"),
    "model file not found": (
        lambda c, t: ["predict", "--checkpoint", str(t / "none.safetensors"), "--input", str(t), "--output", str(t / "o")], 2,
        "none.safetensors"),
    # Flags and settings
    "unknown model": (
        lambda c, t: ["train", "--data", str(c.data), "--output", str(t / "r"), "--model", "nope"], 2,
        "unknown model 'nope'"),
    "prompts for a prompt-free model": (
        lambda c, t: [*predict_args(c, c.images(t), t / "o"), "--prompts", str(t)], 2, "prompts are for HRMedSegSAM models"),
    "device that is no device": (
        lambda c, t: [*predict_args(c, c.images(t, 1), t / "o"), "--device", "gpu0"], 2, "--device gpu0: not a device"),
    "CUDA device beyond those present": (
        lambda c, t: [*predict_args(c, c.images(t, 1), t / "o"), "--device", "cuda:63"], 2, "--device cuda:63:"),
    "image size off the patch grid": (
        lambda c, t: [*TRAIN, "--data", str(c.data), "--output", str(t / "r"), "--img-size", "70"], 2,
        "img_size must be positive multiples of 16 (the patch size), got (70, 70)"),
}  # fmt: skip


def with_file(c, tmp, name, text):
    data = c.copy_data(tmp)
    (data / name).write_text(text)
    return data


def broken_link(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.with_name("gone.png"))


def nan_pixel_tiff(path: Path) -> None:
    import numpy as np

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255
    pixels[3, 4] = np.nan
    path.unlink()
    Image.fromarray(pixels, mode="F").save(path.with_suffix(".tif"))


def train_with_config(c, tmp, text):
    (tmp / "cfg.yaml").write_text(text)
    return [*TRAIN, "--data", str(c.data), "--output", str(tmp / "r"), "--config", str(tmp / "cfg.yaml")]


def damaged_run(c, tmp, name, text):
    """A run folder that completed an epoch, with ``name`` damaged (config.yaml written valid first)."""
    run = tmp / "run"
    run.mkdir()
    TrainConfig(data=str(c.data), output=str(run), model="hrmedseg_t", img_size=64).save(run / "config.yaml")
    torch.save({"epoch": 1}, run / "last.pt")
    (run / name).write_text(text)
    return run


def empty_val_split(c, tmp):
    data = c.copy_data(tmp)
    split = json.loads((data / "split.json").read_text())
    split["train"] += split.pop("val")
    split["val"] = []
    (data / "split.json").write_text(json.dumps(split))
    return data


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return Corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case, corpus, tmp_path, capsys):
    build, status, message = CASES[case]
    assert cli_main(build(corpus, tmp_path)) == status
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    if status == 2:
        assert len(err.strip().splitlines()) == 1, err


def test_predict_writes_every_readable_image_and_lists_the_others(corpus, tmp_path, capsys):
    folder = mixed_folder(corpus, tmp_path)
    assert cli_main([*predict_args(corpus, folder, tmp_path / "out"), "--batch-size", "4"]) == 1
    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert len(written) == 5 and "broken.png" not in written
    listed = (tmp_path / "out" / "failures.txt").read_text().splitlines()
    assert [Path(line.split(":")[0]).name for line in listed] == ["broken.png", "notes.png"]
    err = capsys.readouterr().err
    assert "broken.png" in err and "notes.png" in err


def test_evaluate_scores_the_readable_cases_and_names_the_rest(corpus, tmp_path):
    data = with_fault(corpus, tmp_path, "case_003", truncate)
    assert cli_main(evaluate_args(corpus, data, tmp_path)) == 1
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["cases"] == 11 and len(summary["failures"]) == 1 and "case_003" in summary["failures"][0]
    assert (tmp_path / "ev" / "failures.txt").is_file()


def test_user_errors_share_one_base_and_keep_their_builtin_types():
    for error, builtin in (
        (errors.ConfigError, ValueError), (errors.UnknownOptionError, TypeError), (errors.DataError, ValueError),
        (errors.CheckpointError, ValueError), (hrmedseg.CheckpointMismatchError, ValueError),
        (errors.OutputError, ValueError), (errors.WriteError, OSError),
        (errors.InputNotFoundError, FileNotFoundError),
        (errors.MissingDependencyError, ImportError), (TrainingDivergedError, RuntimeError),
        (CacheMismatchError, ValueError),
    ):  # fmt: skip
        assert issubclass(error, errors.HRMedSegError) and issubclass(error, builtin), error


def test_a_bug_keeps_its_traceback(corpus, tmp_path, monkeypatch):
    """Only user errors become one-line exits: an error of the code itself reaches the caller."""

    def broken(*args, **kwargs):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(prediction_files, "predict_to_folder", broken)
    with pytest.raises(ValueError, match="an internal inconsistency"):
        cli_main(predict_args(corpus, corpus.images(tmp_path, 1), tmp_path / "o"))


def test_a_full_disk_while_training_stops_in_one_line_and_the_run_resumes(
    corpus, tmp_path, monkeypatch, capsys
):
    """The second epoch's training state meets a full disk: the run stops with the file named,
    the first epoch's state is whole, and --resume finishes the run once there is space."""
    run = tmp_path / "run"
    argv = [*TRAIN, "--data", str(corpus.data), "--output", str(run), "--epochs", "2"]
    real_save, saves = torch.save, []

    def full_disk_on_second_state(obj, path, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj:
            saves.append(path)
            if len(saves) == 2:
                Path(path).write_bytes(b"PK\x03\x04")  # a few bytes, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_on_second_state)
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{run / 'last.pt'}: could not be written (No space left on device)" in err
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
    assert not list(run.glob(".*.tmp"))

    monkeypatch.setattr(torch, "save", real_save)
    assert cli_main(["train", "--resume", "--output", str(run), "--quiet"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2


def test_a_model_file_whose_stored_config_has_a_wrong_type_is_refused_by_name(corpus, tmp_path, capsys):
    """The stored config is read through the same declared schema as a training config."""
    from safetensors.torch import load_file, save_file

    from hrmedseg.checkpoint import _read_metadata

    metadata = _read_metadata(corpus.model)
    config = json.loads(metadata["config"])
    config["embed_dim"] = "wide"
    damaged = tmp_path / "m.safetensors"
    save_file(load_file(corpus.model), damaged, metadata={**metadata, "config": json.dumps(config)})
    argv = ["predict", "--checkpoint", str(damaged), "--input", str(corpus.images(tmp_path, 1)),
            "--output", str(tmp_path / "o"), "--quiet"]  # fmt: skip
    assert cli_main(argv) == 2
    assert f"{damaged}: invalid model config: embed_dim: expected int, got 'wide'" in capsys.readouterr().err


def test_config_values_take_their_declared_types_and_api_options_are_checked_too(tmp_path):
    # PyYAML reads 1e-3 (no dot) as a string; the declared float makes it a number.
    (tmp_path / "c.yaml").write_text("lr: 1e-3\naugment: {crop_scale: [0.9, 1]}\nimg_size: [64, 96]\n")
    config = hrmedseg.training.config.load_config(tmp_path / "c.yaml")
    assert config.lr == 0.001 and config.augmentation().crop_scale == (0.9, 1.0)
    assert config.size == (64, 96)
    with pytest.raises(errors.ConfigError, match=r"hrmedseg_t: drop_path_rate: expected float, got 'x'"):
        hrmedseg.create_model("hrmedseg_t", drop_path_rate="x")
    with pytest.raises(errors.ConfigError, match=r"augment: hflip: expected float, got \[1\]"):
        TrainConfig(augment={"hflip": [1]})

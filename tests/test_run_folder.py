"""Resume continues exactly the stored run: other settings are refused, nothing is rewritten."""

import dataclasses
import hashlib
import shutil

import pytest
import yaml
from helpers import run_until_crash
from safetensors.torch import load_file

from hrmedseg import build
from hrmedseg.build import create_model
from hrmedseg.checkpoint import read_model_config
from hrmedseg.cli import main as cli_main
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.training.config import TrainConfig
from hrmedseg.training.engine import train

TINY = {"model": "hrmedseg_t", "img_size": 64, "batch_size": 4, "num_workers": 0}
DEFINING = ("config.yaml", "split.json")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    first = make_synthetic_dataset(root / "a", num_images=16, size_range=(60, 90), with_split=False)
    other = make_synthetic_dataset(root / "b", num_images=10, size_range=(60, 90), seed=1, with_split=False)
    return first, other


def fingerprint(run, names=DEFINING + ("log.csv", "last.pt")):
    return {n: hashlib.sha256((run / n).read_bytes()).hexdigest() for n in names}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, datasets):
    run = tmp_path_factory.mktemp("finished") / "run"
    train(TrainConfig(data=str(datasets[0]), output=str(run), epochs=2, **TINY), progress=False)
    return run


def test_other_settings_are_refused_with_stored_and_given_values(finished_run, datasets, capsys):
    before = fingerprint(finished_run)
    code = cli_main(["train", "--resume", "--output", str(finished_run), "--data", str(datasets[1]),
                     "--lr", "0.5", "--img-size", "128", "--quiet"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"cannot resume {finished_run} with other settings" in err
    assert f"data (stored '{datasets[0].resolve()}', given '{datasets[1].resolve()}')" in err
    assert f"lr (stored {TrainConfig().lr}, given 0.5)" in err and "img_size (stored 64, given 128)" in err
    assert fingerprint(finished_run) == before


def test_a_finished_run_resumed_as_stored_changes_nothing(finished_run, capsys):
    before = fingerprint(finished_run)
    assert cli_main(["train", "--resume", "--output", str(finished_run), "--quiet"]) == 0
    assert "has finished its 2 epochs; nothing to do" in capsys.readouterr().out
    assert fingerprint(finished_run) == before
    assert cli_main(["train", "--resume", "--output", str(finished_run), "--epochs", "1", "--quiet"]) == 2
    assert "epochs (stored 2, given 1)" in capsys.readouterr().err


def test_an_interrupted_run_may_only_grow_and_keeps_its_files(tmp_path, datasets, capsys):
    run = tmp_path / "run"
    config = TrainConfig(data=str(datasets[0]), output=str(run), epochs=3, **TINY)
    run_until_crash(train, config, progress=False)
    defining = fingerprint(run, DEFINING)

    assert cli_main(["train", "--resume", "--output", str(run), "--seed", "7", "--quiet"]) == 2
    assert "seed (stored 0, given 7)" in capsys.readouterr().err
    assert cli_main(["train", "--resume", "--output", str(run), "--epochs", "4", "--quiet"]) == 0
    assert "resuming" in capsys.readouterr().out
    changes = yaml.safe_load((run / "resume_changes.yaml").read_text())
    assert changes == [{"after_epoch": 1, "changes": {"epochs": [3, 4]}}]
    assert fingerprint(run, DEFINING) == defining  # config.yaml still says 3 epochs
    assert len((run / "log.csv").read_text().splitlines()) == 1 + 4
    # a later resume applies the recorded extension
    assert cli_main(["train", "--resume", "--output", str(run), "--quiet"]) == 0
    assert "has finished its 4 epochs" in capsys.readouterr().out


def test_a_moved_run_folder_resumes_and_records_where_it_is(tmp_path, datasets, capsys):
    run = tmp_path / "run"
    run_until_crash(
        train, TrainConfig(data=str(datasets[0]), output=str(run), epochs=2, **TINY), progress=False
    )
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(run, moved)
    shutil.rmtree(run)
    assert cli_main(["train", "--resume", "--output", str(moved), "--quiet"]) == 0
    assert len((moved / "log.csv").read_text().splitlines()) == 1 + 2
    assert not run.exists()  # nothing was written to the old place
    changes = yaml.safe_load((moved / "resume_changes.yaml").read_text())
    assert changes == [{"after_epoch": 1, "changes": {"output": [str(run.resolve()), str(moved.resolve())]}}]


def test_a_resume_continues_the_saved_architecture_after_the_registry_changed(
    tmp_path, datasets, monkeypatch
):
    run = tmp_path / "run"
    config = TrainConfig(data=str(datasets[0]), output=str(run), epochs=2, **TINY)
    run_until_crash(train, config, progress=False)
    saved = load_file(str(run / "last.safetensors"))
    trained_with = read_model_config(run / "last.safetensors")
    # A later release changes what the name builds (here: fewer blocks, so other weights).
    changed = dataclasses.replace(build._REGISTRY["hrmedseg_t"], depths=(1, 1, 1))
    monkeypatch.setitem(build._REGISTRY, "hrmedseg_t", changed)
    assert set(create_model("hrmedseg_t").state_dict()) != set(saved)

    train(config, resume=True, progress=False)
    assert len((run / "log.csv").read_text().splitlines()) == 1 + 2
    assert set(load_file(str(run / "last.safetensors"))) == set(saved)
    assert read_model_config(run / "last.safetensors") == trained_with


def test_a_run_killed_in_its_first_epoch_says_to_start_over(tmp_path, datasets, capsys):
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig(data=str(datasets[0]), output=str(run), **TINY).save(run / "config.yaml")
    assert cli_main(["train", "--resume", "--output", str(run)]) == 2
    err = capsys.readouterr().err
    assert "completed no epoch (no last.pt)" in err and "--overwrite" in err


def test_the_next_run_removes_temporaries_of_an_interrupted_write(finished_run, capsys):
    stale = finished_run / ".last.safetensors.k2j4h1.tmp"  # a kill between write and rename
    stale.write_bytes(b"")
    assert cli_main(["train", "--resume", "--output", str(finished_run), "--quiet"]) == 0
    assert not stale.exists() and (finished_run / "last.safetensors").is_file()


def test_config_yaml_marks_the_fields_without_effect_and_reads_back_unchanged(tmp_path):
    from hrmedseg.training.config import load_config

    cosine = TrainConfig(data="d", output="o", schedule="cosine", num_classes=3)
    cosine.save(tmp_path / "cosine.yaml")
    text = (tmp_path / "cosine.yaml").read_text()
    assert "lr_gamma: 0.98  # unused: the schedule is cosine" in text
    assert "focal_weight: 0.2  # unused: multi-class models use ce_weight" in text
    assert "\nwarmup: 0.05\n" in text and "\nce_weight: 0.2\n" in text
    assert load_config(tmp_path / "cosine.yaml", TrainConfig) == cosine

    TrainConfig(data="d", output="o", schedule="exponential").save(tmp_path / "exp.yaml")
    text = (tmp_path / "exp.yaml").read_text()
    assert "warmup: 0.05  # unused: the schedule is exponential" in text and "\nlr_gamma: 0.98\n" in text

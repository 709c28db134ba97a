"""A run folder's life: a new run claims it, a resumed run continues exactly what it stored.

A new run writes ``config.yaml`` and ``split.json`` once. ``--resume`` never rewrites them: it
compares the options it is given with the stored ones and refuses any difference, except the few
that continue the same run (:data:`RESUMABLE_CHANGES`), which are recorded in
``resume_changes.yaml`` and applied on every later resume.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ..atomic import write_text
from ..build import build_model
from ..checkpoint import read_model_config
from ..errors import ConfigError, OutputError
from ..modeling import SegmentationModel
from ..output import ensure_output_folder, remove_interrupted_writes
from .config import ConfigFile, load_config

ConfigT = TypeVar("ConfigT", bound=ConfigFile)
log = logging.getLogger(__name__)

# Options a resume may change: more epochs, gradient clipping (the remedy for a diverged run),
# where it executes, and where its folder is now (copied to another machine, renamed). Everything
# else defines the run.
RESUMABLE_CHANGES = ("epochs", "clip_grad", "device", "num_workers", "compile", "output")
PATH_FIELDS = ("data", "output", "init_encoder", "teacher_checkpoint", "cache")
CHANGES_FILE = "resume_changes.yaml"


def prepare_output(output: Path, *, resume: bool, overwrite: bool, command: str = "train") -> None:
    """Create the run folder (a new run refuses one that holds a run unless ``overwrite``; a
    resume needs one that does) and remove temporaries of interrupted writes."""
    holds_run = (output / "last.pt").is_file()
    if resume and not holds_run:
        if (output / "config.yaml").is_file():
            raise OutputError(
                f"cannot resume: the run in {output} completed no epoch (no last.pt); start it again "
                f"with `hrmedseg {command} ... --output {output} --overwrite`"
            )
        raise OutputError(f"cannot resume: {output} holds no run (no config.yaml and no last.pt)")
    if not resume and not overwrite and holds_run:
        raise OutputError(f"{output} already holds a run; pass --resume to continue it, "
                          "--overwrite to start over, or choose another --output")  # fmt: skip
    ensure_output_folder(output)
    remove_interrupted_writes(output)


def resumed_model(output: Path) -> SegmentationModel:
    """The model the run in ``output`` trains, built from the config stored in its
    ``last.safetensors`` rather than from the registry: a resume continues the architecture it
    saved, even where the registered model of that name has changed since."""
    return build_model(read_model_config(output / "last.safetensors"))


def _comparable(config: ConfigFile) -> dict[str, Any]:
    """Field values as YAML gives them back, with paths resolved."""
    values = yaml.safe_load(yaml.safe_dump(config.to_dict(), sort_keys=False))
    for name in PATH_FIELDS:
        if values.get(name):
            values[name] = str(Path(values[name]).resolve())
    return values


def stored_config(output: Path, config_class: type[ConfigT]) -> ConfigT:
    """The run's ``config.yaml`` with the changes of earlier resumes applied; a damaged file is
    refused by name."""
    path = output / "config.yaml"
    if not path.is_file():
        raise OutputError(f"cannot resume: {output} holds no run (no config.yaml)")
    config = load_config(path, config_class)  # names the file when it is unreadable or malformed
    changes_file = output / CHANGES_FILE
    if not changes_file.is_file():
        return config
    try:
        entries = yaml.safe_load(changes_file.read_text()) or []
        changes = {name: given for entry in entries for name, (_, given) in entry["changes"].items()}
        return dataclasses.replace(config, **changes)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError, ValueError, AttributeError):
        raise ConfigError(
            f"{changes_file}: damaged (expected a list of {{after_epoch, changes: {{option: [stored, "
            "given]}}); restore it from a copy of the run, or start a new run"
        ) from None


def check_resume(output: Path, given: ConfigFile) -> dict[str, list[Any]]:
    """Refuse a resume whose options differ from the stored run, in one line naming each field
    with its stored and given values. Returns the allowed changes, ``{field: [stored, given]}``."""
    old, new = _comparable(stored_config(output, type(given))), _comparable(given)
    differing = [name for name in old if old[name] != new.get(name)]
    refused = [n for n in differing if n not in RESUMABLE_CHANGES]
    if "epochs" in differing and new["epochs"] < old["epochs"]:
        refused.append("epochs")
    if refused:
        described = "; ".join(f"{n} (stored {old[n]!r}, given {new.get(n)!r})" for n in refused)
        raise OutputError(
            f"cannot resume {output} with other settings: {described}. Resume with the stored "
            "settings (only a larger --epochs, --clip-grad, --device, --num-workers and --compile may "
            "change, and the run folder may have moved), or start a new run in another --output"
        )
    return {n: [old[n], new[n]] for n in differing}


def record_resume_changes(output: Path, changes: dict[str, list[Any]], completed_epochs: int) -> None:
    """Append allowed changes to ``resume_changes.yaml`` (later resumes apply them) and say so."""
    if not changes:
        return
    path = output / CHANGES_FILE
    entries = (yaml.safe_load(path.read_text()) or []) if path.is_file() else []
    entries.append({"after_epoch": completed_epochs, "changes": changes})
    write_text(path, yaml.safe_dump(entries, sort_keys=False))
    described = ", ".join(f"{n} {a!r} -> {b!r}" for n, (a, b) in changes.items())
    log.info("resuming %s after epoch %d with %s (recorded in %s)", output, completed_epochs, described,
             CHANGES_FILE)  # fmt: skip


def write_new_run(output: Path, config: ConfigFile, split: dict[str, list[str]]) -> None:
    """The files that define a new run; a resume never rewrites them."""
    config.save(output / "config.yaml")
    write_text(output / "split.json", json.dumps(split, indent=1))
    (output / CHANGES_FILE).unlink(missing_ok=True)  # left by an overwritten run


def stored_split(output: Path) -> dict[str, list[str]]:
    return json.loads((output / "split.json").read_text())


def settle_run_files(
    output: Path,
    config: ConfigFile,
    *,
    split: dict[str, Any],
    resume: bool,
    changes: dict[str, list[Any]],
    completed_epochs: int,
) -> None:
    """On the main process, once the state is loaded: a new run writes its defining files, a
    resumed one records its allowed changes; a finished run says there is nothing to do."""
    if resume:
        record_resume_changes(output, changes, completed_epochs)
        if "epochs" in changes and getattr(config, "schedule", None) == "cosine":
            old, new = changes["epochs"]
            log.warning(
                "%s: the cosine schedule now spans %d epochs instead of %d, so the learning rate "
                "rises again from where the run had decayed it and decays to the new end",
                output, new, old,
            )  # fmt: skip
    else:
        write_new_run(output, config, split)
    if completed_epochs >= config.epochs:
        log.info("%s has finished its %d epochs; nothing to do (a larger --epochs extends it)",
                 output, config.epochs)  # fmt: skip

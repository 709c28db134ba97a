"""The command line as a newcomer meets it: every option explained with its default, the defaults
shown equal to the ones that run, the reference page current, and the code kept small."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
import sys
from pathlib import Path

import pytest

from hrmedseg.cli import build_parser, reference
from hrmedseg.cli import distill as distill_command
from hrmedseg.cli import train as train_command
from hrmedseg.cli.options import HelpFormatter
from hrmedseg.distillation.engine import DistillConfig
from hrmedseg.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _options(parser: argparse.ArgumentParser):
    required_groups = [g for g in parser._mutually_exclusive_groups if g.required]
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction):
            in_required_group = any(action in g._group_actions for g in required_groups)
            yield action, in_required_group


@pytest.mark.parametrize("command", list(_commands()))
def test_every_option_has_help_and_shows_its_default(command):
    parser = _commands()[command]
    formatter = HelpFormatter(f"hrmedseg {command}")
    for action, in_required_group in _options(parser):
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{command} {name}: no help text"
        if action.nargs == 0 or action.required or in_required_group:
            continue  # a flag, or a value that must be given (argparse's usage line says so)
        rendered = formatter._get_help_string(action)
        assert "default" in rendered or "required" in rendered, f"{command} {name}: no default shown"


@pytest.mark.parametrize(
    ("command", "config_class"), [(train_command, TrainConfig), (distill_command, DistillConfig)]
)
def test_defaults_in_the_help_are_the_ones_that_run(command, config_class):
    """The run options default to None (a --config file's values stand), so the help states the
    config class's defaults in words: they must be the class's."""
    fields = {f.name: f.default for f in dataclasses.fields(config_class)}
    assert {name: fields[name] for name in command.DEFAULTS} == command.DEFAULTS
    name = command.__name__.rsplit(".", 1)[-1]
    for action, _ in _options(_commands()[name]):
        stated = re.search(r"\(default:? ([^\s):;,]+)", action.help or "")
        default = fields.get(action.dest)
        if stated and action.default is None and default not in (None, dataclasses.MISSING):
            assert stated.group(1) == str(default), f"{name} --{action.dest}"


def test_the_reference_page_is_current():
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    written_with = re.search(r"\(Python (\d+\.\d+)\)", page).group(1)
    if written_with != reference.PYTHON:
        pytest.skip(
            f"docs/cli.md was written with Python {written_with}, whose argparse lays out help differently"
        )
    assert page == reference.render(), f"docs/cli.md is stale: {reference.GENERATED_BY}"


def test_cli_modules_stay_small():
    for path in (ROOT / "src" / "hrmedseg" / "cli").glob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= 250, f"{path.name}: {lines} lines; split it by command or option family"


# Callees whose arguments are positional by nature: autograd's apply and save_for_backward,
# containers, logging's format arguments, struct's values, and checkpoint's function arguments.
VARIADIC = {"apply", "save_for_backward", "Sequential", "info", "warning", "pack", "checkpoint"}


def test_no_call_passes_six_or_more_positional_arguments():
    """Long positional lists hide which value is which: past five, name them."""
    offenders = []
    for folder in ("src", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if not isinstance(node, ast.Call) or len(node.args) < 6:
                    continue
                callee = (
                    node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                )
                if callee not in VARIADIC:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {callee}")
    assert not offenders, "calls with 6+ positional arguments:\n" + "\n".join(offenders)


def test_module_entry_point_runs():
    """``python -m hrmedseg.cli`` is what torchrun launches for distributed training."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "hrmedseg.cli", "models", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "usage: hrmedseg models" in done.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "--checkpoint", "m", "--input", "i", "--output", "o", "--batch-size", "0"],
         "argument --batch-size: must be 1 or more, got 0"),
        (["predict", "--checkpoint", "m", "--input", "i", "--output", "o", "--max-pixels", "-5"],
         "argument --max-pixels: must be 0 or more, got -5"),
        (["train", "--output", "o", "--lr", "nan"], "argument --lr: 'nan' is not a finite number"),
        (["train", "--output", "o", "--epochs", "2.5"], "argument --epochs: '2.5' is not an integer"),
        (["train", "--output", "o", "--clip-grad", "0"], "argument --clip-grad: must be above 0, got 0"),
        (["serve", "--checkpoint", "m", "--port", "70000"], "argument --port: must be a port number"),
        (["evaluate", "--checkpoint", "m", "--data", "d", "--output", "o", "--nsd-tolerance", "-1"],
         "argument --nsd-tolerance: must be 0 or more, got -1"),
    ],
)  # fmt: skip
def test_numeric_options_are_checked_when_parsed(argv, message, capsys):
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(argv)
    assert refused.value.code == 2 and message in capsys.readouterr().err

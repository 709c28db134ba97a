"""The declared schemas of the settings we read: each is a dataclass, and its type annotations
are checked at the door.

A training config's YAML, its ``augment``, ``prompts`` and ``model_options`` sections, and the
model config stored in a model file are all read into dataclasses (``TrainConfig``,
``AugmentConfig``, ``PromptConfig``, ``ModelConfig``). :func:`checked_fields` validates a mapping
against such a dataclass's annotations before it is built, so ``epochs: ten`` is refused with the
file and the field named instead of failing later in a comparison. Pydantic does the validation:
it reads every annotation form we use (unions, ``X | None``, ``tuple[int, ...]``, ``list[float]``),
turns YAML's lists into tuples where a tuple is declared and YAML 1.1's ``1e-3`` (a string to
PyYAML) into a float, and refuses a fractional epoch count or a word where a flag belongs.

Only the types are checked here; ranges and choices stay in each dataclass's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError


def checked_fields(cls: type, values: Mapping[str, Any], *, source: str = "") -> dict[str, Any]:
    """``values`` converted to the types ``cls`` declares for them.

    Args:
        cls: a dataclass.
        values: some of its fields by name; names it does not have are left to the caller,
            which names the known ones in its own words.
        source: what the values came from (a file, and a section of it), put before the field's
            name in the message.

    Raises:
        ConfigError: "<source>: <field>: expected <type>, got <value> (<reason>)" for the first
            value of the wrong type.
    """
    from pydantic import ValidationError

    hints = _field_types(cls)
    checked = dict(values)
    for name, value in values.items():
        if name not in hints:
            continue
        try:
            checked[name] = _adapter(hints[name]).validate_python(value)
        except ValidationError as err:
            prefix = f"{source}: " if source else ""
            raise ConfigError(
                f"{prefix}{name}: expected {_type_name(hints[name])}, got {value!r} ({_reason(err)})"
            ) from None
    return checked


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


@functools.cache
def _adapter(annotation: Any):
    from pydantic import TypeAdapter

    return TypeAdapter(annotation)


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _reason(err: Any) -> str:
    """The first of pydantic's reasons, with where in a list or union it applies."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"][0].lower() + first["msg"][1:]
    return f"{where}: {message}" if where else message

"""YAML configuration with typed defaults and ``section.key=value`` command-line overrides.

A config is a two-level mapping (section -> key -> value). Every key must exist in the defaults:
an unknown key in a file or an override is an error naming it, so a typo never silently falls
back to a default.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Mapping, Sequence

import yaml

from ..errors import UsageError
from ..yaml_file import read_yaml


class ConfigError(UsageError, ValueError):
    """A configuration file or override is invalid; the message names the key and the source."""


#: The type a value must have for each key whose default is None (unset): a path or a list.
UNSET_DEFAULT_TYPES: dict[str, type] = {
    "data.conditions": list, "data.cases": list, "model.pretrained": str, "teacher.checkpoint": str,
    "student.k_probabilities": list, "pretrain.encoder_out": str, "train.val_combinations": list,
}
_TYPE_NAMES = {list: "a list", str: "a string (a path)"}


def _check_type(key: str, value: Any, default: Any, source: str) -> Any:
    if default is None:
        expected = UNSET_DEFAULT_TYPES.get(key)
        if value is not None and expected is not None and not isinstance(value, expected):
            raise ConfigError(f"{source}: {key} must be {_TYPE_NAMES[expected]} or null, got {value!r}")
        return value
    if value is None:
        raise ConfigError(f"{source}: {key} is empty (null); give it a value (default {default!r})")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" (no dot) as a string
            value = float(value)
        except ValueError:
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}") from None
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (int, float)) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
    if isinstance(default, int) and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return int(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
    if isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
    return value


def merge(config: dict, updates: Mapping, defaults: Mapping, source: str) -> None:
    """Apply ``updates`` (section -> key -> value) onto ``config`` in place, checking keys and types."""
    for section, values in updates.items():
        if section not in defaults:
            raise ConfigError(f"{source}: unknown section {section!r}; known: {sorted(defaults)}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: section {section!r} must be a mapping")
        for key, value in values.items():
            if key not in defaults[section]:
                raise ConfigError(
                    f"{source}: unknown key {section}.{key}; known keys of {section}: {sorted(defaults[section])}"
                )
            config[section][key] = _check_type(f"{section}.{key}", value, defaults[section][key], source)


def parse_overrides(overrides: Sequence[str]) -> dict:
    """``["train.epochs=5", "data.root=/d"]`` -> ``{"train": {"epochs": 5}, "data": {"root": "/d"}}``."""
    result: dict[str, dict] = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot or not section or not key:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({error})") from error
        result.setdefault(section, {})[key] = value
    return result


def load_config(defaults: Mapping, path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> dict:
    """Defaults, then the YAML file at ``path`` (if any), then the overrides."""
    config = copy.deepcopy(dict(defaults))
    if path is not None:
        loaded = read_yaml(path, ConfigError, "config") or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        merge(config, loaded, defaults, str(path))
    merge(config, parse_overrides(overrides), defaults, "command line")
    return config

"""Reading a YAML file the user names: one error naming the file, whatever went wrong."""

from __future__ import annotations

import os
from typing import Any, Callable

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader``, except that a mapping naming one key twice is an error (PyYAML keeps the last value)."""


def _unique_key_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)):  # unhashable keys are construct_mapping's to refuse
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                    f"found duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_key_mapping)


def read_yaml(path: str | os.PathLike, error: Callable[[str], Exception], what: str) -> Any:
    """The document in the YAML file at ``path`` (None for an empty one); raises ``error(message)``, the
    message naming ``what`` and the file, when the file cannot be read or is not valid YAML (a mapping that
    names a key twice included)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.load(handle, Loader=_UniqueKeyLoader)
    except OSError as cause:
        raise error(f"{what} {path}: cannot be read ({cause.strerror or cause})") from cause
    except UnicodeDecodeError as cause:
        raise error(f"{what} {path}: not a text file (byte {cause.start} is not UTF-8)") from cause
    except yaml.YAMLError as cause:
        raise error(f"{what} {path}: not valid YAML ({' '.join(str(cause).split())})") from cause

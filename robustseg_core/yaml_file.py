"""Reading a YAML file the user names: one error naming the file, whatever went wrong."""

from __future__ import annotations

import os
from typing import Any, Callable

import yaml


def read_yaml(path: str | os.PathLike, error: Callable[[str], Exception], what: str) -> Any:
    """The document in the YAML file at ``path`` (None for an empty one); raises ``error(message)``, the
    message naming ``what`` and the file, when the file cannot be read or is not valid YAML."""
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except OSError as cause:
        raise error(f"{what} {path}: cannot be read ({cause.strerror or cause})") from cause
    except UnicodeDecodeError as cause:
        raise error(f"{what} {path}: not a text file (byte {cause.start} is not UTF-8)") from cause
    except yaml.YAMLError as cause:
        raise error(f"{what} {path}: not valid YAML ({' '.join(str(cause).split())})") from cause

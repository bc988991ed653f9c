"""Console-script entry points: a module's ``main`` returns results for Python callers, and the
console script built from it returns nothing, so the process exits with status 0."""

from __future__ import annotations

from typing import Any, Callable


def console_script(main: Callable[..., Any]) -> Callable[[], None]:
    """Entry point that runs ``main()`` and drops its return value."""

    def entry_point() -> None:
        main()

    entry_point.__doc__ = f"Console script of {main.__module__}.main."
    return entry_point

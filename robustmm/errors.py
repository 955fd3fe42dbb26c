"""Errors the user can fix, and how commands and pipeline stages report them: one message, no traceback.

A bad input or setting stops with `<program>: error: <message>` (the message names the file and the row or
key) and exit status 2. `--debug` (the `robustmm` flag) or ROBUSTMM_DEBUG=1 (also under `dvc repro`) shows
the traceback instead. Any other exception is a bug in robustmm and keeps its traceback.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path


class UserError(ValueError):
    """A problem of the input or the settings, told in words that say which file (and row or key) and what to do.

    A ValueError, so that code catching ValueError around the library's checks keeps working."""


# The library's own checks raise UserError subclasses (FormatError, DatasetError, SettingsError) and, where
# older, ValueError, OSError (a file not found) or RuntimeError (a model or tool that cannot be loaded), each
# with a message that names the file; everything else (TypeError, KeyError, ...) is a bug and keeps its traceback.
USER_ERRORS = (UserError, ValueError, OSError, RuntimeError)
DEBUG_VARIABLE = "ROBUSTMM_DEBUG"


def debug_requested() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def report_errors(program: str, function: Callable[..., int | None], *args, debug: bool = False) -> int:
    """Run `function(*args)`; a user error becomes one line on stderr and exit status 2 (unless debugging)."""
    try:
        return function(*args) or 0
    except USER_ERRORS as error:
        if debug or debug_requested():
            raise
        print(f"{program}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug or debug_requested():
            raise
        print(f"{program}: interrupted", file=sys.stderr)
        return 130


def run_stage(main: Callable[..., None]) -> None:
    """The entry point of a pipeline script (`python pipeline/<stage>.py ARGS`, as dvc.yaml runs it)."""
    program = f"pipeline/{Path(sys.argv[0]).name}"
    names = list(inspect.signature(main).parameters)
    if len(sys.argv) - 1 != len(names):
        print(f"usage: python {program} {' '.join(name.upper() for name in names)}".rstrip(), file=sys.stderr)
        sys.exit(2)
    sys.exit(report_errors(program, main, *sys.argv[1:]))

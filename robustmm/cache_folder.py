"""The user's cache folders for what robustmm builds once per machine (numba kernels, robustmm's CPU kernels)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def user_cache_folder(*parts: str) -> Path:
    """`$XDG_CACHE_HOME/robustmm/<parts>` (default `~/.cache`), created; in the temporary folder when home is
    read-only (a folder of this user's own there too)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base.joinpath("robustmm", *parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()).joinpath(f"robustmm-{os.getuid()}", *parts)
        folder.mkdir(parents=True, exist_ok=True)
    return folder

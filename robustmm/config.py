"""Command settings from a section of a YAML or JSON file (`--config FILE --section NAME`)."""

from __future__ import annotations

from pathlib import Path

import yaml


def read_config_section(path: str | Path | None, section: str) -> dict:
    """The mapping at dotted `section` (e.g. `extract` or `sims.extract`) of a YAML or JSON file; {} without a file."""
    if path is None:
        return {}
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML/JSON: {error}") from None
    node = loaded
    for part in section.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"{path}: no section {section!r}")
        node = node[part]
    if not isinstance(node, dict):
        raise ValueError(f"{path}: section {section!r} is a {type(node).__name__}, expected a mapping")
    return node

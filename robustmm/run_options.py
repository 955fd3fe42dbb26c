"""The choices of how a TFR-Net run computes, kept apart from PyTorch: the settings schema checks params.yaml with
them in every stage, and the stages that never train (extract, assemble, report) then start without importing
PyTorch (2.5 s of each such stage)."""

from __future__ import annotations

TEXT_MODES = ("finetune", "frozen")
# The text target of frozen mode's reconstruction: the encoder's outputs of the complete text, or the file's `text`.
TEXT_TARGETS = ("encoder", "file")
CHECKPOINTING_LEVELS = (True, False, "text-encoder")  # see TFRNet
# auto: the least checkpointing that fits in half the free memory (train.resolve_checkpointing).
CHECKPOINTING = ("auto", *CHECKPOINTING_LEVELS)
# "auto": robustmm.models.kernels where they apply (CPU: attention of heads of up to 8 dimensions, dropout), else
# PyTorch's; "pytorch": PyTorch's always.
KERNELS = ("auto", "pytorch")


def check_checkpointing(value) -> bool | str:
    if value not in CHECKPOINTING or isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"checkpointing {value!r}: expected auto, true, false or text-encoder")
    return value

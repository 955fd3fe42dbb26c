"""What the training tests share: frozen text through the offline encoder, on the CPU, without progress bars."""

from __future__ import annotations

from robustmm.text_encoder import OFFLINE_ENCODER

# robustmm.sweep's keywords.
FAST = {"text_mode": "frozen", "text_encoder": OFFLINE_ENCODER, "device": "cpu", "epochs": 2, "progress": False}
FAST_FLAGS = ("--text-mode", "frozen", "--text-encoder", OFFLINE_ENCODER, "--device", "cpu", "--no-progress")


def command(name: str, data, dataset: str, out, **options) -> list[str]:
    """The arguments of `robustmm <name>` (sweep, train) on `data` with FAST_FLAGS; each option becomes
    `--<option, dashed> <value>`. Flags a test adds go after these."""
    flags = [name, "--data", str(data), "--dataset", dataset, "--out", str(out)]
    for option, value in options.items():
        flags += [f"--{option.replace('_', '-')}", str(value)]
    return [*flags, *FAST_FLAGS]

"""robustmm: from raw clips to robustness results for multimodal sentiment analysis under missing features."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # The training API imports torch; load it on first use so that `import robustmm` stays fast.
    if name in ("run", "sweep"):
        import importlib

        return getattr(importlib.import_module("robustmm.experiments"), name)
    raise AttributeError(f"module 'robustmm' has no attribute {name!r}")

"""robustmm: from raw clips to robustness results for multimodal sentiment analysis under missing features."""

__version__ = "0.1.0"

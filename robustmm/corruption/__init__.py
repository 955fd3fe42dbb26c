"""Signal corruption of raw clips before extraction: noises on decoded audio and frames (noises), corrupted clips
and dataset folders (clips), and testing clean-trained models on corrupted features (evaluate)."""

"""Models trained on `.pkl` features: TFR-Net with optional SimAM."""

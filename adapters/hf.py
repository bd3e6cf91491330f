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
        _check_layers(layers, len(out.hidden_states) - 1)
        rows = [out.hidden_states[i + 1][0] for i in layers]  # each (T, H)
        return torch.stack(rows, dim=1).float().numpy()

    def hidden_states_batch(self, sequences: Sequence[Sequence[int]], layers: Sequence[int]) -> list[np.ndarray]:
        """:meth:`hidden_states` of several sequences in one right-padded forward pass.

        Padding goes after each sequence, so under causal attention no real token sees it and
        positions are unchanged: each result equals the sequence's own :meth:`hidden_states` up to
        float rounding. Logits are computed for the last position only (they are not returned).

        Returns:
            One ``(T_i, L, H)`` float32 array per sequence, padding removed.

        Example:
            >>> [r.shape for r in ref.hidden_states_batch([[1, 2, 3], [4]], [14])]   # doctest: +SKIP
            [(3, 1, 576), (1, 1, 576)]
        """
        if not sequences:
            return []
        lengths = [len(s) for s in sequences]
        ids = torch.zeros((len(sequences), max(lengths)), dtype=torch.long)  # (B, T)
        for row, seq in enumerate(sequences):
            ids[row, : lengths[row]] = torch.tensor(list(seq), dtype=torch.long)
        mask = (torch.arange(ids.shape[1])[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T)
        with torch.no_grad():
            out: Any = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False,
                                  logits_to_keep=1)
        _check_layers(layers, len(out.hidden_states) - 1)
        stacked = torch.stack([out.hidden_states[i + 1] for i in layers], dim=2).float().numpy()  # (B, T, L, H)
        return [stacked[row, :n] for row, n in enumerate(lengths)]

    def next_token_logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits for the token after ``token_ids``: ``(vocab,)``."""
        ids = torch.tensor([list(token_ids)], dtype=torch.long)
        with torch.no_grad():
            return self.model(input_ids=ids, use_cache=False).logits[0, -1].float().numpy()


def _check_layers(layers: Sequence[int], n_layers: int) -> None:
    bad = [i for i in layers if not 0 <= i < n_layers - 1]
    if bad:
        # hidden_states[n_layers] is after the final norm, not the last layer's residual stream.
        raise ModelError(f"layers {bad} are outside 0..{n_layers - 2} that the reference supports")

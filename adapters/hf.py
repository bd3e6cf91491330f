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
        self.model.eval()  # type: ignore[no-untyped-call]  # transformers leaves its models' eval() unannotated

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
            logits: np.ndarray = self.model(input_ids=ids, use_cache=False).logits[0, -1].float().numpy()
        return logits


    def steered_forward(self, token_ids: Sequence[int], vectors: np.ndarray, steer_layers: Sequence[int], alpha: float,
                        steer_from: int, layers: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Reference steering: add ``alpha * vectors[l]`` to the output of decoder layer ``steer_layers[l]`` at
        positions ``>= steer_from``, then read logits and (steered) residual-stream rows.

        Args:
            vectors: ``(len(steer_layers), H)`` directions (``SteeringVector.vectors``).
            layers: layers whose output residual stream to return, read after the steering addition.

        Returns:
            ``(logits (T, vocab), hidden (T, len(layers), H))`` float32.
        """
        blocks = self.model.model.layers
        _check_layers([*steer_layers, *layers], len(blocks) + 1)
        recorded: dict[int, torch.Tensor] = {}
        delta = torch.from_numpy(np.asarray(vectors, np.float32)) * float(alpha)  # (Ls, H)

        def steer(slot: int) -> Any:
            def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
                out = output.clone()  # (1, T, H)
                out[:, steer_from:] += delta[slot].to(out.dtype)
                return out
            return hook

        def record(index: int) -> Any:
            def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
                recorded[index] = output[0]  # (T, H)
            return hook

        handles = [blocks[i].register_forward_hook(steer(slot)) for slot, i in enumerate(steer_layers)]
        handles += [blocks[i].register_forward_hook(record(i)) for i in layers]
        try:
            with torch.no_grad():
                logits = self.model(input_ids=torch.tensor([list(token_ids)]), use_cache=False).logits[0]
        finally:
            for handle in handles:
                handle.remove()
        hidden = (torch.stack([recorded[i] for i in layers], dim=1) if layers
                  else torch.zeros((len(token_ids), 0, delta.shape[1])))  # (T, L, H)
        return logits.float().numpy(), hidden.float().numpy()


def _check_layers(layers: Sequence[int], n_layers: int) -> None:
    bad = [i for i in layers if not 0 <= i < n_layers - 1]
    if bad:
        # hidden_states[n_layers] is after the final norm, not the last layer's residual stream.
        raise ModelError(f"layers {bad} are outside 0..{n_layers - 2} that the reference supports")

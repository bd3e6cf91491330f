"""Per-token text of a non-streamed answer, so that sentences map to token positions.

A non-streamed answer carries the whole text and the generated token ids, not which text each
token produced. :class:`HFTokenTexts` decodes incrementally with the served model's tokenizer: a
token whose bytes do not yet form whole characters gets ``""`` and its text goes to the token
that completes them, so the pieces join to the decoded text.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["TokenTexts", "HFTokenTexts"]

#: tokens decoded before the one being split, so a piece is decoded in context (spaces, merges)
_CONTEXT = 6


@runtime_checkable
class TokenTexts(Protocol):
    """Splits generated token ids into the text each one adds."""

    def pieces(self, token_ids: list[int]) -> list[str]:
        """One text per token id; joined they give the decoded text."""


class HFTokenTexts:
    """:class:`TokenTexts` with a Hugging Face tokenizer (special tokens skipped, as vLLM does).

    Args:
        model_path: the served model's folder (or hub id).

    Example:
        >>> HFTokenTexts("/models/smollm2").pieces([504, 3575])   # doctest: +SKIP
        ['The', ' capital']
    """

    def __init__(self, model_path: str) -> None:
        from transformers import AutoTokenizer

        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_path)
        # a fast tokenizer's Rust backend decodes as tokenizer.decode(..., clean_up_tokenization_spaces=False)
        # does, without transformers' per-call Python work (tests/engine checks they agree)
        self._backend: Any = getattr(self.tokenizer, "backend_tokenizer", None)

    def pieces(self, token_ids: list[int]) -> list[str]:
        """One text per token id (``""`` for special tokens and incomplete characters)."""
        out: list[str] = []
        prefix = read = 0  # decoded context starts at prefix; text up to read has been given out
        for i in range(len(token_ids)):
            before = self._decode(token_ids[prefix:read])
            now = self._decode(token_ids[prefix:i + 1])
            if len(now) > len(before) and not now.endswith("\ufffd"):
                out.append(now[len(before):])
                prefix, read = max(0, i + 1 - _CONTEXT), i + 1
            else:
                out.append("")
        return out

    def _decode(self, ids: list[int]) -> str:
        text: str
        if self._backend is not None:
            text = self._backend.decode(ids, skip_special_tokens=True)
        else:
            text = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return text

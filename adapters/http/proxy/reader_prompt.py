"""What guard proxy's reader reads: the question, then the foreign answer, as the reader's own tokens.

The reader input is what the reader model would have seen had it generated the answer itself:

* chat: the client's messages rendered by the reader's chat template with the generation prompt
  (``add_generation_prompt=True``), followed by the answer's tokens;
* completions: the prompt tokenized as vLLM's completions endpoint does (special tokens added),
  followed by the answer's tokens.

The answer is tokenized on its own, so its token span in the reader input is exact by
construction: positions ``len(prefix) .. len(prefix) + len(answer) - 1``. What a template puts
after an assistant message (``<|im_end|>`` and the like) is not sent: attention is causal, so
tokens after the answer cannot change the answer tokens' hidden states. Special-token strings
inside the answer (an answer that spells ``<|im_start|>user``) are read as plain text, never as
control tokens. Each answer token gets its text by incremental decoding (:mod:`adapters.http.tokens`), so
sentence offsets are in the answer's own characters.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from adapters.http.errors import invalid_request
from adapters.http.tokens import HFTokenTexts

__all__ = ["ReaderPrompts", "HFReaderPrompts"]


@runtime_checkable
class ReaderPrompts(Protocol):
    """Builds the reader's token ids; a seam, so tests can substitute a word-level tokenizer."""

    def chat_prefix(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the messages with the reader's generation prompt (what precedes the answer).

        Raises:
            APIError: 400 when the reader's chat template cannot render the messages.
        """

    def completion_prefix(self, prompt: str) -> list[int]:
        """Token ids of a completions prompt."""

    def answer(self, text: str) -> tuple[list[int], list[str]]:
        """The answer's token ids and the text of each (joined, the texts give the answer)."""


class HFReaderPrompts:
    """:class:`ReaderPrompts` with the reader model's Hugging Face tokenizer and chat template.

    Args:
        texts: per-token texts with the reader's tokenizer (its ``tokenizer`` is used for the rest).

    Example:
        >>> prompts = HFReaderPrompts(HFTokenTexts("/models/smollm2"))   # doctest: +SKIP
        >>> prompts.answer("Paris.")
        ([42351, 30], ['Paris', '.'])
    """

    def __init__(self, texts: HFTokenTexts) -> None:
        self.texts = texts
        self.tokenizer: Any = texts.tokenizer

    def chat_prefix(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the rendered messages plus the generation prompt."""
        from jinja2.exceptions import TemplateError

        try:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except (TemplateError, ValueError, TypeError, KeyError) as exc:
            raise invalid_request(f"the reader's chat template cannot render these messages ({type(exc).__name__}: "
                                  f"{str(exc)[:200]}); guard proxy reads text messages with the roles the reader "
                                  "model knows (system, user, assistant)", param="messages") from exc
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def completion_prefix(self, prompt: str) -> list[int]:
        """Token ids of the prompt, special tokens added as vLLM's completions endpoint adds them."""
        return list(self.tokenizer(prompt, add_special_tokens=True).input_ids)

    def answer(self, text: str) -> tuple[list[int], list[str]]:
        """The answer's token ids (special-token strings split into plain text) and their texts."""
        ids = list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids)
        return ids, self.texts.pieces(ids)

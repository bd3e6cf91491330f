"""Per-token texts with the real default model's tokenizer: the fast path decodes exactly as transformers does."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from guard import env


@pytest.fixture(scope="module")
def texts():
    pytest.importorskip("transformers")
    from adapters.http.tokens import HFTokenTexts

    folders = sorted((Path(env.cache_home()) / "models").glob("SmolLM2-135M-Instruct-*"))
    if not folders:
        pytest.skip("the default model is not prepared (guard model prepare)")
    return HFTokenTexts(str(folders[0]))


def test_the_backend_decode_equals_transformers_decode_on_random_ids_special_tokens_included(texts):
    tokenizer, rng = texts.tokenizer, random.Random(0)
    assert texts._backend is not None  # the default model's tokenizer is a fast one
    specials = tokenizer.all_special_ids
    for _ in range(500):
        ids = [rng.choice(specials) if rng.random() < 0.1 else rng.randrange(tokenizer.vocab_size)
               for _ in range(rng.randrange(0, 12))]
        assert texts._decode(ids) == tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("text", ["The capital of France is Paris.", "Café — naïve 日本語 🙂 done.",
                                  "  spaced\n\nlines "])
def test_pieces_join_to_the_decoded_text_and_each_token_gets_one_piece(texts, text):
    ids = texts.tokenizer(text, add_special_tokens=False)["input_ids"] + [texts.tokenizer.eos_token_id]
    pieces = texts.pieces(ids)
    assert len(pieces) == len(ids) and "".join(pieces) == texts.tokenizer.decode(ids, skip_special_tokens=True,
                                                                                 clean_up_tokenization_spaces=False)
    assert "\ufffd" not in "".join(pieces)

"""The transformers reference: batched forward passes equal one sequence at a time."""

from __future__ import annotations

import numpy as np

from tests.engine.conftest import LAYERS


def test_hf_batched_hidden_states_equal_one_sequence_at_a_time(hf):
    texts = ["The capital of France is Paris.", "Gold is a metal.", "Water boils at 100 degrees Celsius at sea level."]
    sequences = [hf.tokenizer(t)["input_ids"] for t in texts]
    batched = hf.hidden_states_batch(sequences, LAYERS)
    assert [b.shape[0] for b in batched] == [len(s) for s in sequences]  # padding removed
    for rows, seq in zip(batched, sequences):
        alone = hf.hidden_states(seq, LAYERS)  # (T, L, H)
        rel = np.linalg.norm(rows - alone, axis=-1) / np.linalg.norm(alone, axis=-1)
        assert rel.max() < 1e-5
    assert hf.hidden_states_batch([], LAYERS) == []

"""Collected features stream to disk for sets larger than RAM and come back equal to the in-memory ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration.activations import collect_hf
from calibration.feature_sink import MANIFEST, DiskSink, MemorySink, load_features, open_sink
from guard.errors import ConfigError


def _statements(n: int = 5, layers: int = 3, h: int = 4) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per statement: last rows, mean rows, token rows (a different token count each), float64 as an engine may."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        tokens = rng.standard_normal((2 + i, layers, h))
        out.append((tokens[-1], tokens.mean(axis=0), tokens))
    return out


def _fill(sink, statements) -> dict[str, np.ndarray]:
    for last, mean, tokens in statements:
        sink.add(last, mean, tokens)
    return sink.finish()


def test_disk_sink_writes_the_same_float32_features_as_memory_as_npy_memory_maps(tmp_path: Path):
    statements = _statements()
    in_memory = _fill(MemorySink(keep_tokens=True), statements)
    on_disk = _fill(DiskSink(tmp_path, len(statements), keep_tokens=True, key="k"), statements)
    assert sorted(on_disk) == sorted(in_memory) == ["last", "mean", "starts", "tokens"]
    for name, array in in_memory.items():
        assert isinstance(on_disk[name], np.memmap) and not on_disk[name].flags.writeable
        assert on_disk[name].dtype == array.dtype and np.array_equal(on_disk[name], array), name
    assert in_memory["last"].dtype == np.float32 and in_memory["tokens"].shape == (2 + 3 + 4 + 5 + 6, 3, 4)
    assert in_memory["starts"].tolist() == [0, 2, 5, 9, 14]
    # plain .npy files: anything that reads numpy reads them (the token file's header was rewritten in place)
    assert np.array_equal(np.load(tmp_path / "tokens.npy"), in_memory["tokens"])


def test_a_features_folder_is_reused_only_when_complete_and_of_the_same_collection(tmp_path: Path):
    statements = _statements(3)
    sink = DiskSink(tmp_path, 3, key="mine")
    for last, mean, _ in statements[:2]:
        sink.add(last, mean)
    assert load_features(tmp_path, "mine") is None  # interrupted: no manifest yet
    sink.add(*statements[2][:2])
    sink.finish()
    assert (tmp_path / MANIFEST).is_file()
    assert load_features(tmp_path, "another") is None
    hit = load_features(tmp_path, "mine")
    assert hit is not None and sorted(hit) == ["last", "mean"] and hit["last"].shape == (3, 3, 4)
    DiskSink(tmp_path, 3, key="mine")  # a new collection into the folder makes it incomplete again
    assert load_features(tmp_path, "mine") is None


@pytest.mark.parametrize("added", [2, 4])
def test_disk_sink_refuses_a_count_other_than_it_was_sized_for(tmp_path: Path, added: int):
    sink = DiskSink(tmp_path, 3)
    with pytest.raises(ConfigError, match="expected 3|holds 3 statements"):
        for last, mean, _ in _statements(added):
            sink.add(last, mean)
        sink.finish()


def test_an_empty_collection_is_refused_by_name():
    with pytest.raises(ConfigError, match="got 0 statements"):
        MemorySink().finish()


def test_open_sink_keeps_small_sets_in_memory_and_streams_when_given_a_folder(tmp_path: Path):
    assert isinstance(open_sink(3), MemorySink)
    assert isinstance(open_sink(3, folder=tmp_path / "f"), DiskSink) and (tmp_path / "f").is_dir()


class _Reference:
    """An ``HFReference`` stand-in: each text's tokens are its words, and the rows are derived from them."""

    def __init__(self) -> None:
        self.forwards = 0

    def tokenizer(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": [len(w) for w in text.split()]}

    def hidden_states(self, ids: list[int], layers: list[int]) -> np.ndarray:
        self.forwards += 1
        return np.array(ids, np.float64)[:, None, None] * np.arange(1, len(layers) + 1)[None, :, None] * np.ones(8)


def test_hf_collection_streams_to_a_folder_equal_to_memory_and_reuses_it(tmp_path: Path):
    texts = ["The sky is blue.", "Grass is red.", "Water boils at one hundred degrees."]
    ref = _Reference()
    in_memory = collect_hf(ref, texts, [2, 4], "fingerprint", cache=False)
    on_disk = collect_hf(ref, texts, [2, 4], "fingerprint", features_dir=tmp_path)
    assert ref.forwards == 6 and isinstance(on_disk["last"], np.memmap)
    for name in ("last", "mean"):
        assert np.array_equal(on_disk[name], in_memory[name])
    again = collect_hf(ref, texts, [2, 4], "fingerprint", features_dir=tmp_path)
    assert ref.forwards == 6 and np.array_equal(again["mean"], in_memory["mean"])  # read back, no forward pass
    collect_hf(ref, texts[:2], [2, 4], "fingerprint", features_dir=tmp_path)  # other texts: collected afresh
    assert ref.forwards == 8


def test_probe_selection_reads_memory_mapped_features_as_it_reads_them_in_memory(tmp_path: Path):
    from calibration.choose import select_probe

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 240)
    domains = np.array(["a", "b", "c"])[np.arange(240) % 3]
    x = rng.standard_normal((240, 2, 8)).astype(np.float32)
    x[np.arange(240), 1, labels] += 2.0  # layer 1 carries the label
    sink = DiskSink(tmp_path, 240, key="k")
    for row in x:
        sink.add(row, row)
    mapped = sink.finish()["last"]
    args = (labels, domains, np.arange(240) % 2, np.zeros(240, bool), np.arange(240), ("logistic",))
    on_disk, in_memory = select_probe(mapped, *args, width=1), select_probe(x, *args, width=1)
    assert on_disk.best == in_memory.best and on_disk.layer_auroc == in_memory.layer_auroc
    assert [r for _, r in on_disk.ranked] == [r for _, r in in_memory.ranked]

from __future__ import annotations

import numpy as np
import pytest

from guard.errors import ArtifactError
from guard.tensorfile import load_tensors, save_tensors


def test_roundtrip_preserves_values_shapes_and_metadata(tmp_path):
    tensors = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, -2], np.int64)}
    save_tensors(tmp_path / "x.safetensors", tensors, {"k": "v"})
    got, meta = load_tensors(tmp_path / "x.safetensors")
    assert meta == {"k": "v"}
    for name, arr in tensors.items():
        assert got[name].dtype == arr.dtype and np.array_equal(got[name], arr)


def test_files_interoperate_with_the_official_safetensors_library(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    arr = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    save_tensors(tmp_path / "ours.safetensors", {"w": arr})
    assert np.array_equal(safetensors_numpy.load_file(str(tmp_path / "ours.safetensors"))["w"], arr)
    safetensors_numpy.save_file({"w": arr}, str(tmp_path / "theirs.safetensors"))
    assert np.array_equal(load_tensors(tmp_path / "theirs.safetensors")[0]["w"], arr)


def test_truncated_file_is_rejected_with_a_clear_error(tmp_path):
    path = tmp_path / "x.safetensors"
    save_tensors(path, {"w": np.ones((100,), np.float32)})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="truncated or corrupt"):
        load_tensors(path)


def test_garbage_file_is_rejected_not_unpickled(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"\x80\x04\x95" + b"\x00" * 40)  # a pickle prelude
    with pytest.raises(ArtifactError):
        load_tensors(path)


def test_unsupported_dtype_names_the_tensor_and_the_fix(tmp_path):
    with pytest.raises(ArtifactError, match="'c'.*astype"):
        save_tensors(tmp_path / "x.safetensors", {"c": np.ones(2, np.complex64)})

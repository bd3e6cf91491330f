"""The hook code torch.compile traces into a guarded graph is part of vLLM's compile-cache key, and a worker
refuses engine arguments built for other hook code (a stale compiled graph would otherwise be reused)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from adapters.vllm import plugin
from guard.capture_spec import CaptureSpec
from guard.errors import AdapterError


def test_digest_covers_every_traced_module_and_changes_with_their_code(monkeypatch, tmp_path):
    for name in plugin._TRACED:
        (tmp_path / name).write_text("def hook(): ...\n")
    monkeypatch.setattr(plugin, "__file__", str(tmp_path / "plugin.py"))
    seen = {plugin.hooks_digest()}
    for name in plugin._TRACED:
        (tmp_path / name).write_text(f"def hook(): return {name!r}\n")
        seen.add(plugin.hooks_digest())
    assert len(seen) == len(plugin._TRACED) + 1  # every traced file's edit changes the digest


def test_worker_refuses_engine_arguments_built_for_other_hook_code():
    spec = CaptureSpec(layers=(3,), hooks_source="0123456789abcdef")
    runner = SimpleNamespace(vllm_config=SimpleNamespace(additional_config=spec.to_additional_config()))
    with pytest.raises(AdapterError, match="'0123456789abcdef'.*engine_arguments"):
        plugin._on_model_loaded(runner)

"""The layer contract checked at install: layers under ``.model.layers`` that take and return
``(hidden_states, residual)``; anything else is refused naming the architecture and what is supported."""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")

from adapters.vllm import internals  # noqa: E402
from guard.errors import AdapterError  # noqa: E402


class LlamaDecoderLayer(torch.nn.Module):
    def forward(self, positions, hidden_states, residual):  # noqa: ANN001, ANN201
        return hidden_states, residual


class OneTensorLayer(torch.nn.Module):
    def forward(self, positions, hidden_states):  # noqa: ANN001, ANN201
        return hidden_states


class NewDecoderLayer(LlamaDecoderLayer):
    pass


def _model(layer_cls: type, name: str = "TinyForCausalLM", container: str = "layers") -> torch.nn.Module:
    inner = torch.nn.Module()
    setattr(inner, container, torch.nn.ModuleList([layer_cls(), layer_cls()]))
    model = type(name, (torch.nn.Module,), {})()
    model.model = inner
    return model


def test_llama_style_layers_are_returned_in_order():
    model = _model(LlamaDecoderLayer)
    assert internals.decoder_layers(model) == list(model.model.layers)


def test_layers_that_return_one_tensor_are_refused_naming_the_architecture_and_the_supported_ones():
    with pytest.raises(AdapterError, match=r"GPTForCausalLM: its decoder layer OneTensorLayer .*returns one tensor"
                                           r".*Supported decoder architectures: .*Qwen3.*Gemma 2"):
        internals.decoder_layers(_model(OneTensorLayer, "GPTForCausalLM"))


def test_a_model_without_model_layers_is_refused():
    with pytest.raises(AdapterError, match=r"OPTForCausalLM exposes no decoder layers at `.model.layers`"):
        internals.decoder_layers(_model(LlamaDecoderLayer, "OPTForCausalLM", container="h"))


def test_an_untested_layer_with_the_right_signature_is_accepted_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="guard"):
        layers = internals.decoder_layers(_model(NewDecoderLayer, "NewForCausalLM"))
    assert len(layers) == 2
    assert "NewDecoderLayer keeps the (hidden_states, residual) contract but is untested" in caplog.text

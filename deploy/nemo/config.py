"""Registers guard's action when NeMo Guardrails loads this configuration folder."""

from adapters.guardrails.nemo_action import register


def init(app):  # noqa: ANN001, ANN201 - NeMo's hook: app is the LLMRails being built
    register(app)

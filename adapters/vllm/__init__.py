"""The vLLM integration: a general plugin that captures hidden states and scores probes in the worker.

Every access to vLLM internals lives in :mod:`adapters.vllm.internals`.
"""

__all__: list[str] = []

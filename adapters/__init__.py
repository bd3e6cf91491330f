"""guard's edges: torch ops, Hugging Face transformers, the vLLM plugin, transports and the CLI.

PyPI has an unrelated top-level ``adapters`` package (AdapterHub). ``guard``'s launchers check
that this package is the one imported (:func:`guard.layout.require_own_adapters`).
"""

__all__: list[str] = []

#: Marker checked by guard.layout: proves this ``adapters`` package is guard's.
__guard_adapters__ = True

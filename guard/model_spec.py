"""What an artefact needs to know about a model: its shape and a fingerprint of its config.

A :class:`ModelSpec` is read from a Hugging Face ``config.json`` (a dict), so the core can check an
artefact against a live model without importing transformers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from guard.errors import ModelError

__all__ = ["ModelSpec"]

# Config keys that determine the residual stream's meaning; names, paths and dtypes are excluded so
# the same weights saved twice (or loaded in another dtype) share a fingerprint.
_FINGERPRINT_KEYS = (
    "architectures",
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "rms_norm_eps",
    "tie_word_embeddings",
)


class ModelSpec(BaseModel):
    """Shape and identity of a decoder-only model.

    Example:
        >>> spec = ModelSpec.from_config({"hidden_size": 576, "num_hidden_layers": 30, "model_type": "llama"})
        >>> spec.hidden_size, spec.num_layers
        (576, 30)
    """

    model_config = ConfigDict(frozen=True)

    model_type: str
    hidden_size: int
    num_layers: int
    fingerprint: str

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelSpec:
        """Build a spec from a Hugging Face config dict.

        Raises:
            ModelError: the config lacks ``hidden_size`` or ``num_hidden_layers``.
        """
        cfg = config.get("text_config", config) if isinstance(config.get("text_config"), dict) else config
        missing = [k for k in ("hidden_size", "num_hidden_layers") if not isinstance(cfg.get(k), int)]
        if missing:
            raise ModelError(
                f"model config lacks integer {missing}; guard supports decoder-only transformers "
                "whose config.json declares hidden_size and num_hidden_layers"
            )
        factors = {k: cfg.get(k) for k in _FINGERPRINT_KEYS}
        digest = hashlib.sha256(json.dumps(factors, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return cls(
            model_type=str(cfg.get("model_type", "unknown")),
            hidden_size=cfg["hidden_size"],
            num_layers=cfg["num_hidden_layers"],
            fingerprint=digest,
        )

    @classmethod
    def from_folder(cls, folder: str | Path) -> ModelSpec:
        """Read ``config.json`` from a model folder.

        Raises:
            ModelError: the folder has no readable ``config.json``.
        """
        path = Path(folder) / "config.json"
        try:
            return cls.from_config(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(
                f"cannot read {str(path)!r} ({exc}); pass a Hugging Face model folder or run `guard model prepare`"
            ) from exc

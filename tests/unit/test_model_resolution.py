"""Model settings resolve as vLLM resolves them: local folders as they are, hub ids through the Hugging Face
cache (offline: from the cache or a clear error), anything else refused with the forms that work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.model_store import hub_snapshot, resolve_model
from guard.errors import ModelError

ROOT = Path(__file__).resolve().parents[2]


def _resolve_in_child(name: str, hub_cache: Path, offline: bool) -> subprocess.CompletedProcess[str]:
    """Resolve ``name`` in a fresh interpreter: huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE at import."""
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1" if offline else "0",
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # a closed port: the hub is unreachable even when online
    code = ("import sys\nfrom adapters.model_store import resolve_model\nfrom guard.errors import ModelError\n"
            "try:\n    print(resolve_model(sys.argv[1]))\nexcept ModelError as exc:\n    print(exc, file=sys.stderr)\n"
            "    sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", code, name], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def _cached_repo(hub_cache: Path, repo_id: str, files: dict[str, str]) -> Path:
    """A snapshot laid out as huggingface_hub's cache lays it out."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for name, text in files.items():
        (snapshot / name).write_text(text)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    return snapshot


@pytest.mark.parametrize("offline", [True, False])
def test_a_cached_hub_id_resolves_to_its_snapshot_folder_without_the_network(tmp_path, offline):
    snapshot = _cached_repo(tmp_path, "acme/tiny-llama", {"config.json": json.dumps({"model_type": "llama"}),
                                                          "model.safetensors": ""})
    done = _resolve_in_child("acme/tiny-llama", tmp_path, offline)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == snapshot


@pytest.mark.parametrize("offline", [True, False])
def test_an_uncached_hub_id_without_the_hub_is_a_clear_error_naming_the_fix(tmp_path, offline):
    done = _resolve_in_child("acme/absent-model", tmp_path, offline)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "hub model 'acme/absent-model' is not in the local Hugging Face cache" in done.stderr
    assert "hf download acme/absent-model" in done.stderr and "local model folder" in done.stderr


def test_a_cached_snapshot_without_config_json_is_refused(tmp_path):
    _cached_repo(tmp_path, "acme/weights-only", {"model.safetensors": ""})
    done = _resolve_in_child("acme/weights-only", tmp_path, offline=True)
    assert done.returncode == 3 and "has no config.json" in done.stderr


@pytest.mark.parametrize("name", ["no-such-folder", "a/b/c", "./missing/model", "/abs/missing"])
def test_a_name_that_is_neither_a_folder_nor_a_hub_id_is_refused_with_the_forms_that_work(name):
    with pytest.raises(ModelError, match=r"neither a local folder nor a hub id; pass 'default'"):
        hub_snapshot(name) if name.startswith("/") else resolve_model(name)


def test_a_local_folder_without_config_json_is_refused(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("command", [
    ["serve"],
    ["proxy", "--upstream", "http://127.0.0.1:9/v1"],
    ["calibrate", "--out", "OUT"],
    ["steer", "build", "--out", "OUT"],
    ["evaluate-qa"],
])
def test_every_command_taking_a_model_resolves_hub_ids_and_fails_fast_offline_with_the_fix(tmp_path, command):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in command] + ["--model", "acme/absent-model"]
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "GUARD_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "guard", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr[-2000:]
    assert "guard: error: hub model 'acme/absent-model' is not in the local Hugging Face cache" in done.stderr
    assert "Traceback" not in done.stderr

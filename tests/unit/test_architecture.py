"""Dependencies point inward; façades are declared; the adapters package cannot be silently shadowed."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE_ALLOWED = {"numpy", "pydantic", "prometheus_client", "guard"}
HEAVY = ("torch", "vllm", "transformers", "fastapi", "httpx", "uvicorn", "zmq", "adapters", "server")
#: the server reaches the engine only through ``adapters`` (never vllm or torch itself); jinja2: the
#: reader's chat-template errors (guard proxy)
SERVER_ALLOWED = {"guard", "adapters", "server", "numpy", "pydantic", "pydantic_settings", "prometheus_client", "yaml",
                  "fastapi", "starlette", "httpx", "uvicorn", "transformers", "jinja2"}


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_modules_import_only_stdlib_numpy_pydantic_prometheus():
    stdlib = set(sys.stdlib_module_names)
    offenders = {}
    for path in sorted((ROOT / "guard").glob("*.py")):
        if path.name == "__main__.py":  # the launcher; `import guard` never loads it
            continue
        bad = _top_level_imports(path) - stdlib - CORE_ALLOWED
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


def test_import_guard_loads_no_torch_vllm_transformers_or_fastapi():
    code = "import sys, guard; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in %r)))" % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_the_server_imports_guard_adapters_and_its_web_stack_only():
    stdlib = set(sys.stdlib_module_names)
    offenders = {p.name: sorted(bad) for p in sorted((ROOT / "server").glob("*.py"))
                 if (bad := _top_level_imports(p) - stdlib - SERVER_ALLOWED)}
    assert offenders == {}


def test_nothing_but_the_cli_imports_the_server():
    # the server builds on guard and adapters, never the other way round; only the CLI starts it
    importers = [str(p.relative_to(ROOT)) for d in ("guard", "adapters", "calibration") for p in (ROOT / d).rglob("*.py")
                 if "server" in _top_level_imports(p) and p != ROOT / "adapters" / "cli.py"]
    assert importers == []


@pytest.mark.parametrize("package", ["guard", "adapters", "calibration", "server"])
def test_every_package_declares_a_resolvable_facade(package):
    mod = importlib.import_module(package)
    assert isinstance(mod.__all__, list)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{package}.__all__ lists missing {name}"


def test_adapters_import_is_ours():
    from guard.layout import require_own_adapters

    require_own_adapters()


def test_a_shadowing_adapters_package_fails_with_a_clear_message(tmp_path):
    fake = tmp_path / "adapters"
    fake.mkdir()
    (fake / "__init__.py").write_text("# AdapterHub\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    out = subprocess.run([sys.executable, "-m", "guard", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 2
    assert "AdapterHub" in out.stderr and "pip uninstall adapters" in out.stderr


def test_modules_stay_small():
    big = {p.name: n for p in ROOT.glob("*/**/*.py") if ".venv" not in p.parts and (n := len(p.read_text().splitlines())) > 400}
    assert big == {}

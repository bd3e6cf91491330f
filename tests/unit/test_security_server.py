"""Security: no user text in metrics or logs (unless log_content is on, which warns), API keys passed
upstream and nowhere else, loopback by default, and no code path that deserialises client data into code."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from adapters.http.settings import ProxySettings, ServeSettings
from tests.unit.fake_faults import chat, proxy, serve
from tests.unit.fake_upstream import MODEL

ROOT = Path(__file__).resolve().parents[2]
SECRET = "zebra-7f3a-unique"  # in prompts, models, headers, guard options
KEY = f"sk-{SECRET}"


def _requests(model: str) -> list[dict]:
    return [chat(f"tell me about {SECRET}", model=model), chat("clean", model=model, guard={"abstain_message": SECRET}),
            chat("clean", model=model, stream=True, guard={"mode": "abstain", "abstain_message": SECRET}),
            {"model": model, "messages": [{"role": SECRET, "content": 5}]}, {"model": SECRET, "messages": "x"},
            chat("mixed", model=model, user=SECRET, metadata={SECRET: SECRET}, guard={SECRET: 1})]


async def _traffic(client, model: str) -> str:
    headers = {"Authorization": f"Bearer {KEY}", "X-Trace": SECRET, "OpenAI-Project": SECRET}
    for body in _requests(model):
        await client.post("/v1/chat/completions", json=body, headers=headers)
    await client.post("/v1/completions", json={"model": SECRET, "prompt": SECRET}, headers=headers)
    await client.get("/v1/models", headers=headers)
    await client.get("/healthz", headers=headers)
    return (await client.get("/metrics")).text


def test_guard_serve_puts_no_prompt_model_or_header_text_in_metrics_or_logs(caplog, capsys):
    async def run(client, fake, app):
        with caplog.at_level(logging.DEBUG):
            metrics = await _traffic(client, MODEL)
        assert "guard_requests_total" in metrics and SECRET not in metrics
        assert SECRET not in caplog.text and SECRET not in "".join(capsys.readouterr())

    serve(run)


def test_guard_proxy_passes_the_api_key_upstream_and_nowhere_else(caplog, capsys):
    async def run(client, made):
        with caplog.at_level(logging.DEBUG):
            metrics = await _traffic(client, "foreign-model")
            health = (await client.get("/healthz")).text
        assert made.foreign.requests and all(r["headers"]["authorization"] == f"Bearer {KEY}"
                                             for r in made.foreign.requests)
        assert all("x-trace" not in r["headers"] for r in made.foreign.requests)  # only credentials are passed on
        assert all(KEY not in str(r) for r in made.reader.requests)
        for text in (metrics, health, caplog.text, "".join(capsys.readouterr())):
            assert SECRET not in text

    proxy().serve(run)


def test_log_content_is_off_by_default_and_warns_at_start_up_when_on(caplog):
    assert ServeSettings.build().log_content is False and ProxySettings.build(upstream="http://x").log_content is False

    async def run(client, fake, app):
        await client.post("/v1/chat/completions", json=chat("clean", user=SECRET))
        await client.post("/v1/chat/completions", json=chat("clean", stream=True))

    with caplog.at_level(logging.INFO, logger="guard.content"):
        serve(run, log_content=True)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "log_content is on" in r.getMessage()]
    assert len(warnings) == 1
    logged = caplog.text
    assert SECRET in logged and "Paris is in France." in logged  # the prompt, and both answers' text
    assert logged.count("Paris is in France.") == 2


def test_both_servers_listen_on_loopback_by_default():
    assert ServeSettings.build().host == "127.0.0.1"
    assert ProxySettings.build(upstream="http://127.0.0.1:9/v1").host == "127.0.0.1"


_UNSAFE_MODULES = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
_UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
_UNSAFE_ATTRS = {("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("torch", "load"),
                 ("numpy", "load"), ("np", "load")}


def _unsafe(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in _UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _UNSAFE_MODULES:
            found.append(node.module or "")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _UNSAFE_CALLS:
            found.append(f"{node.func.id}()")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and (node.value.id, node.attr) in _UNSAFE_ATTRS:
            found.append(f"{node.value.id}.{node.attr}")
    return [f"{path}: {what}" for what in found]


@pytest.mark.parametrize("package", ["guard", "adapters", "calibration"])
def test_no_server_code_deserialises_data_into_objects_or_code(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    assert [hit for f in files for hit in _unsafe(f)] == []


def test_the_unsafe_code_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport yaml\nx = yaml.load('a')\neval('1')\nmodel.eval()\n")
    assert len(_unsafe(bad)) == 3  # a module's .eval() is not eval()

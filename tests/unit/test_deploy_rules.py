"""The Prometheus rules file and the Grafana dashboard: well-formed, every metric they query exists in the guard's
registry (or is vLLM's own), and every dashboard query is scoped to the chosen job and instance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from guard.metrics import GuardMetrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "guard-rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "guard-dashboard.json"
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "info": ("_info",)}


def _exposed() -> set[str]:
    return {family.name + suffix for family in GuardMetrics().registry.collect()
            for suffix in _SUFFIXES[family.type]}


def _balanced(expr: str) -> bool:
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for char in re.sub(r'"[^"]*"', '""', expr):  # brackets inside label values do not count
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return False
    return not any(depth.values())


def test_the_rules_file_has_prometheus_rule_groups_with_valid_fields():
    rules = yaml.safe_load(RULES.read_text())
    assert set(rules) == {"groups"} and rules["groups"]
    names = set()
    for group in rules["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", rule["alert"]) and rule["alert"] not in names
            names.add(rule["alert"])
            assert isinstance(rule["expr"], str) and _balanced(rule["expr"]), rule["alert"]
            assert _DURATION.match(str(rule.get("for", "0m"))), rule["alert"]
            assert rule["labels"]["severity"] in ("page", "ticket")
            assert {"summary", "description"} <= set(rule["annotations"])
    assert len(names) >= 8


def test_every_metric_the_rules_and_the_dashboard_query_exists():
    rules = yaml.safe_load(RULES.read_text())
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    referenced = {name for expr in exprs for name in re.findall(r"\bguard_[a-z0-9_]+", expr)}
    assert referenced and referenced <= _exposed(), referenced - _exposed()
    assert all(_balanced(expr) for expr in exprs)
    vllm = {name for expr in exprs for name in re.findall(r"\bvllm:[a-z0-9_:]+", expr)}
    assert vllm <= {"vllm:num_requests_running", "vllm:num_requests_waiting"}  # names checked in vLLM's loggers


def test_the_dashboard_has_job_and_instance_variables_and_every_query_uses_them():
    dashboard = json.loads(DASHBOARD.read_text())
    assert {"datasource", "job", "instance"} <= {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            selectors = re.findall(r"\b(?:guard_|vllm:)[a-z0-9_:]+(\{[^}]*\})?", target["expr"])
            assert selectors and all('job=~"$job"' in s and 'instance=~"$instance"' in s for s in selectors), \
                (panel["title"], target["expr"])
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("failures", "leaving", "steering", "score wait", "cpu", "engine"):
        assert topic in titles, topic

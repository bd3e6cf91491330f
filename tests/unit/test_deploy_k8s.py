"""The Kubernetes manifests (deploy/k8s/): the core objects validate offline against Kubernetes' own schemas
(kubernetes-validate, strict), the Prometheus Operator objects have the operator's shape, and they agree with the
image and the server: probes on routes the server answers, the Dockerfile's user and port, a grace period longer
than the drain, shared memory for vLLM, and the same alert rules as deploy/prometheus."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.http.api_key import OPEN_PATHS
from adapters.http.settings import ServeSettings

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.30.0"


def _docs() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_the_core_objects_validate_strictly_against_the_kubernetes_schemas():
    docs = _docs()
    assert {"Deployment", "Service", "ServiceMonitor", "PrometheusRule"} <= set(docs)
    for kind in ("Deployment", "Service"):
        kubernetes_validate.validate(docs[kind], KUBERNETES, strict=True)  # raises on any unknown or wrong field


def test_a_manifest_with_a_typo_fails_the_validation():
    broken = _docs()["Deployment"]
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}  # a misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_the_deployment_fits_the_image_and_the_server():
    deployment, service = _docs()["Deployment"], _docs()["Service"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = re.search(r"^USER (\d+):(\d+)", dockerfile, re.M)
    assert uid and pod["securityContext"]["runAsUser"] == int(uid[1]) and pod["securityContext"]["runAsNonRoot"]
    port = int(re.search(r"^EXPOSE (\d+)", dockerfile, re.M)[1])  # type: ignore[index]
    assert container["ports"][0]["containerPort"] == port and "--port" in container["args"]
    assert container["args"][container["args"].index("--port") + 1] == str(port)
    probes = {name: container[name]["httpGet"]["path"] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes == {"startupProbe": "/livez", "readinessProbe": "/readyz", "livenessProbe": "/livez"}
    assert set(probes.values()) <= OPEN_PATHS  # answered without the API key
    start = container["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 600  # a slow engine start is not a crash loop
    assert pod["terminationGracePeriodSeconds"] > ServeSettings.build().shutdown_timeout + 5
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    shm = [v for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
    assert shm and {"name": shm[0]["name"], "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_the_operator_objects_scrape_metrics_and_carry_the_same_rules_as_deploy_prometheus():
    docs = _docs()
    monitor, rule = docs["ServiceMonitor"], docs["PrometheusRule"]
    assert monitor["apiVersion"] == rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"] == docs["Service"]["metadata"]["labels"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == docs["Service"]["spec"]["ports"][0]["name"]
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "guard-rules.yaml").read_text())
    assert rule["spec"] == rules

"""deploy/k8s: the committed manifests are deploy/k8s/render.py's output, validate against
the Kubernetes schemas (kubernetes-validate ships them: no network), and wire one engine
per GPU with CURVE keys from the Secret, readiness from the control ping and a
ServiceMonitor on every metrics port. The ServiceMonitor is a CRD the Kubernetes schemas
lack: it is checked against a subset of the prometheus-operator schema kept here."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.30"


def _render() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


R = _render()


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / name).read_text())


def test_committed_manifests_are_the_render_output() -> None:
    files = R.manifests(8)
    assert sorted(files) == sorted(p.name for p in K8S.glob("*.yaml"))
    for name, res in files.items():
        assert (K8S / name).read_text() == R.text(res), f"{name}: run deploy/k8s/render.py"


@pytest.mark.parametrize("name", ["namespace.yaml", "secret.example.yaml", "daemonset.yaml",
                                  "service.yaml"])  # fmt: skip
def test_manifest_validates_against_the_kubernetes_schema(name: str) -> None:
    kubernetes_validate.validate(_load(name), K8S_VERSION, strict=True)


def test_the_validator_catches_a_broken_manifest() -> None:
    ds = _load("daemonset.yaml")
    ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "5555"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)
    ds = _load("daemonset.yaml")
    ds["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["cmd"] = []
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: unknown field
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def test_one_container_per_gpu_with_its_own_ports_keys_and_probes() -> None:
    pod = _load("daemonset.yaml")["spec"]["template"]["spec"]
    cs = pod["containers"]
    assert [c["name"] for c in cs] == [f"gpu{k}" for k in range(8)]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.count": "8"}
    seen: set[int] = set()
    for k, c in enumerate(cs):
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        pub, ctl, met = R.ports(k)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {f"pub-{k}": pub, f"ctl-{k}": ctl, f"metrics-{k}": met}
        assert not seen & set(ports.values())
        seen |= set(ports.values())
        a = c["args"]
        assert a[a.index("--ctl") + 1] == f"tcp://0.0.0.0:{ctl}"
        assert a[a.index("--metrics") + 1] == f"0.0.0.0:{met}"
        assert a[a.index("--curve-secret") + 1].startswith("/etc/hbtui/keys/")
        ready = c["readinessProbe"]["exec"]["command"]
        assert ready[:3] == ["python", "-m", "hbtui.engine.probe"]
        assert f"tcp://127.0.0.1:{ctl}" in ready and "--alive" not in ready
        assert "--alive" in c["livenessProbe"]["exec"]["command"]
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"]
        assert sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
    keys = next(v for v in pod["volumes"] if v["name"] == "keys")
    secret = _load("secret.example.yaml")
    assert keys["secret"]["secretName"] == secret["metadata"]["name"]
    # every key file the engine and the probe read is in the Secret
    needed = {x.rsplit("/", 1)[1] for c in cs for x in c["args"] + c["readinessProbe"]["exec"]
              ["command"] if x.startswith("/etc/hbtui/keys/")}  # fmt: skip
    assert needed <= set(secret["stringData"])


# A subset of prometheus-operator's ServiceMonitor CRD schema (monitoring.coreos.com/v1):
# the fields used here, with their types, and no others at those levels.
_RELABEL = {"type": "object", "additionalProperties": False, "properties": {
    "sourceLabels": {"type": "array", "items": {"type": "string"}},
    "targetLabel": {"type": "string"}, "regex": {"type": "string"},
    "action": {"type": "string"}, "replacement": {"type": "string"}}}  # fmt: skip
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "properties": {
                    "matchLabels": {"type": "object",
                                    "additionalProperties": {"type": "string"}}}},
                "namespaceSelector": {"type": "object", "properties": {
                    "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "properties": {
                        "port": {"type": "string"}, "path": {"type": "string"},
                        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "relabelings": {"type": "array", "items": _RELABEL}}}},
            },
        },
    },
}  # fmt: skip


def test_service_monitor_scrapes_every_metrics_port_of_the_service() -> None:
    sm = _load("servicemonitor.yaml")
    jsonschema.validate(sm, SERVICE_MONITOR)
    svc = _load("service.yaml")
    assert svc["spec"]["clusterIP"] == "None"
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [p["name"] for p in
                                                           svc["spec"]["ports"]]  # fmt: skip
    labels = _load("daemonset.yaml")["spec"]["template"]["metadata"]["labels"]
    for sel in (sm["spec"]["selector"]["matchLabels"], svc["spec"]["selector"]):
        assert sel.items() <= labels.items()
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    bad = {**sm, "spec": {**sm["spec"], "endpoints": [{"port": 9400}]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SERVICE_MONITOR)

"""Writes the Kubernetes manifests of this directory (docs/fleet.md, "Kubernetes").

    python deploy/k8s/render.py [--gpus N]      (default 8; rewrites *.yaml here)

One DaemonSet pod per GPU node, one container per GPU: container ``gpuK`` asks the NVIDIA
device plugin for one GPU (``nvidia.com/gpu: 1``), so inside it that GPU is device 0,
and listens on pub 5555+10K, ctl 5556+10K (host ports: the console reaches them at the
node's address) and metrics 9400+K (scraped through the headless Service by the
ServiceMonitor). CURVE keys come from the Secret ``hbtui-curve``; readiness is the
engine's control ``ping`` (``python -m hbtui.engine.probe``). tests/unit/test_deploy_k8s.py
checks the committed files are this script's output and validate.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
NS = "hbtui"
APP = {"app.kubernetes.io/name": "hbtui-engine", "app.kubernetes.io/part-of": "hbtui"}
IMAGE = "hbtui:0.1.0"  # build and push your own: docs/fleet.md
KEYS = "/etc/hbtui/keys"


def ports(k: int) -> tuple[int, int, int]:
    """(pub, ctl, metrics) of the container for GPU slot ``k``."""
    return 5555 + 10 * k, 5556 + 10 * k, 9400 + k


def _probe(ctl: int, alive: bool) -> dict[str, Any]:
    cmd = ["python", "-m", "hbtui.engine.probe", "--ctl", f"tcp://127.0.0.1:{ctl}",
           "--curve-secret", f"{KEYS}/client.key_secret",
           "--server-key", f"{KEYS}/server.key"]  # fmt: skip
    return {"exec": {"command": cmd + (["--alive"] if alive else [])}}


def container(k: int) -> dict[str, Any]:
    pub, ctl, met = ports(k)
    args = ["engine", "--device", "0", "--profile", "$(HBTUI_PROFILE)",
            "--pub", f"tcp://0.0.0.0:{pub}", "--ctl", f"tcp://0.0.0.0:{ctl}",
            "--metrics", f"0.0.0.0:{met}",
            "--curve-secret", f"{KEYS}/server.key_secret",
            "--curve-allow", f"{KEYS}/client.key"]  # fmt: skip
    return {
        "name": f"gpu{k}",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["hbtui"],
        "args": args,
        "env": [
            {"name": "HBTUI_PROFILE", "value": "default"},
            {"name": "XDG_CONFIG_HOME", "value": f"/var/lib/hbtui/gpu{k}"},
            {"name": "HOME", "value": f"/var/lib/hbtui/gpu{k}"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "ports": [
            {"name": f"pub-{k}", "containerPort": pub, "hostPort": pub, "protocol": "TCP"},
            {"name": f"ctl-{k}", "containerPort": ctl, "hostPort": ctl, "protocol": "TCP"},
            {"name": f"metrics-{k}", "containerPort": met, "protocol": "TCP"},
        ],
        "resources": {
            "limits": {"nvidia.com/gpu": 1, "memory": "2Gi"},
            "requests": {"cpu": "1", "memory": "512Mi"},
        },
        # calibration takes a few seconds; ready = calibrated and scheduling
        "readinessProbe": {
            **_probe(ctl, False),
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },  # fmt: skip
        "livenessProbe": {
            **_probe(ctl, True),
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },  # fmt: skip
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "keys", "mountPath": KEYS, "readOnly": True},
            {"name": "state", "mountPath": "/var/lib/hbtui"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def daemonset(gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "hbtui-engine", "namespace": NS, "labels": dict(APP)},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "hbtui-engine"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": dict(APP)},
                "spec": {
                    # nodes with exactly this many GPUs (label from GPU feature discovery);
                    # render again with --gpus N for other node pools
                    "nodeSelector": {"nvidia.com/gpu.count": str(gpus)},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "terminationGracePeriodSeconds": 30,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "containers": [container(k) for k in range(gpus)],
                    "volumes": [
                        {
                            "name": "keys",
                            "secret": {"secretName": "hbtui-curve", "defaultMode": 0o440},
                        },  # fmt: skip
                        {"name": "state", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                    ],
                    "securityContext": {"fsGroup": 10001},
                },
            },
        },
    }


def service(gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "hbtui-engine-metrics", "namespace": NS, "labels": dict(APP)},
        "spec": {
            "clusterIP": "None",  # headless: one target per pod and port
            "selector": {"app.kubernetes.io/name": "hbtui-engine"},
            "ports": [
                {
                    "name": f"metrics-{k}",
                    "port": ports(k)[2],
                    "targetPort": f"metrics-{k}",
                    "protocol": "TCP",
                }  # fmt: skip
                for k in range(gpus)
            ],
        },
    }


def service_monitor(gpus: int) -> dict[str, Any]:
    relabel = [
        {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"},
        {"sourceLabels": ["__meta_kubernetes_pod_container_name"], "targetLabel": "gpu_slot"},
    ]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "hbtui-engine", "namespace": NS, "labels": dict(APP)},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "hbtui-engine"}},
            "namespaceSelector": {"matchNames": [NS]},
            "endpoints": [
                {
                    "port": f"metrics-{k}",
                    "path": "/metrics",
                    "interval": "15s",
                    "relabelings": relabel,
                }  # fmt: skip
                for k in range(gpus)
            ],
        },
    }


def secret() -> dict[str, Any]:
    todo = "paste the file written by `hbtui keys generate --dir DIR` here\n"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hbtui-curve", "namespace": NS, "labels": dict(APP)},
        "type": "Opaque",
        # better: kubectl -n hbtui create secret generic hbtui-curve --from-file=DIR/server.key
        #   --from-file=DIR/server.key_secret --from-file=DIR/client.key
        #   --from-file=DIR/client.key_secret
        "stringData": {
            "server.key": todo,
            "server.key_secret": todo,
            "client.key": todo,
            "client.key_secret": todo,
        },
    }


def namespace() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": dict(APP)}}


def manifests(gpus: int) -> dict[str, dict[str, Any]]:
    """File name -> resource."""
    return {
        "namespace.yaml": namespace(),
        "secret.example.yaml": secret(),
        "daemonset.yaml": daemonset(gpus),
        "service.yaml": service(gpus),
        "servicemonitor.yaml": service_monitor(gpus),
    }


def text(resource: dict[str, Any]) -> str:
    head = "# Generated by deploy/k8s/render.py; edit that and run it again.\n"
    return head + yaml.safe_dump(resource, sort_keys=False, width=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=8, help="GPUs per node (8)")
    gpus = ap.parse_args().gpus
    if not 1 <= gpus <= 16:
        raise SystemExit("--gpus must be 1..16")
    for name, res in manifests(gpus).items():
        (HERE / name).write_text(text(res))


if __name__ == "__main__":
    main()

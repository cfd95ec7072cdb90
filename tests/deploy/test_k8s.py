"""deploy/k8s/ (issue 11 items 4 and 12): valid offline for kubernetes-validate, and the
Deployment is what the spec asks: probes, non-root, read-only root filesystem, writable
emptyDirs where the app writes, resources, the actions ConfigMap and the Secret mounts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.deploy import k8s
from tests.deploy.conftest import offline

KUBERNETES_VERSION = "1.30.0"  # the oldest version the manifests support; `make lint` uses it too


def _container() -> dict[str, Any]:
    return dict(k8s.load("deployment.yaml")["spec"]["template"]["spec"]["containers"][0])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_kubernetes_validate_accepts_every_manifest_offline() -> None:
    """With no network at all (where the machine allows it): the schemas ship in the package."""
    tool = Path(sys.executable).parent / "kubernetes-validate"
    files = sorted(str(p) for p in k8s.K8S.glob("*.yaml"))
    result = subprocess.run([*offline(), str(tool), "--strict", "-k", KUBERNETES_VERSION, *files],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {k8s.load(Path(f).name)["kind"] for f in files}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap",
                     "NetworkPolicy"}
    assert (ROOT / "Makefile").read_text().count(f"kubernetes-validate --strict -k {KUBERNETES_VERSION} ") == 1


def test_the_configmap_holds_the_actions_directory() -> None:
    data = k8s.load("configmap-actions.yaml")["data"]
    assert data == k8s.actions_files(), (
        "deploy/k8s/configmap-actions.yaml differs from actions/: run `.venv/bin/python -m tests.deploy.k8s`")


def test_deployment_probes_security_and_resources() -> None:
    pod = k8s.load("deployment.yaml")["spec"]["template"]["spec"]
    container = _container()
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001 == container["securityContext"]["runAsUser"]
    assert "USER 10001:10001" in (ROOT / "Dockerfile").read_text()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    # gunicorn's graceful timeout (20 s) plus the preStop pause fit in the grace period
    assert pod["terminationGracePeriodSeconds"] >= 20 + 5


def test_deployment_mounts_where_the_app_reads_and_writes() -> None:
    pod = k8s.load("deployment.yaml")["spec"]["template"]["spec"]
    container = _container()
    env = _env(container)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert all("subPath" not in m for m in mounts.values())  # a subPath mount never sees ConfigMap updates
    # the ConfigMap is the actions directory (hot-reloaded on the kubelet's ..data swap)
    actions = mounts[env["ACTIONS_DIR"]]
    assert volumes[actions["name"]]["configMap"]["name"] == k8s.load("configmap-actions.yaml")["metadata"]["name"]
    # secrets where Keel looks by default (./secrets, then /run/secrets)
    secret = mounts["/run/secrets"]
    assert volumes[secret["name"]]["secret"]["secretName"] == "keel-secrets" and secret["readOnly"] is True
    assert "SECRETS_DIR" not in env
    # the root filesystem is read-only: /tmp and the metrics directory are emptyDirs
    for path in ("/tmp", env["PROMETHEUS_MULTIPROC_DIR"]):
        assert "emptyDir" in volumes[mounts[path]["name"]], path
    # the public host name only: the probes and /metrics answer any Host (a pod IP)
    assert env["TRUSTED_HOSTS"] == "keel.example.com"
    assert env["APP_ENV"] == "production"


def test_service_hpa_and_pdb_select_the_deployment() -> None:
    labels = k8s.load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    service = k8s.load("service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == _container()["ports"][0]["name"]
    hpa = k8s.load("hpa.yaml")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "keel"}
    assert hpa["minReplicas"] >= 2
    pdb = k8s.load("pdb.yaml")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["minAvailable"] < hpa["minReplicas"]  # a drain can always proceed


def test_network_policy_allows_only_the_ingress_and_the_dependencies() -> None:
    policy = k8s.load("networkpolicy.yaml")["spec"]
    labels = k8s.load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    sources = [peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
               for rule in policy["ingress"] for peer in rule["from"]]
    assert sources == ["ingress-nginx", "prometheus"]
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == ["http"]
    egress = {}
    for rule in policy["egress"]:
        (peer,) = rule["to"]
        name = peer["podSelector"]["matchLabels"].get("app.kubernetes.io/name") or "kube-dns"
        egress[name] = sorted({p["port"] for p in rule["ports"]})
    assert egress == {"kube-dns": [53], "postgresql": [5432], "redis": [6379], "mongodb": [27017], "openbao": [8200]}


@pytest.mark.parametrize("change", ["add", "edit", "remove"])
def test_projected_volume_is_the_kubelet_layout(tmp_path: Path, change: str) -> None:
    """The helper the production test uses to play the kubelet: files reached through ..data,
    swapped in one rename."""
    volume = k8s.ProjectedVolume(tmp_path / "v", {"a.yaml": "one"})
    assert (tmp_path / "v" / "a.yaml").read_text() == "one"
    assert (tmp_path / "v" / "..data").is_symlink()
    data = {"add": {"a.yaml": "one", "b.yaml": "two"}, "edit": {"a.yaml": "uno"}, "remove": {"b.yaml": "two"}}[change]
    volume.update(data)
    visible = {p.name: p.read_text() for p in (tmp_path / "v").iterdir() if not p.name.startswith("..")}
    assert visible == data
    assert len([p for p in (tmp_path / "v").iterdir() if p.name.startswith("..") and p.is_dir()
                and not p.is_symlink()]) == 1

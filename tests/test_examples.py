"""The Kubernetes examples are valid for 1.33, locked down, probed, and in step with the code.

Every manifest under examples/ is validated strictly against the 1.33 schemas (kustomization files
and non-Kubernetes config such as Prometheus rule files are recognised and left out); every container
must carry the restrictive securityContext, resources and probes; every sidecar must be exactly what
``sidecar inject`` would produce and use only environment variables its mode understands; and the
kustomizations must only reference files kustomize will load.
"""

from __future__ import annotations

import posixpath
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from kubernetes_validate import validate

from sidecar.cli import main
from sidecar.tools.inject import METRICS_PORT_NAME, SIDECAR_NAME, InjectOptions, inject_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
K8S_VERSION = "1.33.0"
KUSTOMIZATION = "kustomization.yaml"
# Custom resources of the Prometheus Operator: kubernetes-validate has no schema for them.
CUSTOM_KINDS = {"PodMonitor", "PrometheusRule", "ServiceMonitor"}
# Config files of tools that borrow the Kubernetes object shape (kind clusters, kustomize components).
TOOL_API_GROUPS = ("kind.x-k8s.io/", "kustomize.config.k8s.io/")
WORKLOAD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
LOCKDOWN = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
DOWNWARD_API = {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "NODE_NAME": "spec.nodeName"}


def yaml_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml") and p.name != KUSTOMIZATION)


def yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def objects(path: Path) -> list[dict[str, Any]]:
    """The Kubernetes objects in a file: mappings with apiVersion and kind (a rule file has neither)."""
    return [
        d
        for d in yaml_docs(path)
        if isinstance(d, dict)
        and "kind" in d
        and isinstance(d.get("apiVersion"), str)
        and not d["apiVersion"].startswith(TOOL_API_GROUPS)
    ]


def all_objects() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{p.relative_to(EXAMPLES)}:{o['kind']}/{o['metadata']['name']}", o) for p in yaml_files() for o in objects(p)
    ]


def workloads() -> list[tuple[str, dict[str, Any]]]:
    return [(where, o) for where, o in all_objects() if o["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    if workload["kind"] != "Pod":
        spec = spec["template"]["spec"]
    return spec


def containers(workload: dict[str, Any]) -> Iterator[tuple[dict[str, Any], bool]]:
    """Every container with whether it runs alongside the app (and so takes probes)."""
    spec = pod_spec(workload)
    for container in spec.get("initContainers", []):
        yield container, container.get("restartPolicy") == "Always"
    for container in spec["containers"]:
        yield container, True


def sidecars() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    found = []
    for where, workload in workloads():
        for container, _ in containers(workload):
            if container["name"] == SIDECAR_NAME:
                found.append((where, workload, container))
    return found


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def ids(items: list[Any]) -> list[str]:
    return [item[0] for item in items]


def test_examples_cover_every_scenario() -> None:
    scenarios = {p.parent.name for p in EXAMPLES.glob(f"*/{KUSTOMIZATION}")}
    assert {"stream-native", "stream-classic", "agent", "fluent-bit-aggregator", "fluentd-aggregator"} <= scenarios
    assert {"elasticsearch", "monitoring"} <= scenarios
    readme = (EXAMPLES / "README.md").read_text()
    for scenario in scenarios:
        assert f"{scenario}/" in readme, f"examples/README.md does not explain {scenario}/"


@pytest.mark.parametrize(("where", "obj"), all_objects(), ids=ids(all_objects()))
def test_manifest_validates_strictly_for_kubernetes_1_33(where: str, obj: dict[str, Any]) -> None:
    if obj["kind"] in CUSTOM_KINDS:
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert isinstance(obj.get("spec"), dict)
        return
    validate(obj, K8S_VERSION, strict=True)


def test_kubernetes_validate_cli_passes_every_manifest_file() -> None:
    """The exact command a reviewer would run, over every file that holds only Kubernetes objects."""
    files = [str(p) for p in yaml_files() if objects(p) and len(objects(p)) == len(yaml_docs(p))]
    done = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-k", K8S_VERSION, "--quiet", *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for line in done.stdout.splitlines():  # --quiet: only "no schema" warnings for the custom kinds remain
        assert any(f"kind {kind} " in line for kind in CUSTOM_KINDS), line


@pytest.mark.parametrize(("where", "workload"), workloads(), ids=ids(workloads()))
def test_every_container_is_locked_down_with_resources(where: str, workload: dict[str, Any]) -> None:
    pod_context = pod_spec(workload).get("securityContext", {})
    assert pod_context.get("runAsNonRoot") is True
    assert pod_context.get("seccompProfile") == {"type": "RuntimeDefault"}
    for container, _ in containers(workload):
        context = container.get("securityContext", {})
        for key, value in LOCKDOWN.items():
            assert context.get(key) == value, f"{container['name']}: securityContext.{key}"
        assert set(container.get("resources", {})) == {"requests", "limits"}, container["name"]


@pytest.mark.parametrize(("where", "workload"), workloads(), ids=ids(workloads()))
def test_every_long_running_container_has_liveness_and_readiness_probes(where: str, workload: dict[str, Any]) -> None:
    for container, long_running in containers(workload):
        if long_running:
            assert "livenessProbe" in container, container["name"]
            assert "readinessProbe" in container, container["name"]


@pytest.mark.parametrize(("where", "workload", "sidecar"), sidecars(), ids=ids(sidecars()))
def test_sidecar_probes_health_endpoints_and_knows_its_pod(
    where: str, workload: dict[str, Any], sidecar: dict[str, Any]
) -> None:
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": METRICS_PORT_NAME}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": METRICS_PORT_NAME}
    env = env_of(sidecar)
    for name, field in DOWNWARD_API.items():
        assert env[name] == {"fieldRef": {"fieldPath": field}}
    app_names = {c["name"] for c in pod_spec(workload)["containers"]}
    assert env["CONTAINER_NAME"] in app_names


@pytest.mark.parametrize(("where", "workload", "sidecar"), sidecars(), ids=ids(sidecars()))
def test_sidecar_env_names_are_options_of_its_mode(
    where: str, workload: dict[str, Any], sidecar: dict[str, Any]
) -> None:
    env = env_of(sidecar)
    command = main.get_command(click.Context(main), env["SIDECAR_MODE"])
    assert command is not None
    known = {p.envvar for p in command.params if isinstance(p, click.Option) and isinstance(p.envvar, str)}
    known |= {"SIDECAR_MODE", "SIDECAR_PATHS"}
    unknown = {name for name in env if name.startswith("SIDECAR_")} - known
    assert not unknown, f"sidecar {env['SIDECAR_MODE']} has no option for {sorted(unknown)}"


@pytest.mark.parametrize(("where", "workload", "sidecar"), sidecars(), ids=ids(sidecars()))
def test_sidecar_is_what_inject_produces(where: str, workload: dict[str, Any], sidecar: dict[str, Any]) -> None:
    env = env_of(sidecar)
    path = EXAMPLES / where.split(":", maxsplit=1)[0]
    options = InjectOptions(
        log_dir=posixpath.dirname(env["SIDECAR_PATHS"]),
        glob=posixpath.basename(env["SIDECAR_PATHS"]),
        mode=env["SIDECAR_MODE"],
        image=sidecar["image"],
        classic="restartPolicy" not in sidecar,
        metrics_port=int(env["SIDECAR_METRICS_PORT"]),
    )
    text = path.read_text()
    assert inject_text(text, options).text == text


def test_agent_example_ships_to_an_aggregator_service_defined_here() -> None:
    services = {
        f"{o['metadata']['name']}.{o['metadata'].get('namespace', 'default')}.svc.cluster.local": o
        for _, o in all_objects()
        if o["kind"] == "Service"
    }
    agents = [env_of(s) for _, _, s in sidecars() if env_of(s)["SIDECAR_MODE"] == "agent"]
    assert agents
    for env in agents:
        service = services[env["SIDECAR_FLUENTD_HOST"]]
        assert int(env["SIDECAR_FLUENTD_PORT"]) in [p["port"] for p in service["spec"]["ports"]]
        assert env["SIDECAR_TLS"] == "true"
        assert "secretKeyRef" in env["SIDECAR_SHARED_KEY"]


def test_pod_monitor_scrapes_the_sidecar_port_under_the_job_the_alerts_expect() -> None:
    (monitor,) = [o for _, o in all_objects() if o["kind"] == "PodMonitor"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == METRICS_PORT_NAME
    job = next(r["replacement"] for r in endpoint["relabelings"] if r["targetLabel"] == "job")
    rules = (EXAMPLES / "prometheus" / "sidecar-rules.yaml").read_text()
    assert set(re.findall(r'job="([^"]+)"', rules)) == {job}


def kustomizations() -> list[Path]:
    return sorted(EXAMPLES.rglob(KUSTOMIZATION))


@pytest.mark.parametrize("kustomization", kustomizations(), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_kustomization_references_only_files_kustomize_will_load(kustomization: Path) -> None:
    base = kustomization.parent
    spec = yaml.safe_load(kustomization.read_text())
    assert spec["kind"] == "Kustomization"
    for resource in spec.get("resources", []):
        target = (base / resource).resolve()
        if target.is_dir():
            assert (target / KUSTOMIZATION).is_file(), f"{resource} has no kustomization.yaml"
        else:
            assert target.is_file(), f"{resource} is missing"
            assert target.is_relative_to(base), f"{resource} is outside the kustomization root"
    for generator in spec.get("configMapGenerator", []):
        for file in generator["files"]:
            target = (base / file.split("=")[-1]).resolve()
            assert target.is_file(), f"{file} is missing"
            assert target.is_relative_to(base), f"{file} is outside the kustomization root"

"""``sidecar inject``: every workload kind comes out valid for Kubernetes 1.33 with the sidecar added,
re-running changes nothing, comments and untouched documents survive, and bad input fails in one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import validate

from sidecar.core.server import EXIT_GRACE
from sidecar.errors import InjectError
from sidecar.options import DURATION
from sidecar.tools.inject import (
    LOG_VOLUME,
    SIDECAR_NAME,
    InjectOptions,
    inject_text,
)

K8S_VERSION = "1.33.0"
LOG_DIR = "/var/log/app"

POD_SPEC = """\
containers:
  # the application writes /var/log/app/*.log
  - name: app
    image: "registry.example/app:1.4.2"  # pinned
    ports:
      - containerPort: 8080
        name: http
# end of pod spec
"""

# How each kind wraps a pod spec; {spec} is POD_SPEC indented to the place it goes.
WRAPPERS: dict[str, tuple[str, str, int]] = {
    "Pod": ("v1", "spec:\n{spec}", 2),
    "Deployment": (
        "apps/v1",
        "spec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: web}}\n"
        "  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n{spec}",
        6,
    ),
    "StatefulSet": (
        "apps/v1",
        "spec:\n  serviceName: web\n  selector:\n    matchLabels: {{app: web}}\n"
        "  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n{spec}",
        6,
    ),
    "DaemonSet": (
        "apps/v1",
        "spec:\n  selector:\n    matchLabels: {{app: web}}\n"
        "  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n{spec}",
        6,
    ),
    "ReplicaSet": (
        "apps/v1",
        "spec:\n  selector:\n    matchLabels: {{app: web}}\n"
        "  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n{spec}",
        6,
    ),
    "Job": (
        "batch/v1",
        "spec:\n  template:\n    spec:\n      restartPolicy: Never\n{spec}",
        6,
    ),
    "CronJob": (
        "batch/v1",
        "spec:\n  schedule: '*/5 * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n"
        "          restartPolicy: OnFailure\n{spec}",
        10,
    ),
}


def manifest(kind: str, pod_spec: str = POD_SPEC, name: str = "web") -> str:
    api_version, body, indent = WRAPPERS[kind]
    header = f"# {kind} under test\napiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: {name}\n"
    return header + body.format(spec=textwrap.indent(pod_spec, " " * indent))


def inject(text: str, **options: Any) -> str:
    return inject_text(text, InjectOptions(log_dir=LOG_DIR, **options)).text


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def pod_spec_of(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any]
    if doc["kind"] == "Pod":
        spec = doc["spec"]
    elif doc["kind"] == "CronJob":
        spec = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    else:
        spec = doc["spec"]["template"]["spec"]
    return spec


def sidecar_of(doc: dict[str, Any], where: str = "initContainers") -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in pod_spec_of(doc).get(where, []) if c["name"] == SIDECAR_NAME]
    assert len(found) == 1
    return found[0]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "inject", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# Run-to-completion kinds refuse --classic (test_classic_sidecar_in_job_is_refused).
FORMS = [(kind, False) for kind in WRAPPERS] + [(k, True) for k in WRAPPERS if k not in ("Job", "CronJob")]


@pytest.mark.parametrize(("kind", "classic"), FORMS)
def test_injected_workload_validates_for_kubernetes_1_33(kind: str, classic: bool) -> None:
    for doc in documents(inject(manifest(kind), classic=classic)):
        validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("kind", list(WRAPPERS))
def test_injecting_twice_changes_nothing(kind: str) -> None:
    once = inject(manifest(kind))
    assert once != manifest(kind)
    assert inject(once) == once


def test_injecting_classic_twice_changes_nothing() -> None:
    once = inject(manifest("Deployment"), classic=True)
    assert inject(once, classic=True) == once


def test_native_sidecar_is_a_restartable_init_container_with_probes_and_lockdown() -> None:
    (doc,) = documents(inject(manifest("Deployment")))
    sidecar = sidecar_of(doc)
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["securityContext"] == {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert set(sidecar["resources"]) == {"requests", "limits"}
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in sidecar["env"]}
    assert env["SIDECAR_MODE"] == "stream"
    assert env["SIDECAR_PATHS"] == "/var/log/app/*.log"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["CONTAINER_NAME"] == "app"
    assert "SIDECAR_DRAIN_TIMEOUT" not in env
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9433",
        "prometheus.io/path": "/metrics",
    }


def test_log_dir_is_a_shared_empty_dir_written_by_app_and_read_by_sidecar() -> None:
    (doc,) = documents(inject(manifest("Pod"), mode="agent"))
    spec = pod_spec_of(doc)
    assert {"name": LOG_VOLUME, "emptyDir": {}} in spec["volumes"]
    assert spec["containers"][0]["volumeMounts"] == [{"name": LOG_VOLUME, "mountPath": LOG_DIR}]
    sidecar_mounts = sidecar_of(doc)["volumeMounts"]
    assert {"name": LOG_VOLUME, "mountPath": LOG_DIR, "readOnly": True} in sidecar_mounts
    assert any(m["mountPath"] == "/var/lib/sidecar" for m in sidecar_mounts)


@pytest.mark.parametrize("grace", [5, 10, 30, 60, 300])
def test_classic_sidecar_is_a_second_container_whose_whole_shutdown_fits_the_grace_period(grace: int) -> None:
    """The kubelet SIGKILLs at the grace period: the drain plus what the sidecar does after it (the sink's
    drain and the last checkpoint, at most EXIT_GRACE) must end before, and the drain be as long as it can."""
    spec_with_grace = f"terminationGracePeriodSeconds: {grace}\n" + POD_SPEC
    (doc,) = documents(inject(manifest("Deployment", spec_with_grace), classic=True))
    assert "initContainers" not in pod_spec_of(doc)
    sidecar = sidecar_of(doc, "containers")
    assert "restartPolicy" not in sidecar
    (value,) = [e["value"] for e in sidecar["env"] if e["name"] == "SIDECAR_DRAIN_TIMEOUT"]
    drain = DURATION.convert(value, None, None)
    assert drain + EXIT_GRACE < grace or drain == 0
    assert drain + EXIT_GRACE >= grace - 2, "the drain is no shorter than the grace period allows"


def test_switching_to_classic_moves_the_sidecar_instead_of_adding_another() -> None:
    classic = inject(inject(manifest("Deployment")), classic=True)
    (doc,) = documents(classic)
    assert "initContainers" not in pod_spec_of(doc)
    assert [c["name"] for c in pod_spec_of(doc)["containers"]] == ["app", SIDECAR_NAME]


def test_volume_already_mounted_at_log_dir_is_reused_with_its_sub_path() -> None:
    spec = """\
containers:
  - name: app
    image: app:1
    volumeMounts:
      - name: data
        mountPath: /var/log/app/
        subPath: logs
volumes:
  - name: data
    persistentVolumeClaim:
      claimName: data
"""
    (doc,) = documents(inject(manifest("StatefulSet", spec)))
    volumes = pod_spec_of(doc)["volumes"]
    assert [v["name"] for v in volumes] == ["data", "sidecar-state"]
    assert {"name": "data", "mountPath": LOG_DIR, "subPath": "logs", "readOnly": True} in sidecar_of(doc)[
        "volumeMounts"
    ]
    assert len(pod_spec_of(doc)["containers"][0]["volumeMounts"]) == 1


def test_comments_key_order_and_quoting_survive() -> None:
    original = manifest("Deployment")
    out = inject(original)
    comments = [line.strip() for line in original.splitlines() if "#" in line]
    assert [line.strip() for line in out.splitlines() if "#" in line] == comments
    assert '"registry.example/app:1.4.2"  # pinned' in out
    assert list(documents(out)[0]) == list(documents(original)[0])
    lines = out.splitlines()
    closing = lines.index("      # end of pod spec")
    assert lines[closing - 1].strip() == "mountPath: /var/log/app"
    assert lines[closing + 1] == "      volumes:"


def test_other_documents_pass_through_byte_for_byte() -> None:
    service = "# the service\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n"
    config = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n    name: odd-indent\ndata: {a: 'b'}\n"
    text = f"{service}---\n{manifest('Deployment')}--- # config\n{config}"
    out = inject(text)
    assert out.startswith(service + "---\n")
    assert out.endswith("--- # config\n" + config)
    assert [d["kind"] for d in documents(out)] == ["Service", "Deployment", "ConfigMap"]


def test_unindented_sequences_stay_unindented() -> None:
    kubectl_style = "containers:\n- name: app\n  image: app:1\n"
    out = inject(manifest("Pod", kubectl_style))
    assert "\n  - name: app\n" in out
    assert "\n  initContainers:\n  - name: log-sidecar\n" in out


def test_every_item_of_a_list_gets_the_sidecar() -> None:
    items = [yaml.safe_load(manifest(kind, name=kind.lower())) for kind in ("Deployment", "CronJob")]
    items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {}})
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items})
    (doc,) = documents(inject(text))
    for item in doc["items"][:2]:
        assert sidecar_of(item)["image"].startswith("ghcr.io/")
        validate(item, K8S_VERSION, strict=True)
    assert doc["items"][2] == items[2]


def test_app_port_annotations_are_kept_with_a_warning() -> None:
    pod = manifest("Pod").replace(
        "metadata:\n  name: web\n", "metadata:\n  name: web\n  annotations:\n    prometheus.io/port: '8080'\n"
    )
    result = inject_text(pod, InjectOptions(log_dir=LOG_DIR))
    assert documents(result.text)[0]["metadata"]["annotations"] == {"prometheus.io/port": "8080"}
    assert "PodMonitor" in result.warnings[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "has no workload"),
        (manifest("Pod", "containers: []\n"), "has no containers"),
        (
            manifest(
                "Pod",
                "containers:\n  - name: app\n    image: a:1\n    volumeMounts:\n"
                "      - {name: logs, mountPath: /var/log/app, readOnly: true}\n"
                "volumes:\n  - {name: logs, emptyDir: {}}\n",
            ),
            "read-only",
        ),
        (manifest("Pod", "containers:\n  - name: app\n    image: a:1\n    ports: [{containerPort: 9433}]\n"), "9433"),
        ("kind: Pod\nspec: [\n", "not valid YAML"),
    ],
)
def test_unusable_input_raises_one_line_inject_error(text: str, message: str) -> None:
    with pytest.raises(InjectError, match=message) as raised:
        inject(text)
    assert "\n" not in str(raised.value)


def test_classic_sidecar_in_job_is_refused() -> None:
    with pytest.raises(InjectError, match="drop --classic"):
        inject(manifest("Job"), classic=True)


def test_relative_log_dir_is_refused() -> None:
    with pytest.raises(InjectError, match="absolute"):
        inject_text(manifest("Pod"), InjectOptions(log_dir="logs"))


def test_cli_reads_stdin_and_prints_validating_manifest(tmp_path: Path) -> None:
    done = run_cli(
        "-", "--log-dir", LOG_DIR, "--mode", "agent", "--env", "SIDECAR_FLUENTD_HOST=agg", stdin=manifest("Deployment")
    )
    assert done.returncode == 0, done.stderr
    (doc,) = documents(done.stdout)
    validate(doc, K8S_VERSION, strict=True)
    env = {e["name"]: e.get("value") for e in sidecar_of(doc)["env"]}
    assert env["SIDECAR_MODE"] == "agent"
    assert env["SIDECAR_FLUENTD_HOST"] == "agg"
    path = tmp_path / "out.yaml"
    path.write_text(done.stdout)
    again = run_cli(str(path), "--log-dir", LOG_DIR, "--mode", "agent", "--env", "SIDECAR_FLUENTD_HOST=agg")
    assert again.stdout == done.stdout


def test_cli_takes_options_from_sidecar_environment_variables(tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(manifest("Pod"))
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "inject", str(path)],
        env={**_base_env(), "SIDECAR_LOG_DIR": "/logs", "SIDECAR_CLASSIC": "true"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    sidecar = sidecar_of(documents(done.stdout)[0], "containers")
    assert {"name": "SIDECAR_PATHS", "value": "/logs/*.log"} in sidecar["env"]


def test_cli_error_is_one_line_on_stderr_with_exit_code_2(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    done = run_cli(str(path), "--log-dir", LOG_DIR)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "has no workload" in done.stderr


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}


def test_hand_added_env_mounts_and_resources_survive_reinjection() -> None:
    once = inject(manifest("Pod"), mode="agent")
    edited = once.replace(
        "        - name: CONTAINER_NAME\n          value: app\n",
        "        - name: CONTAINER_NAME\n          value: app\n"
        "        - name: SIDECAR_SHARED_KEY  # from the aggregator's Secret\n"
        "          valueFrom:\n            secretKeyRef: {name: forward, key: shared-key}\n",
    ).replace("cpu: 10m", "cpu: 50m")
    assert edited.count("SIDECAR_SHARED_KEY") == 1
    assert "cpu: 50m" in edited
    assert inject(edited, mode="agent") == edited

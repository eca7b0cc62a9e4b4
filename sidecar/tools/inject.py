"""``sidecar inject``: add the log sidecar to Kubernetes workload manifests.

People keep their manifests in git with comments and a deliberate key order, so the manifest is edited
in place with ruamel.yaml's round-trip mode instead of being re-serialised: documents that are not
workloads, or already carry the sidecar as asked, come out byte for byte as they went in. That also
makes the command idempotent, which lets it run in a pipeline on every deploy.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import posixpath
import re
import sys
from collections.abc import Iterator, MutableMapping, MutableSequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TextIO

import click
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.tokens import CommentToken

from sidecar import __version__
from sidecar.core.server import EXIT_GRACE
from sidecar.errors import InjectError
from sidecar.options import DEFAULT_METRICS_PORT, option

Mode = Literal["stream", "agent"]

DEFAULT_IMAGE = f"ghcr.io/log-sidecar/log-sidecar:{__version__}"
SIDECAR_NAME = "log-sidecar"
LOG_VOLUME = "sidecar-logs"
STATE_VOLUME = "sidecar-state"
STATE_DIR = "/var/lib/sidecar"
METRICS_PORT_NAME = "sidecar-metrics"
NON_ROOT_UID = 65532
DEFAULT_GRACE_SECONDS = 30

# Where each workload kind keeps its pod template (the mapping holding ``metadata`` and ``spec``).
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
_RUN_TO_COMPLETION = ("Job", "CronJob")

_SEPARATOR = re.compile(r"^(?:---|\.\.\.)(?:[ \t].*)?$")


@dataclass(frozen=True)
class InjectOptions:
    """What to add; the defaults are the CLI defaults."""

    log_dir: str
    mode: Mode = "stream"
    image: str = DEFAULT_IMAGE
    classic: bool = False
    glob: str = "*.log"
    metrics_port: int = DEFAULT_METRICS_PORT
    containers: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


@dataclass
class InjectResult:
    """The edited manifest plus the notes worth telling the user on stderr."""

    text: str
    workloads: int
    warnings: list[str]


def inject_text(text: str, options: InjectOptions, source: str = "<stdin>") -> InjectResult:
    """Add the sidecar to every workload in a (multi-document) YAML manifest.

    Raises :class:`InjectError` when no document is a workload or a workload cannot take the sidecar.
    """
    log_dir = posixpath.normpath(options.log_dir)
    if not options.log_dir.startswith("/"):
        raise InjectError(f"--log-dir {options.log_dir!r} must be an absolute path inside the app container")
    options = replace(options, log_dir=log_dir)
    yaml = _round_trip_yaml(text)
    warnings: list[str] = []
    workloads = 0
    out: list[str] = []
    for header, body in _split_documents(text):
        out.append(header)
        try:
            doc = yaml.load(body)
        except YAMLError as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise InjectError(f"{source} is not valid YAML: {first_line}") from error
        before = _fingerprint(doc)
        found = _inject_document(doc, options, warnings)
        workloads += found
        if found and _fingerprint(doc) != before:
            buffer = io.StringIO()
            yaml.dump(doc, buffer)
            out.append(buffer.getvalue())
        else:
            out.append(body)
    if workloads == 0:
        raise InjectError(
            f"{source} has no workload to inject into; expected one of "
            f"{', '.join(POD_TEMPLATE_PATHS)} or a List of them"
        )
    return InjectResult("".join(out), workloads, warnings)


def _round_trip_yaml(text: str) -> YAML:
    """A round-trip dumper that indents block sequences the way the input does."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    mapping, offset = _detect_indent(text)
    yaml.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    return yaml


def _detect_indent(text: str) -> tuple[int, int]:
    """The mapping indent and the dash offset of block sequences, from the first examples in ``text``."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    mapping: int | None = None
    offset: int | None = None
    for parent, child in itertools.pairwise(lines):
        if not parent.rstrip().endswith(":"):
            continue
        depth = _indent_of(child) - _indent_of(parent)
        if child.lstrip().startswith("-"):
            if offset is None and depth >= 0:
                offset = depth
        elif mapping is None and depth > 0 and not parent.lstrip().startswith("-"):
            mapping = depth
        if mapping is not None and offset is not None:
            break
    mapping = mapping or 2
    return mapping, min(offset if offset is not None else 0, mapping)


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _split_documents(text: str) -> Iterator[tuple[str, str]]:
    """``(separator line, body)`` pairs; the first header is empty, joined they give ``text`` back."""
    header = ""
    body: list[str] = []
    for line in text.splitlines(keepends=True):
        if _SEPARATOR.match(line.rstrip("\r\n")):
            yield header, "".join(body)
            header, body = line, []
        else:
            body.append(line)
    yield header, "".join(body)


def _fingerprint(doc: Any) -> str:
    return json.dumps(doc, default=str)


def _inject_document(doc: Any, options: InjectOptions, warnings: list[str]) -> int:
    """Inject into one document (or each item of a ``List``); returns how many workloads it held."""
    if not isinstance(doc, MutableMapping):
        return 0
    kind = doc.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in doc):
        return sum(_inject_document(item, options, warnings) for item in doc.get("items") or [])
    if kind not in POD_TEMPLATE_PATHS:
        return 0
    name = f"{kind}/{(doc.get('metadata') or {}).get('name', '<unnamed>')}"
    template: Any = doc
    for key in POD_TEMPLATE_PATHS[kind]:
        template = template.get(key) if isinstance(template, MutableMapping) else None
    if not isinstance(template, MutableMapping) or not isinstance(template.get("spec"), MutableMapping):
        raise InjectError(f"{name} has no pod spec at {'.'.join((*POD_TEMPLATE_PATHS[kind], 'spec'))}")
    _inject_pod(name, kind, template, options, warnings)
    return 1


def _inject_pod(
    name: str, kind: str, template: MutableMapping[str, Any], options: InjectOptions, warnings: list[str]
) -> None:
    spec: MutableMapping[str, Any] = template["spec"]
    apps = [c for c in spec.get("containers") or [] if c.get("name") != SIDECAR_NAME]
    if not apps:
        raise InjectError(f"{name} has no containers to take logs from")
    if options.classic and (kind in _RUN_TO_COMPLETION or spec.get("restartPolicy") in ("Never", "OnFailure")):
        raise InjectError(
            f"{name} runs to completion and a --classic sidecar would keep it running forever; "
            "drop --classic to use the native sidecar"
        )
    _check_metrics_port(name, spec, options.metrics_port)
    targets, mount = _share_log_dir(name, spec, apps, options)
    sidecar = _sidecar_container(options, targets[0]["name"], mount, spec)
    _keep_user_additions(sidecar, _existing_sidecar(spec))
    _place_sidecar(spec, sidecar, options.classic)
    _ensure_volume(spec, STATE_VOLUME, CommentedMap([("emptyDir", CommentedMap())]))
    _annotate_for_prometheus(name, template, options.metrics_port, warnings)


def _check_metrics_port(name: str, spec: MutableMapping[str, Any], port: int) -> None:
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if container.get("name") == SIDECAR_NAME:
            continue
        for declared in container.get("ports") or []:
            if declared.get("containerPort") == port:
                raise InjectError(
                    f"{name}: container {container.get('name')!r} already uses port {port}; "
                    "pick another with --metrics-port"
                )


def _share_log_dir(
    name: str, spec: MutableMapping[str, Any], apps: list[Any], options: InjectOptions
) -> tuple[list[Any], MutableMapping[str, Any]]:
    """Make the log directory a volume the app containers write to; returns them and the mount to copy.

    A volume the app already mounts at the directory is reused, so logs on a PVC or an existing
    emptyDir stay where they are; otherwise a new emptyDir is added.
    """
    by_name = {c.get("name"): c for c in apps}
    missing = [c for c in options.containers if c not in by_name]
    if missing:
        raise InjectError(f"{name} has no container named {', '.join(map(repr, missing))}")
    chosen = [by_name[c] for c in options.containers] or apps
    existing = [(c, m) for c in apps for m in c.get("volumeMounts") or [] if _mounts_log_dir(m, options)]
    for container, mount in existing:
        if mount.get("readOnly") and (container in chosen or not options.containers):
            raise InjectError(
                f"{name}: container {container.get('name')!r} mounts {options.log_dir} read-only, "
                "so it cannot write logs there; make that mount writable"
            )
    if existing:
        template_mount = existing[0][1]
        targets = chosen if options.containers else [c for c, _ in existing]
    else:
        template_mount = CommentedMap([("name", LOG_VOLUME), ("mountPath", options.log_dir)])
        _ensure_volume(spec, LOG_VOLUME, CommentedMap([("emptyDir", CommentedMap())]))
        targets = chosen
    for container in targets:
        if not any(_mounts_log_dir(m, options) for m in container.get("volumeMounts") or []):
            _append_to(container, "volumeMounts", _copy_mount(template_mount, options.log_dir, False))
    return targets, template_mount


def _mounts_log_dir(mount: Any, options: InjectOptions) -> bool:
    path = mount.get("mountPath")
    return isinstance(path, str) and posixpath.normpath(path) == options.log_dir


def _copy_mount(mount: MutableMapping[str, Any], path: str, read_only: bool) -> CommentedMap:
    copy = CommentedMap([("name", mount["name"]), ("mountPath", path)])
    for key in ("subPath", "subPathExpr"):
        if key in mount:
            copy[key] = mount[key]
    if read_only:
        copy["readOnly"] = True
    return copy


def _ensure_volume(spec: MutableMapping[str, Any], volume: str, source: CommentedMap) -> None:
    if not any(v.get("name") == volume for v in spec.get("volumes") or []):
        entry = CommentedMap([("name", volume)])
        entry.update(source)
        _append_to(spec, "volumes", entry)


def _append_to(mapping: MutableMapping[str, Any], key: str, item: Any) -> None:
    """Append to the list at ``key``, creating it (already filled, so comments land right) if absent."""
    if isinstance(mapping.get(key), MutableSequence):
        _append(mapping[key], item)
    else:
        _set(mapping, key, CommentedSeq([item]))


def _merge(mapping: MutableMapping[str, Any], key: str, items: CommentedMap) -> None:
    """Set ``items`` in the mapping at ``key``, creating it (already filled) if absent."""
    target = mapping.get(key)
    if not isinstance(target, MutableMapping):
        _set(mapping, key, items)
        return
    for name, value in items.items():
        if isinstance(value, CommentedMap):
            _merge(target, name, value)
        else:
            _set(target, name, value)


def _set(mapping: MutableMapping[str, Any], key: str, value: Any) -> None:
    """Set a key, keeping comment lines that close an enclosing block after the new last key.

    ruamel.yaml hangs the comment lines that follow a block on the last scalar inside it, so a key
    appended naively would push a comment like ``# end of containers`` (indented less than the
    mapping) above itself.
    """
    if key in mapping:
        mapping[key] = value
        return
    comment = _detach_trailing_comment(mapping)
    mapping[key] = value
    if comment is not None:
        _attach_trailing_comment(mapping, comment)


def _append(sequence: MutableSequence[Any], item: Any) -> None:
    """Append an item; like :func:`_set` for comments that close an enclosing block."""
    comment = _detach_trailing_comment(sequence)
    sequence.append(item)
    if comment is not None:
        _attach_trailing_comment(sequence, comment)


def _last_comment_slot(node: Any) -> tuple[list[Any], int] | None:
    """The ruamel comment slot after the last scalar under ``node`` (created on demand), if any."""
    while isinstance(node, CommentedMap | CommentedSeq) and node:
        last: Any = list(node)[-1] if isinstance(node, CommentedMap) else len(node) - 1
        if not isinstance(node[last], CommentedMap | CommentedSeq) or not node[last]:
            index = 2 if isinstance(node, CommentedMap) else 0
            slot: list[Any] = node.ca.items.setdefault(last, [None] * (4 if index == 2 else 2))
            return slot, index
        node = node[last]
    return None


def _detach_trailing_comment(node: Any) -> CommentToken | None:
    """Take the comment lines after ``node``'s last scalar that are indented less than ``node``.

    Those close an enclosing block; lines indented like ``node`` or deeper describe its content and
    stay. An end-of-line comment on the last scalar always stays.
    """
    column = getattr(getattr(node, "lc", None), "col", None)
    found = _last_comment_slot(node)
    if column is None or found is None or found[0][found[1]] is None:
        return None
    slot, index = found
    token: CommentToken = slot[index]
    same_line, newline, following = token.value.partition("\n")
    indents = [_indent_of(line) for line in following.splitlines() if line.strip()]
    if not indents or min(indents) >= column:
        return None
    if same_line.strip():
        token.value = same_line + newline
    else:
        slot[index] = None
        following = token.value
    return CommentToken(following, token.start_mark, None, token.column)


def _attach_trailing_comment(node: Any, comment: CommentToken) -> None:
    found = _last_comment_slot(node)
    if found is None:
        return
    slot, index = found
    if slot[index] is None:
        slot[index] = comment
    else:
        slot[index].value += comment.value


def _sidecar_container(
    options: InjectOptions, app_name: str, log_mount: MutableMapping[str, Any], spec: MutableMapping[str, Any]
) -> CommentedMap:
    """The sidecar container; every value is derived from the options so re-injecting is a no-op."""
    container = CommentedMap()
    container["name"] = SIDECAR_NAME
    container["image"] = options.image
    if not options.classic:
        container["restartPolicy"] = "Always"
    container["env"] = _sidecar_env(options, app_name, spec)
    container["ports"] = CommentedSeq(
        [CommentedMap([("name", METRICS_PORT_NAME), ("containerPort", options.metrics_port), ("protocol", "TCP")])]
    )
    container["startupProbe"] = _probe("/healthz", period=2, failures=15)
    container["livenessProbe"] = _probe("/healthz", period=10, failures=3)
    container["readinessProbe"] = _probe("/readyz", period=10, failures=3)
    container["resources"] = _mapping(
        requests=_mapping(cpu="10m", memory="32Mi"), limits=_mapping(cpu="500m", memory="128Mi")
    )
    container["securityContext"] = _security_context(spec)
    container["volumeMounts"] = CommentedSeq(
        [
            _copy_mount(log_mount, options.log_dir, read_only=True),
            CommentedMap([("name", STATE_VOLUME), ("mountPath", STATE_DIR)]),
        ]
    )
    return container


def _sidecar_env(options: InjectOptions, app_name: str, spec: MutableMapping[str, Any]) -> CommentedSeq:
    values: dict[str, str | tuple[str, str]] = {
        "SIDECAR_MODE": options.mode,
        "SIDECAR_PATHS": posixpath.join(options.log_dir, options.glob),
        "SIDECAR_CHECKPOINT_DIR": STATE_DIR,
        "SIDECAR_METRICS_PORT": str(options.metrics_port),
    }
    if options.classic:
        values["SIDECAR_DRAIN_TIMEOUT"] = f"{_drain_seconds(spec)}s"
    values.update(
        POD_NAME=("fieldRef", "metadata.name"),
        POD_NAMESPACE=("fieldRef", "metadata.namespace"),
        NODE_NAME=("fieldRef", "spec.nodeName"),
        CONTAINER_NAME=app_name,
    )
    values.update(options.env)
    env = CommentedSeq()
    for key, value in values.items():
        if isinstance(value, tuple):
            source = _mapping(fieldRef=_mapping(fieldPath=value[1]))
            env.append(CommentedMap([("name", key), ("valueFrom", source)]))
        else:
            env.append(CommentedMap([("name", key), ("value", value)]))
    return env


def _drain_seconds(spec: MutableMapping[str, Any]) -> int:
    """The longest ``--drain-timeout`` whose whole shutdown (the drain, then at most ``EXIT_GRACE`` for the
    sink and the last checkpoint) ends a second before the kubelet's SIGKILL at the grace period."""
    grace = spec.get("terminationGracePeriodSeconds")
    grace = grace if isinstance(grace, int) else DEFAULT_GRACE_SECONDS
    return max(0, math.floor(grace - EXIT_GRACE - 1))


def _probe(path: str, period: int, failures: int) -> CommentedMap:
    return _mapping(
        httpGet=_mapping(path=path, port=METRICS_PORT_NAME),
        periodSeconds=period,
        timeoutSeconds=2,
        failureThreshold=failures,
    )


def _security_context(spec: MutableMapping[str, Any]) -> CommentedMap:
    """Locked down; the user is left to the pod (to read the app's files) unless the pod runs as root."""
    context = _mapping(
        runAsNonRoot=True,
        readOnlyRootFilesystem=True,
        allowPrivilegeEscalation=False,
        capabilities=_mapping(drop=CommentedSeq(["ALL"])),
        seccompProfile=_mapping(type="RuntimeDefault"),
    )
    pod_context = spec.get("securityContext") or {}
    if pod_context.get("runAsUser") == 0:
        context["runAsUser"] = NON_ROOT_UID
    return context


def _mapping(**items: Any) -> CommentedMap:
    return CommentedMap(list(items.items()))


def _existing_sidecar(spec: MutableMapping[str, Any]) -> MutableMapping[str, Any] | None:
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if container.get("name") == SIDECAR_NAME:
                found: MutableMapping[str, Any] = container
                return found
    return None


def _keep_user_additions(sidecar: CommentedMap, previous: MutableMapping[str, Any] | None) -> None:
    """Keep what people add to an injected sidecar by hand: env (say, a shared key from a Secret),
    mounts (a CA bundle) and tuned resources survive re-injection; the rest is ours to regenerate."""
    if previous is None:
        return
    for key, identity in (("env", "name"), ("volumeMounts", "mountPath")):
        ours = {item[identity] for item in sidecar[key]}
        sidecar[key].extend(item for item in previous.get(key) or [] if item.get(identity) not in ours)
    if isinstance(previous.get("resources"), MutableMapping):
        sidecar["resources"] = previous["resources"]


def _place_sidecar(spec: MutableMapping[str, Any], sidecar: CommentedMap, classic: bool) -> None:
    """Put the sidecar in ``containers`` (classic) or ``initContainers``, replacing an earlier injection."""
    wanted, other = ("containers", "initContainers") if classic else ("initContainers", "containers")
    _remove_sidecar(spec, other)
    containers = spec.get(wanted) or []
    for index, container in enumerate(containers):
        if container.get("name") == SIDECAR_NAME:
            containers[index] = sidecar
            return
    if wanted in spec:
        _append_to(spec, wanted, sidecar)
    else:
        position = list(spec).index("containers")
        spec.insert(position, wanted, CommentedSeq([sidecar]))  # type: ignore[attr-defined]


def _remove_sidecar(spec: MutableMapping[str, Any], key: str) -> None:
    containers = spec.get(key)
    if not containers:
        return
    for index, container in enumerate(containers):
        if container.get("name") == SIDECAR_NAME:
            del containers[index]
            break
    if not containers:
        del spec[key]


def _annotate_for_prometheus(name: str, template: MutableMapping[str, Any], port: int, warnings: list[str]) -> None:
    metadata = template.get("metadata")
    current = ((metadata or {}).get("annotations") or {}).get("prometheus.io/port")
    if current is not None and str(current) != str(port):
        warnings.append(
            f"{name} already has prometheus.io/port={current} for the app; left the annotations alone, "
            "scrape the sidecar with a PodMonitor on port sidecar-metrics instead"
        )
        return
    annotations = _mapping(
        **{"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
    )
    _merge(template, "metadata", _mapping(annotations=annotations))


def _parse_env(pairs: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            raise InjectError(f"--env {pair!r} is not NAME=VALUE")
        parsed.append((key, value))
    return tuple(parsed)


@click.command("inject")
@click.argument("manifest", type=click.File("r", encoding="utf-8"), metavar="FILE|-")
@option("--log-dir", required=True, help="Directory the app writes its log files to (absolute).")
@option("--mode", type=click.Choice(["stream", "agent"]), default="stream", help="What the sidecar runs.")
@option("--image", default=DEFAULT_IMAGE, help="Sidecar image reference.")
@option(
    "--classic",
    is_flag=True,
    default=False,
    help="Add a regular container instead of a native sidecar (for clusters older than 1.29).",
)
@option("--glob", default="*.log", help="Files to follow inside --log-dir.")
@option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_METRICS_PORT,
    help="Port of /metrics, /healthz and /readyz in the pod.",
)
@option(
    "--container",
    multiple=True,
    help="App container that writes the logs (repeatable); default: all that mount --log-dir, or all.",
)
@option(
    "--env",
    "extra_env",
    multiple=True,
    metavar="NAME=VALUE",
    help="Extra sidecar environment variable (repeatable), e.g. SIDECAR_FLUENTD_HOST=aggregator.logging.svc.",
)
def inject_command(
    manifest: TextIO,
    log_dir: str,
    mode: Mode,
    image: str,
    classic: bool,
    glob: str,
    metrics_port: int,
    container: tuple[str, ...],
    extra_env: tuple[str, ...],
) -> None:
    """Print FILE (or stdin) with the log sidecar added to every workload in it.

    Handles Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob and List; other
    documents pass through untouched, comments and key order are kept, and running it on its own
    output changes nothing.
    """
    try:
        options = InjectOptions(
            log_dir=log_dir,
            mode=mode,
            image=image,
            classic=classic,
            glob=glob,
            metrics_port=metrics_port,
            containers=container,
            env=_parse_env(extra_env),
        )
        result = inject_text(manifest.read(), options, source=manifest.name)
    except InjectError as error:
        click.echo(f"sidecar inject: {error}", err=True)
        sys.exit(error.exit_code)
    for warning in result.warnings:
        click.echo(f"sidecar inject: warning: {warning}", err=True)
    click.echo(result.text, nl=False)

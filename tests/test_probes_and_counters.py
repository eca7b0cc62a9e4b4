"""What the sidecar says about its core: counters on ``/metrics``, ``/readyz``, and failures of its own tasks.

The numbers must mean what the README says they mean (a line we had to split is not a line the app
never finished), readiness must not be claimed before there is anything to follow, and a task of the
core that dies must end the process with a clear error (Kubernetes restarts it) or show on the probes,
never leave a sidecar that looks healthy while nothing is checkpointed any more.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.checker import check
from tests.conftest import SidecarFactory, read_state
from tests.prom import free_port
from tests.writer import LogWriter


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            body: bytes = response.read()
            return response.status, body
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def counter(port: int, name: str) -> float:
    """The sum of a metric's samples over all label sets (0 when it has none yet)."""
    _, body = get(port, "/metrics")
    families = text_string_to_metric_families(body.decode())
    return sum(s.value for family in families for s in family.samples if s.name == name)


def test_unfinished_last_line_emitted_when_a_file_is_let_go_is_not_counted_as_a_split(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """README: the line gets a newline of ours when the file is let go; ``long_lines_split`` counts only
    lines longer than ``--max-line-bytes``."""
    port = free_port()
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(20)
    writer.write_partial(30)
    unfinished = app.read_bytes().rsplit(b"\n", 1)[1]
    writer.abandon_partial()  # the app dies mid-line
    sc = sidecar(app, "--rotate-wait", "0.3s", "--metrics-port", str(port), "--metrics-address", "127.0.0.1")
    sc.wait_for_lines(20)
    writer.rename_rotate(log_dir / "app.log.1")
    writer.write(10)
    sc.wait_for(lambda out: unfinished + b"\n" in out, "the unfinished line, once the rotated file is let go")
    assert counter(port, "sidecar_files_closed_total") >= 1
    assert counter(port, "sidecar_long_lines_split_total") == 0
    assert sc.stop() == 0
    report = check(sc.output(), {"app": writer.written})
    assert (report.lost, report.duplicated, report.corrupted) == ([], [], [unfinished])


def test_not_ready_while_no_file_is_followed_and_ready_once_one_is(log_dir: Path, sidecar: SidecarFactory) -> None:
    """examples/README: ``/readyz`` reports not ready while no file matches the glob yet."""
    port = free_port()
    sc = sidecar(f"{log_dir}/*.log", "--metrics-port", str(port), "--metrics-address", "127.0.0.1")
    status, body = get(port, "/readyz")
    assert status == 503, body
    assert get(port, "/healthz")[0] == 200
    writer = LogWriter(log_dir / "app.log")
    writer.write(5)
    sc.wait_for_lines(5)
    deadline = time.monotonic() + 5
    while (status := get(port, "/readyz")[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 200


def test_a_housekeeping_task_that_dies_never_leaves_a_healthy_looking_sidecar(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    """A state entry whose ``seen`` is not a number (hand-edited, or written by a buggy version) for a file
    gone since used to kill housekeeping silently at its first checkpoint: the sidecar kept answering 200
    and emitting lines, and never wrote its state again, so the next restart repeated everything.

    Acceptable outcomes: the bad entry is dealt with and checkpoints go on; or the process exits with
    an error (and the kubelet restarts it); or ``/healthz`` stops answering 200.
    """
    port = free_port()
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(100)
    gone = {
        "dev": app.stat().st_dev, "ino": 987654321, "fingerprint": "00", "fp_len": 0, "offset": 0,
        "path": str(log_dir / "gone.log"), "pattern": str(app), "seen": "x",
    }  # fmt: skip
    state = {"version": 1, "written_at": time.time() - 60, "files": [gone]}
    (checkpoint_dir / "sidecar-state.json").write_text(json.dumps(state))
    sc = sidecar(app, "--metrics-port", str(port), "--metrics-address", "127.0.0.1")
    sc.wait_for_lines(100)
    size = app.stat().st_size
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not sc.running:
            assert sc.wait() != 0, sc.stderr()
            assert "error" in sc.stderr(), "a dying task says why"
            return
        if get(port, "/healthz")[0] != 200:
            return
        if any(e["ino"] == app.stat().st_ino and e["offset"] == size for e in read_state(checkpoint_dir)):
            return
        time.sleep(0.1)
    raise AssertionError(f"still running, /healthz 200, and app.log never checkpointed after 5 s\n{sc.stderr()}")

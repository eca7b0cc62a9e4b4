"""Under ``ulimit -n 64`` with 200 files the endpoint still answers and the state file is still written.

The sidecar runs under ``prlimit --nofile=64:64`` (hard limit too, so it cannot raise it) and follows
more files than it can open: whatever the core does with the files it cannot open, probes and scrapes
must be answered (the kubelet would kill the pod otherwise), and checkpoints written, during the run
and at shutdown, without a traceback on stderr.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.core.checkpoint import STATE_FILE
from tests.conftest import FAST_DEFAULTS, SidecarProcess, read_state, with_defaults
from tests.prom import free_port
from tests.writer import LogWriter

LIMIT = 64
FILES = 200


class LimitedSidecar(SidecarProcess):
    """The CLI under a descriptor limit of :data:`LIMIT` (``prlimit`` execs it: same pid, same signals)."""

    @property
    def command(self) -> list[str]:
        return ["prlimit", f"--nofile={LIMIT}:{LIMIT}", "--", *super().command]


@pytest.fixture
def limited(tmp_path: Path, log_dir: Path, checkpoint_dir: Path) -> Iterator[tuple[LimitedSidecar, int]]:
    port = free_port()
    args = [str(log_dir / "*.log"), "--metrics-port", str(port), "--metrics-address", "127.0.0.1"]
    process = LimitedSidecar(tmp_path / "sidecar", with_defaults(args, {"--checkpoint-dir": str(checkpoint_dir),
                                                                        **FAST_DEFAULTS}))
    try:
        yield process, port
    finally:
        process.cleanup()
        print(process.stderr())


def _get(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
        reply.read()
        status: int = reply.status
        return status


def test_out_of_descriptors_the_endpoint_answers_and_the_state_file_is_written_without_tracebacks(
    log_dir: Path, checkpoint_dir: Path, limited: tuple[LimitedSidecar, int]
) -> None:
    for i in range(FILES):
        LogWriter(log_dir / f"app-{i:03d}.log", f"a{i:03d}").write(20)
    sc, port = limited
    sc.start()
    statuses = [(_get(port, "/metrics"), _get(port, "/healthz")) for _ in range(10)]
    assert statuses == [(200, 200)] * 10
    deadline = time.monotonic() + 10
    while not read_state(checkpoint_dir):
        assert time.monotonic() < deadline, f"no state file written\n{sc.stderr()}"
        time.sleep(0.05)
    stopped_at = time.time()
    assert sc.stop(signal.SIGTERM) == 0
    assert json.loads((checkpoint_dir / STATE_FILE).read_bytes())["written_at"] >= stopped_at
    err = sc.stderr()
    assert "Traceback" not in err
    assert err.count("http_out_of_descriptors") <= 1
    assert "checkpoint_failed" not in err
